"""Relay: a kernel's PE rows pass each other the boxes a flat bundle left them short of.

Why: a bundle routed FLAT (lanes carrying contiguous ranges of the
flattened value, each multicast along its PE row) brings every element
into the sink's rectangle once, but a PE row's box (KernelKind.input_cut:
what a cut lane would have brought it) is in general not its lane's range:
a conv row group's input rows of every channel, a matmul row's reduction
block. Where the router could not cut the bundle (no corner column, no
pitch, siblings that need one multicast path...), the rows must take the
rest from the rows whose lanes brought it, and that is data movement like
any other: routed, counted in the link loads, recorded in the binary and
proven by the simulator (issue 12). Modelled on the halo exchange
(wsec.ir.halo), on its three colors:

- `plan` says who sends what. Row r needs box_r; the lane landing on row
  r's CARRIER PE (column `carrier` of the kernel's unrotated rectangle,
  every flat lane reaching it: `lane_rows`) brought one slice. Each element
  of box_r that row r's lane did not bring travels from the rows its lane
  landed on (a run of rows: a flat lane's one row, or a pitched lane's
  spine) along the carrier column, hop by hop from core to core, down to
  the furthest row below that needs it and up to the furthest above, and
  every carrier on the way multicasts it along its row. Counted per
  element, not from hulls (an NCHW box of every channel and a few rows has
  a flat hull of nearly the whole value): a carrier sends an element once
  however many rows beyond it need it (`sends`: the carrier's one stream),
  so the load per link is the elements crossing it, a multicast once.
  Rows no lane lands on receive everything they read through the relay.
- `entries` are the routes: each carrier with something to send has ONE
  route from its core on color c(y) = colors[y % 3], out North, South and
  along its row both ways (the PEs of the row take it into their cores and
  pass it on); the carriers above and below take it from their South and
  North ports into their cores on that color. At a carrier the colors of
  its own stream and its two neighbours' differ (y - 1, y, y + 1 mod 3), so
  three colors carry any height, and a second relayed bundle into the same
  kernel rides the same routes (`merge`: one relay per kernel, the streams
  summed): the halo exchange's colors (wsec.ir.halo.halo_colors), which a
  kernel exchanging halos keeps for them (it takes no relay).
  A stream goes both ways and along the row whole, so a link may carry
  elements the rows beyond it do not read (the price of three colors
  where a stream per direction would take five); the link loads count it
  (wsec.ir.metrics.relay_arrays), so realised/bound shows what a relay
  costs, and the router keeps cutting where a cut fits (it is cheaper).
- `reached` is what arrived, for the simulator: from the lanes that
  actually reached each carrier and the relay routes actually configured,
  which lanes' elements of its box each row holds; a lane that never
  arrived, a hop or a row route missing, leaves the rows that depended on
  it without those elements, and reading one is a SimError at the PE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fabric import PORT_BITS

_N, _E, _S, _W, _RAMP = (PORT_BITS[p] for p in ("N", "E", "S", "W", "RAMP"))


@dataclass
class Plan:
    """How a flat bundle's sink rows relay their boxes (`plan`)."""

    first: np.ndarray  # (L,) the first PE row each lane lands on (carrier column), -1: none
    last: np.ndarray  # (L,) its last
    need: np.ndarray  # (R, L) bool: row r takes lane l's elements of its box through the relay
    sends: np.ndarray  # (R,) elements row r's carrier sends (its one stream)


def count_below(boxes: np.ndarray, shape: tuple[int, ...], x: np.ndarray) -> np.ndarray:
    """(R, n): per box ((R, 2, nd) [start, stop) over `shape`) the number of
    its elements whose flat index is below each x ((n,) flat indices, up to
    numel): an element below x has its first digit differing from x's
    smaller, the digits before it equal (x's digits inside the box there)."""
    shape = tuple(int(s) for s in shape)
    numel = int(np.prod(shape, dtype=np.int64))
    x = np.asarray(x, np.int64)
    lo, hi = boxes[:, 0, :][:, None, :], boxes[:, 1, :][:, None, :]  # (R, 1, nd)
    ext = np.maximum(boxes[:, 1, :] - boxes[:, 0, :], 0)  # (R, nd)
    size = np.prod(ext, axis=1)
    d = np.stack(np.unravel_index(np.minimum(x, numel - 1), shape), axis=-1)[None]  # (1, n, nd)
    tail = np.ones(ext.shape, np.int64)  # elements of the box per step of each dim
    for i in range(len(shape) - 2, -1, -1):
        tail[:, i] = tail[:, i + 1] * ext[:, i + 1]
    inside = (lo <= d) & (d < hi)
    prefix = np.cumprod(np.concatenate([np.ones((*inside.shape[:2], 1), bool),
                                        inside[..., :-1]], axis=-1), axis=-1).astype(bool)
    below = np.clip(np.minimum(d, hi) - lo, 0, None) * tail[:, None, :]
    out = (prefix * below).sum(axis=-1)
    return np.where(x[None, :] >= numel, size[:, None], out)


def lane_counts(boxes: np.ndarray, shape: tuple[int, ...], slices: np.ndarray) -> np.ndarray:
    """(R, L): the elements of each row's box in each lane's flat range."""
    edges = np.concatenate([slices[:, 0], slices[-1:, 1]])
    c = count_below(boxes, shape, edges)
    return c[:, 1:] - c[:, :-1]


def lane_rows(lane_at: np.ndarray, lanes: int) -> tuple[int, np.ndarray] | None:
    """(carrier column, (R,) the lane each PE row's carrier received, -1
    none) for a flat bundle's `lane_at` ([uh, uw] lane per PE, -1 none):
    the first column every lane lands in with each lane on one run of
    rows; None where no column has that (lanes running along columns)."""
    uh, uw = lane_at.shape
    for c in range(uw):
        own = lane_at[:, c]
        got = own[own >= 0]
        if np.unique(got).size != lanes:
            continue
        first, last = _blocks(own, lanes)
        if ((last - first + 1) == np.bincount(got, minlength=lanes)).all():
            return c, own.astype(np.int64)
    return None


def full_rows(lane_at: np.ndarray, own: np.ndarray) -> np.ndarray:
    """(R,): the rows whose every PE received the lane their carrier did."""
    return (lane_at == np.asarray(own)[:, None]).all(axis=1) & (np.asarray(own) >= 0)


def _blocks(own: np.ndarray, lanes: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(own.size)
    on = own >= 0
    first = np.full(lanes, own.size, np.int64)
    last = np.full(lanes, -1, np.int64)
    np.minimum.at(first, own[on], rows[on])
    np.maximum.at(last, own[on], rows[on])
    none = last < 0
    first[none] = -1
    return first, last


def plan(boxes: np.ndarray, shape: tuple[int, ...], slices: np.ndarray, own: np.ndarray,
         full: np.ndarray | None = None) -> Plan | None:
    """The relay of a flat bundle (lanes `slices` over the flattened value,
    lane `own[r]` at row r's carrier, a run of rows each) into rows reading
    `boxes` ((R, 2, nd) over `shape`, the value or a reshape of it: flat
    order is the value's). `full` (R,): the rows whose every PE received
    their carrier's lane (default all); a row whose lane reaches only some
    of its PEs takes its own lane's elements of its box along the row from
    its carrier too (`need`, `sends`). None where some row reads an element
    of a lane that lands on no row (nothing to relay it from)."""
    shape = tuple(int(s) for s in shape)
    R, L = boxes.shape[0], slices.shape[0]
    numel = int(np.prod(shape, dtype=np.int64))
    first, last = _blocks(np.asarray(own), L)
    cnt = lane_counts(boxes, shape, slices)  # (R, L)
    mine = np.zeros((R, L), bool)
    full = np.ones(R, bool) if full is None else np.asarray(full, bool)
    mine[np.flatnonzero(own >= 0), own[own >= 0]] = True
    need = (cnt > 0) & ~(mine & full[:, None])
    if (need & (first < 0)[None, :]).any():
        return None
    # per element the furthest rows either way that read it (every row: an element read
    # only inside its lane's rows moves nowhere)
    hi = np.full(shape, -1, np.int32)
    lo = np.full(shape, R, np.int32)
    live = (boxes[:, 1] > boxes[:, 0]).all(axis=1)
    for r in np.flatnonzero(live):
        hi[tuple(slice(int(a), int(b)) for a, b in zip(boxes[r, 0], boxes[r, 1], strict=True))] = r
    for r in np.flatnonzero(live)[::-1]:
        lo[tuple(slice(int(a), int(b)) for a, b in zip(boxes[r, 0], boxes[r, 1], strict=True))] = r
    hi, lo = hi.reshape(-1), lo.reshape(-1)
    lane = np.repeat(np.arange(L), slices[:, 1] - slices[:, 0])
    a, b = first[lane], last[lane]
    down = (a >= 0) & (hi > b)
    up = (a >= 0) & (lo < a) & (lo < R)
    diff = np.zeros(R + 1, np.int64)
    # a carrier sends each element once: the lane's rows at the ends of its run (one row:
    # once), the rows beyond on the way to the furthest reader
    np.add.at(diff, b[down], 1)
    np.add.at(diff, hi[down] + 1, -1)
    np.add.at(diff, lo[up], 1)
    np.add.at(diff, a[up] + 1, -1)
    both = down & up & (a == b)
    np.add.at(diff, a[both], -1)
    np.add.at(diff, a[both] + 1, 1)
    del numel
    sends = np.cumsum(diff)[:R]
    part = np.flatnonzero(~full & (own >= 0))  # along the row: its own lane's part of its box
    sends[part] += cnt[part, own[part]]
    return Plan(first, last, need, sends)


def entries(uw: int, uh: int, carrier: int, send: np.ndarray, colors: tuple[int, ...]
            ) -> tuple[np.ndarray, np.ndarray]:
    """(m, 5) router entries (px, py, color, rx, tx) of a relay, in offsets of
    the kernel's unrotated rectangle, and per entry the PE row whose stream
    it carries. Row y's carrier (where send[y]) sends its stream from its
    core on colors[y % 3] North, South and along its row; the carriers of
    rows y + 1 and y - 1 take it into their cores; the PEs of row y take it
    into theirs and pass it on along the row."""
    c = int(carrier)
    ys = np.flatnonzero(np.asarray(send, bool))
    if not ys.size:
        return np.zeros((0, 5), np.int64), np.zeros(0, np.int64)
    col = np.asarray(colors[:3], np.int64)[ys % 3]
    tx = (np.where(ys < uh - 1, _N, 0) | np.where(ys > 0, _S, 0)
          | (_E if c < uw - 1 else 0) | (_W if c > 0 else 0))
    parts = [np.stack([np.full(ys.size, c), ys, col, np.full(ys.size, _RAMP), tx], axis=1)]
    whose = [ys]
    up, dn = ys < uh - 1, ys > 0  # the carriers above (py + 1) and below take it in
    parts.append(np.stack([np.full(up.sum(), c), ys[up] + 1, col[up], np.full(up.sum(), _S),
                           np.full(up.sum(), _RAMP)], axis=1))
    whose.append(ys[up])
    parts.append(np.stack([np.full(dn.sum(), c), ys[dn] - 1, col[dn], np.full(dn.sum(), _N),
                           np.full(dn.sum(), _RAMP)], axis=1))
    whose.append(ys[dn])
    if uw > 1:  # along the row, East and West of the carrier
        gx, gy = np.meshgrid(np.arange(uw), ys)
        gc = np.broadcast_to(col[:, None], gx.shape)
        east, west = gx > c, gx < c
        sel = east | west
        rx = np.where(east, _W, _E)
        txr = _RAMP | np.where(east & (gx < uw - 1), _E, 0) | np.where(west & (gx > 0), _W, 0)
        parts.append(np.stack([gx[sel], gy[sel], gc[sel], rx[sel], txr[sel]], axis=1))
        whose.append(gy[sel])
    return np.concatenate(parts).astype(np.int64), np.concatenate(whose).astype(np.int64)


def merge(sends: list[np.ndarray]) -> np.ndarray:
    """One relay per kernel: the streams of its relayed bundles, summed per row."""
    return np.sum(np.stack(sends), axis=0)


def reached(p: Plan, own: np.ndarray, hop_down: np.ndarray, hop_up: np.ndarray
            ) -> np.ndarray:
    """(R, L) bool: the lanes whose elements of its box row r's carrier holds,
    from what arrived: `own` (R,) the lane each carrier actually received
    (-1 none), hop_down[y] (R - 1,) whether row y's stream reaches row y + 1
    (its route sends North and that carrier takes it in), hop_up[y] whether
    row y + 1's reaches row y. A lane reaches row r from the row of its run
    nearest r if that carrier received it and every hop between is routed."""
    R, L = p.need.shape
    own = np.asarray(own, np.int64)
    # per row the furthest rows a chain of routed hops reaches it from, below and above
    below = np.arange(R)
    above = np.arange(R)
    for y in range(1, R):
        if hop_down[y - 1]:
            below[y] = below[y - 1]
    for y in range(R - 2, -1, -1):
        if hop_up[y]:
            above[y] = above[y + 1]
    rows = np.arange(R)[:, None]
    a, b = p.first[None, :], p.last[None, :]
    ok = np.zeros((R, L), bool)
    ok[np.flatnonzero(own >= 0), own[own >= 0]] = True
    arrived_b = own[np.maximum(p.last, 0)] == np.arange(L)
    arrived_a = own[np.maximum(p.first, 0)] == np.arange(L)
    ok |= (b >= 0) & (b < rows) & (b >= below[:, None]) & arrived_b[None, :]
    ok |= (a >= 0) & (a > rows) & (a <= above[:, None]) & arrived_a[None, :]
    return ok


@dataclass
class Relay:
    """A flat bundle's relay into its sink (`of_bundle`): the carrier column,
    the lane each row's carrier received, the rows' boxes over `view` and
    the plan."""

    carrier: int
    own: np.ndarray  # (R,)
    boxes: np.ndarray  # (R, 2, nd)
    view: tuple[int, ...]
    plan: Plan


def lane_grid(x: np.ndarray, y: np.ndarray, tx: np.ndarray, lane: np.ndarray,
              rect: tuple[int, int, int, int], rotated: bool) -> np.ndarray:
    """[uh, uw]: the lane each PE of a kernel's unrotated rectangle (rect
    x, y, w, h on the grid) received into its core, -1 none, from a
    bundle's expanded entries (grid x, y, tx, lane)."""
    rx0, ry0, w, h = rect
    uw, uh = (h, w) if rotated else (w, h)
    px, py = (y - ry0, x - rx0) if rotated else (x - rx0, y - ry0)
    on = ((tx & _RAMP) != 0) & (px >= 0) & (px < uw) & (py >= 0) & (py < uh)
    at = np.full((uh, uw), -1, np.int64)
    at[py[on], px[on]] = lane[on]
    return at


def make(lane_at: np.ndarray, lanes: int, boxes: np.ndarray | None, view: tuple[int, ...]
         ) -> Relay | None:
    """The relay of a flat bundle of `lanes` lanes ([uh, uw] `lane_at`) into
    rows reading `boxes` ((uh, 2, nd) over `view`, input_cut): None where
    every row's box lies in its own lane's range (nothing to relay), the
    boxes are not one per PE row, or no column has every lane (`lane_rows`)
    or some lane's elements a row reads land nowhere (`plan`)."""
    if boxes is None or boxes.shape[0] != lane_at.shape[0] or boxes.shape[-1] != len(view):
        return None
    got = lane_rows(lane_at, lanes)
    if got is None:
        return None
    carrier, own = got
    numel = int(np.prod(view, dtype=np.int64))
    from .lanes import lane_slices

    pl = plan(boxes, view, lane_slices(numel, lanes), own, full_rows(lane_at, own))
    if pl is None or not pl.need.any():
        return None
    return Relay(carrier, own, np.asarray(boxes, np.int64), tuple(int(n) for n in view), pl)


def module_relays(module, cache: dict | None = None) -> list[tuple[int, object, Relay]]:
    """Every flat bundle of `module` whose sink's PE rows read outside their
    lanes' ranges and can take a relay (`make`): (edge index, bundle,
    Relay), in edge and bundle order. Not into a kernel whose rows exchange
    halos (its three colors are the exchange's). `cache` keeps each
    bundle's relay across calls (the route asks for link loads often)."""
    from .graph import HOST
    from .halo import halo_colors
    from .kernels import cut_view, input_cut
    from .lanes import expand
    from .movement import Operands
    from .target import TARGETS

    kern = {k.name: k for k in module.kernels()}
    halo = {b.sink for e in module.edges for b in e.bundles or () if b.cut == "halo"}
    t = TARGETS.get(str(module.attrs.get("target") or "wse2"), TARGETS["wse2"])
    if {b.color for e in module.edges for b in e.bundles or ()} & set(halo_colors(t)):
        return []  # a bundle holds the relays' colors: the route left none to them
    ops = None
    out = []
    for i, e in enumerate(module.edges):
        for b in e.bundles or ():
            if b.cut or b.sink == HOST or b.sink in halo or b.sink not in kern:
                continue
            k = kern[b.sink]
            if k.rect is None:
                continue
            key = ("relay", i, b, k.rect.x, k.rect.y, k.rect.w, k.rect.h, bool(k.rotated))
            if cache is not None and key in cache:
                got = cache[key]
            else:
                ops = ops or Operands.of_module(module, runs=True)
                shape = tuple(module.values[e.value].type.shape)
                try:
                    boxes = input_cut(k, e.value, shape, ops)
                    view = cut_view(k, e.value, shape, ops)
                except (KeyError, ValueError):
                    boxes, view = None, shape
                ex = expand(b, e.src == HOST, False)
                at = lane_grid(ex.x, ex.y, ex.tx, ex.lane,
                               (k.rect.x, k.rect.y, k.rect.w, k.rect.h), bool(k.rotated))
                if boxes is None:  # every PE reads all of it, or rows no lane reaches may
                    boxes, view = _whole(k, e.value, shape, at), shape or (1,)
                got = None
                if boxes is not None:
                    got = make(at, int(b.lanes), np.asarray(boxes, np.int64), tuple(view))
                if cache is not None:
                    cache[key] = got
            if got is not None:
                out.append((i, b, got))
    return out


def _whole(kernel, value: str, shape: tuple[int, ...], lane_at: np.ndarray
           ) -> np.ndarray | None:
    """(R, 2, nd): the whole value per PE row where `kernel`'s kind declares
    no box of `value` per row and either says every PE reads all of it
    (KernelKind.reads_whole: a gather's indices) or the flat lanes leave
    PE rows with none of it (a broadcast operand of fewer lanes than rows):
    what those rows read is not declared, so each row's box is the value.
    None otherwise (every row has a lane and reads inside it)."""
    from .kernels import kind_of

    if not kernel.body or not kernel.knobs or kernel.rect is None:
        return None
    ins = list(kernel.body[0].inputs)
    whole = (ins.count(value) == 1 and not any(value in n.inputs for n in kernel.body[1:])
             and kind_of(kernel).reads_whole(kernel.dims, kernel.knobs, ins.index(value)))
    if not whole and (lane_at >= 0).all():
        return None
    ws = tuple(shape) or (1,)  # a scalar's windows are boxes of its one element
    box = np.zeros((lane_at.shape[0], 2, len(ws)), np.int64)
    box[:, 1] = ws
    return box
