"""Producers as tall as their consumers' rows: room for uniform cut lanes.

Why: a consumer whose kind cuts an input per PE row (wsec.ir.kernels.
input_cut) is fed by one lane per k of its R rows, and those lanes carry
each row what it reads, so the simulator proves its reads. The lanes leave
the producer's output side, which is as long as the producer's PE rows S.
Uniform lanes at pitch k need R - k + 1 <= S; otherwise they must leave
side by side and widen to pitch k at their path's last corner, which needs
about a free column per lane between the two kernels. Flow shelves put a
producer right beside its consumer with bottoms aligned (place_shelf), so
the path is straight and has no corner: where S < R the request stays flat
(lanes of contiguous ranges, reads not proven).

A kernel's shapes at a bottleneck time are a staircase (sizing.
shape_options: narrower and taller, or wider and lower), and the shelf
packer takes the narrowest that fits its shelf. Of equal width there are
usually taller legal shapes too (sizing.shapes_at_width: more PE rows, each
doing less), which the staircase drops; a producer takes one where its
consumer's rows outnumber its side, as long as the column above it (along
its rows) is free. Its width and position stay, so no kernel moves, Δt is
unchanged (every shape still meets the shelf's time) and wires barely
change; it costs the PEs it adds, which the shelves left free.

Kernels are raised in reverse dataflow order, so a raised consumer's new
rows are what its producers are measured against. A kernel is raised only
when each of its own cut producers already covers the new rows or can be
raised to (one level of look-ahead), so raising never turns a uniform cut
upstream into one that cannot land.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from wsec.ir.graph import Kernel, Module
from wsec.ir.kernel_kind import Choice
from wsec.ir.kernels import input_cut
from wsec.ir.movement import Operands

Rect4 = tuple[int, int, int, int]


def _rows(rect: Rect4, rotated: bool) -> int:
    """PE rows (unrotated height) of a placed rectangle."""
    return rect[2] if rotated else rect[3]


def _room(occ: np.ndarray, rect: Rect4, rotated: bool) -> int:
    """Free PEs beyond the far end of the rectangle's rows' axis (placed y
    above it, or placed x right of it when rotated), across its whole
    extent, up to the first PE another kernel holds or the grid's edge."""
    x, y, w, h = rect
    strip = occ[y:y + h, x + w:] if rotated else occ[y + h:, x:x + w].T
    if strip.shape[1] == 0:
        return 0
    busy = (strip >= 0).any(axis=0)
    return int(busy.argmax()) if busy.any() else int(busy.size)


def raise_producers(module: Module, kernels: Sequence[Kernel], order: Sequence[int],
                    choices: list[Choice | None], rects: list[Rect4], rotated: list[bool],
                    width: int, height: int, taller: Callable[[int, int], list[Choice]]
                    ) -> int:
    """Give producers taller shapes of their width (`taller(i, w)`: kernel i's
    shapes w wide meeting the time, lowest first) where a consumer cutting
    their output per row has more rows than their output side, in place
    (`choices`, `rects`); kernels without a choice (None) keep theirs.
    Returns how many were raised."""
    n = len(kernels)
    index = {k.name: i for i, k in enumerate(kernels)}
    occ = np.full((height, width), -1, dtype=np.int32)
    for i, (x, y, w, h) in enumerate(rects):
        occ[y:y + h, x:x + w] = i
    ops = Operands.of_module(module)
    outs: list[list[tuple[int, str]]] = [[] for _ in range(n)]  # (sink, value) per producer
    ins: list[list[int]] = [[] for _ in range(n)]  # producers per sink
    for e in module.edges:
        p = index.get(e.src)
        if p is None or e.value not in module.values:
            continue
        for d in dict.fromkeys(e.dsts):
            j = index.get(d)
            if j is not None and j != p:
                outs[p].append((j, e.value))
                ins[j].append(p)
    cut_memo: dict[tuple[int, str], bool] = {}

    def cuts(j: int, value: str) -> bool:
        """Sink j, at its chosen knobs, cuts `value` per PE row."""
        key = (j, value)
        if key not in cut_memo:
            k, c = kernels[j], choices[j]
            if c is not None:
                k = replace(k, knobs=c.knob_dict())
            shape = tuple(module.values[value].type.shape)
            cut_memo[key] = input_cut(k, value, shape, ops) is not None
        return cut_memo[key]

    def option(i: int, want: int) -> Choice | None:
        """Kernel i's lowest shape of its width with at least `want` rows
        that fits the free PEs beyond its rows."""
        c = choices[i]
        if c is None:
            return None
        cap = _rows(rects[i], rotated[i]) + _room(occ, rects[i], rotated[i])
        return next((o for o in taller(i, c.w) if want <= o.h <= cap), None)

    raised = 0
    for i in reversed(order):
        rows = _rows(rects[i], rotated[i])
        want = max((_rows(rects[j], rotated[j]) for j, v in outs[i] if cuts(j, v)), default=0)
        if want <= rows:
            continue
        new = option(i, want)
        if new is None:
            continue
        # its own cut inputs must still land uniform: each producer covers the
        # new rows already, or can be raised to
        feeds = [p for p in dict.fromkeys(ins[i])
                 if any(j == i and cuts(i, v) for j, v in outs[p])]
        if any(_rows(rects[p], rotated[p]) < new.h and option(p, new.h) is None
               for p in feeds):
            continue
        x, y, w, h = rects[i]
        grown = (x, y, w + new.h - rows, h) if rotated[i] else (x, y, w, h + new.h - rows)
        gx, gy, gw, gh = grown
        occ[gy:gy + gh, gx:gx + gw] = i
        rects[i], choices[i] = grown, new
        raised += 1
    return raised
