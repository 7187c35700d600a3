"""Ribbons: a widening cut routed as several bundles whose inboxes union.

Why: a cut whose source side is shorter than its sink's rows widens its
lanes at the bundle's last corner (route_bundles._pitches: they leave side
by side and land `pitch` apart). One bundle is an affine ribbon: at that
corner every lane takes a column of its own, so L lanes need L free
columns between the two kernels, more than a shelf has (VGG-19's second
conv: 112 lanes, a shelf with some 46 columns to spare). Its rows then read
flat lanes, which no route brings them (the proof gap of issue 12).

Cut into ribbons (runs of consecutive lanes, each its own bundle with its
own path and corner: wsec.ir.lanes `split`), each ribbon leaves the source
side just below the rows it lands on, so its lanes run up only as far as
they widen; ribbons whose vertical runs overlap nest (the lower one turns
further on, as the lanes of one bundle do), the others reuse the same
columns. The columns then needed are the most lanes whose runs overlap at
any row (`plan`), not L: 32 for VGG-19's conv.

Geometry, in a frame where u runs from the source side to the sink side
(the sides' common normal) and v along them, the direction the ribbons
turn ("up"): frame lane l of the cut serves the sink rows d0 + k l .. d0 +
k l + k - 1 (pitch k) and lands on the last of them, its spine running
back; a ribbon of lanes a .. a + m - 1 has its lane 0 on the top one, its
lanes leave the source side one apart from y (its bottom lane) to y + m -
1, turn up at columns j .. j + m - 1 (its top lane innermost), and turn
onto the sink's rows at u_dst. Lane l leaves below the row it lands on, so
every lane runs up.

The router (wsec.passes.route) routes the other requests first; a cut it
left flat is then tried as ribbons on the layout it kept (`ribbon_round`):
kept where they pass only free PEs on a color free there and the busiest
link stays as busy as it was. The placer opens the columns they need where
a consumer touches its producer end to end (place_rows.open_corners).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace

import numpy as np
from wsec.ir.fabric import Fabric
from wsec.ir.graph import HOST, Bundle, Module
from wsec.ir.lanes import LaneError, check, endpoints, expand
from wsec.ir.metrics import RouteArrays, busiest_link, link_loads, route_arrays
from wsec.ir.templates import INTERNAL_COLORS

from .route_bundles import (
    Request,
    _can_cut,
    _max_load,
    _pitches,
    choose_pitch,
    cuts,
    fitting,
)

Vec = tuple[int, int]


@dataclass(frozen=True)
class Ribbon:
    """One ribbon of a plan, in frame coordinates: its first frame lane `a`,
    its `m` lanes, the source row `y` its bottom lane leaves from and the
    column `j` its top lane turns at."""

    a: int
    m: int
    y: int
    j: int


def plan(L: int, k: int, s0: int, s1: int, d0: int, u_src: int, u_dst: int,
         n: int) -> list[Ribbon] | None:
    """Ribbons of at most n lanes for L lanes at pitch k from source rows
    s0..s1 onto sink rows from d0, the columns strictly between u_src and
    u_dst free; None where they do not fit (a lane would leave above the
    row it lands on, or more columns than there are). Each ribbon leaves
    as close below its rows as the source side allows while leaving room
    for the ribbons after it."""
    if k < 2 or n < 1 or s1 - s0 + 1 < L:
        return None
    out: list[Ribbon] = []
    tops: list[int] = []
    ends: list[int] = []  # per ribbon, columns from u_dst - 1 westwards it and the ones it nests
    low = s0
    for a in range(0, L, n):
        m = min(n, L - a)
        y = min(d0 + k * a + k - 2, s1 + 1 - (L - a))
        if y < low:
            return None
        low = y + m
        off = max((ends[h] for h in range(len(out)) if tops[h] >= y), default=0)
        j = u_dst - off - m
        if j <= u_src:
            return None
        out.append(Ribbon(a, m, y, j))
        tops.append(d0 + k * (a + m) - 1)
        ends.append(off + m)
    return out


def columns(L: int, k: int, S: int, d0: int) -> int:
    """The fewest free columns ribbons of L lanes at pitch k need from a
    source side of S rows (from row 0) onto sink rows from d0 (0: no
    ribbons fit)."""
    wide = plan(L, k, 0, S - 1, d0, -10 ** 6, 0, 1)
    return 0 if wide is None else max(-r.j for r in wide)


def best_plan(L: int, k: int, s0: int, s1: int, d0: int, u_src: int,
              u_dst: int) -> list[Ribbon] | None:
    """The plan with the fewest ribbons that fits (ribbons of L/2, L/4, ...
    lanes, then 1): fewer bundles, fewer records and colors to check."""
    for g in range(2, L + 1):
        n = -(-L // g)
        if g > 2 and n == -(-L // (g - 1)):
            continue
        got = plan(L, k, s0, s1, d0, u_src, u_dst, n)
        if got is not None:
            return got
    return None


def _dot(p: Vec, q: Vec) -> int:
    return p[0] * q[0] + p[1] * q[1]


def bundles_for(r: Request) -> list[Bundle] | None:
    """r (cut at a widening pitch: its cut_pitch k, lanes L) as ribbons, on
    its sides as they are: the sides parallel and facing, the sink ahead
    with free columns between; None where no plan fits."""
    e = r.src.normal
    if r.dst.normal != e or _dot(r.src.axis, r.dst.axis) == 0 or r.owner_pitch:
        return None
    k, L = r.cut_pitch, r.lanes
    u_src, u_dst = _dot(r.src.origin, e), _dot(r.dst.origin, e)
    if u_dst - u_src < 2:
        return None
    for up in (r.dst.axis, (-r.dst.axis[0], -r.dst.axis[1])):
        src_v = sorted(_dot(r.src.pe(i), up) for i in (0, r.src.length - 1))
        dst_v = sorted(_dot(r.dst.pe(r.cut_first + t), up) for t in (0, L * k - 1))
        got = best_plan(L, k, src_v[0], src_v[1], dst_v[0], u_src, u_dst)
        if got is None:
            continue
        down = (-up[0], -up[1])

        def pt(u: int, v: int, up: Vec = up) -> Vec:
            return (u * e[0] + v * up[0], u * e[1] + v * up[1])

        out = []
        for rb in got:
            top_src = rb.y + rb.m - 1
            top_dst = dst_v[0] + k * (rb.a + rb.m) - 1
            path = (pt(u_src, top_src), pt(rb.j, top_src), pt(rb.j, top_dst), pt(u_dst, top_dst))
            b = Bundle(r.sink, 0, rb.m, down, path, r.dst.reach, "rows", k, 1)
            try:
                check(b)
            except LaneError:
                return None
            out.append(b)
        return out
    return None


def _free_color(ra: RouteArrays, fabric: Fabric, pes: np.ndarray) -> int:
    """A color no bundle of `ra` (the others') uses at any of the PEs `pes`
    (y*W + x), of those a layout may use beside the kernels' interior
    flows; -1: none."""
    W = fabric.width
    at = ra.y * W + ra.x
    mask = np.isin(at, pes)
    used = set(np.unique(ra.color[mask]).tolist())
    for c in range(INTERNAL_COLORS, fabric.usable_colors):
        if c not in used:
            return c
    return -1


def ribbon_round(module: Module, fabric: Fabric, reqs: list[Request], cap: int,
                 headrooms: tuple[float, ...]) -> tuple[int, int]:
    """Route as ribbons the cut requests the router left flat whose lanes
    widen (each kept where its ribbons pass only free PEs and its sink's
    rows, on a color free at all of them, and the busiest link stays as
    busy as it was). Each at the pitch the router would widen it at with
    each of `headrooms` (the kept layout's first), the first whose
    ribbons fit. Returns (requests split, ribbon bundles)."""
    owner = np.full((fabric.height, fabric.width), -1, np.int32)
    kernels = list(module.kernels())
    index = {k.name: i for i, k in enumerate(kernels)}
    for i, k in enumerate(kernels):
        assert k.rect is not None
        owner[k.rect.y:k.rect.y1, k.rect.x:k.rect.x1] = i
    todo = []
    for r in reqs:
        if cuts(r) or not r.cut_rows or r.src.owner == HOST or r.dst.owner == HOST \
                or r.sink not in index:
            continue
        tries: list[Request] = []  # the pitch the router would widen at, then coarser ones
        base = copy.copy(r)
        base.no_widen, base.widen, base.flat, base.light, base.runs = (False, True, False,
                                                                       False, False)
        ks = _pitches(base) if _can_cut(base) else {}
        for h in dict.fromkeys(headrooms):
            q = copy.copy(base)
            ask = max(math.ceil(q.need * h), q.min_lanes)
            choose_pitch(q, ask, cap)
            loads = {k: _max_load(q, k) for k in ks if ks[k] == 1}
            more = sorted(fitting(loads, q.cut_rows, q.wavelets, ask, max(q.need, q.min_lanes),
                                  cap))
            for k in dict.fromkeys([q.cut_pitch, *more]):
                if k in loads and k not in (t.cut_pitch for t in tries):
                    t = copy.copy(q)
                    t.cut_pitch, t.src_pitch, t.lanes, t.lane_wavelets = (k, 1, q.cut_rows // k,
                                                                          loads[k])
                    if cuts(t):
                        tries.append(t)
        if tries:
            sink = kernels[index[r.sink]]
            todo.append((-(sink.rect.w * sink.rect.h), r.edge, r.sink,  # type: ignore[union-attr]
                         tries))
    todo.sort(key=lambda t: t[:3])
    cache: dict = {}  # each bundle's route entries, measured once
    top = busiest_link(link_loads(route_arrays(module, cache), fabric))
    before = top.wavelets if top else 0
    split = made = 0
    for _, ei, sink, tries in todo:
        ribbons = next((got for q in tries if (got := bundles_for(q))), None)
        if not ribbons:
            continue
        e = module.edges[ei]
        assert e.bundles is not None
        old = [b for b in e.bundles if b.sink == sink]
        if len(old) != 1:
            continue
        si = index[sink]
        pes = []
        ok = True
        for b in ribbons:
            ex = expand(b)
            on = (ex.x >= 0) & (ex.x < fabric.width) & (ex.y >= 0) & (ex.y < fabric.height)
            if not on.all():
                ok = False
                break
            who = owner[ex.y, ex.x]
            src, _ = endpoints(b)  # each lane's source PE: its producer's
            start = np.isin(ex.y * fabric.width + ex.x, src[:, 1] * fabric.width + src[:, 0])
            if not ((who == -1) | (who == si) | (start & (who == index[e.src]))).all():
                ok = False
                break
            pes.append(ex.y * fabric.width + ex.x)
        if not ok:
            continue
        at = np.concatenate(pes)
        if np.unique(at).size != at.size:
            continue  # ribbons of one color meet: never by the plan, refused if they do
        keep = list(e.bundles)
        e.bundles = [b for b in e.bundles if b.sink != sink]
        color = _free_color(route_arrays(module, cache), fabric, np.unique(at))
        if color < 0:
            e.bundles = keep
            continue
        e.bundles = e.bundles + [replace(b, color=color) for b in ribbons]
        top = busiest_link(link_loads(route_arrays(module, cache), fabric))
        if (top.wavelets if top else 0) > max(before, cap):
            e.bundles = keep
            continue
        split += 1
        made += len(ribbons)
    return split, made
