"""Fold an exported model's run-time shape arithmetic once its input shapes are fixed.

Why: PyTorch's exporter (with dynamic axes) computes sizes in the graph:
`Shape -> Gather -> Unsqueeze -> Concat -> Reshape`, `Range(0, Shape[1])`,
`ConstantOfShape(Shape) -> Trilu` for a causal mask. ONNX shape inference
propagates some of that but not all (a Range's length, a Reshape whose
target is computed through Cast/Mul, ...), and wsec needs a static type on
every value. With `--input-shape` applied, all these sub-graphs are
constant, so we evaluate them with the IR's own op semantics
(`wsec.ir.opsem`) and turn their outputs into initializers, re-running
shape inference until nothing more folds.

The same folder runs before the supported-operator check on any node whose
inputs are all constant, whatever its op: exporters build constant masks
with ops wsec has no kernel for (Swin's shifted-window mask is 54 ScatterND
nodes over a ConstantOfShape). Ops outside wsec's table are evaluated with
onnx's reference implementation (`onnx.reference`), within
`FOREIGN_FOLD_LIMIT` elements; what cannot fold is then reported by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference
from wsec.ir.graph import Node
from wsec.ir.ops import SUPPORTED_OPS
from wsec.ir.opsem import evaluate

_DEFAULT_DOMAINS = ("", "ai.onnx")
FOLD_LIMIT = 1 << 16  # elements: shape chains and small masks, never weights
FOREIGN_FOLD_LIMIT = 1 << 20  # elements: an op without a kernel folds up to this size
_CONST_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


def all_static(model: onnx.ModelProto) -> bool:
    """True when every value shape inference typed has only fixed dims."""
    g = model.graph
    for vi in list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.HasField("shape"):
            return False
        if any(not d.HasField("dim_value") for d in tt.shape.dim):
            return False
    produced = {o for n in g.node for o in n.output if o}
    typed = {vi.name for vi in list(g.value_info) + list(g.output) + list(g.input)}
    return produced <= typed | {t.name for t in g.initializer}


def _static_shapes(g: onnx.GraphProto) -> dict[str, tuple[int, ...]]:
    out: dict[str, tuple[int, ...]] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape") and \
                all(d.HasField("dim_value") for d in tt.shape.dim):
            out[vi.name] = tuple(d.dim_value for d in tt.shape.dim)
    return out


def _constant_value(n: onnx.NodeProto) -> np.ndarray | None:
    if len(n.attribute) != 1 or n.attribute[0].name not in _CONST_ATTRS:
        return None
    a = n.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    is_f = a.name.startswith("value_float")
    return np.asarray(onnx.helper.get_attribute_value(a), np.float32 if is_f else np.int64)


def fold_shape_chains(model: onnx.ModelProto,
                      attrs_of: Callable[[onnx.NodeProto, str], dict[str, Any]],
                      rounds: int = 64) -> onnx.ModelProto:
    """Return `model` (inferred) with its constant shape sub-graphs folded to initializers.

    Ops wsec supports that read a float initializer (a parameter) are left
    alone: they are no shape arithmetic, canonicalize folds them anyway, and
    a training step must still see the parameter they read (a transposed
    weight). Ops without a kernel fold whatever they read."""
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
              onnx.TensorProto.BFLOAT16)
    params = {t.name for t in model.graph.initializer if t.data_type in floats}
    for _ in range(rounds):
        model = shape_inference.infer_shapes(model, data_prop=True)
        if not _fold_once(model, attrs_of, params):
            break
    return model


def _fold_once(model: onnx.ModelProto,
               attrs_of: Callable[[onnx.NodeProto, str], dict[str, Any]],
               params: set[str]) -> bool:
    g = model.graph
    shapes = _static_shapes(g)
    consts: dict[str, np.ndarray] = {}
    for t in g.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL and np.prod(t.dims) <= FOLD_LIMIT:
            consts[t.name] = numpy_helper.to_array(t)
    keep: list[onnx.NodeProto] = []
    folded: list[onnx.TensorProto] = []
    for i, n in enumerate(g.node):
        if params.intersection(n.input) and n.op_type in SUPPORTED_OPS:
            keep.append(n)
            continue
        arrays = _try_fold(n, i, shapes, consts, attrs_of)
        if arrays is None:
            keep.append(n)
            continue
        if n.op_type == "Constant":
            consts[n.output[0]] = arrays[0]
            keep.append(n)  # the builder reads Constant nodes itself
            continue
        for o, a in zip(n.output, arrays, strict=False):
            if o:
                consts[o] = a
                # (np.ascontiguousarray would turn a scalar into shape [1])
                folded.append(numpy_helper.from_array(np.require(a, requirements="C"), o))
    if not folded:
        return False
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(folded)
    names = {t.name for t in folded}
    kept_vi = [vi for vi in g.value_info if vi.name not in names]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    return True


def _try_fold(n: onnx.NodeProto, i: int, shapes: dict[str, tuple[int, ...]],
              consts: dict[str, np.ndarray],
              attrs_of: Callable[[onnx.NodeProto, str], dict[str, Any]]) -> list | None:
    if n.domain not in _DEFAULT_DOMAINS:
        return None
    if n.op_type == "Constant":
        v = _constant_value(n)
        return None if v is None else [v]
    if n.op_type == "Dropout":
        return None
    if n.op_type not in SUPPORTED_OPS:
        return _fold_foreign(n, consts)
    if n.op_type in ("Shape", "Size"):
        if not n.input or n.input[0] not in shapes:
            return None
        ins: list[np.ndarray | None] = [np.broadcast_to(np.int8(0), shapes[n.input[0]])]
    else:
        if not n.input or any(x and x not in consts for x in n.input):
            return None
        ins = [consts[x] if x else None for x in n.input]
    node = Node(n.name or f"{n.op_type}_{i}", n.op_type, list(n.input), list(n.output),
                attrs_of(n, n.name or f"{n.op_type}_{i}"))
    try:
        outs = evaluate(node, ins)
    except (ValueError, TypeError, KeyError, IndexError):
        return None  # left for shape inference to report with the node's name
    if any(np.asarray(o).size > FOLD_LIMIT for o in outs):
        return None
    return [np.asarray(o) for o in outs]


def has_foreign_ops(model: onnx.ModelProto) -> bool:
    """True when a default-domain node's op is not in wsec's table (it may fold)."""
    return any(n.domain in _DEFAULT_DOMAINS and n.op_type != "Constant"
               and n.op_type not in SUPPORTED_OPS for n in model.graph.node)


def _fold_foreign(n: onnx.NodeProto, consts: dict[str, np.ndarray]) -> list | None:
    """Outputs of an op wsec has no semantics for, from onnx's reference
    implementation, when all its inputs are constant and the result is small."""
    if not n.input or any(x and x not in consts for x in n.input) or any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in n.attribute):
        return None
    if sum(consts[x].size for x in n.input if x) > FOREIGN_FOLD_LIMIT:
        return None
    from onnx.reference import ReferenceEvaluator  # imported only when a model needs it

    try:
        outs = ReferenceEvaluator(n).run(None, {x: consts[x] for x in n.input if x})
    except Exception:  # noqa: BLE001 - any failure leaves the node for the op check to name
        return None
    arrays = [np.asarray(o) for o in outs]
    return None if any(a.size > FOREIGN_FOLD_LIMIT for a in arrays) else arrays
