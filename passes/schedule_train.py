"""schedule-train: the weight-streaming schedule of a training step (the
module the autodiff pass derived), instead of schedule-phases.

How one wafer trains a model whose weights it cannot hold:
- forward phases, then backward phases, one kernel each over the whole
  grid; a phase streams its weights in from the external weight store (so
  a layer's weights come in twice: for its forward and its input-gradient
  phases) and streams its weight gradients out;
- the optimizer runs in the weight store, off the wafer, once per step:
  update kernels are *store steps*, not phases;
- a phase processes a micro-batch of B samples per weight stream:
  phase time = max(B x compute, weights in, gradients out, B x activation
  movement), all over the store's link (Target.store_bytes_per_second);
- activations stay on the wafer between phases, B samples' worth. Three
  policies: keep every forward activation the backward pass reads; keep
  only the outputs of kernels whose weights cost more to re-stream than
  their outputs cost to keep, and recompute the rest (re-running those
  forward kernels just before the backward phase that needs them); or keep
  only the layer boundaries (values a forward kernel SKIP or more kernels
  later reads: residual streams) and recompute each layer, weights streamed
  a third time, before its backward phases;
- B is the largest micro-batch whose live activations (summed over the
  phase sequence, then checked by a first-fit allocation) leave every phase
  room for its buffers, capped where every phase turns compute-bound
  (`micro_batch` fixes it), under the policy that trains the most samples
  per second.
The schedule goes to `module.attrs`: `phases` (in order, recomputations
included), `store_steps`, `micro_batch`, `train_schedule` (the totals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Kernel, Module
from wsec.ir.library_common import CODE_BYTES, drop_port_dims
from wsec.ir.repeats import kernel_signature
from wsec.ir.target import Target
from wsec.ir.training import is_training, role_of_kernel

from .base import LayoutInfeasible, Pass, PassContext, PassError, check_choice, check_range
from .schedule_phases import (
    ALIGN,
    PhasePlan,
    activation_records,
    place_activations,
    plan_phase,
    spread_bytes,
    weight_bytes,
)

MAX_MICRO_BATCH = 4096


def _align(n: int) -> int:
    return -(-int(n) // ALIGN) * ALIGN


@dataclass
class Slot:
    """One entry of the phase sequence: a kernel run as a forward, backward
    or recompute phase."""

    kernel: Kernel
    role: str


def _acts(module: Module, k: Kernel) -> list[str]:
    return [i for i in dict.fromkeys(k.inputs) if i and module.values[i].const is None]


def split_kernels(kernels: list[Kernel]) -> tuple[list[Kernel], list[Kernel], list[Kernel]]:
    """(forward incl. loss, backward, optimizer) kernels, each in order."""
    fwd, bwd, opt = [], [], []
    for k in kernels:
        roles = {role_of_kernel([n]) for n in k.origin}
        if roles == {"update"}:
            opt.append(k)
        elif role_of_kernel(k.origin) in ("dgrad", "wgrad"):
            bwd.append(k)
        else:
            fwd.append(k)
    return fwd, bwd, opt


def cheap(module: Module, k: Kernel, target: Target) -> bool:
    """Worth recomputing rather than keeping: its weights stream in fewer
    bytes than its outputs would occupy."""
    out = sum(module.values[o].type.numel for o in k.outputs) * _item(target)
    return weight_bytes(module, k, target) <= out


def _item(target: Target) -> int:
    from wsec.ir.types import DTYPES

    return DTYPES[target.dtype].itemsize


SKIP = 4  # a value read this many forward kernels later is a checkpoint (a residual)


def checkpoints(module: Module, fwd: list[Kernel]) -> set[str]:
    """Forward values with a forward reader at least SKIP kernels later: the
    residual streams of transformers and ResNets, the layer boundaries from
    which one layer at a time can be recomputed."""
    pos = {k.name: i for i, k in enumerate(fwd)}
    last: dict[str, int] = {}
    for i, k in enumerate(fwd):
        for v in _acts(module, k):
            last[v] = max(last.get(v, -1), i)
    return {o for k in fwd for o in k.outputs if last.get(o, -1) - pos[k.name] >= SKIP}


def sequence(module: Module, fwd: list[Kernel], bwd: list[Kernel], target: Target,
             policy: str) -> list[Slot]:
    """Forward phases, then backward phases with recomputations inserted
    before the first backward phase that reads a value not kept. Kept:
    everything (`keep`), the outputs of kernels whose weights cost more to
    re-stream than their outputs to keep (`recompute`), or only the layer
    boundaries (`checkpoint`: a layer is recomputed, weights and all, just
    before its backward phases)."""
    seq = [Slot(k, "forward") for k in fwd]
    if policy == "keep":
        return seq + [Slot(k, "backward") for k in bwd]
    producer = {o: k for k in fwd for o in k.outputs}
    avail = set(module.inputs)
    if policy == "checkpoint":
        avail |= checkpoints(module, fwd)
    else:
        avail |= {o for k in fwd if not cheap(module, k, target) for o in k.outputs}

    def ensure(v: str) -> None:
        if v in avail or v not in producer:
            return
        fk = producer[v]
        for i in _acts(module, fk):
            ensure(i)
        seq.append(Slot(fk, "recompute"))
        avail.update(fk.outputs)

    for k in bwd:
        for i in _acts(module, k):
            ensure(i)
        seq.append(Slot(k, "backward"))
        avail.update(k.outputs)
    return seq


def intervals(module: Module, seq: list[Slot], streamed_out: set[str]
              ) -> list[tuple[str, int, int]]:
    """(value, first, last position) of every activation occurrence: a
    value lives from the phase that (re)computes it to its last reader
    before it is recomputed; streamed-out values only in their phase, model
    outputs kept to the end."""
    end = len(seq)
    last_def: dict[str, int] = {v: 0 for v in module.inputs}
    spans: dict[tuple[str, int], int] = {(v, 0): 0 for v in module.inputs}
    for p, s in enumerate(seq):
        for i in _acts(module, s.kernel):
            d = last_def.get(i)
            if d is not None:
                spans[(i, d)] = max(spans[(i, d)], p)
        for o in s.kernel.outputs:
            last_def[o] = p
            spans[(o, p)] = p
    for o in module.outputs:
        if o in last_def and o not in streamed_out:
            spans[(o, last_def[o])] = end
    return [(v, d, e) for (v, d), e in spans.items()]


def first_fit(module: Module, spans: list[tuple[str, int, int]], batch: int, target: Target,
              streamed_out: set[str]) -> tuple[list[tuple[str, int, int, int, int]], int]:
    """A first-fit interval allocation (schedule_phases.place_activations)
    of `batch` samples' values spread over all PEs, values streamed out as
    they are produced left out: the placed spans and the peak bytes per PE."""
    keep = [sp for sp in spans if not (sp[0] in streamed_out and sp[1] == sp[2])]
    return place_activations(keep, lambda n: spread_bytes(module, n, batch, target))


@dataclass
class Attempt:
    policy: str
    batch: int
    seq: list[Slot]
    plans: dict[str, PhasePlan]
    peak: int
    step_cycles: int


def _out_bytes(module: Module, k: Kernel, streamed_out: set[str]) -> int:
    return sum(module.values[o].type.nbytes for o in k.outputs if o in streamed_out)


def phase_cycles(plan: PhasePlan, batch: int, out_cycles: int) -> int:
    return max(batch * plan.compute, plan.stream, out_cycles, batch * plan.move)


def _try(module: Module, seq: list[Slot], target: Target, tile: int, batch: int,
         streamed_out: set[str], policy: str) -> Attempt | str:
    """The schedule at this micro-batch, or why it does not fit."""
    spans = intervals(module, seq, streamed_out)
    _, peak = first_fit(module, spans, batch, target, streamed_out)
    budget = target.sram_bytes - peak
    if budget < CODE_BYTES:
        return (f"the live activations need {peak:,} B per PE, leaving less than a phase's "
                f"{CODE_BYTES} B of code")
    plans: dict[str, PhasePlan] = {}
    bw = Fabric.of(target).weight_stream_bytes_per_cycle
    total = 0
    for s in seq:
        sig = kernel_signature(s.kernel, module)
        if sig not in plans:
            try:
                plans[sig] = plan_phase(module, s.kernel, target, budget, tile, batch)
            except LayoutInfeasible as e:
                return (f"the live activations need {peak:,} B per PE, and then "
                        f"{str(e).splitlines()[0]}")
        out = int(np.ceil(_out_bytes(module, s.kernel, streamed_out) / bw))
        total += phase_cycles(plans[sig], batch, out)
    return Attempt(policy, batch, seq, plans, peak, total)


POLICIES = {"auto": ("keep", "recompute", "checkpoint"), "keep": ("keep",),
            "recompute": ("recompute",), "checkpoint": ("checkpoint",)}


def choose(module: Module, fwd: list[Kernel], bwd: list[Kernel], target: Target, tile: int,
           streamed_out: set[str], micro_batch: int, policy: str = "auto") -> Attempt:
    """The schedule that trains the most samples per second (see module doc)."""
    best: Attempt | None = None
    why = []
    seen: list[list[str]] = []
    for pol in POLICIES[policy]:
        seq = sequence(module, fwd, bwd, target, pol)
        sig = [f"{s.kernel.name}:{s.role}" for s in seq]
        if policy == "auto" and sig in seen:
            continue  # the same schedule as a policy tried already
        seen.append(sig)
        got = _largest_batch(module, seq, target, tile, streamed_out, pol, micro_batch)
        if isinstance(got, str):
            why.append(f"policy {pol}: {got}")
            continue
        if best is None or got.step_cycles * best.batch < best.step_cycles * got.batch:
            best = got
    if best is None:
        what = f"a micro-batch of {micro_batch}" if micro_batch else "one sample"
        raise LayoutInfeasible(f"stream mode (training): {what} does not fit a PE's "
                               f"{target.sram_bytes} B under any activation policy "
                               f"({'; '.join(why)}); use a larger target, a shorter sequence "
                               f"or a smaller batch")
    return best


def live_peak(module: Module, spans: list[tuple[str, int, int]], batch: int, target: Target,
              streamed_out: set[str]) -> int:
    """The most activation bytes per PE live at once (no fragmentation): a
    fast lower bound of `first_fit`, for choosing the micro-batch."""
    keep = [(v, a, b) for v, a, b in spans if not (v in streamed_out and a == b)]
    if not keep:
        return 0
    nbytes = np.array([module.values[v].type.nbytes for v, _, _ in keep], np.int64)
    start = np.array([a for _, a, _ in keep], np.int64)
    stop = np.array([b for _, _, b in keep], np.int64)
    per_pe = -(-batch * nbytes // target.pes)
    per = -(-per_pe // ALIGN) * ALIGN
    diff = np.zeros(int(stop.max()) + 2, np.int64)
    np.add.at(diff, start, per)
    np.add.at(diff, stop + 1, -per)
    return int(np.cumsum(diff).max())


def _largest_batch(module: Module, seq: list[Slot], target: Target, tile: int,
                   streamed_out: set[str], policy: str, fixed: int) -> Attempt | str:
    if fixed:
        return _try(module, seq, target, tile, fixed, streamed_out, policy)
    one = _try(module, seq, target, tile, 1, streamed_out, policy)
    if isinstance(one, str):
        return one
    # beyond this every phase is compute-bound: a larger batch gains nothing
    sat = 1
    bw = Fabric.of(target).weight_stream_bytes_per_cycle
    for s in seq:
        p = one.plans[kernel_signature(s.kernel, module)]
        out = np.ceil(_out_bytes(module, s.kernel, streamed_out) / bw)
        sat = max(sat, int(np.ceil(max(p.stream, out) / max(1, p.compute, p.move))))
    # an upper bound from the live activations alone (a phase needs at least
    # its code and two stream tiles beside them), then the largest that plans
    room = target.sram_bytes - CODE_BYTES - 2 * tile
    spans = intervals(module, seq, streamed_out)
    lo, hi = 1, min(MAX_MICRO_BATCH, sat)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if live_peak(module, spans, mid, target, streamed_out) <= room:
            lo = mid
        else:
            hi = mid - 1
    best, lo, hi = one, 1, lo
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = _try(module, seq, target, tile, mid, streamed_out, policy)
        if isinstance(got, str):
            hi = mid - 1
        else:
            best, lo = got, mid
    return best


def _regions(plan: PhasePlan, peak: int, target: Target) -> list:
    from wsec.ir.graph import SramRegion

    regions, off = [], 0
    for name, size in (("stream", plan.stream_buf), ("code", CODE_BYTES),
                       ("buffers", plan.sram - plan.stream_buf - CODE_BYTES)):
        if size > 0:
            regions.append(SramRegion(name, off, _align(size)))
            off += _align(size)
    if peak:
        regions.append(SramRegion("activations", target.sram_bytes - peak, peak))
    return regions


def _apply(module: Module, k: Kernel, plan: PhasePlan, peak: int, target: Target,
           extra: dict[str, int]) -> None:
    from wsec.ir.graph import Rect

    w, h = (plan.h, plan.w) if plan.rotated else (plan.w, plan.h)
    k.knobs = dict(plan.knobs)
    k.rotated = plan.rotated
    k.rect = Rect(0, 0, w, h)
    k.cost = {"cycles": plan.cycles, "compute": plan.compute, "stream": plan.stream,
              "move": plan.move, "sram": plan.sram, "w": plan.w, "h": plan.h,
              "passes": plan.passes, **extra}
    k.sram = _regions(plan, peak, target)


def schedule_training(module: Module, target: Target, tile: int, micro_batch: int,
                      policy: str = "auto") -> None:
    """Plan the training step's phases and store steps (see the module doc);
    `policy` keep / recompute / checkpoint forces the activation policy."""
    kernels = list(module.kernels())
    drop_port_dims(kernels)
    fwd, bwd, opt = split_kernels(kernels)
    opt_inputs = {i for k in opt for i in k.inputs if i}
    loss_like = {o for o in module.outputs if not o.startswith(("grad:", "new:"))}
    streamed_out = {o for k in fwd + bwd for o in k.outputs
                    if o in opt_inputs or (o in module.outputs and o not in loss_like)}
    att = choose(module, fwd, bwd, target, tile, streamed_out, micro_batch, policy)
    bw = Fabric.of(target).weight_stream_bytes_per_cycle
    spans = intervals(module, att.seq, streamed_out)
    frees: dict[int, list[str]] = {}
    end = len(att.seq)
    for v, _, b in spans:
        if b < end:
            frees.setdefault(b, []).append(v)
    phases, done = [], set()
    for p, s in enumerate(att.seq):
        k = s.kernel
        plan = att.plans[kernel_signature(k, module)]
        gb = sum(module.values[o].type.nbytes for o in k.outputs if o in streamed_out)
        out = int(np.ceil(gb / bw))
        cyc = phase_cycles(plan, att.batch, out)
        if k.name not in done:
            _apply(module, k, plan, att.peak, target, {"cycles": cyc, "stream_out": out})
            done.add(k.name)
        phases.append({"kernel": k.name, "role": s.role, "cycles": cyc,
                       "compute": att.batch * plan.compute, "stream": plan.stream,
                       "stream_out": out, "move": att.batch * plan.move,
                       "weight_bytes": weight_bytes(module, k, target), "grad_bytes": gb,
                       "pes": plan.w * plan.h, "passes": plan.passes,
                       "free": sorted(set(frees.get(p, [])))})
    steps = []
    for k in opt:  # the optimizer runs in the weight store: no phase, nominal layout
        plan = plan_phase(module, k, target, target.sram_bytes, tile)
        _apply(module, k, plan, 0, target, {"cycles": 0, "offwafer": 1})
        steps.append({"kernel": k.name, "weight_bytes": weight_bytes(module, k, target),
                      "grad_bytes": sum(module.values[i].type.nbytes for i in _acts(module, k))})
    for e in module.edges:
        e.bundles = None
    step = sum(p["cycles"] for p in phases)
    sat = max((-(-max(p["stream"], p["stream_out"]) * att.batch
                // max(1, p["compute"], p["move"])) for p in phases), default=1)
    source = "option" if micro_batch else ("compute" if att.batch >= sat else "sram")
    module.attrs.update(
        mode="stream", phases=phases, store_steps=steps, micro_batch=att.batch,
        delta_t=int(step), activation_bytes_per_pe=int(att.peak),
        activations=activation_records(first_fit(module, spans, att.batch, target,
                                                 streamed_out)[0]),
        phase_plans=len(att.plans),
        train_schedule={"policy": att.policy,
                        "micro_batch": att.batch, "micro_batch_source": source,
                        "step_cycles": int(step),
                        "recomputed_phases": sum(1 for p in phases if p["role"] == "recompute"),
                        "store_bytes_per_cycle": round(bw, 3)})
    module.attrs.setdefault("mode_reason", "stream (forced by running schedule-phases)")
    module.properties.discard("routed")


@dataclass(frozen=True)
class ScheduleTrain(Pass):
    """Weight streaming of a training step: forward, backward and recompute
    phases over the whole grid, the optimizer as store steps off the wafer."""

    name = "schedule-train"
    requires = ("kernels",)
    ensures = ("sized", "placed", "allocated", "scheduled")
    tile_bytes: int = 1024
    micro_batch: int = 0  # samples per phase (0: the most the SRAM holds)
    activations: str = "auto"  # keep | recompute | checkpoint | auto (the fastest)

    def __post_init__(self) -> None:
        check_range(self, "tile_bytes", 1)
        check_range(self, "micro_batch", 0)
        check_choice(self, "activations", ("auto",) + tuple(POLICIES["auto"]))

    def run(self, module: Module, ctx: PassContext) -> None:
        if not is_training(module.attrs):
            raise PassError("schedule-train: the module is no training step (compile with "
                            "--train); run schedule-phases for inference")
        schedule_training(module, ctx.target, int(self.tile_bytes), int(self.micro_batch),
                          str(self.activations))
