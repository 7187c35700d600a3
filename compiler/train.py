"""Training on the command line: the `--train` options, `wsec export-train`,
and the exported step `wsec run --check` compares a training binary with.

Why one module: the compile command, export-train and the check must
derive the *same* step from the same model and options, so the options
are parsed once (`add_train_args`, `train_options`), the trained
parameters are the model's float initializers (`initializer_names`), and
the step is derived by one function (`derive_step_module`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from typing import Any

from wsec.ir.errors import UsageError
from wsec.ir.graph import Module
from wsec.ir.training import LOSSES, OPTIMIZERS

ADAMW_DECAY = 0.01  # PyTorch's AdamW default weight decay


def add_train_args(p: argparse.ArgumentParser, with_flag: bool) -> None:
    """The training-step options (`--train` itself only on the compile command)."""
    g = p.add_argument_group("training step (see docs/training.md)")
    if with_flag:
        g.add_argument("--train", action="store_true",
                       help="compile one training step (forward, backward, optimizer update) "
                            "instead of inference")
    g.add_argument("--loss", choices=LOSSES, default="cross-entropy",
                   help="loss on the model's first output against the new input 'labels' "
                        "(default cross-entropy: int64 class indices)")
    g.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                   help="optimizer step (ONNX ai.onnx.preview.training semantics; default sgd)")
    g.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    g.add_argument("--momentum", type=float, default=0.9, help="momentum: alpha (default 0.9)")
    g.add_argument("--dampening", type=float, default=0.0, help="momentum: 1 - beta (default 0)")
    g.add_argument("--nesterov", action="store_true", help="momentum: Nesterov's update")
    g.add_argument("--beta1", type=float, default=0.9, help="adam/adamw (default 0.9)")
    g.add_argument("--beta2", type=float, default=0.999, help="adam/adamw (default 0.999)")
    g.add_argument("--eps", type=float, default=1e-8, help="adam/adamw (default 1e-8)")
    g.add_argument("--weight-decay", type=float, default=None,
                   help=f"L2 (sgd, momentum, adam) or decoupled (adamw) decay (default 0; "
                        f"adamw {ADAMW_DECAY})")
    g.add_argument("--step", type=int, default=1,
                   help="the update count T of this step (bias correction; default 1)")
    g.add_argument("--freeze", action="append", default=[], metavar="NAME_OR_GLOB",
                   help="do not train the initializers this names (repeatable)")


def train_options(a: argparse.Namespace) -> dict[str, Any]:
    """The autodiff pass's options from parsed `--train` arguments."""
    wd = a.weight_decay if a.weight_decay is not None else (
        ADAMW_DECAY if a.optimizer == "adamw" else 0.0)
    import math

    for flag in ("lr", "momentum", "dampening", "beta1", "beta2", "eps", "weight_decay"):
        v = getattr(a, flag)
        if v is not None and not math.isfinite(v):
            raise UsageError(f"--{flag.replace('_', '-')} {v}: give a finite number")
    bad = [p for p in a.freeze if ";" in p]
    if bad:
        raise UsageError(f"--freeze '{bad[0]}': give one name or glob per --freeze")
    return {"loss": a.loss, "optimizer": a.optimizer, "lr": a.lr, "momentum": a.momentum,
            "dampening": a.dampening, "nesterov": bool(a.nesterov), "beta1": a.beta1,
            "beta2": a.beta2, "eps": a.eps, "weight_decay": wd, "step": a.step,
            "freeze": ";".join(a.freeze)}


def autodiff_pass(options: dict[str, Any]) -> Any:
    """The autodiff pass for these options (bad values: a usage error)."""
    from wsec.passes.autodiff import Autodiff

    return Autodiff(**options)


def initializer_names(path: str) -> list[str]:
    """The ONNX model's initializer names (the candidates for training),
    read without its external data."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return [t.name for t in model.graph.initializer]


def derive_step_module(path: str, options: dict[str, Any],
                       input_shapes: dict[str, list[int]] | None = None,
                       target: str = "wse2") -> Module:
    """Load an ONNX model and derive its training step (autodiff, then
    canonicalize): the graph-level module export-train writes."""
    from wsec.frontends.onnx import load_onnx
    from wsec.ir.target import get_target
    from wsec.passes import PassContext
    from wsec.passes.canonicalize import Canonicalize
    from wsec.passes.manager import PassManager

    if not os.path.exists(path):
        raise UsageError(f"no such file: '{path}'")
    module = load_onnx(path, input_shapes or None)
    module.attrs["initializers"] = initializer_names(path)
    PassManager([autodiff_pass(options), Canonicalize()]).run(module,
                                                             PassContext(get_target(target)))
    return module


def step_onnx(path: str, options: dict[str, Any], out_dir: str,
              input_shapes: dict[str, list[int]] | None = None) -> Any:
    """The training step of model `path` as an ONNX ModelProto."""
    from .export_onnx import module_to_onnx

    module = derive_step_module(path, options, input_shapes)
    return module_to_onnx(module, out_dir, producer="wsec export-train")


def options_of_binary(train: dict[str, Any]) -> dict[str, Any]:
    """The autodiff options a training binary was compiled with (its META attrs)."""
    keys = ("loss", "optimizer", "lr", "momentum", "dampening", "nesterov", "beta1", "beta2",
            "eps", "weight_decay", "step")
    opts = {k: train[k] for k in keys if k in train}
    opts["freeze"] = ";".join(train.get("freeze", []))
    return opts


def reference_step(model: str, train: dict[str, Any], input_shapes: dict[str, list[int]]
                   ) -> bytes:
    """The exported training step of `model` with a binary's training
    settings, serialized: what `wsec run --check` runs onnxruntime on."""
    out_dir = os.path.dirname(os.path.abspath(model))
    return step_onnx(model, options_of_binary(train), out_dir, input_shapes).SerializeToString()


def cmd_export_train(argv: Sequence[str], out: Callable[[str], None],
                     parser_cls: type[argparse.ArgumentParser],
                     input_shape: Callable[[str], tuple[str, list[int]]]) -> int:
    """`wsec export-train` (the CLI passes its parser class and its
    --input-shape parser, so the two commands read options alike)."""
    p = parser_cls(prog="wsec export-train",
                   description="Write the training step of an ONNX model as a standard ONNX "
                               "model: inputs = the model's inputs + 'labels'; outputs = 'loss', "
                               "'grad:<initializer>', 'new:<initializer>'.")
    p.add_argument("model", help="the forward model (.onnx)")
    p.add_argument("-o", "--output", required=True, metavar="STEP.onnx")
    p.add_argument("--input-shape", action="append", type=input_shape, default=[],
                   metavar="NAME=D0,D1,..", help="fix an input's symbolic dimensions")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    add_train_args(p, with_flag=False)
    a = p.parse_args(argv)
    from .outputs import Outputs, model_files

    with Outputs(final=True) as outs:
        outs.input(a.model, "the input model")
        for f in model_files(a.model):
            outs.input(f, "external data of the model")
        outs.output(a.output, "the training step")
        shapes: dict[str, list[int]] = {}
        for name, dims in a.input_shape:
            if shapes.get(name, dims) != dims:
                raise UsageError(f"--input-shape given twice for '{name}' with different values: "
                                 f"give it once")
            shapes[name] = dims
        out_dir = os.path.dirname(os.path.abspath(a.output))
        model = step_onnx(a.model, train_options(a), out_dir, shapes)
        outs.put(a.output, model.SerializeToString())
    g = model.graph
    grads = sum(1 for o in g.output if o.name.startswith("grad:"))
    out(f"wsec export-train: {a.output}: {len(g.node)} ops, inputs "
        f"{', '.join(i.name for i in g.input)}; outputs loss, {grads} gradients, "
        f"{len(g.output) - grads - 1} updated tensors")
    return 0
