"""Compile onnx's nine light models and print a QoR / compile-time table.

    python bench/light_models.py [--target wse2] [--models resnet50,vgg19]

Columns: kernels, PEs used, cycles per sample (Δt) and the area-sizing
bound, their ratio, routed wirelength, busiest link, largest SRAM, and
compile seconds (passes only, then including emission).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile
import time

import onnx
from wsec.backends.emit import write_binary
from wsec.driver import CompileOptions, compile_model
from wsec.report import build_report

LIGHT = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="wse2")
    ap.add_argument("--models", default="", help="comma-separated subset")
    a = ap.parse_args()
    names = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))
    if a.models:
        names = [n for n in names if n in a.models.split(",")]
    hdr = (f"{'model':<14}{'kernels':>8}{'PEs used':>10}{'Δt':>10}{'bound':>10}{'Δt/bnd':>8}"
           f"{'wirelength':>14}{'link util':>10}{'SRAM max':>10}{'passes s':>10}{'total s':>9}")
    print(f"target {a.target}")
    print(hdr)
    print("-" * len(hdr))
    for n in names:
        t0 = time.perf_counter()
        res = compile_model(str(LIGHT / f"light_{n}.onnx"), CompileOptions(target=a.target))
        t1 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            write_binary(res.module, os.path.join(d, "m.bin"))
        t2 = time.perf_counter()
        s = build_report(res.module, res.target)["summary"]
        bound = s["bound_cycles_per_sample"] or 0
        ratio = f"{s['cycles_per_sample'] / bound:.3f}" if bound else "-"
        print(f"{n:<14}{s['kernels']:>8}{s['pes_used']:>10}{s['cycles_per_sample']:>10}"
              f"{bound:>10}{ratio:>8}{s['wirelength_routed']:>14,}"
              f"{s['max_link_utilisation']:>10.3f}{s['max_sram_bytes']:>10}"
              f"{t1 - t0:>10.2f}{t2 - t0:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
