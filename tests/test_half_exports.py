"""Real fp16 exports with external weights, compiled from a foreign directory.

Why: the user's model is typically a dynamo export (opset 18+, weights in
`M.onnx.data`) in half precision, compiled from wherever their shell is.
Two things broke there: onnx's checker/converter resolved external data
against the current directory, and rewrites created fp32 constants next to
fp16 tensors (`Div: B has inconsistent type tensor(float)`). Every test
here runs with the current directory elsewhere (see tests/fixtures/half).
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
import onnx
import pytest
from conftest import run_wsec
from onnx import TensorProto, helper
from wsec.backends.emit import write_binary
from wsec.backends.loader import load_binary
from wsec.backends.sim import simulate
from wsec.driver import CompileOptions, compile_model
from wsec.frontends.onnx import load_onnx
from wsec.ir.types import External
from wsec.run import compare, onnx_reference, tolerances

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures" / "half"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.onnx"))
FAMILIES = ("bert", "gpt2", "llama", "neox", "qwen2", "t5")


def _inputs(name: str) -> dict[str, np.ndarray]:
    d = np.load(FIXTURES / f"{name}.npz")
    return {k.removeprefix("in."): d[k] for k in d.files if k.startswith("in.")}


def test_family_is_complete_small_and_external() -> None:
    assert NAMES == sorted(f"{f}_{e}" for f in FAMILIES for e in ("dynamo_o20", "ts_o17"))
    for n in NAMES:
        model = onnx.load(str(FIXTURES / f"{n}.onnx"), load_external_data=False)
        ext = [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]
        floats = [t.data_type for t in ext if t.data_type != TensorProto.INT64]
        assert floats and set(floats) == {TensorProto.FLOAT16}, n
        assert (FIXTURES / f"{n}.onnx").stat().st_size < 120_000
        assert (FIXTURES / f"{n}.onnx.data").stat().st_size < 100_000


@pytest.mark.parametrize("name", NAMES)
def test_half_export_simulates_like_onnxruntime_from_elsewhere(
        name: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing of the model is in the current directory
    ins = _inputs(name)
    res = compile_model(str(FIXTURES / f"{name}.onnx"), CompileOptions(mode="pipeline"))
    write_binary(res.module, "m.bin")
    prog = load_binary("m.bin")
    assert prog.target.dtype == "f16"  # auto dtype: the model's own precision
    got = simulate(prog, ins).outputs
    ref, _ = onnx_reference(str(FIXTURES / f"{name}.onnx"), ins)
    rtol, atol = tolerances(prog)
    for k, v in got.items():
        row = compare(k, v, ref[k], rtol, atol)
        assert row.ok, f"{name}:{k}: max abs {row.max_abs:.3g}, max rel {row.max_rel:.3g}"


def test_cli_compiles_a_dynamo_export_from_another_directory(tmp_path: pathlib.Path) -> None:
    r = run_wsec(str(FIXTURES / "neox_dynamo_o20.onnx"), "-o", "m.bin", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.bin").stat().st_size > 0


def test_a_same_named_data_file_in_the_current_directory_is_never_read(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's weights come from its own folder, even when the shell sits
    in a folder holding a different file of the same name."""
    name = "llama_dynamo_o20"
    model_dir, cwd = tmp_path / "model", tmp_path / "cwd"
    model_dir.mkdir()
    cwd.mkdir()
    for suffix in (".onnx", ".onnx.data"):
        shutil.copy(FIXTURES / f"{name}{suffix}", model_dir / f"{name}{suffix}")
    (cwd / f"{name}.onnx.data").write_bytes(b"\x7f" * 10)  # short and wrong
    monkeypatch.chdir(cwd)
    m = load_onnx(str(model_dir / f"{name}.onnx"))
    weights = [v.const for v in m.values.values() if isinstance(v.const, External)]
    assert weights and all(w.resolved_path().startswith(str(model_dir)) for w in weights)
    w = max(weights, key=lambda c: c.type.numel)
    assert w.array().dtype == np.float16 and np.isfinite(w.array()).all()


def _gelu_model(path: pathlib.Path, elem: int, approx: str) -> None:
    g = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], approximate=approx)], "g",
                          [helper.make_tensor_value_info("x", elem, [2, 8])],
                          [helper.make_tensor_value_info("y", elem, [2, 8])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), str(path))


@pytest.mark.parametrize("elem", [TensorProto.FLOAT16, TensorProto.DOUBLE], ids=["f16", "f64"])
@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu_downgrade_constants_take_the_input_dtype(
        elem: int, approx: str, tmp_path: pathlib.Path) -> None:
    _gelu_model(tmp_path / "g.onnx", elem, approx)
    m = load_onnx(str(tmp_path / "g.onnx"))
    want = {TensorProto.FLOAT16: "f16", TensorProto.DOUBLE: "f64"}[elem]
    consts = [v for v in m.values.values() if v.const is not None]
    assert consts and {v.type.dtype for v in consts} == {want}
    assert {v.type.dtype for v in m.values.values()} == {want}


def test_reduce_without_axes_drops_noop_with_empty_axes(tmp_path: pathlib.Path) -> None:
    """Opset-18+ ReduceMax over everything, written with noop_with_empty_axes=0
    (T5's fp16 inf check): no opset-17 attribute, same meaning."""
    g = helper.make_graph(
        [helper.make_node("ReduceMax", ["x"], ["y"], keepdims=0, noop_with_empty_axes=0),
         helper.make_node("ReduceMax", ["x"], ["z"], noop_with_empty_axes=1)], "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [3, 4])])
    path = tmp_path / "r.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    m = load_onnx(str(path))
    assert m.values["y"].type.shape == () and m.values["z"].type.shape == (3, 4)
    ops = {n.outputs[0]: n for n in m.nodes}
    assert ops["y"].op == "ReduceMax" and "noop_with_empty_axes" not in ops["y"].attrs
    assert ops["z"].op == "Identity"


def test_constant_folding_keeps_each_dtype_and_the_casts_meaning(tmp_path: pathlib.Path) -> None:
    """fp16 constant -> Cast f32 -> Mul (fp32 island) -> Cast f16 -> Add to an fp16
    activation: the folded constant is fp16 and carries both roundings."""
    from wsec.passes.base import PassContext
    from wsec.passes.canonicalize import Canonicalize

    c16 = np.array([0.1, 1e-5, 60000.0], np.float16)
    g = helper.make_graph(
        [helper.make_node("Cast", ["c16"], ["c32"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["c32", "three"], ["m32"]),
         helper.make_node("Cast", ["m32"], ["m16"], to=TensorProto.FLOAT16),
         helper.make_node("Add", ["x", "m16"], ["y"])], "mixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [2, 3])],
        [helper.make_tensor("c16", TensorProto.FLOAT16, [3], c16),
         helper.make_tensor("three", TensorProto.FLOAT, [], [3.0])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "mixed.onnx"))
    m = load_onnx(str(tmp_path / "mixed.onnx"))
    Canonicalize().run(m, PassContext.for_module(m))
    (add,) = m.nodes
    folded = m.values[add.inputs[1]]
    assert folded.type.dtype == "f16"
    with np.errstate(over="ignore"):  # 60000 * 3 overflows fp16 to inf, as ONNX's Cast does
        want = (c16.astype(np.float32) * np.float32(3.0)).astype(np.float16)
    np.testing.assert_array_equal(folded.const.array(), want)
    assert np.isinf(want[2])
