"""Simulate onnx's nine light models and compare with onnxruntime: a table.

    python bench/simulate.py [--target wse2] [--dtype auto] [--models resnet50,vgg19] [--seed 0]

Per model: compile seconds, simulate seconds (`wsec run`'s simulate, the
binary only), onnxruntime seconds on the same input, their ratio, the
kernel ops run on whole tensors (`whole`: always 0, every kernel runs per
PE or the simulation fails naming the op), and the check (max abs / max rel error, PASS at
rtol 1e-4 / atol 1e-5). The device dtype follows the model by default
(`--dtype auto`: f32 for these models, so the binary keeps f32 weights);
`--dtype f16` stores f16 weights, which alone costs ~1e-3 relative accuracy
and is expected to FAIL the check.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import onnx
from wsec.backends.emit import write_binary
from wsec.backends.loader import load_binary
from wsec.backends.sim import random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.run import compare, onnx_reference

LIGHT = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="wse2")
    ap.add_argument("--dtype", default="auto", choices=("auto", "f16", "f32"),
                    help="device dtype (default: the model's)")
    ap.add_argument("--models", default="", help="comma-separated subset")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    names = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))
    if a.models:
        names = [n for n in names if n in a.models.split(",")]
    hdr = (f"{'model':<14}{'kernels':>8}{'compile s':>11}{'simulate s':>12}{'ort s':>9}"
           f"{'sim/ort':>9}{'whole':>7}{'max abs':>11}{'max rel':>11}  check")
    print(f"target {a.target}, device dtype {a.dtype}, seeded random input (seed {a.seed})")
    print(hdr)
    print("-" * len(hdr))
    ok_all = True
    for n in names:
        model = LIGHT / f"light_{n}.onnx"
        t0 = time.perf_counter()
        res = compile_model(str(model), CompileOptions(target=a.target, dtype=a.dtype))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.bin")
            write_binary(res.module, path)
            prog = load_binary(path)
        t1 = time.perf_counter()
        x = random_inputs(prog, a.seed)
        t2 = time.perf_counter()
        run = simulate(prog, x)
        sim_s = time.perf_counter() - t2
        got = run.outputs
        whole = sum(st.get("whole_tensor_ops", 0) for st in run.kernel_stats.values())
        ref, ort_s = onnx_reference(str(model), x)
        rows = [compare(k, v, ref[k]) for k, v in got.items()]
        ok = all(r.ok for r in rows)
        ok_all &= ok
        print(f"{n:<14}{len(prog.kernels):>8}{t1 - t0:>11.2f}{sim_s:>12.2f}{ort_s:>9.3f}"
              f"{sim_s / max(ort_s, 1e-9):>9.0f}{whole:>7}{max(r.max_abs for r in rows):>11.3g}"
              f"{max(r.max_rel for r in rows):>11.3g}  {'PASS' if ok else 'FAIL'}", flush=True)
    return 0 if ok_all else 1


if __name__ == "__main__":
    raise SystemExit(main())
