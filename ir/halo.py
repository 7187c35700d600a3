"""Halo exchange: a windowed kernel's PE rows pass their neighbours the rows they share.

Why: a conv's, pooling's or resize's PE row reads its row group's input
rows plus a halo (the window's rows below the group's last output row:
(R - 1) * dilation + 1 - stride of them), so the per-row boxes of a cut
(KernelKind.input_cut) overlap, and summed they are 2-8x the value. A cut
lane carrying such a box is heavier than a flat lane, the router keeps the
bundle flat, and every PE then reads rows no lane brought it (issue 12).
With the exchange, a cut bundle's lanes carry disjoint CORE boxes (each
row's box up to where its partner row's begins: as light as flat lanes)
and every PE row takes its halo from its partner row, `period` rows further
along the kernel's unrotated y, over the kernel's own vertical links:

- `split` derives it from the rows' boxes and the axis the kind names
  (KernelKind.halo_axis): the period is the row offset at which boxes agree
  on every other axis and overlap on this one (a conv's c channel blocks: c;
  a resize's rows: 1), the core of row py stops where row py + period's box
  starts, and `depth` is the most rows past its core a row takes;
- `exchange` is what arrives, in route order: the rows partnered along
  one residue of the period share a CARRIER column (py % period), where
  the carrier PE of row py takes, from what the PE of its column in row
  py + period holds after that row's exchange, up to `depth` rows past its
  box's end, and multicasts them along its row. The rows nearest the
  kernel's far end go first, so a halo deeper than one core (a dilated
  conv: rows from several row groups away) arrives as a chain, hop by hop.
  A carrier whose lane did not arrive holds nothing and passes nothing on;
- `entries` are the routes that move it, on the four HALO colors just
  below the host's reserved ones (`halo_colors`, never a bundle's): down
  the carrier column on one (two alternating where a column's transfers
  meet), along the row on one each way. Each link of the carrier column and of
  the row carries the row's halo once (a column per residue: the
  transfers of the period's rows run side by side, not through each
  other), so an exchange costs about one core lane's load per link; the
  link loads count it (wsec.ir.metrics.halo_arrays) like any lane's.
  A kernel narrower than the period (a conv of many channel blocks on few
  PE columns: ASPP's dilated convs, 16 blocks on 8 columns) has no column
  per residue; there the transfers hop from core to core down column
  py % width (`relayed`), a hop carrying every transfer spanning it
  (about period / width rows' halos: `carried`, `busiest`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fabric import PORT_BITS
from .lanes import union_boxes

HALO_COLORS = 3  # the colors every kernel's halo exchange runs on (halo_colors)
MAX_PERIOD = 256  # partners further apart than this are not searched (split)

_N, _E, _S, _W, _RAMP = (PORT_BITS[p] for p in ("N", "E", "S", "W", "RAMP"))


@dataclass(frozen=True)
class Halo:
    """How a cut bundle's PE rows exchange halos: along `axis` of the cut's
    view, row py takes up to `depth` rows past its box from row py + period."""

    axis: int
    period: int
    depth: int

    def as_list(self) -> list[int]:
        return [self.axis, self.period, self.depth]


def halo_colors(target) -> tuple[int, int, int]:
    """The colors of the halo exchange (HALO_COLORS): just below the colors
    the target reserves for host I/O; the router gives bundles none of them."""
    top = int(target.colors) - int(target.reserved_colors)
    return top - 3, top - 2, top - 1


def _live(b: np.ndarray) -> np.ndarray:
    return (b[..., 1, :] > b[..., 0, :]).all(axis=-1)


def _pairs(rows: np.ndarray, axis: int, p: int) -> np.ndarray:
    """Per row py < R - p: whether row py + p's box continues row py's along
    `axis` (both read, equal on every other axis, starting with, inside or
    at the end of row py's rows and ending with or past them). Boxes that
    start together are the first row groups a pad clips to the input's
    first row: each keeps a row of its own and takes the rest (`split`)."""
    a, b = rows[:-p], rows[p:]
    other = np.ones(rows.shape[-1], bool)
    other[axis] = False
    same = (a[:, :, other] == b[:, :, other]).all(axis=(1, 2))
    lo_a, hi_a, lo_b, hi_b = a[:, 0, axis], a[:, 1, axis], b[:, 0, axis], b[:, 1, axis]
    return _live(a) & _live(b) & same & (lo_a <= lo_b) & (lo_b <= hi_a) & (hi_a <= hi_b)


def split(rows: np.ndarray, axis: int | None) -> tuple[np.ndarray, Halo] | None:
    """(core boxes, Halo) for per-row boxes `rows` ((R, 2, ndim), the kind's
    input_cut) overlapping along `axis`, or None where no row's box shares
    any rows with a partner's (nothing to exchange). The period is the row
    offset whose partners share the most elements; a row with no partner
    at it keeps its whole box. The exchange is checked to give every row
    its box (`covers`)."""
    if axis is None or rows.ndim != 3 or rows.shape[0] < 2 or not 0 <= axis < rows.shape[2]:
        return None
    R = rows.shape[0]
    ext = np.maximum(rows[:, 1, :] - rows[:, 0, :], 0)
    best, period = 0, 0
    for p in range(1, min(R - 1, MAX_PERIOD) + 1):
        ok = _pairs(rows, axis, p)
        if not ok.any():
            continue
        share = rows[:-p][ok, 1, axis] - rows[p:][ok, 0, axis]
        per = np.prod(np.delete(ext[:-p][ok], axis, axis=1), axis=1)
        saved = int((share * per).sum())
        if saved > best:
            best, period = saved, p
    if not period:
        return None
    ok = np.zeros(R, bool)
    ok[:R - period] = _pairs(rows, axis, period)
    core = rows.copy()
    nxt = np.flatnonzero(ok)
    # at least a row of its own: rows whose boxes start together (a pad clipping the
    # first row groups' windows to the input's first row) keep one each
    core[nxt, 1, axis] = np.maximum(rows[nxt + period, 0, axis], rows[nxt, 0, axis] + 1)
    take = rows[:, 1, axis] - core[:, 1, axis]
    halo = Halo(int(axis), int(period), int(take.max()))
    if halo.depth <= 0 or not covers(rows, core, halo, 1):
        return None
    return core, halo


def lane_rows(core: np.ndarray, k: int) -> np.ndarray:
    """(R, 2, ndim): the box each row's lane brings at pitch k: the union of
    its k rows' cores (wsec.ir.lanes.union_boxes)."""
    R = core.shape[0]
    if k <= 1:
        return core
    return np.repeat(union_boxes(core.reshape(R // k, k, *core.shape[1:])), k, axis=0)


def covers(rows: np.ndarray, core: np.ndarray, halo: Halo, k: int) -> bool:
    """Whether lanes at pitch k carrying the cores (`lane_rows`), exchanged,
    give every row that reads the whole box `rows` says it reads."""
    if rows.shape[0] % k:
        return False
    own = lane_rows(core, k)
    got, _ = exchange(np.broadcast_to(own[:, None], (own.shape[0], halo.period,
                                                     *own.shape[1:])), halo)
    got = got[:, 0]
    need = _live(rows)
    ok = (got[:, 0] <= rows[:, 0]).all(axis=1) & (rows[:, 1] <= got[:, 1]).all(axis=1)
    return bool((ok | ~need).all())


def carrier(py: np.ndarray | int, period: int, width: int) -> np.ndarray | int:
    """The PE column that carries PE row py's halo (from row py + period)
    in a kernel `width` PEs wide: the rows partnered along one residue of
    the period take their halos down one column per residue, side by side;
    where the kernel is 2 periods wide or more, a residue's transfers
    alternate between two columns, so no PE both sends one row's halo and
    multicasts its own (one RAMP-out each) and a column's transfers never
    meet (one color). In a kernel narrower than the period (`relayed`) the
    rows are dealt over the columns in turn (py % width), so each column
    relays as few transfers as the others."""
    if period > width:
        return py % width
    col = py % period
    if 2 * period <= width:
        col = col + period * ((py // period) % 2)
    return col


def relayed(period: int, width: int) -> bool:
    """Whether the exchange's transfers hop from core to core (`entries`):
    a kernel narrower than the period has too few columns for one per
    residue, so the transfers of several residues share a column and
    would cross each other's routes on one color."""
    return period > width


def exchange(boxes: np.ndarray, halo: Halo) -> tuple[np.ndarray, np.ndarray]:
    """(held, received): per PE ((uh, uw, 2, ndim) `boxes`: the box its lane
    brought, empty where none) the box it holds after the exchange, and per
    PE row the elements its carrier PE received from the carrier PE of row
    py + period (`carrier`) and multicast along the row. In route order
    from the far rows back (module docstring); a PE of the row holds the
    halo where its own box ends where the carrier's does and lies in it on
    the other axes (every PE of a row got the same lane), and a carrier
    whose lane never arrived holds nothing and passes nothing on.
    Vectorised over the `period` rows of each step."""
    held = np.array(boxes, dtype=np.int64, copy=True)
    uh, uw = held.shape[:2]
    got = np.zeros(uh, np.int64)
    p, ax = halo.period, halo.axis
    other = np.ones(held.shape[-1], bool)
    other[ax] = False
    for top in range(uh - p, 0, -p):
        lo = max(0, top - p)
        rows = np.arange(lo, top)
        col = carrier(rows, p, uw)
        a, b = held[rows, col], held[rows + p, col]  # (n, 2, nd): carrier and its partner
        ok = _live(a) & _live(b)
        ok &= ((b[:, 0] <= a[:, 0]) & (a[:, 1] <= b[:, 1]))[:, other].all(-1)
        end = a[:, 1, ax]
        ok &= (b[:, 0, ax] <= end) & (end < b[:, 1, ax])
        new = np.where(ok, np.minimum(b[:, 1, ax], end + halo.depth), end)
        ext = np.maximum(a[:, 1] - a[:, 0], 0)[:, other]
        got[rows] = (new - end) * np.prod(ext, axis=-1)
        # the row multicast: every PE whose box ends with the carrier's
        mine = held[lo:top]  # (n, uw, 2, nd)
        fits = _live(mine) & (mine[..., 1, ax] == end[:, None])
        fits &= ((a[:, None, 0] <= mine[..., 0, :]) & (mine[..., 1, :] <= a[:, None, 1])
                 )[..., other].all(-1)
        held[lo:top, :, 1, ax] = np.where(fits, new[:, None], mine[..., 1, ax])
    return held, got


def entries(uw: int, uh: int, period: int, colors: tuple[int, ...]
            ) -> tuple[np.ndarray, np.ndarray]:
    """(m, 5) router entries (px, py, color, rx, tx) of the exchange, in
    offsets of the kernel's unrotated rectangle, and per entry the PE rows
    whose halos it carries ((m, j): -1 pads; `carried` sums them). Each row
    py < uh - period takes its halo from row py + period along its carrier
    column (`carrier`): the partner's PE in that column (which holds all
    its row holds) sends it S, the PEs between pass it on, the carrier's
    core receives it and multicasts it along its row on colors[2], East
    and West from the one route of its router (tx E and W: its core sends
    the halo once, where a color each way sent it twice: measured, the
    U-Net fixture's resize carriers' RAMPs then took 512 wavelets for
    256, past its 432 and the router routed it flat), each PE taking it
    into its core. Down the column on colors[0]; in a
    kernel less than two periods wide, where one column's transfers meet
    (one ends where the next starts), on colors[g % 2] (g = py // period).
    In a kernel narrower than the period (`relayed`) a column carries the
    transfers of several residues, which would cross on one color; there
    they hop from core to core: the hop from PE row y + 1 to row y runs on
    colors[y % 2] (its sender's RAMP to S, its receiver's N to RAMP), so a
    PE receives on one color and sends on the other, and each core passes
    on what it received for the rows below (a link carries every transfer
    spanning it: about period / uw rows' halos)."""
    if uh <= period or uw < 1:
        return np.zeros((0, 5), np.int64), np.zeros((0, 1), np.int64)
    py = np.arange(uh - period)
    col = carrier(py, period, uw)
    parts, whose = [], []
    if relayed(period, uw):
        # hop y (row y + 1 -> row y) of column x carries the rows py < uh - period of
        # carrier x with py <= y < py + period
        hop = np.arange(uh - 1)
        span = (py[None, :] <= hop[:, None]) & (hop[:, None] < py[None, :] + period)
        for x in range(uw):
            on = span & (col == x)[None, :]
            y = np.flatnonzero(on.any(axis=1))
            if not y.size:
                continue
            n = int(on.sum(axis=1).max())
            rows = np.full((y.size, n), -1, np.int64)
            for i, h in enumerate(y):
                got = py[on[h]]
                rows[i, :got.size] = got
            vc = np.asarray(colors[:2], np.int64)[y % 2]
            xs = np.full(y.size, x)
            parts.append(np.stack([xs, y + 1, vc, np.full(y.size, _RAMP), np.full(y.size, _S)],
                                  axis=1))
            parts.append(np.stack([xs, y, vc, np.full(y.size, _N), np.full(y.size, _RAMP)],
                                  axis=1))
            whose += [rows, rows]
    else:
        # transfers meeting at a PE of their column (one period wide) alternate colors
        vc = np.asarray(colors[:2], np.int64)[(py // period) % 2 if 2 * period > uw else 0 * py]
        for j in range(1, period + 1):  # the PE j rows above the carrier: pass on S
            rx = np.full(py.size, _RAMP if j == period else _N)
            parts.append(np.stack([col, py + j, vc, rx, np.full(py.size, _S)], axis=1))
            whose.append(py[:, None])
        parts.append(np.stack([col, py, vc, np.full(py.size, _N), np.full(py.size, _RAMP)],
                              axis=1))
        whose.append(py[:, None])
    # the row multicast from the carrier, East and West on one color
    if uw > 1:
        gx, gy = np.meshgrid(np.arange(uw), py)
        cx = np.broadcast_to(col[:, None], gx.shape)
        east, west = gx > cx, gx < cx
        rx = np.where(east, _W, np.where(west, _E, _RAMP))
        tx = (np.where(east | (gx == cx), _E, 0) * (gx < uw - 1)
              | np.where(west | (gx == cx), _W, 0) * (gx > 0)
              | np.where(gx == cx, 0, _RAMP))
        n = gx.size
        parts.append(np.stack([gx.ravel(), gy.ravel(), np.full(n, colors[2]), rx.ravel(),
                               tx.ravel()], axis=1))
        whose.append(gy.ravel()[:, None])
    width = max(w.shape[1] for w in whose)
    whose = [np.pad(w, ((0, 0), (0, width - w.shape[1])), constant_values=-1) for w in whose]
    return (np.concatenate(parts).astype(np.int64), np.concatenate(whose).astype(np.int64))


def carried(whose: np.ndarray, per_row: np.ndarray) -> np.ndarray:
    """(m,): what each exchange entry carries, from `entries`' rows per entry
    ((m, j), -1 pads) and what each PE row receives (`per_row`, (uh,))."""
    w = np.asarray(whose, np.int64)
    return np.where(w >= 0, np.asarray(per_row)[np.maximum(w, 0)], 0).sum(axis=1)


def busiest(core: np.ndarray, halo: Halo, k: int, uw: int) -> int:
    """The most elements any link or RAMP of the exchange carries when lanes
    at pitch k bring the cores, in a kernel uw PEs wide: a row's halo
    (one column per residue), or the transfers a relaying column passes on
    (`relayed`)."""
    got = received(core, halo, k)
    if not relayed(halo.period, uw):
        return int(got.max(initial=0))
    ent, whose = entries(uw, core.shape[0], halo.period, (0, 1, 2, 3))
    if not ent.shape[0]:
        return 0
    # a relay's RAMP takes in and sends out what both its hops carry
    ramp = ent[:, 3] == _RAMP
    return int(max(carried(whose, got).max(initial=0),
                   _ramp_load(ent[ramp], carried(whose[ramp], got))))


def _ramp_load(ent: np.ndarray, load: np.ndarray) -> int:
    """The most a PE's RAMP-out carries over the entries `ent` sending from it."""
    if not ent.shape[0]:
        return 0
    key = ent[:, 0] * (int(ent[:, 1].max()) + 1) + ent[:, 1]
    _, inv = np.unique(key, return_inverse=True)
    return int(np.bincount(inv, weights=load).max())


def received(core: np.ndarray, halo: Halo, k: int) -> np.ndarray:
    """(R,): elements each PE row receives in the exchange when lanes at
    pitch k bring the cores (`lane_rows`): what its carrier's column and
    its row's links carry for it."""
    own = lane_rows(core, k)
    return exchange(np.broadcast_to(own[:, None], (own.shape[0], halo.period,
                                                   *own.shape[1:])), halo)[1]
