"""Write a graph-level Module as an ONNX model (what `wsec export-train` saves).

Why: a derived training step must be checkable by a tool that is not wsec.
Every op of a graph-level module is a standard ONNX op at the canonical
opset, so the module maps one to one onto an ONNX graph: inputs, outputs,
nodes, and constants as initializers. Constants keep their storage class:
dense ones are written inline, splats as one-element ConstantOfShape nodes
when large (an optimizer state of a billion zeros costs nothing), and
external ones keep referencing the model's external-data file (never read).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from wsec.ir.errors import WsecError
from wsec.ir.graph import Kernel, Module
from wsec.ir.ops import CANONICAL_OPSET, IR_TO_ONNX_DTYPE
from wsec.ir.types import External, Splat

SPLAT_INLINE = 1024  # splats up to this many elements are written as plain initializers
# attributes ONNX types as floats even when a value happens to be integral
FLOAT_ATTRS = frozenset({"alpha", "beta", "epsilon", "gamma", "bias", "momentum", "lambd",
                         "extrapolation_value", "cubic_coeff_a", "ratio"})


class ExportError(WsecError):
    """The module cannot be written as ONNX (the message says why)."""


def _attrs(op: str, attrs: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in attrs.items():
        if op == "ConstantOfShape" and k in ("value", "dtype"):
            continue
        if k in FLOAT_ATTRS and isinstance(v, int | float) and not isinstance(v, bool):
            v = float(v)
        out[k] = v
    if op == "ConstantOfShape":
        dt = str(attrs.get("dtype", "f32"))
        out["value"] = numpy_helper.from_array(
            np.array([attrs.get("value", 0)], dtype=np.dtype(_np(dt))))
    return out


def _np(dtype: str) -> Any:
    from wsec.ir.types import DTYPES

    return DTYPES[dtype]


def _external(name: str, c: External, out_dir: str) -> TensorProto:
    path = os.path.abspath(c.resolved_path())
    loc = os.path.relpath(path, out_dir)
    if loc.startswith(".."):
        raise ExportError(f"initializer '{name}' is stored in '{path}', outside the output's "
                          f"directory '{out_dir}'; ONNX external data must lie beside the model",
                          hint="write the step into the model's directory")
    t = TensorProto()
    t.name = name
    t.data_type = IR_TO_ONNX_DTYPE[c.type.dtype]
    t.dims.extend(c.stored_shape())
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", loc), ("offset", str(c.offset)), ("length", str(c.length))):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def module_to_onnx(module: Module, out_dir: str, producer: str = "wsec") -> onnx.ModelProto:
    """The ONNX model of graph-level `module` (external data relative to `out_dir`)."""
    if any(isinstance(n, Kernel) for n in module.nodes):
        raise ExportError("only a graph-level module (before form-kernels) can be written "
                          "as ONNX")
    used: list[str] = []
    seen: set[str] = set()
    for n in module.nodes:
        for i in n.inputs:
            if i and i not in seen:
                seen.add(i)
                used.append(i)
    for o in module.outputs:
        if o not in seen:
            seen.add(o)
            used.append(o)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    for v in used:
        val = module.values[v]
        c = val.const
        if c is None:
            continue
        if isinstance(c, External) and c.perm is not None:  # stored transposed
            inits.append(_external(f"{v}.stored", c, out_dir))
            nodes.append(helper.make_node("Transpose", [f"{v}.stored"], [v],
                                          name=f"{v}.transpose", perm=list(c.perm)))
        elif isinstance(c, External):
            inits.append(_external(v, c, out_dir))
        elif isinstance(c, Splat) and c.type.numel > SPLAT_INLINE:
            shape = f"{v}.shape"
            inits.append(numpy_helper.from_array(np.asarray(c.type.shape, np.int64), shape))
            nodes.append(helper.make_node(
                "ConstantOfShape", [shape], [v], name=f"{v}.splat",
                value=numpy_helper.from_array(np.array([c.value], c.type.np_dtype))))
        else:  # np.ascontiguousarray would make a scalar 1-D
            inits.append(numpy_helper.from_array(np.array(c.array(), order="C"), v))
    for n in module.nodes:
        if n.op == "BatchNormalization" and n.attrs.get("training_mode", 0):
            extra, more = _batchnorm_training(module, n)
            nodes.extend(extra)
            inits.extend(more)
            continue
        if n.op == "Resize" and n.attrs.get("antialias", 0):
            raise ExportError(f"Resize node '{n.name}' uses antialias=1, which opset "
                              f"{CANONICAL_OPSET} cannot express; export without antialias")
        nodes.append(helper.make_node(n.op, list(n.inputs), list(n.outputs), name=n.name,
                                      **_attrs(n.op, n.attrs)))

    def info(v: str) -> onnx.ValueInfoProto:
        t = module.values[v].type
        return helper.make_tensor_value_info(v, IR_TO_ONNX_DTYPE[t.dtype], list(t.shape))

    graph = helper.make_graph(nodes, module.name, [info(v) for v in module.inputs],
                              [info(v) for v in module.outputs], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", CANONICAL_OPSET)],
                              producer_name=producer)
    model.ir_version = 8
    return model


def _batchnorm_training(module: Module, n: Any) -> tuple[list[onnx.NodeProto],
                                                        list[TensorProto]]:
    """BatchNormalization in training mode as primitive ops. Why: onnxruntime's
    graph optimizer fuses a Conv followed by BatchNormalization as if in
    inference mode, whatever training_mode says (onnxruntime 1.32), so the
    exported step spells the batch statistics out. Its running-statistics
    outputs are unused by a training step and not written."""
    x, scale, bias = n.inputs[:3]
    shape = module.values[x].type.shape
    dt = module.values[x].type.np_dtype
    axes = [0] + list(range(2, len(shape)))
    p = f"{n.name}.bn"
    per = [1, shape[1]] + [1] * (len(shape) - 2)
    inits = [numpy_helper.from_array(np.asarray(per, np.int64), f"{p}.per"),
             numpy_helper.from_array(np.array(float(n.attrs.get("epsilon", 1e-5)), dt),
                                     f"{p}.eps")]
    mk = helper.make_node
    nodes = [mk("ReduceMean", [x], [f"{p}.mean"], axes=axes, keepdims=1),
             mk("Sub", [x, f"{p}.mean"], [f"{p}.xc"]),
             mk("Mul", [f"{p}.xc", f"{p}.xc"], [f"{p}.sq"]),
             mk("ReduceMean", [f"{p}.sq"], [f"{p}.var"], axes=axes, keepdims=1),
             mk("Add", [f"{p}.var", f"{p}.eps"], [f"{p}.veps"]),
             mk("Sqrt", [f"{p}.veps"], [f"{p}.std"]),
             mk("Div", [f"{p}.xc", f"{p}.std"], [f"{p}.xhat"]),
             mk("Reshape", [scale, f"{p}.per"], [f"{p}.scale"]),
             mk("Reshape", [bias, f"{p}.per"], [f"{p}.bias"]),
             mk("Mul", [f"{p}.xhat", f"{p}.scale"], [f"{p}.scaled"]),
             mk("Add", [f"{p}.scaled", f"{p}.bias"], [n.outputs[0]], name=n.name)]
    return nodes, inits


def save_onnx(model: onnx.ModelProto, path: str) -> None:
    """Write atomically (temp file in the same directory, then rename; a
    special file such as /dev/null is written into, see wsec.outputs)."""
    from .outputs import Outputs

    with Outputs() as outs:
        outs.output(path, "the ONNX model")
        outs.put(path, model.SerializeToString())
