"""Sharded executor of the convolution weight-gradient kind (`conv_wgrad`).

Why a sharded executor for a kind without weights: its mapping splits the
*reduction*. PE (px, py) accumulates dW block [M-block px, C-block py % c]
over the gradient rows of row group py // c only (library_conv_grad), and
the s row groups' partial gradients are summed in PE order. Computing each
row group's partial on its own and reducing them checks that the groups'
rows cover the output gradient exactly once — a knob setting that dropped
or repeated rows would change the answer. Blocks along x and y are plain
slices of a row group's partial (every PE of the group computes its slice).
A 1-D gradient runs as a 2-D one over rows of one. Each dW element ends on
the last row group's PE of its block, where fused element-wise ops run.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.opsem import pads, windows

from .format import type_shape
from .sim_base import COMPUTE_DTYPE, SimError
from .sim_inbox import check_inputs
from .sim_pe import Env


def conv_wgrad(env: Env, node: Node, stats: dict[str, int]) -> bool:
    """Conv(X [C/G, G N, H, W], dY [M, N, Ho, Wo]) -> dW^T [C/G, M, R, S]."""
    k = env.k
    if node.op != "Conv":
        return False
    x = env.get(node.inputs[0], node.name).astype(COMPUTE_DTYPE, copy=False)
    g = env.get(node.inputs[1], node.name).astype(COMPUTE_DTYPE, copy=False)
    if x.ndim != g.ndim or x.ndim not in (3, 4):
        return False
    if x.ndim == 3:  # 1-D: rows of one (H = Ho = R = 1), the sequence along W
        x, g, node = x[:, :, None, :], g[:, :, None, :], _as_2d(node)
    cg, gn, h, w = x.shape
    m, n, ho, wo = g.shape
    grp = int(node.attrs.get("group", 1))
    kk, c, s = (int(k.knobs[v]) for v in ("k", "c", "s"))
    uw, uh = k.unrotated_shape
    if (uw, uh) != (kk, c * s):
        raise SimError(f"kernel '{k.name}' (conv_wgrad, knobs {k.knobs}) occupies {uw}x{uh} "
                       f"PEs but its mapping needs {kk}x{c * s}")
    st = [int(v) for v in node.attrs.get("strides", [1, 1])]
    dl = [int(v) for v in node.attrs.get("dilations", [1, 1])]
    pb, pe = pads(node, (h, w), [ho, wo], st, dl)
    xp = np.pad(x, [(0, 0), (0, 0), (pb[0], pe[0]), (pb[1], pe[1])])
    oshape = tuple(type_shape(env.mem.p.info["values"][node.outputs[0]]))
    r_out, s_out = (1, oshape[2]) if len(oshape) == 3 else oshape[2:]
    hb = -(-ho // s)
    mg = m // grp
    acc = np.zeros((cg, m, r_out, s_out), COMPUTE_DTYPE)
    for gi in range(s):  # the row groups along y, reduced in PE order
        i0, i1 = gi * hb, min(ho, (gi + 1) * hb)
        if i0 >= i1:
            continue
        win = windows(xp[:, :, i0 * dl[0]:, :], [i1 - i0, wo], st, dl, [r_out, s_out])
        part = np.zeros_like(acc)
        for q in range(grp):  # out-channel group q reads input channels q N .. q N + N
            ms = slice(q * mg, (q + 1) * mg)
            part[:, ms] = np.einsum("cnrsij,mnij->cmrs", win[:, q * n:(q + 1) * n],
                                    g[ms, :, i0:i1, :], optimize=True)
        acc += part
    env.store(node.outputs[0], acc.reshape(oshape))
    kb, cb = -(-m // kk), -(-cg // c)
    _check_wgrad(env, node, (cg, gn, h, w, m, n, ho, wo), (kk, c, s, kb, cb, hb, grp),
                 (int(pb[0]), st[0], dl[0], r_out), stats)
    # dW block [M-block px, C-block py % c] ends on the last row group's PE
    row = (s - 1) * c + np.arange(cg) // cb
    own = row[:, None] * uw + (np.arange(m) // kb)[None, :]
    env.owner[node.outputs[0]] = own.reshape(cg, m, *(1,) * (len(oshape) - 2))
    stats["pe_macs_max"] = n * hb * wo * kb * cb * r_out * s_out
    stats["sharded_pes"] = kk * c * s
    return True


def wgrad_need(sizes: tuple[int, ...], geo: tuple[int, ...], rows: tuple[int, ...]
               ) -> tuple[np.ndarray, np.ndarray]:
    """(uh, uw, 2, 4) windows of X'' [C/G, G N, H, W] and dY'' [M, N, Ho,
    Wo] of PE (px, py): row group g = py // c's gradient rows [i0, i1) and
    the input rows their window reaches (top pad, stride, dilation and
    kernel rows `rows` of the graph Conv), in-channel block py % c, the
    sample blocks of the groups out-channel block px spans, every column."""
    cg, gn, h, w, m, n, ho, wo = sizes
    kk, c, s, kb, cb, hb, grp = geo
    top, st, dl, r_out = rows
    mg = m // grp
    uh, uw = c * s, kk
    py, px = np.arange(uh)[:, None], np.arange(uw)[None, :]
    g, ci = py // c, py % c
    i0, i1 = np.minimum(g * hb, ho), np.minimum((g + 1) * hb, ho)
    live = (i1 > i0) & (px * kb < m) & (ci * cb < cg)
    m0, m1 = np.minimum(px * kb, m), np.minimum((px + 1) * kb, m)
    q0, q1 = m0 // mg, (np.maximum(m1, 1) - 1) // mg  # the groups of the out-channel block
    x = np.zeros((uh, uw, 2, 4), np.int64)
    x[..., 0, 0], x[..., 1, 0] = np.minimum(ci * cb, cg), np.minimum((ci + 1) * cb, cg)
    x[..., 0, 1], x[..., 1, 1] = q0 * n, np.minimum((q1 + 1) * n, gn)
    x[..., 0, 2] = np.clip(i0 * dl - top, 0, h)
    x[..., 1, 2] = np.clip((r_out - 1) * st + (i1 - 1) * dl + 1 - top, 0, h)
    x[..., 1, 3] = w
    dy = np.zeros((uh, uw, 2, 4), np.int64)
    dy[..., 0, 0], dy[..., 1, 0] = m0, m1
    dy[..., 1, 1], dy[..., 1, 3] = n, wo
    dy[..., 0, 2], dy[..., 1, 2] = i0, i1
    for b in (x, dy):
        b[~live | (b[..., 1, :] <= b[..., 0, :]).any(axis=-1)] = 0
    return x, dy


def _check_wgrad(env: Env, node: Node, sizes: tuple[int, ...], geo: tuple[int, ...],
                 rows: tuple[int, ...], stats: dict[str, int]) -> None:
    """Both operands' windows (`wgrad_need`) against the lanes that
    delivered them (sim_inbox.check_inputs; a 1-D gradient's rows of one
    dropped)."""
    needs = []
    for name, need in zip(node.inputs[:2], wgrad_need(sizes, geo, rows), strict=True):
        d = env.deliveries.get(name)
        if d is None or not d.shape:
            continue
        if len(d.shape) == 3:
            need = need[..., [0, 1, 3]]
        needs.append((d, need))
    if needs:
        stats["forwarded_pes"] = check_inputs(env.mem.p, env.ki, needs)


def _as_2d(node: Node) -> Node:
    """The 1-D weight-gradient Conv as a 2-D one over rows of one."""
    a = dict(node.attrs)
    for key in ("strides", "dilations", "kernel_shape"):
        if a.get(key) is not None:
            a[key] = [1, *list(a[key])]  # type: ignore[misc]
    if a.get("pads") is not None:
        p0, p1 = list(a["pads"])  # type: ignore[misc]
        a["pads"] = [0, p0, 0, p1]
    return Node(node.name, node.op, node.inputs, node.outputs, a)
