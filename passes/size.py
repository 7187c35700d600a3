"""size: choose every kernel's knobs so that the pipeline is as fast as the
grid allows.

Why this algorithm: in layer-pipelined mode the slowest kernel sets the
throughput, so the goal is the smallest bottleneck time t such that every
kernel, given the smallest rectangle that runs in <= t cycles, still fits
the grid together with all the others. The sizing model (wsec.ir.sizing)
answers that with a sweep over the kernels' Pareto frontiers, well under a
second for ResNet-50; this pass applies its answer.

Options: `utilisation` is the fraction of the grid's PEs sizing may plan to
fill. The default 1.0 sizes at the bound itself: the placer then relaxes the
bottleneck by the least step that packs, choosing among each kernel's
near-equal-area shapes (wsec.ir.sizing's `shapes_for_time`, `candidate_times`).
A lower utilisation leaves room on purpose. `max_area_fraction` caps any
single kernel's rectangle at that fraction of the grid. The module records
`bound` (the area-sizing lower bound on the bottleneck time: the same search
with the whole grid) and `delta_t` (the bottleneck time chosen).

A training step (the autodiff pass's output) first gets each kernel's
activation stash (`wsec.ir.training.pipeline_stash`: bytes per sample times
the forward-to-backward distance) as dim `stash`, which every library kind
spreads over its PEs' SRAM — so sizing gives a kernel that waits long for
its inputs the PEs to hold them.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsec.ir.graph import Module
from wsec.ir.sizing import set_choice, sizing_tables, too_big_error
from wsec.ir.training import is_training, pipeline_stash

from .base import Pass, PassContext, check_fraction


@dataclass(frozen=True)
class Size(Pass):
    """Pick knobs for every kernel: the smallest bottleneck time that fits."""

    name = "size"
    requires = ("kernels",)
    ensures = ("sized",)
    invalidates = ("placed", "routed", "allocated")
    utilisation: float = 1.0
    max_area_fraction: float = 1.0

    def __post_init__(self) -> None:
        check_fraction(self, "utilisation")
        check_fraction(self, "max_area_fraction")

    def run(self, module: Module, ctx: PassContext) -> None:
        target = ctx.target
        if is_training(module.attrs):  # stash forward activations for the backward pass
            stash = pipeline_stash(list(module.kernels()), module.edges, module.values)
            for k in module.kernels():
                if k.name in stash:  # a new dict: copies of the kernel keep theirs
                    k.dims = {**k.dims, "stash": stash[k.name][0]}
        tab = sizing_tables(module, target, self.max_area_fraction)
        bound = tab.smallest_time(float(target.pes))
        if bound is None:
            raise too_big_error(tab, target)
        t = tab.smallest_time(self.utilisation * target.pes)
        if t is None:
            t = bound
            ctx.notes.append(f"size: the model does not fit {self.utilisation:g} of the grid at "
                             f"any speed; sized to fill the whole grid (bottleneck {bound} "
                             "cycles), placement may fail")
        for k, c in zip(tab.kernels, tab.choices_at(t), strict=True):
            set_choice(k, c)
        module.attrs["bound"] = int(bound)
        module.attrs["delta_t"] = int(max((k.cost["cycles"] for k in tab.kernels if k.cost),
                                          default=0))
