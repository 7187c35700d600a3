"""Place pass on hand-built modules of the test-only 'box' kind."""

from __future__ import annotations

import sys
import time
import types

import fake_kinds as fk
import numpy as np
import pytest
from wsec.ir.graph import Module
from wsec.ir.kernel_kind import Choice
from wsec.ir.target import Target, get_target
from wsec.ir.types import TensorType
from wsec.passes.base import PassContext, PassError
from wsec.passes.place import Place, kernel_shape, wirelength


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
    t = _place(m, (4, 8))
    k = m.kernel("tall")
    assert k.rotated and (k.rect.w, k.rect.h) == (2, 8)
    _check_legal(m, t)


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


def test_bad_effort() -> None:
    with pytest.raises(PassError, match="unknown effort 'max'"):
        _place(fk.chain(), effort="max")


@pytest.fixture
def no_resize(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide the real sizer's re-size hook so the packer's own failure shows."""
    monkeypatch.setitem(sys.modules, "wsec.passes.size", types.SimpleNamespace())


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


def test_resize_hook_makes_it_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def size_for_time(module: Module, target: Target, t: int) -> dict[str, Choice]:
        calls.append(t)
        return {k.name: Choice((("w", 2), ("h", 2)), 2, 2, 250, 1024) for k in module.kernels()}

    monkeypatch.setitem(sys.modules, "wsec.passes.size",
                        types.SimpleNamespace(size_for_time=size_for_time))
    m = fk.chain(5, 4, 4)
    ctx = PassContext(get_target("wse2", (8, 8)))
    Place().run(m, ctx)
    assert calls == [67]  # ceil(1000/16) = 63 cycles, relaxed by 5% and rounded up
    assert all(k.knobs == {"w": 2, "h": 2} and k.cost["w"] == 2 for k in m.kernels())
    assert any("re-sized" in n for n in ctx.notes)


def test_resize_hook_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def size_for_time(module: Module, target: Target, t: int) -> dict[str, Choice]:
        calls.append(t)
        return {}

    monkeypatch.setitem(sys.modules, "wsec.passes.size",
                        types.SimpleNamespace(size_for_time=size_for_time))
    with pytest.raises(PassError, match="did not fit"):
        _place(fk.chain(5, 4, 4), (8, 8), effort="fast")
    assert len(calls) == 3


def test_thousand_kernels_fast() -> None:
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
    t0 = time.perf_counter()
    t = _place(m, (750, 994))
    assert time.perf_counter() - t0 < 2.0
    _check_legal(m, t)
