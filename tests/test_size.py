"""size: bottleneck-time search, recorded costs, size_for_time, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import LIGHT_MODELS, light_model
from test_form_kernels import G, _block
from wsec.ir.graph import Module
from wsec.ir.kernel_kind import Choice
from wsec.ir.kernels import kind_of
from wsec.ir.sizing import (
    candidate_times,
    kernel_choices,
    shape_options,
    shapes_for_time,
    size_for_time,
)
from wsec.ir.target import get_target
from wsec.ir.verify import verify_module
from wsec.passes.base import PassContext, PassError
from wsec.passes.size import Size


def _sized(m: Module, target, **opts) -> PassContext:
    m.attrs.update(target=target.name, grid=[target.width, target.height], dtype=target.dtype)
    ctx = PassContext(target)
    Size(**opts).run(m, ctx)
    m.properties.add("sized")
    verify_module(m)
    return ctx


def _check(m: Module, target, utilisation: float) -> None:
    ks = list(m.kernels())
    area = sum(k.cost["w"] * k.cost["h"] for k in ks)
    assert m.attrs["bound"] <= m.attrs["delta_t"]
    assert m.attrs["delta_t"] == max(k.cost["cycles"] for k in ks)
    assert area <= max(utilisation * target.pes, 0) or m.attrs["bound"] == m.attrs["delta_t"]
    for k in ks:
        kind = kind_of(k)
        assert (k.cost["w"], k.cost["h"]) == kind.shape(k.dims, k.knobs, target)
        assert k.cost["cycles"] == kind.cycles(k.dims, k.knobs, target)
        assert k.cost["sram"] == kind.sram(k.dims, k.knobs, target) <= target.sram_bytes


def _brute_force_t(m: Module, target, cap: float) -> int:
    """Independent slow search: smallest frontier cycle value whose summed
    minimum areas fit `cap`."""
    fronts = [kernel_choices(k, target) for k in m.kernels()]
    cands = sorted({c.cycles for f in fronts for c in f})
    for t in cands:
        areas = [min((c.area for c in f if c.cycles <= t), default=None) for f in fronts]
        if None not in areas and sum(areas) <= cap:
            return t
    raise AssertionError("no t fits")


@pytest.mark.parametrize("grid", [(12, 12), (16, 16), (40, 30)])
def test_block_sizes_to_the_best_fitting_time(grid) -> None:
    target = get_target("wse2", grid)
    m = _block().run()
    _sized(m, target, utilisation=0.8)
    _check(m, target, 0.8)
    assert sum(k.cost["w"] * k.cost["h"] for k in m.kernels()) <= 0.8 * target.pes
    assert m.attrs["delta_t"] == _brute_force_t(m, target, 0.8 * target.pes)
    assert m.attrs["bound"] == _brute_force_t(m, target, target.pes)


def test_more_grid_means_faster() -> None:
    times = []
    for n in (8, 12, 16, 24):
        m = _block().run()
        _sized(m, get_target("wse2", (n, n)))
        times.append(m.attrs["delta_t"])
    assert times == sorted(times, reverse=True) and times[0] > times[-1]


def test_size_for_time_relaxes_monotonically() -> None:
    target = get_target("wse2", (16, 16))
    m = _block().run()
    _sized(m, target)
    t0 = m.attrs["delta_t"]
    a = size_for_time(m, target, t0)
    b = size_for_time(m, target, int(t0 * 1.5))
    assert set(a) == {k.name for k in m.kernels()}
    for k in m.kernels():
        assert a[k.name].knob_dict() == k.knobs  # same answer as the pass at its own t
        assert b[k.name].cycles <= int(t0 * 1.5) and b[k.name].area <= a[k.name].area
    with pytest.raises(PassError, match="cannot run in 1 cycles"):
        size_for_time(m, target, 1)


def test_max_area_fraction_caps_each_kernel() -> None:
    target = get_target("wse2", (16, 16))
    m = _block().run()
    _sized(m, target, max_area_fraction=0.1)
    assert all(k.cost["w"] * k.cost["h"] <= 25 for k in m.kernels())


def test_falls_back_to_whole_grid_with_a_note() -> None:
    m = _block().run()
    total_min = sum(kernel_choices(k, get_target("wse2"))[0].area for k in m.kernels())
    assert total_min == 4
    ctx = _sized(m, get_target("wse2", (2, 2)), utilisation=0.8)  # 4 PEs: fits 1.0, not 0.8
    assert any("does not fit 0.8 of the grid" in n for n in ctx.notes)
    assert m.attrs["bound"] == m.attrs["delta_t"]


def test_too_many_kernels_for_the_grid() -> None:
    m = _block().run()
    with pytest.raises(PassError, match=r"needs at least 4 PEs .* 1x3 grid of wse2 has 3"):
        _sized(m, get_target("wse2", (1, 3)))


def test_kernel_without_legal_size_is_named() -> None:
    g = G()
    a = g.inp("a", (1, 4096))
    w = g.const("w", (4096, 4096))
    g.node("fc", "MatMul", [a, w], "y", (1, 4096))
    g.m.outputs = ["y"]
    m = g.run()
    with pytest.raises(PassError) as e:
        _sized(m, get_target("wse2", (4, 4)))
    msg = str(e.value)
    assert "kernel 'k0' (matmul, from fc)" in msg and "49152" in msg
    assert "larger target or grid, or a smaller model" in msg


def test_bad_options() -> None:
    m = _block().run()
    with pytest.raises(PassError, match="utilisation"):
        _sized(m, get_target("wse2"), utilisation=0.0)


def _light(name: str) -> Module:
    frontend = pytest.importorskip("wsec.frontends.onnx")
    canon = pytest.importorskip("wsec.passes.canonicalize")
    from wsec.passes.form_kernels import FormKernels

    m = frontend.load_onnx(str(light_model(name)))
    ctx = PassContext(get_target("wse2"))
    canon.Canonicalize().run(m, ctx)
    FormKernels().run(m, ctx)
    m.properties |= {"canonical", "kernels"}
    return m


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_models_size_on_wse2_and_wse3(name: str) -> None:
    m = _light(name)
    for tname in ("wse2", "wse3"):
        target = get_target(tname)
        _sized(m, target)
        _check(m, target, 1.0)
        assert m.attrs["delta_t"] == m.attrs["bound"]  # the default sizes at the bound


def test_resnet50_sizes_within_the_utilisation() -> None:
    m = _light("resnet50")
    target = get_target("wse2", (200, 200))
    _sized(m, target, utilisation=0.8)
    _check(m, target, 0.8)
    assert m.attrs["delta_t"] == _brute_force_t(m, target, 0.8 * target.pes)
    assert m.attrs["bound"] < m.attrs["delta_t"]  # the grid, not one kernel, limits here


def test_default_sizes_at_the_bound() -> None:
    target = get_target("wse2", (16, 16))
    m = _block().run()
    _sized(m, target)
    assert m.attrs["delta_t"] == m.attrs["bound"] == _brute_force_t(m, target, target.pes)


def _dominates(a: Choice, b: Choice) -> bool:
    return a.w <= b.w and a.h <= b.h and (a.w, a.h) != (b.w, b.h)


@pytest.mark.parametrize("grid", [(16, 16), (8, 40)])
def test_shape_options_are_the_width_height_staircase(grid: tuple[int, int]) -> None:
    """Brute force over the knob grid: the options meeting t are exactly the
    shapes no other legal shape meeting t beats in both width and height."""
    target = get_target("wse2", grid)
    m = _block().run()
    t = int(max(c.cycles for k in m.kernels() for c in kernel_choices(k, target)[:3]))
    for k in m.kernels():
        opts = shape_options(k, target, t)
        kind = kind_of(k)
        g = kind.knob_grid(k.dims, target)
        legal = []
        for vals in itertools.product(*[g[n] for n in kind.knob_names]):
            kn = {n: int(v) for n, v in zip(kind.knob_names, vals, strict=True)}
            w, h = kind.shape(k.dims, kn, target)
            fits = (w <= target.width and h <= target.height) or (
                h <= target.width and w <= target.height)
            if fits and kind.cycles(k.dims, kn, target) <= t and kind.sram(
                    k.dims, kn, target) <= target.sram_bytes:
                legal.append((w, h))
        stair = sorted({s for s in legal if not any(o[0] <= s[0] and o[1] <= s[1] and o != s
                                                    for o in legal)})
        assert [(c.w, c.h) for c in opts] == stair, k.name
        for c in opts:
            assert c.cycles <= t and (c.w, c.h) == kind.shape(k.dims, c.knob_dict(), target)
        assert not any(_dominates(a, b) for a in opts for b in opts)


def test_shapes_for_time_and_candidate_times() -> None:
    target = get_target("wse2", (16, 16))
    m = _block().run()
    cands = candidate_times(m, target)
    assert np.all(np.diff(cands) > 0)
    floor = max(min(c.cycles for c in kernel_choices(k, target)) for k in m.kernels())
    assert cands[0] == floor
    opts = shapes_for_time(m, target, int(cands[0]))
    smallest = size_for_time(m, target, int(cands[0]))
    for k in m.kernels():  # the minimum-area choice is always among the shapes
        assert min(c.area for c in opts[k.name]) == smallest[k.name].area
    with pytest.raises(PassError, match="cannot run in 1 cycles per sample at any legal shape"):
        shapes_for_time(m, target, 1)
