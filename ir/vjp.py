"""Reverse-mode gradient rules of the graph-level ops: `vjp`.

One place defines how to differentiate each op, as `wsec.ir.opsem` is the
one place that defines what it computes: the autodiff pass, export-train
and the tests all go through `vjp`. The rules live in vjp_core
(element-wise, shape, reductions), vjp_nn (products, convolution,
softmax, normalisation) and vjp_pool (pooling), registered into vjp_base's
table.

`TRAINING_FORMS` rewrites ops whose training-step forward differs from
inference before differentiation: BatchNormalization normalises with the
batch's statistics (PyTorch's train mode).
"""

from __future__ import annotations

from collections.abc import Callable

from . import vjp_core, vjp_nn, vjp_pool  # noqa: F401  (they register the rules)
from .graph import Node
from .vjp_base import VJPS, Emitter, GradError, Namer, unsupported
from .vjp_nn import batchnorm_training_form

__all__ = ["TRAINING_FORMS", "Emitter", "GradError", "Namer", "has_vjp", "vjp"]

TRAINING_FORMS: dict[str, Callable[[Emitter, Node], list[Node]]] = {
    "BatchNormalization": batchnorm_training_form,
}


def has_vjp(op: str) -> bool:
    """True when op type `op` has a gradient rule."""
    return op in VJPS


def vjp(e: Emitter, node: Node, grads: list[str | None], want: list[bool]) -> list[str | None]:
    """Gradients of `node`'s inputs (None where not wanted) from its outputs'
    gradients (None = zero), written as ops through `e`."""
    rule = VJPS.get(node.op)
    if rule is None:
        raise unsupported(node)
    out = rule(e, node, list(grads), list(want))
    out = list(out) + [None] * (len(node.inputs) - len(out))
    for i, (v, g) in enumerate(zip(node.inputs, out, strict=False)):
        if g is None or not v:
            continue
        if e.shape(g) != e.shape(v) or e.dtype(g) != e.dtype(v):
            raise GradError(f"internal: the gradient rule of {node.op} (node '{node.name}') "
                            f"gave {e.t(g)} for input {i} of type {e.t(v)}")
    return out[: len(node.inputs)]
