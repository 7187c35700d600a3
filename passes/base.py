"""Pass protocol: a small frozen dataclass with a `name`, options as fields,
`requires`/`ensures`/`invalidates` stage properties and `run(module, ctx)`.

The contract:
- options are checked when the pass is built (`__post_init__`): a bad value
  is a `PassOptionError` (a usage error, exit 2) naming the pass, the option
  and the allowed values, before anything runs;
- `run` raises `PassError` with a message for people (the kernel or node,
  the resource, the shortfall and what to change), or `LayoutInfeasible`
  when no layout of this kind exists for the model on the target — the only
  error auto mode answers by falling back to weight streaming;
- the manager, not the pass, records `ensures` and drops `invalidates`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wsec.ir.errors import LayoutInfeasible, PassError, PassOptionError
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Module
from wsec.ir.target import Target, module_target

__all__ = ["LayoutInfeasible", "Pass", "PassContext", "PassError", "PassOptionError",
           "check_choice", "check_fraction", "check_range"]


@dataclass
class PassContext:
    """What passes share besides the module: the target and diagnostics."""

    target: Target
    time_limit: float | None = None
    # False: time_limit only plans the solvers' work (sweep points, search steps,
    # CP-SAT rounds of fixed deterministic time) and no wall clock ever cuts it
    # short, so the layout does not depend on the machine's speed or load (the
    # QoR tests); True (the command line): the limit is also a wall-clock deadline
    wall_clock: bool = True
    notes: list[str] = field(default_factory=list)
    # a solver's progress for people: (pass name, figures such as delta_t, wirelength)
    progress: Callable[[str, dict[str, float]], None] | None = None
    # makes the module hold the best legal layout a running solver has found so far
    # (what an interrupted ISPD run writes); None once the module holds its result
    best_so_far: Callable[[], None] | None = None

    def deadline(self, start: float, share: float) -> float | None:
        """The wall-clock time by which a solver stops after spending `share`
        of the time limit from `start` (None: no limit, or work-planned only)."""
        if self.time_limit is None or not self.wall_clock:
            return None
        return start + share * self.time_limit

    def improved(self, pass_name: str, keep: Callable[[], None] | None = None,
                 **figures: float) -> None:
        """A solver found a better legal layout: `keep` applies it to the module."""
        if keep is not None:
            self.best_so_far = keep
        if self.progress is not None:
            self.progress(pass_name, figures)

    @property
    def fabric(self) -> Fabric:
        """The device facts of the target (wsec.ir.fabric)."""
        return Fabric.of(self.target)

    @staticmethod
    def for_module(module: Module) -> PassContext:
        return PassContext(module_target(module.attrs))


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    ensures: ClassVar[tuple[str, ...]] = ()
    invalidates: ClassVar[tuple[str, ...]] = ()

    def run(self, module: Module, ctx: PassContext) -> None:
        raise NotImplementedError


def _bad(p: Pass, option: str, value: Any, allowed: str) -> PassOptionError:
    return PassOptionError(f"pass '{p.name}': option {option}={value!r} is not allowed "
                           f"({allowed})")


def check_choice(p: Pass, option: str, allowed: Sequence[str]) -> None:
    """Option `option` of pass `p` must be one of `allowed`."""
    value = getattr(p, option)
    if value not in allowed:
        raise _bad(p, option, value, "allowed values: " + ", ".join(allowed))


def check_fraction(p: Pass, option: str) -> None:
    """Option `option` of pass `p` must lie in (0, 1]."""
    value = getattr(p, option)
    if not (isinstance(value, int | float) and 0.0 < float(value) <= 1.0):
        raise _bad(p, option, value, "allowed values: a number in (0, 1]")


def check_range(p: Pass, option: str, lo: float, hi: float | None = None) -> None:
    """Option `option` of pass `p` must be a number >= lo (and <= hi)."""
    value = getattr(p, option)
    ok = isinstance(value, int | float) and value == value and value >= lo
    if ok and hi is not None:
        ok = value <= hi
    if not ok:
        span = f">= {lo:g}" if hi is None else f"in [{lo:g}, {hi:g}]"
        raise _bad(p, option, value, f"allowed values: a number {span}")
