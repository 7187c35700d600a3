"""Reference numpy semantics of the core graph-level ops (ONNX, NCHW):
element-wise, shape and layout, reductions, normalisation, matmul, conv and
pooling. Registered into opsem_base; `wsec.ir.opsem.evaluate` is the entry.

Everything is vectorised: convolutions and pools use strided windows plus
tensordot/einsum, never Python loops over pixels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .graph import Node
from .ops import ONNX_DTYPES
from .opsem_base import Arr, get, ints, op
from .types import DTYPES

# --- elementwise ----------------------------------------------------------


def _erf(x: Arr) -> Arr:
    """Abramowitz-Stegun 7.1.26 (|err| < 1.5e-7), vectorised; no scipy needed."""
    s = np.sign(x)
    a = np.abs(x).astype(np.float64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return (s * (1.0 - poly * np.exp(-a * a))).astype(x.dtype)


UNARY: dict[str, Callable[[Arr], Arr]] = {
    "Abs": np.abs, "Ceil": np.ceil, "Exp": np.exp, "Floor": np.floor, "Log": np.log,
    "Neg": np.negative, "Not": np.logical_not, "Sqrt": np.sqrt, "Tanh": np.tanh,
    "Relu": lambda x: np.maximum(x, np.zeros((), x.dtype)),
    "Reciprocal": lambda x: (np.ones((), x.dtype) / x).astype(x.dtype),
    "Sigmoid": lambda x: (1.0 / (1.0 + np.exp(-x))).astype(x.dtype),
    "Erf": _erf,
}


@op(*UNARY)
def _unary(n: Node, ins: list) -> list:
    return [UNARY[n.op](ins[0])]


def _div(a: Arr, b: Arr) -> Arr:
    if np.issubdtype(a.dtype, np.integer):
        q = np.abs(a) // np.abs(b)
        return (q * np.sign(a) * np.sign(b)).astype(a.dtype)
    return a / b


BINARY: dict[str, Callable[[Arr, Arr], Arr]] = {
    "Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": _div,
    "Equal": np.equal, "Less": np.less, "Greater": np.greater,
    "Pow": lambda a, b: np.power(a, b).astype(a.dtype),
}


@op(*BINARY)
def _binary(n: Node, ins: list) -> list:
    out = BINARY[n.op](ins[0], ins[1])
    if n.op in ("Add", "Sub", "Mul", "Div"):
        out = out.astype(ins[0].dtype, copy=False)
    return [out]


@op("Sum", "Max", "Min")
def _variadic(n: Node, ins: list) -> list:
    fn = {"Sum": np.add, "Max": np.maximum, "Min": np.minimum}[n.op]
    acc = ins[0]
    for x in ins[1:]:
        acc = fn(acc, x)
    return [np.asarray(acc).astype(ins[0].dtype, copy=False)]


@op("LeakyRelu")
def _leaky(n: Node, ins: list) -> list:
    x = ins[0]
    return [np.where(x >= 0, x, x * x.dtype.type(n.attrs.get("alpha", 0.01)))]


@op("Clip")
def _clip(n: Node, ins: list) -> list:
    x = ins[0]
    lo, hi = get(ins, 1), get(ins, 2)
    if lo is not None:
        x = np.maximum(x, lo)
    if hi is not None:
        x = np.minimum(x, hi)
    return [x.astype(ins[0].dtype, copy=False)]


@op("Where")
def _where(n: Node, ins: list) -> list:
    return [np.where(ins[0], ins[1], ins[2])]


@op("Cast")
def _cast(n: Node, ins: list) -> list:
    return [ins[0].astype(DTYPES[ONNX_DTYPES[int(n.attrs["to"])]])]


# --- shape and data movement ---------------------------------------------


@op("Identity")
def _identity(n: Node, ins: list) -> list:
    return [ins[0]]


@op("Dropout")
def _dropout(n: Node, ins: list) -> list:
    return [ins[0], np.ones(ins[0].shape, dtype=np.bool_)]


@op("Reshape")
def _reshape(n: Node, ins: list) -> list:
    x, shape = ins[0], [int(d) for d in ins[1]]
    if not n.attrs.get("allowzero", 0):
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(shape)]
    return [x.reshape(shape)]


@op("Flatten")
def _flatten(n: Node, ins: list) -> list:
    x = ins[0]
    axis = int(n.attrs.get("axis", 1)) % (x.ndim + 1) if x.ndim else 0
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


@op("Unsqueeze")
def _unsqueeze(n: Node, ins: list) -> list:
    axes = ints(ins[1]) if get(ins, 1) is not None else ints(n.attrs.get("axes"))
    rank = ins[0].ndim + len(axes)
    return [np.expand_dims(ins[0], tuple(sorted(a % rank for a in axes)))]


@op("Squeeze")
def _squeeze(n: Node, ins: list) -> list:
    x = ins[0]
    axes = get(ins, 1)
    if axes is None and "axes" in n.attrs:
        axes = n.attrs["axes"]
    if axes is None:
        return [x.reshape([d for d in x.shape if d != 1])]
    return [np.squeeze(x, tuple(int(a) % x.ndim for a in axes))]


@op("Transpose")
def _transpose(n: Node, ins: list) -> list:
    perm = n.attrs.get("perm")
    return [np.transpose(ins[0], ints(perm) if perm is not None else None)]


@op("Concat")
def _concat(n: Node, ins: list) -> list:
    return [np.concatenate([x for x in ins if x is not None], axis=int(n.attrs["axis"]))]


@op("Shape")
def _shape(n: Node, ins: list) -> list:
    dims = ins[0].shape
    start = int(n.attrs.get("start", 0))
    end = n.attrs.get("end")
    return [np.array(dims[start: None if end is None else int(end)], dtype=np.int64)]


@op("ConstantOfShape")
def _const_of_shape(n: Node, ins: list) -> list:
    dt = DTYPES[str(n.attrs.get("dtype", "f32"))]
    return [np.full([int(d) for d in ins[0]], n.attrs.get("value", 0), dtype=dt)]


def gather_args(n: Node, ins: list) -> tuple[Arr, Arr, int]:
    """(data, indices with negatives wrapped, axis) of a Gather-like op."""
    x, idx = ins[0], ins[1].astype(np.int64)
    axis = int(n.attrs.get("axis", 0)) % x.ndim
    return x, np.where(idx < 0, idx + x.shape[axis], idx), axis


@op("Gather")
def _gather(n: Node, ins: list) -> list:
    x, idx, axis = gather_args(n, ins)
    return [np.take(x, idx, axis=axis)]


@op("Expand")
def _expand(n: Node, ins: list) -> list:
    shape = np.broadcast_shapes(ins[0].shape, tuple(int(d) for d in ins[1]))
    return [np.broadcast_to(ins[0], shape).copy()]


@op("Tile")
def _tile(n: Node, ins: list) -> list:
    return [np.tile(ins[0], [int(r) for r in ins[1]])]


@op("Slice")
def _slice(n: Node, ins: list) -> list:
    x = ins[0]
    starts, ends = ints(ins[1]), ints(ins[2])
    axes = ints(get(ins, 3), range(len(starts)))
    steps = ints(get(ins, 4), [1] * len(starts))
    sl = [slice(None)] * x.ndim
    big = np.iinfo(np.int64).max // 2
    for a, s, e, st in zip(axes, starts, ends, steps, strict=True):
        e = None if (st < 0 and e < -big) else e
        sl[a % x.ndim] = slice(max(min(s, big), -big), e, st)
    return [x[tuple(sl)]]


@op("Split")
def _split(n: Node, ins: list) -> list:
    x = ins[0]
    axis = int(n.attrs.get("axis", 0)) % x.ndim
    sizes = get(ins, 1)
    if sizes is None and "split" in n.attrs:
        sizes = n.attrs["split"]
    if sizes is None:
        k = len(n.outputs)
        sizes = [-(-x.shape[axis] // k)] * (k - 1)
        sizes.append(x.shape[axis] - sum(sizes))
    cuts = np.cumsum([int(s) for s in sizes])[:-1]
    return list(np.split(x, cuts, axis=axis))


@op("Range")
def _range(n: Node, ins: list) -> list:
    start, limit, delta = (np.asarray(v).item() for v in ins[:3])
    return [np.arange(start, limit, delta, dtype=np.asarray(ins[0]).dtype)]


@op("Pad")
def _pad(n: Node, ins: list) -> list:
    x, pads = ins[0], ints(ins[1])
    value = get(ins, 2)
    axes = ints(get(ins, 3), range(x.ndim))
    k = len(axes)
    width = [(0, 0)] * x.ndim
    for j, a in enumerate(axes):
        width[a % x.ndim] = (pads[j], pads[j + k])
    mode = str(n.attrs.get("mode", "constant"))
    if mode == "constant":
        cv = value.item() if value is not None and value.size else 0
        return [np.pad(x, width, mode="constant", constant_values=cv)]
    return [np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])]


# --- reductions, normalisation, matrix products ----------------------------


def reduce_with(fn: Any, n: Node, ins: list) -> list:
    """A Reduce* op: `fn(x, axis=, keepdims=)` over the axes given as the
    `axes` input (opset 18) or attribute; none means all axes, unless
    `noop_with_empty_axes` says the op is then the identity."""
    x = ins[0]
    axes = get(ins, 1)
    if axes is None and "axes" in n.attrs:
        axes = n.attrs["axes"]
    keep = bool(n.attrs.get("keepdims", 1))
    if axes is None or len(axes) == 0:
        if n.attrs.get("noop_with_empty_axes", 0):
            return [x]
        ax = None
    else:
        ax = tuple(int(a) % x.ndim for a in axes)
    return [np.asarray(fn(x, axis=ax, keepdims=keep)).astype(x.dtype)]


@op("ReduceMean", "ReduceSum", "ReduceMax")
def _reduce(n: Node, ins: list) -> list:
    fn = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max}[n.op]
    return reduce_with(fn, n, ins)


@op("Softmax")
def _softmax(n: Node, ins: list) -> list:
    x = ins[0]
    axis = int(n.attrs.get("axis", -1))
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return [(e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype)]


@op("BatchNormalization")
def _batchnorm(n: Node, ins: list) -> list:
    x, scale, bias, mean, var = ins[:5]
    eps = float(n.attrs.get("epsilon", 1e-5))
    shp = (1, -1) + (1,) * (x.ndim - 2)
    if n.attrs.get("training_mode", 0):  # the batch's statistics (population variance)
        ax = (0,) + tuple(range(2, x.ndim))
        bm = x.mean(axis=ax)
        bv = ((x - bm.reshape(shp)) ** 2).mean(axis=ax)
        mom = float(n.attrs.get("momentum", 0.9))
        y = (x - bm.reshape(shp)) / np.sqrt(bv.reshape(shp) + eps) * scale.reshape(shp) \
            + bias.reshape(shp)
        return [y.astype(x.dtype), (mean * mom + bm * (1 - mom)).astype(mean.dtype),
                (var * mom + bv * (1 - mom)).astype(var.dtype)]
    k = (scale / np.sqrt(var + np.asarray(eps, var.dtype))).reshape(shp)
    return [((x - mean.reshape(shp)) * k + bias.reshape(shp)).astype(x.dtype)]


@op("LayerNormalization")
def _layernorm(n: Node, ins: list) -> list:
    x = ins[0]
    axis = int(n.attrs.get("axis", -1)) % x.ndim
    eps = float(n.attrs.get("epsilon", 1e-5))
    ax = tuple(range(axis, x.ndim))
    mean = x.mean(axis=ax, keepdims=True)
    inv = 1.0 / np.sqrt(((x - mean) ** 2).mean(axis=ax, keepdims=True) + eps)
    y = (x - mean) * inv * ins[1]
    if get(ins, 2) is not None:
        y = y + ins[2]
    return [y.astype(x.dtype), mean.astype(x.dtype), inv.astype(x.dtype)]


@op("LRN")
def _lrn(n: Node, ins: list) -> list:
    x = ins[0]
    size = int(n.attrs["size"])
    alpha, beta = float(n.attrs.get("alpha", 1e-4)), float(n.attrs.get("beta", 0.75))
    bias = float(n.attrs.get("bias", 1.0))
    lo, hi = (size - 1) // 2, size - 1 - (size - 1) // 2
    sq = np.square(x.astype(np.float64))
    width = [(0, 0), (lo, hi)] + [(0, 0)] * (x.ndim - 2)
    cs = np.cumsum(np.pad(sq, width), axis=1)
    cs = np.concatenate([np.zeros_like(cs[:, :1]), cs], axis=1)
    c = x.shape[1]
    win = cs[:, size: size + c] - cs[:, 0:c]
    return [(x / (bias + alpha / size * win) ** beta).astype(x.dtype)]


@op("MatMul")
def _matmul(n: Node, ins: list) -> list:
    return [np.matmul(ins[0], ins[1])]


@op("Gemm")
def _gemm(n: Node, ins: list) -> list:
    a, b = ins[0], ins[1]
    if n.attrs.get("transA", 0):
        a = a.T
    if n.attrs.get("transB", 0):
        b = b.T
    y = float(n.attrs.get("alpha", 1.0)) * (a @ b)
    c = get(ins, 2)
    if c is not None:
        y = y + float(n.attrs.get("beta", 1.0)) * c
    return [y.astype(ins[0].dtype)]


# --- convolution and pooling -------------------------------------------------


def pads(n: Node, spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dil: Sequence[int]) -> tuple[list[int], list[int]]:
    """(begin, end) pads per spatial axis from `pads` or `auto_pad`."""
    nd = len(spatial)
    auto = str(n.attrs.get("auto_pad", "NOTSET"))
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for i in range(nd):
            out = -(-spatial[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1 - spatial[i])
            small, large = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else large)
            end.append(large if auto == "SAME_UPPER" else small)
        return begin, end
    if auto == "VALID":
        return [0] * nd, [0] * nd
    p = ints(n.attrs.get("pads"), [0] * (2 * nd))
    return p[:nd], p[nd:]


def windows(xp: Arr, kernel: Sequence[int], strides: Sequence[int], dil: Sequence[int],
             out: Sequence[int]) -> Arr:
    """Strided view (N, C, *out, *kernel) of padded input `xp` (no copy)."""
    nd = len(kernel)
    eff = [d * (k - 1) + 1 for k, d in zip(kernel, dil, strict=True)]
    w = np.lib.stride_tricks.sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nd)))
    sl = (slice(None), slice(None))
    sl += tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides, strict=True))
    sl += tuple(slice(None, None, d) for d in dil)
    return w[sl]


@op("Conv")
def _conv(n: Node, ins: list) -> list:
    x, w, b = ins[0], ins[1], get(ins, 2)
    nd = x.ndim - 2
    kernel = list(w.shape[2:])
    strides = ints(n.attrs.get("strides"), [1] * nd)
    dil = ints(n.attrs.get("dilations"), [1] * nd)
    g = int(n.attrs.get("group", 1))
    pb, pe = pads(n, x.shape[2:], kernel, strides, dil)
    xp = np.pad(x, [(0, 0), (0, 0)] + list(zip(pb, pe, strict=True)))
    out = [(xp.shape[2 + i] - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(nd)]
    win = windows(xp, kernel, strides, dil, out)  # N, C, *out, *k
    nb, c, m = x.shape[0], x.shape[1], w.shape[0]
    kax = list(range(2 + nd, 2 + 2 * nd))
    if g == 1:
        y = np.tensordot(win, w, axes=([1] + kax, [1] + list(range(2, 2 + nd))))
        y = np.moveaxis(y, -1, 1)
    elif c == g and m == g:  # depthwise: one filter per channel
        letters = "abcdefgh"[:nd]
        y = np.einsum(f"nc{letters.upper()}{letters},c{letters}->nc{letters.upper()}",
                      win, w[:, 0], optimize=True)
    else:
        cg, mg = c // g, m // g
        parts = []
        for gi in range(g):
            yg = np.tensordot(win[:, gi * cg:(gi + 1) * cg], w[gi * mg:(gi + 1) * mg],
                              axes=([1] + kax, [1] + list(range(2, 2 + nd))))
            parts.append(np.moveaxis(yg, -1, 1))
        y = np.concatenate(parts, axis=1)
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return [np.ascontiguousarray(y, dtype=x.dtype).reshape((nb, m, *out))]


def _pool_geometry(n: Node, x: Arr) -> tuple[list[int], list[int], list[int], list[int],
                                              list[int], list[int]]:
    nd = x.ndim - 2
    kernel = ints(n.attrs["kernel_shape"])
    strides = ints(n.attrs.get("strides"), [1] * nd)
    dil = ints(n.attrs.get("dilations"), [1] * nd)
    pb, pe = pads(n, x.shape[2:], kernel, strides, dil)
    ceil = bool(n.attrs.get("ceil_mode", 0))
    out, extra = [], []
    for i in range(nd):
        span = x.shape[2 + i] + pb[i] + pe[i] - dil[i] * (kernel[i] - 1) - 1
        o = (-(-span // strides[i]) if ceil else span // strides[i]) + 1
        if ceil and (o - 1) * strides[i] >= x.shape[2 + i] + pb[i]:
            o -= 1
        out.append(o)
        need = (o - 1) * strides[i] + dil[i] * (kernel[i] - 1) + 1
        extra.append(max(0, need - (x.shape[2 + i] + pb[i] + pe[i])))
    return kernel, strides, dil, pb, pe, [*out, *extra]


@op("MaxPool")
def _maxpool(n: Node, ins: list) -> list:
    x = ins[0]
    nd = x.ndim - 2
    kernel, strides, dil, pb, pe, oe = _pool_geometry(n, x)
    out, extra = oe[:nd], oe[nd:]
    lowest = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    width = [(0, 0), (0, 0)] + [(pb[i], pe[i] + extra[i]) for i in range(nd)]
    xp = np.pad(x, width, constant_values=lowest)
    win = windows(xp, kernel, strides, dil, out)
    kax = tuple(range(2 + nd, 2 + 2 * nd))
    y = win.max(axis=kax)
    if len(n.outputs) < 2 or not n.outputs[1]:
        return [y]
    # Indices: the first maximum in row-major window order (onnxruntime's
    # scan), i.e. the smallest row-major position holding the maximum
    spatial = x.shape[2:]
    pos = np.pad(np.arange(math.prod(spatial), dtype=np.float64).reshape(1, 1, *spatial),
                 width, constant_values=np.inf)
    wpos = windows(pos, kernel, strides, dil, out)
    first = np.where(win == y[(...,) + (None,) * nd], wpos, np.inf).min(axis=kax)
    return [y, pool_indices(n, first, x.shape)]


def pool_indices(n: Node, first: Arr, shape: Sequence[int]) -> Arr:
    """MaxPool's Indices from the row-major spatial position of each
    output's maximum ([N, C, *out], float): the flat index into the input,
    spatial part row-major (storage_order 0) or column-major (1)."""
    spatial = tuple(int(v) for v in shape[2:])
    f = np.nan_to_num(first, posinf=0).astype(np.int64)
    if int(n.attrs.get("storage_order", 0)):  # column-major, as onnxruntime
        f = np.ravel_multi_index(np.unravel_index(f, spatial), spatial, order="F")
    plane = math.prod(spatial)
    ch = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape[0], shape[1],
                                                                 *(1,) * len(spatial))
    return ch * plane + f


@op("AveragePool")
def _avgpool(n: Node, ins: list) -> list:
    x = ins[0]
    nd = x.ndim - 2
    kernel, strides, dil, pb, pe, oe = _pool_geometry(n, x)
    out, extra = oe[:nd], oe[nd:]
    width = [(0, 0), (0, 0)] + [(pb[i], pe[i] + extra[i]) for i in range(nd)]
    kax = tuple(range(2 + nd, 2 + 2 * nd))
    total = windows(np.pad(x, width), kernel, strides, dil, out).sum(axis=kax)
    if n.attrs.get("count_include_pad", 0):
        mask = np.pad(np.ones((1, 1) + tuple(x.shape[2 + i] + pb[i] + pe[i] for i in range(nd)),
                              x.dtype), [(0, 0), (0, 0)] + [(0, e) for e in extra])
    else:
        mask = np.pad(np.ones((1, 1) + x.shape[2:], x.dtype), width)
    count = windows(mask, kernel, strides, dil, out).sum(axis=kax)
    return [(total / count).astype(x.dtype)]


@op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(n: Node, ins: list) -> list:
    x = ins[0]
    ax = tuple(range(2, x.ndim))
    fn = np.mean if n.op == "GlobalAveragePool" else np.max
    return [fn(x, axis=ax, keepdims=True).astype(x.dtype)]
