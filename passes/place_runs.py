"""Concatenation inputs facing the run of rows that reads them.

Why: a data movement that concatenates values (wsec.ir.kernels.read_span)
reads each input on a run of its PE rows, one run per input in the order
of the concatenation. Cut, an input's lanes carry each row of its run the
box it reads, so the simulator proves those reads; routed flat they land
nearest their source and the run's rows read what no lane brought. Flow
shelves put every kernel at the foot of its column (place_shelf), so an
input whose run lies further along the sink's rows than its source's output
side reaches has no straight path: its lanes would jog the width of the
bus, and where the two kernels sit side by side there is no room for that
but a U turn across the kernels beside them, which the router refuses
(route_bundles._facing_runs; measured, SqueezeNet's realised rate 1.000x
-> 1.611x its bound with every concatenation's input cut so).

How: after the flow layout's raises (place_rows), a source whose output side
is parallel with its sink's input side, behind it, as long as the run and
touching some of the sink's rows but not covering the run slides along its
own rows (its column of the shelf) by the least that makes it cover the run,
where the PEs there are free, and only where it then touches no fewer rows
of any other kernel it exchanges data with (its own inputs stay as straight
as they were; a branch's convolution fed by the branch's first kernel
would otherwise lose its own cut). Shapes, Δt and the order along the shelf
are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from wsec.ir.graph import Kernel, Module, Rect
from wsec.ir.kernel_kind import Choice
from wsec.ir.kernels import input_cut, owner_pitch, read_span
from wsec.ir.movement import Operands

from .place_rows import Rect4, _clear, _crossed, _frame, _move, _occupancy, _overlap


def face_placed(module: Module, width: int, height: int) -> int:
    """face_runs on the module's placed kernels (after the flow layout's
    last moves: place_slide clears rows for passing bundles by where the
    shelf's kernels stand, and a source slid before it changed what it
    slid; measured, ShuffleNet then lost two conv cuts elsewhere). Returns
    how many moved."""
    ks = [k for k in module.kernels() if k.rect is not None]
    rects = [(k.rect.x, k.rect.y, k.rect.w, k.rect.h) for k in ks]  # type: ignore[union-attr]
    rotated = [k.rotated for k in ks]
    moved = face_runs(module, ks, range(len(ks)), [None] * len(ks), rects, rotated,
                      width, height)
    for k, r in zip(ks, rects, strict=True):
        k.rect = Rect(*r)
    return moved


def face_runs(module: Module, kernels: Sequence[Kernel], order: Sequence[int],
              choices: list[Choice | None], rects: list[Rect4], rotated: list[bool],
              width: int, height: int) -> int:
    """Slide concatenation inputs' sources to face their runs (module
    docstring); `rects` are updated in place. Returns how many moved."""
    n = len(kernels)
    index = {k.name: i for i, k in enumerate(kernels)}
    ops = Operands.of_module(module, runs=True)  # the runs a cut lands on (read_span)
    whole = Operands.of_module(module)  # a kind cutting every row without runs
    occ = _occupancy(rects, width, height)
    ins: list[list[tuple[int, str]]] = [[] for _ in range(n)]
    linked: list[set[int]] = [set() for _ in range(n)]
    outs: list[set[int]] = [set() for _ in range(n)]
    for e in module.edges:
        p = index.get(e.src)
        for d in dict.fromkeys(e.dsts):
            j = index.get(d)
            if p is None or j is None or j == p:
                continue
            linked[p].add(j)
            linked[j].add(p)
            outs[p].add(j)
            if e.value in module.values:
                ins[j].append((p, e.value))
    pairs = [(p, j) for j in range(n) for p, _ in dict.fromkeys(ins[j])]
    spans: dict[tuple[int, int], tuple[int, int]] = {}  # (source, sink): its run's rows
    for j in order:
        for p, v in dict.fromkeys(ins[j]):
            if rotated[p] != rotated[j]:
                continue
            c = choices[j]  # the kernels' knobs are the sizer's until the layout is applied
            sink = kernels[j] if c is None else replace(kernels[j], knobs=c.knob_dict())
            shape = tuple(module.values[v].type.shape)
            rows = input_cut(sink, v, shape, ops)
            ax, aw = _frame(rects[p], rotated[p])[::2]
            bx, bh = _frame(rects[j], rotated[j])[::3]
            if rows is None or rows.shape[0] != bh or ax + aw > bx or owner_pitch(rows)[0] \
                    or input_cut(sink, v, shape, whole) is not None:
                continue  # no run (as route_bundles.requests lands cuts), or not behind
            first, stop = read_span(rows)
            if stop <= first or (first, stop) == (0, bh):
                continue  # every row reads it: not a run
            spans.setdefault((p, j), (first, stop))
    moved = 0
    for j in order:
        for p in dict.fromkeys(q for q, _ in ins[j]):
            if (p, j) not in spans:
                continue
            first, stop = spans[(p, j)]
            ax, ay, aw, ah = _frame(rects[p], rotated[p])
            bx, by, bw, bh = _frame(rects[j], rotated[j])
            lo, hi = by + first, by + stop
            if (ay <= lo and hi <= ay + ah) or hi - lo > ah \
                    or not _overlap(ay, ay + ah, by, by + bh):
                continue  # faces it already, cannot, or lies elsewhere
            dy = min(max(ay, hi - ah), lo) - ay
            chain = _chain(p, j, ins, outs, rotated, rects)
            for group in (chain[:m] for m in range(1, len(chain) + 1)):  # the fewest first
                moves = {q: _slid(rects[q], rotated[q], dy) for q in group}
                if not any(rotated[o] == rotated[q]
                           and _touch(rects[o], rotated[o], moves[q], rotated[q])
                           < _touch(rects[o], rotated[o], rects[q], rotated[q])
                           for q in group for o in linked[q] if o != j and o not in moves) \
                        and _clear(occ, moves, width, height) \
                        and not any(_crossed(q, moves[q], rects, rotated, pairs, spans)
                                    for q in group):
                    break  # no bundle loses rows it runs straight on or meets the group
            else:
                continue
            _move(occ, rects, moves)
            moved += 1
    return moved


def _chain(p: int, j: int, ins: list[list[tuple[int, str]]], outs: list[set[int]],
           rotated: list[bool], rects: list[Rect4]) -> list[int]:
    """p and the producers before it that slide with it: while the last
    of the chain reads one kernel only, and that kernel (on the same shelf
    axis, behind it) feeds it alone, it joins (a branch's first convolution
    feeding its second; up to MAX_CHAIN kernels)."""
    group = [p]
    while len(group) < MAX_CHAIN:
        head = group[-1]
        feeds = {q for q, _ in ins[head]}
        if len(feeds) != 1:
            break
        q = feeds.pop()
        if q in group or q == j or rotated[q] != rotated[head] or outs[q] != {head} \
                or _frame(rects[q], rotated[q])[0] + _frame(rects[q], rotated[q])[2] \
                > _frame(rects[head], rotated[head])[0]:
            break
        group.append(q)
    return group


# kernels a concatenation input's source slides with at most (itself included)
MAX_CHAIN = 4


def _slid(rect: Rect4, rotated: bool, dy: int) -> Rect4:
    """The rectangle moved `dy` PEs along its rows' axis."""
    x, y, w, h = _frame(rect, rotated)
    return _frame((x, y + dy, w, h), rotated)


def _touch(a: Rect4, ra: bool, b: Rect4, rb: bool) -> int:
    """Rows two kernels on one shelf axis share."""
    _, ay, _, ah = _frame(a, ra)
    _, by, _, bh = _frame(b, rb)
    return _overlap(ay, ay + ah, by, by + bh)
