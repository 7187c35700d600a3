"""The compile driver: frontend -> pass pipeline -> emitter, one Module.

The CLI is a thin layer over `compile_model`; tests and benchmarks call it
directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wsec.ir.graph import Module
from wsec.ir.target import Target, get_target
from wsec.passes import DEFAULT_PIPELINE, PassContext, PassError
from wsec.passes.manager import PassManager, merge_options


class CompileError(Exception):
    """A user-facing error outside any single pass (bad options, I/O)."""


@dataclass
class CompileOptions:
    target: str = "wse2"
    grid: tuple[int, int] | None = None
    input_shapes: dict[str, list[int]] = field(default_factory=dict)
    pass_options: list[str] = field(default_factory=list)
    print_ir_after: set[str] = field(default_factory=set)
    stop_after: str | None = None
    time_passes: bool = False
    verify_ir: bool = True
    input_format: str | None = None  # onnx | wsir; default from the extension
    time_limit: float | None = None


@dataclass
class CompileResult:
    module: Module
    target: Target
    manager: PassManager
    completed: bool  # False when --stop-after ended the pipeline early


def input_format(path: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    ext = os.path.splitext(path)[1].lower()
    if ext in (".wsir", ".mlir", ".ir"):
        return "wsir"
    return "onnx"


def load_input(path: str, opts: CompileOptions) -> Module:
    """Read the model file into a Module (graph level or any later stage)."""
    if not os.path.exists(path):
        raise CompileError(f"no such file: '{path}'")
    fmt = input_format(path, opts.input_format)
    if fmt == "onnx":
        from wsec.frontends.onnx import load_onnx

        return load_onnx(path, opts.input_shapes or None)
    if fmt == "wsir":
        from wsec.ir.parser import parse_module

        with open(path, encoding="utf-8") as f:
            return parse_module(f.read(), base_dir=os.path.dirname(os.path.abspath(path)))
    raise CompileError(f"unknown input format '{fmt}' (known: onnx, wsir)")


def resolve_target(module: Module, opts: CompileOptions) -> Target:
    """The target for this compile; recorded in the module's attributes."""
    try:
        target = get_target(opts.target, opts.grid)
    except ValueError as e:
        raise CompileError(str(e)) from None
    module.attrs["target"] = target.name
    module.attrs["grid"] = [target.width, target.height]
    return target


def run_pipeline(module: Module, opts: CompileOptions, pipeline: Sequence[str],
                 emit_ir: Callable[[str, str], None] | None = None) -> CompileResult:
    target = resolve_target(module, opts)
    passes = merge_options(pipeline, opts.pass_options)
    # a module read back from text may already be past some stages
    todo = [p for p in passes if not (p.ensures and set(p.ensures) <= module.properties)]
    pm = PassManager(todo, verify=opts.verify_ir, print_ir_after=set(opts.print_ir_after),
                     stop_after=opts.stop_after, time_passes=opts.time_passes, emit_ir=emit_ir)
    ctx = PassContext(target, time_limit=opts.time_limit)
    if opts.stop_after and opts.stop_after not in pipeline:
        raise PassError(f"--stop-after: pass '{opts.stop_after}' is not in the pipeline "
                        f"({', '.join(pipeline)})")
    completed = pm.run(module, ctx)
    return CompileResult(module, target, pm, completed)


def compile_model(path: str, opts: CompileOptions,
                  emit_ir: Callable[[str, str], None] | None = None) -> CompileResult:
    """Load `path` and run the default pipeline on it."""
    module = load_input(path, opts)
    return run_pipeline(module, opts, DEFAULT_PIPELINE, emit_ir)
