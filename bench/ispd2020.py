"""Compile ISPD 2020 kernel graphs and print the contest QoR table.

    python bench/ispd2020.py [--time-limit 60] [--seed 0] [FILE.kgraph ...]

Without files it runs every .kgraph in ../shared/ispd2020 (relative to the
repository). Columns: kernels, the area-sizing lower bound, Δt, Δt / bound,
wirelength (the contest's: L1 between connected kernel centres), legality
(re-scored from the written solution file) and wall-clock seconds.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import tempfile

from wsec.frontends.kgraph import load_kgraph
from wsec.ispd.driver import compile_kgraph
from wsec.ispd.score import score
from wsec.ispd.solution import read_solution

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO.parent / "shared" / "ispd2020"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="kernel graphs (default: all in ../shared/ispd2020)")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    files = [pathlib.Path(f) for f in a.files] or sorted(DEFAULT_DIR.glob("*.kgraph"))
    if not files:
        print(f"no kernel graphs given and none in {DEFAULT_DIR}", file=sys.stderr)
        return 1
    hdr = (f"{'bench':<8}{'kernels':>8}{'bound':>9}{'Δt':>9}{'Δt/bound':>10}"
           f"{'wirelength':>12}{'legal':>7}{'seconds':>9}")
    print(f"time limit {a.time_limit:g} s, seed {a.seed}")
    print(hdr)
    print("-" * len(hdr))
    worst = 0.0
    with tempfile.TemporaryDirectory() as d:
        for f in files:
            sol = os.path.join(d, f.stem + ".sol")
            _, s = compile_kgraph(str(f), sol, a.time_limit, [f"place{{seed={a.seed}}}"])
            # legality from the file as written, scored afresh
            m = load_kgraph(str(f))
            with open(sol, encoding="utf-8") as fh:
                read_solution(fh.read(), m, sol)
            legal = score(m)["legal"]
            worst = max(worst, s["ratio"])
            print(f"{f.stem:<8}{s['kernels']:>8}{s['bound']:>9}{s['delta_t']:>9g}"
                  f"{s['ratio']:>10.4f}{s['wirelength']:>12g}{'yes' if legal else 'NO':>7}"
                  f"{s['seconds']:>9.1f}", flush=True)
    print(f"worst Δt/bound {worst:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
