"""The PEs' SRAM during a weight-streaming phase: the streamed tiles.

Why: a stream-mode binary has no weight maps; a phase's weights stream in
and every PE of the phase's rectangle takes the slice the kernel kind's
`weight_shard` gives (docs/binary-format.md section 10), exactly as a
pipeline binary's maps place them. `StreamImages` builds that per-PE
layout (separably, as the emitter does: one row and one column of
`weight_shard` calls, `emit.shard_tiling`) over the streamed array, so the
per-PE executors (sim_exec) run a phase as they run a resident kernel: each
PE computes from its own tile.

A phase's activations are in its PEs' SRAM too (`held`): moved in from
where earlier phases left them (the activation area, backends/activations:
the value must be resident there) before the phase starts, every PE row holds
the box of each input its kind's per-row cut declares (wsec.ir.kernels.
input_cut: a conv row group's channel block and input rows with their
halo, ...), as a pipeline kernel's row receives it from a cut lane; an
input the kind does not cut, each row holds a contiguous share of
(flattened). The executors check every PE's window against its row's
holding (sim_inbox.check_windows): outside a box is a SimError naming the
PE and the element; outside a flat share counts the PE as reading what
would have to be forwarded (`forwarded_pes`), as in pipeline mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from wsec.ir.graph import Kernel
from wsec.ir.kernels import KINDS, input_cut, row_read_input
from wsec.ir.lanes import held_bytes, lane_slices
from wsec.ir.movement import Operands
from wsec.ir.types import DTYPES

from .emit import shard_tiling
from .format import AXIS_CONST, AXIS_X, AXIS_Y, KernelInfo, Program, type_dtype, type_shape
from .sim_base import SimError
from .sim_inbox import Delivery
from .sim_pe import Layout, SramImages, node_of


class StreamImages(SramImages):
    """SRAM images of the phases' PEs, from the streamed weights
    (`streamed[(kernel, weight)]`: the whole array as it streamed in)."""

    def __init__(self, p: Program, streamed: dict[tuple[int, int], np.ndarray]) -> None:
        super().__init__(p)
        self.streamed = streamed
        self._tiles: list[np.ndarray] = []

    def blob(self, bi: int) -> np.ndarray:
        return self._tiles[bi]

    def layout(self, ki: int, wi: int) -> Layout:
        key = (ki, wi)
        if key not in self._layouts:
            self._layouts[key] = self._stream_layout(ki, wi)
        return self._layouts[key]

    def _stream_layout(self, ki: int, wi: int) -> Layout:
        k = self.p.kernels[ki]
        if (ki, wi) not in self.streamed:
            raise SimError(f"phase {ki} (kernel '{k.name}'): no stream descriptor for weight "
                           f"%{k.weights[wi]}")
        full = self.streamed[(ki, wi)]
        shape = tuple(type_shape(self.p.info["values"][k.weights[wi]]))
        kind = KINDS[k.kind]
        uw, uh = k.unrotated_shape
        n = len(shape)

        def shard(px: int, py: int) -> tuple[tuple[int, int], ...]:
            sl = kind.weight_shard(k.dims, k.knobs, wi, shape, px, py, (uw, uh))
            sl = tuple(sl) + tuple(slice(0, d) for d in shape[len(sl):])
            return tuple((a, max(a, b)) for a, b, _ in (s.indices(d) for s, d in
                                                         zip(sl, shape, strict=True)))

        t = shard_tiling(shard, uw, uh)
        start = np.zeros((uh, uw, n), np.int64)
        stop = np.zeros((uh, uw, n), np.int64)
        blob = np.full((uh, uw), -1, np.int64)
        ids: dict[tuple[tuple[int, int], ...], int] = {}

        def tile(key: tuple[tuple[int, int], ...]) -> int:
            if key not in ids:
                ids[key] = len(self._tiles)
                self._tiles.append(np.ascontiguousarray(full[tuple(slice(a, b) for a, b in key)]))
            return ids[key]

        if t.cells is None:
            xi = np.repeat(np.arange(len(t.xruns)), [b - a for a, b, _ in t.xruns])
            yi = np.repeat(np.arange(len(t.yruns)), [b - a for a, b, _ in t.yruns])
            for d, ax in enumerate(t.axes):
                for arr, e in ((start, 0), (stop, 1)):
                    if ax == AXIS_X:
                        arr[:, :, d] = np.array([r[2][d][e] for r in t.xruns])[xi][None, :]
                    elif ax == AXIS_Y:
                        arr[:, :, d] = np.array([r[2][d][e] for r in t.yruns])[yi][:, None]
                    else:
                        assert ax == AXIS_CONST
                        arr[:, :, d] = t.xruns[0][2][d][e]
            pair = np.array([[tile(t.key(i, j)) for i in range(len(t.xruns))]
                             for j in range(len(t.yruns))], np.int64)
            blob[:] = pair[yi][:, xi]
        else:
            for x0, x1, y0, y1, key in t.cells:
                blob[y0:y1, x0:x1] = tile(key)
                for d, (a, b) in enumerate(key):
                    start[y0:y1, x0:x1, d], stop[y0:y1, x0:x1, d] = a, b
        return Layout(blob, start, stop, blob.copy())


def held(p: Program, ki: int, values: Iterable[str],
         consts: Mapping[str, np.ndarray] | None = None) -> dict[str, Delivery]:
    """The activations `values` of phase ki as its PE rows hold them when it
    starts (module docstring): per value a Delivery whose "lane" py is PE
    row py's holding, with the kind's per-row boxes where it cuts the value
    (a data movement's from its body and constants `consts`, as streamed)."""
    k = p.kernels[ki]
    kernel = _ir_kernel(k)
    cs = dict(consts or {})
    ops = Operands(lambda n: tuple(type_shape(p.info["values"][n])), cs.get)
    uw, uh = k.unrotated_shape
    row = np.repeat(np.arange(uh, dtype=np.int32)[:, None], uw, axis=1)
    out = {}
    for v in values:
        shape = tuple(type_shape(p.info["values"][v]))
        numel = int(np.prod(shape, dtype=np.int64))
        boxes = input_cut(kernel, v, shape, ops) if shape else _every_row(uh)
        if boxes is not None and boxes.shape[0] != uh:
            raise SimError(f"phase {ki} (kernel '{k.name}', {k.kind}): its kind cuts %{v} into "
                           f"{boxes.shape[0]} row boxes, the phase has {uh} PE rows")
        out[v] = Delivery(v, -1, -1, numel, lane_slices(numel, uh), row, shape, boxes)
    return out


def _every_row(uh: int) -> np.ndarray:
    """A scalar's holding: every PE row holds its one element (its window,
    sim_inbox.window_shape), as the schedule's move counts it (an uncut
    value's share, ceil(1 / PEs), is the element on every PE)."""
    boxes = np.zeros((uh, 2, 1), np.int64)
    boxes[:, 1] = 1
    return boxes


def _ir_kernel(k: KernelInfo) -> Kernel:
    """The binary's kernel as the IR's (what the kinds' cuts read)."""
    return Kernel(k.name, "kernel", list(k.inputs), list(k.outputs), kind=k.kind,
                  dims=dict(k.dims), body=[node_of(d) for d in k.body], knobs=dict(k.knobs))


def held_wavelets(p: Program, ki: int, hold: Mapping[str, Delivery]) -> int:
    """Wavelets per sample the busiest PE of phase ki receives to hold its
    inputs as `held` declares them (wsec.ir.lanes.held_bytes): of the data
    input every PE of a row reads its row's box of (row_read_input), that
    box, of the others their 1/(h w) share (their row boxes are hulls of
    what the row's PEs read apart). The phase's
    `move` estimate (schedule-phases) counts the same holdings from the
    kinds' cuts, plus the outputs' share; `wsec run --stats` shows both, so
    a phase moving more than its schedule said is seen."""
    k = p.kernels[ki]
    uw, uh = k.unrotated_shape
    data = row_read_input(_ir_kernel(k))  # the others' row boxes are hulls of PEs' parts
    got = held_bytes(((d.numel, DTYPES[type_dtype(p.info["values"][v])].itemsize,
                       d.boxes if v == data else None) for v, d in hold.items()), uw, uh)
    return -(-got // p.target.wavelet_bytes)
