"""Sane limits, checked before anything is allocated.

Why: a declared size is a promise the input makes, and a bad promise (a
dimension of 2^63-1, a grid of a million PEs squared, an .npy header of
1e7 x 1e7) must fail in one line naming the field, not hang or ask the
machine for terabytes. Every reader checks what it is told against these
limits first: the ONNX frontend (inputs, initializers against the bytes they
store, every inferred value), --grid and --input-shape, a binary's header,
a kernel graph's parameters, .npy headers, and the simulator's sizes against
the memory the machine has.

The limits are generous: the largest tensor of a 175B-parameter model has
about 6e8 elements, a wafer about 9e5 PEs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from .errors import WsecError

MAX_DIM = 1 << 40  # one dimension
MAX_ELEMENTS = 1 << 40  # one tensor (~1.1e12 elements)
MAX_GRID_SIDE = 1 << 14  # PEs along x or y of a routed grid (a wafer has < 1,200)
MAX_GRID_PES = 1 << 26  # PEs in a routed grid (~67M)
# a kernel graph's grid is only placed, never routed or simulated: placement
# keeps no per-PE arrays, so it may be far larger (the ISPD open-grid variant
# of C needs 10128 x 10128)
MAX_PLACE_GRID_SIDE = 1 << 20
MAX_PLACE_GRID_PES = 1 << 36
MAX_KGRAPH_PARAM = 1 << 24  # an ISPD kernel's W, H, C, K, ... and its shape dims
MAX_WEIGHT = 1e12  # an ISPD objective weight (wlength, wdeltat, wadapter)


class LimitError(WsecError):
    """A declared size beyond what wsec (or this machine) can hold."""


def elements(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def shape_problem(dims: Sequence[object], zero_ok: bool = False) -> str | None:
    """What is wrong with `dims` as a tensor shape (None: nothing)."""
    for k, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, int):
            return f"dim {k} is {d!r}, not an integer"
        if d < 0:
            return f"dim {k} is negative ({d})"
        if d == 0 and not zero_ok:
            return f"dim {k} is zero (a zero-size tensor holds nothing to compute)"
        if d > MAX_DIM:
            return f"dim {k} is {d}, more than wsec's limit of 2^40"
    n = elements(dims)  # type: ignore[arg-type]
    if n > MAX_ELEMENTS:
        return (f"it has {_big(n)} elements, more than wsec's limit of 2^40 "
                f"(~1.1e12) elements per tensor")
    return None


def check_shape(what: str, dims: Sequence[object], zero_ok: bool = False,
                error: type[WsecError] = LimitError) -> None:
    """Raise `error` naming `what` when `dims` is not a sane shape."""
    bad = shape_problem(dims, zero_ok)
    if bad:
        shape = "[" + ", ".join(str(d) for d in dims) + "]"
        raise error(f"{what} has shape {shape}: {bad}")


def grid_problem(width: object, height: object, placed_only: bool = False) -> str | None:
    """What is wrong with a W x H program grid (None: nothing); `placed_only`
    for a kernel graph's grid, which is never routed."""
    side, pes = ((MAX_PLACE_GRID_SIDE, MAX_PLACE_GRID_PES) if placed_only
                 else (MAX_GRID_SIDE, MAX_GRID_PES))
    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"its {name} is {v!r}, not an integer"
        if v < 1:
            return f"its {name} is {v}; a grid needs at least 1 PE each way"
        if v > side:
            return f"its {name} is {v}, more than wsec's limit of {side} PEs"
    if int(width) * int(height) > pes:  # type: ignore[call-overload]
        return (f"it has {int(width) * int(height):,} PEs, more than wsec's limit of "  # type: ignore[call-overload]
                f"{pes:,}")
    return None


def finite_number(text: str) -> float | None:
    """`text` as a finite float, else None."""
    try:
        v = float(text)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def available_memory() -> int:
    """Bytes this process may still allocate: MemAvailable, capped by RLIMIT_AS."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 1 << 40
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY:
            avail = min(avail, soft)
    except (ImportError, OSError, ValueError):
        pass
    return avail


def _big(n: int) -> str:
    return f"{n:,}" if n < 10**15 else f"{n:.3e}"


def human_bytes(n: int | float) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"
