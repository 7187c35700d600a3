"""Lanes: the geometry of a bundle, and its expansion into per-PE routes.

Why a bundle of lanes: a wafer moves a tensor across the whole face of a
rectangle, many links side by side, not through one link into one entry PE.
A `Bundle` (ir/graph.py) is described by lane 0's path (waypoints of
axis-aligned segments) and the step `axis` between neighbouring lanes at the
source; every other lane follows the same shape, nested:

- segment k has direction d_k and lane offset o_k (lane i runs i steps
  along o_k from lane 0); o_0 = `axis`, and at each corner
  o_{k+1} = -d_k if o_k == d_{k+1} else d_k, so lanes on the inside of a
  turn turn first and no two lanes of a bundle ever share a PE;
- lane i's waypoints: start P_0 + i*o_0, corner k: P_k + i*(o_{k-1} + o_k),
  end P_n + i*o_{n-1};
- after its landing PE a lane goes on for `reach` PEs in its last direction,
  delivering to each (a kernel's input multicast along the PE row).

A bundle's `pitch` k scales all of that: lane i runs i*k steps from lane 0
(the offsets above times k), so its lanes use every k-th row or column of
their path and the rows between stay free for other bundles (on other
colors). At its landing PE lane i also turns along the sink's side, in the
direction of the lane offset o_{n-1}: a spine of k - 1 PEs, each delivering
to its core and multicasting along its row for `reach` PEs like the landing
PE. Lane i then serves the k consecutive rows from its landing row, lane
i + 1 the k after them: the lanes stay PE-disjoint and a bundle of L lanes
serves L*k rows.

A bundle landing on OWNER rows (cut "owners": a kernel whose rows read the
value only on one row of every k, e.g. the rows of a conv's reduction
groups that hold the finished output and run its fused tail) has pitch k
and no spine: lane i lands on the row k*i from lane 0's landing row (the
path ends there: at the owner row's offset in its group) and delivers to
that row alone; the k - 1 rows between get nothing. Its lanes stay
PE-disjoint (a pitched bundle's are, and this one covers a subset of
their PEs).

A bundle may WIDEN: with a source pitch s (`src_pitch`, 0 meaning the
pitch) its lanes are spaced s on every segment before the path's last
corner and k only on the last segment. With segment spacings s_j lane i's
waypoints are: start P_0 + i*s_0*o_0, corner k: P_k + i*(s_{k-1}*o_{k-1} +
s_k*o_k), end P_n + i*s_{n-1}*o_{n-1}. On segment k lane i still runs
i*s_k*o_k beside lane 0 (o_{k-1} and o_{k+1} lie along d_k), the inside
lanes still turn first, and the lanes stay PE-disjoint; L lanes then leave
(L-1)*s + 1 slots of the source side and serve L*k rows of the sink, so a
source side shorter than the sink's rows can feed all of them. A path with
no corner cannot widen (`check`).

RIBBONS: one (edge, sink) may be routed as several cut bundles, each a
run of consecutive lanes of what one bundle would be, with its own path
(and corner): a widening bundle's lanes each take a column of their last
vertical run, more than the room between two kernels may hold, where
ribbons whose runs do not overlap share those columns. Their lanes
together serve the rows one bundle's would, each lane its own (no row
twice, none that reads the value left out: wsec.ir.kernels.ribbon_boxes),
and a PE's inbox is the union of what their lanes delivered.
`split` cuts a bundle into ribbons of the same lanes.

Because lanes of a bundle are PE-disjoint, a bundle holds one color. The
slice lane i carries is, by default, the elements [N*i//L, N*(i+1)//L) of
the flattened value (`lane_slices`), so the lanes of a bundle partition the
value. A bundle with a `cut` instead carries the boxes its sink's kind
declares per PE row (KernelKind.input_cut: e.g. a conv row's channel block x
its row group's input rows), so the row multicast alone delivers every PE
what it reads; neighbouring boxes may overlap (halo rows on two lanes: a
declared cover, `check_cut`), and what a lane carries is its box's elements.
A pitched cut lane carries the bounding box of its k rows' boxes
(`pitched_boxes`; exact when those rows are adjacent channel blocks of one
row group, or whole row groups, as a conv's are when k divides its channel
blocks c or c divides k), and every PE of its k rows receives all of it.
A kind may declare its boxes over a VIEW of the value (KernelKind.
input_view: one axis split, `split_axis`), where a row's read is one box
though in the value it is several (a grouped conv's channel block of every
group: (N, C, H, W) as (N, G, C/G, H, W)); its lanes then carry their
boxes of the reshaped value, unions and element counts are taken in the
view, and a window of the value is tested as the smallest box of the view
that holds it (`boxes_to_view`). A data movement's rows may read flat
ranges of a value (a concatenation's input, dealt in blocks of its
elements): in the value's shape such a range's box spans whole channels
on either side of it, so its kind may declare its boxes over the value
FLATTENED instead (one axis of numel elements), where each range is
exact (`check_view`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .fabric import DIRS, HOST_IN_PORT, HOST_OUT_PORT, OPPOSITE, PORT_BITS, RAMP, STEP
from .graph import Bundle

_DIR_OF = {v: k for k, v in STEP.items()}
_BIT = {d: PORT_BITS[d] for d in DIRS}
_RAMP_BIT = PORT_BITS[RAMP]


class LaneError(ValueError):
    """A bundle whose geometry is not a valid set of nested lanes."""


def segment_dirs(path: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
    """Unit direction of each segment; consecutive segments must turn by 90°.
    A path of one waypoint (lanes that start where they land: a host port
    beside a kernel's side) has no segment."""
    if len(path) < 1:
        raise LaneError("a bundle's path needs a waypoint")
    dirs = []
    for (ax, ay), (bx, by) in zip(path, path[1:], strict=False):
        dx, dy = bx - ax, by - ay
        if (dx == 0) == (dy == 0):
            raise LaneError(f"segment ({ax}, {ay}) -> ({bx}, {by}) is not axis-aligned and "
                            "non-empty")
        dirs.append((int(np.sign(dx)), int(np.sign(dy))))
    for a, b in zip(dirs, dirs[1:], strict=False):
        if a[0] * b[0] + a[1] * b[1] != 0:
            raise LaneError(f"consecutive segments must turn by 90 degrees, got {a} then {b}")
    return dirs


def travel(axis: tuple[int, int], dirs: list[tuple[int, int]]) -> tuple[int, int]:
    """The direction lanes move at their landing PE (for a one-waypoint path:
    East or North, across the lane axis — from the West host edge)."""
    return dirs[-1] if dirs else (abs(axis[1]), abs(axis[0]))


def spine_dir(b: Bundle, dirs: list[tuple[int, int]] | None = None) -> tuple[int, int]:
    """The direction a pitched lane's spine runs from its landing PE: the
    lane offset of the last segment (towards the next lane's landing)."""
    if dirs is None:
        dirs = segment_dirs(b.path)
    return offsets(b.axis, dirs)[-1]


def offsets(axis: tuple[int, int], dirs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Lane offset vector of every segment (see the module docstring)."""
    if not dirs:
        return [axis]
    if axis[0] * dirs[0][0] + axis[1] * dirs[0][1] != 0 or abs(axis[0]) + abs(axis[1]) != 1:
        raise LaneError(f"lane axis {axis} must be a unit step across the first segment "
                        f"{dirs[0]}")
    out = [axis]
    for k in range(len(dirs) - 1):
        o, d, nxt = out[-1], dirs[k], dirs[k + 1]
        out.append((-d[0], -d[1]) if o == nxt else d)
    return out


def spacings(b: Bundle, segments: int) -> list[int]:
    """Lane spacing of each of a path's segments: `spacing` (src_pitch)
    before the last corner, `pitch` after it (a path of no segment: its one
    waypoint's spacing, the pitch)."""
    if segments < 1:
        return [b.pitch]
    return [b.spacing] * (segments - 1) + [b.pitch]


def shifts(b: Bundle, dirs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Per waypoint of b's path, how far lane i's waypoint lies from lane
    0's, per lane: s_{k-1} o_{k-1} + s_k o_k (the spacing-scaled lane
    offsets of the segments meeting there)."""
    offs = offsets(b.axis, dirs)
    sp = spacings(b, len(dirs))
    if not dirs:
        return [(sp[0] * offs[0][0], sp[0] * offs[0][1])]
    n = len(dirs)
    out = []
    for k in range(n + 1):
        x = (sp[k - 1] * offs[k - 1][0] if k else 0) + (sp[k] * offs[k][0] if k < n else 0)
        y = (sp[k - 1] * offs[k - 1][1] if k else 0) + (sp[k] * offs[k][1] if k < n else 0)
        out.append((x, y))
    return out


def waypoints(b: Bundle) -> np.ndarray:
    """(lanes, len(path), 2) waypoints of every lane."""
    dirs = segment_dirs(b.path)
    p = np.array(b.path, dtype=np.int64).reshape(-1, 2)
    shift = np.array(shifts(b, dirs), dtype=np.int64).reshape(-1, 2)
    i = np.arange(b.lanes, dtype=np.int64)[:, None, None]
    return p[None, :, :] + i * shift[None, :, :]


def split(b: Bundle, sizes: list[int]) -> list[Bundle]:
    """b as ribbons of `sizes` consecutive lanes (summing to b.lanes), each
    with the same geometry: ribbon j's lane 0 is b's lane sum(sizes[:j]),
    its path that lane's waypoints (lanes are affine in their index)."""
    if sum(sizes) != b.lanes or min(sizes, default=0) < 1:
        raise LaneError(f"ribbons of {sizes} lanes do not split a bundle of {b.lanes}")
    pts = waypoints(b)
    out, at = [], 0
    for n in sizes:
        path = tuple((int(x), int(y)) for x, y in pts[at])
        out.append(Bundle(b.sink, b.color, n, b.axis, path, b.reach, b.cut, b.pitch,
                          b.src_pitch))
        at += n
    return out


def check(b: Bundle) -> None:
    """Raise LaneError unless every lane is a valid path: no segment of
    negative length, no reversal at a degenerate corner."""
    if b.lanes < 1:
        raise LaneError(f"a bundle needs at least one lane, got {b.lanes}")
    if b.reach < 0:
        raise LaneError(f"reach must be >= 0, got {b.reach}")
    if b.pitch < 1:
        raise LaneError(f"pitch must be >= 1, got {b.pitch}")
    if b.cut not in ("", "rows", "owners", "halo"):
        raise LaneError(f"a bundle's cut is 'rows', 'owners', 'halo' or none, got {b.cut!r}")
    if not 0 <= b.src_pitch <= b.pitch:
        raise LaneError(f"source pitch {b.src_pitch} must lie in 1..{b.pitch} (the pitch: lanes "
                        "widen on their way, never narrow), or be 0 (the pitch throughout)")
    dirs = segment_dirs(b.path)
    if b.spacing != b.pitch and len(dirs) < 2:
        raise LaneError(f"lanes at source pitch {b.spacing} and pitch {b.pitch} widen at the "
                        f"path's last corner, but the path has {len(dirs)} segment"
                        f"{'' if len(dirs) == 1 else 's'} and no corner")
    if abs(b.axis[0]) + abs(b.axis[1]) != 1:
        raise LaneError(f"lane axis {b.axis} must be a unit step")
    if not dirs:
        return
    pts = waypoints(b)
    d = np.array(dirs, dtype=np.int64)
    seg = pts[:, 1:, :] - pts[:, :-1, :]
    length = (seg * d[None, :, :]).sum(axis=2)  # (lanes, segments)
    if (length < 0).any():
        i, k = (int(v) for v in np.argwhere(length < 0)[0])
        raise LaneError(f"lane {i} of {b.lanes} would run backwards on segment {k} of its path "
                        f"(the bus is too wide for its turns: it needs room for {b.lanes} "
                        f"nested lanes{f' at pitch {b.pitch}' if b.pitch > 1 else ''})")
    zero = length == 0
    for k in range(1, len(dirs) - 1):
        if zero[:, k].any() and dirs[k - 1] == (-dirs[k + 1][0], -dirs[k + 1][1]):
            raise LaneError(f"segment {k} vanishes for some lane and its neighbours reverse")
    if zero.all(axis=1).any():
        raise LaneError("a lane would start and land on the same PE")


@dataclass(frozen=True)
class Expanded:
    """Per-PE route entries of one bundle: PE (x, y), port bit masks, lane."""

    x: np.ndarray
    y: np.ndarray
    rx: np.ndarray
    tx: np.ndarray
    lane: np.ndarray


def expand(b: Bundle, source_host: bool = False, sink_host: bool = False,
           only: np.ndarray | None = None, checked: bool = False) -> Expanded:
    """Every PE every lane of `b` passes, with what it receives and sends
    (`only`: just those lanes, e.g. a sample to estimate a cost).

    A lane starts at a PE receiving from RAMP (its source core), or from the
    host port when `source_host`; it ends at its landing PE sending to RAMP
    (the sink core) and on through `reach` more PEs, or to the host port when
    `sink_host`. `checked`: the caller has checked the bundle (skip `check`)."""
    if not checked:
        check(b)
    dirs = segment_dirs(b.path)
    pts = waypoints(b)
    lane_ids = np.arange(b.lanes, dtype=np.int64)
    if only is not None:
        lane_ids = np.asarray(only, dtype=np.int64)
        pts = pts[lane_ids]
    L = lane_ids.size
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    rxs: list[np.ndarray] = []
    txs: list[np.ndarray] = []
    lanes: list[np.ndarray] = []
    start_rx = PORT_BITS[HOST_IN_PORT] if source_host else _RAMP_BIT
    incoming = np.full(L, start_rx, dtype=np.int64)  # rx bit of the next point emitted
    for k, d in enumerate(dirs):
        a = pts[:, k, :]
        n = ((pts[:, k + 1, :] - a) * np.array(d)).sum(axis=1)  # points of the segment
        rows = np.repeat(np.arange(L), n)  # positions in lane_ids
        if rows.size:
            t = np.arange(rows.size) - np.repeat(np.cumsum(n) - n, n)
            xs.append(a[rows, 0] + t * d[0])
            ys.append(a[rows, 1] + t * d[1])
            first = t == 0
            rx = np.where(first, incoming[rows], PORT_BITS[OPPOSITE[_DIR_OF[d]]])
            rxs.append(rx)
            txs.append(np.full(rows.size, _BIT[_DIR_OF[d]], dtype=np.int64))
            lanes.append(lane_ids[rows])
        moved = n > 0
        incoming = np.where(moved, PORT_BITS[OPPOSITE[_DIR_OF[d]]], incoming)
    last = travel(b.axis, dirs)
    end = pts[:, -1, :]
    end_tx = PORT_BITS[HOST_OUT_PORT] if sink_host else _RAMP_BIT
    reach = 0 if sink_host else b.reach
    k = 1 if sink_host else b.spine + 1  # the rows each lane serves
    if reach:
        end_tx |= _BIT[_DIR_OF[last]]
    xs.append(end[:, 0])
    ys.append(end[:, 1])
    rxs.append(incoming.copy())
    txs.append(np.full(L, end_tx | (_BIT[_DIR_OF[spine_dir(b, dirs)]] if k > 1 else 0),
                       dtype=np.int64))
    lanes.append(lane_ids)
    heads = end  # the PEs each row multicast starts from: the landing PE, then the spine's
    head_lane = np.arange(L)
    if k > 1:  # the spine: k - 1 PEs along the sink's side, each a row of its own
        sx, sy = spine_dir(b, dirs)
        t = np.tile(np.arange(1, k), L)
        rows = np.repeat(np.arange(L), k - 1)
        xs.append(end[rows, 0] + t * sx)
        ys.append(end[rows, 1] + t * sy)
        rxs.append(np.full(rows.size, PORT_BITS[OPPOSITE[_DIR_OF[(sx, sy)]]], dtype=np.int64))
        txs.append((_RAMP_BIT | (_BIT[_DIR_OF[last]] if reach else 0))
                   | np.where(t < k - 1, _BIT[_DIR_OF[(sx, sy)]], 0))
        lanes.append(lane_ids[rows])
        heads = np.concatenate([end, np.stack([xs[-1], ys[-1]], axis=1)])
        head_lane = np.concatenate([head_lane, rows])
    if reach:
        n = head_lane.size
        t = np.tile(np.arange(1, reach + 1), n)
        rows = np.repeat(np.arange(n), reach)
        xs.append(heads[rows, 0] + t * last[0])
        ys.append(heads[rows, 1] + t * last[1])
        rxs.append(np.full(rows.size, PORT_BITS[OPPOSITE[_DIR_OF[last]]], dtype=np.int64))
        txs.append(np.where(t < reach, _RAMP_BIT | _BIT[_DIR_OF[last]], _RAMP_BIT))
        lanes.append(lane_ids[head_lane[rows]])
    cat = np.concatenate
    return Expanded(cat(xs), cat(ys), cat(rxs), cat(txs), cat(lanes))


def lane_slices(numel: int, lanes: int) -> np.ndarray:
    """(lanes, 2) element ranges [start, stop) of the flattened value per lane."""
    i = np.arange(lanes + 1, dtype=np.int64)
    cuts = numel * i // lanes
    return np.stack([cuts[:-1], cuts[1:]], axis=1)


def endpoints(b: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """(lanes, 2) source PEs and (lanes, 2) landing PEs."""
    pts = waypoints(b)
    return pts[:, 0, :], pts[:, -1, :]


def expand_many(items: list[tuple[Bundle, bool, bool, list[int]]]
                ) -> tuple[Expanded, np.ndarray]:
    """`expand` of many checked bundles, each on a few of its lanes (a
    bundle, source_host, sink_host and the lanes), concatenated in order;
    and how many entries each bundle has. What expand does per bundle in a
    dozen numpy calls is done here for all of them in one: each bundle's
    lanes become runs (a start PE, a step, a count, the ports of the first,
    middle and last entry) in Python, the runs become entries at once. For
    pricing many candidates on sampled lanes, where per-call overhead
    dominates expand."""
    runs: list[tuple[int, ...]] = []
    counts: list[int] = []
    for b, source_host, sink_host, lanes in items:
        total = len(runs)
        _runs(b, source_host, sink_host, lanes, runs)
        counts.append(sum(r[4] for r in runs[total:]))
    if not runs:
        z = np.zeros(0, np.int64)
        return Expanded(z, z, z, z, z), np.zeros(len(items), np.int64)
    a = np.array(runs, dtype=np.int64).T
    n = a[4]
    t = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)

    def col(k: int) -> np.ndarray:
        return np.repeat(a[k], n)

    return (Expanded(col(0) + t * col(2), col(1) + t * col(3),
                     np.where(t == 0, col(5), col(6)),
                     np.where(t == col(4) - 1, col(8), col(7)), col(9)),
            np.asarray(counts, dtype=np.int64))


def _runs(b: Bundle, source_host: bool, sink_host: bool, lanes: list[int],
          out: list[tuple[int, ...]]) -> None:
    """Append bundle b's runs, in expand's order: (x, y, dx, dy, count, rx of
    the first entry, rx of the others, tx of all but the last, tx of the
    last, lane)."""
    dirs = segment_dirs(b.path)
    offs = offsets(b.axis, dirs)
    shift = shifts(b, dirs)
    pitch = b.spine + 1  # the rows each lane serves
    pts = [[(px + i * sx, py + i * sy)
            for (px, py), (sx, sy) in zip(b.path, shift, strict=True)] for i in lanes]
    incoming = [PORT_BITS[HOST_IN_PORT] if source_host else _RAMP_BIT] * len(lanes)
    for k, (dx, dy) in enumerate(dirs):
        port = _DIR_OF[(dx, dy)]
        bit, opp = _BIT[port], PORT_BITS[OPPOSITE[port]]
        for j, i in enumerate(lanes):
            (ax, ay), (qx, qy) = pts[j][k], pts[j][k + 1]
            n = (qx - ax) * dx + (qy - ay) * dy
            if n < 0:
                raise LaneError(f"lane {i} of {b.lanes} would run backwards on segment {k}")
            if n:
                out.append((ax, ay, dx, dy, n, incoming[j], opp, bit, bit, i))
                incoming[j] = opp
    lx, ly = travel(b.axis, dirs)
    last = _DIR_OF[(lx, ly)]
    reach = 0 if sink_host else b.reach
    end_tx = PORT_BITS[HOST_OUT_PORT] if sink_host else _RAMP_BIT
    if reach:
        end_tx |= _BIT[last]
    if sink_host:
        pitch = 1
    sx, sy = offs[-1]
    spine = _DIR_OF[(sx, sy)]
    if pitch > 1:
        end_tx |= _BIT[spine]
    for j, i in enumerate(lanes):
        ex, ey = pts[j][-1]
        out.append((ex, ey, 0, 0, 1, incoming[j], incoming[j], end_tx, end_tx, i))
    if pitch > 1:  # the spine: its PEs send on along it (but the last) and along their rows
        row = _RAMP_BIT | (_BIT[last] if reach else 0)
        opp = PORT_BITS[OPPOSITE[spine]]
        for j, i in enumerate(lanes):
            ex, ey = pts[j][-1]
            out.append((ex + sx, ey + sy, sx, sy, pitch - 1, opp, opp, row | _BIT[spine], row,
                        i))
    if reach:  # the rows: the landing PEs' first, then each lane's spine's (expand's order)
        opp = PORT_BITS[OPPOSITE[last]]
        heads = [(j, i, 0) for j, i in enumerate(lanes)] + [
            (j, i, s) for j, i in enumerate(lanes) for s in range(1, pitch)]
        for j, i, s in heads:
            ex, ey = pts[j][-1]
            out.append((ex + s * sx + lx, ey + s * sy + ly, lx, ly, reach, opp, opp,
                        _RAMP_BIT | _BIT[last], _RAMP_BIT, i))


def box_elements(boxes: np.ndarray) -> np.ndarray:
    """Elements of each box of (n, 2, ndim) boxes [start, stop) per dim."""
    ext = np.maximum(boxes[:, 1, :] - boxes[:, 0, :], 0)
    return np.prod(ext, axis=1, dtype=np.int64)


def held_bytes(holdings: Iterable[tuple[int, int, np.ndarray | None]], uw: int,
               uh: int) -> int:
    """Bytes the busiest PE of a uw x uh rectangle (unrotated) receives to
    hold values the way a weight-streaming phase's rows hold them: per
    (elements, item bytes, per-row boxes or None) a cut value's row box,
    which reaches every PE of its row (halo overlaps in every row that
    holds them), an uncut value's 1/(uw uh) share. At one wavelet per cycle
    into a PE, the least time a move delivering those holdings takes: the
    schedule's phase `move` and the simulator's check of it both count it
    here."""
    rows = np.zeros(uh, np.int64)
    for numel, item, boxes in holdings:
        rows += (-(-numel // (uh * uw)) if boxes is None else box_elements(boxes)) * item
    return int(rows.max(initial=0))


def union_boxes(boxes: np.ndarray) -> np.ndarray:
    """(n, 2, ndim): the bounding box of each (n, k, 2, ndim) group of boxes,
    empty boxes left out (all empty: an empty box). What a pitched cut lane
    carries for the k rows it serves."""
    live = (boxes[:, :, 1, :] > boxes[:, :, 0, :]).all(axis=2)[..., None]
    big = np.iinfo(np.int64).max
    lo = np.where(live, boxes[:, :, 0, :], big).min(axis=1)
    hi = np.where(live, boxes[:, :, 1, :], 0).max(axis=1)
    none = ~live[:, :, 0].any(axis=1)
    lo[none], hi[none] = 0, 0
    return np.stack([lo, hi], axis=1)


def cut_counts(shape: tuple[int, ...], boxes: np.ndarray) -> np.ndarray:
    """How many lanes carry each element of a value of `shape` (every box
    added to a dense count: the definition `check_cut` is tested against)."""
    count = np.zeros(shape, np.int32)
    for lo, hi in zip(boxes[:, 0, :].tolist(), boxes[:, 1, :].tolist(), strict=True):
        count[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] += 1
    return count


def cell_counts(shape: tuple[int, ...], boxes: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """`cut_counts` on the cells the boxes cut the value into: per axis the
    sorted cuts (0, every box's start and stop, the extent), and the count of
    each cell [cuts[i], cuts[i+1]) x ... (an element's count is its cell's).

    Why: a value is millions of elements but its boxes (one per PE row) cut
    each axis at a few hundred places at most, so counting cells instead of
    elements makes the check of a cut cover cheap; boxes must lie in the
    value. Each box adds +1 on its block of cells: by corners of a
    difference array and a cumulative sum per axis when the cells are few
    for the boxes, else slice by slice (never more work than per element)."""
    nd = len(shape)
    lo, hi = boxes[:, 0, :].astype(np.int64), boxes[:, 1, :].astype(np.int64)
    live = (hi > lo).all(axis=1)
    lo, hi = lo[live], hi[live]
    if not nd:  # a scalar: each box is the whole value
        return [], np.array(len(lo), np.int32)
    cuts = [np.unique(np.concatenate([[0, shape[d]], lo[:, d], hi[:, d]])) for d in range(nd)]
    ia = np.stack([np.searchsorted(cuts[d], lo[:, d]) for d in range(nd)], axis=1)
    ib = np.stack([np.searchsorted(cuts[d], hi[:, d]) for d in range(nd)], axis=1)
    cells = tuple(len(c) - 1 for c in cuts)
    # element operations, roughly: a cumulative sum per axis over the cells and
    # 2^nd corners per box, against each box's cells plus a slice's overhead
    corners = nd * math.prod(n + 1 for n in cells) + 2 ** nd * 30 * len(lo)
    if corners < int(np.prod(ib - ia, axis=1, dtype=np.int64).sum()) + 1000 * len(lo):
        return cuts, _corner_counts(cells, ia, ib)
    count = np.zeros(cells, np.int32)
    for a, b in zip(ia.tolist(), ib.tolist(), strict=True):
        count[tuple(slice(x, y) for x, y in zip(a, b, strict=True))] += 1
    return cuts, count


def _corner_counts(cells: tuple[int, ...], ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Per cell, how many blocks [ia, ib) hold it: +1 and -1 at each block's
    2^nd corners of a difference array, summed up along every axis."""
    nd = len(cells)
    shape = tuple(n + 1 for n in cells)
    size = math.prod(shape)
    plus, minus = [], []
    for corner in range(2 ** nd):
        idx = tuple(ib[:, d] if (corner >> d) & 1 else ia[:, d] for d in range(nd))
        (minus if bin(corner).count("1") % 2 else plus).append(np.ravel_multi_index(idx, shape))
    diff = (np.bincount(np.concatenate(plus), minlength=size)
            - np.bincount(np.concatenate(minus), minlength=size)).reshape(shape)
    for d in range(nd):
        np.cumsum(diff, axis=d, out=diff)
    return diff[tuple(slice(0, n) for n in cells)]


def _in_value(shape: tuple[int, ...], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boxes' (lo, hi) corners; a LaneError names the first box that
    lies outside the value."""
    lo, hi = boxes[:, 0, :], boxes[:, 1, :]
    bad = np.flatnonzero(((lo < 0) | (hi > np.asarray(shape, np.int64)) | (lo > hi)).any(axis=1))
    if bad.size:
        i = int(bad[0])
        raise LaneError(f"lane {i}'s box {_box_txt(boxes[i])} lies outside the value "
                        f"{list(shape)}")
    return lo, hi


def check_cut(shape: tuple[int, ...], boxes: np.ndarray) -> None:
    """Raise LaneError unless the boxes lie in the value and cover every
    element at least once (a declared cover: overlaps are halo elements
    carried on two lanes, never a gap); a gap names its first element in
    row-major order."""
    shape = tuple(int(n) for n in shape)
    if boxes.ndim != 3 or boxes.shape[1] != 2 or boxes.shape[2] != len(shape):
        raise LaneError(f"lane boxes of shape {list(boxes.shape)} do not describe a value of "
                        f"{len(shape)} dims")
    lo, hi = _in_value(shape, boxes)
    if not math.prod(shape):
        return
    cuts, count = cell_counts(shape, boxes)
    if count.min() == 0:  # the first empty cell in row-major order holds the first gap
        cell = np.unravel_index(int(np.argmin(count)), count.shape)
        at = [int(c[i]) for c, i in zip(cuts, cell, strict=True)]
        raise LaneError(f"no lane carries element {at} of the value {list(shape)} (a gap)")


def check_reads(shape: tuple[int, ...], boxes: np.ndarray, reads: np.ndarray) -> None:
    """Raise LaneError unless the lane boxes lie in the value and every
    element some box of `reads` holds (what the sink's PE rows read) lies in
    a lane's box: the cover of a cut whose sink reads only part of its
    value (a slice), whose unread rest need not travel (check_cut is this
    with all of the value read); a gap names its first element in
    row-major order of the cells the boxes cut the value into."""
    shape = tuple(int(n) for n in shape)
    nd = len(shape)
    for what, b in (("lane", boxes), ("read", reads)):
        if b.ndim != 3 or b.shape[1] != 2 or b.shape[2] != nd:
            raise LaneError(f"{what} boxes of shape {list(b.shape)} do not describe a value of "
                            f"{nd} dims")
    lo, hi = _in_value(shape, boxes)
    rlo, rhi = reads[:, 0, :].astype(np.int64), reads[:, 1, :].astype(np.int64)
    live = (rhi > rlo).all(axis=1)
    if not nd or not math.prod(shape) or not live.any():
        return
    rlo = np.clip(rlo[live], 0, shape)
    rhi = np.clip(rhi[live], 0, shape)
    blo, bhi = lo.astype(np.int64), hi.astype(np.int64)
    on = (bhi > blo).all(axis=1)
    blo, bhi = blo[on], bhi[on]
    cuts = [np.unique(np.concatenate([[0, shape[d]], blo[:, d], bhi[:, d], rlo[:, d],
                                      rhi[:, d]])) for d in range(nd)]
    cells = tuple(len(c) - 1 for c in cuts)

    def count(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if not a.shape[0]:
            return np.zeros(cells, np.int64)
        ia = np.stack([np.searchsorted(cuts[d], a[:, d]) for d in range(nd)], axis=1)
        ib = np.stack([np.searchsorted(cuts[d], b[:, d]) for d in range(nd)], axis=1)
        return _corner_counts(cells, ia, ib)

    gap = (count(rlo, rhi) > 0) & (count(blo, bhi) == 0)
    if gap.any():
        cell = np.unravel_index(int(np.argmax(gap)), gap.shape)
        at = [int(c[i]) for c, i in zip(cuts, cell, strict=True)]
        raise LaneError(f"no lane carries element {at} of the value {list(shape)}, which its "
                        "sink reads (a gap)")


def _box_txt(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{int(a)}:{int(b)}" for a, b in zip(box[0], box[1], strict=True)) + "]"


def lane_of_element(boxes: np.ndarray, index: list[int]) -> int:
    """The first lane whose box holds element `index` (-1: none)."""
    ix = np.asarray(index, np.int64)
    inside = ((boxes[:, 0, :] <= ix) & (ix < boxes[:, 1, :])).all(axis=1)
    return int(np.argmax(inside)) if inside.any() else -1


def flattens(shape: tuple[int, ...], view: tuple[int, ...]) -> bool:
    """Whether `view` is the value of `shape` flattened (one axis of all its
    elements, for a value of more than one axis)."""
    return len(shape) > 1 and tuple(int(n) for n in view) == (math.prod(int(n) for n in shape),)


def check_view(shape: tuple[int, ...], view: tuple[int, ...]) -> None:
    """A ValueError unless `view` is a view a cut's boxes may be over: the
    value's shape, one axis of it split (split_axis) or the value
    flattened (flattens)."""
    if not flattens(shape, view):
        split_axis(shape, view)


def split_axis(shape: tuple[int, ...], view: tuple[int, ...]) -> tuple[int, int] | None:
    """(axis, parts) when `view` is `shape` with one axis split into
    (parts, extent // parts) (a grouped conv's channels as (G, C/G)); None
    when the view is the shape itself. A ValueError for any other view."""
    shape, view = tuple(int(n) for n in shape), tuple(int(n) for n in view)
    if view == shape:
        return None
    if len(view) == len(shape) + 1:
        for a in range(len(shape)):
            if view[:a] == shape[:a] and view[a + 2:] == shape[a + 1:] \
                    and view[a] * view[a + 1] == shape[a]:
                return a, view[a]
    raise ValueError(f"the view {list(view)} neither splits one axis of {list(shape)} nor "
                     "flattens it")


def boxes_to_view(boxes: np.ndarray, shape: tuple[int, ...], view: tuple[int, ...]
                  ) -> np.ndarray:
    """(..., 2, len(view)): each box (..., 2, len(shape)) of a value of
    `shape` as the smallest box of its `view` (split_axis) that holds it:
    exact where the box's range of the split axis lies in one part or
    covers whole parts, else its parts whole (a superset, so a window whose
    hull a lane's box holds is held by it); of the value flattened, the
    flat range from the box's first element to its last. Empty boxes stay
    empty."""
    if flattens(shape, view):
        lo, hi = boxes[..., 0, :].astype(np.int64), boxes[..., 1, :].astype(np.int64)
        empty = (hi <= lo).any(axis=-1)
        dims = tuple(int(n) for n in shape)
        first = np.ravel_multi_index(tuple(np.moveaxis(np.where(empty[..., None], 0, lo), -1, 0)),
                                     dims)
        last = np.ravel_multi_index(tuple(np.moveaxis(np.where(empty[..., None], 0, hi - 1), -1,
                                                      0)), dims)
        out = np.stack([first, last + 1], axis=-1)[..., None]
        out[empty] = 0
        return out
    got = split_axis(shape, view)
    if got is None:
        return boxes
    a, g = got
    b = int(shape[a]) // g
    lo, hi = boxes[..., 0, :].astype(np.int64), boxes[..., 1, :].astype(np.int64)
    empty = (hi <= lo).any(axis=-1)
    p0, p1 = lo[..., a] // b, np.maximum(hi[..., a] - 1, 0) // b
    one = p0 == p1
    inner_lo = np.where(one, lo[..., a] - p0 * b, 0)
    inner_hi = np.where(one, hi[..., a] - p0 * b, b)
    vlo = np.concatenate([lo[..., :a], p0[..., None], inner_lo[..., None], lo[..., a + 1:]], -1)
    vhi = np.concatenate([hi[..., :a], p1[..., None] + 1, inner_hi[..., None], hi[..., a + 1:]],
                         -1)
    out = np.stack([vlo, vhi], axis=-2)
    out[empty] = 0
    return out
