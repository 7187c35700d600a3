"""The Python API: what the command line does, as functions (docs/api.md).

    import wsec
    c = wsec.compile("model.onnx", target="wse2")
    print(c.headline)                 # '135,886 samples/s, limited by ...'
    c.save("model.bin", report_json="report.json", report_html="report.html")
    prog = wsec.load("model.bin")
    res = wsec.run(prog, check="model.onnx")

Errors are the command line's: every user-facing one derives from
`wsec.WsecError` (`wsec.UsageError` for bad options), with a one-line
message. Files are written through the same output guard as the command
line (`wsec.outputs`): checked before any work, all or nothing.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wsec.ir.errors import UsageError, WsecError, did_you_mean
from wsec.ir.graph import Module
from wsec.ir.target import Target

from .run import RunResult, load, run

__all__ = ["Compiled", "RunResult", "compile", "load", "run"]


@dataclass
class Compiled:
    """A compiled model: the module (the IR after every pass), its target,
    the report (the JSON report's document, docs/report.md) and the binary."""

    module: Module
    target: Target
    report: dict[str, Any]
    embed_weights: bool = False
    source: str | None = None  # the model's path (None: compiled from memory)
    _binary: bytes | None = field(default=None, repr=False)

    @property
    def binary(self) -> bytes:
        """The binary's bytes (weight files named relative to the current
        directory in stream mode; `save` names them relative to its path)."""
        if self._binary is None:
            self._binary = self._emit(os.getcwd())
        return self._binary

    def _emit(self, out_dir: str) -> bytes:
        from wsec.backends.emit import emit_bytes

        return emit_bytes(self.module, embed_weights=self.embed_weights, out_dir=out_dir)

    @property
    def headline(self) -> str:
        """Throughput and what limits it, in one line."""
        from .report import headline

        return headline(self.report)

    def summary(self) -> str:
        """The report as the command line prints it."""
        from .report import format_summary

        return format_summary(self.report)

    def html(self) -> str:
        """The layout as one self-contained HTML page (`--report-html`)."""
        from wsec.ir.fabric import Fabric
        from wsec.ir.metrics import route_arrays

        from .view import render_html

        return render_html(self.report, route_arrays(self.module), Fabric.of(self.target))

    def save(self, path: str | os.PathLike[str], report_json: str | os.PathLike[str] | None
             = None, report_html: str | os.PathLike[str] | None = None) -> None:
        """Write the binary (and the reports), all or none of them; an output
        that is an input of the compile or another output is refused."""
        import json

        from .outputs import Outputs, model_files

        with Outputs() as outs:
            if self.source:
                outs.input(self.source, "the input model")
                for f in model_files(self.source):
                    outs.input(f, "external data of the model")
            outs.output(path, "the binary")
            if report_json is not None:
                outs.output(report_json, "the JSON report")
            if report_html is not None:
                outs.output(report_html, "the HTML report")
            out_dir = os.path.dirname(os.path.abspath(os.fspath(path)))
            outs.put(path, self._emit(out_dir))
            if report_json is not None:
                outs.put(report_json, json.dumps(self.report, indent=2, sort_keys=True) + "\n")
            if report_html is not None:
                outs.put(report_html, self.html())


def compile(model: Any, target: str = "wse2", mode: str = "auto", *,  # noqa: A001
            grid: tuple[int, int] | None = None, dtype: str = "auto",
            input_shapes: Mapping[str, Sequence[int]] | None = None,
            pass_options: Sequence[str] = (), train: Mapping[str, Any] | None = None,
            micro_batch: int | None = None, embed_weights: bool = False,
            verify_ir: bool = True) -> Compiled:
    """Compile an ONNX model (a path, or an `onnx.ModelProto`) for `target`
    (wse2, wse3, cs1) in `mode` (auto, pipeline, stream). `train` compiles a
    training step: a dict of the command line's training options, e.g.
    {"loss": "cross-entropy", "optimizer": "adamw", "lr": 1e-4}."""
    from .driver import CompileOptions, compile_model
    from .report import build_report

    if mode not in ("auto", "pipeline", "stream"):
        raise UsageError(f"mode '{mode}': give auto, pipeline or stream")
    train_opts = None if train is None else _train_options(train)
    opts = CompileOptions(target=target, grid=grid, mode=mode, dtype=dtype,
                          input_shapes={k: list(v) for k, v in (input_shapes or {}).items()},
                          pass_options=list(pass_options), verify_ir=verify_ir,
                          train=train_opts, micro_batch=micro_batch)
    on_disk = isinstance(model, (str, os.PathLike))
    with _model_path(model) as path:
        res = compile_model(path, opts)
        report = build_report(res.module, res.target, res.manager.timings)
        # an in-memory model has no file to stream weights from: they go in the binary
        embed = embed_weights or (not on_disk and res.module.attrs.get("mode") == "stream")
        c = Compiled(res.module, res.target, report, embed,
                     source=os.path.abspath(os.fspath(model)) if on_disk else None)
        if not on_disk:
            c.binary  # noqa: B018 - emitted while the temp file still exists
    return c


def _train_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """The autodiff options from the command line's training options by name
    (loss, optimizer, lr, momentum, ..., freeze), the rest at their defaults."""
    import argparse

    from .train import add_train_args, train_options

    p = argparse.ArgumentParser(add_help=False)
    add_train_args(p, with_flag=False)
    ns = p.parse_args([])
    for key, value in given.items():
        if not hasattr(ns, key):
            raise UsageError(f"unknown training option '{key}'{did_you_mean(key, vars(ns))}")
        setattr(ns, key, value)
    if isinstance(ns.freeze, str):
        ns.freeze = [ns.freeze]
    return train_options(ns)


class _model_path:  # noqa: N801 - a context manager used like a function
    """A path for the model: the path given, or a temp file for a ModelProto."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> str:
        if isinstance(self.model, (str, os.PathLike)):
            return os.fspath(self.model)
        try:
            import onnx
        except ImportError:  # pragma: no cover - onnx is a dependency
            raise WsecError("compiling an in-memory model needs onnx") from None
        if isinstance(self.model, bytes):
            data = self.model
        elif isinstance(self.model, onnx.ModelProto):
            data = self.model.SerializeToString()
        else:
            raise UsageError(f"wsec.compile: give a model path or an onnx.ModelProto, not "
                             f"{type(self.model).__name__}")
        self.tmp = tempfile.TemporaryDirectory(prefix="wsec-")
        path = os.path.join(self.tmp.name, "model.onnx")
        with open(path, "wb") as f:
            f.write(data)
        return path

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()


