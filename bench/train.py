"""`--train` compiles: ResNet-50 layer-pipelined, GPT models from 125M to 175B
weight-streamed, as a table.

Why: issue 13 asks that one wafer's compiler lays out a training step for a
20-billion-parameter GPT in about a minute on a 2-core machine, reading no
weights. Each row runs `wsec MODEL -o train.bin --train` in a fresh process
(so its peak RSS, VmHWM, is that compile's alone) and prints compile time,
peak memory, the mode, the micro-batch, the time of one step and what
bounds the phases. GPT models come from bench/gen_gpt.py (structure only,
sparse external data: a 350 GB weight file costs no disk).

    python bench/train.py [--models resnet50,125m,1.3b,6.7b,neox20b,175b]
                          [--target wse2] [--optimizer adamw] [--onnx MODEL.onnx ...]

`--onnx` adds rows for models as given (auto mode), e.g. real exports with
their weights in external data (GPT-NeoX-20B's 41 GB file is never read).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_gpt import PRESETS, make_gpt, param_count  # noqa: E402

LIGHT = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
MODELS = ("resnet50", "125m", "1.3b", "6.7b", "neox20b", "175b")

_CHILD = r"""
import json, sys, time
t = time.perf_counter()
from wsec.cli import main
rc = main(sys.argv[1:])
out = {"rc": rc, "seconds": time.perf_counter() - t,
       "rss_mb": next(int(l.split()[1]) for l in open("/proc/self/status")
                      if l.startswith("VmHWM")) / 1024}
print(json.dumps(out))
"""


def with_weights(src: pathlib.Path, dst: str) -> str:
    """onnx's light models make their weights with ConstantOfShape (no
    initializers, so nothing would be trained): write a copy whose weights
    are initializers of those values."""
    from onnx import numpy_helper

    m = onnx.load(str(src))
    inits = {t.name: t for t in m.graph.initializer}
    keep = []
    for n in m.graph.node:
        if n.op_type == "ConstantOfShape" and n.input and n.input[0] in inits:
            shape = numpy_helper.to_array(inits[n.input[0]]).astype(int).tolist()
            value = numpy_helper.to_array(n.attribute[0].t).reshape(-1)
            m.graph.initializer.append(numpy_helper.from_array(
                __import__("numpy").full(shape, value[0], value.dtype), n.output[0]))
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.ir_version = max(m.ir_version, 4)  # initializers that are no graph inputs
    onnx.save(m, dst)
    return dst


def compile_row(model: str, mode: str, target: str, optimizer: str, work: str) -> dict:
    out, rep = os.path.join(work, "train.bin"), os.path.join(work, "report.json")
    args = [model, "-o", out, "--train", "--optimizer", optimizer, "--target", target,
            "--mode", mode, "-q", "--report-json", rep]
    r = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True)
    try:
        row = json.loads(r.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (r.stderr.strip().splitlines() or ["?"])[-1][:100]}
    if row["rc"] != 0:
        row["error"] = (r.stderr.strip().splitlines() or ["?"])[-1][:100]
        return row
    report = json.load(open(rep))
    row["report"] = report
    row["bin_mb"] = os.path.getsize(out) / 1e6
    return row


def _bounds(tr: dict) -> str:
    short = {"compute": "c", "stream": "w-in", "stream_out": "g-out", "move": "mv"}
    return " ".join(f"{short[k]}:{v}" for k, v in sorted(tr.get("phases_bound_by", {}).items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--target", default="wse2")
    ap.add_argument("--optimizer", default="adamw")
    ap.add_argument("--onnx", action="append", default=[], metavar="MODEL.onnx",
                    help="also compile this model (auto mode); repeatable")
    a = ap.parse_args()
    hdr = (f"{'model':<10}{'params':>8}{'mode':>9}{'kernels':>8}{'compile s':>10}"
           f"{'RSS MB':>8}{'batch':>6}{'step s':>10}{'samples/s':>11}{'tokens/s':>10}"
           f"  what bounds the phases / the pipeline")
    print(f"target {a.target}, optimizer {a.optimizer}")
    print(hdr)
    print("-" * len(hdr))
    rows = [m for m in a.models.split(",") if m] + [os.path.abspath(p) for p in a.onnx]
    for name in rows:
        with tempfile.TemporaryDirectory() as work:
            if name.endswith(".onnx"):
                path, mode, params = name, "auto", "-"
                name = pathlib.Path(name).stem[:10]
            elif name == "resnet50":
                path = with_weights(LIGHT / "light_resnet50.onnx",
                                    os.path.join(work, "resnet50.onnx"))
                mode, params = "pipeline", "25.6M"
            else:
                dims = PRESETS[name]
                path = os.path.join(work, f"gpt_{name}.onnx")
                make_gpt(path, **dims)
                mode, params = "auto", f"{param_count(**dims) / 1e9:.2f}B"
            row = compile_row(path, mode, a.target, a.optimizer, work)
        if "error" in row:
            print(f"{name:<10}{params:>8}  error: {row['error']}")
            continue
        rep = row["report"]
        s, tr = rep["summary"], rep["train"]
        if rep["mode"] == "stream":
            step = f"{tr['step_seconds']:.4g}"
            sps = f"{tr['samples_per_second']:.3g}"
            tps = f"{tr['tokens_per_second']:,.0f}" if tr["tokens_per_second"] else "-"
            batch = str(tr["micro_batch"])
            what = (f"{_bounds(tr)}; {tr['policy']}, "
                    f"{tr['phases_by_role'].get('recompute', {}).get('phases', 0)} recomputed")
        else:
            cyc = s["cycles_per_sample"]
            step = f"{cyc / rep['target']['clock_hz']:.4g}"
            sps = f"{s['samples_per_second']:,.0f}" if s["samples_per_second"] else "-"
            tps, batch = "-", "-"
            what = (f"Δt {cyc:,} cyc ({s['throughput_bound']}), stash "
                    f"{tr['stash_bytes_per_sample'] / 1e6:.1f} MB/sample")
        print(f"{name:<10}{params:>8}{rep['mode']:>9}{s['kernels']:>8}{row['seconds']:>10.1f}"
              f"{row['rss_mb']:>8.0f}{batch:>6}{step:>10}{sps:>11}{tps:>10}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
