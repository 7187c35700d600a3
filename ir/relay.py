"""Relay: a kernel's PEs pass each other the boxes a flat bundle left them short of.

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
(wsec.ir.halo), whose three colors it shares (and two more):

- `plan` says who sends what. Each lane's range is dealt in contiguous
  PIECES over the PE columns it reaches; the piece of column p travels
  down and up column p, core to core, from the rows whose PE in column p
  holds the lane to the furthest row either way that reads it, and at
  every row that reads it along the row both ways, core to core. So the
  rows' exchange, a transpose where a conv's rows read every channel of a
  few image rows and each flat lane brought a few channels of every row,
  runs on every column at once (a single carrier column would carry half
  the value over one link: measured, 40-195x the kernel time on the light
  models), and each row's PEs pass on its box as a row multicast would.
  Counted per element, not from hulls (an NCHW box of every channel and a
  few rows has a flat hull of nearly the whole value): a PE sends each
  element once however many PEs beyond it need it.
- `entries` are the routes: every PE with something to send has ONE route
  from its core, on color (x + 2y) mod 5 of the relay's five
  (`relay_colors`: the halo exchange's three and the two below them), out
  to its four neighbours inside the rectangle, and each neighbour takes it
  into its core on that color: a PE's own color and its four neighbours'
  are five different ones, so one route per PE and color holds for any
  size. A PE's one stream goes all four ways, so a link may carry elements
  the PEs beyond it already hold (the price of five colors where a stream
  per direction would take twelve); the link loads count every stream on
  every link it takes (wsec.ir.metrics.relay_arrays), so realised/bound
  shows what a relay costs, and the router keeps cutting where a cut fits.
  The relayed bundles into one kernel share its routes (their streams
  summed): one relay per kernel; a kernel whose rows exchange halos takes
  none (their colors overlap).
- `reached` is what arrived, for the simulator: from the lanes that
  actually reached each PE and the relay routes actually configured,
  which pieces each PE holds; a lane that never arrived, a hop missing,
  leaves the PEs that depended on it without those elements, and reading
  one is a SimError at the PE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fabric import PORT_BITS

_N, _E, _S, _W, _RAMP = (PORT_BITS[p] for p in ("N", "E", "S", "W", "RAMP"))
RELAY_COLORS = 5  # the colors a relay runs on (relay_colors)
# a PE's neighbours: (dx, dy, the port it sends to, the port the neighbour takes it from)
_STEPS = ((0, 1, _N, _S), (0, -1, _S, _N), (1, 0, _E, _W), (-1, 0, _W, _E))


def relay_colors(target) -> tuple[int, ...]:
    """The relay's five colors: the halo exchange's three just below the
    host's (wsec.ir.halo.halo_colors) and the two below them."""
    top = int(target.colors) - int(target.reserved_colors)
    return tuple(range(top - RELAY_COLORS, top))


def mesh_color(x: np.ndarray | int, y: np.ndarray | int) -> np.ndarray | int:
    """Index into relay_colors of the route PE (x, y) sends its stream on:
    (x + 2y) mod 5, distinct from its four neighbours' and theirs from each
    other's."""
    return (x + 2 * y) % RELAY_COLORS


@dataclass
class Plan:
    """How a flat bundle's sink PEs relay their rows' boxes (`plan`): the
    pieces (each a contiguous part of one lane's range relayed along one PE
    column, between the rows `first`..`last` whose PE in that column holds
    the lane), per row and piece whether the row takes it through the
    relay, and per PE the elements it sends."""

    lane: np.ndarray  # (P,)
    col: np.ndarray  # (P,)
    start: np.ndarray  # (P,) flat range of the piece
    stop: np.ndarray  # (P,)
    first: np.ndarray  # (P,) rows of column col holding its lane: first..last
    last: np.ndarray  # (P,)
    need: np.ndarray  # (R, P) bool
    stream: np.ndarray  # (R, uw) elements each PE sends


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


def range_counts(boxes: np.ndarray, shape: tuple[int, ...], start: np.ndarray,
                 stop: np.ndarray) -> np.ndarray:
    """(R, P): the elements of each box in each flat range [start, stop)."""
    c = count_below(boxes, shape, np.concatenate([start, stop]))
    n = len(start)
    return c[:, n:] - c[:, :n]


def pieces(lane_at: np.ndarray, slices: np.ndarray
           ) -> tuple[np.ndarray, ...] | None:
    """(lane, col, start, stop, first, last) per piece: each lane's range
    dealt in contiguous parts over the PE columns it reaches (`lane_at`
    [uh, uw], -1 none), the part of column p between the rows first..last
    whose PE there holds the lane. None where a lane reaches no PE or a
    column's PEs holding it are not one run of rows."""
    uh, uw = lane_at.shape
    L = slices.shape[0]
    rows = np.arange(uh)[:, None]
    out = []
    for lane in range(L):
        on = lane_at == lane
        cols = np.flatnonzero(on.any(axis=0))
        if not cols.size:
            if slices[lane, 1] > slices[lane, 0]:
                return None
            continue
        r = np.where(on[:, cols], rows, -1)
        last = r.max(axis=0)
        first = np.where(on[:, cols], rows, uh).min(axis=0)
        if ((last - first + 1) != on[:, cols].sum(axis=0)).any():
            return None
        s0, s1 = int(slices[lane, 0]), int(slices[lane, 1])
        cut = s0 + (s1 - s0) * np.arange(cols.size + 1) // cols.size
        out.append(np.stack([np.full(cols.size, lane), cols, cut[:-1], cut[1:], first, last],
                            axis=1))
    if not out:
        return None
    got = np.concatenate(out).astype(np.int64)
    return tuple(got[:, i] for i in range(6))


def plan(boxes: np.ndarray, shape: tuple[int, ...], slices: np.ndarray, lane_at: np.ndarray
         ) -> Plan | None:
    """The relay of a flat bundle (lanes `slices` over the flattened value,
    [uh, uw] `lane_at` the lane each PE received) into rows reading `boxes`
    ((uh, 2, nd) over `shape`, the value or a reshape of it: flat order is
    the value's). A row takes through the relay every piece its box reads
    of a lane not all of its PEs hold. None where `pieces` finds no
    relay."""
    shape = tuple(int(s) for s in shape)
    R, uw = lane_at.shape
    got = pieces(lane_at, slices)
    if got is None:
        return None
    lane, col, start, stop, first, last = got
    P = lane.size
    cnt = range_counts(boxes, shape, start, stop)  # (R, P)
    L = slices.shape[0]
    full = np.zeros((R, L + 1), bool)  # rows whose every PE holds the lane
    row_one = (lane_at == lane_at[:, :1]).all(axis=1) & (lane_at[:, 0] >= 0)
    full[np.flatnonzero(row_one), lane_at[row_one, 0]] = True
    need = (cnt > 0) & ~full[:, lane]
    # per element the furthest rows either way that read it
    hi = np.full(shape, -1, np.int32)
    lo = np.full(shape, R, np.int32)
    live = (boxes[:, 1] > boxes[:, 0]).all(axis=1)
    for r in np.flatnonzero(live):
        hi[tuple(slice(int(a), int(b)) for a, b in zip(boxes[r, 0], boxes[r, 1], strict=True))] = r
    for r in np.flatnonzero(live)[::-1]:
        lo[tuple(slice(int(a), int(b)) for a, b in zip(boxes[r, 0], boxes[r, 1], strict=True))] = r
    hi, lo = hi.reshape(-1), lo.reshape(-1)
    piece = np.repeat(np.arange(P), stop - start)
    c, a, b = col[piece], first[piece], last[piece]
    down = hi > b
    up = (lo < a) & (lo < R)
    # along column c: the rows from the lane's to the furthest reader send it once (a
    # row at both ends of a one-row run once)
    diff = np.zeros((R + 1, uw), np.int64)
    np.add.at(diff, (b[down], c[down]), 1)
    np.add.at(diff, (hi[down] + 1, c[down]), -1)
    np.add.at(diff, (lo[up], c[up]), 1)
    np.add.at(diff, (a[up] + 1, c[up]), -1)
    both = down & up & (a == b)
    np.add.at(diff, (a[both], c[both]), -1)
    np.add.at(diff, (a[both] + 1, c[both]), 1)
    vertical = np.cumsum(diff, axis=0)[:R]
    # along every row that takes a piece, every PE passes it on (an upper bound where its
    # column's PE also relays it down or up)
    rowneed = (cnt * need).sum(axis=1)
    stream = vertical + (rowneed[:, None] if uw > 1 else 0)
    return Plan(lane, col, start, stop, first, last, need, stream)


def entries(uw: int, uh: int, send: np.ndarray, colors: tuple[int, ...]
            ) -> tuple[np.ndarray, np.ndarray]:
    """(m, 5) router entries (px, py, color, rx, tx) of a relay, in offsets
    of the kernel's unrotated rectangle, and per entry the PE (py * uw +
    px) whose stream it carries. Each PE where send[py, px] sends its
    stream from its core on colors[mesh_color(px, py)] to its neighbours
    inside the rectangle, and each of them takes it into its core."""
    ys, xs = np.nonzero(np.asarray(send, bool))
    if not ys.size:
        return np.zeros((0, 5), np.int64), np.zeros(0, np.int64)
    cols = np.asarray(colors[:RELAY_COLORS], np.int64)[mesh_color(xs, ys)]
    tx = np.zeros(ys.size, np.int64)
    parts, whose = [], []
    me = ys * uw + xs
    for dx, dy, out, into in _STEPS:
        nx, ny = xs + dx, ys + dy
        inside = (nx >= 0) & (nx < uw) & (ny >= 0) & (ny < uh)
        tx |= np.where(inside, out, 0)
        n = int(inside.sum())
        parts.append(np.stack([nx[inside], ny[inside], cols[inside], np.full(n, into),
                               np.full(n, _RAMP)], axis=1))
        whose.append(me[inside])
    keep = tx != 0
    parts.insert(0, np.stack([xs[keep], ys[keep], cols[keep], np.full(int(keep.sum()), _RAMP),
                              tx[keep]], axis=1))
    whose.insert(0, me[keep])
    return np.concatenate(parts).astype(np.int64), np.concatenate(whose).astype(np.int64)


def hops(rx: np.ndarray, tx: np.ndarray) -> tuple[np.ndarray, ...]:
    """From the relay routes configured ([uh, uw, 5] rx and tx per PE and
    relay color, 0 none), per PE whether its stream reaches its neighbour
    North, South, East and West: its route sends from its core that way on
    its color, and the neighbour takes it in from the PE on that color."""
    uh, uw = rx.shape[:2]
    ys, xs = np.mgrid[0:uh, 0:uw]
    c = mesh_color(xs, ys)
    mine_rx = np.take_along_axis(rx, c[..., None], axis=2)[..., 0]
    mine_tx = np.take_along_axis(tx, c[..., None], axis=2)[..., 0]
    sends = mine_rx == _RAMP
    out = []
    for dx, dy, port, into in _STEPS:
        nx, ny = xs + dx, ys + dy
        inside = (nx >= 0) & (nx < uw) & (ny >= 0) & (ny < uh)
        ok = sends & ((mine_tx & port) != 0) & inside
        nxc, nyc = np.clip(nx, 0, uw - 1), np.clip(ny, 0, uh - 1)
        ok &= (rx[nyc, nxc, c] == into) & ((tx[nyc, nxc, c] & _RAMP) != 0)
        out.append(ok)
    return tuple(out)  # north, south, east, west


def reached(p: Plan, lane_at: np.ndarray, north: np.ndarray, south: np.ndarray,
            east: np.ndarray, west: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From what arrived: ((R, P) whether the PE of each row in each piece's
    column holds the piece, [uh, uw] and [uh, uw] the furthest columns West
    and East whose PE's pieces reach each PE along its row). A piece
    reaches the PE in its column of row r from the nearest row of its run
    if that PE received the lane and every hop between is routed
    (`north`/`south`/`east`/`west` [uh, uw]: `hops`)."""
    R, uw = lane_at.shape
    below = np.tile(np.arange(R)[:, None], (1, uw))  # chain start reaching row r from below
    above = below.copy()
    for y in range(1, R):
        below[y] = np.where(north[y - 1], below[y - 1], y)
    for y in range(R - 2, -1, -1):
        above[y] = np.where(south[y + 1], above[y + 1], y)
    rows = np.arange(R)[:, None]
    c = p.col[None, :]
    a, b = p.first[None, :], p.last[None, :]
    have_b = lane_at[p.last, p.col] == p.lane
    have_a = lane_at[p.first, p.col] == p.lane
    va = lane_at[:, p.col] == p.lane[None, :]
    va |= (b < rows) & (b >= below[:, p.col]) & have_b[None, :]
    va |= (a > rows) & (a <= above[:, p.col]) & have_a[None, :]
    del c
    xs = np.arange(uw)
    west_end = np.tile(xs[None, :], (R, 1))
    east_end = west_end.copy()
    for x in range(1, uw):
        west_end[:, x] = np.where(east[:, x - 1], west_end[:, x - 1], x)
    for x in range(uw - 2, -1, -1):
        east_end[:, x] = np.where(west[:, x + 1], east_end[:, x + 1], x)
    return va, west_end, east_end


@dataclass
class Relay:
    """A flat bundle's relay into its sink (`make`): the rows' boxes over
    `view` and the plan."""

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
    rows reading `boxes` ((uh, 2, nd) over `view`): None where no row
    takes anything through it (every row's box in lanes all its PEs hold),
    the boxes are not one per PE row, or `plan` finds none."""
    if boxes is None or boxes.shape[0] != lane_at.shape[0] or boxes.shape[-1] != len(view):
        return None
    from .lanes import lane_slices

    numel = int(np.prod(view, dtype=np.int64))
    pl = plan(boxes, view, lane_slices(numel, lanes), lane_at)
    if pl is None or not pl.need.any():
        return None
    return Relay(np.asarray(boxes, np.int64), tuple(int(n) for n in view), pl)


def module_relays(module, cache: dict | None = None) -> list[tuple[int, object, Relay]]:
    """Every flat bundle of `module` whose sink's PE rows read outside their
    lanes' ranges and can take a relay (`make`): (edge index, bundle,
    Relay), in edge and bundle order; none unless the route turned the
    relay on (module attr `relay`: Route.relay). Not into a kernel whose rows exchange
    halos (the relay's colors take the exchange's). `cache` keeps each
    bundle's relay across calls (the route asks for link loads often)."""
    from .graph import HOST
    from .kernels import cut_view, input_cut
    from .lanes import expand
    from .movement import Operands
    from .target import TARGETS

    if not module.attrs.get("relay"):
        return []  # the relay is opt-in (wsec.passes.route.Route.relay)
    kern = {k.name: k for k in module.kernels()}
    halo = {b.sink for e in module.edges for b in e.bundles or () if b.cut == "halo"}
    t = TARGETS.get(str(module.attrs.get("target") or "wse2"), TARGETS["wse2"])
    if {b.color for e in module.edges for b in e.bundles or ()} & set(relay_colors(t)):
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
    no box of `value` per row and the flat lanes leave PE rows with none of
    it (a broadcast operand of fewer lanes than rows): what those rows read
    is not declared, so each row's box is the value. None otherwise (every
    row has a lane and reads inside it). A gather's indices, which every PE
    reads whole, are declared (GatherKind.operand_cut: one whole box a row)."""
    if not kernel.body or not kernel.knobs or kernel.rect is None:
        return None
    if (lane_at >= 0).all():
        return None
    ws = tuple(shape) or (1,)  # a scalar's windows are boxes of its one element
    box = np.zeros((lane_at.shape[0], 2, len(ws)), np.int64)
    box[:, 1] = ws
    return box
