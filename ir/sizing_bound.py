"""The area-sizing lower bound on the bottleneck time (DESIGN.md section 5).

Why: a placer's Δt means little without a floor to compare it with. No
legal layout can run faster than the smallest t at which every kernel's
minimum-area option meeting t, summed over kernels, fits in the grid's area
(packing loss ignored). The sum only changes at the kernels' own option
times, so sweeping the sorted union of those times gives the bound exactly.
Kind-agnostic: it reads only `Choice` lists, so the ISPD contest, the
general sizer and reports all share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .kernel_kind import Choice

_INF = np.iinfo(np.int64).max // 4


def _min_area_table(choices: Sequence[Choice]) -> tuple[np.ndarray, np.ndarray]:
    """(cycles ascending, min area among options with cycles <= that)."""
    if not choices:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    cyc = np.fromiter((c.cycles for c in choices), np.int64, len(choices))
    area = np.fromiter((c.area for c in choices), np.int64, len(choices))
    order = np.argsort(cyc, kind="stable")
    return cyc[order], np.minimum.accumulate(area[order])


def _min_areas(table: tuple[np.ndarray, np.ndarray], ts: np.ndarray) -> np.ndarray:
    cyc, pm = table
    idx = np.searchsorted(cyc, ts, side="right")
    out = np.full(ts.shape, _INF, dtype=np.int64)
    hit = idx > 0
    out[hit] = pm[idx[hit] - 1]
    return out


def min_area_at(choices: Sequence[Choice], t: int) -> int | None:
    """Smallest area among `choices` with cycles <= t (None if none meets t)."""
    a = int(_min_areas(_min_area_table(choices), np.asarray([t], np.int64))[0])
    return None if a >= _INF else a


def total_min_area(choice_lists: Sequence[Sequence[Choice]], ts: np.ndarray) -> np.ndarray:
    """For each time in `ts`: Σ over kernels of the min area meeting it
    (a huge sentinel where some kernel cannot meet it)."""
    ts = np.asarray(ts, np.int64)
    total = np.zeros(ts.shape, np.int64)
    for ch in choice_lists:
        total = np.minimum(total + _min_areas(_min_area_table(ch), ts), _INF)
    return total


def area_bound(choice_lists: Sequence[Sequence[Choice]], area: int,
               names: Sequence[str] | None = None) -> int:
    """Smallest t such that Σ_kernels min area with cycles <= t is <= `area`.

    Raises ValueError naming the kernel with no legal option, or the
    shortfall when even every kernel's fastest-to-smallest options do not fit.
    """
    for i, ch in enumerate(choice_lists):
        if not ch:
            who = f"kernel '{names[i]}'" if names else f"kernel #{i}"
            raise ValueError(f"{who} has no legal option (memory or grid too small), so no "
                             "sizing bound exists; raise the memory limit or the grid")
    if not choice_lists:
        return 0
    ts = np.unique(np.concatenate([[c.cycles for c in ch] for ch in choice_lists]))
    total = total_min_area(choice_lists, ts)
    fit = np.nonzero(total <= area)[0]
    if fit.size == 0:
        smallest = int(sum(min(c.area for c in ch) for ch in choice_lists))
        raise ValueError(f"the kernels need at least {smallest:,} PEs together at their "
                         f"smallest shapes, but the grid holds {area:,} PEs "
                         f"({smallest - area:,} short); use a larger grid")
    # the total is non-increasing in t, so the first fitting time is the bound
    return int(ts[fit[0]])
