"""A scalar operand of an Einsum, a reduction or a gather is held to its lane.

The element-wise, tail and datamove checks read a scalar activation as its
one element (sim_inbox.window_shape, tests/test_inbox_scalars.py); the
executors of the matmul kind's two-operand Einsum (sim_einsum), of the
reduce kind (sim_reduce.reduce) and of the gather kind's indices
(sim_reduce._check_gather) skipped scalars, so a PE reading one its core
received no lane of went uncounted. The frontend compiles each of these
from a scalar activation (a ReduceMax with keepdims=0 feeding it): every PE
of the Einsum multiplies by the scalar, every gather PE tests the index,
the reduction's one PE reads it. The sharded conv, matmul and weight
gradient executors never see one: ONNX's Conv takes tensors of rank 3 or
more, MatMul of rank 1 or more and Gemm of rank 2, and a conv's spread
residuals have its output's shape.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from wsec.backends import sim
from wsec.backends.emit import write_binary
from wsec.backends.format import Program
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.run import onnx_reference

_F = TensorProto.FLOAT


def _compile(d: pathlib.Path, name: str, nodes: list[onnx.NodeProto],
             ins: list[onnx.ValueInfoProto], outs: list[onnx.ValueInfoProto]
             ) -> tuple[Program, str]:
    g = helper.make_graph(nodes, name, ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    path = d / f"{name}.onnx"
    onnx.save(m, str(path))
    write_binary(compile_model(str(path), CompileOptions()).module, str(d / f"{name}.bin"))
    return load_binary(str(d / f"{name}.bin")), str(path)


def _reader(p: Program, kind: str, value: str) -> str:
    """The one kernel of `kind` reading the scalar `value`."""
    names = [k.name for k in p.kernels if k.kind == kind and value in k.inputs]
    assert len(names) == 1, [(k.name, k.kind, k.inputs) for k in p.kernels]
    assert p.info["values"][value].endswith("[]")
    return names[0]


def _matches_reference(p: Program, onnx_path: str, out: str) -> dict[str, dict[str, int]]:
    x = random_inputs(p, 0)
    res = simulate(p, x)
    ref, _ = onnx_reference(onnx_path, x)
    np.testing.assert_allclose(res.outputs[out], ref[out], rtol=1e-5, atol=1e-5)
    return res.kernel_stats


def _without_relay(monkeypatch: pytest.MonkeyPatch, ki: int, value: str) -> None:
    """The simulator as if the kernel's rows relayed nothing of `value`
    (wsec.ir.relay): its PEs hold only what their lanes brought."""
    real = sim.deliveries

    def bare(q: Program, strict: bool = True) -> list[dict[str, sim.Delivery]]:
        out = real(q, strict)
        out[ki][value].relay = None
        return out

    monkeypatch.setattr(sim, "deliveries", bare)


def _index(p: Program, name: str) -> int:
    return next(i for i, k in enumerate(p.kernels) if k.name == name)


@pytest.fixture(scope="module")
def einsum(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, str]:
    """m = max(s), y = sum_i m x[i, :]: ',ij->j' on the matmul kind, whose
    every PE multiplies its block by m."""
    vi = helper.make_tensor_value_info
    return _compile(tmp_path_factory.mktemp("einsum"), "einsum",
                    [helper.make_node("ReduceMax", ["s"], ["m"], keepdims=0),
                     helper.make_node("Einsum", ["m", "x"], ["y"], equation=",ij->j")],
                    [vi("s", _F, [4]), vi("x", _F, [64, 32])], [vi("y", _F, [32])])


def test_an_einsums_pes_reading_a_scalar_without_its_lane_take_it_from_the_relay(
        einsum: tuple[Program, str], monkeypatch: pytest.MonkeyPatch) -> None:
    p, path = einsum
    name = _reader(p, "matmul", "m")
    k = next(k for k in p.kernels if k.name == name)
    assert k.rect.w * k.rect.h > 1
    # the scalar's lane lands on few of the kernel's PEs; every one reads it, the
    # others from their rows' relay
    assert _matches_reference(p, path, "y")[name]["forwarded_pes"] == 0
    _without_relay(monkeypatch, _index(p, name), "m")
    stats = simulate(p, random_inputs(p, 0), strict=False).kernel_stats
    assert 0 < stats[name]["forwarded_pes"] < k.rect.w * k.rect.h
    with pytest.raises(SimError, match=rf"kernel '{name}' .*reads %m\[\], which never "
                                       r"arrived there"):
        simulate(p, random_inputs(p, 0))


def test_an_einsum_on_one_pe_holds_its_scalars_lane(tmp_path: pathlib.Path) -> None:
    vi = helper.make_tensor_value_info
    p, path = _compile(tmp_path, "scale",
                       [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
                        helper.make_node("Einsum", ["x", "m"], ["y"], equation="ij,->ij")],
                       [vi("x", _F, [4, 64])], [vi("y", _F, [4, 64])])
    name = _reader(p, "matmul", "m")
    assert _matches_reference(p, path, "y")[name]["forwarded_pes"] == 0
    simulate(p, random_inputs(p, 0), strict=True)


@pytest.fixture(scope="module")
def gather(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, str]:
    """Row max(i) of x: a Gather whose index is a scalar activation."""
    vi = helper.make_tensor_value_info
    return _compile(tmp_path_factory.mktemp("gather"), "gather",
                    [helper.make_node("ReduceMax", ["i"], ["m"], keepdims=0),
                     helper.make_node("Gather", ["x", "m"], ["y"], axis=0)],
                    [vi("x", _F, [8, 64]), vi("i", TensorProto.INT64, [4])],
                    [vi("y", _F, [64])])


def test_a_gathers_pes_reading_a_scalar_index_without_its_lane_take_it_from_the_relay(
        gather: tuple[Program, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every gather PE tests the index against its rows: those its lane
    missed take it from their rows' relay; without it they read an
    element no route brought."""
    p, path = gather
    name = _reader(p, "gather", "m")
    k = next(k for k in p.kernels if k.name == name)
    x = random_inputs(p, 0)
    x["i"] = np.array([3, 0, 7, 5], np.int64)  # a row of the table
    res = simulate(p, x)
    ref, _ = onnx_reference(path, x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-6)
    assert res.kernel_stats[name]["forwarded_pes"] == 0
    _without_relay(monkeypatch, _index(p, name), "m")
    res = simulate(p, x, strict=False)
    assert 0 < res.kernel_stats[name]["forwarded_pes"] < k.rect.w * k.rect.h
    with pytest.raises(SimError, match=rf"kernel '{name}' .*reads %m\[\], which never "
                                       r"arrived there"):
        simulate(p, x)


@pytest.fixture(scope="module")
def reduce(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, str]:
    """ReduceSum of a scalar activation (-max(x)): one PE reduces it."""
    vi = helper.make_tensor_value_info
    return _compile(tmp_path_factory.mktemp("reduce"), "reduce",
                    [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
                     helper.make_node("Neg", ["m"], ["n"]),
                     helper.make_node("ReduceSum", ["n"], ["y"], keepdims=1)],
                    [vi("x", _F, [4, 64])], [vi("y", _F, [])])


def test_a_reduction_of_a_scalar_is_checked(reduce: tuple[Program, str]) -> None:
    p, path = reduce
    name = _reader(p, "reduce", "n")
    assert _matches_reference(p, path, "y")[name]["forwarded_pes"] == 0
    simulate(p, random_inputs(p, 0), strict=True)


def test_a_reduction_of_a_scalar_whose_lane_never_lands_is_an_error(
        reduce: tuple[Program, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The scalar's lane taken off the reducing PE (as a route table
    missing its ramp would): its one PE reads what never arrived."""
    p, _ = reduce
    name = _reader(p, "reduce", "n")
    ki = next(i for i, k in enumerate(p.kernels) if k.name == name)
    real = sim.deliveries

    def lost(q: Program, strict: bool = True) -> list[dict[str, sim.Delivery]]:
        out = real(q, strict)
        out[ki]["n"].lane_at = np.full_like(out[ki]["n"].lane_at, -1)
        return out

    monkeypatch.setattr(sim, "deliveries", lost)
    assert simulate(p, random_inputs(p, 0), strict=False).kernel_stats[name][
        "forwarded_pes"] == 1
    with pytest.raises(SimError, match=rf"kernel '{name}' .*reads %n\[\], which never "
                                       r"arrived there .*no lane of it"):
        simulate(p, random_inputs(p, 0), strict=True)
