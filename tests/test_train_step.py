"""The derived training step: torch goldens, the optimizers' ONNX semantics,
export-train under onnxruntime, and the options users give.

The goldens (tests/data/train/*.npz, written once by
tests/gen_train_goldens.py with torch autograd) hold the loss, every
parameter's gradient and its SGD update for a small MLP, a small CNN
(BatchNorm in training mode, overlapping MaxPool) and a 2-layer GPT.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from wsec.cli import main
from wsec.ir.graph import Module
from wsec.ir.interp import evaluate_module
from wsec.ir.optimizers import add_update
from wsec.ir.training import TrainSpec
from wsec.ir.types import Dense, TensorType
from wsec.ir.vjp import Emitter, Namer
from wsec.train import derive_step_module

DATA = os.path.join(os.path.dirname(__file__), "data", "train")
MODELS = ("mlp", "cnn", "gpt2l")


def golden(name: str) -> dict[str, np.ndarray]:
    return dict(np.load(os.path.join(DATA, f"{name}.npz")))


def close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-4) -> bool:
    """Within rtol of the tensor's own scale (a gradient that is zero in
    exact arithmetic is compared with the tensor's magnitude, not its own)."""
    scale = max(float(np.abs(want).max(initial=0.0)), 1e-12)
    return bool(np.all(np.abs(got - want) <= rtol * np.maximum(np.abs(want), scale * 1e-2)))


@pytest.mark.parametrize("name", MODELS)
def test_step_matches_torch_autograd(name: str) -> None:
    g = golden(name)
    m = derive_step_module(os.path.join(DATA, f"{name}.onnx"), {"optimizer": "sgd", "lr": 0.1})
    out = evaluate_module(m, {k: g[k] for k in m.inputs})
    keys = [k for k in g if k == "loss" or k.startswith(("grad:", "new:"))]
    assert {k for k in keys} <= set(out)
    bad = [k for k in keys if not close(out[k], g[k])]
    assert not bad, f"{name}: {bad} differ from torch"
    assert m.outputs[0] == "loss" and m.inputs[-1] == "labels"


def _optimizer_case(spec: TrainSpec, x: np.ndarray, g: np.ndarray) -> dict[str, np.ndarray]:
    m = Module("opt")
    t = TensorType("f32", x.shape)
    m.add_value("X", t, Dense(t, x))
    m.add_value("G", t)
    m.inputs.append("G")
    e = Emitter(m, Namer(m), "update/X")
    new = add_update(e, spec, "X", "G")
    m.nodes = e.nodes
    m.outputs = list(new.values())
    res = evaluate_module(m, {"G": g})
    return {k: res[v] for k, v in new.items()}


def _reference(op: str, attrs: dict, r: float, t: int, x: np.ndarray, g: np.ndarray
               ) -> list[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    n_state = 2 if op == "Adam" else 1
    names = ["R", "T", "X", "G"] + ["V", "H"][:n_state]
    outs = ["X_new", "V_new", "H_new"][: 1 + n_state]
    node = helper.make_node(op, names, outs, domain="ai.onnx.preview.training", **attrs)
    infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT if n != "T" else
                                           TensorProto.INT64, None) for n in names]
    graph = helper.make_graph([node], "g", infos,
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None)
                               for o in outs])
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.preview.training", 1)])
    feeds = {"R": np.array(r, np.float32), "T": np.array(t, np.int64), "X": x, "G": g,
             "V": np.zeros_like(x), "H": np.zeros_like(x)}
    return ReferenceEvaluator(model).run(None, {k: feeds[k] for k in names})


OPTIMIZERS = [
    ("Momentum", TrainSpec(optimizer="momentum", lr=0.05, momentum=0.8, dampening=0.3,
                           weight_decay=0.01, step=1),
     {"alpha": 0.8, "beta": 0.7, "mode": "standard", "norm_coefficient": 0.01}),
    ("Momentum", TrainSpec(optimizer="momentum", lr=0.05, momentum=0.9, nesterov=True, step=0),
     {"alpha": 0.9, "beta": 1.0, "mode": "nesterov", "norm_coefficient": 0.0}),
    ("Adam", TrainSpec(optimizer="adam", lr=0.01, beta1=0.8, beta2=0.99, eps=1e-6,
                       weight_decay=0.1, step=3),
     {"alpha": 0.8, "beta": 0.99, "epsilon": 1e-6, "norm_coefficient": 0.1,
      "norm_coefficient_post": 0.0}),
    ("Adam", TrainSpec(optimizer="adamw", lr=0.01, weight_decay=0.5, step=1),
     {"alpha": 0.9, "beta": 0.999, "epsilon": 1e-8, "norm_coefficient": 0.0,
      "norm_coefficient_post": 0.005}),
]


@pytest.mark.parametrize("op,spec,attrs", OPTIMIZERS,
                         ids=["momentum", "nesterov-t0", "adam-l2", "adamw"])
def test_optimizer_matches_onnx_preview_training(op: str, spec: TrainSpec, attrs: dict) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5)).astype(np.float32)
    g = rng.standard_normal((4, 5)).astype(np.float32)
    ours = _optimizer_case(spec, x, g)
    ref = _reference(op, attrs, spec.lr, spec.step, x, g)
    np.testing.assert_allclose(ours["X"], ref[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["opt:X:v"], ref[1], rtol=1e-5, atol=1e-7)
    if op == "Adam":
        np.testing.assert_allclose(ours["opt:X:h"], ref[2], rtol=1e-4, atol=1e-9)


def test_sgd_is_w_minus_lr_grad() -> None:
    rng = np.random.default_rng(4)
    x, g = rng.standard_normal((3, 2)).astype(np.float32), rng.standard_normal((3, 2)).astype(
        np.float32)
    out = _optimizer_case(TrainSpec(optimizer="sgd", lr=0.25), x, g)
    np.testing.assert_allclose(out["X"], x - 0.25 * g, rtol=1e-6)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_export_train_runs_in_onnxruntime(name: str, tmp_path, capsys) -> None:
    import onnxruntime as ort

    step = tmp_path / "step.onnx"
    rc = main(["export-train", os.path.join(DATA, f"{name}.onnx"), "-o", str(step),
               "--optimizer", "adamw", "--lr", "0.01"])
    assert rc == 0 and "outputs loss" in capsys.readouterr().out
    onnx.checker.check_model(str(step))
    sess = ort.InferenceSession(str(step), providers=["CPUExecutionProvider"])
    g = golden(name)
    feeds = {i.name: g[i.name] for i in sess.get_inputs()}
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))
    assert [i.name for i in sess.get_inputs()][-1] == "labels"
    m = derive_step_module(os.path.join(DATA, f"{name}.onnx"),
                           {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.01})
    ref = evaluate_module(m, feeds)
    assert list(got) == list(ref)
    for k, v in ref.items():
        assert close(got[k], v, 1e-4), k
    assert abs(float(got["loss"]) - float(g["loss"])) < 1e-4 * abs(float(g["loss"]))


def test_freeze_keeps_initializers_out_of_the_step(tmp_path) -> None:
    m = derive_step_module(os.path.join(DATA, "mlp.onnx"), {"freeze": "fc1.*"})
    assert m.attrs["train"]["params"] == ["fc2.weight", "fc2.bias"]
    assert not any(o.startswith(("grad:fc1", "new:fc1")) for o in m.outputs)


def test_freeze_naming_nothing_is_a_usage_error(tmp_path, capsys) -> None:
    rc = main(["export-train", os.path.join(DATA, "mlp.onnx"), "-o", str(tmp_path / "s.onnx"),
               "--freeze", "conv*"])
    err = capsys.readouterr().err
    assert rc == 2 and "--freeze 'conv*' names no float initializer" in err
    assert not (tmp_path / "s.onnx").exists()


def test_an_op_without_a_gradient_rule_is_named(tmp_path, capsys) -> None:
    w = numpy_helper.from_array(np.ones((3, 3), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Round", ["h"], ["y"], name="round_it")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [2, 3])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [2, 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    rc = main([str(path), "-o", str(tmp_path / "t.bin"), "--train", "--loss", "mse"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err
    assert "op 'Round' (node 'round_it') has no gradient rule; freeze the parameters" in err
