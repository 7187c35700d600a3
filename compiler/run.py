"""`wsec run model.bin`: execute a binary on the simulated wafer, and check it.

Why here: the simulator (wsec.backends.sim) only ever reads the binary; this
command adds the user-facing parts — inputs from .npy files or a seeded
random input, outputs to .npz, `--check model.onnx` against onnxruntime
(the reference, imported only when asked) and `--stats`, the per-kernel
figures the simulator measures next to the compiler's estimates.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from wsec.ir.errors import UsageError, WsecError

RTOL, ATOL = 1e-4, 1e-5  # fp32 PEs: the model's own precision
# fp16 PEs (`--dtype f16`): weights and results rounded to 11 significant bits
F16_RTOL, F16_ATOL = 1e-2, 1e-3


def tolerances(prog: object, rtol: float | None = None,
               atol: float | None = None) -> tuple[float, float]:
    """The check's tolerance: what the binary's device dtype can promise,
    unless the user gave one (--rtol/--atol)."""
    f16 = getattr(getattr(prog, "target", None), "dtype", "f32") == "f16"
    return (rtol if rtol is not None else (F16_RTOL if f16 else RTOL),
            atol if atol is not None else (F16_ATOL if f16 else ATOL))

_EPILOG = """examples:
  wsec run model.bin                         (seeded random input, prints output summaries)
  wsec run model.bin --input data=x.npy -o out.npz
  wsec run model.bin --check model.onnx      (compare with onnxruntime; exit 1 on FAIL)
  wsec run model.bin --stats                 (measured link loads and cycles per kernel)
  wsec run model.bin --check model.onnx --per-kernel   (and every kernel vs the reference)
  wsec run model.bin --count-forwarded       (count PEs reading what no route delivered, not fail)
"""


@dataclass
class CheckRow:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    ok: bool
    note: str = ""


def run_parser(parser_cls: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = parser_cls(prog="wsec run", formatter_class=argparse.RawDescriptionHelpFormatter,
                   description="Execute a wsec binary on the simulated wafer.", epilog=_EPILOG)
    p.add_argument("binary", help="a binary written by `wsec MODEL -o OUT.bin`")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="a model input from a .npy file (repeatable; others are random)")
    p.add_argument("-o", "--output", metavar="OUT.npz", help="write the outputs, keyed by name")
    p.add_argument("--check", metavar="MODEL.onnx",
                   help="also run onnxruntime on the same input and compare (exit 1 on FAIL)")
    p.add_argument("--per-kernel", action="store_true",
                   help="also compare every kernel's output with the reference semantics on "
                   "the same inputs; name the first that differs, its PE and worst element")
    p.add_argument("--stats", action="store_true",
                   help="print per-kernel link loads and cycles, measured vs estimated")
    p.add_argument("--strict", action="store_true",
                   help="the default: fail (exit 1) at the first PE reading an element no "
                   "route brought it (kept for scripts that ask for it)")
    p.add_argument("--count-forwarded", action="store_true",
                   help="diagnosis: count the PEs reading elements no route brought them "
                   "(forwarded inside their rectangle) instead of failing at the first")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--rtol", type=_tolerance, help="relative tolerance of --check (default 1e-4 "
                   "for fp32 PEs, 1e-2 for fp16)")
    p.add_argument("--atol", type=_tolerance, help="absolute tolerance of --check (default 1e-5 "
                   "for fp32 PEs, 1e-3 for fp16)")
    p.add_argument("--json", action="store_true",
                   help="print the run (output summaries, the check) as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p


def _seed(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 0 <= v < 1 << 63:
        raise argparse.ArgumentTypeError(f"bad seed '{text}': give an integer from 0 to 2^63-1")
    return v


def _tolerance(text: str) -> float:
    from wsec.ir.limits import finite_number

    v = finite_number(text)
    if v is None or v < 0:
        raise argparse.ArgumentTypeError(f"bad tolerance '{text}': give a finite number >= 0")
    return v


def cmd_run(argv: Sequence[str], out: Callable[[str], None],
            parser_cls: type[argparse.ArgumentParser] = argparse.ArgumentParser) -> int:
    a = run_parser(parser_cls).parse_args(argv)
    if a.json and a.stats:
        raise UsageError("--stats prints a table; with --json give one of them")
    if not a.json:
        return _run(a, out)
    import json

    doc: dict[str, Any] = {}
    code = _run(a, lambda text: None, doc)
    out(json.dumps(doc, indent=2, sort_keys=True))
    return code


def _run(a: argparse.Namespace, out: Callable[[str], None],
         doc: dict[str, Any] | None = None) -> int:
    from .outputs import Outputs

    with Outputs(final=True) as outs:
        return _run_in(a, out, outs, {} if doc is None else doc)


def _input_specs(specs: Sequence[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise UsageError(f"bad --input '{spec}': expected NAME=FILE.npy")
        if name in given:
            raise UsageError(f"--input {name} is given twice ({given[name]} and {path}): give "
                             f"each model input once")
        given[name] = path
    return given


def _run_in(a: argparse.Namespace, out: Callable[[str], None], outs: Any,
            doc: dict[str, Any]) -> int:
    from wsec.backends.loader import load_binary
    from wsec.backends.sim import random_inputs, simulate
    from wsec.backends.sim_stats import proof_figures, proof_line
    from wsec.backends.weight_stream import weight_files

    from .outputs import model_files

    given = _input_specs(a.input)
    outs.input(a.binary, "the binary")
    for name, path in given.items():
        outs.input(path, f"the --input file of {name}")
    if a.check:
        outs.input(a.check, "the --check model")
        for f in model_files(a.check):
            outs.input(f, "external data of the --check model")
    if a.output is not None:
        outs.output(a.output, "the outputs file")
        if outs.to_stdout:  # the .npz owns the standard output: the text goes to stderr
            def out(text: str) -> None:
                print(text, file=sys.stderr, flush=True)
    prog = load_binary(a.binary)
    for f in weight_files(prog):
        outs.input(f, "a weight file of the binary")
    inputs = random_inputs(prog, a.seed)
    for name, path in given.items():
        if name not in inputs:
            raise UsageError(f"--input {name}: the binary's model inputs are "
                             f"{', '.join(prog.info['inputs'])}")
        inputs[name] = load_npy(path, name, inputs[name])
    t0 = time.perf_counter()
    if a.strict and a.count_forwarded:
        raise UsageError("--strict and --count-forwarded exclude each other")
    res = simulate(prog, inputs, keep=a.per_kernel,
                   strict=False if a.count_forwarded else True if a.strict else None)
    sim_s = time.perf_counter() - t0
    out(f"wsec run: {prog.info.get('source', a.binary)} on {prog.target.name} "
        f"({prog.target.width}x{prog.target.height}), {len(prog.kernels)} kernels, "
        f"simulated in {sim_s:.2f} s (PEs compute in float32)")
    proof = proof_figures(prog, res)
    doc.update({"binary": a.binary, "source": prog.info.get("source"),
                "target": prog.target.name, "kernels": len(prog.kernels), "seed": a.seed,
                "outputs": {name: _figures(arr) for name, arr in res.outputs.items()},
                "inboxes": proof._asdict()})
    for name, arr in res.outputs.items():
        out(f"  %{name} {arr.dtype}{list(arr.shape)}: {_summary(arr)}")
    out(f"  {proof_line(proof)}")
    if a.output:
        buf = io.BytesIO()
        np.savez(buf, **dict(res.outputs))
        outs.put(a.output, buf.getvalue())
        out(f"  outputs written to {a.output}")
    if a.stats:
        from wsec.backends.sim_stats import format_stats

        out(format_stats(prog, res))
    kernels_ok = True
    if a.per_kernel:
        from .kernel_check import check_kernels

        kernels_ok = check_kernels(prog, res, out, *tolerances(prog, a.rtol, a.atol), compare)
    if a.check:
        rows, ref_s = check_against_onnx(a.check, inputs, res.outputs, prog, out,
                                         a.rtol, a.atol)
        out(f"  onnxruntime: {ref_s:.3f} s")
        rtol, atol = tolerances(prog, a.rtol, a.atol)
        doc["check"] = {"model": a.check, "rtol": rtol, "atol": atol,
                        "pass": all(r.ok for r in rows),
                        "outputs": {r.name: {"shape": list(r.shape), "max_abs": _num(r.max_abs),
                                             "max_rel": _num(r.max_rel), "pass": r.ok,
                                             "note": r.note} for r in rows}}
        return 0 if all(r.ok for r in rows) and kernels_ok else 1
    return 0 if kernels_ok else 1


def _num(x: float) -> float | str:
    """A float for JSON (which has no infinity or NaN)."""
    return x if np.isfinite(x) else str(x)


def _figures(arr: np.ndarray) -> dict[str, Any]:
    x = arr.astype(np.float64)
    fin = np.isfinite(x)
    d: dict[str, Any] = {"dtype": str(arr.dtype), "shape": list(arr.shape),
                         "nonfinite": int(x.size - fin.sum())}
    if fin.any():
        d.update(mean=float(np.mean(x[fin])), min=float(np.min(x[fin])),
                 max=float(np.max(x[fin])))
    return d


def _summary(arr: np.ndarray) -> str:
    """mean, min and max of an output (non-finite elements counted apart)."""
    if arr.size == 0:
        return "empty"
    x = arr.astype(np.float64)
    fin = np.isfinite(x)
    text = (f"mean {float(np.mean(x[fin])):.6g}, min {float(np.min(x[fin])):.6g}, "
            f"max {float(np.max(x[fin])):.6g}") if fin.any() else "no finite values"
    bad = int(x.size - fin.sum())
    return text + (f" ({bad} NaN/Inf)" if bad else "")


def load_npy(path: str, name: str, like: np.ndarray) -> np.ndarray:
    """An --input .npy, its header checked before its data is read: shape
    and dtype against the binary's input `like`, size against the file."""
    from wsec.ir.limits import shape_problem

    what = f"--input {name}={path}"
    try:
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                else:
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            except (ValueError, EOFError, SyntaxError, TypeError) as e:
                raise WsecError(f"{what}: not an .npy file ({_first_line(e)})",
                                hint="save the array with numpy.save") from None
            start = f.tell()
            f.seek(0, os.SEEK_END)
            size = f.tell() - start
    except OSError as e:
        raise WsecError(f"{what}: cannot read: {e.strerror}") from None
    if dtype.hasobject:
        raise WsecError(f"{what}: the array holds Python objects (pickled data), which wsec "
                        f"never loads; save a numeric array")
    if dtype.kind not in "biuf":
        kind = "complex" if dtype.kind == "c" else str(dtype)
        raise WsecError(f"{what}: the array is {kind}; the binary's input %{name} is "
                        f"{like.dtype} {list(like.shape)}")
    bad = shape_problem(list(shape), zero_ok=True)
    if bad:
        raise WsecError(f"{what}: its header declares shape {list(shape)}: {bad}")
    if tuple(shape) != like.shape:
        raise WsecError(f"{what}: the array has shape {list(shape)} but the binary's input "
                        f"%{name} has shape {list(like.shape)}")
    need = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if size < need:
        raise WsecError(f"{what}: the header declares {need} bytes of data but the file holds "
                        f"{size}: it is truncated")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise WsecError(f"{what}: cannot read: {_first_line(e)}") from None
    return np.asarray(arr).astype(like.dtype, copy=False)


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def onnx_reference(model: str | bytes, inputs: Mapping[str, np.ndarray],
                   data_dir: str | None = None) -> tuple[dict[str, np.ndarray], float]:
    """onnxruntime's outputs on `inputs` (the model as given: a path, or a
    serialized model whose external data lies in `data_dir`, not in the
    current directory) and its time."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise WsecError("--check needs onnxruntime, which is not installed",
                        hint="pip install 'wsec[check]'; in a checkout: make demo, or "
                             ".venv/bin/pip install -e '.[check]'") from None
    what = model if isinstance(model, str) else "the reference"
    if isinstance(model, str) and not os.path.isfile(model):
        raise WsecError(f"--check: no such model file: '{model}'" if not os.path.exists(model)
                        else f"--check: '{model}' is not a file")
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if data_dir is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path",
                                    data_dir)
    try:
        sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors have no common root
        raise WsecError(f"--check: onnxruntime cannot load {what}: {_ort_message(e)}") from None
    feed = {}
    for i in sess.get_inputs():
        if i.name not in inputs:
            raise WsecError(f"--check: {what} needs input '{i.name}', which the binary does "
                            f"not have (its inputs: {', '.join(inputs)})")
        x = inputs[i.name]
        want = [d if isinstance(d, int) else None for d in (i.shape or [])]
        if len(want) != x.ndim or any(w is not None and w != g
                                      for w, g in zip(want, x.shape, strict=False)):
            raise WsecError(f"--check: {what} takes input '{i.name}' of shape "
                            f"{[w if w is not None else '?' for w in want]}, but the binary's "
                            f"is {list(x.shape)}: it is not the model the binary was compiled "
                            f"from")
        ty = _ORT_TYPES.get(i.type)
        if ty is not None and np.dtype(ty) != x.dtype:
            raise WsecError(f"--check: {what} takes input '{i.name}' as {i.type}, but the "
                            f"binary's is {x.dtype}: it is not the model the binary was "
                            f"compiled from")
        feed[i.name] = x
    t0 = time.perf_counter()
    try:
        outs = sess.run(None, feed)
    except Exception as e:  # noqa: BLE001
        raise WsecError(f"--check: onnxruntime failed to run {what}: {_ort_message(e)}") from None
    return {o.name: v for o, v in zip(sess.get_outputs(), outs, strict=True)}, \
        time.perf_counter() - t0


_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
              "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
              "tensor(bool)": np.bool_}


def _ort_message(e: BaseException) -> str:
    """onnxruntime's message without its '[ONNXRuntimeError] : 7 : CODE :' prefix."""
    text = " ".join(str(e).split()) or type(e).__name__
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(":", 3)[-1].strip()
    return text[:300]


def compare(name: str, got: np.ndarray, ref: np.ndarray, rtol: float = RTOL,
            atol: float = ATOL) -> CheckRow:
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return CheckRow(name, got.shape, np.inf, np.inf, False,
                        f"shape {list(got.shape)} vs reference {list(ref.shape)}")
    g, r = got.astype(np.float64), ref.astype(np.float64)
    # NaN where the reference has NaN, and an infinity equal to the reference's,
    # are the right answer, not a mismatch
    both_nan = np.isnan(g) & np.isnan(r)
    same_inf = np.isinf(r) & (g == r)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(both_nan | same_inf, 0.0, np.abs(g - r))
    diff = np.nan_to_num(diff, nan=np.inf, posinf=np.inf)
    # fp32 sums of large terms leave absolute errors in proportion to the
    # output's magnitude, even where one element cancels to near zero: the
    # absolute tolerance is taken relative to the output's scale (>= 1)
    finite = np.abs(r[np.isfinite(r)])
    scale = max(1.0, float(finite.max(initial=0.0)))
    atol_eff = atol * scale
    big = np.isfinite(r) & (np.abs(r) > atol_eff)
    with np.errstate(invalid="ignore", over="ignore"):
        rel = np.where(big, diff / np.where(big, np.abs(r), 1.0), 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        bound = np.where(np.isfinite(r), atol_eff + rtol * np.abs(r), atol_eff)
    ok = bool(np.all(diff <= bound))
    notes = [f"atol x output scale {scale:.3g}"] if scale > 1.0 else []
    if both_nan.any():
        notes.append(f"{int(both_nan.sum())} NaN as in the reference, counted equal")
    if same_inf.any():
        notes.append(f"{int(same_inf.sum())} Inf equal to the reference's")
    note = "; ".join(notes)
    return CheckRow(name, got.shape, float(diff.max(initial=0.0)), float(rel.max(initial=0.0)),
                    ok, note)


def check_against_onnx(model: str, inputs: Mapping[str, np.ndarray],
                       outputs: Mapping[str, np.ndarray], prog: object,
                       out: Callable[[str], None], rtol: float | None = None,
                       atol: float | None = None) -> tuple[list[CheckRow], float]:
    """Compare the simulated outputs with onnxruntime's; print one line each."""
    info = prog.info  # type: ignore[attr-defined]
    want = str(info.get("model_hash", ""))
    if want.startswith("sha256:") and _file_hash(model) != want:
        out(f"  note: {model} is not the file this binary was compiled from "
            f"(model hash differs)")
    train = (info.get("attrs") or {}).get("train")
    source: str | bytes = model
    data_dir = None
    if isinstance(train, dict):  # a training step: run the step exported from the model
        from wsec.backends.format import type_shape

        from .train import reference_step

        shapes = {n: list(type_shape(info["values"][n])) for n in info["inputs"]
                  if n != train.get("labels", "labels")}
        source = reference_step(model, train, shapes)
        data_dir = os.path.dirname(os.path.abspath(model))  # its external data's locations
        out(f"  reference: the training step exported from {model} ({train.get('loss')} loss, "
            f"{train.get('optimizer')}, lr {train.get('lr')})")
    ref, secs = onnx_reference(source, inputs, data_dir)
    rows = []
    rtol, atol = tolerances(prog, rtol, atol)
    dtype = getattr(getattr(prog, "target", None), "dtype", "f32")
    out(f"check against onnxruntime ({model}), PEs compute in {dtype}, rtol {rtol:g} "
        f"atol {atol:g}:")
    for name, arr in outputs.items():
        if name not in ref:
            row = CheckRow(name, arr.shape, np.inf, np.inf, False,
                           f"onnxruntime has no output '{name}'")
        else:
            row = compare(name, arr, ref[name], rtol, atol)
        rows.append(row)
        extra = f" ({row.note})" if row.note else ""
        out(f"  %{name} {list(row.shape)}: max abs {row.max_abs:.3g}, max rel "
            f"{row.max_rel:.3g}  {'PASS' if row.ok else 'FAIL'}{extra}")
        r = np.asarray(ref.get(name, 0.0))
        if row.ok and r.size and np.issubdtype(r.dtype, np.floating) \
                and not np.isfinite(r).any():
            out(f"  note: onnxruntime's %{name} has no finite value on this input, so the "
                f"check compares nothing there: give --input values that keep it finite")
    if not all(r.ok for r in rows):
        dts = {b.dtype for b in prog.blobs}  # type: ignore[attr-defined]
        if "f16" in dts:
            out("  hint: the binary stores its weights as f16 (--dtype f16), which alone "
                "costs ~1e-3 relative accuracy against the f32 model")
    return rows, secs


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def verify_binary(binary: str | bytes, model: str, out: Callable[[str], None], seed: int = 0,
                  base_dir: str | None = None) -> int:
    """`wsec MODEL -o OUT.bin --verify`: simulate the binary (a path, or its
    bytes before they are written, with `base_dir` the directory they go
    to) on a seeded random input and check it against onnxruntime; 0 on PASS."""
    from wsec.backends.loader import load_binary
    from wsec.backends.sim import SimError, random_inputs, simulate

    prog = load_binary(binary, base_dir=base_dir)
    inputs = random_inputs(prog, seed)
    try:
        res = simulate(prog, inputs)
    except SimError as e:
        raise SimError(f"--verify: {e}") from None
    rows, _ = check_against_onnx(model, inputs, res.outputs, prog, out)
    return 0 if all(r.ok for r in rows) else 1


# --- the Python API's load and run (docs/api.md) ---------------------------------------

def load(path_or_bytes: str | os.PathLike[str] | bytes) -> Any:
    """A binary, read and validated by the one loader every tool uses
    (a `wsec.backends.format.Program`)."""
    from wsec.backends.loader import load_binary

    return load_binary(path_or_bytes)


@dataclass
class RunResult:
    """The outputs a simulated run delivers, the inputs it ran on, and the
    check against onnxruntime when asked for (`check` rows; `passed`)."""

    outputs: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    check: list[CheckRow] | None = None

    @property
    def passed(self) -> bool | None:
        return None if self.check is None else all(r.ok for r in self.check)


def run(binary: Any, inputs: Mapping[str, np.ndarray] | None = None, seed: int = 0,
        check: str | os.PathLike[str] | None = None, rtol: float | None = None,
        atol: float | None = None) -> RunResult:
    """Execute a binary on the simulated wafer (`wsec run`): `binary` is a
    path, the bytes, a loaded program or a compiled model (`wsec.compile`);
    inputs not given are seeded random. With `check` (the ONNX model),
    compare with onnxruntime."""
    from wsec.backends.sim import random_inputs, simulate

    if isinstance(binary, (str, os.PathLike, bytes)):
        prog = load(binary)
    elif isinstance(getattr(binary, "binary", None), bytes):  # a wsec.Compiled
        prog = load(binary.binary)
    else:
        prog = binary
    feed = random_inputs(prog, seed)
    for name, arr in (inputs or {}).items():
        if name not in feed:
            raise UsageError(f"input '{name}': the binary's model inputs are "
                             f"{', '.join(prog.info['inputs'])}")
        want = feed[name]
        arr = np.asarray(arr)
        if arr.shape != want.shape:
            raise WsecError(f"input '{name}' has shape {list(arr.shape)} but the binary's "
                            f"has {list(want.shape)}")
        feed[name] = arr.astype(want.dtype, copy=False)
    res = simulate(prog, feed)
    rows = None
    if check is not None:
        rows, _ = check_against_onnx(os.fspath(check), feed, res.outputs, prog, lambda s: None,
                                     rtol, atol)
    return RunResult(dict(res.outputs), feed, rows)


class _RunModule(types.ModuleType):
    """`wsec.run` is this module (`from wsec.run import compare`) and, called,
    the Python API's `run` above: importing a submodule binds its name on
    the package, so the two must be one object."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run(*args, **kwargs)


sys.modules[__name__].__class__ = _RunModule
