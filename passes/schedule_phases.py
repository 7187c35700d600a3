"""schedule-phases: the weight-streaming back end (DESIGN.md section 1, issue 5).

Why: a model whose weights exceed the wafer's SRAM cannot be layer-pipelined.
Instead every kernel becomes a *phase*; phases run one after another, each
mapped onto the whole grid (or the smallest region reaching the phase's best
time), its weights streamed in through the West-edge I/O channels while the
activations stay in PE SRAM between phases. This one pass sizes, places and
allocates every kernel for that mode.

Cost model of a phase (all figures per sample, in cycles):
- compute: the kind's `cycles` for the chosen knobs;
- stream: weight bytes / the weight-stream bandwidth: the external weight
  store's link (Target.store_bytes_per_second, 150 GB/s for a CS-2),
  unless the West-edge I/O rows (io_bytes_per_cycle_per_edge_pe x grid
  height) are narrower (every non-splat constant streams);
- move: activations stay where their producer left them, spread evenly over
  all PEs; the phase must pull its inputs and push its outputs into its own
  layout. Each PE's ramp moves one wavelet per cycle: the busiest PE
  receives its row's box of every input its kind cuts (a conv row's window
  of every channel reaches each PE of the row) and the 1/area share of the
  rest and of the outputs (`_held_move`; bytes / (area x wavelet) is a
  lower bound that ranks the candidates first). Data entering a region
  smaller than the grid crosses its perimeter links:
  bytes x (1 - area/grid) / (perimeter x wavelet). The simulator checks the
  estimate against the rows' holdings (`wsec run --stats`);
- phase time = max(compute, stream, move).
A kernel whose one-pass layout does not fit a PE (e.g. a LayerNorm over
2048 rows of 6144 when the kind puts rows along x only) runs its independent
rows (ROW_DIMS) in 2, 4, 8, ... consecutive sub-passes, sized by the kind
for the smaller problem; compute and stream (weights re-streamed per pass)
scale with the pass count.

SRAM model of a streamed weight: a PE never holds its whole shard, only a
double-buffered tile of it (`tile_bytes`, default 1 KiB per weight). The
kind's SRAM figure counts the resident shard, so a choice needs
max(kind SRAM - resident shards, code) + sum over weights of
2 x min(tile, shard), where each resident shard is the busiest PE's slice by
the kind's own `weight_shard` (probed as `allocate` does). Candidates are
tried fastest first (then smallest area); a cheap lower bound prunes the
rest. The need must fit the PE's SRAM minus the activation area.

Activations: an interval allocation over the phase sequence. Each value
spread over all PEs (ceil(bytes / PEs) per PE, 16-byte aligned) lives from
its producer's phase to its last consumer's (model inputs from phase 0,
model outputs to the end), first-fit at the top of every PE's SRAM
(`place_activations`, recorded in module.attrs["activations"] and the
binary's META `activations`, which the simulator holds the phases to); the
peak is reserved in every phase's SRAM map as region "activations". Too
many live activations is a loud error.

Repetition: kernels with the same structural signature (`wsec.ir.repeats.kernel_signature`:
kind, dims, body ops and types, weights' types not values) are sized once
and the result reused, so 44 identical transformer layers cost one layer's
sizing. `find_repeats` is recorded in `module.attrs["repeats"]` for reports.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from wsec.ir.fabric import Fabric
from wsec.ir.graph import HOST, Kernel, Module, Rect, SramRegion
from wsec.ir.kernels import KINDS, input_cut, kind_of, row_read_input
from wsec.ir.lanes import held_bytes
from wsec.ir.library_common import CODE_BYTES, drop_port_dims
from wsec.ir.movement import Operands
from wsec.ir.repeats import find_repeats, kernel_signature
from wsec.ir.sizing import evaluate_all
from wsec.ir.target import Target
from wsec.ir.training import is_training
from wsec.ir.types import DTYPES

from .allocate import largest_shard
from .base import LayoutInfeasible, Pass, PassContext, PassError, check_range

ALIGN = 16


def _align(n: int) -> int:
    return -(-int(n) // ALIGN) * ALIGN


@dataclass(frozen=True)
class PhasePlan:
    """The sized phase of one kernel signature."""

    knobs: tuple[tuple[str, int], ...]
    w: int
    h: int
    rotated: bool
    compute: int
    stream: int
    move: int
    sram: int  # per PE, without the activation area
    stream_buf: int  # per PE: the double-buffered weight tiles
    passes: int = 1  # consecutive sub-passes over the kind's independent rows

    @property
    def cycles(self) -> int:
        return max(self.compute, self.stream, self.move)


@lru_cache(maxsize=1024)
def _grid_eval(kind_name: str, dims: tuple[tuple[str, int], ...], target: Target
               ) -> tuple[np.ndarray, ...]:
    """Every knob setting of a kind that fits the grid: (knobs, w, h, cycles, sram)."""
    names = list(KINDS[kind_name].knob_names)
    flat, (w, h, cyc, mem) = evaluate_all(kind_name, dims, target)
    ok = Fabric.of(target).fits_array(w, h)
    knobs = (np.stack([flat[n] for n in names], axis=1) if names
             else np.zeros((w.size, 0), np.int64))
    return knobs[ok], w[ok], h[ok], cyc[ok], mem[ok]


def weight_bytes(module: Module, k: Kernel, target: Target) -> int:
    """Bytes of the non-splat constants kernel `k` reads, in the device dtype
    for floats (what streams in for its phase)."""
    total = 0
    for v in dict.fromkeys(i for i in k.inputs if i):
        val = module.values.get(v)
        if val is None or val.const is None or val.const.is_splat:
            continue
        dt = val.type.dtype
        item = DTYPES[target.dtype].itemsize if dt.startswith("f") else DTYPES[dt].itemsize
        total += val.type.numel * item
    return total


def _io_bytes(module: Module, k: Kernel) -> int:
    """Activation bytes the kernel reads and writes (non-constant values)."""
    names = [i for i in dict.fromkeys(k.inputs) if i and module.values[i].const is None]
    return sum(module.values[n].type.nbytes for n in names + list(k.outputs) if n)


def _held_move(module: Module, k: Kernel, dims: dict[str, int], knobs: dict[str, int], w: int,
               h: int, wl: int) -> int:
    """Wavelets per sample the busiest PE of k's phase at these knobs (w x h
    PEs, unrotated) receives and sends: its row's box of the data input
    where every PE of a row reads its row's box (`row_read_input`: a conv
    row's window of every channel), the 1/(w h) share of the other inputs
    and of the outputs (wsec.ir.lanes.held_bytes). Spreading the bytes evenly over the PEs
    (the `ramp` bound) undercounts a cut input by up to the row's width;
    the simulator checks the phase against the same holdings
    (sim_stream_pe.held_wavelets)."""
    probe = copy.copy(k)
    probe.knobs, probe.dims = knobs, dims
    ops = dataclasses.replace(Operands.of_module(module), routed=False)
    data = row_read_input(k)
    holdings = []
    for v in dict.fromkeys(i for i in k.inputs if i):
        val = module.values[v]
        if val.const is not None:
            continue
        shape = tuple(val.type.shape)
        boxes = input_cut(probe, v, shape, ops) if shape and v == data else None
        if boxes is not None and boxes.shape[0] != h:
            boxes = None  # no one box per PE row: its share, as the simulator counts it
        holdings.append((val.type.numel, val.type.nbytes // max(val.type.numel, 1), boxes))
    out = sum(module.values[o].type.nbytes for o in k.outputs if o)
    got = held_bytes(holdings, w, h) + -(-out // (w * h))
    return -(-got // wl)


def _resident(module: Module, k: Kernel, dims: dict[str, int], knobs: dict[str, int], w: int,
              h: int, target: Target) -> list[int]:
    """Bytes of each non-splat constant the busiest PE would hold resident
    at these knobs (the kind's `weight_shard`, probed as `allocate` does)."""
    probe = copy.copy(k)
    probe.knobs, probe.dims = knobs, dims
    out = []
    consts = [i for i in k.inputs if i and module.values[i].const is not None]
    for idx, v in enumerate(consts):
        val = module.values[v]
        if v in consts[:idx] or val.const is None or val.const.is_splat:
            continue
        item = DTYPES[target.dtype].itemsize  # as the kinds' SRAM models count constants
        out.append(largest_shard(probe, idx, val.type.shape, w, h) * item)
    return out


MAX_TRIES = 64  # candidates checked exactly, fastest first, before giving up
# fitting candidates whose rows' holdings are counted (`_held_move`), fastest
# first by the even-spread bound, before the fastest of them is taken
HELD_TRIES = 6


# The dim of each kind whose rows are independent: a phase may process them in
# `passes` consecutive sub-passes (temporal tiling) when one pass does not fit.
ROW_DIMS = {"norm": "C", "matmul": "M", "elementwise": "E", "datamove": "E",
            "softmax": "rows"}


def plan_phase(module: Module, k: Kernel, target: Target, budget: int, tile: int,
               batch: int = 1) -> PhasePlan:
    """The fastest phase of kernel `k` whose per-PE SRAM fits `budget`: one
    pass if possible, else its independent rows (ROW_DIMS) in 2, 4, 8, ...
    consecutive passes, each re-streaming the phase's weights. `batch`
    samples share one weight stream (a training micro-batch): fastest means
    the least max(batch x compute, stream, batch x move)."""
    row = ROW_DIMS.get(k.kind)
    total = int(k.dims.get(row, 1)) if row else 1
    passes = 1
    while True:
        try:
            return _plan(module, k, target, budget, tile, passes, batch)
        except LayoutInfeasible:
            if row is None or passes >= total:
                raise
            passes = min(passes * 2, total)


def _plan(module: Module, k: Kernel, target: Target, budget: int, tile: int,
          passes: int, batch: int = 1) -> PhasePlan:
    dims = dict(k.dims)
    dims.pop("stash", None)  # pipeline-mode FIFOs; phases keep activations in their own area
    row = ROW_DIMS.get(k.kind)
    if passes > 1 and row:
        dims[row] = -(-dims[row] // passes)
    knobs, w, h, cyc, mem = _grid_eval(k.kind, tuple(sorted(dims.items())), target)
    cyc = cyc * passes
    where = f"kernel '{k.name}' ({k.kind}, from {', '.join(k.origin[:2]) or '?'})"
    if w.size == 0:
        raise LayoutInfeasible(f"{where} has no knob setting that fits the {target.width}x"
                               f"{target.height} grid of {target.name}; use a larger target or "
                               f"grid")
    wb = weight_bytes(module, k, target)
    area = w * h
    stream = int(np.ceil(wb * passes / Fabric.of(target).weight_stream_bytes_per_cycle))
    io = _io_bytes(module, k)
    wl = target.wavelet_bytes
    ramp = -(-io // (area * wl))
    cross = np.ceil(io * (1.0 - area / target.pes) / (2 * (w + h) * wl)).astype(np.int64)
    move = np.maximum(ramp, cross)
    t = np.maximum(np.maximum(cyc * batch, stream), move * batch)
    # optimistic filter: a PE holds at least wb / area of the weights resident
    wk = sum(module.values[v].type.numel for v in dict.fromkeys(k.inputs) if v
             and module.values[v].const is not None and not module.values[v].const.is_splat
             ) * DTYPES[target.dtype].itemsize  # as the kinds' SRAM models count them
    least = -(-wk // area)
    lower = np.maximum(mem - wk, CODE_BYTES) + 2 * np.minimum(least, tile)
    idx = np.nonzero(lower <= budget)[0]
    idx = idx[np.lexsort((mem[idx], area[idx], t[idx]))]
    names = kind_of(k).knob_names
    best_need = None
    best: tuple[tuple[int, int, int], PhasePlan] | None = None
    tries = HELD_TRIES
    for i in idx[:MAX_TRIES].tolist():
        if best is not None and (int(t[i]) >= best[0][0] or not tries):
            break  # t is a lower bound of the time with the rows' holdings moved, and
            # the candidates of one t come smallest first
        kn = {n: int(knobs[i, j]) for j, n in enumerate(names)}
        res = _resident(module, k, dims, kn, int(w[i]), int(h[i]), target)
        buf = sum(2 * min(r, tile) for r in res)
        need = max(int(mem[i]) - sum(res), CODE_BYTES) + buf
        if need <= budget:
            wi, hi = int(w[i]), int(h[i])
            mv = max(int(move[i]), _held_move(module, k, dims, kn, wi, hi, wl)
                     if passes == 1 else 0)
            ti = max(int(cyc[i]) * batch, int(stream), mv * batch)
            tries -= 1
            if best is None or (ti, wi * hi, int(mem[i])) < best[0]:
                rotated = Fabric.of(target).needs_rotation(wi, hi)
                best = ((ti, wi * hi, int(mem[i])),
                        PhasePlan(tuple(kn.items()), wi, hi, rotated, int(cyc[i]), int(stream),
                                  mv, need, buf, passes))
            continue
        best_need = need if best_need is None else min(best_need, need)
    if best is not None:
        return best[1]
    if best_need is None:
        best_need = int(lower.min())
    raise LayoutInfeasible(f"{where} needs at least {best_need} B of SRAM per PE in stream mode "
                    f"but only {budget} B of a PE's {target.sram_bytes} B are left beside "
                    f"the live activations (shortfall {best_need - budget} B); use a "
                    f"larger target or a smaller sequence or batch")


def allocate_activations(module: Module, kernels: list[Kernel], target: Target
                         ) -> tuple[list[tuple[str, int, int, int, int]], int]:
    """First-fit interval allocation of every activation over the phases
    (`place_activations`): (value, first phase, last phase, offset, bytes
    per PE) each, and the peak bytes per PE. Offsets are inside the
    activation area, which sits at the top of every PE's SRAM."""
    end = len(kernels)
    live: dict[str, list[int]] = {}
    for name in module.inputs:
        live[name] = [0, 0]
    for i, k in enumerate(kernels):
        for o in k.outputs:
            if o:
                live[o] = [i, i]
        for v in k.inputs:
            if v in live:
                live[v][1] = max(live[v][1], i)
    for name in module.outputs:
        if name in live:
            live[name][1] = end
    for e in module.edges:  # values leaving to the host stay to the end
        if HOST in e.dsts and e.value in live:
            live[e.value][1] = end

    def too_big(name: str, a: int, peak: int, total: int) -> None:
        if peak > target.sram_bytes - CODE_BYTES:
            who = kernels[a].name if a < len(kernels) else "the model output"
            raise LayoutInfeasible(
                f"stream mode: at phase {a} (kernel '{who}') the live activations need "
                f"{peak} B per PE ({total * target.pes:,} B over the wafer) but a PE has "
                f"{target.sram_bytes} B and needs {CODE_BYTES} B for code; use a larger "
                f"target or grid, or a smaller sequence or batch")

    spans = [(name, a, b) for name, (a, b) in live.items()]
    return place_activations(spans, lambda n: spread_bytes(module, n, 1, target), too_big)


def spread_bytes(module: Module, name: str, batch: int, target: Target) -> int:
    """Bytes per PE of `batch` samples of activation `name` spread evenly
    over every PE of the grid (16-byte aligned)."""
    return _align(-(-batch * module.values[name].type.nbytes // target.pes))


def place_activations(spans: list[tuple[str, int, int]], size: Callable[[str], int],
                      check: Callable[[str, int, int, int], None] | None = None
                      ) -> tuple[list[tuple[str, int, int, int, int]], int]:
    """First-fit interval allocation in the activation area of every PE:
    each (value, first phase, last phase) span gets the lowest offset no
    span alive at its first phase occupies; returns (value, first, last,
    offset, bytes per PE) per span, by first phase, and the peak bytes per
    PE. `check(value, first, peak, live bytes per PE)` runs when the peak
    grows (to raise where it no longer fits). A binary records
    these (META `activations`): the simulator keeps each value resident
    exactly there (wsec.backends.sim_weight_stream)."""
    active: list[tuple[int, int, int]] = []  # (last phase, offset, size)
    out = []
    peak = 0
    for name, a, b in sorted(spans, key=lambda s: (s[1], s[0])):
        per_pe = size(name)
        active = [x for x in active if x[0] >= a]
        off = 0
        for _, o, s in sorted(active, key=lambda x: x[1]):
            if off + per_pe <= o:
                break
            off = max(off, o + s)
        active.append((b, off, per_pe))
        out.append((name, a, b, off, per_pe))
        if off + per_pe > peak:
            peak = off + per_pe
            if check is not None:
                check(name, a, peak, sum(s for _, _, s in active))
    return out, peak


def activation_records(placed: list[tuple[str, int, int, int, int]]) -> list[list[object]]:
    """module.attrs["activations"]: [value, first, last, offset, bytes]."""
    return [[name, int(a), int(b), int(off), int(size)] for name, a, b, off, size in placed]


@dataclass(frozen=True)
class SchedulePhases(Pass):
    """Weight streaming: one phase per kernel, sized for the whole grid."""

    name = "schedule-phases"
    requires = ("kernels",)
    ensures = ("sized", "placed", "allocated", "scheduled")
    tile_bytes: int = 1024

    def __post_init__(self) -> None:
        check_range(self, "tile_bytes", 1)

    def run(self, module: Module, ctx: PassContext) -> None:
        target = ctx.target
        if is_training(module.attrs):
            raise PassError("schedule-phases: the module is a training step; run "
                            "schedule-train instead")
        kernels = list(module.kernels())
        drop_port_dims(kernels)
        placed, peak = allocate_activations(module, kernels, target)
        budget = target.sram_bytes - peak
        act_region = SramRegion("activations", target.sram_bytes - peak, peak) if peak else None
        plans: dict[str, PhasePlan] = {}
        phases = []
        for k in kernels:
            sig = kernel_signature(k, module)
            plan = plans.get(sig)
            if plan is None:
                plan = plans[sig] = plan_phase(module, k, target, budget, self.tile_bytes)
            w, h = (plan.h, plan.w) if plan.rotated else (plan.w, plan.h)
            k.knobs = dict(plan.knobs)
            k.rotated = plan.rotated
            k.rect = Rect(0, 0, w, h)
            wb = weight_bytes(module, k, target)
            k.cost = {"cycles": plan.cycles, "compute": plan.compute, "stream": plan.stream,
                      "move": plan.move, "sram": plan.sram, "w": plan.w, "h": plan.h,
                      "passes": plan.passes}
            regions, off = [], 0
            for name, size in (("stream", plan.stream_buf), ("code", CODE_BYTES),
                               ("buffers", plan.sram - plan.stream_buf - CODE_BYTES)):
                if size > 0:
                    regions.append(SramRegion(name, off, _align(size)))
                    off += _align(size)
            if act_region is not None:
                if off > act_region.offset:
                    raise PassError(f"kernel '{k.name}' ({k.kind}) needs {off} B of SRAM per PE "
                                    f"but only {act_region.offset} B are left beside "
                                    f"{peak} B of live activations")
                regions.append(act_region)
            k.sram = regions
            phases.append({"kernel": k.name, "cycles": plan.cycles, "compute": plan.compute,
                           "stream": plan.stream, "move": plan.move, "weight_bytes": wb,
                           "pes": w * h, "passes": plan.passes})
        for e in module.edges:  # activations stay in SRAM: nothing is routed
            e.bundles = None
        module.attrs["mode"] = "stream"
        module.attrs.setdefault("mode_reason", "stream (forced by running schedule-phases)")
        module.attrs["phases"] = phases
        module.attrs["delta_t"] = int(sum(p["cycles"] for p in phases))
        module.attrs["activation_bytes_per_pe"] = int(peak)
        module.attrs["activations"] = activation_records(placed)
        module.attrs["phase_plans"] = len(plans)
        module.attrs["repeats"] = [[g.start, g.period, g.count] for g in find_repeats(module)]
        module.properties.discard("routed")
