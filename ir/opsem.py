"""Reference numpy semantics of every graph-level op: `evaluate`.

Constant folding in canonicalize, the reference interpreter, the device
simulator and the tests all evaluate ops through `evaluate`, so there is one
definition of what each op computes. The implementations live in
opsem_core, opsem_more and opsem_scatter, registered into opsem_base's table.
"""

from __future__ import annotations

import numpy as np

from . import opsem_core, opsem_more, opsem_scatter  # noqa: F401  (they register the ops)
from .graph import Node
from .ops import SUPPORTED_OPS
from .opsem_base import IMPLS
from .opsem_core import pads, windows

__all__ = ["evaluate", "has_semantics", "pads", "windows"]


def has_semantics(op: str) -> bool:
    """True when `evaluate` knows op type `op`."""
    return op in IMPLS


def evaluate(node: Node, inputs: list[np.ndarray | None]) -> list[np.ndarray]:
    """Compute the outputs of `node` from its input arrays (None = omitted)."""
    impl = IMPLS.get(node.op)
    if impl is None:
        raise ValueError(f"no semantics for operator '{node.op}' (node '{node.name}')")
    # ONNX defines the inf/nan results of log(0), 0/0 or an out-of-range cast;
    # numpy's warnings about them say nothing a user can act on
    with np.errstate(all="ignore"):
        outs = impl(node, list(inputs))
    return [np.asarray(o) for o in outs][: max(1, len(node.outputs))]


_missing = sorted(set(SUPPORTED_OPS) - set(IMPLS))
if _missing:  # keep the op table and the semantics in step
    raise ImportError(f"ops without semantics in wsec.ir.opsem: {', '.join(_missing)}")
