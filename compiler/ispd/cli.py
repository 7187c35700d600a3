"""ISPD 2020 on the command line: `wsec A.kgraph -o A.sol` and `wsec score`."""

from __future__ import annotations

from typing import Any

from wsec.ir.errors import UsageError

from .driver import compile_kgraph, format_compile_summary, process_seconds
from .score import score
from .solution import SolutionError, read_solution


def score_files(kgraph: str, solution: str, with_bound: bool = True) -> tuple[str, bool]:
    """`wsec score A.kgraph A.sol`: the report text and whether it is legal."""
    text, s = score_report(kgraph, solution, with_bound)
    return text, bool(s["legal"])


def score_report(kgraph: str, solution: str, with_bound: bool = True
                 ) -> tuple[str, dict[str, Any]]:
    """The score's text and figures (the scorer's dictionary)."""
    from wsec.frontends.kgraph import decode_text, load_kgraph

    module = load_kgraph(kgraph)
    try:
        with open(solution, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SolutionError(f"{solution}: cannot read solution: {e.strerror}") from None
    text = decode_text(raw, solution, "contest solution", SolutionError)
    if not text.strip():
        raise SolutionError(f"{solution}: the solution is empty (it places no kernel)")
    read_solution(text, module, solution)
    s = score(module, bound=with_bound)
    out = [f"ispd2020 score of {solution} on {s['test']} ({len(s['kernels'])} kernels)",
           f"  legal          {'yes' if s['legal'] else 'NO'}",
           f"  delta_t        {s['delta_t']:g}"]
    if with_bound:
        ratio = s["delta_t"] / s["bound"] if s["bound"] else 0.0
        out.append(f"  bound (area)   {s['bound']}  (delta_t = {ratio:.4f} x bound)")
    out += [f"  wirelength     {s['wirelength']:g}",
            f"  weighted       {s['weighted']:g}  (wdeltat x delta_t + wlength x wirelength)",
            f"  area used      {s['area_used']} of {s['grid_area']} PEs"]
    out += [f"  violation: {v}" for v in s["violations"]]
    return "\n".join(out), s


def cmd_compile_kgraph(a: Any, out: Any, outs: Any = None) -> int:
    """The compile path for kernel graphs (`wsec A.kgraph -o A.sol`): `a`
    is the parsed compile arguments (model, output, pass_option, time_limit,
    quiet, no_verify_ir, report_json), `outs` the command's `Outputs` (its
    inputs and outputs declared and checked)."""
    import json
    import math
    import time

    if a.time_limit is None or not math.isfinite(a.time_limit) or a.time_limit <= 0:
        raise UsageError(f"--time-limit must be a positive, finite number of seconds, got "
                         f"{a.time_limit}")
    from wsec.progress import Progress

    started = time.perf_counter() - process_seconds()
    progress = Progress.for_cli(a.quiet, getattr(a, "verbose", False), limit=a.time_limit,
                                started=started)
    try:
        _, summary = compile_kgraph(a.model, a.output, float(a.time_limit),
                                    list(a.pass_option), verify=not a.no_verify_ir,
                                    started=started, outs=outs, progress=progress)
    finally:
        progress.close()
    if getattr(a, "report_json", None):
        outs.put(a.report_json, json.dumps(summary, indent=2, sort_keys=True))
    if not a.quiet:
        out(format_compile_summary(summary, a.output))
    return 0 if summary["legal"] else 1


def cmd_score(argv: Any, out: Any, parser_cls: Any) -> int:
    """`wsec score A.kgraph A.sol [--no-bound]`: exit 0 if legal, 1 if not."""
    p = parser_cls(prog="wsec score", description="Score an ISPD 2020 contest solution: "
                   "legality, Δt, wirelength, weighted score, area used and the bound.")
    p.add_argument("kgraph", help="the contest kernel graph (.kgraph)")
    p.add_argument("solution", help="the solution file to score")
    p.add_argument("--no-bound", action="store_true", help="skip the area-sizing lower bound")
    p.add_argument("--json", action="store_true", help="print the score as JSON")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    ns = p.parse_args(argv)
    text, s = score_report(ns.kgraph, ns.solution, with_bound=not ns.no_bound)
    if ns.json:
        import json

        out(json.dumps(s, indent=2, sort_keys=True, default=_plain))
    else:
        out(text)
    return 0 if s["legal"] else 1


def _plain(x: Any) -> Any:
    """numpy scalars and tuples in the scorer's figures, as JSON values."""
    return x.item() if hasattr(x, "item") else str(x)
