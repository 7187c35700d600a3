"""Shelf packing with per-kernel shape choice: the placer's dense packer.

Why: at a bottleneck time close to the area-sizing bound the kernels' areas
fill 95% or more of the grid, so a packer that takes each rectangle as
given loses too much to gaps. But a kernel meeting time t has many shapes of
near-equal area (a staircase: wider and lower, or narrower and taller), so
the packer chooses the shape. Kernels are cut, in dataflow order, into
contiguous runs; each run fills one shelf (a full-width row) whose height
is the lowest at which the run's narrowest shapes (either rotation) fit side
by side. A dynamic programme over the cut points minimises the total shelf
height; the layout fits when that is at most the grid height. Shelves are
laid out boustrophedon (left to right, then right to left), so consecutive
kernels sit side by side or one above the other and wires stay short.

Everything is numpy: per kernel a table "narrowest width at height <= c"
for every c, prefix sums over kernels, and per cut point one vectorised
search, O(n * run length * grid height).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_INF = 1 << 40  # "no shape": large, yet sums of a few thousand stay in int64
MAX_STACK = 6  # kernels a shelf column may stack
MAX_RUN = 64  # kernels per shelf considered: bounds the DP at O(n * 64 * height)


@dataclass
class ShelfPacking:
    """A packing: per kernel (index into its options, rotated, x, y, w, h)."""

    option: list[int]
    rotated: list[bool]
    rects: list[tuple[int, int, int, int]]
    shelves: list[tuple[int, int]]  # (first kernel position in order, height)
    used_height: int


def _min_table(a: np.ndarray, b: np.ndarray, a_cap: int, b_cap: int) -> np.ndarray:
    """For shapes with extents a (along the table) and b (the cap axis):
    the smallest a among shapes with b <= c, for every c in 0..b_cap."""
    tab = np.full(b_cap + 1, _INF, dtype=np.int64)
    ok = (a <= a_cap) & (b <= b_cap) & (a > 0) & (b > 0)
    np.minimum.at(tab, b[ok], a[ok])
    return np.minimum.accumulate(tab)


def _both(o: np.ndarray, rotate: bool) -> tuple[np.ndarray, np.ndarray]:
    """(widths, heights) of options o, in both rotations when `rotate`."""
    if not rotate:
        return o[:, 0], o[:, 1]
    return np.concatenate([o[:, 0], o[:, 1]]), np.concatenate([o[:, 1], o[:, 0]])


def width_tables(options: Sequence[np.ndarray], width: int, height: int,
                 rotate: bool = True) -> np.ndarray:
    """(n, height+1): for every kernel and height cap c, the narrowest width
    of any of its options (in either rotation when `rotate`) whose height is
    <= c (_INF if none fits). options[i] is an (m, 2) int array of (w, h)."""
    tab = np.full((len(options), height + 1), _INF, dtype=np.int64)
    for i, o in enumerate(options):
        a, b = _both(o, rotate)
        tab[i] = _min_table(a, b, width, height)
    return tab


def _height_tables(options: Sequence[np.ndarray], width: int, height: int,
                   rotate: bool = True) -> np.ndarray:
    """(n, width+1): the lowest height at width <= c."""
    tab = np.full((len(options), width + 1), _INF, dtype=np.int64)
    for i, o in enumerate(options):
        a, b = _both(o, rotate)
        tab[i] = _min_table(b, a, height, width)
    return tab


@dataclass
class _Tables:
    """Tables over the height levels (every height some option has, either
    rotation; a shelf's height is always one of them): wt[k, l] is kernel
    k's narrowest width within height levels[l]; col[r][a, l] the narrowest
    column holding kernels a..a+r-1 stacked bottom to top within levels[l]."""

    levels: np.ndarray
    wt: np.ndarray
    col: list[np.ndarray]


def _tables(opts: Sequence[np.ndarray], width: int, height: int, stack: int,
            rotate: bool = True) -> _Tables:
    n = len(opts)
    ext = (np.concatenate([o.reshape(-1) if rotate else o[:, 1] for o in opts]) if n
           else np.zeros(0, np.int64))
    levels = np.unique(ext[(ext > 0) & (ext <= height)])
    wt = width_tables(opts, width, height, rotate)[:, levels]
    ht = _height_tables(opts, width, height, rotate)
    cols = [np.zeros((0, levels.size), dtype=np.int64), wt]
    for r in range(2, stack + 1):
        g = np.full((max(n - r + 1, 0), levels.size), _INF, dtype=np.int64)
        for a in range(n - r + 1):
            tot = ht[a:a + r].sum(axis=0)  # stacked height at width <= c, non-increasing
            idx = np.searchsorted(-tot, -levels, side="left")  # first width with tot <= level
            g[a] = np.where(idx <= width, idx, _INF)
        cols.append(g)
    return _Tables(levels, wt, cols)


def _shelf_caps(tb: _Tables, n: int, width: int, stack: int) -> np.ndarray:
    """cap[i, d]: the level index of the lowest shelf holding kernels
    i..i+d-1 as a row of stacked columns (each of 1..stack consecutive
    kernels); levels.size if none."""
    m = tb.levels.size
    cap = np.full((n + 1, MAX_RUN + 1), m, dtype=np.int64)
    prev: list[np.ndarray] = [np.zeros((n + 1, m), dtype=np.int64)]  # D_0
    for d in range(1, min(MAX_RUN, n) + 1):
        rows = n - d + 1
        best = prev[-1][:rows] + tb.col[1][d - 1:d - 1 + rows]
        for r in range(2, min(stack, d) + 1):
            np.minimum(best, prev[-r][:rows] + tb.col[r][d - r:d - r + rows], out=best)
        fits = best <= width
        any_fit = fits[:, -1] if m else np.zeros(rows, bool)  # widths shrink as levels grow
        if not any_fit.any():
            break
        cap[:rows, d] = np.where(any_fit, fits.argmax(axis=1), m)
        prev.append(np.minimum(best, _INF))
        if len(prev) > stack:
            prev.pop(0)
    return cap


def _cuts(tb: _Tables, cap: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """DP over contiguous shelves: (total height per prefix, best shelf start)."""
    heights = np.concatenate([tb.levels, [_INF]])
    best = np.full(n + 1, _INF, dtype=np.int64)
    best[0] = 0
    start = np.zeros(n + 1, dtype=np.int64)
    for j in range(1, n + 1):
        d = np.arange(min(MAX_RUN, j), 0, -1)  # longest shelf first: ties favour fewer shelves
        total = best[j - d] + heights[cap[j - d, d]]
        k = int(np.argmin(total))
        best[j], start[j] = total[k], j - int(d[k])
    return np.minimum(best, _INF), start


def _columns(tb: _Tables, i: int, j: int, lv: int, stack: int) -> list[tuple[int, int, int]]:
    """The columns (first, last+1, width) of the shelf i..j-1 at level lv."""
    n = j - i
    best = [0] + [_INF] * n
    how = [0] * (n + 1)
    for p in range(1, n + 1):
        for r in range(1, min(stack, p) + 1):
            v = best[p - r] + int(tb.col[r][i + p - r, lv])
            if v < best[p]:
                best[p], how[p] = v, r
    out = []
    p = n
    while p > 0:
        r = how[p]
        out.append((i + p - r, i + p, int(tb.col[r][i + p - r, lv])))
        p -= r
    return out[::-1]


def shelf_pack(options: Sequence[np.ndarray], order: Sequence[int], width: int,
               height: int, stack: int = MAX_STACK, rotate: bool = True) -> ShelfPacking | None:
    """Pack kernels (options[i]: (m, 2) unrotated shapes) in `order` on a
    width x height grid in shelves of columns of up to `stack` kernels (in
    either rotation when `rotate`, else as given); None when the shelves need
    more height than the grid has."""
    if not order:
        return ShelfPacking([], [], [], [], 0)
    opts = [np.asarray(options[i], dtype=np.int64).reshape(-1, 2) for i in order]
    n = len(order)
    tb = _tables(opts, width, height, stack, rotate)
    cap = _shelf_caps(tb, n, width, stack)
    best, start = _cuts(tb, cap, n)
    if best[n] > height:
        return None
    runs: list[tuple[int, int]] = []
    j = n
    while j > 0:
        i = int(start[j])
        runs.append((i, j))
        j = i
    runs.reverse()
    count = len(options)
    option, rotated = [0] * count, [False] * count
    rects: list[tuple[int, int, int, int]] = [(0, 0, 0, 0)] * count
    shelves = []
    y = 0
    for s, (i, j) in enumerate(runs):
        lv = int(cap[i, j - i])
        c = int(tb.levels[lv])
        shelves.append((i, c))
        x = 0 if s % 2 == 0 else width
        for a, b, cw in _columns(tb, i, j, lv, stack):
            if s % 2:
                x -= cw
            yy = y
            for p in range(a, b):
                o, rot, w, h = (_lowest(opts[p], cw, c, rotate) if b - a > 1
                                else _narrowest(opts[p], c, width, rotate))
                kidx = order[p]
                rects[kidx] = (x, yy, w, h)
                option[kidx], rotated[kidx] = o, rot
                yy += h
            if s % 2 == 0:
                x += cw
        y += c
    return ShelfPacking(option, rotated, rects, shelves, y)


def _lowest(opt: np.ndarray, wcap: int, hcap: int, rotate: bool = True
            ) -> tuple[int, bool, int, int]:
    """(option index, rotated, w, h) of the lowest shape no wider than `wcap`."""
    best: tuple[int, int, int, bool] | None = None
    for idx, (w, h) in enumerate(opt.tolist()):
        for rot, (a, b) in ((False, (w, h)), (True, (h, w)))[:2 if rotate else 1]:
            if a <= wcap and b <= hcap:
                key = (b, a, idx, rot)
                if best is None or key < best:
                    best = key
    assert best is not None, "the height table promised a shape"
    b, a, idx, rot = best
    return idx, rot, a, b


def _narrowest(opt: np.ndarray, cap: int, width: int, rotate: bool = True
               ) -> tuple[int, bool, int, int]:
    """(option index, rotated, w, h) of the narrowest shape no taller than
    `cap`; among equally narrow ones the smallest area."""
    best: tuple[int, int, int, bool] | None = None
    for idx, (w, h) in enumerate(opt.tolist()):
        for rot, (a, b) in ((False, (w, h)), (True, (h, w)))[:2 if rotate else 1]:
            if b <= cap and a <= width:
                key = (a, b, idx, rot)
                if best is None or key < best:
                    best = key
    assert best is not None, "the width table promised a shape"
    a, b, idx, rot = best
    return idx, rot, a, b


def shelf_height_needed(options: Sequence[np.ndarray], order: Sequence[int], width: int,
                        height: int, stack: int = MAX_STACK) -> int:
    """Total shelf height the packer needs (> height when it fails)."""
    opts = [np.asarray(options[i], dtype=np.int64).reshape(-1, 2) for i in order]
    tb = _tables(opts, width, height, stack)
    best, _ = _cuts(tb, _shelf_caps(tb, len(opts), width, stack), len(opts))
    return int(best[-1])
