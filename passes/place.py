"""Placement: give every sized kernel a rectangle of PEs on the grid.

Why this shape of search: the bottleneck time Δt is what matters most, and
the sizer aims it at the area-sizing bound, where the kernels' areas fill
nearly the whole grid. Packing then loses area to gaps, so the placer may
have to relax Δt; it relaxes it by the least step that packs:

1. At a bottleneck time t, every kernel has several shapes of near-equal
   area meeting t (the sizing model's `shapes_for_time`, wsec.ir.sizing). The shelf packer
   (place_shelf) picks one per kernel so that dataflow-ordered runs of
   kernels fill full-width shelves; the skyline front packer (place_front)
   on the minimum-area shapes is the fallback. The layout with the shorter
   wires wins.
2. If nothing packs at the sizer's t, the placer gallops up the sorted
   distinct candidate times (the times at which some kernel's minimum area
   changes: `candidate_times`), then bisects between the last failure and
   the first success, so Δt ends at the smallest candidate that packed.
3. CP-SAT (place_cpsat) then moves the fixed-shape rectangles to shorten
   the wires: a deterministic large-neighbourhood search that re-places
   windows of rectangles from the current layout, within the time budget.

Options: `seed` (CP-SAT and the front packer's tie-breaking), `effort`
(fast | normal | high: search steps and refinement time), `objective`
(bytes: wires weigh bytes per sample, host I/O on the West/East edges;
edges: every kernel-to-kernel connection weighs 1), `refine` (seconds of
CP-SAT refinement; -1: 0 when fast, else 0.5 s, 10 s when high, or with a
time limit whatever the search left of it),
`reshape` (false: keep every kernel's sized shape and bottleneck; only
rotations and positions are chosen), `flow` (true, the default for routed
modules: kernels in dataflow order on shelves one kernel deep, rows
unrotated, so a producer's output side faces its consumer's input side and
bundles of lanes run short and straight; false: the densest packing, for
graphs that are not routed, such as the ISPD contest's), `wdeltat` and `wlength` (the weights
of the objective wdeltat x Δt + wlength x wirelength: with wlength > 0 the
bottleneck time is traded for wirelength by place_tradeoff; 0, the
default: Δt first, wires second).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from wsec.ir import sizing
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Edge, Module, Rect
from wsec.ir.kernel_kind import Choice
from wsec.ir.metrics import placed_wirelength
from wsec.ir.sizing import kernel_shape, set_choice
from wsec.ir.target import Target
from wsec.ir.training import is_training, placement_order

from . import place_congestion as congestion
from .base import LayoutInfeasible, Pass, PassContext, check_choice, check_range
from .place_front import OBJECTIVES, Packing, Problem, build_problem, problem_wirelength, try_pack
from .place_rows import open_corners, raise_producers
from .place_runs import face_placed
from .place_shelf import MAX_STACK, shelf_pack
from .place_slide import slide_short_kernels

EFFORTS = ("fast", "normal", "high")
_SEARCH_STEPS = {"fast": 12, "normal": 40, "high": 80}
_REFINE_SECONDS = {"fast": 0.0, "normal": 0.5, "high": 10.0}
_SEARCH_SHARE = 0.5  # of a time limit the t search may use before settling


@dataclass
class _Layout:
    """A legal packing at bottleneck time t: per kernel its new sizing
    (None: keep the current one), rect and rotation."""

    t: int
    choices: list[Choice | None]
    rects: list[tuple[int, int, int, int]]
    rotated: list[bool]
    how: str


@dataclass
class _Hooks:
    """The sizing model's functions the placer re-sizes through (all None:
    keep every kernel's sized shape)."""

    shapes: Callable[..., dict[str, list[Choice]]] | None
    size: Callable[..., dict[str, Choice]] | None
    times: Callable[..., np.ndarray] | None
    # a kernel's shapes of one width (taller ones too): raise_producers (place_rows)
    at_width: Callable[..., list[Choice]] | None = None


def _hooks() -> _Hooks:
    return _Hooks(sizing.shapes_for_time, sizing.size_for_time, sizing.candidate_times,
                  sizing.shapes_at_width)


class _Packer:
    """Packs the module's kernels at a given bottleneck time (or as sized)."""

    def __init__(self, module: Module, target: Target, hooks: _Hooks, effort: str, seed: int,
                 objective: str, flow: bool = False, shelves_only: bool = False) -> None:
        self.module, self.target, self.hooks = module, target, hooks
        self.effort, self.seed, self.objective = effort, seed, objective
        self.flow = flow
        self.shelves_only = shelves_only  # dataflow-ordered shelves, never the front packer
        self.kernels = list(module.kernels())
        self.current = np.array([kernel_shape(k, target) for k in self.kernels],
                                dtype=np.int64).reshape(-1, 2)
        self.base = build_problem(module, self.current, target.width, target.height, objective)
        self.last_failure: tuple[Problem, Packing] | None = None
        # a training step packs each layer's backward kernels beside its forward ones
        self.order = (placement_order(self.kernels) if is_training(module.attrs)
                      else list(range(len(self.kernels))))
        self.attempts = 0

    def at(self, t: int | None, full: bool = True) -> _Layout | None:
        """A layout whose kernels all run in <= t cycles (t None: as sized).
        full=False only decides whether one exists (cheaper: the densest
        variant first, the others only if it fails); full=True tries every
        variant and returns the one with the shortest wires."""
        self.attempts += 1
        W, H = self.target.width, self.target.height
        names = [k.name for k in self.kernels]
        options: list[list[Choice]] | None = None
        if t is not None and self.hooks.shapes is not None:
            try:
                by_name = self.hooks.shapes(self.module, self.target, t)
            except LayoutInfeasible:
                return None
            options = [by_name[n] for n in names]
        found: list[_Layout] = []
        shapes = ([np.array([(c.w, c.h) for c in o], dtype=np.int64) for o in options]
                  if options is not None else [self.current[i:i + 1] for i in range(len(names))])
        order = self.order
        if self.flow:
            for transpose in (False, True):
                lay = _shelf_flow(shapes, order, W, H, transpose)
                if lay is not None:
                    opt, rects, rot = lay
                    ch = ([options[i][opt[i]] for i in range(len(order))]
                          if options is not None else [None] * len(order))
                    if full and t is not None:
                        self._raise(t, ch, rects, rot)
                    found.append(_Layout(t or 0, ch, rects, rot, "flow"))
                    if not full:
                        return found[0]
            if found or self.flow:
                return (min(found, key=lambda la: problem_wirelength(self.base, list(la.rects)))
                        if found else None)
        for transpose in ((False, True) if W != H else (False,)):
            # stacking more kernels per column packs denser but may lengthen
            # wires: keep every stack depth that fits, the shortest wires win
            for stack in (MAX_STACK, *range(1, MAX_STACK)):
                lay = _shelf(shapes, order, W, H, transpose, stack)
                if lay is None:
                    break  # the deepest stack failed: shallower ones cannot fit
                opt, rects, rot = lay
                ch = ([options[i][opt[i]] for i in range(len(order))]
                      if options is not None else [None] * len(order))
                found.append(_Layout(t or 0, ch, rects, rot, f"shelf{stack}"))
                if not full:
                    return found[0]
        front = self._front(t) if (full or not found) and not self.shelves_only else None
        if front is not None:
            found.append(front)
        if not found:
            return None
        return min(found, key=lambda la: problem_wirelength(self.base, list(la.rects)))

    def _raise(self, t: int, choices: list[Choice | None],
               rects: list[tuple[int, int, int, int]], rotated: list[bool]) -> None:
        """Producers of a flow layout as tall as the rows of the consumers
        that cut their output, where the column beyond them is free
        (place_rows): their bundles then land uniform on straight paths."""
        at_width = self.hooks.at_width
        if at_width is None:
            return
        ks = self.kernels
        memo: dict[tuple[int, int], list[Choice]] = {}

        def taller(i: int, w: int) -> list[Choice]:
            if (i, w) not in memo:
                memo[(i, w)] = at_width(ks[i], self.target, t, w)
            return memo[(i, w)]

        raise_producers(self.module, ks, self.order, choices, rects, rotated,
                        self.target.width, self.target.height, taller, t,
                        self.target.wavelet_bytes)
        open_corners(self.module, ks, self.order, choices, rects, rotated,
                     self.target.width, self.target.height, t, self.target.wavelet_bytes)

    def _front(self, t: int | None) -> _Layout | None:
        choices: list[Choice | None] = [None] * len(self.kernels)
        shapes = self.current
        if t is not None and self.hooks.size is not None:
            try:
                by_name = self.hooks.size(self.module, self.target, t)
            except LayoutInfeasible:
                return None
            choices = [by_name.get(k.name) for k in self.kernels]
            shapes = np.array([(c.w, c.h) if c is not None else tuple(self.current[i])
                               for i, c in enumerate(choices)], dtype=np.int64).reshape(-1, 2)
        prob = build_problem(self.module, shapes, self.target.width, self.target.height,
                             self.objective)
        packed, furthest = try_pack(prob, self.effort, self.seed)
        if packed is None:
            if furthest is not None:
                self.last_failure = (prob, furthest)
            return None
        rects = [r for r in packed.rects if r is not None]
        return _Layout(t or 0, choices, rects, list(packed.rotated), "front")


def _shelf(shapes: list[np.ndarray], order: list[int], W: int, H: int, transpose: bool,
           stack: int) -> tuple[list[int], list[tuple[int, int, int, int]], list[bool]] | None:
    """Shelf packing (rows; columns when transposed): options, rects, rotations."""
    if transpose:
        pk = shelf_pack([s[:, ::-1] for s in shapes], order, H, W, stack)
        if pk is None:
            return None
        return pk.option, [(y, x, h, w) for x, y, w, h in pk.rects], pk.rotated
    pk = shelf_pack(shapes, order, W, H, stack)
    return None if pk is None else (pk.option, pk.rects, pk.rotated)


def _shelf_flow(shapes: list[np.ndarray], order: list[int], W: int, H: int, transpose: bool
                ) -> tuple[list[int], list[tuple[int, int, int, int]], list[bool]] | None:
    """Flow shelves: one kernel per column, every kernel's rows along the shelf
    (unrotated in row shelves; rotated in column shelves, when transposed),
    so consecutive kernels face each other with the ends of their rows and
    their bundles run straight."""
    if transpose:  # columns: the transposed frame's "as given" is rotated here
        pk = shelf_pack(shapes, order, H, W, 1, rotate=False)
        if pk is None:
            return None
        return pk.option, [(y, x, h, w) for x, y, w, h in pk.rects], [True] * len(pk.rects)
    pk = shelf_pack(shapes, order, W, H, 1, rotate=False)
    return None if pk is None else (pk.option, pk.rects, pk.rotated)


def _search(packer: _Packer, t0: int, steps: int, deadline: float | None) -> _Layout | None:
    """The smallest candidate time above t0 that packs: gallop, then bisect."""
    if packer.hooks.times is None:
        return None
    cands = packer.hooks.times(packer.module, packer.target)
    cands = np.asarray(cands, dtype=np.int64)
    cands = cands[cands > t0]
    best: _Layout | None = None
    lo, hi, step, idx = -1, -1, 1, 0
    while idx < cands.size and packer.attempts < steps:
        lay = packer.at(int(cands[idx]), full=False)
        if lay is not None:
            best, hi = lay, idx
            break
        lo = idx
        idx = min(lo + step, cands.size - 1) if lo < cands.size - 1 else cands.size
        step *= 2
    if best is None:
        return None
    while hi - lo > 1 and packer.attempts < steps and (deadline is None
                                                       or time.perf_counter() < deadline):
        mid = (lo + hi) // 2
        lay = packer.at(int(cands[mid]), full=False)
        if lay is not None:
            best, hi = lay, mid
        else:
            lo = mid
    return best


# relaxed bottleneck times _slower_shelves tries above the first that packs
SLOWER_STEPS = (1.05, 1.1, 1.2, 1.3)


def _slower_shelves(packer: _Packer, prob: Problem, lay: _Layout, est: float, wb: int
                    ) -> tuple[_Layout, float]:
    """The shelf layout with the fewest estimated realised cycles among the
    first that packs (at lay.t) and those at a few slower times: a link-bound
    layout may run faster at a slower Δt, whose smaller kernels leave the
    bundles room (each link's capacity is still one wavelet per cycle, but
    their estimated load falls faster than Δt rises)."""
    if packer.hooks.times is None:
        return lay, est
    cands = np.asarray(packer.hooks.times(packer.module, packer.target), dtype=np.int64)
    first = lay.t
    tried = {first}
    for f in SLOWER_STEPS:
        above = cands[cands >= round(f * first)]
        if not above.size or float(above[0]) >= est:
            break  # no slower time can beat the estimate already in hand
        t = int(above[0])
        if t in tried:
            continue
        tried.add(t)
        got = packer.at(t)
        if got is None:
            continue
        got_est = congestion.realised(prob, list(got.rects), t, wb)
        if got_est < est:
            lay, est = got, got_est
    return lay, est


def _failure(module: Module, prob: Problem, pk: Packing, target: Target) -> LayoutInfeasible:
    i = pk.failed if pk.failed is not None else 0
    k = module.kernel(prob.names[i])
    w, h = (int(v) for v in prob.shapes[i])
    grid = f"{target.width}x{target.height}"
    total = int(prob.shapes.prod(axis=1).sum())
    if not Fabric.of(target).fits(w, h):
        return LayoutInfeasible(f"kernel '{k.name}' ({k.kind}) needs {w}x{h} PEs but the grid "
                                f"is {grid}; use a larger grid (--grid) or target, or re-size "
                                f"the kernel for a slower time")
    used = sum(r[2] * r[3] for r in pk.rects if r is not None)
    return LayoutInfeasible(
        f"kernel '{k.name}' ({k.kind}) of shape {w}x{h} PEs did not fit: {target.pes - used} of "
        f"{target.pes} PEs are free in the {grid} grid after placing {pk.placed} of "
        f"{len(prob.names)} kernels (all kernels need {total} PEs); use a larger grid "
        f"(--grid) or target, or size the model for a slower bottleneck time")


def _apply(module: Module, lay: _Layout) -> None:
    for k, c, r, rot in zip(module.kernels(), lay.choices, lay.rects, lay.rotated, strict=True):
        if c is not None and (k.knobs != c.knob_dict() or not k.cost
                              or (k.cost.get("w"), k.cost.get("h")) != (c.w, c.h)):
            set_choice(k, c)
            k.sram = None  # an SRAM map made for the old knobs is stale
        k.rect = Rect(*r)
        k.rotated = rot


@dataclass(frozen=True)
class Place(Pass):
    """Place sized kernels as non-overlapping rectangles on the grid."""

    name = "place"
    requires = ("sized",)
    ensures = ("placed",)
    invalidates = ("routed", "allocated")
    seed: int = 0
    effort: str = "normal"
    objective: str = "bytes"
    refine: float = -1.0
    reshape: bool = True
    wdeltat: float = 1.0
    wlength: float = 0.0
    flow: bool = True

    def __post_init__(self) -> None:
        check_choice(self, "effort", EFFORTS)
        check_choice(self, "objective", OBJECTIVES)
        if self.refine != -1.0:
            check_range(self, "refine", 0.0)
        check_range(self, "wdeltat", 0.0)
        check_range(self, "wlength", 0.0)

    def run(self, module: Module, ctx: PassContext) -> None:
        if self.wlength > 0 and self.reshape:
            self._run_weighted(module, ctx)
            return
        start = time.perf_counter()
        target = ctx.target
        deadline = ctx.deadline(start, _SEARCH_SHARE)
        hooks = _hooks() if self.reshape else _Hooks(None, None, None)
        t0 = max((int(k.cost["cycles"]) for k in module.kernels() if k.cost), default=0)
        lay = None
        # flow shelves first; when they fit at no size (hundreds of kernels one deep),
        # the densest packing
        # a training step runs forward then backward: its dataflow order folds back
        # on itself, so dataflow-ordered shelves would not shorten its edges; it is
        # packed densely in layer order instead (forward kernel, then its backward
        # kernels: wsec.ir.training.placement_order). One kernel deep, that order
        # would send every layer's gradient and update bundles to the host along
        # the same few rows
        want_flow = self.flow and not is_training(module.attrs)
        for flow in dict.fromkeys((want_flow, False)):
            packer = _Packer(module, target, hooks, self.effort, self.seed, self.objective, flow)
            lay = packer.at(t0 if hooks.shapes is not None else None)
            if lay is None:
                lay = _search(packer, t0, _SEARCH_STEPS[self.effort], deadline)
                if lay is not None:
                    lay = packer.at(lay.t) or lay  # every variant at the time found
                    ctx.notes.append(f"place: re-sized kernels for a bottleneck of {lay.t} "
                                     f"cycles (was {t0}) so that they fit the grid")
            if lay is not None:
                if flow != want_flow:
                    ctx.notes.append("place: no dataflow-ordered shelf layout fits at any size; "
                                     "packed densest instead")
                break
        if lay is None:
            if packer.last_failure is not None:
                raise _failure(module, *packer.last_failure, target)
            raise LayoutInfeasible(f"place: the {len(packer.kernels)} kernels do not fit the "
                                   f"{target.width}x{target.height} grid at any size; use a "
                                   f"larger grid")
        if want_flow and lay.how != "flow" and self.objective == "bytes":  # a routed module
            lay = self._routable(module, target, hooks, lay, deadline, ctx)
        _apply(module, lay)
        if lay.how != "flow":  # moving rectangles would turn flow shelves away from each other
            self._refine(module, target, lay, ctx.time_limit, start, ctx)
        else:  # short kernels off the rows that bundles passing them need
            cap = max((int(k.cost["cycles"]) for k in module.kernels() if k.cost), default=0)
            moved = slide_short_kernels(module, ctx.fabric, cap, all(lay.rotated))
            if moved:
                ctx.notes.append(f"place: {moved} kernel(s) shorter than their shelf moved "
                                 "off the rows of bundles passing them")
            faced = face_placed(module, target.width, target.height)
            if faced:
                ctx.notes.append(f"place: {faced} concatenation input(s) moved to face the "
                                 "rows reading them")
        _invalidate_routes(module.edges)
        ks = list(module.kernels())
        module.attrs["delta_t"] = int(max((k.cost["cycles"] for k in ks if k.cost), default=0))
        module.attrs["wirelength"] = int(round(placed_wirelength(module, ctx.fabric)))
        module.attrs["pes_used"] = int(sum(k.rect.area for k in ks if k.rect))

    def _routable(self, module: Module, target: Target, hooks: _Hooks, lay: _Layout,
                  deadline: float | None, ctx: PassContext) -> _Layout:
        """The dense layout, or dataflow-ordered shelves at a slower Δt when
        their estimated realised cycles per sample (the larger of Δt and the
        busiest link, place_congestion) are fewer: the front packer fits at
        the smallest Δt by scattering kernels, and its long bundles can
        load links many times Δt or need more colors than there are."""
        prob = build_problem(module, np.array([r[2:] for r in lay.rects], dtype=np.int64),
                             target.width, target.height, self.objective)
        wb = target.wavelet_bytes
        est = congestion.realised(prob, list(lay.rects), lay.t, wb)
        if est <= lay.t or lay.how.startswith("shelf") or hooks.shapes is None:
            return lay
        packer = _Packer(module, target, hooks, self.effort, self.seed, self.objective,
                         shelves_only=True)
        alt = packer.at(lay.t, full=False) or _search(packer, lay.t, _SEARCH_STEPS[self.effort],
                                                       deadline)
        if alt is None or alt.t >= est:
            return lay
        alt = packer.at(alt.t) or alt  # every shelf variant at that time: the shortest wires
        alt_est = congestion.realised(prob, list(alt.rects), alt.t, wb)
        alt, alt_est = _slower_shelves(packer, prob, alt, alt_est, wb)
        if alt_est >= est:
            return lay
        ctx.notes.append(f"place: shelves of stacked kernels in dataflow order at a bottleneck "
                         f"of {alt.t} cycles instead of the {lay.how} packing at {lay.t}: "
                         f"realised cycles per sample estimated at {alt_est:.4g} against "
                         f"{est:.4g} (busiest link, place_congestion)")
        return alt

    def _refine(self, module: Module, target: Target, lay: _Layout, limit: float | None,
                start: float, ctx: PassContext) -> None:
        # by effort (fast: none); with a time limit, what it leaves (a margin kept):
        # planned as if the search took its share when no wall clock counts
        seconds = _REFINE_SECONDS[self.effort] if self.refine < 0 else self.refine
        wall: float | None = None
        if limit is not None:
            spent = time.perf_counter() - start if ctx.wall_clock else _SEARCH_SHARE * limit
            left = 0.8 * (limit - spent - 0.5)
            if ctx.wall_clock:
                wall = limit - spent - 0.5
            seconds = min(left, seconds if self.refine >= 0 or self.effort == "fast" else left)
        ks = list(module.kernels())
        if seconds <= 0.05:
            return
        try:
            from .place_cpsat import refine
        except ImportError:  # ortools missing: the constructive layout stands
            return
        shapes = np.array([(k.rect.w, k.rect.h) for k in ks if k.rect], dtype=np.int64)
        prob = build_problem(module, shapes, target.width, target.height, self.objective)
        rects, stats = refine(prob, [(r.x, r.y, r.w, r.h) for r in (k.rect for k in ks)
                                     if r is not None], seconds, self.seed, wall)
        for k, r in zip(ks, rects, strict=True):
            k.rect = Rect(*r)
        ctx.notes.append(_refine_note(stats))


    def _run_weighted(self, module: Module, ctx: PassContext) -> None:
        """Minimise wdeltat x Δt + wlength x wirelength (place_tradeoff), with
        this pass's Δt-first search as its first candidate."""
        from dataclasses import replace

        from wsec.ir.objective import Objective

        from .place_tradeoff import place_weighted

        first = replace(self, wlength=0.0, refine=0.0)
        did = place_weighted(module, ctx, Objective(self.wdeltat, self.wlength), self.objective,
                             self.seed, self.effort, self.refine, first.run)
        ctx.notes.append(f"place: weighted objective {did['value']:.6g} (wdeltat "
                         f"{self.wdeltat:g} x Δt {did['delta_t']:g} + wlength {self.wlength:g} x "
                         f"wirelength {did['wire']:.6g}) from the {did['how']} layout at "
                         f"{did['t']} cycles, {did['tried']} bottleneck times tried")
        if did["refine"] is not None:
            ctx.notes.append(_refine_note(did["refine"]))
        _invalidate_routes(module.edges)
        ks = list(module.kernels())
        module.attrs["delta_t"] = int(max((k.cost["cycles"] for k in ks if k.cost), default=0))
        module.attrs["wirelength"] = int(round(placed_wirelength(module, ctx.fabric)))
        module.attrs["pes_used"] = int(sum(k.rect.area for k in ks if k.rect))


def _refine_note(stats: dict[str, Any]) -> str:
    gain = 0.0 if not stats["before"] else 1 - stats["after"] / stats["before"]
    return (f"place: CP-SAT refinement ({stats['rounds']} rounds, {stats['status']}, "
            f"{stats['seconds']:.1f} s) shortened the weighted wirelength by {100 * gain:.1f}%")


def _invalidate_routes(edges: list[Edge]) -> None:
    for e in edges:
        e.bundles = None
