"""Lane expansion: `expand_many` (the router's batched pricing of sampled
lanes) gives exactly what `expand` gives bundle by bundle, in the same order,
for every shape the router draws up: straight, L, Z, U turns, a path of one
waypoint, reach, host ends, all lanes or a few, every pitch. A pitched
bundle's lanes run every pitch-th row, nest at corners at that scale, and
hand on along a spine to the rows between; they never share a PE."""

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
BUNDLES += PITCHED


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
