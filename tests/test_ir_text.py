"""The textual IR: print -> parse gives an equal module and the same text.

Covers every construct of docs/ir.md, onnx's nine light models, the docs'
own example, parse errors (with line numbers) and printing/parsing speed.
"""

from __future__ import annotations

import math
import pathlib
import re
from dataclasses import replace

import numpy as np
import onnx
import pytest
from conftest import LIGHT_MODELS, ROOT, light_model
from onnx import helper, numpy_helper, shape_inference
from wsec.ir.errors import WsecError
from wsec.ir.graph import HOST, Bundle, Edge, Kernel, Module, Node, Rect, SramRegion
from wsec.ir.kernel_kind import KernelKind
from wsec.ir.kernels import register
from wsec.ir.parser import ParseError, parse_module
from wsec.ir.printer import print_module
from wsec.ir.types import ConstData, Dense, External, Splat, TensorType, dtype_name
from wsec.ir.verify import verify_module


# --- field-by-field equality -----------------------------------------------
def _same_const(a: ConstData | None, b: ConstData | None) -> bool:
    if a is None or b is None:
        return a is b
    if type(a) is not type(b) or a.type != b.type:
        return False
    if isinstance(a, Dense):
        return a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data, equal_nan=True)
    if isinstance(a, Splat):
        return (type(a.value) is type(b.value) and a.value == b.value) or (
            isinstance(a.value, float) and math.isnan(a.value) and math.isnan(b.value))
    return a == b


def _same_attr(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_attr(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_attr(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _same_node(a: Node, b: Node) -> None:
    assert type(a) is type(b), a.name
    assert (a.name, a.op, a.inputs, a.outputs) == (b.name, b.op, b.inputs, b.outputs)
    assert _same_attr(a.attrs, b.attrs), a.name
    if isinstance(a, Kernel):
        assert isinstance(b, Kernel)
        for f in ("kind", "dims", "origin", "knobs", "rect", "cost", "sram", "rotated"):
            assert getattr(a, f) == getattr(b, f), (a.name, f)
        assert len(a.body) == len(b.body)
        for x, y in zip(a.body, b.body, strict=True):
            _same_node(x, y)


def assert_same_module(a: Module, b: Module) -> None:
    assert (a.name, a.inputs, a.outputs, a.properties) == (b.name, b.inputs, b.outputs,
                                                           b.properties)
    assert _same_attr(a.attrs, b.attrs)
    assert list(a.values) == list(b.values) or set(a.values) == set(b.values)
    for k, v in a.values.items():
        w = b.values[k]
        assert (v.name, v.type) == (w.name, w.type), k
        assert _same_const(v.const, w.const), k
    assert len(a.nodes) == len(b.nodes)
    for x, y in zip(a.nodes, b.nodes, strict=True):
        _same_node(x, y)
    assert a.edges == b.edges


def round_trip(m: Module) -> Module:
    text = print_module(m)
    m2 = parse_module(text)
    assert print_module(m2) == text
    assert_same_module(m, m2)
    return m2


# --- a hand-built module with every construct -------------------------------
class _TextConv(KernelKind):
    """A kind for the text round-trip module: a 12x4 rectangle, 1000 cycles."""

    name = "text.conv"
    knob_names = ("c", "k")
    has_body = True

    def shape(self, dims, knobs, target):  # noqa: ANN001, ANN201
        return 12, 4

    def cycles(self, dims, knobs, target):  # noqa: ANN001, ANN201
        return 1000


class _TextAdd(KernelKind):
    name = "ew.add_2"

    def shape(self, dims, knobs, target):  # noqa: ANN001, ANN201
        return 2, 2


register(_TextConv())
register(_TextAdd())


def full_module() -> Module:
    f32 = TensorType("f32", (1, 4, 8, 8))
    m = Module("every thing", attrs={
        "target": "wse2", "grid": [64, 32], "opset": 17, "clock": 8.5e8, "tiny": 1e-300,
        "neg": -0.0, "hash": "sha256:\"q\"\n", "nested": {"a b": [1, 2.5, "x"], "z": {}},
        "flags": [True, False, None], "empty": [], "inf": math.inf, "ninf": -math.inf,
    })
    m.properties = {"canonical", "kernels", "sized", "placed", "routed", "allocated"}
    m.add_value("gpu_0/data_0", f32)
    m.add_value("in put", TensorType("f16", (2,)))
    m.inputs = ["gpu_0/data_0", "in put"]
    w = TensorType("f32", (4, 4, 3, 3))
    m.add_value("w", w, Dense(w, np.arange(144, dtype=np.float32).reshape(w.shape) / 7))
    for name, t, v in [("s_f", "f16", 0.1), ("s_i", "i64", -3), ("s_b", "bool", True),
                       ("s_u", "u8", 255), ("s_nan", "f32", math.nan), ("s_inf", "f64", -math.inf),
                       ("s_0", "i32", 0)]:
        tt = TensorType(t, (3, 5))
        m.add_value(name, tt, Splat(tt, v))
    shp = TensorType("i64", (2,))
    m.add_value("shape", shp, Dense(shp, np.array([1, 2**62], dtype=np.int64)))
    bt = TensorType("bool", (3,))
    m.add_value("mask", bt, Dense(bt, np.array([True, False, True])))
    et = TensorType("f16", (4096, 4096))
    m.add_value("big", et, External(et, "weights dir/w.bin", 128, 33554432))
    scalar = TensorType("i64", ())
    m.add_value("scalar", scalar, Dense(scalar, np.array(7)))
    m.add_value("y", f32)
    m.add_value("a//b", f32)
    m.add_value("r", f32)
    m.add_value("z", f32)
    m.add_value("é \"q\"", TensorType("f32", (0, 3)))
    body = [
        Node("conv1", "Conv", ["gpu_0/data_0", "w", ""], ["y"],
             {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "alpha": 0.5, "auto_pad": "SAME",
              "epsilons": [1e-5, 2.0], "names": ["a", "b c"]}),
        Node("relu 1", "Relu", ["y"], ["a//b"]),
        Node("", "Add", ["a//b", "s_f"], ["r"]),
    ]
    k0 = Kernel("k0", "conv", ["gpu_0/data_0", "w", "s_f"], ["r"], attrs={"mode": "fast"},
                kind="text.conv", dims={"C": 4, "H": 8, "K": 4}, body=body,
                origin=["conv1", "relu 1", ""], knobs={"c": 1, "k": 4},
                rect=Rect(0, 0, 4, 12), cost={"cycles": 1000, "sram": 2048},
                sram=[SramRegion("weights", 0, 1024), SramRegion("acts in", 1024, 512)],
                rotated=True)
    k1 = Kernel("k1", "Elementwise", ["r"], ["z"], kind="ew.add_2", dims={},
                knobs={}, rect=Rect(10, 0, 2, 2), cost={}, sram=[])
    m.nodes = [k0, k1, Node("odd", "custom.Op", ["z", "scalar"], ["é \"q\"", ""],
                             {"weird key": 1, "true": 2, "inf": 3})]
    m.edges = [
        Edge("gpu_0/data_0", HOST, ["k0"], 256, [Bundle("k0", 0, 2, (0, 1), ((0, 0),), 3)]),
        Edge("r", "k0", ["k1"], 256,
             [Bundle("k1", 3, 2, (0, -1), ((3, 5), (6, 5), (6, 1), (10, 1)), 1)]),
        Edge("z", "k1", [HOST], 0, [Bundle(HOST, 4, 1, (0, 1), ((11, 0), (63, 0)))]),
    ]
    m.outputs = ["z", "é \"q\""]
    return m


def test_full_module_round_trips_and_verifies() -> None:
    m = full_module()
    m.properties.discard("kernels")  # node "odd" is outside any kernel
    verify_module(m)
    m2 = round_trip(m)
    verify_module(m2)
    text = print_module(m)
    assert '%"a//b"' in text and "%gpu_0/data_0" in text and '%"in put"' in text
    assert "splat(true)" in text and "splat(nan)" in text and "splat(-inf)" in text
    assert "splat(0.1)" in text or "splat(0.0999755859375)" in text
    assert '{"true" = 2, "weird key" = 1, "inf" = 3}' not in text  # keys sorted and quoted
    assert '{"inf" = 3, "true" = 2, "weird key" = 1}' in text
    assert ('  bundle "k1" color 3 lanes 2 axis [0, -1] reach 1 path [[3, 5], [6, 5], [6, 1], '
            '[10, 1]]') in text
    assert '  bundle "k0" color 0 lanes 2 axis [0, 1] reach 3 path [[0, 0]]' in text
    assert 'Conv(%gpu_0/data_0, %w, %"")' in text
    assert "rect = [0, 0, 4, 12], rotated = 1" in text
    assert '"inf" = inf, neg = -0.0, nested = {"a b" = [1, 2.5, "x"], z = {}}' in text
    assert "ninf = -inf" in text and "flags = [true, false, null]" in text


def test_optional_kernel_fields_absent_when_unset() -> None:
    t = TensorType("f32", (4,))
    m = Module("m")
    m.add_value("x", t)
    m.add_value("y", t)
    m.inputs, m.outputs = ["x"], ["y"]
    m.nodes = [Kernel("k", "relu", ["x"], ["y"], kind="relu")]
    m.edges = [Edge("y", "k", [HOST], 16)]
    text = print_module(m)
    assert 'kernel "k" relu(%x) -> (%y : f32[4]) {dims = {}, origin = []} {\n}' in text
    assert 'edge %y from "k" to ["@host"] bytes 16\n' in text
    for word in ("knobs", "rect", "rotated", "cost", "sram", "color", "bundle", "properties"):
        assert word not in text
    m2 = round_trip(m)
    assert m2.edges[0].bundles is None and m2.nodes[0].knobs is None  # type: ignore[attr-defined]


def test_external_base_dir_and_comments() -> None:
    text = """// RUN: wsec opt %s | filecheck %s
module "m" // trailing comment
// CHECK: const %w
const %w : f32[2] = external("w.bin", 8, 8)  // comment after a statement

output %w
"""
    m = parse_module(text, base_dir="/data/models")
    c = m.values["w"].const
    assert isinstance(c, External)
    assert (c.path, c.offset, c.length, c.base_dir) == ("w.bin", 8, 8, "/data/models")
    assert c.resolved_path() == "/data/models/w.bin"


def test_docs_example_parses_and_prints_identically() -> None:
    doc = (ROOT / "docs" / "ir.md").read_text()
    block = re.search(r"\n\n((?:    .*\n)+)", doc[doc.index("Keys sorted when printed"):])
    assert block, "the example block of docs/ir.md"
    example = "\n".join(line[4:] for line in block.group(1).splitlines()) + "\n"
    assert print_module(parse_module(example)) == example


# --- onnx's light models ------------------------------------------------------
def _tt(vi: onnx.ValueInfoProto) -> TensorType:
    tt = vi.type.tensor_type
    return TensorType(dtype_name(helper.tensor_dtype_to_np_dtype(tt.elem_type)),
                      tuple(d.dim_value for d in tt.shape.dim))


def _attr(v: object) -> object:
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list):
        return [_attr(x) for x in v]
    return v


def minimal_onnx_to_module(path: str) -> Module:
    """Just enough of a frontend to get real graphs into the IR for this test."""
    model = onnx.load(path)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(keep)
    model.ir_version = max(model.ir_version, 4)
    g = shape_inference.infer_shapes(model, data_prop=True).graph
    m = Module(g.name or "model", attrs={"opset": model.opset_import[0].version})
    types = {vi.name: _tt(vi) for vi in [*g.input, *g.value_info, *g.output]}
    for vi in g.input:
        m.add_value(vi.name, types[vi.name])
        m.inputs.append(vi.name)
    for name, arr in inits.items():
        t = TensorType(dtype_name(arr.dtype), arr.shape)
        m.add_value(name, t, Dense(t, arr))
    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:  # light models' weights
            v = numpy_helper.to_array(attrs["value"]).reshape(-1)[0]
            t = TensorType(dtype_name(v.dtype), tuple(int(d) for d in inits[n.input[0]]))
            m.add_value(n.output[0], t, Splat(t, v.item()))
            continue
        outs = [o if o in types else "" for o in n.output]  # untyped unused: omitted
        for o in outs:
            if o:
                m.add_value(o, types[o])
        m.nodes.append(Node(n.name, n.op_type, list(n.input), outs,
                            {k: _attr(v) for k, v in attrs.items()}))
    m.outputs = [o.name for o in g.output]
    return m


def _frontend():  # type: ignore[no-untyped-def]
    try:
        from wsec.frontends.onnx import load_onnx
    except ImportError:
        return None
    return load_onnx


@pytest.mark.parametrize("converter", ["minimal", "frontend"])
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_round_trips(name: str, converter: str) -> None:
    if converter == "frontend":
        load = _frontend()
        if load is None:
            pytest.skip("wsec.frontends.onnx.load_onnx is not available")
        m = load(str(light_model(name)))
    else:
        m = minimal_onnx_to_module(str(light_model(name)))
    verify_module(m)
    assert len(m.nodes) > 10
    m2 = round_trip(m)
    verify_module(m2)


def test_light_models_present() -> None:
    assert len(LIGHT_MODELS) == 9


# --- parse errors ---------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ('input %x : f32[2]\n', r"line 1: expected a 'module \"name\"' line"),
    ('module "m"\ninput %x f32[2]\n', r"line 2: expected ':' and the input's type, found 'f32'"),
    ('module "m"\ninput %x : f99[2]\n', r"line 2: expected a type like f32\[1,3\]"),
    ('module "m"\n\n\nnode "n" = Relu(%x -> (%y : f32[1])\n', r"line 4: expected ',' or '\)'"),
    ('module "m"\nnode "n" = Relu(%x) -> (%y : f32[1]) {a = }\n', r"line 2: expected a value"),
    ('module "m"\nnode "n" = Relu(%x) -> (%y : f32[1]) {a = 1, a = 2}\n',
     r"line 2: key 'a' given twice"),
    ('module "m"\nconst %c : f32[2] = dense("AAAA")\n',
     r"line 2: dense data of %c has 3 bytes but its type f32\[2\] needs 8"),
    ('module "m"\nconst %c : f32[2] = dense("A!==")\n', r"line 2: dense data of %c is not valid"),
    ('module "m"\nconst %c : i32[2] = splat(1.5)\n', r"line 2: splat value 1.5 does not fit"),
    ('module "m"\nconst %c : f32[2] = zeros()\n', r"line 2: expected splat, dense or external"),
    ('module "m"\nkernel "k" relu(%x) -> (%y : f32[1]) {dims = {}} {\nedge %y from "k" to '
     '["@host"] bytes 4\n', r"line 3: expected '}' closing the body of kernel 'k' \(opened on "
     r"line 2\), found 'edge'"),
    ('module "m"\nkernel "k" relu(%x) -> (%y : f32[1]) {dims = {}} {\n',
     r"line 3: end of input inside the body of kernel 'k'"),
    ('module "m"\nkernel "k" relu(%x) -> (%y : f32[1]) {size = 3} {\n}\n',
     r"line 2: unknown kernel field 'size'"),
    ('module "m"\nkernel "k" relu(%x) -> (%y : f32[1]) {rect = [1, 2]} {\n}\n',
     r"line 2: kernel 'k': rect must be \[x, y, w, h\]"),
    ('module "m"\n}\n', r"line 2: '}' without an open kernel body"),
    ('module "m"\n  bundle "k" color 1 lanes 1 axis [0, 1] reach 0 path [[0, 0]]\n',
     r"line 2: a 'bundle' line must follow its 'edge' line"),
    ('module "m"\nedge %y from "k" to ["@host"] bytes 4\n'
     '  bundle "@host" color 1 lanes 1 axis [0] reach 0 path [[0, 0]]\n',
     r"line 3: bundle axis must be \[dx, dy\], got \[0\]"),
    ('module "m"\nedge %y from "k" to ["@host"] bytes 4\n'
     '  bundle "@host" color 1 lanes 1 axis [0, 1] reach 0 path []\n',
     r"line 3: bundle path must be a list of \[x, y\] points, got \[\]"),
    ('module "m"\nedge %y from "k" to ["@host"] bytes 4\n  bundle "@host" colour 1\n',
     r"line 3: expected 'color'"),
    ('module "m"\nedge %y from "k" to ["k2"] bytes 4\n'
     '  bundle "k2" color 1 lanes 1 axis [0, 1] reach 0 path [[0, 0], [3, 0]] cut rows pitch 0\n',
     r"line 3: bundle pitch must be >= 1, got 0"),
    ('module "m"\nedge %y from "k" to ["k2"] bytes 4\n'
     '  bundle "k2" color 1 lanes 1 axis [0, 1] reach 0 path [[0, 0], [3, 0]] cut rows pitch 2'
     ' src_pitch 3\n',
     r"line 3: bundle src_pitch must lie in 1..2 \(its pitch: lanes widen, never narrow\), "
     r"got 3"),
    ('module "m"\nfrobnicate %x\n', r"line 2: expected a statement \(module, .*found 'frobnicate'"),
    ('module "m"\ninput %x : f32[2] extra\n', r"line 2: expected end of line, found 'extra'"),
    ('module "m"\ninput %x : f32[2] $\n', r"line 2: unexpected character '\$' at column 19"),
    ('module "m"\ninput %x : f32[2]\nnode "n" = Relu(%x) -> (%x : f16[2])\n',
     r"line 3: value %x declared as f16\[2\] but earlier as f32\[2\]"),
    ('module "m"\nmodule "n"\n', r"line 2: a second 'module' line"),
    ('module "m"\ninput %"x : f32[2]\n', r"line 2: unterminated string at column 7"),
    ('module "m\\q"\n', r"line 1: bad string \"m\\q\": Invalid \\escape"),
    ('module "m"\ninput % x : f32[2]\n', r"line 2: unexpected character '%' at column 7"),
    ('module "m"\nconst %c : f32[] = splat(1.0)\nconst %c : f32[] = splat(2.0)\n',
     r"line 3: constant %c defined twice"),
])
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ParseError, match=message) as exc:
        parse_module(text)
    assert isinstance(exc.value, WsecError)
    assert str(exc.value).startswith(f"line {exc.value.line}: ")


def test_hand_written_text_is_accepted() -> None:
    """Spacing, unsorted keys and int splats of float types are fine on input."""
    text = """module "m" {target="wse2",grid=[8,8]}
input   %x :f32[2]
const %c : f32[2] = splat(1)
node "n"=Add( %x ,%c )->( %y : f32[ 2 ] ){b=1,a=[ ]}
output %y
"""
    m = parse_module(text)
    assert m.values["c"].const == Splat(TensorType("f32", (2,)), 1.0)
    assert m.nodes[0].attrs == {"b": 1, "a": []}
    verify_module(m)
    assert parse_module(print_module(m)).attrs == {"target": "wse2", "grid": [8, 8]}


# --- speed -----------------------------------------------------------------------
def _chain(n_nodes: int) -> Module:
    m = Module("chain", attrs={"grid": [750, 994]})
    t = TensorType("f32", (1, 32, 56, 56))
    m.add_value("x", t)
    m.inputs.append("x")
    prev = "x"
    wt = TensorType("f32", (32, 32, 1, 1))
    for i in range(n_nodes):
        m.add_value(f"w{i}", wt, Dense(wt, np.full(wt.shape, i, dtype=np.float32)))
        m.add_value(f"b{i}", TensorType("f32", (32,)), Splat(TensorType("f32", (32,)), 0.5))
        out = f"block{i}/conv_{i}"
        m.add_value(out, t)
        m.nodes.append(Node(f"n{i}", "Conv", [prev, f"w{i}", f"b{i}"], [out],
                            {"kernel_shape": [1, 1], "pads": [0, 0, 0, 0], "strides": [1, 1],
                             "group": 1, "epsilon": 1e-5, "auto_pad": "NOTSET"}))
        prev = out
    m.outputs.append(prev)
    return m


def test_densenet_sized_module_is_fast() -> None:
    m = _chain(2000)
    text = print_module(m)
    m2 = parse_module(text)
    verify_module(m2)
    assert print_module(m2) == text


def test_10k_bundles_round_trip() -> None:
    m = Module("routed", attrs={"grid": [750, 994]})
    t = TensorType("f16", (8,))
    m.add_value("x", t)
    m.inputs = m.outputs = ["x"]
    m.edges = [Edge("x", HOST, [HOST], 16, [
        Bundle(HOST, c, 1 + j % 4, (0, 1), ((j % 700, j // 700), (749, j // 700)))
        for j in range(1000)]) for c in range(10)]
    text = print_module(m)
    assert text.count("\n  bundle ") == 10_000
    m2 = parse_module(text)
    assert m2.edges == m.edges


def test_printer_rejects_unknown_attribute_types() -> None:
    m = Module("m", attrs={"bad": object()})
    with pytest.raises(TypeError, match="cannot print attribute value"):
        print_module(m)


def test_text_file_round_trip(tmp_path: pathlib.Path) -> None:
    p = tmp_path / "m.wsir"
    p.write_text(print_module(full_module()))
    m = parse_module(p.read_text(), base_dir=str(tmp_path))
    c = m.values["big"].const
    assert isinstance(c, External) and c.base_dir == str(tmp_path)


def test_a_widening_bundle_round_trips_through_text() -> None:
    """`src_pitch S` after `pitch K`: printed only for a widening bundle, parsed back equal."""
    m = Module("m")
    b = Bundle("k", 3, 4, (1, 0), ((4, 2), (4, 14), (22, 14)), 2, "rows", 3, 1)
    m.edges.append(Edge("v", "k0", ["k"], 64, [b, replace(b, src_pitch=0)]))
    text = print_module(m)
    lines = [ln for ln in text.splitlines() if "bundle" in ln]
    assert lines[0].endswith(" cut rows pitch 3 src_pitch 1")
    assert lines[1].endswith(" cut rows pitch 3")
    assert parse_module(text).edges[0].bundles == [b, replace(b, src_pitch=0)]
