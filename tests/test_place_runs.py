"""Concatenation inputs facing the runs of rows that read them.

A concatenation's data movement reads each input on a run of its PE rows
(wsec.ir.kernels.read_span). Its cut lanes run straight only from a
source side that faces the run (route_bundles._runs_straight), so the
placer slides a source that does not along its shelf column
(wsec.passes.place_runs), and the router keeps such a cut wherever the
source faces its run, whatever slots a flat deal would have given it.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_concat_cut import concat_model
from wsec.driver import CompileOptions, compile_model
from wsec.ir.graph import Module
from wsec.ir.sizing import shapes_at_width
from wsec.ir.target import get_target
from wsec.passes.place_rows import raise_producers
from wsec.passes.place_runs import face_runs
from wsec.passes.route_bundles import Port, Request, _facing_runs, _parallel

W = H = 100


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> Module:
    """x -> three convs -> Concat -> conv: the concatenation (36 rows)
    reads each conv's output on a run of 12 rows, in order."""
    d = tmp_path_factory.mktemp("runs")
    concat_model(d / "m.onnx")
    return compile_model(str(d / "m.onnx"), CompileOptions()).module


def _layout(m: Module, heights: list[int]) -> tuple[list, list[tuple[int, int, int, int]]]:
    """The three sources at the foot of their columns (x 0, 8, 16) with
    `heights` rows, the concatenation at x 24 on 36 rows, the last conv
    beyond it: (kernels, rects)."""
    ks = list(m.kernels())
    kinds = [k.kind for k in ks]
    assert kinds == ["conv", "conv", "conv", "datamove", "conv"]
    assert ks[3].rect is not None and ks[3].rect.h == 36
    rects = [(8 * i, 0, 8, h) for i, h in enumerate(heights)] + [(24, 0, 1, 36), (25, 0, 4, 36)]
    return ks, rects


def test_sources_slide_along_their_column_to_face_their_runs(module: Module) -> None:
    ks, rects = _layout(module, [12, 12, 12])
    moved = face_runs(module, ks, range(5), [None] * 5, rects, [False] * 5, W, H)
    # r0 is read on rows 0-11 (faced already), r1 on 12-23, r2 on 24-35
    assert moved == 2
    assert rects[:3] == [(0, 0, 8, 12), (8, 12, 8, 12), (16, 24, 8, 12)]
    assert rects[3:] == [(24, 0, 1, 36), (25, 0, 4, 36)]  # the sink and beyond stay


def test_a_source_does_not_slide_onto_rows_a_bundle_passing_it_runs_on(
        module: Module) -> None:
    """k0 (36 rows from row 12, the last conv below it) does not face its
    run (rows 0-11) and cannot slide onto it, so its lanes land flat over
    the rows it shares with the concatenation (12-47), straight across
    k1's and k2's columns: a source slid onto any of them would have that
    bundle cross its PEs (ShuffleNet's pooling lost the router three conv
    cuts so), so none moves."""
    ks, rects = _layout(module, [36, 12, 12])
    rects[0], rects[4] = (0, 12, 8, 36), (0, 0, 8, 12)
    before = list(rects)
    assert face_runs(module, ks, range(5), [None] * 5, rects, [False] * 5, W, H) == 0
    assert rects == before


def test_a_bundle_into_its_faced_run_passes_on_the_runs_rows_only(module: Module) -> None:
    """k0's 36 rows face its run (rows 0-11): its cut lanes land on those
    rows only, so the bundle crosses k1's and k2's columns there and they
    slide onto their runs above it (Inception-v1's 5x5 branch passing the
    pooling branch's conv: 52 PEs proven per concatenation)."""
    ks, rects = _layout(module, [36, 12, 12])
    assert face_runs(module, ks, range(5), [None] * 5, rects, [False] * 5, W, H) == 2
    assert rects[:3] == [(0, 0, 8, 36), (8, 12, 8, 12), (16, 24, 8, 12)]


def test_a_source_does_not_slide_onto_another_kernel(module: Module) -> None:
    ks, rects = _layout(module, [12, 12, 12])
    rects[4] = (8, 12, 8, 30)  # the last conv stands where k1 would go (and k2's column is free)
    face_runs(module, ks, range(5), [None] * 5, rects, [False] * 5, W, H)
    assert rects[1] == (8, 0, 8, 12)


def test_a_source_too_short_for_its_run_stays(module: Module) -> None:
    """k1's 8 rows cannot face its 12-row run: sliding buys nothing; k2
    (12 rows) still slides onto its own."""
    ks, rects = _layout(module, [12, 8, 12])
    assert face_runs(module, ks, range(5), [None] * 5, rects, [False] * 5, W, H) == 1
    assert rects[1] == (8, 0, 8, 8) and rects[2] == (16, 24, 8, 12)


def _request(dst: Port, src_y: int, src_len: int, first: int, rows: int, cut: bool = True,
             edge: int = 0) -> Request:
    """From a side facing East at x 0 (slots y src_y..) onto sink side
    `dst`: a run cut of `rows` lanes from row `first`, or flat."""
    src = Port(f"a{edge}", (0, src_y), (0, 1), src_len, (1, 0))
    boxes = np.zeros((rows, 2, 1), np.int64)
    boxes[:, 1] = 1
    return Request(edge, "s", src, dst, rows, need=rows, lanes=rows, pairs=[(src, dst)],
                   cut_rows=rows, cut_first=first, sink_rows=12, row_boxes=boxes,
                   cut_pitch=1 if cut else 0)


def test_a_run_cut_facing_its_source_is_kept_where_a_flat_deal_lands_elsewhere() -> None:
    """The run (rows 8-11) faces its source (y 8-11), but the sink side's
    flat deal, in the order of the sources (this one first, the other's
    centre further along) and sized by their needs, would give it slots
    0-3: the lanes still run straight across, so the cut stays."""
    dst = Port("s", (5, 0), (0, 1), 12, (1, 0), 0)  # the 12-row sink side at x 5
    run = _request(dst, 8, 4, 8, 4)
    other = _request(dst, 20, 10, 0, 8, cut=False, edge=1)
    assert _parallel(run)
    _facing_runs([run, other], 1.0)
    assert run.share["dst"] == (0, 4)  # dealt before the other, not on its run
    assert run.cut_pitch == 1
    dst = Port("s", (5, 0), (0, 1), 12, (1, 0), 0)
    away = _request(dst, 0, 4, 8, 4)  # source y 0-3 does not face rows 8-11: flat
    _facing_runs([away, _request(dst, 20, 10, 0, 8, cut=False, edge=1)], 1.0)
    assert away.cut_pitch == 0


def branched_model(path: pathlib.Path) -> None:
    """x -> conv a -> three 1x1 convs b0, b1, b2 reading a -> Concat -> a
    1x1 conv: an Inception block's branches, each source fed by a kernel
    whose rows it would leave if it slid."""
    rng = np.random.default_rng(7)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (rng.standard_normal(shape) * 0.3).ravel().tolist())

    inits = [init("wa", 8, 3, 3, 3)] + [init(f"w{i}", 8, 8, 1, 1) for i in range(3)] \
        + [init("wo", 4, 24, 1, 1)]
    nodes = [helper.make_node("Conv", ["x", "wa"], ["ca"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["ca"], ["ra"])]
    for i in range(3):
        nodes += [helper.make_node("Conv", ["ra", f"w{i}"], [f"c{i}"]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
    nodes += [helper.make_node("Concat", ["r0", "r1", "r2"], ["cat"], axis=1),
              helper.make_node("Conv", ["cat", "wo"], ["y"])]
    g = helper.make_graph(nodes, "branches",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 12, 12])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def branched(tmp_path_factory: pytest.TempPathFactory) -> Module:
    d = tmp_path_factory.mktemp("branches")
    branched_model(d / "m.onnx")
    return compile_model(str(d / "m.onnx"), CompileOptions()).module


def _raise_runs(m: Module, rects: list[tuple[int, int, int, int]], rows: list[int]
                ) -> tuple[int, list[tuple[int, int, int, int]], list]:
    """raise_producers on the module's kernels at `rects`, kernel i at the
    shape of its width with rows[i] rows (the bottleneck time the module
    was sized at): (raised, rects, choices)."""
    t, target = int(m.attrs["delta_t"]), get_target("wse2")
    ks = list(m.kernels())

    def taller(i: int, w: int) -> list:
        return shapes_at_width(ks[i], target, t, w)

    choices = [next(c for c in taller(i, r[2]) if c.h == h)
               for i, (r, h) in enumerate(zip(rects, rows, strict=True))]
    rects = list(rects)
    n = raise_producers(m, ks, list(range(len(ks))), choices, rects, [False] * len(ks), W, H,
                        taller, t, target.wavelet_bytes)
    return n, rects, choices


# a (k0), the branches b0-b2 (k1-k3), the concatenation (k4), the last conv (k5)
BRANCHES = [(0, 0, 8, 36), (8, 0, 4, 36), (12, 0, 4, 36), (16, 0, 4, 36), (20, 0, 1, 72),
            (21, 0, 4, 72)]


def test_a_source_short_of_its_run_is_raised_to_cover_it(branched: Module) -> None:
    """The concatenation on 72 rows reads b0 on rows 0-23, b1 on 24-47, b2
    on 48-71. b2 (36 rows) cannot slide onto its run without leaving rows
    of a, which feeds it (place_runs), but raised to the shape of its width
    as tall as its run's end it faces it, a raised with it as its rows are
    cut by b2's. Then b1 can slide onto its run within a's rows, so it
    keeps its shape (place_runs slides it); b0 faces its run."""
    n, got, choices = _raise_runs(branched, BRANCHES, [36, 36, 36, 36, 72, 72])
    assert got[:4] == [(0, 0, 8, 72), (8, 0, 4, 36), (12, 0, 4, 36), (16, 0, 4, 72)]
    assert [c.h for c in choices[:4]] == [72, 36, 36, 72]
    assert got[4:] == BRANCHES[4:] and n == 2


def test_a_source_that_can_slide_onto_its_run_is_not_raised(module: Module) -> None:
    """The three convs read only the host: place_runs slides them onto
    their runs (no rows lost), so none is raised (PEs kept)."""
    rects = [(0, 0, 8, 36), (8, 0, 8, 36), (16, 0, 8, 36), (24, 0, 1, 72), (25, 0, 4, 72)]
    n, got, _ = _raise_runs(module, rects, [36, 36, 36, 72, 72])
    assert n == 0 and got == rects


def test_a_source_whose_producer_cannot_grow_is_not_raised(branched: Module) -> None:
    """a's column is held 4 rows above it (the last conv stands there):
    a cannot follow b1 or b2 to their runs' ends, and their lanes from a
    land uniform now, so neither rises."""
    rects = BRANCHES[:5] + [(0, 40, 4, 72)]
    n, got, _ = _raise_runs(branched, rects, [36, 36, 36, 36, 72, 72])
    assert n == 0 and got == rects


def test_a_raised_concatenations_sources_follow_its_runs(branched: Module) -> None:
    """The last conv (72 rows, touching the concatenation end to end) cuts
    the concatenation's output on every row: the concatenation rises from
    36 to 72 rows, which moves its runs to 0-23, 24-47 and 48-71, so b1
    and b2, which faced their runs at 36 rows, rise with it (and a with
    them)."""
    rects = BRANCHES[:4] + [(20, 0, 1, 36), (21, 0, 4, 72)]
    n, got, choices = _raise_runs(branched, rects, [36, 36, 36, 36, 36, 72])
    assert got[4] == (20, 0, 1, 72) and choices[4].h == 72
    assert got[:4] == [(0, 0, 8, 72), (8, 0, 4, 36), (12, 0, 4, 48), (16, 0, 4, 72)]
    assert [c.h for c in choices[:4]] == [72, 36, 48, 72]


def test_a_source_is_not_raised_onto_rows_a_passing_bundle_runs_on(branched: Module) -> None:
    """b0 stands on rows 36-71 (off its run, 0-23), so its lanes land flat
    over the rows it shares with the concatenation, straight across b1's
    and b2's columns: raised onto rows 36 and up, either would stand in
    that bundle (as a slide would, place_runs._crossed), so neither
    rises."""
    rects = [BRANCHES[0], (8, 36, 4, 36)] + BRANCHES[2:]
    n, got, _ = _raise_runs(branched, rects, [36, 36, 36, 36, 72, 72])
    assert n == 0 and got == rects
