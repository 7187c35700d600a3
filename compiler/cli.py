"""Command line: `wsec MODEL -o OUT` compiles; `wsec ops|inspect|opt|run|score` are tools.

Every user-facing error derives from one root (wsec.ir.errors.WsecError) and
ends in a one-line `wsec: error: ...` with its exit code: 1 for an error in
the input, 2 for a usage error. Anything else is a bug: one 'internal error'
line and exit 70. A traceback only with --debug.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from wsec import signals
from wsec.ir.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    UsageError,
    WsecError,
    did_you_mean,
)

COMMANDS = ("ops", "inspect", "opt", "run", "score", "export-train")

_EPILOG = """commands:
  wsec ops                      list the supported ONNX operators
  wsec inspect MODEL.bin        print a binary's header, kernels, routes and SRAM use
  wsec opt FILE.wsir -p PASS    run passes on a textual IR file and print the result
  wsec run MODEL.bin [--check MODEL.onnx]
                                execute a binary on the simulated wafer (see wsec run -h)
  wsec score A.kgraph A.sol     score an ISPD 2020 contest solution (legality, Δt, wirelength)
  wsec export-train MODEL.onnx -o STEP.onnx [--loss .. --optimizer ..]
                                write the model's training step as standard ONNX

examples:
  wsec model.onnx -o model.bin
  wsec model.onnx -o model.bin --target wse3 --report-json report.json
  wsec model.onnx -o model.bin --input-shape input=1,3,224,224 -p 'place{seed=3}'
  wsec model.onnx --stop-after=place          (prints the IR after placement)
  wsec A.kgraph -o A.sol --time-limit 60      (ISPD 2020 kernel graph -> contest solution)
  wsec model.onnx -o train.bin --train --loss cross-entropy --optimizer adamw --lr 1e-4
"""


def _input_shape(text: str) -> tuple[str, list[int]]:
    name, sep, dims = text.rpartition("=")
    try:
        if not sep or not name:
            raise ValueError
        shape = [int(d) for d in dims.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad --input-shape '{text}': expected NAME=D0,D1,... e.g. input=1,3,224,224"
        ) from None
    from wsec.ir.limits import shape_problem

    bad = shape_problem(shape)
    if bad:
        raise argparse.ArgumentTypeError(f"bad --input-shape '{text}': {bad}")
    return name, shape


def _grid(text: str) -> tuple[int, int]:
    from wsec.ir.target import parse_grid

    try:
        return parse_grid(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        if message.startswith("unrecognized arguments: "):
            flags = [o for a in self._actions for o in a.option_strings]
            words = message.split(": ", 1)[1].split()
            for w in words:
                if w.startswith("-") and len(w) > 1:
                    hint = did_you_mean(w.split("=", 1)[0], flags)
                    if hint:
                        message = f"unknown option '{w}'{hint}"
                        break
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _target(text: str) -> str:
    from wsec.ir.target import TARGETS

    if text not in TARGETS:
        raise argparse.ArgumentTypeError(f"unknown target '{text}'{did_you_mean(text, TARGETS)}; "
                                         f"known: {', '.join(TARGETS)}")
    return text


def _target_help() -> str:
    from wsec.ir.target import TARGETS

    names = [f"{n} ({t.width}x{t.height})" for n, t in TARGETS.items()]
    return "the wafer: " + ", ".join(names) + "; default wse2"


def _add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="wse2", type=_target, metavar="{wse2,wse3,cs1}",
                   help=_target_help())
    p.add_argument("--grid", type=_grid, metavar="WxH",
                   help="use a custom program grid, e.g. 64x64")
    p.add_argument("--dtype", choices=("auto", "f16", "f32"), default="auto",
                   help="element type the PEs compute in (default auto: the model's own "
                        "float type, so results match it; f16 uses the fp16 SIMD rate)")


def compile_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="wsec", formatter_class=argparse.RawDescriptionHelpFormatter,
                description="Compile an ONNX model into a wafer-scale layout binary.",
                epilog=_EPILOG)
    p.add_argument("model", help="the model: .onnx (or .wsir textual IR)")
    p.add_argument("-o", "--output", metavar="OUT.bin",
                   help="write the binary here ('-': the standard output)")
    _add_target_args(p)
    p.add_argument("--input-shape", action="append", type=_input_shape, default=[],
                   metavar="NAME=D0,D1,..", help="fix an input's symbolic dimensions")
    p.add_argument("-p", "--pass-option", action="append", default=[], metavar="PASS{k=v,..}",
                   help="set pass options, e.g. 'place{seed=3}'")
    p.add_argument("--print-ir-after", action="append", default=[], metavar="PASS",
                   help="print the IR after PASS (repeatable; 'all' for every pass)")
    p.add_argument("--stop-after", metavar="PASS",
                   help="stop after PASS and print the IR instead of writing a binary")
    p.add_argument("--time-passes", action="store_true", help="print time spent per pass")
    p.add_argument("--report-json", metavar="PATH",
                   help="write the placement report as JSON ('-': the standard output)")
    p.add_argument("--report-html", metavar="PATH",
                   help="write the layout as one self-contained HTML page: kernels, link-load "
                        "heat map, bottleneck, phases (open it in a browser)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print nothing but errors (no report, no progress)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print each pass as it ends, with its time and notes (on stderr)")
    p.add_argument("--no-verify-ir", action="store_true", help="skip IR verification")
    p.add_argument("--verify", action="store_true",
                   help="after writing the binary, simulate it and check it against "
                        "onnxruntime on the input model (exit 1 on FAIL)")
    p.add_argument("--mode", choices=("auto", "pipeline", "stream"), default="auto",
                   help="execution mode: layer-pipelined, weight streaming, or auto (default: "
                        "pipeline when the model fits the wafer's SRAM)")
    p.add_argument("--embed-weights", action="store_true",
                   help="stream mode: copy the weights into the binary instead of referencing "
                        "the model's external-data file (small models)")
    p.add_argument("--format", choices=("ispd2020",),
                   help="read MODEL as an ISPD 2020 kernel graph whatever its extension "
                        "(.kgraph is read so by default)")
    p.add_argument("--time-limit", type=float, default=60.0, metavar="SECONDS",
                   help="bound the whole run of a kernel-graph compile (default 60)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    from . import __version__

    p.add_argument("--version", action="version", version=f"wsec {__version__}")
    from .train import add_train_args

    add_train_args(p, with_flag=True)
    p.add_argument("--micro-batch", type=int, metavar="N",
                   help="--train in stream mode: samples per phase, amortising the weight "
                        "stream (default: the most the SRAM holds for the kept activations)")
    return p


def cmd_compile(argv: Sequence[str], out: Callable[[str], None]) -> int:
    from .outputs import Outputs, model_files

    a = compile_parser().parse_args(argv)
    kgraph = a.format == "ispd2020" or (a.format is None and a.model.lower().endswith(".kgraph"))
    _check_compile_options(a, kgraph)
    with Outputs(final=True) as outs:
        if kgraph:
            from .ispd.cli import cmd_compile_kgraph

            outs.input(a.model, "the kernel graph")
            if a.output:
                outs.output(a.output, "the solution")
            if a.report_json is not None:
                outs.output(a.report_json, "the JSON report")
            return cmd_compile_kgraph(a, out, outs)
        outs.input(a.model, "the input model")
        for f in model_files(a.model):
            outs.input(f, "external data of the model")
        if a.output:
            outs.output(a.output, "the IR" if a.stop_after else "the binary")
        if a.report_json is not None:
            outs.output(a.report_json, "the JSON report")
        if a.report_html is not None:
            outs.output(a.report_html, "the HTML report")
        if outs.to_stdout:  # the data owns the standard output: messages go to stderr
            out = _to_stderr
        return _compile(a, out, outs)


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _check_compile_options(a: argparse.Namespace, kgraph: bool) -> None:
    """Conflicting or meaningless options: usage errors before any work."""
    import math

    shapes: dict[str, list[int]] = {}
    for name, dims in a.input_shape:
        if name in shapes and shapes[name] != dims:
            raise UsageError(f"--input-shape given twice for '{name}' with different values "
                             f"({','.join(map(str, shapes[name]))} and "
                             f"{','.join(map(str, dims))}): give it once")
        shapes[name] = dims
    if not math.isfinite(a.time_limit) or a.time_limit <= 0:
        raise UsageError(f"--time-limit must be a positive, finite number of seconds, got "
                         f"{a.time_limit:g}")
    if kgraph:
        given = [flag for flag, on in (
            ("--stop-after", a.stop_after), ("--print-ir-after", a.print_ir_after),
            ("--verify", a.verify), ("--train", a.train), ("--input-shape", a.input_shape),
            ("--embed-weights", a.embed_weights), ("--micro-batch", a.micro_batch is not None),
            ("--mode", a.mode != "auto"), ("--dtype", a.dtype != "auto"),
            ("--grid", a.grid), ("--target", a.target != "wse2"),
            ("--report-html", a.report_html is not None)) if on]
        if given:
            raise UsageError(f"{given[0]} does not apply to an ISPD 2020 kernel graph (its "
                             f"header sets the grid; it compiles to a contest solution)")
        if not a.output:
            raise UsageError("no output file: give -o OUT.sol")
        return
    if not a.output and not a.stop_after:
        raise UsageError("no output file: give -o OUT.bin (or --stop-after=PASS to print IR)")
    if a.stop_after:
        for flag, on in (("--verify", a.verify), ("--report-json", a.report_json is not None),
                         ("--report-html", a.report_html is not None)):
            if on:
                raise UsageError(f"--stop-after={a.stop_after} writes no binary, so {flag} has "
                                 f"nothing to work on: drop one of them")
        if a.output and a.output.lower().endswith(".bin"):
            stem = os.path.splitext(a.output)[0]
            raise UsageError(f"--stop-after={a.stop_after} writes the IR as text, not a binary: "
                             f"name the output '{stem}.wsir', or drop --stop-after")
    if a.embed_weights and a.mode == "pipeline":
        raise UsageError("--embed-weights applies to weight streaming; in --mode pipeline the "
                         "weights always live in the binary: drop one of them")
    if a.micro_batch is not None and a.micro_batch < 1:
        raise UsageError(f"--micro-batch {a.micro_batch}: give a number of samples >= 1")
    if a.micro_batch is not None and not a.train:
        raise UsageError("--micro-batch sets the samples per phase of a training step in stream "
                         "mode; add --train")


def _compile(a: argparse.Namespace, out: Callable[[str], None], outs: Any) -> int:
    from .driver import CompileOptions, compile_model
    from .report import build_report, format_summary

    train = None
    if a.train:
        from .train import train_options

        train = train_options(a)
    opts = CompileOptions(target=a.target, grid=a.grid, input_shapes=dict(a.input_shape),
                          pass_options=a.pass_option, print_ir_after=set(a.print_ir_after),
                          stop_after=a.stop_after, time_passes=a.time_passes,
                          verify_ir=not a.no_verify_ir, mode=a.mode,
                          dtype=a.dtype, train=train, micro_batch=a.micro_batch)

    def dump(name: str, text: str) -> None:
        out(f"// -----// IR Dump After {name} //----- //\n{text}")

    from .progress import Progress

    opts.progress = Progress.for_cli(a.quiet, a.verbose)
    try:
        res = compile_model(a.model, opts, emit_ir=dump)
    finally:
        opts.progress.close()
    if a.time_passes:
        print(res.manager.timing_report(), file=sys.stderr)
        for i, it in enumerate(res.module.attrs.get("route_iterations") or [], 1):
            print(f"  route round {i:>2}: {it['overused_links']} links over capacity, busiest at "
                  f"{it['max_link_over_capacity']:.2f}x, at most {it['max_bundles_per_pe']} "
                  f"bundles at one PE, {it.get('colors_needed', '?')} colors needed",
                  file=sys.stderr)
    if not res.completed:
        from wsec.ir.printer import print_module

        text = print_module(res.module)
        if a.output:
            outs.put(a.output, text)
        elif a.stop_after not in a.print_ir_after:
            out(text)
        return 0
    import json

    from wsec.backends.emit import emit_bytes

    report = build_report(res.module, res.target, res.manager.timings)
    out_dir = os.path.dirname(os.path.abspath(a.output))
    data = emit_bytes(res.module, embed_weights=a.embed_weights, out_dir=out_dir)
    outs.put(a.output, data)
    if a.report_json:
        outs.put(a.report_json, json.dumps(report, indent=2, sort_keys=True) + "\n")
    if a.report_html:
        from wsec.ir.fabric import Fabric
        from wsec.ir.metrics import route_arrays

        from .view import render_html

        outs.put(a.report_html, render_html(report, route_arrays(res.module),
                                            Fabric.of(res.target)))
    code = 0
    if not a.quiet:
        where = "the standard output" if a.output == "-" else a.output
        out(format_summary(report) + f"\n  binary         {where}")
    if a.verify:  # the staged bytes, before they are renamed into place
        from .run import verify_binary

        code = verify_binary(data, a.model, out, base_dir=out_dir)
    return code


def cmd_ops(argv: Sequence[str], out: Callable[[str], None]) -> int:
    from wsec.frontends.onnx import MAX_OPSET, MIN_OPSET
    from wsec.ir.kernels import kind_for_op
    from wsec.ir.ops import CANONICAL_OPSET, SUPPORTED_OPS

    p = _Parser(prog="wsec ops", description="List the supported ONNX operators.")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    a = p.parse_args(argv)
    if a.json:
        import json

        ops = [{"op": op, "kernel": kind.name if kind else None, "folded": kind is None,
                "description": SUPPORTED_OPS[op]}
               for op in sorted(SUPPORTED_OPS) for kind in (kind_for_op(op),)]
        out(json.dumps({"min_opset": MIN_OPSET, "max_opset": MAX_OPSET,
                        "canonical_opset": CANONICAL_OPSET, "ops": ops}, indent=2))
        return 0
    width = max(len(k) for k in SUPPORTED_OPS)
    out(f"{len(SUPPORTED_OPS)} supported ONNX operators (default domain, opsets {MIN_OPSET} to "
        f"{MAX_OPSET}, converted to opset {CANONICAL_OPSET}).")
    out("'kernel' names the kernel kind that runs the op on the wafer; ops marked 'folded' are")
    out("computed at compile time when their inputs are constants (shape arithmetic, masks).")
    out(f"  {'op':<{width}}  {'kernel':<11}  description")
    for op in sorted(SUPPORTED_OPS):
        kind = kind_for_op(op)
        out(f"  {op:<{width}}  {kind.name if kind else 'folded':<11}  {SUPPORTED_OPS[op]}")
    return 0


def cmd_inspect(argv: Sequence[str], out: Callable[[str], None]) -> int:
    from wsec.backends.inspect import inspect_text
    from wsec.backends.loader import load_binary

    from .outputs import Outputs

    p = _Parser(prog="wsec inspect", description="Print what a wsec binary holds: header, "
                "kernels, routes, SRAM, weights, a mini-map of the placement.")
    p.add_argument("binary")
    p.add_argument("--json", action="store_true", help="print it as JSON instead")
    p.add_argument("--html", metavar="PATH", help="also write the layout as one "
                   "self-contained HTML page (kernels, link-load heat map, bottleneck, phases)")
    p.add_argument("--svg", metavar="PATH", help="also write the layout map as SVG")
    p.add_argument("--no-map", action="store_true", help="leave out the ASCII mini-map")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    a = p.parse_args(argv)
    with Outputs(final=True) as outs:
        outs.input(a.binary, "the binary")
        for path, what in ((a.html, "the HTML report"), (a.svg, "the SVG map")):
            if path is not None:
                outs.output(path, what)
        if outs.to_stdout and a.json:
            raise UsageError("--json prints to the standard output: write the HTML or SVG to a "
                             "file")
        prog = load_binary(a.binary)
        if a.html or a.svg:
            from wsec.backends.inspect import program_routes
            from wsec.ir.fabric import Fabric

            from .view import program_report, render_html, render_svg

            doc, ra, fabric = program_report(prog), program_routes(prog), Fabric.of(prog.target)
            if a.html:
                outs.put(a.html, render_html(doc, ra, fabric))
            if a.svg:
                outs.put(a.svg, '<?xml version="1.0" encoding="UTF-8"?>\n'
                         + render_svg(doc, ra, fabric) + "\n")
        if outs.to_stdout:
            return 0
        if a.json:
            import json

            from wsec.backends.inspect import inspect_json

            out(json.dumps(inspect_json(prog), indent=2, sort_keys=True))
            return 0
        from .report import headline
        from .view import ascii_map, program_report

        doc = program_report(prog)
        head, rest = inspect_text(prog).split("\n", 1)
        text = f"{head}\n  layout           {headline(doc)}\n{rest}"
        if not a.no_map:
            text += "\n".join(ascii_map(doc)) + "\n"
        out(text.rstrip("\n"))
    return 0


def cmd_opt(argv: Sequence[str], out: Callable[[str], None]) -> int:
    from wsec.ir.printer import print_module
    from wsec.ir.verify import verify_module
    from wsec.passes import PassContext
    from wsec.passes.manager import PassManager, merge_options

    from .driver import CompileOptions, load_input, resolve_target

    p = _Parser(prog="wsec opt", description="Run passes on textual IR; print the result.")
    p.add_argument("file", help="a .wsir file (or .onnx)")
    p.add_argument("-p", "--pass", dest="passes", action="append", default=[],
                   metavar="PASS{k=v,..}", help="a pass to run, in order (repeatable)")
    _add_target_args(p)
    p.add_argument("--no-verify-ir", action="store_true")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    a = p.parse_args(argv)
    opts = CompileOptions(target=a.target, grid=a.grid, verify_ir=not a.no_verify_ir,
                          dtype=a.dtype)
    module = load_input(a.file, opts)
    if not a.no_verify_ir:
        verify_module(module)
    if a.grid or "target" not in module.attrs or a.target != "wse2" or a.dtype != "auto":
        target = resolve_target(module, opts)
    else:  # keep the target and grid the IR file names
        from wsec.ir.target import module_target

        target = module_target(module.attrs)
    # in `opt`, passes run exactly as listed, even when their stage already holds
    names = [s.split("{", 1)[0].strip() for s in a.passes]
    pm = PassManager(merge_options(names, a.passes), verify=not a.no_verify_ir)
    pm.run(module, PassContext(target))
    out(print_module(module).rstrip("\n"))
    return 0


def _cmd_score(argv: Sequence[str], out: Callable[[str], None]) -> int:
    from .ispd.cli import cmd_score

    return cmd_score(argv, out, _Parser)


def _out(text: str) -> None:
    print(text, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    debug = False
    try:  # first: a Ctrl-C from here on is "wsec: interrupted", exit 130
        args = list(sys.argv[1:] if argv is None else argv)
        debug = "--debug" in args
        with warnings.catch_warnings(), signals.watching():
            if not sys.warnoptions and not debug:  # no Python warning reaches a user
                warnings.simplefilter("ignore")
            return _dispatch(args, _out)
    except KeyboardInterrupt as e:
        note = f": {e.args[0]}" if e.args else ""
        print(f"wsec: interrupted{note}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `wsec inspect m.bin | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as e:  # noqa: BLE001 - the one place errors become messages
        if isinstance(e, SystemExit):
            raise
        if debug:
            raise
        if _caused_by_interrupt(e) or signals.seen():  # e.g. numpy's ImportError
            print("wsec: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(e, WsecError):
            print(f"wsec: error: {e.one_line()}", file=sys.stderr)
            return e.exit_code
        msg = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, OSError):  # a file the user named cannot be read or written
            print(f"wsec: error: {msg}", file=sys.stderr)
            return 1
        if isinstance(e, MemoryError):
            print(f"wsec: error: out of memory ({msg}); the input asks for more than this "
                  f"machine has", file=sys.stderr)
            return 1
        print(f"wsec: internal error: {type(e).__name__}: {msg} (rerun with --debug for a "
              f"traceback, and please report it)", file=sys.stderr)
        return EXIT_INTERNAL


def _caused_by_interrupt(e: BaseException) -> bool:
    """A library that wraps whatever its import raised may turn a Ctrl-C
    into its own error: look down the chain of causes."""
    seen = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _dispatch(args: list[str], out: Callable[[str], None]) -> int:
    from .run import cmd_run
    from .train import cmd_export_train

    handlers = {"ops": cmd_ops, "inspect": cmd_inspect, "opt": cmd_opt,
                "run": lambda argv, out: cmd_run(argv, out, _Parser),
                "export-train": lambda argv, out: cmd_export_train(argv, out, _Parser,
                                                                   _input_shape),
                "score": lambda argv, out: _cmd_score(argv, out)}
    if args and args[0] in handlers:
        return handlers[args[0]](args[1:], out)
    if not args:
        compile_parser().print_help()
        return EXIT_USAGE
    first = args[0]
    if not first.startswith("-") and "." not in os.path.basename(first) \
            and not os.path.exists(first):  # not a model file: a mistyped command?
        hint = did_you_mean(first, COMMANDS)
        if hint:
            raise UsageError(f"unknown command '{first}'{hint}; commands: "
                             f"{', '.join(COMMANDS)} (see 'wsec --help')")
    return cmd_compile(args, out)


if __name__ == "__main__":
    sys.exit(main())
