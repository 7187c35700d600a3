"""Execution-mode selection: layer-pipelined when the model fits the wafer,
weight streaming when it does not (DESIGN.md section 1, issue 5).

Why here, between form-kernels and size: the choice needs the kernels (their
kinds say what each needs at its smallest size) and decides which back-end
passes run next. The rule:

- every kernel's *minimal SRAM need* is the bytes its smallest-area legal
  choice occupies (SRAM per PE x PEs: weight shard, buffers, code);
- `auto` picks `pipeline` when every kernel has a legal size, the sum of
  those needs fits the grid's total SRAM, and the `size` pass can size the
  model (its options included); otherwise `stream`;
- a forced `pipeline` on a model that cannot fit is a one-line error with
  the numbers; a forced `stream` is always honoured.

The decision is recorded in `module.attrs` (`mode`, `mode_reason`), so the
report and the binary say which mode and why. A mode's back end is a list of
registered pass names (`backend_passes`): the streaming back end plugs in
by registering its passes under the names of `STREAM_BACKEND`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

from wsec.ir.errors import LayoutInfeasible
from wsec.ir.graph import Kernel, Module
from wsec.ir.sizing import kernel_choices, least_need
from wsec.ir.target import Target
from wsec.passes import DEFAULT_PIPELINE, REGISTRY, PassContext
from wsec.passes.size import Size

MODES = ("auto", "pipeline", "stream")
FRONT_END = ("canonicalize", "form-kernels")  # shared by both modes; mode chosen after
PIPELINE_BACKEND = tuple(p for p in DEFAULT_PIPELINE if p not in FRONT_END)
STREAM_BACKEND = ("schedule-phases",)  # registered by the streaming back end
TRAIN_STREAM_BACKEND = ("schedule-train",)  # a training step's streaming schedule


class ModeError(LayoutInfeasible):
    """The requested mode cannot compile this model; the message has the numbers."""


@dataclass(frozen=True)
class KernelNeed:
    """A kernel's minimal SRAM need: its smallest-area legal choice (area x
    SRAM per PE), or, without a legal choice, the least it would take."""

    name: str
    kind: str
    origin: tuple[str, ...]
    pes: int
    bytes: int
    legal: bool


@dataclass
class ModeDecision:
    mode: str  # "pipeline" | "stream"
    requested: str  # "auto" | "pipeline" | "stream"
    bytes_needed: int
    bytes_available: int
    reason: str
    unsizable: list[KernelNeed] = field(default_factory=list)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.2f} MB"


def _where(k: KernelNeed) -> str:
    return f"kernel '{k.name}' ({k.kind}, from {', '.join(k.origin[:2]) or '?'})"


def _const_bytes(module: Module, k: Kernel, target: Target) -> int:
    """Bytes of the constants (weights) a kernel reads, in the target's dtype."""
    from wsec.ir.types import DTYPES

    item = DTYPES[target.dtype].itemsize
    seen = dict.fromkeys(i for n in k.body for i in n.inputs if i)
    return sum(module.values[v].type.numel * item for v in seen
               if v in module.values and module.values[v].const is not None)


def sram_needs(module: Module, target: Target) -> list[KernelNeed]:
    """Every kernel's minimal SRAM need, in kernel order."""
    out = []
    for k in module.kernels():
        front = kernel_choices(k, target)
        if front:
            c = front[0]  # Pareto frontier: area ascending
            out.append(KernelNeed(k.name, k.kind, tuple(k.origin), c.area, c.area * c.sram,
                                  True))
            continue
        pes, need = least_need(k.kind, tuple(sorted(k.dims.items())), target)
        need = max(need, _const_bytes(module, k, target))
        out.append(KernelNeed(k.name, k.kind, tuple(k.origin), pes, need, False))
    return out


def _sizes(module: Module, target: Target, size_pass: Size) -> str | None:
    """None when `size` can size the module, else its error message. Runs on
    copies of the kernels, so the module itself is left unsized."""
    probe = Module(module.name, values=module.values,
                   nodes=[copy.copy(k) for k in module.kernels()], attrs=dict(module.attrs))
    try:
        size_pass.run(probe, PassContext(target))
    except LayoutInfeasible as e:
        return str(e)
    return None


def select_mode(module: Module, target: Target, requested: str = "auto",
                size_pass: Size | None = None) -> ModeDecision:
    """Choose the execution mode of a kernel-level module; record it in
    `module.attrs` ('mode', 'mode_reason'). Raises ModeError when `pipeline`
    is requested for a model that cannot fit."""
    if requested not in MODES:
        raise ModeError(f"unknown mode '{requested}' (known: {', '.join(MODES)})")
    if "kernels" not in module.properties:
        raise ModeError("mode selection needs a kernel-level module; run form-kernels first")
    needs = sram_needs(module, target)
    needed = sum(n.bytes for n in needs)
    avail = target.pes * target.sram_bytes
    grid = f"the {target.width}x{target.height} grid of {target.name}"
    nums = (f"needs {needed:,} B ({_gb(needed)}) of SRAM for weights and buffers at the "
            f"kernels' smallest legal sizes; {grid} has {avail:,} B ({_gb(avail)})")
    bad = [n for n in needs if not n.legal]
    fits = False
    if bad:
        worst = max(bad, key=lambda n: n.bytes)
        why = (f"{len(bad)} kernel(s) have no legal size in a PE's {target.sram_bytes} B "
               f"(e.g. {_where(worst)} needs {worst.bytes:,} B); the model {nums}")
    elif needed > avail:
        why = f"the model {nums}"
    else:
        err = _sizes(module, target, size_pass or Size())
        fits = err is None
        why = f"the model {nums}" + (f", but the size pass cannot fit it ({err})" if err else "")
    if requested == "pipeline" and not fits:
        raise ModeError(f"--mode pipeline: {why}; compile with --mode stream (or auto)")
    mode = requested if requested != "auto" else ("pipeline" if fits else "stream")
    how = "auto" if requested == "auto" else f"forced by --mode {requested}"
    reason = f"{mode} ({how}): {why}"
    module.attrs["mode"] = mode
    module.attrs["mode_reason"] = reason
    return ModeDecision(mode, requested, needed, avail, reason, bad)


def backend_passes(mode: str, training: bool = False) -> tuple[str, ...]:
    """The registered passes that follow the front end in `mode`; a ModeError
    when the mode's back end is not part of this build."""
    passes = PIPELINE_BACKEND if mode == "pipeline" else (
        TRAIN_STREAM_BACKEND if training else STREAM_BACKEND)
    missing = [p for p in passes if p not in REGISTRY]
    if missing:
        raise ModeError(f"{mode} mode needs pass(es) {', '.join(missing)}, which this build of "
                        f"wsec does not have yet; stop earlier with --stop-after=form-kernels")
    return passes


def split_pipeline(pipeline: Sequence[str]) -> tuple[list[str], list[str]]:
    """(front end, rest) of a pipeline: the mode is chosen between them."""
    names = list(pipeline)
    cut = max((names.index(p) + 1 for p in FRONT_END if p in names), default=0)
    return names[:cut], names[cut:]
