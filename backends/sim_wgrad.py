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
    # dW block [M-block px, C-block py % c] ends on the last row group's PE
    row = (s - 1) * c + np.arange(cg) // cb
    own = row[:, None] * uw + (np.arange(m) // kb)[None, :]
    env.owner[node.outputs[0]] = own.reshape(cg, m, *(1,) * (len(oshape) - 2))
    stats["pe_macs_max"] = n * hb * wo * kb * cb * r_out * s_out
    stats["sharded_pes"] = kk * c * s
    return True


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
