"""size: choose every kernel's knobs so that the pipeline is as fast as the
grid allows.

Why this algorithm: in layer-pipelined mode the slowest kernel sets the
throughput, so the goal is the smallest bottleneck time t such that every
kernel, given the smallest rectangle that runs in <= t cycles, still fits
the grid together with all the others. Each kernel kind returns its Pareto
frontier (area up, cycles strictly down, SRAM- and grid-legal). For a given
t the minimum area of a kernel is one binary search on its frontier, so the
whole search is a sweep over the sorted distinct frontier cycle values with
numpy `searchsorted` per kernel: O(kernels x candidates x log) and well
under a second for ResNet-50.

Options: `utilisation` is the fraction of the grid's PEs sizing may plan to
fill. The default 1.0 sizes at the bound itself: the placer then relaxes the
bottleneck by the least step that packs, choosing among each kernel's
near-equal-area shapes (`shapes_for_time`, `candidate_times` are its hooks).
A lower utilisation leaves room on purpose. `max_area_fraction` caps any
single kernel's rectangle at that fraction of the grid. The module records
`bound` (the area-sizing lower bound on the bottleneck time: the same search
with the whole grid) and `delta_t` (the bottleneck time chosen).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from wsec.ir.graph import Kernel, Module
from wsec.ir.kernel_kind import Choice
from wsec.ir.kernels import kind_of
from wsec.ir.target import Target

from .base import Pass, PassContext, PassError


@lru_cache(maxsize=4096)
def _frontier(kind_name: str, dims: tuple[tuple[str, int], ...], target: Target
              ) -> tuple[Choice, ...]:
    from wsec.ir.kernels import KINDS

    return tuple(KINDS[kind_name].choices(dict(dims), target))


def kernel_choices(k: Kernel, target: Target, max_area_fraction: float = 1.0) -> list[Choice]:
    """The legal Pareto choices of kernel `k` (area up, cycles down), at most
    `max_area_fraction` of the grid each."""
    try:
        kind_of(k)
    except KeyError as e:
        raise PassError(str(e.args[0])) from None
    front = _frontier(k.kind, tuple(sorted(k.dims.items())), target)
    cap = max_area_fraction * target.pes
    return [c for c in front if c.area <= cap]


def _no_choice_error(k: Kernel, target: Target, max_area_fraction: float) -> PassError:
    kind = kind_of(k)
    grid = kind.knob_grid(k.dims, target)
    names = list(kind.knob_names)
    mesh = np.meshgrid(*[grid[n] for n in names], indexing="ij")
    w, h, _, mem = kind.evaluate(k.dims, {n: m.reshape(-1) for n, m in zip(names, mesh,
                                                                          strict=True)}, target)
    fits = (((w <= target.width) & (h <= target.height))
            | ((h <= target.width) & (w <= target.height)))
    fits &= w * h <= max_area_fraction * target.pes
    origin = ", ".join(k.origin) or "?"
    where = f"kernel '{k.name}' ({k.kind}, from {origin})"
    grid_txt = f"the {target.width}x{target.height} grid of {target.name}"
    if fits.any():
        need = int(mem[fits].min())
        return PassError(f"{where} has no legal size: it needs at least {need} bytes of SRAM "
                         f"per PE but a PE has {target.sram_bytes} (shortfall "
                         f"{need - target.sram_bytes} bytes) at every shape that fits "
                         f"{grid_txt}; use a larger target or grid, or a smaller model")
    need = int(mem.min())
    return PassError(f"{where} has no legal size: no knob setting fits {grid_txt} "
                     f"(max area fraction {max_area_fraction:g}) within the "
                     f"{target.sram_bytes}-byte SRAM of a PE (smallest SRAM need {need} bytes); "
                     "use a larger target or grid, or a smaller model")


@dataclass
class _Tables:
    """Per kernel: frontier cycles ascending and the matching areas."""

    cycles: list[np.ndarray]
    areas: list[np.ndarray]
    fronts: list[list[Choice]]

    def pick(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index (into the reversed frontier) of each kernel's minimum-area
        choice meeting each t, and the total area per t (inf if infeasible)."""
        n = len(self.cycles)
        idx = np.zeros((n, t.size), dtype=np.int64)
        total = np.zeros(t.size, dtype=np.float64)
        for i, (c, a) in enumerate(zip(self.cycles, self.areas, strict=True)):
            j = np.searchsorted(c, t, side="right") - 1  # largest cycles <= t
            ok = j >= 0
            idx[i] = np.maximum(j, 0)
            total += np.where(ok, a[np.maximum(j, 0)], np.inf)
        return idx, total


def _tables(module: Module, target: Target, max_area_fraction: float) -> tuple[list[Kernel],
                                                                               _Tables]:
    kernels = list(module.kernels())
    cycles, areas, fronts = [], [], []
    for k in kernels:
        front = kernel_choices(k, target, max_area_fraction)
        if not front:
            raise _no_choice_error(k, target, max_area_fraction)
        front = front[::-1]  # cycles ascending, area descending
        fronts.append(front)
        cycles.append(np.array([c.cycles for c in front], dtype=np.int64))
        areas.append(np.array([c.area for c in front], dtype=np.float64))
    return kernels, _Tables(cycles, areas, fronts)


def _smallest_t(tab: _Tables, cap: float) -> int | None:
    """Smallest candidate bottleneck time whose total minimum area <= cap."""
    if not tab.cycles:
        return 0
    floor = max(int(c[0]) for c in tab.cycles)  # no kernel can be faster than its best
    cand = np.unique(np.concatenate(tab.cycles))
    cand = cand[cand >= floor]
    _, total = tab.pick(cand)
    ok = np.nonzero(total <= cap)[0]
    return int(cand[ok[0]]) if ok.size else None  # total is non-increasing in t


def size_for_time(module: Module, target: Target, t: int,
                  max_area_fraction: float = 1.0) -> dict[str, Choice]:
    """Each kernel's minimum-area choice running in <= t cycles per sample
    (the placer calls this with a relaxed t when packing fails)."""
    kernels, tab = _tables(module, target, max_area_fraction)
    idx, _ = tab.pick(np.array([t], dtype=np.int64))
    out: dict[str, Choice] = {}
    for i, k in enumerate(kernels):
        if tab.cycles[i][0] > t:
            raise PassError(f"kernel '{k.name}' ({k.kind}) cannot run in {t} cycles per sample: "
                            f"its fastest legal size takes {int(tab.cycles[i][0])}")
        out[k.name] = tab.fronts[i][int(idx[i, 0])]
    return out


@lru_cache(maxsize=1024)
def _evaluated_grid(kind_name: str, dims: tuple[tuple[str, int], ...], target: Target
                    ) -> tuple[np.ndarray, ...]:
    """Every legal knob setting of a kind (SRAM- and grid-legal): (knob
    matrix, w, h, cycles, sram). For kinds whose knob space is small."""
    from wsec.ir.kernels import KINDS

    kind = KINDS[kind_name]
    d = dict(dims)
    grid = kind.knob_grid(d, target)
    names = list(kind.knob_names)
    mesh = np.meshgrid(*[grid[n] for n in names], indexing="ij")
    flat = {n: m.reshape(-1) for n, m in zip(names, mesh, strict=True)}
    w, h, cyc, mem = (np.asarray(a).reshape(-1) for a in kind.evaluate(d, flat, target))
    ok = (mem <= target.sram_bytes) & (((w <= target.width) & (h <= target.height))
                                       | ((h <= target.width) & (w <= target.height)))
    knobs = np.stack([flat[n] for n in names], axis=1) if names else np.zeros((1, 0), np.int64)
    return knobs[ok], w[ok], h[ok], cyc[ok], mem[ok]


def shape_options(k: Kernel, target: Target, t: int) -> list[Choice]:
    """Every shape of kernel `k` running in <= t cycles that no other such
    shape beats in both width and height (width ascending). Kinds with large
    knob spaces provide `shapes_for_time(dims, target, t)`; otherwise the
    kind's knob grid is evaluated once (vectorised) and filtered."""
    kind = kind_of(k)
    own = getattr(kind, "shapes_for_time", None)
    if own is not None:
        return list(own(k.dims, target, t))
    knobs, w, h, cyc, mem = _evaluated_grid(k.kind, tuple(sorted(k.dims.items())), target)
    sel = np.nonzero(cyc <= t)[0]
    sel = sel[np.lexsort((cyc[sel], mem[sel], h[sel], w[sel]))]  # width, height, then cheapest
    out: list[Choice] = []
    lowest = None
    names = list(kind.knob_names)
    for i in sel:
        if lowest is None or h[i] < lowest:
            lowest = int(h[i])
            out.append(Choice(tuple((n, int(knobs[i, j])) for j, n in enumerate(names)),
                              int(w[i]), int(h[i]), int(cyc[i]), int(mem[i])))
    return out


def shapes_for_time(module: Module, target: Target, t: int) -> dict[str, list[Choice]]:
    """Per kernel, its shape alternatives meeting t (see `shape_options`);
    the placer picks among them to pack tightly. Raises PassError naming a
    kernel that cannot meet t at all."""
    out: dict[str, list[Choice]] = {}
    for k in module.kernels():
        opts = shape_options(k, target, t)
        if not opts:
            raise PassError(f"kernel '{k.name}' ({k.kind}) cannot run in {t} cycles per sample "
                            "at any legal shape")
        out[k.name] = opts
    return out


def candidate_times(module: Module, target: Target) -> np.ndarray:
    """Sorted distinct bottleneck times at which some kernel's minimum area
    changes (no kernel can be faster than the slowest kernel's best): the
    only times worth trying when relaxing the bottleneck."""
    _, tab = _tables(module, target, 1.0)
    if not tab.cycles:
        return np.zeros(0, dtype=np.int64)
    floor = max(int(c[0]) for c in tab.cycles)
    cand = np.unique(np.concatenate(tab.cycles))
    return cand[cand >= floor]


@dataclass(frozen=True)
class Size(Pass):
    """Pick knobs for every kernel: the smallest bottleneck time that fits."""

    name = "size"
    requires = ("kernels",)
    ensures = ("sized",)
    utilisation: float = 1.0
    max_area_fraction: float = 1.0

    def run(self, module: Module, ctx: PassContext) -> None:
        if not 0.0 < self.utilisation <= 1.0:
            raise PassError(f"size: utilisation must be in (0, 1], got {self.utilisation:g}")
        if not 0.0 < self.max_area_fraction <= 1.0:
            raise PassError(f"size: max_area_fraction must be in (0, 1], got "
                            f"{self.max_area_fraction:g}")
        target = ctx.target
        kernels, tab = _tables(module, target, self.max_area_fraction)
        bound = _smallest_t(tab, float(target.pes))
        if bound is None:
            need = int(sum(a[-1] for a in tab.areas))
            big = max(range(len(kernels)), key=lambda i: tab.areas[i][-1])
            raise PassError(
                f"the model needs at least {need} PEs at its smallest legal sizes but the "
                f"{target.width}x{target.height} grid of {target.name} has {target.pes} "
                f"(largest: kernel '{kernels[big].name}' ({kernels[big].kind}) needs "
                f"{int(tab.areas[big][-1])}); use a larger target or grid, or a smaller model")
        t = _smallest_t(tab, self.utilisation * target.pes)
        if t is None:
            t = bound
            ctx.notes.append(f"size: the model does not fit {self.utilisation:g} of the grid at "
                             f"any speed; sized to fill the whole grid (bottleneck {bound} "
                             "cycles), placement may fail")
        idx, _ = tab.pick(np.array([t], dtype=np.int64))
        for i, k in enumerate(kernels):
            c = tab.fronts[i][int(idx[i, 0])]
            k.knobs = c.knob_dict()
            k.cost = {"cycles": int(c.cycles), "sram": int(c.sram), "w": int(c.w),
                      "h": int(c.h)}
        module.attrs["bound"] = int(bound)
        module.attrs["delta_t"] = int(max((k.cost["cycles"] for k in kernels if k.cost),
                                          default=0))
