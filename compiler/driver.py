"""The compile driver: frontend -> pass pipeline -> emitter, one Module.

The CLI is a thin layer over `compile_model`; tests and benchmarks call it
directly.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsec.ir.errors import UsageError, WsecError
from wsec.ir.graph import Module
from wsec.ir.target import Target, get_target
from wsec.ir.training import is_training
from wsec.passes import DEFAULT_PIPELINE, TRAIN_PIPELINE, LayoutInfeasible, Pass, PassContext
from wsec.passes.manager import PassManager, merge_options


class CompileError(WsecError):
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
    mode: str = "auto"  # auto | pipeline | stream (see wsec.mode)
    dtype: str = "auto"  # device dtype: auto (the model's float type) | f16 | f32
    train: dict[str, object] | None = None  # autodiff options: compile a training step
    micro_batch: int | None = None  # stream mode: samples per phase (None: from SRAM)
    progress: Any = None  # a wsec.progress.Progress told of every pass (the CLI's)


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
    if ext == ".kgraph":
        return "kgraph"
    return "onnx"


def load_input(path: str, opts: CompileOptions) -> Module:
    """Read the model file into a Module (graph level or any later stage)."""
    if not os.path.exists(path):
        raise CompileError(f"no such file: '{path}'")
    fmt = input_format(path, opts.input_format)
    if fmt == "onnx":
        from wsec.frontends.onnx import load_onnx

        module = load_onnx(path, opts.input_shapes or None)
        module.attrs.setdefault("dtype", model_float_dtype(module))
        return module
    if fmt == "wsir":
        from wsec.ir.parser import parse_module

        with open(path, encoding="utf-8") as f:
            module = parse_module(f.read(), base_dir=os.path.dirname(os.path.abspath(path)))
        module.attrs.setdefault("dtype", model_float_dtype(module))
        return module
    if fmt == "kgraph":  # an ISPD 2020 kernel graph, already at kernel level
        from wsec.frontends.kgraph import load_kgraph

        return load_kgraph(path)
    raise CompileError(f"unknown input format '{fmt}' (known: onnx, wsir, kgraph)")


def model_float_dtype(module: Module) -> str:
    """The floating-point type the model computes in: that of its first float
    input, else of its float constants (most elements wins); f32 by default.
    An f16 model runs in f16 on the PEs; anything wider runs in f32."""
    for name in module.inputs:
        dt = module.values[name].type.dtype
        if dt.startswith("f"):
            return "f16" if dt == "f16" else "f32"
    count: dict[str, int] = {}
    for v in module.values.values():
        if v.const is not None and v.type.dtype.startswith("f"):
            count[v.type.dtype] = count.get(v.type.dtype, 0) + v.type.numel
    if count:
        return "f16" if max(count, key=lambda d: (count[d], d)) == "f16" else "f32"
    return "f32"


def resolve_target(module: Module, opts: CompileOptions) -> Target:
    """The target for this compile; recorded in the module's attributes.

    The device dtype defaults to the model's own float type, so the binary
    computes what the model computes; `--dtype f16` trades precision for the
    fp16 SIMD rate and half the SRAM per value."""
    dtype: str | None = opts.dtype
    if dtype == "auto":  # the model's own (set on loading), else the target's native
        dtype = str(module.attrs["dtype"]) if module.attrs.get("dtype") else None
    target = get_target(opts.target, opts.grid, dtype)
    module.attrs["target"] = target.name
    module.attrs["grid"] = [target.width, target.height]
    module.attrs["dtype"] = target.dtype
    return target


def run_pipeline(module: Module, opts: CompileOptions, pipeline: Sequence[str],
                 emit_ir: Callable[[str, str], None] | None = None) -> CompileResult:
    """Run the front end, choose the execution mode (`wsec.mode`), then run
    that mode's back end; one timing list covers all of it."""
    from .mode import ModeError, backend_passes, select_mode, split_pipeline

    target = resolve_target(module, opts)
    check_activations(module, target)
    from .mode import STREAM_BACKEND, TRAIN_STREAM_BACKEND

    # the streaming back end's options apply only if stream mode is chosen
    stream_only = STREAM_BACKEND + TRAIN_STREAM_BACKEND
    passes = merge_options(pipeline, [s for s in opts.pass_options
                                      if s.split("{", 1)[0].strip() not in stream_only])
    if opts.stop_after and opts.stop_after not in pipeline:
        raise UsageError(f"--stop-after: pass '{opts.stop_after}' is not in the pipeline"
                         f"{_near(opts.stop_after, pipeline)} ({', '.join(pipeline)})")
    for name in opts.print_ir_after:
        if name != "all" and name not in pipeline:
            raise UsageError(f"--print-ir-after: pass '{name}' is not in the pipeline"
                             f"{_near(name, pipeline)} ({', '.join(pipeline)})")
    if opts.train is not None and "autodiff" in pipeline and not any(
            s.split("{", 1)[0].strip() == "autodiff" for s in opts.pass_options):
        from .train import autodiff_pass

        passes = [autodiff_pass(opts.train) if p.name == "autodiff" else p for p in passes]
    ctx = PassContext(target, time_limit=opts.time_limit)
    front_names, back_names = split_pipeline(pipeline)
    front = _pending([p for p in passes if p.name in front_names], module)
    pm = _manager(front, opts, emit_ir)
    completed = pm.run(module, ctx)
    if not completed or not back_names:
        return CompileResult(module, target, pm, completed)
    t0 = time.perf_counter()
    if "sized" in module.properties:  # read back past sizing: keep its mode
        mode = str(module.attrs.setdefault("mode", "pipeline"))
    else:
        size_pass = next((p for p in passes if p.name == "size"), None)
        decision = select_mode(module, target, opts.mode, size_pass)  # type: ignore[arg-type]
        mode = decision.mode
    if mode == "pipeline":
        back_specs = back_names
    else:
        try:
            back_specs = list(backend_passes(mode, is_training(module.attrs)))
        except ModeError as e:
            raise ModeError(f"{module.attrs.get('mode_reason', mode)}; but {e}") from None
    if opts.stop_after in back_names and opts.stop_after not in back_specs:
        raise UsageError(f"--stop-after: pass '{opts.stop_after}' does not run in {mode} mode "
                        f"(its passes: {', '.join(back_specs)})")
    overrides = _back_overrides(opts, back_specs)
    back = _pending(merge_options(back_specs, overrides), module)
    pm2 = _manager(back, opts, emit_ir)
    pm2.timings.extend(pm.timings + [("select-mode", time.perf_counter() - t0)])
    fallback = opts.mode == "auto" and mode == "pipeline" and not opts.stop_after
    snapshot = _snapshot(module) if fallback else None
    t1, ran = time.perf_counter(), len(pm2.timings)
    try:
        completed = pm2.run(module, ctx)
    except LayoutInfeasible as e:
        if snapshot is None:
            raise
        # auto mode promised one command for any model: a pipeline layout that
        # the checks before placing accepted but placement/routing/allocation
        # could not build falls back to weight streaming (once: the pipeline is
        # never placed or routed again), and the report says why in one line
        done = pm2.timings[ran:]
        failed = next((p.name for p in back if p.name not in {n for n, _ in done}), "?")
        spent = time.perf_counter() - t1 - sum(t for _, t in done)
        module.__dict__.update(snapshot.__dict__)
        module.attrs["mode"] = "stream"
        module.attrs["mode_reason"] = fallback_reason(failed, str(e))
        stream_specs = list(backend_passes("stream", is_training(module.attrs)))
        stream = _pending(merge_options(stream_specs, _back_overrides(opts, stream_specs)),
                          module)
        pm3 = _manager(stream, opts, emit_ir)
        pm3.timings.extend(pm2.timings + [(f"{failed} (failed pipeline)", spent)])
        completed = pm3.run(module, ctx)
        return CompileResult(module, target, pm3, completed)
    return CompileResult(module, target, pm2, completed)


def _near(word: str, names: Sequence[str]) -> str:
    import difflib

    near = difflib.get_close_matches(word, list(names), n=1)
    return f"; did you mean '{near[0]}'?" if near else ""


def fallback_reason(failed: str, error: str) -> str:
    """The report's one-line reason when auto mode's pipeline layout, feasible
    by all that is known before placing, turned out infeasible in pass
    `failed`: the error's first clause (`--mode pipeline` prints all of it)."""
    first = " ".join(error.split()).split("; ")[0].rstrip(".")
    return (f"stream (auto, fallback): the checks before placing allowed a pipeline, but "
            f"{failed} found it infeasible ({first})")


def check_activations(module: Module, target: Target) -> None:
    """Fail fast on a value no layout can hold: in either mode activations
    stay on the wafer, so one larger than all of its SRAM cannot run."""
    from wsec.ir.limits import LimitError, human_bytes

    if "kernels" in module.properties:  # kernel graphs: sizing judges them
        return
    wafer = target.pes * target.sram_bytes
    dev = 2 if target.dtype == "f16" else 4
    live = set(module.inputs)  # activations: what depends on a model input
    for n in module.nodes:  # (values computed from weights alone fold into weights)
        if any(i in live for i in n.inputs):
            live.update(o for o in n.outputs if o)
    for name, v in module.values.items():
        if name not in live or v.const is not None:
            continue
        ty = v.type
        need = ty.numel * (dev if ty.dtype.startswith("f") else ty.itemsize)
        if need > wafer:
            role = "input" if name in module.inputs else "value"
            raise LimitError(f"{role} '{name}' ({ty}) needs {human_bytes(need)} of SRAM, more "
                             f"than the whole {target.width}x{target.height} {target.name} wafer "
                             f"holds ({human_bytes(wafer)}); no layout can keep it on the wafer",
                             hint="compile a smaller input shape (--input-shape) or batch")


def _back_overrides(opts: CompileOptions, back_specs: Sequence[str]) -> list[str]:
    """The -p options for the back end's passes, plus --micro-batch for the
    streaming schedule."""
    out = [s for s in opts.pass_options if s.split("{", 1)[0].strip() in back_specs]
    if opts.micro_batch is not None and "schedule-train" in back_specs and not any(
            s.split("{", 1)[0].strip() == "schedule-train" for s in out):
        out.append(f"schedule-train{{micro_batch={int(opts.micro_batch)}}}")
    return out


def _snapshot(module: Module) -> Module:
    """A copy of the module's structure that shares its (read-only, possibly
    memory-mapped) constant data, so a failed back end can be undone."""
    memo = {id(v.const): v.const for v in module.values.values() if v.const is not None}
    return copy.deepcopy(module, memo)


def _pending(passes: list[Pass], module: Module) -> list[Pass]:
    """The passes still to run: a module read back from text may be past some stages."""
    return [p for p in passes if not (p.ensures and set(p.ensures) <= module.properties)]


def _manager(passes: list[Pass], opts: CompileOptions,
             emit_ir: Callable[[str, str], None] | None) -> PassManager:
    names = {p.name for p in passes}
    return PassManager(passes, verify=opts.verify_ir,
                       print_ir_after={n for n in opts.print_ir_after if n in names or n == "all"},
                       stop_after=opts.stop_after if opts.stop_after in names else None,
                       time_passes=opts.time_passes, emit_ir=emit_ir,
                       observer=opts.progress.pass_event if opts.progress else None)


def compile_model(path: str, opts: CompileOptions,
                  emit_ir: Callable[[str, str], None] | None = None) -> CompileResult:
    """Load `path` and run the default pipeline on it (with `opts.train`,
    the training pipeline: autodiff first)."""
    module = load_input(path, opts)
    if opts.train is None:
        return run_pipeline(module, opts, DEFAULT_PIPELINE, emit_ir)
    if input_format(path, opts.input_format) == "onnx":
        from .train import initializer_names

        module.attrs["initializers"] = initializer_names(path)
    return run_pipeline(module, opts, TRAIN_PIPELINE, emit_ir)
