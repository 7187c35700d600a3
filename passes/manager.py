"""The pass manager: parses pass specs, checks each pass's required stage
properties, runs it, records what it ensures, drops what it invalidates,
verifies the IR after it, and offers --print-ir-after, --stop-after and
--time-passes for free.

A pass spec's options are checked when the pass is built: an unknown pass
or option, or a value the pass refuses, is a `PassOptionError` (exit 2).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsec.ir.graph import Module

from . import pass_class
from .base import Pass, PassContext, PassError, PassOptionError

_SPEC = re.compile(r"^\s*([A-Za-z][\w-]*)\s*(?:\{(.*)\})?\s*$")


def _convert(value: str, type_: Any, where: str) -> Any:
    t = type_ if isinstance(type_, type) else {"int": int, "float": float, "str": str,
                                                 "bool": bool}.get(str(type_), str)
    try:
        if t is bool:
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        return t(value)
    except ValueError:
        raise PassOptionError(f"{where}: '{value}' is not a valid {t.__name__}") from None


def parse_pass_spec(spec: str) -> Pass:
    """Build a pass from 'name' or 'name{opt=val,opt2=val2}'."""
    m = _SPEC.match(spec)
    if not m:
        raise PassOptionError(f"bad pass spec '{spec}': expected NAME or "
                              f"NAME{{key=value,...}}")
    cls = pass_class(m.group(1))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in (m.group(2) or "").split(","))):
        if "=" not in item:
            raise PassOptionError(f"bad option '{item}' for pass '{cls.name}': expected "
                                  f"key=value")
        key, val = (s.strip() for s in item.split("=", 1))
        if key not in fields:
            known = ", ".join(fields) or "none"
            raise PassOptionError(f"pass '{cls.name}' has no option '{key}' (options: {known})")
        kwargs[key] = _convert(val, fields[key].type, f"option {cls.name}.{key}")
    return cls(**kwargs)


def merge_options(pipeline: Sequence[str], overrides: Sequence[str]) -> list[Pass]:
    """The pipeline's passes, with options from `overrides` ('place{seed=3}')."""
    by_name: dict[str, Pass] = {}
    for spec in overrides:
        p = parse_pass_spec(spec)
        if p.name not in pipeline:
            raise PassOptionError(f"option given for pass '{p.name}', which is not in the "
                                  f"pipeline ({', '.join(pipeline)})")
        by_name[p.name] = p
    return [by_name.get(n) or parse_pass_spec(n) for n in pipeline]


@dataclass
class PassManager:
    passes: list[Pass]
    verify: bool = True
    print_ir_after: set[str] = field(default_factory=set)
    stop_after: str | None = None
    time_passes: bool = False
    emit_ir: Callable[[str, str], None] | None = None  # (pass name, text) sink
    timings: list[tuple[str, float]] = field(default_factory=list)
    # told when a pass starts (seconds None) and ends (its seconds): progress for people
    observer: Callable[[str, float | None, PassContext], None] | None = None

    def run(self, module: Module, ctx: PassContext) -> bool:
        """Run the passes; returns False when stopped early by stop_after."""
        from wsec.ir.verify import VerifyError, verify_module

        known = {p.name for p in self.passes}
        for name in self.print_ir_after | ({self.stop_after} if self.stop_after else set()):
            if name not in known and name != "all":
                raise PassOptionError(f"pass '{name}' is not in the pipeline "
                                      f"({', '.join(known)})")
        for p in self.passes:
            missing = [r for r in p.requires if r not in module.properties]
            if missing:
                raise PassError(f"pass '{p.name}' needs the IR to be {', '.join(missing)}; "
                                f"run the passes that make it so first")
            if self.observer is not None:
                self.observer(p.name, None, ctx)
            t0 = time.perf_counter()
            p.run(module, ctx)
            module.properties.difference_update(p.invalidates)
            module.properties.update(p.ensures)
            self.timings.append((p.name, time.perf_counter() - t0))
            if self.observer is not None:
                self.observer(p.name, self.timings[-1][1], ctx)
            if self.verify:
                try:
                    verify_module(module)
                except VerifyError as e:
                    raise PassError(f"IR is invalid after pass '{p.name}': {e}") from e
            if self.emit_ir and (p.name in self.print_ir_after or "all" in self.print_ir_after):
                from wsec.ir.printer import print_module

                self.emit_ir(p.name, print_module(module))
            if self.stop_after == p.name:
                return False
        return True

    def timing_report(self) -> str:
        total = sum(t for _, t in self.timings) or 1e-12
        lines = ["===-- pass execution timing --===", f"{'seconds':>9}  {'share':>6}  pass"]
        for name, t in self.timings:
            lines.append(f"{t:9.4f}  {100 * t / total:5.1f}%  {name}")
        lines.append(f"{total:9.4f}  100.0%  total")
        return "\n".join(lines)
