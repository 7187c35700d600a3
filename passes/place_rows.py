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
unchanged (every shape still meets the shelf's time) and placed wires
barely change; it costs the PEs it adds, which the shelves left free, and
routed wirelength where cut lanes (each carrying its rows' boxes, halos
included) replace flat ones.

Only where it is needed: the two kernels touch end to end (elsewhere the
path has corners where lanes can widen), the consumer cuts the value on
every row (rows read on owner rows only, a conv's residual, take lanes of
their own pitch), and no heavy bundle runs straight over the consumer's
rows (_passed): cut lanes land on every row, so such a bundle would meet
one on each of them. Heavy for a raise: its lanes need more than
PASS_SHARE of the rows its ends share and of the consumer's own rows (a
transformer's residual, one lane on the one row its ends share, passes
every kernel of its block; measured: counted heavy, it kept BERT's,
Swin's and T5's attention producers low).

Where no producer can be raised (no taller shape fits, or a chain falls
short), open_corners moves the consumer and the kernels beyond it along
their shelf so that a column per widening lane lies between the two: the
lanes then leave side by side, run along that gap and turn onto the
consumer's rows at their pitch (widening at the corner), only where the
shelf has that room. Positions change, shapes and Δt do not (measured:
AlexNet 25,392 -> 864 forwarded PEs, the demo CNN 1,008 -> 0). Where the
shelf lacks room for one bundle's corner, the gap is first the fewest
columns its ribbons need (route_ribbons), so every corner of the shelf
gets its columns; then, where a bundle passes the consumer's rows and
turns off them (_passing), the gap widens, as far as the shelf's room
left allows, to the ribbons of the pitch the router widens at: the
fewest ribbons are the heaviest lanes, which overfill the links that
bundle bunches on (measured: Inception-v1's k59, 3 -> 19 columns, 3,320
PEs proven).

A concatenation reads each input on a run of its rows (place_runs): where
its source cannot slide onto its run without leaving the rows of its own
producer, it is raised to the run's end instead (its chain as above). A
raised concatenation's runs move with its rows: its sources follow (a
chain of their own) or the runs they lose are weighed against the PEs the
raise feeds (measured: SqueezeNet 257 -> 0 forwarded PEs). A producer
may also take a shape up to WIDEN columns wider where none of its width is
as tall, its shelf moving along, but only in a raise that feeds some
consumer lanes that do not land uniform already (or runs) and loses no
run: moving a shelf for nothing takes the columns open_corners needs (measured: every such
widening allowed, DenseNet-121's norms widened for convs fed already and
lost 32k proven PEs).

Kernels are raised in reverse dataflow order, so a raised consumer's new
rows are what its producers are measured against. A kernel is raised
together with the producers it cuts that would fall short of its new rows
(up to MAX_CHAIN kernels), or not at all, so raising never turns a uniform
cut upstream into one that cannot land; and never where new knobs would
change a value it reads on owner rows only (measured: raising ResNet-50's
convs there took its busiest link from 1.08 to 1.53 times its bound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from wsec.ir.graph import Kernel, Module
from wsec.ir.kernel_kind import Choice
from wsec.ir.kernels import gaps, input_cut, owner_pitch, read_span
from wsec.ir.lanes import box_elements, union_boxes
from wsec.ir.movement import Operands

from .route import AUTO_HEADROOMS
from .route_bundles import fitting, pick_pitch
from .route_ribbons import columns

Rect4 = tuple[int, int, int, int]


def _rows(rect: Rect4, rotated: bool) -> int:
    """PE rows (unrotated height) of a placed rectangle."""
    return rect[2] if rotated else rect[3]


def _occupancy(rects: Sequence[Rect4], width: int, height: int) -> np.ndarray:
    """The grid's PEs, each the index of the rectangle on it (-1: free)."""
    occ = np.full((height, width), -1, dtype=np.int32)
    for i, (x, y, w, h) in enumerate(rects):
        occ[y:y + h, x:x + w] = i
    return occ


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


def _abut(a: Rect4, b: Rect4, rotated: bool) -> bool:
    """Rectangles a and b touch end to end along their rows (placed x, or y
    when rotated), their rows overlapping: lanes between their row ends run
    straight and have no corner to widen at."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    if rotated:
        ax, ay, aw, ah, bx, by, bw, bh = ay, ax, ah, aw, by, bx, bh, bw
    return (ax + aw == bx or bx + bw == ax) and ay < by + bh and by < ay + ah


# a bundle passing a kernel's rows that needs more than this share of the rows it
# passes (its lanes at the link capacity) leaves no room beside cut lanes on all
# of them (measured: ResNet-50's residual edges need 0.46 of them, 1.08 -> 1.11
# times its bound with the convs they pass fed cut; DenseNet-121's concatenation
# skips need 0.08, its bound kept)
PASS_SHARE = 0.25


def _passed(module: Module, index: dict[str, int], rects: list[Rect4],
            rotated: list[bool], cap: int, wavelet_bytes: int,
            own_rows: bool = False, siblings: bool = True) -> np.ndarray:
    """Per kernel: whether an edge between two other kernels whose rows it
    shares, one on either side of it along the rows, runs its lanes straight
    over its rows (a skip edge along a shelf) and needs, at the link
    capacity `cap` (wavelets per sample), more than PASS_SHARE of the rows
    it passes. A cut lane lands on every row of the kernel's input side, so
    such a bundle meets one on each row it takes, where flat lanes on some
    rows would leave it the others. `own_rows` (raise_producers): only
    where those lanes are also more than PASS_SHARE of the kernel's own
    rows, the rows its cut lanes land on (a one-lane skip edge along a
    transformer's shelf meets one of an eight-row matmul's eight lanes).
    open_corners keeps the plain rule: a corner moves the consumer and
    every kernel beyond it (measured with `own_rows` there too: no more
    PEs of the transformer fixtures proven). With `siblings` False
    (open_corners), a kernel is not passed by a bundle of a value it reads
    itself (its sibling's, to a sink beyond it): routed flat, the two share
    their lanes where they run together; cut, its own lanes widen at the
    corner whatever the sibling does (measured: ShuffleNet's 1x1 conv after
    a 123-row source, its sibling beyond it, got no corner and stayed flat:
    4,032 PEs)."""
    n = len(rects)
    r = np.array([(y, x, h, w) if rot else (x, y, w, h)  # rows along the first axis
                  for (x, y, w, h), rot in zip(rects, rotated, strict=True)],
                 dtype=np.int64).reshape(-1, 4)
    rot = np.array(rotated, dtype=bool)
    out = np.zeros(n, dtype=bool)
    for e in module.edges:
        a = index.get(e.src)
        if a is None:
            continue
        wav = -(-int(e.bytes_per_sample) // wavelet_bytes)
        need = -(-wav // max(1, cap))  # lanes at the link capacity
        sinks = np.zeros(n, dtype=bool)  # the edge's own sinks (siblings=False: not passed)
        if not siblings:
            sinks[[i for d in e.dsts if (i := index.get(d)) is not None]] = True
        for d in dict.fromkeys(e.dsts):
            b = index.get(d)
            if b is None or b == a or rot[a] != rot[b]:
                continue
            lo = max(r[a, 1], r[b, 1])
            hi = min(r[a, 1] + r[a, 3], r[b, 1] + r[b, 3])
            if hi <= lo or need <= PASS_SHARE * (hi - lo):
                continue  # no straight run between them, or a light one
            x0 = min(r[a, 0] + r[a, 2], r[b, 0] + r[b, 2])
            x1 = max(r[a, 0], r[b, 0])
            out |= ((rot == rot[a]) & (r[:, 0] >= x0) & (r[:, 0] + r[:, 2] <= x1)
                    & (r[:, 1] < hi) & (r[:, 1] + r[:, 3] > lo)
                    & (not own_rows or need > PASS_SHARE * r[:, 3]) & ~sinks)
    return out


MAX_CHAIN = 4  # kernels one raise may take along, upstream (itself included)

# Past this share of the grid's PEs held (the raise's included), a raise may add
# no more PEs than it feeds (its consumers' PEs whose lanes it lets land uniform,
# or its runs' PEs): the free PEs left are what open_corners and place_runs move
# kernels onto. Below it a raise takes free PEs whatever it proves (measured:
# ZFNet-512's first conv 31k PEs for 3.5k proven; SqueezeNet's fire modules 48k
# PEs for 257, the grid 48% held after them; at 0.9 ResNet-50, 92% held, lost
# two raises that proved nothing new but shortened its routes, 1.12e10 -> 1.19e10).
RAISE_FILL = 0.95


def raise_producers(module: Module, kernels: Sequence[Kernel], order: Sequence[int],
                    choices: list[Choice | None], rects: list[Rect4], rotated: list[bool],
                    width: int, height: int, taller: Callable[[int, int], list[Choice]],
                    cap: int, wavelet_bytes: int) -> int:
    """Give producers taller shapes of their width (`taller(i, w)`: kernel i's
    shapes w wide meeting the time, lowest first) where a consumer touching
    them end to end cuts their output on every PE row and has more rows
    than their output side, in place (`choices`, `rects`); kernels without
    a choice (None) keep theirs; nor where a heavy bundle passes the
    consumer's rows (_passed: `cap` is the link capacity in wavelets per
    sample). Returns how many were raised."""
    n = len(kernels)
    index = {k.name: i for i, k in enumerate(kernels)}
    occ = _occupancy(rects, width, height)
    ops = Operands.of_module(module)
    runs = Operands.of_module(module, runs=True)  # the runs a concatenation's cut lands on
    outs: list[list[tuple[int, str]]] = [[] for _ in range(n)]  # (sink, value) per producer
    ins: list[list[tuple[int, str]]] = [[] for _ in range(n)]  # (producer, value) per sink
    reads: list[list[str]] = [[] for _ in range(n)]  # values per sink, from the host too
    for e in module.edges:
        if e.value not in module.values:
            continue
        p = index.get(e.src)
        for d in dict.fromkeys(e.dsts):
            j = index.get(d)
            if j is None or j == p:
                continue
            reads[j].append(e.value)
            if p is not None:
                outs[p].append((j, e.value))
                ins[j].append((p, e.value))
    passed = _passed(module, index, rects, rotated, cap, wavelet_bytes, own_rows=True)
    wavelets = {e.value: -(-int(e.bytes_per_sample) // wavelet_bytes) for e in module.edges}
    skipped: list[int] = []  # producers a relaxed plan left short (see `short`)
    lost: list[int] = []  # PEs of runs a plan's raised concatenation no longer faces

    def cut(i: int, value: str, c: Choice | None) -> np.ndarray | None:
        """The boxes of `value` kernel i's rows read at choice c's knobs."""
        k = kernels[i] if c is None else replace(kernels[i], knobs=c.knob_dict())
        return input_cut(k, value, tuple(module.values[value].type.shape), ops)

    def every_row(i: int, value: str, c: Choice | None) -> bool:
        """Kernel i cuts `value` on every PE row (rows read on owner rows
        only, `gaps`, take lanes of their own pitch)."""
        rows = cut(i, value, c)
        return rows is not None and not gaps(rows)

    def options(i: int, want: int) -> list[Choice]:
        """Kernel i's lowest shape of its width with at least `want` rows
        that fits the free PEs beyond its rows, then the lowest with as
        many rows up to WIDEN columns wider (the kernels beyond it on its
        shelf move along: `_widened` checks their room), in that order."""
        c = choices[i]
        if c is None:
            return []
        cap = _rows(rects[i], rotated[i]) + _room(occ, rects[i], rotated[i])
        same = next((o for o in taller(i, c.w) if want <= o.h <= cap), None)
        wider = [next((o for o in taller(i, w) if want <= o.h <= height), None)
                 for w in range(c.w + 1, c.w + WIDEN + 1)]
        return [o for o in (same, *wider) if o is not None
                and (o is same or _widened([(i, o)], rects, rotated, width, height) is not None)]

    def plan(i: int, want: int, depth: int, relax: bool = True, fresh: bool = True
             ) -> list[tuple[int, Choice]] | None:
        """Kernel i and the producers it cuts raised to `want` rows, or None
        where one cannot be: no taller shape fits, or a value it reads on
        owner rows only (a conv's residual: its owners are spaced by its
        channel blocks, which new knobs change; measured: ResNet-50 1.08 ->
        1.53 times its bound), or a producer it cuts that falls short,
        unless (`relax`) it is already short of i and could not reach i's
        present rows either (`short`: checked without relaxing, as that
        producer's own turn would raise it)."""
        if _rows(rects[i], rotated[i]) >= want:
            return []
        for new in options(i, want) if depth > 0 else ():
            marks = len(lost), len(skipped)
            got = extend(i, new, depth, relax, fresh)
            if got is not None:
                return got
            del lost[marks[0]:], skipped[marks[1]:]  # that shape's chain: not this plan's
        return None

    def extend(i: int, new: Choice, depth: int, relax: bool, fresh: bool
               ) -> list[tuple[int, Choice]] | None:
        """plan's steps with kernel i at shape `new`. A source following
        its run (a raise of its own, which its turn would otherwise make
        on the runs i's raise moved) takes a chain of MAX_CHAIN, once per
        plan (`fresh`): measured, SqueezeNet's first fire concatenation
        following its second's."""
        if any((got := cut(i, v, new)) is not None and gaps(got) for v in reads[i]):
            return None
        out = [(i, new)]
        for p, v in dict.fromkeys(ins[i]):
            if (more := run_rows(p, i, v, new)) and run_rows(p, i, v, choices[i]) == 0:
                # i's runs move with its rows: a source facing its run follows
                # where it can be raised, else that run's PEs are lost
                mark = len(lost)
                sub = plan(p, more, MAX_CHAIN if fresh else depth - 1, False, False) \
                    if more > 0 else None
                if sub is None:
                    del lost[mark:]
                    lost.append(run_pes(p, i, v, new))
                else:
                    out += sub
            elif every_row(i, v, choices[i]):
                sub = plan(p, new.h, depth - 1, relax, fresh)
                if sub is None:
                    if relax and short(p, i):
                        mark = len(lost)  # a probe: its losses are not this plan's
                        probe = plan(p, _rows(rects[i], rotated[i]), MAX_CHAIN, False)
                        del lost[mark:]
                        if probe is None:
                            skipped.append(p)
                            continue  # its lanes cannot land uniform now either: nothing lost
                    return None
                out += sub
        return out

    def short(p: int, i: int) -> bool:
        """Producer p's output side already falls short of kernel i's rows
        (where they touch end to end: elsewhere the lanes have corners to
        widen at). Where p cannot be raised to i's present rows either, its
        cut lanes cannot land uniform whether i is raised or not, so that p
        cannot follow does not stop i's raise, which lets i's own consumers
        be fed uniform. (Where p could reach i's present rows on its own
        turn, later in reverse dataflow order, raising i past it would lose
        that cut: measured on AlexNet, +25% routed wirelength.)"""
        return rotated[p] == rotated[i] and _abut(rects[p], rects[i], rotated[i]) \
            and _rows(rects[p], rotated[p]) < _rows(rects[i], rotated[i])

    def run_of(i: int, j: int, value: str, c: Choice | None) -> tuple[int, int] | None:
        """The run (first row, stop along the rows' axis of the grid) of
        kernel j's PE rows that read `value` at choice c's knobs (a
        concatenation's input, wsec.ir.kernels.read_span, landed as
        route_bundles.requests lands it: place_runs.face_runs' test), where
        producer i stands behind j on the same shelf axis; else None."""
        if rotated[i] != rotated[j]:
            return None
        sink = kernels[j] if c is None else replace(kernels[j], knobs=c.knob_dict())
        shape = tuple(module.values[value].type.shape)
        rows = input_cut(sink, value, shape, runs)
        ax, aw = _frame(rects[i], rotated[i])[::2]
        bx, by = _frame(rects[j], rotated[j])[:2]
        if rows is None or ax + aw > bx or owner_pitch(rows)[0] \
                or input_cut(sink, value, shape, ops) is not None:
            return None
        first, stop = read_span(rows)
        if stop <= first or (first, stop) == (0, rows.shape[0]):
            return None
        return by + first, by + stop

    def run_rows(i: int, j: int, value: str, c: Choice | None) -> int:
        """The rows producer i needs for its output side to cover its run
        of kernel j's rows (run_of) where it does not yet and starts at or
        below it (raised, i faces its run where sliding it would take it
        off its own producer's rows: measured, SqueezeNet's second fire
        concatenation, 257 PEs), also where the run starts past its end;
        -1 where no raise covers it (i starts above the run); 0 where i
        faces it, place_runs slides it onto it (`slides`) or there is no
        run."""
        span = run_of(i, j, value, c)
        if span is None:
            return 0
        lo, hi = span
        ay, ah = _frame(rects[i], rotated[i])[1::2]
        if (ay <= lo and hi <= ay + ah) or slides(i, j, lo, hi):
            return 0
        return hi - ay if ay <= lo else -1

    def slides(i: int, j: int, lo: int, hi: int) -> bool:
        """Whether place_runs can slide producer i alone onto its run lo-hi
        of kernel j's rows without it touching fewer rows of another kernel
        it exchanges data with (its test, before clearance): then no raise
        is needed (measured: Inception-v2's k33 raised 2,688 PEs where the
        slide faced its run, and the router lost 47 PEs elsewhere)."""
        ay, ah = _frame(rects[i], rotated[i])[1::2]
        if hi - lo > ah:
            return False
        ny = min(max(ay, hi - ah), lo)
        for o in {p for p, _ in ins[i]} | {k for k, _ in outs[i]}:
            if o == j or rotated[o] != rotated[i]:
                continue
            oy, oh = _frame(rects[o], rotated[o])[1::2]
            if _overlap(oy, oy + oh, ny, ny + ah) < _overlap(oy, oy + oh, ay, ay + ah):
                return False
        return True

    def run_pes(i: int, j: int, value: str, c: Choice | None) -> int:
        """PEs of kernel j's run that read producer i's `value` (run_of)."""
        span = run_of(i, j, value, c)
        return 0 if span is None else (span[1] - span[0]) * _frame(rects[j], rotated[j])[2]

    def crosses(steps: list[tuple[int, Choice]]) -> bool:
        """Whether a kernel the steps raise would stand on rows a bundle
        passing its column runs along (_crossed, as place_runs slides a
        source: measured, Inception-v2's k33 raised under the bundle of
        another input of its concatenation, 47 PEs reading what no lane
        brought, where sliding it faced its run)."""
        pairs = [(p, j) for p in range(n) for j, _ in dict.fromkeys(outs[p])]
        spans = {}
        for p in range(n):
            for j, v in dict.fromkeys(outs[p]):
                if (span := run_of(p, j, v, choices[j])) is not None:
                    base = _frame(rects[j], rotated[j])[1]
                    spans.setdefault((p, j), (span[0] - base, span[1] - base))
        for k, new in steps:
            fx, fy = _frame(rects[k], rotated[k])[:2]
            to = _frame((fx, fy, new.w, new.h), rotated[k])
            if _crossed(k, to, rects, rotated, pairs, spans):
                return True
        return False

    def lands(j: int, value: str, side: int) -> bool:
        """Whether uniform lanes from a side of `side` rows already feed
        kernel j's R rows of `value` at some pitch k (R - k + 1 <= side)
        with as many lanes as the link capacity needs: raising its
        producer then feeds j nothing it lacks (measured: Inception-v1's
        k48 widened for k49, whose lanes landed at 416 rows, moved its
        concatenation's runs, 128 PEs lost)."""
        R = _rows(rects[j], rotated[j])
        need = -(-wavelets.get(value, 0) // max(1, cap))
        return any(R % k == 0 and R - k + 1 <= side and R // k >= need for k in range(1, R + 1))

    def light(j: int, value: str) -> bool:
        """Every PE row of kernel j reads at most half a link's capacity of
        `value` (its core's RAMP takes the row's box: room for another as
        heavy), the rule a relaxed raise keeps to (measured: a data
        movement raised past a one-row matmul fed its element-wise
        consumer uniform lanes whose boxes took one PE's RAMP to 1.56 times
        the kernel time, the selin fixture)."""
        boxes = cut(j, value, choices[j])
        if boxes is None:
            return False
        numel = max(1, module.values[value].type.numel)
        load = -(-wavelets.get(value, 0) * int(box_elements(boxes).max()) // numel)
        return 2 * load <= cap

    raised = 0
    used = int((occ >= 0).sum())  # PEs the layout holds
    for i in reversed(order):
        rows = _rows(rects[i], rotated[i])
        gain = [(j, v) for j, v in outs[i]
                if rotated[j] == rotated[i] and not passed[j]
                and _abut(rects[i], rects[j], rotated[i])
                and _rows(rects[j], rotated[j]) > rows
                and every_row(j, v, choices[j])]
        want = want_rows = max((_rows(rects[j], rotated[j]) for j, _ in gain), default=0)
        ran = [(j, v, r) for j, v in outs[i] if (r := run_rows(i, j, v, choices[j])) > 0]
        want = max([want] + [r for _, _, r in ran])
        skipped.clear()
        lost.clear()
        steps = plan(i, want, MAX_CHAIN) if want > rows else None
        if steps and skipped and not all(light(j, v) for j, v in gain):
            steps = None  # a raise past a short producer only for light uniform lanes
        if steps and any(r > max(rows, want_rows) for _, _, r in ran) and crosses(steps):
            steps = None  # a run's raise onto rows a passing bundle runs along
        if steps:
            new_rows = dict(steps)[i].h
            fed = sum(_rows(rects[j], rotated[j]) * _frame(rects[j], rotated[j])[2]
                      for j, v in gain if not lands(j, v, rows)) \
                + sum(run_pes(i, j, v, choices[j]) for j, v, r in ran if r <= new_rows)
            added = sum(new.w * new.h - rects[k][2] * rects[k][3] for k, new in steps)
            if (not fed or lost) and any(new.w != _frame(rects[k], rotated[k])[2]
                                         for k, new in steps):
                # a shelf moved along for lanes that land uniform already, or for
                # lanes a corner could widen at while runs are lost (measured: a
                # shuffle's data movement 3 wide lost its own run, 171 PEs, for a
                # conv that open_corners had fed)
                steps = None
            elif lost and sum(lost) >= fed:
                steps = None  # its concatenations' runs lost prove more than it feeds
            elif added > sum(_rows(rects[j], rotated[j]) * _frame(rects[j], rotated[j])[2]
                             for j, _ in gain) + sum(run_pes(i, j, v, choices[j])
                                                     for j, v, r in ran if r <= new_rows) \
                    and used + added > RAISE_FILL * width * height:
                steps = None  # a tight wafer: no more PEs than the raise proves
        moved = _widened(steps or [], rects, rotated, width, height) if steps else None
        if steps and moved is None:
            continue  # a wider shape whose shelf has no room to move along
        for k, r in (moved or {}).items():
            used += r[2] * r[3] - rects[k][2] * rects[k][3]
            rects[k] = r
        for k, new in steps or ():
            choices[k] = new
            raised += 1
        if moved:
            occ = _occupancy(rects, width, height)
    return raised


# columns a raised kernel may widen by where no shape of its width is as tall
# as the rows it must reach within the time: its shelf moves along, so a raise
# with a wider shape must feed PEs (a consumer whose lanes do not land uniform
# already, or runs) and lose no run. Measured, with that rule: DenseNet-121 17,993 -> 1,609 sink
# PEs on flat lanes (its norm k13 two columns wide at 512 rows lets the 1x1 conv
# k14 reach its 3x3 conv's rows, and the 59 columns k15's ribbons took are left
# to k23's), Inception-v1 5,268 -> 3,732 (its LRN k4 fed by the 1x1 conv k2 at
# 8 x 512), the other light models unchanged; without it (every raise that
# could widen did) DenseNet-121's norms widened for convs whose lanes landed
# already, 18,828 -> 50,674 forwarded PEs.
WIDEN = 2


def _widened(steps: Sequence[tuple[int, Choice]], rects: list[Rect4], rotated: list[bool],
             width: int, height: int) -> dict[int, Rect4] | None:
    """The rectangles a raise changes: each raised kernel's at its new
    shape (rows grown beyond its far end, columns along its shelf), and
    where a shape is wider, every kernel on its shelf beyond it (same
    base, further along) moved along by the columns it gained; None where
    a rectangle would leave the grid or meet another."""
    out: dict[int, Rect4] = {}
    shift = [0] * len(rects)
    for k, new in steps:
        fx, fy, fw, fh = _frame(rects[k], rotated[k])
        more = new.w - fw
        if more:
            for m in range(len(rects)):
                mx, my = _frame(rects[m], rotated[m])[:2]
                if m != k and rotated[m] == rotated[k] and my == fy and mx >= fx + fw:
                    shift[m] += more
    grown = {k: new for k, new in steps}
    for m in range(len(rects)):
        if m not in grown and not shift[m]:
            continue
        fx, fy, fw, fh = _frame(rects[m], rotated[m])
        if m in grown:
            fw, fh = grown[m].w, grown[m].h
        out[m] = _frame((fx + shift[m], fy, fw, fh), rotated[m])
    fixed = [r for m, r in enumerate(rects) if m not in out]
    occ = _occupancy(fixed, width, height)
    for x, y, w, h in out.values():
        if x < 0 or y < 0 or x + w > width or y + h > height \
                or (occ[y:y + h, x:x + w] >= 0).any():
            return None
        occ[y:y + h, x:x + w] = 0
    return out


def _overlap(a0: int, a1: int, b0: int, b1: int) -> int:
    return max(0, min(a1, b1) - max(a0, b0))


def _crossed(q: int, to: Rect4, rects: list[Rect4], rotated: list[bool],
             pairs: list[tuple[int, int]],
             spans: dict[tuple[int, int], tuple[int, int]] | None = None) -> bool:
    """Whether kernel q moved (or raised) to `to` would stand on rows that a bundle
    passing its column runs straight along (from a kernel behind it to one
    beyond it on the same shelf axis, on the rows the two share) and that
    q did not stand on before: that bundle would then cross q's PEs and
    meet its flows (measured: ShuffleNet's pooling slid 16 rows onto the
    rows of the bundle passing it to the same concatenation, and the
    router's rounds lost three conv cuts elsewhere, 6.9k PEs reading what
    no lane brought). A bundle into a concatenation whose source faces its
    run (`spans`: the run's rows from its sink's first row) runs on that
    run's rows only (measured: Inception-v1's 5x5 branch k33 passing k35 to
    their concatenation k38 on rows 130-312 kept k35 from sliding onto rows
    312-364, 52 PEs reading what no lane brought)."""
    x, y, w, h = _frame(rects[q], rotated[q])
    ny, nh = _frame(to, rotated[q])[1::2]
    new = (ny, min(y, ny + nh)) if ny < y else (max(ny, y + h), ny + nh)  # rows gained
    if new[1] <= new[0]:
        return False
    for a, b in pairs:
        if a == q or b == q or rotated[a] != rotated[q] or rotated[b] != rotated[q]:
            continue
        ax, ay, aw, ah = _frame(rects[a], rotated[a])
        bx, by, bw, bh = _frame(rects[b], rotated[b])
        lo, hi = max(ay, by), min(ay + ah, by + bh)
        run = (spans or {}).get((a, b))
        if run is not None and ay <= by + run[0] and by + run[1] <= ay + ah:
            lo, hi = max(lo, by + run[0]), min(hi, by + run[1])
        if ax + aw <= x and bx >= x + w and _overlap(lo, hi, *new):
            return True
    return False


def _frame(rect: Rect4, rotated: bool) -> Rect4:
    """A rectangle with its rows along the first axis (x, y, w, h unrotated;
    y, x, h, w rotated): along the shelf, then across it."""
    x, y, w, h = rect
    return (y, x, h, w) if rotated else rect


def widening_lanes(boxes: np.ndarray, side: int, wavelets: int, numel: int, cap: int,
                   every: bool = False) -> Any:
    """The most lanes a cut of the sink rows' `boxes` (one per PE row, of a
    value of `numel` elements sent as `wavelets` per sample) fed from a
    source side of `side` PEs may widen into at the pitch the router takes
    (route_bundles.choose_pitch in a widening attempt, at any of the
    router's headrooms): k divides the R rows, the R/k lanes fit the side
    yet cannot leave uniform (R - k + 1 > side), and of those the router's
    own rule picks (route_bundles.pick_pitch, with the lanes the link
    capacity `cap` needs), so the gap opened is the one its lanes need.
    0 where no pitch widens: no gap is worth opening. `every`: the lanes
    of every pitch it may take at some headroom (route_bundles.fitting),
    fewest first, for ribbons."""
    R = boxes.shape[0]
    need = max(1, -(-wavelets // max(1, cap)))
    loads: dict[int, int] = {}
    for k in range(1, R + 1):
        if R % k or R // k > side or R - k + 1 <= side:
            continue
        loads[k] = _lane_load(boxes, k, wavelets, numel)
    if not loads:
        return [] if every else 0
    if every:
        return sorted({R // k for headroom in AUTO_HEADROOMS
                       for k in fitting(loads, R, wavelets, int(np.ceil(need * headroom)), need,
                                        cap)})
    ks = [pick_pitch(loads, R, wavelets, int(np.ceil(need * headroom)), need, cap)
          for headroom in AUTO_HEADROOMS]
    return max((R // k for k in ks if k), default=0)


def open_corners(module: Module, kernels: Sequence[Kernel], order: Sequence[int],
                 choices: list[Choice | None], rects: list[Rect4], rotated: list[bool],
                 width: int, height: int, cap: int, wavelet_bytes: int) -> int:
    """Room for widening corners: where a consumer touching its producer
    end to end cuts its output on every PE row and has more rows R than the
    producer's output side S (a raise found no taller shape), move the
    consumer and every kernel beyond it on its shelf (same base, further
    along the rows' axis) by two columns per lane of the pitch the router
    would widen at (widening_lanes; none: no gap) plus two, so that the lanes can leave side by
    side, run across the gap and turn onto the rows at their pitch: the
    router's Z routes jog in the gap's middle or a bus width from either
    end (route_bundles._between), so a bus of L nested lanes needs 2L + 2
    (measured: at L + 1 with jogs added at the gap's ends, DenseNet-121
    gained 5k proven PEs but those jogs moved Inception-v2's widening
    routes and lost it 5k). Only
    where every moved rectangle stays on the grid clear of the others, and
    not where a heavy bundle passes the consumer's rows (_passed: cut lanes
    land on every row). Shapes (`choices`: the layout's, read for the
    consumers' rows) and Δt are unchanged. Where no one bundle's corner
    fits, the gap is the fewest columns of the ribbons of any pitch the
    router may take; once every consumer has its gap, those a bundle
    passes (_passing) widen, the heaviest ribbon lanes first, to the
    ribbons of the finest pitch up to the router's (or one bundle's
    corner) that the shelf's room left allows. Returns how many gaps were
    opened."""
    n = len(kernels)
    index = {k.name: i for i, k in enumerate(kernels)}
    occ = _occupancy(rects, width, height)
    ops = Operands.of_module(module)
    ins: list[list[tuple[int, str, int]]] = [[] for _ in range(n)]  # (producer, value, wavelets)
    for e in module.edges:
        p = index.get(e.src)
        if p is None or e.value not in module.values:
            continue
        for d in dict.fromkeys(e.dsts):
            j = index.get(d)
            if j is not None and j != p:
                ins[j].append((p, e.value, -(-int(e.bytes_per_sample) // wavelet_bytes)))
    passed = _passed(module, index, rects, rotated, cap, wavelet_bytes, siblings=False)
    passing = _passing(module, index, rects, rotated)
    opened = 0
    # corners opened for ribbons: (the share of a link the chosen ribbons' lanes
    # carry, consumer, columns opened, wider gaps for more lanes, widest first)
    narrow: list[tuple[float, int, int, list[int]]] = []
    for j in order:
        for p, v, wav in dict.fromkeys(ins[j]):
            if rotated[p] != rotated[j] or passed[j]:
                continue
            ax, ay, aw, ah = _frame(rects[p], rotated[p])
            bx, by, bw, bh = _frame(rects[j], rotated[j])
            if ax + aw != bx or not (ay < by + bh and by < ay + ah):
                continue  # not end to end, the consumer beyond: corners exist elsewhere
            if bh <= ah:
                continue  # uniform lanes fit
            shape = tuple(module.values[v].type.shape)
            c = choices[j]  # the kernels' knobs are the sizer's until the layout is applied
            sink = kernels[j] if c is None else replace(kernels[j], knobs=c.knob_dict())
            rows = input_cut(sink, v, shape, ops)
            if rows is None or gaps(rows) or rows.shape[0] != bh:
                continue
            lanes = widening_lanes(rows, ah, wav, module.values[v].type.numel, cap)
            if not lanes:
                continue
            gap = 2 * lanes + 2
            movers = [i for i in range(n) if rotated[i] == rotated[j]
                      and _frame(rects[i], rotated[i])[1] == by
                      and _frame(rects[i], rotated[i])[0] >= bx]
            moved = {i: _shift(rects[i], rotated[i], gap) for i in movers}
            if not _clear(occ, moved, width, height):
                # no room for one bundle's corner: the columns its ribbons need
                # (route_ribbons: runs of its lanes, each turning just below its rows)
                numel = module.values[v].type.numel
                fits = [(g, n) for n in widening_lanes(rows, ah, wav, numel, cap, True)
                        if (g := ribbon_gap(n, bh // n, ah, by - ay, ay + ah - by - bh))]
                gap, few = min(fits, default=(0, 0))
                moved = {i: _shift(rects[i], rotated[i], gap) for i in movers}
                if not gap or not _clear(occ, moved, width, height):
                    continue
                if passing[j]:
                    wider = sorted({g for g, n in fits if few < n <= lanes and g > gap}
                                   | {2 * lanes + 2}, reverse=True)
                    heavy = _lane_load(rows, bh // few, wav, numel) / max(1, cap)
                    narrow.append((heavy, j, gap, wider))
            _move(occ, rects, moved)
            opened += 1
            break  # j has moved: its other inputs are measured on the next kernels' turn
    # the columns every corner needs are held: where its shelf still has room,
    # a corner opened for the fewest ribbons widens for more (the heaviest
    # lanes first), up to the pitch the router widens at
    for _, j, gap, wider in sorted(narrow, key=lambda c: (-c[0], order.index(c[1]))):
        bx, by = _frame(rects[j], rotated[j])[:2]
        movers = [i for i in range(n) if rotated[i] == rotated[j]
                  and _frame(rects[i], rotated[i])[1] == by
                  and _frame(rects[i], rotated[i])[0] >= bx]
        for g in wider:
            moved = {i: _shift(rects[i], rotated[i], g - gap) for i in movers}
            if _clear(occ, moved, width, height):
                _move(occ, rects, moved)
                break
    return opened


def _passing(module: Module, index: dict[str, int], rects: list[Rect4],
             rotated: list[bool]) -> np.ndarray:
    """Per kernel: whether an edge between two other kernels of its shelf
    axis, one behind it and one beyond it along its rows, runs along some
    of its rows and turns off them: one end shares rows with it, the other
    none (a concatenation input passing a branch's conv to a sink on the
    next shelf). Such a bundle cannot spread its lanes over the rows it
    passes as a skip between kernels of the same rows can (_passed): they
    bunch on the rows nearest the side it turns to, where cut lanes land
    too, so the fewest, heaviest cut lanes overfill those links (measured:
    Inception-v1's k59, three columns for 8 ribbons of 2,912 wavelets
    beside two concatenation inputs passing it; a skip along ResNet-50's
    shelf beside k29's 16 ribbons left them room)."""
    n = len(rects)
    f = np.array([_frame(r, rot) for r, rot in zip(rects, rotated, strict=True)],
                 dtype=np.int64).reshape(-1, 4)
    rot = np.array(rotated, dtype=bool)
    out = np.zeros(n, dtype=bool)
    for e in module.edges:
        a = index.get(e.src)
        if a is None:
            continue
        for d in dict.fromkeys(e.dsts):
            b = index.get(d)
            if b is None or b == a or rot[a] != rot[b]:
                continue
            lo, hi = (a, b) if f[a, 0] < f[b, 0] else (b, a)
            between = (rot == rot[a]) & (f[:, 0] >= f[lo, 0] + f[lo, 2]) \
                & (f[:, 0] + f[:, 2] <= f[hi, 0])
            ends = [(f[:, 1] < f[k, 1] + f[k, 3]) & (f[k, 1] < f[:, 1] + f[:, 3])
                    for k in (a, b)]
            out |= between & (ends[0] != ends[1])
    return out


def _lane_load(boxes: np.ndarray, k: int, wavelets: int, numel: int) -> int:
    """The busiest lane's wavelets per sample where lanes at pitch k carry
    the union of the boxes of the k rows each serves (route_bundles.
    _max_load's measure for a cut of a value of `numel` elements sent as
    `wavelets` per sample)."""
    R = boxes.shape[0]
    elems = box_elements(union_boxes(boxes.reshape(R // k, k, 2, -1)))
    return int((-(-wavelets * elems // max(1, numel))).max())


def ribbon_gap(lanes: int, k: int, side: int, below: int, above: int) -> int:
    """The fewest columns ribbons of `lanes` lanes at pitch k need between a
    producer's output side of `side` rows and its consumer's rows, which
    start `below` rows above the side's first (or end `above` rows below
    its last, the ribbons turning the other way); 0 where none fit."""
    return min((c for c in (columns(lanes, k, side, below), columns(lanes, k, side, above))
                if c), default=0)


def _shift(rect: Rect4, rotated: bool, by: int) -> Rect4:
    """The rectangle moved `by` PEs further along its rows' axis."""
    x, y, w, h = rect
    return (x, y + by, w, h) if rotated else (x + by, y, w, h)


def _move(occ: np.ndarray, rects: list[Rect4], moved: dict[int, Rect4]) -> None:
    """Each rectangle of `moved` to its new place, on the occupancy grid too
    (its old PEs freed first: movers may overlap their old places)."""
    for i in moved:
        x, y, w, h = rects[i]
        occ[y:y + h, x:x + w] = -1
    for i, (x, y, w, h) in moved.items():
        occ[y:y + h, x:x + w] = i
        rects[i] = (x, y, w, h)


def _clear(occ: np.ndarray, moved: dict[int, Rect4], width: int, height: int) -> bool:
    """Every moved rectangle on the grid and on PEs free or its own or
    another mover's."""
    for x, y, w, h in moved.values():
        if x < 0 or y < 0 or x + w > width or y + h > height:
            return False
    for x, y, w, h in moved.values():
        held = occ[y:y + h, x:x + w]
        if ((held >= 0) & ~np.isin(held, list(moved))).any():
            return False
    return True
