"""Which input element each element of a data-movement kernel's outputs copies.

Why: a data-movement kernel (library_rowwise.DatamoveKind) forwards blocks
of its outputs, and what one of its PE rows reads of an input is the
preimage of the row's blocks under the body's permutation (a
concatenation's slice, a transpose's strided set, a pad's interior, ...),
which its dims do not describe. Running the body on tensors whose elements
are their own tags (input number and position, exact in float64) gives
every output element's source for every movement op at once; fills (a
pad's constant) stay plain values. The kind's per-row cut (`rows_read`)
is the hull, per PE row, of the positions its blocks copy. The simulator's
executor (backends.sim_spread.datamove) traces the body on its own, from
what its PEs hold, and checks each PE's reads against these boxes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .graph import Node
from .opsem import evaluate

TAG = float(2 ** 40)  # tags: (input + 1) * TAG + flat position (exact in float64)
# the inputs of a movement op that are data (the others: shapes, indices, ...)
DATA_INPUTS = {"Concat": tuple(range(64)), "ScatterND": (0, 2), "ScatterElements": (0, 2),
               "Pad": (0,)}
# a combining scatter adds or multiplies elements: not one source per element
_COMBINES = {"ScatterND", "ScatterElements"}



@dataclass(frozen=True)
class Operands:
    """What a kind's body-dependent cut reads of a kernel's operands: a
    value's shape, and a constant's array (None: an activation). `routed`:
    the cut's lanes are routed, landing on the PE rows (a weight-streaming
    phase's rows hold their boxes without lanes: wsec.backends.
    sim_stream_pe), so a kind may keep flat what a row multicast would
    carry badly (a tiled constant's owner rows with rows owning nothing
    between them). `runs`: routed lanes may land on a run of the rows, the
    others reading none of the value (a concatenation's input: the router,
    and the boxes of the bundles it cut so); without it such a value stays
    flat, as placement sees it (wsec.passes.place_rows measures producers
    against consumers that cut their output on every row; measured: with
    the runs, DenseNet-121's concatenations, reading their inputs on runs,
    could not be raised, 113 -> 9 kernels raised and 84k -> 204k PEs reading
    what no lane brought)."""

    shape: Callable[[str], tuple[int, ...]]
    const: Callable[[str], np.ndarray | None]
    routed: bool = False
    runs: bool = False

    @staticmethod
    def of_module(module: Any, runs: bool = False) -> Operands:
        """From an IR module's values (constants read when asked), routed."""
        def const(name: str) -> np.ndarray | None:
            v = module.values.get(name)
            return None if v is None or v.const is None else v.const.array()
        return Operands(lambda name: tuple(module.values[name].type.shape), const, True, runs)


def sources(body: list[Node], acts: list[str], shapes: dict[str, tuple[int, ...]],
            const: Callable[[str], np.ndarray | None]) -> dict[str, np.ndarray] | None:
    """Per value the body computes from the activations `acts` (in that
    order: tag band i is acts[i]), its elements' tags, flat; None when the
    body is not a pure movement of them: an activation read as a shape, an
    index or a count, a value neither an activation, a constant nor computed
    before, a scatter that combines, or an op the tags do not pass through."""
    tv: dict[str, np.ndarray] = {}
    for i, a in enumerate(acts):
        n = int(np.prod(shapes[a], dtype=np.int64))
        tv[a] = ((i + 1) * TAG + np.arange(n, dtype=np.float64)).reshape(shapes[a])
    plain: dict[str, np.ndarray] = {}
    for node in body:
        data = DATA_INPUTS.get(node.op, (0,))
        if node.op in _COMBINES and str(node.attrs.get("reduction", "none")) != "none":
            return None
        args: list[np.ndarray | None] = []
        traced = False
        for j, i in enumerate(node.inputs):
            if not i:
                args.append(None)
            elif i in tv:
                if j not in data:
                    return None  # an activation steers the movement
                args.append(tv[i])
                traced = True
            elif i in plain:
                args.append(plain[i])
            else:
                c = const(i)
                if c is None:
                    return None
                args.append(np.asarray(c))
        try:
            outs = [args[0]] if node.op == "Cast" and traced else evaluate(node, args)
        except (ValueError, TypeError, IndexError, KeyError):
            return None
        for o, arr in zip(node.outputs, outs, strict=False):
            if o:
                (tv if traced else plain)[o] = np.asarray(arr)
    return {o: t.astype(np.float64, copy=False).reshape(-1) for o, t in tv.items()
            if o not in acts}


def block_owners(tags: list[np.ndarray], pes: int) -> list[np.ndarray]:
    """Per output of a data-movement kernel (`tags`: its elements' sources,
    flat, in the kernel's output order), the PE index forwarding each
    element: the outputs' elements dealt as one sequence in blocks of
    ceil(total / pes), in the order of their sources (input band, then
    position: `source_order`; of equal sources, the outputs in the order of
    their first source, then each output's order; fills last), so PE i
    forwards elements [i n, (i + 1) n) of that sequence and copies a run of
    consecutive elements of its input: over the input flattened its hull is
    exact. Why the sources' order: a split's outputs each dealt over all the
    PEs (q, k and v of an attention's packed projection) made every PE row
    copy a block of each, and its row's hull span the three slices of the
    input, nearly all of it; a permutation's output dealt in its own order
    (a channel shuffle, a transpose) made a row copy a strided set, whose
    hull spanned most of the input in any view (measured: ShuffleNet's
    shuffles, 75% of it; dealt so, each row reads 1/h of it). No PE
    forwards more than n elements either way."""
    sizes = [int(t.size) for t in tags]
    n = max(1, -(-sum(sizes) // max(1, pes)))
    first = [float(t[t >= TAG].min()) if (t >= TAG).any() else np.inf for t in tags]
    order = sorted(range(len(tags)), key=lambda i: first[i])
    out: list[np.ndarray] = [np.zeros(0, np.int64)] * len(tags)
    if not order:
        return out
    place = source_order(np.concatenate([np.asarray(tags[i], np.float64).reshape(-1)
                                         for i in order])) // n
    start = 0
    for i in order:
        out[i] = place[start:start + sizes[i]]
        start += sizes[i]
    return out


def source_order(tags: np.ndarray) -> np.ndarray:
    """Each element's place (0..size-1) when elements (`tags`, flat, in
    the outputs' order) are sorted by their sources (input band, then
    position; ties and fills, which copy no input, in the given order,
    fills last). The identity where the sources already ascend (a reshape,
    a concatenation's inputs in order): checked first, sorted only where
    they do not."""
    t = np.asarray(tags, np.float64).reshape(-1)
    key = np.where(t >= TAG, t, np.inf)
    if t.size < 2 or bool((key[1:] >= key[:-1]).all()):
        return np.arange(t.size, dtype=np.int64)
    place = np.empty(t.size, np.int64)
    place[np.argsort(key, kind="stable")] = np.arange(t.size, dtype=np.int64)
    return place


def rows_read(tags: list[np.ndarray], band: int, shape: tuple[int, ...], pes: int,
              cols: int) -> np.ndarray:
    """(pes // cols, 2, ndim): per PE row, the hull of the elements of the
    band-th input (of `shape`) that the row's PEs copy, the outputs' tags
    given (in the kernel's output order): output elements are forwarded by
    the PEs `block_owners` deals them to (offset py * cols + px). A row
    copying nothing reads an all-zero box."""
    rows = max(1, pes // max(1, cols))
    nd = len(shape)
    out = np.zeros((rows, 2, nd), np.int64)
    if not nd:
        return out
    owners = block_owners(tags, pes)
    for t, owner in zip(tags, owners, strict=True):
        mine = np.flatnonzero((t >= TAG) & (np.floor(t / TAG) - 1 == band))
        if not mine.size:
            continue
        r = owner[mine] // max(1, cols)
        if (r[1:] < r[:-1]).any():  # dealt in the sources' order (block_owners): by row
            by = np.argsort(r, kind="stable")
            mine, r = mine[by], r[by]
        at = np.stack(np.unravel_index((t[mine] - (band + 1) * TAG).astype(np.int64), shape))
        first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        lo = np.minimum.reduceat(at, first, axis=1).T
        hi = np.maximum.reduceat(at, first, axis=1).T + 1
        pr = r[first]
        live = (out[pr, 1] > out[pr, 0]).all(axis=1)[:, None]
        out[pr, 0] = np.where(live, np.minimum(out[pr, 0], lo), lo)
        out[pr, 1] = np.where(live, np.maximum(out[pr, 1], hi), hi)
    return out
