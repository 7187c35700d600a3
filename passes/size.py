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
fill (the placer loses some area to packing); `max_area_fraction` caps any
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


@dataclass(frozen=True)
class Size(Pass):
    """Pick knobs for every kernel: the smallest bottleneck time that fits."""

    name = "size"
    requires = ("kernels",)
    ensures = ("sized",)
    utilisation: float = 0.8
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
