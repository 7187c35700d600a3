"""Execution-mode selection: layer-pipelined when the model fits the wafer,
weight streaming when it does not (DESIGN.md section 1, issue 5).

Why here, between form-kernels and size: the choice needs the kernels (their
kinds say what each needs at its smallest size) and decides which back-end
passes run next. The rule:

- every kernel's *minimal SRAM need* is the bytes its smallest-area legal
  choice occupies (SRAM per PE x PEs: weight shard, buffers, code);
- `auto` picks `pipeline` when every kernel has a legal size, the sum of
  those needs fits the grid's total SRAM, the kernels' smallest legal
  areas fit the grid's PEs, no PE needs more router colours than the target
  has (`colour_bound`: a lower bound from the router's endpoint rules, on the
  kernel graph and then on the sized kernels), and the `size` pass can size
  the model (its options included); otherwise `stream`. All of it is known
  before placing, cheapest first. Placement, routing and allocation can
  still find the layout infeasible (the router's congestion has no estimate
  yet): then the driver falls back to `stream` once, never placing or
  routing a pipeline layout again, and the reason is one line;
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
from wsec.ir.fabric import Fabric
from wsec.ir.graph import HOST, Kernel, Module
from wsec.ir.sizing import kernel_choices, kernel_shape, least_need
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


def _sizes(module: Module, target: Target, size_pass: Size) -> tuple[Module | None, str]:
    """(the sized probe, "") when `size` can size the module, else (None, its
    error message). Runs on copies of the kernels, so the module itself is
    left unsized."""
    probe = Module(module.name, values=module.values,
                   nodes=[copy.copy(k) for k in module.kernels()], attrs=dict(module.attrs))
    probe.edges = module.edges
    try:
        size_pass.run(probe, PassContext(target))
    except LayoutInfeasible as e:
        return None, str(e)
    return probe, ""


@dataclass(frozen=True)
class ColourBound:
    """A lower bound on the router colours some PE of any pipeline layout
    needs, and the place that needs them (one phrase)."""

    colours: int
    where: str


def colour_bound(module: Module, target: Target, sized: Module | None = None) -> ColourBound:
    """The most router colours one PE needs whatever the placement, from the
    router's endpoint rules (passes/route.py): a color carries one route per
    PE, and

    - edges with the same source and the same sinks start at the same PE and
      end at the same entry PEs (a kernel source sends from the boundary PE
      nearest its sinks; a host input enters at the West edge on its
      consumers' centre row; a sink takes it at the PE nearest the source),
      so each needs a colour of its own there;
    - with `sized` (the kernels' sized copies): a kernel of P PEs touched by
      d edges has a PE that at least ceil(d / P) of them pass.

    Placement and the router's own congestion can only need more; this is
    what is known before placing (the router has no estimate of its own yet)."""
    best = ColourBound(1 if module.edges else 0, "")
    groups: dict[tuple[str, tuple[str, ...]], int] = {}
    for e in module.edges:
        key = (e.src, tuple(sorted(e.dsts)))
        groups[key] = groups.get(key, 0) + 1
    if groups:
        (src, dsts), n = max(groups.items(), key=lambda kv: kv[1])
        if n > best.colours:
            who = "the host" if src == HOST else f"'{src}'"
            best = ColourBound(n, f"{n} values from {who} to {', '.join(dsts)} share one route")
    if sized is not None:
        degree: dict[str, int] = {}
        for e in module.edges:
            for k in {e.src, *e.dsts} - {HOST}:
                degree[k] = degree.get(k, 0) + 1
        for k in sized.kernels():
            w, h = kernel_shape(k, target)
            need = -(-degree.get(k.name, 0) // (w * h))
            if need > best.colours:
                best = ColourBound(need, f"kernel '{k.name}' ({k.kind}) has {w * h} PE(s) "
                                         f"and {degree[k.name]} edges")
    return best


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
    pes = sum(n.pes for n in needs)
    usable = Fabric.of(target).usable_colors
    colours = colour_bound(module, target)
    if bad:
        worst = max(bad, key=lambda n: n.bytes)
        why = (f"{len(bad)} kernel(s) have no legal size in a PE's {target.sram_bytes} B "
               f"(e.g. {_where(worst)} needs {worst.bytes:,} B); the model {nums}")
    elif needed > avail:
        why = f"the model {nums}"
    elif pes > target.pes:
        why = (f"the kernels' smallest legal sizes need {pes:,} PEs; {grid} has "
               f"{target.pes:,}")
    elif colours.colours > usable:
        why = _colour_why(colours, usable, target)
    else:
        probe, err = _sizes(module, target, size_pass or Size())
        if probe is not None:
            colours = colour_bound(module, target, probe)
        fits = probe is not None and colours.colours <= usable
        why = (f"the model {nums}, but the size pass cannot fit it ({err})" if probe is None
               else _colour_why(colours, usable, target) if not fits else f"the model {nums}")
    if requested == "pipeline" and not fits:
        raise ModeError(f"--mode pipeline: {why}; compile with --mode stream (or auto)")
    mode = requested if requested != "auto" else ("pipeline" if fits else "stream")
    how = "auto" if requested == "auto" else f"forced by --mode {requested}"
    reason = f"{mode} ({how}): {why}"
    module.attrs["mode"] = mode
    module.attrs["mode_reason"] = reason
    return ModeDecision(mode, requested, needed, avail, reason, bad)


def _colour_why(c: ColourBound, usable: int, target: Target) -> str:
    return (f"a pipeline layout needs at least {c.colours} router colours at one PE ({c.where}); "
            f"{target.name} has {usable} usable")


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
