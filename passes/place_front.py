"""The skyline front packer: fixed shapes, dataflow order, for speed and scale.

Why: a wafer holds hundreds to a few thousand kernels whose rectangles must
tile most of the grid, and consecutive kernels of the dataflow should sit
side by side so their edges stay short. Kernels are taken in dataflow
(topological) order and each goes to the spot along a packing front that
minimises

    front advance + gap left under it + weighted distance to the
    neighbours already placed,

trying both rotations. The front moves West -> East (host inputs enter on
the West edge, outputs leave on the East edge), so the dataflow follows the
I/O direction; the scan over every lane position is a handful of numpy
operations per kernel, so ~1000 kernels place in well under a second. Other
strategies (front moving North, area-first order, compact weighting) are
tried when the first fails. The shelf packer (place_shelf) is the dense one;
this one is the fallback that never needs shape alternatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wsec.ir.graph import Module


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
class Problem:
    """Placement input as arrays: shapes, neighbour lists, grid."""

    names: list[str]
    shapes: np.ndarray  # (n, 2) unrotated w, h
    nbrs: list[list[tuple[int, float]]]  # per kernel: (other kernel, bytes)
    host_in: np.ndarray  # bytes from host per kernel
    host_out: np.ndarray  # bytes to host per kernel
    width: int
    height: int


@dataclass
class Packing:
    rects: list[tuple[int, int, int, int] | None]
    rotated: list[bool]
    failed: int | None  # index of the kernel that did not fit
    placed: int

    def wirelength(self, prob: Problem) -> float:
        return problem_wirelength(prob, self.rects)


def _window_max(a: np.ndarray, w: int) -> np.ndarray:
    """max(a[i:i+w]) for every i in 0..len(a)-w, by doubling (O(n log w))."""
    m, span = a, 1
    while span * 2 <= w:
        m = np.maximum(m[:-span], m[span:])
        span *= 2
    n = len(a) - w + 1
    return np.maximum(m[:n], m[w - span:w - span + n])


def _pack(prob: Problem, order: list[int], strat: _Strategy,
          jitter: np.random.Generator | None) -> Packing:
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
            return Packing(rects, rotated, i, count)
        _, lane, p, a, g, rot = best
        sky[lane:lane + a] = p + g
        x, y, w, h = (p, lane, g, a) if along_x else (lane, p, a, g)
        rects[i] = (x, y, w, h)
        rotated[i] = rot
        centres[i] = (x + w / 2.0, y + h / 2.0)
    return Packing(rects, rotated, None, n)


def problem_wirelength(prob: Problem, rects: list[tuple[int, int, int, int] | None]) -> float:
    cen = np.array([(r[0] + r[2] / 2.0, r[1] + r[3] / 2.0) if r else (0.0, 0.0) for r in rects])
    total = float(np.dot(prob.host_in, cen[:, 0]) if len(rects) else 0.0)
    total += float(np.dot(prob.host_out, prob.width - cen[:, 0])) if len(rects) else 0.0
    for i, lst in enumerate(prob.nbrs):
        for j, b in lst:
            if j > i:  # each kernel pair once (lists are symmetric)
                total += b * float(np.abs(cen[i] - cen[j]).sum())
    return total


def _orders(prob: Problem, strat: _Strategy, rng: np.random.Generator) -> list[int]:
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


def try_pack(prob: Problem, effort: str, seed: int) -> tuple[Packing | None, Packing]:
    """(best successful packing or None, the failed attempt that got furthest)."""
    rng = np.random.default_rng(seed)
    jitter = np.random.default_rng(seed) if seed else None
    best: Packing | None = None
    best_wl = np.inf
    furthest: Packing | None = None
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




OBJECTIVES = ("bytes", "edges")


def build_problem(module: Module, shapes: np.ndarray, width: int, height: int,
                  objective: str = "bytes") -> Problem:
    """The placement problem of `module`'s kernels with the given (n, 2)
    unrotated shapes. objective "bytes": wires weigh bytes per sample and
    host I/O counts (inputs enter on the West edge, outputs leave East);
    "edges": every kernel-to-kernel connection weighs 1, host I/O is free
    (the ISPD 2020 contest's wirelength)."""
    kernels = list(module.kernels())
    index = {k.name: i for i, k in enumerate(kernels)}
    n = len(kernels)
    pair: dict[tuple[int, int], float] = {}
    host_in, host_out = np.zeros(n), np.zeros(n)
    unit = objective == "edges"
    for e in module.edges:
        s = index.get(e.src)
        weight = 1.0 if unit else float(e.bytes_per_sample)
        for d in e.dsts:
            j = index.get(d)
            if s is None and j is not None and not unit:
                host_in[j] += weight
            elif j is None and s is not None and not unit:
                host_out[s] += weight
            elif s is not None and j is not None and s != j:
                key = (min(s, j), max(s, j))
                pair[key] = pair.get(key, 0.0) + weight
    nbrs: list[list[tuple[int, float]]] = [[] for _ in range(n)]
    for (a, b), w in sorted(pair.items()):
        nbrs[a].append((b, w))
        nbrs[b].append((a, w))
    return Problem([k.name for k in kernels], np.asarray(shapes, dtype=np.int64).reshape(n, 2),
                   nbrs, host_in, host_out, width, height)
