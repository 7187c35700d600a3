"""Pass protocol: a small frozen dataclass with a `name`, options as fields,
`requires`/`ensures` stage properties and `run(module, ctx)`.

A pass that cannot do its job raises `PassError` with a message for people:
the kernel or node, the resource, the shortfall and what to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from wsec.ir.graph import Module
from wsec.ir.target import Target, module_target


class PassError(Exception):
    """A user-facing compile error raised by a pass."""


@dataclass
class PassContext:
    """What passes share besides the module: the target and diagnostics."""

    target: Target
    time_limit: float | None = None
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def for_module(module: Module) -> PassContext:
        return PassContext(module_target(module.attrs))


@dataclass(frozen=True)
class Pass:
    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()
    ensures: ClassVar[tuple[str, ...]] = ()

    def run(self, module: Module, ctx: PassContext) -> None:
        raise NotImplementedError
