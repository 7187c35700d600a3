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
outputs: one add and one received wavelet per output).
A PE streams its ceil(O/po) x ceil(R/pr) input elements once, keeps one
accumulator per output (fp32) and a double-buffered input row. A scan
(CumSum) sends every element back out, and segments add the carry of the
segments before them (one more pass). Element-wise ops fused after the
reduction run on its outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .graph import Node, Value
from .kernel_kind import Dims, Knobs
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
        d.update(fused_extras(body, values))
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"p": candidates(dims["E"], target.pes, limit=96)}

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """None: the reduced axes are not in the dims (E, O, R only), and an
        output group's inputs are strided over the input unless the reduced
        axes are the trailing ones; its lanes carry the flat split."""
        return None

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
