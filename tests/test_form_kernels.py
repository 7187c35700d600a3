"""form-kernels: fusion rules, kernel I/O, edges, and every light model."""

from __future__ import annotations

import pytest
from conftest import LIGHT_MODELS, light_model
from wsec.ir.graph import HOST, Kernel, Module, Node
from wsec.ir.target import get_target
from wsec.ir.types import Splat, TensorType
from wsec.ir.verify import verify_module
from wsec.passes.base import PassContext, PassError
from wsec.passes.form_kernels import FormKernels

F32 = "f32"


class G:
    """A tiny graph builder for tests."""

    def __init__(self, name: str = "g") -> None:
        self.m = Module(name, attrs={"target": "wse2"}, properties={"canonical"})

    def inp(self, name: str, shape: tuple[int, ...]) -> str:
        self.m.add_value(name, TensorType(F32, shape))
        self.m.inputs.append(name)
        return name

    def const(self, name: str, shape: tuple[int, ...], v: float = 0.5) -> str:
        t = TensorType(F32, shape)
        self.m.add_value(name, t, Splat(t, v))
        return name

    def node(self, name: str, op: str, ins: list[str], out: str, shape: tuple[int, ...],
             **attrs) -> str:
        self.m.add_value(out, TensorType(F32, shape))
        self.m.nodes.append(Node(name, op, ins, [out], dict(attrs)))
        return out

    def run(self, target: str = "wse2") -> Module:
        ctx = PassContext(get_target(target))
        FormKernels().run(self.m, ctx)
        self.m.properties.add("kernels")
        verify_module(self.m)
        return self.m


def _block() -> G:
    g = G()
    x = g.inp("x", (1, 8, 16, 16))
    w1, w2, b2 = g.const("w1", (8, 8, 3, 3)), g.const("w2", (8, 8, 3, 3)), g.const("b2", (8,))
    c1 = g.node("conv1", "Conv", [x, w1], "c1", (1, 8, 16, 16), pads=[1, 1, 1, 1])
    r1 = g.node("relu1", "Relu", [c1], "r1", (1, 8, 16, 16))
    c2 = g.node("conv2", "Conv", [r1, w2, b2], "c2", (1, 8, 16, 16), pads=[1, 1, 1, 1])
    s = g.node("add", "Add", [c2, r1], "s", (1, 8, 16, 16))
    r2 = g.node("relu2", "Relu", [s], "r2", (1, 8, 16, 16))
    p = g.node("pool", "GlobalAveragePool", [r2], "p", (1, 8, 1, 1))
    f = g.node("flat", "Flatten", [p], "f", (1, 8))
    u = g.node("unsq", "Unsqueeze", [f], "u", (1, 1, 8), axes=[1])
    g.m.outputs = [u]
    return g


def test_conv_relu_residual_and_datamove_chain() -> None:
    m = _block().run()
    ks = list(m.kernels())
    assert [k.name for k in ks] == ["k0", "k1", "k2", "k3"]
    assert [k.kind for k in ks] == ["conv", "conv", "pool", "datamove"]
    assert [k.origin for k in ks] == [["conv1", "relu1"], ["conv2", "add", "relu2"], ["pool"],
                                      ["flat", "unsq"]]
    k0, k1, _, k3 = ks
    assert k0.op == "conv" and k0.inputs == ["x", "w1"] and k0.outputs == ["r1"]
    assert k1.inputs == ["r1", "w2", "b2"] and k1.outputs == ["r2"]
    assert k1.dims["A"] == 1 and k1.dims["bias"] == 1 and k1.dims["F"] == 2
    assert k0.dims["A"] == 0 and k0.dims["K"] == 8 and k0.dims["Ho"] == 16
    assert all(isinstance(v, int) for k in ks for v in k.dims.values())
    assert [n.name for n in k3.body] == ["flat", "unsq"] and k3.outputs == ["u"]
    edges = [(e.value, e.src, e.dsts, e.bytes_per_sample) for e in m.edges]
    assert edges == [("x", HOST, ["k0"], 4096), ("r1", "k0", ["k1"], 4096),
                     ("r2", "k1", ["k2"], 4096), ("p", "k2", ["k3"], 16),
                     ("u", "k3", [HOST], 16)]


def test_no_fusion_across_shared_values_and_outputs() -> None:
    g = G()
    x = g.inp("x", (1, 4, 8, 8))
    w = g.const("w", (4, 4, 1, 1))
    c = g.node("conv", "Conv", [x, w], "c", (1, 4, 8, 8))
    r = g.node("relu", "Relu", [c], "r", (1, 4, 8, 8))  # r is a model output
    s = g.node("sig", "Sigmoid", [r], "s", (1, 4, 8, 8))
    t = g.node("tanh", "Tanh", [r], "t", (1, 4, 8, 8))
    a = g.node("add", "Add", [s, t], "a", (1, 4, 8, 8))
    g.m.outputs = [a, r]
    m = g.run()
    origins = [k.origin for k in m.kernels()]
    assert origins == [["conv", "relu"], ["tanh"], ["sig", "add"]]
    assert all(k.kind == "elementwise" for k in list(m.kernels())[1:])
    e_r = next(e for e in m.edges if e.value == "r")
    assert e_r.src == "k0" and e_r.dsts == ["k1", "k2", HOST]
    assert not any(e.value in ("w", "c") for e in m.edges)  # constants and internals: no edges


def test_anchor_does_not_absorb_a_broadcasting_op() -> None:
    g = G()
    x = g.inp("x", (1, 4, 1, 1))
    y = g.inp("y", (1, 4, 8, 8))
    p = g.node("gap", "GlobalAveragePool", [x], "p", (1, 4, 1, 1))
    g.node("mul", "Mul", [y, p], "o", (1, 4, 8, 8))
    g.m.outputs = ["o"]
    m = g.run()
    assert [k.kind for k in m.kernels()] == ["pool", "elementwise"]


def test_kernels_in_topological_order_after_fusion() -> None:
    """convA absorbs the Add whose other input convB (listed later) makes."""
    g = G()
    x = g.inp("x", (1, 4, 8, 8))
    wa, wb = g.const("wa", (4, 4, 1, 1)), g.const("wb", (4, 4, 1, 1))
    a = g.node("convA", "Conv", [x, wa], "a", (1, 4, 8, 8))
    b = g.node("convB", "Conv", [x, wb], "b", (1, 4, 8, 8))
    r = g.node("reluB", "Relu", [b], "rb", (1, 4, 8, 8))
    g.m.nodes.append(Node("extra", "Relu", [r], ["e"]))
    g.m.add_value("e", TensorType(F32, (1, 4, 8, 8)))
    g.node("add", "Add", [a, r], "s", (1, 4, 8, 8))
    g.m.outputs = ["s", "e"]
    m = g.run()
    assert [(k.name, k.origin) for k in m.kernels()] == [
        ("k0", ["convB", "reluB"]), ("k1", ["convA", "add"]), ("k2", ["extra"])]


def test_unsupported_op_names_the_node() -> None:
    g = G()
    x = g.inp("x", (1, 4))
    g.node("weird", "NonMaxSuppression", [x], "y", (1, 4))
    g.m.outputs = ["y"]
    with pytest.raises(PassError, match=r"node 'weird' \(NonMaxSuppression\): no kernel kind"):
        g.run()


def test_unmappable_shape_names_the_node() -> None:
    g = G()
    x = g.inp("x", (1, 2, 4, 4, 4, 4))
    w = g.const("w", (2, 2, 1, 1, 1, 1))
    g.node("conv4d", "Conv", [x, w], "y", (1, 2, 4, 4, 4, 4))
    g.m.outputs = ["y"]
    with pytest.raises(PassError, match=r"node 'conv4d' \(Conv\): the conv kernel cannot map "
                                        r"it: Conv with 4 spatial axes \(input f32\[1,2,4,4,4,4\], "
                                        r"weight \[2, 2, 1, 1, 1, 1\]\)"):
        g.run()


def test_itemsize_from_target_dtype() -> None:
    g = _block()
    ctx = PassContext(get_target("wse2"))
    object.__setattr__(ctx, "target", ctx.target.__class__(**{**ctx.target.to_dict(),
                                                               "dtype": "f32"}))
    FormKernels().run(g.m, ctx)
    assert g.m.edges[0].bytes_per_sample == 8 * 16 * 16 * 4


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_form_kernels(name: str) -> None:
    frontend = pytest.importorskip("wsec.frontends.onnx")
    canon = pytest.importorskip("wsec.passes.canonicalize")
    m = frontend.load_onnx(str(light_model(name)))
    ctx = PassContext(get_target("wse2"))
    canon.Canonicalize().run(m, ctx)
    m.properties.add("canonical")
    graph_nodes = [n.name for n in m.nodes]
    FormKernels().run(m, ctx)
    m.properties.add("kernels")
    verify_module(m)
    ks = list(m.kernels())
    assert all(isinstance(k, Kernel) for k in m.nodes)
    assert [k.name for k in ks] == [f"k{i}" for i in range(len(ks))]
    assert sorted(o for k in ks for o in k.origin) == sorted(graph_nodes)
    anchors = sum(k.kind in ("conv", "matmul", "pool", "norm", "softmax") for k in ks)
    assert anchors >= len(ks) // 2, "most kernels should be anchors with fused activations"
    for e in m.edges:
        assert e.bytes_per_sample == m.values[e.value].type.numel * 2
        assert m.values[e.value].const is None
    # every conv absorbed its Relu when the Relu was the conv's only reader
    for k in ks:
        if k.kind == "conv" and len(k.body) == 1:
            readers = [j for j in ks if k.outputs[0] in j.inputs]
            assert not (len(readers) == 1 and readers[0].body[0].op == "Relu"
                        and k.outputs[0] not in m.outputs)


# --- transformer patterns, new kinds ----------------------------------------
def _evaluates_the_same(g: G, ins: dict) -> None:
    import copy

    import numpy as np
    from wsec.ir.interp import evaluate_module

    ref = evaluate_module(copy.deepcopy(g.m), ins)
    got = evaluate_module(g.run(), ins)
    for k, v in ref.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-5, atol=1e-6)


def _ln_graph(affine: bool = True) -> G:
    g = G("ln")
    x = g.inp("x", (1, 8, 32))
    eps, two = g.const("eps", (), 1e-5), g.const("two", (), 2.0)
    m = g.node("rm1", "ReduceMean", [x], "m", (1, 8, 1), axes=[-1])
    d = g.node("sub", "Sub", [x, m], "d", (1, 8, 32))
    p = g.node("pow", "Pow", [d, two], "p", (1, 8, 32))
    v = g.node("rm2", "ReduceMean", [p], "v", (1, 8, 1), axes=[-1])
    ve = g.node("addeps", "Add", [v, eps], "ve", (1, 8, 1))
    sd = g.node("sqrt", "Sqrt", [ve], "sd", (1, 8, 1))
    y = g.node("div", "Div", [d, sd], "y", (1, 8, 32))
    if affine:
        y = g.node("scale", "Mul", [y, g.const("gamma", (32,), 1.5)], "ys", (1, 8, 32))
        y = g.node("shift", "Add", [y, g.const("beta", (32,), 0.25)], "yb", (1, 8, 32))
    g.m.outputs = [y]
    return g


def test_decomposed_layernorm_becomes_one_norm_kernel() -> None:
    import numpy as np

    g = _ln_graph()
    _evaluates_the_same(g, {"x": np.random.default_rng(0).normal(size=(1, 8, 32))})
    (k,) = g.m.kernels()
    assert k.kind == "norm" and len(k.body) == 9 and k.body[0].op == "ReduceMean"
    assert k.dims["C"] == 8 and k.dims["W"] == 32 and k.dims["Pr"] == 66
    assert k.outputs == ["yb"]


def test_layernorm_with_a_shared_intermediate_is_not_matched() -> None:
    g = _ln_graph(affine=False)
    g.m.outputs.append("v")  # the variance is a model output: keep it visible
    m = g.run()
    kinds = [k.kind for k in m.kernels()]
    assert "norm" not in kinds and "reduce" in kinds


def test_gelu_formula_fuses_into_the_matmul_diamond() -> None:
    import numpy as np

    g = G("gelu")
    x = g.inp("x", (1, 8, 16))
    h = g.node("mm", "MatMul", [x, g.const("w", (16, 32), 0.1)], "h", (1, 8, 32))
    h = g.node("bias", "Add", [h, g.const("b", (32,), 0.1)], "hb", (1, 8, 32))
    q = g.node("div", "Div", [h, g.const("s2", (), 1.4142135)], "q", (1, 8, 32))
    e = g.node("erf", "Erf", [q], "e", (1, 8, 32))
    a = g.node("one", "Add", [e, g.const("c1", (), 1.0)], "a", (1, 8, 32))
    m = g.node("mul", "Mul", [h, a], "m", (1, 8, 32))
    y = g.node("half", "Mul", [m, g.const("c5", (), 0.5)], "y", (1, 8, 32))
    g.m.outputs = [y]
    _evaluates_the_same(g, {"x": np.random.default_rng(1).normal(size=(1, 8, 16))})
    (k,) = g.m.kernels()
    assert k.kind == "matmul" and k.origin == ["mm", "bias", "div", "erf", "one", "mul", "half"]
    assert k.outputs == ["y"] and k.dims["F"] > 10


def test_attention_split_gather_reduce_and_new_kinds() -> None:
    import numpy as np

    g = G("attn")
    ids = g.m.add_value("ids", TensorType("i64", (1, 4))).name
    g.m.inputs.append(ids)
    emb = g.node("emb", "Gather", [g.const("table", (50, 12), 0.3), ids], "emb", (1, 4, 12))
    g.m.nodes.append(Node("split", "Split", [emb], ["q", "k", "v"], {"axis": 2}))
    for n in "qkv":
        g.m.add_value(n, TensorType(F32, (1, 4, 4)))
    kt = g.node("kt", "Transpose", ["k"], "kt", (1, 4, 4), perm=[0, 2, 1])
    s = g.node("qk", "MatMul", ["q", kt], "s", (1, 4, 4))
    p = g.node("sm", "Softmax", [s], "p", (1, 4, 4), axis=-1)
    o = g.node("pv", "Einsum", [p, "v"], "o", (1, 4, 4), equation="bij,bjd->bid")
    axt = TensorType("i64", (1,))
    g.m.add_value("ax", axt, Splat(axt, 2))
    r = g.node("sum", "ReduceSum", [o, "ax"], "r", (1, 4, 1), keepdims=1)
    am = g.m.add_value("am", TensorType("i64", (1, 4, 1))).name
    g.m.nodes.append(Node("argmax", "ArgMax", [o], [am], {"axis": 2, "keepdims": 1}))
    g.m.outputs = [r, am]
    _evaluates_the_same(g, {"ids": np.array([[3, 7, 49, 0]])})
    kinds = [(k.kind, k.origin) for k in g.m.kernels()]
    assert ("gather", ["emb"]) in kinds and ("softmax", ["sm"]) in kinds
    # a multi-output op exports every output; the transpose of k joins it
    assert ("datamove", ["split", "kt"]) in kinds
    split = next(k for k in g.m.kernels() if k.origin[0] == "split")
    assert split.outputs == ["q", "v", "kt"]
    pv = next(k for k in g.m.kernels() if k.origin == ["pv"])
    assert pv.kind == "matmul" and pv.dims["Bact"] == 1 and pv.dims["Bt"] == 1
    assert (pv.dims["M"], pv.dims["Kd"], pv.dims["N"]) == (4, 4, 4)
    qk = next(k for k in g.m.kernels() if k.origin == ["qk"])
    assert qk.kind == "matmul" and qk.dims["Bact"] == 1
    assert {k.kind for k in g.m.kernels() if k.origin in (["sum"], ["argmax"])} == {"reduce"}
