"""Compile-time and memory scaling on GPT-style models from 125M to 175B.

Why: issue 5 asks that a 20B-parameter model compiles on a 2-core machine in
about a minute without reading its weights. For each preset this generates
the model (sparse weight file, so 41 GB or 350 GB take no disk) in a temp
dir, then in a fresh process (so peak RSS is that compile's alone) times
load, canonicalize, form-kernels and mode selection, and prints a table.

    python bench/scale.py [--presets 125m,neox20b] [--layers N] [--rotary]
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
import json, resource, sys, time
def rss(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
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
    a = ap.parse_args(argv)
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
