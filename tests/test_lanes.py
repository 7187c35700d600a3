"""Lane expansion: `expand_many` (the router's batched pricing of sampled
lanes) gives exactly what `expand` gives bundle by bundle, in the same order,
for every shape the router draws up: straight, L, Z, U turns, a path of one
waypoint, reach, host ends, all lanes or a few, every pitch. A pitched
bundle's lanes run every pitch-th row, nest at corners at that scale, and
hand on along a spine to the rows between; they never share a PE. A
widening bundle's lanes run src_pitch apart until the last corner and
pitch apart after it, still PE-disjoint (checked by brute force against
the router's ribbon checks)."""

from __future__ import annotations

import numpy as np
import pytest
from wsec.ir.fabric import PORT_BITS
from wsec.ir.graph import HOST, Bundle
from wsec.ir.lanes import (
    LaneError,
    check,
    endpoints,
    expand,
    expand_many,
    held_bytes,
    offsets,
    segment_dirs,
    spine_dir,
    travel,
    union_boxes,
    waypoints,
)

BUNDLES = [
    Bundle("k", 0, 5, (0, 1), ((2, 3), (9, 3))),  # straight East
    Bundle("k", 0, 4, (0, 1), ((2, 3), (9, 3)), reach=3),
    Bundle("k", 0, 3, (1, 0), ((4, 2), (4, 9), (12, 9)), reach=2),  # an L
    Bundle("k", 0, 4, (0, -1), ((2, 10), (6, 10), (6, 4), (12, 4))),  # a Z
    Bundle("k", 0, 3, (0, 1), ((2, 3), (14, 3), (14, 12), (3, 12)), reach=1),  # a U
    Bundle("k", 0, 6, (0, 1), ((2, 3), (20, 3), (20, 13), (26, 13), (26, 20), (30, 20))),
    Bundle(HOST, 0, 4, (0, 1), ((0, 2),)),  # lanes that start where they land
]
PITCHED = [
    Bundle("k", 0, 4, (0, 1), ((2, 3), (9, 3)), reach=3, cut="rows", pitch=3),  # straight
    Bundle("k", 0, 3, (1, 0), ((4, 2), (4, 9), (22, 9)), reach=2, cut="rows", pitch=2),  # an L
    Bundle("k", 0, 3, (0, -1), ((2, 30), (12, 30), (12, 4), (25, 4)), reach=2, cut="rows",
           pitch=4),  # a Z
    Bundle("k", 0, 3, (0, 1), ((2, 3), (14, 3), (14, 20), (3, 20)), reach=1, cut="rows",
           pitch=3),  # a U: the spine runs back down the sink's side
    Bundle("k", 0, 2, (0, 1), ((2, 3), (20, 3), (20, 13), (36, 13), (36, 20), (50, 20)),
           reach=4, cut="rows", pitch=5),
]
# widening bundles: lanes side by side (source pitch 1 or 2) until the last corner, pitch after
WIDENED = [
    Bundle("k", 0, 4, (1, 0), ((4, 2), (4, 14), (22, 14)), reach=2, cut="rows", pitch=3,
           src_pitch=1),  # an L: the inner lanes turn pitch earlier a lane
    Bundle("k", 0, 5, (0, 1), ((2, 4), (12, 4), (12, 30), (25, 30)), reach=2, cut="rows",
           pitch=4, src_pitch=1),  # a Z: the outer lanes' jogs grow by pitch - 1 a lane
    Bundle("k", 0, 4, (0, -1), ((2, 40), (12, 40), (12, 4), (25, 4)), reach=1, cut="rows",
           pitch=3, src_pitch=1),  # the other flip: the outer lanes' jogs shrink
    Bundle("k", 0, 3, (0, 1), ((2, 3), (14, 3), (14, 30), (3, 30)), reach=1, cut="rows",
           pitch=5, src_pitch=2),  # a U
    Bundle("k", 0, 3, (0, 1), ((2, 3), (20, 3), (20, 13), (36, 13), (36, 20), (50, 20)),
           reach=4, cut="rows", pitch=6, src_pitch=1),
]
# lanes landing on owner rows: pitched, no spine (cut "owners")
OWNERS = [Bundle(b.sink, b.color, b.lanes, b.axis, b.path, b.reach, "owners", b.pitch,
                 b.src_pitch) for b in PITCHED + WIDENED[:2]]
BUNDLES += PITCHED + WIDENED + OWNERS


@pytest.mark.parametrize("hosts", [(False, False), (True, False), (False, True)])
def test_expand_many_is_expand_bundle_by_bundle(hosts: tuple[bool, bool]) -> None:
    items, want = [], []
    for b in BUNDLES:
        check(b)
        for lanes in (list(range(b.lanes)), [0, b.lanes - 1], [1]):
            items.append((b, *hosts, lanes))
            want.append(expand(b, *hosts, only=np.asarray(lanes)))
    got, counts = expand_many(items)
    assert counts.tolist() == [w.x.size for w in want]
    for f in ("x", "y", "rx", "tx", "lane"):
        assert np.array_equal(getattr(got, f), np.concatenate([getattr(w, f) for w in want])), f


def test_expand_many_of_nothing_and_of_a_backward_lane() -> None:
    got, counts = expand_many([])
    assert got.x.size == 0 and counts.size == 0
    # the inner lane of a too-tight turn would run backwards
    tight = Bundle("k", 0, 4, (0, 1), ((2, 3), (4, 3), (4, 9)))
    with pytest.raises(LaneError, match="backwards"):
        expand_many([(tight, False, False, [0, 3])])


@pytest.mark.parametrize("b", PITCHED, ids=lambda b: f"{len(b.path) - 1}seg-pitch{b.pitch}")
def test_pitched_lanes_nest_at_scale_and_hand_on_along_a_spine(b: Bundle) -> None:
    check(b)
    k, L = b.pitch, b.lanes
    pts = waypoints(b)
    one = waypoints(Bundle(b.sink, 0, L, b.axis, b.path, b.reach))  # the same shape at pitch 1
    # lane i at pitch k is lane i*k of the unpitched bundle: nested at every corner at scale k
    assert np.array_equal(pts[1] - pts[0], k * (one[1] - one[0]))
    ex = expand(b)
    pe = ex.x * 10_000 + ex.y
    assert np.unique(pe).size == pe.size  # no two entries of the bundle on one PE
    ramp = PORT_BITS["RAMP"]
    (sx, sy), (tx, ty) = spine_dir(b), travel(b.axis, segment_dirs(b.path))
    assert (sx, sy) == offsets(b.axis, segment_dirs(b.path))[-1]
    _, land = endpoints(b)
    for i in range(L):
        mine = ex.lane == i
        got = set(zip(ex.x[mine & ((ex.tx & ramp) != 0)].tolist(),
                      ex.y[mine & ((ex.tx & ramp) != 0)].tolist(), strict=True))
        # k rows from the landing PE along the spine, each row reach + 1 PEs long
        want = {(int(land[i, 0]) + s * sx + t * tx, int(land[i, 1]) + s * sy + t * ty)
                for s in range(k) for t in range(b.reach + 1)}
        assert got == want, i
        spine = [(int(land[i, 0]) + s * sx, int(land[i, 1]) + s * sy) for s in range(k)]
        for s, (x, y) in enumerate(spine):  # each sends on along the spine but the last
            e = np.flatnonzero(mine & (ex.x == x) & (ex.y == y))
            assert e.size == 1
            along = bool(ex.tx[e[0]] & _port(sx, sy))
            assert along == (s < k - 1), (i, s)
            assert bool(ex.tx[e[0]] & _port(tx, ty)) == (b.reach > 0)
    # the lanes' rows: L*k consecutive rows of the sink's side, one lane each
    rows = (land[:, None, :] + np.arange(k)[None, :, None] * np.array([sx, sy])).reshape(-1, 2)
    across = rows @ np.abs(np.array([sx, sy]))
    assert sorted(across.tolist()) == list(range(int(across.min()), int(across.min()) + L * k))


@pytest.mark.parametrize("b", OWNERS, ids=lambda b: f"{len(b.path) - 1}seg-pitch{b.pitch}")
def test_owner_lanes_deliver_to_their_landing_row_alone(b: Bundle) -> None:
    check(b)
    assert b.spine == 0
    k, L = b.pitch, b.lanes
    ex = expand(b)
    pe = ex.x * 10_000 + ex.y
    assert np.unique(pe).size == pe.size  # PE-disjoint
    # the same lanes as the spined bundle's, less the spines and their rows
    spined = expand(Bundle(b.sink, 0, L, b.axis, b.path, b.reach, "rows", k, b.src_pitch))
    assert set(pe.tolist()) < set((spined.x * 10_000 + spined.y).tolist())
    ramp = PORT_BITS["RAMP"]
    (sx, sy), (tx, ty) = spine_dir(b), travel(b.axis, segment_dirs(b.path))
    _, land = endpoints(b)
    for i in range(L):
        mine = ex.lane == i
        core = mine & ((ex.tx & ramp) != 0)
        got = set(zip(ex.x[core].tolist(), ex.y[core].tolist(), strict=True))
        assert got == {(int(land[i, 0]) + t * tx, int(land[i, 1]) + t * ty)
                       for t in range(b.reach + 1)}, i
        e = np.flatnonzero(mine & (ex.x == land[i, 0]) & (ex.y == land[i, 1]))
        assert e.size == 1 and not ex.tx[e[0]] & _port(sx, sy)  # nothing handed on
    # landing rows every k-th along the sink's side, the rows between untouched
    across = land @ np.abs(np.array([sx, sy]))
    assert sorted(across.tolist()) == list(range(int(across.min()), int(across.min()) + L * k, k))
    rows = set((ex.x * abs(sx) + ex.y * abs(sy))[(ex.tx & ramp) != 0].tolist())
    assert rows == set(across.tolist())


def test_a_cut_is_rows_owners_halo_or_none() -> None:
    with pytest.raises(LaneError, match="'rows', 'owners', 'halo' or none"):
        check(Bundle("k", 0, 2, (0, 1), ((2, 3), (9, 3)), cut="halves"))
    assert Bundle("k", 0, 2, (0, 1), ((2, 3), (9, 3)), cut="rows", pitch=3).spine == 2
    assert Bundle("k", 0, 2, (0, 1), ((2, 3), (9, 3)), pitch=1).spine == 0


def _port(dx: int, dy: int) -> int:
    from wsec.ir.fabric import STEP

    return PORT_BITS[next(p for p, v in STEP.items() if v == (dx, dy))]


def test_pitch_must_be_positive_and_room_scales_with_it() -> None:
    with pytest.raises(LaneError, match="pitch must be >= 1, got 0"):
        check(Bundle("k", 0, 2, (0, 1), ((2, 3), (9, 3)), pitch=0))
    # an L that has room for 3 nested lanes at pitch 1 has none at pitch 4
    b = Bundle("k", 0, 3, (0, 1), ((0, 0), (5, 0), (5, 20)))
    check(b)
    with pytest.raises(LaneError, match="room for 3 nested lanes at pitch 4"):
        check(Bundle("k", 0, 3, (0, 1), ((0, 0), (5, 0), (5, 20)), pitch=4))


def test_union_boxes_bound_the_live_boxes_of_each_group() -> None:
    boxes = np.array([[[0, 0], [2, 4]], [[0, 4], [2, 8]],  # adjacent channel blocks: exact
                      [[1, 0], [3, 8]], [[0, 0], [0, 0]],  # an empty box does not count
                      [[0, 0], [0, 0]], [[0, 0], [0, 0]]])  # nothing read: empty
    got = union_boxes(boxes.reshape(3, 2, 2, 2))
    assert got.tolist() == [[[0, 0], [2, 8]], [[1, 0], [3, 8]], [[0, 0], [0, 0]]]


def test_held_bytes_is_the_busiest_rows_boxes_plus_the_uncut_shares() -> None:
    """A row's box reaches every PE of its row (4 wide here), so the busiest
    PE receives all of it, not a quarter; an uncut value spreads over all
    2 x 4 PEs; halo rows counted in every row that holds them."""
    boxes = np.array([[[0, 0], [3, 8]], [[2, 0], [5, 8]]])  # rows 0-2 and 2-4, all 8 channels
    assert held_bytes([(40, 4, boxes)], 4, 2) == 3 * 8 * 4
    assert held_bytes([(40, 4, boxes), (17, 2, None)], 4, 2) == 3 * 8 * 4 + 3 * 2
    assert held_bytes([(17, 2, None)], 4, 2) == 3 * 2
    assert held_bytes([], 4, 2) == 0


@pytest.mark.parametrize("b", WIDENED, ids=lambda b: f"{len(b.path) - 1}seg-widen{b.pitch}")
def test_widened_lanes_leave_side_by_side_and_land_at_pitch(b: Bundle) -> None:
    check(b)
    s, k, L = b.spacing, b.pitch, b.lanes
    dirs = segment_dirs(b.path)
    offs = [np.array(o) for o in offsets(b.axis, dirs)]
    pts = waypoints(b)
    for i in range(L):  # the waypoints of the geometry (wsec.ir.lanes docstring)
        sp = [s] * (len(dirs) - 1) + [k]
        assert (pts[i, 0] == np.array(b.path[0]) + i * sp[0] * offs[0]).all()
        for c in range(1, len(dirs)):
            want = np.array(b.path[c]) + i * (sp[c - 1] * offs[c - 1] + sp[c] * offs[c])
            assert (pts[i, c] == want).all(), (i, c)
        assert (pts[i, -1] == np.array(b.path[-1]) + i * k * offs[-1]).all()
    src, land = endpoints(b)
    assert (np.abs(np.diff(src, axis=0)).sum(axis=1) == s).all()  # side by side at the source
    assert (np.abs(np.diff(land, axis=0)).sum(axis=1) == k).all()  # pitch apart at the sink
    ex = expand(b)
    pe = ex.x * 10_000 + ex.y
    assert np.unique(pe).size == pe.size
    # the spines and rows: L*k consecutive rows, lane i's k from its landing PE
    ramp = PORT_BITS["RAMP"]
    (sx, sy), (tx, ty) = spine_dir(b), travel(b.axis, dirs)
    for i in range(L):
        mine = (ex.lane == i) & ((ex.tx & ramp) != 0)
        got = set(zip(ex.x[mine].tolist(), ex.y[mine].tolist(), strict=True))
        assert got == {(int(land[i, 0]) + j * sx + t * tx, int(land[i, 1]) + j * sy + t * ty)
                       for j in range(k) for t in range(b.reach + 1)}, i


def test_a_bundle_widens_only_at_a_corner_and_never_narrows() -> None:
    straight = Bundle("k", 0, 3, (0, 1), ((2, 3), (9, 3)), cut="rows", pitch=3, src_pitch=1)
    with pytest.raises(LaneError, match="no corner"):
        check(straight)
    with pytest.raises(LaneError, match="no corner"):
        check(Bundle(HOST, 0, 3, (0, 1), ((0, 3),), cut="rows", pitch=2, src_pitch=1))
    check(Bundle("k", 0, 3, (0, 1), ((2, 3), (9, 3)), cut="rows", pitch=3, src_pitch=3))
    with pytest.raises(LaneError, match="never narrow"):
        check(Bundle("k", 0, 3, (1, 0), ((4, 2), (4, 9), (22, 9)), cut="rows", pitch=2,
                     src_pitch=3))
    # a Z: the lanes jog side by side, so the room before the jog is one PE a lane
    tight = ((2, 3), (6, 3), (6, 12), (20, 12))
    check(Bundle("k", 0, 4, (0, 1), tight, cut="rows", pitch=3, src_pitch=1))
    with pytest.raises(LaneError, match="backwards"):  # uniform at pitch 3 it needs 10
        check(Bundle("k", 0, 4, (0, 1), tight, cut="rows", pitch=3))


def random_path(rng: np.random.Generator, fewest: int = 2) -> tuple[tuple[int, int], ...]:
    """Waypoints of 1-5 random axis-aligned segments, each turning 90 degrees
    from the last (at least `fewest` of them)."""
    p = [(int(rng.integers(-30, 31)), int(rng.integers(-30, 31)))]
    horiz = bool(rng.integers(2))
    for _ in range(int(rng.integers(fewest, 6))):
        x, y = p[-1]
        d = int(rng.choice([-1, 1])) * int(rng.integers(1, 31))
        p.append((x + d, y) if horiz else (x, y + d))
        horiz = not horiz
    return tuple(p)


def test_nested_lanes_are_pe_disjoint_at_any_spacings_brute_force() -> None:
    """Over many random shapes, lane counts, pitches and source pitches:
    whenever the router's checks pass (each outer lane simple, the ribbon
    between them simple: route_bundles._crosses, _ribbon_simple), no two
    lanes' paths share a PE. (Spines and rows past the landing line are
    _folds' to check, from the expansion.)"""
    from wsec.passes.route_bundles import _crosses, _ribbon_simple

    rng = np.random.default_rng(12)
    passed = {True: 0, False: 0}
    for _ in range(2500):
        path = random_path(rng)
        d0 = segment_dirs(path)[0]
        axis = (d0[1], d0[0]) if rng.integers(2) else (-d0[1], -d0[0])
        k = int(rng.integers(1, 7))
        s = k if rng.integers(2) else int(rng.integers(1, k + 1))
        b = Bundle("k", 0, int(rng.integers(1, 9)), axis, path, 0, "rows", k, s)
        try:
            check(b)
        except LaneError:
            continue
        pts = waypoints(b)
        first = [tuple(int(v) for v in q) for q in pts[0]]
        last = [tuple(int(v) for v in q) for q in pts[-1]]
        if (_crosses(first, first, True) or _crosses(last, last, True)
                or (b.lanes > 1 and not _ribbon_simple(first, last))):
            continue
        dirs = np.array(segment_dirs(path))
        seen: set[tuple[int, int]] = set()
        for i in range(b.lanes):  # every PE of every lane's path, landing PE included
            for c, d in enumerate(dirs):
                n = int(((pts[i, c + 1] - pts[i, c]) * d).sum())
                for t in range(n):
                    q = (int(pts[i, c, 0] + t * d[0]), int(pts[i, c, 1] + t * d[1]))
                    assert q not in seen, (b, i)
                    seen.add(q)
            q = (int(pts[i, -1, 0]), int(pts[i, -1, 1]))
            assert q not in seen, (b, i)
            seen.add(q)
        passed[s == k] += 1
    assert passed[True] > 300 and passed[False] > 300  # both kinds were exercised
