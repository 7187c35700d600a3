"""Per-PE executors of the resampling kinds: transposed convolution
(library_conv.DeconvKind) and Resize (library_pool.ResizeKind).

- deconv, knobs k, c, s (1-D, 2-D): as conv, on the input dilated by the
  stride (zeros between rows and columns, never received: a PE makes them)
  with the kernel flipped, so an output-row group holds the dilated rows
  `DeconvKind.input_rows` gives (span plus halo) and reads only those; PE
  (px, py) multiplies with its own shard W[C-block py % c, K-block px] and
  the c partials of a column are summed in PE order. Grouped (G > 1):
  every PE holds the whole weight and computes its out-channel block from
  the in-channels of each channel's group.
- resize, knobs c, s (PE (px, py): channel group px, output-row group py):
  a row group holds the input rows `ResizeKind.input_rows` gives (its
  output rows' span plus the taps' halo; antialiased: every row under the
  stretched filter) and blends each output row from those rows only (a tap
  outside them is a SimError at that PE); rows first, then columns, as the
  reference semantics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.kernels import KINDS
from wsec.ir.library_pool import tap_windows
from wsec.ir.opsem import windows
from wsec.ir.opsem_more import (
    _convt_pads,
    resize_axis,
    resize_finish,
    resize_plan,
    resize_taps,
)

from .sim_base import COMPUTE_DTYPE
from .sim_inbox import check_windows, read_error
from .sim_pe import Env
from .sim_sharded import block_rows, pe_partials, row_windows
from .sim_tail import const_at


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def deconv(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    if node.op != "ConvTranspose" or node.inputs[1] not in k.weights:
        return False
    x = env.get(node.inputs[0], node.name)
    wshape = env.shape_of(node.inputs[1])
    out_shape = env.shape_of(node.outputs[0])
    if x.ndim not in (3, 4, 5) or len(wshape) != x.ndim or \
            not np.issubdtype(x.dtype, np.floating):
        return False
    x = x.astype(COMPUTE_DTYPE, copy=False)
    wi = k.weights.index(node.inputs[1])
    lay = env.mem.layout(env.ki, wi)
    pad = tuple(int(v) for v in (lay.stop - lay.start).reshape(-1, len(wshape)).max(axis=0))
    raw = env.mem.pe_array(env.ki, wi, pad)
    if x.ndim == 5:
        return _deconv_3d(env, node, x, wshape, raw, out_shape, stats)
    if x.ndim == 3:  # one row: the sequence along W
        x, wshape, raw = x[:, :, None, :], (*wshape[:2], 1, wshape[2]), raw[..., None, :]
        node = _flat_node(node, 1)
    got = _deconv2d(env, node, x, wshape, raw, (1, out_shape[2]) if len(out_shape) == 3
                    else out_shape[2:], None, stats,
                    view=(lambda n: _drop_row(n)) if len(out_shape) == 3 else None)
    if got is None:
        return False
    y, own = got
    env.store(node.outputs[0], y.reshape(out_shape))
    env.owner[node.outputs[0]] = np.broadcast_to(own, y.shape).reshape(out_shape)
    return True


def _flat_node(node: Node, nd: int) -> Node:
    """The 2-D transposed conv a 1-D (nd 1: a row of one) or 3-D (nd 3: per
    depth plane) one runs as."""
    a = dict(node.attrs)
    for key in ("strides", "dilations", "kernel_shape", "output_padding", "output_shape"):
        if a.get(key) is None:
            continue
        v = list(a[key])  # type: ignore[arg-type]
        if key == "output_shape":
            a[key] = [1, *v[-1:]] if nd == 1 else v[-2:]
        elif nd == 1:
            a[key] = [0 if key == "output_padding" else 1, *v]
        else:
            a[key] = v[1:]
    if a.get("pads") is not None:
        p = list(a["pads"])  # type: ignore[arg-type]
        a["pads"] = [0, p[0], 0, p[1]] if nd == 1 else [p[1], p[2], p[4], p[5]]
    return Node(node.name, node.op, node.inputs, node.outputs, a)


def _deconv_3d(env: Env, node: Node, x: np.ndarray, wshape: tuple[int, ...], raw: np.ndarray,
               out_shape: tuple[int, ...], stats: dict[str, int]) -> bool:
    """A 3-D transposed conv as 2-D planes (DeconvKind: `fold_depth`): output
    plane do takes, for each depth tap t, the input plane di with
    di sd - pd + t dd = do (none: zeros), as T x C channels; every PE folds
    its shard's depth taps into its in-channel block ([cb T, kb, R, S]), and
    the planes run through the 2-D transposed conv."""
    N, C, D, H, W = x.shape
    _, Kg, T, R, S = wshape  # [C, K / G, T, R, S]
    Do = out_shape[2]
    st = [int(v) for v in node.attrs.get("strides", [1, 1, 1])]
    dl = [int(v) for v in node.attrs.get("dilations", [1, 1, 1])]
    op = [int(v) for v in node.attrs.get("output_padding", [0, 0, 0])]
    full = [st[i] * ((D, H, W)[i] - 1) + op[i] + ((T, R, S)[i] - 1) * dl[i] + 1 for i in range(3)]
    pb, _ = _convt_pads(node, (D, H, W), full)
    num = np.arange(Do)[:, None] + pb[0] - np.arange(T)[None, :] * dl[0]  # [Do, T]: di sd
    di = num // st[0]
    live = (num % st[0] == 0) & (di >= 0) & (di < D)
    xs = np.where(live[None, None, :, :, None, None],
                  x[:, :, np.clip(di, 0, D - 1)], np.zeros((), x.dtype))  # [N, C, Do, T, H, W]
    x4 = xs.transpose(0, 2, 1, 3, 4, 5).reshape(N * Do, C * T, H, W)
    # each PE's shard [cb, kb, T, R, S] as [cb T, kb, R, S] (channel c t)
    cb, kb = raw.shape[2:4]
    raw4 = np.moveaxis(raw, 4, 3).reshape(*raw.shape[:2], cb * T, kb, R, S)

    def elem(row: int) -> int | None:
        return row * W if 0 <= row < H else None

    got = _deconv2d(env, _flat_node(node, 3), x4, (C * T, Kg, R, S), raw4,
                    tuple(out_shape[3:]), elem, stats, T, view=lambda n: _every_plane(n, N, D))
    if got is None:
        return False
    y4, own = got
    K = y4.shape[1]
    y = y4.reshape(N, Do, K, *y4.shape[2:]).transpose(0, 2, 1, 3, 4)
    env.store(node.outputs[0], np.ascontiguousarray(y).reshape(out_shape))
    env.owner[node.outputs[0]] = np.broadcast_to(own[:, :, None], y.shape)
    return True


def _deconv2d(env: Env, node: Node, x: np.ndarray, wshape: tuple[int, ...], raw: np.ndarray,
              out_hw: tuple[int, ...], elem: Callable[[int], int | None] | None,
              stats: dict[str, int], fold: int = 1,
              view: Callable[[np.ndarray], np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray] | None:
    """The 2-D transposed conv per PE (see the module docstring) on x
    [N, C, H, W] with each PE's shard `raw` ([uh, uw, C-block, K-block, R,
    S]); `fold`: depth taps folded into each in-channel. -> (y [N, K, Ho,
    Wo], the owner of each element, broadcastable). `view` maps the PEs'
    windows of the (N, C, H, W) input to the kernel's input (1-D, 3-D)."""
    k = env.k
    G = int(node.attrs.get("group", 1))
    C, Kg, R, S = wshape  # [C, K / G, R, S]
    K = Kg * G
    N, _, H, W = x.shape
    kk, c, s = (int(k.knobs[n]) for n in ("k", "c", "s"))
    uw, uh = k.unrotated_shape
    if (uw, uh) != (kk, c * s):
        return None
    kb, cb = _cdiv(K, kk), _cdiv(C // fold, c) * fold
    st = [int(v) for v in node.attrs.get("strides", [1, 1])]
    dl = [int(v) for v in node.attrs.get("dilations", [1, 1])]
    op = [int(v) for v in node.attrs.get("output_padding", [0, 0])]
    full = [st[i] * ((H, W)[i] - 1) + op[i] + ((R, S)[i] - 1) * dl[i] + 1
            for i in range(2)]
    pb, _ = _convt_pads(node, (H, W), full)
    Ho, Wo = out_hw
    # the dilated input, with the flipped kernel's reach above/left less the crop
    xd = np.zeros((N, c * cb, (H - 1) * st[0] + 1, (W - 1) * st[1] + 1), COMPUTE_DTYPE)
    xd[:, :C, ::st[0], ::st[1]] = x
    top = [(R - 1) * dl[0] - pb[0], (S - 1) * dl[1] - pb[1]]
    need = [Ho + (R - 1) * dl[0], Wo + (S - 1) * dl[1]]
    for ax, t in ((2, top[0]), (3, top[1])):
        if t < 0:
            xd = np.take(xd, np.arange(-t, xd.shape[ax]), axis=ax)
    padw = [(0, 0), (0, 0)]
    for i, ax in enumerate((2, 3)):
        head = max(0, top[i])
        padw.append((head, max(0, need[i] - xd.shape[ax] - head)))
    xq = np.pad(xd, padw)
    hb = _cdiv(Ho, s)

    def row_of(row: int) -> int | None:
        r = row - top[0]
        return r // st[0] if r >= 0 and r % st[0] == 0 else None

    loc = row_windows(env, node, xq, s, lambda g: (0, g * c), hb, 1, R, dl[0], Ho, top[0],
                      row_of, elem)
    d = env.deliveries.get(node.inputs[0])
    if d is not None and d.shape:
        need = _deconv_need(env, (N, C // fold, H, W), (c, s, kk, kb, Kg, G), top[0], st[0])
        stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d,
                                               need if view is None else view(need))
    win = windows(loc, [R, S], [1, 1], dl, [hb, Wo]).reshape(s, N, c * cb, hb, Wo, R, S)
    if G > 1:
        acc = _grouped(env, node, win, raw, G, (s, c, kk, kb, hb, Wo), wshape)
        if acc is None:
            return None
    else:
        wpe = raw.reshape(s, c, kk, cb, kb, R, S)[..., ::-1, ::-1]  # each PE flips its shard
        acc = np.zeros((s, N * hb * Wo, kk * kb), COMPUTE_DTYPE)
        # every PE's flipped shard as a [cb R S, kb] block
        wall = block_rows(wpe.transpose(1, 0, 3, 5, 6, 2, 4), c, s, cb * R * S, kk * kb)
        for ci in range(c):  # the reduction along each PE column, in PE order
            xc = win[:, :, ci * cb:(ci + 1) * cb].transpose(0, 1, 3, 4, 2, 5, 6)
            acc += pe_partials(xc.reshape(s, N * hb * Wo, cb * R * S), wall[ci])
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias:
        if bias not in k.weights:
            return None
        # the reduction-end PE of each column (row c - 1 of its row group), its own shard
        o = np.minimum(np.arange(kk * kb), K - 1)
        own = ((np.arange(s) * c + c - 1)[:, None] * uw + o[None, :] // kb)
        acc += const_at(env, k.weights.index(bias), np.broadcast_to(o, own.shape),
                        own)[:, None, :].astype(COMPUTE_DTYPE)
    y = acc.reshape(s, N, hb, Wo, kk * kb).transpose(1, 4, 0, 2, 3).reshape(N, kk * kb,
                                                                             s * hb, Wo)
    y = np.ascontiguousarray(y[:, :K, :Ho])
    col = np.arange(K) // kb
    row = (np.arange(Ho) // hb) * c + (c - 1)
    own = row[None, None, :, None] * kk + col[None, :, None, None]
    stats["pe_macs_max"] = N * hb * Wo * kb * cb * R * S
    stats["sharded_pes"] = kk * c * s
    return y, own


def _deconv_need(env: Env, shape: tuple[int, ...], geo: tuple[int, ...], top: int, st: int
                 ) -> np.ndarray:
    """(uh, uw, 2, 4): the box of the (N, C, H, W) input PE (px, py) holds:
    in-channel block py % c (grouped: of the groups of its out-channel
    block px), the input rows among the dilated rows its row group py // c
    holds (`DeconvKind.input_rows`, `top` rows above the dilated input,
    every st-th of them an input row), every column."""
    c, s, kk, kb, Kg, G = geo
    N, C, H, W = shape
    k = env.k
    uw, uh = k.unrotated_shape
    held = np.array([KINDS[k.kind].input_rows(k.dims, k.knobs, g) for g in range(s)], np.int64)
    r0 = np.clip(-(-(held[:, 0] - top) // st), 0, H)  # the first input row at or after
    r1 = np.clip(-(-(held[:, 1] - top) // st), 0, H)
    py, px = np.arange(uh)[:, None], np.arange(uw)[None, :]
    g, ci = np.minimum(py // c, s - 1), py % c
    need = np.zeros((uh, uw, 2, 4), np.int64)
    need[:, :, 1, 0], need[:, :, 1, 3] = N, W
    if G > 1:
        Cg = C // G
        cbg = _cdiv(Cg, c)
        g0 = np.minimum(px * kb, Kg * G - 1) // Kg
        g1 = (np.minimum((px + 1) * kb, Kg * G) - 1) // Kg
        need[:, :, 0, 1] = g0 * Cg + np.minimum(ci * cbg, Cg)
        need[:, :, 1, 1] = g1 * Cg + np.minimum((ci + 1) * cbg, Cg)
    else:
        cb = _cdiv(C, c)
        need[:, :, 0, 1] = np.minimum(ci * cb, C)
        need[:, :, 1, 1] = np.minimum((ci + 1) * cb, C)
    need[:, :, 0, 2], need[:, :, 1, 2] = r0[g], r1[g]
    need[(need[:, :, 1] <= need[:, :, 0]).any(axis=2) | (py >= c * s)] = 0
    return need


def _drop_row(need: np.ndarray) -> np.ndarray:
    """A 1-D transposed conv's windows ([N, C, 1, W] as run) on its [N, C, W] input."""
    out = need[..., [0, 1, 3]].copy()
    out[~(need[..., 1, :] > need[..., 0, :]).all(axis=-1)] = 0
    return out


def _every_plane(need: np.ndarray, N: int, D: int) -> np.ndarray:
    """A 3-D transposed conv's windows ([N Do, C, H, W] planes as run) on
    its [N, C, D, H, W] input: a PE holds its channels x rows of every
    input plane (each output plane takes the planes its depth taps reach)."""
    out = np.zeros((*need.shape[:2], 2, 5), np.int64)
    live = (need[..., 1, :] > need[..., 0, :]).all(axis=-1)
    out[..., [1, 3, 4]] = need[..., [1, 2, 3]]
    out[..., 1, 0] = np.where(live, N, 0)
    out[..., 1, 2] = np.where(live, D, 0)
    out[~live] = 0
    return out


def _grouped(env: Env, node: Node, win: np.ndarray, raw: np.ndarray, G: int,
             geo: tuple[int, ...], wshape: tuple[int, ...]) -> np.ndarray | None:
    """A grouped transposed conv (every PE holds the whole weight [C, K/G,
    R, S]): PE (px, py) computes output channels o of its block px from the
    in-channel block py % c of o's group, with its own copy of the weight;
    the c partials of a column are summed in PE order. -> [s, N hb Wo, kk kb]."""
    s, c, kk, kb, hb, Wo = geo
    C, Kg, R, S = wshape
    N = win.shape[1]
    Cg = C // G
    cbg = _cdiv(Cg, c)
    if raw.shape[2:4] != (C, Kg):
        return None  # not held whole: the mapping says otherwise
    wpe = raw.reshape(s, c, kk, C, Kg, R, S)[..., ::-1, ::-1]  # each PE flips its own copy
    o = np.minimum(np.arange(kk * kb), Kg * G - 1).reshape(kk, kb)
    pxs = np.arange(kk)[:, None, None]
    acc = np.zeros((s, N * hb * Wo, kk * kb), COMPUTE_DTYPE)
    for ci in range(c):  # the reduction along each PE column, in PE order
        jj = ci * cbg + np.arange(cbg)
        live = (jj < Cg).astype(COMPUTE_DTYPE)
        chan = (o // Kg)[:, :, None] * Cg + np.minimum(jj, Cg - 1)[None, None, :]  # [k, kb, cbg]
        wsel = wpe[:, ci][:, pxs, chan, (o % Kg)[:, :, None]]  # [s, k, kb, cbg, R, S]
        wsel = wsel * live[None, None, None, :, None, None]
        xg = win[:, :, chan]  # [s, N, k, kb, cbg, hb, Wo, R, S]
        part = np.einsum("gnptjhwab,gptjab->gnhwpt", xg.astype(np.float64),
                         wsel.astype(np.float64), optimize=True)
        acc += part.reshape(s, N * hb * Wo, kk * kb).astype(COMPUTE_DTYPE)
    return acc


def resize(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    x = env.get(node.inputs[0], node.name)
    if node.op != "Resize" or x.ndim < 3:
        return False

    def arg(i: int) -> np.ndarray | None:
        return env.get(node.inputs[i], node.name) if len(node.inputs) > i and node.inputs[i] \
            else None

    out, sc, rois = resize_plan(node, x.shape, arg(1), arg(2), arg(3))
    if out[:2] != list(x.shape[:2]):
        return False
    nearest = str(node.attrs.get("mode", "nearest")) == "nearest"
    c, s = int(k.knobs["c"]), int(k.knobs["s"])
    Ho = out[2] if x.ndim == 4 else 1  # 1-D, 3-D: the rows the kind splits (none / folded)
    hb = _cdiv(Ho, s)
    y = x if nearest else x.astype(np.float64)
    outside = np.zeros(out, bool)
    held = 0
    # the input rows each output-row group's taps read (4-D: the rows it holds)
    win = tap_windows(node, x.shape, [arg(1), arg(2), arg(3)], s) if x.ndim == 4 else None
    for a in range(2, x.ndim):
        if out[a] == x.shape[a] and sc[a] == 1.0 and rois[a] == (0.0, 1.0):
            continue
        idx, w, off = resize_taps(node, x.shape[a], out[a], sc[a], rois[a])
        if a == 2 and x.ndim == 4:  # each row group blends the input rows it holds
            assert win is not None
            y, held = _resize_rows(env, node, y, idx, w, win, hb, nearest)
            if off.any():
                outside |= off.reshape(1, 1, -1, 1)
        else:  # along a row: every PE holds its rows whole
            y = resize_axis(y, a, idx, w, off, nearest, outside)
    env.store(node.outputs[0], resize_finish(node, x, y, outside, nearest))
    _check_resize(env, node.inputs[0], x.shape, win, stats)
    C = x.shape[1]
    cg = np.arange(C) // _cdiv(C, c)
    rows = (np.arange(out[2]) // hb) if x.ndim == 4 else np.zeros(1, np.int64)
    own = rows[None, None, :] * c + cg[None, :, None]
    env.owner[node.outputs[0]] = own.reshape(*own.shape, *(1,) * (x.ndim - 3))
    stats["sharded_pes"] = c * min(s, Ho)
    stats["rows_held_max"] = int(held)
    return True


def _check_resize(env: Env, name: str, shape: tuple[int, ...], win: np.ndarray | None,
                  stats: dict[str, int]) -> None:
    """PE (px, py) holds channel group px of the input rows its output-row
    group py reads (`win`: wsec.ir.library_pool.tap_windows; 1-D, 3-D: row
    group 0 holds every row, the others none), the rest whole: its window,
    checked against the lane its core received (sim_inbox.check_windows)."""
    d = env.deliveries.get(name)
    if d is None or d.shape != tuple(shape):
        return
    k = env.k
    uw, uh = k.unrotated_shape
    C = shape[1]
    cb = _cdiv(C, int(k.knobs["c"]))
    need = np.zeros((uh, uw, 2, len(shape)), np.int64)
    need[:, :, 1] = shape
    px = np.arange(uw)
    need[:, :, 0, 1] = np.minimum(px * cb, C)[None, :]
    need[:, :, 1, 1] = np.minimum((px + 1) * cb, C)[None, :]
    if len(shape) == 4 and win is not None:
        rows = np.zeros((uh, 2), np.int64)
        rows[:min(uh, len(win))] = win[:uh]
        need[:, :, 0, 2], need[:, :, 1, 2] = rows[:, 0:1], rows[:, 1:2]
        need[(rows[:, 1] <= rows[:, 0])] = 0  # a group with no output rows reads nothing
    else:
        need[1:] = 0
    stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, need)


def _resize_rows(env: Env, node: Node, x: np.ndarray, idx: np.ndarray, w: np.ndarray,
                 win: np.ndarray, hb: int, nearest: bool) -> tuple[np.ndarray, int]:
    """Axis 2 of a 4-D Resize per output-row group: group g holds the input
    rows `win[g]` its taps read (wsec.ir.library_pool.tap_windows: what
    the cut lanes carry) ([s, N, C, L, W], NaN past its window) and
    blends each of its output rows from those rows only; a tap of non-zero
    weight outside them is a SimError naming the group's PE, the element and
    the lane that carried it. -> ([N, C, Ho, W] rows, the most rows a group holds)."""
    N, C, H, W = x.shape
    Ho, T = idx.shape
    g = np.arange(Ho) // hb
    used = np.ones(idx.shape, bool) if nearest else w != 0
    lo, hi = win[g, 0:1], win[g, 1:2]
    bad = np.argwhere(used & ((idx < lo) | (idx >= hi)))
    if bad.size:
        i, t = (int(v) for v in bad[0])
        gi = int(g[i])
        src = node.inputs[0]
        raise read_error(env.mem.p, env.ki, 0, gi, src, int(idx[i, t]) * W,
                         f"input rows {int(win[gi, 0])}..{int(win[gi, 1]) - 1} (its output "
                         f"row group {gi}'s window)", env.deliveries.get(src))
    L = max(int((win[:, 1] - win[:, 0]).max()), 1)
    rows = win[:, 0:1] + np.arange(L)[None, :]  # [s, L]: each group's buffer rows
    have = rows < win[:, 1:2]
    buf = np.take(x, np.minimum(rows, H - 1), axis=2)  # [N, C, s, L, W]
    fill = np.asarray(np.nan if np.issubdtype(x.dtype, np.floating) else 0, x.dtype)
    buf = np.where(have[None, None, :, :, None], buf, fill)
    local = np.where(used, idx - lo, 0)  # a zero-weight tap reads the window's first row
    taps = buf[:, :, g[:, None], local]  # [N, C, Ho, T, W]
    if nearest:
        y = taps[:, :, :, 0]
    else:
        y = (taps * np.where(used, w, 0.0)[None, None, :, :, None]).sum(axis=3)
    return y, int((win[:, 1] - win[:, 0]).max())
