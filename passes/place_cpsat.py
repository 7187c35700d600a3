"""CP-SAT refinement of a legal placement: shorten wires, keep it legal.

Why: the constructive packers place kernels one run at a time and never
look back, so wires between kernels placed far apart in their order stay
long. With every rectangle's shape fixed, moving rectangles is an exact
small model for ortools' CP-SAT: x and y variables, a NoOverlap2D
constraint over their interval variables and the objective Σ weight x
(|Δx| + |Δy|) between the centres of connected kernels (twice the centre,
so it stays integral), plus host I/O distances to the West / East edges
when they count.

The whole-layout model is too big to improve quickly at ~97% density, and
CP-SAT's parallel search is not reproducible, so this is a large
neighbourhood search of our own: each round frees a window of rectangles
(the nearest ones around a seeded-random kernel, or its dataflow
neighbours), keeps every other one fixed, and lets single-threaded CP-SAT
(deterministic) re-place the window from the current layout as a hint,
within a fixed deterministic time. A round's result is kept only when the
wires get shorter, so the layout never gets worse. The number of rounds is
fixed from the budget in advance; the wall-clock limit is only a safety net
(stats say "wall-limited" when it cut rounds short).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .place_front import Problem

WINDOW = 8  # rectangles one LNS round frees
WINDOW_DET_TIME = 0.05  # CP-SAT deterministic time per round
ROUNDS_PER_SECOND = 6  # rounds planned per second of budget (~0.12 s each on 2 cores)
_WEIGHT_SCALE = 1000  # integer objective weights: the heaviest edge weighs this


def _int_weights(values: Sequence[float]) -> list[int]:
    top = max((float(v) for v in values), default=0.0)
    if top <= 0:
        return [0 for _ in values]
    return [max(1, round(_WEIGHT_SCALE * float(v) / top)) if v > 0 else 0 for v in values]


def refine(prob: Problem, rects: Sequence[tuple[int, int, int, int]], seconds: float,
           seed: int = 0, wall_limit: float | None = None
           ) -> tuple[list[tuple[int, int, int, int]], dict[str, Any]]:
    """Move the rectangles (x, y, w, h; sizes fixed) to shorten the weighted
    wires in about `seconds`: the work (rounds of deterministic-time CP-SAT)
    is fixed in advance from `seconds`, so the result is deterministic.
    `wall_limit`, when given, is a hard stop in wall seconds (a user's
    --time-limit); only a machine slow enough to hit it gets fewer rounds,
    and the stats say so. Returns the new rects and stats: objective
    before/after (CP-SAT's integer units), rounds, seconds."""
    t0 = time.perf_counter()
    n = len(rects)
    pairs = [(i, j, w) for i, lst in enumerate(prob.nbrs) for j, w in lst if j > i]
    weights = _int_weights([w for *_, w in pairs] + list(prob.host_in) + list(prob.host_out))
    pw = weights[:len(pairs)]
    hin, hout = weights[len(pairs):len(pairs) + n], weights[len(pairs) + n:]
    cur = [tuple(int(v) for v in r) for r in rects]
    before = _int_objective(cur, pairs, pw, hin, hout, prob.width)
    stats: dict[str, Any] = {"before": float(before), "after": float(before), "rounds": 0,
                             "improved": 0, "status": "skipped", "seconds": 0.0}
    if n < 2 or seconds <= 0 or not (any(pw) or any(hin) or any(hout)):
        return list(rects), stats
    adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for (i, j, _), wt in zip(pairs, pw, strict=True):
        if wt:
            adj[i].append((j, wt))
            adj[j].append((i, wt))
    rng = np.random.default_rng(seed)
    rounds = max(1, int(seconds * ROUNDS_PER_SECOND))
    deadline = t0 + wall_limit if wall_limit is not None else float("inf")
    best = before
    stats["status"] = "done"
    for r in range(rounds):
        if time.perf_counter() > deadline:
            stats["status"] = "wall-limited"  # fewer rounds than planned: not reproducible
            break
        free = _neighbourhood(cur, adj, rng, r)
        new = _solve_window(prob, cur, free, adj, hin, hout, seed + r)
        stats["rounds"] = r + 1
        if new is not None:
            obj = _int_objective(new, pairs, pw, hin, hout, prob.width)
            if obj < best:
                cur, best = new, obj
                stats["improved"] += 1
    stats.update(after=float(best), seconds=time.perf_counter() - t0)
    return [tuple(r) for r in cur], stats  # type: ignore[misc]


def _neighbourhood(rects: Sequence[tuple[int, int, int, int]], adj: list[list[tuple[int, int]]],
                   rng: np.random.Generator, r: int) -> list[int]:
    """The kernels one round frees: around a random kernel, alternately its
    nearest rectangles and its dataflow neighbours (breadth first)."""
    n = len(rects)
    size = min(n, WINDOW)
    i = int(rng.integers(n))
    if r % 2 == 0:
        cen = np.array([(2 * x + w, 2 * y + h) for x, y, w, h in rects])
        d = np.abs(cen - cen[i]).sum(axis=1)
        return [int(j) for j in np.argsort(d, kind="stable")[:size]]
    out, seen, queue = [], {i}, [i]
    while queue and len(out) < size:
        j = queue.pop(0)
        out.append(j)
        for k, _ in sorted(adj[j], key=lambda e: -e[1]):
            if k not in seen:
                seen.add(k)
                queue.append(k)
    while len(out) < size:  # a small component: fill with random kernels
        k = int(rng.integers(n))
        if k not in seen:
            seen.add(k)
            out.append(k)
    return out


def _solve_window(prob: Problem, rects: Sequence[tuple[int, int, int, int]], free: list[int],
                  adj: list[list[tuple[int, int]]], hin: list[int], hout: list[int],
                  seed: int) -> list[tuple[int, int, int, int]] | None:
    """Re-place the `free` rectangles optimally (within a deterministic time)
    with every other rectangle fixed; None if CP-SAT found nothing."""
    from ortools.sat.python import cp_model

    W, H = prob.width, prob.height
    # the window moves within the bounding box of its rectangles, grown by
    # their largest side: only fixed rectangles meeting that box matter
    fr = np.array([rects[i] for i in free])
    grow = int(fr[:, 2:].max())
    bx0, by0 = max(0, int(fr[:, 0].min()) - grow), max(0, int(fr[:, 1].min()) - grow)
    bx1 = min(W, int((fr[:, 0] + fr[:, 2]).max()) + grow)
    by1 = min(H, int((fr[:, 1] + fr[:, 3]).max()) + grow)
    m = cp_model.CpModel()
    xs: dict[int, Any] = {}
    ys: dict[int, Any] = {}
    xi, yi = [], []
    free_set = set(free)
    for i, (x, y, w, h) in enumerate(rects):
        if i in free_set:
            xs[i] = m.NewIntVar(bx0, bx1 - w, "")
            ys[i] = m.NewIntVar(by0, by1 - h, "")
            m.AddHint(xs[i], x)
            m.AddHint(ys[i], y)
            xi.append(m.NewFixedSizeIntervalVar(xs[i], w, ""))
            yi.append(m.NewFixedSizeIntervalVar(ys[i], h, ""))
        elif x < bx1 and bx0 < x + w and y < by1 and by0 < y + h:
            xi.append(m.NewFixedSizeIntervalVar(x, w, ""))
            yi.append(m.NewFixedSizeIntervalVar(y, h, ""))
    m.AddNoOverlap2D(xi, yi)
    terms = []
    for i in free:
        x, y, w, h = rects[i]
        cx, cy = 2 * xs[i] + w, 2 * ys[i] + h
        for j, wt in adj[i]:
            if j in xs and j < i:
                continue  # a free-free edge once
            ox, oy = ((2 * xs[j] + rects[j][2], 2 * ys[j] + rects[j][3]) if j in xs
                      else (2 * rects[j][0] + rects[j][2], 2 * rects[j][1] + rects[j][3]))
            for a, b, span in ((cx, ox, 2 * W), (cy, oy, 2 * H)):
                d = m.NewIntVar(0, span, "")
                m.Add(d >= a - b)
                m.Add(d >= b - a)
                terms.append(wt * d)
        if hin[i]:
            terms.append(hin[i] * cx)
        if hout[i]:
            terms.append(hout[i] * (2 * W - cx))
    m.Minimize(sum(terms))
    solver = cp_model.CpSolver()
    p = solver.parameters
    p.num_workers = 1  # one thread: the search, and so the result, is deterministic
    p.random_seed = int(seed) % (1 << 31)
    p.max_deterministic_time = WINDOW_DET_TIME
    p.catch_sigint_signal = False  # Ctrl-C is the command line's (wsec.signals)
    status = solver.Solve(m)
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        return None
    out = list(rects)
    for i in free:
        out[i] = (int(solver.Value(xs[i])), int(solver.Value(ys[i])), rects[i][2], rects[i][3])
    return out


def _int_objective(rects: Sequence[tuple[int, int, int, int]], pairs: list[tuple[int, int, float]],
                   pw: list[int], hin: list[int], hout: list[int], W: int) -> int:
    cx = [2 * r[0] + r[2] for r in rects]
    cy = [2 * r[1] + r[3] for r in rects]
    total = sum(wt * (abs(cx[i] - cx[j]) + abs(cy[i] - cy[j]))
                for (i, j, _), wt in zip(pairs, pw, strict=True))
    return total + sum(hin[i] * cx[i] + hout[i] * (2 * W - cx[i]) for i in range(len(rects)))


def weighted_length(prob: Problem, rects: Sequence[tuple[int, int, int, int]]) -> float:
    """The refinement's objective in real units (for reports and tests)."""
    cen = np.array([(r[0] + r[2] / 2.0, r[1] + r[3] / 2.0) for r in rects]).reshape(-1, 2)
    total = float(np.dot(prob.host_in, cen[:, 0]) + np.dot(prob.host_out, prob.width - cen[:, 0]))
    for i, lst in enumerate(prob.nbrs):
        for j, w in lst:
            if j > i:
                total += w * float(np.abs(cen[i] - cen[j]).sum())
    return total
