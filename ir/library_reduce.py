"""The reduce kernel kind: reductions, arg-reductions and scans along axes.

Why a kind of its own: transformer exports are full of reductions that are
neither a softmax nor a pooling window (ReduceMean of a decomposed
LayerNorm, ReduceSum of a loss, ArgMax of a classifier head, CumSum of
position ids), and a reduction's cost is set by how its R reduced elements
per output are split over PEs, not by the element count alone.

Mapping (one knob p, a near-square rectangle of p PEs): the O outputs are
dealt out to min(p, O) output groups; when p > O the remaining factor
p // O (at most R) splits each output's R elements into segments whose
partial results are combined along a chain of the segment PEs (each adds
the partial it receives to its own and forwards it, pipelined over the
outputs: one add and one received wavelet per output). The PE indices
of a reduction holding work fill the rectangle's rows as evenly as they
go, in order (`reduce_layout`), so every row's input lane carries a fair
share.
A PE streams its ceil(O/po) x ceil(R/pr) input elements once, keeps one
accumulator per output (fp32) and a double-buffered input row. A scan
(CumSum) sends every element back out, and segments add the carry of the
segments before them (one more pass). Element-wise ops fused after the
reduction run on its outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cuts import flat_hulls, joined, row_hulls
from .graph import Node, Value
from .kernel_kind import Dims, Knobs
from .lanes import box_elements
from .library_common import (
    CODE_BYTES,
    KERNEL_OVERHEAD,
    ROW_OVERHEAD,
    LibraryKind,
    UnsupportedShape,
    candidates,
    cdiv,
    elems_per_cycle,
    fused_extras,
    itemsize,
    squarish,
    vtype,
)
from .target import Target

REDUCE_OPS = frozenset({
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceSumSquare", "ArgMax", "ArgMin", "CumSum",
})
# cycles per input element on one SIMD lane group (the combine op, plus |x| or x*x first)
ELEM_COST = {"ReduceL1": 2, "ReduceL2": 2, "ReduceSumSquare": 2, "ArgMax": 2, "ArgMin": 2}
ROW_BUFFER = 256  # elements of the double-buffered input row a PE streams through


def reduce_extent(node: Node, values: dict[str, Value]) -> tuple[int, int, int]:
    """(E input elements, O outputs, R reduced elements per output) of a
    reduction, arg-reduction, scan or one-operand Einsum."""
    x = vtype(values, node.inputs[0])
    e = max(1, x.numel)
    if node.op == "CumSum":
        axis_name = node.inputs[1] if len(node.inputs) > 1 else ""
        if not axis_name or values[axis_name].const is None:
            raise UnsupportedShape("CumSum with a run-time axis (the axis must be a constant)")
        axis = int(np.asarray(values[axis_name].const.array()).reshape(-1)[0])
        axis %= max(1, len(x.shape))
        return e, e, max(1, x.shape[axis]) if x.shape else 1
    o = max(1, vtype(values, node.outputs[0]).numel)
    return e, o, max(1, e // o)


def reduce_boxes(shape: tuple[int, ...], axes: tuple[int, ...], po: int, pr: int
                 ) -> np.ndarray:
    """(po pr, 2, ndim): the box of the input PE index i = g pr + j of a
    reduction reads: output group g's block of the outputs (ceil(O/po),
    consecutive over the kept axes) x segment j's block of each output's
    reduced elements (ceil(R/pr), consecutive over the reduced axes); the
    hull of each where a block is not a box (wsec.ir.cuts.flat_hulls)."""
    keep = [a for a in range(len(shape)) if a not in axes]
    kept = tuple(shape[a] for a in keep)
    red = tuple(shape[a] for a in axes)
    o, r = int(np.prod(kept)), int(np.prod(red))
    ob, rb = cdiv(o, po), cdiv(r, pr)
    i = np.arange(po * pr)
    g, j = i // pr, i % pr
    a = flat_hulls(np.minimum(g * ob, o), np.minimum((g + 1) * ob, o), kept)
    b = flat_hulls(np.minimum(j * rb, r), np.minimum((j + 1) * rb, r), red)
    box = joined(a, b)  # [kept..., reduced...]
    out = np.zeros_like(box)
    out[:, :, keep + list(axes)] = box
    return out


def reduce_ranges(shape: tuple[int, ...], axes: tuple[int, ...], po: int, pr: int
                  ) -> np.ndarray | None:
    """(po pr, 2, 1): over the value flattened, the range PE index i = g pr
    + j reads (`reduce_boxes`' outputs x segment): exact where each PE holds
    one output or the whole of each output's elements (pr = 1), the range
    from its first output's segment to its last's otherwise. None unless
    the reduced axes are the trailing ones (then output o's elements are
    the flat range [o R, (o + 1) R): a global pooling's channel maps)."""
    nd = len(shape)
    if not axes or tuple(axes) != tuple(range(nd - len(axes), nd)):
        return None
    r = int(np.prod([shape[a] for a in axes]))
    o = int(np.prod(shape)) // max(r, 1)
    ob, rb = cdiv(o, po), cdiv(r, pr)
    i = np.arange(po * pr)
    g, j = i // pr, i % pr
    o0, o1 = np.minimum(g * ob, o), np.minimum((g + 1) * ob, o)
    s0, s1 = np.minimum(j * rb, r), np.minimum((j + 1) * rb, r)
    live = (o1 > o0) & (s1 > s0)
    out = np.zeros((i.size, 2, 1), np.int64)
    out[live, 0, 0] = (o0 * r + s0)[live]
    out[live, 1, 0] = ((o1 - 1) * r + s1)[live]
    return out


def working_pes(o: int, po: int, pr: int) -> int:
    """How many PE indices of a reduction hold work: whole output groups of
    ceil(O / po) outputs (the last may hold fewer, those after it none),
    each of pr segment PEs."""
    return cdiv(o, cdiv(o, po)) * pr if o > 0 else pr


def reduce_layout(n: int, w: int, h: int) -> np.ndarray:
    """The linear offset (py w + px) in a w x h rectangle of the PE index
    u < n of a reduction (n PEs holding work, `working_pes`; the PE
    indices after them sit after the last row's): row py takes the
    consecutive indices u with floor(u h / n) = py, from its first PE on,
    so the rows hold as many (n / h, rounded either way) where a
    row-major deal would leave the last rows idle. Why: a PE row's cut
    lane carries what its PEs read, so with 24 channel maps on 36 PEs a
    row-major deal put 6 maps on each of four rows (1.5x a sixth of the
    value on a lane, over a link's capacity: the router kept it flat) where
    six rows of 4 are the fair share. Equal to row-major where n = w h."""
    u = np.arange(n, dtype=np.int64)
    if n <= 0:
        return u
    y = u * h // n
    return y * w + u - (-(-y * n // h))



def reduced_axes(node: Node, values: dict[str, Value]) -> tuple[int, ...] | None:
    """The axes a Reduce* (constant or attribute axes; none: all) or
    ArgMax / ArgMin reduces, None when not known at compile time or the op
    is the identity (noop_with_empty_axes)."""
    nd = len(vtype(values, node.inputs[0]).shape)
    if node.op in ("ArgMax", "ArgMin"):
        return (int(node.attrs.get("axis", 0)) % max(nd, 1),) if nd else None
    if not node.op.startswith("Reduce"):
        return None
    axes = None
    if len(node.inputs) > 1 and node.inputs[1]:
        if values[node.inputs[1]].const is None:
            return None
        axes = [int(a) for a in np.asarray(values[node.inputs[1]].const.array()).reshape(-1)]
    elif "axes" in node.attrs:
        axes = [int(a) for a in node.attrs["axes"]]  # type: ignore[union-attr]
    if not axes:
        return None if node.attrs.get("noop_with_empty_axes", 0) or not nd else tuple(range(nd))
    return tuple(sorted({a % nd for a in axes}))


class ReduceKind(LibraryKind):
    """Reduce* / ArgMax / ArgMin / CumSum (+ fused element-wise ops on the
    result) over p PEs. dims: E input elements, O outputs, R reduced
    elements per output, scan (1 for CumSum: every element is an output),
    C cycles per input element, F/A/P fused op cycles per output, extra
    activation operands and constant elements."""

    name = "reduce"
    knob_names = ("p",)
    description = "reduction over p PEs: output groups, then segments of each output's inputs"
    ops = REDUCE_OPS

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        node = body[0]
        if node.op == "Einsum" and len([i for i in node.inputs if i]) != 1:
            raise UnsupportedShape("an Einsum of several operands is not a reduction")
        e, o, r = reduce_extent(node, values)
        d = {"E": e, "O": o, "R": r, "scan": int(node.op == "CumSum"),
             "C": ELEM_COST.get(node.op, 1)}
        axes = reduced_axes(node, values)
        if axes is not None:  # which axes: the input each PE reads (input_cut)
            d["Rx"] = sum(1 << a for a in axes)
        d.update(fused_extras(body, values))
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"p": candidates(dims["E"], target.pes, limit=96)}

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE index i = g pr + j (at its `reduce_layout` offset in the
        near-square rectangle) reads output group g's block of the outputs x
        segment j's block of their reduced elements (`reduce_boxes`, on the
        reduced axes the dims name: Rx, a bit per axis); a PE row's box is
        the hull of its PEs', over the value flattened where `input_view`
        says so. A scan (CumSum) and a one-operand Einsum (its operand
        relabelled first) name no axes: None."""
        return self._rows(dims, knobs, tuple(shape), self.input_view(dims, knobs, shape))

    def input_view(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                   ) -> tuple[int, ...] | None:
        """The value flattened where the reduced axes are its trailing ones
        and the PE rows' reads hold fewer elements in all there
        (`reduce_ranges`); else None. Why: a row's PEs hold consecutive
        segments of consecutive outputs, so a row takes the last segments
        of one channel map and the first of the next; in (N, C, H, W) its
        hull is both channels' whole maps (MobileNet-v3's squeeze-excite
        mean, 12 segments per map on rows of 14: 2 maps, 1.75x the row's
        share, over a link's capacity, and the router kept it flat).
        Flattened, those segments are one range."""
        if len(shape) < 2:
            return None
        rows = self._rows(dims, knobs, tuple(shape), None)
        flat = (int(np.prod(shape, dtype=np.int64)),)
        line = self._rows(dims, knobs, tuple(shape), flat)
        if rows is None or line is None or \
                int(box_elements(line).sum()) >= int(box_elements(rows).sum()):
            return None
        return flat

    def held_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                 ) -> np.ndarray | None:
        """input_cut's boxes in the value's own shape (rows holding them
        without lanes: a weight-streaming phase, where there is no view)."""
        return self._rows(dims, knobs, tuple(shape), None)

    def _rows(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...],
              view: tuple[int, ...] | None) -> np.ndarray | None:
        """Per PE row (`reduce_layout` in the near-square rectangle) the
        hull of its PEs' boxes (`reduce_boxes`), or over the value
        flattened (`view`) their ranges (`reduce_ranges`); None where the
        dims name no axes (a scan, an Einsum) or do not match `shape`."""
        if "Rx" not in dims or dims.get("scan") or not shape:
            return None
        axes = tuple(a for a in range(len(shape)) if dims["Rx"] >> a & 1)
        p, outs = int(knobs["p"]), dims["O"]
        if dims["Rx"] >> len(shape) or int(np.prod(shape)) != dims["E"] or \
                int(np.prod([shape[a] for a in axes])) != dims["R"]:
            return None
        po = min(p, outs)
        pr = min(max(1, p // outs), max(dims["R"], 1))
        pe = reduce_boxes(shape, axes, po, pr) if view is None else \
            reduce_ranges(shape, axes, po, pr)
        if pe is None:
            return None
        w = max(1, int(np.ceil(np.sqrt(p))))  # as squarish, below the grid's width
        h = -(-p // w)
        n = working_pes(outs, po, pr)
        grid = np.zeros((w * h, *pe.shape[1:]), np.int64)
        grid[reduce_layout(n, w, h)] = pe[:n]
        return row_hulls(grid.reshape(h, w, *pe.shape[1:]))

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        p = kn["p"]
        po = np.minimum(p, d["O"])
        pr = np.minimum(np.maximum(1, p // d["O"]), d["R"])
        outs = cdiv(d["O"], po)                      # outputs per PE
        seg = cdiv(d["R"], pr)                       # reduced elements per output per PE
        elems = outs * seg
        steps = (pr > 1).astype(np.int64)  # partials pipelined along the segment chain
        simd, epc, b = target.lanes, elems_per_cycle(target), itemsize(target)
        scan = d["scan"]
        compute = (cdiv(elems, simd) * (d["C"] + scan * (pr > 1))
                   + cdiv(outs, simd) * (steps + d["F"] + 1))
        sent = elems if scan else outs
        recv = cdiv(elems + outs * (steps + d["A"]), epc)
        send = cdiv(sent, epc)
        rows = cdiv(elems, ROW_BUFFER)
        cycles = np.maximum(np.maximum(compute, recv), send) + rows * ROW_OVERHEAD + KERNEL_OVERHEAD
        sram = (CODE_BYTES + 2 * np.minimum(elems, ROW_BUFFER) * b   # input row, double-buffered
                + outs * 4 * (1 + d["A"])                            # fp32 accumulators (+ operand)
                + scan * 2 * np.minimum(elems, ROW_BUFFER) * b       # scan output row
                + d["P"] * b)                                        # fused constants (replicated)
        w, h = squarish(p, target)
        return w, h, cycles, sram
