"""Per-row input boxes built from per-PE reads: helpers of KernelKind.input_cut.

Why: a cut bundle carries one box per PE row of its sink (wsec.ir.lanes),
and the row multicast delivers that box to every PE of the row. Where the
PEs of one row read different parts of the input (a grouped layout: one
channel group x row group per PE; a spread kind: consecutive blocks of the
flattened value), the row's box is the bounding box (hull) of what its PEs
read, so each PE's window lies inside the box its row's lane carries. A
block of the flattened value is not a box in general; its hull is.
"""

from __future__ import annotations

import numpy as np

from .lanes import box_elements


def flat_hulls(start: np.ndarray, stop: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(n, 2, ndim): the bounding box of the flat elements [start, stop) of a
    value of `shape`, per range (an empty range: an all-zero, empty box).
    The axes before the first one on which the range's first and last
    elements differ are fixed, that axis spans both, the later ones are whole."""
    start = np.asarray(start, np.int64).reshape(-1)
    stop = np.asarray(stop, np.int64).reshape(-1)
    nd = len(shape)
    out = np.zeros((start.size, 2, nd), np.int64)
    live = stop > start
    if not nd or not live.any():
        return out
    dims = np.asarray(shape, np.int64)
    first = np.stack(np.unravel_index(start[live], shape), axis=1)
    last = np.stack(np.unravel_index(stop[live] - 1, shape), axis=1)
    same = np.cumprod(first == last, axis=1).astype(bool)  # fixed axes, a prefix
    split = same.sum(axis=1)[:, None]  # the first axis that varies (nd: one element)
    ax = np.arange(nd)[None, :]
    out[live, 0] = np.where(ax <= split, first, 0)
    out[live, 1] = np.where(ax < split, first + 1,
                            np.where(ax == split, last + 1, dims[None, :]))
    return out


def row_hulls(pe_boxes: np.ndarray) -> np.ndarray:
    """(h, 2, ndim) from per-PE boxes (h, w, 2, ndim): each PE row's hull of
    its PEs' non-empty boxes (a row reading nothing: an all-zero box)."""
    lo, hi = pe_boxes[:, :, 0, :], pe_boxes[:, :, 1, :]
    reads = (hi > lo).all(axis=2)  # [h, w]
    big = np.iinfo(np.int64).max
    rlo = np.where(reads[:, :, None], lo, big).min(axis=1)
    rhi = np.where(reads[:, :, None], hi, -1).max(axis=1)
    any_ = reads.any(axis=1)[:, None]
    return np.stack([np.where(any_, rlo, 0), np.where(any_, rhi, 0)], axis=1)


def grouped_pe(i: np.ndarray, w: int, h: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(px, py) of PE index i of a `grouped_layout` (w, h) of n PEs: row by
    row, the first f = n - (w - 1) h rows w PEs wide and the others w - 1
    (the last column ends at row f), so a row's PEs hold consecutive
    indices: a pooling's or norm's row reads one channel block's adjacent
    row groups, not blocks a column apart (which made a row's box the hull
    of most of the tensor)."""
    i = np.asarray(i, dtype=np.int64)
    f = n - (w - 1) * h
    j = i - f * w
    short = max(w - 1, 1)
    px = np.where(j < 0, i % max(w, 1), j % short)
    py = np.where(j < 0, i // max(w, 1), f + j // short)
    return px, py


def grouped_rows(boxes: np.ndarray, column: int) -> np.ndarray:
    """Per-row boxes of a grouped layout (library_common.grouped_layout and
    grouped_pe: h = min(n, column) rows, a row's PEs consecutive indices)
    from the boxes its n PE indices read ((n, 2, ndim))."""
    n = boxes.shape[0]
    h = max(1, min(n, column))
    w = -(-n // h)
    px, py = grouped_pe(np.arange(n), w, h, n)
    pe = np.zeros((h, w, *boxes.shape[1:]), np.int64)
    pe[py, px] = boxes
    return row_hulls(pe)


def spread_rows(boxes: np.ndarray) -> np.ndarray:
    """Per-row boxes of a near-square spread layout (library_common.squarish:
    PE index i at (i % w, i // w), w = ceil(sqrt(n))) from the boxes its n PE
    indices read ((n, 2, ndim))."""
    n = boxes.shape[0]
    w = max(1, int(np.ceil(np.sqrt(n))))
    h = -(-n // w)
    pe = np.zeros((w * h, *boxes.shape[1:]), np.int64)
    pe[:n] = boxes
    return row_hulls(pe.reshape(h, w, *boxes.shape[1:]))


def joined(*parts: np.ndarray) -> np.ndarray:
    """Boxes over consecutive groups of axes ((n, 2, k) each) as one box
    over all of them; a part that is empty makes the whole box empty (all
    zero)."""
    out = np.concatenate(parts, axis=2)
    empty = (out[:, 1] <= out[:, 0]).any(axis=1)
    out[empty] = 0
    return out


def broadcast_rows(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Per-row boxes of an output grid ((h, 2, ndim)) as the boxes of an
    operand of `shape` broadcast onto it (numpy rules: aligned at the last
    axis, a 1 spans the grid's axis): a row reads [0, 1) of a broadcast
    axis. None when `shape` does not broadcast onto the grid; rows owning
    nothing read nothing."""
    grid = rows[:, 1, :].max(axis=0)
    nd, gd = len(shape), rows.shape[2]
    if nd > gd or any(n not in (1, int(g)) for n, g in zip(shape, grid[gd - nd:], strict=True)):
        return None
    out = rows[:, :, gd - nd:].copy()
    ones = [i for i, n in enumerate(shape) if n == 1]
    out[:, 0, ones], out[:, 1, ones] = 0, 1
    empty = (rows[:, 1, :] <= rows[:, 0, :]).any(axis=1)
    out[empty] = 0
    return out


def flat_reads(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(n, 2, 1): each box (n, 2, ndim) of a value of `shape` as the range
    of the value flattened from its first element to its last (exact for a
    box whose axes after its first varying one are whole, a superset
    otherwise); empty boxes stay empty."""
    lo, hi = boxes[:, 0, :].astype(np.int64), boxes[:, 1, :].astype(np.int64)
    empty = (hi <= lo).any(axis=1)
    dims = tuple(int(n) for n in shape)
    first = np.ravel_multi_index(tuple(np.where(empty[:, None], 0, lo).T), dims)
    last = np.ravel_multi_index(tuple(np.where(empty[:, None], 0, hi - 1).T), dims)
    out = np.stack([first, last + 1], axis=1)[:, :, None]
    out[empty] = 0
    return out


def tighter_flat(boxes: np.ndarray, shape: tuple[int, ...], column: int) -> bool:
    """Whether the PE rows of a grouped layout (`grouped_rows`) whose PE
    indices read `boxes` ((n, 2, ndim) of a value of `shape`) hold fewer
    elements in all as hulls of the value flattened (`flat_reads`) than as
    hulls in its shape: where consecutive PE indices read consecutive flat
    ranges that a box of the shape does not join (the end of one channel's
    rows and the start of the next's), a kind's cut is lighter over the
    flattened view (KernelKind.input_view)."""
    if len(shape) < 2:
        return False
    return bool(box_elements(grouped_rows(flat_reads(boxes, shape), column)).sum()
                < box_elements(grouped_rows(boxes, column)).sum())


def flat_view(boxes: np.ndarray | None, shape: tuple[int, ...], column: int
              ) -> tuple[int, ...] | None:
    """The value of `shape` flattened, where the grouped rows of PE boxes
    `boxes` hold fewer elements in all there (`tighter_flat`); None where
    they do not or there are no boxes: a kind's KernelKind.input_view."""
    if boxes is None or not tighter_flat(boxes, shape, column):
        return None
    return (int(np.prod(shape, dtype=np.int64)),)


def view_rows(boxes: np.ndarray | None, shape: tuple[int, ...], column: int
              ) -> np.ndarray | None:
    """The grouped rows' boxes of PE boxes `boxes`, over the value
    flattened where `flat_view` says so (`flat_reads`), else in its shape:
    a kind's input_cut to match its input_view; None without boxes."""
    if boxes is None:
        return None
    return grouped_rows(flat_reads(boxes, shape) if flat_view(boxes, shape, column)
                        else boxes, column)
