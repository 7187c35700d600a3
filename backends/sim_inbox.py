"""PE inboxes: which lane of which bundle delivered into which PE's core.

Why: the simulator is a proof, so a PE may compute only from what reached
it. The routers (sim_routes) check every lane from its source to its sink;
this module turns the route table into, per kernel and delivered value, the
lane each PE's core received (`Delivery.lane_at`, offsets of the kernel's
unrotated rectangle; a bundle's lanes never share a PE, so a PE receives at
most one lane of it) and the slice that lane carries (`lane_slices`).

A kernel's executor (sim_exec) declares the window of each input a PE
holds (a conv or pooling row group's input rows plus its halo, a matmul
row's reduction block, ...) and reads only inside it; reading outside
raises `SimError` naming the PE, the element and the lane that carried it.

The window against the inbox (`check_windows`): a cut bundle's lanes carry
the boxes the sink's kind declares per PE row (at pitch k, the union of the
k rows' a lane and its spine serve), so each PE's window must lie in the
box of the lane its core received — anything else is a SimError
naming the PE, the element and the lane. A bundle cut "halo" carries its
rows' cores, and each PE also holds the halo its partner PE passed it
along its column (`Delivery.held`: wsec.ir.halo.exchange, in route order:
a PE whose lane never arrived passes nothing on, so the rows it should
feed read rows that never arrived). A flat bundle's lanes carry
contiguous ranges of the flattened value, which in general do not hold a
PE's window: those elements would have to be forwarded inside the
rectangle; the simulator counts the PEs that need it (`forwarded_pes`)
or, strict, fails at the first. Where the route relays them (route
option `relay`: wsec.ir.relay) each PE also holds the pieces of its row's
box the relay brought it (`relay_reach`: from the lanes that arrived and
the relay routes configured), its window checked against its row's box;
a read no lane and no relay brought is a SimError.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wsec.ir.fabric import PORT_BITS
from wsec.ir.halo import Halo, exchange
from wsec.ir.lanes import boxes_to_view, lane_of_element, lane_slices
from wsec.ir.relay import Relay, count_below, hops, range_counts, reached, relay_colors

from .format import NO_BUNDLE, Program, type_shape
from .sim_base import SimError, edge_name

_RAMP = PORT_BITS["RAMP"]
_PB = PORT_BITS


@dataclass
class Delivery:
    """One value's bundle into one kernel."""

    value: str
    edge: int  # -1: a weight-streaming phase's holding (sim_stream_pe.held), no route
    bundle: int
    numel: int
    slices: np.ndarray  # (lanes, 2) [start, stop) of the flattened value
    lane_at: np.ndarray  # [uh, uw]: lane delivered into the PE's core, -1 for none
    shape: tuple[int, ...] = ()
    boxes: np.ndarray | None = None  # a cut bundle: (lanes, 2, ndim) box per lane
    # the shape the boxes are over: the value's (None) or a view splitting one of
    # its axes (Program.lane_view: a grouped conv's channels as (G, C/G))
    view: tuple[int, ...] | None = None
    # a flat bundle: [uh, uw] True where a PE read outside its lane, over the
    # checks of one kernel run (reset by sim_exec.run_kernel)
    outside: np.ndarray | None = None
    # a flat bundle's PE reading outside its lane is a SimError, as a cut
    # bundle's is (`wsec run --strict`), instead of a count of forwarded PEs
    strict: bool = False
    # a bundle cut "halo": how its rows exchange (Program.halo), and per PE
    # [uh, uw, 2, ndim] the box it holds after the exchange (its lane's box
    # and the halo rows from its partner PE; empty: it holds nothing)
    halo: Halo | None = None
    held: np.ndarray | None = None
    # a flat bundle whose sink's PEs relay their rows' boxes (wsec.ir.relay): the relay,
    # per PE row and piece whether the row's PE in the piece's column holds it, and per
    # PE the furthest columns West and East whose pieces reach it along its row (from
    # what arrived: `relay_reach`)
    relay: Relay | None = None
    reach: np.ndarray | None = None
    west: np.ndarray | None = None
    east: np.ndarray | None = None

    @property
    def lanes(self) -> int:
        return int(self.slices.shape[0])

    def lane_of(self, flat: np.ndarray | int) -> np.ndarray:
        """The lane carrying each flat element (a cut bundle: the first lane
        whose box holds it)."""
        if self.boxes is not None:
            return np.asarray(lane_of_element(self.boxes, unravel(int(flat), self.box_shape)))
        return np.searchsorted(self.slices[:, 1], np.asarray(flat), side="right")

    @property
    def box_shape(self) -> tuple[int, ...]:
        """The shape the lane boxes are over (the value's, or its view)."""
        return window_shape(self.shape) if self.view is None else self.view

    def landing_pes(self) -> int:
        return int((self.lane_at >= 0).sum())


def unrotated_offsets(p: Program, ki: int, x: np.ndarray, y: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(px, py) offsets inside kernel ki's unrotated rectangle of grid PEs."""
    k = p.kernels[ki]
    if k.rotated:
        return y - k.rect.y, x - k.rect.x
    return x - k.rect.x, y - k.rect.y


def grid_pe(p: Program, ki: int, px: int, py: int) -> tuple[int, int]:
    k = p.kernels[ki]
    return (k.rect.x + py, k.rect.y + px) if k.rotated else (k.rect.x + px, k.rect.y + py)


def deliveries(p: Program, strict: bool = False) -> list[dict[str, Delivery]]:
    """Per kernel (program order): value -> its Delivery, from the route
    table (vectorised over the entries of each bundle); `strict`: a PE of a
    flat bundle reading outside its lane raises (Delivery.strict). The
    ribbons of one cut (several bundles of a value into one kernel, each
    carrying lanes lane0.. of its sink's: wsec.ir.lanes) are one Delivery:
    a PE's inbox is the union of the lanes their routes delivered, each
    known by its lane of the sink (lane0 + its lane in its bundle) and the
    box its bundle's slice record gives it."""
    out: list[dict[str, Delivery]] = [{} for _ in p.kernels]
    r = p.routes
    if not len(p.bundles) or not r.size:
        return out
    core = (r["tx"].astype(np.int64) & _RAMP) != 0
    lanes = r["bundle"] != NO_BUNDLE
    sel = np.flatnonzero(core & lanes)
    by_bundle = r["bundle"][sel].astype(np.int64)
    order = np.argsort(by_bundle, kind="stable")
    sel, by_bundle = sel[order], by_bundle[order]
    cuts = np.searchsorted(by_bundle, np.arange(len(p.bundles) + 1))
    for bi, b in enumerate(p.bundles):
        ki = int(b["sink"])
        if ki < 0:
            continue
        k = p.kernels[ki]
        e = p.edges[int(b["edge"])]
        mine = sel[cuts[bi]:cuts[bi + 1]]
        uw, uh = k.unrotated_shape
        px, py = unrotated_offsets(p, ki, r["x"][mine].astype(np.int64),
                                   r["y"][mine].astype(np.int64))
        inside = (px >= 0) & (px < uw) & (py >= 0) & (py < uh)
        if not inside.all():  # sim_routes reports misrouted lanes first; never silent
            i = int(np.flatnonzero(~inside)[0])
            raise SimError(f"lane {int(r['lane'][mine[i]])} of {edge_name(p, int(b['edge']))} "
                           f"is delivered outside kernel '{k.name}'")
        lane = r["lane"][mine].astype(np.int32) + np.int32(b["lane0"])
        shape = tuple(type_shape(p.info["values"][e.value]))
        numel = int(np.prod(shape, dtype=np.int64))
        boxes = p.lane_boxes(bi)
        have = out[ki].get(e.value)
        if have is not None and have.edge == int(b["edge"]) and have.boxes is not None \
                and boxes is not None:  # a ribbon of a cut already delivered
            _merge(p, have, bi, boxes, py, px, lane)
            continue
        at = np.full((uh, uw), -1, np.int32)
        at[py, px] = lane
        total = int(b["sink_lanes"]) or int(b["lanes"])
        if boxes is not None and total != int(b["lanes"]):  # the sink's lanes, filled per ribbon
            full = np.zeros((total, *boxes.shape[1:]), np.int64)
            full[int(b["lane0"]):int(b["lane0"]) + boxes.shape[0]] = boxes
            boxes = full
        d = Delivery(e.value, int(b["edge"]), bi, numel, lane_slices(numel, total), at, shape,
                     boxes, _view(p.lane_view(bi), shape) if boxes is not None else None,
                     strict=strict)
        halo = p.halo(bi)
        if halo is not None and d.boxes is not None:
            d.halo = halo
        out[ki][e.value] = d
    from .relays import program_relays

    for bi, rl in program_relays(p).items():  # the rows' relays, from what arrived
        ki = int(p.bundles[bi]["sink"])
        d = out[ki].get(p.edges[int(p.bundles[bi]["edge"])].value)
        if d is not None and d.bundle == bi:
            d.relay = rl  # its executor declares windows over the relay's view, as a cut's
            d.view = _view(rl.view, d.shape)
            d.reach, d.west, d.east = relay_reach(p, ki, rl, d.lane_at)
    for got in out:  # the rows' exchange, once every ribbon's cores are in
        for d in got.values():
            if d.halo is not None:
                own = np.where((d.lane_at >= 0)[:, :, None, None],
                               d.boxes[np.maximum(d.lane_at, 0)], 0)
                d.held = exchange(own, d.halo)[0]
    return out


def relay_reach(p: Program, ki: int, rl: Relay, lane_at: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """wsec.ir.relay.reached for the relay `rl` into kernel ki: from the lanes
    that arrived (`lane_at`) and the relay routes the router table holds
    (wsec.ir.relay.hops), per row which pieces its PE in each piece's column
    holds, and per PE the furthest columns West and East whose pieces reach
    it along its row."""
    k = p.kernels[ki]
    uw, uh = k.unrotated_shape
    cols = np.asarray(relay_colors(p.target), np.int64)
    rxa = np.zeros((uh, uw, cols.size), np.int64)
    txa = np.zeros((uh, uw, cols.size), np.int64)
    r = p.routes
    sel = np.flatnonzero((r["bundle"] == NO_BUNDLE) & (r["lane"] == ki)
                         & np.isin(r["color"].astype(np.int64), cols))
    if sel.size:
        px, py = unrotated_offsets(p, ki, r["x"][sel].astype(np.int64),
                                   r["y"][sel].astype(np.int64))
        ci = np.searchsorted(cols, r["color"][sel].astype(np.int64))
        rx, tx = r["rx"][sel].astype(np.int64), r["tx"][sel].astype(np.int64)
        if k.rotated:
            rx, tx = _unrotate(rx), _unrotate(tx)
        on = (px >= 0) & (px < uw) & (py >= 0) & (py < uh)
        rxa[py[on], px[on], ci[on]] = rx[on]
        txa[py[on], px[on], ci[on]] = tx[on]
    return reached(rl.plan, lane_at, *hops(rxa, txa))


def _unrotate(v: np.ndarray) -> np.ndarray:
    """Port bits of a rotated kernel's grid routes in its unrotated frame."""
    from wsec.ir.templates import _ROTATE

    back = {g: u for u, g in _ROTATE.items()}
    return (v & _RAMP) | sum(np.where((v & g) != 0, u, 0) for g, u in back.items())


def _merge(p: Program, d: Delivery, bi: int, boxes: np.ndarray, py: np.ndarray,
           px: np.ndarray, lane: np.ndarray) -> None:
    """Ribbon `bi`'s lanes (`boxes`) into the Delivery of its cut: its boxes at its
    lanes of the sink, its PEs' lanes. A PE two lanes of one cut reach
    would hold a union no single lane box describes: never routed (the
    loader checks ribbons serve each row once), an error if it is."""
    b = p.bundles[bi]
    assert d.boxes is not None
    a = int(b["lane0"])
    d.boxes[a:a + boxes.shape[0]] = boxes
    taken = d.lane_at[py, px] >= 0
    if taken.any():
        i = int(np.flatnonzero(taken)[0])
        x, y = grid_pe(p, int(b["sink"]), int(px[i]), int(py[i]))
        raise SimError(f"PE ({x}, {y}) of kernel '{p.kernels[int(b['sink'])].name}' receives "
                       f"lanes {int(d.lane_at[py[i], px[i]])} and {int(lane[i])} of "
                       f"{edge_name(p, d.edge)} (bundles #{d.bundle} and #{bi}): one cut's "
                       "ribbons deliver each PE one lane")
    d.lane_at[py, px] = lane


def _view(view: tuple[int, ...], shape: tuple[int, ...]) -> tuple[int, ...] | None:
    return None if tuple(view) == tuple(shape) else tuple(view)


def check_windows(p: Program, ki: int, d: Delivery, need: np.ndarray) -> int:
    """PE row py of kernel ki reads the box need[py] ((uh, 2, ndim) [start,
    stop) of d's value; empty boxes read nothing) on every PE of the row,
    or, where the PEs of a row read different boxes (a grouped or spread
    layout), PE (px, py) reads need[py, px] ((uh, uw, 2, ndim)). Where the
    bundle is cut over a view of the value (Delivery.view), the windows
    may be boxes of that view; boxes of the value are tested as the
    smallest box of the view that holds them (wsec.ir.lanes.boxes_to_view).
    A cut bundle must have delivered it into each PE's core (else SimError
    naming the PE, the first missing element and the lane carrying it);
    for a flat bundle, returns how many PEs read outside their lane's range
    (elements the rectangle would have to forward)."""
    return int(forwarded(p, ki, d, need).sum())


def check_inputs(p: Program, ki: int, needs: list[tuple[Delivery, np.ndarray]]) -> int:
    """check_windows over several inputs of one kernel: how many PEs read
    an element of any of them their lane did not bring (each PE once)."""
    uw, uh = p.kernels[ki].unrotated_shape
    bad = np.zeros((uh, uw), bool)
    for d, need in needs:
        bad |= forwarded(p, ki, d, need)
    return int(bad.sum())


def forwarded(p: Program, ki: int, d: Delivery, need: np.ndarray) -> np.ndarray:
    """check_windows' test: [uh, uw] True where a PE of a flat bundle reads
    outside its lane's range (a cut bundle: SimError at the first such PE)."""
    uh, uw = d.lane_at.shape
    shape = window_shape(d.shape)
    if not d.shape and need.shape[-1] == 0:  # boxes of the scalar itself: every PE reads it
        need = np.broadcast_to(np.array([[0], [1]], np.int64), (*need.shape[:-2], 2, 1))
    if need.ndim == 3:
        need = np.broadcast_to(need[:, None], (uh, uw, *need.shape[1:]))
    if need.shape[:2] != (uh, uw):
        raise SimError(f"kernel '{p.kernels[ki].name}' ({p.kernels[ki].kind}): its executor "
                       f"declares windows for {need.shape[1]}x{need.shape[0]} PEs, the "
                       f"rectangle has {uw}x{uh}")
    reads = (need[:, :, 1, :] > need[:, :, 0, :]).all(axis=2)
    if d.view is None and len(shape) != need.shape[-1]:
        raise SimError(f"kernel '{p.kernels[ki].name}' ({p.kernels[ki].kind}): its executor "
                       f"declares windows of {need.shape[-1]} dims for %{d.value} "
                       f"{list(d.shape)}, whose lanes carry it flat")
    if d.view is not None and need.shape[-1] != len(d.view):  # the windows in the view
        need = boxes_to_view(need, d.shape, d.view)
    lo, hi = need[:, :, 0, :], need[:, :, 1, :]  # [uh, uw, nd]
    lane = d.lane_at
    got = lane >= 0
    li = np.maximum(lane, 0)
    if d.held is not None:  # its lane's core and the halo its partner passed on
        blo, bhi = d.held[:, :, 0, :], d.held[:, :, 1, :]
        got = (bhi > blo).all(axis=2)
        ok = ((blo <= lo) & (hi <= bhi)).all(axis=2)
    elif d.boxes is not None:
        blo, bhi = d.boxes[li, 0, :], d.boxes[li, 1, :]  # [uh, uw, nd]
        ok = ((blo <= lo) & (hi <= bhi)).all(axis=2)
    else:
        over = d.box_shape  # a relayed bundle's windows may be over its view (same order)
        dims = np.asarray(over)
        first = np.ravel_multi_index(tuple(np.minimum(lo, dims - 1).reshape(-1, dims.size).T),
                                     over).reshape(uh, uw)
        last = np.ravel_multi_index(tuple(np.maximum(hi - 1, 0).reshape(-1, dims.size).T),
                                    over).reshape(uh, uw)
        ok = (d.slices[li, 0] <= first) & (last < d.slices[li, 1])
    bad = reads & ~(got & ok)
    if d.relay is not None and bad.any():  # what the rows' relay brought them
        return _relayed(p, ki, d, need, reads, bad, li, got)
    if d.boxes is None:
        if d.strict and bad.any():
            py, px = (int(v) for v in np.argwhere(bad)[0])
            if not got[py, px]:
                elem, held = first[py, px], "no lane of it"
            else:
                s0, s1 = (int(v) for v in d.slices[li[py, px]])
                elem = first[py, px] if first[py, px] < s0 else last[py, px]
                held = f"lane {int(lane[py, px])}'s elements [{s0}, {s1})"
            raise read_error(p, ki, px, py, d.value, int(elem), held, d)
        d.outside = bad if d.outside is None else d.outside | bad
        return bad
    if bad.any():
        py, px = (int(v) for v in np.argwhere(bad)[0])
        what = "its row" if d.edge < 0 else f"lane {int(lane[py, px])}"
        box = d.held[py, px] if d.held is not None else d.boxes[max(0, int(lane[py, px]))]
        held = (f"{what}'s box {_box(box)}" if got[py, px] else "no lane")
        if d.halo is not None and got[py, px]:
            held = (f"{'lane ' + str(int(lane[py, px])) if lane[py, px] >= 0 else 'no lane'}"
                    f"'s core with the halo from PE row {py + d.halo.period}: "
                    f"{_box(box)}")
        elif d.halo is not None:
            held = "no lane, and no halo from PE row " + str(py + d.halo.period)
        elem = _first_missing(need[py, px], box if got[py, px] else None)
        flat = int(np.ravel_multi_index(tuple(elem), d.box_shape))
        raise read_error(p, ki, px, py, d.value, flat, held, d)
    return bad


def _relayed(p: Program, ki: int, d: Delivery, need: np.ndarray, reads: np.ndarray,
             bad: np.ndarray, li: np.ndarray, got: np.ndarray) -> np.ndarray:
    """forwarded() for a relayed flat bundle's PEs reading outside their
    lane: each window must lie in its row's relayed box, and every piece
    its elements come from must have reached the PE (its own lane, or
    through the relay: Delivery.reach in the piece's column, Delivery.west
    and .east along the row). Any other read is a SimError at the PE,
    naming the element and what should have brought it; returns the
    (empty) forwarded PEs."""
    rl, reach, west, east = d.relay, d.reach, d.west, d.east
    assert rl is not None and reach is not None and west is not None and east is not None
    pl = rl.plan
    uh, uw = d.lane_at.shape
    view = rl.view
    win = need if need.shape[-1] == len(view) else boxes_to_view(need, d.shape, view)
    box = rl.boxes[:, None]  # (uh, 1, 2, nd)
    inside = ((box[:, :, 0] <= win[..., 0, :]) & (win[..., 1, :] <= box[:, :, 1])).all(axis=-1)
    out = bad & ~inside
    if out.any():
        py, px = (int(v) for v in np.argwhere(out)[0])
        elem = _first_missing(win[py, px], rl.boxes[py])
        flat = int(np.ravel_multi_index(tuple(elem), view))
        raise read_error(p, ki, px, py, d.value, flat,
                         f"its lane's range and the box {_box(rl.boxes[py])} its row's relay "
                         "brings (the executor reads outside its kind's input_cut)", d)
    # a row whose PEs hold every piece its box takes: its PEs read anything in the box
    whole = (reach | ~pl.need).all(axis=1)[:, None] & (west == 0) & (east == uw - 1)
    for py, px in np.argwhere(bad & ~whole):  # exact: the pieces its window really reads
        py, px = int(py), int(px)
        n = range_counts(win[py, px][None], view, pl.start, pl.stop)[0]
        held = (pl.lane == d.lane_at[py, px]) | (reach[py] & (west[py, px] <= pl.col)
                                                  & (pl.col <= east[py, px]))
        short = np.flatnonzero((n > 0) & ~held)
        if not short.size:
            continue
        q = int(short[0])
        lane, col = int(pl.lane[q]), int(pl.col[q])
        s0, s1 = int(pl.start[q]), int(pl.stop[q])
        a, b = int(pl.first[q]), int(pl.last[q])
        src = b if b < py else a
        if d.lane_at[src, col] != lane and not reach[py, q]:
            why = f"lane {lane} never reached PE offset ({col}, {src})"
        elif not reach[py, q]:
            why = f"the relay along PE column {col} between PE rows {src} and {py} is not routed"
        else:
            why = f"the relay along PE row {py} from column {col} is not routed"
        raise read_error(p, ki, px, py, d.value, _first_in_range(win[py, px], view, s0, s1),
                         f"its row's relayed box {_box(rl.boxes[py])} without lane {lane}'s "
                         f"elements [{s0}, {s1}) ({why})", d)
    return np.zeros((uh, uw), bool)


def _first_in_range(box: np.ndarray, shape: tuple[int, ...], s0: int, s1: int) -> int:
    """The first flat element of `box` in [s0, s1) (one exists)."""
    c = count_below(box[None], shape, np.array([s0]))[0, 0]
    ext = np.maximum(box[1] - box[0], 0)
    idx = np.unravel_index(int(c), tuple(int(v) for v in ext))
    return int(np.ravel_multi_index(tuple(int(a) + int(i) for a, i in zip(box[0], idx,
                                                                           strict=True)), shape))


def window_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape a value's windows are boxes of: its own, a scalar's as one
    element (1,), so a PE reading a scalar declares the box [0, 1) and one
    reading nothing an empty box, and the check tells them apart (a PE
    reading a scalar its core received no lane of is an error like any
    other)."""
    return tuple(shape) or (1,)


def point_hulls(coords: np.ndarray, owner: np.ndarray, n: int) -> np.ndarray:
    """(n, 2, ndim): per PE index 0..n-1, the bounding box of the elements
    (coords: (ndim, m) indices into a value) it reads (owner: (m,) PE index
    of each read; a PE reading nothing: an all-zero box). Vectorised: the
    reads sorted by PE, each PE's run reduced at once."""
    coords = np.asarray(coords, np.int64)
    owner = np.asarray(owner, np.int64).reshape(-1)
    nd = coords.shape[0]
    out = np.zeros((n, 2, nd), np.int64)
    if not owner.size or not nd:
        return out
    if (np.diff(owner) < 0).any():
        order = np.argsort(owner, kind="stable")
        owner, coords = owner[order], coords[:, order]
    starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
    pe = owner[starts]
    out[pe, 0] = np.minimum.reduceat(coords, starts, axis=1).T
    out[pe, 1] = np.maximum.reduceat(coords, starts, axis=1).T + 1
    return out


def union_boxes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The bounding box of each pair of boxes (..., 2, ndim); an empty box
    adds nothing."""
    ea = ~(a[..., 1, :] > a[..., 0, :]).all(axis=-1)
    eb = ~(b[..., 1, :] > b[..., 0, :]).all(axis=-1)
    lo = np.minimum(a[..., 0, :], b[..., 0, :])
    hi = np.maximum(a[..., 1, :], b[..., 1, :])
    out = np.stack([lo, hi], axis=-2)
    out = np.where(ea[..., None, None], b, out)
    return np.where(eb[..., None, None], a, out)


def pe_windows(boxes: np.ndarray, lin: np.ndarray, uw: int, uh: int) -> np.ndarray:
    """(uh, uw, 2, ndim) windows for check_windows: box i ((n, 2, ndim)) on
    the PE at linear offset lin[i] (py * uw + px) of the unrotated
    rectangle; PEs no box lands on read nothing."""
    need = np.zeros((uh * uw, *boxes.shape[1:]), np.int64)
    lin = np.asarray(lin, np.int64).reshape(-1)
    on = (lin >= 0) & (lin < uh * uw)
    need[lin[on]] = boxes[on]
    return need.reshape(uh, uw, *boxes.shape[1:])


def _box(b: np.ndarray) -> str:
    return "[" + ", ".join(f"{int(a)}:{int(c)}" for a, c in zip(b[0], b[1], strict=True)) + "]"


def _first_missing(need: np.ndarray, box: np.ndarray | None) -> list[int]:
    """An element of box `need` outside `box` (its first corner outside)."""
    lo = need[0].copy()
    if box is None:
        return [int(v) for v in lo]
    for dim in range(lo.size):
        if need[0, dim] < box[0, dim]:
            return [int(v) for v in lo]
        if need[1, dim] > box[1, dim]:
            lo[dim] = box[1, dim]
            return [int(v) for v in lo]
    return [int(v) for v in lo]


def unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(v) for v in np.unravel_index(int(flat), shape)] if shape else []


def read_error(p: Program, ki: int, px: int, py: int, value: str, flat: int,
               held: str, d: Delivery | None) -> SimError:
    """The error of PE (px, py) of kernel ki reading element `flat` of
    `value` outside the window it holds (`held` describes that window)."""
    k = p.kernels[ki]
    shape = tuple(type_shape(p.info["values"][value])) if value in p.info["values"] else ()
    x, y = grid_pe(p, ki, px, py)
    if d is None:
        how = "no lane carries it to the kernel"
    elif d.edge < 0:  # a weight-streaming phase: its rows hold what was moved in
        row = int(d.lane_of(flat))
        how = f"PE row {row} of the phase holds it" if row >= 0 else "no row of the phase holds it"
    else:
        how = f"lane {int(d.lane_of(flat))} of {edge_name(p, d.edge)} carries it"
    return SimError(f"kernel '{k.name}' ({k.kind}): PE ({x}, {y}) (offset ({px}, {py})) reads "
                    f"%{value}{unravel(flat, shape)}, which never arrived there ({how}; the PE "
                    f"holds {held})")
