"""The VJP registry and the `Emitter` every gradient rule writes graph ops with.

Why an emitter: a vector-Jacobian product (VJP) rule turns the gradient of
an op's outputs into gradients of its inputs by *adding graph-level ops*
(standard ONNX ops, so the derived training step can be exported and run
by onnxruntime, and compiled like any graph). The emitter gives rules a
small vocabulary — typed ops, scalar and shape constants, broadcasting
reductions — and keeps every value statically typed, since sizing and
placement need shapes. Rules never evaluate tensors: a rule for a 41 GB
model only writes ops.

Rules register into `VJPS` (op type -> rule), as op semantics register into
opsem_base; `wsec.ir.vjp` is the entry point.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import PassError
from .graph import Module, Node
from .types import DTYPES, Dense, Splat, TensorType


class GradError(PassError):
    """No gradient can be derived (an op without a rule, or a form a rule
    does not cover); the message names the op and the node."""


class Emitter:
    """Appends typed graph ops and constants to a module for one rule call.

    `nodes` collects the ops in emission order (a valid topological order);
    names are made unique with one counter per pass (`names`), so emitting
    thousands of ops stays linear."""

    def __init__(self, module: Module, names: Namer, tag: str) -> None:
        self.m = module
        self.names = names
        self.tag = tag
        self.nodes: list[Node] = []

    # --- values -----------------------------------------------------------
    def t(self, v: str) -> TensorType:
        return self.m.values[v].type

    def shape(self, v: str) -> tuple[int, ...]:
        return self.m.values[v].type.shape

    def dtype(self, v: str) -> str:
        return self.m.values[v].type.dtype

    def is_const(self, v: str) -> bool:
        return bool(v) and self.m.values[v].const is not None

    def _new(self, hint: str, t: TensorType, const: Any = None) -> str:
        name = self.names.value(hint)
        self.m.add_value(name, t, const)
        return name

    def node(self, op: str, inputs: Sequence[str], out_types: Sequence[TensorType],
             **attrs: Any) -> list[str]:
        """Add op `op` reading `inputs` ("" = omitted) with outputs of these types."""
        outs = [self._new(f"{self.tag}.{op.lower()}", t) for t in out_types]
        self.nodes.append(Node(self.names.node(self.tag), op, list(inputs), outs, dict(attrs)))
        return outs

    def op(self, op: str, inputs: Sequence[str], t: TensorType, **attrs: Any) -> str:
        return self.node(op, inputs, [t], **attrs)[0]

    # --- constants --------------------------------------------------------
    def scalar(self, value: float | int | bool, dtype: str) -> str:
        """A rank-0 constant (cached per pass: one value name per scalar)."""
        key = ("s", dtype, repr(value))
        if key not in self.names.consts:
            t = TensorType(dtype, ())
            v = np.asarray(value).astype(DTYPES[dtype]).item()
            self.names.consts[key] = self._new("c", t, Splat(t, v))
        return self.names.consts[key]

    def ints(self, vals: Sequence[int]) -> str:
        """A 1-D int64 constant (shapes, axes, pads, starts)."""
        key = ("i", tuple(int(v) for v in vals))
        if key not in self.names.consts:
            t = TensorType("i64", (len(vals),))
            self.names.consts[key] = self._new("c", t, Dense(t, np.asarray(vals, np.int64)))
        return self.names.consts[key]

    def array(self, arr: np.ndarray, dtype: str) -> str:
        """A small dense constant (pool taps, one-hot tables); not cached."""
        a = np.asarray(arr).astype(DTYPES[dtype])
        t = TensorType(dtype, a.shape)
        first = a.reshape(-1)[:1]
        const = Splat(t, first.item()) if a.size and np.all(a == first) else Dense(t, a)
        return self._new("c", t, const)

    def zeros(self, shape: Sequence[int], dtype: str) -> str:
        t = TensorType(dtype, tuple(shape))
        return self._new("zeros", t, Splat(t, np.zeros((), DTYPES[dtype]).item()))

    # --- common ops -------------------------------------------------------
    def binary(self, op: str, a: str, b: str) -> str:
        shape = tuple(np.broadcast_shapes(self.shape(a), self.shape(b)))
        dt = "bool" if op in ("Equal", "Greater", "Less", "And", "Or", "GreaterOrEqual",
                              "LessOrEqual") else self.dtype(a)
        return self.op(op, [a, b], TensorType(dt, shape))

    def add(self, a: str, b: str) -> str:
        return self.binary("Add", a, b)

    def sub(self, a: str, b: str) -> str:
        return self.binary("Sub", a, b)

    def mul(self, a: str, b: str) -> str:
        return self.binary("Mul", a, b)

    def div(self, a: str, b: str) -> str:
        return self.binary("Div", a, b)

    def scale(self, a: str, k: float) -> str:
        return a if k == 1.0 else self.mul(a, self.scalar(k, self.dtype(a)))

    def unary(self, op: str, a: str) -> str:
        return self.op(op, [a], self.t(a))

    def where(self, cond: str, a: str, b: str) -> str:
        shape = tuple(np.broadcast_shapes(self.shape(cond), self.shape(a), self.shape(b)))
        return self.op("Where", [cond, a, b], TensorType(self.dtype(a), shape))

    def mask(self, cond: str, g: str) -> str:
        """`g` where `cond`, else 0."""
        return self.where(cond, g, self.scalar(0.0, self.dtype(g)))

    def reshape(self, x: str, shape: Sequence[int]) -> str:
        shape = tuple(int(d) for d in shape)
        if self.shape(x) == shape:
            return x
        return self.op("Reshape", [x, self.ints(shape)], TensorType(self.dtype(x), shape))

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        perm = [int(p) for p in perm]
        if perm == list(range(len(perm))):
            return x
        shape = tuple(self.shape(x)[p] for p in perm)
        return self.op("Transpose", [x], TensorType(self.dtype(x), shape), perm=perm)

    def reduce_sum(self, x: str, axes: Sequence[int], keepdims: bool = True) -> str:
        axes = sorted({int(a) % max(1, len(self.shape(x))) for a in axes})
        if not axes:
            return x
        shape = self.shape(x)
        out = tuple(1 if i in axes else d for i, d in enumerate(shape)) if keepdims else \
            tuple(d for i, d in enumerate(shape) if i not in axes)
        return self.op("ReduceSum", [x, self.ints(axes)], TensorType(self.dtype(x), out),
                       keepdims=int(keepdims))

    def reduce_mean(self, x: str, axes: Sequence[int]) -> str:
        """ReduceMean with keepdims (opset 17: axes is an attribute)."""
        axes = sorted({int(a) % len(self.shape(x)) for a in axes})
        out = tuple(1 if i in axes else d for i, d in enumerate(self.shape(x)))
        return self.op("ReduceMean", [x], TensorType(self.dtype(x), out), axes=axes,
                       keepdims=1)

    def expand(self, x: str, shape: Sequence[int]) -> str:
        shape = tuple(int(d) for d in shape)
        if self.shape(x) == shape:
            return x
        return self.op("Expand", [x, self.ints(shape)], TensorType(self.dtype(x), shape))

    def unbroadcast(self, g: str, shape: Sequence[int]) -> str:
        """Sum `g` over the axes numpy broadcasting added or stretched to make
        it from an operand of `shape` (the adjoint of broadcasting)."""
        shape = tuple(int(d) for d in shape)
        gs = self.shape(g)
        if gs == shape:
            return g
        lead = len(gs) - len(shape)
        axes = list(range(lead)) + [lead + i for i, d in enumerate(shape)
                                    if d == 1 and gs[lead + i] != 1]
        return self.reshape(self.reduce_sum(g, axes, keepdims=True), shape)

    def cast(self, x: str, dtype: str) -> str:
        from .ops import IR_TO_ONNX_DTYPE

        if self.dtype(x) == dtype:
            return x
        return self.op("Cast", [x], TensorType(dtype, self.shape(x)), to=IR_TO_ONNX_DTYPE[dtype])


class Namer:
    """Unique value and node names for one autodiff run, and its constant cache."""

    def __init__(self, module: Module) -> None:
        self.m = module
        self.count = 0
        self.node_names = {n.name for n in module.nodes}
        self.consts: dict[tuple[Any, ...], str] = {}

    def value(self, hint: str) -> str:
        while True:
            self.count += 1
            name = f"{hint}#{self.count}"
            if name not in self.m.values:
                return name

    def node(self, tag: str) -> str:
        while True:
            self.count += 1
            name = f"{tag}#{self.count}"
            if name not in self.node_names:
                self.node_names.add(name)
                return name


# A rule: (emitter, forward node, gradient of each output or None, whether
# each input needs a gradient) -> gradient of each input (None: none needed)
Rule = Callable[[Emitter, Node, list["str | None"], list[bool]], list["str | None"]]
VJPS: dict[str, Rule] = {}


def vjp_rule(*ops: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the gradient rule of `ops`."""
    def reg(fn: Rule) -> Rule:
        for o in ops:
            VJPS[o] = fn
        return fn
    return reg


def unsupported(n: Node, detail: str = "") -> GradError:
    """The error for an op on the way to the loss that cannot be differentiated."""
    more = f" {detail}" if detail else ""
    return GradError(f"op '{n.op}' (node '{n.name}') has no gradient rule{more}; freeze the "
                     f"parameters before it with --freeze, or change the model")


def attr_ints(n: Node, key: str, default: Sequence[int]) -> list[int]:
    v = n.attrs.get(key)
    return [int(x) for x in v] if v is not None else list(default)  # type: ignore[union-attr]
