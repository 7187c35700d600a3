"""Row-wise kernel kinds: element-wise chains, normalisation, softmax and
pure data movement.

("Row-wise": each works along rows of its tensor with no weights to shard;
not to be confused with weight streaming, the execution mode.)

These hold no large weights; their time is set by how many elements each PE
touches and by the fabric (one 32-bit wavelet per cycle into a PE). Kinds
with one knob `p` spread their elements over a near-square rectangle of p
PEs (a square keeps the fan-in/fan-out routes short on both axes), except
data movement: its PEs compute nothing and share no input, so its time is
its lanes (one per PE row) and it stands in columns as high as allowed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from . import movement
from .cuts import (
    broadcast_rows,
    flat_hulls,
    grouped_rows,
    joined,
    spread_rows,
    view_rows,
)
from .graph import Kernel, Node, Value
from .kernel_kind import Dims, Knobs
from .lanes import box_elements, union_boxes
from .library_common import (
    CODE_BYTES,
    ELEMENTWISE_OPS,
    KERNEL_OVERHEAD,
    MAX_COLUMN,
    OP_COST,
    ROW_OVERHEAD,
    GroupedRowsKind,
    LibraryKind,
    UnsupportedShape,
    block,
    candidates,
    cdiv,
    elems_per_cycle,
    fused_extras,
    grouped_index,
    grouped_layout,
    is_const,
    itemsize,
    lane_cycles,
    squarish,
    vtype,
)
from .movement import Operands
from .target import Target

DATAMOVE_OPS = frozenset({
    "Reshape", "Flatten", "Concat", "Transpose", "Unsqueeze", "Squeeze", "Cast", "Dropout",
    "Slice", "Split", "Expand", "Tile", "Pad", "DepthToSpace", "SpaceToDepth", "Identity",
    "ScatterND", "ScatterElements",
})
# a data-movement kernel's lanes are sized for this many times their load
# (DatamoveKind): the links beside its column keep room for the bundles
# that converge on it
LANE_HEADROOM = 2
# the ops of a LayerNorm as older exporters decompose it (see form-kernels)
DECOMPOSED_LN = frozenset({"ReduceMean", "Sub", "Pow", "Mul", "Add", "Sqrt", "Div",
                           "Reciprocal"})


def _external(body: Sequence[Node], values: dict[str, Value]) -> tuple[list[str], int, int]:
    """Activation inputs read from outside `body`, constant elements read, and
    the number of body values (outputs)."""
    internal = {o for n in body for o in n.outputs if o}
    acts: list[str] = []
    consts = 0
    seen: set[str] = set()
    for n in body:
        for i in n.inputs:
            if not i or i in internal or i in seen:
                continue
            seen.add(i)
            if is_const(values, i):
                consts += vtype(values, i).numel
            else:
                acts.append(i)
    return acts, consts, len(internal)


# a constant operand with at least this many elements is tiled over the
# kernel's PEs rather than copied to each: a causal mask [1, 1, T, T] or a
# rotary table [T, d] broadcast over the heads is too big to replicate
TILE_MIN = 1024


def _tiled_consts(body: Sequence[Node], values: dict[str, Value], e: int
                  ) -> tuple[list[str], tuple[int, int, int]]:
    """The constants read by `body` that are tiled over the PEs, and their
    common (Fa, Fb, Fr) tiling: constants as large as the kernel's largest
    tensor, or of at least TILE_MIN elements (broadcast over the output).
    They must share one tiling (one cost model); the group with the most
    elements wins, the others stay replicated."""
    internal = {o for n in body for o in n.outputs if o}
    groups: dict[tuple[int, int, int], list[str]] = {}
    for n in body:
        for i in n.inputs:
            if not i or i in internal or not is_const(values, i) or e <= 1:
                continue
            t = vtype(values, i)
            if t.numel <= 1 or (t.numel != e and t.numel < TILE_MIN):
                continue
            fa, fb = (ln for _, ln in _tile_axes(t.shape))
            key = (fa, fb, t.numel // (fa * fb))
            if i not in groups.setdefault(key, []):
                groups[key].append(i)
    if not groups:
        return [], (1, 1, e)
    key = max(groups, key=lambda g: len(groups[g]) * g[0] * g[1] * g[2])
    return groups[key], key


def _tile_axes(shape: tuple[int, ...]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(axis, length) of the first two axes longer than 1; a missing one is
    (its position, 1)."""
    found = [(ax, n) for ax, n in enumerate(shape) if n > 1][:2]
    while len(found) < 2:
        found.append((found[-1][0] if found else 0, 1))
    return found[0], found[1]


def _max_numel(body: Sequence[Node], values: dict[str, Value], acts: list[str]) -> int:
    sizes = [vtype(values, o).numel for n in body for o in n.outputs if o]
    sizes += [vtype(values, a).numel for a in acts]
    return max([1, *sizes])


class _SpreadKind(LibraryKind):
    """One knob p: the kernel's elements dealt out over p PEs (near-square)."""

    knob_names = ("p",)

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"p": candidates(dims["E"] * dims.get("rows", 1), target.pes, limit=96)}


class ElementwiseKind(_SpreadKind):
    """A chain of element-wise ops not fused into an anchor (e.g. Mul+Add+Relu
    of a pre-activation batch norm, or a residual add whose input has other
    readers). Each of p PEs owns ceil(E/p) consecutive elements: it receives
    them from its I inputs, applies the O per-element op cycles with its simd
    lanes and sends the result. dims: E elements, I activation inputs, Q
    values produced, O cycles per element, P constant elements replicated on
    every PE (small operands: scalars, per-channel vectors).

    A constant as large as the output (an attention mask, a learned position
    table), or of at least TILE_MIN elements broadcast over it (a causal mask
    shared by the heads), is not replicated: each of the Pf such constants
    (one tiling: same Fa, Fb, Fr) is tiled over
    the kernel's w x h rectangle, its first non-unit axis (Fa long) in h
    blocks along y and its next non-unit axis (Fb long) in w blocks along x
    (Fr elements per (a, b) pair), so a PE holds about 1/p of it."""

    name = "elementwise"
    description = "element-wise chain over p PEs"
    ops = ELEMENTWISE_OPS

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        acts, consts, _ = _external(body, values)
        ops = sum(OP_COST.get(n.op, 1) * max(1, len([i for i in n.inputs if i]) - 1)
                  for n in body)
        e = _max_numel(body, values, acts)
        full, (fa, fb, fr) = _tiled_consts(body, values, e)
        return {"E": e, "I": len(acts), "O": ops, "Q": 1, "P": consts - len(full) * fa * fb * fr,
                "Pf": len(full), "Fa": fa, "Fb": fb, "Fr": fr}

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        # sharded constants index PEs row-major in a near-square rectangle:
        # keep it square (p <= width^2) so every PE index exists
        cap = min(target.pes, target.width ** 2) if dims.get("Pf") else target.pes
        return {"p": candidates(dims["E"], cap, limit=96)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        p = kn["p"]
        n = cdiv(d["E"], p)
        epc, b = elems_per_cycle(target), itemsize(target)
        compute = cdiv(n, target.lanes) * d["O"]
        io = np.maximum(cdiv(n * d["I"], epc), cdiv(n * d["Q"], epc))
        w, h = squarish(p, target)
        fa, fb = d.get("Fa", 1), d.get("Fb", 1)
        full = d.get("Pf", 0) * cdiv(fa, np.minimum(h, fa)) * cdiv(fb, np.minimum(w, fb)) * \
            d.get("Fr", 0)
        sram = CODE_BYTES + n * b * (d["I"] + d["Q"]) + (d["P"] + full) * b
        return w, h, np.maximum(compute, io) + KERNEL_OVERHEAD, sram

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE index i (row-major in the near-square rectangle) owns and
        reads the elements [i n, (i + 1) n) (n = ceil(E/p)) of an input as
        large as the output; a PE row's box is the hull of its PEs' blocks
        (wsec.ir.cuts.spread_rows). An input broadcast over the output (its
        PEs read strided parts) and a kernel that tiles a constant (its PEs
        own the constant's tiles, not blocks) have no per-row box: None."""
        got = self._rows(dims, knobs, shape)
        return None if got is None else got[1] if got[2] else got[0]

    def input_view(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                   ) -> tuple[int, ...] | None:
        """The value flattened where its rows' blocks hold fewer elements
        in all there than as hulls in its shape: a row of consecutive
        blocks is one flat range, which in (N, C, L) spans every channel
        it touches whole where it starts or ends inside one (a 1-D conv's
        [1, 4, 100] dealt over 25 PEs, five to a row: a row's hull was up
        to 2 x 100 of its 80 elements). Else None."""
        got = self._rows(dims, knobs, shape)
        return (int(np.prod(shape, dtype=np.int64)),) if got is not None and got[2] else None

    def held_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                 ) -> np.ndarray | None:
        """input_cut's boxes in the value's own shape (rows holding them
        without lanes: a weight-streaming phase, where there is no view)."""
        got = self._rows(dims, knobs, shape)
        return None if got is None else got[0]

    def _rows(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
              ) -> tuple[np.ndarray, np.ndarray, bool] | None:
        """(the rows' boxes in `shape`, their flat ranges ((h, 2, 1)),
        whether those hold fewer elements in all), or None (no per-row box)."""
        E, p = dims["E"], int(knobs["p"])
        if dims.get("Pf") or not shape or int(np.prod(shape)) != E:
            return None
        n = -(-E // max(p, 1))
        i = np.arange(p)
        lo, hi = np.minimum(i * n, E), np.minimum((i + 1) * n, E)
        rows = spread_rows(flat_hulls(lo, hi, shape))
        flat = spread_rows(np.stack([lo, hi], axis=1)[:, :, None])
        flat[(flat[:, 1] <= flat[:, 0]).any(axis=1)] = 0
        tighter = len(shape) > 1 and int(box_elements(flat).sum()) < int(
            box_elements(rows).sum())
        return rows, flat, tighter

    def body_cut(self, kernel: Kernel, value: str, ops: Operands) -> np.ndarray | None:
        """A kernel tiling a constant over its rectangle (dims Pf): its PEs
        own the output elements whose constant entries their tiles hold
        (weight_shard: the constant's first long axis in h blocks along y,
        its next along x), so PE row py owns block py of that axis and all
        of every other; an activation the chain reads on those owners
        (broadcast onto the output) is read in that box
        (wsec.ir.cuts.broadcast_rows); routed, where some rows own nothing
        (their lanes would land on rows that read none of it), None. A
        kernel owning input_cut's consecutive blocks: `_operand_rows`."""
        dims, knobs = kernel.dims, kernel.knobs
        if not knobs or ops.const(value) is not None:
            return None
        outs = [tuple(ops.shape(o)) for o in kernel.outputs if o]
        grid = max(outs, key=lambda s: int(np.prod(s)), default=())
        if not grid or int(np.prod(grid)) != dims["E"]:
            return None
        if not dims.get("Pf"):
            return self._operand_rows(kernel, value, ops, grid)
        tiled = [tuple(ops.shape(i)) for n in kernel.body for i in n.inputs
                 if i and ops.const(i) is not None and self._tiles(dims, tuple(ops.shape(i)))]
        if not tiled or len(tiled[0]) > len(grid):
            return None
        shape = tiled[0]
        (a, la), _ = _tile_axes(shape)
        ga = a + len(grid) - len(shape)
        if grid[ga] != la:
            return None
        _, h = self._tile_grid(int(knobs["p"]))
        blocks = [block(la, min(h, la), py) for py in range(h)]  # weight_shard's along y
        rows = np.zeros((h, 2, len(grid)), np.int64)
        rows[:, 1, :] = grid
        rows[:, 0, ga] = [b.start for b in blocks]
        rows[:, 1, ga] = [b.stop for b in blocks]
        rows[rows[:, 1, ga] <= rows[:, 0, ga]] = 0
        if ops.routed and not (rows[:, 1] > rows[:, 0]).all():
            return None
        return broadcast_rows(rows, tuple(ops.shape(value)))

    def _operand_rows(self, kernel: Kernel, value: str, ops: Operands,
                      grid: tuple[int, ...]) -> np.ndarray | None:
        """Routed, an activation as large as the grid that the chain reads
        other than once as its first op's data input (the second operand of
        a residual Add, a value read by two ops of the chain as GELU's x
        is): every op of the chain runs on the output grid, each element on
        the PE owning its block (input_cut's consecutive blocks,
        wsec.backends.sim_spread), which reads the same element of `value`;
        PE row py's box is its blocks' hull (as input_cut's). None where the
        chain does not read it, or the weight-streaming phase holds it (not
        routed: the rows keep what they held).

        An operand broadcast onto the grid (a squeeze-excitation scale
        [N, C, 1, 1], a LayerNorm's per-token statistic [N, T, 1]) is read
        whole by every row that owns elements where it holds no more than a
        row's share of the grid (E / rows): its lanes then carry all of it,
        one lane whose spine hands it to every row where the source side
        leaves one slot, or where half a link holds it (a multicast:
        route_bundles.choose_pitch), and each row receives at most as much
        of it as of its own block, where a flat lane lands on one PE and the others read what
        no lane brought. A larger one stays flat: its rows' boxes would be
        broadcast_rows of these, but declared, they changed the router's
        widening rounds elsewhere in a layout (MobileNet-v3's fixture: a
        depthwise conv's input lost its cut, +146 PEs reading what no lane
        brought, where EfficientNet's gained 311)."""
        if not ops.routed or not any(value in n.inputs for n in kernel.body):
            return None
        rows = self.held_cut(kernel.dims, kernel.knobs, grid)  # in the grid's shape
        if rows is None:
            return None
        shape = tuple(int(n) for n in ops.shape(value))
        numel = int(np.prod(shape))
        if numel == kernel.dims["E"]:
            if self.body_view(kernel, value, ops) is not None:
                got = self._rows(kernel.dims, kernel.knobs, grid)
                return None if got is None else got[1]
            return broadcast_rows(rows, shape)
        if not shape or numel * len(rows) > kernel.dims["E"] or \
                broadcast_rows(rows, shape) is None:
            return None
        whole = np.zeros((len(rows), 2, len(shape)), np.int64)
        live = (rows[:, 1, :] > rows[:, 0, :]).all(axis=1)
        whole[live, 1] = shape
        return whole

    def body_view(self, kernel: Kernel, value: str, ops: Operands) -> tuple[int, ...] | None:
        """Routed, an activation as large as the grid that the chain reads
        on its blocks' owners (`_operand_rows`) flattened, where its rows'
        blocks hold fewer elements in all there (input_view); else None."""
        dims, knobs = kernel.dims, kernel.knobs
        if not ops.routed or not knobs or dims.get("Pf") or ops.const(value) is not None:
            return None
        outs = [tuple(ops.shape(o)) for o in kernel.outputs if o]
        grid = max(outs, key=lambda s: int(np.prod(s)), default=())
        if not grid or int(np.prod(grid)) != dims["E"] or \
                int(np.prod(ops.shape(value))) != dims["E"] or len(ops.shape(value)) < 2:
            return None
        return self.input_view(dims, knobs, grid)

    @staticmethod
    def _tile_grid(p: int) -> tuple[int, int]:
        """The w x h PEs a tiled constant is laid over, as squarish(p)
        (p <= width^2, knob_grid)."""
        w = max(1, int(np.ceil(np.sqrt(p))))
        return w, -(-p // w)

    @staticmethod
    def _tiles(dims: Dims, shape: tuple[int, ...]) -> bool:
        """Whether weight_shard tiles a constant of `shape` (else every PE
        holds all of it)."""
        numel = int(np.prod(shape)) if shape else 1
        (_, la), (_, lb) = _tile_axes(shape)
        return (bool(dims.get("Pf")) and numel > 1 and (la, lb) == (dims.get("Fa", 1),
                dims.get("Fb", 1)) and numel == la * lb * dims.get("Fr", 0)
                and (numel == dims["E"] or numel >= TILE_MIN))

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        full = [slice(0, n) for n in weight_shape]
        (a, la), (b, lb) = _tile_axes(weight_shape)
        if not self._tiles(dims, tuple(weight_shape)):
            return tuple(full)
        w, h = self._tile_grid(int(knobs["p"]))
        full[a] = block(la, min(h, la), py)
        if lb > 1:
            full[b] = block(lb, min(w, lb), px)
        elif px:  # one row of PEs holds the constant; the other columns need none
            full[a] = slice(0, 0)
        return tuple(full)


class DatamoveKind(LibraryKind):
    """Ops that only move data (Reshape, Flatten, Concat, Transpose, Cast,
    Slice, Split, Pad, Expand, Tile, DepthToSpace, ...; a chain of them fuses;
    multi-output ops like Split export each output). Each of its p PEs
    buffers and forwards ceil(E/p) elements (its outputs dealt in sequence:
    a split's outputs together are its input), one wavelet per element per
    cycle; the permutation is in the routes. dims: E = largest tensor touched, I
    activation inputs, P constant elements (shape tensors, gather tables;
    replicated on every PE).

    Knobs c and h: its p = c x h PEs stand in c columns of h rows (at most
    MAX_COLUMN), not in a near-square: the kernel's inputs and outputs move
    one lane per PE row (lane_cycles), so a concatenation of large feature
    maps needs hundreds of rows at the target time but only a few PEs per
    row, and a square of that height would waste all but a column of it
    (DenseNet-121's concatenations took a third of the grid). A kernel
    whose PE count is set by its elements or its SRAM has shapes from one
    column to wide and low at about that count, for the placer to pack.
    Its lanes are counted LANE_HEADROOM times (sized to run at most half
    loaded): its column is where the bundles of its several producers
    converge, and bundles laid beside them share their links; a column
    costs so few PEs that the margin is nearly free, where lanes sized to
    the last wavelet made those links the layout's bottleneck."""

    name = "datamove"
    knob_names = ("c", "h")
    forwards_blocks = True
    _last: tuple | None = None  # _rows' last answer
    description = "data movement over c columns of h PEs"
    ops = DATAMOVE_OPS

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        acts, consts, _ = _external(body, values)
        return {"E": _max_numel(body, values, acts), "I": len(acts), "P": consts}

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"c": candidates(dims["E"], target.width),
                "h": candidates(dims["E"], min(MAX_COLUMN, target.height))}

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """None from the dims alone: a PE forwards a block of the output,
        and what it reads of an input is that block's preimage under the
        body's permutation (a concatenation's slice, a transpose's strided
        set), which the dims do not describe: `body_cut` finds it from the
        body and its constants."""
        return None

    def body_cut(self, kernel: Kernel, value: str, ops: Operands) -> np.ndarray | None:
        """Per PE row, the hull of the elements of activation `value` its PEs
        forward (wsec.ir.movement: the body run on index tensors, its
        outputs dealt in sequence in blocks over the p = c x h PEs,
        `block_owners`, PE i at offset py * c + px), over the value's shape or, routed, where
        that is tighter, over the value flattened (`body_view`); None when
        the body is not a pure movement of its activations
        (`movement.sources`) or reads `value` as a parameter. The rows
        together may read part of it (a slice): the rest travels on no lane
        (the loader checks the lanes carry every element a row reads,
        wsec.ir.lanes.check_reads). Rows may read none of it (a
        concatenation's input is forwarded by a run of the rows, each other
        input by its own run): routed, its lanes land on the rows from the
        first that reads some of it to the last (wsec.ir.kernels.read_span)
        and the others get nothing, where the caller takes such runs
        (Operands.runs; else None)."""
        got = self._rows(kernel, value, ops)
        return None if got is None else got[0]

    def body_view(self, kernel: Kernel, value: str, ops: Operands) -> tuple[int, ...] | None:
        """Routed, the value flattened where its rows' hulls there are
        lighter than in its shape: the largest first (the busiest lane),
        then all of them (a concatenation's input: a row forwards a flat
        range of it, which in (N, C, H, W) spans whole channels on either
        side of a channel's edge, 2x or more the elements; flattened it is
        exact: wsec.ir.lanes.flattens); else None (the value's shape: a
        transpose's rows read strided sets, whose flat hulls span far
        more). Why the largest first: a slice of the last axis (the FPN
        fixture's three slices of a (1, 3, 16, 16, 7) head) reads fewer
        elements in all in the shape, but the two rows straddling a
        channel's edge read both channels' planes there, 5x the other
        rows (1,024 elements against 190 flattened), and no pitch made its
        lanes as light as a flat lane."""
        got = self._rows(kernel, value, ops)
        return None if got is None else got[1]

    def _rows(self, kernel: Kernel, value: str, ops: Operands
              ) -> tuple[np.ndarray, tuple[int, ...] | None] | None:
        """(body_cut's rows, body_view's view) of `value`, or None. The last
        answer is kept for the same kernel, value, knobs and operands:
        wsec.ir.kernels.cut_view asks body_cut and then body_view, each of
        which would run the body on index tensors again."""
        key = (value, tuple(sorted(kernel.knobs.items())))
        last = self._last
        if last is not None and last[0] is kernel and last[1] is ops and last[2] == key:
            return last[3]
        got = self._rows_of(kernel, value, ops)
        self._last = (kernel, ops, key, got)
        return got

    def _rows_of(self, kernel: Kernel, value: str, ops: Operands
                 ) -> tuple[np.ndarray, tuple[int, ...] | None] | None:
        made = {o for n in kernel.body for o in n.outputs}
        acts = list(dict.fromkeys(i for n in kernel.body for i in n.inputs
                                  if i and i not in made and ops.const(i) is None))
        if value not in acts or not kernel.knobs:
            return None
        shapes = {a: ops.shape(a) for a in acts}
        tags = movement.sources(kernel.body, acts, shapes, ops.const)
        if tags is None:
            return None
        outs = [tags[o] for o in kernel.outputs if o in tags]
        c, p = int(kernel.knobs["c"]), self.pes(kernel.knobs)
        shape = tuple(int(n) for n in shapes[value])
        rows = movement.rows_read(outs, acts.index(value), shape, p, c)
        if ops.routed and not ops.runs and not (rows[:, 1] > rows[:, 0]).all():
            return None  # read on a run of the rows: flat where lanes cannot land so (Operands)
        if not ops.routed or len(shape) < 2:
            return rows, None
        flat = (int(np.prod(shape, dtype=np.int64)),)
        line = movement.rows_read(outs, acts.index(value), flat, p, c)
        a, b = box_elements(rows), box_elements(line)
        if (int(b.max()), int(b.sum())) < (int(a.max()), int(a.sum())):
            return line, flat
        return rows, None

    @staticmethod
    def pes(knobs: Knobs) -> int:
        """The PEs the elements are dealt over: PE i (offset py * c + px)
        forwards elements [i n, (i + 1) n), n = ceil(E / pes)."""
        return int(knobs["c"]) * int(knobs["h"])

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        c, h = kn["c"], kn["h"]
        n = cdiv(d["E"], c * h)
        sram = CODE_BYTES + n * itemsize(target) + d["P"] * itemsize(target)
        lanes = LANE_HEADROOM * lane_cycles(d, h, target)
        return c, h, np.maximum(n + KERNEL_OVERHEAD, lanes), sram


class SoftmaxKind(_SpreadKind):
    """Softmax / LogSoftmax along one axis: `rows` independent rows of E.
    p PEs first split each row (min(p, E) segments: a max pass, an exp-and-
    sum pass and a scale pass, with two small tree reductions of partials
    per row), then spread rows over p // E row groups."""

    name = "softmax"
    description = "softmax rows over p PEs"
    ops = frozenset({"Softmax", "LogSoftmax"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        sm = body[0]
        shape = vtype(values, sm.inputs[0]).shape
        if not shape:
            raise UnsupportedShape("Softmax of a scalar")
        axis = int(sm.attrs.get("axis", -1)) % len(shape)
        e = shape[axis]
        d = {"E": e, "rows": max(1, int(np.prod(shape)) // max(e, 1))}
        if axis != len(shape) - 1:
            d["after"] = len(shape) - 1 - axis  # axes after the softmax axis
        d.update(fused_extras(body, values))
        return d

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE index i (row-major in the near-square rectangle) reads its
        segment (of pe = min(p, E)) of the softmax axis in the rows of its
        row group (ceil(rows / (p // E)) consecutive rows over the other
        axes, in order), as `softmax_cells` deals them; a PE row's box is
        the hull of its PEs' boxes (wsec.ir.cuts.spread_rows)."""
        E, rows, p = dims["E"], dims["rows"], int(knobs["p"])
        axis = len(shape) - 1 - dims.get("after", 0)
        if axis < 0 or shape[axis] != E or int(np.prod(shape)) != E * rows:
            return None
        return spread_rows(softmax_boxes(shape, axis, p))

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        p = kn["p"]
        pe = np.minimum(p, d["E"])
        pr = np.maximum(1, p // d["E"])
        n, rl = cdiv(d["E"], pe), cdiv(d["rows"], pr)
        per_elem = 3 + OP_COST["Exp"] + d["F"]
        compute = rl * (cdiv(n, target.lanes) * per_elem + 4 * (pe > 1) + ROW_OVERHEAD)
        io = cdiv(rl * n * (1 + d["A"]), elems_per_cycle(target))
        w, h = squarish(p, target)
        b = itemsize(target)
        sram = CODE_BYTES + n * b * (3 + d["A"]) + d["P"] * b
        return w, h, np.maximum(compute, io) + KERNEL_OVERHEAD, sram


class NormKind(GroupedRowsKind):
    """LRN, standalone BatchNormalization, InstanceNormalization,
    LayerNormalization (also as older exporters decompose it: ReduceMean,
    Sub, Pow, ReduceMean, Add, Sqrt, Div, Mul, Add, matched by form-kernels).

    Mapping like pooling: c channel groups x s row groups x r segments of
    PEs in columns (PE index i: channel group i // (s r), row segment
    i % (s r));
    a PE streams rows of its ceil(C/c) channels (plus the LRN window's
    L - 1 neighbour channels) and applies O cycles per element. For
    LayerNormalization the normalised trailing axes are one row of W
    elements and C counts the independent rows; a long row (GPT-175B's
    12288) may split into r segments along y, each PE holding ceil(W/r) of
    the row and of the scale/bias vectors, the r partial sums (mean, mean
    square) combined by a short reduction along y: r - 1 hops and two adds
    per row. InstanceNormalization needs
    each (sample, channel)'s statistics over all its rows: the s row groups
    exchange partial sums (a short reduction along y) before normalising.
    dims: N, C, H, W, O, L, Pc (per-channel parameters), Pr (replicated
    parameter elements)."""

    name = "norm"
    knob_names = ("c", "s", "r")
    description = "normalisation: c channel groups (x), s row groups x r row segments (y)"
    ops = frozenset({"LRN", "BatchNormalization", "LayerNormalization",
                     "InstanceNormalization"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        nd = body[0]
        shape = vtype(values, nd.inputs[0]).shape
        if nd.op == "ReduceMean":
            return _decomposed_ln_dims(body, values)
        if nd.op == "LayerNormalization":
            axis = int(nd.attrs.get("axis", -1)) % max(len(shape), 1)
            w = int(np.prod(shape[axis:]))
            d = {"N": 1, "C": max(1, int(np.prod(shape[:axis]))), "H": 1, "W": w, "O": 6,
                 "L": 1, "Pc": 0, "Pr": 2 * w}
        else:
            if len(shape) < 2:
                raise UnsupportedShape(f"{nd.op} of a {len(shape)}-D tensor")
            hw = shape[2:]
            h = hw[0] if len(hw) >= 2 else 1
            w = int(np.prod(hw[1:])) if len(hw) >= 2 else int(np.prod(hw))
            d = {"N": shape[0], "C": shape[1], "H": h, "W": w}
            if nd.op == "LRN":
                size = int(nd.attrs.get("size", 1))
                d.update({"O": size + 8, "L": size, "Pc": 0, "Pr": 0})
            elif nd.op == "InstanceNormalization":
                # sum and sum of squares, then scale-and-shift: two passes
                d.update({"O": 6, "L": 1, "Pc": 2, "Pr": 0})
            elif nd.attrs.get("training_mode", 0):  # batch statistics: two passes, as above
                d.update({"O": 6, "L": 1, "Pc": 4, "Pr": 0})
            else:
                d.update({"O": 2, "L": 1, "Pc": 4, "Pr": 0})
        d.update(fused_extras(body, values))
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        # only row norms (LayerNormalization: replicated row parameters) split rows
        segs = candidates(dims["W"], target.height) if dims["Pr"] else np.array([1])
        return {"c": candidates(dims["C"], target.width),
                "s": candidates(dims["N"] * dims["H"], target.height), "r": segs}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        c, s = kn["c"], kn["s"]
        r = kn.get("r", np.ones_like(np.asarray(c)))
        cb = cdiv(d["C"], c)
        rows = cdiv(d["N"] * d["H"], s)
        wseg = cdiv(d["W"], r)
        cin = np.minimum(d["C"], cb + d["L"] - 1)
        epc, b = elems_per_cycle(target), itemsize(target)
        compute = rows * cdiv(wseg * cb, target.lanes) * (d["O"] + d["F"])
        reduce = rows * cb * (r - 1) * 2 * (r > 1)  # partial sums travel along the segments
        recv = cdiv(rows * wseg * (cin + cb * d["A"]), epc)
        send = cdiv(rows * wseg * cb, epc)
        cycles = (np.maximum(np.maximum(compute + reduce, recv), send) + rows * ROW_OVERHEAD
                  + KERNEL_OVERHEAD)
        pr = cdiv(d["Pr"], r) if d["Pr"] else 0
        sram = (CODE_BYTES + 2 * wseg * cin * b + wseg * cb * b * (1 + d["A"])
                + (d["Pc"] * cb + pr) * b + cdiv(d["P"] * cb, d["C"]) * b)
        w, h = grouped_layout(c * s * r, target)
        return w, h, cycles, sram

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE index i (grouped layout) = channel group i // (s r), row i %
        (s r). Row norms (LayerNormalization, also decomposed; Pr > 0): the
        group's block of the C leading rows x segment i % r of the W
        trailing elements. The others: the group's channels (LRN: with the
        window's neighbours, `input_channels`) of row group i % s's block of
        the N H rows (samples x the first spatial axis), the rest whole. A
        PE row's box is the hull of its PEs' (wsec.ir.cuts.grouped_rows),
        over the value flattened where `input_view` says so."""
        return view_rows(self._pe_boxes(dims, knobs, shape), shape, MAX_COLUMN)

    def cells(self, dims: Dims, knobs: Knobs) -> tuple[np.ndarray, np.ndarray]:
        """(channel group, row) of every PE index i of the grouped layout:
        channel-major (group i // (s r), row i % (s r)), or for an LRN
        whose rows read less so, row-major in a snake (`lrn_snake`)."""
        c, s, r = int(knobs["c"]), int(knobs["s"]), int(knobs.get("r", 1))
        i = np.arange(c * s * r)
        if _snake(dims, c, s, r):
            row, t = i // c, i % c
            return np.where(row % 2, c - 1 - t, t), row
        return i // (s * r), i % (s * r)

    def pe_index(self, dims: Dims, knobs: Knobs, group: np.ndarray, row: np.ndarray
                 ) -> np.ndarray:
        """The PE index of channel group `group` and row `row` (`cells`
        inverted)."""
        c, s, r = int(knobs["c"]), int(knobs["s"]), int(knobs.get("r", 1))
        group, row = np.asarray(group, np.int64), np.asarray(row, np.int64)
        if _snake(dims, c, s, r):
            return row * c + np.where(row % 2, c - 1 - group, group)
        return group * (s * r) + row

    def _pe_boxes(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """(c s r, 2, ndim): the box of the input (of `shape`) PE index i
        reads (input_cut); None where the norm's rows are not cut."""
        return _norm_boxes(dims, knobs, shape, *self.cells(dims, knobs))

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        C = dims["C"]
        full = [slice(0, n) for n in weight_shape]
        r = knobs.get("r", 1)
        n = knobs["c"] * knobs["s"] * r
        i = grouped_index(px, py, rect, n)
        if i < n and _snake(dims, int(knobs["c"]), int(knobs["s"]), int(r)):
            cg, cr = self.cells(dims, knobs)
            group, row = int(cg[i]), int(cr[i])
        else:
            group, row = divmod(i, knobs["s"] * r)
        if dims["Pc"] and weight_shape and int(np.prod(weight_shape)) == C and C > 1:
            ax = next(i for i, n in enumerate(weight_shape) if n == C)
            full[ax] = block(C, knobs["c"], group)
        if r > 1 and weight_shape and weight_shape[-1] == dims["W"] and \
                int(np.prod(weight_shape)) == dims["W"]:
            full[-1] = block(dims["W"], r, row % r)  # row parameters split like the row
        return tuple(full)
    def body_cut(self, kernel: Kernel, value: str, ops: Operands) -> np.ndarray | None:
        """A LayerNorm as older exporters decompose it (ReduceMean, Sub,
        ...) reads its data input twice: the first ReduceMean sums each row
        segment and the Sub takes the mean from the same elements, on the
        same PE (wsec.backends.sim_reduce.decomposed_ln). A value read twice
        has no one box per row in general (wsec.ir.kernels.input_cut leaves
        it flat); here both reads are the row segment input_cut declares, so
        its lanes carry that. Routed only: a weight-streaming phase keeps
        holding the value as before. None for anything else."""
        body = kernel.body
        if not ops.routed or not kernel.knobs or not body or body[0].op != "ReduceMean" \
                or not body[0].inputs or body[0].inputs[0] != value \
                or ops.const(value) is not None:
            return None
        shape = tuple(int(n) for n in ops.shape(value))
        if any(n.op not in ("ReduceMean", "Sub") or list(n.inputs).index(value) != 0
               for n in body if value in n.inputs):
            return None  # read as something other than the rows' data
        return self.input_cut(kernel.dims, kernel.knobs, shape)

    def body_view(self, kernel: Kernel, value: str, ops: Operands) -> tuple[int, ...] | None:
        """The view body_cut's boxes are over: input_cut's (input_view: the
        value flattened where its rows' reads are tighter so)."""
        if self.body_cut(kernel, value, ops) is None:
            return None
        return self.input_view(kernel.dims, kernel.knobs,
                               tuple(int(n) for n in ops.shape(value)))

    def output_rows(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                    ) -> np.ndarray | None:
        """The norm's output is its input's shape, and each element ends on
        the PE that read it (its channel group's row, or its row's segment):
        the input's boxes without the LRN window's neighbour channels. Only
        for an operand as large as the output (the shape says the layout)."""
        numel = dims["C"] * dims["W"] * (1 if dims["Pr"] else dims["N"] * dims["H"])
        if int(np.prod(shape, dtype=np.int64)) != numel:
            return None
        pe = _norm_boxes({**dims, "L": 1}, knobs, shape, *self.cells(dims, knobs))
        return None if pe is None else grouped_rows(pe, MAX_COLUMN)

    def input_channels(self, dims: Dims, knobs: Knobs, group: int) -> tuple[int, int]:
        """Channels [start, stop) channel group `group` holds of its input:
        its own block plus the LRN window's neighbours ((L - 1) // 2 below,
        the rest above), clipped to the tensor."""
        return _held_channels(dims, int(knobs["c"]), group)


def _norm_boxes(dims: Dims, knobs: Knobs, shape: tuple[int, ...], group: np.ndarray,
                row: np.ndarray) -> np.ndarray | None:
    """(PEs, 2, ndim): the box of the input (of `shape`) the PE of channel
    group `group` and row `row` reads (NormKind.input_cut); None where the
    norm's rows are not cut."""
    c, s, r = int(knobs["c"]), int(knobs["s"]), int(knobs.get("r", 1))
    C, W = dims["C"], dims["W"]
    n = group.size
    if dims["Pr"]:
        lead = next((k for k in range(len(shape) + 1)
                     if int(np.prod(shape[:k])) == C), None)
        if lead is None or int(np.prod(shape[lead:])) != W:
            return None
        rb, wb = -(-C // c), -(-W // r)
        return joined(
            flat_hulls(np.minimum(group * rb, C), np.minimum((group + 1) * rb, C),
                       tuple(shape[:lead])),
            flat_hulls(np.minimum((row % r) * wb, W), np.minimum((row % r + 1) * wb, W),
                       tuple(shape[lead:])))
    if len(shape) < 2 or tuple(shape[:2]) != (dims["N"], C):
        return None
    nh = (shape[0], shape[2] if len(shape) >= 4 else 1)
    rows = nh[0] * nh[1]
    hb = -(-rows // s)
    held = np.array([_held_channels(dims, c, g) for g in range(c)], np.int64)
    ch = np.zeros((n, 2, 1), np.int64)
    ch[:, :, 0] = held[group]
    tail = shape[3:] if len(shape) >= 4 else shape[2:]  # whole on every PE
    rest = np.zeros((n, 2, len(tail)), np.int64)
    rest[:, 1] = tail
    hull = flat_hulls(np.minimum(row * hb, rows), np.minimum((row + 1) * hb, rows), nh)
    if len(shape) >= 4:  # [N, C, H, ...]
        return joined(hull[:, :, :1], ch, hull[:, :, 1:], rest)
    return joined(hull[:, :, :1], ch, rest)  # [N, C, ...]: H is 1


def _held_channels(dims: Dims, c: int, group: int) -> tuple[int, int]:
    """NormKind.input_channels: channel group `group`'s block of the C
    channels plus the LRN window's neighbours ((L - 1) // 2 below, the rest
    above), clipped to the tensor."""
    C, L = dims["C"], dims.get("L", 1)
    own = block(C, c, group)
    lo = (L - 1) // 2
    return max(0, own.start - lo), min(C, own.stop + L - 1 - lo)


# the lane pitches an LRN's two orders are compared at (SNAKE_PITCHES: the
# pitches its rows' lanes take where they widen from a shorter source side)
SNAKE_PITCHES = (1, 2, 4, 8)


@functools.lru_cache(maxsize=256)
def _snake_cached(key: tuple[tuple[str, int], ...], c: int, s: int, r: int) -> bool:
    dims = dict(key)
    shape = (dims["N"], dims["C"], dims["H"], dims["W"])
    n = c * s * r
    i = np.arange(n)
    t, rr = i % c, i // c
    orders = ((i // (s * r), i % (s * r)), (np.where(rr % 2, c - 1 - t, t), rr))
    score = []
    for group, row in orders:
        rows = grouped_rows(_norm_boxes(dims, {"c": c, "s": s, "r": r}, shape, group, row),
                            MAX_COLUMN)
        h = rows.shape[0]
        score.append(sum(int(box_elements(union_boxes(rows.reshape(h // k, k, 2, -1))).max())
                         for k in SNAKE_PITCHES if not h % k))
    return score[1] < score[0]


def _snake(dims: Dims, c: int, s: int, r: int) -> bool:
    """Whether an LRN's PEs take their (channel group, row) cells row-major
    in a snake (PE index i: row i // c, channel group i % c, reversed on
    odd rows) rather than channel-major (NormKind.cells).

    Why: an LRN PE reads its channels plus the window's L - 1 neighbours.
    Channel-major, a PE row holds consecutive row groups of one channel
    group, so its box carries that halo once per w PEs of the same channel
    (AlexNet's one channel per group: 5 channels for 1), and a row or lane
    straddling two channel groups spans every input row of both: no pitch's
    lanes were as light as the flat split's and the norm read outside its
    lanes. Row-major, a row's PEs are neighbouring channel groups of one
    row group, so a lane of k rows carries k w blocks and one halo; the
    snake makes a row straddling two row groups hold the same channels of
    both (the last ones of one, reversed the first of the next), not every
    channel. Taken where the busiest lane of its rows at the pitches
    SNAKE_PITCHES weighs less in all (measured, not assumed: with one row
    group the two orders agree); row norms (r > 1) and norms without a
    window keep channel-major."""
    if dims.get("L", 1) <= 1 or dims.get("Pr") or r != 1 or c < 2 or s < 2 \
            or not all(k in dims for k in ("N", "C", "H", "W")):
        return False
    return _snake_cached(tuple(sorted((k, int(v)) for k, v in dims.items())), c, s, r)


def _decomposed_ln_dims(body: Sequence[Node], values: dict[str, Value]) -> Dims:
    """Dims of a LayerNorm decomposed into ReduceMean ... Add (body[0] is the
    first ReduceMean over trailing axes): as LayerNormalization's, with the
    constants of the pattern (eps, 2, scale, bias) replicated on every PE."""
    rm = body[0]
    shape = vtype(values, rm.inputs[0]).shape
    axes = sorted(int(a) % len(shape) for a in rm.attrs.get("axes", [])) or list(
        range(len(shape)))
    if axes != list(range(axes[0], len(shape))):
        raise UnsupportedShape(f"a decomposed LayerNorm over axes {axes} (not trailing)")
    if any(n.op not in DECOMPOSED_LN for n in body):
        raise UnsupportedShape("a decomposed LayerNorm with ops "
                               f"{sorted({n.op for n in body} - DECOMPOSED_LN)}")
    w = int(np.prod(shape[axes[0]:]))
    _, consts, _ = _external(body, values)
    return {"N": 1, "C": max(1, int(np.prod(shape[:axes[0]]))), "H": 1, "W": w, "O": 6,
            "L": 1, "Pc": 0, "Pr": consts, "F": 0, "A": 0, "P": 0}


def softmax_cells(shape: tuple[int, ...], axis: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """(segment, row group) of every PE index i < p of a softmax over `axis`
    (min(p, E) segments of the axis, p // E row groups: SoftmaxKind). The
    indices sit row-major in a near-square rectangle (wsec.ir.cuts.
    spread_rows), so which index holds which pair decides what a PE row
    reads: group-major (i = group * segments + segment) keeps a row's
    segments in one row group, the best order unless the segments wrap
    within a PE row, whose box then spans every segment of two groups;
    segment-major (i = segment * groups + group) gives a row a few whole
    segments of every group, about 1/h of the value. Of the two, the order
    whose busiest PE row reads fewer elements (then fewer in all; ties:
    group-major), so each row's lane carries about its share (measured:
    ViT's attention softmax, 17 segments x 2 groups on 6 x 6 PEs, read the
    whole value on three of its six rows group-major). A PE past the last
    pair reads nothing (segment E or more, group p // E or more)."""
    E = shape[axis]
    pe, pr = min(p, E), max(1, p // E)
    i = np.arange(p)
    group_major = (i % pe, i // pe)
    if pr == 1:
        return group_major
    seg_major = (i // pr, i % pr)
    best, score = group_major, None
    for cells in (group_major, seg_major):
        rows = spread_rows(_softmax_pe_boxes(shape, axis, p, *cells))
        got = box_elements(rows)
        key = (int(got.max()), int(got.sum()))
        if score is None or key < score:
            best, score = cells, key
    return best


def softmax_boxes(shape: tuple[int, ...], axis: int, p: int) -> np.ndarray:
    """(p, 2, ndim): the box PE index i of a softmax over `axis` reads
    (SoftmaxKind.input_cut): its segment of the axis x the hull of its row
    group's rows (consecutive over the other axes, in order), as
    softmax_cells places them."""
    return _softmax_pe_boxes(shape, axis, p, *softmax_cells(shape, axis, p))


def _softmax_pe_boxes(shape: tuple[int, ...], axis: int, p: int, seg: np.ndarray,
                      rg: np.ndarray) -> np.ndarray:
    E = shape[axis]
    other = tuple(n for a, n in enumerate(shape) if a != axis)
    rows = int(np.prod(other))
    pe, pr = min(p, E), max(1, p // E)
    nb, rl = -(-E // pe), -(-rows // pr)
    hull = flat_hulls(np.minimum(rg * rl, rows), np.minimum((rg + 1) * rl, rows), other)
    ax = np.zeros((p, 2, 1), np.int64)
    ax[:, 0, 0], ax[:, 1, 0] = np.minimum(seg * nb, E), np.minimum((seg + 1) * nb, E)
    return joined(hull[:, :, :axis], ax, hull[:, :, axis:])
