"""Compile-time and memory scaling on GPT-style models from 125M to 175B.

Why: issue 5 asks that a 20B-parameter model compiles on a 2-core machine in
about a minute without reading its weights. For each preset this generates
the model (sparse weight file, so 41 GB or 350 GB take no disk) in a temp
dir, then in a fresh process (so peak RSS is that compile's alone) times
load, canonicalize, form-kernels and mode selection, and prints a table.
With `--full` it instead runs the whole compile as a user would
(`wsec MODEL -o m.bin`, auto mode: back end, fingerprints, emit) in a fresh
process and reports its wall time, peak RSS, mode, phases and binary size.

    python bench/scale.py [--presets 125m,neox20b] [--layers N] [--rotary] [--full]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_gpt import PRESETS, make_gpt, param_count  # noqa: E402

_CHILD = r"""
import json, sys, time
def rss():  # VmHWM: ru_maxrss would keep the forking parent's peak across exec
    return next(int(l.split()[1]) for l in open("/proc/self/status")
                if l.startswith("VmHWM")) / 1024
out = {}
t = time.perf_counter()
from wsec.frontends.onnx import load_onnx
from wsec.ir.target import get_target
from wsec.passes.base import PassContext
from wsec.passes.canonicalize import Canonicalize
from wsec.passes.form_kernels import FormKernels
from wsec.mode import select_mode
target = get_target(sys.argv[2])
ctx = PassContext(target)
try:
    m = load_onnx(sys.argv[1]); out["nodes"] = len(m.nodes)
    out["load"] = time.perf_counter() - t; t = time.perf_counter()
    Canonicalize().run(m, ctx); m.properties.add("canonical"); out["ops"] = len(m.nodes)
    out["canon"] = time.perf_counter() - t; t = time.perf_counter()
    FormKernels().run(m, ctx); m.properties.add("kernels")
    out["kernels"] = len(m.nodes)
    out["fk"] = time.perf_counter() - t; t = time.perf_counter()
    d = select_mode(m, target, "auto")
    out["mode"] = d.mode; out["need_gb"] = d.bytes_needed / 1e9
    out["select"] = time.perf_counter() - t
except Exception as e:  # report, do not stop the table
    out["error"] = f"{type(e).__name__}: {e}"[:160]
out["rss_mb"] = rss()
print(json.dumps(out))
"""


_FULL = r"""
import json, sys, time
t = time.perf_counter()
from wsec.cli import main
rc = main([sys.argv[1], "-o", sys.argv[3], "--target", sys.argv[2], "-q",
           "--report-json", sys.argv[3] + ".json"])
out = {"rc": rc, "total": time.perf_counter() - t,
       "rss_mb": next(int(l.split()[1]) for l in open("/proc/self/status")
                      if l.startswith("VmHWM")) / 1024}
if rc == 0:
    rep = json.load(open(sys.argv[3] + ".json"))
    out.update(mode=rep["mode"], phases=rep["summary"].get("phases", 0),
               cycles=rep["summary"]["cycles_per_sample"],
               streamed_gb=rep["summary"].get("bytes_streamed_per_sample", 0) / 1e9,
               bin_mb=__import__("os").path.getsize(sys.argv[3]) / 1e6)
print(json.dumps(out))
"""


def measure_full(preset: str, layers: int | None, rotary: bool, target: str) -> dict:
    """The whole compile (`wsec MODEL -o m.bin`) in a fresh process."""
    dims = dict(PRESETS[preset])
    if layers:
        dims["layers"] = layers
    with tempfile.TemporaryDirectory(prefix="wsec-scale-") as d:
        path = os.path.join(d, f"gpt_{preset}.onnx")
        make_gpt(path, **dims, rotary=rotary)
        r = subprocess.run([sys.executable, "-c", _FULL, path, target, os.path.join(d, "m.bin")],
                           capture_output=True, text=True)
        lines = r.stdout.strip().splitlines()
        row = json.loads(lines[-1]) if lines else {"rc": -1}
        if row.get("rc"):
            row["error"] = r.stderr.strip()[-160:]
        row.update(preset=preset, layers=dims["layers"], params=param_count(**dims))
    return row


def main_full(presets: list[str], layers: int | None, rotary: bool, target: str) -> None:
    head = (f"{'model':<8} {'layers':>6} {'params':>8} {'total s':>8} {'RSS MB':>7} "
            f"{'phases':>6} {'cycles/sample':>14} {'GB streamed':>11} {'bin MB':>7}  mode")
    print(head)
    print("-" * len(head))
    for preset in presets:
        r = measure_full(preset, layers, rotary, target)
        mode = r.get("mode") or f"ERROR {r.get('error', '?')}"
        print(f"{r['preset']:<8} {r['layers']:>6} {r['params'] / 1e9:>7.2f}B "
              f"{r.get('total', 0):>8.2f} {r.get('rss_mb', 0):>7.0f} {r.get('phases', 0):>6} "
              f"{r.get('cycles', 0):>14,} {r.get('streamed_gb', 0):>11.2f} "
              f"{r.get('bin_mb', 0):>7.2f}  {mode}", flush=True)


def measure(preset: str, layers: int | None, rotary: bool, target: str) -> dict:
    dims = dict(PRESETS[preset])
    if layers:
        dims["layers"] = layers
    with tempfile.TemporaryDirectory(prefix="wsec-scale-") as d:
        path = os.path.join(d, f"gpt_{preset}.onnx")
        t = time.perf_counter()
        data = make_gpt(path, **dims, rotary=rotary)
        gen = time.perf_counter() - t
        r = subprocess.run([sys.executable, "-c", _CHILD, path, target], capture_output=True,
                           text=True)
        lines = r.stdout.strip().splitlines()
        row = json.loads(lines[-1]) if lines else {"error": r.stderr.strip()[-160:]}
        row.update(preset=preset, layers=dims["layers"], gen=gen,
                   params=param_count(**dims), weights_gb=os.path.getsize(data) / 1e9)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--layers", type=int, help="override every preset's layer count")
    ap.add_argument("--rotary", action="store_true")
    ap.add_argument("--target", default="wse2")
    ap.add_argument("--full", action="store_true",
                    help="time the whole compile to a binary instead of the front end")
    a = ap.parse_args(argv)
    if a.full:
        main_full([p.strip() for p in a.presets.split(",")], a.layers, a.rotary, a.target)
        return 0
    head = (f"{'model':<8} {'layers':>6} {'params':>8} {'weights':>9} {'nodes':>6} {'ops':>6} "
            f"{'kern':>5} {'load s':>7} {'canon s':>7} {'fk s':>6} {'mode s':>6} {'total s':>7} "
            f"{'RSS MB':>7}  mode")
    print(head)
    print("-" * len(head))
    for preset in a.presets.split(","):
        r = measure(preset.strip(), a.layers, a.rotary, a.target)
        total = sum(r.get(k, 0.0) for k in ("load", "canon", "fk", "select"))
        mode = (f"{r['mode']} (needs {r['need_gb']:.1f} GB)" if "mode" in r
                else f"ERROR {r.get('error', '?')}")
        print(f"{r['preset']:<8} {r['layers']:>6} {r['params'] / 1e9:>7.2f}B "
              f"{r['weights_gb']:>7.1f}GB {r.get('nodes', 0):>6} {r.get('ops', 0):>6} "
              f"{r.get('kernels', 0):>5} {r.get('load', 0):>7.2f} {r.get('canon', 0):>7.2f} "
              f"{r.get('fk', 0):>6.2f} {r.get('select', 0):>6.2f} {total:>7.2f} "
              f"{r.get('rss_mb', 0):>7.0f}  {mode}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
