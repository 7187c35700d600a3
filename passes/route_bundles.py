"""Bundles for the router: kernel ports, slots on them, and pattern routes.

Ports (one per kernel side that data crosses): a kernel's data flows along
its PE rows in its unrotated frame — it takes its inputs on its West side
(one lane per PE row, each lane multicast along its row) and sends its
outputs from its East side. A rotated kernel is placed transposed, so its
input side is South and its output side North. The host sends model inputs
into West-edge PEs and takes outputs from East-edge PEs (the fabric API).

A request is one (edge, sink) pair: its bytes become `lanes` parallel lanes
(enough that each carries at most the link capacity, with headroom so two
bundles can share a link), placed on contiguous slots of the source and the
sink port. Several requests on one port split it in the order of their
counterparts, so fan-in and fan-out bundles do not cross. A cut request's
lanes carry its sink's per-row boxes (wsec.ir.kernels.input_cut) and take
the rows of the sink's side that read the value: all of them, its owner
rows, or a run of them (a concatenation's input, forwarded by a run of the
rows: `cut_first`, `cut_rows`).

Pattern routes: lane 0's path, with the nested lanes the bundle geometry
gives (wsec.ir.lanes): straight; L (two segments); Z (three, a jog); and
with a corridor, four and five segments (U turns around kernels). Each has a
few choices of jog position; the negotiating router picks among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from wsec.ir import lanes as lanes_mod
from wsec.ir.fabric import Fabric
from wsec.ir.graph import HOST, Bundle, Kernel, Module, Rect
from wsec.ir.halo import HALO_COLORS, busiest, covers, lane_rows
from wsec.ir.kernels import (
    cut_view,
    gaps,
    halo_cut,
    input_cut,
    owner_pitch,
    read_span,
    spread_over_rows,
)
from wsec.ir.lanes import LaneError, box_elements, check_cut, union_boxes
from wsec.ir.movement import Operands
from wsec.ir.relay import RELAY_COLORS

Vec = tuple[int, int]
_E, _N = (1, 0), (0, 1)


@dataclass
class Port:
    """A side of a kernel (or a host edge) that lanes cross."""

    owner: str
    origin: Vec  # the PE of slot 0
    axis: Vec  # slot i is origin + i*axis
    length: int
    normal: Vec  # travel direction: out of an output side, into an input side
    reach: int = 0  # input side: PEs past the landing PE along the row
    rect: Rect | None = None
    cross: bool = False  # across the kernel's rows: only when no row end will do

    def pe(self, slot: int) -> Vec:
        return (self.origin[0] + slot * self.axis[0], self.origin[1] + slot * self.axis[1])

    def coord(self, slot: float) -> float:
        """Position of a slot along the port's axis (grid coordinate)."""
        return float(np.dot(self.origin, self.axis)) + slot

    def centre(self) -> tuple[float, float]:
        c = (self.length - 1) / 2.0
        return (self.origin[0] + c * self.axis[0], self.origin[1] + c * self.axis[1])


def input_ports(name: str, r: Rect, rotated: bool) -> list[Port]:
    """The sides a kernel takes input on: either end of its PE rows (unrotated
    West and East; placed South and North when rotated). A lane landing there
    travels on along its row, delivering to every PE of it. Then, for when a
    row end cannot be reached (a kernel as wide as the grid), the two other
    sides, a lane per PE column (`cross`)."""
    rows = [Port(name, (r.x, r.y), _N, r.h, _E, r.w - 1, r),
            Port(name, (r.x1 - 1, r.y), _N, r.h, (-1, 0), r.w - 1, r)]
    cols = [Port(name, (r.x, r.y), _E, r.w, _N, r.h - 1, r, True),
            Port(name, (r.x, r.y1 - 1), _E, r.w, (0, -1), r.h - 1, r, True)]
    if rotated:  # unrotated rows run along placed y
        rows, cols = ([Port(p.owner, p.origin, p.axis, p.length, p.normal, p.reach, r)
                       for p in cols],
                      [Port(p.owner, p.origin, p.axis, p.length, p.normal, p.reach, r, True)
                       for p in rows])
    return rows + cols


def output_ports(name: str, r: Rect, rotated: bool) -> list[Port]:
    """The sides a kernel sends output from: either end of its PE rows, then
    (`cross`) the two other sides."""
    rows = [Port(name, (r.x1 - 1, r.y), _N, r.h, _E, 0, r),
            Port(name, (r.x, r.y), _N, r.h, (-1, 0), 0, r)]
    cols = [Port(name, (r.x, r.y1 - 1), _E, r.w, _N, 0, r, True),
            Port(name, (r.x, r.y), _E, r.w, (0, -1), 0, r, True)]
    if rotated:
        rows, cols = ([Port(p.owner, p.origin, p.axis, p.length, p.normal, 0, r)
                       for p in cols],
                      [Port(p.owner, p.origin, p.axis, p.length, p.normal, 0, r, True)
                       for p in rows])
    return rows + cols


def host_ports(fabric: Fabric) -> tuple[Port, Port]:
    """(inputs: the West edge, outputs: the East edge)."""
    H = fabric.height
    return (Port(HOST, fabric.host_input_pe(0), _N, H, _E),
            Port(HOST, fabric.host_output_pe(0), _N, H, _E))


@dataclass
class Request:
    """One bundle to route: edge `edge`'s value to `sink`."""

    edge: int
    sink: str
    src: Port
    dst: Port
    wavelets: int  # per sample, the whole value
    need: int = 1  # lanes for the capacity
    min_lanes: int = 0  # lanes a previous attempt found it needs where it shares links
    lanes: int = 1
    src_slot: int = 0
    dst_slot: int = 0
    share: dict[str, tuple[int, int]] = field(default_factory=dict)
    pairs: list[tuple[Port, Port]] = field(default_factory=list)  # side pairs, best first
    choice: int = 0  # which pair `src`, `dst` are
    solo: bool = False  # never shares slots with its siblings (their lanes would cross)
    cut_rows: int = 0  # the sink's PE rows its lanes serve when its kind cuts this input per row
    # the first of them (rows before and after it read none of the value: read_span)
    cut_first: int = 0
    sink_rows: int = 0  # all of the sink's PE rows (input_cut's boxes; 0: cut_rows)
    # (cut_rows, 2, ndim): the box each of them reads (of the sink's cut_view of the value)
    row_boxes: np.ndarray | None = None
    numel: int = 1  # elements of the value
    cut_pitch: int = 0  # > 0: the lanes carry the rows' boxes, each serving this many rows
    # > 0: only one row of every owner_pitch reads the value (a conv's owner rows, at
    # owner_offset in each group): its lanes land there, no spine (cut "owners")
    owner_pitch: int = 0
    owner_offset: int = 0
    # > 0: a residual the sink's reduction groups of this many rows add, each row
    # a part (wsec.ir.kernels.spread_over_rows): cut at pitches up to a group
    # whose lanes carry their rows' boxes exactly (_pitches); where links are
    # overfilled, the router's first attempts route it flat (wsec.passes.route)
    spread: int = 0
    # its sink's rows read part of the value (a slice: wsec.ir.lanes.check_reads), so
    # cut, the rest travels on no lane: the router's first attempts route it flat
    partial: bool = False
    src_pitch: int = 0  # > 0: the cut lanes leave the source this far apart and widen
    widen: bool = True  # may widen (the router's first attempts do not: wsec.passes.route)
    # may cut onto a run of its sink's rows (`on_run`; the router's last attempt only)
    runs: bool = True
    no_widen: bool = False  # no widened route was found: cut only where the lanes fit uniform
    # pitches whose widened route found no room: widen only at the others
    # (wsec.passes.route._choose_sides)
    widen_failed: frozenset[int] = frozenset()
    widen_from: int = -1  # >= 0: the side pair it left looking for one where it cuts
    # busiest lane per pitch (_max_load), shared by its copies: the same rows' boxes
    loads: dict[int, int] = field(default_factory=dict)
    exact: dict[int, bool] = field(default_factory=dict)  # _exact per pitch, shared likewise
    lane_wavelets: int = 0  # a cut request's busiest lane (its box), per sample
    flat: bool = False  # never cut: its lanes on every sink row overfilled a busiest link
    # the sinks relay what flat lanes leave their rows without (Route.relay: module attr
    # `relay`, wsec.ir.relay): the relays' colors are left out of the bundles' pool
    relay: bool = False
    # cut again after its lanes overfilled a link: at its lightest pitch (lightest_cut)
    light: bool = False
    # > 0: its cut lanes carry at most this (the coarsest pitch that light): the router
    # lightens a cut whose lanes a re-cut's pass beside (wsec.passes.route._thinned)
    lane_cap: int = 0
    # its sink's rows exchange the halo (wsec.ir.halo): its lanes carry the rows' cores
    halo: bool = False
    # what halo_cut needs (kernel, value, shape, operands); None: the sink's rows exchange none
    halo_of: tuple | None = None
    # halo_cut's (cores, Halo, the busiest exchange link's wavelets per sample) once
    # computed, None for none; and the cores' busiest lane per pitch (shared by copies)
    halo_cache: dict = field(default_factory=dict)

    def next_pair(self) -> bool:
        """Move to the next side pair; False when none is left."""
        if self.choice + 1 >= len(self.pairs):
            return False
        self.choice += 1
        self.src, self.dst = self.pairs[self.choice]
        return True


def exchange_colors(reqs: list[Request]) -> int:
    """The colors bundles leave to the exchanges inside kernels: with the
    relay on (Request.relay: Route.relay), RELAY_COLORS where a cut request
    is routed flat (its sink's PEs relay what their lanes did not bring
    them: wsec.ir.relay, on the halo exchange's three colors and two more);
    HALO_COLORS where a request is cut "halo" (wsec.ir.halo), else none."""
    if any(r.relay and r.cut_rows and not r.cut_pitch for r in reqs):
        return RELAY_COLORS
    return HALO_COLORS if any(r.halo for r in reqs) else 0


def _can_leave(p: Port, fabric: Fabric) -> bool:
    """Lanes leaving port p along its normal stay on the grid."""
    x, y = p.origin[0] + p.normal[0], p.origin[1] + p.normal[1]
    return fabric.on_grid(x, y)


def _can_enter(p: Port, fabric: Fabric) -> bool:
    """Lanes can arrive at port p travelling along its normal."""
    x, y = p.origin[0] - p.normal[0], p.origin[1] - p.normal[1]
    return fabric.on_grid(x, y)


def _outside(p: Port, owner: np.ndarray, out: bool) -> tuple[np.ndarray, np.ndarray]:
    """The PEs just outside side p (where its lanes leave to, or arrive from)
    as linear indices (-1 off the grid), and who owns each: a kernel index,
    -1 for a free PE, -2 off the grid."""
    step = p.normal if out else (-p.normal[0], -p.normal[1])
    i = np.arange(p.length)
    x = p.origin[0] + i * p.axis[0] + step[0]
    y = p.origin[1] + i * p.axis[1] + step[1]
    H, W = owner.shape
    ok = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    who = np.full(p.length, -2, dtype=np.int32)
    who[ok] = owner[y[ok], x[ok]]
    return np.where(ok, y * W + x, -1), who


def _landed(a: Port, b: Port, fabric: Fabric) -> bool:
    """Sink side b lies along the host input edge that source a is, facing
    the same way: the host's lanes start on it (no PE outside it is
    crossed), so the grid's edge beyond it blocks nothing (measured: ranked
    blocked, AlexNet's first conv took its input on the far side of its
    rows, a U turn around it, once its East neighbour had moved away)."""
    return (a.owner == HOST and b.owner != HOST and b.origin[0] == fabric.host_input_x
            and b.axis == a.axis and b.normal == a.normal)


def _blocked(outside: tuple[np.ndarray, np.ndarray], facing: Port, W: int,
             sinks: np.ndarray | None = None) -> float:
    """Fraction of those PEs lanes cannot use: off the grid, or inside a
    kernel, unless they are the facing side's own PEs (the two sides touch)
    or belong to a kernel in `sinks` (one that takes the same value: the
    lanes pass it on the lanes of its own bundle, as one multicast route)."""
    pes, who = outside
    x, y = pes % W, pes // W
    (ox, oy), (ax, ay) = facing.origin, facing.axis
    i = (x - ox) * ax + (y - oy) * ay  # the slot each PE would be on the facing side
    touch = (pes >= 0) & (x == ox + i * ax) & (y == oy + i * ay) & (i >= 0) & (i < facing.length)
    shared = np.isin(who, sinks) if sinks is not None and sinks.size else False
    return float((((who == -2) | (who >= 0)) & ~touch & ~shared).mean())


def _pair_cost(a: Port, b: Port) -> float:
    """How far apart, and how badly turned, a source side and a sink side are."""
    (ax, ay), (bx, by) = a.centre(), b.centre()
    d = (bx - ax, by - ay)
    cost = abs(d[0]) + abs(d[1])
    ahead = d[0] * a.normal[0] + d[1] * a.normal[1]  # sink ahead of the source side
    into = d[0] * b.normal[0] + d[1] * b.normal[1]  # source behind the sink side
    if ahead < 0:
        cost += 2 * abs(ahead) + 4 * (a.length if a.rect is None else max(a.rect.w, a.rect.h))
    if into < 0:
        cost += 2 * abs(into) + 4 * (b.length if b.rect is None else max(b.rect.w, b.rect.h))
    return cost


def requests(module: Module, fabric: Fabric) -> list[Request]:
    """One request per (edge, sink), with the sides of its ends that face
    each other best (a side on the grid's edge cannot face outwards; a side
    against another kernel would make lanes cross it)."""
    host_in, host_out = host_ports(fabric)
    ins, outs = {}, {}
    owner = np.full((fabric.height, fabric.width), -1, dtype=np.int32)
    for idx, k in enumerate(module.kernels()):
        assert k.rect is not None
        ins[k.name] = input_ports(k.name, k.rect, k.rotated)
        outs[k.name] = output_ports(k.name, k.rect, k.rotated)
        owner[k.rect.y:k.rect.y1, k.rect.x:k.rect.x1] = idx
    W = fabric.width
    kern = {k.name: k for k in module.kernels()}
    index = {k.name: idx for idx, k in enumerate(module.kernels())}
    ops = Operands.of_module(module)
    around = {id(p): _outside(p, owner, True) for ps in outs.values() for p in ps}
    around.update({id(p): _outside(p, owner, False) for ps in ins.values() for p in ps})
    out = []
    for i, e in enumerate(module.edges):
        srcs = [host_in] if e.src == HOST else outs[e.src]
        wav = int(fabric.wavelets(e.bytes_per_sample))
        sinks = np.array([index[d] for d in e.dsts if d in index], dtype=np.int32)
        for d in dict.fromkeys(e.dsts):
            dsts = [host_out] if d == HOST else ins[d]
            ranked: list[tuple[float, int, Port, Port]] = []
            for a in srcs:
                for b in dsts:
                    ok_a = a.owner == HOST or _can_leave(a, fabric) or (
                        b.owner == HOST and a.origin[0] == fabric.host_output_x)
                    ok_b = b.owner == HOST or _can_enter(b, fabric) or (
                        a.owner == HOST and b.origin[0] == fabric.host_input_x)
                    if not (ok_a and ok_b):
                        continue
                    blocked = 0.0
                    if id(a) in around:
                        blocked += _blocked(around[id(a)], b, W, sinks)
                    if id(b) in around and not _landed(a, b, fabric):
                        blocked += _blocked(around[id(b)], a, W)
                    c = _pair_cost(a, b) + 4.0 * fabric.width * blocked
                    c += 16.0 * fabric.width * (a.cross + b.cross)
                    ranked.append((c, len(ranked), a, b))
            ranked.sort(key=lambda t: (t[0], t[1]))
            pairs = [(a, b) for _, _, a, b in ranked] or [(srcs[0], dsts[0])]
            rows = _row_boxes(kern.get(d), e.value, module)
            partial = rows is not None and d in kern and _partial(kern[d], e.value, rows, module)
            # rows reading nothing before a reading row: lanes land on the readers only
            own = owner_pitch(rows) if rows is not None and gaps(rows) else (0, 0)
            total = 0 if rows is None else int(rows.shape[0])
            first, stop = (0, total) if rows is None or own[0] else read_span(rows)
            if (first, stop) != (0, total) and _row_boxes(kern.get(d), e.value, module,
                                                          False) is not None:
                first, stop = 0, total  # cut on every row where the kind does so without runs
            if rows is not None and stop > first:  # the run of rows reading it
                rows = rows[first:stop]
            whole = rows is not None and not own[0] and (first, stop) == (0, total) \
                and d in kern and e.value in module.values
            out.append(Request(i, d, pairs[0][0], pairs[0][1], wav, pairs=pairs,
                               cut_rows=stop - first, cut_first=first, sink_rows=total,
                               row_boxes=rows if stop > first else None,
                               numel=max(1, _numel(module, e.value)),
                               owner_pitch=own[0], owner_offset=own[1],
                               spread=spread_over_rows(kern[d], e.value, ops)
                               if rows is not None and d in kern else 0,
                               halo_of=(kern[d], e.value, tuple(module.values[e.value].type
                                                                .shape), ops)
                               if whole else None, partial=partial,
                               relay=bool(module.attrs.get("relay"))))
    return out


def _partial(k: Kernel, value: str, rows: np.ndarray, module: Module) -> bool:
    """Whether sink k's PE rows (`rows`: their boxes of `value`, as
    _row_boxes cuts it) read only part of it: no box holds some element (a
    slice's unread rest)."""
    view = cut_view(k, value, module.values[value].type.shape,
                    Operands.of_module(module, runs=True))
    if int(box_elements(rows).sum()) < int(np.prod(view, dtype=np.int64)):
        return True
    try:
        check_cut(view, rows)
    except LaneError:
        return True
    return False


def _numel(module: Module, value: str) -> int:
    return module.values[value].type.numel if value in module.values else 1


def _row_boxes(k: Kernel | None, value: str, module: Module, runs: bool = True
               ) -> np.ndarray | None:
    """The box of `value` each PE row of sink `k` reads when its kind cuts
    it per row (wsec.ir.kernels.input_cut), else None; with `runs`, where
    its lanes may land on a run of the rows (Operands.runs)."""
    if k is None or value not in module.values:
        return None
    return input_cut(k, value, module.values[value].type.shape,
                     Operands.of_module(module, runs=runs))


def _prop(total: int, weights: list[int]) -> list[int]:
    """`total` split into whole parts proportional to `weights` (largest
    remainders first; all equal when every weight is 0)."""
    if total <= 0 or not weights:
        return [0] * len(weights)
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        w = np.ones_like(w)
    exact = total * w / w.sum()
    parts = np.floor(exact).astype(np.int64)
    rest = total - int(parts.sum())
    if rest:
        parts[np.argsort(-(exact - parts), kind="stable")[:rest]] += 1
    return [int(p) for p in parts]


def _split(length: int, needs: list[int], wants: list[int] | None = None
           ) -> list[tuple[int, int]]:
    """Split a port of `length` slots into consecutive shares, in order: each
    request first gets the lanes its capacity needs (proportionally fewer,
    at least one, when they do not all fit), then what it wants on top (its
    headroom), then the rest of the side in proportion to what it wants."""
    wants = list(needs) if wants is None else [max(w, n) for w, n in zip(wants, needs,
                                                                        strict=True)]
    n = len(needs)
    if length >= n:
        if sum(needs) > length:
            sizes = [1 + p for p in _prop(length - n, [max(x - 1, 0) for x in needs])]
        else:
            sizes = list(needs)
            extra = [w - s for w, s in zip(wants, sizes, strict=True)]
            room = length - sum(sizes)
            if sum(extra) >= room:
                add = _prop(room, extra)
            else:
                add = [x + p for x, p in zip(extra, _prop(room - sum(extra), wants),
                                             strict=True)]
            sizes = [s + a for s, a in zip(sizes, add, strict=True)]
    else:  # more requests than slots: they share slots
        sizes = [1] * n
    out, pos = [], 0
    for s in sizes:
        start = min(pos, max(0, length - s))
        out.append((start, s))
        pos = start + s if pos + s <= length else pos
    return out


def assign_slots(reqs: list[Request], cap: int, headroom: float) -> None:
    """Lanes and default slots of every request (see the module docstring)."""
    _assign(reqs, cap, headroom)


def _assign(reqs: list[Request], cap: int, headroom: float) -> None:
    """Lanes and slots of every request (see the module docstring)."""
    for r in reqs:
        r.need = max(1, -(-r.wavelets // max(1, cap)))
        choose_pitch(r, max(int(np.ceil(r.need * headroom)), r.min_lanes), cap)
    # the flat ones again, against the lanes the flat deal of their sides gives them
    dealt = _flat_shares(reqs, headroom)
    for r in reqs:
        if not r.cut_pitch and dealt[id(r)] < max(int(np.ceil(r.need * headroom)),
                                                  r.min_lanes):
            choose_pitch(r, dealt[id(r)], cap)
    _facing_runs(reqs, headroom)
    by_port: dict[tuple[int, str], list[Request]] = {}
    for r in reqs:
        if r.cut_pitch:  # its lanes span both sides (the sink's: the rows reading the value),
            # beside the others' on other colors
            r.share["src"], r.share["dst"] = (0, r.src.length), (r.cut_first, r.cut_rows)
            continue
        by_port.setdefault((id(r.src), "src"), []).append(r)
        by_port.setdefault((id(r.dst), "dst"), []).append(r)
    for (_, side), group in by_port.items():
        _deal(group, side, headroom)
    for r in reqs:
        (sa, sl), (da, dl) = r.share["src"], r.share["dst"]
        if not r.cut_pitch:
            r.lanes = max(1, min(sl, dl, max(int(np.ceil(r.need * headroom)), r.min_lanes)))
    _align_siblings(reqs)
    for r in reqs:
        (sa, sl), (da, dl) = r.share["src"], r.share["dst"]
        r.src_slot, r.dst_slot = _facing(r, sa, sl, da, dl)
    _spread_host(reqs)
    _align_sources(reqs)


def _flat_shares(reqs: list[Request], headroom: float) -> dict[int, int]:
    """Per request routed flat (by id; cut ones span both sides on colors of
    their own and take no slots): the lanes its flat split asks for (the
    capacity's need times `headroom`, or what an earlier attempt found it
    needs), no more than the deal of its sides could give it, each side's
    slots shared among the flat requests on it in proportion to what they
    ask (_deal; siblings sharing their source slots, _shares, as one).
    Why: choose_pitch cuts where a cut lane is no heavier than a flat one,
    and a flat request whose sides are shorter than its ask (a value from a
    short source side to two sinks, each taking half of it) lands fewer,
    heavier lanes than its ask says (measured: ShuffleNet's 1x1 conv after
    a 123-row source, asked 177 lanes at headroom 3 and got 61, each 1,748
    wavelets per sample where its widened cut's lanes carry 1,008)."""
    flat = [r for r in reqs if not r.cut_pitch]
    want = {id(r): max(int(np.ceil(r.need * headroom)), r.min_lanes) for r in flat}
    total: dict[tuple[int, int], int] = {}
    units: set[tuple[int, int, int]] = set()
    for r in flat:
        for p, side in ((r.src, 0), (r.dst, 1)):
            unit = (id(p), side, r.edge if side == 0 and _shares(r) else -1 - id(r))
            if unit not in units:
                units.add(unit)
                total[(id(p), side)] = total.get((id(p), side), 0) + want[id(r)]
    out = {}
    for r in flat:
        got = want[id(r)]
        for p, side in ((r.src, 0), (r.dst, 1)):
            if total[(id(p), side)] > p.length:
                got = min(got, max(1, p.length * want[id(r)] // total[(id(p), side)]))
        out[id(r)] = got
    return out


def on_run(r: Request) -> bool:
    """Whether r's cut lands on a run of its sink's rows, not all of them
    nor its owner rows (the others read none of the value: read_span)."""
    return 0 < getattr(r, "cut_rows", 0) < getattr(r, "sink_rows", 0) \
        and not getattr(r, "owner_pitch", 0)


def _facing_runs(reqs: list[Request], headroom: float) -> None:
    """Route flat the cuts landing on a run of their sink's rows (a
    concatenation's input: read_span) that their source does not face:
    the run is where the sink's body reads the value, but the slots its
    lanes would take routed flat (dealt on the sink's side in the order of
    the sources, _deal) are where the source lies; a run whose middle row
    is outside those slots (a concatenation whose first input comes from
    beyond its second), or, the sides parallel, that the source side does
    not face (_runs_straight), has lanes that turn round in a U across the
    kernels beside them (measured: SqueezeNet's realised rate 1.000x ->
    1.611x its bound with every concatenation's input cut). Where the
    sides are parallel and the source faces the run, the lanes run
    straight across whatever slots a flat deal would give (the deal packs
    shares in the sources' order and sized by their needs, not where each
    source lies; measured: Inception-v1's branches, slid to face their runs
    by wsec.passes.place_runs, were dealt slots beside them)."""
    runs = {id(r) for r in reqs if r.cut_pitch and on_run(r)}
    if not runs:
        return
    ports: dict[int, list[Request]] = {}
    for r in reqs:
        if not r.cut_pitch or id(r) in runs:
            ports.setdefault(id(r.dst), []).append(r)
    for group in ports.values():
        if not any(id(r) in runs for r in group):
            continue
        _deal(group, "dst", headroom)
        for r in group:
            da, dl = r.share["dst"]
            if id(r) not in runs:
                continue
            # parallel sides: straight across where the source faces the run
            if not (_runs_straight(r) if _parallel(r)
                    else da <= r.cut_first + r.cut_rows // 2 < da + dl):
                r.cut_pitch, r.src_pitch, r.lane_wavelets = 0, 0, 0


def _runs_straight(r: Request) -> bool:
    """Where r's sides are parallel with the sink ahead (flat, its lanes
    run straight across), whether its cut lanes can too: the source side
    faces the run of rows they land on. Else a jog the width of the bus,
    where the two kernels abut, turns them round in a U (SqueezeNet's
    concatenations of two inputs from sides as wide as half their rows).
    Other sides: True (their lanes turn a corner either way)."""
    return not _parallel(r) or bool(_straight_windows(r, 1))


def _parallel(r: Request) -> bool:
    """Whether r's sides are parallel, facing the same way with the sink
    ahead, and its lanes leave uniform (where they run straight across
    if its source faces the rows they land on)."""
    e = r.src.normal
    if r.src.axis != r.dst.axis or r.dst.normal != e or r.src_pitch:
        return False
    d = (r.dst.origin[0] - r.src.origin[0], r.dst.origin[1] - r.src.origin[1])
    return d[0] * e[0] + d[1] * e[1] > 0


def _deal(group: list[Request], side: str, headroom: float) -> None:
    """Shares of one port (`side` "src" or "dst" of every request in
    `group`) in the order of the requests' counterparts along its axis."""
    port = group[0].src if side == "src" else group[0].dst
    other = (lambda r: r.dst) if side == "src" else (lambda r: r.src)
    # order along the port's axis by where the counterpart lies
    group.sort(key=lambda r: (float(np.dot(other(r).centre(), port.axis)), r.edge, r.sink))
    # a kernel's sinks of one value share the source slots: their lanes
    # carry the same slices and fork where their ways part (multicast)
    parts: dict[int, list[Request]] = {}
    for r in group:
        parts.setdefault(r.edge if side == "src" and _shares(r) else -1 - id(r),
                         []).append(r)
    units = list(parts.values())
    want = [max(1, int(np.ceil(u[0].need * headroom))) for u in units]
    need = [min(u[0].need, port.length) for u in units]
    # widened requests (min_lanes) get their lanes first: what they ask
    # where the side has it, else the side's rows beyond the others' needs
    wide = [min(max(u[0].need, *(r.min_lanes for r in u)), port.length) for u in units]
    if sum(wide) > port.length >= sum(need):
        more = [w - n for w, n in zip(wide, need, strict=True)]
        got = _prop(min(port.length - sum(need), sum(more)), more)
        wide = [n + g for n, g in zip(need, got, strict=True)]
    if wide != need and sum(wide) <= port.length:
        need, want = wide, [max(w, x) for w, x in zip(want, wide, strict=True)]
    if port.owner == HOST:  # host edges are long: give each request its own rows
        shares = _split(port.length, need, [min(w, port.length) for w in want])
    else:
        shares = _split(port.length, need, want)
    for u, sh in zip(units, shares, strict=True):
        for r in u:
            r.share[side] = sh


def _shares(r: Request) -> bool:
    """Whether r may share its source slots and lanes with its siblings (the
    other sinks of its edge leaving the same side of a kernel): their lanes
    carry the same slices and fork where their ways part, unless the
    router found their lanes crossing (`solo`). A cut request does not (its
    lanes carry its sink's boxes), nor one that could be cut on every row
    of its sink; one onto a run of them (a concatenation's input, `on_run`)
    left flat does, as where its sink declared no cut (measured: not
    sharing, DenseNet-121's flat concatenation inputs took their sources'
    slots from their siblings, and two convs lost their cuts, 6.8k more PEs
    reading what no lane brought)."""
    return r.src.owner != HOST and not r.solo and not (
        _can_cut(r) and (r.cut_pitch or not on_run(r)))


def _siblings(reqs: list[Request]) -> list[list[Request]]:
    """Requests of one edge leaving the same source side, sharing (_shares)."""
    by: dict[tuple[int, int], list[Request]] = {}
    for r in reqs:
        if _shares(r):
            by.setdefault((r.edge, id(r.src)), []).append(r)
    return [g for g in by.values() if len(g) > 1]


def _align_siblings(reqs: list[Request]) -> None:
    """Sibling bundles take equal lanes when the fewest still carry the
    capacity: equal lanes carry equal slices, so they can share links."""
    for g in _siblings(reqs):
        low = min(r.lanes for r in g)
        if low >= g[0].need:
            for r in g:
                r.lanes = low


def _align_sources(reqs: list[Request]) -> None:
    """Siblings with equal lanes start from the same source slots."""
    for g in _siblings(reqs):
        by: dict[int, list[Request]] = {}
        for r in g:
            by.setdefault(r.lanes, []).append(r)
        for same in by.values():
            slot = same[0].src_slot
            for r in same[1:]:
                r.src_slot = slot


def _facing(r: Request, sa: int, sl: int, da: int, dl: int) -> tuple[int, int]:
    """Slot windows of `r.lanes` inside the two shares, aligned when the ports
    are parallel (so the bundle can run straight), else nearest each other.
    A host port's share is free to slide along the whole edge."""
    Ls, Ld = src_span(r), dst_span(r)
    if r.src.owner == HOST:
        sa, sl = 0, r.src.length
    if r.dst.owner == HOST:
        da, dl = 0, r.dst.length
    if r.src.axis == r.dst.axis:
        cs, cd = r.src.coord(0), r.dst.coord(0)
        # choose a common coordinate window [c, c+L) inside both shares
        lo = max(cs + sa, cd + da)
        hi = min(cs + sa + sl - Ls, cd + da + dl - Ld)
        if hi >= lo:
            mid = (lo + hi) / 2.0
            c = int(round(mid))
            return int(c - cs), int(c - cd)
        # no overlap: the windows of the two shares nearest each other
        below = cs + sa + sl <= cd + da  # the source share lies before the sink's
        s = sa + sl - Ls if below else sa
        d = da if below else da + dl - Ld
        return int(max(sa, s)), int(max(da, d))
    s, d = sa + (sl - Ls) // 2, da + (dl - Ld) // 2
    if r.src.owner == HOST:
        s = _nearest(r.src, Ls, r.dst.centre())
    if r.dst.owner == HOST:
        d = _nearest(r.dst, Ld, r.src.centre())
    return s, d


def _nearest(port: Port, span: int, towards: tuple[float, float]) -> int:
    """The window of `span` slots of a host edge nearest the point `towards`
    (the far side's centre): a bundle across the edge's axis then turns
    towards the edge where its source is, not at the edge's middle."""
    c = float(np.dot(towards, port.axis)) - port.coord(0) - (span - 1) / 2.0
    return int(min(max(round(c), 0), max(0, port.length - span)))


def _spread_host(reqs: list[Request]) -> None:
    """Requests through one host edge take windows that do not overlap, each
    as near its facing window (_facing) as the others let it: a host edge is
    long, and bundles landing on the same slots would all cross the PEs
    there (a training step's hundreds of gradient edges out of the wafer
    ran out of colors at one PE of the edge). A bundle that runs straight
    across to the edge keeps its window (moved, it would turn twice, or find
    no route where its sink abuts the edge). Where the windows add up to
    more than the edge, they stay where they face (and share slots)."""
    groups: dict[tuple[int, str], list[Request]] = {}
    for r in reqs:
        if r.src.axis == r.dst.axis and r.src.coord(r.src_slot) == r.dst.coord(r.dst_slot):
            continue  # runs straight (or lands where it starts): it stays facing its sink
        if r.src.owner == HOST:
            groups.setdefault((id(r.src), "src"), []).append(r)
        if r.dst.owner == HOST:
            groups.setdefault((id(r.dst), "dst"), []).append(r)
    for (_, side), group in groups.items():
        if len(group) < 2:
            continue
        src = side == "src"
        port = group[0].src if src else group[0].dst
        ideal = [r.src_slot if src else r.dst_slot for r in group]
        width = [src_span(r) if src else dst_span(r) for r in group]
        at = legalize(ideal, width, port.length)
        if at is None:
            continue
        for r, a in zip(group, at, strict=True):
            if src:
                r.src_slot = a
            else:
                r.dst_slot = a


def legalize(ideal: list[int], width: list[int], length: int) -> list[int] | None:
    """Starts of windows (`width[i]` slots, wanted at `ideal[i]`) on a line of
    `length` slots that do not overlap, keep the ideal order and move the
    windows as little as possible (least squares: clusters of abutting
    windows sit at their members' mean wish, merged while they overlap, as
    in Abacus row legalization). None when they do not fit side by side."""
    if sum(width) > length:
        return None
    order = sorted(range(len(ideal)), key=lambda i: (ideal[i], i))
    # a cluster: [start, width, sum of (ideal - offset in the cluster), members]
    clusters: list[list] = []
    for i in order:
        clusters.append([ideal[i], width[i], float(ideal[i]), [i]])
        while True:
            c = clusters[-1]
            c[0] = int(min(max(round(c[2] / len(c[3])), 0), length - c[1]))
            if len(clusters) < 2 or clusters[-2][0] + clusters[-2][1] <= c[0]:
                break
            prev = clusters.pop(-2)
            c[2] = prev[2] + c[2] - len(c[3]) * prev[1]
            c[1] += prev[1]
            c[3] = prev[3] + c[3]
    out = [0] * len(ideal)
    for start, _, _, members in clusters:
        for i in members:
            out[i] = start
            start += width[i]
    return out


def src_span(r: Request) -> int:
    """Slots r's lanes start from: every pitch-th of (lanes - 1) * pitch + 1
    (a widening request: every src_pitch-th)."""
    return (r.lanes - 1) * (r.src_pitch or max(1, r.cut_pitch)) + 1


def dst_span(r: Request) -> int:
    """Slots r's lanes serve at the sink: lanes x pitch (spines included)."""
    return r.lanes * max(1, r.cut_pitch)


def _lane_wavelets(r: Request, k: int) -> np.ndarray:
    """Wavelets per sample each lane of r carries when cut at pitch k (the
    bounding box of its k rows' boxes, wsec.ir.lanes.union_boxes; landing
    on owner rows: its owner row's box)."""
    assert r.row_boxes is not None
    R = r.row_boxes.shape[0]
    if r.owner_pitch:
        return -(-r.wavelets * box_elements(r.row_boxes[r.owner_offset::k]) // r.numel)
    boxes = union_boxes(r.row_boxes.reshape(R // k, k, 2, -1))
    return -(-r.wavelets * box_elements(boxes) // r.numel)


def _max_load(r: Request, k: int) -> int:
    """r's busiest lane at pitch k (wavelets per sample), computed once."""
    if k not in r.loads:
        r.loads[k] = int(_lane_wavelets(r, k).max())
    return r.loads[k]


def _pitches(r: Request) -> dict[int, int]:
    """The pitches k r can be cut at, each with the source pitch its lanes
    leave at: k divides the sink's R rows, and the R/k lanes start from
    (R/k - 1) k + 1 slots of the source side (source pitch 0: uniform), or,
    where the side is shorter than that, from R/k slots side by side and
    widen to pitch k at their last corner (source pitch 1; not at the
    pitches whose widened route found no room, `widen_failed`). From the host
    only pitch 1: its I/O map feeds one lane per edge PE, side by side.
    Rows read on owner rows only (owner_pitch k): only pitch k, lanes
    landing on those rows with no spine. A residual spread over groups of
    c reduction rows: pitches below c whose lanes carry exactly their rows'
    boxes (`_exact`); at pitch c a lane would carry an owner row's box and
    its spine hand all of it to each of the group's rows, c times what each
    reads (an owner cut lands it on the owner row alone); where none of
    those fits and one lane meets the capacity (`need`), pitch R: one lane
    carrying all of it to every row, which choose_pitch takes only where
    half a link holds the value whole (a small residual from a source side
    far shorter than the sink's rows)."""
    R, S = r.cut_rows, r.src.length
    if r.src.owner == HOST:
        return {1: 0} if R <= S and not r.owner_pitch else {}
    out = {}
    for k in range(1, R + 1):
        if R % k or (r.owner_pitch and k != r.owner_pitch) \
                or (r.spread and (k >= r.spread or not _exact(r, k))):
            continue
        if R - k + 1 <= S:
            out[k] = 0
        elif not r.no_widen and R // k <= S and k not in r.widen_failed:
            out[k] = 1
    if r.spread and not out and r.need <= 1:  # one lane to all rows (choose_pitch: if small)
        out[R] = 0
    return out


def _exact(r: Request, k: int) -> bool:
    """Whether the lanes of r cut at pitch k carry exactly their k rows'
    boxes: a residual spread over reduction rows (`spread`) partitions each
    group's box among its rows, so a lane whose rows straddle two groups
    would carry the hull of their parts, all channels of both groups' rows
    (pitch 2 over groups of 3: twice an owner row's box)."""
    assert r.row_boxes is not None
    if k not in r.exact:
        R = r.row_boxes.shape[0]
        hull = union_boxes(r.row_boxes.reshape(R // k, k, 2, -1))
        r.exact[k] = int(box_elements(hull).sum()) == int(box_elements(r.row_boxes).sum())
    return r.exact[k]


# a cut lane carries at least 1/LANE_SHARE of a flat lane where it can
# (bench/fabric.py). 2.5 was measured on row boxes that started the pads' sum
# above the rows read (a 3x3 conv's one-row lanes 5 rows for 3); on the exact
# boxes, lighter by up to that 5/3, 2.5 took pitches about twice as coarse
# (Inception-v1's widening attempt moved k52's pitch-1 cut to pitch 13 and
# crowded its busiest link to 1.15x, so no side pair was tried and k49 stayed
# flat: 11,208 PEs). 4.0 (about 2.5 x 5/3) keeps or improves every realised
# rate of the light models and cuts their routed wirelength on all nine
LANE_SHARE = 4.0


def choose_pitch(r: Request, ask: int, cap: int = 0) -> None:
    """Cut r (its lanes carry its sink's per-row boxes) when it can: of the
    pitches k whose lanes fit the source side (k divides the sink's R rows;
    R/k lanes start from (R/k - 1) k + 1 slots, or, widening at their last
    corner, from R/k: _pitches), the largest whose busiest lane carries at
    most what each of the `ask` lanes of the flat split would. A cut lane
    is never heavier than a flat one; where none is that light, r stays
    flat. More lanes never make the bus
    wider: it spans about R slots at any pitch, every k-th used, so a cut
    request takes the whole of both sides (other requests' lanes use them
    too, on other colors). The busiest lane's load is kept for the
    negotiator (and for widening: wsec.passes.route). A request marked
    `flat` (the router found its cut lanes overfill a busiest link at any
    pitch) stays flat. Where the flat split asks for a lane per row or more
    (it could land no more than one on each row), pitch 1 is as wide as it
    gets and is taken even though halos make its lanes a little heavier.
    So is a pitch with at least as many lanes as the flat split, each at
    most half a link's capacity `cap` (room for another as heavy beside
    it), though halos make them heavier than the flat lanes; in the
    router's widening attempts (`widen`), with only the lanes the capacity
    needs (`need`, and those an earlier attempt asked for, `min_lanes`):
    there a new cut that crowds a link or a PE is routed flat again
    (wsec.passes.route._crowding_cuts), where the first attempts have no
    such guard (more, lighter cuts there crowd a GPT's links); a value half
    a link's capacity holds whole, with any number of lanes each at most
    that (one lane carrying all of it to every row, where the flat split's
    headroom asks for two). The flat
    split's lanes land on only some rows, and the rest of the rectangle
    would have to forward what they read (a distribution no route
    configures), so its lighter lanes are no fair comparison; the
    negotiator still flattens a cut whose lanes overfill a link
    (`Request.flat`), and cuts it again at its lightest pitch (`light`: the
    pitch the flattening judged it on, the least a passing bundle meets on
    each of its rows). A cut onto a run of the sink's rows (a
    concatenation's input, `on_run`) is tried where `runs` says so only
    (the router's last attempts, on top of the layout it kept): the run is
    where the sink's body reads the value, not where its lanes would land
    flat (nearest their source), so they may cross the sink's other inputs
    or take the room other cuts need; there a new cut that crowds a link is
    routed flat again, and the attempt is kept only where its busiest link
    is no worse."""
    r.cut_pitch, r.src_pitch, r.lane_wavelets, r.halo = 0, 0, 0, False
    if r.flat or not _can_cut(r) or (on_run(r) and not r.runs):
        return
    ks = _pitches(r)
    if not ks:
        return
    R = r.cut_rows
    loads = {k: _max_load(r, k) for k in ks}
    light = [k for k in ks if loads[k] <= r.lane_cap]
    if light:  # the router lightens it so that a re-cut fits beside it
        k = max(light)
    elif r.light or r.lane_cap:  # the router cuts it again where it fits beside a bundle
        k = min(ks, key=lambda k: (loads[k], k))  # passing its rows
    else:
        # a value half a link holds whole needs no more lanes than its cut has:
        # one lane whose spine hands it to every row (a small operand every row
        # reads whole; a matmul's input from a source one PE wide) is cut
        least = 1 if 2 * r.wavelets <= cap else \
            ask if not r.widen else max(r.need, r.min_lanes)
        k = pick_pitch(loads, R, r.wavelets, ask, least, cap)
        if not k and r.widen and r.owner_pitch:
            k = _full_lanes(loads, R, least, cap)
        if not k:  # the rows' cores, their halos exchanged inside the sink
            loads = _halo_loads(r, ks, cap)
            k = pick_pitch(loads, R, r.wavelets, ask, least, cap)
            if not k and r.widen:  # as owner lanes: a row group's window ends its input, so
                # the last row's core is its whole box, heavier than the rest (measured: the
                # U-Net fixture's resize, cores of 128 wavelets, 256 at its end)
                k = _full_lanes(loads, R, least, cap)
            r.halo = k > 0
    if not k:
        return  # lanes as light as the flat split's need more than the source side has
    r.cut_pitch, r.src_pitch, r.lanes, r.lane_wavelets = k, ks[k], R // k, loads[k]


def _full_lanes(loads: dict[int, int], R: int, least: int, cap: int) -> int:
    """In a widening attempt, for lanes landing on owner rows where no
    pitch is as light as pick_pitch asks: the finest pitch with at least
    `least` lanes (those the capacity needs) each within a link's capacity
    `cap`, 0 for none. An owner row reads the whole of such a value (a
    gated matmul's other operand, its reduction-end row multiplying every
    column block), so its one lane carries all of it where the flat
    split's headroom deals it over two landing on other rows; it leaves no
    room beside it on the row (pick_pitch holds lanes to half a link), but
    the widening attempts route flat again a new cut that crowds a link
    (wsec.passes.route._crowding_cuts) and are kept only where fewer sink
    PEs read flat lanes. Only for owner rows: measured on the transformer
    fixtures, the same single lanes handed by a spine to a softmax's or a
    matmul's every row (each reading a part) crowded the widening attempts
    (Whisper 260 -> 414 forwarded PEs, T5 453 -> 464), where owner lanes
    proved Llama's two gated matmuls (32 -> 0). And for the cores of a halo
    cut (the rows exchange the rest, wsec.ir.halo): the last row group's core
    is its whole box, so its lanes alone may be heavier than pick_pitch
    allows (the U-Net fixture's resize: 121 PEs proven)."""
    fit = [k for k in loads if R // k >= least and loads[k] <= cap]
    return min(fit, default=0)


def _halo(r: Request) -> tuple[np.ndarray, object, int] | None:
    """r's sink rows' (cores, Halo, the most the exchange moves over a link
    or RAMP, in wavelets per sample at pitch 1: a row's halo, or the several
    a relaying column passes on, wsec.ir.halo.busiest), computed once
    (wsec.ir.kernels.halo_cut); None where its rows exchange no halo."""
    if "split" not in r.halo_cache:
        got = None if r.halo_of is None else halo_cut(*r.halo_of)
        sink = None if r.halo_of is None else r.halo_of[0]
        if got is not None and sink is not None and sink.rect is not None:
            core, h = got
            uw = sink.rect.h if sink.rotated else sink.rect.w
            got = (core, h, -(-r.wavelets * busiest(core, h, 1, uw) // r.numel))
        else:
            got = None
        r.halo_cache["split"] = got
    return r.halo_cache["split"]


def _halo_loads(r: Request, ks: dict[int, int], cap: int) -> dict[int, int]:
    """Pitch -> busiest lane (wavelets per sample) of r cut into its sink
    rows' cores (`_halo`), at the pitches of `ks` whose lanes, exchanged,
    give every row its box (wsec.ir.halo.covers). None of them where the
    exchange alone would load a link of the sink past the capacity `cap`
    or there is no capacity to judge it by (the router checks the loads
    with the exchange once more at the end: route._halo_hot).
    Why only where the whole boxes find no pitch: a cut that already fits
    keeps its lanes (the exchange adds traffic inside the sink)."""
    got = _halo(r)
    if got is None or cap <= 0 or got[2] > cap or r.row_boxes is None:
        return {}
    core, h, _ = got
    if core.shape[0] != r.row_boxes.shape[0]:
        return {}
    out = {}
    for k in ks:
        if k not in r.halo_cache:
            ok = covers(r.row_boxes, core, h, k)
            lane = lane_rows(core, k)[::k]
            r.halo_cache[k] = -(-r.wavelets * int(box_elements(lane).max()) // r.numel) \
                if ok else -1
        if r.halo_cache[k] >= 0:
            out[k] = r.halo_cache[k]
    return out


def pick_pitch(loads: dict[int, int], R: int, wavelets: int, ask: int, least: int,
               cap: int) -> int:
    """The pitch choose_pitch cuts at (0: none), of the pitches `loads`
    offers (pitch -> its busiest lane's wavelets per sample) for R sink rows
    fed `wavelets` per sample: those whose lanes carry at most what each of
    the `ask` flat lanes would, pitch 1 where the flat split asks a lane per
    row or more, or those with at least `least` lanes each at most half a
    link's capacity `cap`; of them the finest whose lanes still carry a fair
    share (LANE_SHARE) of a flat lane, else the coarsest. One rule for the
    router and for the placer, which opens gaps as wide as the lanes this
    rule widens (wsec.passes.place_rows.widening_lanes)."""
    limit = -(-wavelets // max(1, ask))
    fit = fitting(loads, R, wavelets, ask, least, cap)
    if not fit:
        return 0
    # every row of a lane receives its lane's box, so a lane of k rows costs
    # its rows k times what they read: take the smallest pitch whose lanes
    # still carry a fair share of a flat lane (measured: lighter lanes, many
    # more of them, crowd the links a skip bundle shares with them)
    fair = [k for k in fit if loads[k] * LANE_SHARE >= limit]
    return min(fair) if fair else max(fit)


def fitting(loads: dict[int, int], R: int, wavelets: int, ask: int, least: int,
            cap: int) -> list[int]:
    """The pitches pick_pitch chooses among (its arguments): each lane at
    most a flat lane's load, pitch 1 where the flat split asks a lane per
    row, or at least `least` lanes each at most half a link's capacity.
    Ribbons (route_ribbons) take the coarsest of them that fits where the
    chosen one does not: fewer lanes, fewer columns to turn in."""
    limit = -(-wavelets // max(1, ask))
    return [k for k in loads if loads[k] <= limit or (k == 1 and ask >= R)
            or (R // k >= least and 2 * loads[k] <= cap)]


def lightest_cut(r: Request) -> int:
    """The least busiest-lane load (wavelets per sample) of r's cuts over
    every pitch it can take: at any pitch its lanes serve every row of its
    sink's input side, so a bundle passing those rows meets at least this
    much on each of them. 0 when r cannot be cut."""
    return min(pitch_loads(r).values(), default=0)


def pitch_loads(r: Request) -> dict[int, int]:
    """The busiest lane's load (wavelets per sample) of r's cut at every
    pitch it can take (choose_pitch's choice); empty when r cannot be cut."""
    return {k: _max_load(r, k) for k in (_pitches(r) if _can_cut(r) else [])}


# --- pattern candidates -----------------------------------------------------------------
def _add(a: Vec, b: Vec, k: int = 1) -> Vec:
    return (a[0] + k * b[0], a[1] + k * b[1])


def _lane_ends(r: Request, flip: bool) -> tuple[Vec, Vec, Vec]:
    """Lane 0's source PE, the lane axis at the source, and the source PE of
    the last lane."""
    s0, s1 = r.src.pe(r.src_slot), r.src.pe(r.src_slot + src_span(r) - 1)
    return (s1, (-r.src.axis[0], -r.src.axis[1]), s0) if flip else (s0, r.src.axis, s1)


def _landing(r: Request, o_last: Vec) -> Vec | None:
    """Lane 0's landing PE given the lane offset of the last segment: the
    first row it serves, or, when lane 0 lands last and its spine runs back,
    the last (lanes landing on owner rows: the first or last owner row)."""
    first, last = _land_slots(r)
    if o_last == r.dst.axis:
        return r.dst.pe(r.dst_slot + first)
    if o_last == (-r.dst.axis[0], -r.dst.axis[1]):
        return r.dst.pe(r.dst_slot + last)
    return None


def _bundle(r: Request, color: int, axis: Vec, path: list[Vec]) -> Bundle:
    reach = 0 if r.dst.owner == HOST else r.dst.reach
    cut = cuts(r)
    how = ("owners" if r.owner_pitch else "halo" if r.halo else "rows") if cut else ""
    return Bundle(r.sink, color, r.lanes, axis, tuple(path), reach, how,
                  max(1, r.cut_pitch), r.src_pitch if cut else 0)


def _can_cut(r: Request) -> bool:
    """The sink's kind cuts the value per PE row and r's destination is a
    side with a slot per row (from the host too: the I/O map then sends
    each lane its box). Where only a run of the rows reads the value
    (`cut_first`, `cut_rows`: a concatenation's input), the lanes land on
    the slots of that run alone."""
    return bool(r.cut_rows) and (r.sink_rows or r.cut_rows) == r.dst.length \
        and not r.dst.cross


def cuts(r: Request) -> bool:
    """Whether r's lanes carry its sink's per-row boxes: r can cut and has
    one lane per `cut_pitch` rows, landing (with their spines) on every row
    of its input side that reads the value (from the first to the last), or
    on every owner row (the lanes then deliver each row what it reads)."""
    return _can_cut(r) and r.cut_pitch > 0 and r.lanes * r.cut_pitch == r.cut_rows


def _path_dirs(path: list[Vec]) -> list[Vec] | None:
    """Unit direction of each segment, or None unless every segment is
    axis-aligned and non-empty and each turns by 90 degrees from the last."""
    out = []
    (px, py), along_x = path[0], None
    for qx, qy in path[1:]:
        if qx != px:
            if qy != py or along_x is True:
                return None
            out.append((1 if qx > px else -1, 0))
            along_x = True
        elif qy != py and along_x is not False:
            out.append((0, 1 if qy > py else -1))
            along_x = False
        else:
            return None
        px, py = qx, qy
    return out


def _lane_path(path: list[Vec], offs: list[Vec], i: int, steps: list[int] | None = None
               ) -> list[Vec]:
    """Lane i's waypoints (wsec.ir.lanes, in plain integers), the lanes
    `steps[k]` apart on segment k (default 1 on every segment)."""
    n = len(path) - 1
    sp = steps or [1] * max(n, 1)
    out = []
    for k, (px, py) in enumerate(path):
        sx = (sp[k - 1] * offs[k - 1][0] if k > 0 else 0) + (sp[k] * offs[k][0] if k < n else 0)
        sy = (sp[k - 1] * offs[k - 1][1] if k > 0 else 0) + (sp[k] * offs[k][1] if k < n else 0)
        out.append((px + i * sx, py + i * sy))
    return out


def _steps(r: Request, segments: int) -> list[int]:
    """Lane spacing per segment of r's candidate (wsec.ir.lanes.spacings):
    its source pitch before the last corner when it widens, else its pitch."""
    k = max(1, r.cut_pitch)
    return [r.src_pitch or k] * (segments - 1) + [k]


def _crosses(a: list[Vec], b: list[Vec], same: bool) -> bool:
    """Do two axis-aligned polylines share a point (skipping neighbouring
    segments of one polyline, which share their corner)?"""
    boxes_a = _boxes(a)
    boxes_b = boxes_a if b is a else _boxes(b)
    for i, (ax0, ax1, ay0, ay1) in enumerate(boxes_a):
        for j, (bx0, bx1, by0, by1) in enumerate(boxes_b):
            if same and -1 <= i - j <= 1:
                continue
            if ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1:
                return True
    return False


def _boxes(points: list[Vec]) -> list[tuple[int, int, int, int]]:
    """(x0, x1, y0, y1) of each segment of a polyline."""
    out = []
    for (px, py), (qx, qy) in zip(points, points[1:], strict=False):
        out.append((px, qx, py, qy) if px <= qx and py <= qy else
                   (min(px, qx), max(px, qx), min(py, qy), max(py, qy)))
    return out


def _finish(r: Request, axis: Vec, path: list[Vec], fabric: Fabric | None = None
            ) -> Bundle | None:
    """A candidate whose lanes land exactly on the destination slot, never run
    backwards, and do not fold onto each other (with `fabric`: and, for a
    path of more than one waypoint, stay on its grid, as _inside); or None."""
    path = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
    return _checked(r, axis, path, fabric, None)


def _checked(r: Request, axis: Vec, path: list[Vec], fabric: Fabric | None,
             lands: tuple[Vec, Vec] | None) -> Bundle | None:
    """_finish on a path without repeated waypoints; `lands`, when given,
    is r's (_landing) for the last segment's lane offset along r.dst.axis and
    against it (_shortest_valid checks thousands of shapes per request)."""
    if len(path) == 1:  # a host port right beside the kernel's side: lanes start landed
        if (HOST not in (r.src.owner, r.dst.owner) or r.src_pitch
                or _landing(r, axis) != path[0]):
            return None
        return _bundle(r, 0, axis, path)
    dirs = _path_dirs(path)
    if not dirs or dirs[0] != r.src.normal or dirs[-1] != r.dst.normal:
        return None
    if r.src_pitch and len(dirs) < 2:
        return None  # lanes widen at the last corner: a straight run has none
    offs = _offsets(axis, dirs)
    if offs is None:
        return None
    if lands is None:
        land = _landing(r, offs[-1])
    else:
        o, ax = offs[-1], r.dst.axis
        land = lands[0] if o == ax else lands[1] if o == (-ax[0], -ax[1]) else None
    if land is None or land != path[-1]:
        return None
    last = r.lanes - 1
    first = list(path)
    other = _lane_path(path, offs, last, _steps(r, len(dirs)))
    # segment lengths are affine in the lane: check both ends. Lane 0 (the path:
    # its segments non-empty, each along its direction) passes every check.
    lane = other
    for (p, q), d in zip(zip(lane, lane[1:], strict=False), dirs, strict=True):
        if (q[0] - p[0]) * d[0] + (q[1] - p[1]) * d[1] < 0:
            return None
    for k in range(1, len(dirs) - 1):
        if lane[k] == lane[k + 1] and dirs[k - 1] == (-dirs[k + 1][0], -dirs[k + 1][1]):
            return None
    if lane[0] == lane[-1] and all(p == q for p, q in zip(lane, lane[1:], strict=False)):
        return None  # the lane would start where it lands
    reach = 0 if r.dst.owner == HOST else r.dst.reach
    if reach:  # past its landing PE a lane goes on, delivering along the sink's row
        d = dirs[-1]
        first[-1] = (first[-1][0] + reach * d[0], first[-1][1] + reach * d[1])
        other[-1] = (other[-1][0] + reach * d[0], other[-1][1] + reach * d[1])
    if fabric is not None:  # the outer lanes bound the others (see _inside)
        W, H = fabric.width, fabric.height
        for x, y in first + other:
            if not (0 <= x < W and 0 <= y < H):
                return None
    if len(path) > 2 and (_crosses(first, first, True) or _crosses(other, other, True)
                          or (last > 0 and not _ribbon_simple(first, other))):
        return None
    b = _bundle(r, 0, axis, path)
    if b.pitch > 1 and _folds(b, r.src.owner == HOST):
        return None
    return b


_OFFSETS: dict[tuple[Vec, tuple[Vec, ...]], list[Vec] | None] = {}


def _offsets(axis: Vec, dirs: list[Vec]) -> list[Vec] | None:
    """wsec.ir.lanes.offsets (not to be changed by the caller), or None where
    it raises, kept per lane axis and segment directions: a few dozen of them
    serve the hundreds of thousands of shapes _finish checks in a compile."""
    key = (axis, tuple(dirs))
    if key not in _OFFSETS:
        try:
            _OFFSETS[key] = lanes_mod.offsets(axis, dirs)
        except lanes_mod.LaneError:
            _OFFSETS[key] = None
    return _OFFSETS[key]


def _folds(b: Bundle, source_host: bool = False) -> bool:
    """Whether a pitched bundle runs through itself: the spine past its last
    lane's landing PE, and the rows it feeds, lie beyond the ribbon the
    checks above bound, where a lane's path may come in (two routes of one
    color at one PE). The spines and rows of all lanes fill one rectangle
    (the landing line, L*pitch rows long, times reach + 1 PEs along the
    rows); a fold is a PE of some lane's path, short of its landing PE, in
    it: checked segment by segment (a candidate's expansion is thousands of
    PEs, its segments a few per lane). `source_host` does not move a PE."""
    del source_host
    pts = lanes_mod.waypoints(b)  # (L, n + 1, 2)
    dirs = lanes_mod.segment_dirs(b.path)
    if not dirs:
        return False
    sx, sy = lanes_mod.spine_dir(b, dirs)
    tx, ty = lanes_mod.travel(b.axis, dirs)
    land = pts[:, -1, :]
    corners = np.concatenate([land, land + b.spine * np.array([sx, sy]),
                              land + b.reach * np.array([tx, ty])])
    lo, hi = corners.min(axis=0), corners.max(axis=0)  # the rectangle of spines and rows
    d = np.array(dirs, dtype=np.int64)  # (n, 2)
    a = pts[:, :-1, :]  # segment starts, (L, n, 2)
    n = ((pts[:, 1:, :] - a) * d[None]).sum(axis=2)  # points per segment (its end excluded)
    z = a + np.maximum(n - 1, 0)[..., None] * d[None]  # the segment's last point
    s_lo, s_hi = np.minimum(a, z), np.maximum(a, z)
    meets = (n > 0) & (s_lo <= hi).all(axis=2) & (s_hi >= lo).all(axis=2)
    return bool(meets.any())


def _ribbon_simple(first: list[Vec], other: list[Vec]) -> bool:
    """Nested lanes sweep a ribbon bounded by the first lane, the landing
    line, the last lane backwards and the source line; its lanes are
    PE-disjoint when that boundary is a simple polygon (no two of its
    non-adjacent sides touch)."""
    ring = first + other[::-1]
    ring.append(ring[0])
    boxes = [bx for bx, (p, q) in zip(_boxes(ring), zip(ring, ring[1:], strict=False),
                                      strict=True) if p != q]
    n = len(boxes)
    for i in range(n):
        ax0, ax1, ay0, ay1 = boxes[i]
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # the ring closes: first and last sides share a corner
            bx0, bx1, by0, by1 = boxes[j]
            if ax0 <= bx1 and bx0 <= ax1 and ay0 <= by1 and by0 <= ay1:
                return False
    return True


def _near(corridors: list[int], points: list[int], k: int = 3) -> list[int]:
    """The k corridor coordinates nearest each of `points`."""
    if not corridors:
        return []
    c = np.asarray(corridors)
    out: set[int] = set()
    for p in points:
        out |= set(c[np.argsort(np.abs(c - p), kind="stable")[:k]].tolist())
    return sorted(out)


def _straight_windows(r: Request, count: int = 9) -> list[tuple[int, int]]:
    """(source slot, sink slot) windows where the bundle can run straight:
    parallel sides, the sink ahead, at a few positions along their overlap."""
    if r.src.axis != r.dst.axis or r.src.normal != r.dst.normal or r.src_pitch:
        return []  # (a widening bundle has no straight run: it widens at a corner)
    e = r.src.normal
    ahead = (r.dst.origin[0] - r.src.origin[0]) * e[0] + (r.dst.origin[1] - r.src.origin[1]) * e[1]
    if ahead <= 0:
        return []
    cs, cd = int(r.src.coord(0)), int(r.dst.coord(0))
    off = _land_slots(r)[0]  # lane 0 lands this far into its slots (an owner row)
    # a cut's lanes serve the rows reading the value: its sink slots are those
    first, last = (r.cut_first, r.cut_first) if cuts(r) else (0, r.dst.length - dst_span(r))
    lo = max(cs, cd + first + off)
    hi = min(cs + r.src.length - src_span(r), cd + last + off)
    if hi < lo:
        return []
    cs_ = sorted({lo + (hi - lo) * k // max(1, count - 1) for k in range(count)})
    return [(c - cs, c - off - cd) for c in cs_]


def _land_slots(r: Request) -> tuple[int, int]:
    """Where lane 0 may land, in slots from r's sink slot: on the first of
    the rows its lanes serve or on the last (then its spine runs back);
    landing on owner rows, on the owner row of the first group of rows or
    of the last."""
    if r.owner_pitch and cuts(r):
        return r.owner_offset, dst_span(r) - r.cut_pitch + r.owner_offset
    return 0, dst_span(r) - 1


MAX_CANDIDATES = 96  # pattern routes the router prices per request (the shortest) ...
CANDIDATE_BUDGET = 20_000  # ... and in all, so that time and memory stay linear in edges


# a shape drawn up: (the sink slot it lands on, lane axis at the source, lane 0's path)
_Raw = tuple[int, Vec, list[Vec]]


def candidates(r: Request, fabric: Fabric, corridors: list[int],
               enough: int = MAX_CANDIDATES) -> list[Bundle]:
    """The `enough` shortest valid pattern routes for request `r` (lanes
    inside the grid), shortest first: straight runs wherever the two sides
    face each other (the negotiation picks which rows), then every pattern
    from the request's own slots; detours through corridors only when those
    leave fewer than `enough`. Shapes are drawn up cheaply and checked
    (_finish, the costly part) in order of length until `enough` pass."""
    e, n = r.src.normal, r.dst.normal
    own = (r.src_slot, r.dst_slot)
    raw: list[_Raw] = []
    for a, b in _straight_windows(r):
        r.src_slot, r.dst_slot = a, b
        for flip in (False, True):
            p0, axis, _ = _lane_ends(r, flip)
            for land_end in _land_slots(r):
                raw.append((b, axis, [p0, r.dst.pe(r.dst_slot + land_end)]))
    r.src_slot, r.dst_slot = own
    # the request's own slots, and the source window slid along its share
    sa, sl = r.share.get("src", (0, r.src.length))
    if r.src.owner == HOST:
        sa, sl = 0, r.src.length
    Ls = src_span(r)
    windows = dict.fromkeys([own[0], sa, sa + max(0, sl - Ls), sa + max(0, sl - Ls) // 2])

    def shapes(use_corridors: bool) -> list[_Raw]:
        out: list[_Raw] = []
        for a in windows:
            r.src_slot = a
            for flip in (False, True):
                p0, axis, _ = _lane_ends(r, flip)
                for land_end in _land_slots(r):
                    q = r.dst.pe(r.dst_slot + land_end)
                    across = 1 if e[0] else 0  # corridors run across e's axis
                    near = (_near(corridors, [p0[across], q[across]]) if use_corridors
                            else [])
                    out += [(own[1], axis, path) for path in _shapes(r, p0, q, e, n, near)]
        r.src_slot = own[0]
        return out

    try:
        first = raw + shapes(False)
        found = _shortest_valid(r, fabric, [], first, enough)
        if len(found) < enough:  # every shape of `first` was checked: none again
            done = {(slot, axis, tuple(path)) for slot, axis, path in first}
            found = _shortest_valid(r, fabric, found, [
                sh for sh in shapes(True) if (sh[0], sh[1], tuple(sh[2])) not in done], enough)
    finally:
        r.src_slot, r.dst_slot = own
    return [b for _, _, b in found]


def _shortest_valid(r: Request, fabric: Fabric, kept: list[tuple[int, int, Bundle]],
                    raw: list[_Raw], enough: int) -> list[tuple[int, int, Bundle]]:
    """`kept` (valid routes as (length, order, bundle)) and the valid ones of
    `raw`, distinct, the `enough` shortest; ties in the order drawn up.
    Checks shapes in order of length and stops at `enough`."""
    items: list[tuple[int, int, Bundle | None, _Raw | None]] = [
        (ln, k, b, None) for ln, k, b in kept]
    base = 1 + max((k for _, k, _ in kept), default=-1)
    for k, shape in enumerate(raw):  # repeated waypoints add nothing to the length
        path = shape[2]
        n, (px, py), repeats = 0, path[0], False
        for qx, qy in path[1:]:
            if qx == px and qy == py:
                repeats = True
            n += abs(qx - px) + abs(qy - py)
            px, py = qx, qy
        if repeats:
            path = [p for i, p in enumerate(path) if i == 0 or p != path[i - 1]]
        items.append((n, base + k, None, (shape[0], shape[1], path)))
    items.sort()  # by (length, order): orders are distinct, so nothing else is compared
    out: list[tuple[int, int, Bundle]] = []
    seen: set[tuple] = set()
    lands: dict[int, tuple[Vec, Vec]] = {}  # per sink slot: lane 0's landing PEs (_landing)
    first, last = _land_slots(r)
    for ln, k, b, shape in items:
        if len(out) >= enough:
            break
        if shape is not None:
            slot, axis, path = shape
            if (axis, tuple(path)) in seen:
                continue
            r.dst_slot = slot
            if slot not in lands:
                lands[slot] = (r.dst.pe(slot + first), r.dst.pe(slot + last))
            b = _checked(r, axis, path, fabric, lands[slot])
            if b is None or (len(path) == 1 and not _inside(b, fabric)):
                continue
        assert b is not None
        seen.add((b.axis, b.path))
        out.append((ln, k, b))
    return out


def _length(path: list[Vec]) -> int:
    n = 0
    for (ax, ay), (bx, by) in zip(path, path[1:], strict=False):
        n += abs(bx - ax) + abs(by - ay)
    return n


def _inside(b: Bundle, fabric: Fabric) -> bool:
    """Every lane on the grid, past its landing PE too. A lane's waypoints
    are affine in its index, so the first and the last lane bound them all."""
    dirs = lanes_mod.segment_dirs(b.path)
    offs = lanes_mod.offsets(b.axis, dirs)
    span = (b.lanes - 1) * b.pitch
    if dirs:
        ends = [_lane_path(list(b.path), offs, 0),
                _lane_path(list(b.path), offs, b.lanes - 1, lanes_mod.spacings(b, len(dirs)))]
    else:
        (px, py), (ox, oy) = b.path[0], offs[0]
        ends = [[(px, py)], [(px + span * ox, py + span * oy)]]
    dx, dy = lanes_mod.travel(b.axis, dirs)
    W, H = fabric.width, fabric.height
    for lane in ends:
        lx, ly = lane[-1]
        for x, y in [*lane, (lx + b.reach * dx, ly + b.reach * dy)]:
            if not (0 <= x < W and 0 <= y < H):
                return False
    return True


def _between(a: int, b: int, L: int) -> list[int]:
    """Jog positions strictly between a and b (room for L nested lanes where
    there is room: near each end and in the middle)."""
    lo, hi = (a, b) if a <= b else (b, a)
    if hi - lo < 2:
        return []
    room = min(L, (hi - lo) // 2)
    return sorted({lo + 1 + room, hi - 1 - room, (lo + hi) // 2} & set(range(lo + 1, hi)))


def _shapes(r: Request, p0: Vec, q: Vec, e: Vec, n: Vec,
            corridors: list[int]) -> list[list[Vec]]:
    """Lane-0 paths from p0 (leaving along e) to q (arriving along n), not
    yet checked (_finish)."""
    L = src_span(r)  # the bus is as wide as its source span: nested lanes need that room
    out: list[list[Vec]] = []
    ea = 0 if e[0] else 1  # the coordinate that moving along e changes
    oa = 1 - ea
    se = e[ea]

    def pt(along: int, across: int) -> Vec:  # (coordinate along e's axis, the other)
        return (along, across) if ea == 0 else (across, along)

    a0, qa = p0[oa], q[oa]
    steps = (1 + L, 2 + 2 * L, 3 + 3 * L, 2)
    if e == n:
        out.append([p0, q])  # straight
        for j in _between(p0[ea], q[ea], L):  # a Z: one jog between the ends
            out.append([p0, pt(j, p0[oa]), pt(j, q[oa]), q])
        for c in corridors:  # around: ahead, a corridor across, back behind the sink, in
            for t1 in steps:
                j1 = p0[ea] + se * t1
                for t2 in steps:
                    j2 = q[ea] - se * t2
                    out.append([p0, (j1, a0), (j1, c), (j2, c), (j2, qa), q] if ea == 0 else
                               [p0, (a0, j1), (c, j1), (c, j2), (qa, j2), q])
    elif e == (-n[0], -n[1]):  # a U: out, across, back in (a jog beyond both ends)
        edge = max(p0[ea], q[ea]) if se > 0 else min(p0[ea], q[ea])
        for t in steps:
            j = edge + se * t
            out.append([p0, pt(j, p0[oa]), pt(j, q[oa]), q])
    else:  # e and n cross: an L, or out, across, along, in
        na = oa
        sn = n[na]
        out.append([p0, pt(q[ea], p0[oa]), q])
        js = [p0[ea] + se * t for t in steps] + _between(p0[ea], q[ea], L)
        cs = [q[na] - sn * t for t in steps] + list(corridors)
        qe = q[ea]
        for j in js:
            for c in cs:
                out.append([p0, (j, a0), (j, c), (qe, c), q] if ea == 0 else
                           [p0, (a0, j), (c, j), (c, qe), q])
    return out
