"""Flow shelves: kernels shorter than their shelf slide off the rows that
bundles passing them need.

Why: flow shelves (place_shelf, one kernel per column) put every kernel at
the foot of its shelf. A bundle from a kernel to one further along the shelf
(a skip edge: a residual, a shortcut branch) runs straight along the rows
its two ends share, through the rows of every kernel between them. A kernel
whose input lanes already carry close to the link capacity (one wavelet per
cycle at the bottleneck time: a strided conv's input side can be no taller
than its output rows) has no room left on those rows, and the bundle
passing through them sets the realised cycles per sample. Where the kernel
is shorter than its shelf, rows of the shelf beside it are free: sliding it
there lets the bundle pass below or above it on free PEs, at no cost in
area or bottleneck time.

How: per shelf, each run of consecutive short kernels that exchange data
(they must stay face to face, so they slide together) is a group. For each
member, estimate the load of each row of the shelf at its place: its own
inputs on the lanes the router will give them, over its rows, plus every
bundle spanning it (source before it, sink after it, on the same shelf;
not one carrying the same value as its own input, whose lanes it shares)
on its lanes over the rows its two ends share. The group moves by the shift
whose rows overflow the capacity least, only when that is strictly less
than where it stands, and never to where a member touches fewer rows of a
kernel outside the group that it exchanges data with (its own bundles stay
straight). Column shelves (a transposed layout, kernels rotated) are the
same with x and y swapped.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.fabric import Fabric
from wsec.ir.graph import HOST, Module, Rect

from .route import AUTO_HEADROOMS

# (start along the shelf, end, start across, end): a rectangle in the shelf's frame
_Span = tuple[int, int, int, int]
# (edge, source, sink, wavelets per sample): a kernel-to-kernel bundle
_Flow = tuple[int, str, str, int]


def _frame(r: Rect, columns: bool) -> _Span:
    return (r.y, r.y1, r.x, r.x1) if columns else (r.x, r.x1, r.y, r.y1)


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def slide_short_kernels(module: Module, fabric: Fabric, cap: int, columns: bool) -> int:
    """Slide kernels shorter than their flow shelf off rows that spanning
    bundles need (module docstring); returns how many moved. `columns`:
    the shelves are columns (a transposed flow layout)."""
    span = {k.name: _frame(k.rect, columns) for k in module.kernels() if k.rect is not None}
    if not span or cap <= 0:
        return 0
    shelves: dict[int, list[str]] = {}
    for name, s in span.items():
        shelves.setdefault(s[2], []).append(name)
    flows = _flows(module, fabric)
    linked = {(s, d) for _, s, d, _ in flows} | {(d, s) for _, s, d, _ in flows}
    moved = 0
    for base, members in shelves.items():
        band = max(span[n][3] for n in members) - base
        shelf = set(members)
        inner = [f for f in flows if f[1] in shelf and f[2] in shelf]  # bundles along the shelf
        row = sorted(members, key=lambda n: span[n][0])
        for group in _groups(row, span, linked, band):
            moved += _slide(group, span, flows, inner, base, band, cap)
    for k in module.kernels():
        s, r = span.get(k.name), k.rect
        if s is not None and r is not None:
            k.rect = Rect(s[2], s[0], r.w, r.h) if columns else Rect(s[0], s[2], r.w, r.h)
    return moved


def _groups(row: list[str], span: dict[str, _Span], linked: set[tuple[str, str]],
            band: int) -> list[list[str]]:
    """Runs of consecutive kernels of a shelf (in order along it) shorter
    than the shelf, each next one exchanging data with the one before."""
    out: list[list[str]] = []
    for n in row:
        if span[n][3] - span[n][2] >= band:
            out.append([])
        elif out and out[-1] and (out[-1][-1], n) in linked:
            out[-1].append(n)
        else:
            out.append([n])
    return [g for g in out if g]


def _flows(module: Module, fabric: Fabric) -> list[_Flow]:
    """Every kernel-to-kernel bundle (edge, source, sink, wavelets per sample)."""
    out = []
    for i, e in enumerate(module.edges):
        if e.src == HOST:
            continue
        wav = int(fabric.wavelets(e.bytes_per_sample))
        out += [(i, e.src, d, wav) for d in dict.fromkeys(e.dsts) if d != HOST]
    return out


def _lane_load(wav: int, rows: int, cap: int) -> float:
    """Wavelets per sample on each lane of a bundle landing on `rows` rows:
    the router gives it the lanes its capacity needs times its first
    headroom (route.AUTO_HEADROOMS), as many as the rows allow."""
    need = -(-wav // cap)
    return wav / max(1, min(rows, int(np.ceil(need * AUTO_HEADROOMS[0]))))


def _row_loads(name: str, span: dict[str, _Span], flows: list[_Flow], inner: list[_Flow],
               group: set[str], base: int, band: int, cap: int) -> np.ndarray:
    """Estimated wavelets per sample on each row of the shelf at kernel
    `name`'s place, were it to cover every row: its own inputs (of all
    `flows`), and the bundles passing it (of `inner`, those along the
    shelf; module docstring)."""
    u0, u1, v0, v1 = span[name]
    load = np.zeros(band, dtype=np.float64)
    own = [(e, w) for e, _, d, w in flows if d == name]
    mine = {e for e, _ in own}
    for _, w in own:
        load += _lane_load(w, v1 - v0, cap)
    for e, s, d, w in inner:
        if e in mine or s in group or d in group:
            continue
        a, b = span[s], span[d]
        lo, hi = (a, b) if a[0] <= b[0] else (b, a)
        if not (lo[1] <= u0 and u1 <= hi[0]):
            continue  # the bundle does not pass the kernel
        w0, w1 = max(a[2], b[2]) - base, min(a[3], b[3]) - base
        if w1 <= w0:
            continue  # its ends share no rows: it turns rather than run straight through
        load[max(0, w0):min(band, w1)] += _lane_load(w, w1 - w0, cap)
    return load


def _clash(group: list[str], span: dict[str, _Span], dv: int) -> bool:
    """Whether a member shifted by dv across the shelf would meet a kernel
    outside the group: the band is free only up to the next shelf's base,
    and a producer raised to its consumer's rows (place_rows) may reach
    past it where the next shelf leaves its columns free (measured:
    Inception-v1's first conv raised to 672 rows, its shelf's band then
    reached over the next shelf's kernels)."""
    members = set(group)
    for n in group:
        u0, u1, v0, v1 = span[n]
        for m, (a0, a1, b0, b1) in span.items():
            if m not in members and _overlap(u0, u1, a0, a1) \
                    and _overlap(v0 + dv, v1 + dv, b0, b1):
                return True
    return False


def _slide(group: list[str], span: dict[str, _Span], flows: list[_Flow], inner: list[_Flow],
           base: int, band: int, cap: int) -> int:
    """Shift a group of kernels across its shelf (`span`, in the shelf's
    frame) by the amount whose rows overflow least (module docstring);
    how many kernels moved."""
    members = set(group)
    lo = -min(span[n][2] for n in group) + base  # the shifts that stay on the shelf
    hi = base + band - max(span[n][3] for n in group)
    shifts = np.arange(lo, hi + 1)
    cost = np.zeros(shifts.size, dtype=np.float64)
    keep: list[tuple[int, int, int, int]] = []  # a member's rows, a partner's outside the group
    for n in group:
        _, _, v0, v1 = span[n]
        over = np.maximum(0.0, _row_loads(n, span, flows, inner, members, base, band, cap) - cap)
        pre = np.concatenate([[0.0], np.cumsum(over)])
        start = v0 - base + shifts
        cost += pre[start + (v1 - v0)] - pre[start]
        for _, s, d, _ in inner:
            other = d if s == n else s if d == n else None
            if other is not None and other not in members:
                p = span[other]
                keep.append((v0, v1, p[2], p[3]))
    here = int(-lo)
    for i in np.lexsort((np.abs(shifts), cost)).tolist():  # least overflow, then nearest
        if cost[i] >= cost[here] - 1e-9:
            return 0
        dv = int(shifts[i])
        if all(_overlap(v0 + dv, v1 + dv, p0, p1) >= _overlap(v0, v1, p0, p1)
               for v0, v1, p0, p1 in keep) and not _clash(group, span, dv):
            for n in group:
                u0, u1, v0, v1 = span[n]
                span[n] = (u0, u1, v0 + dv, v1 + dv)
            return len(group)
    return 0
