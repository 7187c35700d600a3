"""Swin's constant ScatterND masks, scatters over activations, and long 1-D convolutions.

Why: a torchvision-style Swin export builds its shifted-window mask with
ScatterND over constants (Swin-T: 54 nodes), which must fold away; training
graphs and in-place updates scatter into activations, which must run as
kernels; a wav2vec2 front end convolves 8000 samples, which no PE can hold
whole, so the conv kind tiles the sequence. Fixtures: tests/fixtures/frontends
(real dynamo exports; see export_frontends.py there). Every compile here runs
from another current directory.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from wsec.backends.emit import write_binary
from wsec.backends.loader import load_binary
from wsec.backends.sim import simulate
from wsec.driver import CompileOptions, compile_model
from wsec.frontends.onnx import FrontendError, load_onnx
from wsec.ir.kernels import KINDS
from wsec.ir.target import get_target
from wsec.run import compare, onnx_reference, tolerances

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "frontends"


def _simulate_like_onnxruntime(path: pathlib.Path, ins: dict[str, np.ndarray],
                               out_dir: pathlib.Path) -> list[str]:
    """Compile `path` (pipeline), simulate it, compare; returns the kernels' op lists."""
    res = compile_model(str(path), CompileOptions(mode="pipeline"))
    write_binary(res.module, str(out_dir / "m.bin"))
    prog = load_binary(str(out_dir / "m.bin"))
    got = simulate(prog, ins).outputs
    ref, _ = onnx_reference(str(path), ins)
    rtol, atol = tolerances(prog)
    for k, v in got.items():
        row = compare(k, v, ref[k], rtol, atol)
        assert row.ok, f"{path.name}:{k}: max abs {row.max_abs:.3g}, max rel {row.max_rel:.3g}"
    return [n.op for k in res.module.kernels() for n in k.body]


def _fixture_inputs(name: str) -> dict[str, np.ndarray]:
    d = np.load(FIXTURES / f"{name}.npz")
    return {k.removeprefix("in."): d[k] for k in d.files}


def test_swin_shifted_window_mask_folds_and_simulates(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = onnx.load(str(FIXTURES / "swin_dynamo_o18.onnx"), load_external_data=False)
    assert sum(n.op_type == "ScatterND" for n in model.graph.node) >= 9
    monkeypatch.chdir(tmp_path)
    ops = _simulate_like_onnxruntime(FIXTURES / "swin_dynamo_o18.onnx",
                                     _fixture_inputs("swin_dynamo_o18"), tmp_path)
    assert "ScatterND" not in ops  # the mask is a constant of the attention kernel


def test_wav2vec2_front_end_tiles_the_sequence_and_simulates(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ops = _simulate_like_onnxruntime(FIXTURES / "wav2vec2_fe_dynamo_o18.onnx",
                                     _fixture_inputs("wav2vec2_fe_dynamo_o18"), tmp_path)
    assert ops.count("Conv") == 3


def _conv1d_dims(length: int) -> dict[str, int]:
    """Conv1d 1 -> 32, kernel 10, stride 5 (wav2vec2's first layer) over `length`."""
    wo = (length - 10) // 5 + 1
    return {"N": 1, "C": 1, "H": 1, "W": length, "R": 1, "S": 10, "sh": 1, "sw": 5,
            "dh": 1, "dw": 1, "ph": 0, "pw": 0, "Ho": 1, "Wo": wo, "L1": 1, "K": 32, "G": 1,
            "bias": 0, "F": 0, "A": 0, "P": 0}


def test_conv1d_sram_is_bounded_by_the_tile_not_the_sequence() -> None:
    kind, target = KINDS["conv"], get_target("wse2")
    knobs = {"k": 1, "c": 1, "s": 1}  # one PE for the whole sequence
    short, long = kind.sram(_conv1d_dims(8000), knobs, target), \
        kind.sram(_conv1d_dims(800_000), knobs, target)
    assert short == long < target.sram_bytes
    # the s row groups split the output length: more groups, fewer cycles each
    d = _conv1d_dims(8000)
    assert kind.cycles(d, {"k": 1, "c": 1, "s": 8}, target) < kind.cycles(d, knobs, target)
    assert kind.shape(d, {"k": 2, "c": 1, "s": 8}, target) == (2, 8)


def _scatter_model(path: pathlib.Path) -> dict[str, np.ndarray]:
    """ScatterND and ScatterElements whose data and updates are activations."""
    idx_nd = np.array([[0, 2], [1, 0]], np.int64)
    idx_el = np.array([[2, 0, 1, 3]], np.int64)
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("Sigmoid", ["u"], ["su"]),
         helper.make_node("ScatterND", ["r", "inx", "su"], ["s1"], name="scatter_nd"),
         helper.make_node("Tanh", ["x"], ["t"]),
         helper.make_node("Slice", ["t", "st", "en", "ax"], ["row"]),
         helper.make_node("ScatterElements", ["s1", "iel", "row"], ["y"], axis=1,
                          reduction="add", name="scatter_el")],
        "scatter", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                    helper.make_tensor_value_info("u", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3, 4])],
        [numpy_helper.from_array(idx_nd, "inx"),
         numpy_helper.from_array(np.broadcast_to(idx_el[:, None], (2, 1, 4)).copy() % 3,
                                 "iel"),
         numpy_helper.from_array(np.array([0], np.int64), "st"),
         numpy_helper.from_array(np.array([1], np.int64), "en"),
         numpy_helper.from_array(np.array([1], np.int64), "ax")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    rng = np.random.default_rng(3)
    return {"x": rng.standard_normal((2, 3, 4)).astype(np.float32),
            "u": rng.standard_normal((2, 4)).astype(np.float32)}


def test_scatters_over_activations_run_as_kernels(tmp_path: pathlib.Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ins = _scatter_model(tmp_path / "s.onnx")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    ops = _simulate_like_onnxruntime(tmp_path / "s.onnx", ins, tmp_path)
    assert "ScatterND" in ops and "ScatterElements" in ops


def _foreign_model(path: pathlib.Path, n: int) -> None:
    """Det (no kernel in wsec) of a constant n x n matrix, scaling an input."""
    m = np.eye(n, dtype=np.float32) * 2.0
    g = helper.make_graph(
        [helper.make_node("Det", ["m"], ["det"], name="the_det"),
         helper.make_node("Mul", ["x", "det"], ["y"])],
        "foreign", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        [numpy_helper.from_array(m, "m")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_an_op_without_a_kernel_folds_when_its_inputs_are_constant(
        tmp_path: pathlib.Path) -> None:
    _foreign_model(tmp_path / "f.onnx", 3)
    m = load_onnx(str(tmp_path / "f.onnx"))
    assert [n.op for n in m.nodes] == ["Mul"]
    det = m.values[m.nodes[0].inputs[1]].const
    assert det is not None and det.type.shape == () and float(det.array()) == pytest.approx(8.0)


def test_an_op_without_a_kernel_too_large_to_fold_is_named(tmp_path: pathlib.Path) -> None:
    _foreign_model(tmp_path / "f.onnx", 1100)  # 1.21 M elements: past the fold limit
    with pytest.raises(FrontendError, match=r"unsupported operator 'Det' \(node 'the_det'\)"):
        load_onnx(str(tmp_path / "f.onnx"))
