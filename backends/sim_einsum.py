"""Per-PE executors of Einsum: one operand on the reduce kind, two on the
matmul kind (library_reduce, library_dense.einsum_dims).

Why a canonical form: an equation only names which indices are batches,
rows, reduced or columns. Each operand is relabelled (a repeated index
takes its diagonal, an index it lacks is broadcast) into the layout the
kind's mapping splits, and the result is relabelled back:

- one operand: [outputs, reduced] -> the reduce kind's output groups and
  segments, partials combined along each chain in order (sim_reduce);
- two operands: A [Bt, M, Kd] x B [Bt, Kd, N], exactly the matmul mapping:
  PE (px, py) holds (or receives) B's block (reduction block py, column
  block px) and A's reduction block py, computes its partial product, and
  the ky partials of a column are summed in PE order; a constant B is read
  element by element from each PE's own SRAM shard (whole on every PE when
  the kind holds it whole, `Bwhole`), so a corrupted or swapped shard
  changes exactly that PE's columns.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.library_dense import _einsum_terms

from .sim_base import COMPUTE_DTYPE, SimError
from .sim_inbox import check_inputs, check_windows, point_hulls, window_shape
from .sim_pe import Env
from .sim_tail import const_at


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def relabel(x: np.ndarray, have: list[str], want: list[str], sizes: dict[str, int]
            ) -> np.ndarray:
    """Operand x (indices `have`, maybe repeated) as indices `want`: the
    diagonal of a repeated index, missing indices broadcast."""
    uniq = list(dict.fromkeys(have))
    if len(uniq) != len(have):  # a repeated index: the diagonal
        ids = {c: i for i, c in enumerate(uniq)}
        x = np.einsum(x, [ids[c] for c in have], list(range(len(uniq))))
    order = [uniq.index(c) for c in want if c in uniq]
    x = np.transpose(x, order)
    lab = [c for c in want if c in uniq]
    shape = [x.shape[lab.index(c)] if c in lab else 1 for c in want]
    return np.broadcast_to(x.reshape(shape), [sizes[c] for c in want])


def _flat_index(have: list[str], want: list[str], sizes: dict[str, int],
                shape: tuple[int, ...]) -> np.ndarray:
    """For every element of the relabelled operand (indices `want`), the
    flat index of the stored element it is (relabel on an index tensor)."""
    tag = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    return relabel(tag, have, want, sizes)


def terms(node: Node, shapes: list[tuple[int, ...]]
          ) -> tuple[list[list[str]], list[str], dict[str, int]]:
    return _einsum_terms(str(node.attrs.get("equation", "")), shapes)


def einsum_reduction(env: Env, node: Node) -> tuple[np.ndarray, tuple[int, ...], list[str],
                                                    list[str], dict[str, int]] | None:
    """A one-operand Einsum as a reduction: (x relabelled [out..., red...],
    the reduced axes, out, red, sizes)."""
    ins = [i for i in node.inputs if i]
    if node.op != "Einsum" or len(ins) != 1:
        return None
    x = env.get(ins[0], node.name)
    (a,), out, sizes = terms(node, [x.shape])
    red = [c for c in dict.fromkeys(a) if c not in out]
    xr = relabel(x, a, out + red, sizes)
    return xr, tuple(range(len(out), len(out) + len(red))), out, red, sizes


def check_rows(env: Env, name: str, shape: tuple[int, ...], ky: int, kb: int,
               stats: dict[str, int]) -> None:
    """PE row py of a matmul reads reduction block py of A (multicast along
    the row): every leading index, [py kb, (py + 1) kb) of A's last axis,
    the reduction. Checked against the lanes that delivered A (cut: each
    row's box; flat: counted as forwarded)."""
    d = env.deliveries.get(name)
    if d is None or d.shape != tuple(shape) or not shape:
        return
    stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, reduction_need(shape, ky, kb))


def reduction_need(shape: tuple[int, ...], ky: int, kb: int) -> np.ndarray:
    """(ky, 2, ndim): reduction block py (kb long) of A's last axis, every
    leading index, per PE row py."""
    Kd = shape[-1]
    py = np.arange(ky)
    need = np.zeros((ky, 2, len(shape)), np.int64)
    need[:, 1, :-1] = shape[:-1]
    need[:, 0, -1] = np.minimum(py * kb, Kd)
    need[:, 1, -1] = np.minimum((py + 1) * kb, Kd)
    return need


def operand_need(idx: np.ndarray, pick: np.ndarray, held: np.ndarray,
                 shape: tuple[int, ...]) -> np.ndarray:
    """(ky, kx, 2, ndim) windows (or (ky, 2, ndim) when `pick` is one per
    row, a multicast along it) of an operand as the Einsum's PEs hold it:
    the hull of the stored elements (idx [Bt, X Y]: the flat index of each
    relabelled element) that `pick` ([ky, kx|1, ...]) selects where `held`.
    A scalar operand's windows are boxes of its one element
    (sim_inbox.window_shape): every PE multiplying by it reads it."""
    shape = window_shape(shape)
    pick = np.broadcast_to(pick, np.broadcast_shapes(pick.shape, held.shape))
    held = np.broadcast_to(held, pick.shape)
    ky, kx = pick.shape[:2]
    sel = np.nonzero(held)
    j = idx[:, pick[sel]]  # [Bt, live elements]
    pe = np.broadcast_to(sel[0] * kx + sel[1], j.shape).reshape(-1)
    box = point_hulls(np.stack(np.unravel_index(j.reshape(-1), shape)), pe, ky * kx)
    box = box.reshape(ky, kx, 2, len(shape))
    return box[:, 0] if kx == 1 else box


def einsum_matmul(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    ins = [i for i in node.inputs if i]
    if node.op != "Einsum" or len(ins) != 2:
        return False
    shapes = [env.shape_of(i) for i in ins]
    (a, b), out, sizes = terms(node, shapes)
    batch = [c for c in b if c in a and c in out]
    red = [c for c in dict.fromkeys(a + b) if c not in out]
    cols = [c for c in b if c not in a and c in out]
    rows = [c for c in out if c not in batch and c not in cols]
    Bt, M, Kd, N = (int(np.prod([sizes[c] for c in idx], dtype=np.int64))
                    for idx in (batch, rows, red, cols))
    kx, ky = int(k.knobs["kx"]), int(k.knobs["ky"])
    uw, uh = k.unrotated_shape
    if (uw, uh) != (kx, ky):
        raise SimError(f"kernel '{k.name}' ({k.kind}, knobs {k.knobs}) occupies {uw}x{uh} "
                       f"PEs but its mapping needs {kx}x{ky}")
    kb, nb = _cdiv(Kd, ky), _cdiv(N, kx)
    py, px = np.arange(ky)[:, None], np.arange(kx)[None, :]
    red_i = np.minimum(py[:, :, None] * kb + np.arange(kb), Kd - 1)[:, :, :, None]  # [ky,1,kb,1]
    col_i = np.minimum(px[:, :, None] * nb + np.arange(nb), N - 1)[:, :, None, :]  # [1,kx,1,nb]
    live = ((py[:, :, None] * kb + np.arange(kb)) < Kd)[:, :, :, None] & \
        ((px[:, :, None] * nb + np.arange(nb)) < N)[:, :, None, :]  # [ky, kx, kb, nb]

    def operand(name: str, have: list[str], want: list[str], pick: np.ndarray,
                held: np.ndarray) -> np.ndarray:
        """The operand relabelled `want` ([Bt, X Y] flat), as each PE holds
        or receives it: `pick` ([ky, kx or 1, ...]) indexes X Y, `held`
        marks the elements that exist (the rest: padding, zero)."""
        pick = np.broadcast_to(pick, np.broadcast_shapes(pick.shape, held.shape))
        held = np.broadcast_to(held, pick.shape)
        if name in k.weights:  # each PE's element from its own SRAM shard
            idx = _flat_index(have, want, sizes, env.shape_of(name)).reshape(Bt, -1)
            pick = np.broadcast_to(pick, (ky, kx, *pick.shape[2:]))
            held = np.broadcast_to(held, pick.shape)
            pe = np.broadcast_to(py * uw + px, (ky, kx))[:, :, None, None]
            sel = np.nonzero(held)
            j = idx[:, pick[sel]]  # [Bt, live elements]
            v = np.zeros((Bt, *pick.shape), COMPUTE_DTYPE)
            got = const_at(env, k.weights.index(name), j,
                           np.broadcast_to(pe, pick.shape)[sel][None, :])
            v[(slice(None), *sel)] = got
            return np.moveaxis(v, 0, 2)
        v = relabel(env.get(name, node.name), have, want, sizes).reshape(Bt, -1)
        v = np.where(held[None], v[:, pick], 0)
        return np.moveaxis(v, 0, 2).astype(COMPUTE_DTYPE, copy=False)

    # A [Bt, M, Kd]: row py's PEs receive its reduction block (multicast
    # along the row); B [Bt, Kd, N]: PE (py, px) its block
    a_pick = np.arange(M)[None, None, :, None] * Kd + red_i[:, :, :, 0][:, :, None, :]
    a_held = (py[:, :, None] * kb + np.arange(kb) < Kd)[:, :, None, :]  # [ky, 1, 1, kb]
    av = operand(ins[0], a, batch + rows + red, a_pick, a_held)  # [ky, kx|1, Bt, M, kb]
    bv = operand(ins[1], b, batch + red + cols, red_i * N + col_i, live)  # [ky, kx, Bt, kb, nb]
    needs = []  # each activation operand's block per PE, as it receives it
    for name, have, want, pick, held in ((ins[0], a, batch + rows + red, a_pick, a_held),
                                         (ins[1], b, batch + red + cols, red_i * N + col_i,
                                          live)):
        d = env.deliveries.get(name)
        if name in k.weights or d is None:
            continue
        idx = _flat_index(have, want, sizes, d.shape).reshape(Bt, -1)
        needs.append((d, operand_need(idx, pick, held, d.shape)))
    if needs:
        stats["forwarded_pes"] = check_inputs(env.mem.p, env.ki, needs)
    part = np.matmul(av, bv)  # [ky, kx, Bt, M, nb]: one partial product per PE
    acc = part[0].copy()
    for r in range(1, ky):  # reduced down each PE column, in PE order
        acc += part[r]
    y = np.moveaxis(acc, 0, 2).reshape(Bt, M, kx * nb)[:, :, :N]  # [Bt, M, N]
    lab = batch + rows + cols
    y = y.reshape([sizes[c] for c in lab])
    perm = [lab.index(c) for c in out]
    oshape = env.shape_of(node.outputs[0])
    env.store(node.outputs[0], np.ascontiguousarray(np.transpose(y, perm)).reshape(oshape))
    own = np.broadcast_to(((ky - 1) * uw + np.arange(N) // nb).reshape(1, 1, N), (Bt, M, N))
    own = np.transpose(own.reshape([sizes[c] for c in lab]), perm).reshape(oshape)
    env.owner[node.outputs[0]] = own
    stats["pe_macs_max"] = Bt * M * kb * nb
    stats["sharded_pes"] = kx * ky
    return True
