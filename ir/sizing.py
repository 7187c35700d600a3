"""The sizing model: what each kernel can cost, and how fast a module can run.

Why one module: the size pass, the placer (which re-sizes kernels while it
relaxes the bottleneck), mode selection, phase scheduling and the ISPD
driver all ask the same questions — a kernel's legal Pareto choices, its
shapes meeting a time, the candidate bottleneck times, the area-sizing
lower bound. Answered in one place, they cannot disagree.

- A kernel's *choices* are its kind's Pareto frontier (area up, cycles
  strictly down) of SRAM- and grid-legal knob settings (`kernel_choices`).
- For a time t, a kernel's minimum area is one binary search on its
  frontier, so the smallest t at which every kernel's minimum area fits an
  area is a sweep over the sorted distinct frontier times (`area_bound`,
  `smallest_time`): O(kernels x candidates x log).
- The *area-sizing bound* (DESIGN.md section 5) is that sweep against the
  whole grid: no legal layout runs faster (packing loss ignored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import LayoutInfeasible, PassError
from .fabric import Fabric
from .graph import Kernel, Module
from .kernel_kind import Choice
from .kernels import KINDS, kind_of
from .target import Target

_INF = np.iinfo(np.int64).max // 4


# --- the area-sizing bound over choice lists (kind-agnostic) -----------------------
def _min_area_table(choices: Sequence[Choice]) -> tuple[np.ndarray, np.ndarray]:
    """(cycles ascending, min area among options with cycles <= that)."""
    if not choices:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cyc = np.fromiter((c.cycles for c in choices), np.int64, len(choices))
    area = np.fromiter((c.area for c in choices), np.int64, len(choices))
    order = np.argsort(cyc, kind="stable")
    return cyc[order], np.minimum.accumulate(area[order])


def _min_areas(table: tuple[np.ndarray, np.ndarray], ts: np.ndarray) -> np.ndarray:
    cyc, pm = table
    idx = np.searchsorted(cyc, ts, side="right")
    out = np.full(ts.shape, _INF, dtype=np.int64)
    hit = idx > 0
    out[hit] = pm[idx[hit] - 1]
    return out


def min_area_at(choices: Sequence[Choice], t: int) -> int | None:
    """Smallest area among `choices` with cycles <= t (None if none meets t)."""
    a = int(_min_areas(_min_area_table(choices), np.asarray([t], np.int64))[0])
    return None if a >= _INF else a


def total_min_area(choice_lists: Sequence[Sequence[Choice]], ts: np.ndarray) -> np.ndarray:
    """For each time in `ts`: Σ over kernels of the min area meeting it
    (a huge sentinel where some kernel cannot meet it)."""
    ts = np.asarray(ts, np.int64)
    total = np.zeros(ts.shape, np.int64)
    for ch in choice_lists:
        total = np.minimum(total + _min_areas(_min_area_table(ch), ts), _INF)
    return total


def smallest_time(choice_lists: Sequence[Sequence[Choice]], area: float) -> int | None:
    """Smallest t such that Σ_kernels min area with cycles <= t is <= `area`;
    None when no time fits (every list must be non-empty)."""
    if not choice_lists:
        return 0
    ts = np.unique(np.concatenate([[c.cycles for c in ch] for ch in choice_lists]))
    total = total_min_area(choice_lists, ts)
    fit = np.nonzero(total <= area)[0]
    # the total is non-increasing in t, so the first fitting time is the answer
    return int(ts[fit[0]]) if fit.size else None


def area_bound(choice_lists: Sequence[Sequence[Choice]], area: int,
               names: Sequence[str] | None = None) -> int:
    """The area-sizing bound: `smallest_time` against `area`.

    Raises LayoutInfeasible naming the kernel with no legal option, or the
    shortfall when even every kernel's smallest options do not fit.
    """
    for i, ch in enumerate(choice_lists):
        if not ch:
            who = f"kernel '{names[i]}'" if names else f"kernel #{i}"
            raise LayoutInfeasible(f"{who} has no legal option (memory or grid too small), so "
                                   "no sizing bound exists; raise the memory limit or the grid")
    t = smallest_time(choice_lists, area)
    if t is None:
        smallest = int(sum(min(c.area for c in ch) for ch in choice_lists))
        raise LayoutInfeasible(f"the kernels need at least {smallest:,} PEs together at their "
                               f"smallest shapes, but the grid holds {area:,} PEs "
                               f"({smallest - area:,} short); use a larger grid")
    return t


# --- one kernel ------------------------------------------------------------------------
@lru_cache(maxsize=4096)
def _frontier(kind_name: str, dims: tuple[tuple[str, int], ...], target: Target
              ) -> tuple[Choice, ...]:
    return tuple(KINDS[kind_name].choices(dict(dims), target))


def _kind(k: Kernel) -> None:
    try:
        kind_of(k)
    except KeyError as e:
        raise PassError(str(e.args[0])) from None


def kernel_choices(k: Kernel, target: Target, max_area_fraction: float = 1.0) -> list[Choice]:
    """The legal Pareto choices of kernel `k` (area up, cycles down), at most
    `max_area_fraction` of the grid each."""
    _kind(k)
    front = _frontier(k.kind, tuple(sorted(k.dims.items())), target)
    cap = max_area_fraction * target.pes
    return [c for c in front if c.area <= cap]


def evaluate_all(kind_name: str, dims: tuple[tuple[str, int], ...], target: Target
                  ) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...]]:
    """Every knob setting of a kind's grid and its (w, h, cycles, sram)."""
    kind = KINDS[kind_name]
    d = dict(dims)
    grid = kind.knob_grid(d, target)
    names = list(kind.knob_names)
    mesh = np.meshgrid(*[grid[n] for n in names], indexing="ij")
    flat = {n: m.reshape(-1) for n, m in zip(names, mesh, strict=True)}
    w, h, cyc, mem = (np.asarray(a, dtype=np.int64).reshape(-1)
                      for a in kind.evaluate(d, flat, target))
    return flat, (w, h, cyc, mem)


def where(k: Kernel) -> str:
    """How errors name a kernel: name, kind and the ONNX nodes it came from."""
    return f"kernel '{k.name}' ({k.kind}, from {', '.join(k.origin) or '?'})"


def no_choice_error(k: Kernel, target: Target, max_area_fraction: float = 1.0
                    ) -> LayoutInfeasible:
    """Why kernel `k` has no legal size: the SRAM shortfall at the best shape
    that fits the grid, or that no shape fits it."""
    fab = Fabric.of(target)
    _, (w, h, _, mem) = evaluate_all(k.kind, tuple(sorted(k.dims.items())), target)
    fits = fab.fits_array(w, h) & (w * h <= max_area_fraction * target.pes)
    grid_txt = f"the {target.width}x{target.height} grid of {target.name}"
    if fits.any():
        need = int(mem[fits].min())
        return LayoutInfeasible(
            f"{where(k)} has no legal size: it needs at least {need} bytes of SRAM per PE but "
            f"a PE has {target.sram_bytes} (shortfall {need - target.sram_bytes} bytes) at "
            f"every shape that fits {grid_txt}; use a larger target or grid, or a smaller model")
    need = int(mem.min())
    return LayoutInfeasible(
        f"{where(k)} has no legal size: no knob setting fits {grid_txt} (max area fraction "
        f"{max_area_fraction:g}) within the {target.sram_bytes}-byte SRAM of a PE (smallest "
        f"SRAM need {need} bytes); use a larger target or grid, or a smaller model")


@lru_cache(maxsize=1024)
def least_need(kind_name: str, dims: tuple[tuple[str, int], ...], target: Target
               ) -> tuple[int, int]:
    """(PEs, bytes) of the knob setting fitting the grid with the fewest total
    SRAM bytes, ignoring the per-PE limit (what a kernel with no legal size
    would need); (0, 0) when nothing fits the grid at all."""
    _, (w, h, _, mem) = evaluate_all(kind_name, dims, target)
    fits = Fabric.of(target).fits_array(w, h)
    if not fits.any():
        return 0, 0
    area = (w * h)[fits]
    total = area * mem[fits]
    i = int(np.argmin(total))
    return int(area[i]), int(total[i])


def kernel_shape(k: Kernel, target: Target) -> tuple[int, int]:
    """Unrotated (w, h) of a sized kernel: the sizer's recorded `cost` w/h
    (which it took from the kernel kind), else the kind's `shape`."""
    if k.cost and "w" in k.cost and "h" in k.cost:
        return int(k.cost["w"]), int(k.cost["h"])
    if k.knobs is None:
        raise PassError(f"kernel '{k.name}' ({k.kind}) has no knobs: run the size pass first")
    w, h = kind_of(k).shape(k.dims, k.knobs, target)
    return int(w), int(h)


def set_choice(k: Kernel, c: Choice) -> None:
    """Give kernel `k` the knobs of choice `c` and record what they cost."""
    k.knobs = c.knob_dict()
    k.cost = {"cycles": int(c.cycles), "sram": int(c.sram), "w": int(c.w), "h": int(c.h)}


@lru_cache(maxsize=1024)
def _legal_grid(kind_name: str, dims: tuple[tuple[str, int], ...], target: Target
                ) -> tuple[np.ndarray, ...]:
    """Every legal knob setting of a kind (SRAM- and grid-legal): (knob
    matrix, w, h, cycles, sram). For kinds whose knob space is small."""
    names = list(KINDS[kind_name].knob_names)
    flat, (w, h, cyc, mem) = evaluate_all(kind_name, dims, target)
    ok = Fabric.of(target).legal_array(w, h, mem)
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
    knobs, w, h, cyc, mem = _legal_grid(k.kind, tuple(sorted(k.dims.items())), target)
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


def shapes_at_width(k: Kernel, target: Target, t: int, w: int) -> list[Choice]:
    """Every shape of kernel `k` exactly `w` PEs wide running in <= t cycles,
    one per height (its fewest cycles, then least SRAM), lowest first. Most
    are taller than `shape_options`' shape of that width, which drops them
    (a lower shape of that width exists), but a producer's output side is
    its PE rows: a taller producer lets its consumer's rows be fed by
    uniform lanes (wsec.passes.place_rows). Kinds with their own
    `shapes_for_time`: none."""
    kind = kind_of(k)
    if getattr(kind, "shapes_for_time", None) is not None:
        return []
    knobs, ws, h, cyc, mem = _legal_grid(k.kind, tuple(sorted(k.dims.items())), target)
    sel = np.nonzero((ws == w) & (cyc <= t))[0]
    sel = sel[np.lexsort((mem[sel], cyc[sel], h[sel]))]  # height, then fastest, then cheapest
    names = list(kind.knob_names)
    out: list[Choice] = []
    for i in sel:
        if out and out[-1].h == int(h[i]):
            continue
        out.append(Choice(tuple((n, int(knobs[i, j])) for j, n in enumerate(names)),
                          int(ws[i]), int(h[i]), int(cyc[i]), int(mem[i])))
    return out


# --- a whole module ---------------------------------------------------------------------
@dataclass
class SizingTables:
    """Per kernel of a module: frontier cycles ascending and the matching areas."""

    kernels: list[Kernel]
    cycles: list[np.ndarray]
    areas: list[np.ndarray]
    fronts: list[list[Choice]]  # cycles ascending, area descending

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

    def choices_at(self, t: int) -> list[Choice]:
        """Each kernel's minimum-area choice running in <= t cycles."""
        idx, _ = self.pick(np.array([t], dtype=np.int64))
        return [self.fronts[i][int(idx[i, 0])] for i in range(len(self.kernels))]

    def choice_lists(self) -> list[list[Choice]]:
        return self.fronts

    def candidate_times(self) -> np.ndarray:
        """Sorted distinct times at which some kernel's minimum area changes,
        from the slowest kernel's fastest time up."""
        if not self.cycles:
            return np.zeros(0, dtype=np.int64)
        floor = max(int(c[0]) for c in self.cycles)  # no kernel can be faster than its best
        cand = np.unique(np.concatenate(self.cycles))
        return cand[cand >= floor]

    def smallest_time(self, cap: float) -> int | None:
        """Smallest candidate time whose total minimum area is <= cap."""
        return smallest_time(self.fronts, cap)


def sizing_tables(module: Module, target: Target, max_area_fraction: float = 1.0
                  ) -> SizingTables:
    """Every kernel's frontier; LayoutInfeasible naming a kernel with none."""
    kernels = list(module.kernels())
    cycles, areas, fronts = [], [], []
    for k in kernels:
        front = kernel_choices(k, target, max_area_fraction)
        if not front:
            raise no_choice_error(k, target, max_area_fraction)
        front = front[::-1]  # cycles ascending, area descending
        fronts.append(front)
        cycles.append(np.array([c.cycles for c in front], dtype=np.int64))
        areas.append(np.array([c.area for c in front], dtype=np.float64))
    return SizingTables(kernels, cycles, areas, fronts)


def size_for_time(module: Module, target: Target, t: int,
                  max_area_fraction: float = 1.0) -> dict[str, Choice]:
    """Each kernel's minimum-area choice running in <= t cycles per sample
    (the placer calls this with a relaxed t when packing fails)."""
    tab = sizing_tables(module, target, max_area_fraction)
    for i, k in enumerate(tab.kernels):
        if tab.cycles[i][0] > t:
            raise LayoutInfeasible(f"kernel '{k.name}' ({k.kind}) cannot run in {t} cycles per "
                                   f"sample: its fastest legal size takes "
                                   f"{int(tab.cycles[i][0])}")
    return {k.name: c for k, c in zip(tab.kernels, tab.choices_at(t), strict=True)}


def shapes_for_time(module: Module, target: Target, t: int) -> dict[str, list[Choice]]:
    """Per kernel, its shape alternatives meeting t (see `shape_options`);
    the placer picks among them to pack tightly. Raises LayoutInfeasible
    naming a kernel that cannot meet t at all."""
    out: dict[str, list[Choice]] = {}
    for k in module.kernels():
        opts = shape_options(k, target, t)
        if not opts:
            raise LayoutInfeasible(f"kernel '{k.name}' ({k.kind}) cannot run in {t} cycles per "
                                   "sample at any legal shape")
        out[k.name] = opts
    return out


def candidate_times(module: Module, target: Target) -> np.ndarray:
    """Sorted distinct bottleneck times at which some kernel's minimum area
    changes (no kernel can be faster than the slowest kernel's best): the
    only times worth trying when relaxing the bottleneck."""
    return sizing_tables(module, target).candidate_times()


def module_bound(module: Module, target: Target) -> int:
    """The area-sizing bound on the bottleneck time of a kernel-level module."""
    tab = sizing_tables(module, target)
    t = tab.smallest_time(float(target.pes))
    if t is None:
        raise too_big_error(tab, target)
    return t


def too_big_error(tab: SizingTables, target: Target) -> LayoutInfeasible:
    """The model does not fit the grid even at every kernel's smallest size."""
    need = int(sum(a[-1] for a in tab.areas))
    big = max(range(len(tab.kernels)), key=lambda i: tab.areas[i][-1])
    k = tab.kernels[big]
    return LayoutInfeasible(
        f"the model needs at least {need} PEs at its smallest legal sizes but the "
        f"{target.width}x{target.height} grid of {target.name} has {target.pes} (largest: "
        f"kernel '{k.name}' ({k.kind}) needs {int(tab.areas[big][-1])}); use a larger target "
        f"or grid, or a smaller model")
