"""Which kernels' PEs the simulator holds to their lanes, per model: a table.

    python bench/inboxes.py [--models resnet50,vgg19,x.onnx] [--fixtures] [--mode stream]
                            [--bins DIR] [--seed 0]

Per model (onnx's nine light models): kernels, those whose PEs' windows
were checked against the lanes their cores received (`checked`,
sim_inbox.check_windows: a cut bundle proves them, a flat one counts the
PEs that would need forwarding), the kernels not checked by kind
(`unchecked`: their executor declares no window, or their input reaches
them without lanes), the checked kernels whose inputs all came on cut
bundles that held every window (`proven`) and the PEs reading elements
their lane did not bring (`forwarded PEs`). With --bins, DIR/<model>.bin
is used when present (else the model is compiled), so a table of binaries
compiled once prints in seconds. --mode stream compiles weight-streaming
binaries: a phase's PEs are checked against what their rows hold
(sim_stream_pe.held), and `move est` / `move held` sum over the phases
the schedule's move estimate and the cycles delivering the rows' holdings
takes at the least (sim_stats.move_figures). A --models entry ending in
.onnx is a model file; --fixtures adds every model of tests/fixtures. A
model with symbolic input dims is compiled at the shapes of the inputs its
sibling NAME.npz holds (`in.<input>`, or the input's own name as the
transformer fixtures store them); a model
that does not compile or simulate is a row saying why, not the end of the
table. The total line sums the forwarded PEs and the unchecked kernels
(both are gaps in the proof) and counts the models that failed.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
from collections import Counter

import numpy as np
import onnx
from wsec.backends.emit import write_binary
from wsec.backends.loader import load_binary
from wsec.backends.sim import random_inputs, simulate
from wsec.backends.sim_stats import move_figures
from wsec.driver import CompileOptions, compile_model

LIGHT = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def _stored_shapes(model: str, inputs: set[str]) -> dict[str, list[int]]:
    """The input shapes of the run stored beside the model (NAME.npz), if
    any: its arrays named `in.<input>` (the exports of tests/fixtures) or,
    in the transformer fixtures' older convention, named as the graph
    inputs themselves (their tests compile at those shapes: batch 1,
    sequence 16)."""
    npz = pathlib.Path(model).with_suffix(".npz")
    if not npz.exists():
        return {}
    with np.load(npz) as d:
        named = {k.removeprefix("in."): list(d[k].shape) for k in d.files}
        tagged = {k.removeprefix("in.") for k in d.files if k.startswith("in.")}
        return {k: v for k, v in named.items() if k in (tagged or inputs)}


def _binary(name: str, bins: str, mode: str) -> str:
    stem = _label(name).replace("/", "__")
    path = os.path.join(bins, f"{stem}.bin") if bins else ""
    if path and os.path.exists(path):
        return path
    model = name if name.endswith(".onnx") else str(LIGHT / f"light_{name}.onnx")
    graph = onnx.load(model, load_external_data=False).graph
    sym = any(not d.HasField("dim_value") for i in graph.input
              for d in i.type.tensor_type.shape.dim)
    shapes = _stored_shapes(model, {i.name for i in graph.input}) if sym else {}
    res = compile_model(model, CompileOptions(mode=mode, input_shapes=shapes))
    out = path or os.path.join(tempfile.mkdtemp(), f"{stem}.bin")
    write_binary(res.module, out)
    return out


def _label(name: str) -> str:
    """A light model's name, a fixture's path under tests/fixtures, else a file's stem."""
    if not name.endswith(".onnx"):
        return name
    p = pathlib.Path(name).resolve()
    return str(p.relative_to(FIXTURES).with_suffix("")) if p.is_relative_to(FIXTURES) \
        else p.stem


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated subset")
    ap.add_argument("--bins", default="", help="directory of compiled <model>.bin (reused)")
    ap.add_argument("--mode", default="pipeline", choices=["pipeline", "stream"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fixtures", action="store_true", help="add every model of tests/fixtures")
    a = ap.parse_args()
    names = sorted(p.stem.removeprefix("light_") for p in LIGHT.glob("light_*.onnx"))
    if a.models:
        want = a.models.split(",")
        names = [n for n in names if n in want] + [n for n in want if n.endswith(".onnx")]
    if a.fixtures:
        names = (names if a.models else []) + sorted(str(p) for p in FIXTURES.rglob("*.onnx"))
    stream = a.mode == "stream"
    w = max([14] + [len(_label(n)) + 1 for n in names])
    hdr = (f"{'model':<{w}}{'kernels':>8}{'checked':>9}{'proven':>8}{'forwarded PEs':>15}"
           + (f"{'move est':>10}{'move held':>11}" if stream else "")
           + "  unchecked (by kind)")
    print(hdr)
    print("-" * len(hdr))
    total, gaps, rows, unchecked, failed = 0, 0, 0, 0, 0
    for n in names:
        try:
            p = load_binary(_binary(n, a.bins, a.mode))
            res = simulate(p, random_inputs(p, a.seed))
        except Exception as e:  # noqa: BLE001 - a row saying why, and the next model
            print(f"{_label(n):<{w}}  error: {type(e).__name__}: {' '.join(str(e).split())[:160]}",
                  flush=True)
            failed += 1
            continue
        st = res.kernel_stats
        checked = [k for k in p.kernels if "forwarded_pes" in st.get(k.name, {})]
        fwd = sum(int(st[k.name]["forwarded_pes"]) for k in checked)
        proven = sum(1 for k in checked if not st[k.name]["forwarded_pes"])
        missing = Counter(k.kind for k in p.kernels if "forwarded_pes" not in st.get(k.name, {}))
        rest = ", ".join(f"{kind} {c}" for kind, c in sorted(missing.items())) or "-"
        mv = ""
        if stream:
            est, held, _, _ = move_figures(res)
            mv = f"{est:>10,}{held:>11,}"
        print(f"{_label(n):<{w}}{len(p.kernels):>8}{len(checked):>9}{proven:>8}{fwd:>15,}{mv}"
              f"  {rest}", flush=True)
        miss = sum(missing.values())
        total, gaps, rows = total + fwd, gaps + (fwd > 0 or miss > 0), rows + 1
        unchecked += miss
    print("-" * len(hdr))
    print(f"total: {total:,} forwarded PEs, {unchecked:,} kernels unchecked; {gaps} of {rows} "
          f"models read elements no lane brought or have kernels no check holds"
          + (f"; {failed} failed" if failed else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
