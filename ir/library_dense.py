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


class MatmulKind(LibraryKind):
    """Gemm / MatMul: kx splits the N output columns along x, ky splits the
    Kd reduction along y. dims: M rows (all rows of A), Kd, N, Bt batches of
    B, tB = B stored transposed ([N, Kd], Gemm transB), Bact = B streamed
    in per sample (an activation, not a resident constant), bias = elements
    of Gemm's C."""

    name = "matmul"
    knob_names = ("kx", "ky")
    description = "matrix product: kx output-column groups (x), ky reduction groups (y)"
    ops = frozenset({"Gemm", "MatMul"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        mm = body[0]
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
            m = max(1, int(np.prod(a)) // max(kd, 1))
            bt = max(1, int(np.prod(b)) // max(kd * n, 1))
            bias = 0
        d = {"M": m, "Kd": kd, "N": n, "Bt": bt, "tB": tb, "bias": bias,
             "Bact": int(not is_const(values, mm.inputs[1]))}
        d.update(fused_extras(body, values))
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"kx": candidates(dims["N"], target.width),
                "ky": candidates(dims["Kd"], target.height)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        kx, ky = kn["kx"], kn["ky"]
        nb, kb = cdiv(d["N"], kx), cdiv(d["Kd"], ky)
        m = d["M"]
        red = (ky > 1).astype(np.int64)
        compute = m * cdiv(nb, target.simd) * (kb + red + d["F"])
        epc = elems_per_cycle(target)
        recv = cdiv(m * kb + m * nb * (d["A"] + red) + d["Bact"] * d["Bt"] * kb * nb, epc)
        send = cdiv(m * nb, epc)
        cycles = np.maximum(np.maximum(compute, recv), send) + m * ROW_OVERHEAD + KERNEL_OVERHEAD
        b = itemsize(target)
        sram = (CODE_BYTES + d["Bt"] * kb * nb * b                  # weight block
                + 2 * (kb + nb * (1 + d["A"])) * b                 # double-buffered rows
                + cdiv((d["bias"] + d["P"]) * nb, d["N"]) * b)     # bias, fused constants
        return kx, ky, cycles, sram

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int) -> tuple[slice, ...]:
        kd, n = dims["Kd"], dims["N"]
        full = [slice(0, x) for x in weight_shape]
        cols, rows = block(n, knobs["kx"], px), block(kd, knobs["ky"], py)
        tail = tuple(weight_shape[-2:])
        if len(weight_shape) >= 2 and dims["tB"] and tail == (n, kd):
            full[-2], full[-1] = cols, rows
        elif len(weight_shape) >= 2 and not dims["tB"] and tail == (kd, n):
            full[-2], full[-1] = rows, cols
        elif weight_shape and weight_shape[-1] == n and n > 1:
            full[-1] = cols  # bias or a fused per-column constant
        return tuple(full)
