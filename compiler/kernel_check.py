"""`wsec run --per-kernel`: every kernel's per-PE output against the
reference semantics on the same inputs.

Why: an end-to-end check says that something differs, not where. This one
re-runs every kernel's body through the reference op semantics (whole
tensors, `wsec.ir.opsem`) on exactly the inputs the simulated kernel
received, compares, and names the first kernel that differs, the PE that
computed its worst element and that element.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from wsec.backends.format import Program
from wsec.backends.sim import RunResult
from wsec.backends.sim_exec import reference_kernel
from wsec.backends.sim_inbox import grid_pe
from wsec.backends.sim_pe import SramImages


def check_kernels(prog: Program, res: RunResult, out: Callable[[str], None], rtol: float,
                  atol: float, compare: Callable[..., Any]) -> bool:
    """Print one line per kernel (and the first difference); True if all
    match. `compare(name, got, ref, rtol, atol)` is `wsec run`'s element
    comparison (a row with `ok` and `max_abs`)."""
    mem = SramImages(prog)
    first = None
    ok_all = True
    out(f"per-kernel check against the reference semantics (rtol {rtol:g} atol {atol:g}):")
    for ki, k in enumerate(prog.kernels):
        io = res.kernel_io.get(k.name)
        if io is None:
            continue
        ref = reference_kernel(mem, ki, io.inputs)
        worst = ""
        ok = True
        for name, got in io.outputs.items():
            if name not in ref:
                continue
            row = compare(name, got, ref[name], rtol, atol)
            if row.ok:
                continue
            ok = False
            g = np.asarray(got, np.float64)
            r = np.asarray(ref[name], np.float64)
            diff = np.where(np.isnan(g) & np.isnan(r), 0.0, np.abs(g - r))
            diff = np.nan_to_num(diff, nan=np.inf)
            idx = np.unravel_index(int(np.argmax(diff)), g.shape) if g.size else ()
            pe = ""
            if name in io.owner:
                lin = int(np.broadcast_to(io.owner[name], g.shape)[idx])
                uw = k.unrotated_shape[0]
                py, px = divmod(lin, uw)
                x, y = grid_pe(prog, ki, px, py)
                pe = f" on PE ({x}, {y})"
            worst = (f"%{name}{[int(i) for i in idx]}{pe}: simulated {g[idx]:.6g}, reference "
                     f"{r[idx]:.6g} (max abs {row.max_abs:.3g})")
            break
        out(f"  {k.name} ({k.kind}): {'PASS' if ok else 'FAIL ' + worst}")
        if not ok and first is None:
            first = f"first kernel that differs: '{k.name}' ({k.kind}), {worst}"
        ok_all &= ok
    if first:
        out("  " + first)
    return ok_all
