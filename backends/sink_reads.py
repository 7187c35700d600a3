"""What a cut bundle's sink reads of its value, from the binary alone.

Why: a cut bundle's lanes carry the boxes its sink's kind declares per PE
row (wsec.ir.kernels.input_cut), and the loader checks they carry the
value. A sink may read only part of it (a slice of a tensor), and the
elements nobody reads need not travel: then the lanes must carry every
element some PE row reads (wsec.ir.lanes.check_reads), which the loader
and the simulator's route check learn here from what the binary records
(the kernel's kind, dims, knobs and body, and its constants rebuilt from
its PEs' SRAM images), as the compiler's kinds declared them.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import Kernel
from wsec.ir.kernels import cut_view, input_cut
from wsec.ir.movement import Operands

from .format import KernelInfo, Program, type_shape
from .sim_base import SimError
from .sim_pe import SramImages, node_of


def ir_kernel(k: KernelInfo) -> Kernel:
    """The binary's kernel as the IR's (what the kinds' cuts read)."""
    return Kernel(k.name, "kernel", list(k.inputs), list(k.outputs), kind=k.kind,
                  dims=dict(k.dims), body=[node_of(d) for d in k.body], knobs=dict(k.knobs))


def sink_reads(p: Program, bi: int) -> tuple[np.ndarray, tuple[int, ...]] | None:
    """(per PE row the box of the value it reads, the shape the boxes are
    over) for cut bundle bi's sink, as its kind declares them on a routed
    cut; None where the kind declares none or the binary's constants it
    needs do not rebuild."""
    r = p.bundles[bi]
    ki = int(r["sink"])
    if ki < 0:
        return None
    k = p.kernels[ki]
    value = p.edges[int(r["edge"])].value
    mem = SramImages(p)
    consts: dict[str, np.ndarray | None] = {}

    def const(name: str) -> np.ndarray | None:
        if name not in consts:
            try:
                consts[name] = (mem.assembled(ki, k.weights.index(name))
                                if name in k.weights else None)
            except SimError:
                consts[name] = None
        return consts[name]

    ops = Operands(lambda n: tuple(type_shape(p.info["values"][n])), const, True, True)
    kernel = ir_kernel(k)
    shape = tuple(type_shape(p.info["values"][value]))
    try:
        rows = input_cut(kernel, value, shape, ops)
        view = cut_view(kernel, value, shape, ops)
    except (KeyError, ValueError, IndexError):
        return None
    if rows is None or rows.ndim != 3 or rows.shape[-1] != len(view):
        return None
    return rows, view
