"""The weighted objective: strip packing (place_strips), the bottleneck-time
trade-off (place_tradeoff, `place{wlength=...}`) and `wsec.ir.objective`."""

from __future__ import annotations

import fake_kinds as fk
import numpy as np
import pytest
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Module
from wsec.ir.metrics import placed_wirelength
from wsec.ir.objective import Objective
from wsec.ir.sizing import kernel_shape
from wsec.ir.target import Target, get_target
from wsec.passes.base import PassContext, PassOptionError
from wsec.passes.place import Place
from wsec.passes.place_strips import strip_pack


def _legal(rects: list[tuple[int, int, int, int]], W: int, H: int) -> None:
    occ = np.zeros((H, W), dtype=np.int32)
    for x, y, w, h in rects:
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H, (x, y, w, h)
        occ[y:y + h, x:x + w] += 1
    assert occ.max() <= 1, "rectangles overlap"


def _wire(rects: list[tuple[int, int, int, int]], pairs: list[tuple[int, int, float]]) -> float:
    c = [(x + w / 2, y + h / 2) for x, y, w, h in rects]
    return sum(wt * (abs(c[i][0] - c[j][0]) + abs(c[i][1] - c[j][1])) for i, j, wt in pairs)


def _chain(n: int) -> list[tuple[int, int, float]]:
    return [(i, i + 1, 1.0) for i in range(n - 1)]


def test_strips_lay_a_chain_side_by_side_across_narrow_sides() -> None:
    # each kernel may be 2x12 or 6x4 (either rotation): the narrow strips
    # fit in one shelf, so every wire is half the sum of two widths
    opts = [np.array([[2, 12], [6, 4]])] * 5
    pk = strip_pack(opts, range(5), _chain(5), 20, 12)
    assert pk is not None
    _legal(pk.rects, 20, 12)
    assert [(w, h) for _, _, w, h in pk.rects] == [(2, 12)] * 5
    assert _wire(pk.rects, _chain(5)) == 4 * 2.0
    assert len(pk.shelves) == 1


def test_strips_fold_into_shelves_when_one_is_too_wide() -> None:
    opts = [np.array([[3, 5]])] * 8  # 8 x 3 = 24 > 12 columns: two shelves of four
    pk = strip_pack(opts, range(8), _chain(8), 12, 10)
    assert pk is not None
    _legal(pk.rects, 12, 10)
    assert len(pk.shelves) == 2 and pk.used_height == 10
    # within shelves 3 apart; the fold (boustrophedon) joins the ends 5 apart vertically
    assert _wire(pk.rects, _chain(8)) == 6 * 3.0 + 5.0


def test_strips_report_no_fit() -> None:
    assert strip_pack([np.array([[3, 5]])] * 8, range(8), _chain(8), 12, 9) is None
    assert strip_pack([np.array([[30, 50]])], range(1), [], 12, 9) is None


@pytest.mark.parametrize("seed", range(6))
def test_strips_are_legal_on_random_graphs(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 25))
    opts = []
    for _ in range(n):
        a = int(rng.integers(1, 6))
        ws = np.sort(rng.integers(1, 9, a))
        opts.append(np.stack([ws, 40 // ws], axis=1))  # near-equal areas, a staircase
    pairs = _chain(n) + [(int(rng.integers(n)), int(rng.integers(n)), 1.0) for _ in range(n // 2)]
    pk = strip_pack(opts, list(rng.permutation(n)), pairs, 40, 40)
    assert pk is not None
    _legal(pk.rects, 40, 40)
    for i, (o, rot, (_, _, w, h)) in enumerate(zip(pk.option, pk.rotated, pk.rects,
                                                     strict=True)):
        ow, oh = (int(v) for v in opts[i][o])
        assert (w, h) == ((oh, ow) if rot else (ow, oh))


def test_objective_weights_and_attrs() -> None:
    o = Objective(2.0, 3.0, 100.0)
    assert o.value(10, 4) == 32.0 and o.value(10, 4, adapter=1) == 132.0
    assert o.trades and not Objective().trades
    assert Objective.of({}) == Objective(1.0, 1.0, 0.0)  # the contest's defaults
    assert Objective.of({"wdeltat": 1, "wlength": 40, "wadapter": 7}).wlength == 40.0
    with pytest.raises(ValueError, match="wlength=-1"):
        Objective(1.0, -1)


def _place(m: Module, grid: tuple[int, int], **opts: object) -> Target:
    t = get_target("wse2", grid)
    Place(**opts).run(m, PassContext(t))  # type: ignore[arg-type]
    return t


def _score(m: Module, t: Target, o: Objective) -> tuple[int, float, float]:
    occ = np.zeros((t.height, t.width), dtype=np.int32)
    for k in m.kernels():
        r = k.rect
        assert r is not None and r.x1 <= t.width and r.y1 <= t.height
        w, h = kernel_shape(k, t)
        assert (r.w, r.h) == ((h, w) if k.rotated else (w, h)), k.name
        occ[r.y:r.y1, r.x:r.x1] += 1
    assert occ.max() <= 1, "rectangles overlap"
    dt = max(int(k.cost["cycles"]) for k in m.kernels())
    wire = placed_wirelength(m, Fabric.of(t), weight="connections", host=False)
    return dt, wire, o.value(dt, wire)


def test_heavy_wires_buy_a_slower_bottleneck() -> None:
    o = Objective(1.0, 400.0)
    first = fk.chain(6, 4, 4)
    t = _place(first, (24, 24), objective="edges")
    dt0, wire0, v0 = _score(first, t, o)
    m = fk.chain(6, 4, 4)
    t = _place(m, (24, 24), objective="edges", wlength=400.0)
    dt, wire, v = _score(m, t, o)
    assert dt > dt0 and wire < wire0 and v < v0
    assert m.attrs["delta_t"] == dt


def test_light_wires_keep_the_fast_bottleneck() -> None:
    # the boxes come sized at 63 cycles (4x4), which the Δt-first placer
    # keeps; the sweep starts at the area-sizing bound, so it finds faster
    o = Objective(1.0, 1e-6)
    m = fk.chain(6, 4, 4)
    t = _place(m, (24, 24), objective="edges", wlength=1e-6)
    first = fk.chain(6, 4, 4)
    t0 = _place(first, (24, 24), objective="edges")
    assert _score(m, t, o)[0] < _score(first, t0, o)[0] == 63


def test_no_time_weight_means_shortest_wires() -> None:
    m = fk.chain(4, 4, 4)
    t = _place(m, (24, 24), objective="edges", wdeltat=0.0, wlength=1.0)
    _, wire, _ = _score(m, t, Objective(0.0, 1.0))
    assert wire == 3.0  # every box at 1x1 (the slowest), side by side


@pytest.mark.parametrize("build", [fk.chain, fk.diamond, fk.fanout])
def test_weighted_never_worse_than_deltat_first(build) -> None:  # noqa: ANN001
    for wl in (0.05, 1.0, 20.0):
        o = Objective(1.0, wl)
        first = build()
        t = _place(first, (16, 16), objective="edges")
        m = build()
        t = _place(m, (16, 16), objective="edges", wlength=wl, seed=3)
        assert _score(m, t, o)[2] <= _score(first, t, o)[2]


def test_weighted_is_deterministic_and_notes_what_it_did() -> None:
    runs = []
    for _ in range(2):
        m = fk.diamond()
        ctx = PassContext(get_target("wse2", (16, 16)))
        Place(wlength=5.0, seed=4).run(m, ctx)
        runs.append([(k.rect, k.rotated, k.knobs) for k in m.kernels()])
    assert runs[0] == runs[1]
    assert any(n.startswith("place: weighted objective ") for n in ctx.notes)


def test_weights_are_checked_when_the_pass_is_built() -> None:
    with pytest.raises(PassOptionError, match="option wlength=-2.0 is not allowed"):
        Place(wlength=-2.0)
    with pytest.raises(PassOptionError, match="option wdeltat=-1.0 is not allowed"):
        Place(wdeltat=-1.0)


def test_narrow_breaks_are_where_a_side_shrinks_and_bound_the_strips() -> None:
    from wsec.passes.place_tradeoff import _Sweep, narrow_breaks, narrow_side

    m = fk.chain(6, 4, 4)
    t = get_target("wse2", (24, 24))
    sw = _Sweep(m, t, Objective(1.0, 40.0), "edges")
    breaks = narrow_breaks(sw, 1, 400)
    assert breaks
    ks = list(m.kernels())
    for time_, bound in breaks.items():
        assert any(narrow_side(k, t, time_ - 1) in (None, *range(narrow_side(k, t, time_) + 1,
                                                                   1 << 20)) for k in ks)
        cand = sw.at(time_)
        if cand is not None:  # no layout meeting this time has shorter wires than the bound's
            assert bound - time_ <= 40.0 * cand.wire + 1e-9
