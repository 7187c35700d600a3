"""Routing: every edge becomes bundles of lanes, negotiated for capacity and colors.

Why bundles: a kernel rectangle takes its input along a whole side, one lane
per PE row, and sends its output along the opposite side (route_bundles).
An edge is one bundle per sink with enough lanes that none carries more
wavelets per sample than a link moves in the bottleneck time Δt (its
capacity: one wavelet per cycle), so links stop bounding throughput.

How (the shape of VPR's and MLIR-AIE's routers, on pattern routes):
1. Slots: each request gets `lanes` contiguous slots on the source and sink
   ports (route_bundles.assign_slots).
2. Pattern routes: straight, L, Z and corridor U shapes of nested lanes, so
   a bundle's lanes never share a PE and the bundle keeps one color.
3. PathFinder negotiation over directed links (RAMPs are fixed by the
   slots): a bundle's cost is the sum, over the links its lanes use, of
   (1 + history) x (1 + present x overflow / capacity), plus a charge on
   PEs already crossed by many bundles (colors are the second resource).
   Each iteration re-routes only bundles on overused links or crowded PEs;
   the present factor grows, overuse accumulates into history.
4. Colors: bundles sharing a PE need different colors: DSATUR on the
   conflict graph, bundles as units. Colors 0 and 1 are kept for every
   kernel's interior flows (reused in every rectangle); host bundles take the
   colors reserved for host I/O first.
5. Widening: where the busiest link carries lanes of several bundles, the
   narrow ones (a sink's side split among its inputs) could carry less per
   lane. Another attempt gives those requests the lanes that fit them beside
   the others (from their sides' headroom), starting from the kept routes;
   where no number of lanes would do, the most roundabout bundle there
   moves to its next side pair (a U-turn around a kernel it could cross).
   An attempt is kept only if its busiest link is lighter. A cut request
   whose lanes (one on every row of its sink's side) overfill a link beside
   a bundle passing those rows is routed flat in such an attempt.
6. Un-flattening: those cut requests are routed cut again once widening is
   done; where one overfills a link again, the most roundabout bundle
   there (a skip edge's U turn along the sink's rows) moves to its next
   side pair instead. Kept where fewer sink PEs read flat lanes and the
   busiest link bounds throughput no more.
7. Widening and side pairs: attempts that let cut requests widen their
   lanes at a corner, then move to the first side pair where they cut; the
   new cuts that crowd a link or a PE are routed flat again (all at once,
   from an attempt where they crowd one another), and then those that fit
   beside the others on the settled loads are cut again (_recut), with
   the cuts the widening attempts flattened that _unflatten could not cut
   again (on the cut routes its attempts found, at their lightest pitch:
   Request.light); within Route.proof_slack those re-cuts may load the
   busiest link a few % over the bound (a flat route whose sink reads
   rows no lane brought is no correct binary), noted per compile where
   they do. Then, for free, one at a time, those still flat whose cut
   lanes fit where the bundles passing their sinks' rows take lighter lanes
   (a flat one more lanes, a cut one a finer pitch: _thin_recut).
   A request whose sink reads only part of its value (a slice:
   Request.partial) is routed flat in the first attempts and goes through
   these rounds like a flattened cut.

8. Ribbons: a cut left flat whose lanes would widen where one bundle's
   corner has no room (a column per lane) is routed as several bundles,
   runs of its lanes each turning at a corner of its own, where they fit
   on the kept layout (route_ribbons.ribbon_round).

Per-iteration figures (overused links, busiest link / capacity, colors at
the busiest PE) go to `module.attrs["route_iterations"]` and the notes.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from wsec.ir.fabric import DIRS, PORT_BITS, Fabric
from wsec.ir.graph import HOST, Bundle, Module, Rect
from wsec.ir.lanes import expand, expand_many
from wsec.ir.metrics import (
    busiest_link,
    colors_per_pe,
    halo_arrays,
    link_loads,
    route_arrays,
    routed_wirelength,
)
from wsec.ir.templates import INTERNAL_COLORS

from .base import LayoutInfeasible, Pass, PassContext, PassError, check_range
from .route_bundles import (
    CANDIDATE_BUDGET,
    MAX_CANDIDATES,
    Request,
    assign_slots,
    candidates,
    exchange_colors,
    lightest_cut,
    on_run,
    pitch_loads,
    requests,
)
from .route_ribbons import ribbon_round

_SAMPLE = 4  # lanes a candidate's cost is estimated on (both edges of the bundle among them)
_SHARED = 0.25  # cost of a link a sibling bundle already carries the same lane on
_EMPTY = np.zeros(0, np.int64)
_PLANES = {d: i for i, d in enumerate(DIRS)}


@dataclass
class _Route:
    """A chosen pattern: the bundle and its footprint (linear indices)."""

    bundle: Bundle
    links: np.ndarray  # plane*H*W + y*W + x of every direction link its lanes use
    pes: np.ndarray  # y*W + x of every PE its lanes use
    link_lanes: np.ndarray  # per link: (link << 20) | the lane using it
    pe_lanes: np.ndarray  # per PE: ((pe << 20) | lane) << 8 | the ports it receives from
    distinct: bool = False  # no link and no PE twice: loads add by plain indexing (_add)

    def __post_init__(self) -> None:
        self.distinct = _distinct(self.links) and _distinct(self.pes)


def _distinct(a: np.ndarray) -> bool:
    s = np.sort(a)
    return bool((s[1:] != s[:-1]).all())


_STREAMS = 8  # runs of candidates _interleaved takes turns over


def _interleaved(seg: np.ndarray, n: int) -> np.ndarray:
    """An order of elements sorted by their candidate `seg` (of n) that keeps
    each candidate's in order but takes turns over _STREAMS runs of whole
    candidates, about as many elements each: a sum per candidate
    (np.bincount) then adds each candidate's elements in the same order, to
    the same costs, but consecutive adds go to different candidates and
    need not wait for one another (measured 3.5x faster on 240k elements)."""
    counts = np.bincount(seg, minlength=n)
    start = np.cumsum(counts) - counts
    run = (start * _STREAMS // max(1, seg.size))[seg]  # each element's run (whole candidates)
    sizes = np.bincount(run, minlength=_STREAMS)
    rank, at = np.nonzero(np.arange(sizes.max(initial=0))[:, None] < sizes)
    return (np.cumsum(sizes) - sizes)[at] + rank


_Distinct = tuple[np.ndarray, np.ndarray]  # values once, and where each element is among them


def _distinct_of(at: np.ndarray, mark: np.ndarray) -> _Distinct:
    """The distinct values of `at` (in no particular order: route prices each
    on its own) and where each element of `at` is among them (intp: it
    indexes); `mark`: scratch space indexed by the values (no sort, no hash:
    each value is marked with one of its elements', and that element is
    where it is first)."""
    own = np.arange(at.size, dtype=mark.dtype)
    mark[at] = own  # of repeated values one element's index stays, whichever
    vals = at[mark[at] == own]
    mark[vals] = np.arange(vals.size, dtype=mark.dtype)
    return vals, mark[at].astype(np.intp)


def _add(arr: np.ndarray, at: np.ndarray, value: float, distinct: bool) -> None:
    """np.add.at(arr, at, value); with `distinct` indices the same sums by
    plain indexing, many times faster."""
    if distinct:
        arr[at] += value
    else:
        np.add.at(arr, at, value)


_LANE_BITS = 20


def _sample(lanes: int) -> list[int]:
    """The lanes a candidate's cost is estimated on: all, or _SAMPLE evenly
    spread (both edges of the bundle among them)."""
    if lanes <= _SAMPLE:
        return list(range(lanes))
    return np.unique(np.linspace(0, lanes - 1, _SAMPLE).astype(np.int64)).tolist()


class _Negotiator:
    def __init__(self, reqs: list[Request], fabric: Fabric, cap: int, corridors: list[int],
                 color_soft: int, known: _Candidates | None = None) -> None:
        self.reqs, self.fabric, self.cap = reqs, fabric, max(1, cap)
        W, H = fabric.width, fabric.height
        self.W, self.H = W, H
        self.occ = np.zeros(6 * H * W, dtype=np.float64)  # four directions, RAMP in, out
        self.hist = np.zeros(6 * H * W, dtype=np.float64)
        self.pe_cnt = np.zeros(H * W, dtype=np.int32)
        self.pe_uses = np.zeros(H * W, dtype=np.int32)  # routes on each PE, siblings too
        self.pres = 0.5
        self.color_soft = color_soft
        self.colors = fabric.target.colors - INTERNAL_COLORS  # bundle colors there are
        self.lane_load = [max(1, r.lane_wavelets if r.cut_pitch else -(-r.wavelets // r.lanes))
                          for r in reqs]
        known = known or _Candidates(fabric, corridors, len(reqs))
        self.cands = [known(r) for r in reqs]
        self.keys = [known.key(r) for r in reqs]
        self.known = known
        self.routes: list[_Route | None] = [None] * len(reqs)
        group: dict[tuple[int, int], list[int]] = {}
        # a cut request's lanes carry its own sink's boxes: it has no siblings
        keys = [(r.edge, r.lanes) if not r.cut_pitch else (-1 - i, 0) for i, r in enumerate(reqs)]
        for i, key in enumerate(keys):
            group.setdefault(key, []).append(i)
        self.siblings = [[j for j in group[key] if j != i] for i, key in enumerate(keys)]
        self.others_memo: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.packed: dict[int, tuple[_Distinct, np.ndarray, _Distinct, np.ndarray]] = {}
        self.packed_lanes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.parted: set[tuple[int, str]] = set()  # (edge, sink) of siblings found crossing

    def _footprint(self, i: int, j: int) -> _Route:
        """Candidate j of request i with every lane (kept for every attempt
        that has the same candidates: a route is the same object in all)."""
        key = (self.keys[i], j)
        if key not in self.known.footprints:
            self.known.footprints[key] = self._expand(i, j)
        return self.known.footprints[key]

    def _expand(self, i: int, j: int) -> _Route:
        """Candidate j of request i as links and PEs (int32 indices)."""
        r, b = self.reqs[i], self.cands[i][j]
        ex = expand(b, r.src.owner == HOST, r.dst.owner == HOST,
                    checked=True)  # candidates are checked when drawn up (_finish)
        W, H = self.W, self.H
        links, lanes = [], []
        for d, p in _PLANES.items():
            sel = (ex.tx & PORT_BITS[d]) != 0
            links.append(p * H * W + ex.y[sel] * W + ex.x[sel])
            lanes.append(ex.lane[sel])
        for p, mask in ((4, ex.tx), (5, ex.rx)):  # the cores' RAMPs: delivered, injected
            sel = (mask & PORT_BITS["RAMP"]) != 0
            links.append(p * H * W + ex.y[sel] * W + ex.x[sel])
            lanes.append(ex.lane[sel])
        lk = np.concatenate(links).astype(np.int64)
        pe = (ex.y * W + ex.x).astype(np.int64)
        return _Route(b, lk.astype(np.int32), pe.astype(np.int32),
                      (lk << _LANE_BITS) | np.concatenate(lanes).astype(np.int64),
                      (((pe << _LANE_BITS) | ex.lane.astype(np.int64)) << 8) | ex.rx)

    def _others(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The link-lane and PE-lane keys of request i's placed siblings (same
        edge, same lanes: they carry the same slices lane by lane, so a
        link or PE they already use with that lane costs nothing more),
        each sorted (for _member); kept per set of sibling routes."""
        sib = [self.routes[j] for j in self.siblings[i] if self.routes[j] is not None]
        if not sib:
            return _EMPTY, _EMPTY
        key = tuple(id(rt) for rt in sib)  # routes live in known.footprints: ids stay unique
        got = self.others_memo.get(key)
        if got is None:
            got = (np.sort(np.concatenate([rt.link_lanes for rt in sib])),
                   np.sort(np.concatenate([rt.pe_lanes >> 8 for rt in sib])))
            self.others_memo[key] = got
        return got

    def _counted(self, i: int, rt: _Route) -> tuple[np.ndarray, np.ndarray]:
        """The links and PEs route rt of request i adds load and a bundle to:
        all of its own, but those its placed siblings already carry the same
        lane on (a fork costs nothing there)."""
        links, pes = rt.links, rt.pes
        if self.siblings[i]:
            lk, pk = self._others(i)
            if lk.size:
                links = links[~_member(rt.link_lanes, lk)]
                pes = pes[~_member(rt.pe_lanes >> 8, pk)]
        return links, pes

    def _place(self, i: int, rt: _Route, sign: int) -> None:
        links, pes = self._counted(i, rt)
        _add(self.occ, links, sign * self.lane_load[i], rt.distinct)
        _add(self.pe_cnt, pes, sign, rt.distinct)
        _add(self.pe_uses, rt.pes, sign, rt.distinct)

    def _pack(self, i: int) -> tuple[_Distinct, np.ndarray, _Distinct, np.ndarray]:
        """All sampled candidates of request i at once: their distinct links
        and PEs, and per element (a candidate's link or PE) which of those it
        is and its candidate's index (one numpy pass prices every candidate;
        the candidates share most links, the same slots, the same first
        segment: each is priced once, measured 7x fewer on ShuffleNet)."""
        if i not in self.packed:
            got = self.known.packed.get(self.keys[i])  # the same candidates, another attempt
            if got is None:
                got = self._sampled(i)
                self.known.packed[self.keys[i]] = got
            self.packed[i] = got[:4]
            if self.siblings[i]:
                self.packed_lanes[i] = got[4:]
        return self.packed[i]

    def _sampled(self, i: int) -> tuple[np.ndarray, ...]:
        """Every candidate of request i on its sampled lanes (as `_expand`
        with `sample`, candidate after candidate), expanded at once: links
        (_distinct_of), their candidates, PEs (_distinct_of), theirs,
        link-lane and PE-lane keys."""
        r, W, HW = self.reqs[i], self.W, self.W * self.H
        ex, counts = expand_many([(b, r.src.owner == HOST, r.dst.owner == HOST,
                                   _sample(b.lanes)) for b in self.cands[i]])
        cand = np.repeat(np.arange(counts.size), counts)
        pe = ex.y * W + ex.x
        links, lanes, of = [], [], []
        for p, (mask, bit) in enumerate([(ex.tx, PORT_BITS[d]) for d in DIRS]
                                        + [(ex.tx, PORT_BITS["RAMP"]), (ex.rx, PORT_BITS["RAMP"])]):
            sel = (mask & bit) != 0
            links.append(p * HW + pe[sel])
            lanes.append(ex.lane[sel])
            of.append(cand[sel] * 6 + p)
        key = np.concatenate(of)
        if 6 * counts.size < 1 << 16:  # a stable sort of 16-bit keys is a radix sort
            key = key.astype(np.uint16)
        order = np.argsort(key, kind="stable")  # by candidate, then plane
        lseg = key[order].astype(np.int64) // 6
        order = order[_interleaved(lseg, counts.size)]
        lk = np.concatenate(links)[order]
        at = _interleaved(cand, counts.size)
        pe = pe[at]
        mark = self.known.scratch(6 * HW)
        return (_distinct_of(lk.astype(np.int32), mark), key[order].astype(np.int64) // 6,
                _distinct_of(pe.astype(np.int32), mark), cand[at],
                (lk << _LANE_BITS) | np.concatenate(lanes)[order],
                (pe << _LANE_BITS) | ex.lane[at])

    def route(self, i: int) -> None:
        old = self.routes[i]
        if old is not None:
            self._place(i, old, -1)
        if not self.cands[i]:
            r = self.reqs[i]
            raise LayoutInfeasible(
                f"no pattern route for edge #{r.edge} to '{r.sink}' ({r.lanes} lanes from "
                f"'{r.src.owner}' at {r.src.pe(r.src_slot)} to {r.dst.pe(r.dst_slot)}); use a "
                "larger grid (--grid) so that kernels spread out")
        lanes = self.reqs[i].lanes
        scale = lanes / _SAMPLE if lanes > _SAMPLE else 1.0
        (links, lat), lseg, (pes, pat), pseg = self._pack(i)
        n = len(self.cands[i])
        w = self.lane_load[i]
        over = np.maximum(0.0, self.occ[links] + w - self.cap) / self.cap
        per_link = ((1.0 + self.hist[links]) * (1.0 + self.pres * over))[lat]
        crowd = np.maximum(0, self.pe_cnt[pes] + 1 - self.color_soft).astype(np.float64)
        crowd = crowd[pat] if crowd.any() else None  # uncrowded: no PE adds to any cost
        if i in self.packed_lanes:  # where a sibling already carries the lane: a fork, free
            lk, pk = self._others(i)
            if lk.size:
                per_link = np.where(_member(self.packed_lanes[i][0], lk), _SHARED, per_link)
                if crowd is not None:
                    crowd = np.where(_member(self.packed_lanes[i][1], pk), 0.0, crowd)
        cost = np.bincount(lseg, weights=per_link, minlength=n)
        if crowd is not None:  # (adding zeros would change no cost)
            cost = cost + 4.0 * np.bincount(pseg, weights=crowd, minlength=n)
        cost = cost * scale
        best = int(np.argmin(cost))  # ties: the first candidate
        rt = self._footprint(i, best)
        self.routes[i] = rt
        self._place(i, rt, +1)

    def overused(self) -> tuple[np.ndarray, np.ndarray]:
        return self.occ > self.cap + 1e-9, self.pe_cnt > self.color_soft

    def stats(self) -> dict[str, float]:
        placed = [i for i, rt in enumerate(self.routes) if rt is not None]
        routes = [self.routes[i] for i in placed]
        of, adj, clash = _conflicts(routes, [self.reqs[i] for i in placed], self.known.forks,
                                    self.pe_uses)
        self._part(clash, placed)
        links, pes = self.overused()
        return {"overused_links": int(links.sum()),
                "max_link_over_capacity": round(float(self.occ.max(initial=0)) / self.cap, 4),
                "max_bundles_per_pe": int(self.pe_cnt.max(initial=0)),
                "crowded_pes": int(pes.sum()),
                "colors_needed": 1 + max(_dsatur(adj), default=-1)}

    def _part(self, clash: list[tuple[int, int]], placed: list[int]) -> None:
        """Siblings whose lanes cross (a fork of a wide bundle does) cannot be
        one multicast route: from now on each pays for its own links, and
        the loads are counted again."""
        parted = False
        for a, b in clash:
            i, j = placed[a], placed[b]
            if j in self.siblings[i]:
                self.siblings[i].remove(j)
                self.siblings[j].remove(i)
                self.parted |= {(self.reqs[k].edge, self.reqs[k].sink) for k in (i, j)}
                parted = True
        if parted:
            self._replace(self.routes)

    def _replace(self, routes: list[_Route | None]) -> None:
        """Take `routes` as the placed ones, counting the loads again."""
        self.occ[:] = 0.0
        self.pe_cnt[:] = 0
        self.pe_uses[:] = 0
        self.routes = [None] * len(routes)
        for i, rt in enumerate(routes):
            if rt is not None:
                self.routes[i] = rt
                self._place(i, rt, +1)

    def wider(self, occ: np.ndarray, tried: set[tuple[int, str]], widen: bool = True
              ) -> tuple[dict[tuple[int, str], int], dict[tuple[int, str], int]]:
        """For the requests whose lanes share the busiest links: the lanes each
        would need for its own lane to fit beside what the others carry
        there (a bundle squeezed onto a narrow share of a side, crossing a
        wider one's lanes, is the usual case); and, where no request there
        can widen that far, the side pair to move the most roundabout one
        to (a detour around a kernel that a straight bundle could cross),
        unless it is in `tried` (only that with `widen` false). `occ` holds
        the link loads as the routes will be programmed (siblings' shared
        lanes once)."""
        out: dict[tuple[int, str], int] = {}
        stuck: list[tuple[int, int]] = []
        top = float(occ.max(initial=0))
        if top <= self.cap:
            return out, {}
        for i, rt in enumerate(self.routes):
            if rt is None:
                continue
            load = occ[rt.links]
            hot = load >= 0.99 * top  # the busiest links: they set throughput
            if not hot.any():
                continue
            room = self.cap - float((load[hot] - self.lane_load[i]).max())
            r = self.reqs[i]
            lanes = -(-r.wavelets // int(room)) if room >= 1 else 0
            if r.cut_pitch and room >= 1:  # boxes (halo, uneven rows): scale its busiest lane
                lanes = -(-r.lanes * self.lane_load[i] // int(room))
            if widen and lanes > r.lanes and r.lanes < min(
                    r.src.length, r.cut_rows if r.cut_pitch else r.dst.length):
                out[(r.edge, r.sink)] = lanes
            elif r.choice + 1 < len(r.pairs) and (r.edge, r.sink) not in tried:
                stuck.append((_detour(r, rt), i))
        if out or not stuck:
            return out, {}
        r = self.reqs[max(stuck)[1]]
        return out, {(r.edge, r.sink): r.choice + 1}

    def flatten(self, occ: np.ndarray) -> set[tuple[int, str]]:
        """The cut requests whose lanes share the busiest links where no
        pitch fits: a cut lane lands on every row of its sink's input side,
        so a bundle passing those rows (a skip edge crossing the sink) meets
        one on each; where even the lightest cut (route_bundles.lightest_cut)
        overfills what the others leave of the link, routed flat its lanes
        take only some rows and leave the rest to the passing bundle. `occ`
        as for `wider`."""
        out: set[tuple[int, str]] = set()
        top = float(occ.max(initial=0))
        if top <= self.cap:
            return out
        for i, rt in enumerate(self.routes):
            r = self.reqs[i]
            if rt is None or not r.cut_pitch:
                continue
            load = occ[rt.links]
            hot = load > self.cap
            if not hot.any():
                continue
            room = self.cap - float((load[hot] - self.lane_load[i]).max())
            if lightest_cut(r) > room:
                out.add((r.edge, r.sink))
        return out

    def passer(self, occ: np.ndarray, cut: set[tuple[int, str]],
               tried: set[tuple[int, str]]) -> tuple[int, str] | None:
        """The bundle to move to its next side pair so that the cut requests
        `cut` keep their lanes on every sink row: of the bundles whose lanes
        share an overloaded link with theirs (a skip bundle passing a cut
        sink's rows meets a cut lane on each), the most roundabout one (a
        U turn around a kernel runs along rows a bundle from another side
        need not cross), one of `cut` itself too, if it has a side pair
        left and is not in `tried`; None where every such bundle runs
        straight. `occ` as for `wider`."""
        hot = [rt.links[occ[rt.links] > self.cap] for i, rt in enumerate(self.routes)
               if rt is not None and (self.reqs[i].edge, self.reqs[i].sink) in cut]
        links = np.unique(np.concatenate(hot)) if hot else _EMPTY
        if not links.size:
            return None
        best: tuple[int, int] | None = None
        for i, rt in enumerate(self.routes):
            r = self.reqs[i]
            if (rt is None or r.choice + 1 >= len(r.pairs) or (r.edge, r.sink) in tried
                    or not _member(rt.links, links).any()):
                continue
            detour = _detour(r, rt)
            if detour > 0 and (best is None or detour > best[0]):
                best = (detour, i)
        if best is None:
            return None
        r = self.reqs[best[1]]
        return (r.edge, r.sink)

    def run(self, iterations: int, deadline: float | None,
            warm: dict[tuple, Bundle] | None = None) -> list[dict[str, float]]:
        """Route every request, then negotiate; the routes end as they were in
        the best round — first the one whose bundles can be colored, then the
        least-loaded busiest link (it sets throughput). Negotiation stops
        after three rounds without a better one, after two in which the
        colors needed stay above those there are, or at once when they are
        more than twice those there are."""
        order = sorted(range(len(self.reqs)), key=lambda i: (-self.reqs[i].wavelets, i))
        cold = []
        for i in order:  # a request routed before on the same slots keeps its route
            b = (warm or {}).get(self.keys[i])
            j = next((j for j, c in enumerate(self.cands[i]) if c is b), None)
            if j is None:
                cold.append(i)
            else:
                self.routes[i] = self._footprint(i, j)
                self._place(i, self.routes[i], +1)
        for i in cold:
            self.route(i)
        log = [self.stats()]
        best, best_routes, stale, no_colors = self._score(log[-1]), list(self.routes), 0, 0
        for _ in range(iterations - 1):
            links, pes = self.overused()
            if not links.any() and not pes.any():
                break
            hopeless = log[-1]["colors_needed"] > 2 * self.colors  # negotiation won't halve it
            if stale >= 3 or no_colors >= 2 or hopeless or (
                    deadline is not None and time.perf_counter() > deadline):
                break
            over = np.flatnonzero(links)  # only overused links gather history
            self.hist[over] += (self.occ[over] - self.cap) / self.cap
            self.pres *= 1.8
            bad = [i for i in order if self.routes[i] is not None and (
                links[self.routes[i].links].any() or pes[self.routes[i].pes].any())]
            for i in bad:
                self.route(i)
            log.append(self.stats())
            score = self._score(log[-1])
            if score < best:
                best, best_routes, stale = score, list(self.routes), 0
            else:
                stale += 1
            short = log[-1]["colors_needed"] > self.colors
            no_colors = no_colors + 1 if short and log[-1]["colors_needed"] >= log[-2][
                "colors_needed"] else 0
        if best_routes != self.routes:
            self._replace(best_routes)
        return log

    def _score(self, st: dict[str, float]) -> tuple[bool, float, int, int]:
        return (st["colors_needed"] > self.colors, st["max_link_over_capacity"],
                st["crowded_pes"], st["overused_links"])


class _Candidates:
    """Pattern candidates per request, kept while its sides, slots and lanes
    stay the same (dealing slots again moves only some requests)."""

    def __init__(self, fabric: Fabric, corridors: list[int], requests: int) -> None:
        self.fabric, self.corridors = fabric, corridors
        self.memo: dict[tuple, list[Bundle]] = {}
        self.footprints: dict[tuple, _Route] = {}  # (key, candidate): every lane, expanded
        self.forks: dict[tuple[int, int], tuple[_Route, _Route, bool]] = {}  # _forks, by ids
        self.packed: dict[tuple, tuple[np.ndarray, ...]] = {}  # sampled footprints, priced
        # attempts routed, by their requests' keys (with the negotiation's settings): _attempt
        self.attempts: dict[tuple, list[_Attempt]] = {}
        self.cap = max(16, min(MAX_CANDIDATES, CANDIDATE_BUDGET // max(1, requests)))
        self._scratch = np.zeros(0, np.int32)

    def scratch(self, size: int) -> np.ndarray:
        """An int32 array of `size` (or more) whose contents mean nothing, kept
        (the fabric's links, 18 MB on a WSE-2, are not allocated per request)."""
        if self._scratch.size < size:
            self._scratch = np.empty(size, np.int32)
        return self._scratch

    @staticmethod
    def key(r: Request) -> tuple:
        return (r.edge, r.sink, r.choice, r.src_slot, r.dst_slot, r.lanes, r.cut_pitch,
                r.src_pitch, r.share.get("src"), r.share.get("dst"), r.halo)

    def __call__(self, r: Request) -> list[Bundle]:
        key = self.key(r)
        if key not in self.memo:
            found = candidates(r, self.fabric, self.corridors, self.cap)
            # the shortest first (the straight windows lead): a long detour never wins
            found.sort(key=lambda b: _path_length(b.path))
            self.memo[key] = found[:self.cap]
        return self.memo[key]


def _detour(r: Request, rt: _Route) -> int:
    """How much longer lane 0's path is than the way between the centres of
    r's two sides (a U turn around a kernel is long)."""
    (ax, ay), (bx, by) = r.src.centre(), r.dst.centre()
    return int(_path_length(rt.bundle.path) - abs(bx - ax) - abs(by - ay))


def _path_length(path: tuple[tuple[int, int], ...]) -> int:
    return sum(abs(bx - ax) + abs(by - ay) for (ax, ay), (bx, by) in zip(path, path[1:],
                                                                         strict=False))


def _choose_sides(reqs: list[Request], cap: int, headroom: float, known: _Candidates,
                  pairs: bool = False) -> None:
    """Slots for every request; a request whose side pair has no pattern route
    moves to its next pair (and the slots are dealt again). A widening cut
    request with none (two kernels side by side leave no room for a
    corner) has its pitch chosen again without that one (`widen_failed`):
    pick_pitch's next fair pitch is coarser (fewer lanes turn in fewer
    columns), and past the fair ones it takes the coarsest left that a
    link carries (a route's room depends on where its slots and corners
    fall: Inception-v1's k49, exact boxes, finds none at pitches 6 to 18
    and one at 4); it gives up widening where it takes none (with
    `pairs` it first looks for the first pair where it cuts, and only
    with none stays on its first pair without widening)."""
    while True:
        assign_slots(reqs, cap, headroom)
        moved = False
        for r in reqs:
            if r.widen_failed and not r.src_pitch:
                r.no_widen = True  # no other pitch widens either (the same choice)
            if r.widen_from >= 0 and r.cut_pitch and known(r):
                continue  # it found a side pair where it cuts
            if r.widen_from >= 0 or (r.src_pitch and not known(r)):
                moved = True
                if not pairs:
                    r.widen_failed = r.widen_failed | {r.cut_pitch}
                    continue
                if r.widen_from < 0:
                    r.widen_from = r.choice
                if not r.next_pair():  # no pair cuts: back to the first, uniform or flat
                    r.choice, r.widen_from, r.no_widen = r.widen_from, -1, True
                    r.src, r.dst = r.pairs[r.choice]
            elif not known(r) and r.next_pair():
                moved = True
        if not moved:
            return


def _corridors(module: Module, fabric: Fabric) -> list[int]:
    """Rows and columns between kernels where U-turn bundles can pass: just
    outside every kernel's rectangle, and the grid's edges."""
    vals = {0, fabric.height - 1, fabric.width - 1}
    for k in module.kernels():
        r: Rect = k.rect  # type: ignore[assignment]
        vals |= {r.y - 1, r.y1, r.x - 1, r.x1}
    lim = max(fabric.width, fabric.height)
    return sorted(v for v in vals if 0 <= v < lim)[:: max(1, len(vals) // 24)]


def _member(a: np.ndarray, sorted_b: np.ndarray) -> np.ndarray:
    """np.isin(a, b) for a sorted b (a binary search per element of a: no
    sort of both arrays together)."""
    if not sorted_b.size:
        return np.zeros(a.shape, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_b, a), sorted_b.size - 1)
    return sorted_b[at] == a


def _conflicts(routes: list[_Route], reqs: list[Request] | None = None,
               forks: dict[tuple[int, int], tuple[_Route, _Route, bool]] | None = None,
               uses: np.ndarray | None = None
               ) -> tuple[list[int], list[list[int]], list[tuple[int, int]]]:
    """Bundles that must take different colors, as groups: bundles sharing a
    PE conflict, except siblings (one edge, equal lanes) whose lanes meet
    only as one multicast route (at every PE both use, the same lane in from
    the same port), which are one group and take one color. Returns each
    route's group and, per group, the groups it conflicts with; pairs are
    found vectorised, PE by PE, between the k-th neighbours of a (PE,
    bundle) sort. `forks` keeps _forks' answers per pair of route objects
    (routes are kept, so their ids stay unique). `uses`: how many of these
    routes use each PE, if known."""
    n = len(routes)
    if not n:
        return [], [], []
    pe = np.concatenate([rt.pes for rt in routes])
    if uses is None:
        uses = np.bincount(pe)
    shared = uses[pe] > 1  # pairs meet only on PEs used twice: sort just those
    owner = np.repeat(np.arange(n), [rt.pes.size for rt in routes])[shared]
    pe = pe[shared]
    # by PE, then bundle (one key sorts faster than a lexsort; 32 bits faster than 64)
    dt = np.int32 if max(int(pe.max(initial=0)) + 1, n) * n < 1 << 31 else np.int64
    key = np.sort(pe.astype(dt) * dt(n) + owner.astype(dt))
    pe, owner = key // dt(n), key % dt(n)
    found = []  # a * n + b: bundles a and b meet
    for k in range(1, pe.size):
        same = pe[k:] == pe[:-k]
        if not same.any():
            break
        found.append(owner[:-k][same] * n + owner[k:][same])
    if n * n <= 1 << 24:  # the pairs once, sorted: a mark per pair, no sort
        met = np.zeros(n * n, dtype=bool)
        for f in found:
            met[f] = True
        pairs = np.flatnonzero(met)
    else:
        pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    clash, fork = [], []
    for a, b in zip((pairs // n).tolist(), (pairs % n).tolist(), strict=True):
        if a == b:
            continue
        if reqs is not None and _forks_memo(routes[a], routes[b], reqs[a], reqs[b], forks):
            fork.append((a, b))
        else:
            clash.append((a, b))
    group = list(range(n))

    def find(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    members: dict[int, set[int]] = {i: {i} for i in range(n)}
    against: dict[int, set[int]] = {i: set() for i in range(n)}
    for a, b in clash:
        against[a].add(b)
        against[b].add(a)
    for a, b in fork:  # merge unless some member of one clashes with one of the other
        ga, gb = find(a), find(b)
        if ga == gb or any(against[m] & members[gb] for m in members[ga]):
            continue
        group[gb] = ga
        members[ga] |= members.pop(gb)
    roots = sorted({find(i) for i in range(n)})
    index = {g: k for k, g in enumerate(roots)}
    of = [index[find(i)] for i in range(n)]
    adj: list[set[int]] = [set() for _ in roots]
    for a, b in clash:
        if of[a] != of[b]:
            adj[of[a]].add(of[b])
            adj[of[b]].add(of[a])
    return of, [sorted(x) for x in adj], clash


def _forks_memo(a: _Route, b: _Route, ra: Request, rb: Request,
                memo: dict[tuple[int, int], tuple[_Route, _Route, bool]] | None) -> bool:
    """_forks, kept in `memo` by the routes' ids (with the routes, so that the
    ids stay theirs)."""
    if memo is None:
        return _forks(a, b, ra, rb)
    got = memo.get((id(a), id(b)))
    if got is None:
        got = (a, b, _forks(a, b, ra, rb))
        memo[(id(a), id(b))] = got
    return got[2]


def _forks(a: _Route, b: _Route, ra: Request, rb: Request) -> bool:
    """Sibling bundles whose shared PEs are one multicast route each."""
    if ra.edge != rb.edge or a.bundle.lanes != b.bundle.lanes or a.bundle.cut or b.bundle.cut:
        return False
    sh = _LANE_BITS + 8
    common = np.intersect1d(a.pe_lanes >> sh, b.pe_lanes >> sh)
    ka = np.sort(a.pe_lanes[np.isin(a.pe_lanes >> sh, common)])
    kb = np.sort(b.pe_lanes[np.isin(b.pe_lanes >> sh, common)])
    return bool(np.array_equal(ka, kb))


def _classes(routes: list[_Route], reqs: list[Request],
             forks: dict[tuple[int, int], tuple[_Route, _Route, bool]] | None = None
             ) -> list[int]:
    """A color class per route (DSATUR over the groups of _conflicts)."""
    of, adj, _ = _conflicts(routes, reqs, forks)
    col = _dsatur(adj)
    return [col[g] for g in of]


def _dsatur(adj: list[list[int]]) -> list[int]:
    """Color classes by DSATUR: the uncolored bundle with the most distinct
    neighbour colors next (ties: the most neighbours, then the lowest index),
    the smallest color none of its neighbours has."""
    import heapq

    n = len(adj)
    color = [-1] * n
    sat: list[set[int]] = [set() for _ in range(n)]
    heap = [(0, -len(adj[i]), i) for i in range(n)]
    heapq.heapify(heap)
    while heap:
        s_neg, d_neg, i = heapq.heappop(heap)
        if color[i] >= 0 or -s_neg != len(sat[i]):
            continue
        c = 0
        while c in sat[i]:
            c += 1
        color[i] = c
        for j in adj[i]:
            if color[j] < 0 and c not in sat[j]:
                sat[j].add(c)
                heapq.heappush(heap, (-len(sat[j]), -len(adj[j]), j))
    return color


def _halo_colors(reqs: list[Request]) -> int:
    """The colors bundles leave to the halo exchanges and relays
    (route_bundles.exchange_colors)."""
    return exchange_colors(reqs)


def _colors(routes: list[_Route], reqs: list[Request], fabric: Fabric,
            forks: dict[tuple[int, int], tuple[_Route, _Route, bool]] | None = None
            ) -> list[int]:
    """DSATUR over the bundles' conflict graph (bundles sharing a PE)."""
    n = len(routes)
    raw = dict(enumerate(_classes(routes, reqs, forks)))
    # map the greedy classes onto colors: host-only classes to the host colors first
    t = fabric.target
    host_pool = list(range(t.colors - t.reserved_colors, t.colors))
    # the last ones below the host's: the halo exchanges and relays, where a bundle is
    # cut so or a cut request is routed flat (wsec.ir.halo, wsec.ir.relay)
    pool = list(range(INTERNAL_COLORS, t.colors - t.reserved_colors - _halo_colors(reqs)))
    classes = sorted(set(raw.values()))
    mapping: dict[int, int] = {}
    for c in classes:
        members = [i for i in range(n) if raw[i] == c]
        is_host = all(reqs[i].src.owner == HOST or reqs[i].dst.owner == HOST for i in members)
        if is_host and host_pool:
            mapping[c] = host_pool.pop(0)
        elif pool:
            mapping[c] = pool.pop(0)
        elif host_pool:
            mapping[c] = host_pool.pop(0)
        else:
            mapping[c] = -1
    return [mapping[raw[i]] for i in range(n)]


# how much more than the kept layout's busiest link (or the kernels' bound) the re-cuts
# (_recut) may load it: the default of Route.proof_slack. A cut request routed flat
# leaves its sink's rows reading elements no lane brought (no correct binary:
# wsec run --strict; with Route.relay, they relay them inside the sink, wsec.ir.relay:
# dearer than the cut); a few % of throughput buy their proof. Reported per
# compile in the route note (the busiest link before and after).
PROOF_SLACK = 0.05


@dataclass(frozen=True)
class Route(Pass):
    """Route every edge as bundles of lanes; negotiate links and colors."""

    name = "route"
    requires = ("placed",)
    ensures = ("routed",)
    invalidates = ("allocated",)
    iterations: int = 12  # negotiation rounds (the first routes every bundle)
    # lanes per bundle: this many times what the capacity needs; 0 tries each of
    # AUTO_HEADROOMS and keeps the better layout
    headroom: float = 0.0
    colors_soft: int = 6  # bundles per PE above which a PE costs extra
    # how much more the busiest link may bound throughput (a fraction of the
    # kept layout's bound) where that cuts again requests routed flat: see PROOF_SLACK
    proof_slack: float = PROOF_SLACK
    # the sinks' PEs relay each other what flat lanes leave their rows without
    # (wsec.ir.relay), so every read is routed and proven; off by default: where the
    # relayed sinks are one to three PEs wide a relay is a chain (realised/bound
    # 38-195x on DenseNet-121, Inception-v1/v2, ShuffleNet). Recorded as module attr
    # `relay`, which the relay planner (module_relays) and the color pool read
    relay: bool = False

    def __post_init__(self) -> None:
        check_range(self, "iterations", 1)
        if self.headroom != 0.0:
            check_range(self, "headroom", 1.0)
        check_range(self, "colors_soft", 1)
        check_range(self, "proof_slack", 0.0, 1.0)

    def run(self, module: Module, ctx: PassContext) -> None:
        fabric = ctx.fabric
        _check_rects(module)
        if self.relay:
            module.attrs["relay"] = True
        else:
            module.attrs.pop("relay", None)
        cap = int(module.attrs.get("delta_t") or max(
            (int(k.cost["cycles"]) for k in module.kernels() if k.cost), default=1))
        corridors = _corridors(module, fabric)
        deadline = None if ctx.time_limit is None else time.perf_counter() + ctx.time_limit / 4
        best: _Attempt | None = None
        known = _Candidates(fabric, corridors, sum(len(dict.fromkeys(e.dsts))
                                                   for e in module.edges))
        base = requests(module, fabric)  # each attempt deals slots on a copy
        spread = {(r.edge, r.sink) for r in base if r.spread}
        # requests whose sink reads part of the value (Request.partial: a slice) are
        # routed flat first and cut by the later rounds where that is free (_unflatten,
        # _recut, _lone_recut). Measured (the YOLO fixture): cut from the start, its two
        # slices' lanes met a passing bundle on the same rows, the widening round
        # flattened that bundle instead, found nothing lighter and stopped widening:
        # realised 1.00 -> 1.38x its bound; flat first, 1.00x with both slices cut
        partial = {(r.edge, r.sink) for r in base if r.partial}
        for headroom in (AUTO_HEADROOMS if self.headroom == 0.0 else (self.headroom,)):
            if best is not None and (not best.colored or best.score[1] <= 1.0 or (
                    deadline is not None and time.perf_counter() > deadline)):
                break  # wider bundles only crowd more; the links already keep up; no time
            got = _attempt(base, fabric, cap, corridors, headroom, self.iterations,
                           self.colors_soft, deadline, known=known, flat=partial)
            owners = _hot_owner_cuts(module, got, fabric)
            # residuals spread over reduction rows (Request.spread), where the
            # links are overfilled: flat, so widening can thin their lanes
            # (cut, a lane carries at least a row's box), cut again after
            # widening where they fit (_unflatten). Measured: cut from the
            # start, ResNet-50's widening attempts found no room (realised
            # 1.083x -> 1.173x its bound), routed flat first it keeps 1.083x.
            hot = spread if got.colored and got.score[1] > 1.0 else set()
            if owners or hot:  # again, the owner-row cuts on an overfilled link flat
                again = _attempt(base, fabric, cap, corridors, headroom, self.iterations,
                                 self.colors_soft, deadline, known=known,
                                 flat=owners | hot | partial)
                got = again if again.score < got.score or (hot and again.colored) else got
            if got.neg.parted:  # again, the crossing siblings on slots of their own
                again = _attempt(base, fabric, cap, corridors, headroom, self.iterations,
                                 self.colors_soft, deadline, got.neg.parted, known,
                                 flat=got.flat)
                got = again if again.score < got.score else got
            if best is None or got.score < best.score:
                best = got
        assert best is not None
        wider: dict[tuple[int, str], int] = {}
        moved: dict[tuple[int, str], int] = {}
        tried: set[tuple[int, str]] = set()
        flat = set(best.flat)  # cut requests routed flat (_Negotiator.flatten)
        flat_tried: set[tuple[int, str]] = set()
        carry: set[tuple[int, str]] = set()  # flats an attempt that did not help still needs
        widen = True
        loads: tuple[_Attempt, np.ndarray] | None = None  # the kept attempt's, once
        for _ in range(WIDEN_ATTEMPTS):  # where lanes of two bundles overfill the busiest link
            if best.colored and best.score[1] > 1.0 and (loads is None or loads[0] is not best):
                loads = (best, _loads(module, best, fabric))
            more, move = best.neg.wider(loads[1], tried, widen) if (  # type: ignore[index]
                best.colored and best.score[1] > 1.0) else ({}, {})
            flats = best.neg.flatten(loads[1]) - flat_tried if (  # type: ignore[index]
                best.colored and best.score[1] > 1.0) else set()
            flats |= carry
            if not (more or move or flats) or (
                    deadline is not None and time.perf_counter() > deadline):
                break
            tried |= set(move)
            flat_tried |= flats
            ask = {k: max(v, more.get(k, 0)) for k, v in {**more, **wider}.items()}
            try:
                got = _attempt(base, fabric, cap, corridors, best.headroom, self.iterations,
                               self.colors_soft, deadline, best.solo, known, ask, best.warm(),
                               {**moved, **move}, flat | flats)
            except LayoutInfeasible:  # the moved bundle has no pattern route on its new sides
                got = None
            carry = set()
            if got is not None and got.score < best.score:
                best, wider, moved, flat = got, ask, {**moved, **move}, flat | flats
            else:  # widening did not help: move bundles instead
                widen = False
                if flats and got is not None and got.colored and got.score[1] > 1.0:
                    # flattened, those cuts left the busiest links as loaded: others cut
                    # onto them now (twin sinks: a decoder's attention beside an
                    # encoder's) go flat with them in the next attempt
                    carry = got.neg.flatten(_loads(module, got, fabric)) - flat_tried
                    carry = flats | carry if carry else set()
                    _commit(module, best)
        # the cut routes and lane loads of requests routed flat again (_recut)
        cut_in: dict[tuple[int, str], _CutIn] = {}
        # the widening attempts' flattened cuts: cut again at their lightest pitch
        # (Request.light), the one _Negotiator.flatten judged them on
        light = set(flat)
        if flat and best.colored:  # the flattened cuts again, bundles passing their rows moved

            def again(move: dict[tuple[int, str], int], still: set[tuple[int, str]]) -> _Attempt:
                return _attempt(base, fabric, cap, corridors, best.headroom, self.iterations,
                                self.colors_soft, deadline, best.solo, known, wider,
                                best.warm(), move, still, light=light)

            best, moved, flat = _unflatten(module, fabric, best, moved, flat, again, deadline,
                                           cut_in)
        tried: _Attempt | None = None
        crowding: set[tuple[int, str]] = set()  # new cuts that crowded a link: flat
        # what the re-cuts may take the busiest link to (PROOF_SLACK), fixed once
        ceiling = max(best.score[1], 1.0) * (1.0 + self.proof_slack)
        before = (best.score[1],)  # for the note on the proof slack
        thinned: set[tuple[int, str]] = set()  # bundles thinned for re-cuts (_thin_recut)
        caps: dict[tuple[int, str], int] = {}  # their cuts' lane caps (_thinned)
        for pairs in (False, True):
            # widening (cut inputs whose source side is shorter than the sink's
            # rows), then on other side pairs where there is no room for its corner
            # (U turns around a kernel): kept where fewer sink rows read flat lanes
            # (PEs reading what no lane brought) unless the busiest link then bounds
            # throughput more (wide bundles crowd a GPT's links)
            if not best.colored or (deadline is not None and time.perf_counter() > deadline):
                break
            if pairs and (tried is None or not any(r.no_widen and r.cut_rows and not r.cut_pitch
                                                   for r in tried.neg.reqs)):
                break  # every request that tried to widen found room
            bound = max(best.score[1], 1.0)

            def route(still: set[tuple[int, str]], thin: _Thin | None = None,
                      pairs: bool = pairs, kept: _Attempt = best,
                      asked: dict[tuple[int, str], int] = wider,
                      capped: dict[tuple[int, str], int] = caps) -> _Attempt:
                # `thin`: bundles passing re-cuts' rows on lighter lanes (_thin_recut)
                ask, lane_caps = dict(asked), dict(capped)
                for k, (lanes, most) in (thin or {}).items():
                    if lanes:
                        ask[k] = max(lanes, ask.get(k, 0))
                    if most:
                        lane_caps[k] = min(most, lane_caps.get(k, most))
                return _attempt(base, fabric, cap, corridors, kept.headroom, self.iterations,
                                self.colors_soft, deadline, kept.solo, known, ask,
                                kept.warm(), moved, still, pairs=pairs, widen=True,
                                light=light, caps=lane_caps)

            for _ in range(1 + UNCROWD_ATTEMPTS):
                again = tried = route(flat | crowding)
                more = _crowding_cuts(again, best, bound) if again.colored else set()
                if not more and again.colored and (pin := _repitched(again, best, bound)
                                                   ).keys() - caps.keys():
                    caps.update(pin)  # back to the lanes `best` cut them with, widening the rest
                    continue
                if not more or (deadline is not None and time.perf_counter() > deadline):
                    break
                crowding |= more  # routed again with those flat, the others still cut
                cut_in.update(_cut_routes(again, more))
            limit = bound  # the busiest link the attempt may keep
            # settled: cut again what fits now, of the crowding cuts and of the
            # requests the widening attempts flattened (their cut routes: _unflatten's)
            if again.colored and not more and (crowding or flat & cut_in.keys()):
                settled = again
                again, still = _recut(again, best, bound, flat | crowding, cut_in, route,
                                      deadline, ceiling)
                if again.colored and still & cut_in.keys():
                    # then those the thinned passing bundles leave room for, for free:
                    # under the busiest link the re-cuts left (measured, ShuffleNet:
                    # thinning within the proof slack, three pools' 364 PEs took the
                    # slack the re-cuts of 4-group convs had used, 1.249 -> 1.274)
                    again, still = _thin_recut(again, best, bound, still, cut_in, route,
                                               deadline)
                flat, crowding = flat & still, crowding & still
                tried = again
                if again is not settled:  # re-cuts may cost up to PROOF_SLACK
                    limit = max(bound, ceiling)
            if not again.colored or again.score[1] > limit:
                break  # crowded already: more widening (U turns) would crowd more
            if _flat_rows(again) < _flat_rows(best):
                thinned |= {k for k, v in again.wider.items() if v != wider.get(k)}
                thinned |= {k for k, v in again.caps.items() if v != caps.get(k)}
                best, wider, caps = again, again.wider, again.caps
        runs_cut = False  # the run cuts' attempt was kept (_run_cuts)
        if best.colored and any(on_run(r) for r in base):

            def runs(still: set[tuple[int, str]]) -> _Attempt:
                assert best is not None
                return _attempt(base, fabric, cap, corridors, best.headroom, self.iterations,
                                self.colors_soft, deadline, best.solo, known, wider,
                                best.warm(), moved, best.flat | still, pairs=best.pairs,
                                widen=best.widen, runs=True, light=light, caps=caps)

            ran = _run_cuts(best, runs, deadline)
            runs_cut, best = ran is not best, ran
        if best.colored and any(r.flat and r.cut_rows for r in best.neg.reqs):

            def lone(still: set[tuple[int, str]], k: tuple[int, str]) -> _Attempt:
                assert best is not None
                return _attempt(base, fabric, cap, corridors, best.headroom, self.iterations,
                                self.colors_soft, deadline, best.solo, known, wider,
                                best.warm(), moved, still, pairs=best.pairs, widen=best.widen,
                                runs=runs_cut, light=light | {k}, caps=caps)

            best = _lone_recut(best, max(best.score[1], 1.0) * (1.0 + self.proof_slack),
                               cut_in, lone, deadline)
        if best.colored and any(r.halo for r in best.neg.reqs):
            hot = _halo_hot(module, best, fabric, cap)
            if hot:  # their rows' exchange bounds throughput more: flat again (the
                # run cuts and the thinned cuts' lane caps of the kept attempt kept: measured,
                # the YOLO fixture's SPPF concatenation lost its run cuts here, 126 PEs)

                def plain(still: set[tuple[int, str]]) -> _Attempt:
                    assert best is not None
                    return _attempt(base, fabric, cap, corridors, best.headroom,
                                    self.iterations, self.colors_soft, deadline, best.solo,
                                    known, wider, best.warm(), moved, best.flat | still,
                                    pairs=best.pairs, widen=best.widen, runs=runs_cut,
                                    light=light, caps=caps)

                again = plain(hot)
                best = again if again.colored else best
        if not best.colored:
            raise _color_error(module, best.neg, best.colors, fabric)
        _commit(module, best)
        # the cuts left flat whose lanes widen, as ribbons where they fit (route_ribbons)
        split, made = ribbon_round(module, fabric, best.neg.reqs, cap,
                                   (best.headroom, *AUTO_HEADROOMS))
        module.attrs.pop("ribbons", None)  # recorded where some were made (the report's 0)
        if split:
            module.attrs["ribbons"] = [split, made]
            ctx.notes.append(f"route: {split} flat cut request{'s' if split > 1 else ''} "
                             f"routed as {made} ribbons (bundles whose lanes widen at "
                             "corners of their own)")
        flat_left = _flat_cuts(module, best, cut_in)
        if flat_left:
            ctx.notes.append(_flat_note(flat_left))
        module.attrs["route_iterations"] = best.log
        last = min(best.log, key=best.neg._score)  # the round whose routes were kept
        if best.score[1] > max(before[0], 1.0):  # the throughput the proof slack cost
            ctx.notes.append(
                f"route: proof slack ({self.proof_slack:g}) spent to cut requests the crowding "
                f"or widening rounds routed flat: busiest link {before[0]:.3f} (before the "
                f"widening attempts) -> {best.score[1]:.3f}x capacity; {_flat_rows(best):,} "
                "sink PEs still read flat lanes")
        if thinned:  # the passing bundles the re-cuts thinned (_thin_recut)
            ctx.notes.append(
                f"route: {len(thinned)} bundles passing re-cut sinks' rows take lighter lanes "
                "(flat: more of them; cut: a finer pitch) so that the cut lanes fit beside them")
        ctx.notes.append(
            f"route: {len(best.routes)} bundles (headroom {best.headroom:g}) in "
            f"{len(best.log)} negotiation rounds; busiest link at "
            f"{last['max_link_over_capacity']:.2f}x capacity ({cap} wavelets/sample), "
            f"{last['overused_links']} links over it")
        account(module, fabric)


# lanes per bundle over what the capacity needs, tried in turn: few lanes crowd
# less; more lanes each carry less where bundles must share links
AUTO_HEADROOMS = (1.25, 3.0)
# attempts after those, each widening the bundles on the busiest links
WIDEN_ATTEMPTS = 3
# attempts after those, each routing the flattened cut requests cut again (_unflatten)
UNFLATTEN_ATTEMPTS = 3
# widening and side-pair attempts routed again with the new cuts that crowd a
# link flat (_crowding_cuts)
UNCROWD_ATTEMPTS = 2
# attempts after those, each cutting again the crowding cuts that fit beside the
# others once those are flat (_recut)
RECUT_ATTEMPTS = 2
# attempts after those, each cutting one more where the bundles passing its rows
# take lighter lanes (_thin_recut)
THIN_ATTEMPTS = 4
# attempts after those, each cutting one request still routed flat alone (_lone_recut)
LONE_ATTEMPTS = 3
# bundles on one PE (colors) a widening or side-pair attempt may add to the most
# the kept layout has on one PE
COLOR_RISE = 2


@dataclass
class _Attempt:
    headroom: float
    solo: set[tuple[int, str]]  # (edge, sink) that were routed on slots of their own
    neg: _Negotiator
    log: list[dict[str, float]]
    routes: list[_Route]
    colors: list[int]
    flat: set[tuple[int, str]] = field(default_factory=set)  # cut requests routed flat
    pairs: bool = False  # widening cuts looked for side pairs where they cut (_choose_sides)
    widen: bool = False  # cut requests could widen
    started: dict[tuple, Bundle] = field(default_factory=dict)  # the routes it started from
    # lanes asked per request (Request.min_lanes): the widening attempts' and the
    # passing flat bundles thinned so that a re-cut fits beside them (_thin_recut)
    wider: dict[tuple[int, str], int] = field(default_factory=dict)
    # the cuts lightened (Request.lane_cap) so that a re-cut fits beside them (_thinned)
    caps: dict[tuple[int, str], int] = field(default_factory=dict)

    def warm(self) -> dict[tuple, Bundle]:
        """The chosen bundle per request, by its candidates' key."""
        return {self.neg.keys[i]: rt.bundle for i, rt in enumerate(self.neg.routes)
                if rt is not None}

    @property
    def colored(self) -> bool:
        return all(c >= 0 for c in self.colors)

    @property
    def score(self) -> tuple[bool, float]:
        """Colorable first, then the busiest link of the kept round."""
        kept = min(self.log, key=self.neg._score)
        return (not self.colored, kept["max_link_over_capacity"])


def _commit(module: Module, got: _Attempt) -> None:
    """The attempt's bundles onto the module's edges."""
    for e in module.edges:
        e.bundles = []
    for r, rt, c in zip(got.neg.reqs, got.routes, got.colors, strict=True):
        b = rt.bundle
        module.edges[r.edge].bundles.append(  # type: ignore[union-attr]
            dataclasses.replace(b, color=c))


def _halo_hot(module: Module, got: _Attempt, fabric: Fabric, cap: int
              ) -> set[tuple[int, str]]:
    """The requests cut "halo" (Request.halo) whose sink rows' exchange
    (wsec.ir.halo; the negotiator does not see it) crosses a link or RAMP
    loaded past both the capacity `cap` and the busiest the bundles load
    alone: routed flat, their rows read their halo from flat lanes as before."""
    _commit(module, got)
    ra = route_arrays(module)
    load = link_loads(ra, fabric)
    lanes = ra.take(np.flatnonzero(ra.share >= 0)) if ra.share is not None else ra
    limit = max(cap, int(link_loads(lanes, fabric).max(initial=0)))
    out: set[tuple[int, str]] = set()
    for edge, sink, part in halo_arrays(module):
        mine = link_loads(part, fabric) > 0
        if (load[mine] > limit).any():
            out.add((edge, sink))
    return out


def _loads(module: Module, got: _Attempt, fabric: Fabric) -> np.ndarray:
    """Every link's load (the negotiator's layout) as the attempt's routes
    are programmed: siblings' shared lanes count once where they merge."""
    _commit(module, got)
    return link_loads(route_arrays(module), fabric).transpose(2, 0, 1).ravel()


def _attempt(base: list[Request], fabric: Fabric, cap: int, corridors: list[int],
             headroom: float, iterations: int, colors_soft: int, deadline: float | None,
             solo: set[tuple[int, str]] | None = None, known: _Candidates | None = None,
             wider: dict[tuple[int, str], int] | None = None,
             warm: dict[tuple, Bundle] | None = None,
             moved: dict[tuple[int, str], int] | None = None,
             flat: set[tuple[int, str]] | None = None, pairs: bool = False,
             widen: bool = False, runs: bool = False,
             light: set[tuple[int, str]] | None = None,
             caps: dict[tuple[int, str], int] | None = None) -> _Attempt:
    reqs = [_copy(r) for r in base]
    for r in reqs:
        r.widen, r.no_widen, r.runs, r.widen_failed = widen, not widen, runs, frozenset()
        r.solo = (r.edge, r.sink) in (solo or ())
        r.flat = (r.edge, r.sink) in (flat or ())
        r.light = (r.edge, r.sink) in (light or ())
        r.min_lanes = (wider or {}).get((r.edge, r.sink), 0)
        r.lane_cap = (caps or {}).get((r.edge, r.sink), 0)
        while r.choice < (moved or {}).get((r.edge, r.sink), 0) and r.next_pair():
            pass
    if known is None:
        known = _Candidates(fabric, corridors, len(reqs))
    _choose_sides(reqs, cap, headroom, known, pairs)
    # the same requests on the same slots, started from no routes or from that
    # attempt's own: negotiated as it was (measured: DenseNet-121's and
    # Inception-v2's crossing siblings moved to slots of their own found the
    # same slots, 1.3 s and 0.7 s of routing for the same layout)
    sig = (tuple(known.key(r) for r in reqs), iterations, colors_soft)
    for was in known.attempts.get(sig, []):
        if (warm or {}) == (was.started or {}) or warm == was.warm():
            return dataclasses.replace(was, headroom=headroom, solo=set(solo or ()),
                                       flat=set(flat or ()), pairs=pairs, widen=widen,
                                       wider=dict(wider or {}), caps=dict(caps or {}))
    neg = _Negotiator(reqs, fabric, cap, corridors, colors_soft, known)
    log = neg.run(iterations, deadline, warm)
    routes = [rt for rt in neg.routes if rt is not None]
    got = _Attempt(headroom, set(solo or ()), neg, log, routes,
                   _colors(routes, reqs, fabric, known.forks), set(flat or ()), pairs, widen,
                   dict(warm or {}), dict(wider or {}), dict(caps or {}))
    known.attempts.setdefault(sig, []).append(got)
    return got


def _hot_owner_cuts(module: Module, got: _Attempt, fabric: Fabric) -> set[tuple[int, str]]:
    """The owner-row cuts (lanes landing on a conv's or matmul's owner rows,
    no spine) of an attempt whose busiest link is over capacity that
    _Negotiator.flatten names: their lanes span c times the rows they land
    on, so a bundle passing the sink meets them where a flat bundle of as
    many lanes would leave it room (measured: ShuffleNet's first attempt
    1.24x -> 1.32x its bound with them cut). The router's first attempts
    route them flat once more; the flattened cuts are tried cut again after
    widening (_unflatten)."""
    own = {(r.edge, r.sink) for r in got.neg.reqs if r.owner_pitch and r.cut_pitch}
    if not own or not got.colored or got.score[1] <= 1.0:
        return set()
    return got.neg.flatten(_loads(module, got, fabric)) & own


def _unflatten(module: Module, fabric: Fabric, best: _Attempt, moved: dict[tuple[int, str], int],
               flat: set[tuple[int, str]], again: Callable[..., _Attempt], deadline: float | None,
               cut_in: dict[tuple[int, str], _CutIn] | None = None
               ) -> tuple[_Attempt, dict[tuple[int, str], int], set[tuple[int, str]]]:
    """Cut the requests the widening attempts flattened (`flat`) again: a
    flattened cut overfilled a link it shares with a bundle passing its
    sink's rows, and widening or moving other bundles since may have made
    room. Where one would overfill a link again, the most roundabout bundle
    there (_Negotiator.passer) moves to its next side pair, or, with none,
    that cut stays flat. An attempt is kept when fewer sink PEs read flat
    lanes and its busiest link bounds throughput no more than `best`'s.
    Returns the kept attempt, its moves and the requests it routes flat;
    the cut routes its attempts found for those go into `cut_in` (the
    re-cuts, _recut, may cut them within the proof slack after widening).
    `again(moved, flat)` routes an attempt."""
    still: set[tuple[int, str]] = set()  # flattened requests left flat
    move = dict(moved)
    tried = set(moved)
    for _ in range(UNFLATTEN_ATTEMPTS):
        if not flat - still or (deadline is not None and time.perf_counter() > deadline):
            break
        try:
            got = again(move, still)
        except LayoutInfeasible:  # a moved bundle has no pattern route on its new sides
            break
        if cut_in is not None and got.colored:
            cut_in.update(_cut_routes(got, (flat - still) - cut_in.keys()))
        if (got.colored and got.score[1] <= max(best.score[1], 1.0)
                and _flat_rows(got) < _flat_rows(best)):
            return got, move, still
        if not got.colored:
            break
        loads = _loads(module, got, fabric)
        cut = got.neg.flatten(loads) & (flat - still)  # the cuts that overfill a link again
        key = got.neg.passer(loads, cut, tried)
        if key is not None:
            r = next(r for r in got.neg.reqs if (r.edge, r.sink) == key)
            move[key] = r.choice + 1
            tried.add(key)
        elif cut:
            still |= cut
        else:
            break
    return best, moved, flat
def _crowding_cuts(got: _Attempt, best: _Attempt, bound: float) -> set[tuple[int, str]]:
    """Of the requests `got` cuts and `best` did not (widening or another
    side pair made them cut), the fewest whose lanes, routed flat, would
    bring each link loaded past `bound` times the capacity back under it
    (the heaviest lanes first; the negotiator's loads, as its score counts
    them) and each PE carrying more than COLOR_RISE bundles over the most
    `best` has on one PE back to that (those on most such PEs first): a cut
    lane lands on every row of its sink's side, so a bundle passing those
    rows meets one on each. Routed flat they take only some rows again,
    and the attempt's other new cuts can be kept. Cuts onto a run of their
    sink's rows (a concatenation's input, route_bundles.on_run) go flat
    before the others: each proves a run of a data movement's column, a
    few PEs, where another cut proves its sink's whole rectangle (in
    _run_cuts a conv's cut that the run cuts' lanes moved is new too, and
    is kept before them). Where no new cut crosses an overfilled link (the
    new cuts moved flat bundles onto it), the cuts `best` had there with a
    single lane carrying all of the value go flat instead, so the new cuts
    can be kept (measured: Whisper's widened softmax and P.V cuts, 559 ->
    260 forwarded PEs; every cut `best` had there: ResNet-50 0 -> 93).
    Empty when nothing is that crowded or no such cut is among what crowds
    it."""
    neg = got.neg
    limit = bound * neg.cap
    over = neg.occ > limit
    most = _kept(best)["max_bundles_per_pe"] + COLOR_RISE
    excess = np.maximum(neg.pe_cnt - most, 0)
    crowded = excess > 0
    if not over.any() and not crowded.any():
        return set()
    was = {(r.edge, r.sink) for r in best.neg.reqs if r.cut_pitch}
    # over link -> new cuts there (run cut?, lane load, request); and the one-lane
    # cuts `best` had, for the links no new cut crosses
    on: dict[int, list[tuple[bool, float, tuple[int, str]]]] = {}
    kept: dict[int, list[tuple[bool, float, tuple[int, str]]]] = {}
    at: list[tuple[bool, int, tuple[int, str], np.ndarray]] = []  # new cuts on crowded PEs
    for i, (r, rt) in enumerate(zip(neg.reqs, neg.routes, strict=True)):
        if rt is None or not r.cut_pitch:
            continue
        new = (r.edge, r.sink) not in was
        if not new and r.lanes > 1:
            continue
        for link in np.unique(rt.links[over[rt.links]]):  # a mask: no sort of every link
            (on if new else kept).setdefault(int(link), []).append(
                (on_run(r), float(neg.lane_load[i]), (r.edge, r.sink)))
        if not new:
            continue
        pes = np.unique(rt.pes[crowded[rt.pes]])
        if pes.size:
            at.append((on_run(r), int(pes.size), (r.edge, r.sink), pes))
    if not on and kept:
        # no new cut crosses an overfilled link: the new cuts moved flat bundles onto
        # links where `best` cut a value with one lane (all of it on one link, its
        # spine handing it to every row): those go flat, the new ones stay (the
        # attempt is kept only where fewer sink PEs then read flat lanes)
        on = kept
    out: set[tuple[int, str]] = set()
    for link, cuts in on.items():
        left = float(neg.occ[link]) - limit
        for _, load, key in sorted(cuts, reverse=True):
            if left <= 0:
                break
            out.add(key)
            left -= load
    for _, _, key, pes in sorted(at, key=lambda t: (not t[0], -t[1], t[2])):
        if key in out or excess[pes].any():
            out.add(key)
            excess[pes] = np.maximum(excess[pes] - 1, 0)
    return out


def _repitched(got: _Attempt, best: _Attempt, bound: float) -> dict[tuple[int, str], int]:
    """The requests `best` cut that `got` (a widening or side-pair attempt)
    cut finer, on more and lighter lanes, whose lanes cross a link loaded
    past `bound` times the capacity: each with the lane load `best` cut it
    with (Request.lane_cap: the coarsest pitch that light, its pitch in
    `best`). They are no new cuts (_crowding_cuts leaves them be), and
    flat they would prove less than `best` did: held to `best`'s pitch, the
    widening or side pairs of the others (the cuts they need) go on
    (measured: the GPT-2 Conv1D fixture's V, one lane at pitch 16 into the
    P.V matmul, widened to eight from its raised producer beside the
    attention scores' bundle, 1.034x the capacity, ended the side-pair
    round that cut the softmax's output into P.V: 192 -> 320 forwarded
    PEs)."""
    neg = got.neg
    over = neg.occ > bound * neg.cap
    if not over.any():
        return {}
    was = {(r.edge, r.sink): (r.lanes, float(best.neg.lane_load[i]))
           for i, r in enumerate(best.neg.reqs) if r.cut_pitch}
    out: dict[tuple[int, str], int] = {}
    for r, rt in zip(neg.reqs, neg.routes, strict=True):
        key = (r.edge, r.sink)
        if rt is None or not r.cut_pitch or key not in was or r.lanes <= was[key][0]:
            continue
        if over[rt.links].any():
            out[key] = max(1, int(was[key][1]))
    return out


# a request routed flat again: the cut route an attempt had for it, its lane load
_CutIn = tuple[_Route, float]
# per request: the lanes a flat bundle is asked (Request.min_lanes), the load a cut
# one's lanes are held to (Request.lane_cap), so that a re-cut fits beside it
_Thin = dict[tuple[int, str], tuple[int, int]]


def _cut_routes(got: _Attempt, keys: set[tuple[int, str]]
                ) -> dict[tuple[int, str], _CutIn]:
    """The routes and lane loads attempt `got` cut the requests `keys` with."""
    neg = got.neg
    return {(r.edge, r.sink): (rt, float(neg.lane_load[i]))
            for i, (r, rt) in enumerate(zip(neg.reqs, neg.routes, strict=True))
            if rt is not None and r.cut_pitch and (r.edge, r.sink) in keys}


def _recuts(got: _Attempt, limit: float, most: int,
            cut_in: dict[tuple[int, str], _CutIn],
            thin: _Thin | None = None) -> set[tuple[int, str]]:
    """Of the requests routed flat again (`cut_in`: each with the route and
    lane load it had cut), those that fit cut beside what `got` routes:
    _crowding_cuts names them on an attempt where all its new cuts (U turns
    around kernels, widened lanes) crowd one another at once, the widening
    attempts (_Negotiator.flatten) where a bundle passed their rows, and
    routed flat together they leave room some of them fit in. Each in
    turn, the most sink PEs first, trades its flat route for its cut one on
    `got`'s loads: kept where no link of the cut route then carries more
    than `limit` wavelets per sample and no PE of it more than `most`
    bundles; its loads stay for the next. (Measured on Inception-v2's
    twelve: the busiest link so estimated is within 0.1% of the one an
    attempt cutting that request alone negotiates.) With `thin` (filled
    in), a cut that overfills links where other bundles pass its sink's
    rows fits too where those, on lighter lanes (more flat lanes, a finer
    pitch), leave it room (_thinned): what they are asked goes into `thin`,
    for the attempt that routes the re-cuts (Request.min_lanes, lane_cap)."""
    neg = got.neg
    occ, cnt = neg.occ.copy(), neg.pe_cnt.copy()
    at = {(r.edge, r.sink): i for i, r in enumerate(neg.reqs)}

    def pes(k: tuple[int, str]) -> int:
        rect = neg.reqs[at[k]].dst.rect
        return rect.w * rect.h if rect is not None else 0

    out: set[tuple[int, str]] = set()
    keys = [k for k in cut_in if k in at and neg.routes[at[k]] is not None]
    for k in sorted(keys, key=lambda k: (-pes(k), k)):
        i = at[k]
        links, on = neg._counted(i, neg.routes[i])  # type: ignore[arg-type]
        cut, load = cut_in[k]
        np.subtract.at(occ, links, neg.lane_load[i])
        np.subtract.at(cnt, on, 1)
        _add(occ, cut.links, load, cut.distinct)
        _add(cnt, cut.pes, 1, cut.distinct)
        if cnt[cut.pes].max(initial=0) <= most:
            if occ[cut.links].max(initial=0) <= limit + 1e-9:
                out.add(k)
                continue
            more = (_thinned(neg, occ, cut.links, limit, thin, {at[k] for k in out} | {i})
                    if thin is not None else None)
            if more is not None:
                thin.update(more)  # type: ignore[union-attr]
                out.add(k)
                continue
        _add(occ, cut.links, -load, cut.distinct)  # back: it stays flat
        _add(cnt, cut.pes, -1, cut.distinct)
        np.add.at(occ, links, neg.lane_load[i])
        np.add.at(cnt, on, 1)
    return out


def _thinned(neg: _Negotiator, occ: np.ndarray, links: np.ndarray, limit: float,
             thin: _Thin, skip: set[int]) -> _Thin | None:
    """The lighter lanes the bundles passing a re-cut's sink rows need so
    that every one of `links` (the re-cut's) loaded past `limit` comes back
    under it: on each such link the lanes there shed the excess evenly (as
    far as each can), a flat request onto more lanes (at most one per slot of its shorter
    side, as _Negotiator.wider widens; its siblings, same edge and lanes,
    share them and are asked as many), a cut one onto a finer pitch (the
    coarsest whose lanes are that light: Request.lane_cap; its lanes carry
    its sink's boxes, at best lightest_cut's). Requests `skip` (the re-cuts:
    their flat routes are not on these loads) are not thinned. None where no
    such thinning brings a link under `limit`. On success `occ` carries the
    thinned loads (on every link of the thinned bundles) and the asks are
    returned: per request (lanes, lane cap), at least what `thin` asks."""
    over = np.unique(links[occ[links] > limit + 1e-9])
    if not over.size:
        return {}
    mark = np.zeros(occ.size, dtype=bool)
    mark[over] = True
    on: dict[int, list[int]] = {}  # over link -> the requests there
    for j, rt in enumerate(neg.routes):
        if rt is None or j in skip:
            continue
        for link in np.unique(rt.links[mark[rt.links]]):
            on.setdefault(int(link), []).append(j)
    least: dict[int, float] = {}  # request -> the least load its lanes can carry

    def lightest(j: int) -> float:
        if j not in least:
            r = neg.reqs[j]
            least[j] = (float(min(pitch_loads(r).values(), default=neg.lane_load[j]))
                        if r.cut_pitch else
                        float(-(-r.wavelets // max(1, min(r.src.length, r.dst.length)))))
        return least[j]

    drop: dict[int, float] = {}  # request -> the wavelets per lane it sheds
    for link in over.tolist():
        left = float(occ[link]) - limit - sum(drop.get(j, 0.0) for j in on.get(link, ()))
        while left > 1e-9:  # shared evenly: each moves to as coarse a split as it can
            room = {j: neg.lane_load[j] - lightest(j) - drop.get(j, 0.0)
                    for j in on.get(link, ())}
            room = {j: v for j, v in room.items() if v > 1e-9}
            if not room:
                return None
            share = left / len(room)
            for j, v in room.items():
                take = min(v, share)
                drop[j] = drop.get(j, 0.0) + take
                left -= take
    asks: _Thin = {}
    for j, shed in drop.items():
        r = neg.reqs[j]
        group = [j]
        if r.cut_pitch:  # the coarsest pitch as light
            loads = pitch_loads(r)
            most = max(v for v in loads.values() if v <= neg.lane_load[j] - shed + 1e-9)
            lighter = neg.lane_load[j] - most
            key = (r.edge, r.sink)
            was = thin.get(key, (0, 0))[1]
            asks[key] = (0, min(most, was) if was else most)
        else:
            lanes = -(-r.wavelets // max(1, int(neg.lane_load[j] - shed)))
            lanes = min(max(lanes, r.lanes + 1), min(r.src.length, r.dst.length))
            lighter = neg.lane_load[j] - -(-r.wavelets // lanes)
            group += neg.siblings[j]
            for g in group:
                key = (neg.reqs[g].edge, neg.reqs[g].sink)
                asks[key] = (max(lanes, thin.get(key, (0, 0))[0]), 0)
        where = np.unique(np.concatenate([neg.routes[g].links for g in group
                                          if neg.routes[g] is not None]))
        occ[where] -= lighter
    return asks


def _recut(got: _Attempt, best: _Attempt, bound: float, crowding: set[tuple[int, str]],
           cut_in: dict[tuple[int, str], _CutIn],
           route: Callable[[set[tuple[int, str]]], _Attempt], deadline: float | None,
           ceiling: float = 0.0) -> tuple[_Attempt, set[tuple[int, str]]]:
    """Route the crowding-flattened requests that fit (_recuts, under the
    limits _crowding_cuts holds new cuts to) cut again, for free: kept
    where that attempt is colored, none of its new cuts crowds
    (_crowding_cuts), fewer sink PEs read flat lanes, and neither its
    busiest link nor its most bundles on a PE exceed the settled attempt
    `got`'s (measured: kept up to `bound` and COLOR_RISE, a second re-cut
    on Inception-v2 took its busiest link from 0.985 to 0.996 of the
    capacity and its colors 8 -> 9 for 2,688 more PEs; estimated under
    those of `got`, one fewer request is cut: the negotiator spreads the
    bundles a PE would gather). Then the ones still flat are estimated
    again on the kept attempt's loads (the negotiator routed every bundle
    again); where some crowd after all, those are left out and the rest
    tried again; up to RECUT_ATTEMPTS attempts. With a `ceiling` above
    `bound` (PROOF_SLACK), the re-cuts may take the busiest link up to it:
    estimated and kept under the ceiling instead (a flat route whose sink
    reads rows no lane brought is no correct binary; a few % of throughput
    buy its proof); where that attempt is not kept and none of its re-cuts
    crowds, the next is estimated under `bound` again. Returns the kept
    attempt and the requests it leaves flat for crowding. `route(flat)`
    routes an attempt with those flat."""
    left = {k: v for k, v in cut_in.items() if k in crowding}
    most = _kept(best)["max_bundles_per_pe"] + COLOR_RISE
    limit = max(bound, ceiling)
    for _ in range(RECUT_ATTEMPTS):
        kept = _kept(got)
        top = max(kept["max_link_over_capacity"], limit if limit > bound else 0.0)
        crowd = most if limit > bound else kept["max_bundles_per_pe"]
        back = _recuts(got, limit * got.neg.cap, most, left)
        if not back or (deadline is not None and time.perf_counter() > deadline):
            break
        try:
            again = route(crowding - back)
        except LayoutInfeasible:  # no pattern route on the sides it cuts on
            break
        more = _crowding_cuts(again, best, limit) if again.colored else set()
        if (again.colored and not more and _flat_rows(again) < _flat_rows(got)
                and again.score[1] <= top
                and _kept(again)["max_bundles_per_pe"] <= crowd):
            got, crowding = again, crowding - back
            left = {k: v for k, v in left.items() if k in crowding}
            continue
        crowded = more & back
        if not crowded and limit > bound:  # too costly within the slack: as without it
            limit = bound
            continue
        if not crowded:
            break
        left = {k: v for k, v in left.items() if k not in crowded}
    return got, crowding


def _thin_recut(got: _Attempt, best: _Attempt, bound: float, flat: set[tuple[int, str]],
                cut_in: dict[tuple[int, str], _CutIn],
                route: Callable[[set[tuple[int, str]], _Thin], _Attempt],
                deadline: float | None) -> tuple[_Attempt, set[tuple[int, str]]]:
    """After the re-cuts (_recut), the requests still routed flat whose cut
    lanes fit beside the bundles passing their sinks' rows once those take
    lighter lanes (_recuts' `thin`: a flat bundle more lanes, a cut one a
    finer pitch), for free: one at a time, the most sink PEs first, each
    estimated on the kept attempt's loads under its busiest link (not
    `bound`'s slack) and routed with those lanes asked; kept where the
    attempt is colored, none of its new cuts crowds (_crowding_cuts), fewer
    sink PEs read flat lanes, and neither its busiest link nor its most
    bundles on a PE exceed the kept attempt's; at most THIN_ATTEMPTS routed.
    One at a time: measured on ShuffleNet, its three 4-group convs and a
    pool each fit alone (the pitch-8 cuts beside them at pitch 4), routed
    together they crowded a RAMP. Returns the kept attempt and the
    requests it leaves flat. `route(flat, thin)` routes an attempt with
    those flat and those lanes asked."""
    neg = got.neg
    at = {(r.edge, r.sink): r for r in neg.reqs}

    def pes(k: tuple[int, str]) -> int:
        rect = at[k].dst.rect
        return rect.w * rect.h if rect is not None else 0

    most = _kept(best)["max_bundles_per_pe"] + COLOR_RISE
    asked: _Thin = {}  # what the kept attempt was routed with
    tries = 0
    for k in sorted((flat & cut_in.keys()) & at.keys(), key=lambda k: (-pes(k), k)):
        if tries >= THIN_ATTEMPTS or (deadline is not None and time.perf_counter() > deadline):
            break
        kept = _kept(got)
        limit = max(kept["max_link_over_capacity"], bound)
        asks = dict(asked)
        if not _recuts(got, limit * got.neg.cap, most, {k: cut_in[k]}, asks):
            continue
        tries += 1
        try:
            again = route(flat - {k}, asks)
        except LayoutInfeasible:  # no pattern route on the sides it cuts on
            continue
        if (again.colored and again.score[1] <= limit and _flat_rows(again) < _flat_rows(got)
                and _kept(again)["max_bundles_per_pe"] <= kept["max_bundles_per_pe"]
                and not _crowding_cuts(again, best, limit)):
            got, flat, asked = again, flat - {k}, asks
    return got, flat


def _lone_recut(best: _Attempt, ceiling: float, cut_in: dict[tuple[int, str], _CutIn],
                route: Callable[[set[tuple[int, str]], tuple[int, str]], _Attempt],
                deadline: float | None) -> _Attempt:
    """The requests the kept attempt `best` still routes flat, each routed cut
    alone at its lightest pitch (Request.light) on the kept routes, for
    free: kept where the attempt is colored, fewer sink PEs read flat lanes,
    its busiest link bounds throughput no more than `best`'s (below the
    capacity a link bounds nothing), no PE carries more than COLOR_RISE
    bundles over the most `best` has on one, and none of its new cuts crowds
    (_crowding_cuts). The rounds before judge a flat request by a cut route
    an earlier attempt found for it (`cut_in`), estimated on settled loads,
    or not at all where no attempt cut it; routed alone, the negotiator may
    move the bundles its lanes meet (measured: DenseNet-121's concatenation
    input k50, which no attempt had cut, fits under the capacity, 0.914 ->
    0.960; ShuffleNet's 4-group conv k23 on the same busiest link). The
    estimate only skips the hopeless: a request whose known cut route,
    estimated on `best`'s loads, overfills a link past `ceiling` (the proof
    slack over the bound) is not routed. Most sink PEs first, at most
    LONE_ATTEMPTS routed. `route(flat, key)` routes the kept attempt's
    requests with those flat and `key` at its lightest pitch. A request
    routed cut alone and not kept leaves its cut route in `cut_in` (for
    _flat_cuts' estimate)."""
    neg = best.neg
    bound = max(best.score[1], 1.0)
    most = _kept(best)["max_bundles_per_pe"] + COLOR_RISE

    def pes(r: Request) -> int:
        return r.dst.rect.w * r.dst.rect.h if r.dst.rect is not None else 0

    flat = sorted((r for r in neg.reqs if r.flat and r.cut_rows and r.dst.rect is not None),
                  key=lambda r: (-pes(r), r.edge, r.sink))
    tries = 0
    for r in flat:
        k = (r.edge, r.sink)
        if tries >= LONE_ATTEMPTS or (deadline is not None and time.perf_counter() > deadline):
            break
        if k in cut_in and not _recuts(best, ceiling * neg.cap, 1 << 30, {k: cut_in[k]}):
            continue  # its cut lanes overfill a link past the slack: hopeless alone
        tries += 1
        try:
            again = route(best.flat - {k}, k)
        except LayoutInfeasible:  # no pattern route on the sides it cuts on
            continue
        if (again.colored and again.score[1] <= bound and _flat_rows(again) < _flat_rows(best)
                and _kept(again)["max_bundles_per_pe"] <= most
                and not _crowding_cuts(again, best, bound)):
            best = again
        elif again.colored:  # the cut route it found, for the note on the cuts left flat
            cut_in.update(_cut_routes(again, {k}))
    return best


def _run_cuts(best: _Attempt, again: Callable[[set[tuple[int, str]]], _Attempt],
              deadline: float | None) -> _Attempt:
    """The kept layout with the concatenations' inputs cut onto the runs of
    rows reading them (route_bundles.on_run), where that leaves fewer sink
    PEs reading flat lanes and the busiest link bounds throughput no more:
    `again(flat)` routes the kept attempt's requests once more with those
    cuts, except the run cuts in `flat`; the new cuts that crowd a link or a
    PE go flat (_crowding_cuts, run cuts first) and it is routed again. A
    run cut proves a few rows of a data movement, where a conv's cut proves
    its whole rectangle, and its lanes land where the sink's body reads the
    value, not where flat lanes land (nearest their source), so they may
    cross other bundles: tried with the others in the widening attempts,
    they took the room of conv cuts (measured: DenseNet-121 lost two conv
    cuts, 6.8k more PEs reading what no lane brought; Inception-v2 one);
    tried last, on top of the kept layout, they take what room it leaves."""
    bound = max(best.score[1], 1.0)
    crowding: set[tuple[int, str]] = set()
    got = best
    for _ in range(1 + UNCROWD_ATTEMPTS):
        if deadline is not None and time.perf_counter() > deadline:
            return best
        got = again(crowding)
        more = _crowding_cuts(got, best, bound) if got.colored else set()
        if not more:
            break
        crowding |= more
    if got.colored and got.score[1] <= bound and _flat_rows(got) < _flat_rows(best):
        return got
    return best


# a cut request the router left flat (no ribbons either): its key, its sink PEs
# that read rows no lane brings, and the busiest link its known cut route would
# load, estimated (a fraction of the capacity; None where no attempt cut it)
_FlatCut = tuple[tuple[int, str], int, float | None]


def _flat_cuts(module: Module, got: _Attempt, cut_in: dict[tuple[int, str], _CutIn]
               ) -> list[_FlatCut]:
    """The cut requests attempt `got` (committed to `module`, its ribbons
    made) leaves flat, most sink PEs first: each with its sink PEs on flat
    lanes (as _flat_rows counts them) and, where an attempt cut it
    (`cut_in`), the busiest link that cut route would load on `got`'s loads
    in place of its flat route (as _recuts estimates it; measured on
    Inception-v2's six, equal to two decimals to the busiest link an
    attempt cutting each alone negotiates: 1.28, 1.28, 1.15, 1.15, 1.38,
    1.19). Tells the cuts a slack could buy from those no route found
    (geometry: no corner, no pitch), which no negotiation round can cut."""
    neg = got.neg
    out: list[_FlatCut] = []
    occ = neg.occ.copy() if cut_in else neg.occ
    for i, (r, rt) in enumerate(zip(neg.reqs, neg.routes, strict=True)):
        if not r.cut_rows or r.cut_pitch or r.dst.rect is None or rt is None:
            continue
        if any(b.cut and b.sink == r.sink for b in module.edges[r.edge].bundles or ()):
            continue  # routed as ribbons (route_ribbons)
        pes = r.dst.rect.w * r.dst.rect.h * r.cut_rows // (r.sink_rows or r.cut_rows)
        key = (r.edge, r.sink)
        est = None
        if key in cut_in:
            cut, load = cut_in[key]
            flat, _ = neg._counted(i, rt)
            _add(occ, flat, -neg.lane_load[i], rt.distinct)  # its cut route in place of its flat
            _add(occ, cut.links, load, cut.distinct)
            est = float(occ.max(initial=0)) / neg.cap
            _add(occ, cut.links, -load, cut.distinct)
            _add(occ, flat, neg.lane_load[i], rt.distinct)
        out.append((key, pes, est))
    return sorted(out, key=lambda t: (-t[1], t[0]))


def _flat_note(flat: list[_FlatCut], most: int = 6) -> str:
    """The route note on the cut requests left flat (_flat_cuts): their sink
    PEs read elements their lanes do not bring them (`wsec run --strict`
    refuses them, unless the rows relay them: Route.relay, wsec.ir.relay, at
    a cost in link loads the cut would not have); the biggest `most` named
    with what cutting each alone would cost."""
    total = sum(p for _, p, _ in flat)
    named = []
    for (_, sink), pes, est in flat[:most]:
        why = (f"cut alone, busiest link ~{est:.2f}x capacity" if est is not None
               else "no attempt cut it")
        named.append(f"{sink} {pes:,} PEs ({why})")
    more = f", {len(flat) - most} more" if len(flat) > most else ""
    n = len(flat)
    return (f"route: {n} cut request{'s' if n > 1 else ''} routed flat, {total:,} sink PEs "
            f"on flat lanes (a PE reading rows its lane does not carry: `wsec run --strict` "
            f"refuses it): {'; '.join(named)}{more}")


def _kept(got: _Attempt) -> dict[str, float]:
    """The stats of the round whose routes an attempt kept."""
    return min(got.log, key=got.neg._score)


def _flat_rows(got: _Attempt) -> int:
    """PEs of the sinks whose per-row cut input the attempt routes flat (the
    PEs that read elements no lane brought; of a run cut, its run's rows)."""
    return sum(r.dst.rect.w * r.dst.rect.h * r.cut_rows // (r.sink_rows or r.cut_rows)
               for r in got.neg.reqs if r.cut_rows and not r.cut_pitch and r.dst.rect is not None)


def _copy(r: Request) -> Request:
    """A request to deal slots on: its own slots and shares; the ports (never
    changed) and side pairs stay shared, so requests on one side still
    share its port object (assign_slots groups them by it)."""
    c = copy.copy(r)
    c.share = dict(r.share)
    return c


def _color_error(module: Module, neg: _Negotiator, colors: list[int],
                 fabric: Fabric) -> LayoutInfeasible:
    pe = int(np.argmax(neg.pe_cnt))
    y, x = divmod(pe, fabric.width)
    # name a bundle left without a color at the busiest PE (where the colors
    # run out), and which edges crowd it
    there = [j for j, rt in enumerate(neg.routes) if rt is not None and bool((rt.pes == pe).any())]
    short = [j for j, c in enumerate(colors) if c < 0]
    i = next((j for j in short if j in there), short[0])
    r = neg.reqs[i]
    e = module.edges[r.edge]
    crowd = list(dict.fromkeys(f"%{module.edges[neg.reqs[j].edge].value}" for j in there))
    more = f" and {len(crowd) - 4} more" if len(crowd) > 4 else ""
    return LayoutInfeasible(
        f"edge %{e.value} from '{e.src}' to '{r.sink}' cannot be routed: its bundle needs a "
        f"color beyond the {fabric.usable_colors - INTERNAL_COLORS - _halo_colors(neg.reqs)} "
        "left for bundles; the "
        f"busiest PE ({x}, {y}) is crossed by {int(neg.pe_cnt[pe])} bundles (of "
        f"{', '.join(crowd[:4])}{more}); use a larger grid (--grid) or target so that kernels "
        "spread out, or reduce fan-out there")


def _check_rects(module: Module) -> None:
    names = set()
    for k in module.kernels():
        if k.rect is None:
            raise PassError(f"kernel '{k.name}' ({k.kind}) has no rectangle: run the place pass "
                            f"before route")
        names.add(k.name)
    for e in module.edges:
        for n in [e.src, *e.dsts]:
            if n != HOST and n not in names:
                raise PassError(f"edge %{e.value} names kernel '{n}', which is not in the module")


def account(module: Module, fabric: Fabric) -> None:
    """Link loads (wavelets/sample, RAMPs included), routed wirelength and colors."""
    ra = route_arrays(module)
    top = busiest_link(link_loads(ra, fabric))
    module.attrs["max_link_load"] = top.wavelets if top else 0
    module.attrs["max_link"] = top.as_list() if top else [0, 0, "N"]
    module.attrs["routed_wirelength"] = routed_wirelength(ra, fabric)
    module.attrs["max_colors_per_pe"] = colors_per_pe(ra)
    # a sample takes the slowest kernel's cycles or the busiest link's wavelets (one per cycle)
    delta_t = max((int((k.cost or {}).get("cycles", 0)) for k in module.kernels()), default=0)
    module.attrs["realised_cycles"] = max(delta_t, module.attrs["max_link_load"])
