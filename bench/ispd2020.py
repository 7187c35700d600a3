"""Compile ISPD 2020 kernel graphs and their variants; print the contest QoR table.

    python bench/ispd2020.py [--time-limit 60] [--seed 0] [--no-baseline]
                             [--variants own,wl4,wl40,wl400,open] [FILE.kgraph ...]

Without files it runs every .kgraph in ../shared/ispd2020 (relative to the
repository). Per graph: its own header ("own"), and once per distinct graph
(the same nodes and connections under another header count once) the
variants of wsec.ispd.variants: wlength 4, 40 and 400, and an open grid
(large enough that the area does not bind) with the graph's own weights.

Every compile is a separate `wsec` process timed from outside (start-up and
writing included, as the contest counts), and its solution file is scored
afresh. Columns, each as Δt-first baseline (`-p 'place{wlength=0}'`) and
then wsec's weighted placement: Δt / area-sizing bound, wirelength (the
contest's), the weighted objective wdeltat x Δt + wlength x wirelength, and
wall seconds; `gain` is how much lower the weighted objective is.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

from wsec.frontends.kgraph import load_kgraph
from wsec.ispd.score import score
from wsec.ispd.solution import read_solution
from wsec.ispd.variants import open_grid_side, with_header

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO.parent / "shared" / "ispd2020"
KINDS = ("own", "wl4", "wl40", "wl400", "open")


def _wsec() -> str:
    exe = pathlib.Path(sys.executable).with_name("wsec")
    return str(exe) if exe.exists() else "wsec"


def run(kgraph: str, limit: float, seed: int, weighted: bool, work: str) -> dict[str, Any]:
    """One `wsec` process on `kgraph`: its wall seconds and the solution scored afresh."""
    tag = "w" if weighted else "b"
    stem = pathlib.Path(kgraph).stem
    sol, rep = os.path.join(work, f"{stem}.{tag}.sol"), os.path.join(work, f"{stem}.{tag}.json")
    opts = f"place{{seed={seed}}}" if weighted else f"place{{seed={seed},wlength=0}}"
    t0 = time.perf_counter()
    r = subprocess.run([_wsec(), kgraph, "-o", sol, "--time-limit", f"{limit:g}", "-q",
                        "--report-json", rep, "-p", opts], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if r.returncode != 0 or not os.path.exists(sol):
        return {"ok": False, "seconds": seconds, "error": (r.stderr or r.stdout).strip()[:200]}
    m = load_kgraph(kgraph)
    with open(sol, encoding="utf-8") as f:
        read_solution(f.read(), m, sol)
    s = score(m)
    with open(rep, encoding="utf-8") as f:
        bound = json.load(f)["bound"]
    return {"ok": s["legal"], "seconds": seconds, "delta_t": s["delta_t"], "bound": bound,
            "wirelength": s["wirelength"], "weighted": s["weighted"]}


def _body(text: str) -> str:
    """The graph without its header: nodes and connections."""
    return re.sub(r"\s+", " ", re.sub(r"\(\*.*?\*\)", " ", text, flags=re.S)).strip()


def cases(files: list[pathlib.Path], kinds: list[str], work: str) -> list[tuple[str, str, str]]:
    """(name, kind, kgraph path) per row: own headers first, then variants of
    each distinct graph."""
    out, seen = [], set()
    for f in files:
        if "own" in kinds:
            out.append((f.stem, "own", str(f)))
    for f in files:
        text = f.read_text(encoding="utf-8")
        if _body(text) in seen:
            continue
        seen.add(_body(text))
        for kind in kinds:
            if kind.startswith("wl"):
                new = with_header(text, wlength=int(kind[2:]))
            elif kind == "open":
                side = open_grid_side(text)
                new = with_header(text, width=side, height=side)
                kind = f"open{side}"
            else:
                continue
            path = os.path.join(work, f"{f.stem}-{kind}.kgraph")
            pathlib.Path(path).write_text(new, encoding="utf-8")
            out.append((f.stem, kind, path))
    return out


def _cell(r: dict[str, Any] | None, key: str, fmt: str) -> str:
    if r is None:
        return "-"
    if not r["ok"]:
        return "FAIL"
    v = r["delta_t"] / r["bound"] if key == "ratio" else r[key]
    return format(v, fmt)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", help="kernel graphs (default: all in ../shared/ispd2020)")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-baseline", action="store_true", help="skip the Δt-first runs")
    ap.add_argument("--variants", default=",".join(KINDS),
                    help=f"comma-separated subset of {','.join(KINDS)}")
    a = ap.parse_args()
    kinds = [k for k in a.variants.split(",") if k]
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        print(f"unknown variant(s) {', '.join(bad)} (known: {', '.join(KINDS)})", file=sys.stderr)
        return 2
    files = [pathlib.Path(f) for f in a.files] or sorted(DEFAULT_DIR.glob("*.kgraph"))
    if not files:
        print(f"no kernel graphs given and none in {DEFAULT_DIR}", file=sys.stderr)
        return 1
    print(f"time limit {a.time_limit:g} s (whole process), seed {a.seed}; each cell: "
          "Δt-first baseline / weighted")
    hdr = (f"{'bench':<6}{'variant':<11}{'wd,wl':>7}{'Δt/bound':>17}{'wirelength':>19}"
           f"{'weighted':>21}{'gain':>7}{'seconds':>13}{'legal':>7}")
    print(hdr)
    print("-" * len(hdr))
    worst_own, worst_heavy, slowest, all_legal = -1e9, 1e9, 0.0, True
    with tempfile.TemporaryDirectory() as work:
        for name, kind, path in cases(files, kinds, work):
            mod = load_kgraph(path)
            wd, wl = mod.attrs.get("wdeltat", 1), mod.attrs.get("wlength", 1)
            base = None if a.no_baseline else run(path, a.time_limit, a.seed, False, work)
            ours = run(path, a.time_limit, a.seed, True, work)
            gain = None
            if base and base["ok"] and ours["ok"]:
                gain = 1 - ours["weighted"] / base["weighted"]
                if kind == "own":
                    worst_own = max(worst_own, -gain)
                if kind.startswith("open") or (kind.startswith("wl") and int(kind[2:]) >= 40):
                    worst_heavy = min(worst_heavy, gain)
            legal = bool(ours["ok"]) and (base is None or bool(base["ok"]))
            all_legal &= legal
            slowest = max(slowest, ours["seconds"], base["seconds"] if base else 0.0)
            base_s = "-" if base is None else f"{base['seconds']:.1f}"
            print(f"{name:<6}{kind:<11}{f'{wd},{wl}':>7}"
                  f"{_cell(base, 'ratio', '.4f'):>8} /{_cell(ours, 'ratio', '.4f'):>7}"
                  f"{_cell(base, 'wirelength', '.1f'):>10} /{_cell(ours, 'wirelength', '.1f'):>7}"
                  f"{_cell(base, 'weighted', '.0f'):>11} /{_cell(ours, 'weighted', '.0f'):>8}"
                  f"{'-' if gain is None else f'{100 * gain:.1f}%':>7}"
                  f"{base_s:>6} /{ours['seconds']:>5.1f}{'yes' if legal else 'NO':>7}",
                  flush=True)
            if not ours["ok"] and "error" in ours:
                print(f"  error: {ours['error']}")
    if worst_own > -1e9:
        print(f"own headers: weighted objective at most {100 * worst_own:+.1f}% vs the baseline "
              f"(negative: better)")
    if worst_heavy < 1e9:
        print(f"wlength >= 40 and open grids: weighted objective at least "
              f"{100 * worst_heavy:.1f}% lower than the baseline")
    print(f"slowest process {slowest:.1f} s; all legal: {'yes' if all_legal else 'NO'}")
    return 0 if all_legal else 1


if __name__ == "__main__":
    sys.exit(main())
