"""Sharded executors of the weight-holding kinds: conv and matmul.

Why separate: these are where per-PE ownership matters (the weights), so
they compute exactly as the kinds' mappings say (library_conv.ConvKind,
library_dense.MatmulKind), vectorised over all PEs of the kernel:

- conv, knobs k, c, s: PE (px, py) holds W[K-block px, Cg-block py % c] and
  computes the partial sums of output-row group py // c from the input
  channels of its block; the c partials of a column are reduced in PE order
  (py % c = 0, 1, ..) and the reduction-end PE adds its bias shard.
- matmul, knobs kx, ky: PE (px, py) holds B[Kd-block py, N-block px] and
  multiplies the matching slice of each input row, accumulating one
  reduction index after the other (as its FMAC loop does); the ky partials
  of a column are summed in PE order, the reduction-end PE adds its shard of
  the bias.
- a depthwise conv in channel bands (library_conv.banded), knobs 1, c, s:
  PE (0, py) holds W[band py % c] and computes that band's output channels
  of output-row group py // c from its band's input channels alone (no
  reduction), adding its bias shard.
- a grouped conv stacked by groups (library_conv.stacked), knobs k, c, s:
  PE (px, py), j = py % (G c), holds W[group j // c's output block px,
  input-channel block j % c] and computes the partial sums of output-row
  group py // (G c) from that block of its group; the c partials of a
  group are reduced in PE order, the last of them adds its bias shard.

Each executor returns False when the anchor is outside what it shards; the
kernel is then a SimError naming it and the op (sim_exec), never evaluated
on whole tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.kernels import KINDS
from wsec.ir.library_conv import band_block, banded, skip_boxes, stack_boxes, stacked
from wsec.ir.opsem import pads, windows

from .format import type_shape
from .sim_base import COMPUTE_DTYPE, SimError
from .sim_einsum import check_rows, einsum_matmul
from .sim_inbox import check_inputs, check_windows, grid_pe, read_error
from .sim_pe import Env, node_of
from .sim_wgrad import conv_wgrad


def _cdiv(a: int, b: int) -> int:
    return -(-a // max(b, 1))


def _shape(env: Env, name: str) -> tuple[int, ...]:
    return tuple(type_shape(env.mem.p.info["values"][name]))


def _check_rect(env: Env, w: int, h: int) -> None:
    uw, uh = env.k.unrotated_shape
    if (uw, uh) != (w, h):
        raise SimError(f"kernel '{env.k.name}' ({env.k.kind}, knobs {env.k.knobs}) occupies "
                       f"{uw}x{uh} PEs but its mapping needs {w}x{h}")


def _ints(v: object, n: int, default: int) -> list[int]:
    return [int(a) for a in v] if v is not None else [default] * n  # type: ignore[union-attr]


def conv(env: Env, node: Node, stats: dict[str, int]) -> bool:
    """A 2-D conv per PE; a 1-D conv as a 2-D one whose rows are the
    sequence (the s groups split the output length); a 3-D conv as 2-D
    planes (every output depth plane reads its T input planes as T x C
    channels, the kind's `fold_depth`)."""
    k = env.k
    if node.op != "Conv" or node.inputs[1] not in k.weights:
        return False
    x = env.get(node.inputs[0], node.name).astype(COMPUTE_DTYPE, copy=False)
    wshape = _shape(env, node.inputs[1])
    out = _shape(env, node.outputs[0])
    if x.ndim != len(wshape) or x.ndim not in (3, 4, 5):
        return False
    nd = x.ndim - 2
    st = _ints(node.attrs.get("strides"), nd, 1)
    dl = _ints(node.attrs.get("dilations"), nd, 1)
    pb, pe = pads(node, x.shape[2:], list(wshape[2:]), st, dl)
    if nd == 2 and banded(k.dims):
        y, own = _conv2d_banded(env, node, x, wshape, st, dl, pb, pe, stats)
    elif nd == 2 and stacked(k.dims):
        y, own = _conv2d_stacked(env, node, x, wshape, st, dl, pb, pe, stats)
    elif nd == 2:
        y, own = _conv2d(env, node, x, wshape, st, dl, pb, pe, lambda a: a, None, stats)
    elif nd == 1:  # the sequence as rows
        L = x.shape[2]

        def elem(row: int) -> int | None:
            return row if 0 <= row < L else None

        y, own = _conv2d(env, node, x[:, :, :, None], (*wshape, 1), [st[0], 1], [dl[0], 1],
                         [pb[0], 0], [pe[0], 0], lambda a: a.reshape(*a.shape, 1), elem, stats,
                         view=_seq_view)
        y, own = y[..., 0], own[..., 0]
    else:  # depth folded: [N Do, C T, H, W]
        N, C, D = x.shape[:3]
        K, cg, T = wshape[:3]
        Do = out[2]
        xd = np.pad(x, [(0, 0), (0, 0), (pb[0], pe[0]), (0, 0), (0, 0)])
        planes = np.arange(Do)[:, None] * st[0] + np.arange(T)[None, :] * dl[0]  # [Do, T]
        xs = xd[:, :, planes]  # [N, C, Do, T, H, W]
        x4 = xs.transpose(0, 2, 1, 3, 4, 5).reshape(N * Do, C * T, *x.shape[3:])
        H, W = x.shape[3:]

        def elem3(row: int) -> int | None:
            return row * W if 0 <= row < H else None

        y4, own = _conv2d(env, node, x4, (K, cg * T, *wshape[3:]), st[1:], dl[1:], pb[1:],
                          pe[1:], lambda a: a.reshape(*a.shape[:-4], a.shape[-4] * T,
                                                      *a.shape[-2:]), elem3, stats, T,
                          view=lambda n: _planes_view(n, N, D))
        y = y4.reshape(N, Do, K, *y4.shape[2:]).transpose(0, 2, 1, 3, 4)
        own = own[:, :, None]
    env.store(node.outputs[0], np.ascontiguousarray(y))
    env.owner[node.outputs[0]] = own
    return True


def _conv2d(env: Env, node: Node, x: np.ndarray, wshape: tuple[int, ...], st: list[int],
            dl: list[int], pb: list[int], pe: list[int],
            shard: Callable[[np.ndarray], np.ndarray], elem: Callable[[int], int | None] | None,
            stats: dict[str, int], fold: int = 1,
            view: Callable[[np.ndarray], np.ndarray] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """The conv on 2-D rows: PE (px, py) multiplies input-channel block
    py % c of the rows its row group py // c holds (span and halo,
    `row_windows`) with its shard (`shard` maps the stored shard to
    [kb, cb, R, S]); partials reduced down each column in PE order; the
    reduction-end PE adds its bias shard. Returns y [N, K, Ho, Wo] and the
    owner of each element. `view` maps the PEs' windows of x to the
    kernel's input (1-D: rows of one; 3-D: every depth plane)."""
    k = env.k
    K, cg, R, S = wshape
    N, C = x.shape[:2]
    G = int(node.attrs.get("group", 1))
    kk, c, s = (int(k.knobs[n]) for n in ("k", "c", "s"))
    _check_rect(env, kk, c * s)
    kb, cb = _cdiv(K, kk), _cdiv(cg // fold, c) * fold  # fold: depth taps per channel
    Ho = (x.shape[2] + pb[0] + pe[0] - dl[0] * (R - 1) - 1) // st[0] + 1
    Wo = (x.shape[3] + pb[1] + pe[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    hb = _cdiv(Ho, s)
    # PE axes explicit: [row group, in-channel block, out-channel block, shard...]
    wi = k.weights.index(node.inputs[1])
    wpe = shard(env.mem.pe_array(env.ki, wi, _pad_shape(env, wi))).reshape(s, c, kk, kb, cb,
                                                                            R, S)
    cpad = c * cb - cg if G == 1 else 0
    d = env.deliveries.get(node.inputs[0])
    if d is not None and d.shape:
        need = _conv_need((N, C // fold, *x.shape[2:]), c, s, cb // fold, hb, st[0], R, dl[0],
                          Ho, pb[0])
        if G > 1:  # over the lanes' view of x where its bundle is cut over one
            need = _grouped_need(need, kk, kb, K // G, cg // fold, G,
                                 view is None and d.view is not None)
        stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d,
                                               need if view is None else view(need))
    xp = np.pad(x, [(0, 0), (0, cpad), (pb[0], pe[0]), (pb[1], pe[1])])
    xloc = row_windows(env, node, xp, s, lambda g: (0, g * c), hb, st[0], R, dl[0], Ho, pb[0],
                       None, elem)
    win = windows(xloc, [R, S], st, dl, [hb, Wo]).reshape(s, N, xp.shape[1], hb, Wo, R, S)
    acc = np.zeros((s, N * hb * Wo, kk * kb), COMPUTE_DTYPE)
    if G == 1:  # every PE's shard as a [cb R S, kb] block, block rows ci
        wall = block_rows(wpe.transpose(1, 0, 4, 5, 6, 2, 3), c, s, cb * R * S, kk * kb)
    # residuals added as the partial sums pass each row (ConvKind.spread_operands)
    skips = [_pad(r, 1, kk * kb).reshape(N, kk * kb, s, hb, Wo).transpose(2, 0, 3, 4, 1)
             .reshape(s, N * hb * Wo, kk * kb)
             for r in _spread_skips(env, node, (N, K, Ho, Wo), kb, c, s, hb, stats)] \
        if view is None and fold == 1 else []
    for ci in range(c):  # the reduction along each PE column, in PE order
        w_ci = wpe[:, ci]  # [s, k, kb, cb, R, S]: every PE of block row ci
        if G == 1:
            xc = win[:, :, ci * cb:(ci + 1) * cb].transpose(0, 1, 3, 4, 2, 5, 6)
            acc += pe_partials(xc.reshape(s, N * hb * Wo, cb * R * S), wall[ci])
        else:  # grouped: each out channel reads the in-channels of its group
            o = np.minimum(np.arange(kk * kb), K - 1).reshape(kk, kb)
            j = np.minimum(ci * cb + np.arange(cb), cg - 1)
            chan = (o // (K // G))[:, :, None] * cg + j[None, None, :]  # [k, kb, cb]
            xg = win[:, :, chan]  # [s, N, k, kb, cb, hb, Wo, R, S]
            part = np.einsum("gnptjhwab,gptjab->gnhwpt", xg, w_ci, optimize=True)
            acc += part.reshape(s, N * hb * Wo, kk * kb)
        lo, hi = ci * K // c, (ci + 1) * K // c
        for r in skips:  # row ci's PEs add their channels of it to what passes them
            acc[:, :, lo:hi] += r[:, :, lo:hi]
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias and bias in k.weights:  # added by each column's reduction-end PE
        bpe = env.mem.pe_array(env.ki, k.weights.index(bias), (kb,)).reshape(s, c, kk * kb)
        acc += bpe[:, c - 1][:, None, :]
    y = acc.reshape(s, N, hb, Wo, kk * kb).transpose(1, 4, 0, 2, 3).reshape(N, kk * kb,
                                                                             s * hb, Wo)
    y = y[:, :K, :Ho]
    if bias and bias not in k.weights:
        y = y + env.get(bias, node.name).reshape(1, -1, 1, 1)
    # each output element ends on its column's reduction-end PE of its row group
    col = np.arange(K) // kb
    row = (np.arange(Ho) // hb) * c + (c - 1)
    stats["pe_macs_max"] = N * hb * Wo * kb * cb * R * S
    stats["sharded_pes"] = kk * c * s
    return y, row[None, None, :, None] * kk + col[None, :, None, None]


def _conv2d_banded(env: Env, node: Node, x: np.ndarray, wshape: tuple[int, ...],
                   st: list[int], dl: list[int], pb: list[int], pe: list[int],
                   stats: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """A depthwise conv in channel bands (wsec.ir.library_conv.banded): PE
    (0, py) reads input-channel band py % c of the rows its row group
    py // c holds (its window checked against the lane its core received:
    a cut bundle proves it or raises at the PE) and multiplies each of its
    band's output channels' windows of its one input channel with its own
    shard; its bias shard is added there too. Returns y [N, K, Ho, Wo] and
    the owner PE of each element (its band's PE of its row group)."""
    k = env.k
    K, _, R, S = wshape
    N, C = x.shape[:2]
    kk, c, s = (int(k.knobs[n]) for n in ("k", "c", "s"))
    _check_rect(env, kk, c * s)
    cb, kb = band_block(k.dims, c)
    m = max(1, K // max(C, 1))  # output channels per input channel
    Ho = (x.shape[2] + pb[0] + pe[0] - dl[0] * (R - 1) - 1) // st[0] + 1
    Wo = (x.shape[3] + pb[1] + pe[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    hb = _cdiv(Ho, s)
    wi = k.weights.index(node.inputs[1])
    wpe = env.mem.pe_array(env.ki, wi, _pad_shape(env, wi)).reshape(s, c, kb, R, S)
    d = env.deliveries.get(node.inputs[0])
    if d is not None and d.shape:
        need = _conv_need((N, C, *x.shape[2:]), c, s, cb, hb, st[0], R, dl[0], Ho, pb[0])
        stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, need)
    xp = np.pad(x, [(0, 0), (0, c * cb - C), (pb[0], pe[0]), (pb[1], pe[1])])
    xloc = row_windows(env, node, xp, s, lambda g: (0, g * c), hb, st[0], R, dl[0], Ho, pb[0])
    win = windows(xloc, [R, S], st, dl, [hb, Wo]).reshape(s, N, c * cb, hb, Wo, R, S)
    # band j's output channel j kb + t reads input channel (j kb + t) // m of its band
    chan = np.minimum(np.arange(c * kb) // m, c * cb - 1)
    xg = win[:, :, chan].reshape(s, N, c, kb, hb, Wo, R, S)
    acc = np.einsum("gnjthwab,gjtab->gnjthw", np.asarray(xg, np.float64),
                    np.asarray(wpe, np.float64), optimize=True).astype(COMPUTE_DTYPE)
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias and bias in k.weights:  # each band's PE adds its shard
        bpe = env.mem.pe_array(env.ki, k.weights.index(bias), (kb,)).reshape(s, c, kb)
        acc += bpe[:, None, :, :, None, None]
    y = acc.transpose(1, 2, 3, 0, 4, 5).reshape(N, c * kb, s * hb, Wo)[:, :K, :Ho]
    if bias and bias not in k.weights:
        y = y + env.get(bias, node.name).reshape(1, -1, 1, 1)
    row = (np.arange(Ho) // hb)[None, :] * c + (np.arange(K) // kb)[:, None]  # [K, Ho]
    stats["pe_macs_max"] = N * hb * Wo * kb * R * S
    stats["sharded_pes"] = c * s
    return y, (row * kk)[None, :, :, None]


def _conv2d_stacked(env: Env, node: Node, x: np.ndarray, wshape: tuple[int, ...],
                    st: list[int], dl: list[int], pb: list[int], pe: list[int],
                    stats: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """A grouped conv stacked by groups (wsec.ir.library_conv.stacked): PE
    (px, py), j = py % (G c), reads input-channel block j % c of group
    q = j // c of the rows its row group py // (G c) holds (its row's box,
    stack_boxes, checked against the lane its core received) and multiplies
    it with its shard (q's output block px); the c partials of a group are
    reduced in PE order and the last of them adds its bias shard. Returns
    y [N, K, Ho, Wo] and the owner PE of each element."""
    k = env.k
    K, cg, R, S = wshape
    N, C = x.shape[:2]
    G = int(node.attrs.get("group", 1))
    kg = K // G
    kk, c, s = (int(k.knobs[n]) for n in ("k", "c", "s"))
    _check_rect(env, kk, G * c * s)
    kb, cb = _cdiv(kg, kk), _cdiv(cg, c)
    Ho = (x.shape[2] + pb[0] + pe[0] - dl[0] * (R - 1) - 1) // st[0] + 1
    Wo = (x.shape[3] + pb[1] + pe[1] - dl[1] * (S - 1) - 1) // st[1] + 1
    hb = _cdiv(Ho, s)
    wi = k.weights.index(node.inputs[1])
    wpe = env.mem.pe_array(env.ki, wi, _pad_shape(env, wi)).reshape(s, G, c, kk, kb, cb, R, S)
    d = env.deliveries.get(node.inputs[0])
    if d is not None and d.shape:
        rows = _conv_need((N, C, *x.shape[2:]), G * c, s, C, hb, st[0], R, dl[0], Ho, pb[0])
        need = stack_boxes((N, C, *x.shape[2:]), G, c, s, rows[::G * c, 0, 2],
                           rows[::G * c, 1, 2], 2)
        stats["forwarded_pes"] = check_windows(env.mem.p, env.ki, d, need)
    xp = np.pad(x, [(0, 0), (0, 0), (pb[0], pe[0]), (pb[1], pe[1])])
    xloc = row_windows(env, node, xp, s, lambda g: (0, g * G * c), hb, st[0], R, dl[0], Ho,
                       pb[0])
    win = windows(xloc, [R, S], st, dl, [hb, Wo]).reshape(s, N, C, hb, Wo, R, S)
    acc = np.zeros((s, N, G, kk, kb, hb, Wo), COMPUTE_DTYPE)
    q = np.arange(G)
    # residuals added as the partial sums pass each row of a group (spread_operands):
    # [s, N, G, kk, kb, hb, Wo], group q's channel q kg + px kb + t at [.., q, px, t, ..]
    skips = [_pad(r.reshape(N, G, kg, s, hb, Wo), 2, kk * kb)
             .reshape(N, G, kk, kb, s, hb, Wo).transpose(4, 0, 1, 2, 3, 5, 6)
             for r in _spread_skips(env, node, (N, K, Ho, Wo), kb, c, s, hb, stats, G)]
    u = np.arange(kk * kb).reshape(kk, kb)  # a PE's channel within its group
    for b in range(c):  # the reduction down each group's c rows, in PE order
        t = b * cb + np.arange(cb)
        live = t < cg
        chan = q[:, None] * cg + np.minimum(t, cg - 1)[None, :]  # [G, cb]
        xg = np.where(live[None, None, None, :, None, None, None, None], win[:, :, chan], 0)
        part = np.einsum("gnqjhwab,gqptjab->gnqpthw", np.asarray(xg, np.float64),
                         np.asarray(wpe[:, :, b], np.float64), optimize=True)
        acc += part.astype(COMPUTE_DTYPE)
        mine = ((u >= b * kg // c) & (u < (b + 1) * kg // c))[None, None, None, :, :, None, None]
        for r in skips:  # row b of each group adds its channels of it as the sums pass
            acc += np.where(mine, r, COMPUTE_DTYPE(0))
    bias = node.inputs[2] if len(node.inputs) > 2 else ""
    if bias and bias in k.weights:  # added by each group's reduction-end PE
        bpe = env.mem.pe_array(env.ki, k.weights.index(bias), (kb,)).reshape(s, G, c, kk, kb)
        acc += bpe[:, None, :, c - 1, :, :, None, None]
    o = np.arange(K)
    grp, r = o // kg, o % kg
    px, tt = r // kb, r % kb
    y = acc[:, :, grp, px, tt]  # [s, N, K, hb, Wo]
    y = y.transpose(1, 2, 0, 3, 4).reshape(N, K, s * hb, Wo)[:, :, :Ho]
    if bias and bias not in k.weights:
        y = y + env.get(bias, node.name).reshape(1, -1, 1, 1)
    row = (np.arange(Ho) // hb)[None, :] * (G * c) + (grp * c + c - 1)[:, None]  # [K, Ho]
    stats["pe_macs_max"] = N * hb * Wo * kb * cb * R * S
    stats["sharded_pes"] = kk * G * c * s
    return y, (row * kk + px[:, None])[None, :, :, None]


def _spread_skips(env: Env, node: Node, grid: tuple[int, int, int, int], kb: int, c: int,
                  s: int, hb: int, stats: dict[str, int], G: int = 1) -> list[np.ndarray]:
    """The residuals the kernel's PE rows add into the partial sums as they
    pass (wsec.ir.library_conv.ConvKind.spread_operands), each as [N, K,
    s hb, Wo] (rows past Ho zero). PE (px, g c + j) reads the channels of
    its column block px among row j's [j K // c, (j + 1) K // c) of row
    group g's output rows (skip_boxes; a conv stacked by its G groups: row
    q c + j of the group's, among group q's channels, its block px of
    them), a window checked against the lane its core received
    (sim_inbox.check_windows: a cut bundle proves it or raises at the PE);
    the rest of the value is never added there. The chain's Adds are
    marked done (`Env.spread`): the tail passes the partial sums' result on
    (sim_tail.run_tail)."""
    k = env.k
    body = [node_of(d) for d in k.body]
    names = KINDS["conv"].spread_operands(k.dims, k.knobs, body, k.outputs, env.shape_of)
    names = [v for v in names if v not in k.weights and v in env.vals]
    if not names or body[0].name != node.name:
        return []
    N, K, Ho, Wo = grid
    uw, uh = k.unrotated_shape
    boxes = skip_boxes(N, K, Ho, Wo, c, s, G)  # per PE row
    first = ((np.arange(uh) % (G * c)) // c) * (K // G)  # a row's group's first channel
    lo = first[:, None] + np.arange(uw)[None, :] * kb  # [uh, uw]: each PE's column block
    need = np.repeat(boxes[:, None], uw, axis=1)  # [uh, uw, 2, 4]
    need[:, :, 0, 1] = np.maximum(need[:, :, 0, 1], lo)
    need[:, :, 1, 1] = np.minimum(need[:, :, 1, 1], lo + kb)
    need[(need[:, :, 1] <= need[:, :, 0]).any(axis=2)] = 0
    out = []
    for v in names:
        d = env.deliveries.get(v)
        if d is not None and d.shape:
            stats["forwarded_pes"] = stats.get("forwarded_pes", 0) + check_windows(
                env.mem.p, env.ki, d, need)
        env.checked.add(v)
        r = np.asarray(env.vals[v]).astype(COMPUTE_DTYPE, copy=False)
        out.append(_pad(r, 2, s * hb))
        env.spread.add(v)
    return out


def _pad(a: np.ndarray, axis: int, n: int) -> np.ndarray:
    """`a` padded with zeros at the end of `axis` to length n."""
    width = [(0, 0)] * a.ndim
    width[axis] = (0, n - a.shape[axis])
    return np.pad(a, width)


def _conv_need(shape: tuple[int, ...], c: int, s: int, cb: int, hb: int, sh: int, R: int,
               dh: int, Ho: int, pad_top: int) -> np.ndarray:
    """(c*s, 2, 4): the input box PE row py of a 2-D conv reads: all
    samples, its channel block py % c, the rows its group's outputs read."""
    N, C, H, W = shape
    py = np.arange(c * s)
    first = (py // c) * hb
    nrows = np.clip(Ho - first, 0, hb)
    r0 = first * sh - pad_top
    r1 = r0 + (nrows - 1) * sh + (R - 1) * dh + 1
    need = np.zeros((c * s, 2, 4), np.int64)
    need[:, 1, 0] = N
    need[:, 0, 1] = np.minimum((py % c) * cb, C)
    need[:, 1, 1] = np.minimum((py % c + 1) * cb, C)
    need[:, 0, 2] = np.clip(r0, 0, H)
    need[:, 1, 2] = np.where(nrows > 0, np.clip(r1, 0, H), need[:, 0, 2])
    need[:, 1, 3] = W
    return need


def _grouped_need(need: np.ndarray, kk: int, kb: int, kg: int, cg: int, G: int,
                  view: bool = False) -> np.ndarray:
    """(c s, kk, 2, 4) from a conv's per-row windows (`_conv_need`, channel
    block ci of a group's cg): PE (px, py) of a grouped conv reads that
    block in every group its out-channel block px (kb of the K = kg G)
    spans: the hull from the first such group's block to the last's; or
    (`view`, (c s, kk, 2, 5)) exactly, as a box of the input viewed as
    (N, G, cg, H, W): those groups x that block (ConvKind.input_view)."""
    K = kg * G
    px = np.arange(kk)
    q0 = np.minimum(px * kb, K - 1) // kg
    q1 = (np.minimum((px + 1) * kb, K) - 1) // kg
    out = np.repeat(need[:, None], kk, axis=1)
    lo, hi = np.minimum(need[:, None, 0, 1], cg), np.minimum(need[:, None, 1, 1], cg)
    if view:
        out = np.insert(out, 1, 0, axis=3)
        out[:, :, 0, 1], out[:, :, 1, 1] = q0[None, :], q1[None, :] + 1
        out[:, :, 0, 2], out[:, :, 1, 2] = lo, hi
        out[((out[:, :, 1] <= out[:, :, 0]).any(axis=2)) | (px * kb >= K)[None, :]] = 0
        return out
    out[:, :, 0, 1] = q0[None, :] * cg + lo
    out[:, :, 1, 1] = np.where(hi > lo, q1[None, :] * cg + hi, 0)
    out[((out[:, :, 1] <= out[:, :, 0]).any(axis=2)) | (px * kb >= K)[None, :]] = 0
    return out


def _seq_view(need: np.ndarray) -> np.ndarray:
    """A 1-D conv's windows ([N, C, L, 1] as run: the sequence as rows) on
    its [N, C, L] input."""
    out = np.ascontiguousarray(need[..., :3])
    out[~(need[..., 1, :] > need[..., 0, :]).all(axis=-1)] = 0
    return out


def _planes_view(need: np.ndarray, N: int, D: int) -> np.ndarray:
    """A 3-D conv's windows ([N Do, C, H, W] planes as run) on its [N, C,
    D, H, W] input: a PE holds its channels x rows of every input plane."""
    out = np.zeros((*need.shape[:-1], 5), np.int64)
    live = (need[..., 1, :] > need[..., 0, :]).all(axis=-1)
    out[..., [1, 3, 4]] = need[..., [1, 2, 3]]
    out[..., 1, 0] = N
    out[..., 1, 2] = D
    out[~live] = 0
    return out


def _pad_shape(env: Env, wi: int) -> tuple[int, ...]:
    """The largest shard extent of weight wi over the kernel's PEs."""
    lay = env.mem.layout(env.ki, wi)
    ext = (lay.stop - lay.start).reshape(-1, lay.start.shape[-1])
    return tuple(int(v) for v in ext.max(axis=0))


def block_rows(w: np.ndarray, *shape: int) -> np.ndarray:
    """PE shards as contiguous f64 blocks (see pe_partials)."""
    return np.ascontiguousarray(w, dtype=np.float64).reshape(shape)


def pe_partials(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Every PE's partial sum x @ w, rounded to f32 once as the PE sends it.

    Why f64 inside: BLAS computes a matrix's edge columns with other
    kernels than its middle, so two output channels with equal inputs can
    differ in the last f32 bit; the light models' equal weights and 1e26
    logits turn that ulp into a different softmax (see _pe_products). A
    PE computes every output channel the same way; accumulating in f64 and
    rounding once gives every column the same f32 result."""
    return np.matmul(np.asarray(x, np.float64), w).astype(COMPUTE_DTYPE)


def row_windows(env: Env, node: Node, xp: np.ndarray, s: int,
                first_pe: Callable[[int], tuple[int, int]], hb: int, sh: int, R: int, dh: int,
                Ho: int, pad_top: int,
                row_of: Callable[[int], int | None] | None = None,
                elem: Callable[[int], int | None] | None = None) -> np.ndarray:
    """Every row group's input buffer [s * N, C, L, W]: the padded rows the
    kind says it holds (`input_rows`: its span and halo), at the offsets its
    output rows read. A row a group's outputs read but it does not hold is a
    SimError naming the group's first PE and the element; rows it holds
    beyond what it reads stay unread (NaN, so a stray read would show)."""
    k = env.k
    kind = KINDS[k.kind]
    n, ch, hp, wp = xp.shape
    L = (hb - 1) * sh + (R - 1) * dh + 1
    held = np.array([kind.input_rows(k.dims, k.knobs, g) for g in range(s)], np.int64)
    first = np.arange(s) * hb
    nrows = np.clip(Ho - first, 0, hb)
    need0 = first * sh
    need1 = need0 + (nrows - 1) * sh + (R - 1) * dh + 1
    bad = np.flatnonzero((nrows > 0) & ((held[:, 0] > need0) | (held[:, 1] < need1)))
    if bad.size:
        g = int(bad[0])
        row = int(need0[g]) if held[g, 0] > need0[g] else int(held[g, 1])
        h = row - pad_top if row_of is None else row_of(row)
        src = node.inputs[0]
        d = env.deliveries.get(src)
        hold = f"padded input rows {int(held[g, 0])}..{int(held[g, 1]) - 1} (its window)"
        shp = env.shape_of(src)
        flat = (elem(h) if elem is not None else
                h * int(np.prod(shp[3:])) if 0 <= h < shp[2] else None) if h is not None else None
        if flat is not None:
            raise read_error(env.mem.p, env.ki, *first_pe(g), src, flat, hold, d)
        px, py = first_pe(g)
        x, y = grid_pe(env.mem.p, env.ki, px, py)
        raise SimError(f"kernel '{k.name}' ({k.kind}): PE ({x}, {y}) (offset ({px}, {py})) of "
                       f"row group {g} reads padded input row {row} of %{src}, a zero row "
                       f"outside its window ({hold})")
    rows = need0[:, None] + np.arange(L)[None, :]
    have = (rows >= held[:, 0:1]) & (rows < held[:, 1:2]) & (rows < hp)
    loc = xp[:, :, np.minimum(rows, hp - 1)]  # [N, C, s, L, W]
    loc = np.where(have[None, None, :, :, None], loc, np.asarray(np.nan, loc.dtype))
    return np.ascontiguousarray(loc.transpose(2, 0, 1, 3, 4)).reshape(s * n, ch, L, wp)


def matmul(env: Env, node: Node, stats: dict[str, int]) -> bool:
    k = env.k
    if node.op not in ("Gemm", "MatMul") or node.inputs[1] not in k.weights:
        return False
    bshape = _shape(env, node.inputs[1])
    if len(bshape) != 2:
        return False
    a = env.get(node.inputs[0], node.name).astype(COMPUTE_DTYPE, copy=False)
    tb = node.op == "Gemm" and bool(node.attrs.get("transB", 0))
    ta = node.op == "Gemm" and bool(node.attrs.get("transA", 0))
    if ta:
        a = a.T
    Kd, N = (bshape[1], bshape[0]) if tb else bshape
    a2 = a.reshape(-1, Kd)
    M = a2.shape[0]
    kx, ky = int(k.knobs["kx"]), int(k.knobs["ky"])
    _check_rect(env, kx, ky)
    kb, nb = _cdiv(Kd, ky), _cdiv(N, kx)
    if not ta:
        check_rows(env, node.inputs[0], a.shape, ky, kb, stats)
    wi = k.weights.index(node.inputs[1])
    wpe = env.mem.pe_array(env.ki, wi, (nb, kb) if tb else (kb, nb))  # [ky, kx, ...]
    if tb:
        wpe = wpe.transpose(0, 1, 3, 2)  # each PE uses its block transposed
    ab = np.pad(a2, [(0, 0), (0, ky * kb - Kd)]).reshape(M, ky, kb).transpose(1, 0, 2)
    partial = _pe_products(ab, wpe)  # [ky, kx, M, nb]: one partial product per PE
    acc = np.zeros(partial.shape[1:], COMPUTE_DTYPE)
    for r in range(ky):  # reduced down each PE column, in PE order
        acc += partial[r]
    acc = acc.transpose(1, 0, 2).reshape(M, kx * nb)
    y = acc[:, :N] * COMPUTE_DTYPE(node.attrs.get("alpha", 1.0)) if node.op == "Gemm" \
        else acc[:, :N]
    bias = node.inputs[2] if node.op == "Gemm" and len(node.inputs) > 2 else ""
    if bias:
        beta = COMPUTE_DTYPE(node.attrs.get("beta", 1.0))
        y = y + beta * _bias(env, bias, N, nb, kx, ky, node)
    env.store(node.outputs[0], y.reshape(_shape(env, node.outputs[0])).astype(COMPUTE_DTYPE))
    _column_owner(env, node.outputs[0], N, nb, kx, ky)
    stats["pe_macs_max"] = M * kb * nb
    stats["sharded_pes"] = kx * ky
    return True


def _column_owner(env: Env, out: str, N: int, nb: int, kx: int, ky: int) -> None:
    """Output column n ends on the reduction-end PE (row ky - 1) of PE column n // nb."""
    shape = _shape(env, out)
    lin = (ky - 1) * kx + np.arange(N) // nb
    env.owner[out] = lin.reshape((1,) * (len(shape) - 1) + (N,)) if shape and shape[-1] == N \
        else np.full((1,) * len(shape), (ky - 1) * kx)


def matmul_act(env: Env, node: Node, stats: dict[str, int]) -> bool:
    """A product of two activations (attention's Q K^T, P V; a Gemm's weight
    gradient X^T dY): PE (px, py)
    receives A's reduction block py and B's block (py, px) and computes its
    partial product; the ky partials of a column are summed in PE order."""
    k = env.k
    if node.op not in ("MatMul", "Gemm") or node.inputs[1] in k.weights or \
            node.inputs[0] in k.weights:
        return False
    a = env.get(node.inputs[0], node.name).astype(COMPUTE_DTYPE, copy=False)
    b = env.get(node.inputs[1], node.name).astype(COMPUTE_DTYPE, copy=False)
    if a.ndim < 2 or b.ndim < 2:
        return False
    gemm = node.op == "Gemm"
    ta = gemm and bool(node.attrs.get("transA", 0))
    if ta:  # each PE reads its block transposed
        a = a.T
    if gemm and node.attrs.get("transB", 0):
        b = b.T
    Kd, N = b.shape[-2], b.shape[-1]
    kx, ky = int(k.knobs["kx"]), int(k.knobs["ky"])
    _check_rect(env, kx, ky)
    kb, nb = _cdiv(Kd, ky), _cdiv(N, kx)
    _check_operands(env, node, a.shape, b.shape, ta, gemm and bool(node.attrs.get("transB", 0)),
                    kb, nb, stats)
    ap = np.pad(a, [(0, 0)] * (a.ndim - 1) + [(0, ky * kb - Kd)])
    ap = np.moveaxis(ap.reshape(*a.shape[:-1], ky, kb), -2, 0)  # [ky, ..., M, kb]
    bp = np.pad(b, [(0, 0)] * (b.ndim - 2) + [(0, ky * kb - Kd), (0, kx * nb - N)])
    bp = bp.reshape(*b.shape[:-2], ky, kb, kx, nb)
    bp = np.moveaxis(np.moveaxis(bp, -4, 0), -2, 1)  # [ky, kx, ..., kb, nb]
    acc = None
    for r in range(ky):  # reduced down each PE column, in PE order
        part = np.matmul(ap[r][None], bp[r])  # [kx, ..., M, nb]: row r's PEs
        acc = part if acc is None else acc + part
    assert acc is not None
    y = np.moveaxis(acc, 0, -2)  # [..., M, kx, nb]
    y = y.reshape(*y.shape[:-2], kx * nb)[..., :N]
    if gemm:
        y = y * COMPUTE_DTYPE(node.attrs.get("alpha", 1.0))
        if len(node.inputs) > 2 and node.inputs[2]:
            y = y + COMPUTE_DTYPE(node.attrs.get("beta", 1.0)) * _bias(env, node.inputs[2], N, nb,
                                                                     kx, ky, node)
    env.store(node.outputs[0], y.reshape(_shape(env, node.outputs[0])).astype(COMPUTE_DTYPE))
    _column_owner(env, node.outputs[0], N, nb, kx, ky)
    stats["pe_macs_max"] = int(np.prod(y.shape[:-1])) * kb * nb
    stats["sharded_pes"] = kx * ky
    return True


def _check_operands(env: Env, node: Node, ashape: tuple[int, ...], bshape: tuple[int, ...],
                    ta: bool, tb: bool, kb: int, nb: int, stats: dict[str, int]) -> None:
    """The windows of a product of two activations (shapes as used: A [...,
    M, Kd], B [..., Kd, N]): PE row py reads A's reduction block py (every
    leading index), PE (px, py) B's block (reduction block py x column
    block px, every batch); a transposed operand (Gemm's transA, transB)
    reads the same block of its stored [Kd, M] or [N, Kd]. Checked against
    the lanes that delivered them (sim_inbox.check_inputs)."""
    k = env.k
    uw, uh = k.unrotated_shape
    py, px = np.arange(uh)[:, None], np.arange(uw)[None, :]
    needs = []
    for name, shape, red_ax, col_ax, step in (
            (node.inputs[0], ashape, -1, None, 0), (node.inputs[1], bshape, -2, -1, nb)):
        d = env.deliveries.get(name)
        if d is None or not d.shape:
            continue
        need = np.zeros((uh, uw, 2, len(shape)), np.int64)
        need[:, :, 1] = shape
        kd = shape[red_ax]
        need[:, :, 0, red_ax] = np.minimum(py * kb, kd)
        need[:, :, 1, red_ax] = np.minimum((py + 1) * kb, kd)
        if col_ax is not None:
            n = shape[col_ax]
            need[:, :, 0, col_ax] = np.minimum(px * step, n)
            need[:, :, 1, col_ax] = np.minimum((px + 1) * step, n)
        if (ta and col_ax is None) or (tb and col_ax is not None):  # stored transposed
            need = need[..., ::-1]
        need = np.ascontiguousarray(need)
        need[(need[:, :, 1] <= need[:, :, 0]).any(axis=2)] = 0
        if need.shape[3:] != (len(d.shape),) or (need[:, :, 1] > np.asarray(d.shape)).any():
            continue  # broadcast over another operand's batches: not this mapping's shape
        needs.append((d, need))
    if needs:
        stats["forwarded_pes"] = check_inputs(env.mem.p, env.ki, needs)


def _pe_products(ab: np.ndarray, wpe: np.ndarray) -> np.ndarray:
    """Every PE's partial product, accumulated as its FMAC loop does: one
    reduction index after the other, in f32. ab [ky, M, kb], wpe [ky, kx,
    kb, nb] -> [ky, kx, M, nb].

    Why not np.matmul: BLAS blocks and vectorises differently at the edges
    of a matrix, so two output columns with equal inputs can round
    differently; a PE computes every column the same way. The difference is
    an ulp, but a softmax over equal logits of size 1e26 (vgg19's light
    model: every weight is one constant) turns it into a different answer."""
    ky, kx, kb, nb = wpe.shape
    acc = np.zeros((ky, kx, ab.shape[1], nb), COMPUTE_DTYPE)
    tmp = np.empty_like(acc)
    for j in range(kb):
        np.multiply(ab[:, None, :, j, None], wpe[:, :, None, j, :], out=tmp)
        acc += tmp
    return acc


def _bias(env: Env, name: str, N: int, nb: int, kx: int, ky: int, node: Node) -> np.ndarray:
    """Gemm's C as the reduction-end PEs (row ky - 1) hold it: per-column
    shards concatenated along x, or one PE's whole copy when not sharded."""
    k = env.k
    if name not in k.weights:
        return env.get(name, node.name)
    wi = k.weights.index(name)
    shape = _shape(env, name)
    role = KINDS[k.kind].weight_shard(k.dims, k.knobs, wi, shape, 0, ky - 1)
    split = bool(shape) and shape[-1] == N and (role[-1].indices(N)[1] - role[-1].indices(N)[0]
                                                < N)
    if not split:
        return env.mem.pe_array(env.ki, wi, shape)[ky - 1, 0]
    cpe = env.mem.pe_array(env.ki, wi, (*shape[:-1], nb))[ky - 1]  # [kx, *lead, nb]
    return np.moveaxis(cpe, 0, -2).reshape(*shape[:-1], kx * nb)[..., :N]


def matmul_any(env: Env, node: Node, stats: dict[str, int]) -> bool:
    return matmul(env, node, stats) or matmul_act(env, node, stats) or \
        einsum_matmul(env, _as_einsum(env, node), stats)


def _as_einsum(env: Env, node: Node) -> Node:
    """A MatMul the two above do not shard (a batched constant B) as the
    Einsum it is, so the Einsum executor runs it on the same mapping."""
    if node.op != "MatMul":
        return node
    ra, rb = (len(_shape(env, i)) for i in node.inputs[:2])
    a = "...mk" if ra >= 2 else "k"
    b = "...kn" if rb >= 2 else "k"
    out = ("..." if max(ra, rb) >= 2 else "") + ("m" if ra >= 2 else "") + \
        ("n" if rb >= 2 else "")
    return Node(node.name, "Einsum", node.inputs[:2], node.outputs,
                {"equation": f"{a},{b}->{out}"})


SHARDED: dict[str, Callable[[Env, Node, dict[str, int]], bool]] = {
    "conv": conv, "matmul": matmul_any, "conv_wgrad": conv_wgrad,
}
