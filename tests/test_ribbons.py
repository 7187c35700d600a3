"""Ribbons: one cut routed as several bundles whose inboxes union.

A widening bundle's lanes each take a column of their last run before the
corner; where the room between two kernels holds fewer columns than lanes,
the request is routed as ribbons (runs of consecutive lanes, each its own
bundle and path: wsec.ir.lanes). The binary keeps each ribbon's lanes of
the sink (LANES lane0, sink_lanes), the loader checks they carry every
lane once into rows of its own, and the simulator merges them into one
delivery per value and kernel: every PE still reads only its lane's box.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import sim_zoo
from wsec.backends.emit import write_binary
from wsec.backends.format import PORT_BITS, FormatError
from wsec.backends.lanes import check_records, to_bundle
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_inbox import deliveries
from wsec.driver import CompileOptions, compile_model
from wsec.ir.graph import HOST
from wsec.ir.kernels import lane_boxes, ribbon_boxes
from wsec.ir.lanes import LaneError, split, waypoints
from wsec.ir.verify import VerifyError
from wsec.ir.verify import verify_module as verify


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    d = tmp_path_factory.mktemp("ribbons")
    sim_zoo.cnn_model(d / "cnn.onnx")
    return d, compile_model(str(d / "cnn.onnx"), CompileOptions()).module


def _cut_edge(m):  # noqa: ANN001, ANN202
    """The edge and the index of its cut bundle with the most lanes (a conv's
    input from a kernel: the host's inputs enter through the I/O map, never
    as ribbons)."""
    best = max(((e, i) for e in m.edges for i, b in enumerate(e.bundles or ())
                if b.cut == "rows" and b.lanes >= 3 and e.src != HOST),
               key=lambda t: t[0].bundles[t[1]].lanes)
    return best


@pytest.fixture(scope="module")
def split_bin(cnn):  # noqa: ANN001, ANN201
    """The cnn binary with its widest cut bundle routed as two ribbons."""
    d, m = cnn
    whole = str(d / "whole.bin")
    write_binary(m, whole)
    e, i = _cut_edge(m)
    b = e.bundles[i]
    parts = split(b, [b.lanes // 2, b.lanes - b.lanes // 2])
    saved = list(e.bundles)
    e.bundles[i:i + 1] = parts
    try:
        verify(m)
        path = str(d / "ribbons.bin")
        write_binary(m, path)
    finally:
        e.bundles = saved
    return whole, path, e.value, b


def test_split_keeps_every_lanes_path_and_boxes(cnn) -> None:  # noqa: ANN001
    _, m = cnn
    e, i = _cut_edge(m)
    b = e.bundles[i]
    parts = split(b, [1, b.lanes - 1])
    assert [p.lanes for p in parts] == [1, b.lanes - 1]
    assert (np.concatenate([waypoints(p) for p in parts]) == waypoints(b)).all()
    k = next(k for k in m.kernels() if k.name == b.sink)
    shape = tuple(m.values[e.value].type.shape)
    got = np.concatenate(ribbon_boxes(k, parts, e.value, shape))
    assert (got == lane_boxes(k, b, e.value, shape)).all()
    with pytest.raises(ValueError, match="leaves PE row"):  # one ribbon alone leaves rows out
        lane_boxes(k, parts[1], e.value, shape)
    with pytest.raises(ValueError, match="do not land one on each"):  # a row served twice
        ribbon_boxes(k, [parts[0], parts[0]], e.value, shape)
    with pytest.raises(LaneError, match="do not split"):
        split(b, [1, b.lanes])


def test_verify_takes_ribbons_of_one_cut_only(cnn) -> None:  # noqa: ANN001
    _, m = cnn
    e, i = _cut_edge(m)
    b = e.bundles[i]
    saved = list(e.bundles)
    try:
        e.bundles[i:i + 1] = split(b, [1, b.lanes - 1])
        verify(m)
        e.bundles[i + 1] = replace(e.bundles[i + 1], cut="")
        with pytest.raises(VerifyError, match="only the ribbons of one cut"):
            verify(m)
    finally:
        e.bundles = saved


def test_ribbons_round_trip_merge_and_prove_their_reads(split_bin) -> None:  # noqa: ANN001
    whole, path, value, b = split_bin
    p, q = load_binary(whole), load_binary(path)
    assert len(q.bundles) == len(p.bundles) + 1
    mine = [bi for bi in range(len(q.bundles)) if to_bundle(q, bi).sink == b.sink
            and q.edges[int(q.bundles[bi]["edge"])].value == value]
    assert len(mine) == 2
    assert [int(q.bundles[bi]["lane0"]) for bi in mine] == [0, b.lanes // 2]
    assert {int(q.bundles[bi]["sink_lanes"]) for bi in mine} == {b.lanes}
    ki = q.kernel_index(b.sink)
    dq = deliveries(q)[ki][value]
    dp = deliveries(p)[ki][value]
    assert dq.lanes == dp.lanes == b.lanes  # one delivery, lanes numbered as the sink's
    assert (dq.lane_at == dp.lane_at).all() and (dq.boxes == dp.boxes).all()
    x = random_inputs(p, 0)
    got, want = simulate(q, x), simulate(p, x)
    assert got.kernel_stats[b.sink]["forwarded_pes"] == 0
    for name, v in want.outputs.items():
        assert np.array_equal(got.outputs[name], v)


def _ribbons(q, value: str, sink: str) -> list[int]:  # noqa: ANN001
    return [bi for bi in range(len(q.bundles)) if to_bundle(q, bi).sink == sink
            and q.edges[int(q.bundles[bi]["edge"])].value == value]


def test_loader_names_a_missing_doubled_or_crowded_lane(split_bin) -> None:  # noqa: ANN001
    _, path, value, b = split_bin
    q = load_binary(path)
    first, second = _ribbons(q, value, b.sink)
    half = b.lanes // 2
    bad = q.bundles.copy()
    bad["sink_lanes"][[first, second]] = b.lanes + 1
    with pytest.raises(FormatError, match=rf"lane {b.lanes} of %{value} into '{b.sink}' is "
                                          r"carried by no bundle"):
        check_records(replace(q, bundles=bad))
    bad = q.bundles.copy()
    bad["lane0"][second] = half - 1
    with pytest.raises(FormatError, match=rf"lane {half - 1} of %{value} into '{b.sink}' is "
                                          rf"carried twice: by bundles #{first} and #{second}"):
        check_records(replace(q, bundles=bad))
    # the second ribbon's path moved onto the first's rows: lanes of the cut land twice
    pts = q.points.copy()
    a, n = int(q.bundles["point0"][second]), int(q.bundles["npoints"][second])
    pts[a:a + n] = q.points[int(q.bundles["point0"][first]):][:n]
    assert int(q.bundles["npoints"][first]) == n
    with pytest.raises(FormatError, match=rf"lanes \d+ and \d+ of %{value} into "
                                          rf"'{b.sink}' both serve PE row"):
        check_records(replace(q, points=pts))


def test_a_dropped_lane_of_the_second_ribbon_raises_at_its_pe(split_bin) -> None:  # noqa: ANN001
    """Lane 0 of the second ribbon no longer taken into its PEs' cores (its
    routes run on, delivering nothing): a SimError names one of its PEs."""
    _, path, value, b = split_bin
    q = load_binary(path)
    second = _ribbons(q, value, b.sink)[1]
    r = q.routes.copy()
    row = np.flatnonzero((r["bundle"] == second) & (r["lane"] == 0)
                         & ((r["tx"] & PORT_BITS["RAMP"]) != 0))
    assert row.size
    r["tx"][row] &= ~np.uint8(PORT_BITS["RAMP"])
    pes = set(zip(r["x"][row].tolist(), r["y"][row].tolist(), strict=True))
    with pytest.raises(SimError, match=r"lane 0 of .* never reaches 'k\d+'; it ends at PE "
                                       r"\(\d+, \d+\)|PE \(\d+, \d+\) .*never arrived there "
                                       r".*the PE holds no lane") as err:
        simulate(replace(q, routes=r), random_inputs(q, 0))
    x, y = (int(v) for v in str(err.value).split("PE (")[1].split(")")[0].split(", "))
    assert (x, y) in pes


def test_swapped_ribbons_raise_at_a_pe_of_the_sink(split_bin) -> None:  # noqa: ANN001
    """Each ribbon carrying the other's boxes (their slice records swapped):
    the boxes still cover the value, so the loader takes it, but a PE
    reads rows its lane does not carry."""
    _, path, value, b = split_bin
    if b.lanes % 2:
        pytest.skip("the cut's lanes split unevenly")
    q = load_binary(path)
    first, second = _ribbons(q, value, b.sink)
    bad = q.bundles.copy()
    bad["slice0"][first], bad["slice0"][second] = (q.bundles["slice0"][second],
                                                   q.bundles["slice0"][first])
    q2 = replace(q, bundles=bad)
    check_records(q2)
    k = q.kernels[q.kernel_index(b.sink)]
    with pytest.raises(SimError, match=rf"kernel '{b.sink}' .*PE \(\d+, \d+\) .*never "
                                       rf"arrived there \(lane \d+ of edge .*; the PE holds "
                                       r"lane \d+'s box"):
        simulate(q2, random_inputs(q, 0))
    assert k.name == b.sink


def test_ribbon_records_of_a_one_bundle_binary(split_bin) -> None:  # noqa: ANN001
    whole, _, _, _ = split_bin
    p = load_binary(whole)
    b = p.bundles
    one = b["sink_lanes"] == b["lanes"]  # a bundle carrying every lane of its cut
    assert one.any() and (b["lane0"][one] == 0).all()
    # the router's own ribbons (a cut it left flat, routed as runs of its lanes): each
    # a run inside its cut's lanes
    assert (b["lane0"][~one] + b["lanes"][~one] <= b["sink_lanes"][~one]).all()


# --- the router's ribbons ------------------------------------------------------------------
def _request(S: int, R: int, k: int, gap: int, below: int = 0):  # noqa: ANN202
    """A cut of R sink rows at pitch k (R/k lanes) from an output side of S
    rows starting `below` rows under the sink's first, `gap` free columns
    between them."""
    from wsec.ir.graph import Rect
    from wsec.passes.route_bundles import Port, Request

    src = Port("p", (4, below), (0, 1), S, (1, 0), 0, Rect(0, below, 5, S))
    x = 5 + gap
    dst = Port("s", (x, 0), (0, 1), R, (1, 0), 5, Rect(x, 0, 6, R))
    r = Request(0, "s", src, dst, 1000, cut_rows=R, sink_rows=R, numel=1000)
    r.cut_pitch, r.src_pitch, r.lanes = k, 1, R // k
    return r


def test_ribbons_need_the_columns_the_placer_opens() -> None:
    from wsec.ir.lanes import check, expand
    from wsec.passes.route_ribbons import bundles_for, columns

    S, R, k = 112, 128, 4
    need = columns(R // k, k, S, 0)
    assert 0 < need < R // k  # fewer columns than lanes: one bundle's corner would need 32
    assert bundles_for(_request(S, R, k, need - 1)) is None
    got = bundles_for(_request(S, R, k, need))
    assert got and len(got) > 1 and sum(b.lanes for b in got) == R // k
    rows, pes = [], []
    for b in got:
        check(b)
        assert b.cut == "rows" and b.pitch == k and b.src_pitch == 1
        ex = expand(b)
        pes.append(ex.y * 1000 + ex.x)
        inside = ex.x >= 5 + need  # the sink's PEs: its rows from the landing PEs on
        assert ((ex.x > 4) | ~inside).all() and (ex.x >= 4).all()
        rows.append(np.unique(ex.y[inside]))
    at = np.concatenate(pes)
    assert np.unique(at).size == at.size  # PE-disjoint: one color holds them all
    served = np.concatenate(rows)
    assert sorted(served.tolist()) == list(range(R))  # every row of the sink once


def test_ribbons_turn_the_other_way_where_the_sink_lies_lower() -> None:
    from wsec.passes.route_ribbons import bundles_for

    # the source side's rows end where the sink's do: the ribbons run down
    got = bundles_for(_request(112, 128, 4, 40, below=16))
    assert got is not None
    assert all(b.path[1][1] > b.path[2][1] for b in got)  # each turns down at its corner


def test_ribbons_turn_both_ways_where_the_sink_reaches_past_both_ends() -> None:
    """ShuffleNet's 4-group convs (672 rows) take a depthwise conv's 336-row
    side from its middle: no run of ribbons turning one way serves the rows
    below the side and those above it; split, the lower rows' ribbons turn
    down and the upper rows' up, in the same columns (their vertical runs
    lie on either side of the split)."""
    from wsec.ir.lanes import check, expand
    from wsec.passes.route_ribbons import best_plan, bundles_for, split_plan

    S, R, k, gap, below = 112, 256, 8, 12, 72
    L = R // k
    assert best_plan(L, k, below, below + S - 1, 0, 4, 5 + gap) is None
    assert best_plan(L, k, -(below + S - 1), -below, -(R - 1), 4, 5 + gap) is None
    b, t, down, up = split_plan(L, k, below, below + S - 1, 0, 4, 5 + gap)
    assert 0 < b < L and below <= t < below + S
    got = bundles_for(_request(S, R, k, gap, below=below))
    assert got is not None and sum(x.lanes for x in got) == L
    turns = [x.path[2][1] - x.path[1][1] for x in got]
    assert any(d < 0 for d in turns) and any(d > 0 for d in turns)  # down and up
    rows, pes = [], []
    for x in got:
        check(x)
        assert x.cut == "rows" and x.pitch == k and x.src_pitch == 1
        ex = expand(x)
        assert (ex.x >= 4).all() and (ex.x < 5 + gap + 6).all()
        at = ex.x < 5  # on the source side: the lanes' first PEs, its output column
        assert (ex.y[at] >= below).all() and (ex.y[at] < below + S).all()
        pes.append(ex.y * 1000 + ex.x)
        rows.append(np.unique(ex.y[ex.x >= 5 + gap]))
    at = np.concatenate(pes)
    assert np.unique(at).size == at.size  # PE-disjoint: one color holds them all
    assert sorted(np.concatenate(rows).tolist()) == list(range(R))  # every row once
    # without the columns the lower rows' ribbons need, none
    assert bundles_for(_request(S, R, k, 5, below=below)) is None


@pytest.mark.slow
def test_densenet121_routes_its_widening_cuts_as_ribbons(tmp_path) -> None:  # noqa: ANN001
    """DenseNet-121's dense-block convs take more rows than their producers'
    sides, with 22 columns between them: one bundle's corner needs a column
    per lane (128), ribbons 22. Their sinks read only what their lanes
    brought."""
    from conftest import compiled_light

    m = compiled_light("densenet121").module
    assert m.attrs["ribbons"][0] >= 3
    sinks = {b.sink for e in m.edges for b in e.bundles or ()
             if sum(o.sink == b.sink for o in e.bundles) > 1}
    assert len(sinks) == m.attrs["ribbons"][0]
    path = str(tmp_path / "d.bin")
    write_binary(m, path)
    p = load_binary(path)
    res = simulate(p, random_inputs(p, 0))
    assert all(res.kernel_stats[s]["forwarded_pes"] == 0 for s in sinks)
