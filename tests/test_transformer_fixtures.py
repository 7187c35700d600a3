"""Transformers as PyTorch exports them: load, canonicalize, interpret, compare.

Why: the GPT/BERT/ViT graphs the exporters write are full of run-time shape
arithmetic (Shape -> Gather -> Concat -> Reshape, Range for positions,
ConstantOfShape -> Trilu for the causal mask) and, from the dynamo
exporter, opset-18 forms. The fixtures in tests/fixtures/ are tiny models
(2 layers, hidden 32, 4 heads, sequence 8) exported by torch 2.13 with the
TorchScript exporter (opsets 14 and 17, some with dynamic batch/sequence
axes) and the dynamo exporter (opset 18); each .npz holds the inputs
(`in.NAME`) and torch's outputs (`out.NAME`). After canonicalize no shape
arithmetic may remain, and the reference interpreter must agree with
onnxruntime on the original file.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from wsec.frontends.onnx import FrontendError, load_onnx
from wsec.ir.graph import Module
from wsec.ir.interp import evaluate_module
from wsec.ir.target import module_target
from wsec.passes.base import PassContext
from wsec.passes.canonicalize import Canonicalize

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.onnx"))
SHAPE_OPS = {"Shape", "Size", "ConstantOfShape", "Range"}

# ops each fixture must still contain after canonicalize: the model's real work
EXPECTED_OPS = {
    "gpt_o14": {"Gather", "MatMul", "Softmax", "Where", "ReduceMean", "Sqrt", "Erf", "Tanh"},
    "gpt_dynamic_o17": {"Gather", "MatMul", "Softmax", "Where", "LayerNormalization", "Erf",
                        "Tanh"},
    "gpt_dynamo_o18": {"Gather", "MatMul", "Softmax", "Where", "LayerNormalization", "Erf",
                       "Tanh", "Split"},
    "bert_dynamic_o17": {"Gather", "MatMul", "Softmax", "LayerNormalization", "Erf", "Tanh",
                         "Gemm", "Sub", "Cast"},
    "vit_o17": {"Conv", "Concat", "MatMul", "Softmax", "LayerNormalization", "Erf", "Gemm"},
    "vit_dynamo_o18": {"Conv", "Concat", "MatMul", "Softmax", "LayerNormalization", "Erf",
                       "Gemm"},
}


def fixture_data(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    d = np.load(FIXTURES / f"{name}.npz")
    return ({k[3:]: d[k] for k in d.files if k.startswith("in.")},
            {k[4:]: d[k] for k in d.files if k.startswith("out.")})


def load_canonical(name: str) -> tuple[Module, dict[str, np.ndarray]]:
    ins, _ = fixture_data(name)
    shapes = {k: list(v.shape) for k, v in ins.items()} if "dynamic" in name else None
    m = load_onnx(str(FIXTURES / f"{name}.onnx"), shapes)
    Canonicalize().run(m, PassContext(module_target({})))
    return m, ins


def test_fixture_set_is_complete_and_small() -> None:
    assert NAMES == sorted(EXPECTED_OPS)
    for n in NAMES:
        assert (FIXTURES / f"{n}.onnx").stat().st_size < 200_000
        assert (FIXTURES / f"{n}.npz").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_fixture_matches_onnxruntime(name: str) -> None:
    m, ins = load_canonical(name)
    ops = {n.op for n in m.nodes}
    assert not ops & SHAPE_OPS, f"shape arithmetic left in {name}: {sorted(ops & SHAPE_OPS)}"
    assert EXPECTED_OPS[name] <= ops, sorted(EXPECTED_OPS[name] - ops)
    for n in m.nodes:  # folded fully: no node computes from constants alone
        assert any(i and m.values[i].const is None for i in n.inputs), (n.name, n.op)
    got = evaluate_module(m, ins)
    sess = ort.InferenceSession(str(FIXTURES / f"{name}.onnx"),
                                providers=["CPUExecutionProvider"])
    want = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, ins), strict=True))
    _, torch_out = fixture_data(name)
    assert set(got) == set(want) == set(torch_out)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5, err_msg=f"{name}:{k}")
        np.testing.assert_allclose(got[k], torch_out[k], rtol=1e-4, atol=1e-5)


def test_causal_mask_is_folded_to_a_constant() -> None:
    m, _ = load_canonical("gpt_dynamic_o17")
    wheres = [n for n in m.nodes if n.op == "Where"]
    assert len(wheres) == 2
    mask = m.values[wheres[0].inputs[0]].const
    assert mask is not None and mask.type.shape[-2:] == (8, 8)
    arr = mask.array().reshape(8, 8).astype(bool)
    assert arr.sum() == 28 and (arr == np.triu(np.ones((8, 8), bool), 1)).all()


def test_dynamic_export_needs_input_shapes() -> None:
    with pytest.raises(FrontendError, match=r"input 'input_ids' has symbolic dim 'batch' "
                                            r"\(dim 0\); pass --input-shape input_ids=N,N"):
        load_onnx(str(FIXTURES / "gpt_dynamic_o17.onnx"))


def test_other_sequence_length_folds_too() -> None:
    """The same dynamic export compiled for batch 2, sequence 5."""
    ids = np.random.default_rng(0).integers(0, 64, (2, 5))
    path = str(FIXTURES / "gpt_dynamic_o17.onnx")
    m = load_onnx(path, {"input_ids": [2, 5]})
    Canonicalize().run(m, PassContext(module_target({})))
    assert not {n.op for n in m.nodes} & SHAPE_OPS
    got = evaluate_module(m, {"input_ids": ids})["logits"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, {"input_ids": ids})[0], rtol=1e-4, atol=1e-5)


def _opset20_model(tmp_path: pathlib.Path) -> str:
    """Gelu (both forms), Split num_outputs, ReduceMean with an axes input: opset 20."""
    nodes = [helper.make_node("Gelu", ["x"], ["g1"], name="gelu_erf"),
             helper.make_node("Gelu", ["x"], ["g2"], name="gelu_tanh", approximate="tanh"),
             helper.make_node("Add", ["g1", "g2"], ["s"]),
             helper.make_node("Split", ["s"], ["a", "b", "c"], name="split", axis=1,
                              num_outputs=3),
             helper.make_node("ReduceMean", ["c", "axes"], ["r"], name="mean"),
             helper.make_node("Concat", ["a", "b", "r"], ["y"], axis=1)]
    g = helper.make_graph(nodes, "o20",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])],
                          [numpy_helper.from_array(np.array([1], np.int64), "axes")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    path = str(tmp_path / "o20.onnx")
    onnx.save(model, path)
    return path


def test_newer_opset_forms_are_rewritten(tmp_path: pathlib.Path) -> None:
    path = _opset20_model(tmp_path)
    m = load_onnx(path)
    assert m.attrs["opset"] == 17
    ops = [n.op for n in m.nodes]
    assert "Gelu" not in ops and {"Erf", "Tanh"} <= set(ops)
    split = next(n for n in m.nodes if n.op == "Split")
    assert "num_outputs" not in split.attrs and len(split.inputs) == 2  # 3, 3, 2
    mean = next(n for n in m.nodes if n.op == "ReduceMean")
    assert mean.attrs["axes"] == [1] and len(mean.inputs) == 1
    x = np.random.default_rng(1).standard_normal((2, 8)).astype(np.float32)
    got = evaluate_module(m, {"x": x})["y"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_newer_opset_without_opset17_form_is_refused(tmp_path: pathlib.Path) -> None:
    node = helper.make_node("AveragePool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                            dilations=[2, 2])  # dilations: opset 19
    g = helper.make_graph([node], "o19",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    path = str(tmp_path / "o19.onnx")
    onnx.save(model, path)
    with pytest.raises(FrontendError, match=r"cannot convert model .* from opset 19 to 17: "
                                            r".*dilations.*re-export the model at opset 17"):
        load_onnx(path)


def test_interp_checks_inputs_and_runs_kernel_bodies() -> None:
    from wsec.ir.graph import Kernel, Node
    from wsec.ir.interp import InterpError
    from wsec.ir.types import Splat, TensorType

    m = Module("k")
    t = TensorType("f32", (2, 3))
    m.add_value("x", t)
    m.add_value("c", t, Splat(t, 2.0))
    for v in ("y", "z"):
        m.add_value(v, t)
    m.inputs, m.outputs = ["x"], ["z"]
    body = [Node("mul", "Mul", ["x", "c"], ["y"]), Node("relu", "Relu", ["y"], ["z"])]
    m.nodes = [Kernel("k0", "Relu", ["x", "c"], ["z"], kind="eltwise", body=body)]
    x = np.array([[1, -2, 3], [-4, 5, -6]], np.float32)
    np.testing.assert_array_equal(evaluate_module(m, {"x": x})["z"], np.maximum(2 * x, 0))
    with pytest.raises(InterpError, match=r"needs input 'x' \(f32\[2,3\]\)"):
        evaluate_module(m, {})
    with pytest.raises(InterpError, match=r"input 'x' has shape \[3\], but the module "
                                          r"declares f32\[2,3\]"):
        evaluate_module(m, {"x": np.zeros(3, np.float32)})
    m.values["z"].type = TensorType("f32", (3, 2))
    with pytest.raises(InterpError, match=r"node 'relu' \(Relu\) computed \[2, 3\] for 'z'"):
        evaluate_module(m, {"x": x})
