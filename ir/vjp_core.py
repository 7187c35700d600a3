"""Gradient rules of the element-wise, shape and reduction ops.

Each rule writes the adjoint of its op with standard ONNX ops (see
vjp_base). Broadcast operands get `unbroadcast` (a ReduceSum over the
stretched axes); comparisons and index outputs carry no gradient.
Conventions follow PyTorch's autograd where they differ from a pure
derivative: Relu' = 0 at 0, Max/Min split a tie evenly, Clip passes the
gradient inside the closed interval.
"""

from __future__ import annotations

import math

import numpy as np

from .graph import Node
from .vjp_base import Emitter, attr_ints, unsupported, vjp_rule

# --- element-wise, two operands ---------------------------------------------


@vjp_rule("Add", "Sub")
def _add(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    g = gy[0]
    a, b = n.inputs[:2]
    ga = e.unbroadcast(g, e.shape(a)) if want[0] else None
    gb = None
    if want[1]:
        gb = e.unbroadcast(g if n.op == "Add" else e.unary("Neg", g), e.shape(b))
    return [ga, gb]


@vjp_rule("Mul")
def _mul(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    g = gy[0]
    a, b = n.inputs[:2]
    return [e.unbroadcast(e.mul(g, b), e.shape(a)) if want[0] else None,
            e.unbroadcast(e.mul(g, a), e.shape(b)) if want[1] else None]


@vjp_rule("Div")
def _div(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    g = gy[0]
    a, b = n.inputs[:2]
    ga = e.unbroadcast(e.div(g, b), e.shape(a)) if want[0] else None
    gb = None
    if want[1]:  # d(a/b)/db = -y / b
        gb = e.unbroadcast(e.unary("Neg", e.div(e.mul(g, n.outputs[0]), b)), e.shape(b))
    return [ga, gb]


@vjp_rule("Pow")
def _pow(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    g = gy[0]
    a, b = n.inputs[:2]
    dt = e.dtype(a)
    ga = gb = None
    if want[0]:  # b * a^(b-1)
        bf = e.cast(b, dt)
        pw = e.binary("Pow", a, e.sub(bf, e.scalar(1.0, dt)))
        ga = e.unbroadcast(e.mul(g, e.mul(bf, pw)), e.shape(a))
    if want[1]:  # y * log(a)
        gb = e.unbroadcast(e.mul(g, e.mul(n.outputs[0], e.unary("Log", a))), e.shape(b))
    return [ga, gb]


@vjp_rule("Max", "Min")
def _maxmin(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    ins = [i for i in n.inputs if i]
    if len(ins) != 2:
        raise unsupported(n, f"for {len(ins)} inputs (two have one)")
    g = gy[0]
    a, b = ins
    dt = e.dtype(g)
    win = e.binary("Greater" if n.op == "Max" else "Less", a, b)
    tie = e.binary("Equal", a, b)
    half = e.scale(g, 0.5)
    ga = e.where(win, g, e.mask(tie, half))
    gb = e.where(win, e.scalar(0.0, dt), e.where(tie, half, g))
    return [e.unbroadcast(ga, e.shape(a)) if want[0] else None,
            e.unbroadcast(gb, e.shape(b)) if want[1] else None]


@vjp_rule("Sum", "Mean")
def _sum(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    g = gy[0]
    if n.op == "Mean":
        g = e.scale(g, 1.0 / len([i for i in n.inputs if i]))
    return [e.unbroadcast(g, e.shape(i)) if w and i else None for i, w in zip(n.inputs, want,
                                                                             strict=True)]


@vjp_rule("Where")
def _where(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    c, a, b = n.inputs[:3]
    g = gy[0]
    zero = e.scalar(0.0, e.dtype(g))
    return [None,
            e.unbroadcast(e.where(c, g, zero), e.shape(a)) if want[1] else None,
            e.unbroadcast(e.where(c, zero, g), e.shape(b)) if want[2] else None]


@vjp_rule("PRelu")
def _prelu(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    x, s = n.inputs[:2]
    g = gy[0]
    neg = e.binary("Less", x, e.scalar(0.0, e.dtype(x)))
    gx = e.where(neg, e.mul(g, s), g) if want[0] else None
    gs = e.unbroadcast(e.mask(neg, e.mul(g, x)), e.shape(s)) if want[1] else None
    return [gx, gs]


# --- element-wise, one operand ----------------------------------------------


def _one(e: Emitter, n: Node, g: str) -> str:
    """d op(x) / dx times g, for the one-operand element-wise ops."""
    x, y = n.inputs[0], n.outputs[0]
    dt = e.dtype(x)
    zero, one = e.scalar(0.0, dt), e.scalar(1.0, dt)
    op = n.op
    if op == "Neg":
        return e.unary("Neg", g)
    if op == "Relu":
        return e.mask(e.binary("Greater", y, zero), g)
    if op == "LeakyRelu":
        alpha = float(n.attrs.get("alpha", 0.01))
        return e.where(e.binary("Greater", x, zero), g, e.scale(g, alpha))
    if op == "Sigmoid":
        return e.mul(g, e.mul(y, e.sub(one, y)))
    if op == "Tanh":
        return e.mul(g, e.sub(one, e.mul(y, y)))
    if op == "Exp":
        return e.mul(g, y)
    if op == "Log":
        return e.div(g, x)
    if op == "Sqrt":
        return e.div(e.scale(g, 0.5), y)
    if op == "Reciprocal":
        return e.unary("Neg", e.mul(g, e.mul(y, y)))
    if op == "Abs":
        return e.mul(g, e.unary("Sign", x))
    if op == "Erf":
        gauss = e.unary("Exp", e.unary("Neg", e.mul(x, x)))
        return e.mul(g, e.scale(gauss, 2.0 / math.sqrt(math.pi)))
    if op == "Softplus":
        return e.mul(g, e.unary("Sigmoid", x))
    if op == "Softsign":
        d = e.add(one, e.unary("Abs", x))
        return e.div(g, e.mul(d, d))
    if op in ("Elu", "Selu"):
        alpha = float(n.attrs.get("alpha", 1.0 if op == "Elu" else 1.67326319217681884765625))
        gamma = float(n.attrs.get("gamma", 1.05070102214813232421875)) if op == "Selu" else 1.0
        neg = e.scale(e.unary("Exp", x), alpha * gamma)
        return e.mul(g, e.where(e.binary("Greater", x, zero), e.scalar(gamma, dt), neg))
    if op == "HardSigmoid":
        lin = e.binary("And", e.binary("Greater", y, zero), e.binary("Less", y, one))
        return e.mask(lin, e.scale(g, float(n.attrs.get("alpha", 0.2))))
    if op == "HardSwish":  # x/3 + 1/2 inside (-3, 3), 0 below, 1 above
        inner = e.add(e.scale(x, 1.0 / 3.0), e.scalar(0.5, dt))
        d = e.where(e.binary("Less", x, e.scalar(-3.0, dt)), zero,
                    e.where(e.binary("Greater", x, e.scalar(3.0, dt)), one, inner))
        return e.mul(g, d)
    if op in ("Sin", "Cos"):
        d = e.unary("Cos", x) if op == "Sin" else e.unary("Neg", e.unary("Sin", x))
        return e.mul(g, d)
    raise unsupported(n)


@vjp_rule("Neg", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Reciprocal",
          "Abs", "Erf", "Softplus", "Softsign", "Elu", "Selu", "HardSigmoid", "HardSwish", "Sin",
          "Cos")
def _unary(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    return [_one(e, n, gy[0]) if want[0] else None]


@vjp_rule("Clip")
def _clip(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    x = n.inputs[0]
    g = gy[0]
    keep = None
    for idx, op in ((1, "GreaterOrEqual"), (2, "LessOrEqual")):
        if len(n.inputs) > idx and n.inputs[idx]:
            c = e.binary(op, x, n.inputs[idx])
            keep = c if keep is None else e.binary("And", keep, c)
    if any(want[1:]):
        raise unsupported(n, "for its bounds")
    return [(g if keep is None else e.mask(keep, g)) if want[0] else None] + [None] * (
        len(n.inputs) - 1)


@vjp_rule("Identity", "Dropout")
def _identity(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    return [gy[0] if want[0] else None] + [None] * (len(n.inputs) - 1)


@vjp_rule("Cast")
def _cast(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    return [e.cast(gy[0], e.dtype(n.inputs[0])) if want[0] else None]


# --- shape and data movement ------------------------------------------------


@vjp_rule("Reshape", "Flatten", "Squeeze", "Unsqueeze")
def _reshape(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    return [e.reshape(gy[0], e.shape(n.inputs[0])) if want[0] else None] + [None] * (
        len(n.inputs) - 1)


@vjp_rule("Transpose")
def _transpose(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    rank = len(e.shape(n.inputs[0]))
    perm = attr_ints(n, "perm", list(reversed(range(rank))))
    return [e.transpose(gy[0], list(np.argsort(perm))) if want[0] else None]


@vjp_rule("Expand")
def _expand(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    return [e.unbroadcast(gy[0], e.shape(n.inputs[0])) if want[0] else None, None]


@vjp_rule("Tile")
def _tile(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None, None]
    shape = e.shape(n.inputs[0])
    reps = [int(r) for r in e.m.values[n.inputs[1]].const.array()]  # type: ignore[union-attr]
    split = [d for pair in zip(reps, shape, strict=True) for d in pair]
    g = e.reshape(gy[0], split)
    g = e.reduce_sum(g, list(range(0, 2 * len(shape), 2)), keepdims=True)
    return [e.reshape(g, shape), None]


@vjp_rule("Concat")
def _concat(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    ins = [i for i in n.inputs if i]
    axis = int(n.attrs["axis"]) % len(e.shape(ins[0]))
    sizes = [e.shape(i)[axis] for i in ins]
    types = [e.t(i) for i in ins]
    parts = iter(e.node("Split", [gy[0], e.ints(sizes)], types, axis=axis) if len(ins) > 1
                 else [gy[0]])
    grads = [next(parts) if i else None for i in n.inputs]
    return [g if w else None for g, w in zip(grads, want, strict=True)]


@vjp_rule("Split")
def _split(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None] * len(n.inputs)
    x = n.inputs[0]
    axis = int(n.attrs.get("axis", 0)) % len(e.shape(x))
    parts = [g if g is not None else e.zeros(e.shape(o), e.dtype(x))
             for g, o in zip(gy, n.outputs, strict=True)]
    g = parts[0] if len(parts) == 1 else e.op("Concat", parts, e.t(x), axis=axis)
    return [g] + [None] * (len(n.inputs) - 1)


def _const_ints(e: Emitter, n: Node, idx: int) -> list[int] | None:
    if len(n.inputs) <= idx or not n.inputs[idx]:
        return None
    c = e.m.values[n.inputs[idx]].const
    if c is None:
        raise unsupported(n, f"when input {idx} is not a constant")
    return [int(v) for v in np.asarray(c.array()).reshape(-1)]


@vjp_rule("Slice")
def _slice(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None] * len(n.inputs)
    shape = e.shape(n.inputs[0])
    starts, ends = _const_ints(e, n, 1), _const_ints(e, n, 2)
    axes = _const_ints(e, n, 3) or list(range(len(starts or [])))
    steps = _const_ints(e, n, 4) or [1] * len(axes)
    before, after = [0] * len(shape), [0] * len(shape)
    for a, s, t, st in zip(axes, starts or [], ends or [], steps, strict=True):
        a %= len(shape)
        if st != 1:
            raise unsupported(n, f"for step {st} (step 1 has one)")
        lo, hi, _ = slice(s, t).indices(shape[a])
        before[a], after[a] = lo, shape[a] - max(lo, hi)
    g = e.op("Pad", [gy[0], e.ints(before + after)], e.t(n.inputs[0]))
    return [g] + [None] * (len(n.inputs) - 1)


@vjp_rule("Pad")
def _pad(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None] * len(n.inputs)
    if str(n.attrs.get("mode", "constant")) != "constant":
        raise unsupported(n, f"for mode '{n.attrs.get('mode')}' (constant has one)")
    shape = e.shape(n.inputs[0])
    pads = _const_ints(e, n, 1) or []
    axes = _const_ints(e, n, 3) or list(range(len(shape)))
    starts, ends, ax = [], [], []
    for j, a in enumerate(axes):
        a %= len(shape)
        starts.append(pads[j])
        ends.append(pads[j] + shape[a])
        ax.append(a)
    g = e.op("Slice", [gy[0], e.ints(starts), e.ints(ends), e.ints(ax)], e.t(n.inputs[0]))
    return [g] + [None] * (len(n.inputs) - 1)


# --- reductions ---------------------------------------------------------------


def _reduce_axes(e: Emitter, n: Node) -> list[int]:
    x = n.inputs[0]
    rank = len(e.shape(x))
    axes = _const_ints(e, n, 1)
    if axes is None and "axes" in n.attrs:
        axes = attr_ints(n, "axes", [])
    if not axes:
        return list(range(rank)) if not n.attrs.get("noop_with_empty_axes", 0) else []
    return sorted(int(a) % rank for a in axes)


@vjp_rule("ReduceSum", "ReduceMean", "ReduceSumSquare")
def _reduce(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None] * len(n.inputs)
    x = n.inputs[0]
    shape = e.shape(x)
    axes = _reduce_axes(e, n)
    kept = tuple(1 if i in axes else d for i, d in enumerate(shape))
    g = e.expand(e.reshape(gy[0], kept), shape)
    if n.op == "ReduceMean":
        g = e.scale(g, 1.0 / max(1, int(np.prod([shape[a] for a in axes]))))
    elif n.op == "ReduceSumSquare":
        g = e.mul(e.scale(g, 2.0), x)
    return [g] + [None] * (len(n.inputs) - 1)


@vjp_rule("CumSum")
def _cumsum(e: Emitter, n: Node, gy: list, want: list[bool]) -> list:
    if not want[0]:
        return [None, None]
    rev = 1 - int(n.attrs.get("reverse", 0))
    g = e.op("CumSum", [gy[0], n.inputs[1]], e.t(gy[0]), reverse=rev,
             exclusive=int(n.attrs.get("exclusive", 0)))
    return [g, None]
