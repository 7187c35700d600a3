"""QoR goldens for ONNX models, VPR style: per model a JSON file of layout
figures, each with a tolerance range, and the code that measures them.

    python tests/qor/qor.py              refresh every golden from a fresh compile
    python tests/qor/qor.py resnet50     refresh one

A golden holds, per metric, the value measured when it was refreshed and a
range of ratios (measured / golden) that still passes: a change that makes a
layout worse beyond the range fails the suite; one that makes it much
better fails too, so that the golden is refreshed and the gain is kept.
After a refresh, read the diff: every changed figure is a QoR change that a
commit message should explain.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

import onnx

HERE = pathlib.Path(__file__).resolve().parent
LIGHT = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
TARGET = "wse2"

# metric -> (ratio range measured / golden, what it is)
RANGES: dict[str, tuple[tuple[float, float], str]] = {
    "delta_t_over_bound": ((0.98, 1.02), "bottleneck cycles per sample / the area-sizing bound"),
    "realised_over_bound": ((0.95, 1.05), "realised cycles per sample (the slower of the "
                            "kernels and the busiest link or RAMP) / the area-sizing bound"),
    "pes_used": ((0.95, 1.05), "PEs inside kernel rectangles"),
    "wirelength_routed": ((0.8, 1.2), "bytes per sample x on-grid links of the routes"),
    "link_over_delta_t": ((0.9, 1.1), "busiest link or RAMP (wavelets/sample) / Δt"),
    "colors_max_per_pe": ((0.75, 1.25), "most colors routed through one PE"),
    "sram_max_bytes": ((0.95, 1.05), "largest SRAM use of one PE"),
}


def light_models() -> list[str]:
    return sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))


def metrics(report: dict[str, Any]) -> dict[str, float]:
    """The golden's figures from a compile report (wsec.report.build_report)."""
    s = report["summary"]
    dt = float(s["cycles_per_sample"])
    return {
        "delta_t_over_bound": dt / float(s["bound_cycles_per_sample"]),
        "realised_over_bound": (float(s["realised_cycles_per_sample"])
                                / float(s["bound_cycles_per_sample"])),
        "pes_used": float(s["pes_used"]),
        "wirelength_routed": float(s["wirelength_routed"]),
        "link_over_delta_t": float(s["link_bound_cycles_per_sample"]) / dt,
        "colors_max_per_pe": float(s["colors_max_per_pe"]),
        "sram_max_bytes": float(s["max_sram_bytes"]),
    }


def measure(name: str) -> dict[str, float]:
    """Compile light model `name` for the golden's target and measure it."""
    from wsec.driver import CompileOptions, compile_model
    from wsec.report import build_report

    res = compile_model(str(LIGHT / f"light_{name}.onnx"), CompileOptions(target=TARGET))
    return metrics(build_report(res.module, res.target, res.manager.timings))


def golden_path(name: str) -> pathlib.Path:
    return HERE / f"{name}.json"


def load(name: str) -> dict[str, Any]:
    return json.loads(golden_path(name).read_text(encoding="utf-8"))


def check(golden: dict[str, Any], got: dict[str, float]) -> list[str]:
    """Plain-word failures: metrics whose measured / golden ratio leaves the range."""
    bad = []
    for key, spec in golden["metrics"].items():
        want, (lo, hi) = float(spec["value"]), spec["range"]
        have = got[key]
        ratio = have / want if want else (1.0 if have == 0 else float("inf"))
        if not lo <= ratio <= hi:
            bad.append(f"{key} = {have:.6g}, golden {want:.6g} (ratio {ratio:.3f} outside "
                       f"[{lo}, {hi}]: {'worse' if ratio > hi else 'better'}; refresh with "
                       f"python tests/qor/qor.py {golden['model']} if intended)")
    return bad


def refresh(name: str) -> None:
    got = measure(name)
    doc = {"model": name, "target": TARGET,
           "metrics": {k: {"value": round(v, 6), "range": list(RANGES[k][0]),
                           "what": RANGES[k][1]} for k, v in got.items()}}
    golden_path(name).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
    print(f"{name}: " + ", ".join(f"{k} {v:.6g}" for k, v in got.items()))


if __name__ == "__main__":
    for n in sys.argv[1:] or light_models():
        refresh(n)
