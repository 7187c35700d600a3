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
any row (`plan`), not L: 32 for VGG-19's conv. Where the sink's rows reach
past both ends of the source side (a side facing the middle of taller
rows), the rows below take ribbons turning down and those above ribbons
turning up, in the same columns (`split_plan`).

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
    exchange_colors,
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


def split_plan(L: int, k: int, s0: int, s1: int, d0: int, u_src: int, u_dst: int,
               tries: int = 9) -> tuple[int, int, list[Ribbon], list[Ribbon]] | None:
    """Ribbons for L lanes at pitch k whose sink rows (from d0) reach past
    both ends of the source side s0..s1: frame lanes b..L-1 turn up from
    source rows t + 1..s1, lanes 0..b-1 turn down from rows s0..t (their
    plan in the mirrored frame, where lane 0 is lane b - 1), as (b, t,
    down, up); None where no split of `tries` fits. The two halves share
    the columns: the down ribbons run in rows up to t, the up ones above
    it. Each lane runs at least one row to its landing row, so b and t
    satisfy d0 + b k + 1 - k <= t <= d0 + b k + k - 3, and each half
    needs a source row per lane; of the splits that allow it, `tries`
    spread from the middle outwards are tried."""
    if k < 2 or L < 2:
        return None
    lo = max(1, -(-(s0 - d0 - k + 2) // (k - 1)))
    hi = min(L - 1, (s1 - L - d0 + k - 1) // (k - 1))
    if lo > hi:
        return None
    mid = (lo + hi) // 2
    order = sorted(range(lo, hi + 1), key=lambda b: (abs(b - mid), b))
    step = max(1, len(order) // tries)
    for b in order[::step][:tries]:
        t = min(max(d0 + b * k - 1, s0 + b - 1, d0 + b * k + 1 - k), s1 - L + b,
                d0 + b * k + k - 3)
        if t < s0 + b - 1 or t < d0 + b * k + 1 - k:
            continue
        up = best_plan(L - b, k, t + 1, s1, d0 + b * k, u_src, u_dst)
        if up is None:
            continue
        down = best_plan(b, k, -t, -s0, -(d0 + b * k - 1), u_src, u_dst)
        if down is not None:
            return b, t, down, up
    return None


def _dot(p: Vec, q: Vec) -> int:
    return p[0] * q[0] + p[1] * q[1]


def bundles_for(r: Request) -> list[Bundle] | None:
    """r (cut at a widening pitch: its cut_pitch k, lanes L) as ribbons, on
    its sides as they are: the sides parallel and facing, the sink ahead
    with free columns between; None where no plan fits. All ribbons turn
    the same way where the source side lies below (or above) the rows they
    land on; else the rows below the side take ribbons turning down and
    those above ribbons turning up (`split_plan`)."""
    e = r.src.normal
    if r.dst.normal != e or _dot(r.src.axis, r.dst.axis) == 0 or r.owner_pitch:
        return None
    k, L = r.cut_pitch, r.lanes
    u_src, u_dst = _dot(r.src.origin, e), _dot(r.dst.origin, e)
    if u_dst - u_src < 2:
        return None
    up = r.dst.axis
    flip = (-up[0], -up[1])
    src_v = sorted(_dot(r.src.pe(i), up) for i in (0, r.src.length - 1))
    d0 = _dot(r.dst.pe(r.cut_first), up)
    parts: list[tuple[Vec, int, list[Ribbon]]] | None = None  # (frame up, frame d0, plan)
    for way, (s0, s1), f0 in ((up, src_v, d0), (flip, (-src_v[1], -src_v[0]), -(d0 + L * k - 1))):
        got = best_plan(L, k, s0, s1, f0, u_src, u_dst)
        if got is not None:
            parts = [(way, f0, got)]
            break
    if parts is None:
        two = split_plan(L, k, src_v[0], src_v[1], d0, u_src, u_dst)
        if two is None:
            return None
        b, _, down, upper = two
        parts = [(flip, -(d0 + b * k - 1), down), (up, d0 + b * k, upper)]
    out = []
    for way, f0, got in parts:
        back = (-way[0], -way[1])

        def pt(u: int, v: int, way: Vec = way) -> Vec:
            return (u * e[0] + v * way[0], u * e[1] + v * way[1])

        for rb in got:
            top_src = rb.y + rb.m - 1
            top_dst = f0 + k * (rb.a + rb.m) - 1
            path = (pt(u_src, top_src), pt(rb.j, top_src), pt(rb.j, top_dst), pt(u_dst, top_dst))
            b = Bundle(r.sink, 0, rb.m, back, path, r.dst.reach, "rows", k, 1)
            try:
                check(b)
            except LaneError:
                return None
            out.append(b)
    return out


def _free_color(ra: RouteArrays, fabric: Fabric, pes: np.ndarray, halo: int = 0) -> int:
    """A color no bundle of `ra` (the others') uses at any of the PEs `pes`
    (y*W + x), of those a layout may use beside the kernels' interior
    flows and the `halo` colors its halo exchanges run on (wsec.ir.halo);
    -1: none."""
    W = fabric.width
    at = ra.y * W + ra.x
    mask = np.isin(at, pes)
    used = set(np.unique(ra.color[mask]).tolist())
    for c in range(INTERNAL_COLORS, fabric.usable_colors - halo):
        if c not in used:
            return c
    return -1


def _free_pes(ribbons: list[Bundle], owner: np.ndarray, fabric: Fabric, sink: int,
              src: int) -> np.ndarray | None:
    """The PEs (y*W + x, sorted) ribbons pass, where they pass only free
    PEs, their sink's and their lanes' first PEs (the producer's), each PE
    once (ribbons of one color never meet: by the plan, refused if they
    do); None where they do not (`owner`: the kernel index per PE, -1
    free)."""
    W = fabric.width
    pes = []
    for b in ribbons:
        ex = expand(b)
        on = (ex.x >= 0) & (ex.x < W) & (ex.y >= 0) & (ex.y < fabric.height)
        if not on.all():
            return None
        who = owner[ex.y, ex.x]
        first, _ = endpoints(b)  # each lane's source PE: its producer's
        start = np.isin(ex.y * W + ex.x, first[:, 1] * W + first[:, 0])
        if not ((who == -1) | (who == sink) | (start & (who == src))).all():
            return None
        pes.append(ex.y * W + ex.x)
    at = np.concatenate(pes)
    got = np.unique(at)
    return got if got.size == at.size else None


def ribbon_round(module: Module, fabric: Fabric, reqs: list[Request], cap: int,
                 headrooms: tuple[float, ...]) -> tuple[int, int]:
    """Route as ribbons the cut requests the router left flat whose lanes
    widen (each kept where its ribbons pass only free PEs and its sink's
    rows, on a color free at all of them, and the busiest link stays as
    busy as it was). Each at the pitch the router would widen it at with
    each of `headrooms` (the kept layout's first), then the coarser ones
    that fit, the first whose ribbons pass those checks (a finer pitch's
    lanes may not fit the columns, a coarser one's overfill a link they
    share with a bundle passing the sink's rows). Returns (requests
    split, ribbon bundles)."""
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
        base.widen_failed = frozenset()  # ribbons turn in their own columns: every pitch
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
    halo = exchange_colors(reqs)
    for _, ei, sink, tries in todo:
        e = module.edges[ei]
        assert e.bundles is not None
        if sum(b.sink == sink for b in e.bundles) != 1:
            continue
        keep = list(e.bundles)
        for q in tries:  # the first pitch whose ribbons pass every check
            ribbons = bundles_for(q)
            at = _free_pes(ribbons, owner, fabric, index[sink], index[e.src]) if ribbons \
                else None
            if at is None:
                continue
            e.bundles = [b for b in keep if b.sink != sink]
            color = _free_color(route_arrays(module, cache), fabric, at, halo)
            if color >= 0:
                e.bundles = e.bundles + [replace(b, color=color) for b in ribbons]
                top = busiest_link(link_loads(route_arrays(module, cache), fabric))
                if (top.wavelets if top else 0) <= max(before, cap):
                    split += 1
                    made += len(ribbons)
                    break
            e.bundles = keep
    return split, made
