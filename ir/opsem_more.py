"""More reference semantics: activations, reductions and layout ops of exporters.

Split from `opsem_core` only to keep modules short: PyTorch's exporter emits these
(ELU/SELU/PReLU/Softplus activations, LogSoftmax, InstanceNorm,
ConvTranspose, the Trilu of a causal mask, CumSum, Einsum, ...). They are
registered into the same table, so `opsem.evaluate` is still the single
definition of what an op computes.
"""

from __future__ import annotations

import itertools

import numpy as np

from .graph import Node
from .opsem_base import get, ints, op
from .opsem_core import BINARY, UNARY, gather_args, reduce_with

Arr = np.ndarray


def _f(n: Node, key: str, default: float) -> float:
    return float(n.attrs.get(key, default))


# --- elementwise ----------------------------------------------------------


def _softplus(x: Arr) -> Arr:
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype)


UNARY.update({
    "Softplus": _softplus,
    "Softsign": lambda x: (x / (1 + np.abs(x))).astype(x.dtype),
    "Sin": np.sin, "Cos": np.cos, "Sign": np.sign, "Round": np.round, "IsNaN": np.isnan,
    "HardSwish": lambda x: (x * np.clip(x / 6 + 0.5, 0, 1)).astype(x.dtype),
})


@op("Softplus", "Softsign", "Sin", "Cos", "Sign", "Round", "IsNaN", "HardSwish")
def _unary_more(n: Node, ins: list) -> list:
    return [UNARY[n.op](ins[0])]


@op("IsInf")
def _isinf(n: Node, ins: list) -> list:
    x = ins[0]
    pos, neg = int(n.attrs.get("detect_positive", 1)), int(n.attrs.get("detect_negative", 1))
    return [np.isinf(x) & (((x > 0) & bool(pos)) | ((x < 0) & bool(neg)))]


@op("Elu")
def _elu(n: Node, ins: list) -> list:
    x = ins[0]
    a = _f(n, "alpha", 1.0)
    return [np.where(x > 0, x, a * np.expm1(np.minimum(x, 0))).astype(x.dtype)]


@op("Selu")
def _selu(n: Node, ins: list) -> list:
    x = ins[0]
    a, g = _f(n, "alpha", 1.67326319217681884765625), _f(n, "gamma", 1.05070102214813232421875)
    return [(g * np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))).astype(x.dtype)]


@op("HardSigmoid")
def _hard_sigmoid(n: Node, ins: list) -> list:
    x = ins[0]
    return [np.clip(_f(n, "alpha", 0.2) * x + _f(n, "beta", 0.5), 0, 1).astype(x.dtype)]


BINARY.update({
    "PRelu": lambda x, s: np.where(x < 0, x * s, x).astype(x.dtype),
    "GreaterOrEqual": np.greater_equal, "LessOrEqual": np.less_equal,
    "And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor,
})


@op("PRelu", "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor")
def _binary_more(n: Node, ins: list) -> list:
    return [BINARY[n.op](ins[0], ins[1])]


@op("Mod")
def _mod(n: Node, ins: list) -> list:
    a, b = ins[0], ins[1]
    if n.attrs.get("fmod", 0):
        return [np.fmod(a, b).astype(a.dtype)]
    return [np.mod(a, b).astype(a.dtype)]


@op("Mean")
def _mean(n: Node, ins: list) -> list:
    acc = ins[0]
    for x in ins[1:]:
        acc = acc + x
    return [(acc / len(ins)).astype(ins[0].dtype)]


# --- softmax family, reductions, normalisation -------------------------------


@op("LogSoftmax")
def _log_softmax(n: Node, ins: list) -> list:
    x = ins[0]
    axis = int(n.attrs.get("axis", -1))
    s = x - np.max(x, axis=axis, keepdims=True)
    return [(s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))).astype(x.dtype)]


_REDUCERS = {
    "ReduceMin": np.min, "ReduceProd": np.prod,
    "ReduceL1": lambda x, axis, keepdims: np.sum(np.abs(x), axis=axis, keepdims=keepdims),
    "ReduceL2": lambda x, axis, keepdims: np.sqrt(np.sum(x * x, axis=axis, keepdims=keepdims)),
    "ReduceSumSquare": lambda x, axis, keepdims: np.sum(x * x, axis=axis, keepdims=keepdims),
}


@op(*_REDUCERS)
def _reduce_more(n: Node, ins: list) -> list:
    return reduce_with(_REDUCERS[n.op], n, ins)


@op("ArgMax", "ArgMin")
def _arg(n: Node, ins: list) -> list:
    x = ins[0]
    axis = int(n.attrs.get("axis", 0)) % x.ndim
    fn = np.argmax if n.op == "ArgMax" else np.argmin
    if n.attrs.get("select_last_index", 0):
        flipped = np.flip(x, axis=axis)
        idx = x.shape[axis] - 1 - fn(flipped, axis=axis)
    else:
        idx = fn(x, axis=axis)
    if n.attrs.get("keepdims", 1):
        idx = np.expand_dims(idx, axis)
    return [idx.astype(np.int64)]


@op("InstanceNormalization")
def _instance_norm(n: Node, ins: list) -> list:
    x, scale, bias = ins[:3]
    eps = _f(n, "epsilon", 1e-5)
    ax = tuple(range(2, x.ndim))
    shp = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=ax, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=ax, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * scale.reshape(shp) + bias.reshape(shp)
    return [y.astype(x.dtype)]


@op("CumSum")
def _cumsum(n: Node, ins: list) -> list:
    x = ins[0]
    axis = int(np.asarray(ins[1]).reshape(-1)[0]) % x.ndim
    if n.attrs.get("reverse", 0):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis, dtype=x.dtype)
    if n.attrs.get("exclusive", 0):
        y = y - x
    if n.attrs.get("reverse", 0):
        y = np.flip(y, axis)
    return [np.ascontiguousarray(y)]


# --- layout and indexing -----------------------------------------------------


@op("Trilu")
def _trilu(n: Node, ins: list) -> list:
    k = int(np.asarray(ins[1]).item()) if get(ins, 1) is not None else 0
    fn = np.triu if n.attrs.get("upper", 1) else np.tril
    return [fn(ins[0], k)]


@op("Einsum")
def _einsum(n: Node, ins: list) -> list:
    eq = str(n.attrs["equation"]).replace(" ", "")
    return [np.asarray(np.einsum(eq, *ins, optimize=True)).astype(ins[0].dtype)]


@op("GatherElements")
def _gather_elements(n: Node, ins: list) -> list:
    x, idx, axis = gather_args(n, ins)
    return [np.take_along_axis(x, idx, axis=axis)]


@op("Size")
def _size(n: Node, ins: list) -> list:
    return [np.array(ins[0].size, dtype=np.int64)]


@op("DepthToSpace")
def _depth_to_space(n: Node, ins: list) -> list:
    x = ins[0]
    b = int(n.attrs["blocksize"])
    nb, c, h, w = x.shape
    if str(n.attrs.get("mode", "DCR")) == "DCR":
        y = x.reshape(nb, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(nb, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [y.reshape(nb, c // (b * b), h * b, w * b)]


@op("SpaceToDepth")
def _space_to_depth(n: Node, ins: list) -> list:
    x = ins[0]
    b = int(n.attrs["blocksize"])
    nb, c, h, w = x.shape
    y = x.reshape(nb, c, h // b, b, w // b, b).transpose(0, 3, 5, 1, 2, 4)
    return [y.reshape(nb, c * b * b, h // b, w // b)]


# --- transposed convolution ----------------------------------------------------


def _convt_pads(n: Node, spatial: tuple[int, ...], full: list[int]) -> tuple[list[int], list[int]]:
    """(begin, end) crops of the full transposed-conv output, per ONNX's rules."""
    nd = len(spatial)
    strides = ints(n.attrs.get("strides"), [1] * nd)
    auto = str(n.attrs.get("auto_pad", "NOTSET"))
    want = n.attrs.get("output_shape")
    if want is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        want = [spatial[i] * strides[i] for i in range(nd)]
    if want is None:
        p = ints(n.attrs.get("pads"), [0] * (2 * nd))
        return p[:nd], p[nd:]
    want = ints(want)[-nd:]
    total = [full[i] - want[i] for i in range(nd)]
    if auto == "SAME_UPPER":
        return [t // 2 for t in total], [t - t // 2 for t in total]
    return [t - t // 2 for t in total], [t // 2 for t in total]


@op("ConvTranspose")
def _conv_transpose(n: Node, ins: list) -> list:
    x, w, b = ins[0], ins[1], get(ins, 2)
    nd = x.ndim - 2
    kernel = list(w.shape[2:])
    strides = ints(n.attrs.get("strides"), [1] * nd)
    dil = ints(n.attrs.get("dilations"), [1] * nd)
    outpad = ints(n.attrs.get("output_padding"), [0] * nd)
    g = int(n.attrs.get("group", 1))
    nb, c = x.shape[:2]
    cg, mg = c // g, w.shape[1]
    spatial = x.shape[2:]
    full = [strides[i] * (spatial[i] - 1) + outpad[i] + (kernel[i] - 1) * dil[i] + 1
            for i in range(nd)]
    y = np.zeros((nb, g * mg, *full), dtype=np.float64)
    for gi in range(g):
        xg = x[:, gi * cg:(gi + 1) * cg].astype(np.float64)
        wg = w[gi * cg:(gi + 1) * cg].astype(np.float64)  # cg, mg, *k
        # one tensordot per kernel tap, scattered with the stride: no per-pixel loop
        for tap in itertools.product(*(range(k) for k in kernel)):
            contrib = np.tensordot(xg, wg[(slice(None), slice(None), *tap)], axes=([1], [0]))
            contrib = np.moveaxis(contrib, -1, 1)  # N, mg, *spatial
            sl = tuple(slice(t * d, t * d + (s_in - 1) * st + 1, st)
                       for t, d, s_in, st in zip(tap, dil, spatial, strides, strict=True))
            y[(slice(None), slice(gi * mg, (gi + 1) * mg), *sl)] += contrib
    pb, pe = _convt_pads(n, spatial, full)
    # a negative pad (output_shape larger than the full result) extends with zeros
    y = np.pad(y, [(0, 0), (0, 0)] + [(max(0, -b), max(0, -e)) for b, e in zip(pb, pe,
                                                                                strict=True)])
    crop = tuple(slice(max(0, pb[i]), y.shape[2 + i] - max(0, pe[i])) for i in range(nd))
    y = y[(slice(None), slice(None), *crop)]
    if b is not None:
        y = y + b.reshape((1, -1) + (1,) * nd)
    return [np.ascontiguousarray(y.astype(x.dtype))]


# --- resize ------------------------------------------------------------------


def _cubic_coeffs(r: Arr, a: float) -> Arr:
    """Keys' cubic convolution weights of taps floor(x) - 1 .. floor(x) + 2."""
    d = np.stack([r + 1, r, 1 - r, 2 - r], axis=-1)  # distances to the four taps
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, far)


def _nearest_index(x: Arr, mode: str) -> Arr:
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    tie = x == np.floor(x) + 0.5
    if mode == "round_prefer_ceil":
        return np.where(tie, np.ceil(x), np.round(x))
    return np.where(tie, np.floor(x), np.round(x))  # round_prefer_floor (the default)


def resize_source(n: Node, size_in: int, size_out: int, scale: float,
                  roi: tuple[float, float]) -> Arr:
    """Input coordinate of every output index along one axis (ONNX Resize's
    coordinate_transformation_mode), float64."""
    xr = np.arange(size_out, dtype=np.float64)
    mode = str(n.attrs.get("coordinate_transformation_mode", "half_pixel"))
    if mode == "asymmetric":
        return xr / scale
    if mode == "align_corners":
        return xr * 0.0 if size_out == 1 else xr * (size_in - 1) / (size_out - 1)
    if mode == "pytorch_half_pixel":
        return xr * 0.0 if size_out == 1 else (xr + 0.5) / scale - 0.5
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        if size_out == 1:
            return xr * 0.0 + 0.5 * (lo + hi) * (size_in - 1)
        return lo * (size_in - 1) + xr * (hi - lo) * (size_in - 1) / (size_out - 1)
    if mode == "half_pixel_symmetric":
        adj = size_out / (scale * size_in)
        return size_in / 2 * (1 - adj) + (xr + 0.5) / scale - 0.5
    if mode != "half_pixel":
        raise ValueError(f"Resize '{n.name}': unknown coordinate_transformation_mode "
                         f"'{mode}'")
    return (xr + 0.5) / scale - 0.5


def resize_taps(n: Node, size_in: int, size_out: int, scale: float,
                roi: tuple[float, float]) -> tuple[Arr, Arr, Arr]:
    """(indices [out, taps], weights [out, taps], outside [out]) of one axis:
    output i is sum_t weights[i, t] * x[indices[i, t]]; `outside` marks the
    outputs tf_crop_and_resize fills with extrapolation_value."""
    x = resize_source(n, size_in, size_out, scale, roi)
    mode = str(n.attrs.get("mode", "nearest"))
    if int(n.attrs.get("antialias", 0)) and mode != "nearest":
        return _antialias_taps(n, x, size_in, scale, mode)
    outside = np.zeros(size_out, bool)
    if str(n.attrs.get("coordinate_transformation_mode", "")) == "tf_crop_and_resize":
        outside = (x < 0) | (x > size_in - 1)
    if mode == "nearest":
        idx = _nearest_index(x, str(n.attrs.get("nearest_mode", "round_prefer_floor")))
        idx = np.clip(idx.astype(np.int64), 0, size_in - 1)[:, None]
        return idx, np.ones_like(idx, dtype=np.float64), outside
    base = np.floor(x)
    r = x - base
    if mode == "linear":
        idx = base[:, None].astype(np.int64) + np.arange(2)
        w = np.stack([1 - r, r], axis=-1)
    elif mode == "cubic":
        idx = base[:, None].astype(np.int64) + np.arange(-1, 3)
        w = _cubic_coeffs(r, float(n.attrs.get("cubic_coeff_a", -0.75)))
    else:
        raise ValueError(f"Resize '{n.name}': unknown mode '{mode}'")
    if int(n.attrs.get("exclude_outside", 0)):
        w = np.where((idx < 0) | (idx >= size_in), 0.0, w)
        w = w / w.sum(axis=1, keepdims=True)
    return np.clip(idx, 0, size_in - 1), w, outside


def _antialias_taps(n: Node, x: Arr, size_in: int, scale: float, mode: str
                    ) -> tuple[Arr, Arr, Arr]:
    """Resize-18's antialias (linear, cubic), as onnxruntime computes it:
    when shrinking, the filter is stretched by 1 / scale, so each output
    blends every input its support covers around the pixel centre; the
    weights are normalised to sum 1, and taps beyond the border count for
    the border element (or are dropped with exclude_outside)."""
    centre = (np.arange(x.size, dtype=np.float64) if scale == 1.0 else x) + 0.5
    half = 1.0 if mode == "linear" else 2.0
    support = half / scale if scale < 1.0 else half
    lo = np.floor(centre - support + 0.5).astype(np.int64)
    hi = np.floor(centre + support + 0.5).astype(np.int64)
    if int(n.attrs.get("exclude_outside", 0)):
        lo, hi = np.maximum(lo, 0), np.minimum(hi, size_in)
    taps = max(int((hi - lo).max(initial=1)), 1)
    idx = lo[:, None] + np.arange(taps)[None, :]
    d = np.abs((idx - centre[:, None] + 0.5) * min(scale, 1.0))
    if mode == "linear":
        w = np.maximum(1.0 - d, 0.0)
    else:
        a = float(n.attrs.get("cubic_coeff_a", -0.75))
        w = np.where(d < 1, ((a + 2) * d - (a + 3)) * d * d + 1,
                     np.where(d < 2, (((d - 5) * d + 8) * d - 4) * a, 0.0))
    w = np.where(idx < hi[:, None], w, 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0, w / np.where(total != 0, total, 1.0), w)
    outside = np.zeros(x.size, bool)
    if str(n.attrs.get("coordinate_transformation_mode", "")) == "tf_crop_and_resize":
        outside = (centre < 0) | (centre > size_in - 1)  # onnxruntime tests the centre
    return np.clip(idx, 0, size_in - 1), w, outside


def resize_plan(n: Node, shape: tuple[int, ...], roi: Arr | None, scales: Arr | None,
                sizes: Arr | None) -> tuple[list[int], list[float], list[tuple[float, float]]]:
    """Output shape, per-axis scale and per-axis roi of a Resize on `shape`
    (opset 13..19 rules, incl. `axes` and keep_aspect_ratio_policy)."""
    nd = len(shape)
    axes = [int(a) % nd for a in ints(n.attrs.get("axes"), list(range(nd)))]
    out, sc = list(shape), [1.0] * nd
    rois = [(0.0, 1.0)] * nd
    if roi is not None and roi.size == 2 * len(axes):
        r = roi.reshape(-1).astype(np.float64)
        for j, a in enumerate(axes):
            rois[a] = (float(r[j]), float(r[j + len(axes)]))
    if sizes is not None and sizes.size:
        want = [int(v) for v in sizes.reshape(-1)]
        policy = str(n.attrs.get("keep_aspect_ratio_policy", "stretch"))
        if policy != "stretch":
            ratios = [want[j] / shape[a] for j, a in enumerate(axes)]
            s = min(ratios) if policy == "not_larger" else max(ratios)
            want = [int(np.floor(s * shape[a] + 0.5)) for a in axes]
            ratios = [s] * len(axes)
        else:
            ratios = [want[j] / shape[a] for j, a in enumerate(axes)]
        for j, a in enumerate(axes):
            out[a], sc[a] = want[j], ratios[j]
    elif scales is not None and scales.size:
        for j, a in enumerate(axes):
            sc[a] = float(scales.reshape(-1)[j])
            out[a] = int(np.floor(shape[a] * sc[a]))
    else:
        raise ValueError(f"Resize '{n.name}' has neither scales nor sizes")
    if any(s <= 0 for s in sc):
        raise ValueError(f"Resize '{n.name}': scales must be positive, got {sc}")
    return out, sc, rois


@op("Resize")
def _resize(n: Node, ins: list) -> list:
    """Separable: one axis after the other, each a gather of its taps and a
    weighted sum (nearest: a plain gather, exact for every dtype)."""
    x = ins[0]
    out, sc, rois = resize_plan(n, x.shape, get(ins, 1), get(ins, 2), get(ins, 3))
    nearest = str(n.attrs.get("mode", "nearest")) == "nearest"
    y = x if nearest else x.astype(np.float64)
    outside = np.zeros(out, bool)
    for a in range(x.ndim):
        if out[a] == x.shape[a] and sc[a] == 1.0 and rois[a] == (0.0, 1.0):
            continue
        idx, w, off = resize_taps(n, x.shape[a], out[a], sc[a], rois[a])
        y = resize_axis(y, a, idx, w, off, nearest, outside)
    return [resize_finish(n, x, y, outside, nearest)]


def resize_axis(y: np.ndarray, a: int, idx: np.ndarray, w: np.ndarray, off: np.ndarray,
                nearest: bool, outside: np.ndarray) -> np.ndarray:
    """One axis of a separable resize: gather the taps `idx` along axis a and
    weigh them by `w` (nearest: the one tap); marks in `outside` the output
    positions `off` says fall outside the input."""
    g = np.take(y, idx, axis=a)  # the tap axis lands right after axis a
    if nearest:
        y = np.squeeze(g, axis=a + 1)
    else:
        wshape = [1] * g.ndim
        wshape[a], wshape[a + 1] = w.shape
        y = (g * w.reshape(wshape)).sum(axis=a + 1)
    if off.any():
        bshape = [1] * outside.ndim
        bshape[a] = outside.shape[a]
        outside |= off.reshape(bshape)
    return y


def resize_finish(n: Node, x: np.ndarray, y: np.ndarray, outside: np.ndarray,
                  nearest: bool) -> np.ndarray:
    """The extrapolation value outside the input, rounding for integers, x's dtype."""
    if outside.any():
        y = np.where(outside, float(n.attrs.get("extrapolation_value", 0.0)), y)
    if np.issubdtype(x.dtype, np.integer) and not nearest:
        y = np.round(y)
    return np.ascontiguousarray(y).astype(x.dtype)
