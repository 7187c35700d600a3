"""ONNX frontend: an .onnx file -> a typed graph-level `Module` at opset 17.

Why this shape: the compiler must handle models whose weights do not fit in
memory, so weights stored as external data become `External` references
(validated, never read); small inline weights become `Splat`/`Dense`. Every
value needs a static type for sizing and placement, so shape inference runs
after the user's `--input-shape` fixes and any value left without a static
shape is reported by name.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference, version_converter
from wsec.ir.errors import UsageError, WsecError
from wsec.ir.graph import Module, Node
from wsec.ir.limits import check_shape
from wsec.ir.ops import CANONICAL_OPSET, ONNX_DTYPES, SUPPORTED_OPS
from wsec.ir.types import ConstData, Dense, External, TensorType, splat_of

from .onnx_downgrade import DowngradeError, downgrade
from .onnx_external import check_locations, detach, inline_small, reattach
from .onnx_resize import (
    ResizeConversionError,
    antialias_resizes,
    fix_legacy_resize,
    legacy_resize_modes,
)
from .onnx_rewrite import bool_aliases, bool_reductions, rewrite_model
from .onnx_shapes import all_static, fold_shape_chains, has_foreign_ops

# the oldest opset onnx's version converter brings up; the newest the installed onnx defines
MIN_OPSET, MAX_OPSET = 6, int(onnx.defs.onnx_opset_version())
_DEFAULT_DOMAINS = ("", "ai.onnx")


class FrontendError(WsecError):
    """The ONNX model cannot be compiled; the message says why and what to do."""


class InputShapeError(UsageError, FrontendError):
    """An --input-shape that does not fit the model (a usage error, exit 2)."""


def load_onnx(path: str, input_shapes: dict[str, list[int]] | None = None,
              opset: int = CANONICAL_OPSET) -> Module:
    """Read `path` (weights stay on disk) and return its graph as a Module."""
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf DecodeError, OSError, ...
        raise FrontendError(f"cannot read ONNX model '{path}': {_one_line(e)}") from None
    model_dir = os.path.dirname(os.path.abspath(path))
    bad = check_locations(model, model_dir)
    if bad:
        raise FrontendError(bad)
    try:
        onnx.checker.check_model(path, full_check=False)  # a path: data resolves beside it
    except Exception as e:
        raise FrontendError(f"invalid ONNX model '{path}': {_one_line(e)}") from None

    inline_small(model, model_dir)
    _fix_input_shapes(model, input_shapes or {})
    # from here on onnx only ever sees a model without external data (see onnx_external)
    detached = detach(model)
    src = _model_opset(model, path)
    if src < 7:
        _fix_legacy_prelu(model)
    try:
        legacy = legacy_resize_modes(model) if src < 11 else {}
    except ResizeConversionError as e:
        raise FrontendError(str(e)) from None
    antialias = antialias_resizes(model) if src >= 18 else set()
    bools = bool_reductions(model) if src >= 20 else False
    if src != opset:
        model = _convert(model, src, opset, path)
    fix_legacy_resize(model, legacy)
    model = rewrite_model(model)
    if has_foreign_ops(model):  # constant masks built with ops that have no kernel
        model = fold_shape_chains(model, ir_attrs)
    _check_supported(model)
    try:
        model = shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                             data_prop=True)
        if not all_static(model):  # run-time shape arithmetic: fold it, infer again
            model = fold_shape_chains(model, ir_attrs)
            model = shape_inference.infer_shapes(model, check_type=True, strict_mode=True,
                                                 data_prop=True)
    except FrontendError:
        raise
    except Exception as e:
        raise FrontendError(f"shape inference failed for '{path}': {_one_line(e)}") from None
    reattach(model, detached)

    g = model.graph
    stem = os.path.splitext(os.path.basename(path))[0]
    m = Module(g.name or stem)
    m.attrs.update(opset=int(opset), model_hash=_file_hash(path), source=os.path.basename(path))
    _Builder(m, model, model_dir, antialias, bools).build()
    return m


# --- checks before conversion ------------------------------------------------


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text or type(e).__name__


def _model_opset(model: onnx.ModelProto, path: str) -> int:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        raise FrontendError(f"model '{path}' does not import the default ONNX domain")
    v = int(versions[0])
    if v < MIN_OPSET:
        raise FrontendError(f"model '{path}' uses opset {v}; wsec accepts opsets "
                            f"{MIN_OPSET}..{MAX_OPSET} (re-export the model with a newer exporter)")
    if v > MAX_OPSET:
        raise FrontendError(f"model '{path}' uses opset {v}, newer than opset {MAX_OPSET}, the "
                            f"highest the installed onnx {onnx.__version__} defines; re-export "
                            f"at opset {MAX_OPSET} or lower, or upgrade the onnx package")
    return v


def _fix_input_shapes(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> None:
    """Apply --input-shape values; every remaining input dim must be static."""
    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    names = [i.name for i in inputs]
    for name in shapes:
        if name not in names:
            raise InputShapeError(f"--input-shape names '{name}', but the model's inputs are "
                                  f"{', '.join(repr(n) for n in names)}")
    for inp in inputs:
        tt = inp.type.tensor_type
        if not inp.type.HasField("tensor_type"):
            raise FrontendError(f"input '{inp.name}' is not a tensor; wsec compiles tensor inputs")
        if inp.name in shapes:
            want = [int(d) for d in shapes[inp.name]]
            if tt.HasField("shape") and len(tt.shape.dim) != len(want):
                raise InputShapeError(f"--input-shape {inp.name}={','.join(map(str, want))} "
                                      f"has rank {len(want)}, but input '{inp.name}' has rank "
                                      f"{len(tt.shape.dim)}")
            tt.ClearField("shape")
            for d in want:
                tt.shape.dim.add().dim_value = d
            continue
        example = inp.name + "=" + ",".join(
            str(d.dim_value) if d.HasField("dim_value") else "N" for d in tt.shape.dim)
        if not tt.HasField("shape"):
            raise FrontendError(f"input '{inp.name}' has no shape; pass --input-shape "
                                f"{inp.name}=D0,D1,...")
        for k, d in enumerate(tt.shape.dim):
            if not d.HasField("dim_value"):
                what = f"'{d.dim_param}'" if d.dim_param else "an unknown size"
                raise FrontendError(f"input '{inp.name}' has symbolic dim {what} (dim {k}); pass "
                                    f"--input-shape {example} with the size to compile for")
        check_shape(f"input '{inp.name}'", [d.dim_value for d in tt.shape.dim],
                    error=FrontendError)


def _convert(model: onnx.ModelProto, src: int, opset: int, path: str) -> onnx.ModelProto:
    """onnx's version converter; for newer models without down adapters, `downgrade`.

    onnx's down-conversion may also "succeed" and leave a newer attribute in
    place, so a down-converted model is checked against the target opset."""
    try:
        converted = version_converter.convert_version(model, opset)
        if src < opset:
            return converted
        onnx.checker.check_model(converted, full_check=False)
        return converted
    except Exception as e:
        if src < opset:
            raise FrontendError(f"cannot convert model '{path}' from opset {src} to {opset}: "
                                f"{_one_line(e)}") from None
    try:
        down = downgrade(model, opset)
        onnx.checker.check_model(down, full_check=False)
    except DowngradeError as e:
        raise FrontendError(f"cannot convert model '{path}' from opset {src} to {opset}: "
                            f"{e}") from None
    except Exception as e:
        raise FrontendError(f"cannot convert model '{path}' from opset {src} to {opset}: "
                            f"{_one_line(e)} (re-export the model at opset {opset})") from None
    return down


def _fix_legacy_prelu(model: onnx.ModelProto) -> None:
    """Opset-6 PRelu broadcast a 1-D slope over channels (axis 1); opset 7 and newer
    broadcast numpy-style from the right. onnx's version converter keeps the
    slope as is, so reshape a per-channel slope initializer to (C, 1, ..., 1)."""
    g = model.graph
    slopes = {n.input[1] for n in g.node if n.op_type == "PRelu" and len(n.input) > 1}
    if not slopes:
        return
    try:
        inferred = shape_inference.infer_shapes(model).graph
    except Exception:
        return  # shape inference reports the problem later, after conversion
    ranks = {vi.name: len(vi.type.tensor_type.shape.dim)
             for vi in list(inferred.input) + list(inferred.value_info)
             if vi.type.tensor_type.HasField("shape")}
    inits = {t.name: t for t in g.initializer}
    for n in g.node:
        if n.op_type != "PRelu" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        t, rank = inits[n.input[1]], ranks.get(n.input[0], 0)
        if len(t.dims) == 1 and t.dims[0] > 1 and rank > 2:
            t.dims.extend([1] * (rank - 2))
            for vi in g.input:
                if vi.name == t.name and vi.type.tensor_type.HasField("shape"):
                    vi.type.tensor_type.shape.dim.add().dim_value = 1
                    for _ in range(rank - 3):
                        vi.type.tensor_type.shape.dim.add().dim_value = 1


def _check_supported(model: onnx.ModelProto) -> None:
    for i, n in enumerate(model.graph.node):
        if n.op_type == "Constant" and n.domain in _DEFAULT_DOMAINS:
            continue
        if n.domain not in _DEFAULT_DOMAINS or n.op_type not in SUPPORTED_OPS:
            op = n.op_type if n.domain in _DEFAULT_DOMAINS else f"{n.domain}.{n.op_type}"
            raise FrontendError(f"unsupported operator '{op}' (node '{n.name or f'#{i}'}'); "
                                f"see `wsec ops` for the supported operators")


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


# --- building the Module -----------------------------------------------------


def _elem_dtype(elem: int, what: str) -> str:
    name = ONNX_DTYPES.get(int(elem))
    if name is None:
        tname = onnx.TensorProto.DataType.Name(elem) if elem in onnx.TensorProto.DataType.values() \
            else str(elem)
        raise FrontendError(f"{what} has element type {tname}, which wsec does not support")
    return name


class _Builder:
    """Converts the inferred, opset-17 ModelProto into Module values and nodes."""

    def __init__(self, m: Module, model: onnx.ModelProto, model_dir: str,
                 antialias: set[str] | None = None, bools: bool = False) -> None:
        self.m, self.g, self.model_dir = m, model.graph, model_dir
        self.antialias = set(antialias or ())  # Resize outputs: opset 17 lost the attribute
        # bool reductions: the uint8 Casts onnx_rewrite.bool_reductions wrapped them in
        # (dropped: value renamed -> the name the IR uses)
        self.alias = bool_aliases(self.g) if bools else {}
        self.types: dict[str, onnx.TypeProto] = {}
        for vi in list(self.g.input) + list(self.g.value_info) + list(self.g.output):
            self.types.setdefault(vi.name, vi.type)

    def build(self) -> None:
        g, m = self.g, self.m
        inits = {t.name for t in g.initializer}
        for inp in g.input:
            if inp.name not in inits:
                m.add_value(inp.name, self._type_of(inp.name, f"input '{inp.name}'"))
                m.inputs.append(inp.name)
        for t in g.initializer:
            m.add_value(t.name, *self._tensor_const(t, f"initializer '{t.name}'"))
        for n in g.node:
            if n.op_type == "Constant":
                self._constant(n)
        used: set[str] = set()
        for i, n in enumerate(g.node):
            if n.op_type != "Constant" and not (n.op_type == "Cast" and self.alias and (
                    n.output[0] in self.alias or n.input[0] in self.alias)):
                m.nodes.append(self._node(n, i, used))
        lost = self.antialias - {nd.outputs[0] for nd in m.nodes if nd.op == "Resize"}
        if lost:
            raise FrontendError(f"the antialiased Resize producing '{sorted(lost)[0]}' did not "
                                f"survive the conversion to opset 17 as a Resize; re-export "
                                f"the model at opset 17 (without antialias)")
        if not g.output:
            raise FrontendError(f"model '{m.name}' has no outputs: there is nothing to compute "
                                f"(list the tensors it computes as graph outputs)")
        for o in g.output:
            if o.name not in m.values:
                raise FrontendError(f"graph output '{o.name}' is not produced by any node")
            if o.name in m.inputs:
                raise FrontendError(f"graph output '{o.name}' is a graph input: the model "
                                    f"computes nothing for it")
            m.outputs.append(o.name)

    def _type_of(self, name: str, what: str) -> TensorType:
        tp = self.types.get(name)
        if tp is None or not tp.HasField("tensor_type") or not tp.tensor_type.HasField("shape"):
            raise FrontendError(f"{what} has no static shape after shape inference; fix the "
                                f"input shapes with --input-shape or simplify the model")
        tt = tp.tensor_type
        dims = []
        for k, d in enumerate(tt.shape.dim):
            if not d.HasField("dim_value"):
                sym = f" '{d.dim_param}'" if d.dim_param else ""
                raise FrontendError(f"{what} has a symbolic dim{sym} (dim {k}) after shape "
                                    f"inference; fix the input shapes with --input-shape")
            dims.append(d.dim_value)
        check_shape(what, dims, zero_ok=True, error=FrontendError)
        return TensorType(_elem_dtype(tt.elem_type, what), tuple(dims))

    def _tensor_const(self, t: onnx.TensorProto, what: str) -> tuple[TensorType, ConstData]:
        check_shape(what, list(t.dims), zero_ok=True, error=FrontendError)
        ty = TensorType(_elem_dtype(t.data_type, what), tuple(t.dims))
        if ty.numel == 0 and ty.dtype.startswith("f") and self._weight_use(t.name):
            raise FrontendError(f"{what} has zero-size shape {list(t.dims)}: a weight with no "
                                f"elements (node '{self._weight_use(t.name)}' reads it)")
        if t.data_location == onnx.TensorProto.EXTERNAL:
            ext = {e.key: e.value for e in t.external_data}
            loc = ext.get("location", "")
            offset = _ext_int(ext, "offset", 0, what)
            length = _ext_int(ext, "length", ty.nbytes, what)
            if "\0" in loc:
                raise FrontendError(f"{what}: external data location {loc!r} contains a NUL "
                                    f"byte")
            full = os.path.join(self.model_dir, loc)
            if length != ty.nbytes:
                raise FrontendError(f"{what} of type {ty} needs {ty.nbytes} bytes but its "
                                    f"external data entry gives length {length}")
            if not os.path.isfile(full) or os.path.getsize(full) < offset + length:
                raise FrontendError(f"{what}: external data '{loc}' is missing or shorter than "
                                    f"offset {offset} + length {length}")
            return ty, External(ty, loc, offset, length, base_dir=self.model_dir)
        stored = _stored_elements(t, ty)
        if stored is not None and stored != ty.numel:
            raise FrontendError(f"{what} declares shape {list(t.dims)} ({ty.numel:,} elements) "
                                f"but stores {stored:,}: the file is damaged or was written "
                                f"wrongly")
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            raise FrontendError(f"cannot decode {what}: {_one_line(e)}") from None
        return ty, splat_of(arr) or Dense(ty, arr)

    def _weight_use(self, name: str) -> str | None:
        """The first node that reads `name` as data (not as an optional
        operand that may be empty, like Resize's roi and scales)."""
        for i, n in enumerate(self.g.node):
            for k, x in enumerate(n.input):
                if x == name and not (n.op_type == "Resize" and k in (1, 2)):
                    return n.name or f"{n.op_type}_{i}"
        return None

    def _constant(self, n: onnx.NodeProto) -> None:
        out = n.output[0]
        attr = n.attribute[0] if len(n.attribute) == 1 else None
        if attr is None or attr.name not in ("value", "value_float", "value_floats",
                                             "value_int", "value_ints"):
            raise FrontendError(f"Constant node '{n.name or out}' must have one tensor/number "
                                f"'value' attribute")
        if attr.name == "value":
            ty, const = self._tensor_const(attr.t, f"Constant '{out}'")
        else:
            is_f = attr.name.startswith("value_float")
            arr = np.asarray(onnx.helper.get_attribute_value(attr),
                             dtype=np.float32 if is_f else np.int64)
            ty = TensorType("f32" if is_f else "i64", arr.shape)
            const = splat_of(arr) or Dense(ty, arr)
        self.m.add_value(out, ty, const)

    def _node(self, n: onnx.NodeProto, i: int, used: set[str]) -> Node:
        name = n.name or f"{n.op_type}_{i}"
        if name in used:
            k = 1
            while f"{name}_{k}" in used:
                k += 1
            name = f"{name}_{k}"
        used.add(name)
        attrs = ir_attrs(n, name)
        if n.op_type == "Resize" and n.output and n.output[0] in self.antialias:
            attrs["antialias"] = 1
        outs = [self.alias.get(o, o) for o in n.output]
        ins = [self.alias.get(x, x) for x in n.input]
        for o in outs:
            if o:
                self.m.add_value(o, self._type_of(o, f"value '{o}' (output of {n.op_type} "
                                                     f"node '{name}')"))
        for x in ins:
            if x and x not in self.m.values:
                raise FrontendError(f"node '{name}' ({n.op_type}) reads '{x}', which is not "
                                    f"defined before it")
        return Node(name, n.op_type, ins, outs, attrs)


def _ext_int(ext: dict[str, str], key: str, default: int, what: str) -> int:
    """An external-data entry's offset or length: a non-negative integer."""
    if key not in ext:
        return default
    text = ext[key]
    try:
        v = int(text)
    except ValueError:
        raise FrontendError(f"{what}: external data {key} '{text}' is not an integer") from None
    if v < 0 or v > 1 << 62:
        raise FrontendError(f"{what}: external data {key} {v} is out of range (0 to 2^62)")
    return v


_TYPED_FIELDS = ("float_data", "int32_data", "int64_data", "double_data", "uint64_data",
                 "string_data")


def _stored_elements(t: onnx.TensorProto, ty: TensorType) -> int | None:
    """How many elements an inline tensor's data holds (None: unknown)."""
    if t.HasField("raw_data"):
        return len(t.raw_data) // ty.itemsize if ty.itemsize >= 1 else None
    for f in _TYPED_FIELDS:  # narrow types are stored widened, one entry per element
        n = len(getattr(t, f))
        if n:
            return n
    return 0


def _scalar(x: Any) -> int | float:
    v = np.asarray(x).item()
    return int(v) if isinstance(v, bool | int) else float(v)


def _dtype_code(dt: np.dtype) -> int:
    return int(onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dt)))


def ir_attrs(n: onnx.NodeProto, name: str) -> dict[str, Any]:
    """The IR attributes of ONNX node `n` (ConstantOfShape's tensor becomes value + dtype)."""
    attrs = {a.name: _attr(n, name, a) for a in n.attribute}
    if n.op_type == "ConstantOfShape":
        tensor = attrs.pop("value", None)
        arr = tensor if isinstance(tensor, np.ndarray) else np.zeros(1, np.float32)
        attrs["value"] = _scalar(arr.reshape(-1)[0])
        attrs["dtype"] = _elem_dtype(_dtype_code(arr.dtype), f"ConstantOfShape '{name}'")
    return attrs


def _attr(n: onnx.NodeProto, name: str, a: onnx.AttributeProto) -> Any:
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, onnx.TensorProto):
        if n.op_type == "ConstantOfShape":
            return numpy_helper.to_array(v)
        raise FrontendError(f"node '{name}' ({n.op_type}): tensor attribute '{a.name}' is "
                            f"not supported")
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, list):
        if v and isinstance(v[0], bytes):
            return [x.decode("utf-8") for x in v]
        if v and not isinstance(v[0], int | float):
            raise FrontendError(f"node '{name}' ({n.op_type}): attribute '{a.name}' "
                                f"(graphs/tensors) is not supported")
        return list(v)
    if isinstance(v, int | float | str):
        return v
    raise FrontendError(f"node '{name}' ({n.op_type}): attribute '{a.name}' of kind "
                        f"{type(v).__name__} is not supported")
