"""Strip packing for short wires: the placer's wirelength-driven packer.

Why: the contest's wirelength is the L1 distance between the centres of
connected kernels, and two rectangles that do not overlap are apart by at
least half the sum of their sides along the axis that separates them. So
the wires are shortest when connected kernels sit side by side across
their *narrow* sides: thin strips in dataflow order, like the teeth of a
comb. The dense shelf packer (place_shelf) minimises the height it needs
and so packs kernels tightly at the bottleneck time; this packer instead
minimises wirelength within the grid, for when the objective weighs
wirelength (or the area does not bind and only the wires separate layouts).

Kernels are cut, in dataflow order, into contiguous runs; each run is one
shelf (a full-width row) of a chosen height c, and every kernel in it takes
its narrowest shape (either rotation) no taller than c, centred vertically
in the shelf. For such a layout the wirelength within shelves and the
vertical part of the wires between shelves are exact sums over the cut
points (prefix sums over the kernels' widths and over the connections), so
a dynamic programme over cut points and shelf heights minimises them. The
grid height is a budget: a Lagrangian multiplier on the total shelf height
is bisected until the shelves fit. Each shelf is then slid sideways (and
its order reversed or not) to the weighted median of its connections to the
shelves below, which settles the horizontal part of the wires between
shelves that the programme leaves out. Everything is numpy over (cut point,
run length, height level): O(n x run length x levels) per multiplier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .place_shelf import width_tables

_INF = 1 << 40
MAX_LEVELS = 160  # shelf heights considered (subsampled evenly beyond this)
MIN_LEVELS = 16
_TABLE_CELLS = 4_000_000  # run starts x run lengths x levels: bounds time and memory
_BISECT_STEPS = 24


@dataclass
class StripPacking:
    """A packing: per kernel (index into its options, rotated, x, y, w, h)
    and the shelves as (first position in order, height)."""

    option: list[int]
    rotated: list[bool]
    rects: list[tuple[int, int, int, int]]
    shelves: list[tuple[int, int]]
    used_height: int


@dataclass
class _Tables:
    levels: np.ndarray  # (L,) shelf heights
    prefix: np.ndarray  # (L, n+1) prefix sums of wt over positions
    intra: np.ndarray  # (n, D+1, L) horizontal wirelength inside run [a, a+d)
    vert: np.ndarray  # (n, D+1) wire weight a shelf's height counts for


def _pair_positions(pairs: Sequence[tuple[int, int, float]], pos: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Connections as position pairs u < v with weights (self-loops dropped)."""
    if not len(pairs):
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0)
    a = np.array([(pos[i], pos[j], w) for i, j, w in pairs], dtype=np.float64).reshape(-1, 3)
    u, v = a[:, 0].astype(np.int64), a[:, 1].astype(np.int64)
    keep = u != v
    lo, hi = np.minimum(u, v)[keep], np.maximum(u, v)[keep]
    return lo, hi, a[keep, 2]


def _tables(opts: Sequence[np.ndarray], u: np.ndarray, v: np.ndarray, w: np.ndarray,
            width: int, height: int) -> _Tables:
    n = len(opts)
    full = width_tables(opts, width, height)  # (n, height+1)
    # a shelf holds at most as many kernels as their narrowest widths fit side by side
    narrow = np.sort(full[:, height])
    D = max(1, min(n, int(np.searchsorted(np.cumsum(narrow), width, side="right"))))
    ext = np.concatenate([o.reshape(-1) for o in opts])
    levels = np.unique(ext[(ext > 0) & (ext <= height)])
    most = int(np.clip(_TABLE_CELLS // (n * D), MIN_LEVELS, MAX_LEVELS))
    if levels.size > most:  # keep the tallest (the narrowest widths) and an even spread
        pick = np.unique(np.linspace(0, levels.size - 1, most).round().astype(np.int64))
        levels = levels[pick]
    wt = full[:, levels]  # (n, L)
    L = levels.size
    capped = np.minimum(wt, width + 1)  # keeps sums of infeasible widths finite and > width
    prefix = np.zeros((L, n + 1), dtype=np.int64)
    prefix[:, 1:] = np.cumsum(capped.T, axis=1)
    # horizontal wire inside a run: centre distance S[v]-S[u]+(w_v-w_u)/2 (independent of a)
    span = v - u + 1
    inside = span <= D
    uu, vv, ww, ss = u[inside], v[inside], w[inside], span[inside]
    g = ww[:, None] * ((prefix[:, vv] - prefix[:, uu]).T
                       + (capped[vv] - capped[uu]) / 2.0)  # (E, L)
    q = np.zeros((n, D + 1, L))  # q[a, s]: pairs starting at a spanning s positions
    np.add.at(q, (uu, ss), g)
    qc = np.cumsum(q, axis=1)
    intra = np.zeros((n + 1, D + 1, L))
    for d in range(1, D + 1):  # run [a, a+d) = pairs starting at a within it + run [a+1, a+d)
        intra[:n, d] = qc[:, d] + intra[1:n + 1, d - 1]
    intra[:n] += _crossing(u, v, w, prefix, capped, n, D)
    # vertical: a shelf counts half for each wire with one end in it, fully for each over it
    deg = np.zeros(n)
    np.add.at(deg, u, w)
    np.add.at(deg, v, w)
    dsum = np.concatenate([[0.0], np.cumsum(deg)])
    qi = np.zeros((n, D + 1))
    np.add.at(qi, (uu, ss), ww)
    qic = np.cumsum(qi, axis=1)
    internal = np.zeros((n + 1, D + 1))
    for d in range(1, D + 1):
        internal[:n, d] = qic[:, d] + internal[1:n + 1, d - 1]
    over = np.zeros((n + 1, n + 1))  # over[x, y]: weight of pairs with u < x and v >= y
    np.add.at(over, (u + 1, v), w)
    over = np.cumsum(over, axis=0)[:, ::-1].cumsum(axis=1)[:, ::-1]
    vert = np.zeros((n, D + 1))
    for d in range(1, D + 1):
        a = np.arange(n - d + 1)
        ends = dsum[a + d] - dsum[a] - 2 * internal[a, d]
        vert[a, d] = ends / 2.0 + over[a, a + d]
    return _Tables(levels, prefix, intra[:n], vert)


def _crossing(u: np.ndarray, v: np.ndarray, w: np.ndarray, prefix: np.ndarray,
              capped: np.ndarray, n: int, D: int) -> np.ndarray:
    """(n, D+1, L): the horizontal part of the wires that enter run [a, a+d)
    from earlier shelves and leave it for later ones, estimated as in a
    boustrophedon: a shelf starts where the previous one ended, so a wire
    entering costs its end's distance from the start of the run, a wire
    leaving its end's distance from the end of the run."""
    L = prefix.shape[0]
    ein_g = np.zeros((n + 1, D, L))  # by run start a and k = v - a
    ein_w = np.zeros((n + 1, D))
    out_g = np.zeros((n + 1, D, L))  # by run end b and k = b - 1 - u
    out_w = np.zeros((n + 1, D))
    for a_end, b_end, wt in zip(u.tolist(), v.tolist(), w.tolist(), strict=True):
        lo = max(a_end + 1, b_end - D + 1)  # runs a in [lo, v] that the wire enters
        a = np.arange(lo, b_end + 1)
        ein_g[a, b_end - a] += wt * (prefix[:, b_end] + capped[b_end] / 2.0)
        ein_w[a, b_end - a] += wt
        hi = min(b_end, a_end + D)  # runs ending at b in [u+1, hi] that the wire leaves
        b = np.arange(a_end + 1, hi + 1)
        out_g[b, b - 1 - a_end] += wt * (prefix[:, a_end] + capped[a_end] / 2.0)
        out_w[b, b - 1 - a_end] += wt
    cin_g, cin_w = np.cumsum(ein_g, axis=1), np.cumsum(ein_w, axis=1)
    cout_g, cout_w = np.cumsum(out_g, axis=1), np.cumsum(out_w, axis=1)
    est = np.zeros((n, D + 1, L))
    for d in range(1, D + 1):
        a = np.arange(n - d + 1)
        b = a + d
        est[a, d] = (cin_g[a, d - 1] - prefix[:, a].T * cin_w[a, d - 1][:, None]
                     + prefix[:, b].T * cout_w[b, d - 1][:, None] - cout_g[b, d - 1])
    return est


def _solve(tb: _Tables, n: int, width: int, lam: float
           ) -> tuple[float, np.ndarray, np.ndarray]:
    """DP over cut points at multiplier `lam`: (cost, run start, level) per prefix."""
    D = tb.intra.shape[1] - 1
    L = tb.levels.size
    best = np.full(n + 1, np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    level = np.zeros(n + 1, dtype=np.int64)
    c = tb.levels.astype(np.float64)
    for j in range(1, n + 1):
        d = np.arange(1, min(D, j) + 1)
        a = j - d
        widths = tb.prefix[:, j][None, :] - tb.prefix[:, a].T  # (d, L)
        cost = best[a][:, None] + tb.intra[a, d] + c[None, :] * (tb.vert[a, d][:, None] + lam)
        cost = np.where(widths <= width, cost, np.inf)
        k = int(np.argmin(cost))
        if not np.isfinite(cost.flat[k]):
            continue
        best[j] = cost.flat[k]
        start[j], level[j] = int(a[k // L]), k % L
    return float(best[n]), start, level


def _runs(start: np.ndarray, level: np.ndarray, n: int) -> list[tuple[int, int, int]]:
    out = []
    j = n
    while j > 0:
        i = int(start[j])
        out.append((i, j, int(level[j])))
        j = i
    return out[::-1]


def _narrowest(opt: np.ndarray, cap: int, width: int) -> tuple[int, bool, int, int]:
    """(option index, rotated, w, h) of the narrowest shape no taller than
    `cap`; among equally narrow ones the lowest."""
    a = np.concatenate([opt[:, 0], opt[:, 1]])
    b = np.concatenate([opt[:, 1], opt[:, 0]])
    ok = (b <= cap) & (a <= width)
    idx = np.nonzero(ok)[0]
    k = idx[np.lexsort((b[idx], a[idx]))[0]]
    m = opt.shape[0]
    return int(k % m), bool(k >= m), int(a[k]), int(b[k])


def strip_pack(options: Sequence[np.ndarray], order: Sequence[int],
               pairs: Sequence[tuple[int, int, float]], width: int, height: int
               ) -> StripPacking | None:
    """Pack kernels (options[i]: (m, 2) unrotated shapes) in `order` on a
    width x height grid in shelves of strips, minimising the weighted L1
    wirelength between the centres of connected kernels (`pairs`: kernel
    index, kernel index, weight); None when no shelf cut fits the height."""
    n = len(order)
    if n == 0:
        return StripPacking([], [], [], [], 0)
    opts = [np.asarray(options[i], dtype=np.int64).reshape(-1, 2) for i in order]
    pos = np.empty(len(options), dtype=np.int64)
    pos[np.asarray(order, dtype=np.int64)] = np.arange(n)
    u, v, w = _pair_positions(pairs, pos)
    tb = _tables(opts, u, v, w, width, height)
    if tb.levels.size == 0:
        return None
    runs = _fit(tb, n, width, height)
    if runs is None:
        return None
    return _layout(opts, order, runs, tb, u, v, w, width, len(options))


def _fit(tb: _Tables, n: int, width: int, height: int) -> list[tuple[int, int, int]] | None:
    """The cut whose shelves fit `height` with the least estimated wire: the
    multiplier on shelf height is bisected to the smallest that fits."""
    def runs_at(lam: float) -> tuple[list[tuple[int, int, int]], int] | None:
        cost, start, level = _solve(tb, n, width, lam)
        if not np.isfinite(cost):
            return None
        runs = _runs(start, level, n)
        return runs, int(sum(int(tb.levels[lv]) for *_, lv in runs))

    first = runs_at(0.0)
    if first is None:
        return None
    if first[1] <= height:
        return first[0]
    lo, hi = 0.0, 1.0
    found = None
    while found is None:  # gallop up to a multiplier that fits
        got = runs_at(hi)
        if got is not None and got[1] <= height:
            found = got[0]
            break
        lo, hi = hi, hi * 4
        if hi > 1e9:
            return None
    for _ in range(_BISECT_STEPS):
        mid = (lo + hi) / 2
        got = runs_at(mid)
        if got is not None and got[1] <= height:
            found, hi = got[0], mid
        else:
            lo = mid
    return found


def _layout(opts: list[np.ndarray], order: Sequence[int], runs: list[tuple[int, int, int]],
            tb: _Tables, u: np.ndarray, v: np.ndarray, w: np.ndarray, width: int,
            count: int) -> StripPacking:
    n = len(order)
    option, rotated = [0] * count, [False] * count
    box = np.zeros((n, 4), dtype=np.int64)  # x, y, w, h by position
    band = np.zeros((n, 2), dtype=np.int64)  # the shelf's y range by position
    placed = np.zeros(n, dtype=bool)
    shelves = []
    y = 0
    for i, j, lv in runs:
        c = int(tb.levels[lv])
        shelves.append((i, c))
        shapes = [_narrowest(opts[p], c, width) for p in range(i, j)]
        widths = np.array([s[2] for s in shapes], dtype=np.int64)
        left = np.concatenate([[0], np.cumsum(widths)[:-1]])
        total = int(widths.sum())
        best: tuple[float, np.ndarray] | None = None
        for rev in (False, True):  # the run left to right or right to left
            x0 = total - left - widths if rev else left
            off, cost = _shift(x0 + widths / 2.0, np.arange(i, j), u, v, w,
                               box[:, 0] + box[:, 2] / 2.0, placed, 0, width - total)
            if best is None or cost < best[0]:
                best = (cost, x0 + off)
        assert best is not None
        for k, p in enumerate(range(i, j)):
            o, rot, sw, sh = shapes[k]
            box[p] = (best[1][k], y + (c - sh) // 2, sw, sh)
            option[order[p]], rotated[order[p]] = o, rot
        band[i:j] = (y, y + c)
        placed[i:j] = True
        y += c
    _settle(box, band, [(i, j) for i, j, _ in runs], u, v, w, width)
    rects: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * count
    for p in range(n):
        rects[order[p]] = tuple(int(a) for a in box[p])  # type: ignore[assignment]
    return StripPacking(option, rotated, rects, shelves, y)


def _shift(centre: np.ndarray, members: np.ndarray, u: np.ndarray, v: np.ndarray,
           w: np.ndarray, other_centre: np.ndarray, placed: np.ndarray, lo: int, hi: int
           ) -> tuple[int, float]:
    """The integer shift in [lo, hi] of kernels `members` (their centres
    along one axis: `centre`) that minimises the weighted distance along
    that axis to their placed neighbours outside the group (a weighted
    median), and that distance."""
    inside = np.zeros(placed.size, dtype=bool)
    inside[members] = True
    sel_u = inside[u] & ~inside[v] & placed[v]
    sel_v = inside[v] & ~inside[u] & placed[u]
    mine = np.concatenate([u[sel_u], v[sel_v]]) - members[0]
    other = np.concatenate([other_centre[v[sel_u]], other_centre[u[sel_v]]])
    wts = np.concatenate([w[sel_u], w[sel_v]])
    if mine.size == 0 or hi < lo:
        return max(lo, min(0, hi)), 0.0
    target = other - centre[mine]
    order = np.argsort(target, kind="stable")
    cum = np.cumsum(wts[order])
    med = target[order][int(np.searchsorted(cum, cum[-1] / 2.0))]
    off = int(np.clip(round(med), lo, hi))
    return off, float(np.dot(wts, np.abs(centre[mine] + off - other)))


def _settle(box: np.ndarray, band: np.ndarray, runs: list[tuple[int, int]], u: np.ndarray,
            v: np.ndarray, w: np.ndarray, width: int, sweeps: int = 6) -> None:
    """Coordinate descent on the free offsets of a strip layout: each shelf
    slides sideways, each kernel up or down within its shelf, to the
    weighted median of its connections, until nothing moves."""
    n = box.shape[0]
    everyone = np.ones(n, dtype=bool)
    for _ in range(sweeps):
        moved = False
        cx = box[:, 0] + box[:, 2] / 2.0
        for i, j in runs:
            lo = -int(box[i:j, 0].min())
            hi = width - int((box[i:j, 0] + box[i:j, 2]).max())
            off, _ = _shift(cx[i:j], np.arange(i, j), u, v, w, cx, everyone, lo, hi)
            if off:
                box[i:j, 0] += off
                cx[i:j] += off
                moved = True
        cy = box[:, 1] + box[:, 3] / 2.0
        for p in range(n):
            lo = int(band[p, 0] - box[p, 1])
            hi = int(band[p, 1] - box[p, 1] - box[p, 3])
            off, _ = _shift(cy[p:p + 1], np.array([p]), u, v, w, cy, everyone, lo, hi)
            if off:
                box[p, 1] += off
                cy[p] += off
                moved = True
        if not moved:
            break
