"""Bring an opset-18-or-newer model down to wsec's canonical opset when onnx cannot.

Why: PyTorch's dynamo exporter writes opset 18 or newer, and onnx's version
converter has no down-conversion adapters for most ops (`No Adapter From
Version $18 for Split`). Between opset 17 and 22 the ops wsec supports
changed only in form, not in meaning (later opsets mostly add element types
to the same ops), so we rewrite those forms:

- Split `num_outputs` -> the opset-13 form (equal parts by output count) or
  an explicit `split` input when the last part is smaller;
- Reduce{Mean,Max,Min,Prod,L1,L2,SumSquare,LogSum,LogSumExp} axes input ->
  the `axes` attribute (must be a constant);
- Gelu (opset 20) -> the erf or tanh formula opset-17 exporters write;
- Mish (opset 18) -> x * tanh(softplus(x));
- Resize's axes / antialias / keep_aspect_ratio_policy (opset 18) -> the
  full-rank opset-17 form (see `onnx_resize`);

then relabel the default-domain import. Whatever is still not valid at the
target opset (a new attribute, a new op) is rejected by the onnx checker,
and the frontend reports it with the node's name.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper
from wsec.ir.errors import WsecError

from .onnx_resize import ResizeConversionError, downgrade_resize

_REDUCE_ATTR_AXES = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                     "ReduceL2", "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"}


class DowngradeError(WsecError):
    """A node has no opset-17 form; the message names it."""


def downgrade(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """Return a copy of `model` rewritten to opset `target` (17) from a newer opset."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    consts = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    shapes, elems = _shapes(model)
    new_nodes: list[onnx.NodeProto] = []
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        if n.domain not in ("", "ai.onnx"):
            new_nodes.append(n)
        elif n.op_type == "Split":
            new_nodes.append(_split(n, name, g, shapes))
        elif n.op_type in _REDUCE_ATTR_AXES:
            new_nodes.append(_reduce(n, name, consts))
        elif n.op_type == "Gelu":
            new_nodes.extend(_gelu(n, name, g, elems.get(n.input[0], onnx.TensorProto.FLOAT)))
        elif n.op_type == "Mish":
            new_nodes.extend(_mish(n, name))
        elif n.op_type == "Resize":
            try:
                new_nodes.append(downgrade_resize(n, name, g, shapes))
            except ResizeConversionError as e:
                raise DowngradeError(str(e)) from None
        else:
            new_nodes.append(n)
    del g.node[:]
    g.node.extend(new_nodes)
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = target
    return m


def _shapes(model: onnx.ModelProto) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Static shapes and element types (TensorProto codes) shape inference finds."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception:
        return {}, {}
    shapes, elems = {}, {}
    for t in inferred.initializer:
        elems[t.name] = t.data_type
    for vi in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        tt = vi.type.tensor_type
        if tt.elem_type:
            elems[vi.name] = tt.elem_type
        if tt.HasField("shape") and all(d.HasField("dim_value") for d in tt.shape.dim):
            shapes[vi.name] = [d.dim_value for d in tt.shape.dim]
    return shapes, elems


def _attrs(n: onnx.NodeProto, drop: str) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in n.attribute if a.name != drop}


def _split(n: onnx.NodeProto, name: str, g: onnx.GraphProto,
           shapes: dict[str, list[int]]) -> onnx.NodeProto:
    attrs = _attrs(n, "num_outputs")
    if len(n.input) > 1 and n.input[1] or not any(a.name == "num_outputs" for a in n.attribute):
        return n
    k = len(n.output)
    shape = shapes.get(n.input[0])
    axis = int(attrs.get("axis", 0))
    inputs = [n.input[0]]
    if shape is None:
        raise DowngradeError(f"Split node '{name}' uses num_outputs on '{n.input[0]}', whose "
                             f"shape is not static; pass --input-shape for the model's inputs")
    size = shape[axis % len(shape)]
    if size % k:
        part = -(-size // k)
        sizes = np.array([part] * (k - 1) + [size - part * (k - 1)], np.int64)
        sname = f"{name}.split_sizes"
        g.initializer.append(numpy_helper.from_array(sizes, sname))
        inputs.append(sname)
    return helper.make_node("Split", inputs, list(n.output), name=n.name, **attrs)


def _reduce(n: onnx.NodeProto, name: str, consts: dict[str, onnx.TensorProto]) -> onnx.NodeProto:
    """Axes input -> attribute. Without axes the node reduces everything, unless
    `noop_with_empty_axes` makes it an identity; either way that attribute has
    no opset-17 form."""
    noop = any(a.name == "noop_with_empty_axes" and a.i for a in n.attribute)
    if len(n.input) < 2 or not n.input[1]:
        if noop:
            return helper.make_node("Identity", [n.input[0]], list(n.output), name=n.name)
        return helper.make_node(n.op_type, [n.input[0]], list(n.output), name=n.name,
                                **_attrs(n, "noop_with_empty_axes"))
    t = consts.get(n.input[1])
    if t is None:
        raise DowngradeError(f"{n.op_type} node '{name}' takes its axes from '{n.input[1]}', "
                             f"which is not a constant; wsec needs constant reduction axes")
    attrs = _attrs(n, "noop_with_empty_axes")
    axes = [int(a) for a in numpy_helper.to_array(t).reshape(-1)]
    if not axes and noop:
        return helper.make_node("Identity", [n.input[0]], list(n.output), name=n.name)
    if axes:
        attrs["axes"] = axes
    return helper.make_node(n.op_type, [n.input[0]], list(n.output), name=n.name, **attrs)


def _gelu(n: onnx.NodeProto, name: str, g: onnx.GraphProto,
          elem: int) -> list[onnx.NodeProto]:
    """Gelu's formula; its constants take x's element type (fp16, bf16, fp32,
    fp64), since ONNX arithmetic never mixes types."""
    x, y = n.input[0], n.output[0]
    approx = next((helper.get_attribute_value(a) for a in n.attribute
                   if a.name == "approximate"), b"none")
    approx = approx.decode() if isinstance(approx, bytes) else str(approx)
    p = f"{name}.gelu"

    def c(suffix: str, v: float) -> str:
        g.initializer.append(helper.make_tensor(f"{p}.{suffix}", elem, [], [v]))
        return f"{p}.{suffix}"

    mk = helper.make_node
    if approx == "tanh":
        inner = [mk("Mul", [x, x], [f"{p}.x2"]), mk("Mul", [f"{p}.x2", x], [f"{p}.x3"]),
                 mk("Mul", [f"{p}.x3", c("k", 0.044715)], [f"{p}.kx3"]),
                 mk("Add", [x, f"{p}.kx3"], [f"{p}.s"]),
                 mk("Mul", [f"{p}.s", c("r", math.sqrt(2.0 / math.pi))], [f"{p}.u"]),
                 mk("Tanh", [f"{p}.u"], [f"{p}.t"])]
    else:
        inner = [mk("Div", [x, c("r", math.sqrt(2.0))], [f"{p}.u"]),
                 mk("Erf", [f"{p}.u"], [f"{p}.t"])]
    return inner + [mk("Add", [f"{p}.t", c("one", 1.0)], [f"{p}.t1"]),
                    mk("Mul", [x, f"{p}.t1"], [f"{p}.xt"]),
                    mk("Mul", [f"{p}.xt", c("half", 0.5)], [y], name=n.name)]


def _mish(n: onnx.NodeProto, name: str) -> list[onnx.NodeProto]:
    x, p = n.input[0], f"{name}.mish"
    mk = helper.make_node
    return [mk("Softplus", [x], [f"{p}.sp"]), mk("Tanh", [f"{p}.sp"], [f"{p}.t"]),
            mk("Mul", [x, f"{p}.t"], list(n.output), name=n.name)]
