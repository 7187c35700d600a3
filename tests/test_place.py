"""Place pass on hand-built modules of the test-only 'box' kind."""

from __future__ import annotations

import fake_kinds as fk
import numpy as np
import pytest
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Module
from wsec.ir.kernel_kind import Choice
from wsec.ir.metrics import placed_wirelength
from wsec.ir.sizing import kernel_shape
from wsec.ir.target import Target, get_target
from wsec.ir.types import TensorType
from wsec.passes.base import PassContext, PassError
from wsec.passes.place import Place


def wirelength(m: Module, t: Target) -> int:
    return int(round(placed_wirelength(m, Fabric.of(t))))


def _place(m: Module, grid: tuple[int, int] = (16, 16), **opts: object) -> Target:
    t = get_target("wse2", grid)
    Place(**opts).run(m, PassContext(t))  # type: ignore[arg-type]
    return t


def _check_legal(m: Module, t: Target) -> None:
    occ = np.zeros((t.height, t.width), dtype=np.int32)
    for k in m.kernels():
        r = k.rect
        assert r is not None, k.name
        assert 0 <= r.x and 0 <= r.y and r.x1 <= t.width and r.y1 <= t.height, (k.name, r)
        w, h = kernel_shape(k, t)
        assert (r.w, r.h) == ((h, w) if k.rotated else (w, h)), k.name
        occ[r.y:r.y1, r.x:r.x1] += 1
    assert occ.max() <= 1, "rectangles overlap"
    assert m.attrs["pes_used"] == int((occ > 0).sum())


@pytest.mark.parametrize("build", [fk.chain, fk.diamond, fk.fanout])
def test_legal_and_attrs(build) -> None:
    m = build()
    t = _place(m)
    _check_legal(m, t)
    assert m.attrs["wirelength"] == wirelength(m, t) > 0


def test_chain_stays_adjacent() -> None:
    m = fk.chain(6, 3, 2)
    _place(m, (32, 32))
    ks = list(m.kernels())
    for a, b in zip(ks, ks[1:], strict=False):
        (ax, ay), (bx, by) = a.rect.centre(), b.rect.centre()
        assert abs(ax - bx) + abs(ay - by) <= 4.0, (a.name, a.rect, b.name, b.rect)


def test_wirelength_definition() -> None:
    m = fk.chain(2, 2, 2)  # host -> k0 -> k1 -> host, 128 bytes per edge
    _place(m, (10, 10))
    k0, k1 = m.kernels()
    (x0, y0), (x1, y1) = k0.rect.centre(), k1.rect.centre()
    expect = 128 * (x0 + abs(x0 - x1) + abs(y0 - y1) + (10 - x1))
    assert m.attrs["wirelength"] == round(expect)


def test_rotation_used_when_needed() -> None:
    m = fk.sized("rot")
    m.add_value("x", TensorType("f32", (1, 4)))
    m.inputs = ["x"]
    fk.box(m, "tall", ["x"], "y", 8, 2)  # 8 wide: only fits a 4x8 grid rotated
    m.outputs = ["y"]
    fk.connect(m)
    t = _place(m, (4, 8), reshape=False)
    k = m.kernel("tall")
    assert k.rotated and (k.rect.w, k.rect.h) == (2, 8)
    _check_legal(m, t)


def test_reshape_picks_equal_time_shapes_that_pack() -> None:
    # three 4x4 boxes (63 cycles) cannot share an 8x6 grid as they are, but
    # 8x2 shapes run in 63 cycles too and stack three high
    m = fk.chain(3, 4, 4)
    with pytest.raises(PassError):
        _place(m, (8, 6), reshape=False)
    m = fk.chain(3, 4, 4)
    t = _place(m, (8, 6))
    _check_legal(m, t)
    assert max(k.cost["cycles"] for k in m.kernels()) == m.attrs["delta_t"] == 63
    assert sorted({(k.rect.w, k.rect.h) for k in m.kernels()}) == [(8, 2)]


@pytest.mark.parametrize("seed", [0, 5])
def test_deterministic_per_seed(seed: int) -> None:
    runs = []
    for _ in range(2):
        m = fk.diamond()
        _place(m, seed=seed)
        runs.append([(k.rect, k.rotated) for k in m.kernels()])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("effort", ["fast", "normal", "high"])
def test_efforts_are_legal(effort: str) -> None:
    m = fk.diamond()
    t = _place(m, effort=effort, seed=2)
    _check_legal(m, t)


def test_real_sizer_hook_resizes_box_kernels() -> None:
    m = fk.chain(5, 4, 4)  # 80 PEs at 63 cycles; the box kind can shrink for a slower time
    t = _place(m, (8, 8))
    _check_legal(m, t)
    assert sum(k.rect.area for k in m.kernels()) <= 64


def test_bad_options_are_refused_when_the_pass_is_built() -> None:
    from wsec.ir.errors import PassOptionError

    with pytest.raises(PassOptionError, match=r"option effort='max' is not allowed \(allowed "
                                              r"values: fast, normal, high\)"):
        Place(effort="max")
    with pytest.raises(PassOptionError, match="objective='area'"):
        Place(objective="area")
    with pytest.raises(PassOptionError, match="refine=-3"):
        Place(refine=-3.0)


@pytest.fixture
def no_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the sizing model's re-size functions so the packer's own failure shows."""
    from wsec.passes import place

    monkeypatch.setattr(place, "_hooks", lambda: place._Hooks(None, None, None))


@pytest.mark.usefixtures("no_resize")
def test_kernel_larger_than_grid() -> None:
    m = fk.chain(2, 12, 9)
    with pytest.raises(PassError) as e:
        _place(m, (8, 8))
    assert str(e.value).startswith("kernel 'k0' (box) needs 12x9 PEs but the grid is 8x8")


@pytest.mark.usefixtures("no_resize")
def test_grid_too_small_names_kernel_and_free_area() -> None:
    m = fk.chain(5, 4, 4)  # 5 x 16 PEs on a 8x8 grid: the fifth does not fit
    with pytest.raises(PassError) as e:
        _place(m, (8, 8))
    msg = str(e.value)
    assert "kernel 'k4' (box) of shape 4x4 PEs did not fit: 0 of 64 PEs are free" in msg
    assert "after placing 4 of 5 kernels (all kernels need 80 PEs)" in msg
    assert "use a larger grid" in msg


def _fake_sizer(monkeypatch: pytest.MonkeyPatch, fits_from: int, calls: list[int]) -> None:
    """A sizer whose kernels become 2x2 boxes from time `fits_from` on (4x4
    below it); candidate times 64..1000 in steps of 4."""

    def shapes(module: Module, t: int) -> dict[str, list[Choice]]:
        side = 2 if t >= fits_from else 4
        return {k.name: [Choice((("w", side), ("h", side)), side, side, t, 1024)]
                for k in module.kernels()}

    def shapes_for_time(module: Module, target: Target, t: int) -> dict[str, list[Choice]]:
        calls.append(t)
        return shapes(module, t)

    def size_for_time(module: Module, target: Target, t: int) -> dict[str, Choice]:
        return {n: c[0] for n, c in shapes(module, t).items()}

    from wsec.ir import sizing

    monkeypatch.setattr(sizing, "shapes_for_time", shapes_for_time)
    monkeypatch.setattr(sizing, "size_for_time", size_for_time)
    monkeypatch.setattr(sizing, "candidate_times", lambda module, target: np.arange(64, 1001, 4))


def test_resize_finds_the_least_fitting_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    _fake_sizer(monkeypatch, 300, calls)
    m = fk.chain(5, 4, 4)  # 5 x 16 PEs at 63 cycles do not fit 8x8; 5 x 4 PEs do
    ctx = PassContext(get_target("wse2", (8, 8)))
    Place().run(m, ctx)
    assert all(k.knobs == {"w": 2, "h": 2} and k.cost["cycles"] == 300 for k in m.kernels())
    assert m.attrs["delta_t"] == 300
    assert any("re-sized kernels for a bottleneck of 300 cycles (was 63)" in n for n in ctx.notes)
    # gallop (64, 68, 76, 92, 124, 188, 316: fits) then bisect down to 300
    assert calls[:8] == [63, 64, 68, 76, 92, 124, 188, 316]
    assert len(calls) <= 8 + 6 + 1


def test_resize_search_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    _fake_sizer(monkeypatch, 10**9, calls)  # never fits
    with pytest.raises(PassError, match="did not fit"):
        _place(fk.chain(5, 4, 4), (8, 8), effort="fast", flow=False)
    assert 1 < len(calls) <= 12


def test_edges_objective_ignores_bytes_and_host() -> None:
    from wsec.passes.place_front import build_problem

    m = fk.diamond()
    prob = build_problem(m, np.ones((len(list(m.kernels())), 2)), 16, 16, "edges")
    assert not prob.host_in.any() and not prob.host_out.any()
    assert {w for lst in prob.nbrs for _, w in lst} == {1.0}


def test_cpsat_refinement_shortens_wires_and_stays_legal() -> None:
    from wsec.passes.place_cpsat import refine, weighted_length
    from wsec.passes.place_front import build_problem

    m = fk.chain(4, 2, 2)  # host -> k0 -> k1 -> k2 -> k3 -> host
    prob = build_problem(m, np.full((4, 2), 2), 12, 12, "edges")
    far = [(0, 0, 2, 2), (10, 10, 2, 2), (0, 10, 2, 2), (10, 0, 2, 2)]
    runs = [refine(prob, far, 2.0, seed=1) for _ in range(2)]
    rects, stats = runs[0]
    assert runs[0][0] == runs[1][0]  # deterministic for a seed
    assert weighted_length(prob, rects) == 6.0 < weighted_length(prob, far)  # abutting chain
    assert stats["after"] < stats["before"]
    occ = np.zeros((12, 12), int)
    for x, y, w, h in rects:
        occ[y:y + h, x:x + w] += 1
    assert occ.max() == 1


def test_time_limit_bounds_the_refinement(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsec.passes import place_cpsat

    budgets: list[tuple[float, float | None]] = []
    real = place_cpsat.refine

    def spy(prob, rects, seconds, seed, wall=None):  # noqa: ANN001, ANN202
        budgets.append((seconds, wall))
        return real(prob, rects, seconds, seed, wall)

    monkeypatch.setattr(place_cpsat, "refine", spy)
    m = fk.diamond()
    ctx = PassContext(get_target("wse2", (16, 16)), time_limit=1.0)
    Place(effort="high", flow=False).run(m, ctx)  # high effort alone would refine for 10 s
    assert budgets and all(s < 1.0 and w is not None and w < 1.0 for s, w in budgets)
    _check_legal(m, ctx.target)


def test_thousand_kernels_place_legally() -> None:
    rng = np.random.default_rng(1)
    m = fk.sized("big")
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    prev = "x"
    for i in range(1000):
        ins = [prev] + ([f"v{i - 3}"] if i > 3 and rng.random() < 0.3 else [])
        fk.box(m, f"k{i}", ins, f"v{i}", int(rng.integers(5, 40)), int(rng.integers(5, 40)))
        prev = f"v{i}"
    m.outputs = [prev]
    fk.connect(m)
    t = _place(m, (750, 994))
    _check_legal(m, t)
