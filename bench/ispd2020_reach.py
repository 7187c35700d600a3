"""How low can a kernel graph's weighted objective go? The strip lower bound per bottleneck time.

    python bench/ispd2020_reach.py FILE.kgraph [--wlength 40] [--width N --height N]
                                   [--target V | --baseline V [--gain 0.5]] [--span 3]

Why: bench/ispd2020.py measures wsec's weighted objective against the
Δt-first baseline; when a target such as "half the baseline" is missed, this
says whether any layout could meet it, and at which bottleneck times.

Per bottleneck time t at which some kernel's narrowest side shrinks (and at
the area-sizing bound), from the bound up to `span` times it: a lower bound
on the objective of every legal layout whose bottleneck lies between t and
the next such time, wdeltat x (t - 1) + wlength x Σ_connections (n_u + n_v)/2
(n: a kernel's narrowest side over its shapes meeting t; two rectangles that
do not overlap are apart by at least half the sum of their extents along
the axis separating them; t - 1 as the contest's exact times are
fractional); the narrowest sides' sum against the grid's width (when it
exceeds both width and height, no single row or column of narrowest strips
holds every kernel: the bound is then not reached by any layout that keeps
every connection between side-by-side strips); and the objective of wsec's
strip layout at t (place_strips, before refinement). The last lines give
the lowest bound over all times, and from which time on the bound stays
above the target.

Without --target or --baseline, the baseline is a Δt-first compile
(`-p 'place{wlength=0}'`, --time-limit 60) in a separate `wsec` process.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
from wsec.frontends.kgraph import load_kgraph
from wsec.ir import sizing
from wsec.ir.objective import Objective
from wsec.ir.target import module_target
from wsec.ispd.score import score
from wsec.ispd.solution import read_solution
from wsec.ispd.variants import with_header
from wsec.passes import PassContext
from wsec.passes.manager import PassManager, merge_options
from wsec.passes.place_tradeoff import _Sweep, narrow_breaks, narrow_side


def _baseline(path: str, limit: float) -> float:
    """The Δt-first weighted objective of a separate `wsec` compile."""
    exe = pathlib.Path(sys.executable).with_name("wsec")
    with tempfile.TemporaryDirectory() as work:
        sol = os.path.join(work, "b.sol")
        r = subprocess.run([str(exe) if exe.exists() else "wsec", path, "-o", sol,
                            "--time-limit", f"{limit:g}", "-q", "-p", "place{wlength=0}"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"baseline compile failed: {(r.stderr or r.stdout).strip()[:200]}")
        m = load_kgraph(path)
        with open(sol, encoding="utf-8") as f:
            read_solution(f.read(), m, sol)
        return float(score(m)["weighted"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file", help="kernel graph (.kgraph)")
    ap.add_argument("--wlength", type=int, help="replace the header's wlength")
    ap.add_argument("--width", type=int, help="replace the header's grid width")
    ap.add_argument("--height", type=int, help="replace the header's grid height")
    ap.add_argument("--target", type=float, help="the objective to reach")
    ap.add_argument("--baseline", type=float, help="Δt-first objective (target: 1-gain of it)")
    ap.add_argument("--gain", type=float, default=0.5)
    ap.add_argument("--span", type=float, default=3.0, help="times up to span x bound")
    ap.add_argument("--time-limit", type=float, default=60.0, help="of the baseline compile")
    a = ap.parse_args()
    changes = {k: v for k, v in (("wlength", a.wlength), ("width", a.width),
                                 ("height", a.height)) if v is not None}
    text = pathlib.Path(a.file).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, pathlib.Path(a.file).name)
        pathlib.Path(path).write_text(with_header(text, **changes), encoding="utf-8")
        module = load_kgraph(path)
        target = a.target
        if target is None:
            base = a.baseline if a.baseline is not None else _baseline(path, a.time_limit)
            target = (1 - a.gain) * base
            print(f"baseline {base:.0f}; target (gain {100 * a.gain:.0f}%) {target:.0f}")
    grid = module_target(module.attrs)
    objective = Objective.of(module.attrs)
    PassManager(merge_options(("size",), ["size{utilisation=1.0}"])).run(module,
                                                                         PassContext(grid))
    sw = _Sweep(module, grid, objective, "edges")
    t0 = sizing.sizing_tables(module, grid).smallest_time(float(grid.pes))
    if t0 is None:
        print("the kernels do not fit the grid at any size", file=sys.stderr)
        return 1
    hi = int(a.span * t0)
    times = sorted({int(t0), *narrow_breaks(sw, int(t0), hi)})
    rows = []
    for t in times:
        n = np.array([narrow_side(k, grid, t) or 0 for k in sw.kernels], dtype=np.float64)
        wire = sum(w * (n[i] + n[j]) / 2.0 for i, j, w in sw.pairs)
        strip = sw.at(t)
        rows.append((t, objective.value(t - 1, wire), wire, int(n.sum()), strip))
    print(f"{len(sw.kernels)} kernels, {len(sw.pairs)} connections, grid "
          f"{grid.width}x{grid.height}, wdeltat {objective.wdeltat:g}, wlength "
          f"{objective.wlength:g}; area-sizing bound {t0}")
    print(f"{'t':>8}{'t/bound':>9}{'bound':>10}{'wire LB':>9}{'Σ narrow':>10}{'strips':>10}")
    for t, lb, wire, total, strip in rows:
        mark = " <= target" if lb <= target else ""
        print(f"{t:>8}{t / t0:>9.4f}{lb:>10.0f}{wire:>9.1f}{total:>10}"
              f"{'-' if strip is None else f'{strip.value:.0f}':>10}{mark}")
    lows = np.minimum.accumulate(np.array([r[1] for r in rows])[::-1])[::-1]
    above = [r[0] for r, low in zip(rows, lows, strict=True) if low > target]
    print(f"lowest bound {min(r[1] for r in rows):.0f} (target {target:.0f})")
    if above and objective.wdeltat * (hi - 1) <= target:  # beyond hi: Δt alone is no bar
        print(f"beyond t = {hi} (--span) the bound was not computed")
    elif above:
        under = [r for r in rows if r[0] < above[0]]
        print(f"from t = {above[0]} on, every layout scores above the target; below it the "
              f"narrowest sides sum to at least {min((r[3] for r in under), default=0)} "
              f"(grid {grid.width}x{grid.height})")
    best = min((r[4] for r in rows if r[4] is not None), key=lambda c: c.value, default=None)
    if best is not None:
        print(f"best strip layout {best.value:.0f} at t = {best.t}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
