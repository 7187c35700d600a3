"""Link congestion of a placement, estimated before routing (RUDY).

Why: the placer chooses among layouts by the bottleneck time Δt first, but
a sample also has to cross the busiest link, one wavelet per cycle. A dense
layout that scatters each layer's kernels over the grid (the area-ordered
skyline packing does, to fit at the smallest Δt) sends hundreds of long
bundles through the same regions: the router then cannot color them, or the
busiest link carries many times Δt. Routing every candidate layout to find
out costs tens of seconds each; this estimate costs milliseconds.

How (RUDY, "rectangular uniform wire density", Spindler & Johannes 2007):
every connection spreads its wavelets per sample uniformly over the
bounding box of its two ends' centres, as wavelet-hops per PE: wavelets x
(box width + box height) / box area. A box is never thinner than the lanes
the connection needs at Δt (wavelets / Δt, each lane one PE wide), so a
short straight bundle costs Δt per PE, not its whole volume. Host inputs
enter on the West edge and outputs leave on the East edge, over the
kernel's rows. The densest PE estimates the busiest link; the larger of it
and Δt estimates the realised cycles per sample.
"""

from __future__ import annotations

import numpy as np

from .place_front import Problem


def _boxes(prob: Problem, rects: list[tuple[int, int, int, int]]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x0, y0, x1, y1, bytes) of every connection's box (inclusive PE bounds)."""
    r = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    cx, cy = r[:, 0] + (r[:, 2] - 1) / 2.0, r[:, 1] + (r[:, 3] - 1) / 2.0
    a, b, w = [], [], []
    for i, lst in enumerate(prob.nbrs):
        for j, byt in lst:
            if j > i:  # each pair once (the lists are symmetric)
                a.append(i)
                b.append(j)
                w.append(byt)
    ia, ib = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    x0 = np.minimum(cx[ia], cx[ib])
    x1 = np.maximum(cx[ia], cx[ib])
    y0 = np.minimum(cy[ia], cy[ib])
    y1 = np.maximum(cy[ia], cy[ib])
    byt = np.asarray(w, dtype=np.float64)
    hin, hout = np.flatnonzero(prob.host_in > 0), np.flatnonzero(prob.host_out > 0)
    ylo, yhi = r[:, 1], r[:, 1] + r[:, 3] - 1  # the host lanes run along the kernel's rows
    x0 = np.concatenate([x0, np.zeros(hin.size), cx[hout]])
    x1 = np.concatenate([x1, cx[hin], np.full(hout.size, prob.width - 1.0)])
    y0 = np.concatenate([y0, ylo[hin], ylo[hout]])
    y1 = np.concatenate([y1, yhi[hin], yhi[hout]])
    byt = np.concatenate([byt, prob.host_in[hin], prob.host_out[hout]])
    return x0, y0, x1, y1, byt


def _widen(lo: np.ndarray, hi: np.ndarray, need: np.ndarray, limit: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Grow [lo, hi] about its middle to at least `need` PEs, inside 0..limit-1."""
    grow = np.maximum(0.0, need - (hi - lo + 1)) / 2.0
    lo, hi = lo - grow, hi + grow
    shift = np.maximum(0.0, -lo) - np.maximum(0.0, hi - (limit - 1))
    return np.clip(lo + shift, 0, limit - 1), np.clip(hi + shift, 0, limit - 1)


def density(prob: Problem, rects: list[tuple[int, int, int, int]], t: int,
            wavelet_bytes: int) -> np.ndarray:
    """(height, width): estimated wavelet-hops per sample through every PE."""
    W, H = prob.width, prob.height
    grid = np.zeros((H + 1, W + 1), dtype=np.float64)
    if not len(rects):
        return grid[:H, :W]
    x0, y0, x1, y1, byt = _boxes(prob, rects)
    wav = np.ceil(byt / wavelet_bytes)
    need = np.ceil(wav / max(1, t))
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    thin_x = bw < bh  # the box's thin side is across the bundle: there go its lanes
    nx = np.where(thin_x, need, 1.0)
    ny = np.where(thin_x, 1.0, need)
    x0, x1 = _widen(x0, x1, nx, W)
    y0, y1 = _widen(y0, y1, ny, H)
    xa, xb = np.floor(x0).astype(np.int64), np.ceil(x1).astype(np.int64) + 1
    ya, yb = np.floor(y0).astype(np.int64), np.ceil(y1).astype(np.int64) + 1
    bw, bh = (xb - xa).astype(np.float64), (yb - ya).astype(np.float64)
    d = wav * (bw + bh) / (bw * bh)
    np.add.at(grid, (ya, xa), d)
    np.add.at(grid, (ya, xb), -d)
    np.add.at(grid, (yb, xa), -d)
    np.add.at(grid, (yb, xb), d)
    return grid.cumsum(axis=0).cumsum(axis=1)[:H, :W]


def busiest_link(prob: Problem, rects: list[tuple[int, int, int, int]], t: int,
                 wavelet_bytes: int) -> float:
    """Estimated wavelets per sample on the busiest link (the densest PE)."""
    return float(density(prob, rects, t, wavelet_bytes).max(initial=0.0))


def realised(prob: Problem, rects: list[tuple[int, int, int, int]], t: int,
             wavelet_bytes: int) -> float:
    """Estimated realised cycles per sample: max(Δt, busiest link)."""
    return max(float(t), busiest_link(prob, rects, t, wavelet_bytes))
