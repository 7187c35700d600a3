"""Compile-time of the IR machinery and the passes on large inputs, as a table.

    python bench/pass_speed.py

Timed targets live here rather than in tests (a test asserts behaviour; a
loaded CI machine should not turn a slow run into a red build). Each row
names what was measured, the size of the input, the seconds taken and the
target the design asks for.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

import onnx
from wsec.driver import CompileOptions, compile_model
from wsec.frontends.onnx import load_onnx
from wsec.ir.graph import HOST, Bundle, Edge, Module
from wsec.ir.kernels import KINDS
from wsec.ir.parser import parse_module
from wsec.ir.printer import print_module
from wsec.ir.target import get_target
from wsec.ir.types import TensorType
from wsec.ir.verify import verify_module

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def routed_module(bundles: int) -> Module:
    """`bundles` host-to-host values, each one bundle of lanes across the
    wafer along its own row (a new color every 990 rows)."""
    m = Module("routed", attrs={"grid": [750, 994]})
    names = [f"x{j}" for j in range(bundles)]
    for n in names:
        m.add_value(n, TensorType("f16", (8,)))
    m.inputs = m.outputs = names
    m.edges = [Edge(n, HOST, [HOST], 16, [Bundle(HOST, j // 990, 1, (0, 1),
                                                ((0, j % 990), (749, j % 990)))])
               for j, n in enumerate(names)]
    return m


def main() -> int:
    rows: list[tuple[str, str, float, str]] = []
    densenet = os.path.join(LIGHT, "light_densenet121.onnx")
    rows.append(("load ONNX", "densenet121 (1746 nodes)", timed(lambda: load_onnx(densenet)),
                 "< 2 s"))
    res = compile_model(densenet, CompileOptions())
    text = print_module(res.module)
    rows.append(("print IR", f"densenet121 compiled ({len(text) // 1024} KiB)",
                 timed(lambda: print_module(res.module)), "< 1 s"))
    rows.append(("parse + verify IR", "densenet121 compiled",
                 timed(lambda: verify_module(parse_module(text))), "< 1 s"))
    big = routed_module(10_000)
    big_text = print_module(big)
    rows.append(("print IR", "10k bundles", timed(lambda: print_module(big)), "< 0.5 s"))
    rows.append(("parse + verify IR", "10k bundles",
                 timed(lambda: verify_module(parse_module(big_text))), "< 1.5 s"))
    conv = dict(N=1, C=256, K=512, H=28, W=28, Ho=28, Wo=28, R=3, S=3, sh=1, sw=1, G=1, F=1,
                pads=0)
    try:
        rows.append(("conv choices()", "C=256 K=512 28x28 3x3",
                     timed(lambda: KINDS["conv"].choices(conv, get_target("wse2"))), "< 0.05 s"))
    except KeyError:  # the conv kind's dims changed; the row is informative only
        pass
    for name, t in res.manager.timings:
        rows.append((f"pass {name}", "densenet121 on wse2", t, "< 2 s"))
    w = max(len(r[0]) for r in rows)
    v = max(len(r[1]) for r in rows)
    print(f"{'what':<{w}}  {'input':<{v}}  {'seconds':>8}  target")
    for what, inp, sec, target in rows:
        print(f"{what:<{w}}  {inp:<{v}}  {sec:8.3f}  {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
