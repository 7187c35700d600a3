"""The convolution weight-gradient kernel kind (training).

Why a kind of its own: the weight gradient of a convolution,
dW[m, c, r, s] = sum over samples and output pixels of
gY[n, m, i, j] x[n, c, i sh + r dh, j sw + s dw], is written in the graph as
a Conv whose *weight operand is an activation* (the output gradient; see
wsec.ir.vjp_nn). As a `conv` kernel its "weight" would be held resident —
an image-sized tensor per PE. The hardware runs it the other way round:
weight-stationary on the *gradient*. PE (px, py) keeps the accumulators of
dW block [M-block px, C-block py % c] (kb x cb x R x S), receives the input
rows of its channel block (a sliding window, as the forward conv) and the
gradient rows of its output-channel block, and per gradient row does
Wo x kb x cb x R x S multiply-adds on its SIMD lanes. The output rows are
split into s row groups along y whose partial gradients are summed once per
sample (a short reduction along y); the gradient leaves once per sample.

The graph Conv is X'' [C/G, G N, H, W] (*) W'' [M, N, Ho, Wo] with
group G, strides = the layer's dilations, dilations = the layer's strides,
giving [C/G, M, R, S]; the dims are those of the layer:
N, C, H, W, M, R, S, G, sh, sw, dh, dw, ph, pw, Ho, Wo (1-D: H = Ho = R = 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .graph import Node, Value
from .kernel_kind import Dims, Knobs
from .library_common import (
    CODE_BYTES,
    KERNEL_OVERHEAD,
    ROW_OVERHEAD,
    LibraryKind,
    UnsupportedShape,
    candidates,
    cdiv,
    elems_per_cycle,
    fused_extras,
    itemsize,
    vtype,
)
from .library_conv import covering_rows, pair, window_rows
from .target import Target


def is_weight_gradient(node: Node, values: dict[str, Value]) -> bool:
    """A Conv whose weight operand is an activation (a weight gradient)."""
    return (node.op == "Conv" and len(node.inputs) > 1 and bool(node.inputs[1])
            and values[node.inputs[1]].const is None)


class ConvWgradKind(LibraryKind):
    """Convolution weight gradient: k output-channel groups (x), c input-
    channel groups x s output-row groups (y); see the module docstring."""

    name = "conv_wgrad"
    knob_names = ("k", "c", "s")
    description = "conv weight gradient: k out-channel groups (x), c in-channel x s row groups (y)"
    ops = frozenset()  # anchors Conv only when its weight is an activation (kinds.kind_for_node)

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        conv = body[0]
        x = vtype(values, conv.inputs[0]).shape  # [C/G, G N, *spatial]
        g = vtype(values, conv.inputs[1]).shape  # [M, N, *out]
        y = vtype(values, conv.outputs[0]).shape  # [C/G, M, *kernel]
        nsp = len(x) - 2
        if nsp not in (1, 2):
            raise UnsupportedShape(f"a weight gradient with {nsp} spatial axes (1-D and 2-D map)")
        grp = int(conv.attrs.get("group", 1))
        dl = pair(conv.attrs, "strides", 1, nsp)  # the layer's dilations
        st = pair(conv.attrs, "dilations", 1, nsp)  # the layer's strides
        pads = pair(conv.attrs, "pads", 0, 2 * nsp)

        def two(v: Sequence[int], one: int) -> list[int]:
            return [one, int(v[0])] if nsp == 1 else [int(v[0]), int(v[1])]

        sp, out, ker = two(x[2:], 1), two(g[2:], 1), two(y[2:], 1)
        ph = two([pads[0] + pads[nsp]] + ([pads[1] + pads[3]] if nsp == 2 else []), 0)
        d = {"N": g[1], "C": x[0] * grp, "H": sp[0], "W": sp[1], "M": g[0], "R": ker[0],
             "S": ker[1], "G": grp, "sh": two(st, 1)[0], "sw": two(st, 1)[1],
             "dh": two(dl, 1)[0], "dw": two(dl, 1)[1], "ph": ph[0], "pw": ph[1],
             "Ho": out[0], "Wo": out[1]}
        d.update(fused_extras(body, values))
        return d

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE row py reads in-channel block py % c of X'' [C/G, G N, H, W]
        (every sample of every group: the hull over its columns' out-
        channel blocks) in the input rows the gradient rows of row group
        py // c reach: the forward conv's rows (`window_rows`: the graph
        Conv's strides are the layer's dilations and vice versa), covering
        the input as conv's cut does (the pad above is not in the dims). A
        1-D gradient (H = Ho = 1) drops the row axis."""
        c, s = int(knobs["c"]), int(knobs["s"])
        C, G, H, W = dims["C"], max(1, dims["G"]), dims["H"], dims["W"]
        cg = C // G
        run = (cg, G * dims["N"], H, W)
        if tuple(shape) != run and not (H == 1 and tuple(shape) == (cg, G * dims["N"], W)):
            return None
        rows = np.array([window_rows(dims["Ho"], s, dims["sh"], dims["R"], dims["dh"], g)
                         for g in range(s)], np.int64)
        got = covering_rows(rows, dims["ph"], H)
        if got is None:
            return None
        lo, hi = got
        py = np.arange(c * s)
        out = np.zeros((c * s, 2, 4), np.int64)
        out[:, 1] = run
        step = -(-cg // c)
        out[:, 0, 0] = np.minimum(cg, (py % c) * step)
        out[:, 1, 0] = np.minimum(cg, (py % c + 1) * step)
        out[:, 0, 2], out[:, 1, 2] = lo[py // c], hi[py // c]
        out[(out[:, 1] <= out[:, 0]).any(axis=1)] = 0
        return out if len(shape) == 4 else out[:, :, [0, 1, 3]]

    def operand_cut(self, dims: Dims, knobs: Knobs, index: int, shape: tuple[int, ...]
                    ) -> np.ndarray | None:
        """The output gradient dY'' [M, N, Ho, Wo] (index 1): PE row py
        reads the gradient rows of row group py // c (ceil(Ho/s) of them),
        every out-channel (the hull of its columns' blocks), sample and
        column. A 1-D gradient: its one row, on row group 0."""
        c, s, Ho = int(knobs["c"]), int(knobs["s"]), dims["Ho"]
        run = (dims["M"], dims["N"], Ho, dims["Wo"])
        if index != 1 or (tuple(shape) != run and not (
                Ho == 1 and tuple(shape) == (dims["M"], dims["N"], dims["Wo"]))):
            return None
        hb = -(-Ho // s)
        g = np.arange(c * s) // c
        out = np.zeros((c * s, 2, 4), np.int64)
        out[:, 1] = run
        out[:, 0, 2], out[:, 1, 2] = np.minimum(g * hb, Ho), np.minimum((g + 1) * hb, Ho)
        out[out[:, 1, 2] <= out[:, 0, 2]] = 0
        return out if len(shape) == 4 else out[:, :, [0, 1, 3]]

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"k": candidates(dims["M"], target.width),
                "c": candidates(dims["C"] // dims["G"], target.height),
                "s": candidates(dims["Ho"], target.height)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        k, c, s = kn["k"], kn["c"], kn["s"]
        grp, m, cg = d["G"], d["M"], d["C"] // d["G"]
        kb, cb = cdiv(m, k), cdiv(cg, c)
        # input channels a PE reads: its block, in every group its out-channels span
        cin = np.minimum(d["C"], np.minimum(grp, cdiv(kb * grp, m) + 1) * cb)
        taps = d["R"] * d["S"]
        rows = d["N"] * cdiv(d["Ho"], s)  # gradient rows per PE
        win = (d["R"] - 1) * d["dh"] + 1
        wi = d["W"] + d["pw"]
        rows_in = d["N"] * np.minimum(d["H"] + d["ph"], cdiv(d["Ho"], s) * d["sh"] + win - 1)
        acc = kb * cb * taps  # the PE's block of the weight gradient
        red = (s > 1).astype(np.int64)
        compute = rows * cdiv(d["Wo"] * acc, target.lanes) + cdiv(acc, target.lanes) * (
            red + d["F"])
        epc = elems_per_cycle(target)
        recv = cdiv(rows_in * wi * cin + rows * d["Wo"] * kb + acc * (red + d["A"]), epc)
        send = cdiv(acc, epc)
        cycles = np.maximum(np.maximum(compute, recv), send) + rows * ROW_OVERHEAD \
            + KERNEL_OVERHEAD
        b = itemsize(target)
        sram = (CODE_BYTES + acc * b * (1 + d["A"])                 # gradient accumulators
                + (win + d["sh"]) * wi * cin * b                     # input row window
                + 2 * d["Wo"] * kb * b                               # gradient rows, 2 buffers
                + cdiv(d["P"] * kb, m) * b)                          # fused constants
        return k, c * s, cycles, sram
