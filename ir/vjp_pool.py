"""Gradient rules of the pooling ops.

- MaxPool: one tap of the window at a time (a strided Slice of the padded
  input); the first tap equal to the maximum takes the gradient (PyTorch's
  tie rule), and the taps are scattered back onto the input by a grouped
  one-hot ConvTranspose.
- AveragePool: the gradient over each window's count, scattered back by a
  grouped ConvTranspose of ones.
- Windows that do not overlap (stride = kernel, or one window along an
  axis) need no arithmetic to scatter: the taps are interleaved with the
  output pixels by Reshape/Transpose (a relabelling), then cropped.
- GlobalAveragePool spreads the gradient evenly; GlobalMaxPool gives it to
  the first maximum of each channel (a CumSum finds it).
"""

from __future__ import annotations

import itertools

import numpy as np

from .graph import Node
from .opsem_core import windows
from .types import TensorType
from .vjp_base import Emitter, vjp_rule

# --- pooling --------------------------------------------------------------------


def _pool_geometry(e: Emitter, n: Node) -> tuple[list[int], list[int], list[int], list[int],
                                                 list[int], list[int], list[int]]:
    """kernel, strides, dilations, begin pads, end pads (ceil_mode's extra
    rows included) and output size of a pooling node."""
    from .opsem_core import _pool_geometry as geo

    sx = e.shape(n.inputs[0])
    nd = len(sx) - 2
    kernel, st, dl, pb, pe, oe = geo(n, np.broadcast_to(np.float32(0), sx))
    out, extra = oe[:nd], oe[nd:]
    return kernel, st, dl, pb, [p + x for p, x in zip(pe, extra, strict=True)], out, extra


def _crop(e: Emitter, g: str, x: str, pb: list[int]) -> str:
    """The input's window [pb, pb + size) of a gradient laid over the padded
    input (zero-extended where the windows stop short of it)."""
    sx, sg = e.shape(x), e.shape(g)
    nd = len(sx) - 2
    short = [max(0, pb[i] + sx[2 + i] - sg[2 + i]) for i in range(nd)]
    if any(short):
        g = e.op("Pad", [g, e.ints([0] * (2 + nd) + [0, 0] + short)],
                 TensorType(e.dtype(g), tuple(sg[:2]) + tuple(sg[2 + i] + short[i]
                                                            for i in range(nd))))
    if e.shape(g) == sx:
        return g
    return e.op("Slice", [g, e.ints(pb), e.ints([pb[i] + sx[2 + i] for i in range(nd)]),
                          e.ints(list(range(2, 2 + nd)))], e.t(x))


def _tile_taps(e: Emitter, parts: list[str], x: str, kernel: list[int], pb: list[int]) -> str:
    """Non-overlapping windows (stride = kernel, no dilation): each tap's
    gradient lands on its own pixels, so the scatter is a relabelling —
    stack the taps, interleave them with the output pixels, crop. One part
    standing for every tap (an average) is broadcast instead of stacked."""
    sx = e.shape(x)
    nb, c = sx[:2]
    nd = len(sx) - 2
    out = list(e.shape(parts[0])[2:])
    dt = e.dtype(x)
    inter = [nb, c] + [d for i in range(nd) for d in (out[i], kernel[i])]
    if len(parts) == 1:
        g = e.reshape(parts[0], [nb, c] + [d for o in out for d in (o, 1)])
        g = e.expand(g, inter)
    else:
        stack = e.op("Concat", [e.reshape(p, [nb, c, 1] + out) for p in parts],
                     TensorType(dt, (nb, c, len(parts), *out)), axis=2)
        g = e.reshape(stack, [nb, c] + kernel + out)
        perm = [0, 1] + [ax for i in range(nd) for ax in (2 + nd + i, 2 + i)]
        g = e.transpose(g, perm)
    g = e.reshape(g, [nb, c] + [out[i] * kernel[i] for i in range(nd)])
    return _crop(e, g, x, pb)


def _scatter_taps(e: Emitter, parts: list[str], x: str, kernel: list[int], st: list[int],
                  dl: list[int], pb: list[int], pe: list[int], weights: np.ndarray) -> str:
    """Sum tap gradients back onto the input: parts[t] is tap t's gradient
    [N, C, *out] (one part: the same for every tap); a grouped ConvTranspose
    with weights[t] at tap t's position scatters them with the pool's
    strides, then the padding is cut. Non-overlapping windows need no
    arithmetic (`_tile_taps`)."""
    sx = e.shape(x)
    nb, c = sx[:2]
    nd = len(sx) - 2
    out = list(e.shape(parts[0])[2:])
    # one window along an axis is as good as stride = kernel there
    if all(st[i] == kernel[i] or out[i] == 1 for i in range(nd)) and all(d == 1 for d in dl):
        return _tile_taps(e, parts, x, kernel, pb)
    dt = e.dtype(x)
    if len(parts) == 1:  # one gradient for every tap: a ones kernel per channel
        span = [dl[i] * (kernel[i] - 1) + 1 for i in range(nd)]
        wk = np.zeros((c, 1, *span))
        wk[(slice(None), 0, *(slice(None, None, d) for d in dl))] = 1.0
        padded = [pb[i] + sx[2 + i] + pe[i] for i in range(nd)]
        full = [st[i] * (out[i] - 1) + span[i] for i in range(nd)]
        gp = e.op("ConvTranspose", [parts[0], e.array(wk, dt)],
                  TensorType(dt, (nb, c, *padded)), strides=st, group=c,
                  output_padding=[padded[i] - full[i] for i in range(nd)], kernel_shape=span)
        return _crop(e, gp, x, pb)
    taps = len(parts)
    if taps > 1:
        stack = e.op("Concat", [e.reshape(p, [nb, c, 1] + out) for p in parts],
                     TensorType(dt, (nb, c, taps, *out)), axis=2)
    else:
        stack = e.reshape(parts[0], [nb, c, 1] + out)
    stack = e.reshape(stack, [nb, c * taps] + out)
    span = [dl[i] * (kernel[i] - 1) + 1 for i in range(nd)]
    wk = np.zeros((c * taps, 1, *span), np.float64)
    for t, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
        pos = tuple(tap[i] * dl[i] for i in range(nd))
        wk[(slice(t, None, taps), 0, *pos)] = weights[t]
    padded = [pb[i] + sx[2 + i] + pe[i] for i in range(nd)]
    full = [st[i] * (out[i] - 1) + span[i] for i in range(nd)]
    op = [padded[i] - full[i] for i in range(nd)]
    gp = e.op("ConvTranspose", [stack, e.array(wk, dt)], TensorType(dt, (nb, c, *padded)),
              strides=st, group=c, output_padding=op, kernel_shape=span)
    if any(pb) or any(pe):
        gp = e.op("Slice", [gp, e.ints(pb), e.ints([pb[i] + sx[2 + i] for i in range(nd)]),
                            e.ints(list(range(2, 2 + nd)))], e.t(x))
    return gp


@vjp_rule("MaxPool")
def _maxpool(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None]
    x, y = n.inputs[0], n.outputs[0]
    sx = e.shape(x)
    nd = len(sx) - 2
    kernel, st, dl, pb, pe, out, _ = _pool_geometry(e, n)
    dt = e.dtype(x)
    xp = x
    if any(pb) or any(pe):
        low = float(np.finfo(np.dtype("float16" if dt == "f16" else "float32")).min) \
            if dt.startswith("f") else -1e30
        padded = tuple(sx[:2]) + tuple(pb[i] + sx[2 + i] + pe[i] for i in range(nd))
        xp = e.op("Pad", [x, e.ints([0, 0] + pb + [0, 0] + pe), e.scalar(low, dt)],
                  TensorType(dt, padded), mode="constant")
    taken = None
    parts = []
    axes = e.ints(list(range(2, 2 + nd)))
    for tap in itertools.product(*(range(k) for k in kernel)):
        starts = [tap[i] * dl[i] for i in range(nd)]
        ends = [starts[i] + (out[i] - 1) * st[i] + 1 for i in range(nd)]
        xt = e.op("Slice", [xp, e.ints(starts), e.ints(ends), axes, e.ints(st)], e.t(y))
        eq = e.binary("Equal", xt, y)
        sel = eq if taken is None else e.binary("And", eq, e.unary("Not", taken))
        taken = eq if taken is None else e.binary("Or", taken, eq)
        parts.append(e.mask(sel, gy[0]))
    ones = np.ones(len(parts))
    return [_scatter_taps(e, parts, x, kernel, st, dl, pb, pe, ones)]


@vjp_rule("AveragePool")
def _avgpool(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None]
    x = n.inputs[0]
    sx = e.shape(x)
    nd = len(sx) - 2
    kernel, st, dl, pb, pe, out, extra = _pool_geometry(e, n)
    pe0 = [pe[i] - extra[i] for i in range(nd)]
    if n.attrs.get("count_include_pad", 0):
        ones = np.pad(np.ones((1, 1) + tuple(sx[2 + i] + pb[i] + pe0[i] for i in range(nd))),
                      [(0, 0), (0, 0)] + [(0, x_) for x_ in extra])
    else:
        ones = np.pad(np.ones((1, 1) + tuple(sx[2:])), [(0, 0), (0, 0)] + list(
            zip(pb, pe, strict=True)))
    count = windows(ones, kernel, st, dl, out).sum(axis=tuple(range(2 + nd, 2 + 2 * nd)))
    g = e.div(gy[0], e.array(count, e.dtype(x)))
    taps = int(np.prod(kernel))
    return [_scatter_taps(e, [g], x, kernel, st, dl, pb, pe, np.ones(taps))]


@vjp_rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None]
    x, y = n.inputs[0], n.outputs[0]
    sx = e.shape(x)
    hw = int(np.prod(sx[2:]))
    if n.op == "GlobalAveragePool":
        return [e.expand(e.scale(gy[0], 1.0 / hw), sx)]
    # the first maximum of each (sample, channel) takes the gradient
    dt = e.dtype(x)
    hit = e.where(e.binary("Equal", x, y), e.scalar(1.0, dt), e.scalar(0.0, dt))
    flat = e.reshape(hit, [sx[0], sx[1], hw])
    first = e.binary("Equal", e.op("CumSum", [flat, e.scalar(2, "i64")], e.t(flat)),
                     e.scalar(1.0, dt))
    first = e.reshape(e.binary("And", first, e.binary("Greater", flat, e.scalar(0.0, dt))), sx)
    return [e.mask(first, gy[0])]
