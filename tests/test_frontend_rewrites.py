"""Frontend rewrites against onnxruntime: Resize across opsets (legacy
Upsample / Resize-10 semantics, the opset-18 attributes) and GatherND with
constant indices (as Reshape + Gather)."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from wsec.frontends.onnx import load_onnx
from wsec.ir.interp import evaluate_module

R = np.random.default_rng(3)


def _model(node: onnx.NodeProto, opset: int, inits: dict[str, np.ndarray],
           shape: tuple[int, ...] = (1, 2, 6, 7), extra: list | None = None) -> onnx.ModelProto:
    g = helper.make_graph(
        [node] + (extra or []), "rz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info((extra or [node])[-1].output[0], TensorProto.FLOAT,
                                       [f"d{i}" for i in range(len(shape))])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7 if opset < 18 else 8
    return m


def _check(m: onnx.ModelProto, tmp_path: pathlib.Path, shape=(1, 2, 6, 7)) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    x = R.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    mod = load_onnx(str(path))
    got = evaluate_module(mod, {"x": x})[mod.outputs[0]]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 1.5, 2.5]])
def test_opset9_upsample_keeps_asymmetric_coordinates(mode: str, scales: list,
                                                      tmp_path: pathlib.Path) -> None:
    node = helper.make_node("Upsample", ["x", "s"], ["y"], mode=mode)
    _check(_model(node, 9, {"s": np.array(scales, np.float32)}), tmp_path)


def test_opset7_upsample_scales_attribute(tmp_path: pathlib.Path) -> None:
    node = helper.make_node("Upsample", ["x"], ["y"], mode="linear", scales=[1.0, 1.0, 2.0, 1.5])
    _check(_model(node, 7, {}), tmp_path)


@pytest.mark.parametrize("scales", [[1, 1, 0.6, 0.5], [1, 1, 2.5, 1.0]])
def test_opset10_resize_nearest_rounding(scales: list, tmp_path: pathlib.Path) -> None:
    node = helper.make_node("Resize", ["x", "s"], ["y"], mode="nearest")
    _check(_model(node, 10, {"s": np.array(scales, np.float32)}), tmp_path)


def test_opset18_axes_rewritten_to_full_rank(tmp_path: pathlib.Path) -> None:
    # ReduceMean with an axes input has no onnx down-adapter: the model takes
    # wsec's own downgrade path, which must rewrite the Resize too
    rz = helper.make_node("Resize", ["x", "", "s"], ["r"], name="rz", mode="linear",
                          axes=[3, 2], antialias=0, keep_aspect_ratio_policy="stretch")
    red = helper.make_node("ReduceMean", ["r", "ax"], ["y"], keepdims=1)
    m = _model(rz, 18, {"s": np.array([1.5, 2.0], np.float32), "ax": np.array([1], np.int64)},
               extra=[red])
    _check(m, tmp_path)


def test_opset18_sizes_on_some_axes(tmp_path: pathlib.Path) -> None:
    rz = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], name="rz", mode="cubic",
                          axes=[2], coordinate_transformation_mode="align_corners")
    red = helper.make_node("ReduceMax", ["y", "ax"], ["z"], keepdims=1)
    _check(_model(rz, 18, {"sz": np.array([11], np.int64), "ax": np.array([1], np.int64)},
                  extra=[red]), tmp_path)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_antialias_survives_the_downgrade(mode: str, tmp_path: pathlib.Path) -> None:
    """Opset 17 has no antialias: the IR node gets it back, and the model
    computes what onnxruntime computes at opset 18."""
    rz = helper.make_node("Resize", ["x", "", "s"], ["r"], name="aa_resize", mode=mode,
                          antialias=1)
    red = helper.make_node("ReduceMean", ["r", "ax"], ["y"], keepdims=1)
    m = _model(rz, 18, {"s": np.array([1, 1, 0.5, 0.6], np.float32),
                        "ax": np.array([1], np.int64)}, shape=(1, 2, 12, 11), extra=[red])
    _check(m, tmp_path, shape=(1, 2, 12, 11))
    path = tmp_path / "m.onnx"
    (node,) = [n for n in load_onnx(str(path)).nodes if n.op == "Resize"]
    assert node.attrs["antialias"] == 1


@pytest.mark.parametrize("idx", [np.array([[2], [0], [-1], [2]], np.int64),
                                 np.array([[[1, 2], [0, 0]], [[1, -1], [0, 3]]], np.int64)])
def test_const_gathernd_becomes_reshape_and_gather(idx: np.ndarray,
                                                   tmp_path: pathlib.Path) -> None:
    node = helper.make_node("GatherND", ["x", "i"], ["g"], name="gnd")
    relu = helper.make_node("Relu", ["g"], ["y"])
    shape = (3, 4, 5)
    g = helper.make_graph(
        [node, relu], "gnd", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [f"d{i}" for i in range(idx.ndim + 2 - idx.shape[-1])])],
        [numpy_helper.from_array(idx, "i")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "g.onnx"
    onnx.save(m, str(path))
    x = R.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    mod = load_onnx(str(path))
    assert "GatherND" not in {n.op for n in mod.nodes}
    np.testing.assert_array_equal(evaluate_module(mod, {"x": x})[mod.outputs[0]], want)


def test_groupnorm_rows_fold_into_a_4d_instance_norm(tmp_path: pathlib.Path) -> None:
    """GroupNorm as TorchScript writes it: Reshape(N, G, -1) -> InstanceNorm ->
    Reshape back; the (N, G, L) norm becomes (N, G, L / W, W) and still
    computes the same, and the whole model compiles (one 32 KB row per
    (sample, group) would not fit a PE)."""
    from wsec.driver import CompileOptions, compile_model

    shape = (1, 8, 32, 64)
    nodes = [helper.make_node("Reshape", ["x", "s3"], ["r"]),
             helper.make_node("InstanceNormalization", ["r", "sc", "b"], ["n"], name="gn",
                              epsilon=1e-5),
             helper.make_node("Reshape", ["n", "s4"], ["y"])]
    g = helper.make_graph(
        nodes, "gn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.array([1, 2, -1], np.int64), "s3"),
         numpy_helper.from_array(np.array(shape, np.int64), "s4"),
         numpy_helper.from_array(np.array([1.5, -0.5], np.float32), "sc"),
         numpy_helper.from_array(np.array([0.25, 0.0], np.float32), "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "gn.onnx"
    onnx.save(m, str(path))
    x = R.standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    mod = load_onnx(str(path))
    norm = next(n for n in mod.nodes if n.op == "InstanceNormalization")
    assert mod.values[norm.inputs[0]].type.shape == (1, 2, 128, 64)
    np.testing.assert_allclose(evaluate_module(mod, {"x": x})[mod.outputs[0]], want,
                               rtol=1e-4, atol=1e-5)
    res = compile_model(str(path), CompileOptions(grid=(96, 96)))
    assert res.completed


@pytest.mark.parametrize("eq,shapes", [
    ("ij,jk,kl", [(3, 4), (4, 5), (5, 2)]),                      # implicit output
    ("bij,bjk,bkl->bli", [(2, 3, 4), (2, 4, 5), (2, 5, 3)]),
    ("...ij,jk,...k,k->...i", [(2, 3, 4), (4, 5), (2, 5), (5,)]),  # ellipsis, a vector
    ("ii,ij,j->i", [(4, 4), (4, 3), (3,)]),                      # a diagonal
])
def test_einsum_of_many_operands_is_a_chain_of_pairs(tmp_path: pathlib.Path, eq: str,
                                                     shapes: list[tuple[int, ...]]) -> None:
    names = [f"x{i}" for i in range(len(shapes))]
    node = helper.make_node("Einsum", names, ["y"], equation=eq)
    g = helper.make_graph([node], "es",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s))
                           for n, s in zip(names, shapes, strict=True)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(
                              np.einsum(eq, *[np.zeros(s) for s in shapes]).shape))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    path = tmp_path / "es.onnx"
    onnx.save(m, str(path))
    feed = {n: R.standard_normal(s).astype(np.float32) for n, s in zip(names, shapes, strict=True)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    mod = load_onnx(str(path))
    assert [nd.op for nd in mod.nodes] == ["Einsum"] * (len(shapes) - 1)
    assert all(len([i for i in nd.inputs if i]) == 2 for nd in mod.nodes)
    got = evaluate_module(mod, feed)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op,keep", [("ReduceMax", 0), ("ReduceMin", 1)])
def test_bool_reductions_stay_bool(tmp_path: pathlib.Path, op: str, keep: int) -> None:
    """Opset 20's ReduceMax / ReduceMin over bool (any / all) reach the IR as
    reductions of the bool tensor, as onnxruntime computes them."""
    nodes = [helper.make_node("Greater", ["x", "z"], ["b"]),
             helper.make_node(op, ["b", "ax"], ["y"], keepdims=keep)]
    g = helper.make_graph(nodes, "br", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       [3, 4, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.BOOL,
                                                         [3, 1, 5] if keep else [3, 5])],
                          [numpy_helper.from_array(np.zeros((), np.float32), "z"),
                           numpy_helper.from_array(np.array([1], np.int64), "ax")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 9
    path = tmp_path / "br.onnx"
    onnx.save(m, str(path))
    feed = {"x": R.standard_normal((3, 4, 5)).astype(np.float32)}
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    mod = load_onnx(str(path))
    assert [nd.op for nd in mod.nodes] == ["Greater", op]
    assert str(mod.values["b"].type).startswith("bool")
    got = evaluate_module(mod, feed)["y"]
    assert got.dtype == np.bool_ and np.array_equal(got, want)
