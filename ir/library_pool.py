"""Pooling and resizing kernel kinds: MaxPool/AveragePool/global pools and Resize.

Like convolution (library_conv), they stream the feature map row by row,
output rows dealt out to row groups with their window halo, channels to
column groups; they hold no weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .cuts import broadcast_rows, flat_hulls, grouped_rows, joined, view_rows
from .graph import Node, Value
from .kernel_kind import Dims, Knobs
from .library_common import (
    CODE_BYTES,
    ELEMENTWISE_OPS,
    KERNEL_OVERHEAD,
    MAX_COLUMN,
    ROW_OVERHEAD,
    GroupedRowsKind,
    LibraryKind,
    UnsupportedShape,
    block,
    candidates,
    cdiv,
    elems_per_cycle,
    fused_extras,
    grouped_index,
    grouped_layout,
    is_const,
    itemsize,
    spatial,
    vtype,
)
from .library_conv import (
    channel_shard,
    covering_rows,
    fold_depth,
    pair,
    window_dims,
    window_rows,
)
from .opsem_more import resize_plan, resize_taps
from .target import Target


class PoolKind(GroupedRowsKind):
    """Max / average / global pooling (+ fused element-wise ops).

    Mapping: c channel groups x s output-row groups of PEs that share no
    input, so laid out for input lanes (one per PE row): in columns as high
    as allowed, PE index i = channel group i // s, row group i % s
    (`grouped_layout`); a PE keeps a window of
    input rows of its ceil(C/c) channels and one output row. Global pooling
    reduces over the whole map: the s row groups each sum ceil(H/s) input
    rows and their partial results are added across the groups.
    dims: as conv without K/G/bias, plus glob (1 for global pooling).
    3-D ops (conv and pooling) fold the depth axis: N counts samples x
    output depth planes, and T (present only then) input planes per output
    plane multiply the taps, the rows received and the row windows kept.
    """

    name = "pool"
    knob_names = ("c", "s")
    description = "pooling: c channel groups (x), s row groups (y)"
    ops = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        p = body[0]
        xt = vtype(values, p.inputs[0])
        if len(xt.shape) > 5:
            raise UnsupportedShape(f"{p.op} with {len(xt.shape) - 2} spatial axes (input {xt}): "
                                   "only 1-D, 2-D and 3-D pooling maps onto the pool kind")
        if len(xt.shape) == 5:
            return self._dims_3d(body, values)
        x = spatial(xt)
        y = spatial(vtype(values, p.outputs[0]))
        glob = p.op.startswith("Global")
        nsp = len(vtype(values, p.inputs[0]).shape) - 2
        if glob:
            rs = (x[2], x[3])
        else:
            ks = pair(p.attrs, "kernel_shape", 1, nsp)
            nsp = len(ks)
            rs = (ks[0], ks[1]) if nsp == 2 else (1, ks[0])
        d = window_dims(p, x, y, rs, nsp if not glob else 2)
        d["glob"] = int(glob)
        d.update(fused_extras(body, values))
        return d

    def _dims_3d(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        """3-D pooling: global pooling folds depth into the rows; windowed
        pooling runs each output depth plane over T input planes."""
        p = body[0]
        xs = vtype(values, p.inputs[0]).shape
        ys = vtype(values, p.outputs[0]).shape
        if p.op.startswith("Global"):
            x = (xs[0], xs[1], xs[2] * xs[3], xs[4])
            d = window_dims(p, x, (xs[0], xs[1], 1, 1), (x[2], x[3]), 2)
            d["glob"] = 1
        else:
            ks = pair(p.attrs, "kernel_shape", 1, 3)
            flat, x4, y4, extra = fold_depth(p, xs, ys, ks[0])
            d = window_dims(flat, x4, y4, (ks[1], ks[2]), 2)
            d.update(extra)
            d["glob"] = 0
        d.update(fused_extras(body, values))
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        rows = dims["H"] if dims["glob"] else dims["Ho"]
        return {"c": candidates(dims["C"], target.width), "s": candidates(rows, target.height)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        c, s = kn["c"], kn["s"]
        cb = cdiv(d["C"], c)
        epc, b = elems_per_cycle(target), itemsize(target)
        red = (s > 1).astype(np.int64)
        if d["glob"]:
            rows = d["N"] * cdiv(d["H"], s)
            compute = rows * cdiv(d["W"] * cb, target.lanes) + d["N"] * cdiv(cb, target.lanes) * (
                red + d["F"] + 1)
            recv = cdiv(rows * d["W"] * cb + d["N"] * cb * red, epc)
            sram = CODE_BYTES + d["W"] * cb * b + cb * 4 * (1 + d["A"]) + cb * b
            cycles = np.maximum(compute, recv) + rows * ROW_OVERHEAD + KERNEL_OVERHEAD
            w, h = grouped_layout(c * s, target)
            return w, h, cycles, sram
        rows = d["N"] * cdiv(d["Ho"], s)
        wi = d["W"] + d["pw"]
        win = (d["R"] - 1) * d["dh"] + 1
        t = d.get("T", 1)  # 3-D: input depth planes per output plane
        compute = rows * cdiv(d["Wo"] * cb, target.lanes) * (d["R"] * d["S"] * t + 1 + d["F"])
        rows_in = d["N"] * np.minimum(d["H"] + d["ph"], cdiv(d["Ho"], s) * d["sh"] + win - 1)
        recv = cdiv(rows_in * wi * cb * t + rows * d["Wo"] * cb * d["A"], epc)
        send = cdiv(rows * d["Wo"] * cb, epc)
        cycles = np.maximum(np.maximum(compute, recv), send) + rows * ROW_OVERHEAD + KERNEL_OVERHEAD
        sram = (CODE_BYTES + (win + d["sh"]) * wi * cb * t * b + d["Wo"] * cb * b * (1 + d["A"])
                + cdiv(d["P"] * cb, d["C"]) * b)
        w, h = grouped_layout(c * s, target)
        return w, h, cycles, sram

    def input_rows(self, dims: Dims, knobs: Knobs, group: int) -> tuple[int, int]:
        """Padded input rows [start, stop) row group `group` holds (windowed
        pooling: its output rows' span plus the window halo; global pooling:
        its block of ceil(H/s) rows)."""
        if dims.get("glob"):
            b = block(dims["H"], int(knobs["s"]), group)
            return b.start, b.stop
        return window_rows(dims["Ho"], int(knobs["s"]), dims["sh"], dims["R"], dims["dh"], group)

    def halo_axis(self, dims: Dims, knobs: Knobs, view: tuple[int, ...]) -> int | None:
        """A windowed pooling's row groups share the window's halo rows:
        axis 2 of its 4-D input, 3 of a 3-D one (its rows of every plane);
        over the value flattened, or a global pooling's disjoint blocks,
        nothing to exchange (wsec.ir.halo)."""
        if dims.get("glob"):
            return None
        return {4: 2, 5: 3}.get(len(view))

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE index i (grouped layout, in the column height the library
        uses) reads channel block i // s of its row group i % s's input
        rows: windowed pooling its span plus halo (`input_rows`, covering
        the input as conv's cut does), global pooling its block of rows. A
        PE row's box is the hull of its PEs' (wsec.ir.cuts.grouped_rows),
        over the value flattened where `input_view` says so.
        1-D pooling runs as rows of one (row group 0 reads every position
        of its channels); 3-D global pooling folds depth into the rows (a
        block of folded rows: the hull of its planes' rows); 3-D windowed
        pooling (T) holds its channels x rows of every input plane."""
        return view_rows(self._pe_boxes(dims, knobs, shape), shape, MAX_COLUMN)

    def _pe_boxes(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """(c s, 2, ndim): the box of the input (of `shape`) PE index i
        reads (input_cut); None where the pooling's rows are not cut."""
        c, s = int(knobs["c"]), int(knobs["s"])
        N, C, H, W = (dims.get(n, 0) for n in ("N", "C", "H", "W"))
        glob = bool(dims.get("glob"))
        if len(shape) == 4 and not dims.get("T") and tuple(shape) == (N, C, H, W):
            run = tuple(shape)
        elif len(shape) == 3 and H == 1 and tuple(shape) == (N, C, W):
            run = (N, C, 1, W)
        elif len(shape) == 5 and glob and (N, C, H, W) == (shape[0], shape[1],
                                                            shape[2] * shape[3], shape[4]):
            run = (N, C, H, W)
        elif len(shape) == 5 and dims.get("T") and shape[1] == C and \
                tuple(shape[3:]) == (H, W) and not N % max(shape[0], 1):
            run = (N, C, H, W)
        else:
            return None
        rows = np.array([self.input_rows(dims, knobs, g) for g in range(s)], np.int64)
        got = covering_rows(rows, 0 if glob else dims["ph"], H, 0 if glob else dims.get("pt"))
        if got is None:
            return None
        lo, hi = got
        i = np.arange(c * s)
        g, cg = i % s, i // s
        step = -(-C // c)
        pe = np.zeros((i.size, 2, 4), np.int64)
        pe[:, 1] = run
        pe[:, 0, 1] = np.minimum(C, cg * step)
        pe[:, 1, 1] = np.minimum(C, (cg + 1) * step)
        pe[:, 0, 2], pe[:, 1, 2] = lo[g], hi[g]
        pe[(pe[:, 1] <= pe[:, 0]).any(axis=1)] = 0
        return _on_input(pe, tuple(shape), glob)

    def output_rows(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                    ) -> np.ndarray | None:
        """PE index i (grouped layout) owns channel block i // s of its row
        group i % s's output rows (global pooling: the last row group's PE
        of each channel block owns the block); a PE row owns the hull of
        its PEs' (wsec.ir.cuts.grouped_rows). 2-D pooling."""
        if dims.get("T") or dims.get("L1"):
            return None
        c, s = int(knobs["c"]), int(knobs["s"])
        N, C = int(dims.get("N", 0)), int(dims.get("C", 0))
        Ho, Wo = (1, 1) if dims.get("glob") else (int(dims.get("Ho", 0)), int(dims.get("Wo", 0)))
        if min(N, C, Ho, Wo) <= 0:
            return None
        i = np.arange(c * s)
        g, cg = i % s, i // s
        step, hb = -(-C // c), -(-Ho // s)
        pe = np.zeros((i.size, 2, 4), np.int64)
        pe[:, 1, 0], pe[:, 1, 3] = N, Wo
        pe[:, 0, 1], pe[:, 1, 1] = np.minimum(C, cg * step), np.minimum(C, (cg + 1) * step)
        if dims.get("glob"):
            pe[:, 1, 2] = np.where(g == s - 1, 1, 0)
        else:
            pe[:, 0, 2], pe[:, 1, 2] = np.minimum(Ho, g * hb), np.minimum(Ho, (g + 1) * hb)
        pe[(pe[:, 1] <= pe[:, 0]).any(axis=1)] = 0
        return grouped_rows(pe, MAX_COLUMN)

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        c, s = knobs["c"], knobs["s"]
        return channel_shard(dims["C"], c, weight_shape,
                             grouped_index(px, py, rect, c * s) // s)


def _on_input(pe: np.ndarray, shape: tuple[int, ...], glob: bool) -> np.ndarray:
    """Boxes of the 4-D view a pooling runs on ((n, 2, 4): [N, C, rows,
    W]) as boxes of its input of `shape`: 1-D drops the row of one; 3-D
    global unfolds the rows into (plane, row) hulls; 3-D windowed reads
    every plane of its rows."""
    if len(shape) == 4:
        return pe
    live = (pe[:, 1] > pe[:, 0]).all(axis=1)
    if len(shape) == 3:
        out = pe[:, :, [0, 1, 3]].copy()
    elif glob:
        dh = flat_hulls(pe[:, 0, 2], np.maximum(pe[:, 0, 2], pe[:, 1, 2]), tuple(shape[2:4]))
        out = joined(pe[:, :, :2], dh, pe[:, :, 3:])
    else:
        out = np.zeros((pe.shape[0], 2, 5), np.int64)
        out[:, :, [1, 3, 4]] = pe[:, :, [1, 2, 3]]
        out[:, 1, 0], out[:, 1, 2] = shape[0], shape[2]
    out[~live] = 0
    return out


_RESIZE_TAPS = {"nearest": 1, "linear": 2, "cubic": 4}


def _antialias_taps(taps: int, n_in: int, n_out: int) -> int:
    """Taps per output of an antialiased axis: shrinking by n_out / n_in
    stretches the filter's support (taps / 2 each side) by n_in / n_out
    (opsem_more._antialias_taps's window)."""
    if n_out >= n_in:
        return taps
    return 2 * math.ceil(taps / 2 * n_in / max(n_out, 1)) + 1


class ResizeKind(LibraryKind):
    """Resize / upsampling of the spatial axes (+ fused element-wise ops).

    Mapping like pooling: c channel groups along x, s output-row groups
    along y. Resize is separable: a PE resamples each input row it needs
    along W once (tw taps per output column), keeps the last th resampled
    rows and blends them per output row (th taps), so an output element
    costs tw + th multiply-adds for linear (2 + 2) and cubic (4 + 4);
    nearest copies, so its time is the fabric's (receive and send). A PE
    receives the input rows its ceil(Ho/s) output rows map to plus the tap
    halo. Its constants (scales, sizes, roi, fused parameters) are small
    and replicated on every PE.
    dims: N, C, H, W (input), Ho, Wo, th, tw (taps per axis; 1 when the
    axis is not resized), F/A/P (fused ops), Q (Resize's own constant
    elements)."""

    name = "resize"
    knob_names = ("c", "s")
    description = "resize: c channel groups (x), s output-row groups (y)"
    ops = frozenset({"Resize"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        rz = body[0]
        xt, yt = vtype(values, rz.inputs[0]), vtype(values, rz.outputs[0])
        if len(xt.shape) not in (3, 4) or xt.shape[:2] != yt.shape[:2]:
            raise UnsupportedShape(
                f"Resize from {xt} to {yt}: only the spatial axes of an (N, C, W) or "
                "(N, C, H, W) tensor map onto the resize kind (batch and channels must keep "
                "their size)")
        mode = str(rz.attrs.get("mode", "nearest"))
        if mode not in _RESIZE_TAPS:
            raise UnsupportedShape(f"Resize mode '{mode}'")
        n, c, h, w = spatial(xt)
        _, _, ho, wo = spatial(yt)
        taps = _RESIZE_TAPS[mode]
        th, tw = taps, taps
        if int(rz.attrs.get("antialias", 0)) and mode != "nearest":
            th, tw = _antialias_taps(taps, h, ho), _antialias_taps(taps, w, wo)
        q = sum(vtype(values, i).numel for i in rz.inputs[1:] if i and is_const(values, i))
        d = {"N": n, "C": c, "H": h, "W": w, "Ho": ho, "Wo": wo, "Q": q,
             "th": th if (h, ho) != (1, 1) else 1, "tw": tw}
        if str(rz.attrs.get("coordinate_transformation_mode", "")) == "tf_crop_and_resize":
            d["crop"] = 1  # its roi may map any output row anywhere: rows held whole
        d.update(fused_extras(body, values))
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"c": candidates(dims["C"], target.width),
                "s": candidates(dims["Ho"], target.height)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        c, s = kn["c"], kn["s"]
        cb = cdiv(d["C"], c)
        epc, b = elems_per_cycle(target), itemsize(target)
        th, tw = d["th"], d["tw"]
        hb = cdiv(d["Ho"], s)
        rows = d["N"] * hb
        # input rows one row group reads: its share of H plus the taps' halo
        rows_in = d["N"] * np.minimum(d["H"], cdiv(hb * d["H"], d["Ho"]) + th)
        blend = 0 if th * tw == 1 else th + tw  # nearest is a copy
        compute = (rows_in * cdiv(d["Wo"] * cb, target.lanes) * (tw if blend else 0)
                   + rows * cdiv(d["Wo"] * cb, target.lanes) * (th * (blend > 0) + d["F"]))
        recv = cdiv(rows_in * d["W"] * cb + rows * d["Wo"] * cb * d["A"], epc)
        send = cdiv(rows * d["Wo"] * cb, epc)
        cycles = np.maximum(np.maximum(compute, recv), send) + rows * ROW_OVERHEAD + KERNEL_OVERHEAD
        sram = (CODE_BYTES + d["W"] * cb * b                 # the input row being resampled
                + th * d["Wo"] * cb * b * (blend > 0)          # resampled rows kept for blending
                + d["Wo"] * cb * b * (1 + d["A"])              # output (+ residual) row
                + (2 * d["Wo"] + d["Q"] + d["P"]) * 4)         # tap tables, constants
        return c, s, cycles, sram

    def input_rows(self, dims: Dims, knobs: Knobs, group: int) -> tuple[int, int]:
        """Input rows [start, stop) output-row group `group` holds: the rows
        its ceil(Ho/s) output rows map to (output row i near input row
        i H / Ho, within H / Ho rows in every coordinate mode but
        tf_crop_and_resize, whose roi can point anywhere: all rows) plus the
        taps' halo."""
        H, Ho = dims["H"], dims["Ho"]
        hb = cdiv(Ho, int(knobs["s"]))
        a, b = group * hb, min(Ho, (group + 1) * hb)
        if dims.get("crop") or b <= a:
            return (0, int(H)) if b > a else (0, 0)
        margin = dims["th"] // 2 + 1 + math.ceil(H / Ho)
        return (int(max(0, a * H // Ho - margin)), int(min(H, -(-b * H // Ho) + margin)))

    def halo_axis(self, dims: Dims, knobs: Knobs, view: tuple[int, ...]) -> int | None:
        """A 4-D Resize's output-row groups share the input rows their taps
        read on either side of a boundary: axis 2 (wsec.ir.halo)."""
        return 2 if len(view) == 4 else None

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE (px, py) is channel group px of output-row group py and reads
        its channels of the input rows `input_rows` gives (span plus the
        taps' halo), the rest of a row whole; a PE row's box is the hull
        over its columns: all channels of the group's rows (rows between
        two groups' windows that no tap reads go to the group before, so
        the boxes cover the input: `covering_rows`). The executor
        (sim_resample.resize) checks every PE's window against its lane.
        Only 4-D Resize splits rows; 1-D and 3-D hold theirs whole on one
        row group: None."""
        N, C, H, W = (dims.get(n, 0) for n in ("N", "C", "H", "W"))
        if len(shape) != 4 or tuple(shape) != (N, C, H, W):
            return None
        s = int(knobs["s"])
        rows = np.array([self.input_rows(dims, knobs, g) for g in range(s)], np.int64)
        got = covering_rows(rows, 0, H)
        if got is None:
            return None
        lo, hi = got
        box = np.zeros((s, 2, 4), np.int64)
        box[:, 1] = (N, C, 0, W)
        box[:, 0, 2], box[:, 1, 2] = lo, hi
        box[hi <= lo] = 0
        return box

    def body_cut(self, kernel: Any, value: str, ops: Any) -> np.ndarray | None:
        """Routed, a 4-D Resize's data input by the rows its taps really
        read: input_cut's windows (`input_rows`) come from the dims alone,
        so they add a margin any scale and coordinate mode stays within
        (2x linear upsampling: 7 input rows for a group of 2 output rows,
        which read 2 or 3); with the node's scales or sizes (constants) its
        taps give each output-row group's rows exactly (`tap_windows`, as
        the executor computes them), covered as input_cut covers its
        (`covering_rows`). Where its fused element-wise tail reads the
        input again (U-Net's x + Resize(x) at scale 1: a value read twice
        has no one box per row in general, wsec.ir.kernels.input_cut), the
        box also holds the output rows the group owns broadcast back onto
        the input (wsec.ir.cuts.broadcast_rows). None otherwise (the
        crop mode, a 1-D or 3-D Resize, scales not constant: input_cut)."""
        body, dims, knobs = kernel.body, kernel.dims, kernel.knobs
        if not ops.routed or not knobs or not body or not body[0].inputs \
                or body[0].op != "Resize" or body[0].inputs[0] != value \
                or ops.const(value) is not None or dims.get("crop"):
            return None
        tail = [n for n in body[1:] if value in n.inputs]
        if value in body[0].inputs[1:] or any(n.op not in ELEMENTWISE_OPS for n in tail):
            return None
        shape = tuple(int(n) for n in ops.shape(value))
        out = tuple(int(n) for n in ops.shape(body[0].outputs[0]))
        if len(shape) != 4 or len(out) != 4 or tuple(shape) != (dims["N"], dims["C"], dims["H"],
                                                                dims["W"]):
            return None
        args = [ops.const(i) if i else None for i in list(body[0].inputs[1:4])]
        if any(i and a is None for i, a in zip(body[0].inputs[1:4], args, strict=False)):
            return None  # scales or sizes computed at run time
        s = int(knobs["s"])
        try:
            win = tap_windows(body[0], shape, (args + [None] * 3)[:3], s)
        except ValueError:
            return None
        got = covering_rows(win, 0, shape[2])
        if got is None:
            return None
        rows = np.zeros((s, 2, 4), np.int64)
        rows[:, 1] = (shape[0], shape[1], 0, shape[3])
        rows[:, 0, 2], rows[:, 1, 2] = got
        rows[got[1] <= got[0]] = 0
        if not tail:
            return rows
        Ho = out[2]
        hb = -(-Ho // s)
        own = np.zeros((s, 2, 4), np.int64)
        own[:, 1] = out
        own[:, 0, 2] = np.minimum(Ho, np.arange(s) * hb)
        own[:, 1, 2] = np.minimum(Ho, (np.arange(s) + 1) * hb)
        own[own[:, 1, 2] <= own[:, 0, 2]] = 0
        read = broadcast_rows(own, shape)
        if read is None:
            return None
        live = (read[:, 1] > read[:, 0]).all(axis=1)
        none = ~(rows[:, 1] > rows[:, 0]).all(axis=1)
        both = live & ~none
        rows[both, 0] = np.minimum(rows[both, 0], read[both, 0])
        rows[both, 1] = np.maximum(rows[both, 1], read[both, 1])
        rows[live & none] = read[live & none]
        return rows

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        return tuple(slice(0, n) for n in weight_shape)  # small: replicated


def tap_windows(node: Node, shape: tuple[int, ...], args: list[np.ndarray | None], s: int
                ) -> np.ndarray:
    """(s, 2): the input rows [start, stop) of a 4-D Resize (`node` on an
    input of `shape`; args: its roi, scales, sizes) each of s output-row
    groups (ceil(Ho / s) consecutive output rows) reads: the rows of its
    taps of non-zero weight (nearest: its one tap), or, where the rows are
    not resized, its own rows; a group with no output rows reads none. The
    executor (wsec.backends.sim_resample) holds and checks exactly these,
    and ResizeKind.body_cut cuts by them."""
    out, sc, rois = resize_plan(node, tuple(shape), *args)
    H, Ho = int(shape[2]), int(out[2])
    hb = -(-Ho // s)
    if Ho == H and sc[2] == 1.0 and rois[2] == (0.0, 1.0):
        lo, hi = np.arange(Ho), np.arange(Ho) + 1
    else:
        idx, w, _ = resize_taps(node, H, Ho, sc[2], rois[2])
        used = np.ones(idx.shape, bool) if str(node.attrs.get("mode", "nearest")) == "nearest" \
            else w != 0
        lo = np.where(used, idx, H).min(axis=1)
        hi = np.where(used, idx + 1, 0).max(axis=1)
    win = np.zeros((s, 2), np.int64)
    g = np.arange(Ho) // hb
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    win[g[starts], 0] = np.minimum.reduceat(lo, starts)
    win[g[starts], 1] = np.maximum.reduceat(hi, starts)
    win[win[:, 1] <= win[:, 0]] = 0
    return win
