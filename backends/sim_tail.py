"""Element-wise work per PE: fused tails and element-wise kernels.

Why: after an anchor (conv, matmul, pool, ...) every output element lives
on one PE (its *owner*: the reduction-end PE of its column and row group),
and the fused element-wise ops run there, on that PE's elements only, with
that PE's own shard of every constant (bias, scale, mask) and the residual
elements delivered to it. An element-wise kernel is the same with no anchor:
its PEs own blocks of the output.

Computing an element-wise op is the same expression on every element, so
the PEs are vectorised as one array over the output grid; what is per PE
(and checked) is where each operand element comes from: a constant's
element is read from the SRAM image of the PE that owns the output element
(`const_on_owners`): a PE whose shard lacks it raises SimError naming the
PE, and a corrupted shard changes exactly its PE's elements. A computed
operand (a norm's scale from another kernel) is read from the delivered
value (`operand_on_owners`).
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.lanes import flattens
from wsec.ir.library_common import ELEMENTWISE_OPS

from .format import type_shape
from .sim_base import COMPUTE_DTYPE, SimError
from .sim_inbox import check_windows, grid_pe, window_shape
from .sim_pe import Env, run_op

# element-wise ops whose result at an element depends on its position, not
# only on the operands' elements there (each PE knows its elements' positions)
_POSITIONAL = frozenset({"Trilu"})


def broadcast_index(shape: tuple[int, ...], grid: tuple[int, ...]) -> np.ndarray | None:
    """For every element of `grid`, the flat index of the element of an
    operand of `shape` that numpy broadcasting reads (None: not broadcastable
    onto the grid)."""
    if len(shape) > len(grid):
        if any(n != 1 for n in shape[:len(shape) - len(grid)]):
            return None
        shape = shape[len(shape) - len(grid):]
    try:
        return np.broadcast_to(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape),
                               grid)
    except ValueError:
        return None


def const_on_owners(env: Env, wi: int, grid: tuple[int, ...], owner: np.ndarray,
                    view: tuple[int, ...] | None = None) -> np.ndarray | None:
    """Constant `wi` of the kernel as the owners of the grid's elements read
    it: element i of the result comes from the SRAM shard of PE owner[i]
    (linear offset py * uw + px). `view`: the shape the op broadcasts it as
    (a per-channel vector as [C, 1, 1]). None when it does not broadcast
    onto the grid."""
    k = env.k
    name = k.weights[wi]
    shape = tuple(type_shape(env.mem.p.info["values"][name]))
    bidx = broadcast_index(view if view is not None else shape, grid)
    if bidx is None:
        return None
    return const_at(env, wi, bidx, owner)


def operand_on_owners(env: Env, name: str, grid: tuple[int, ...], owner: np.ndarray,
                      view: tuple[int, ...] | None = None) -> np.ndarray | None:
    """An operand of an op on the grid (a norm's scale, bias, mean, variance),
    each element as its owner PE reads it: a constant from that PE's SRAM
    shard (const_on_owners), a computed one (another kernel's output) from
    what the routes delivered. None when it does not broadcast onto the grid."""
    if name in env.k.weights:
        return const_on_owners(env, env.k.weights.index(name), grid, owner, view)
    v = np.asarray(env.get(name, env.k.name))
    bidx = broadcast_index(view if view is not None else v.shape, grid)
    if bidx is None or (view is not None and int(np.prod(view)) != v.size):
        return None
    return as_compute(v.reshape(-1)[bidx])


def const_at(env: Env, wi: int, bidx: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Elements `bidx` (flat indices, any shape) of constant `wi`, each read
    from the SRAM shard of PE owner[...] (broadcast to bidx's shape); a PE
    whose shard lacks its element is a SimError naming it."""
    k = env.k
    name = k.weights[wi]
    shape = tuple(type_shape(env.mem.p.info["values"][name]))
    grid = bidx.shape
    lay = env.mem.layout(env.ki, wi)
    uw = lay.blob.shape[1]
    flat_owner = np.broadcast_to(owner, grid).reshape(-1)
    j = bidx.reshape(-1)
    jm = np.stack(np.unravel_index(j, shape), axis=1) if shape else np.zeros((j.size, 0),
                                                                              np.int64)
    start = lay.start.reshape(lay.blob.size, len(shape))[flat_owner]
    stop = lay.stop.reshape(lay.blob.size, len(shape))[flat_owner]
    bad = np.flatnonzero(((jm < start) | (jm >= stop)).any(axis=1)) if shape else \
        np.zeros(0, np.int64)
    if bad.size:
        i = int(bad[0])
        py, px = divmod(int(flat_owner[i]), uw)
        x, y = grid_pe(env.mem.p, env.ki, px, py)
        held = "[" + ", ".join(f"{a}:{b}" for a, b in zip(start[i], stop[i], strict=True)) + "]"
        raise SimError(f"kernel '{k.name}' ({k.kind}): PE ({x}, {y}) (offset ({px}, {py})) "
                       f"computes output element {list(np.unravel_index(i, grid))} with "
                       f"%{name}{jm[i].tolist()}, but its SRAM holds only {held} of it")
    ext = stop - start
    local = np.zeros(j.size, np.int64)
    for d in range(len(shape)):
        local = local * ext[:, d] + (jm[:, d] - start[:, d])
    code = lay.code.reshape(-1)[flat_owner]
    blob = lay.blob.reshape(-1)[flat_owner]
    order = np.argsort(code, kind="stable")
    cuts = np.flatnonzero(np.diff(code[order])) + 1
    first = np.r_[0, cuts]
    dt = None
    out = None
    for lo, hi in zip(first.tolist(), np.r_[cuts, order.size].tolist(), strict=True):
        idx = order[lo:hi]
        data = env.mem.blob(int(blob[idx[0]])).reshape(-1)
        if out is None:
            dt = data.dtype
            out = np.empty(j.size, dt)
        out[idx] = data[local[idx]]
    if out is None:
        out = np.zeros(j.size, dt or COMPUTE_DTYPE)
    return out.reshape(grid)


def run_tail(env: Env, ops: list[Node], grid: tuple[int, ...], owner: np.ndarray,
             stats: dict[str, int], widen: bool = False) -> int:
    """Run the element-wise `ops` (in order) on the output grid, each element
    on its owner PE; returns how many ops ran so (the rest, if any, are not
    element-wise on this grid and are left to the caller). `widen`: an op
    whose result is smaller than the grid (broadcast later in the chain) is
    computed on the grid too, each PE computing the elements it needs."""
    done = 0
    outs_of_kernel = set(env.k.outputs)
    for node in ops:
        if node.op in _POSITIONAL:
            if not trilu(env, node, grid, owner):
                break
            done += 1
            continue
        if node.op not in ELEMENTWISE_OPS:
            break
        out = node.outputs[0] if node.outputs else ""
        added = [i for i in node.inputs if i in env.spread] if node.op == "Add" else []
        if added and out:  # added along the reduction already: its sum passes on
            chain = next(i for i in node.inputs if i not in added)
            env.store(out, env.vals[chain])
            env.owner[out] = owner
            done += 1
            continue
        oshape = tuple(type_shape(env.mem.p.info["values"][out])) \
            if out in env.mem.p.info["values"] else None
        wide = False
        if oshape != grid:
            if not (widen and oshape is not None and out not in outs_of_kernel
                    and broadcast_index(oshape, grid) is not None):
                break
            wide = True
        args: list[np.ndarray | None] = []
        ok = True
        for i in node.inputs:
            if not i:
                args.append(None)
                continue
            if i in env.vals:  # the anchor's or an earlier op's elements, or a delivered one
                a = env.vals[i]
                if broadcast_index(a.shape, grid) is None:
                    ok = False
                    break
                check_operand(env, i, grid, owner, stats)
                args.append(a)
            elif i in env.k.weights:
                c = const_on_owners(env, env.k.weights.index(i), grid, owner)
                if c is None:
                    ok = False
                    break
                args.append(c)
            else:
                env.get(i, node.name)  # raises: nothing delivered or held
        if not ok:
            break
        outs = run_op(env.k.name, node, args)
        for o, a in zip(node.outputs, outs, strict=False):
            if not o:
                continue
            a = np.asarray(a)
            if wide:  # internal: kept on the grid, each PE its own elements
                env.vals[o] = as_compute(np.broadcast_to(a, grid))
            else:
                env.store(o, np.broadcast_to(a, grid) if a.shape != grid else a)
            env.owner[o] = owner
        done += 1
    stats["tail_ops"] = stats.get("tail_ops", 0) + done
    return done


def check_operand(env: Env, name: str, grid: tuple[int, ...], owner: np.ndarray,
                  stats: dict[str, int]) -> None:
    """A delivered operand of the tail: each owner PE reads the operand
    elements its grid elements broadcast from; their hull is its window,
    checked against the lane its core received (sim_inbox.check_windows: a
    cut bundle proves it or raises at the PE, a flat one adds the PEs that
    read outside their lane to `forwarded_pes`). Once per value and kernel;
    values the kernel computed, and values without lanes (weight
    streaming), are not delivered. A scalar is read whole by every owner
    PE (its window: the one element, sim_inbox.window_shape)."""
    d = env.deliveries.get(name)
    if d is None or name in env.checked or name in env.owner:
        return
    env.checked.add(name)
    bidx = broadcast_index(d.shape, grid)
    if bidx is None:
        return
    uw, uh = env.k.unrotated_shape
    # over the value flattened where its lanes carry flat ranges (an
    # element-wise chain's operand: ElementwiseKind.body_view)
    flat = d.view is not None and flattens(d.shape, d.view)
    shape = d.box_shape if flat else window_shape(d.shape)
    pe = np.broadcast_to(owner, grid).reshape(-1)
    at = bidx.reshape(-1, 1) if flat else \
        np.stack(np.unravel_index(bidx.reshape(-1), shape), axis=1)
    order = np.argsort(pe, kind="stable")
    pe, at = pe[order], at[order]
    first = np.r_[0, np.flatnonzero(np.diff(pe)) + 1]
    need = np.zeros((uh * uw, 2, len(shape)), np.int64)
    need[pe[first], 0] = np.minimum.reduceat(at, first, axis=0)
    need[pe[first], 1] = np.maximum.reduceat(at, first, axis=0) + 1
    stats["forwarded_pes"] = stats.get("forwarded_pes", 0) + check_windows(
        env.mem.p, env.ki, d, need.reshape(uh, uw, 2, len(shape)))


def trilu(env: Env, node: Node, grid: tuple[int, ...], owner: np.ndarray) -> bool:
    """Trilu on the grid: each PE keeps or zeroes its elements by their
    (row, column) position against the diagonal offset k, which it reads
    from its own SRAM shard (or the delivered scalar)."""
    src = node.inputs[0]
    out = node.outputs[0] if node.outputs else ""
    if len(grid) < 2 or src not in env.vals or env.vals[src].shape != grid or \
            not out or env.shape_of(out) != grid:
        return False
    kname = node.inputs[1] if len(node.inputs) > 1 else ""
    if not kname:
        k = np.zeros(grid, np.int64)
    elif kname in env.k.weights:
        k = const_on_owners(env, env.k.weights.index(kname), grid, owner)
        if k is None:
            return False
    else:
        k = np.broadcast_to(np.asarray(env.get(kname, node.name)).reshape(()), grid)
    i = np.arange(grid[-2]).reshape(-1, 1)
    j = np.arange(grid[-1]).reshape(1, -1)
    keep = (j - i >= k) if node.attrs.get("upper", 1) else (j - i <= k)
    x = env.vals[src]
    env.store(out, np.where(keep, x, np.zeros((), x.dtype)))
    env.owner[out] = owner
    return True


def as_compute(a: np.ndarray) -> np.ndarray:
    return a.astype(COMPUTE_DTYPE) if np.issubdtype(a.dtype, np.floating) else a
