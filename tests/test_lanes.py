"""Lane expansion: `expand_many` (the router's batched pricing of sampled
lanes) gives exactly what `expand` gives bundle by bundle, in the same order,
for every shape the router draws up: straight, L, Z, U turns, a path of one
waypoint, reach, host ends, all lanes or a few."""

from __future__ import annotations

import numpy as np
import pytest
from wsec.ir.graph import HOST, Bundle
from wsec.ir.lanes import LaneError, check, expand, expand_many

BUNDLES = [
    Bundle("k", 0, 5, (0, 1), ((2, 3), (9, 3))),  # straight East
    Bundle("k", 0, 4, (0, 1), ((2, 3), (9, 3)), reach=3),
    Bundle("k", 0, 3, (1, 0), ((4, 2), (4, 9), (12, 9)), reach=2),  # an L
    Bundle("k", 0, 4, (0, -1), ((2, 10), (6, 10), (6, 4), (12, 4))),  # a Z
    Bundle("k", 0, 3, (0, 1), ((2, 3), (14, 3), (14, 12), (3, 12)), reach=1),  # a U
    Bundle("k", 0, 6, (0, 1), ((2, 3), (20, 3), (20, 13), (26, 13), (26, 20), (30, 20))),
    Bundle(HOST, 0, 4, (0, 1), ((0, 2),)),  # lanes that start where they land
]


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
