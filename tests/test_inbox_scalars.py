"""A scalar activation is held to its lane like any other value.

T5's exports compute their attention bias' clamp bounds from scalars
(ReduceMax with keepdims=0, Cast, Where, Neg): kernels whose every input is
a scalar declared no window, so the simulator checked none of their PEs
(bench/inboxes.py: 50 of T5's 248 kernels unchecked). A scalar's window is
its one element (sim_inbox.window_shape); a PE that reads it must have
received its lane, and one of a kernel broadcasting it over many PEs that
did not is counted (flat) or an error at the PE (`strict`).
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_lane_cut import _P
from wsec.backends.emit import write_binary
from wsec.backends.format import Program
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_inbox import Delivery, check_windows, window_shape
from wsec.driver import CompileOptions, compile_model
from wsec.ir.lanes import lane_slices
from wsec.run import onnx_reference


def _scalar(lane_at: np.ndarray, strict: bool = False) -> Delivery:
    return Delivery("x", 0, 0, 1, lane_slices(1, 1), lane_at, (), strict=strict)


def test_a_scalars_window_is_its_one_element() -> None:
    assert window_shape(()) == (1,)
    assert window_shape((2, 3)) == (2, 3)
    p = _P(())
    lane_at = np.array([[0, -1, -1], [-1, -1, -1]])  # the lane lands on PE (0, 0) only
    reads = np.zeros((2, 3, 2, 1), np.int64)
    reads[:, :, 1] = 1  # every PE reads the scalar
    assert check_windows(p, 0, _scalar(lane_at), reads) == 5  # type: ignore[arg-type]
    one = np.zeros((2, 3, 2, 1), np.int64)
    one[0, 0, 1] = 1  # only the landing PE reads it; the others read nothing
    assert check_windows(p, 0, _scalar(lane_at), one) == 0  # type: ignore[arg-type]
    with pytest.raises(SimError, match=r"PE \(11, 20\) \(offset \(1, 0\)\) reads %x\[\], "
                                       r"which never arrived there .*no lane of it"):
        check_windows(p, 0, _scalar(lane_at, strict=True), reads)  # type: ignore[arg-type]


def _model(path: pathlib.Path) -> None:
    """x -> ReduceMax (keepdims 0) -> Cast -> Cast -> Neg, added back onto x:
    a data movement of a scalar, and an element-wise kernel broadcasting it."""
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Cast", ["m"], ["mi"], to=TensorProto.INT64),
             helper.make_node("Cast", ["mi"], ["mf"], to=TensorProto.FLOAT),
             helper.make_node("Neg", ["mf"], ["n"]),
             helper.make_node("Add", ["x", "n"], ["y"])]
    g = helper.make_graph(nodes, "scalars", [vi("x", TensorProto.FLOAT, [4, 64])],
                          [vi("y", TensorProto.FLOAT, [4, 64])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def scalars(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    d = tmp_path_factory.mktemp("scalars")
    _model(d / "m.onnx")
    write_binary(compile_model(str(d / "m.onnx"), CompileOptions()).module, str(d / "m.bin"))
    return load_binary(str(d / "m.bin")), d / "m.onnx"


def _reads_scalar(p: Program) -> list[int]:
    """Kernels with a scalar activation input."""
    shapes = {e.value for e in p.edges if p.info["values"][e.value].endswith("[]")}
    return [ki for ki, k in enumerate(p.kernels) if shapes & set(k.inputs)]


def test_kernels_reading_scalars_are_checked(scalars: tuple[Program, pathlib.Path]) -> None:
    p, onnx_path = scalars
    x = random_inputs(p, 0)
    res = simulate(p, x)
    assert [k.name for k in p.kernels if "forwarded_pes" not in res.kernel_stats[k.name]] == []
    readers = _reads_scalar(p)
    assert any(p.kernels[ki].kind == "datamove" for ki in readers)
    for ki in readers:  # a one-PE kernel holds the scalar's one lane: proven
        k = p.kernels[ki]
        if k.rect.w * k.rect.h == 1:
            assert res.kernel_stats[k.name]["forwarded_pes"] == 0
    ref, _ = onnx_reference(str(onnx_path), x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-5, atol=1e-6)


def test_a_scalar_broadcast_without_lanes_is_an_error_at_the_pe(
        scalars: tuple[Program, pathlib.Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The element-wise kernel's PEs all add the scalar; its one flat lane
    lands on one of them: the others take it from their rows' relay
    (wsec.ir.relay), and without it read an element no route brought."""
    from test_inbox_scalar_operands import _without_relay

    p, _ = scalars
    wide = [ki for ki in _reads_scalar(p) if p.kernels[ki].rect.w * p.kernels[ki].rect.h > 1]
    assert wide
    name = p.kernels[wide[0]].name
    assert simulate(p, random_inputs(p, 0)).kernel_stats[name]["forwarded_pes"] == 0
    _without_relay(monkeypatch, wide[0], "mf")
    res = simulate(p, random_inputs(p, 0), strict=False)
    assert res.kernel_stats[name]["forwarded_pes"] > 0
    with pytest.raises(SimError, match=rf"kernel '{name}' .*reads %mf\[\], which never "
                                       r"arrived there"):
        simulate(p, random_inputs(p, 0), strict=True)


def test_stream_phases_hold_a_scalar_on_every_row(tmp_path: pathlib.Path) -> None:
    """Weight streaming: every PE row of a phase holds a scalar it reads
    (sim_stream_pe.held), as the schedule's move counts it; the phases
    reading it are checked and none reads outside its rows' holdings."""
    _model(tmp_path / "m.onnx")
    m = compile_model(str(tmp_path / "m.onnx"), CompileOptions(mode="stream")).module
    write_binary(m, str(tmp_path / "m.bin"))
    p = load_binary(str(tmp_path / "m.bin"))
    x = random_inputs(p, 0)
    res = simulate(p, x, strict=True)
    readers = _reads_scalar(p)
    assert readers
    for ki in readers:
        assert res.kernel_stats[p.kernels[ki].name]["forwarded_pes"] == 0
    ref, _ = onnx_reference(str(tmp_path / "m.onnx"), x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-5, atol=1e-6)
