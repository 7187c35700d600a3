"""The matmul kernel kind: Gemm / MatMul (+ fused bias and activation).

A fully connected layer is a weight-stationary systolic array: the weight
matrix [Kd, N] is cut into kx column blocks (along x) and ky row blocks
(along y); PE (px, py) keeps block (py, px) resident. Each input row's
reduction slice py is multicast along its PE row, every PE multiplies it
into ceil(N/kx) partial sums with its `simd` lanes over the output columns,
and the partial sums are reduced down each PE column (one add per output).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .graph import Node, Value
from .kernel_kind import Dims, Knobs
from .library_common import (
    CODE_BYTES,
    KERNEL_OVERHEAD,
    OP_COST,
    ROW_OVERHEAD,
    LibraryKind,
    UnsupportedShape,
    block,
    candidates,
    cdiv,
    elems_per_cycle,
    fused_extras,
    is_const,
    itemsize,
    vtype,
)
from .target import Target

# ops that only relabel a row-major tensor (see form-kernels' VIEW_OPS)
VIEW_OPS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


class MatmulKind(LibraryKind):
    """Gemm / MatMul / two-operand Einsum: kx splits the N output columns
    along x, ky splits the Kd reduction along y. dims: M rows (all rows of
    the product), Kd, N, Bt batches of B, tB = B stored transposed ([N, Kd],
    Gemm transB), Bact = B streamed in per sample (an activation, not a
    resident constant: attention's Q K^T and P V, batched over heads),
    Bwhole = a constant B every PE holds whole (an Einsum whose B is not
    laid out [batch..., Kd, N]), bias = elements of Gemm's C."""

    name = "matmul"
    knob_names = ("kx", "ky")
    description = "matrix product: kx output-column groups (x), ky reduction groups (y)"
    ops = frozenset({"Gemm", "MatMul", "Einsum"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        mm = body[0]
        if mm.op == "Einsum":
            d = einsum_dims(mm, values)
            d.update(fused_extras(body, values))
            return d
        a = vtype(values, mm.inputs[0]).shape
        b = vtype(values, mm.inputs[1]).shape
        if not a or not b:
            raise UnsupportedShape(f"{mm.op} of a scalar operand")
        tb = 0
        if mm.op == "Gemm":
            ta, tb = int(mm.attrs.get("transA", 0)), int(mm.attrs.get("transB", 0))
            kd, m = (a[0], a[1]) if ta else (a[1], a[0])
            n = b[0] if tb else b[1]
            bt = 1
            bias = vtype(values, mm.inputs[2]).numel if len(mm.inputs) > 2 and mm.inputs[2] else 0
        else:
            kd = a[-1]
            n = b[-1] if len(b) >= 2 else 1
            # rows of the product, A broadcast over B's batches included
            m = max(1, vtype(values, mm.outputs[0]).numel // max(n, 1))
            bt = max(1, int(np.prod(b)) // max(kd * n, 1))
            bias = 0
        d = {"M": m, "Kd": kd, "N": n, "Bt": bt, "tB": tb, "bias": bias, "Bwhole": 0,
             "Bact": int(not is_const(values, mm.inputs[1]))}
        if mm.op == "Gemm" and ta:
            d["tA"] = 1  # A stored [Kd, M]: its reduction is not its last axis
        d.update(fused_extras(body, values))
        # a fused Reshape back to 3-D (form-kernels) relabels the block: no cycles
        d["F"] -= sum(OP_COST.get(x.op, 1) * max(1, len([i for i in x.inputs if i]) - 1)
                      for x in body[1:] if x.op in VIEW_OPS)
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"kx": candidates(dims["N"], target.width),
                "ky": candidates(dims["Kd"], target.height)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        kx, ky = kn["kx"], kn["ky"]
        nb, kb = cdiv(d["N"], kx), cdiv(d["Kd"], ky)
        m = d["M"]
        red = (ky > 1).astype(np.int64)
        compute = m * cdiv(nb, target.lanes) * (kb + red + d["F"])
        epc = elems_per_cycle(target)
        recv = cdiv(m * kb + m * nb * (d["A"] + red) + d["Bact"] * d["Bt"] * kb * nb, epc)
        send = cdiv(m * nb, epc)
        cycles = np.maximum(np.maximum(compute, recv), send) + m * ROW_OVERHEAD + KERNEL_OVERHEAD
        b = itemsize(target)
        held = np.where(d.get("Bwhole", 0), d["Bt"] * d["Kd"] * d["N"], d["Bt"] * kb * nb)
        sram = (CODE_BYTES + held * b                                # weight block
                + 2 * (kb + nb * (1 + d["A"])) * b                 # double-buffered rows
                + cdiv((d["bias"] + d["P"]) * nb, d["N"]) * b)     # bias, fused constants
        return kx, ky, cycles, sram

    def reduction_chain(self, dims: Dims, knobs: Knobs) -> int:
        return int(knobs["ky"])

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE row py reads reduction block py of A (multicast along the
        row): every leading index, the block's stretch of A's last axis.
        Only when that axis is the reduction (tA, set for Gemm's transA and
        an Einsum whose A does not end in its one reduced index, marks the
        others: their rows read strided parts, not a box)."""
        kd, ky = dims["Kd"], int(knobs["ky"])
        if dims.get("tA") or not shape or shape[-1] != kd:
            return None
        out = np.zeros((ky, 2, len(shape)), np.int64)
        out[:, 1, :-1] = shape[:-1]
        step = -(-kd // ky)
        out[:, 0, -1] = np.minimum(kd, np.arange(ky) * step)
        out[:, 1, -1] = np.minimum(kd, (np.arange(ky) + 1) * step)
        out[out[:, 1, -1] <= out[:, 0, -1]] = 0  # past the last block: reads nothing
        return out  # the ky reduction blocks of a column, summed along y

    def operand_cut(self, dims: Dims, knobs: Knobs, index: int, shape: tuple[int, ...]
                    ) -> np.ndarray | None:
        """An activation B (attention's K^T, V; Bact): PE (px, py)
        receives B's block (reduction block py, column block px), so PE row
        py reads reduction block py of every column and batch: [..., Kd
        block, N] ([N, Kd block] for Gemm's transB). Not when B is not
        laid out [batch..., Kd, N] (an Einsum's, Bx) or is a constant
        (held in SRAM, never routed)."""
        kd, n, ky = dims["Kd"], dims["N"], int(knobs["ky"])
        if index != 1 or not dims.get("Bact") or dims.get("Bx") or len(shape) < 2:
            return None
        tb = bool(dims.get("tB"))
        if tuple(shape[-2:]) != ((n, kd) if tb else (kd, n)):
            return None
        ax = len(shape) - 1 if tb else len(shape) - 2
        out = np.zeros((ky, 2, len(shape)), np.int64)
        out[:, 1] = shape
        step = -(-kd // ky)
        out[:, 0, ax] = np.minimum(kd, np.arange(ky) * step)
        out[:, 1, ax] = np.minimum(kd, (np.arange(ky) + 1) * step)
        out[out[:, 1, ax] <= out[:, 0, ax]] = 0
        return out

    def output_rows(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                    ) -> np.ndarray | None:
        """The column sums end on the reduction-end row (ky - 1): it owns
        every output element (its PEs split the columns), the rows above
        own nothing. Routed, such an operand of the tail stays flat
        (wsec.ir.kernels.input_cut: the rows before the owner); a
        weight-streaming phase's last row holds it."""
        ky = int(knobs["ky"])
        out = np.zeros((ky, 2, len(shape)), np.int64)
        out[ky - 1, 1] = shape
        return out

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        kd, n = dims["Kd"], dims["N"]
        full = [slice(0, x) for x in weight_shape]
        if dims.get("Bwhole", 0):
            return tuple(full)
        cols, rows = block(n, knobs["kx"], px), block(kd, knobs["ky"], py)
        tail = tuple(weight_shape[-2:])
        # B itself (a resident weight): by reduction rows and columns; with B
        # an activation, a constant of B's shape is a fused operand (an
        # attention mask), used after the reduction by the column's PEs
        b = not dims.get("Bact", 0) and len(weight_shape) >= 2
        if b and dims["tB"] and tail == (n, kd):
            full[-2], full[-1] = cols, rows
        elif b and not dims["tB"] and tail == (kd, n):
            full[-2], full[-1] = rows, cols
        elif weight_shape and weight_shape[-1] == n and n > 1:
            full[-1] = cols  # bias or a fused per-column constant
        return tuple(full)


def _einsum_terms(eq: str, shapes: list[tuple[int, ...]]) -> tuple[list[list[str]], list[str],
                                                                     dict[str, int]]:
    """Operand index lists, output index list and index sizes of an einsum
    equation; an ellipsis becomes one index per broadcast dim ('.0', '.1', ...)."""
    eq = eq.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(shapes):
        raise UnsupportedShape(f"Einsum '{eq}' names {len(terms)} operands, has {len(shapes)}")
    sizes: dict[str, int] = {}
    ops: list[list[str]] = []
    ell = 0
    for t, shp in zip(terms, shapes, strict=True):
        head, dots, tail = t.partition("...")
        k = len(shp) - len(head) - len(tail) if dots else 0
        ell = max(ell, k)
        idx = list(head) + [f".{ell - k + i}" for i in range(k)] + list(tail)
        if len(idx) != len(shp):
            raise UnsupportedShape(f"Einsum term '{t}' does not match rank {len(shp)}")
        for i, n in zip(idx, shp, strict=True):
            sizes[i] = max(sizes.get(i, 1), int(n))
        ops.append(idx)
    if "->" in eq:
        head, dots, tail = rhs.partition("...")
        out = list(head) + ([f".{i}" for i in range(ell)] if dots else []) + list(tail)
    else:
        letters = [c for t in terms for c in t.replace("...", "")]
        out = [f".{i}" for i in range(ell)] + sorted(c for c in set(letters)
                                                      if letters.count(c) == 1)
    return ops, out, sizes


def einsum_dims(node: Node, values: dict[str, Value]) -> Dims:
    """A two-operand Einsum as a (batched) matmul: indices in both operands
    and the output are batches (Bt), indices summed away are the reduction
    Kd, indices of B only are the columns N, and M = output elements / N.
    A constant B whose layout is not [batch..., Kd, N] is held whole."""
    ins = [i for i in node.inputs if i]
    if len(ins) != 2:
        raise UnsupportedShape(f"Einsum of {len(ins)} operands (only two map onto a matmul)")
    ops, out, sizes = _einsum_terms(str(node.attrs.get("equation", "")),
                                    [vtype(values, i).shape for i in ins])
    a, b = ops
    prod = lambda idx: int(np.prod([sizes[i] for i in idx])) if idx else 1  # noqa: E731
    red = [i for i in dict.fromkeys(a + b) if i not in out]
    batch = [i for i in b if i in a and i in out]
    cols = [i for i in b if i not in a and i in out]
    n = prod(cols)
    o = max(1, vtype(values, node.outputs[0]).numel)
    const_b = is_const(values, ins[1])
    plain = b == batch + [i for i in red if i in b] + cols  # B is [batch..., Kd, N]
    # A's reduction is its last axis only when A ends in the one reduced index
    ends = len(red) == 1 and a[-1:] == red and a.count(red[0]) == 1
    d = {"M": max(1, o // max(n, 1)), "Kd": max(1, prod(red)), "N": max(1, n),
         "Bt": max(1, prod(batch)), "tB": 0, "bias": 0, "Bact": int(not const_b),
         "Bwhole": int(const_b and not (plain and len(red) <= 1 and len(cols) <= 1))}
    if not ends:
        d["tA"] = 1
    if not const_b and not (plain and len(red) == 1 and len(cols) == 1):
        d["Bx"] = 1  # an activation B not [batch..., Kd, N]: its rows read no box
    return d
