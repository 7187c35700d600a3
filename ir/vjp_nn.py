"""Gradient rules of the network ops: products, gathers, convolutions,
softmax and normalisation (pooling: vjp_pool).

How each adjoint is written (standard ONNX ops, so the kernel library and
onnxruntime both run it):
- MatMul / Einsum: Einsum of the output gradient with the other operand
  (a constant weight is read in place, never transposed into a copy, so
  a 41 GB model's weights are never materialised); Gemm: Gemm with the
  transpose flags swapped.
- Gather: a one-hot table (Equal against a Range) contracted with the
  gradient by Einsum: the scatter-add of an embedding as a matmul.
- Conv: the input gradient is ConvTranspose with the same weight; the
  weight gradient is a Conv whose *weight operand is an activation* (the
  output gradient), the roles of strides and dilations swapped — the
  `conv-wgrad` kernel kind runs it.
- pooling: see vjp_pool.
- LayerNormalization: recomputes its statistics (mean, 1/std) in the
  backward pass from its input.
"""

from __future__ import annotations

import string

import numpy as np

from .graph import Node
from .opsem_core import pads as conv_pads
from .types import TensorType
from .vjp_base import Emitter, attr_ints, unsupported, vjp_rule

# --- products -----------------------------------------------------------------


def _letters(n: int, skip: str = "") -> list[str]:
    return [c for c in string.ascii_letters if c not in skip][:n]


@vjp_rule("MatMul")
def _matmul(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    a, b = n.inputs[:2]
    sa, sb = e.shape(a), e.shape(b)
    g = gy[0]
    if len(sa) == 1 or len(sb) == 1:  # vector operands: as 1 x K / K x 1 matrices
        a2 = e.reshape(a, (1, sa[0])) if len(sa) == 1 else a
        b2 = e.reshape(b, (sb[0], 1)) if len(sb) == 1 else b
        full = tuple(np.broadcast_shapes(e.shape(a2)[:-2], e.shape(b2)[:-2])) + (
            e.shape(a2)[-2], e.shape(b2)[-1])
        ga, gb = _matmul_grads(e, a2, b2, e.reshape(g, full), want)
        return [e.reshape(ga, sa) if ga else None, e.reshape(gb, sb) if gb else None]
    return list(_matmul_grads(e, a, b, g, want))


def _matmul_grads(e: Emitter, a: str, b: str, g: str, want: list[bool]
                  ) -> tuple[str | None, str | None]:
    sa, sb = e.shape(a), e.shape(b)
    batch = tuple(np.broadcast_shapes(sa[:-2], sb[:-2]))
    bl = "".join(_letters(len(batch), "mkn"))
    ga = gb = None
    if len(sb) == 2:  # a shared weight matrix: contract the batch away
        ab = "".join(_letters(len(sa) - 2, "mkn"))
        if want[0]:
            ga = e.op("Einsum", [g, b], e.t(a), equation=f"{ab}mn,kn->{ab}mk")
        if want[1]:
            gb = e.op("Einsum", [a, g], e.t(b), equation=f"{ab}mk,{ab}mn->kn")
        return ga, gb
    # batched products (attention): operands stretched to the common batch
    a_full = e.expand(a, batch + sa[-2:])
    b_full = e.expand(b, batch + sb[-2:])
    if want[0]:
        t = TensorType(e.dtype(a), batch + sa[-2:])
        ga = e.unbroadcast(e.op("Einsum", [g, b_full], t, equation=f"{bl}mn,{bl}kn->{bl}mk"),
                           sa)
    if want[1]:
        t = TensorType(e.dtype(b), batch + sb[-2:])
        gb = e.unbroadcast(e.op("Einsum", [a_full, g], t, equation=f"{bl}mk,{bl}mn->{bl}kn"),
                           sb)
    return ga, gb


@vjp_rule("Gemm")
def _gemm(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    a, b = n.inputs[:2]
    c = n.inputs[2] if len(n.inputs) > 2 else ""
    ta, tb = int(n.attrs.get("transA", 0)), int(n.attrs.get("transB", 0))
    alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
    g = gy[0]
    out: list[str | None] = [None, None, None][: len(n.inputs)]
    if want[0]:
        if ta:  # dA = B' gY^T
            out[0] = e.op("Gemm", [b, g], e.t(a), transA=tb, transB=1, alpha=alpha)
        else:  # dA = gY B'^T
            out[0] = e.op("Gemm", [g, b], e.t(a), transB=1 - tb, alpha=alpha)
    if want[1]:
        if tb:  # dB = gY^T A'
            out[1] = e.op("Gemm", [g, a], e.t(b), transA=1, transB=ta, alpha=alpha)
        else:  # dB = A'^T gY
            out[1] = e.op("Gemm", [a, g], e.t(b), transA=1 - ta, alpha=alpha)
    if c and len(want) > 2 and want[2]:
        out[2] = e.unbroadcast(e.scale(g, beta), e.shape(c))
    return out


@vjp_rule("Einsum")
def _einsum(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    eq = str(n.attrs.get("equation", "")).replace(" ", "")
    ins = [i for i in n.inputs if i]
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if not arrow or "." in eq or len(terms) != len(ins) or len(ins) > 2:
        raise unsupported(n, f"for '{eq}' (one for one or two operands, an explicit "
                             "output and no ellipsis)")
    sizes: dict[str, int] = {}
    for t, v in zip(terms, ins, strict=True):
        for ch, d in zip(t, e.shape(v), strict=True):
            if sizes.setdefault(ch, d) != d:
                raise unsupported(n, f"for '{eq}', which broadcasts index '{ch}'")
    grads: list[str | None] = []
    for i, (t, v) in enumerate(zip(terms, ins, strict=True)):
        if not want[i]:
            grads.append(None)
            continue
        others = [(terms[j], ins[j]) for j in range(len(ins)) if j != i]
        have = set(out).union(*[set(o) for o, _ in others])
        if len(set(t)) != len(t) or not set(t) <= have:
            raise unsupported(n, f"for operand {i} of '{eq}' (repeated indices, or "
                                 "indices summed over one operand only)")
        eq_i = ",".join([out] + [o for o, _ in others]) + "->" + t
        grads.append(e.op("Einsum", [gy[0]] + [v2 for _, v2 in others], e.t(v), equation=eq_i))
    return grads


@vjp_rule("Gather")
def _gather(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None, None]
    data, idx = n.inputs[:2]
    sd, si = e.shape(data), e.shape(idx)
    axis = int(n.attrs.get("axis", 0)) % len(sd)
    depth = sd[axis]
    dt = e.dtype(data)
    ix = e.cast(idx, "i64")
    c = e.m.values[idx].const
    if c is None or (np.asarray(c.array()) < 0).any():  # wrap negative indices
        neg = e.binary("Less", ix, e.scalar(0, "i64"))
        ix = e.where(neg, e.add(ix, e.scalar(depth, "i64")), ix)
    ix = e.reshape(ix, si + (1,))
    hot = e.binary("Equal", ix, e.array(np.arange(depth), "i64"))
    onehot = e.where(hot, e.scalar(1.0, dt), e.scalar(0.0, dt))
    pre, post = sd[:axis], sd[axis + 1:]
    ls = _letters(len(pre) + len(si) + len(post) + 1)
    p = "".join(ls[:len(pre)])
    i = "".join(ls[len(pre):len(pre) + len(si)])
    q = "".join(ls[len(pre) + len(si):-1])
    d = ls[-1]
    g = e.op("Einsum", [onehot, gy[0]], e.t(data), equation=f"{i}{d},{p}{i}{q}->{p}{d}{q}")
    return [g, None]


# --- convolution ----------------------------------------------------------------


def _conv_geometry(e: Emitter, n: Node) -> tuple[list[int], list[int], list[int], list[int],
                                                 list[int], list[int]]:
    x, w = n.inputs[:2]
    sx, sw = e.shape(x), e.shape(w)
    nd = len(sx) - 2
    kernel = list(sw[2:])
    st = attr_ints(n, "strides", [1] * nd)
    dl = attr_ints(n, "dilations", [1] * nd)
    pb, pe = conv_pads(n, sx[2:], kernel, st, dl)
    return kernel, st, dl, pb, pe, list(e.shape(n.outputs[0])[2:])


@vjp_rule("Conv")
def _conv(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    x, w = n.inputs[:2]
    b = n.inputs[2] if len(n.inputs) > 2 else ""
    sx, sw = e.shape(x), e.shape(w)
    nd = len(sx) - 2
    g = gy[0]
    grp = int(n.attrs.get("group", 1))
    kernel, st, dl, pb, pe, out = _conv_geometry(e, n)
    res: list[str | None] = [None] * len(n.inputs)
    if want[0]:  # the adjoint of a convolution: ConvTranspose with the same weight
        full = [st[i] * (out[i] - 1) + dl[i] * (kernel[i] - 1) + 1 - pb[i] - pe[i]
                for i in range(nd)]
        extra = [sx[2 + i] - full[i] for i in range(nd)]
        if any(x_ < 0 or x_ >= max(st[i], dl[i]) for i, x_ in enumerate(extra)):
            raise unsupported(n, f"when its padding leaves {extra} rows unread")
        res[0] = e.op("ConvTranspose", [g, w], e.t(x), strides=st, dilations=dl, group=grp,
                      pads=pb + pe, output_padding=extra, kernel_shape=kernel)
    if want[1]:
        res[1] = _conv_weight_grad(e, n, x, g, sx, sw, grp, kernel, st, dl, pb, pe, out)
    if b and len(want) > 2 and want[2]:
        res[2] = e.reduce_sum(g, [0] + list(range(2, 2 + nd)), keepdims=False)
    return res


def _conv_weight_grad(e: Emitter, n: Node, x: str, g: str, sx: tuple[int, ...],
                      sw: tuple[int, ...], grp: int, kernel: list[int], st: list[int],
                      dl: list[int], pb: list[int], pe: list[int], out: list[int]) -> str:
    """dW[m, c, k] = sum over samples and output pixels of gY[n, m, o] x[n, c, o*st + k*dl]:
    a convolution over the input whose weight is the output gradient, with
    the samples as channels (grouped like the layer) and the input
    channels of a group as the batch; strides and dilations swap roles."""
    nd = len(sx) - 2
    nb, c = sx[:2]
    m = sw[0]
    cg = c // grp
    sp = list(sx[2:])
    xv = e.reshape(x, [nb, grp, cg] + sp)
    xv = e.transpose(xv, [2, 1, 0] + list(range(3, 3 + nd)))
    xv = e.reshape(xv, [cg, grp * nb] + sp)
    # trim the end padding so the result has exactly the kernel's extent
    ends = []
    for i in range(nd):
        need = pb[i] + sp[i] + pe[i] - (st[i] * (out[i] - 1) + dl[i] * (kernel[i] - 1) + 1)
        ends.append(pe[i] - need)
    if any(p < 0 for p in ends):
        keep = [sp[i] + min(0, ends[i]) for i in range(nd)]
        xv = e.op("Slice", [xv, e.ints([0] * nd), e.ints(keep), e.ints(list(range(2, 2 + nd)))],
                  TensorType(e.dtype(x), (cg, grp * nb, *keep)))
        ends = [max(0, p) for p in ends]
    gw = e.transpose(g, [1, 0] + list(range(2, 2 + nd)))  # [M, N, *out]
    t = TensorType(e.dtype(x), (cg, m, *kernel))
    dw = e.op("Conv", [xv, gw], t, strides=dl, dilations=st, group=grp, pads=pb + ends,
              kernel_shape=out)
    return e.transpose(dw, [1, 0] + list(range(2, 2 + nd)))


# --- softmax and normalisation --------------------------------------------------


@vjp_rule("Softmax")
def _softmax(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    y = n.outputs[0]
    axis = int(n.attrs.get("axis", -1))
    s = e.reduce_sum(e.mul(gy[0], y), [axis], keepdims=True)
    return [e.mul(y, e.sub(gy[0], s)) if want[0] else None]


@vjp_rule("LogSoftmax")
def _log_softmax(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    y = n.outputs[0]
    axis = int(n.attrs.get("axis", -1))
    s = e.reduce_sum(gy[0], [axis], keepdims=True)
    return [e.sub(gy[0], e.mul(e.unary("Exp", y), s)) if want[0] else None]


@vjp_rule("LayerNormalization")
def _layer_norm(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if any(g is not None for g in gy[1:]):
        raise unsupported(n, "through its Mean/InvStdDev outputs")
    x, scale = n.inputs[:2]
    bias = n.inputs[2] if len(n.inputs) > 2 else ""
    sx = e.shape(x)
    axis = int(n.attrs.get("axis", -1)) % len(sx)
    axes = list(range(axis, len(sx)))
    eps = float(n.attrs.get("epsilon", 1e-5))
    dt = e.dtype(x)
    g = gy[0]
    mean = e.reduce_mean(x, axes)
    xc = e.sub(x, mean)
    inv = e.unary("Reciprocal", e.unary("Sqrt", e.add(e.reduce_mean(e.mul(xc, xc), axes),
                                                      e.scalar(eps, dt))))
    xhat = e.mul(xc, inv)
    res: list[str | None] = [None] * len(n.inputs)
    if want[0]:
        dxh = e.mul(g, scale)
        inner = e.sub(e.sub(dxh, e.reduce_mean(dxh, axes)),
                      e.mul(xhat, e.reduce_mean(e.mul(dxh, xhat), axes)))
        res[0] = e.mul(inv, inner)
    if want[1]:
        res[1] = e.unbroadcast(e.mul(g, xhat), e.shape(scale))
    if bias and want[2]:
        res[2] = e.unbroadcast(g, e.shape(bias))
    return res


def batchnorm_training_form(e: Emitter, n: Node) -> list[Node]:
    """The forward of BatchNormalization in a training step: the same op in
    training mode (ONNX training_mode = 1), normalising with the batch's
    statistics over (N, spatial) and the population variance, as PyTorch's
    train mode does; one norm kernel. ONNX wants its running-statistics
    outputs too; the step does not use them (they are not trained)."""
    x, _, _, mean, var = n.inputs[:5]
    outs = [n.outputs[0]]
    for v in (mean, var):
        outs.append(e._new(f"{n.name}.running", e.t(v)))
    return [Node(n.name, n.op, list(n.inputs), outs, {**n.attrs, "training_mode": 1})]


@vjp_rule("BatchNormalization")
def _batchnorm(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    """Training mode (the inference form is folded into its Conv): with
    xhat = (x - mean) / std over (N, spatial) and M elements per channel,
    dbias = sum gY, dscale = sum gY xhat,
    dx = scale / std (gY - (dbias + xhat dscale) / M)."""
    if not n.attrs.get("training_mode", 0):
        raise unsupported(n, "in inference mode (a training step runs it in training mode)")
    if any(g is not None for g in gy[1:]):
        raise unsupported(n, "through its running-statistics outputs")
    x, scale = n.inputs[:2]
    sx = e.shape(x)
    dt = e.dtype(x)
    axes = [0] + list(range(2, len(sx)))
    m = int(np.prod([sx[a] for a in axes]))
    per = [1, sx[1]] + [1] * (len(sx) - 2)
    g = gy[0]
    mean = e.reduce_mean(x, axes)
    xc = e.sub(x, mean)
    inv = e.unary("Reciprocal", e.unary("Sqrt", e.add(e.reduce_mean(e.mul(xc, xc), axes),
                                                      e.scalar(float(n.attrs.get(
                                                          "epsilon", 1e-5)), dt))))
    xhat = e.mul(xc, inv)
    dbias = e.reduce_sum(g, axes, keepdims=True)
    dscale = e.reduce_sum(e.mul(g, xhat), axes, keepdims=True)
    res: list[str | None] = [None] * len(n.inputs)
    if want[0]:
        k = e.mul(inv, e.reshape(scale, per))
        inner = e.sub(g, e.scale(e.add(dbias, e.mul(xhat, dscale)), 1.0 / m))
        res[0] = e.mul(k, inner)
    if want[1]:
        res[1] = e.reshape(dscale, e.shape(scale))
    if want[2]:
        res[2] = e.reshape(dbias, e.shape(n.inputs[2]))
    return res
