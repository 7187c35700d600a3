"""The kernel library: every kernel kind wsec can place, by name.

Each kind (a `KernelKind` subclass, see kernel_kind.py) is defined once here
(or in a module this one imports) and registered in `KINDS`.
"""

from __future__ import annotations

from .graph import Kernel
from .kernel_kind import KernelKind

KINDS: dict[str, KernelKind] = {}


def register(kind: KernelKind) -> KernelKind:
    """Add a kind to the library (tests may register their own)."""
    KINDS[kind.name] = kind
    return kind


def kind_of(kernel: Kernel) -> KernelKind:
    try:
        return KINDS[kernel.kind]
    except KeyError:
        raise KeyError(f"kernel '{kernel.name}' has unknown kind '{kernel.kind}' "
                       f"(known: {', '.join(sorted(KINDS))})") from None
