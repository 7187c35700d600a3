"""Per-PE executor of the reduce kind's scan: CumSum (library_reduce).

Why a scan is a reduction's sibling: every element is an output (O = E),
so with knob p the E elements, scan lines laid end to end (the scanned
axis last, reversed for `reverse`), are dealt out to min(p, E) PEs in
blocks of ceil(E / p). Each PE scans the pieces of lines it holds; a line
cut over several PEs is completed by the carry: the totals of its earlier
pieces, forwarded along the chain of those PEs in order and added by each
PE to its own piece (the kind's "one more pass"). An output element ends
on the PE that holds it.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import Node

from .sim_pe import Env


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def cumsum(env: Env, node: Node, stats: dict[str, int]) -> np.ndarray | None:
    """CumSum per PE; returns the owner of every output element (None: not
    a CumSum with a constant axis)."""
    if node.op != "CumSum" or len(node.inputs) < 2:
        return None
    x = env.get(node.inputs[0], node.name)
    if x.ndim == 0:
        return None
    axis = int(np.asarray(env.get(node.inputs[1], node.name)).reshape(-1)[0]) % x.ndim
    rev, excl = bool(node.attrs.get("reverse", 0)), bool(node.attrs.get("exclusive", 0))
    xm = np.moveaxis(x, axis, -1)
    if rev:
        xm = np.flip(xm, -1)
    R = xm.shape[-1]
    flat = np.ascontiguousarray(xm).reshape(-1)
    E = flat.size
    po = min(max(1, int(env.k.knobs["p"])), max(E, 1))
    n = _cdiv(E, po)
    pos = np.arange(E, dtype=np.int64)
    pe, line = pos // n, pos // max(R, 1)
    piece = pe * (_cdiv(E, max(R, 1)) + 1) + line  # (PE, line): one piece of a line on a PE
    start = np.r_[True, piece[1:] != piece[:-1]]
    acc = np.int64 if np.issubdtype(x.dtype, np.integer) else np.float64
    # each PE's local scan of its pieces (wide accumulator, rounded once)
    cs = np.cumsum(flat.astype(acc))
    base = np.maximum.accumulate(np.where(start, pos, 0))
    before = np.where(base > 0, cs[np.maximum(base - 1, 0)], 0)
    local = cs - before
    # the carry: totals of a line's earlier pieces, forwarded PE to PE in order
    ends = np.r_[np.flatnonzero(start)[1:] - 1, E - 1]
    total = local[ends]
    pl = line[ends]
    follows = np.r_[False, pl[1:] == pl[:-1]]  # the piece continues a line of the PE before
    first = np.maximum.accumulate(np.where(follows, 0, np.arange(total.size)))
    excl_tot = np.cumsum(total) - total
    carry_in = excl_tot - excl_tot[first]  # each hop adds the previous pieces' totals
    y = local + carry_in[np.cumsum(start) - 1]
    if excl:
        y = y - flat.astype(acc)
    ym = y.astype(x.dtype).reshape(xm.shape)
    if rev:
        ym = np.flip(ym, -1)
    env.store(node.outputs[0], np.ascontiguousarray(np.moveaxis(ym, -1, axis)))
    own = pe.reshape(xm.shape)
    if rev:
        own = np.flip(own, -1)
    stats["sharded_pes"] = po
    stats["scan_carries"] = int(follows.sum())
    return np.ascontiguousarray(np.moveaxis(own, -1, axis))  # PE i sits at offset i
