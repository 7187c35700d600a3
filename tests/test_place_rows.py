"""Producers raised to their consumers' rows (wsec.passes.place_rows), on
hand-built modules of the test-only 'box' and 'rows' kinds."""

from __future__ import annotations

import fake_kinds as fk
import numpy as np
import pytest
from wsec.ir.graph import Module
from wsec.ir.kernel_kind import Choice
from wsec.ir.sizing import shapes_at_width
from wsec.ir.target import get_target
from wsec.passes import place_rows
from wsec.passes.base import PassContext
from wsec.passes.place import Place
from wsec.passes.place_rows import (
    RAISE_FILL,
    _passed,
    open_corners,
    raise_producers,
    widening_lanes,
)
from wsec.passes.route_bundles import pick_pitch

T = 1000  # every box shape of the tests meets this time


def _module(extra: bool = False, heavy: bool = False, skip: int = 8) -> Module:
    """host -> p (box 1x2) -> s (rows 4x6) -> host; with `extra` a skip edge
    a -> z around them, whose value is `heavy` or light (`skip` elements)."""
    m = fk.sized("rows_chain")
    m.add_value("x", fk.TensorType(fk.F32, (1, 64)))
    m.inputs = ["x"]
    outs = []
    if extra:
        fk.box(m, "a", ["x"], "va", 1, 6, out_shape=(1, 4096 if heavy else skip))
    fk.box(m, "p", ["x"], "vp", 1, 2)
    fk.rows(m, "s", ["vp"], "vs", 4, 6)
    outs.append("vs")
    if extra:
        fk.box(m, "z", ["va"], "vz", 2, 6)
        outs.append("vz")
    m.outputs = outs
    return fk.connect(m)


def _choice(k) -> Choice:
    return Choice(tuple(sorted(k.knobs.items())), k.knobs["w"], k.knobs["h"],
                  k.cost["cycles"], k.cost["sram"])


def _raise(m: Module, rects: dict[str, tuple[int, int, int, int]], cap: int = T
           ) -> tuple[int, dict[str, tuple[int, int, int, int]], dict[str, Choice | None]]:
    t = get_target("wse2", (16, 16))
    ks = list(m.kernels())
    choices: list[Choice | None] = [_choice(k) for k in ks]
    rs = [rects[k.name] for k in ks]
    got = raise_producers(m, ks, list(range(len(ks))), choices, rs, [False] * len(ks),
                          16, 16, lambda i, w: shapes_at_width(ks[i], t, T, w), cap, 4)
    return (got, {k.name: r for k, r in zip(ks, rs, strict=True)},
            {k.name: c for k, c in zip(ks, choices, strict=True)})


def test_shapes_at_width_lists_taller_shapes() -> None:
    m = _module()
    p = m.kernel("p")
    hs = [c.h for c in shapes_at_width(p, get_target("wse2", (16, 16)), T, 1)]
    assert hs == list(range(1, 9))  # the box kind's heights at width 1, lowest first
    assert all(c.w == 1 for c in shapes_at_width(p, get_target("wse2", (16, 16)), T, 1))


def test_producer_raised_to_its_consumers_rows() -> None:
    m = _module()
    n, rects, choices = _raise(m, {"p": (0, 0, 1, 2), "s": (1, 0, 4, 6)})
    assert n == 1
    assert rects["p"] == (0, 0, 1, 6)  # width and position kept, rows as the sink's
    assert choices["p"] is not None and choices["p"].knob_dict() == {"w": 1, "h": 6}
    assert rects["s"] == (1, 0, 4, 6)


def test_no_raise_without_room_or_contact() -> None:
    m = _module(extra=True)
    # a kernel right above p: p can grow by 2 rows, not to 6
    n, rects, _ = _raise(m, {"a": (0, 4, 1, 6), "p": (0, 0, 1, 2), "s": (1, 0, 4, 6),
                             "z": (8, 0, 2, 6)})
    assert n == 0 and rects["p"] == (0, 0, 1, 2)
    # p and s apart: their lanes have corners to widen at, p stays
    n, rects, _ = _raise(m, {"a": (12, 8, 1, 6), "p": (0, 0, 1, 2), "s": (3, 0, 4, 6),
                             "z": (14, 8, 2, 6)})
    assert n == 0 and rects["p"] == (0, 0, 1, 2)


def test_no_raise_under_a_heavy_passing_bundle() -> None:
    # a -> z runs straight over s's rows; heavy, it needs most of them
    lay = {"a": (0, 0, 1, 6), "p": (1, 0, 1, 2), "s": (2, 0, 4, 6), "z": (6, 0, 2, 6)}
    n, rects, _ = _raise(_module(extra=True, heavy=True), lay, cap=100)
    assert n == 0 and rects["p"] == (1, 0, 1, 2)
    n, rects, _ = _raise(_module(extra=True, heavy=False), lay, cap=100)
    assert n == 1 and rects["p"] == (1, 0, 1, 6)


def test_raise_beside_a_one_lane_bundle_on_a_row_the_ends_share() -> None:
    """a -> z needs one lane at the link capacity (80 wavelets, cap 100) and
    its ends share one row with s: it needs all the rows it can run straight
    on, but one of s's six, so s's producer still rises (a transformer's
    residual along its shelf: wsec.passes.place_rows._passed `own_rows`).
    Needing more than a quarter of s's rows (7 lanes), it keeps p low."""
    lay = {"a": (0, 0, 1, 1), "p": (1, 0, 1, 2), "s": (2, 0, 4, 6), "z": (6, 0, 2, 1)}
    n, rects, _ = _raise(_module(extra=True, skip=80), lay, cap=100)
    assert n == 1 and rects["p"] == (1, 0, 1, 6)
    n, rects, _ = _raise(_module(extra=True, skip=700), lay, cap=100)
    assert n == 0 and rects["p"] == (1, 0, 1, 2)


def test_passed_counts_the_kernels_own_rows_only_where_asked() -> None:
    m = _module(extra=True, skip=80)
    ks = list(m.kernels())
    lay = {"a": (0, 0, 1, 1), "p": (1, 0, 1, 2), "s": (2, 0, 4, 6), "z": (6, 0, 2, 1)}
    rects = [lay[k.name] for k in ks]
    index = {k.name: i for i, k in enumerate(ks)}
    rot = [False] * len(ks)
    assert _passed(m, index, rects, rot, 100, 4)[index["s"]]  # one lane > 1/4 of one row
    assert not _passed(m, index, rects, rot, 100, 4, own_rows=True)[index["s"]]


def _chain3() -> Module:
    """host -> q (box) -> p (rows) -> s (rows) -> host, and a box a reading
    x (to sit right above q: q cannot grow)."""
    m = fk.sized("rows_chain3")
    m.add_value("x", fk.TensorType(fk.F32, (1, 64)))
    m.inputs = ["x"]
    fk.box(m, "a", ["x"], "va", 1, 2)
    fk.box(m, "q", ["x"], "vq", 1, 2)
    fk.rows(m, "p", ["vq"], "vp", 1, 4)
    fk.rows(m, "s", ["vp"], "vs", 4, 6)
    m.outputs = ["va", "vs"]
    return fk.connect(m)


def test_raise_past_a_producer_already_short() -> None:
    """p's rows cut q's output, but q (2 rows, blocked above) already falls
    short of p's 4: its lanes cannot land uniform whether p is raised or
    not, so p still rises to s's 6 rows (s's lanes from p land uniform)."""
    n, rects, choices = _raise(_chain3(), {"q": (0, 0, 1, 2), "a": (0, 2, 1, 2),
                                           "p": (1, 0, 1, 4), "s": (2, 0, 4, 6)})
    assert n == 1
    assert rects["p"] == (1, 0, 1, 6) and rects["q"] == (0, 0, 1, 2)
    assert choices["p"] is not None and choices["p"].knob_dict() == {"w": 1, "h": 6}


def test_no_raise_past_a_short_producer_for_heavy_rows() -> None:
    """The same raise where each of s's rows reads more than half a link's
    capacity (cap 10 wavelets, a row's box 6): its uniform lanes would
    crowd the rows' RAMPs, so p stays (main's rule: its producer q falls
    short)."""
    n, rects, _ = _raise(_chain3(), {"q": (0, 0, 1, 2), "a": (0, 2, 1, 2),
                                     "p": (1, 0, 1, 4), "s": (2, 0, 4, 6)}, cap=10)
    assert n == 0 and rects["p"] == (1, 0, 1, 4)


def test_no_raise_past_a_producer_that_feeds_it_uniform() -> None:
    """q's 4 rows feed p's 4 uniform; q cannot grow, so raising p to 6
    would lose that cut: p stays."""
    n, rects, _ = _raise(_chain3(), {"q": (0, 0, 1, 4), "a": (0, 4, 1, 2),
                                     "p": (1, 0, 1, 4), "s": (2, 0, 4, 6)})
    assert n == 0 and rects["p"] == (1, 0, 1, 4)


def _wide_producer() -> Module:
    """host -> p (box 8x2) -> s (rows 1x6) -> host, and a box a reading x
    (placed to fill the grid or not)."""
    m = fk.sized("rows_wide")
    m.add_value("x", fk.TensorType(fk.F32, (1, 64)))
    m.inputs = ["x"]
    fk.box(m, "a", ["x"], "va", 8, 9)
    fk.box(m, "p", ["x"], "vp", 8, 2)
    fk.rows(m, "s", ["vp"], "vs", 1, 6)
    m.outputs = ["va", "vs"]
    return fk.connect(m)


def test_a_raise_adding_more_pes_than_it_feeds_only_where_the_wafer_has_room() -> None:
    """Raising p (8 wide) to s's 6 rows adds 32 PEs to feed s's 6 uniform.
    On a grid with room it rises; where the PEs held would pass
    RAISE_FILL of the grid (a and b fill the rest: 214 + 32 of 256 PEs) the
    raise would take PEs the corners and slides move kernels onto for
    less than it adds, so p stays."""
    n, rects, _ = _raise(_wide_producer(), {"a": (8, 8, 8, 9), "p": (0, 0, 8, 2),
                                            "s": (8, 0, 1, 6)})
    assert n == 1 and rects["p"] == (0, 0, 8, 6)
    m = _wide_producer()
    fk.box(m, "b", ["x"], "vb", 7, 16)
    n, rects, _ = _raise(m, {"a": (0, 6, 8, 10), "b": (9, 0, 7, 16), "p": (0, 0, 8, 2),
                             "s": (8, 0, 1, 6)})
    assert 22 + 80 + 112 + 32 > RAISE_FILL * 256
    assert n == 0 and rects["p"] == (0, 0, 8, 2)


def _widen(rects: dict[str, tuple[int, int, int, int]], cap: int = 20
           ) -> tuple[int, dict, dict]:
    """raise_producers on _module(extra=True) where p's shapes are 1 wide
    at most 3 rows high and 2 wide up to 6 (as a conv whose taller shapes
    of its width split its rows too finely for the time: Inception-v1's
    k2). At the link capacity `cap` (wavelets per sample) 20, p's 64
    wavelets need 4 lanes, which no pitch of s's 6 rows lands uniform from
    p's 2 rows; at 1000 one lane does (pitch 6)."""
    m = _module(extra=True)
    t = get_target("wse2", (16, 16))
    ks = list(m.kernels())
    choices: list[Choice | None] = [_choice(k) for k in ks]

    def taller(i: int, w: int) -> list[Choice]:
        got = shapes_at_width(ks[i], t, T, w)
        if ks[i].name == "p":
            return [c for c in got if c.h <= (3 if w == 1 else 6)]
        return got

    rs = [rects[k.name] for k in ks]
    n = raise_producers(m, ks, list(range(len(ks))), choices, rs, [False] * len(ks),
                        16, 16, taller, cap, 4)
    return (n, {k.name: r for k, r in zip(ks, rs, strict=True)},
            {k.name: c for k, c in zip(ks, choices, strict=True)})


def test_a_producer_widened_where_its_width_has_no_shape_as_tall() -> None:
    """p (1 wide) has no shape of 6 rows in the time, 2 wide it has: it
    takes that, and s and the kernels beyond it on the shelf move one
    column along; a kernel on another shelf (base) stays."""
    assert place_rows.WIDEN >= 1
    n, rects, choices = _widen({"p": (0, 0, 1, 2), "s": (1, 0, 4, 6), "a": (5, 0, 1, 6),
                                "z": (6, 8, 2, 6)})
    assert n == 1 and choices["p"] is not None and choices["p"].knob_dict() == {"w": 2, "h": 6}
    assert rects == {"p": (0, 0, 2, 6), "s": (2, 0, 4, 6), "a": (6, 0, 1, 6),
                     "z": (6, 8, 2, 6)}


def test_no_widening_where_the_consumers_lanes_land_already() -> None:
    """The same layout where one lane from p's 2 rows carries all of s's
    input (pitch 6): a wider p would move the shelf along and feed s
    nothing it lacks, so p stays (measured: DenseNet-121's norms widened
    so for convs fed already, and the corners its convs needed lost their
    columns)."""
    lay = {"p": (0, 0, 1, 2), "s": (1, 0, 4, 6), "a": (5, 0, 1, 6), "z": (6, 8, 2, 6)}
    n, rects, choices = _widen(lay, cap=T)
    assert n == 0 and rects == lay and choices["p"].knob_dict() == {"w": 1, "h": 2}


def test_no_widening_where_the_shelf_cannot_move_along() -> None:
    """The same, the last kernel of the shelf at the grid's edge: p stays."""
    lay = {"p": (0, 0, 1, 2), "s": (1, 0, 4, 6), "a": (5, 0, 1, 6), "z": (14, 0, 2, 6)}
    n, rects, _ = _widen(lay)
    assert n == 0 and rects == lay


def test_place_pass_gives_the_producer_the_consumers_rows() -> None:
    """Through the placer: p's staircase shape at the bottleneck is 1x2 (the
    narrowest), the flow shelf puts it beside s, which a grid 5 PEs wide
    makes 4 rows tall at least; p leaves 1 x s's rows."""
    m = fk.sized("rows_place")
    m.add_value("x", fk.TensorType(fk.F32, (1, 64)))
    m.inputs = ["x"]
    fk.box(m, "p", ["x"], "vp", 1, 2, work=200)
    fk.rows(m, "s", ["vp"], "vs", 2, 8, work=1600)
    m.outputs = ["vs"]
    fk.connect(m)
    Place().run(m, PassContext(get_target("wse2", (5, 16))))
    p, s = m.kernel("p"), m.kernel("s")
    rows = s.rect.w if s.rotated else s.rect.h
    assert rows > 2 and (p.rect.w if p.rotated else p.rect.h) == rows
    assert p.knobs == {"w": 1, "h": rows}
    assert max(k.cost["cycles"] for k in m.kernels()) == m.attrs["delta_t"] == 100


def _corners(m: Module, rects: dict[str, tuple[int, int, int, int]], width: int = 16
             ) -> tuple[int, dict[str, tuple[int, int, int, int]]]:
    ks = list(m.kernels())
    choices: list[Choice | None] = [_choice(k) for k in ks]
    rs = [rects[k.name] for k in ks]
    got = open_corners(m, ks, list(range(len(ks))), choices, rs, [False] * len(ks),
                       width, 16, T, 4)
    return got, {k.name: r for k, r in zip(ks, rs, strict=True)}


def _own_rows(rows: int, cols: int = 8) -> np.ndarray:
    """Boxes of a (rows, cols) value whose PE row i reads row i."""
    i = np.arange(rows)
    return np.stack([np.stack([i, np.zeros_like(i)], 1),
                     np.stack([i + 1, np.full_like(i, cols)], 1)], 1)


def test_widening_lanes() -> None:
    # 6 rows from a side of 2: pitch 3 (2 lanes of 24 wavelets) widens, pitch 6 is uniform
    assert widening_lanes(_own_rows(6), 2, 48, 48, 1000) == 2
    assert widening_lanes(_own_rows(6), 6, 48, 48, 1000) == 0  # uniform at pitch 1
    # a link of 20 wavelets needs 3 lanes: 2 lanes of 24 are too heavy, nothing widens
    assert widening_lanes(_own_rows(6), 2, 48, 48, 20) == 0
    # 64 rows from 48: pitch 2 (32 lanes) is light enough, and the finest fair one
    assert widening_lanes(_own_rows(64), 48, 512, 512, 40) == 32


def test_open_corners_leaves_a_gap_for_the_widening_lanes() -> None:
    # p (2 rows) right beside s (6 rows, cut per row): s and everything beyond it
    # on the shelf move 2 * 2 + 2 columns on, p stays; z on another shelf stays
    m = _module(extra=True)
    n, rects = _corners(m, {"a": (0, 8, 1, 6), "p": (0, 0, 1, 2), "s": (1, 0, 4, 6),
                            "z": (5, 8, 2, 6)})
    assert n == 1
    assert rects["p"] == (0, 0, 1, 2) and rects["s"] == (7, 0, 4, 6)
    assert rects["a"] == (0, 8, 1, 6) and rects["z"] == (5, 8, 2, 6)


def test_open_corners_only_with_room_and_contact() -> None:
    m = _module()
    # the grid ends 3 columns past s: no room for one bundle's corner (6 columns),
    # room for its ribbons' (route_ribbons: 2 lanes turning in a column each)
    n, rects = _corners(m, {"p": (0, 0, 1, 2), "s": (1, 0, 4, 6)}, width=8)
    assert n == 1 and rects["s"] == (3, 0, 4, 6)
    # the grid ends at s: no room for either, nothing moves
    n, rects = _corners(m, {"p": (0, 0, 1, 2), "s": (1, 0, 4, 6)}, width=5)
    assert n == 0 and rects["s"] == (1, 0, 4, 6)
    # p as tall as s: uniform lanes, no gap
    n, rects = _corners(m, {"p": (0, 0, 1, 6), "s": (1, 0, 4, 6)})
    assert n == 0 and rects["s"] == (1, 0, 4, 6)
    # apart already: lanes have corners
    n, rects = _corners(m, {"p": (0, 0, 1, 2), "s": (3, 0, 4, 6)})
    assert n == 0 and rects["s"] == (3, 0, 4, 6)
    # a kernel on the gap's far side, in the way of the moved s
    m = _module(extra=True)
    n, rects = _corners(m, {"a": (0, 8, 1, 6), "p": (0, 0, 1, 2), "s": (1, 0, 4, 6),
                            "z": (5, 2, 11, 6)})
    assert n == 0 and rects["s"] == (1, 0, 4, 6)


def test_open_corners_beside_a_sibling() -> None:
    """p (2 rows) feeds s right beside it and t beyond s on the same rows: t's
    bundle of p's value passes s's rows, but it is s's own input (the same
    value, one multicast where both run flat), not a bundle a cut of s would
    have to share its rows with, so s still gets its corner (t moves along)."""
    m = fk.sized("rows_siblings")
    m.add_value("x", fk.TensorType(fk.F32, (1, 64)))
    m.inputs = ["x"]
    fk.box(m, "p", ["x"], "vp", 1, 2)
    fk.rows(m, "s", ["vp"], "vs", 2, 6)
    fk.rows(m, "t", ["vp"], "vt", 2, 6)
    m.outputs = ["vs", "vt"]
    fk.connect(m)
    lay = {"p": (0, 0, 1, 2), "s": (1, 0, 2, 6), "t": (3, 0, 2, 6)}
    n, rects = _corners(m, lay)
    assert n == 1
    assert rects["p"] == (0, 0, 1, 2) and rects["s"] == (7, 0, 2, 6)
    assert rects["t"] == (9, 0, 2, 6)
    # another value's heavy bundle to t passing s's rows (from q, below p): s stays
    fk.box(m, "q", ["x"], "vq", 1, 4, out_shape=(1, 8192))
    m.kernel("t").inputs.append("vq")
    m.edges.clear()
    fk.connect(m)
    n, rects = _corners(m, {**lay, "q": (0, 2, 1, 4)})
    assert n == 0 and rects["s"] == (1, 0, 2, 6)


def test_pick_pitch_is_the_rule_widening_lanes_follows() -> None:
    # 80 wavelets over 4 flat lanes: at most 20 per lane; pitch 1 (10) and 2 (20)
    # are that light, and both carry a fair share (LANE_SHARE 4 x 10 >= 20): the
    # finer wins
    assert pick_pitch({1: 10, 2: 20, 4: 40}, 8, 80, 4, 4, 0) == 1
    # a lane of 4 is not a fair share of 20: the next pitch
    assert pick_pitch({1: 4, 2: 10}, 8, 80, 4, 4, 0) == 2
    # one lane of 80: too heavy for 4 flat lanes, and 1 lane < the 4 wanted
    assert pick_pitch({8: 80}, 8, 80, 4, 4, 200) == 0
    # ... unless the capacity needs 1 lane and it takes at most half a link
    assert pick_pitch({8: 80}, 8, 80, 4, 1, 200) == 8
    assert pick_pitch({8: 80}, 8, 80, 4, 1, 150) == 0
    # the placer's gap follows the router's rule: 64 rows from 48, lanes of 16
    # wavelets (pitch 2) at a link of 40 (need 13 lanes, ask 17 or 39)
    boxes = _own_rows(64)
    assert widening_lanes(boxes, 48, 512, 512, 40) == 64 // pick_pitch(
        {2: 16, 4: 32, 8: 64, 16: 128}, 64, 512, 17, 13, 40)


def _tall_pairs(pairs: int, passing: bool = True) -> Module:
    """host -> p1 (box 1x48) -> s1 (rows 4x64) [-> p2 -> s2]: each s cuts its
    producer's 512 elements (256 wavelets) on 64 rows. At a link of 100
    wavelets, uniform lanes from 48 rows cannot land; widening, the router
    takes 32 lanes (pitch 2, 8 wavelets each: 66 columns for one bundle's
    corner, 16 as ribbons) and would take 16, 8 or 4 as ribbons (6, 3 or 2
    columns; 16, 32 or 64 wavelets a lane). Every kernel takes 100 cycles.
    With `passing`, a -> z: a bundle from a kernel behind the pairs on
    their rows to one beyond them off their rows (_PASSING places them)."""
    m = fk.sized("tall_pairs")
    m.add_value("x", fk.TensorType(fk.F32, (1, 512)))
    m.inputs = ["x"]
    src, outs = "x", []
    if passing:
        fk.box(m, "a", ["x"], "va", 1, 16, work=1600, out_shape=(1, 64))
        fk.box(m, "z", ["va"], "vz", 2, 8, work=1600, out_shape=(1, 64))
        outs.append("vz")
    for i in range(1, pairs + 1):
        fk.box(m, f"p{i}", [src], f"vp{i}", 1, 48, work=4800, out_shape=(1, 512))
        fk.rows(m, f"s{i}", [f"vp{i}"], f"vs{i}", 4, 64, work=25600, out_shape=(1, 512))
        src = f"vs{i}"
    m.outputs = [src, *outs]
    return fk.connect(m)


def _open(m: Module, rects: dict[str, tuple[int, int, int, int]], width: int
          ) -> dict[str, tuple[int, int, int, int]]:
    ks = list(m.kernels())
    rs = [(_PASSING | rects)[k.name] for k in ks]
    open_corners(m, ks, list(range(len(ks))), [_choice(k) for k in ks], rs, [False] * len(ks),
                 width, 72, 100, 4)
    return {k.name: r for k, r in zip(ks, rs, strict=True)}


# a below p1, on rows 48-64 of the shelf's; z above the shelf, at the grid's far end
_PASSING = {"a": (0, 48, 1, 16), "z": (-2, 64, 2, 8)}


def _at(rects: dict[str, tuple[int, int, int, int]], width: int
        ) -> dict[str, tuple[int, int, int, int]]:
    return rects | {"z": (width - 2, 64, 2, 8)}


def test_open_corners_widens_for_the_routers_lanes_where_a_bundle_passes() -> None:
    """Where one bundle's corner (66 columns) does not fit and a bundle
    passes the consumer's rows and turns off them (a -> z), the gap is the
    widest of the ribbons' for the router's own pitch (32 lanes, 16
    columns) or a coarser one that fits (16 lanes, 6; 8 lanes, 3), not the
    fewest columns (4 lanes, 2), whose lanes are the heaviest (measured:
    Inception-v1's k59 opened 3 columns for 8 ribbons of 2,912 wavelets,
    which overfilled a link of its rows beside two concatenation inputs
    passing them, and its 3,320 PEs read flat lanes; 19 columns, the
    router's 52 lanes, cut it). With no such bundle the fewest columns
    stand (measured: widened beside a skip along its own shelf, ResNet-50's
    k29 cost the router another conv's cut)."""
    pair = {"p1": (0, 0, 1, 48), "s1": (1, 0, 4, 64)}
    for width, x in ((21, 17), (16, 7), (8, 4)):
        assert _open(_tall_pairs(1), _at(pair, width), width)["s1"] == (x, 0, 4, 64)
    assert _open(_tall_pairs(1, passing=False), pair, 21)["s1"] == (3, 0, 4, 64)


def test_open_corners_hold_every_corners_columns_before_widening_one() -> None:
    """Two such pairs on one shelf, with room for both narrowest corners (2
    columns each) and 15 columns more: the first widens to 16 columns, the
    second to 3 with the one column left (widening the first before the
    second's corner was held would have left the second none: DenseNet-121
    has five convs' corners on one shelf)."""
    got = _open(_tall_pairs(2), _at({"p1": (0, 0, 1, 48), "s1": (1, 0, 4, 64),
                                     "p2": (5, 0, 1, 48), "s2": (6, 0, 4, 64)}, 29), 29)
    assert got["s1"][0] - 1 == 16 and got["p2"][0] == got["s1"][0] + 4
    assert got["s2"][0] - (got["p2"][0] + 1) == 3 and got["s2"][0] + 4 == 29


@pytest.mark.parametrize("width", [8, 16, 21])
def test_the_corner_opened_lets_the_route_cut(width: int) -> None:
    """Pass level: p1 right beside s1 (as a flow shelf packs them), the
    router can only route s1's input flat (a straight path cannot widen;
    its rows read what no lane brought); after open_corners, on a grid as
    wide as each corner of the test above needs, it cuts it (one widening
    bundle or ribbons, each lane carrying its rows' boxes)."""
    from wsec.ir.graph import Rect
    from wsec.passes.route import Route

    def routed(rects: dict[str, tuple[int, int, int, int]]) -> set[str]:
        m = _tall_pairs(1)
        for k in m.kernels():
            k.rect = Rect(*rects[k.name])
        m.properties.add("placed")
        Route().run(m, PassContext(get_target("wse2", (width, 72))))
        (e,) = [e for e in m.edges if e.value == "vp1"]
        return {b.cut for b in e.bundles or []}

    packed = _at(_PASSING | {"p1": (0, 0, 1, 48), "s1": (1, 0, 4, 64)}, width)
    assert routed(packed) == {""}
    assert routed(_open(_tall_pairs(1), packed, width)) == {"rows"}
