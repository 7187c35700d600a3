"""The gather kernel kind: table lookups (Gather, GatherElements).

Why a kind of its own: an embedding table is the largest weight of a
language model (50k x 6144 fp16 is 600 MiB) and must never be copied whole
to every PE, while the lookups themselves are pure data movement.

Mapping: the table's rows (its `axis`) are cut into p row blocks along y and,
when `axis` is not the last axis, its last axis into q column blocks along
x; PE (px, py) keeps table block (py, px) resident (`weight_shard`). Every
index is multicast to all PEs; the PEs owning the row answer with their q
column slices, which the output route assembles. Throughput is bounded by
the worst case, all lookups hitting one row block: a PE then sends all
ceil(O/q) of its column's output elements, so q buys speed and p buys SRAM.
A table that is an activation (not a constant) streams in every sample
instead of staying resident. dims: T table elements, V rows (axis size),
Dq last-axis size split by q (1 when axis is the last), ax/nd the axis and
rank of the table, L indices, O output elements, Cst table is a constant.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .graph import Node, Value
from .kernel_kind import Dims, Knobs
from .library_common import (
    CODE_BYTES,
    KERNEL_OVERHEAD,
    LibraryKind,
    UnsupportedShape,
    block,
    candidates,
    cdiv,
    elems_per_cycle,
    is_const,
    itemsize,
    vtype,
)
from .target import Target

INDEX_BYTES = 4  # indices travel and are kept as 32-bit words


class GatherKind(LibraryKind):
    """Gather / GatherElements: table rows split over p PEs (y), the last axis
    over q PEs (x); see the module docstring for the mapping."""

    name = "gather"
    knob_names = ("q", "p")
    description = "table lookup: q column blocks (x), p row blocks of the table (y)"
    ops = frozenset({"Gather", "GatherElements"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        g = body[0]
        data = vtype(values, g.inputs[0]).shape
        if not data:
            raise UnsupportedShape(f"{g.op} from a scalar")
        nd = len(data)
        ax = int(g.attrs.get("axis", 0)) % nd
        if len(body) > 1:
            raise UnsupportedShape("a gather kernel holds exactly one lookup op")
        return {"T": max(1, int(np.prod(data))), "V": max(1, data[ax]),
                "Dq": data[-1] if ax < nd - 1 else 1, "ax": ax, "nd": nd,
                "L": max(1, vtype(values, g.inputs[1]).numel),
                "O": max(1, vtype(values, g.outputs[0]).numel),
                "Cst": int(is_const(values, g.inputs[0]))}

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"q": candidates(dims["Dq"], target.width),
                "p": candidates(dims["V"], target.height)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        q, p = kn["q"], kn["p"]
        rest = max(1, d["T"] // (d["V"] * d["Dq"]))      # elements per row outside Dq
        shard = cdiv(d["V"], p) * rest * cdiv(d["Dq"], q)  # table elements per PE
        out = cdiv(d["O"], q)                               # worst case: one row block answers
        epc, b = elems_per_cycle(target), itemsize(target)
        recv = d["L"] + (1 - d["Cst"]) * cdiv(shard, epc)   # indices (+ a streamed table)
        send = cdiv(out, epc)
        compute = d["L"] + cdiv(out, target.lanes)          # range test per index, row copies
        cycles = np.maximum(np.maximum(recv, send), compute) + KERNEL_OVERHEAD
        row = cdiv(d["Dq"], q) * rest
        sram = (CODE_BYTES + shard * b + d["L"] * INDEX_BYTES + 2 * np.minimum(row, out) * b)
        return q, p, cycles, sram

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE row py keeps table row block py (ceil(V/p) rows of `axis`)
        in all its columns (q blocks of the last axis), every other axis
        whole: that box is what the row reads of a table that is an
        activation (streamed in every sample), whichever rows the indices
        name. The indices are not the anchor's data input: every PE reads
        all of them (a multicast, no cut)."""
        ax, nd, V, p = dims["ax"], dims["nd"], dims["V"], int(knobs["p"])
        if len(shape) != nd or shape[ax] != V:
            return None
        box = np.zeros((p, 2, nd), np.int64)
        box[:, 1] = shape
        rows = np.arange(p) * -(-V // p)
        box[:, 0, ax], box[:, 1, ax] = np.minimum(rows, V), np.minimum(rows + -(-V // p), V)
        box[box[:, 1, ax] <= box[:, 0, ax]] = 0
        return box

    def reads_whole(self, dims: Dims, knobs: Knobs, index: int) -> bool:
        """Every PE reads all of the indices (input 1): each tests every index
        against its row block of the table."""
        return index == 1

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        full = [slice(0, n) for n in weight_shape]
        ax, nd = dims["ax"], dims["nd"]
        if (dims["Cst"] and weight_index == 0 and len(weight_shape) == nd
                and weight_shape[ax] == dims["V"]):
            full[ax] = block(dims["V"], knobs["p"], py)
            if ax < nd - 1:
                full[-1] = block(dims["Dq"], knobs["q"], px)
        return tuple(full)
