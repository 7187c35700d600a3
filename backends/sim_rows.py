"""Per-PE executors of the kinds that work along rows: pooling, softmax and
normalisation (library_pool, library_rowwise).

- pool, knobs c, s (PE index i = channel group i // s, row group i % s, in
  columns: offset (i // h, i % h)): windowed pooling reads the padded input
  rows its row group holds (PoolKind.input_rows: span plus halo; a read
  outside is a SimError at that PE); global pooling sums (or maxes) each row
  group's block of rows and combines the s partials in PE order on the last
  PE of the channel group.
- softmax, knob p: min(p, E) segments of every row, p // E row groups; each
  PE reduces its segment (max, then the sum of exponentials) and the
  segments' partials are combined in segment order.
- norm, knobs c, s, r: LayerNormalization rows in c groups, each row in r
  segments whose partial sums (mean, then squared deviations) are combined
  in order; BatchNormalization (inference) per element on the PE of its
  channel group. Scale and bias come from the owning PEs' shards
  (sim_tail.const_on_owners).
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.opsem import windows
from wsec.ir.opsem_core import _pool_geometry

from .sim_base import COMPUTE_DTYPE
from .sim_pe import Env
from .sim_sharded import row_windows
from .sim_tail import const_on_owners


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def _grouped_lin(env: Env, i: np.ndarray) -> np.ndarray:
    """Linear offset (py * uw + px) of grouped-layout PE index i."""
    uw, uh = env.k.unrotated_shape
    return (i % uh) * uw + i // uh


def pool(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating) or \
            (node.op == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    c, s = int(k.knobs["c"]), int(k.knobs["s"])
    N, C, H, W = x.shape
    cb = _cdiv(C, c)
    uw, uh = k.unrotated_shape
    if node.op.startswith("Global"):
        held = [env_kind_rows(env, g) for g in range(s)]
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
            return False  # rows not dealt out exactly once: the reference path reports it
        y = acc if node.op == "GlobalMaxPool" else acc / COMPUTE_DTYPE(H * W)
        env.store(node.outputs[0], y.reshape(N, C, 1, 1))
        i = (np.arange(C) // cb) * s + (s - 1)
        env.owner[node.outputs[0]] = _grouped_lin(env, i).reshape(1, C, 1, 1)
        stats["sharded_pes"] = c * s
        return True
    kernel, st, dl, pb, pe, oe = _pool_geometry(node, x)
    (Ho, Wo), extra = oe[:2], oe[2:]
    R = kernel[0]
    hb = _cdiv(Ho, s)
    mx = node.op == "MaxPool"
    width = [(0, 0), (0, 0), (pb[0], pe[0] + extra[0]), (pb[1], pe[1] + extra[1])]
    xp = np.pad(x, width, constant_values=-np.inf if mx else 0.0)

    def first(g: int) -> tuple[int, int]:
        return g // uh, g % uh  # channel group 0, row group g

    loc = row_windows(env, node, xp, s, first, hb, st[0], R, dl[0], Ho, pb[0])
    win = windows(loc, kernel, st, dl, [hb, Wo])  # [s N, C, hb, Wo, R, S]
    if mx:
        y = win.max(axis=(4, 5))
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
    y = y.reshape(s, N, C, hb, Wo).transpose(1, 2, 0, 3, 4).reshape(N, C, s * hb, Wo)[:, :, :Ho]
    env.store(node.outputs[0], np.ascontiguousarray(y))
    i = (np.arange(C) // cb)[:, None] * s + (np.arange(Ho) // hb)[None, :]
    env.owner[node.outputs[0]] = _grouped_lin(env, i).reshape(1, C, Ho, 1)
    stats["sharded_pes"] = c * s
    return True


def env_kind_rows(env: Env, g: int) -> tuple[int, int]:
    from wsec.ir.kernels import KINDS

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
    x2 = np.pad(xm.reshape(rows, E), [(0, 0), (0, pe * nb - E)], constant_values=-np.inf)
    seg = x2.reshape(rows, pe, nb)  # [row, segment PE, its elements]
    gmax = seg.max(axis=2).max(axis=1, keepdims=True)[:, :, None]  # partial maxima combined
    ex = np.exp(seg - gmax)
    part = ex.sum(axis=2, dtype=COMPUTE_DTYPE)
    tot = part[:, 0].copy()
    for j in range(1, pe):  # the segments' sums, added in segment order
        tot += part[:, j]
    tot = tot[:, None, None]
    y = (seg - gmax - np.log(tot)) if node.op == "LogSoftmax" else ex / tot
    y = y.reshape(rows, pe * nb)[:, :E].reshape(xm.shape)
    env.store(node.outputs[0], np.ascontiguousarray(np.moveaxis(y, -1, axis)))
    i = (np.arange(rows) // rl)[:, None] * pe + (np.arange(E) // nb)[None, :]
    own = np.moveaxis(_spread_lin(env, i).reshape(*xm.shape[:-1], E), -1, axis)
    env.owner[node.outputs[0]] = own
    stats["sharded_pes"] = pe * min(pr, rows)
    return True


def norm(env: Env, node: Node, stats: dict[str, int]) -> bool:
    if node.op == "LayerNormalization":
        return _layernorm(env, node, stats)
    if node.op == "BatchNormalization" and not node.attrs.get("training_mode", 0):
        return _batchnorm(env, node, stats)
    return False


def _norm_owner(env: Env, group: np.ndarray, row: np.ndarray) -> np.ndarray:
    """PE of channel group `group` and row index `row` (< s r)."""
    k = env.k
    rows = int(k.knobs["s"]) * int(k.knobs.get("r", 1))
    return _grouped_lin(env, group * rows + row)


def _layernorm(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if not np.issubdtype(x.dtype, np.floating) or (len(node.outputs) > 1 and any(
            node.outputs[1:])) or any(i and i not in k.weights for i in node.inputs[1:]):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    axis = int(node.attrs.get("axis", -1)) % x.ndim
    eps = COMPUTE_DTYPE(node.attrs.get("epsilon", 1e-5))
    C, W = int(np.prod(x.shape[:axis])), int(np.prod(x.shape[axis:]))
    c, r = int(k.knobs["c"]), int(k.knobs.get("r", 1))
    cb, wseg = _cdiv(C, c), _cdiv(W, r)
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
    y = xhat * const_on_owners(env, k.weights.index(node.inputs[1]), grid, owner)
    if len(node.inputs) > 2 and node.inputs[2]:
        y = y + const_on_owners(env, k.weights.index(node.inputs[2]), grid, owner)
    env.store(node.outputs[0], y.astype(COMPUTE_DTYPE))
    env.owner[node.outputs[0]] = owner
    stats["sharded_pes"] = c * r
    return True


def _batchnorm(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if x.ndim < 2 or any(i not in k.weights for i in node.inputs[1:5]):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    N, C = x.shape[:2]
    c, s = int(k.knobs["c"]), int(k.knobs["s"])
    H = x.shape[2] if x.ndim >= 4 else 1
    cb, hb = _cdiv(C, c), _cdiv(N * H, s)
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
    sc, b, m, v = (const_on_owners(env, k.weights.index(i), grid, owner, per_channel)
                   for i in node.inputs[1:5])
    eps = float(node.attrs.get("epsilon", 1e-5))
    kk = sc / np.sqrt(v + np.asarray(eps, v.dtype))
    env.store(node.outputs[0], ((x - m) * kk + b).astype(COMPUTE_DTYPE))
    env.owner[node.outputs[0]] = owner
    stats["sharded_pes"] = c * s
    return True
