"""Placement congestion estimate (RUDY): what a bundle costs per PE before
routing, and why the placer trades a dense scattered layout for slower
dataflow-ordered shelves when the estimate says links would bound it."""

from __future__ import annotations

import fake_kinds as fk
import numpy as np
import pytest
from wsec.ir.target import get_target
from wsec.passes import place as place_mod
from wsec.passes import place_congestion as cg
from wsec.passes.base import PassContext
from wsec.passes.place import Place, _Layout
from wsec.passes.place_front import Problem


def _problem(pairs: dict[tuple[int, int], float], n: int, W: int = 100, H: int = 100,
             host_in: dict[int, float] | None = None) -> Problem:
    nbrs: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (a, b), w in pairs.items():
        nbrs[a].append((b, w))
        nbrs[b].append((a, w))
    hin = np.zeros(n)
    for k, v in (host_in or {}).items():
        hin[k] = v
    return Problem([f"k{i}" for i in range(n)], np.ones((n, 2), np.int64), nbrs, hin,
                   np.zeros(n), W, H)


def test_a_straight_bundle_costs_its_lane_load_per_pe() -> None:
    """Two kernels in a row, 40,000 wavelets between them at Δt 1,000: 40
    lanes each carrying Δt, so about Δt per PE on the way, nothing beside."""
    p = _problem({(0, 1): 4 * 40_000}, 2)
    rects = [(0, 30, 10, 40), (60, 30, 10, 40)]
    d = cg.density(p, rects, 1000, 4)
    assert d[50, 35] == pytest.approx(1000 * (1 + 40 / 60), rel=0.1)  # ~Δt (+ the box's height)
    assert d[10, 35] == 0 and d[90, 35] == 0
    assert cg.realised(p, rects, 50_000, 4) == 50_000  # one lane keeps up with the kernels


def test_crossing_layers_estimate_a_busier_link() -> None:
    """Eight chains of two kernels: side by side each bundle has its own
    rows; scattered so that every bundle crosses the middle, the estimate
    there is the sum of all of them."""
    p = _problem({(2 * i, 2 * i + 1): 4 * 8000 for i in range(8)}, 8 * 2)
    near = [r for i in range(8) for r in ((10, 10 * i, 10, 10), (30, 10 * i, 10, 10))]
    far = [r for i in range(8) for r in ((0, 10 * i, 10, 10), (90, 70 - 10 * i, 10, 10))]
    assert cg.busiest_link(p, far, 1000, 4) > 2 * cg.busiest_link(p, near, 1000, 4)


def test_host_input_runs_from_the_west_edge_over_the_kernels_rows() -> None:
    p = _problem({}, 1, host_in={0: 4 * 8000})
    d = cg.density(p, [(50, 10, 10, 8)], 1000, 4)
    assert d[12, 0] > 0 and d[12, 40] > 0
    assert d[30, 20] == 0  # not beside the kernel's rows
    assert d[12, 80] == 0  # not past the kernel


def test_an_empty_layout_estimates_nothing() -> None:
    p = _problem({}, 0)
    assert cg.busiest_link(p, [], 10, 4) == 0.0


def _dense_layout(m, t) -> _Layout:  # noqa: ANN001
    """The module as a non-flow packer lays it out (shelves, stack 1 at
    most) relabelled as the front packer's, for the placer to reconsider."""
    Place(flow=False).run(m, PassContext(t))
    ks = list(m.kernels())
    return _Layout(int(m.attrs["delta_t"]), [None] * len(ks),
                   [(k.rect.x, k.rect.y, k.rect.w, k.rect.h) for k in ks],
                   [k.rotated for k in ks], "front")


def test_placer_keeps_the_dense_layout_when_links_keep_up() -> None:
    m = fk.chain(4, 4, 4)
    t = get_target("wse2", (32, 32))
    lay = _dense_layout(m, t)
    ctx = PassContext(t)
    got = Place()._routable(m, t, place_mod._hooks(), lay, None, ctx)
    assert got is lay and not ctx.notes


def test_placer_takes_shelves_when_the_dense_layout_would_be_link_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """When the estimate of the dense layout is far above its Δt and a
    shelf layout's is below, the shelves win and the note says why."""
    m = fk.chain(4, 4, 4)
    t = get_target("wse2", (32, 32))
    lay = _dense_layout(m, t)
    lay.rects = lay.rects[::-1]  # scattered: the dataflow runs backwards
    real = cg.realised

    def fake(prob, rects, dt, wb):  # noqa: ANN001, ANN202
        return 1e9 if list(rects) == list(lay.rects) else real(prob, rects, dt, wb)

    monkeypatch.setattr(cg, "realised", fake)
    ctx = PassContext(t)
    got = Place()._routable(m, t, place_mod._hooks(), lay, None, ctx)
    assert got is not lay and got.how.startswith("shelf")
    assert "shelves of stacked kernels in dataflow order" in ctx.notes[-1]


class _StubPacker:
    """Shelf layouts at any time t (its one rectangle's x records t)."""

    module = target = None

    def __init__(self, times: list[int]) -> None:
        self.hooks = place_mod._Hooks(None, None, lambda module, target: np.array(times))
        self.asked: list[int] = []

    def at(self, t: int, full: bool = True) -> _Layout:
        self.asked.append(t)
        return _Layout(t, [None], [(t, 0, 1, 1)], [False], "shelf6")


def test_slower_shelves_take_the_time_with_the_fewest_estimated_cycles(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Link-bound shelves at the first time that packs (1,000, estimated
    3,000) lose to those at a slower time whose estimate is lowest; times
    closer than the first step, or repeated, are not tried."""
    link = {1000: 3000, 1100: 2500, 1200: 1250, 1300: 1400}
    monkeypatch.setattr(cg, "realised", lambda prob, rects, t, wb: max(t, link[rects[0][0]]))
    pk = _StubPacker([1000, 1040, 1100, 1200, 1300, 5000])
    first = pk.at(1000)
    pk.asked.clear()
    got, est = place_mod._slower_shelves(pk, None, first, 3000.0, 4)  # type: ignore[arg-type]
    assert (got.t, est) == (1200, 1250)
    assert pk.asked == [1100, 1200]  # 1,300 cannot beat the estimate 1,250


def test_slower_shelves_stop_where_a_slower_time_cannot_pay() -> None:
    """Shelves whose estimate is their Δt (the links keep up) stay as they are."""
    pk = _StubPacker([1000, 1100, 1200])
    first = pk.at(1000)
    pk.asked.clear()
    got, est = place_mod._slower_shelves(pk, None, first, 1000.0, 4)  # type: ignore[arg-type]
    assert got is first and est == 1000.0 and pk.asked == []
