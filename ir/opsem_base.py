"""The op-semantics registry every reference implementation registers into.

`wsec.ir.opsem.evaluate` looks ops up here; opsem_core and opsem_more fill
it (kept apart so neither imports the other's registry in a cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .graph import Node

Arr = np.ndarray
Impl = Callable[[Node, list], list]
IMPLS: dict[str, Impl] = {}


def op(*names: str) -> Callable[[Impl], Impl]:
    """Register the decorated function as the semantics of ops `names`."""
    def reg(fn: Impl) -> Impl:
        for n in names:
            IMPLS[n] = fn
        return fn
    return reg


def ints(v: object, default: Sequence[int] | None = None) -> list[int]:
    """An int-list attribute (or `default` when absent)."""
    if v is None:
        return list(default or [])
    return [int(x) for x in v]  # type: ignore[union-attr]


def get(ins: list, i: int) -> Arr | None:
    """Input i, or None when omitted."""
    return ins[i] if i < len(ins) and ins[i] is not None else None
