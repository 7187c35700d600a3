"""Compile and simulate onnx's PyTorch test cases; write docs/onnx-coverage.md.

Why: a case counts as covered only when the whole product handles it — the
binary wsec writes, executed by the device simulator, reproduces the case's
reference outputs. For every `pytorch-converted` and `pytorch-operator` case
shipped in onnx's wheel this script

1. compiles `model.onnx` with `wsec.driver.compile_model` for the full wse2
   wafer (default options: device dtype follows the model),
2. emits the binary and reads it back through the loader (`load_binary`),
3. runs `wsec.backends.sim.simulate` on the case's own
   `test_data_set_0/input_*.pb`, and
4. compares every output with `test_data_set_0/output_*.pb`
   (rtol 1e-4, atol 1e-5, NaN equal to NaN).

Status: PASS; UNSUPPORTED when wsec refuses the model with a user-facing
error (frontend, a pass, mode selection, the emitter); FAIL when the binary
does not compute the reference (a mismatch, a simulator error, or a crash).
The reason is the error's first line. `tests/test_onnx_cases.py` runs
`run_case` on every case and checks the table below it against this doc.

    python tests/gen_coverage.py            # rewrite docs/onnx-coverage.md
"""

from __future__ import annotations

import glob
import os
import pathlib
import sys
import tempfile
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

DATA_DIR = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"
SUITES = ("pytorch-converted", "pytorch-operator")
ROOT = pathlib.Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "onnx-coverage.md"
RTOL, ATOL = 1e-4, 1e-5
TARGET = "wse2"  # the full wafer, the same for every case


@dataclass
class CaseResult:
    suite: str
    case: str
    ops: list[str]
    opset: int
    status: str  # "PASS", "FAIL" or "UNSUPPORTED"
    reason: str = ""
    kernels: int = 0


def all_cases() -> list[tuple[str, str]]:
    """(suite, case) for every case directory in onnx's wheel, sorted."""
    return [(s, c) for s in SUITES for c in sorted(os.listdir(DATA_DIR / s))
            if (DATA_DIR / s / c / "model.onnx").is_file()]


def _read_pbs(case_dir: pathlib.Path, prefix: str) -> list[onnx.TensorProto]:
    files = sorted(glob.glob(str(case_dir / "test_data_set_0" / f"{prefix}_*.pb")),
                   key=lambda p: int(p.rsplit("_", 1)[1].split(".")[0]))
    out = []
    for f in files:
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        out.append(t)
    return out


def _one_line(e: BaseException, case_dir: pathlib.Path) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.replace(str(case_dir) + os.sep, "")


def _refusals() -> tuple[type[BaseException], ...]:
    """The exceptions by which wsec refuses a model it cannot handle."""
    from wsec.backends.emit import EmitError
    from wsec.driver import CompileError
    from wsec.frontends.onnx import FrontendError
    from wsec.passes.base import PassError

    return (FrontendError, PassError, CompileError, EmitError)


def run_case(suite: str, case: str) -> CaseResult:
    """Compile, emit, load and simulate one case; compare with its reference."""
    from wsec.backends.emit import write_binary
    from wsec.backends.loader import load_binary
    from wsec.backends.sim import simulate
    from wsec.driver import CompileOptions, compile_model

    case_dir = DATA_DIR / suite / case
    proto = onnx.load(str(case_dir / "model.onnx"))
    ops = sorted({n.op_type for n in proto.graph.node})
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    res = CaseResult(suite, case, ops, opset, "PASS")
    try:
        comp = compile_model(str(case_dir / "model.onnx"), CompileOptions(target=TARGET))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.bin")
            write_binary(comp.module, path)
            prog = load_binary(path)
    except _refusals() as e:
        res.status, res.reason = "UNSUPPORTED", f"{type(e).__name__}: {_one_line(e, case_dir)}"
        return res
    except Exception as e:  # a crash is a finding to report, not a reason to stop
        res.status, res.reason = "FAIL", f"compile crashed: {type(e).__name__}: " \
                                         f"{_one_line(e, case_dir)}"
        return res
    res.kernels = len(prog.kernels)
    names = list(prog.info["inputs"])
    feeds = {}
    for k, t in enumerate(_read_pbs(case_dir, "input")):
        feeds[t.name if t.name in names else names[k]] = numpy_helper.to_array(t)
    try:
        with np.errstate(all="ignore"):  # NaN-producing cases (sqrt, pow) are expected
            got = simulate(prog, feeds).outputs
    except Exception as e:  # noqa: BLE001 - SimError or a crash: the binary failed
        res.status, res.reason = "FAIL", f"simulate: {type(e).__name__}: " \
                                         f"{_one_line(e, case_dir)}"
        return res
    want = [numpy_helper.to_array(t) for t in _read_pbs(case_dir, "output")]
    bad = []
    for o, w in zip(prog.info["outputs"], want, strict=True):
        g = got[o]
        if g.shape != w.shape:
            bad.append(f"output '{o}': shape {list(g.shape)} vs reference {list(w.shape)}")
        elif not np.allclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True):
            with np.errstate(invalid="ignore"):
                err = np.nan_to_num(np.abs(g.astype(np.float64) - w), nan=np.inf)
            bad.append(f"output '{o}': max abs error {float(err.max()):.3g}")
    if bad:
        res.status, res.reason = "FAIL", "; ".join(bad)
    return res


def doc_rows(text: str) -> dict[str, str]:
    """case -> status, parsed from a coverage doc."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 6 and cells[1] in SUITES:
            out[cells[2]] = cells[5]
    return out


def write_doc(results: list[CaseResult], path: pathlib.Path = DOC) -> str:
    n = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "UNSUPPORTED")}
    pct = 100.0 * n["PASS"] / len(results)
    lines = [
        "# ONNX PyTorch test cases: wsec coverage (compiled and simulated)",
        "",
        f"**{n['PASS']} of {len(results)} cases pass ({pct:.1f}%); {n['FAIL']} fail, "
        f"{n['UNSUPPORTED']} unsupported.**",
        "",
        "Generated by `python tests/gen_coverage.py` from the `pytorch-converted` and",
        "`pytorch-operator` cases in onnx's wheel (`onnx/backend/test/data/`);",
        "`tests/test_onnx_cases.py` runs the same cases and checks this table.",
        "",
        f"PASS means: `wsec` compiled `model.onnx` for the full `{TARGET}` wafer with",
        "default options (the device dtype follows the model, f32 here), the binary",
        "was emitted and read back by the loader, the device simulator",
        "(`wsec.backends.sim.simulate`, nothing but the binary) ran it on the case's",
        "`test_data_set_0` inputs, and every output matches the case's reference",
        f"outputs (rtol {RTOL:g}, atol {ATOL:g}, NaN equals NaN).",
        "UNSUPPORTED: wsec refuses the model with the error quoted (no binary);",
        "FAIL: a binary was produced but does not compute the reference.",
        "",
        "| suite | case | opset | ops | status | kernels | reason |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        reason = r.reason.replace("|", "\\|")
        lines.append(f"| {r.suite} | {r.case} | {r.opset} | {', '.join(r.ops)} | "
                     f"{r.status} | {r.kernels or ''} | {reason} |")
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main() -> int:
    results = []
    for s, c in all_cases():
        results.append(run_case(s, c))
        print(f"  {results[-1].status:11s} {c}", flush=True)
    write_doc(results)
    n_pass = sum(r.status == "PASS" for r in results)
    print(f"{n_pass}/{len(results)} cases pass; wrote {DOC}")
    for r in results:
        if r.status != "PASS":
            print(f"  {r.status:11s} {r.case}: {r.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
