"""Shared machinery of wsec's own kernel kinds (the wse2/wse3 library).

Why a common base: every library kind has one vectorised cost function
(`_cost`, numpy arrays of knob values in, arrays of w, h, cycles, sram out);
the scalar `shape`/`cycles`/`sram` of the `KernelKind` contract call that
same function on 0-d arrays, so sizing (vectorised) and every later consumer
(scalar) can never disagree. A library kind also says which graph ops it
implements (`ops`) and how to read its problem dims off the ops it fuses
(`dims_from`), so form-kernels asks the library instead of re-deriving.

Hardware model (Target): a PE does `simd` fp16 multiply-accumulates per cycle;
its router moves one 32-bit wavelet per cycle into the core, i.e.
`wavelet_bytes / itemsize` elements (2 for f16). Every PE also keeps its
program, stack and DSD descriptors in SRAM (`CODE_BYTES`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .cuts import flat_view, grouped_pe, grouped_rows, view_rows
from .errors import WsecError
from .graph import Kernel, Node, Value
from .kernel_kind import Dims, KernelKind, Knobs
from .target import Target
from .types import DTYPES, TensorType

CODE_BYTES = 2048  # program, stack and descriptors every PE keeps resident
KERNEL_OVERHEAD = 64  # cycles per sample: task start, end-of-sample control
ROW_OVERHEAD = 16  # cycles per output row: DSD setup, task switch

# Element-wise ops: what form-kernels fuses after an anchor or chains together.
ELEMENTWISE_OPS = frozenset({
    "Abs", "Add", "And", "Ceil", "Clip", "Cos", "Div", "Elu", "Equal", "Erf", "Exp", "Floor",
    "Gelu", "Greater", "GreaterOrEqual", "HardSigmoid", "HardSwish", "IsInf", "IsNaN",
    "LeakyRelu",
    "Less", "LessOrEqual", "Log", "Max", "Mean", "Min", "Mod", "Mul", "Neg", "Not", "Or", "Pow",
    "PRelu", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin", "Softplus",
    "Softsign", "Sqrt", "Sub", "Sum", "Tanh", "Trilu", "Where", "Xor",
})
# Cycles per element of the transcendental ops (a short polynomial on the PE).
OP_COST = {"Exp": 8, "Log": 8, "Erf": 10, "Gelu": 12, "Sigmoid": 10, "Tanh": 10, "Softplus": 10,
           "Elu": 8, "Selu": 8, "Pow": 12, "Sqrt": 6, "Reciprocal": 4, "Div": 4, "Sin": 10,
           "Cos": 10, "Mod": 6, "Softsign": 5, "HardSwish": 3, "Round": 2}


class UnsupportedShape(WsecError):
    """An op a kind implements, but with a shape it cannot map (e.g. 3-D conv)."""


def cdiv(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Ceiling division on int64 arrays."""
    return -(-np.asarray(a, dtype=np.int64) // np.maximum(np.asarray(b, dtype=np.int64), 1))


def elems_per_cycle(target: Target) -> int:
    """Elements one wavelet per cycle carries into (or out of) a PE."""
    return max(1, target.wavelet_bytes // itemsize(target))


def itemsize(target: Target) -> int:
    return DTYPES[target.dtype].itemsize


def candidates(n: int, cap: int, limit: int = 48) -> np.ndarray:
    """Useful split counts of a dimension of size `n`: powers of two, 3 x powers
    of two and divisors of `n`, all capped at `n` and `cap`; at most `limit`
    values (thinned geometrically, keeping 1 and the largest)."""
    top = max(1, min(int(n), int(cap)))
    vals = {1, top}
    p = 1
    while p <= top:
        vals.add(p)
        if 3 * p <= top:
            vals.add(3 * p)
        p *= 2
    d = 1
    while d * d <= n:
        if n % d == 0:
            for x in (d, n // d):
                if x <= top:
                    vals.add(x)
        d += 1
    arr = np.array(sorted(vals), dtype=np.int64)
    if arr.size > limit:
        pick = np.unique(np.round(np.geomspace(1, arr.size, limit)).astype(np.int64) - 1)
        arr = arr[pick]
    return arr


def squarish(p: np.ndarray, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """A near-square w x h >= p rectangle for p PEs (w capped at the grid width)."""
    p = np.asarray(p, dtype=np.int64)
    w = np.minimum(np.ceil(np.sqrt(p)).astype(np.int64), target.width)
    w = np.maximum(w, 1)
    return w, cdiv(p, w)


# A kind whose PEs share no input (pooling, normalisation) stacks them in
# columns up to this high (or the grid's height): one input lane per PE row.
MAX_COLUMN = 512


def grouped_layout(n: np.ndarray, target: Target) -> tuple[np.ndarray, np.ndarray]:
    """(w, h) of n PEs that share no input, in columns as high as allowed (a
    lane per PE row, wsec.passes.route_bundles), every row holding some
    (`grouped_pe`: which index sits where)."""
    n = np.asarray(n, dtype=np.int64)
    h = np.minimum(n, min(MAX_COLUMN, target.height))
    return cdiv(n, np.maximum(h, 1)), h


def grouped_cells(w: int, h: int, n: int) -> np.ndarray:
    """(h, w): the grouped-layout index of every PE (-1 where none sits:
    the last column below row f, `grouped_pe`)."""
    px, py = grouped_pe(np.arange(n), w, h, n)
    out = np.full((h, w), -1, np.int64)
    out[py, px] = np.arange(n)
    return out


def grouped_index(px: int, py: int, rect: tuple[int, int] | None, n: int) -> int:
    """The index of the PE at (px, py) in a `grouped_layout` of n PEs, given
    the kernel's unrotated (w, h) (without it: the layout of the largest
    column the library uses): `grouped_pe` inverted; n or more where no PE
    sits (the last column below row f)."""
    h = max(1, rect[1] if rect is not None else min(n, MAX_COLUMN))
    w = -(-n // h)
    f = n - (w - 1) * h
    if py >= f and px >= w - 1:
        return n + py
    return py * w - max(0, py - f) + px


def block(n: int, parts: int, i: int) -> slice:
    """Block i of `n` split into `parts` ceil-sized blocks (empty past the end)."""
    step = -(-n // max(parts, 1))
    return slice(min(n, i * step), min(n, (i + 1) * step))


class LibraryKind(KernelKind):
    """A kind of wsec's own library: one vectorised cost function, the graph
    ops it anchors, and how its dims are read off a kernel body.

    `weight_shard` recognises a constant by its shape (the main weight, a
    per-channel or per-column vector), not by its position, so constants of
    fused ops shard consistently; any other constant is held whole."""

    has_body = True

    ops: frozenset[str] = frozenset()

    # --- to implement -----------------------------------------------------
    def _cost(self, dims: Dims, kn: dict[str, np.ndarray], target: Target
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        """Problem dims of a kernel whose body is `body` (anchor first)."""
        raise NotImplementedError

    # --- the KernelKind contract, all through _cost -----------------------
    def evaluate(self, dims: Dims, knobs: dict[str, np.ndarray], target: Target
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        arrs = np.broadcast_arrays(*[np.asarray(knobs[k], dtype=np.int64)
                                     for k in self.knob_names])
        kn = dict(zip(self.knob_names, arrs, strict=True))
        shape = arrs[0].shape
        w, h, cyc, mem = (np.broadcast_to(np.asarray(o, dtype=np.int64), shape).copy()
                          for o in self._cost(dims, kn, target))
        if dims.get("stash"):  # a training pipeline's activation FIFO, spread over the PEs
            mem = mem + cdiv(dims["stash"], w * h)
        return w, h, np.maximum(cyc, lane_cycles(dims, h, target)), mem

    def _one(self, dims: Dims, knobs: Knobs, target: Target) -> tuple[int, int, int, int]:
        missing = [k for k in self.knob_names if k not in knobs]
        if missing:
            raise KeyError(f"{self.name} kernel needs knobs {', '.join(missing)}")
        w, h, c, s = self.evaluate(dims, {k: np.asarray(knobs[k]) for k in self.knob_names},
                                   target)
        return int(w), int(h), int(c), int(s)

    def shape(self, dims: Dims, knobs: Knobs, target: Target) -> tuple[int, int]:
        w, h, _, _ = self._one(dims, knobs, target)
        return w, h

    def cycles(self, dims: Dims, knobs: Knobs, target: Target) -> int:
        return self._one(dims, knobs, target)[2]

    def sram(self, dims: Dims, knobs: Knobs, target: Target) -> int:
        return self._one(dims, knobs, target)[3]


def lane_cycles(dims: Dims, rows: np.ndarray, target: Target) -> np.ndarray:
    """Cycles per sample the kernel's ports need: its activation inputs
    arrive as lanes on one end of its PE rows and its outputs leave from the
    other (wsec.passes.route_bundles), one lane per row, each link and RAMP
    moving one wavelet per cycle. `Ie` is the elements of the activation
    inputs, `Oe` those of the outputs times the sinks each goes to (dims
    form-kernels records from the kernel's edges); 0 when unknown. `In` and
    `On` count the bundles sharing each side: every bundle takes a whole
    number of rows, so n bundles of W wavelets in all fit rows R at cycles c
    when ceil(W / c) <= R - n + 1 (the sum of the n roundings up is at most
    n - 1 more than the rounded-up sum)."""
    b = itemsize(target)
    rows = np.maximum(np.asarray(rows, dtype=np.int64), 1)
    out = np.zeros_like(rows)
    for e, n in (("Ie", "In"), ("Oe", "On")):
        wav = cdiv(int(dims.get(e, 0)) * b, target.wavelet_bytes)
        usable = np.maximum(rows - max(int(dims.get(n, 1)), 1) + 1, 1)
        out = np.maximum(out, cdiv(np.asarray(wav, dtype=np.int64), usable))
    return out


PORT_DIMS = ("Ie", "Oe", "In", "On")


def drop_port_dims(kernels: Sequence[Kernel]) -> None:
    """Forget the port dims: weight streaming keeps activations in SRAM
    between phases (its own `move` term), so no lanes are charged, and
    repeated layers keep one signature whatever their neighbours."""
    for k in kernels:
        for d in PORT_DIMS:
            k.dims.pop(d, None)


# --- helpers for dims_from --------------------------------------------------
def vtype(values: dict[str, Value], name: str) -> TensorType:
    return values[name].type


def is_const(values: dict[str, Value], name: str) -> bool:
    return bool(name) and values[name].const is not None


def fused_extras(body: Sequence[Node], values: dict[str, Value]) -> Dims:
    """What the element-wise ops fused after an anchor add: F = cycles per
    element they cost, A = extra activation operands (residual inputs)
    streamed in, P = constant elements they read (biases, scales)."""
    internal = {o for n in body for o in n.outputs}
    f = a = p = 0
    seen: set[str] = set()
    for n in body[1:]:
        f += OP_COST.get(n.op, 1) * max(1, len([i for i in n.inputs if i]) - 1)
        for i in n.inputs:
            if not i or i in internal or i in seen:
                continue
            seen.add(i)
            if is_const(values, i):
                p += vtype(values, i).numel
            else:
                a += 1
    return {"F": f, "A": a, "P": p}


def spatial(t: TensorType) -> tuple[int, int, int, int]:
    """(N, C, H, W) of an NCHW-like tensor; 1-D spatial maps to H = 1."""
    s = t.shape
    if len(s) == 4:
        return s[0], s[1], s[2], s[3]
    if len(s) == 3:
        return s[0], s[1], 1, s[2]
    if len(s) == 2:
        return s[0], s[1], 1, 1
    raise UnsupportedShape(f"expected a 2-D spatial (N, C, H, W) tensor, got {t}")


class GroupedRowsKind(LibraryKind):
    """A kind whose PE index i of the grouped layout (wsec.ir.cuts.grouped_rows)
    reads box `_pe_boxes(...)[i]` of its data input (pooling, norms): its
    rows' cut, over the value flattened where that is lighter (input_view),
    and those boxes in the value's own shape where rows hold them without
    lanes (held_cut)."""

    def _pe_boxes(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """(PEs, 2, ndim): the box of the input (of `shape`) PE index i
        reads; None where the kind's rows are not cut."""
        return None

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """A PE row's box is the hull of its PEs' boxes, over the value
        flattened where `input_view` says so."""
        return view_rows(self._pe_boxes(dims, knobs, shape), shape, MAX_COLUMN)

    def input_view(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                   ) -> tuple[int, ...] | None:
        """The value flattened where a PE row's reads hold fewer elements in
        all there than in the value's shape (`tighter_flat`); else None.
        Why: a row of the grouped layout holds consecutive PE indices, so
        where s is not a multiple of the row's width a row takes the last
        row groups of one channel block and the first of the next; in (N,
        C, H, W) its hull is both channels' whole maps (ZFNet-512's pool of
        one channel per block: 2 x 109 x 109 on a row whose share is
        2,228), no pitch's lanes were light enough and the pooling read
        outside its flat lanes. Flattened, that row's reads are one range
        (channel g's last rows run on into channel g + 1's first), exact
        where a block is one channel."""
        return flat_view(self._pe_boxes(dims, knobs, shape), shape, MAX_COLUMN)

    def held_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                 ) -> np.ndarray | None:
        """input_cut's boxes in the value's own shape (rows holding them
        without lanes: a weight-streaming phase, where there is no view)."""
        pe = self._pe_boxes(dims, knobs, shape)
        return None if pe is None else grouped_rows(pe, MAX_COLUMN)
