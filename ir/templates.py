"""Route templates: the flows inside a kernel, once per kind and knobs.

Why: besides the lanes between kernels (wsec.ir.lanes), a kernel moves data
among its own PEs; the routers must be configured for that too, on colors
that no bundle takes (INTERNAL_COLORS, reused in every rectangle). A kind
says how long its reduction chains are (`KernelKind.reduction_chain`): the
partial sums of a conv's c input-channel blocks, or a matmul's ky reduction
blocks, travel along the kernel's unrotated y, PE row after PE row, each
PE adding its own before passing the sum on. A PE receives the running sum
on one color and sends its own on the other (alternating with the row
parity), so every PE holds at most one route per color.

A template is (px, py, color, rx mask, tx mask) per entry, in offsets of the
kernel's unrotated rectangle; `place` maps it onto the grid (a rotated
kernel is placed transposed: its N becomes E, its E becomes N, ...).
"""

from __future__ import annotations

import numpy as np

from .fabric import PORT_BITS

INTERNAL_COLORS = 2  # colors 0 and 1: every kernel's own flows

_N, _S, _RAMP = PORT_BITS["N"], PORT_BITS["S"], PORT_BITS["RAMP"]
# unrotated port bit -> placed port bit for a rotated (transposed) kernel
_ROTATE = {PORT_BITS["N"]: PORT_BITS["E"], PORT_BITS["S"]: PORT_BITS["W"],
           PORT_BITS["E"]: PORT_BITS["N"], PORT_BITS["W"]: PORT_BITS["S"], _RAMP: _RAMP}


def reduction_template(w: int, h: int, chain: int) -> np.ndarray:
    """(m, 5) entries of reduction chains of `chain` consecutive PE rows
    (rows g*chain .. g*chain+chain-1 of every column), summing towards the
    last row of each group; empty when chain < 2."""
    if chain < 2 or w < 1 or h < 1:
        return np.zeros((0, 5), dtype=np.int64)
    py = np.arange(h)
    ci = py % chain
    rows = []
    # receive the running sum from the PE below, into the core
    recv = py[ci > 0]
    rows.append(np.stack([recv, (ci[ci > 0] - 1) % 2, np.full(recv.size, _S),
                          np.full(recv.size, _RAMP)], axis=1))
    # send this PE's running sum to the PE above (not from a group's last row)
    last = (ci == chain - 1) | (py == h - 1)
    send = py[~last]
    rows.append(np.stack([send, ci[~last] % 2, np.full(send.size, _RAMP),
                          np.full(send.size, _N)], axis=1))
    per_col = np.concatenate(rows)  # (py, color, rx, tx)
    px = np.repeat(np.arange(w), per_col.shape[0])
    tiled = np.tile(per_col, (w, 1))
    return np.concatenate([px[:, None], tiled], axis=1).astype(np.int64)


def place(entries: np.ndarray, x0: int, y0: int, rotated: bool) -> np.ndarray:
    """Template entries at a kernel placed with lower-left corner (x0, y0):
    (m, 5) grid x, y, color, rx, tx."""
    out = entries.copy()
    if rotated:
        out[:, 0], out[:, 1] = x0 + entries[:, 1], y0 + entries[:, 0]
        for col in (3, 4):
            v = entries[:, col]
            out[:, col] = sum(np.where((v & bit) != 0, _ROTATE[bit], 0) for bit in _ROTATE)
    else:
        out[:, 0] += x0
        out[:, 1] += y0
    return out
