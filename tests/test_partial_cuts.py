"""Cuts whose sink reads part of the value (a slice): the lanes carry what
the rows read, the loader checks every element some row reads is carried
(wsec.ir.lanes.check_reads, backends.sink_reads).

A slice's data movement copies part of its input, so its PE rows' boxes
leave the rest of the value in no box. The kind used to declare no cut
then (cut lanes carried every element), and its rows read flat lanes
whose ranges their reads did not follow: PEs reading what no lane brought.
These tests check the kind's boxes of a slice, that the router flags such
a request (routed flat first, cut where the later rounds find it free),
that a compiled pair of slices (odd sizes) reads only its lanes under
`--strict` and matches onnxruntime, and that a lane dropped or two swapped
is a SimError at a PE, and a box missing an element a row reads a load
error naming it."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from conftest import compiled_graph, run_wsec
from onnx import TensorProto, helper
from test_cut_kinds import _cut_sinks, dropped_lane_raises, swapped_end_lanes_raise
from wsec.backends.format import FormatError, Program
from wsec.backends.lanes import check_records
from wsec.backends.sim import random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.ir import movement
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Kernel, Node
from wsec.ir.lanes import LaneError, box_elements, check_cut, check_reads
from wsec.ir.library_rowwise import DatamoveKind
from wsec.ir.movement import Operands
from wsec.passes.route_bundles import requests
from wsec.run import onnx_reference


def test_check_reads_accepts_unread_gaps_and_names_a_read_one() -> None:
    shape = (2, 10)
    lanes = np.array([[[0, 2], [2, 5]], [[0, 5], [2, 8]]])
    check_reads(shape, lanes, np.array([[[0, 2], [2, 4]], [[0, 4], [2, 8]]]))
    with pytest.raises(LaneError, match=r"element \[0, 8\] .* reads"):
        check_reads(shape, lanes, np.array([[[0, 6], [1, 9]]]))
    with pytest.raises(LaneError, match="outside"):
        check_reads(shape, np.array([[[0, 0], [3, 1]]]), lanes)


SHAPE = (1, 7, 5, 3)  # odd sizes: rows straddle channels


def _slice_kernel(h: int) -> tuple[Kernel, Operands]:
    consts = {"st": np.array([2], np.int64), "en": np.array([5], np.int64),
              "ax": np.array([1], np.int64)}
    shapes = {"x": SHAPE, "st": (1,), "en": (1,), "ax": (1,)}
    k = Kernel("k0", "kernel", ["x"], ["y"], kind="datamove", dims={"E": 105},
               body=[Node("s", "Slice", ["x", "st", "en", "ax"], ["y"])],
               knobs={"c": 1, "h": h})
    return k, Operands(lambda n: shapes[n], consts.get, routed=True)


@pytest.mark.parametrize("h", [1, 4, 7])
def test_a_slices_rows_read_what_it_copies_and_no_more(h: int) -> None:
    """The rows' boxes hold the slice's channels 2:5 (45 elements) and
    none of the rest: not a cover of the value, but of what is read."""
    k, ops = _slice_kernel(h)
    kind = DatamoveKind()
    rows = kind.body_cut(k, "x", ops)
    assert rows is not None and rows.shape[0] == h
    view = kind.body_view(k, "x", ops) or SHAPE
    with pytest.raises(LaneError, match="a gap"):
        check_cut(view, rows)
    flat = np.zeros(SHAPE, bool)
    flat[:, 2:5] = True
    read = flat.reshape(view)
    got = np.zeros(view, bool)
    for lo, hi in rows:
        got[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    assert (got >= read).all() and not got[~read].any()  # exact: the slice, nothing else
    assert int(box_elements(rows).sum()) == 45
    check_reads(view, rows, rows)


# --- a compiled pair of slices ---------------------------------------------------------------
def slices_model() -> onnx.GraphProto:
    """A 1x1 conv to 10 channels (odd spatial sizes), two slices of it on
    channels 0:4 and 5:9 (channels 4 and 9 read by nobody), added."""
    rng = np.random.default_rng(3)

    def ints(name: str, v: list[int]) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.INT64, [len(v)], v)

    w = (rng.standard_normal((10, 5, 1, 1)) * 0.3).ravel().tolist()
    inits = [helper.make_tensor("w0", TensorProto.FLOAT, [10, 5, 1, 1], w),
             ints("a0", [0]), ints("a1", [4]), ints("b0", [5]), ints("b1", [9]), ints("ax", [1])]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"]),
             helper.make_node("Relu", ["c0"], ["c"]),
             helper.make_node("Slice", ["c", "a0", "a1", "ax"], ["s1"]),
             helper.make_node("Slice", ["c", "b0", "b1", "ax"], ["s2"]),
             helper.make_node("Add", ["s1", "s2"], ["y"])]
    return helper.make_graph(
        nodes, "slices", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 9, 11])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 9, 11])], inits)


@pytest.fixture(scope="module")
def sliced(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return compiled_graph(tmp_path_factory.mktemp("slices"), slices_model())


def _slice_inputs(p: Program) -> list[int]:
    return [bi for bi, ki in _cut_sinks(p).items() if p.kernels[ki].kind == "datamove"
            and [b["op"] for b in p.kernels[ki].body] == ["Slice"]]


def test_compiled_slices_read_only_their_lanes(sliced: tuple[Program, pathlib.Path]) -> None:
    p, path = sliced
    cut = _slice_inputs(p)
    assert len(cut) == 2  # both slices cut (flat before: their rows read no lane's range)
    x = random_inputs(p, 0)
    res = simulate(p, x, strict=True)  # any PE reading what no lane brought raises
    for bi in cut:
        assert int(p.bundles[bi]["lanes"]) > 1
        assert res.kernel_stats[p.kernels[int(p.bundles[bi]["sink"])].name][
            "forwarded_pes"] == 0
    ref, _ = onnx_reference(str(path), x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-4, atol=1e-5)
    got = run_wsec("run", str(path.with_suffix(".bin")), "--strict", "--check", str(path))
    assert got.returncode == 0, got.stdout + got.stderr


def test_a_slices_lane_dropped_or_swapped_is_an_error_at_a_pe(
        sliced: tuple[Program, pathlib.Path]) -> None:
    p, _ = sliced
    for bi in _slice_inputs(p):
        dropped_lane_raises(p, bi)
        swapped_end_lanes_raise(p, bi)


def test_the_loader_names_an_element_a_slice_reads_that_no_lane_carries(
        sliced: tuple[Program, pathlib.Path]) -> None:
    p, _ = sliced
    bi = _slice_inputs(p)[0]
    first = int(p.bundles[bi]["slice0"])
    box = p.slices[first].copy()
    check_records(p)  # the boxes leave unread channels out: accepted
    try:
        axis = int(np.flatnonzero(p.slices["stop"][first] > p.slices["start"][first])[-1])
        p.slices["start"][first, axis] += 1  # lane 0 no longer carries its first element
        with pytest.raises(FormatError, match=r"do not cover it: no lane carries element "
                                              r"\[.*\] of the value .*which its sink reads"):
            check_records(p)
    finally:
        p.slices[first] = box


def test_the_router_flags_a_slices_requests_partial(tmp_path: pathlib.Path) -> None:
    """Only the slices' requests read part of their value (Request.partial):
    the router's first attempts route them flat, the later rounds cut them
    where that is free (wsec.passes.route)."""
    model = helper.make_model(slices_model(), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "s.onnx"))
    res = compile_model(str(tmp_path / "s.onnx"), CompileOptions(stop_after="place"))
    kinds = {k.name: [n.op for n in k.body] for k in res.module.kernels()}
    reqs = requests(res.module, Fabric.of(res.target))
    assert {r.sink for r in reqs if r.partial} == {n for n, ops in kinds.items()
                                                   if ops == ["Slice"]}
    assert len({r.sink for r in reqs if r.partial}) == 2


def test_a_slice_of_the_last_axis_is_cut_over_the_value_flattened() -> None:
    """Rows of a slice of the last axis read strided runs: in the shape a
    row straddling a channel's edge has both channels' planes as its hull
    (fewer elements in all than flattened, but its lane the heaviest);
    flattened each row's hull is a range of the same length. The kind cuts
    where the busiest row is lighter (wsec.ir.library_rowwise
    DatamoveKind.body_view)."""
    shape = (1, 3, 5, 5, 7)
    consts = {"st": np.array([0], np.int64), "en": np.array([2], np.int64),
              "ax": np.array([4], np.int64)}
    shapes = {"x": shape, "st": (1,), "en": (1,), "ax": (1,)}
    k = Kernel("k0", "kernel", ["x"], ["y"], kind="datamove", dims={"E": 525},
               body=[Node("s", "Slice", ["x", "st", "en", "ax"], ["y"])],
               knobs={"c": 1, "h": 7})
    ops = Operands(lambda n: shapes[n], consts.get, routed=True)
    kind = DatamoveKind()
    rows = kind.body_cut(k, "x", ops)
    assert kind.body_view(k, "x", ops) == (525,) and rows is not None
    tags = movement.sources(k.body, ["x"], shapes, consts.get)
    assert tags is not None
    in_shape = movement.rows_read([tags["y"]], 0, shape, 7, 1)
    assert box_elements(in_shape).sum() < box_elements(rows).sum()  # fewer in all, but
    assert box_elements(rows).max() < box_elements(in_shape).max()  # its busiest lighter
    read = np.zeros(shape, bool)
    read[..., 0:2] = True
    check_reads((525,), rows, np.array([[[int(i)], [int(i) + 1]]
                                        for i in np.flatnonzero(read.reshape(-1))]))
