"""canonicalize on real models: what it removes, and that numerics are preserved."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import LIGHT_MODELS, light_model
from onnx import TensorProto, helper, numpy_helper
from wsec.frontends.onnx import load_onnx
from wsec.ir.graph import Module
from wsec.ir.opsem import evaluate
from wsec.ir.printer import print_module
from wsec.ir.types import Dense, External, Splat
from wsec.passes.base import PassContext
from wsec.passes.canonicalize import Canonicalize
from wsec.passes.manager import PassManager

R = np.random.default_rng(2)


def canon(m: Module, **opts: int) -> Module:
    PassManager([Canonicalize(**opts)]).run(m, PassContext.for_module(m))  # verifies the IR
    assert "canonical" in m.properties
    return m


def run_module(m: Module, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every value of `m` computed with opsem, node by node."""
    env = dict(feeds)
    for n in m.nodes:
        ins = [None if not i else env[i] if i in env else m.values[i].const.array()
               for i in n.inputs]
        for o, a in zip(n.outputs, evaluate(n, ins), strict=False):
            if o:
                env[o] = a
    return env


def ort_values(path: str, names: list[str], feeds: dict[str, np.ndarray]) -> dict:
    """onnxruntime's values of `names` in the original model."""
    model = onnx.load(path)
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names
                              if n not in have)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    outs = sess.run(None, feeds)
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_are_cleaned(name: str) -> None:
    m = canon(load_onnx(str(light_model(name))))
    ops = {n.op for n in m.nodes}
    assert not ops & {"ConstantOfShape", "Unsqueeze", "Dropout", "Identity", "Constant"}
    producers = m.producers()
    for n in m.nodes:
        if n.op == "BatchNormalization":
            assert producers.get(n.inputs[0]) is None or producers[n.inputs[0]].op != "Conv"
        if n.op == "Sum":
            assert len(n.inputs) > 2
    used = {i for n in m.nodes for i in n.inputs} | set(m.outputs)
    assert all(k in used for k, v in m.values.items() if v.const is not None)
    text = print_module(m)
    assert print_module(canon(m)) == text  # fixpoint: a second run changes nothing


@pytest.mark.parametrize("name", ["resnet50", "squeezenet"])
def test_light_model_numerics_match_onnxruntime(name: str) -> None:
    path = str(light_model(name))
    m = canon(load_onnx(path))
    x = R.standard_normal(m.values[m.inputs[0]].type.shape).astype(np.float32)
    got = run_module(m, {m.inputs[0]: x})
    original = {o for n in onnx.load(path).graph.node for o in n.output}
    names = [k for k in got if k not in m.inputs and k in original]
    want = ort_values(path, names, {m.inputs[0]: x})
    assert len(names) >= 60
    for k in names:
        scale = float(np.abs(want[k]).max()) or 1.0
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-5 * scale, err_msg=k)


def conv_bn_relu(tmp_path: pathlib.Path, extra_use: bool = False) -> str:
    c = 6
    inits = {"W": R.standard_normal((c, 3, 3, 3)), "B": R.standard_normal(c),
             "gamma": R.standard_normal(c), "beta": R.standard_normal(c),
             "mean": R.standard_normal(c), "var": np.abs(R.standard_normal(c)) + 0.1,
             "shape": np.array([2, 4], np.float32)}
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"],
                              ["bn"], name="bn", epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"], name="relu"),
             helper.make_node("Dropout", ["r"], ["d"], name="drop"),
             helper.make_node("Identity", ["d"], ["y"], name="id")]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, c, 5, 5])]
    if extra_use:
        outs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, c, 5, 5]))
    g = helper.make_graph(nodes, "cbr",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 5, 5])],
                          outs, [numpy_helper.from_array(v.astype(np.float32), k)
                                 for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "cbr.onnx")
    onnx.save(model, path)
    return path


def test_conv_bn_fold_preserves_numerics(tmp_path: pathlib.Path) -> None:
    path = conv_bn_relu(tmp_path)
    x = R.standard_normal((2, 3, 5, 5)).astype(np.float32)
    before = run_module(load_onnx(path), {"x": x})["y"]
    m = canon(load_onnx(path))
    assert [n.op for n in m.nodes] == ["Conv", "Relu"]
    assert m.nodes[0].outputs == ["bn"] and m.nodes[1].outputs == ["y"]
    assert "shape" not in m.values  # unused initializer removed
    assert isinstance(m.values[m.nodes[0].inputs[1]].const, Dense)
    after = run_module(m, {"x": x})["y"]
    want = ort_values(path, [], {"x": x})["y"]
    np.testing.assert_allclose(before, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after, want, rtol=1e-5, atol=1e-5)


def test_bn_not_folded_when_conv_output_escapes_or_too_big(tmp_path: pathlib.Path) -> None:
    m = canon(load_onnx(conv_bn_relu(tmp_path, extra_use=True)))
    assert [n.op for n in m.nodes] == ["Conv", "BatchNormalization", "Relu"]
    m = canon(load_onnx(conv_bn_relu(tmp_path)), fold_limit=100)  # W has 162 elements
    assert [n.op for n in m.nodes] == ["Conv", "BatchNormalization", "Relu"]


def test_external_weights_are_not_materialised(tmp_path: pathlib.Path) -> None:
    path = conv_bn_relu(tmp_path)
    model = onnx.load(path)
    ext = str(tmp_path / "ext.onnx")
    onnx.save(model, ext, save_as_external_data=True, all_tensors_to_one_file=True,
              location="w.bin", size_threshold=0)
    m = canon(load_onnx(ext), fold_limit=100)
    assert isinstance(m.values["W"].const, External)
    m = canon(load_onnx(ext))  # small enough to fold: new weights are computed
    assert isinstance(m.values[m.nodes[0].inputs[1]].const, Dense)


def test_splat_weights_stay_splat_through_bn() -> None:
    """resnet50's splat weights meet BN parameters that are splat (most) or not (a few)."""
    orig = load_onnx(str(light_model("resnet50")))
    producers = orig.producers()
    uniform = set()
    for bn in (n for n in orig.nodes if n.op == "BatchNormalization"):
        params = [orig.values[i] for i in bn.inputs[1:]]
        arrays = [p.const.array() if p.const is not None else
                  evaluate(producers[p.name], [orig.values[producers[p.name].inputs[0]].const
                                               .array()])[0] for p in params]
        if all(np.all(a == a.reshape(-1)[0]) for a in arrays):
            uniform.add(bn.outputs[0])
    m = canon(orig)
    convs = [n for n in m.nodes if n.op == "Conv"]
    kinds = {n.outputs[0]: type(m.values[n.inputs[1]].const) for n in convs}
    assert 0 < len(uniform) < len(convs)
    assert all(kinds[o] is Splat for o in uniform)
    assert all(k is Dense for o, k in kinds.items() if o not in uniform)
