"""Per-PE executors of the norms whose statistics cross PEs: LRN (across
channels) and BatchNormalization in training mode (across the batch and
the rows). Both run on NormKind's mapping (library_rowwise): PE index
i = channel group i // (s r), row group i % (s r), laid out in columns.

- LRN: PE (group g, row group) computes the outputs of its channels and
  rows from the input channels it holds (`NormKind.input_channels`: its
  block plus the window's neighbours); a window reaching a channel the
  group does not hold is a SimError naming that PE, the element and the
  lane that carried it.
- BatchNormalization, training_mode = 1: every row group sums its rows of
  each channel of its group; the s partials (sums, then sums of squared
  deviations) are combined in PE order along the channel group's column,
  giving the batch mean and population variance; each element is
  normalised on its own PE with that PE's shard of scale and bias. The
  running statistics (outputs 1, 2) end on the group's last row PE, from
  that PE's shard of the running mean and variance.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.cuts import flat_hulls, grouped_pe, joined
from wsec.ir.graph import Node
from wsec.ir.kernels import KINDS

from .format import KernelInfo
from .sim_base import COMPUTE_DTYPE
from .sim_inbox import check_windows, pe_windows, read_error
from .sim_pe import Env
from .sim_tail import operand_on_owners


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def grouped_lin(k: KernelInfo, i: np.ndarray) -> np.ndarray:
    """Linear offset (py * uw + px) of PE index i of kernel k's grouped
    layout (wsec.ir.cuts.grouped_pe) of c s r PEs."""
    uw, uh = k.unrotated_shape
    px, py = grouped_pe(i, uw, uh, grouped_count(k))
    return py * uw + px


def grouped_count(k: KernelInfo) -> int:
    """The PEs of kernel k's grouped layout: c s (x r, a row norm's segments)."""
    return int(k.knobs["c"]) * int(k.knobs["s"]) * int(k.knobs.get("r", 1))


def _rows(x: np.ndarray) -> tuple[int, int, int, int]:
    """(N, C, H, W'): the rows a norm splits are (N, H), W' the rest."""
    N, C = x.shape[:2]
    H = x.shape[2] if x.ndim >= 4 else 1
    return N, C, H, int(np.prod(x.shape[2:], dtype=np.int64)) // H


def check_norm_rows(env: Env, name: str, shape: tuple[int, ...], cb: int, hb: int,
                    channels: np.ndarray | None, stats: dict[str, int]) -> None:
    """A norm PE (grouped index i of channel group and row `NormKind.cells`:
    channel-major, i // (s r) and i % (s r), unless an LRN's snake) reads
    its group's channels (`channels` [c, 2], default its block of cb) in
    its row group's block of hb of the N H rows (samples x the first
    spatial axis), the rest whole: checked against the lanes that
    delivered `name` (sim_inbox.check_windows)."""
    d = env.deliveries.get(name)
    if d is None or d.shape != tuple(shape) or len(shape) < 2:
        return
    k = env.k
    N, C = shape[:2]
    H = shape[2] if len(shape) >= 4 else 1
    c = int(k.knobs["c"])
    group, row = KINDS[k.kind].cells(k.dims, k.knobs)
    i = np.arange(group.size)
    if channels is None:
        channels = np.stack([np.minimum(np.arange(c) * cb, C),
                             np.minimum((np.arange(c) + 1) * cb, C)], axis=1)
    hull = flat_hulls(np.minimum(row * hb, N * H), np.minimum((row + 1) * hb, N * H), (N, H))
    ch = channels[group][:, :, None]
    tail = shape[3:] if len(shape) >= 4 else shape[2:]
    rest = np.zeros((i.size, 2, len(tail)), np.int64)
    rest[:, 1] = tail
    parts = (hull[:, :, :1], ch, hull[:, :, 1:], rest) if len(shape) >= 4 else (
        hull[:, :, :1], ch, rest)
    uw, uh = k.unrotated_shape
    stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, pe_windows(
        joined(*parts), grouped_lin(k, i), uw, uh))


def check_row_norm(env: Env, name: str, shape: tuple[int, ...], lead: int, cb: int, wseg: int,
                   stats: dict[str, int]) -> None:
    """A row norm's PE (grouped index i = group i // (s r), segment i % r)
    reads its group's block of cb of the C = prod(shape[:lead]) rows and
    its segment of wseg of the trailing elements of each."""
    d = env.deliveries.get(name)
    if d is None or d.shape != tuple(shape):
        return
    k = env.k
    c, r = int(k.knobs["c"]), int(k.knobs.get("r", 1))
    rows = int(k.knobs["s"]) * r
    C, W = int(np.prod(shape[:lead])), int(np.prod(shape[lead:]))
    i = np.arange(c * rows)
    group, seg = i // rows, i % r
    boxes = joined(
        flat_hulls(np.minimum(group * cb, C), np.minimum((group + 1) * cb, C), shape[:lead]),
        flat_hulls(np.minimum(seg * wseg, W), np.minimum((seg + 1) * wseg, W), shape[lead:]))
    uw, uh = k.unrotated_shape
    stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, pe_windows(
        boxes, grouped_lin(k, i), uw, uh))


def _owner(env: Env, x: np.ndarray, cb: int, hb: int) -> np.ndarray:
    """Owner PE of every element: channel group c // cb, row group (n H + h)
    // hb, at the PE index NormKind.pe_index gives them."""
    k = env.k
    N, C, H, _ = _rows(x)
    g = (np.arange(N)[:, None] * H + np.arange(H)[None, :]) // hb  # [N, H]
    own = grouped_lin(k, KINDS[k.kind].pe_index(k.dims, k.knobs, (np.arange(C) // cb)[
        None, :, None], g[:, None, :]))  # [N, C, H]
    if x.ndim >= 4:
        own = own.reshape(N, C, H, *(1,) * (x.ndim - 3))
    elif x.ndim == 2:
        own = own[:, :, 0]
    return np.broadcast_to(own, x.shape)


def lrn(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if node.op != "LRN" or x.ndim < 2 or not np.issubdtype(x.dtype, np.floating):
        return False
    N, C, H, _ = _rows(x)
    size = int(node.attrs["size"])
    alpha, beta = float(node.attrs.get("alpha", 1e-4)), float(node.attrs.get("beta", 0.75))
    bias = float(node.attrs.get("bias", 1.0))
    c, s = int(k.knobs["c"]), int(k.knobs["s"])
    cb, hb = _cdiv(C, c), _cdiv(N * H, s)
    lo = (size - 1) // 2
    kind = KINDS[k.kind]
    held = np.array([kind.input_channels(k.dims, k.knobs, g) for g in range(c)], np.int64)
    ch = np.arange(C)
    src = ch[:, None] - lo + np.arange(size)[None, :]  # [C, taps]: the window of each channel
    valid = (src >= 0) & (src < C)
    grp = ch // cb
    outside = valid & ((src < held[grp, 0:1]) | (src >= held[grp, 1:2]))
    if outside.any():
        ci, t = (int(v) for v in np.argwhere(outside)[0])
        g = int(grp[ci])
        py, px = divmod(int(grouped_lin(k, kind.pe_index(k.dims, k.knobs, np.array(g),
                                                         np.array(0)))), k.unrotated_shape[0])
        plane = int(np.prod(x.shape[2:], dtype=np.int64))
        raise read_error(env.mem.p, env.ki, px, py, node.inputs[0], int(src[ci, t]) * plane,
                         f"input channels {int(held[g, 0])}..{int(held[g, 1]) - 1} (its "
                         f"channel group {g} and the LRN window's neighbours)",
                         env.deliveries.get(node.inputs[0]))
    check_norm_rows(env, node.inputs[0], x.shape, cb, hb, held, stats)
    sq = np.square(x.astype(np.float64))
    win = np.zeros(x.shape, np.float64)
    for t in range(size):  # each PE adds its window's taps in order
        take = np.take(sq, np.clip(src[:, t], 0, C - 1), axis=1)
        keep = valid[:, t].reshape(1, C, *(1,) * (x.ndim - 2))
        win += np.where(keep, take, 0.0)
    y = x / (bias + alpha / size * win) ** beta
    env.store(node.outputs[0], y.astype(x.dtype))
    env.owner[node.outputs[0]] = _owner(env, x, cb, hb)
    stats["sharded_pes"] = c * s
    stats["channels_held_max"] = int((held[:, 1] - held[:, 0]).max())
    return True


def batchnorm_train(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if node.op != "BatchNormalization" or not node.attrs.get("training_mode", 0) or \
            x.ndim < 2 or not np.issubdtype(x.dtype, np.floating):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    N, C, H, Wr = _rows(x)
    c, s = int(k.knobs["c"]), int(k.knobs["s"])
    cb, hb = _cdiv(C, c), _cdiv(N * H, s)
    check_norm_rows(env, node.inputs[0], x.shape, cb, hb, None, stats)
    rows = N * H
    x3 = x.reshape(N, C, H, Wr).transpose(1, 0, 2, 3).reshape(C, rows, Wr)

    def combine(v: np.ndarray) -> np.ndarray:
        """[C, rows, W'] -> per channel: each row group's partial, the s
        partials added in PE order down the group's column."""
        part = np.pad(v.sum(axis=2, dtype=COMPUTE_DTYPE), [(0, 0), (0, s * hb - rows)])
        part = part.reshape(C, s, hb).sum(axis=2, dtype=COMPUTE_DTYPE)
        acc = part[:, 0].copy()
        for g in range(1, s):
            acc = acc + part[:, g]
        return acc

    cnt = COMPUTE_DTYPE(rows * Wr)
    mean = combine(x3) / cnt
    dev = x3 - mean[:, None, None]
    var = combine(dev * dev) / cnt
    eps = COMPUTE_DTYPE(node.attrs.get("epsilon", 1e-5))
    xhat = (dev / np.sqrt(var + eps)[:, None, None]).reshape(C, N, H, Wr).transpose(1, 0, 2, 3)
    xhat = xhat.reshape(x.shape)
    owner = _owner(env, x, cb, hb)
    per_channel = (C,) + (1,) * (x.ndim - 2)
    sc, b = (operand_on_owners(env, i, x.shape, owner, per_channel) for i in node.inputs[1:3])
    if sc is None or b is None:
        return False
    env.store(node.outputs[0], (xhat * sc + b).astype(COMPUTE_DTYPE))
    env.owner[node.outputs[0]] = owner
    # the running statistics end on each channel group's last row PE
    last = grouped_lin(k, (np.arange(C) // cb) * s * int(k.knobs.get("r", 1)) + (s - 1))
    mom = COMPUTE_DTYPE(node.attrs.get("momentum", 0.9))
    for o, inp, batch in zip(node.outputs[1:3], node.inputs[3:5], (mean, var), strict=False):
        if not o:
            continue
        shape = env.shape_of(inp)
        run = operand_on_owners(env, inp, (C,), last, (C,))
        env.store(o, (run * mom + batch * (1 - mom)).reshape(shape))
        env.owner[o] = last.reshape(shape)
    stats["sharded_pes"] = c * s
    return True
