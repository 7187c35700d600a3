"""Per-PE executors of reductions and table lookups (library_reduce,
library_gather), and of the normalisations built from reductions
(a decomposed LayerNorm, InstanceNormalization: library_rowwise.NormKind).

- reduce, knob p: the O outputs in min(p, O) output groups, each output's
  R reduced elements in min(p // O, R) segments; every segment PE reduces
  its elements and the segments' partials are combined along their chain
  in order (sums added one after the other, as the PEs forward them).
  Arg-reductions combine (value, index) partials, the first index winning
  ties; bools reduce as integers (ReduceMax: any, ReduceMin: all); a 0-d
  operand is a row of one element, a 0-d result one output group; a
  one-operand Einsum reduces its relabelled operand (sim_einsum);
  CumSum scans per PE with carries along the chain (sim_scan). An output
  ends on the last PE of its chain.
- gather, knobs q, p: PE (px, py) holds table block (py, px); every output
  element is answered by the PE whose block holds the table element it
  copies (found by running the lookup on an index tensor), read from that
  PE's own shard.
- norm over trailing axes (decomposed LayerNorm) and InstanceNormalization:
  row statistics from segment / row-group partials combined in order, then
  element-wise ops on the PEs owning the elements (sim_tail).
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.lanes import flattens
from wsec.ir.library_reduce import reduce_boxes, reduce_layout, reduce_ranges, working_pes

from .sim_base import COMPUTE_DTYPE
from .sim_channels import check_norm_rows, check_row_norm, grouped_lin
from .sim_einsum import einsum_reduction
from .sim_inbox import check_inputs, check_windows, pe_windows, window_shape
from .sim_pe import Env, run_op
from .sim_scan import cumsum
from .sim_tail import as_compute, const_at, operand_on_owners, run_tail

_IDENTITY = {"ReduceSum": 0.0, "ReduceMean": 0.0, "ReduceL1": 0.0, "ReduceL2": 0.0,
             "ReduceSumSquare": 0.0, "ReduceMax": -np.inf, "ReduceMin": np.inf,
             "ReduceProd": 1.0}


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def _axes(env: Env, node: Node, ndim: int) -> tuple[int, ...] | None:
    """The reduced axes of a Reduce* node (None: the op is the identity)."""
    axes = None
    if len(node.inputs) > 1 and node.inputs[1]:
        axes = [int(a) for a in np.asarray(env.get(node.inputs[1], node.name)).reshape(-1)]
    elif "axes" in node.attrs:
        axes = [int(a) for a in node.attrs["axes"]]  # type: ignore[union-attr]
    if not axes:
        return None if node.attrs.get("noop_with_empty_axes", 0) else tuple(range(ndim))
    return tuple(sorted(a % ndim for a in axes))


def segments(x: np.ndarray, axes: tuple[int, ...], op: str, pr: int
             ) -> tuple[np.ndarray, tuple[int, ...], int]:
    """x with the reduced axes last, flattened ([O, R]) and cut into pr
    segments ([O, pr, rb], padded with the op's identity); the kept shape."""
    keep = [a for a in range(x.ndim) if a not in axes]
    xm = np.transpose(x, keep + list(axes))
    kept = tuple(x.shape[a] for a in keep)
    o = int(np.prod(kept))
    r = int(np.prod([x.shape[a] for a in axes]))
    rb = _cdiv(r, pr)
    x2 = xm.reshape(o, r)
    if pr * rb > r:
        fill = _IDENTITY.get(op, 0.0)
        if np.issubdtype(x2.dtype, np.integer) and not np.isfinite(fill):
            info = np.iinfo(x2.dtype)
            fill = info.min if fill < 0 else info.max
        x2 = np.pad(x2, [(0, 0), (0, pr * rb - r)], constant_values=fill)
    return x2.reshape(o, pr, rb), kept, r


def reduce_rows(x: np.ndarray, axes: tuple[int, ...], op: str, pr: int
                ) -> tuple[np.ndarray, tuple[int, ...]]:
    """op over `axes`, each output's elements reduced on pr segment PEs and
    the partials combined in chain order; returns ([O], kept shape)."""
    seg, kept, r = segments(x, axes, op, pr)
    if op in ("ReduceL1",):
        seg = np.abs(seg)
    elif op in ("ReduceL2", "ReduceSumSquare"):
        seg = seg * seg
    if op in ("ReduceMax", "ReduceMin"):
        fn = np.maximum if op == "ReduceMax" else np.minimum
        part = seg.max(axis=2) if op == "ReduceMax" else seg.min(axis=2)
        acc = part[:, 0]
        for j in range(1, pr):
            acc = fn(acc, part[:, j])
    elif op == "ReduceProd":
        part = seg.prod(axis=2)
        acc = part[:, 0].copy()
        for j in range(1, pr):
            acc = acc * part[:, j]
    else:
        part = seg.sum(axis=2, dtype=seg.dtype)
        acc = part[:, 0].copy()
        for j in range(1, pr):  # each segment PE adds the partial it receives
            acc = acc + part[:, j]
        if op == "ReduceMean":
            acc = acc / np.asarray(r, acc.dtype)
        elif op == "ReduceL2":
            acc = np.sqrt(acc)
    return acc, kept


def _arg_rows(x: np.ndarray, node: Node, pr: int) -> np.ndarray:
    axis = int(node.attrs.get("axis", 0)) % x.ndim
    last = bool(node.attrs.get("select_last_index", 0))
    mx = node.op == "ArgMax"
    seg, kept, r = segments(x, (axis,), "ReduceMax" if mx else "ReduceMin", pr)
    rb = seg.shape[2]
    src = np.flip(seg, axis=2) if last else seg
    loc = (np.argmax if mx else np.argmin)(src, axis=2)
    loc = rb - 1 - loc if last else loc
    val = np.take_along_axis(seg, loc[:, :, None], axis=2)[:, :, 0]
    best, idx = val[:, 0].copy(), loc[:, 0].copy()
    for j in range(1, pr):  # (value, index) partials along the chain
        v, i = val[:, j], loc[:, j] + j * rb
        better = (v > best) if mx else (v < best)
        if last:
            better |= v == best
        best, idx = np.where(better, v, best), np.where(better, i, idx)
    out = idx.reshape(kept)
    if node.attrs.get("keepdims", 1):
        out = np.expand_dims(out, axis)
    return out.astype(np.int64)


def _spread_lin(env: Env, i: np.ndarray, o: int, po: int, pr: int) -> np.ndarray:
    """The offsets (py uw + px) of PE indices i (holding work) of a
    reduction of o outputs in po groups of pr segments
    (wsec.ir.library_reduce.reduce_layout: its rows hold as many)."""
    uw, uh = env.k.unrotated_shape
    return reduce_layout(working_pes(o, po, pr), uw, uh)[i]


def reduce(env: Env, body: list[Node], stats: dict[str, int]) -> int:
    node = body[0]
    if node.op == "CumSum":
        own = cumsum(env, node, stats)
        if own is None:
            return 0
        env.owner[node.outputs[0]] = own
        return 1 + run_tail(env, body[1:], env.shape_of(node.outputs[0]), own, stats)
    if node.op == "Einsum":
        return _einsum(env, body, stats)
    x0 = env.get(node.inputs[0], node.name)
    if not (np.issubdtype(x0.dtype, np.number) or x0.dtype == np.bool_):
        return 0
    # floats in the PE's f32; integers and bools (max: any, min: all) in a wide
    # accumulator (a sum, product or mean wraps or truncates once, at the
    # output's type, as the reference)
    x = x0.astype(COMPUTE_DTYPE if np.issubdtype(x0.dtype, np.floating) else np.int64,
                  copy=False)
    out_shape = env.shape_of(node.outputs[0])
    if x.ndim == 0:  # a scalar: one element, reduced on one PE as a 1-element row
        if node.op in ("ArgMax", "ArgMin"):
            return 0
        x = x.reshape(1)
    o = max(1, int(np.prod(out_shape)))
    p = int(env.k.knobs["p"])
    po = min(p, o)
    if node.op in ("ArgMax", "ArgMin"):
        axes = (int(node.attrs.get("axis", 0)) % x.ndim,)
        r = x.shape[axes[0]]
        pr = min(max(1, p // o), r)
        y = _arg_rows(x, node, pr)
    else:
        axes = _axes(env, node, x.ndim)
        if axes is None:  # noop_with_empty_axes and no axes: each PE copies its elements
            pr, y = 1, x
        else:
            r = int(np.prod([x.shape[a] for a in axes]))
            pr = min(max(1, p // o), max(r, 1))
            y, _ = reduce_rows(x, axes, node.op, pr)
    _check_reduce(env, node.inputs[0], x0.shape, axes or (), po, pr, stats)
    out_dt = x.dtype if x.dtype == COMPUTE_DTYPE else x0.dtype
    env.store(node.outputs[0], np.asarray(y).astype(out_dt, copy=False).reshape(out_shape)
              if node.op not in ("ArgMax", "ArgMin") else np.asarray(y).reshape(out_shape))
    i = (np.arange(o) // _cdiv(o, po)) * pr + (pr - 1)  # the chain's last PE
    owner = _spread_lin(env, i, o, po, pr).reshape(out_shape)
    env.owner[node.outputs[0]] = owner
    stats["sharded_pes"] = po * pr
    return 1 + run_tail(env, body[1:], tuple(out_shape), owner, stats)


def _check_reduce(env: Env, name: str, shape: tuple[int, ...], axes: tuple[int, ...],
                  po: int, pr: int, stats: dict[str, int]) -> None:
    """Each PE's window of the reduced input (`reduce_boxes`, on the PE at
    its `reduce_layout` offset), checked against the lane its core received
    (sim_inbox.check_windows); where the lanes carry the value flattened
    (the kind's input_view), the exact range of it the PE reads
    (`reduce_ranges`). A scalar is reduced as a row of one element
    (`reduce`): its window is that element (sim_inbox.window_shape), read
    by the one PE."""
    d = env.deliveries.get(name)
    if d is None or d.shape != tuple(shape):
        return
    uw, uh = env.k.unrotated_shape
    ws = window_shape(tuple(shape))
    boxes = None
    if d.view is not None and flattens(d.shape, d.view):
        boxes = reduce_ranges(tuple(shape), axes, po, pr)
    if boxes is None:
        boxes = reduce_boxes(ws, axes, po, pr)
    o = int(np.prod(ws)) // max(1, int(np.prod([ws[a] for a in axes])))
    n = working_pes(o, po, pr)
    stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, pe_windows(
        boxes[:n], _spread_lin(env, np.arange(n), o, po, pr), uw, uh))


def _einsum(env: Env, body: list[Node], stats: dict[str, int]) -> int:
    """A one-operand Einsum: the reduction of its relabelled operand
    [outputs..., reduced...] over the trailing axes, as ReduceSum."""
    node = body[0]
    got = einsum_reduction(env, node)
    if got is None:
        return 0
    x, axes, _, _, _ = got
    out_shape = env.shape_of(node.outputs[0])
    o = max(1, int(np.prod(out_shape)))
    p = int(env.k.knobs["p"])
    po = min(p, o)
    r = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    pr = min(max(1, p // o), max(r, 1))
    if axes:
        y, _ = reduce_rows(x, axes, "ReduceSum", pr)
    else:  # a pure relabelling (a transpose, a diagonal): one element per output
        pr, y = 1, x
    env.store(node.outputs[0], np.asarray(y).astype(x.dtype).reshape(out_shape))
    owner = _spread_lin(env, (np.arange(o) // _cdiv(o, po)) * pr + (pr - 1),
                        o, po, pr).reshape(out_shape)
    env.owner[node.outputs[0]] = owner
    stats["sharded_pes"] = po * pr
    return 1 + run_tail(env, body[1:], tuple(out_shape), owner, stats)


def gather(env: Env, body: list[Node], stats: dict[str, int]) -> int:
    node = body[0]
    if node.op not in ("Gather", "GatherElements"):
        return 0
    k = env.k
    table = node.inputs[0]
    tshape = env.shape_of(table)
    idx = env.get(node.inputs[1], node.name)
    tag = np.arange(int(np.prod(tshape)), dtype=np.int64).reshape(tshape)
    j = np.asarray(run_op(k.name, node, [tag, idx])[0], np.int64)  # table element per output
    out_shape = env.shape_of(node.outputs[0])
    ax = int(node.attrs.get("axis", 0)) % max(len(tshape), 1)
    jm = np.unravel_index(j.reshape(-1), tshape)
    if table in k.weights:
        wi = k.weights.index(table)
        lay = env.mem.layout(env.ki, wi)
        rows, cols = lay.start[:, 0, ax], lay.start[0, :, len(tshape) - 1]
        py = np.searchsorted(rows, jm[ax], side="right") - 1 \
            if not (rows == rows[0]).all() else np.zeros(j.size, np.int64)
        px = np.searchsorted(cols, jm[-1], side="right") - 1 \
            if ax < len(tshape) - 1 and not (cols == cols[0]).all() else np.zeros(j.size, np.int64)
        uw = lay.blob.shape[1]
        owner = (py * uw + px).reshape(out_shape)
        y = const_at(env, wi, j.reshape(out_shape), owner)
    else:  # a streamed table: row blocks along y, as resident
        t = env.get(table, node.name)
        p, q = int(k.knobs["p"]), int(k.knobs["q"])
        vb = _cdiv(tshape[ax], p)
        qb = _cdiv(tshape[-1], q) if ax < len(tshape) - 1 else 1 << 62
        uw = k.unrotated_shape[0]
        owner = ((jm[ax] // vb) * uw + (jm[-1] // qb if ax < len(tshape) - 1 else 0)
                 ).reshape(out_shape)
        y = t.reshape(-1)[j.reshape(-1)].reshape(out_shape)
    env.store(node.outputs[0], as_compute(np.asarray(y)))
    env.owner[node.outputs[0]] = owner
    _check_gather(env, node, tshape, stats)
    stats["sharded_pes"] = int(np.unique(owner).size)
    return 1 + run_tail(env, body[1:], tuple(out_shape), owner, stats)


def _check_gather(env: Env, node: Node, tshape: tuple[int, ...], stats: dict[str, int]) -> None:
    """The windows of a gather's PEs: of a table that is an activation,
    PE (px, py)'s block (row block py of `axis`, column block px of the
    last axis, the rest whole); of the indices, all of them (every PE tests
    every index against its rows). Checked against the lanes that
    delivered them (sim_inbox.check_windows)."""
    k = env.k
    uw, uh = k.unrotated_shape
    needs = []
    d = env.deliveries.get(node.inputs[0])
    if d is not None and d.shape == tuple(tshape) and tshape:
        ax = int(node.attrs.get("axis", 0)) % len(tshape)
        vb = _cdiv(tshape[ax], int(k.knobs["p"]))
        need = np.zeros((uh, uw, 2, len(tshape)), np.int64)
        need[:, :, 1] = tshape
        py, px = np.arange(uh)[:, None], np.arange(uw)[None, :]
        need[:, :, 0, ax] = np.minimum(py * vb, tshape[ax])
        need[:, :, 1, ax] = np.minimum((py + 1) * vb, tshape[ax])
        if ax < len(tshape) - 1:
            qb = _cdiv(tshape[-1], int(k.knobs["q"]))
            need[:, :, 0, -1] = np.minimum(px * qb, tshape[-1])
            need[:, :, 1, -1] = np.minimum((px + 1) * qb, tshape[-1])
        need[(need[:, :, 1] <= need[:, :, 0]).any(axis=2)] = 0
        needs.append((d, need))
    di = env.deliveries.get(node.inputs[1])
    if di is not None:  # a scalar index too: its one element (sim_inbox.window_shape)
        ishape = window_shape(di.shape)
        whole = np.zeros((uh, uw, 2, len(ishape)), np.int64)
        whole[:, :, 1] = ishape
        needs.append((di, whole))
    if needs:
        stats["forwarded_pes"] = check_inputs(env.mem.p, env.ki, needs)


def decomposed_ln(env: Env, body: list[Node], stats: dict[str, int]) -> int:
    """ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add over
    trailing axes: each row in r segments (knob r) of a channel group; the
    reductions combine segment partials in order, the element-wise ops run
    on the PEs owning their elements."""
    k = env.k
    first = body[0]
    x = env.get(first.inputs[0], first.name)
    if first.op != "ReduceMean" or not np.issubdtype(x.dtype, np.floating):
        return 0
    axes = _axes(env, first, x.ndim)
    if axes is None or list(axes) != list(range(axes[0], x.ndim)):
        return 0
    grid = x.shape
    C, W = int(np.prod(grid[:axes[0]])), int(np.prod(grid[axes[0]:]))
    c, r = int(k.knobs["c"]), int(k.knobs.get("r", 1))
    rows = int(k.knobs["s"]) * r
    cb, wseg = _cdiv(C, c), _cdiv(W, r)
    check_row_norm(env, first.inputs[0], grid, axes[0], cb, wseg, stats)
    i = (np.arange(C) // cb)[:, None] * rows + (np.arange(W) // wseg)[None, :]
    owner = grouped_lin(k, i).reshape(grid)
    done = 0
    for node in body:
        if node.op == "ReduceMean":
            v = env.get(node.inputs[0], node.name)
            ax = _axes(env, node, v.ndim)
            if ax != axes or v.shape != grid:
                break
            y, _ = reduce_rows(v.astype(COMPUTE_DTYPE, copy=False), ax, "ReduceMean", r)
            env.store(node.outputs[0], y.reshape(env.shape_of(node.outputs[0])))
            done += 1
        elif run_tail(env, [node], grid, owner, stats, widen=True) == 1:
            done += 1
        else:
            break
    for o in k.outputs:
        env.owner[o] = owner
    stats["sharded_pes"] = c * r
    return done


def instance_norm(env: Env, node: Node, stats: dict[str, int]) -> bool:
    """Per (sample, channel) statistics over its rows: the s row groups'
    partial sums combined in order on the channel group's PEs."""
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if x.ndim < 3 or not np.issubdtype(x.dtype, np.floating):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    N, C = x.shape[:2]
    H = x.shape[2] if x.ndim >= 4 else 1
    Wr = int(np.prod(x.shape[2:])) // H
    c, s = int(k.knobs["c"]), int(k.knobs["s"])
    cb, hb = _cdiv(C, c), _cdiv(N * H, s)
    check_norm_rows(env, node.inputs[0], x.shape, cb, hb, None, stats)
    x4 = x.reshape(N, C, H, Wr)
    g = (np.arange(N)[:, None] * H + np.arange(H)[None, :]) // hb  # [N, H] row group

    def combine(v: np.ndarray) -> np.ndarray:  # [N, C, H, Wr] -> per (n, c), groups in order
        part = np.zeros((N, C, s), COMPUTE_DTYPE)
        rs = v.sum(axis=3, dtype=COMPUTE_DTYPE)  # each PE's rows
        for n in range(N):
            for gi in np.unique(g[n]).tolist():
                part[n, :, gi] = rs[n][:, g[n] == gi].sum(axis=1, dtype=COMPUTE_DTYPE)
        acc = part[:, :, 0].copy()
        for gi in range(1, s):
            acc = acc + part[:, :, gi]
        return acc[:, :, None, None]

    cnt = COMPUTE_DTYPE(H * Wr)
    mean = combine(x4) / cnt
    dev = x4 - mean
    var = combine(dev * dev) / cnt
    xhat = (dev / np.sqrt(var + COMPUTE_DTYPE(node.attrs.get("epsilon", 1e-5)))).reshape(x.shape)
    rows = s * int(k.knobs.get("r", 1))
    i = (np.arange(C) // cb)[None, :, None] * rows + g[:, None, :]  # [N, C, H]
    own = grouped_lin(k, i)
    owner = np.broadcast_to(own.reshape(N, C, H, *(1,) * (x.ndim - 3)) if x.ndim >= 4
                            else own, x.shape)
    per_channel = (C,) + (1,) * (x.ndim - 2)
    sc = operand_on_owners(env, node.inputs[1], x.shape, owner, per_channel)
    b = operand_on_owners(env, node.inputs[2], x.shape, owner, per_channel)
    if sc is None or b is None:
        return False
    env.store(node.outputs[0], (xhat * sc + b).astype(COMPUTE_DTYPE))
    env.owner[node.outputs[0]] = owner
    stats["sharded_pes"] = c * s
    return True
