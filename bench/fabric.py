"""Data movement on the fabric: what the busiest link or RAMP costs next to the kernels.

    python bench/fabric.py [--target wse2] [--models resnet50,vgg19] [--fixtures] [-p OPT]
                           [--bins DIR]

Per light model (and, with --fixtures, the GPT fixtures of bench/gen_gpt.py
and DenseNet-121 at 112 px): the kernels' bottleneck time Δt, the area bound, the
busiest link including the RAMPs, realised cycles per sample (the larger of
Δt and that link) over the bound, colors at the busiest PE, routed
wirelength, the router's negotiation rounds, and compile seconds. A row
that cannot be compiled in pipeline mode says why. With --bins, each
binary is written to DIR/<row>.bin, for bench/inboxes.py --bins DIR to
check without compiling again.
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
from wsec.ir.errors import WsecError
from wsec.report import build_report

LIGHT = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
HERE = pathlib.Path(__file__).resolve().parent


# the GPT fixtures: GPT-2 small at two sequence lengths and a GPT
# with GPT-2 XL's dims (1.5B), weights as sparse files (never read)
FIXTURES = {
    "gpt2_T1024": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=50257, seq=1024),
    "gpt2_T2048": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=50257, seq=2048),
    "gpt_1.5b": dict(layers=48, hidden=1600, heads=25, ffn=6400, vocab=50257, seq=1024),
}


# light models at another input size: (row name, model, input name, shape)
RESIZED = [("densenet121_112", "densenet121", "data_0", [1, 3, 112, 112])]


def _fixtures(d: str) -> list[tuple[str, str]]:
    sys.path.insert(0, str(HERE))
    import gen_gpt

    out = []
    for name, kw in FIXTURES.items():
        path = os.path.join(d, f"{name}.onnx")
        gen_gpt.make_gpt(path, **kw)
        out.append((name, path))
    return out


def _resized() -> list[tuple[str, str, dict[str, list[int]]]]:
    return [(name, str(LIGHT / f"light_{model}.onnx"), {inp: shape})
            for name, model, inp, shape in RESIZED]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="wse2")
    ap.add_argument("--models", default="", help="comma-separated subset of the light models")
    ap.add_argument("--fixtures", action="store_true", help="also the GPT fixtures")
    ap.add_argument("-p", dest="passes", action="append", default=[],
                    help="pass option, as for wsec -p")
    ap.add_argument("--bins", default="", help="write each binary to DIR/<row>.bin")
    a = ap.parse_args()
    names = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))
    if a.models:
        names = [n for n in names if n in a.models.split(",")]
    hdr = (f"{'model':<16}{'Δt':>8}{'bound':>8}{'link+RAMP':>11}{'realised':>10}"
           f"{'real/bnd':>9}{'colors/PE':>10}{'wirelength':>19}{'rounds':>7}{'compile s':>10}")
    print(f"target {a.target}, pipeline mode")
    print(hdr)
    print("-" * len(hdr))
    with tempfile.TemporaryDirectory() as d:
        models = [(n, str(LIGHT / f"light_{n}.onnx"), {}) for n in names]
        if a.fixtures:
            models += [(n, p, {}) for n, p in _fixtures(d)] + _resized()
        for name, path, shapes in models:
            t0 = time.perf_counter()
            try:
                res = compile_model(path, CompileOptions(target=a.target, mode="pipeline",
                                                         input_shapes=shapes,
                                                         pass_options=a.passes))
            except WsecError as e:
                print(f"{name:<16}  not compiled: {str(e)[:110]}")
                continue
            secs = time.perf_counter() - t0
            if a.bins:
                os.makedirs(a.bins, exist_ok=True)
                write_binary(res.module, os.path.join(a.bins, f"{name}.bin"))
            s = build_report(res.module, res.target)["summary"]
            bound = s["bound_cycles_per_sample"] or 0
            real = s["realised_cycles_per_sample"]
            ratio = f"{real / bound:.3f}" if bound else "-"
            rounds = len(res.module.attrs.get("route_iterations") or [])
            print(f"{name:<16}{s['cycles_per_sample']:>8}{bound:>8}"
                  f"{s['link_bound_cycles_per_sample']:>11}{real:>10}{ratio:>9}"
                  f"{s['colors_max_per_pe']:>10}{s['wirelength_routed']:>19,}{rounds:>7}"
                  f"{secs:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
