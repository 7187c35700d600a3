"""ISPD 2020 contest solutions: writer, reader and scorer.

Why: wsec is measured on the contest's benchmarks, so it writes the
contest's solution format, reads any solution file back onto a loaded
kernel graph (ours or another solver's) and scores it the way the contest
does: legality, the bottleneck time Δt, the wirelength (L1 distance between
the centres of connected kernels) and their weighted sum. Every time, shape
and memory figure comes from the `cs1` kernel kinds (wsec.ir.library_cs1);
nothing here re-derives a formula.

Solution lines (formal arguments, then knobs; position = lower-left corner):

    k1 = dblock( H W F  h w  c1 c2 c3  k1 k2 k3 )
    k3 = conv( H W C K R S T U  h w c k )
    k1 : place(X Y R0)          (R90 when rotated)
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from wsec.ir.graph import HOST, Kernel, Module, Rect
from wsec.ir.library_cs1 import ISPD_KINDS, WORD_BYTES, ConvGroupKind, mem_limit_bytes
from wsec.ir.sizing_bound import area_bound
from wsec.ir.target import Target, module_target

_KIND_TO_WORD = {k.name: word for word, k in ISPD_KINDS.items()}
_DEF = re.compile(r"^(\S+)\s*=\s*(\w+)\s*\(([^()]*)\)\s*;?$")
_PLACE = re.compile(r"^(\S+)\s*:\s*place\s*\(\s*(-?\d+)\s*,?\s*(-?\d+)\s*,?\s*(R0|R90)\s*\)\s*;?$",
                    re.IGNORECASE)
MAX_LISTED_OVERLAPS = 20


def ispd_kind(k: Kernel) -> ConvGroupKind:
    """The cs1 kind of a contest kernel."""
    return ISPD_KINDS[_KIND_TO_WORD[k.kind]]


class SolutionError(Exception):
    """A solution file that cannot be read onto the module; names the line."""


def _contest_kernels(module: Module) -> list[Kernel]:
    ks = list(module.kernels())
    for k in ks:
        if k.kind not in _KIND_TO_WORD:
            raise SolutionError(f"kernel '{k.name}' has kind '{k.kind}', which is not an ISPD "
                                f"2020 kind ({', '.join(sorted(_KIND_TO_WORD))})")
    return sorted(ks, key=lambda k: (int(k.attrs.get("ispd_index", 0)), k.name))


# --- writer ---------------------------------------------------------------
def write_solution(module: Module) -> str:
    """The module's sized and placed kernels in the contest's solution format."""
    kernels = _contest_kernels(module)
    defs, places = [], []
    for k in kernels:
        kind = ispd_kind(k)
        if k.knobs is None or k.rect is None:
            missing = "knobs (run size)" if k.knobs is None else "a position (run place)"
            raise ValueError(f"kernel '{k.name}' ({k.kind}) has no {missing}; a contest "
                             "solution needs every kernel sized and placed")
        formals = [int(k.dims[n]) for n in kind.formal_names()]
        knobs = [int(k.knobs[n]) for n in kind.knob_names]
        defs.append(f"{k.name} = {_KIND_TO_WORD[k.kind]}( {' '.join(map(str, formals))} "
                    f"{' '.join(map(str, knobs))} )")
        places.append(f"{k.name} : place({k.rect.x} {k.rect.y} {'R90' if k.rotated else 'R0'})")
    return "\n".join(defs + places) + "\n"


# --- reader ---------------------------------------------------------------
def read_solution(text: str, module: Module, source: str = "<solution>") -> None:
    """Set knobs, rect, rotated and cost of the module's kernels from a solution.

    Syntax and identity errors (unknown kernel, wrong kind or formal
    arguments) raise SolutionError; knob values, memory, positions and
    missing kernels are left for `score` to judge and report.
    """
    kernels = {k.name: k for k in _contest_kernels(module)}
    for k in kernels.values():
        k.knobs, k.rect, k.cost, k.rotated = None, None, None, False
    places: dict[str, tuple[int, int, bool, int]] = {}
    seen_def: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith("//") or (
                line.startswith("(*") and line.endswith("*)")):
            continue
        where = f"{source}:{lineno}"
        m = _PLACE.match(line)
        if m:
            name = m.group(1)
            _known(kernels, name, where)
            if name in places:
                raise SolutionError(f"{where}: kernel '{name}' is placed twice (first on line "
                                    f"{places[name][3]})")
            places[name] = (int(m.group(2)), int(m.group(3)), m.group(4).upper() == "R90", lineno)
            continue
        m = _DEF.match(line)
        if not m:
            raise SolutionError(f"{where}: cannot read '{line}': expected 'NAME = KIND( args )' "
                                "or 'NAME : place(X Y R0|R90)'")
        name, word = m.group(1), m.group(2)
        k = _known(kernels, name, where)
        if name in seen_def:
            raise SolutionError(f"{where}: kernel '{name}' is defined twice (first on line "
                                f"{seen_def[name]})")
        seen_def[name] = lineno
        k.knobs = _parse_args(k, word, m.group(3), where)
    target = module_target(module.attrs)
    for name, (x, y, rot, _) in places.items():
        k = kernels[name]
        k.rotated = rot
        shape = _shape_or_none(k, target)
        if shape is not None:
            w, h = shape
            k.rect = Rect(x, y, h, w) if rot else Rect(x, y, w, h)
    for k in kernels.values():
        shape = _shape_or_none(k, target)
        if shape is not None:
            kind = ispd_kind(k)
            k.cost = {"cycles": kind.cycles(k.dims, k.knobs, target), "w": shape[0],
                      "h": shape[1], "sram": kind.sram(k.dims, k.knobs, target)}
    for prop, attr in (("sized", "knobs"), ("placed", "rect")):
        if all(getattr(k, attr) is not None for k in kernels.values()):
            module.properties.add(prop)
        else:
            module.properties.discard(prop)
    module.properties -= {"routed", "allocated"}


def _known(kernels: dict[str, Kernel], name: str, where: str) -> Kernel:
    if name not in kernels:
        near = ", ".join(sorted(kernels)[:8])
        raise SolutionError(f"{where}: kernel '{name}' is not in the kernel graph "
                            f"(kernels: {near}{', ...' if len(kernels) > 8 else ''})")
    return kernels[name]


def _parse_args(k: Kernel, word: str, args: str, where: str) -> dict[str, int]:
    kind = ispd_kind(k)
    if word != _KIND_TO_WORD[k.kind]:
        raise SolutionError(f"{where}: kernel '{k.name}' is a {_KIND_TO_WORD[k.kind]} in the "
                            f"kernel graph, not a {word}")
    formals = list(kind.formal_names())
    names = formals + list(kind.knob_names)
    try:
        vals = [int(v) for v in args.replace(",", " ").split()]
    except ValueError:
        raise SolutionError(f"{where}: arguments of '{k.name}' must be integers, got "
                            f"'{args.strip()}'") from None
    if len(vals) != len(names):
        raise SolutionError(f"{where}: {word} '{k.name}' takes {len(names)} arguments "
                            f"({' '.join(names)}), got {len(vals)}")
    for n, v in zip(formals, vals, strict=False):
        if int(k.dims[n]) != v:
            raise SolutionError(f"{where}: '{k.name}' has {n}={k.dims[n]} in the kernel graph "
                                f"but the solution says {n}={v}")
    return dict(zip(kind.knob_names, vals[len(formals):], strict=True))


def _shape_or_none(k: Kernel, target: Target) -> tuple[int, int] | None:
    if k.knobs is None or ispd_kind(k).knob_errors(k.dims, k.knobs):
        return None
    return ispd_kind(k).shape(k.dims, k.knobs, target)


# --- scorer ---------------------------------------------------------------
def score(module: Module, bound: bool = False) -> dict[str, Any]:
    """Judge the module's layout as the contest does.

    Returns legal, violations (plain words), delta_t (largest kernel time),
    wirelength (Σ L1 between centres of connected kernels; host edges
    excluded), weighted (wdeltat*delta_t + wlength*wirelength), area_used,
    grid_area, per-kernel figures and, with bound=True, the area-sizing bound.
    """
    target = module_target(module.attrs)
    W, H = target.width, target.height
    kernels = _contest_kernels(module)
    violations: list[str] = []
    rows, times = [], []
    for k in kernels:
        kind = ispd_kind(k)
        row: dict[str, Any] = {"name": k.name, "kind": k.kind, "knobs": k.knobs}
        rows.append(row)
        if k.knobs is None:
            violations.append(f"kernel '{k.name}' ({_KIND_TO_WORD[k.kind]}) has no knobs "
                              "(missing from the solution)")
        else:
            errs = kind.knob_errors(k.dims, k.knobs)
            if errs:
                violations.append(f"kernel '{k.name}' ({_KIND_TO_WORD[k.kind]} "
                                  f"{kind.formal_str(k.dims)}): "
                                  + "; ".join(errs))
            else:
                row["time"] = kind.time(k.dims, k.knobs)
                row["memory_words"] = kind.memory_words(k.dims, k.knobs)
                times.append(row["time"])
                limit = mem_limit_bytes(k.dims, target) / WORD_BYTES
                if kind.sram(k.dims, k.knobs, target) > mem_limit_bytes(k.dims, target):
                    violations.append(f"kernel '{k.name}' needs {row['memory_words']:.1f} words "
                                      f"of memory per PE but memlimit is {limit:g} "
                                      f"({row['memory_words'] - limit:.1f} over); give it "
                                      "larger c or k")
                w, h = kind.shape(k.dims, k.knobs, target)
                row["shape"] = [w, h]
                if k.rect is not None:
                    want = (h, w) if k.rotated else (w, h)
                    if (k.rect.w, k.rect.h) != want:
                        violations.append(f"kernel '{k.name}' rect is {k.rect.w}x{k.rect.h} but "
                                          f"its knobs give {want[0]}x{want[1]}")
        if k.rect is None:
            violations.append(f"kernel '{k.name}' is not placed (missing from the solution, "
                              "or its knobs give no shape)")
            continue
        r = k.rect
        row["rect"], row["rotated"] = [r.x, r.y, r.w, r.h], bool(k.rotated)
        if r.x < 0 or r.y < 0 or r.x1 > W or r.y1 > H:
            violations.append(f"kernel '{k.name}' at ({r.x}, {r.y}) size {r.w}x{r.h} reaches "
                              f"({r.x1}, {r.y1}), outside the {W}x{H} grid")
    placed = [k for k in kernels if k.rect is not None]
    violations += _overlaps(placed)
    out: dict[str, Any] = {
        "test": module.attrs.get("test", module.name),
        "legal": not violations,
        "violations": violations,
        "delta_t": max(times) if times else 0.0,
        "wirelength": wirelength(module),
        "area_used": int(sum(k.rect.area for k in placed)),  # type: ignore[union-attr]
        "grid_area": W * H,
        "kernels": rows,
    }
    wd, wl = float(module.attrs.get("wdeltat", 1)), float(module.attrs.get("wlength", 1))
    out["weighted"] = wd * out["delta_t"] + wl * out["wirelength"]
    if bound:
        out["bound"] = sizing_bound(module)
    return out


def wirelength(module: Module) -> float:
    """Σ over kernel-to-kernel connections of the L1 distance between the
    centres of the two rectangles (unplaced ends and host I/O skipped)."""
    rects = {k.name: k.rect for k in module.kernels() if k.rect is not None}
    total = 0.0
    for e in module.edges:
        if e.src == HOST or e.src not in rects:
            continue
        sx, sy = rects[e.src].centre()
        for d in e.dsts:
            if d != HOST and d in rects:
                dx, dy = rects[d].centre()
                total += abs(sx - dx) + abs(sy - dy)
    return total


def _overlaps(placed: list[Kernel]) -> list[str]:
    if len(placed) < 2:
        return []
    a = np.array([(k.rect.x, k.rect.y, k.rect.x1, k.rect.y1) for k in placed])  # type: ignore[union-attr]
    hit = ((a[:, None, 0] < a[None, :, 2]) & (a[None, :, 0] < a[:, None, 2])
           & (a[:, None, 1] < a[None, :, 3]) & (a[None, :, 1] < a[:, None, 3]))
    i, j = np.nonzero(np.triu(hit, 1))
    out = []
    for p, q in list(zip(i.tolist(), j.tolist(), strict=True))[:MAX_LISTED_OVERLAPS]:
        rp, rq = placed[p].rect, placed[q].rect
        assert rp is not None and rq is not None
        ow = min(rp.x1, rq.x1) - max(rp.x, rq.x)
        oh = min(rp.y1, rq.y1) - max(rp.y, rq.y)
        out.append(f"kernels '{placed[p].name}' and '{placed[q].name}' overlap on {ow}x{oh} "
                   f"PEs (from ({max(rp.x, rq.x)}, {max(rp.y, rq.y)}))")
    if i.size > MAX_LISTED_OVERLAPS:
        out.append(f"... and {i.size - MAX_LISTED_OVERLAPS} more overlapping pairs")
    return out


def sizing_bound(module: Module) -> int:
    """The area-sizing lower bound on Δt for this kernel graph (exact)."""
    target = module_target(module.attrs)
    kernels = list(module.kernels())
    lists = [ISPD_KINDS[_KIND_TO_WORD[k.kind]].choices(k.dims, target) for k in kernels]
    return area_bound(lists, target.pes, [k.name for k in kernels])


# --- compile and score from the command line -------------------------------
ISPD_PIPELINE = ("size", "place")
# sizing aims at the bound (the placer relaxes it by the least step that
# packs); the placer minimises the contest's wirelength (unit weight per
# connection, host I/O free)
_DEFAULT_OPTIONS = {"size": "utilisation=1.0", "place": "objective=edges"}
_MARGIN_S = 1.0  # of the time limit kept for loading, scoring and writing


def _merged_specs(user: list[str]) -> list[str]:
    """Default pass options with the user's -p options on top (theirs win)."""
    specs = []
    given = {s.split("{", 1)[0].strip(): s for s in user}
    for name in ISPD_PIPELINE:
        opts = _DEFAULT_OPTIONS.get(name, "")
        if name in given and "{" in given[name]:
            opts = ",".join(filter(None, [opts, given[name].split("{", 1)[1].rstrip().rstrip("}")]))
        specs.append(f"{name}{{{opts}}}" if opts else name)
    return specs


def compile_kgraph(path: str, output: str | None, time_limit: float = 60.0,
                   pass_options: list[str] | None = None, verify: bool = True
                   ) -> tuple[Module, dict[str, Any]]:
    """Load a .kgraph, size and place it through the pass manager within
    `time_limit` seconds, write the contest solution atomically to `output`
    and return the module and a summary (kernels, bound, delta_t, ratio,
    wirelength, legal, seconds)."""
    import os
    import time

    from wsec.frontends.kgraph import load_kgraph
    from wsec.passes import PassContext, PassError
    from wsec.passes.manager import PassManager, merge_options

    start = time.perf_counter()
    for spec in pass_options or []:
        if spec.split("{", 1)[0].strip() not in ISPD_PIPELINE:
            raise PassError(f"option given for pass '{spec.split('{', 1)[0].strip()}', which is "
                            f"not in the kernel-graph pipeline ({', '.join(ISPD_PIPELINE)})")
    module = load_kgraph(path)
    target = module_target(module.attrs)
    budget = max(1.0, time_limit - _MARGIN_S - (time.perf_counter() - start))
    pm = PassManager(merge_options(ISPD_PIPELINE, _merged_specs(pass_options or [])),
                     verify=verify)
    ctx = PassContext(target, time_limit=budget)
    pm.run(module, ctx)
    text = write_solution(module)
    if output:
        tmp = f"{output}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
    s = score(module)
    bound = int(module.attrs.get("bound") or sizing_bound(module))
    summary = {"test": s["test"], "kernels": len(list(module.kernels())), "bound": bound,
               "delta_t": s["delta_t"], "ratio": s["delta_t"] / bound if bound else 0.0,
               "wirelength": s["wirelength"], "weighted": s["weighted"], "legal": s["legal"],
               "violations": s["violations"], "area_used": s["area_used"],
               "grid_area": s["grid_area"], "notes": list(ctx.notes),
               "seconds": time.perf_counter() - start}
    return module, summary


def format_compile_summary(s: dict[str, Any], output: str | None) -> str:
    lines = [f"ispd2020 {s['test']}: {s['kernels']} kernels",
             f"  bound (area)   {s['bound']}",
             f"  delta_t        {s['delta_t']:g}  ({s['ratio']:.4f} x bound)",
             f"  wirelength     {s['wirelength']:g}",
             f"  area used      {s['area_used']} of {s['grid_area']} PEs "
             f"({100 * s['area_used'] / max(1, s['grid_area']):.1f}%)",
             f"  legal          {'yes' if s['legal'] else 'NO'}",
             f"  seconds        {s['seconds']:.1f}"]
    lines += [f"  violation: {v}" for v in s["violations"][:10]]
    if output:
        lines.append(f"  solution       {output}")
    return "\n".join(lines)


def score_files(kgraph: str, solution: str, with_bound: bool = True) -> tuple[str, bool]:
    """`wsec score A.kgraph A.sol`: the report text and whether it is legal."""
    from wsec.frontends.kgraph import load_kgraph

    module = load_kgraph(kgraph)
    try:
        with open(solution, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise SolutionError(f"{solution}: cannot read solution: {e.strerror}") from None
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
    return "\n".join(out), bool(s["legal"])


def cmd_compile_kgraph(a: Any, out: Any) -> int:
    """The compile path for kernel graphs (`wsec A.kgraph -o A.sol`): `a`
    is the parsed compile arguments (model, output, pass_option, time_limit,
    quiet, no_verify_ir, report_json)."""
    import json

    if a.time_limit is not None and a.time_limit <= 0:
        raise SolutionError(f"--time-limit must be positive, got {a.time_limit:g}")
    _, summary = compile_kgraph(a.model, a.output, float(a.time_limit),
                                list(a.pass_option), verify=not a.no_verify_ir)
    if getattr(a, "report_json", None):
        tmp = f"{a.report_json}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
        import os

        os.replace(tmp, a.report_json)
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
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    ns = p.parse_args(argv)
    text, legal = score_files(ns.kgraph, ns.solution, with_bound=not ns.no_bound)
    out(text)
    return 0 if legal else 1
