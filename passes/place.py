"""Placement: give every sized kernel a rectangle of PEs on the grid.

Why a constructive skyline packer: a wafer holds hundreds to a few thousand
kernels whose rectangles must tile most of the grid, and consecutive kernels
of the dataflow should sit side by side so their edges stay short. Kernels
are taken in dataflow (topological) order and each goes to the spot along a
packing front that minimises

    front advance + gap left under it + byte-weighted distance to the
    neighbours already placed,

trying both rotations. The front moves West -> East (host inputs enter on
the West edge, outputs leave on the East edge), so the dataflow follows the
I/O direction; the scan over every lane position is a handful of numpy
operations per kernel, so ~1000 kernels place in well under a second.

When packing fails the pass retries with other strategies (front moving
North, area-first order, more compact weighting), then asks the sizer's
`size_for_time` hook (if present) to re-size for a slightly slower
bottleneck time, and finally raises a `PassError` naming the kernel that did
not fit, its shape and the free area.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from wsec.ir.graph import HOST, Edge, Kernel, Module, Rect
from wsec.ir.kernels import kind_of
from wsec.ir.target import Target

from .base import Pass, PassContext, PassError

EFFORTS = ("fast", "normal", "high")
_RESIZE_STEPS = {"fast": 3, "normal": 8, "high": 16}
_RESIZE_RELAX = 1.05  # each re-size round allows a 5% slower bottleneck


def kernel_shape(k: Kernel, target: Target) -> tuple[int, int]:
    """Unrotated (w, h) of a sized kernel: the sizer's recorded `cost` w/h
    (which it took from the kernel kind), else the kind's `shape`."""
    if k.cost and "w" in k.cost and "h" in k.cost:
        return int(k.cost["w"]), int(k.cost["h"])
    if k.knobs is None:
        raise PassError(f"kernel '{k.name}' ({k.kind}) has no knobs: run the size pass first")
    w, h = kind_of(k).shape(k.dims, k.knobs, target)
    return int(w), int(h)


@dataclass(frozen=True)
class _Strategy:
    """One way to pack: which axis the front grows along, the kernel order
    and how much distance to neighbours / wasted gaps weigh."""

    axis: str  # "x": front moves East (lanes are rows); "y": moves North
    order: str  # "dataflow", "area" or "shuffle"
    dist_weight: float
    waste_weight: float


_STRATEGIES = (
    _Strategy("x", "dataflow", 1.0, 1.0),
    _Strategy("y", "dataflow", 1.0, 1.0),
    _Strategy("x", "dataflow", 0.1, 2.0),
    _Strategy("x", "area", 0.0, 1.0),
    _Strategy("y", "area", 0.0, 1.0),
)


@dataclass
class _Problem:
    """Placement input as arrays: shapes, neighbour lists, grid."""

    names: list[str]
    shapes: np.ndarray  # (n, 2) unrotated w, h
    nbrs: list[list[tuple[int, float]]]  # per kernel: (other kernel, bytes)
    host_in: np.ndarray  # bytes from host per kernel
    host_out: np.ndarray  # bytes to host per kernel
    width: int
    height: int


@dataclass
class _Packing:
    rects: list[tuple[int, int, int, int] | None]
    rotated: list[bool]
    failed: int | None  # index of the kernel that did not fit
    placed: int

    def wirelength(self, prob: _Problem) -> float:
        return _wirelength_arrays(prob, self.rects)


def _window_max(a: np.ndarray, w: int) -> np.ndarray:
    """max(a[i:i+w]) for every i in 0..len(a)-w, by doubling (O(n log w))."""
    m, span = a, 1
    while span * 2 <= w:
        m = np.maximum(m[:-span], m[span:])
        span *= 2
    n = len(a) - w + 1
    return np.maximum(m[:n], m[w - span:w - span + n])


def _pack(prob: _Problem, order: list[int], strat: _Strategy,
          jitter: np.random.Generator | None) -> _Packing:
    """Skyline-pack kernels in `order`; stop at the first that does not fit."""
    along_x = strat.axis == "x"
    n_lanes, n_grow = (prob.height, prob.width) if along_x else (prob.width, prob.height)
    sky = np.zeros(n_lanes, dtype=np.int64)
    n = len(prob.names)
    rects: list[tuple[int, int, int, int] | None] = [None] * n
    rotated = [False] * n
    centres = np.zeros((n, 2))
    for count, i in enumerate(order):
        w0, h0 = (int(v) for v in prob.shapes[i])
        best: tuple[float, int, int, int, int, bool] | None = None
        csum = np.concatenate(([0], np.cumsum(sky)))
        nb = [(j, b) for j, b in prob.nbrs[i] if rects[j] is not None]
        for rot in ((False, True) if w0 != h0 else (False,)):
            pw, ph = (h0, w0) if rot else (w0, h0)
            a, g = (ph, pw) if along_x else (pw, ph)
            if a > n_lanes or g > n_grow:
                continue
            pos = _window_max(sky, a)  # front position for lanes l..l+a
            lanes = np.arange(pos.size)
            waste = (a * pos - (csum[a:] - csum[:-a])) / a
            cost = (pos + g) + strat.waste_weight * waste
            cx, cy = ((pos + g / 2.0, lanes + a / 2.0) if along_x
                      else (lanes + a / 2.0, pos + g / 2.0))
            total_b = prob.host_in[i] + prob.host_out[i] + sum(b for _, b in nb)
            if strat.dist_weight and total_b > 0:
                dist = prob.host_in[i] * cx + prob.host_out[i] * (prob.width - cx)
                if nb:
                    idx = np.array([j for j, _ in nb])
                    bts = np.array([b for _, b in nb])
                    nx, ny = centres[idx, 0], centres[idx, 1]
                    dist = dist + (np.abs(cx[:, None] - nx) + np.abs(cy[:, None] - ny)) @ bts
                cost = cost + strat.dist_weight * dist / total_b
            if jitter is not None:
                cost = cost + jitter.random(cost.size) * 1e-3
            cost = np.where(pos + g <= n_grow, cost, np.inf)
            k = int(np.argmin(cost))
            if np.isfinite(cost[k]) and (best is None or cost[k] < best[0]):
                best = (float(cost[k]), k, int(pos[k]), a, g, rot)
        if best is None:
            return _Packing(rects, rotated, i, count)
        _, lane, p, a, g, rot = best
        sky[lane:lane + a] = p + g
        x, y, w, h = (p, lane, g, a) if along_x else (lane, p, a, g)
        rects[i] = (x, y, w, h)
        rotated[i] = rot
        centres[i] = (x + w / 2.0, y + h / 2.0)
    return _Packing(rects, rotated, None, n)


def _wirelength_arrays(prob: _Problem, rects: list[tuple[int, int, int, int] | None]) -> float:
    cen = np.array([(r[0] + r[2] / 2.0, r[1] + r[3] / 2.0) if r else (0.0, 0.0) for r in rects])
    total = float(np.dot(prob.host_in, cen[:, 0]) if len(rects) else 0.0)
    total += float(np.dot(prob.host_out, prob.width - cen[:, 0])) if len(rects) else 0.0
    for i, lst in enumerate(prob.nbrs):
        for j, b in lst:
            if j > i:  # each kernel pair once (lists are symmetric)
                total += b * float(np.abs(cen[i] - cen[j]).sum())
    return total


def wirelength(module: Module, target: Target) -> int:
    """Σ over edges of bytes per sample x Manhattan distance between rect
    centres of the source and each destination; host inputs sit on the West
    edge (x = 0), host outputs on the East edge (x = width), same row."""
    rects = {k.name: k.rect for k in module.kernels()}
    total = 0.0
    for e in module.edges:
        s = rects.get(e.src)
        for d in e.dsts:
            r = rects.get(d)
            if e.src == HOST and r is not None:
                total += e.bytes_per_sample * r.centre()[0]
            elif d == HOST and s is not None:
                total += e.bytes_per_sample * (target.width - s.centre()[0])
            elif s is not None and r is not None:
                (sx, sy), (dx, dy) = s.centre(), r.centre()
                total += e.bytes_per_sample * (abs(sx - dx) + abs(sy - dy))
            elif e.src == HOST and d == HOST:
                total += e.bytes_per_sample * target.width
    return int(round(total))


def _problem(module: Module, target: Target) -> _Problem:
    kernels = list(module.kernels())
    index = {k.name: i for i, k in enumerate(kernels)}
    n = len(kernels)
    shapes = np.array([kernel_shape(k, target) for k in kernels], dtype=np.int64).reshape(n, 2)
    pair: dict[tuple[int, int], float] = {}
    host_in, host_out = np.zeros(n), np.zeros(n)
    for e in module.edges:
        s = index.get(e.src)
        for d in e.dsts:
            j = index.get(d)
            if s is None and j is not None:
                host_in[j] += e.bytes_per_sample
            elif j is None and s is not None:
                host_out[s] += e.bytes_per_sample
            elif s is not None and j is not None and s != j:
                key = (min(s, j), max(s, j))
                pair[key] = pair.get(key, 0.0) + e.bytes_per_sample
    nbrs: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (a, b), byt in sorted(pair.items()):
        nbrs[a].append((b, byt))
        nbrs[b].append((a, byt))
    return _Problem([k.name for k in kernels], shapes, nbrs, host_in, host_out,
                    target.width, target.height)


def _orders(prob: _Problem, strat: _Strategy, rng: np.random.Generator) -> list[int]:
    n = len(prob.names)
    if strat.order == "area":
        longest = prob.shapes.max(axis=1) if n else np.zeros(0)
        area = prob.shapes.prod(axis=1) if n else np.zeros(0)
        return [int(i) for i in np.lexsort((np.arange(n), -area, -longest))]
    if strat.order == "shuffle":  # dataflow order, locally perturbed
        return [int(i) for i in np.argsort(np.arange(n) + rng.normal(0.0, 3.0, n), kind="stable")]
    return list(range(n))


def _strategies(effort: str) -> list[_Strategy]:
    if effort == "fast":
        return [_STRATEGIES[0], _STRATEGIES[3]]
    out = list(_STRATEGIES)
    if effort == "high":
        out += [_Strategy(ax, "shuffle", 1.0, 1.0) for ax in ("x", "y") for _ in range(4)]
    return out


def _try_pack(prob: _Problem, effort: str, seed: int) -> tuple[_Packing | None, _Packing]:
    """(best successful packing or None, the failed attempt that got furthest)."""
    rng = np.random.default_rng(seed)
    jitter = np.random.default_rng(seed) if seed else None
    best: _Packing | None = None
    best_wl = np.inf
    furthest: _Packing | None = None
    for strat in _strategies(effort):
        pk = _pack(prob, _orders(prob, strat, rng), strat, jitter)
        if pk.failed is None:
            if effort != "high":
                return pk, pk
            wl = pk.wirelength(prob)
            if wl < best_wl:
                best, best_wl = pk, wl
        elif furthest is None or pk.placed > furthest.placed:
            furthest = pk
    return best, furthest if furthest is not None else best  # type: ignore[return-value]


def _resize_hook() -> Callable[..., dict] | None:
    """The sizer's `size_for_time(module, target, t)` if that pass exists."""
    try:
        mod = importlib.import_module(".size", __package__)
    except ImportError:
        return None
    return getattr(mod, "size_for_time", None)


def _apply_sizes(module: Module, choices: dict) -> None:
    for k in module.kernels():
        c = choices.get(k.name)
        if c is None:
            continue
        k.knobs = c.knob_dict()
        k.cost = {"cycles": int(c.cycles), "sram": int(c.sram), "w": int(c.w), "h": int(c.h)}
        k.sram = None  # an SRAM map made for the old knobs is stale


def _failure(module: Module, prob: _Problem, pk: _Packing, target: Target) -> PassError:
    i = pk.failed if pk.failed is not None else 0
    k = module.kernel(prob.names[i])
    w, h = (int(v) for v in prob.shapes[i])
    grid = f"{target.width}x{target.height}"
    total = int(prob.shapes.prod(axis=1).sum())
    fits = (w <= target.width and h <= target.height) or (h <= target.width and w <= target.height)
    if not fits:
        return PassError(f"kernel '{k.name}' ({k.kind}) needs {w}x{h} PEs but the grid is {grid}; "
                         f"use a larger grid (--grid) or target, or re-size the kernel for a "
                         f"slower time")
    used = sum(r[2] * r[3] for r in pk.rects if r is not None)
    return PassError(
        f"kernel '{k.name}' ({k.kind}) of shape {w}x{h} PEs did not fit: {target.pes - used} of "
        f"{target.pes} PEs are free in the {grid} grid after placing {pk.placed} of "
        f"{len(prob.names)} kernels (all kernels need {total} PEs); use a larger grid "
        f"(--grid) or target, or size the model for a slower bottleneck time")


@dataclass(frozen=True)
class Place(Pass):
    """Place sized kernels as non-overlapping rectangles on the grid."""

    name = "place"
    requires = ("sized",)
    ensures = ("placed",)
    seed: int = 0
    effort: str = "normal"

    def run(self, module: Module, ctx: PassContext) -> None:
        if self.effort not in EFFORTS:
            raise PassError(f"place: unknown effort '{self.effort}' (use {', '.join(EFFORTS)})")
        target = ctx.target
        prob = _problem(module, target)
        packed, furthest = _try_pack(prob, self.effort, self.seed)
        hook = _resize_hook() if packed is None else None
        t0 = max((int(k.cost["cycles"]) for k in module.kernels() if k.cost), default=0)
        rounds = 0
        while packed is None and hook is not None and rounds < _RESIZE_STEPS[self.effort]:
            rounds += 1
            t = int(np.ceil(t0 * _RESIZE_RELAX ** rounds))
            try:
                choices = hook(module, target, t)
            except PassError:  # some kernel cannot meet t on this target: relax further
                continue
            _apply_sizes(module, choices)
            module.properties.discard("allocated")
            prob = _problem(module, target)
            packed, furthest = _try_pack(prob, self.effort, self.seed)
            if packed is not None:
                ctx.notes.append(f"place: re-sized kernels for a bottleneck of {t} cycles "
                                 f"(was {t0}) so that they fit the grid")
        if packed is None:
            raise _failure(module, prob, furthest, target)
        for k, r, rot in zip(module.kernels(), packed.rects, packed.rotated, strict=True):
            assert r is not None
            k.rect = Rect(*r)
            k.rotated = rot
        _invalidate_routes(module.edges)
        module.properties.discard("routed")
        module.attrs["wirelength"] = wirelength(module, target)
        module.attrs["pes_used"] = int(sum(k.rect.area for k in module.kernels() if k.rect))


def _invalidate_routes(edges: list[Edge]) -> None:
    for e in edges:
        e.routes = None
        e.color = None
