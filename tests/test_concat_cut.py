"""A concatenation's inputs cut onto the runs of rows that read them.

A datamove kernel deals its output in blocks over its PEs, so each input
of a channel concatenation is forwarded by a run of its PE rows, the next
input by the run after it (DatamoveKind.body_cut: rows reading none of an
input have empty boxes). Its bundle lands one lane per row of that run
alone (wsec.ir.kernels.read_span, route_bundles: the run's slots of the
sink's side), each carrying the flat range its row forwards: over the
value flattened (wsec.ir.lanes.flattens), where in (N, C, H, W) the box
would span whole channels on either side. These tests check the pieces
(spans, views, lane boxes), that a small model's concatenation is cut so
and proven by the simulator, and that a lane dropped or landing on the
wrong row is a SimError naming the PE.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from wsec.backends.emit import write_binary
from wsec.backends.format import BUNDLE_CUT, FormatError, Program
from wsec.backends.lanes import check_records, to_bundle
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.ir.graph import Bundle, Kernel, Module, Node, Rect
from wsec.ir.kernels import cut_view, input_cut, lane_boxes, read_span
from wsec.ir.lanes import LaneError, boxes_to_view, check_cut, check_view, flattens
from wsec.ir.movement import Operands
from wsec.passes.route_bundles import (
    Port,
    Request,
    _facing_runs,
    _runs_straight,
    _shares,
    cuts,
)
from wsec.run import onnx_reference

N_IN, C, H, W = 3, 8, 12, 12


def concat_model(path: pathlib.Path) -> None:
    """x -> three convs -> Concat(axis=1) -> a 1x1 conv: the concatenation's
    three inputs are each read by a third of its rows."""
    rng = np.random.default_rng(5)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (rng.standard_normal(shape) * 0.3).ravel().tolist())

    inits, nodes = [], []
    for i in range(N_IN):
        inits.append(init(f"w{i}", C, 3, 3, 3))
        nodes += [helper.make_node("Conv", ["x", f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
    nodes.append(helper.make_node("Concat", [f"r{i}" for i in range(N_IN)], ["cat"], axis=1))
    inits.append(init("wo", 4, N_IN * C, 1, 1))
    nodes.append(helper.make_node("Conv", ["cat", "wo"], ["y"]))
    g = helper.make_graph(nodes, "cat",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, H, W])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Module, Program]:
    d = tmp_path_factory.mktemp("concat")
    concat_model(d / "m.onnx")
    m = compile_model(str(d / "m.onnx"), CompileOptions()).module
    write_binary(m, str(d / "m.bin"))
    return d / "m.onnx", m, load_binary(str(d / "m.bin"))


def _concat_bundles(p: Program) -> list[int]:
    """The cut bundles into the concatenation (the router keeps a run cut
    where the links allow: here the input from the kernel beside it)."""
    return [bi for bi, b in enumerate(p.bundles)
            if int(b["sink"]) >= 0 and p.kernels[int(b["sink"])].kind == "datamove"
            and int(b["flags"]) & BUNDLE_CUT]


# --- the pieces -------------------------------------------------------------------------
def test_read_span_is_the_run_from_the_first_reading_row_to_the_last() -> None:
    rows = np.zeros((6, 2, 2), np.int64)
    rows[2:5, 1] = 3
    rows[3, 1] = 0  # a row between reading nothing stays inside the run
    assert read_span(rows) == (2, 5)
    assert read_span(np.zeros((4, 2, 2), np.int64)) == (0, 0)


def test_a_flattened_view_is_a_view_and_boxes_map_to_their_flat_ranges() -> None:
    shape = (1, 3, 4, 5)
    assert flattens(shape, (60,)) and not flattens((60,), (60,)) and not flattens(shape, (30,))
    check_view(shape, (60,))
    check_view(shape, (1, 3, 2, 2, 5))  # a split of one axis is one too
    with pytest.raises(ValueError, match="neither splits one axis .* nor flattens it"):
        check_view(shape, (2, 30))
    boxes = np.array([[[0, 1, 2, 0], [1, 2, 4, 5]],    # channel 1, rows 2-3: exact
                      [[0, 0, 3, 1], [1, 2, 4, 2]],    # two channels' element: a superset
                      [[0, 0, 0, 0], [0, 0, 0, 0]]])   # empty stays empty
    got = boxes_to_view(boxes, shape, (60,))
    assert got.tolist() == [[[30], [40]], [[16], [37]], [[0], [0]]]


def _datamove_kernel(rows: int) -> tuple[Kernel, Operands]:
    body = [Node("cat", "Concat", ["a", "b"], ["y"], {"axis": 1})]
    k = Kernel("k0", "kernel", ["a", "b"], ["y"], kind="datamove", dims={"E": 60}, body=body,
               knobs={"c": 1, "h": rows}, rect=Rect(10, 20, 1, rows))
    shapes = {"a": (1, 2, 3, 4), "b": (1, 3, 3, 4)}
    return k, Operands(lambda n: shapes[n], {}.get, routed=True, runs=True)


def test_a_concatenations_inputs_are_cut_over_their_flat_ranges() -> None:
    """Each of 4 rows forwards 15 of the 60 output elements: a's 24 on rows
    0-1, b's 36 on rows 1-3 (row 1 forwards the end of a and the start of
    b); flattened, each row's range is exact, where in the value's shape
    row 0's 15 elements of a (channel 0 and 3 of channel 1) are a box of
    both channels whole."""
    k, ops = _datamove_kernel(4)
    a, b = input_cut(k, "a", (1, 2, 3, 4), ops), input_cut(k, "b", (1, 3, 3, 4), ops)
    assert a is not None and b is not None
    assert cut_view(k, "a", (1, 2, 3, 4), ops) == (24,)
    assert cut_view(k, "b", (1, 3, 3, 4), ops) == (36,)
    assert read_span(a) == (0, 2) and read_span(b) == (1, 4)
    assert a[:2, :, 0].tolist() == [[0, 15], [15, 24]]
    assert b[1:, :, 0].tolist() == [[0, 6], [6, 21], [21, 36]]
    check_cut((24,), a[:2])
    check_cut((36,), b[1:])
    held = Operands(ops.shape, ops.const)  # rows holding their boxes (no lanes): the shape
    assert cut_view(k, "b", (1, 3, 3, 4), held) == (1, 3, 3, 4)
    # routed where lanes land on every row or none (placement's question): flat
    every = Operands(ops.shape, ops.const, routed=True)
    assert input_cut(k, "a", (1, 2, 3, 4), every) is None
    assert input_cut(k, "b", (1, 3, 3, 4), every) is None


def test_lane_boxes_of_a_bundle_landing_on_the_run() -> None:
    k, ops = _datamove_kernel(4)
    # lanes from the West landing on rows 1..3 of the sink (x 10, y 21..23)
    b = Bundle("k0", 0, 3, (0, 1), ((5, 21), (10, 21)), 0, "rows")
    got = lane_boxes(k, b, "b", (1, 3, 3, 4), ops)
    assert got[:, :, 0].tolist() == [[0, 6], [6, 21], [21, 36]]
    off = Bundle("k0", 0, 3, (0, 1), ((5, 20), (10, 20)), 0, "rows")  # rows 0..2: row 3 unserved
    with pytest.raises(ValueError, match="leaves PE row 3 without the box it reads"):
        lane_boxes(k, off, "b", (1, 3, 3, 4), ops)
    wide = Bundle("k0", 0, 5, (0, 1), ((5, 20), (10, 20)), 0, "rows")
    with pytest.raises(ValueError, match=r"one lane per 1 PE row \(4 rows\) or fewer"):
        lane_boxes(k, wide, "b", (1, 3, 3, 4), ops)


def _run_request(src_y: int, src_len: int, first: int, rows: int) -> Request:
    """A request of `rows` lanes at pitch 1 from a side facing East at x 0
    (slots y src_y..) onto a run of a 12-row sink side at x 5 from row
    `first`."""
    src = Port("a", (0, src_y), (0, 1), src_len, (1, 0))
    dst = Port("s", (5, 0), (0, 1), 12, (1, 0), 0)
    boxes = np.zeros((rows, 2, 1), np.int64)
    boxes[:, 1] = 1
    return Request(0, "s", src, dst, rows, need=1, lanes=rows, pairs=[(src, dst)],
                   cut_rows=rows, cut_first=first, sink_rows=12, row_boxes=boxes, cut_pitch=1)


def test_a_run_cut_needs_its_source_to_face_the_run() -> None:
    """Sides parallel, the sink ahead: the cut lanes run straight only
    where the source side faces their run of rows; else (a jog the
    bus's width) the run is routed flat (_facing_runs)."""
    ok = _run_request(4, 6, 4, 4)  # source slots y 4..9 face rows 4..7
    assert cuts(ok) and _runs_straight(ok)
    far = _run_request(0, 4, 6, 4)  # source y 0..3, run y 6..9
    assert not _runs_straight(far)
    _facing_runs([far], 1.0)
    assert far.cut_pitch == 0
    _facing_runs([ok], 1.0)
    assert ok.cut_pitch == 1
    # cut, its lanes carry the sink's boxes; left flat it shares its source's
    # slots with its siblings, as an input its sink does not cut
    assert not _shares(ok) and _shares(far)


# --- end to end -------------------------------------------------------------------------
def test_the_concatenations_inputs_land_on_their_runs(
        compiled: tuple[pathlib.Path, Module, Program]) -> None:
    _, m, p = compiled
    kernels = {k.name: k for k in m.kernels()}
    ops = Operands.of_module(m, runs=True)
    runs = []
    for e in m.edges:
        for b in e.bundles or ():
            k = kernels.get(b.sink)
            if k is None or k.kind != "datamove" or not b.cut:
                continue
            assert b.cut == "rows"
            shape = tuple(m.values[e.value].type.shape)
            rows = input_cut(k, e.value, shape, ops)
            assert rows is not None
            first, stop = read_span(rows)
            assert b.lanes * b.pitch == stop - first < rows.shape[0]
            assert cut_view(k, e.value, shape, ops) == (int(np.prod(shape)),)
            runs.append((first, stop))
    assert runs  # at least one input lands on its run
    for bi in _concat_bundles(p):
        assert int(p.bundles[bi]["flags"]) & BUNDLE_CUT
        assert len(p.lane_view(bi)) == 1  # META cut_views: the value flattened


def test_the_simulator_proves_the_concatenations_reads(
        compiled: tuple[pathlib.Path, Module, Program]) -> None:
    """No read of a cut input is out of its lane (else a SimError); the PEs
    counted as forwarded are on the runs of the inputs routed flat only."""
    model, m, p = compiled
    x = random_inputs(p, 0)
    res = simulate(p, x)
    kernels = {k.name: k for k in m.kernels()}
    ops = Operands.of_module(m, runs=True)
    k = next(k for k in m.kernels() if k.kind == "datamove")
    assert k.rect is not None
    flat_rows = 0
    for e in m.edges:
        for b in e.bundles or ():
            if b.sink == k.name and not b.cut:
                rows = input_cut(kernels[b.sink], e.value,
                                 tuple(m.values[e.value].type.shape), ops)
                assert rows is not None
                first, stop = read_span(rows)
                flat_rows += stop - first
    assert res.kernel_stats[k.name]["forwarded_pes"] <= flat_rows * min(k.rect.w, k.rect.h)
    ref, _ = onnx_reference(str(model), x)
    for k, v in ref.items():
        np.testing.assert_allclose(res.outputs[k], v, rtol=1e-3, atol=1e-3)


def test_a_dropped_concat_lane_is_an_error_naming_the_pe(
        compiled: tuple[pathlib.Path, Module, Program]) -> None:
    """The last lane of a cut input's bundle delivers to no core: the
    routes check names the PE where it ends short of its sink."""
    _, _, p = compiled
    bi = _concat_bundles(p)[0]
    last = int(p.bundles[bi]["lanes"]) - 1
    r = p.routes.copy()
    lane = np.flatnonzero((r["bundle"] == bi) & (r["lane"] == last))
    r["tx"][lane] &= ~np.uint8(16)  # RAMP
    with pytest.raises(SimError) as ex:
        simulate(replace(p, routes=r), random_inputs(p))
    k = p.kernels[int(p.bundles[bi]["sink"])]
    assert re.search(rf"lane {last} of .* to '{k.name}' .*never reaches .* PE \(\d+, \d+\)",
                     str(ex.value)), str(ex.value)


def test_concat_lanes_swapping_boxes_are_an_error(
        compiled: tuple[pathlib.Path, Module, Program]) -> None:
    """A cut input's first two lanes carrying each other's boxes: the
    loader still sees a cover, the simulator finds a PE reading outside
    the lane it received, and names it."""
    _, _, p = compiled
    bi = _concat_bundles(p)[0]
    a = int(p.bundles[bi]["slice0"])
    q = replace(p, slices=p.slices.copy())
    q.slices[a], q.slices[a + 1] = p.slices[a + 1], p.slices[a]
    check_records(q)  # the boxes still cover the value
    with pytest.raises(SimError, match=r"PE \(\d+, \d+\) \(offset \(\d+, \d+\)\) reads"):
        simulate(q, random_inputs(q))


def test_loader_rejects_a_view_that_is_no_view(
        compiled: tuple[pathlib.Path, Module, Program]) -> None:
    _, _, p = compiled
    bi = _concat_bundles(p)[0]
    n = p.lane_view(bi)[0]
    q = replace(p, info={**p.info, "cut_views": {**p.info["cut_views"], str(bi): [2, n // 2]}})
    with pytest.raises(FormatError, match="is cut over a view of .* nor flattens it"):
        check_records(q)
    assert to_bundle(p, bi).cut == "rows"
    with pytest.raises(LaneError):
        check_cut((n,), np.array([[[1], [n]]]))  # the first element on no lane
