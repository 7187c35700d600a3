"""ISPD 2020 scorer: judge a layout the way the contest does.

Legality (knobs, memory, shapes, grid bounds, overlaps), the bottleneck
time Δt, the contest's wirelength (L1 distance between the centres of
connected kernels, host I/O excluded) and the weighted objective from the
kernel graph's header. Overlaps and placed wirelength come from the one
metrics module (wsec.ir.metrics); the area-sizing bound from the one sizing
model (wsec.ir.sizing).
"""

from __future__ import annotations

from typing import Any

from wsec.ir.fabric import Fabric
from wsec.ir.graph import Kernel, Module
from wsec.ir.library_cs1 import WORD_BYTES, mem_limit_bytes
from wsec.ir.metrics import overlap_text, placed_wirelength
from wsec.ir.objective import Objective
from wsec.ir.sizing import area_bound, kernel_choices
from wsec.ir.target import module_target

from .solution import KIND_TO_WORD, contest_kernels, ispd_kind

MAX_LISTED_OVERLAPS = 20


def score(module: Module, bound: bool = False) -> dict[str, Any]:
    """Judge the module's layout as the contest does.

    Returns legal, violations (plain words), delta_t (largest kernel time),
    wirelength (Σ L1 between centres of connected kernels; host edges
    excluded), weighted (wdeltat*delta_t + wlength*wirelength), area_used,
    grid_area, per-kernel figures and, with bound=True, the area-sizing bound.
    """
    target = module_target(module.attrs)
    W, H = target.width, target.height
    kernels = contest_kernels(module)
    violations: list[str] = []
    rows, times = [], []
    for k in kernels:
        kind = ispd_kind(k)
        row: dict[str, Any] = {"name": k.name, "kind": k.kind, "knobs": k.knobs}
        rows.append(row)
        if k.knobs is None:
            violations.append(f"kernel '{k.name}' ({KIND_TO_WORD[k.kind]}) has no knobs "
                              "(missing from the solution)")
        else:
            errs = kind.knob_errors(k.dims, k.knobs)
            if errs:
                violations.append(f"kernel '{k.name}' ({KIND_TO_WORD[k.kind]} "
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
    out["weighted"] = Objective.of(module.attrs).value(out["delta_t"], out["wirelength"])
    if bound:
        out["bound"] = sizing_bound(module)
    return out


def wirelength(module: Module) -> float:
    """The contest's wirelength: Σ over kernel-to-kernel connections of the
    L1 distance between the centres of the two rectangles (unplaced ends and
    host I/O skipped): `placed_wirelength` weighing each connection 1."""
    return placed_wirelength(module, Fabric.of(module_target(module.attrs)),
                             weight="connections", host=False)


def _overlaps(placed: list[Kernel]) -> list[str]:
    return overlap_text([k.name for k in placed], [k.rect for k in placed if k.rect],
                        MAX_LISTED_OVERLAPS)


def sizing_bound(module: Module) -> int:
    """The area-sizing lower bound on Δt for this kernel graph (exact)."""
    target = module_target(module.attrs)
    kernels = list(module.kernels())
    lists = [kernel_choices(k, target) for k in kernels]
    return area_bound(lists, target.pes, [k.name for k in kernels])
