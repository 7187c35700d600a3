"""Per-PE executors of the kinds that work along rows: pooling, softmax and
normalisation (library_pool, library_rowwise).

- pool, knobs c, s (PE index i = channel group i // s, row group i % s, in
  columns: offset (i // h, i % h)): windowed pooling reads the padded input
  rows its row group holds (PoolKind.input_rows: span plus halo; a read
  outside is a SimError at that PE); global pooling sums (or maxes) each row
  group's block of rows and combines the s partials in PE order on the last
  PE of the channel group.
- softmax, knob p: min(p, E) segments of every row, p // E row groups
  (which PE holds which: library_rowwise.softmax_cells); each PE reduces
  its segment (max, then the sum of exponentials) and the segments'
  partials are combined in segment order.
- norm, knobs c, s, r: LayerNormalization rows in c groups, each row in r
  segments whose partial sums (mean, then squared deviations) are combined
  in order; BatchNormalization (inference) per element on the PE of its
  channel group (LRN and training-mode BatchNormalization: sim_channels).
  Scale and bias come from the owning PEs' shards (sim_tail.const_on_owners)
  or, computed by another kernel, from what the routes delivered
  (sim_tail.operand_on_owners).

Each declares every PE's window of its data input (a pooling group's
channels x rows with halo, a softmax PE's segment x rows, a norm group's
channels x rows or a row norm's rows x segment; hulls where a PE's part of
the flattened value is not a box) and checks it against the lane its core
received (sim_inbox.check_windows).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from wsec.ir.cuts import flat_hulls, grouped_pe, joined
from wsec.ir.graph import Node
from wsec.ir.kernels import KINDS
from wsec.ir.library_common import grouped_cells
from wsec.ir.library_rowwise import softmax_cells
from wsec.ir.opsem import windows
from wsec.ir.opsem_core import _pool_geometry, pool_indices

from .sim_base import COMPUTE_DTYPE, SimError
from .sim_channels import (
    batchnorm_train,
    check_norm_rows,
    check_row_norm,
    grouped_count,
    grouped_lin,
    lrn,
)
from .sim_inbox import check_windows, grid_pe, pe_windows
from .sim_pe import Env, run_op
from .sim_sharded import row_windows
from .sim_tail import operand_on_owners


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def pool(env: Env, node: Node, stats: dict[str, int]) -> bool:
    """2-D pooling per PE; 1-D as 2-D rows of one row; 3-D global pooling
    with depth folded into the rows; 3-D windowed pooling reduces each
    output plane's T input planes first (both poolings are separable).
    MaxPool's Indices: every PE also holds the row-major positions of its
    input rows and keeps, per output, the first position of the maximum.
    int8 / uint8 MaxPool runs in f32 (exact) and returns the input's type."""
    x = env.get(node.inputs[0], node.name)
    src_dt = x.dtype
    # int8 / uint8 MaxPool (what ONNX allows): exact in the PE's f32, back at the end
    small_int = np.issubdtype(src_dt, np.integer) and src_dt.itemsize <= 2 and \
        node.op in ("MaxPool", "GlobalMaxPool")
    if x.ndim not in (3, 4, 5) or not (np.issubdtype(src_dt, np.floating) or small_int):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    out = env.shape_of(node.outputs[0])
    glob = node.op.startswith("Global")
    idx = node.op == "MaxPool" and len(node.outputs) > 1 and bool(node.outputs[1])
    pos = _positions(x.shape) if idx else None
    if x.ndim == 4:
        got = _pool4(env, node, x, stats, pos)
    elif glob:
        got = _pool4(env, node, x.reshape(x.shape[0], x.shape[1], -1, x.shape[-1]), stats,
                     view=_depth_rows(x.shape) if x.ndim == 5 else _one_row)
    elif x.ndim == 3:
        got = _pool4(env, _flat_node(node, 1), x[:, :, None, :], stats,
                     None if pos is None else pos[:, :, None, :], view=_one_row)
    else:
        got = _pool_3d(env, node, x, stats, pos)
    if got is None:
        return False
    y, own, first = got
    own = np.broadcast_to(own, y.shape).reshape(out)
    y = y.astype(src_dt) if small_int else y
    env.store(node.outputs[0], np.ascontiguousarray(y).reshape(out))
    env.owner[node.outputs[0]] = own
    if first is not None:
        o = node.outputs[1]
        env.store(o, pool_indices(node, first.reshape(out), x.shape))
        env.owner[o] = own
    return True


def _positions(shape: tuple[int, ...]) -> np.ndarray:
    """Row-major position of every element in its (N, C) plane, as floats
    (a row a PE does not hold reads NaN, as its values do)."""
    plane = np.arange(int(np.prod(shape[2:])), dtype=np.float64).reshape(1, 1, *shape[2:])
    return np.broadcast_to(plane, shape)


def _first_max(win: np.ndarray, y: np.ndarray, wpos: np.ndarray, axes: tuple[int, ...]
               ) -> np.ndarray:
    """Per window: the smallest position holding its maximum y."""
    hit = win == np.expand_dims(y, axes)
    return np.where(hit, wpos, np.inf).min(axis=axes)


def _flat_node(node: Node, nsp: int) -> Node:
    """The 2-D pooling a 1-D (nsp 1: rows of one) or 3-D (nsp 3: per depth
    plane) pooling runs as."""
    a = dict(node.attrs)
    if nsp == 1:
        for key, one in (("kernel_shape", 1), ("strides", 1), ("dilations", 1)):
            if a.get(key) is not None:
                a[key] = [one, *list(a[key])]  # type: ignore[misc]
        if a.get("pads") is not None:
            p0, p1 = list(a["pads"])  # type: ignore[misc]
            a["pads"] = [0, p0, 0, p1]
    else:
        for key in ("kernel_shape", "strides", "dilations"):
            if a.get(key) is not None:
                a[key] = list(a[key])[1:]  # type: ignore[index]
        if a.get("pads") is not None:
            p = list(a["pads"])  # type: ignore[arg-type]
            a["pads"] = [p[1], p[2], p[4], p[5]]
    return Node(node.name, node.op, node.inputs, node.outputs, a)


def _pool_3d(env: Env, node: Node, x: np.ndarray, stats: dict[str, int],
             pos: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """Each output depth plane's T input planes reduced first, then the
    (H, W) pooling per PE on the [N Do, C, H, W] planes (`pos`: the
    positions of the first maximum go along, plane by plane)."""
    kernel, st, dl, pb, pe, oe = _pool_geometry(node, x)
    N, C, D = x.shape[:3]
    Do, extra = oe[0], oe[3]
    mx = node.op == "MaxPool"
    depth = [(0, 0), (0, 0), (pb[0], pe[0] + extra), (0, 0), (0, 0)]
    xd = np.pad(x, depth, constant_values=-np.inf if mx else 0.0)
    planes = np.arange(Do)[:, None] * st[0] + np.arange(kernel[0])[None, :] * dl[0]
    xs = xd[:, :, planes]  # [N, C, Do, T, H, W]
    p4 = None
    if mx:
        red = xs.max(axis=3)
        if pos is not None:
            ps = np.pad(pos, depth, constant_values=np.inf)[:, :, planes]
            p4 = _first_max(xs, red, ps, (3,))
    else:
        if node.attrs.get("count_include_pad", 0):
            valid = planes < D + pb[0] + pe[0]
        else:
            valid = (planes >= pb[0]) & (planes < pb[0] + D)
        red = xs.sum(axis=3) / valid.sum(axis=1)[None, None, :, None, None].astype(COMPUTE_DTYPE)

    def flat(v: np.ndarray) -> np.ndarray:
        return v.transpose(0, 2, 1, 3, 4).reshape(N * Do, C, *x.shape[3:])

    got = _pool4(env, _flat_node(node, 3), flat(red).astype(COMPUTE_DTYPE), stats,
                 None if p4 is None else flat(p4), view=_all_planes(x.shape))
    if got is None:
        return None
    y4, own, f4 = got

    def back(v: np.ndarray) -> np.ndarray:
        return v.reshape(N, Do, C, *v.shape[2:]).transpose(0, 2, 1, 3, 4)

    # every depth plane: the owners of its rows
    return back(y4), own[:, :, None], None if f4 is None else back(f4)


def _one_row(need: np.ndarray) -> np.ndarray:
    """1-D pooling's windows ([N, C, 1, W] as the PEs run it) on its [N, C,
    W] input (a PE whose row group has no output row reads nothing)."""
    out = need[..., [0, 1, 3]].copy()
    out[~(need[..., 1, :] > need[..., 0, :]).all(axis=-1)] = 0
    return out


def _depth_rows(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """3-D global pooling's windows (rows of the depth planes folded, [N, C,
    D H, W]) on its [N, C, D, H, W] input: a block of folded rows spans the
    hull of its (plane, row) pairs (wsec.ir.cuts.flat_hulls)."""
    D, H = shape[2], shape[3]

    def view(need: np.ndarray) -> np.ndarray:
        lo, hi = need[..., 0, 2].reshape(-1), need[..., 1, 2].reshape(-1)
        dh = flat_hulls(lo, np.maximum(lo, hi), (D, H)).reshape(*need.shape[:2], 2, 2)
        out = joined(need[..., :2].reshape(-1, 2, 2), dh.reshape(-1, 2, 2),
                     need[..., 3:].reshape(-1, 2, 1))
        return out.reshape(*need.shape[:2], 2, 5)
    return view


def _all_planes(shape: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    """3-D windowed pooling's windows ([N Do, C, H, W] planes) on its [N,
    C, D, H, W] input: every output plane reduces its T input planes first,
    so a PE holds its channels x rows of every input plane."""
    D = shape[2]

    def view(need: np.ndarray) -> np.ndarray:
        out = np.zeros((*need.shape[:2], 2, 5), np.int64)
        out[..., [0, 1, 3, 4]] = need
        out[..., 1, 0] = np.where(need[..., 1, 0] > 0, shape[0], 0)
        out[..., 1, 2] = np.where((need[..., 1, :] > need[..., 0, :]).all(axis=-1), D, 0)
        return out
    return view


def _pool4(env: Env, node: Node, x: np.ndarray, stats: dict[str, int],
           pos: np.ndarray | None = None,
           view: Callable[[np.ndarray], np.ndarray] | None = None
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(y, owners, the position of each output's first maximum when `pos`
    gives the positions of x's elements) on the c x s PEs. `view` maps the
    PEs' windows of x to windows of the kernel's input (1-D, 3-D pooling
    run on a 4-D view of it)."""
    k = env.k
    c, s = int(k.knobs["c"]), int(k.knobs["s"])
    N, C, H, W = x.shape
    cb = _cdiv(C, c)
    uw, uh = k.unrotated_shape
    d = env.deliveries.get(node.inputs[0])
    check = d is not None and (d.shape == x.shape if view is None else len(d.shape) > 0)

    def held_need(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        need = grouped_need(x.shape, c, s, (uw, uh), lo, hi)
        return need if view is None else view(need)

    if node.op.startswith("Global"):
        held = [env_kind_rows(env, g) for g in range(s)]
        if check:
            rows = np.array(held, np.int64).reshape(s, 2)
            stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d,
                                                   held_need(rows[:, 0], rows[:, 1]))
        acc = None
        for a, b in held:  # the row groups' partials, combined in PE order
            part = x[:, :, a:b]
            if part.shape[2] == 0:
                continue
            part = part.max(axis=(2, 3)) if node.op == "GlobalMaxPool" \
                else part.sum(axis=(2, 3), dtype=COMPUTE_DTYPE)
            acc = part if acc is None else (np.maximum(acc, part) if node.op == "GlobalMaxPool"
                                            else acc + part)
        if acc is None or sum(b - a for a, b in held) != H:
            return None  # rows not dealt out exactly once: the reference path reports it
        y = acc if node.op == "GlobalMaxPool" else acc / COMPUTE_DTYPE(H * W)
        i = (np.arange(C) // cb) * s + (s - 1)
        stats["sharded_pes"] = c * s
        return y.reshape(N, C, 1, 1), grouped_lin(env.k, i).reshape(1, C, 1, 1), None
    kernel, st, dl, pb, pe, oe = _pool_geometry(node, x)
    (Ho, Wo), extra = oe[:2], oe[2:]
    R = kernel[0]
    hb = _cdiv(Ho, s)
    mx = node.op == "MaxPool"
    width = [(0, 0), (0, 0), (pb[0], pe[0] + extra[0]), (pb[1], pe[1] + extra[1])]
    xp = np.pad(x, width, constant_values=-np.inf if mx else 0.0)

    if check:
        lo, hi = window_need(s, hb, st[0], R, dl[0], Ho, pb[0], H)
        stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, held_need(lo, hi))

    def first(g: int) -> tuple[int, int]:  # channel group 0, row group g
        px, py = grouped_pe(np.array(g), uw, uh, grouped_count(env.k))
        return int(px), int(py)

    loc = row_windows(env, node, xp, s, first, hb, st[0], R, dl[0], Ho, pb[0])
    win = windows(loc, kernel, st, dl, [hb, Wo])  # [s N, C, hb, Wo, R, S]
    f = None
    if mx:
        y = win.max(axis=(4, 5))
        if pos is not None:  # each row group holds its rows' positions too
            pp = np.pad(pos, width, constant_values=np.inf)
            ploc = row_windows(env, node, pp, s, first, hb, st[0], R, dl[0], Ho, pb[0])
            f = _first_max(win, y, windows(ploc, kernel, st, dl, [hb, Wo]), (4, 5))
    else:
        total = win.sum(axis=(4, 5))
        if node.attrs.get("count_include_pad", 0):
            ones = np.pad(np.ones((N, 1, H + pb[0] + pe[0], W + pb[1] + pe[1]), COMPUTE_DTYPE),
                          [(0, 0), (0, 0), (0, extra[0]), (0, extra[1])])
        else:
            ones = np.pad(np.ones((N, 1, H, W), COMPUTE_DTYPE), width)
        mloc = row_windows(env, node, ones, s, first, hb, st[0], R, dl[0], Ho, pb[0])
        count = windows(np.nan_to_num(mloc), kernel, st, dl, [hb, Wo]).sum(axis=(4, 5))
        y = total / count

    def rows(v: np.ndarray) -> np.ndarray:  # the row groups' outputs, in row order
        return v.reshape(s, N, C, hb, Wo).transpose(1, 2, 0, 3, 4).reshape(
            N, C, s * hb, Wo)[:, :, :Ho]

    i = (np.arange(C) // cb)[:, None] * s + (np.arange(Ho) // hb)[None, :]
    stats["sharded_pes"] = c * s
    return rows(y), grouped_lin(env.k, i).reshape(1, C, Ho, 1), None if f is None else rows(f)


def window_need(s: int, hb: int, sh: int, R: int, dh: int, Ho: int, pad_top: int, H: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """Input rows [lo, hi) the hb output rows of each of s row groups read
    through an R-tap window (dilation dh, stride sh, pad_top rows above the
    input): the strided span plus the halo, clipped to the H input rows."""
    first = np.arange(s) * hb
    nrows = np.clip(Ho - first, 0, hb)
    r0 = first * sh - pad_top
    r1 = np.where(nrows > 0, r0 + (nrows - 1) * sh + (R - 1) * dh + 1, r0)
    return np.clip(r0, 0, H), np.clip(r1, 0, H)


def grouped_need(shape: tuple[int, ...], c: int, s: int, rect: tuple[int, int],
                 lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(uh, uw, 2, 4): the input box each PE of a grouped layout of (uw, uh)
    = `rect` reads (PE index i, wsec.ir.library_common.grouped_cells: channel
    block i // s of rows [lo, hi) of its row group i % s; cells with no PE
    read nothing)."""
    uw, uh = rect
    N, C, _, W = shape
    i = grouped_cells(uw, uh, c * s)
    none = i < 0
    i = np.maximum(i, 0)
    g, cg = i % s, i // s
    g = np.minimum(g, s - 1)
    cb = _cdiv(C, c)
    need = np.zeros((uh, uw, 2, 4), np.int64)
    need[:, :, 1, 0] = N
    need[:, :, 0, 1] = np.minimum(cg * cb, C)
    need[:, :, 1, 1] = np.minimum((cg + 1) * cb, C)
    need[:, :, 0, 2], need[:, :, 1, 2] = lo[g], np.maximum(lo[g], hi[g])
    need[:, :, 1, 3] = W
    need[none] = 0
    return need


def env_kind_rows(env: Env, g: int) -> tuple[int, int]:
    return KINDS[env.k.kind].input_rows(env.k.dims, env.k.knobs, g)


def _spread_lin(env: Env, i: np.ndarray) -> np.ndarray:
    """Linear offset of spread-kind PE index i (row-major, as it is laid out)."""
    uw, _ = env.k.unrotated_shape
    return (i // uw) * uw + i % uw


def softmax(env: Env, node: Node, stats: dict[str, int]) -> bool:
    if node.op not in ("Softmax", "LogSoftmax"):
        return False
    x = env.get(node.inputs[0], node.name)
    if not np.issubdtype(x.dtype, np.floating) or x.ndim == 0:
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    axis = int(node.attrs.get("axis", -1)) % x.ndim
    xm = np.moveaxis(x, axis, -1)
    E = xm.shape[-1]
    rows = int(np.prod(xm.shape[:-1]))
    p = int(env.k.knobs["p"])
    pe, pr = min(p, E), max(1, p // E)
    nb, rl = _cdiv(E, pe), _cdiv(rows, pr)
    _check_softmax(env, node.inputs[0], x.shape, axis, pe, nb, rl, p, stats)
    x2 = np.pad(xm.reshape(rows, E), [(0, 0), (0, pe * nb - E)], constant_values=-np.inf)
    seg = x2.reshape(rows, pe, nb)  # [row, segment PE, its elements]
    gmax = seg.max(axis=2).max(axis=1, keepdims=True)[:, :, None]  # partial maxima combined
    with np.errstate(invalid="ignore"):  # a row masked whole: NaN, as the reference
        ex = np.exp(seg - gmax)
    part = ex.sum(axis=2, dtype=COMPUTE_DTYPE)
    tot = part[:, 0].copy()
    for j in range(1, pe):  # the segments' sums, added in segment order
        tot += part[:, j]
    tot = tot[:, None, None]
    y = (seg - gmax - np.log(tot)) if node.op == "LogSoftmax" else ex / tot
    y = y.reshape(rows, pe * nb)[:, :E].reshape(xm.shape)
    env.store(node.outputs[0], np.ascontiguousarray(np.moveaxis(y, -1, axis)))
    seg, rg = softmax_cells(x.shape, axis, p)
    at = np.full((pr, pe), -1, np.int64)  # PE index of each (row group, segment)
    live = (seg < pe) & (rg < pr)
    at[rg[live], seg[live]] = np.flatnonzero(live)
    i = at[(np.arange(rows) // rl)[:, None], (np.arange(E) // nb)[None, :]]
    own = np.moveaxis(_spread_lin(env, i).reshape(*xm.shape[:-1], E), -1, axis)
    env.owner[node.outputs[0]] = own
    stats["sharded_pes"] = pe * min(pr, rows)
    return True


def _check_softmax(env: Env, name: str, shape: tuple[int, ...], axis: int, pe: int, nb: int,
                   rl: int, p: int, stats: dict[str, int]) -> None:
    """Softmax PE i reads its segment (nb long) of the axis in the rl
    consecutive rows (over the other axes, in order) of its row group
    (wsec.ir.library_rowwise.softmax_cells); its window is their hull,
    checked against the lane that delivered it."""
    d = env.deliveries.get(name)
    if d is None or d.shape != tuple(shape):
        return
    E = shape[axis]
    other = tuple(n for a, n in enumerate(shape) if a != axis)
    rows = int(np.prod(other))
    i = np.arange(p)
    seg, rg = softmax_cells(tuple(shape), axis, p)
    hull = flat_hulls(np.minimum(rg * rl, rows), np.minimum((rg + 1) * rl, rows), other)
    ax = np.stack([np.minimum(seg * nb, E), np.minimum((seg + 1) * nb, E)], axis=1)[:, :, None]
    uw, uh = env.k.unrotated_shape
    stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, pe_windows(
        joined(hull[:, :, :axis], ax, hull[:, :, axis:]), _spread_lin(env, i), uw, uh))


def norm(env: Env, node: Node, stats: dict[str, int]) -> bool:
    if node.op == "LayerNormalization":
        return _layernorm(env, node, stats)
    if node.op == "BatchNormalization" and not node.attrs.get("training_mode", 0):
        return _batchnorm(env, node, stats)
    if node.op == "BatchNormalization":
        return batchnorm_train(env, node, stats)
    return node.op == "LRN" and lrn(env, node, stats)


def _norm_owner(env: Env, group: np.ndarray, row: np.ndarray) -> np.ndarray:
    """PE of channel group `group` and row index `row` (< s r)."""
    k = env.k
    rows = int(k.knobs["s"]) * int(k.knobs.get("r", 1))
    return grouped_lin(env.k, group * rows + row)


def _layernorm(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if not np.issubdtype(x.dtype, np.floating):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    axis = int(node.attrs.get("axis", -1)) % x.ndim
    eps = COMPUTE_DTYPE(node.attrs.get("epsilon", 1e-5))
    C, W = int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))
    c, r = int(k.knobs["c"]), int(k.knobs.get("r", 1))
    cb, wseg = _cdiv(C, c), _cdiv(W, r)
    check_row_norm(env, node.inputs[0], x.shape, axis, cb, wseg, stats)
    x2 = np.pad(x.reshape(C, W), [(0, 0), (0, r * wseg - W)]).reshape(C, r, wseg)
    valid = (np.arange(r * wseg) < W).reshape(1, r, wseg)

    def combine(part: np.ndarray) -> np.ndarray:  # the r segments, in order
        tot = part[:, 0].copy()
        for j in range(1, r):
            tot += part[:, j]
        return tot[:, None, None]

    mean = combine(x2.sum(axis=2, dtype=COMPUTE_DTYPE)) / COMPUTE_DTYPE(W)
    dev = np.where(valid, x2 - mean, 0)
    var = combine((dev * dev).sum(axis=2, dtype=COMPUTE_DTYPE)) / COMPUTE_DTYPE(W)
    xhat = (dev / np.sqrt(var + eps)).reshape(C, r * wseg)[:, :W].reshape(x.shape)
    grid = x.shape
    group = (np.arange(C) // cb)[:, None]
    seg = (np.arange(W) // wseg)[None, :]
    owner = _norm_owner(env, group, seg).reshape(grid)  # s = 1: rows are the C groups
    sc = operand_on_owners(env, node.inputs[1], grid, owner)
    b = operand_on_owners(env, node.inputs[2], grid, owner) \
        if len(node.inputs) > 2 and node.inputs[2] else 0
    if sc is None or b is None:
        return False
    y = xhat * sc + b
    env.store(node.outputs[0], y.astype(COMPUTE_DTYPE))
    env.owner[node.outputs[0]] = owner
    # Mean and InvStdDev: each row's statistics, where its chain of segment
    # partials ends (the row's last segment PE)
    last = _norm_owner(env, group[:, 0], np.full(C, r - 1))
    for o, v in zip(node.outputs[1:3], (mean, 1 / np.sqrt(var + eps)), strict=False):
        if o:
            shape = env.shape_of(o)
            env.store(o, v.astype(COMPUTE_DTYPE).reshape(shape))
            env.owner[o] = last.reshape(shape)
    stats["sharded_pes"] = c * r
    return True


def _batchnorm(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.floating):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    N, C = x.shape[:2]
    c, s = int(k.knobs["c"]), int(k.knobs["s"])
    H = x.shape[2] if x.ndim >= 4 else 1
    cb, hb = _cdiv(C, c), _cdiv(N * H, s)
    check_norm_rows(env, node.inputs[0], x.shape, cb, hb, None, stats)
    grid = x.shape
    nh = (np.arange(N)[:, None] * H + np.arange(H)[None, :]) // hb  # row group of (n, h)
    group = np.arange(C) // cb
    own = _norm_owner(env, group[None, :, None], nh[:, None, :])  # [N, C, H]
    if x.ndim == 2:
        owner = own[:, :, 0]
    else:
        owner = np.broadcast_to(own.reshape(N, C, H, *(1,) * (x.ndim - 3)), grid) \
            if x.ndim >= 4 else np.broadcast_to(own, grid)
    per_channel = (C,) + (1,) * (x.ndim - 2)
    sc, b, m, v = (operand_on_owners(env, i, grid, owner, per_channel)
                   for i in node.inputs[1:5])
    if sc is None or b is None or m is None or v is None:
        return False
    eps = float(node.attrs.get("epsilon", 1e-5))
    kk = sc / np.sqrt(v + np.asarray(eps, v.dtype))
    env.store(node.outputs[0], ((x - m) * kk + b).astype(COMPUTE_DTYPE))
    env.owner[node.outputs[0]] = owner
    stats["sharded_pes"] = c * s
    return True


def fused_pool(env: Env, node: Node, stats: dict[str, int]) -> bool:
    """A pooling fused after a conv (ConvKind's `pool` dims): each pooled
    row is computed by the row group owning its window's last conv row,
    which holds its own conv rows plus the pR - psh rows before them that
    the previous group sends it; a window reaching further back is a
    SimError at that group's PE. The pooled element's owner is the owner of
    that last conv row."""
    k = env.k
    src = node.inputs[0]
    x = env.vals.get(src)
    own = env.owner.get(src)
    if node.op not in ("MaxPool", "AveragePool") or x is None or own is None or x.ndim != 4 \
            or (len(node.outputs) > 1 and node.outputs[1]):
        return False
    kernel, st, dl, pb, _, oe = _pool_geometry(node, x)
    Hq = oe[0]
    Ho = x.shape[2]
    s = int(k.knobs["s"])
    hb = _cdiv(Ho, s)
    kind = KINDS[k.kind]
    held = np.array([kind.pool_rows(k.dims, k.knobs, g) for g in range(s)], np.int64)
    q = np.arange(Hq)
    first = np.clip(q * st[0] - pb[0], 0, Ho - 1)
    last = np.clip(q * st[0] - pb[0] + (kernel[0] - 1) * dl[0], 0, Ho - 1)
    group = last // hb
    bad = np.flatnonzero((first < held[group, 0]) | (last >= held[group, 1]))
    if bad.size:
        i = int(bad[0])
        g = int(group[i])
        c = int(k.knobs.get("c", 1))
        x0, y0 = grid_pe(env.mem.p, env.ki, 0, g * c + c - 1)
        raise SimError(f"kernel '{k.name}' ({k.kind}): PE ({x0}, {y0}) pools output row {i} "
                       f"from conv rows {int(first[i])}..{int(last[i])} of %{src}, but its row "
                       f"group holds rows {int(held[g, 0])}..{int(held[g, 1]) - 1}")
    y = run_op(k.name, node, [x])[0]
    env.store(node.outputs[0], y)
    env.owner[node.outputs[0]] = np.take(np.broadcast_to(own, x.shape), last, axis=2)
    stats["fused_pool_rows"] = int(Hq)
    return True
