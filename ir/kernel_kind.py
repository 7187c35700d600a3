"""The contract every kernel kind of the kernel library fulfils.

A kernel kind lives in one place: its knobs, and for given knobs its
rectangle shape, cycles per sample and SRAM bytes per PE, plus how its
weights are sharded over its PEs. Sizing, placement, the emitter, reports
and the simulator all ask the kind; none re-derives its formulas.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .fabric import Fabric
from .target import Target

Knobs = dict[str, int]
Dims = dict[str, int]


@dataclass(frozen=True)
class Choice:
    """One sized option of a kernel: knobs and what they cost."""

    knobs: tuple[tuple[str, int], ...]
    w: int
    h: int
    cycles: int
    sram: int

    @property
    def area(self) -> int:
        return self.w * self.h

    def knob_dict(self) -> Knobs:
        return dict(self.knobs)


class KernelKind:
    """Base class: subclasses set `name`, `knob_names` and the cost functions."""

    name: str = ""
    knob_names: tuple[str, ...] = ()
    description: str = ""
    # True when the kind computes the ONNX ops of its kernel's body (so a
    # kernel of it needs a body); False for cost-model-only kinds such as
    # the ISPD 2020 contest's
    has_body: bool = False
    # True when each PE of a row reads only its own block's elements of its
    # data input, so a row's box (the hull of its PEs' preimages, which for a
    # strided set such as a transpose's spans nearly the whole value) is not
    # what each PE receives: a data movement's (wsec.ir.kernels.row_read_input)
    forwards_blocks: bool = False

    # --- cost model (scalar) --------------------------------------------
    def shape(self, dims: Dims, knobs: Knobs, target: Target) -> tuple[int, int]:
        """(width, height) in PEs of the kernel's rectangle (unrotated)."""
        raise NotImplementedError

    def cycles(self, dims: Dims, knobs: Knobs, target: Target) -> int:
        """Cycles per sample: the kernel's throughput time for these knobs."""
        raise NotImplementedError

    def sram(self, dims: Dims, knobs: Knobs, target: Target) -> int:
        """Bytes of SRAM the busiest PE of the kernel needs."""
        raise NotImplementedError

    # --- search space ---------------------------------------------------
    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        """Candidate values per knob (1-D int arrays); the search space is
        their Cartesian product. Subclasses should keep it to useful values
        (e.g. divisors and powers of two up to the dimension)."""
        raise NotImplementedError

    def evaluate(self, dims: Dims, knobs: dict[str, np.ndarray],
                 target: Target) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised cost model: arrays of (w, h, cycles, sram) for arrays of
        knob values (broadcast together). The default loops over `shape`,
        `cycles`, `sram`; kinds with large spaces override it with numpy."""
        keys = list(knobs)
        arrs = np.broadcast_arrays(*[np.asarray(knobs[k]) for k in keys])
        flat = [a.reshape(-1) for a in arrs]
        n = flat[0].size if flat else 1
        out = np.zeros((4, n), dtype=np.int64)
        for i in range(n):
            kn = {k: int(flat[j][i]) for j, k in enumerate(keys)}
            w, h = self.shape(dims, kn, target)
            out[:, i] = (w, h, self.cycles(dims, kn, target), self.sram(dims, kn, target))
        shape = arrs[0].shape if arrs else ()
        return tuple(o.reshape(shape) for o in out)  # type: ignore[return-value]

    def choices(self, dims: Dims, target: Target) -> list[Choice]:
        """The Pareto frontier of legal options (fits SRAM and the grid):
        increasing area, strictly decreasing cycles."""
        grid = self.knob_grid(dims, target)
        names = list(self.knob_names)
        mesh = np.meshgrid(*[grid[k] for k in names], indexing="ij")
        flat = {k: m.reshape(-1) for k, m in zip(names, mesh, strict=True)}
        w, h, cyc, mem = self.evaluate(dims, flat, target)
        ok = Fabric.of(target).legal_array(w, h, mem)
        idx = np.nonzero(ok)[0]
        if idx.size == 0:
            return []
        area = (w * h)[idx]
        order = idx[np.lexsort((cyc[idx], area))]
        out: list[Choice] = []
        best = None
        for i in order:
            c = int(cyc[i])
            if best is None or c < best:
                best = c
                out.append(Choice(tuple((k, int(flat[k][i])) for k in names),
                                  int(w[i]), int(h[i]), c, int(mem[i])))
        return out

    def reduction_chain(self, dims: Dims, knobs: Knobs) -> int:
        """How many consecutive PE rows (unrotated y) reduce partial sums into
        one (1: no reduction across PEs); the kernel's route template
        (wsec.ir.templates) chains them."""
        return 1

    def spread_operands(self, dims: Dims, knobs: Knobs, body: Any, outputs: Any,
                        shape_of: Any) -> list[str]:
        """The operands of the fused tail (residuals) the kind's PE rows add
        along the reduction chain as the partial sums pass them, each row a
        part, instead of on the rows owning the result (wsec.ir.library_conv.
        ConvKind.spread_operands). [] (the default): none."""
        return []

    # --- data layout ----------------------------------------------------
    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """Per PE row (unrotated y) of the kernel, the box of its data input
        (a value of `shape`) the row's PEs read: (h, 2, ndim) [start, stop)
        per dim, boxes together covering the value (neighbours may overlap:
        halo). A bundle with one lane per PE row can then carry each row its
        box (wsec.ir.lanes, `cut`) and the row multicast alone delivers
        every PE what it reads. None (the default): the kind's rows do not
        read separable parts, its lanes carry the flat split."""
        return None

    def input_view(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                   ) -> tuple[int, ...] | None:
        """The shape input_cut's boxes are over when not the value's own: a
        reshape of it splitting one axis (wsec.ir.lanes.split_axis; a
        grouped conv's channels as (G, C/G), where a row's block of every
        group is one box). None (the default): the value's shape."""
        return None

    def halo_axis(self, dims: Dims, knobs: Knobs, view: tuple[int, ...]) -> int | None:
        """The axis of the data input's cut view (`view`: the shape
        input_cut's boxes are over) along which neighbouring PE rows' boxes
        overlap by a window's halo, so a cut bundle may carry their disjoint
        cores and the rows pass each other the halo (wsec.ir.halo). None
        (the default): the kind's rows exchange nothing."""
        return None

    def held_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                 ) -> np.ndarray | None:
        """As input_cut, where the PE rows hold their boxes without routed
        lanes (a weight-streaming phase's activations, moved in before it):
        a kind may declare boxes there that it keeps flat when routed (a
        row multicast of them would crowd the links). The default: input_cut."""
        return self.input_cut(dims, knobs, shape)

    def operand_cut(self, dims: Dims, knobs: Knobs, index: int, shape: tuple[int, ...]
                    ) -> np.ndarray | None:
        """As input_cut, for the anchor's input at position `index` > 0
        (a matmul's activation B, a weight gradient's output gradient).
        None (the default): its lanes carry the flat split."""
        return None

    def reads_whole(self, dims: Dims, knobs: Knobs, index: int) -> bool:
        """Whether every PE of the kernel reads all of the anchor's input at
        position `index` (a gather's indices): where its flat lanes leave a
        row without some of it, the rows relay it whole (wsec.ir.relay).
        False (the default): input_cut and operand_cut say what rows read."""
        return False

    def body_cut(self, kernel: Any, value: str, ops: Any) -> np.ndarray | None:
        """As input_cut, for a kind whose rows' boxes depend on the kernel's
        body and constants, not only its dims (a data movement's preimages):
        `kernel` is the IR kernel, `ops` its operands (wsec.ir.movement.
        Operands). None (the default): input_cut and operand_cut say."""
        return None

    def body_view(self, kernel: Any, value: str, ops: Any) -> tuple[int, ...] | None:
        """The shape body_cut's boxes are over when not the value's own: the
        value flattened (wsec.ir.lanes.flattens), where a row's read is a
        flat range of it (a concatenation's input). None (the default):
        the value's shape."""
        return None

    def output_rows(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                    ) -> np.ndarray | None:
        """Per PE row (unrotated y), the box of the anchor's output the row's
        PEs own ((h, 2, ndim) [start, stop); a row owning nothing: an
        all-zero box): where the fused element-wise tail computes each
        element, so a residual or other operand of the tail can be cut per
        row like the data input (wsec.ir.kernels.input_cut). `shape` is the
        operand's (broadcast onto the output: a kind that needs the output's
        shape to say may return None unless it is that). None (the
        default): the kind does not say, the operand's lanes carry the flat
        split."""
        return None

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int, weight_shape:
                     tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        """The slice of weight tensor `weight_index` (position among the
        kernel's constant inputs) held by the PE at offset (px, py) inside the
        kernel's unrotated rectangle, whose (w, h) is `rect` when the caller
        knows it. Default: every PE holds it whole."""
        return tuple(slice(0, d) for d in weight_shape)
