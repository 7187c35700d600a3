"""Per-PE executors of the spread kinds: element-wise chains and data movement.

Element-wise (library_rowwise.ElementwiseKind): PE i (offset py * w + px)
owns the output elements [i n, (i + 1) n), n = ceil(E / p); when the kernel
tiles a large constant over its rectangle (an attention mask), a PE owns
instead the elements whose constant entries its tile holds. Every element
is computed by its owner from its own SRAM shard (sim_tail); a PE's window
of the data input (the hull of its block) is checked against the lane its
core received (sim_inbox.check_windows).

Data movement (DatamoveKind): each of its p = c x h PEs owns a block of its
outputs dealt in sequence (wsec.ir.movement.block_owners) and forwards
elements of the inputs ("the permutation is in the routes"). Which input
element each output element copies is found by running the body on
index tensors (every input element tagged with its input and position), so
every kind of movement — reshape, transpose, concat, slice, pad, expand,
tile, depth-to-space, a gather with constant indices — is one gather per
PE block; pad fills are the PE's own constants, casts apply on the way. A
scatter that combines (reduction add, mul, max, min) moves its data
elements so and sends each update to the PE owning its target, which
combines them in update order (sim_scatter).
"""

from __future__ import annotations

import numpy as np
from wsec.ir.cuts import flat_hulls
from wsec.ir.graph import Node
from wsec.ir.lanes import flattens
from wsec.ir.library_rowwise import DatamoveKind
from wsec.ir.movement import block_owners

from .sim_base import SimError
from .sim_inbox import (
    check_inputs,
    check_windows,
    pe_windows,
    point_hulls,
    union_boxes,
    window_shape,
)
from .sim_pe import Env, run_op
from .sim_scatter import combine, reduction, targets
from .sim_tail import broadcast_index, run_tail

_TAG = float(2 ** 40)  # index tensors: (input + 1) * _TAG + flat position (exact in f64)
# the inputs of a data-movement op that are data (the others: shapes, indices, ...)
_DATA_INPUTS = {"Concat": tuple(range(64)), "ScatterND": (0, 2), "ScatterElements": (0, 2),
                "Pad": (0,)}


def _grid(env: Env, body: list[Node]) -> tuple[int, ...] | None:
    shapes = [env.shape_of(o) for n in body for o in n.outputs if o]
    if not shapes:
        return None
    grid = max(shapes, key=lambda s: int(np.prod(s)))
    return grid if all(broadcast_index(s, grid) is not None for s in shapes) else None


def _spread_owner(env: Env, grid: tuple[int, ...]) -> np.ndarray:
    """Owner PE (linear offset) of each grid element: consecutive blocks of
    ceil(E / p), or a tiled constant's tiles."""
    k = env.k
    e = int(np.prod(grid))
    p = max(1, int(k.knobs.get("p", 1)))
    uw, _ = k.unrotated_shape
    for wi in range(len(k.weights)):  # a tiled constant decides
        lay = env.mem.layout(env.ki, wi)
        if lay.start.shape[-1] == 0 or (lay.code == lay.code.flat[0]).all():
            continue
        shape = env.shape_of(k.weights[wi])
        bidx = broadcast_index(shape, grid)
        if bidx is None:
            continue
        jm = np.unravel_index(bidx.reshape(-1), shape)
        varies = [d for d in range(len(shape))
                  if not (lay.start[..., d] == lay.start[0, 0, d]).all()]
        py = np.zeros(e, np.int64)
        px = np.zeros(e, np.int64)
        for d in varies:
            rows = lay.start[:, 0, d]
            cols = lay.start[0, :, d]
            if not (rows == rows[0]).all():
                py = np.searchsorted(rows, jm[d], side="right") - 1
            elif not (cols == cols[0]).all():
                px = np.searchsorted(cols, jm[d], side="right") - 1
        return (py * uw + px).reshape(grid)
    n = -(-e // p)
    return (np.arange(e, dtype=np.int64) // n).reshape(grid)


def elementwise(env: Env, body: list[Node], stats: dict[str, int]) -> int:
    grid = _grid(env, body)
    if grid is None:
        return 0
    owner = _spread_owner(env, grid)
    _check_blocks(env, body[0].inputs[0] if body[0].inputs else "", owner, stats)
    done = run_tail(env, body, grid, owner, stats, widen=True)
    if done == len(body):
        for o in env.k.outputs:
            env.owner[o] = owner
    return done


def _check_blocks(env: Env, name: str, owner: np.ndarray, stats: dict[str, int]) -> None:
    """PE i reads the elements [i n, (i + 1) n) of a data input as large as
    the grid it owns in blocks (not a broadcast operand, not a tiled
    constant's tiles); its window is their hull (their range, where the
    lanes carry the value flattened), checked against the lane that
    delivered the input (sim_inbox.check_windows)."""
    d = env.deliveries.get(name)
    e = owner.size
    if d is None or d.numel != e or not d.shape:
        return  # a scalar: its one lane is the whole value
    p = max(1, int(env.k.knobs.get("p", 1)))
    n = -(-e // p)
    if not np.array_equal(owner.reshape(-1), np.arange(e, dtype=np.int64) // n):
        return  # a tiled constant decides who owns what
    i = np.arange(p)
    uw, uh = env.k.unrotated_shape
    env.checked.add(name)
    lo, hi = np.minimum(i * n, e), np.minimum((i + 1) * n, e)
    # over the value flattened where its lanes carry flat ranges
    # (ElementwiseKind.input_view), a PE's window is its block's range
    win = np.stack([lo, hi], axis=1)[:, :, None] if d.view is not None and \
        flattens(d.shape, d.view) else flat_hulls(lo, hi, d.shape)
    stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, pe_windows(win, i, uw, uh))


def _resolve(env: Env, traced: list[str], t: np.ndarray, dt: np.dtype) -> np.ndarray:
    """Tag tensor t (flat) as values: a tag names an element of a traced
    input (its PE block gathers it), anything else is a fill constant."""
    src = t >= _TAG
    band = np.where(src, t // _TAG - 1, 0).astype(np.int64)
    pos = np.where(src, t - (band + 1) * _TAG, 0).astype(np.int64)
    out = np.where(src, 0, t).astype(dt)  # fills (pads): the PEs' own constants
    for b, a in enumerate(traced):  # each PE block gathers its elements
        m = src & (band == b)
        out[m] = env.vals[a].reshape(-1)[pos[m]]
    return out


def datamove(env: Env, body: list[Node], stats: dict[str, int]) -> int:
    """Trace the body on index tensors, then gather every output block."""
    k = env.k
    made = {o for m in body for o in m.outputs}
    acts = list(dict.fromkeys(i for n in body for i in n.inputs
                              if i and i in env.vals and i not in made))
    # an activation is moved (traced) when every op reads it as data; one read
    # as a shape, an index or a count is a parameter of the movement instead
    params = {i for n in body for j, i in enumerate(n.inputs)
              if i and j not in _DATA_INPUTS.get(n.op, (0,))}
    traced = [a for a in acts if a not in params]
    if not traced:
        return 0  # nothing to trace
    tv: dict[str, np.ndarray] = {}
    for t, a in enumerate(traced):
        x = env.vals[a]
        tv[a] = ((t + 1) * _TAG + np.arange(x.size, dtype=np.float64)).reshape(x.shape)
    casts: dict[str, list[Node]] = {a: [] for a in traced}  # conversions on each path
    # value -> (targets, updates as tags or values, combining ufunc) of a scatter that combines
    merges: dict[str, tuple[np.ndarray, np.ndarray, np.ufunc]] = {}
    for node in body:
        if any(i in merges for i in node.inputs):
            return 0  # a combined scatter's result moved on: not one source per element
        args = []
        for i in node.inputs:
            if not i:
                args.append(None)
            elif i in tv:
                args.append(tv[i])
            elif i in env.vals:
                args.append(env.vals[i])
            else:
                args.append(env.get(i, node.name))  # a constant every PE holds
        src_in = [i for i in node.inputs if i and i in tv]
        chain = casts[src_in[0]] if src_in else []
        if any(casts[i] != chain for i in src_in):
            return 0  # inputs converted differently on their way: not one copy per element
        fn = reduction(node)
        if node.op == "Cast" and src_in:
            outs = [args[0]]
            chain = [*chain, node]
        elif fn is not None:  # the data elements move; the updates go to their targets
            if chain or args[0] is None or args[1] is None or args[2] is None:
                return 0
            upd = np.asarray(args[2])
            where = targets(node, np.shape(args[0]), np.asarray(args[1]), upd.shape)
            merges[node.outputs[0]] = (where, upd.astype(np.float64, copy=False).reshape(-1), fn)
            outs = [np.array(args[0], np.float64)]
            src_in = src_in or [node.inputs[0]]
            casts.setdefault(node.inputs[0], [])
        else:
            outs = run_op(k.name, node, args)
        for o, a in zip(node.outputs, outs, strict=False):
            if not o:
                continue
            a = np.asarray(a)
            if src_in:
                tv[o] = a.astype(np.float64, copy=False)
                casts[o] = chain
            else:
                env.store(o, a)
    pes = 0
    reads: list[tuple[np.ndarray, np.ndarray]] = []  # (tags, PE index reading each)
    moved = [o for o in k.outputs if o in tv]
    p = max(1, DatamoveKind.pes(k.knobs))
    owners = dict(zip(moved, block_owners([tv[o].reshape(-1) for o in moved], p), strict=True))
    for o in moved:
        t = tv[o].reshape(-1)
        src = t >= _TAG
        band = np.where(src, t // _TAG - 1, 0).astype(np.int64)
        pos = np.where(src, t - (band + 1) * _TAG, 0).astype(np.int64)
        sizes = np.array([env.vals[a].size for a in traced], np.int64)
        top = sizes[np.minimum(band, len(traced) - 1)]
        if (band >= len(traced)).any() or (src & (pos >= top)).any():
            raise SimError(f"kernel '{k.name}' (datamove): its body does not only move "
                           "elements; the binary's description of the kernel is inconsistent")
        dt = np.result_type(*(env.vals[a].dtype for a in traced))
        out = _resolve(env, traced, t, dt)
        owner = owners[o]
        reads.append((t, owner))
        if o in merges:
            where, upd, fn = merges[o]
            reads.append((upd, owner[where]))  # each update, on its target's PE
            stats["update_pes"] = combine(out, owner, where, _resolve(env, traced, upd, dt), fn)
        arr = out.reshape(tv[o].shape)
        for c in casts[o]:  # the element conversions on its path, in order
            arr = run_op(k.name, c, [arr])[0]
        env.store(o, arr)
        env.owner[o] = owner.reshape(arr.shape)
        pes = max(pes, p)
    stats["sharded_pes"] = pes
    _check_moves(env, traced, [a for a in acts if a in params], reads, stats)
    return len(body)


def move_boxes(reads: list[tuple[np.ndarray, np.ndarray]], b: int, shape: tuple[int, ...],
               n: int) -> np.ndarray:
    """(n, 2, ndim): per PE index, the hull of the elements of traced input
    b (of `shape`) it copies: `reads` pairs the tags of elements (flat,
    `_TAG` encoded) with the PE index reading each."""
    box = np.zeros((n, 2, len(shape)), np.int64)
    for t, owner in reads:
        m = (t >= _TAG) & (t // _TAG - 1 == b)
        pos = (t[m] - (b + 1) * _TAG).astype(np.int64)
        box = union_boxes(box, point_hulls(np.stack(np.unravel_index(pos, shape)),
                                           np.broadcast_to(owner, t.shape)[m], n))
    return box


def _check_moves(env: Env, traced: list[str], params: list[str],
                 reads: list[tuple[np.ndarray, np.ndarray]], stats: dict[str, int]) -> None:
    """Each PE's window of every input it moves: the hull of the elements
    its output blocks copy (the tags name them), and of a parameter of the
    movement (a computed shape, an index tensor) the whole value, which
    every PE reads; checked against the lanes that delivered them
    (sim_inbox.check_windows)."""
    k = env.k
    uw, uh = k.unrotated_shape
    n = uw * uh
    needs = []
    for b, a in enumerate(traced):
        d = env.deliveries.get(a)
        if d is None:
            continue
        # over the value flattened where its lanes carry flat ranges (a concatenation's
        # input: wsec.ir.lanes.flattens), a PE's window is the flat range it copies
        over = d.box_shape if d.view is not None and flattens(d.shape, d.view) \
            else window_shape(d.shape)
        needs.append((d, pe_windows(move_boxes(reads, b, over, n), np.arange(n), uw, uh)))
    for a in params:
        d = env.deliveries.get(a)
        if d is None:
            continue
        whole = np.zeros((uh, uw, 2, len(window_shape(d.shape))), np.int64)
        whole[:, :, 1] = window_shape(d.shape)
        needs.append((d, whole))
    if needs:
        stats["forwarded_pes"] = check_inputs(env.mem.p, env.ki, needs)
