"""Convolution kernel kinds: Conv (1-D, 2-D, 3-D folded to 2-D) and ConvTranspose.

Both stream the input feature map row by row through a rectangle of PEs.
Output rows are dealt out to `s` row groups (each receives only the input
rows its output rows need, plus the kernel-window halo), channels are dealt
out to `k`/`c` column groups; every PE keeps a sliding window of input rows
and one output row, so SRAM does not grow with the image height. The window
helpers here are shared with the pooling kinds (library_pool).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from .graph import Kernel, Node, Value
from .kernel_kind import Dims, Knobs
from .library_common import (
    CODE_BYTES,
    KERNEL_OVERHEAD,
    ROW_OVERHEAD,
    LibraryKind,
    UnsupportedShape,
    block,
    candidates,
    cdiv,
    elems_per_cycle,
    fused_extras,
    itemsize,
    spatial,
    vtype,
)
from .movement import Operands
from .opsem_core import pads
from .target import Target

# Windowed poolings a conv absorbs when it is their only producer
# (form-kernels): the pooling runs on the conv's output rows where they are
# computed, so the full-size conv output never crosses a kernel boundary.
FUSED_POOLS = frozenset({"MaxPool", "AveragePool"})

# A 1-D convolution's PE works through its stretch of the sequence in tiles
# whose input window and output buffers take at most this many bytes, so its
# SRAM is bounded by the tile, not by the sequence (see ConvKind._cost_1d).
LENGTH_TILE_BYTES = 8192


def pair(attrs: dict, key: str, default: int, n: int = 2) -> list[int]:
    v = attrs.get(key)
    if v is None:
        return [default] * n
    return [int(x) for x in v]  # type: ignore[union-attr]


def window_dims(node: Node, x_shape: tuple[int, int, int, int],
                 y_shape: tuple[int, int, int, int], rs: tuple[int, int], nsp: int) -> Dims:
    """Strides, dilations, total pads per axis and output size of a windowed op
    with `nsp` spatial axes (1-D ops map onto H = 1), and the pads above and
    to the left (pt, pl: `pads` or `auto_pad`'s begin pads). Why both: ph
    and pw are what the windows read in all (the cost models); where a row
    group's input rows start takes the pad above alone, and a box drawn from
    ph instead starts up to ph rows too early (a 3x3 conv's one-row groups
    held 5 input rows where they read 3: covering_rows)."""
    if nsp not in (1, 2):
        raise UnsupportedShape(f"{node.op} with {nsp} spatial axes (only 1-D and 2-D map)")
    n, c, h, w = x_shape
    _, _, ho, wo = y_shape
    r, s = rs
    st = pair(node.attrs, "strides", 1, nsp)
    dl = pair(node.attrs, "dilations", 1, nsp)
    if nsp == 1:
        st, dl = [1, st[0]], [1, dl[0]]
    # the input extent actually read (pads included), whatever auto_pad said
    ph = max(0, (ho - 1) * st[0] + (r - 1) * dl[0] + 1 - h)
    pw = max(0, (wo - 1) * st[1] + (s - 1) * dl[1] + 1 - w)
    if nsp == 1:
        pt, pl = 0, pads(node, [w], [s], [st[1]], [dl[1]])[0][0]
    else:
        pt, pl = pads(node, [h, w], [r, s], st, dl)[0]
    return {"N": n, "C": c, "H": h, "W": w, "R": r, "S": s, "sh": st[0], "sw": st[1],
            "dh": dl[0], "dw": dl[1], "ph": ph, "pw": pw, "pt": max(0, int(pt)),
            "pl": max(0, int(pl)), "Ho": ho, "Wo": wo}


def window_rows(ho: int, s: int, sh: int, r: int, dh: int, group: int) -> tuple[int, int]:
    """Padded input rows [start, stop) that output-row group `group` of `s`
    (ceil(ho/s) output rows each) reads through an r-tap window of dilation
    dh at stride sh: its rows' strided span plus the halo; empty past the
    last output row."""
    per = -(-ho // max(s, 1))
    first = group * per
    n = min(per, ho - first)
    start = first * sh
    if n <= 0:
        return start, start
    return start, start + (n - 1) * sh + (r - 1) * dh + 1


def covering_rows(rows: np.ndarray, ph: int, H: int, top: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """Input rows [lo, hi) per row group from the padded rows it holds
    (`rows`, (s, 2)) so that the groups together cover the H input rows:
    padded row q is input row q - `top` (the pad above: window_dims' pt);
    where the dims do not say it (`top` None: IR or binaries written
    before), only the sum ph of the pads above and below is known, so a
    group's rows start up to ph earlier and end where its padded rows do.
    Rows no group reads (a stride longer than the window) go to the group
    before them; groups holding no rows read none (0, 0). None when no
    group holds a row."""
    used = rows[:, 1] > rows[:, 0]
    lo = np.clip(rows[:, 0] - (ph if top is None else top), 0, H)
    hi = np.clip(rows[:, 1] - (0 if top is None else top), 0, H)
    live = np.flatnonzero(used)
    if not live.size:
        return None
    lo[live[0]] = 0
    hi[live[:-1]] = np.maximum(hi[live[:-1]], lo[live[1:]])
    hi[live[-1]] = H
    lo[~used], hi[~used] = 0, 0
    return lo, hi


def fold_depth(node: Node, x: tuple[int, ...], y: tuple[int, ...], taps: int
                ) -> tuple[Node, tuple[int, int, int, int], tuple[int, int, int, int], Dims]:
    """A 3-D windowed op as a 2-D one: each output depth plane is an
    independent (H, W) problem (N counts samples x output planes) that reads
    T = `taps` input planes; strides/dilations/pads keep their (H, W) parts.
    Returns the 2-D view of the node, x and y as (N, C, H, W) and {T}."""
    attrs = dict(node.attrs)
    for key in ("strides", "dilations"):
        if attrs.get(key) is not None:
            attrs[key] = list(attrs[key])[1:]  # type: ignore[arg-type]
    if attrs.get("pads") is not None and len(attrs["pads"]) == 6:  # type: ignore[arg-type]
        p = list(attrs["pads"])  # type: ignore[arg-type]
        attrs["pads"] = [p[1], p[2], p[4], p[5]]
    flat = Node(node.name, node.op, node.inputs, node.outputs, attrs)
    n, c, _, h, w = x
    _, k, do, ho, wo = y
    return flat, (n * do, c, h, w), (n * do, k, ho, wo), {"T": taps}


def channel_row_boxes(shape: tuple[int, ...], C: int, G: int, c: int, s: int, lo: np.ndarray,
                      hi: np.ndarray, ax: int | None, view: bool = False) -> np.ndarray:
    """(c s, 2, ndim): the box of a conv-like input (channels on axis 1) PE
    row py reads: input-channel block py % c of each of the G groups'
    channels (the span from the first group's block to the last's), rows
    [lo, hi) of its row group py // c on axis `ax` (None: the whole axis,
    for the row groups that hold any rows), the other axes whole. A row
    whose rows are empty reads nothing (an all-zero box).
    `view`: the boxes in the input's `group_view` instead, each block of
    every group exactly (axis 1 the groups [0, G), axis 2 the block).

    A PADDING row (its block past the channels: c blocks of ceil(C/G/c)
    channels hold more than C/G, or c > C/G, ConvKind's padding blocks)
    reads nothing, but declares the first element of its group's last
    block: a box, so that its group's rows read without gaps (wsec.ir.
    kernels.gaps: a row reading nothing before one that reads keeps the
    cut from lanes, and a producer from being raised to the rows), one
    element inside the box of the row before it, so that a lane serving
    both carries no more and a lane of its own one wavelet."""
    py = np.arange(c * s)
    out = np.zeros((c * s, 2, len(shape)), np.int64)
    out[:, 1] = shape
    cg = C // G
    step = -(-cg // c)
    live = max(1, -(-cg // max(step, 1)))  # blocks holding channels
    pad = py % c >= live
    b = np.minimum(py % c, live - 1)
    first, last = np.minimum(cg, b * step), np.minimum(cg, (b + 1) * step)
    out[:, 0, 1], out[:, 1, 1] = first, (G - 1) * cg + last
    if ax is not None:
        out[:, 0, ax], out[:, 1, ax] = lo[py // c], hi[py // c]
    else:
        out[~(hi > lo)[py // c]] = 0
    out[(out[:, 1] <= out[:, 0]).any(axis=1) | (last <= first)] = 0
    if view:
        empty = (out[:, 1] <= out[:, 0]).any(axis=1)
        vlo = np.insert(out[:, 0], 1, 0, axis=1)
        vhi = np.insert(out[:, 1], 1, G, axis=1)
        vlo[:, 2], vhi[:, 2] = first, last
        out = np.stack([vlo, vhi], axis=1)
        out[empty] = 0
    one = pad & (out[:, 1] > out[:, 0]).all(axis=1)
    out[one, 1] = out[one, 0] + 1
    return out


def group_view(shape: tuple[int, ...], G: int) -> tuple[int, ...]:
    """A conv-like input (channels on axis 1) viewed as (N, G, C/G, ...):
    in it "channel block j of every group", what a grouped conv's PE row
    reads, is one box (wsec.ir.lanes.split_axis)."""
    return (shape[0], G, shape[1] // G, *shape[2:])


def chain_operands(body: Sequence[Node], outputs: Sequence[str]) -> list[str]:
    """The operands a chain of Adds right after the anchor (body[0]) adds
    into its result, in body order: each Add reads the previous link's
    value (the anchor's output first) and one other operand that no body
    op computes and that nothing else in the body reads; a link's value is
    read by that next Add alone and is no output of the kernel. The chain
    ends at the first op that breaks this (a Mul, an activation, a value
    read twice). Why: addition is associative, so an operand added by such
    a chain can join the anchor's partial sums anywhere along the
    reduction (ConvKind.spread_operands), which no op other than an Add
    (a scale, a clamp) before it allows."""
    if not body or not body[0].outputs:
        return []
    made = {o for n in body for o in n.outputs if o}
    reads: dict[str, int] = {}
    for n in body:
        for i in n.inputs:
            if i:
                reads[i] = reads.get(i, 0) + 1
    cur, got = body[0].outputs[0], []
    for n in body[1:]:
        if cur in outputs or reads.get(cur, 0) != 1 or n.op != "Add" or len(n.inputs) != 2 \
                or cur not in n.inputs or not n.outputs:
            break
        other = n.inputs[1] if n.inputs[0] == cur else n.inputs[0]
        if not other or other == cur or other in made or reads.get(other, 0) != 1:
            break
        got.append(other)
        cur = n.outputs[0]
    return got


def skip_boxes(N: int, K: int, Ho: int, Wo: int, c: int, s: int, G: int = 1) -> np.ndarray:
    """(G c s, 2, 4): row j of row group g (PE row g c + j) reads output
    channels [j K // c, (j + 1) K // c) of the group's ceil(Ho / s) output
    rows (all samples, the whole width): the c rows of a group partition
    its owner row's box, each a c-th of it (ConvKind.spread_operands).
    A conv stacked by its G groups (`stacked`; G > 1) does so per group:
    row q c + j of row group g (PE row g G c + q c + j) reads channels
    q K/G + [j (K/G) // c, (j + 1) (K/G) // c), a c-th of its group's owner
    box (stack_owners). Groups past the last output row read nothing."""
    py = np.arange(G * c * s)
    j, g = py % (G * c), py // (G * c)
    q, b = j // c, j % c
    kg = K // max(G, 1)
    hb = -(-Ho // max(s, 1))
    out = np.zeros((G * c * s, 2, 4), np.int64)
    out[:, 1, 0], out[:, 1, 3] = N, Wo
    out[:, 0, 1], out[:, 1, 1] = q * kg + b * kg // c, q * kg + (b + 1) * kg // c
    out[:, 0, 2], out[:, 1, 2] = np.minimum(g * hb, Ho), np.minimum((g + 1) * hb, Ho)
    out[(out[:, 1] <= out[:, 0]).any(axis=1)] = 0
    return out


def banded(dims: Dims) -> bool:
    """Whether a conv is depthwise and laid out in channel BANDS: one input
    channel per group (C == G > 1), 2-D, no fused pooling. Its PE rows
    then split the channels instead of its columns: the rectangle is one
    PE wide (k = 1) and c*s high, row py holding channel band py % c
    (ceil(C/c) channels, their K/C output channels each) of output-row
    group py // c. Why: a conv's PE row receives one lane (the row
    multicast), so every PE of a row receives all its row reads; in the
    k-column layout the k PEs of a depthwise row read disjoint channels, so
    a cut lane carries k times what each PE needs (measured: ShuffleNet's
    busiest RAMP at 2x its bound) and the bundle stayed flat, its reads
    unproven. Banded, a row's box is exactly its one PE's read, at the same
    work, input and SRAM per PE for the same PE count. No reduction: each
    output channel reads one input channel, held by its band's PE."""
    G, C = max(1, int(dims.get("G", 1))), int(dims.get("C", 0))
    return G > 1 and C == G and not dims.get("L1") and not dims.get("T") \
        and not dims.get("pool")


def stacked(dims: Dims) -> bool:
    """Whether a grouped conv with more than one input channel per group
    and G > 2 groups is laid out as its groups STACKED over rows: 2-D, no
    fused pooling.
    Each row group's G c rows hold group q = (py % (G c)) // c's input-
    channel block (py % (G c)) % c, the k columns split that group's K/G
    output channels, and the c rows of a group reduce its partial sums
    (the owner: the last of them). Why: in the k-column layout over all K
    output channels a row holds its block of EVERY group, and a column's
    PEs read the groups their output channels belong to, a G-th of the row
    each when k >= G (measured: cutting ShuffleNet's 4-group 1x1 convs so
    crowded its links, 1.000x -> 1.240x its bound), so the bundle stayed
    flat and the reads unproven. Stacked, every PE of a row reads the
    row's box, at the same work, input and SRAM per PE for the same PE
    count (the rectangle G times taller, k up to K/G wide). Two groups
    keep the k-column layout, cut over the input's group_view
    (ConvKind.input_view): there a PE reads at least half of its row's
    box whatever k is (AlexNet's convs, proven so)."""
    G, C = max(1, int(dims.get("G", 1))), int(dims.get("C", 0))
    return G > 2 and C // G > 1 and C % G == 0 and not dims.get("L1") \
        and not dims.get("T") and not dims.get("pool")


def stack_boxes(shape: tuple[int, ...], G: int, c: int, s: int, lo: np.ndarray,
                hi: np.ndarray, ax: int) -> np.ndarray:
    """(G c s, 2, ndim): PE row py of a stacked conv (`stacked`; channels
    on axis 1) reads input-channel block b = j % c of group q = j // c
    (j = py % (G c)), rows [lo, hi) of its row group py // (G c) on axis
    `ax`, the other axes whole. Rows whose block or rows are empty read
    nothing (an all-zero box)."""
    cg = shape[1] // G
    py = np.arange(G * c * s)
    j, g = py % (G * c), py // (G * c)
    q, b = j // c, j % c
    step = -(-cg // c)
    out = np.zeros((G * c * s, 2, len(shape)), np.int64)
    out[:, 1] = shape
    out[:, 0, 1] = q * cg + np.minimum(cg, b * step)
    out[:, 1, 1] = q * cg + np.minimum(cg, (b + 1) * step)
    out[:, 0, ax], out[:, 1, ax] = lo[g], hi[g]
    out[(out[:, 1] <= out[:, 0]).any(axis=1)] = 0
    return out


def stack_owners(N: int, K: int, G: int, Ho: int, Wo: int, c: int, s: int) -> np.ndarray:
    """(G c s, 2, 4): the output a stacked conv's PE row owns: the last of
    group q's c reduction rows of row group g (py = g G c + q c + c - 1)
    owns q's K/G output channels (its PEs split them by columns) of the
    group's ceil(Ho/s) output rows; the other rows own nothing."""
    kg, hb = K // G, -(-Ho // max(s, 1))
    py = np.arange(G * c * s)
    j, g = py % (G * c), py // (G * c)
    q = j // c
    out = np.zeros((G * c * s, 2, 4), np.int64)
    out[:, 1, 0], out[:, 1, 3] = N, Wo
    out[:, 0, 1], out[:, 1, 1] = q * kg, (q + 1) * kg
    out[:, 0, 2], out[:, 1, 2] = np.minimum(g * hb, Ho), np.minimum((g + 1) * hb, Ho)
    out[(j % c != c - 1) | (out[:, 1] <= out[:, 0]).any(axis=1)] = 0
    return out


def band_block(dims: Dims, c: int) -> tuple[int, int]:
    """(cb, kb): the input and output channels of a banded conv's band:
    ceil(C/c) input channels and their K/C output channels each."""
    cb = -(-int(dims["C"]) // max(c, 1))
    return cb, cb * max(1, int(dims["K"]) // max(1, int(dims["C"])))


def band_rows(N: int, K: int, Ho: int, Wo: int, kb: int, c: int, s: int) -> np.ndarray:
    """(c s, 2, 4): the output a banded conv's PE row py owns (`banded`):
    output channels [j kb, (j + 1) kb) of band j = py % c, the ceil(Ho/s)
    output rows of group py // c, all samples and the whole width. Every
    row owns a disjoint part (no reduction rows between owners); rows past
    the last channel or output row own nothing."""
    py = np.arange(c * s)
    j, g = py % c, py // c
    hb = -(-Ho // max(s, 1))
    out = np.zeros((c * s, 2, 4), np.int64)
    out[:, 1, 0], out[:, 1, 3] = N, Wo
    out[:, 0, 1], out[:, 1, 1] = np.minimum(j * kb, K), np.minimum((j + 1) * kb, K)
    out[:, 0, 2], out[:, 1, 2] = np.minimum(g * hb, Ho), np.minimum((g + 1) * hb, Ho)
    out[(out[:, 1] <= out[:, 0]).any(axis=1)] = 0
    return out


class ConvKind(LibraryKind):
    """Convolution (+ fused bias, activation, residual add).

    Mapping: the rectangle is k wide and c*s high. Column px holds output
    channels block px (ceil(K/k) channels); row py holds input-channel block
    py % c of each group (ceil(C/G/c) channels) for output-row group py // c.
    Each PE keeps its weight shard [K/k, C/G/c, R, S] resident, a sliding
    window of (R-1)*dh + 1 + sh input rows of its input channels and one
    output row; partial sums are reduced along the c PEs of a column (one add
    per output element), and fused element-wise ops run on the result.
    The PE's `simd` lanes vectorise over an output row's (Wo x K/k) outputs.
    dims: N, C, H, W (input), K, R, S, G (groups), strides sh/sw, dilations
    dh/dw, ph/pw (padding rows/columns actually read), Ho, Wo, bias (0/1),
    F/A/P (fused op cycles per element, residual inputs, constant elements);
    T only for 3-D convolutions (see `_fold_depth`: N then counts samples x
    output depth planes, T the depth taps, weight shard [K/k, C/G/c, T, R, S]).

    PADDING blocks: c may exceed the channels per group (up to twice
    them), its blocks past the channels empty, their rows computing
    nothing but passing the partial sums on (the simulator pads the input
    with zero channels). Never cheaper (the same cycles on more PEs), so
    sizing never takes one, but a conv with few input channels (an
    image's three) has at most C Ho rows otherwise, fewer than the rows
    of the consumer that cuts its output: wsec.passes.place_rows raises
    it to a padded shape of the same width (wsec.ir.sizing.
    shapes_at_width), so that consumer's lanes land uniform (measured:
    VGG-19's first conv, 672 rows against its consumer's 896).

    A depthwise conv (C == G) is laid out in channel bands instead (`banded`):
    one PE wide, row py holds channel band py % c of output-row group py // c.
    Another grouped conv stacks its groups over rows (`stacked`): G c s
    rows, the columns split one group's K/G output channels.

    1-D convolutions (L1 = 1; H = Ho = 1, the sequence is W) have one row, so
    the s row groups split the output length instead: group i computes a
    contiguous stretch of ceil(Wo/s) outputs from the input stretch it reads
    (plus the kernel halo), in tiles of at most LENGTH_TILE_BYTES of window
    and output per PE, as a 2-D conv works through rows; a wav2vec2 front
    end over 8000 samples then needs a few KB per PE, not the whole signal.
    """

    name = "conv"
    knob_names = ("k", "c", "s")
    description = "convolution: k output-channel groups (x), c input-channel x s row groups (y)"
    ops = frozenset({"Conv"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        conv = body[0]
        wt = vtype(values, conv.inputs[1]).shape
        if len(wt) not in (3, 4, 5):
            raise UnsupportedShape(
                f"Conv with {len(wt) - 2} spatial axes (input "
                f"{vtype(values, conv.inputs[0])}, weight {list(wt)}): only 1-D, 2-D and 3-D "
                "convolutions map onto the conv kind")
        if len(wt) == 5:
            flat, x, y, extra = fold_depth(conv, vtype(values, conv.inputs[0]).shape,
                                            vtype(values, conv.outputs[0]).shape, wt[2])
            d = window_dims(flat, x, y, (wt[3], wt[4]), 2)
            d.update(extra)
        else:
            rs = (wt[2], wt[3]) if len(wt) == 4 else (1, wt[2])
            x = spatial(vtype(values, conv.inputs[0]))
            y = spatial(vtype(values, conv.outputs[0]))
            d = window_dims(conv, x, y, rs, len(wt) - 2)
            if len(wt) == 3:
                d["L1"] = 1
        bias = len(conv.inputs) > 2 and bool(conv.inputs[2])
        d.update({"K": wt[0], "G": int(conv.attrs.get("group", 1)), "bias": int(bias)})
        pool = body[-1] if body[-1].op in FUSED_POOLS and len(body) > 1 else None
        d.update(fused_extras(body[:-1] if pool is not None else body, values))
        if pool is not None:
            if len(wt) != 4:
                raise UnsupportedShape("a pooling fused into a conv needs a 2-D conv")
            y = spatial(vtype(values, pool.outputs[0]))
            pd = window_dims(pool, spatial(vtype(values, pool.inputs[0])), y,
                             tuple(pair(pool.attrs, "kernel_shape", 1, 2)), 2)  # type: ignore[arg-type]
            d.update({"pool": 1 if pool.op == "MaxPool" else 2, "pR": pd["R"], "pS": pd["S"],
                      "psh": pd["sh"], "psw": pd["sw"], "Hq": pd["Ho"], "Wq": pd["Wo"]})
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        cg = dims["C"] // dims["G"]
        rows = dims["Wo"] if dims.get("L1") else dims["Ho"]  # what the s groups split
        if banded(dims):  # one PE wide, channel bands over rows
            return {"k": candidates(1, target.width), "c": candidates(dims["C"], target.height),
                    "s": candidates(rows, target.height)}
        if stacked(dims):  # a group's output channels over the columns, groups over rows
            G = dims["G"]
            return {"k": candidates(dims["K"] // G, target.width),
                    "c": candidates(cg, max(1, target.height // G)),
                    "s": candidates(rows, max(1, target.height // G))}
        cs = candidates(cg, target.height)
        if not dims.get("L1") and not dims.get("T"):  # padding blocks (class docstring)
            more = candidates(2 * cg, target.height)
            cs = np.union1d(cs, more[more > cg])
        return {"k": candidates(dims["K"], target.width), "c": cs,
                "s": candidates(rows, target.height)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        if d.get("L1"):
            return self._cost_1d(d, kn, target)
        k, c, s = kn["k"], kn["c"], kn["s"]
        G, K, C = d["G"], d["K"], d["C"]
        cg, kg = C // G, K // G
        kb, cb = cdiv(K, k), cdiv(cg, c)
        cin = np.minimum(C, np.minimum(G, cdiv(kb + kg - 1, kg)) * cb)
        red = (c > 1).astype(np.int64)
        if banded(d):  # a band's cin channels, kg outputs each, one input channel per output
            cin = cdiv(C, c)
            kb, cb, red = cin * kg, np.ones_like(c), np.zeros_like(c)
        elif stacked(d):  # column px: block px of its row's group's kg outputs
            kb, cin = cdiv(kg, k), cb
        per = cdiv(d["Ho"], s)
        pooled = halo = 0
        keep = 1
        if d.get("pool"):
            # a fused pooling: the s groups split the conv's output rows as
            # without it; a group pools the windows that end in its rows,
            # taking the conv rows a window shares with the group before it
            # from that group (a halo of pR - psh rows)
            pooled = d["N"] * cdiv(d["Hq"], np.minimum(s, d["Hq"])) * d["Wq"] * kb
            halo = d["N"] * max(0, d["pR"] - d["psh"]) * d["Wo"] * kb
            keep = d["pR"]  # conv output rows a PE keeps for the pooling window
        rows = d["N"] * per
        wi = d["W"] + d["pw"]
        win = (d["R"] - 1) * d["dh"] + 1
        outs = rows * d["Wo"] * kb
        sent = pooled if d.get("pool") else outs
        t = d.get("T", 1)  # 3-D: input depth planes per output plane
        compute = rows * cdiv(d["Wo"] * kb, target.lanes) * (cb * d["R"] * d["S"] * t + d["F"]
                                                            + red)
        if d.get("pool"):
            compute = compute + cdiv(pooled, target.lanes) * d["pR"] * d["pS"]
        rows_in = d["N"] * np.minimum(d["H"] + d["ph"], per * d["sh"] + win - 1)
        epc = elems_per_cycle(target)
        recv = cdiv(rows_in * wi * cin * t + outs * (d["A"] + red) + halo, epc)
        send = cdiv(sent, epc)
        cycles = np.maximum(np.maximum(compute, recv), send) + rows * ROW_OVERHEAD + KERNEL_OVERHEAD
        b = itemsize(target)
        sram = (CODE_BYTES + kb * cb * d["R"] * d["S"] * t * b      # weight shard
                + (win + d["sh"]) * wi * cin * t * b               # input row window(s)
                + d["Wo"] * kb * b * (keep + d["A"])               # output (+ residual) rows
                + kb * b * d["bias"] + cdiv(d["P"] * kb, K) * b)   # bias, fused constants
        if d.get("pool"):
            sram = sram + d["Wq"] * kb * b                          # a pooled row
        return k, (G if stacked(d) else 1) * c * s, cycles, sram

    def _cost_1d(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        """A 1-D conv: row group py // c owns `chunk` consecutive outputs and
        reads their input stretch; it computes them `lt` at a time, keeping the
        tile's input window (its span plus the next tile's stride) and `lt`
        outputs per output channel of its block."""
        k, c, s = kn["k"], kn["c"], kn["s"]
        G, K, C = d["G"], d["K"], d["C"]
        cg, kg = C // G, K // G
        kb, cb = cdiv(K, k), cdiv(cg, c)
        cin = np.minimum(C, np.minimum(G, cdiv(kb + kg - 1, kg)) * cb)
        b = itemsize(target)
        chunk = cdiv(d["Wo"], s)
        per_out = (kb * (1 + d["A"]) + cin * d["sw"]) * b  # bytes one more output costs
        lt = np.maximum(1, np.minimum(chunk, LENGTH_TILE_BYTES // per_out))
        halo = (d["S"] - 1) * d["dw"] + 1
        tiles = d["N"] * cdiv(chunk, lt)
        red = (c > 1).astype(np.int64)
        outs = d["N"] * chunk * kb
        compute = tiles * cdiv(lt * kb, target.lanes) * (cb * d["S"] + d["F"] + red)
        reads = d["N"] * np.minimum(d["W"] + d["pw"], (chunk - 1) * d["sw"] + halo) * cin
        epc = elems_per_cycle(target)
        recv = cdiv(reads + outs * (d["A"] + red), epc)
        send = cdiv(outs, epc)
        cycles = np.maximum(np.maximum(compute, recv), send) + tiles * ROW_OVERHEAD \
            + KERNEL_OVERHEAD
        sram = (CODE_BYTES + kb * cb * d["S"] * b                  # weight shard
                + ((lt - 1) * d["sw"] + halo + lt * d["sw"]) * cin * b  # input window
                + lt * kb * b * (1 + d["A"])                        # output (+ residual) tile
                + kb * b * d["bias"] + cdiv(d["P"] * kb, K) * b)    # bias, fused constants
        return k, c * s, cycles, sram

    def reduction_chain(self, dims: Dims, knobs: Knobs) -> int:
        """The c input-channel blocks of a row group (of a stacked conv's
        group) are summed along y; a banded conv's PEs sum nothing."""
        if banded(dims):
            return 1  # each band's PE holds every input channel its outputs read
        return int(knobs["c"])  # the c input-channel blocks of a row group, summed along y

    def input_rows(self, dims: Dims, knobs: Knobs, group: int) -> tuple[int, int]:
        """Rows [start, stop) of the padded input (pad rows counted) that
        output-row group `group` (PE rows group*c .. group*c + c - 1) holds:
        the strided span of its ceil(Ho/s) output rows plus the window's
        halo of (R - 1) * dh + 1 - sh rows shared with the next group. A 1-D
        conv's groups split the sequence: its stretch of the padded input."""
        if dims.get("L1"):
            return window_rows(dims["Wo"], int(knobs["s"]), dims["sw"], dims["S"], dims["dw"],
                               group)
        return window_rows(dims["Ho"], int(knobs["s"]), dims["sh"], dims["R"], dims["dh"],
                           group)

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE row py reads input-channel block py % c of the input rows of
        row group py // c (`input_rows`; the pad above the input is not in
        the dims, so a group's box starts up to ph rows earlier). Rows no
        group reads (a stride longer than the window) go to the group
        before them, so the boxes cover the input. A 1-D conv's rows are
        its sequence (L1); a 3-D conv's PEs hold their channels x rows of
        every depth plane (T: N counts samples x output planes).
        A grouped conv (G > 1) reads channel block py % c of EVERY group,
        disjoint channel ranges whose bounding box in the value would span
        nearly all channels between them: its boxes are over the input's
        `group_view` (input_view), where that block is one exact box. A
        depthwise conv is banded (`banded`): row py reads channel band
        py % c, its one PE's read exactly. (In a k-column layout its row's
        box held all channels of its rows, each PE a k-th of them: measured,
        cutting ShuffleNet's depthwise convs so doubled its busiest RAMP.)
        A grouped conv stacked by groups (`stacked`) reads its group's
        block (stack_boxes). Other grouped convs without a view keep None:
        their executors check every PE's window against the flat lanes;
        held without lanes (`held_cut`), the rows hold their bounding boxes
        in the value's own shape."""
        view = self.input_view(dims, knobs, shape)
        if max(1, dims.get("G", 1)) > 1 and view is None and not banded(dims) \
                and not stacked(dims):
            return None
        return self._row_boxes(dims, knobs, shape, view is not None)

    def halo_axis(self, dims: Dims, knobs: Knobs, view: tuple[int, ...]) -> int | None:
        """The input rows a row group reads (the sequence of a 1-D conv, the
        rows of every depth plane of a 3-D one): axis 2 of (N, C, H, W) or
        (N, C, W), 3 of a 3-D input or of a grouped conv's (N, G, C/G, H, W)
        view. Neighbouring groups share (R - 1) * dilation + 1 - stride of
        them (wsec.ir.halo)."""
        if dims.get("L1"):
            return 2 if len(view) == 3 else None
        return {4: 2, 5: 3}.get(len(view))

    def input_view(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                   ) -> tuple[int, ...] | None:
        """A 2-D grouped conv with more than one channel per group, not
        stacked: its input as (N, G, C/G, H, W) (group_view); else None
        (1-D and 3-D grouped convs keep their bounding boxes' None: their
        executors' windows are mapped from 2-D rows, not given in the
        view). Those are 2 groups (a PE reads at least half of its row's
        box, AlexNet's convs) and a fused pooling's G > 2 (`stacked` keeps
        no pooling), whose PE columns may read as little as a G-th of the
        row's box, all of it on their RAMPs. Measured: before stacking,
        so cutting ShuffleNet's 4-group 1x1 convs crowded its links
        (1.000x -> 1.240x its bound); its last conv, with the global pool,
        cut so, keeps 1.249x and proves its 7,372 PEs (flat, they read
        what no lane brought); the router flattens a cut whose lanes
        overfill a link."""
        G, C = max(1, dims.get("G", 1)), dims.get("C", 0)
        if G < 2 or C // G < 2 or stacked(dims) or dims.get("L1") or dims.get("T") \
                or len(shape) != 4 or shape[1] != C:
            return None
        return group_view(tuple(shape), G)

    def held_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                 ) -> np.ndarray | None:
        """input_cut's boxes in the value's own shape, a grouped conv's too
        (their bounding boxes: rows holding them without lanes, a weight-
        streaming phase)."""
        return self._row_boxes(dims, knobs, shape, False)

    def _row_boxes(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...], view: bool
                   ) -> np.ndarray | None:
        """Per PE row its channel block x row group's input rows, in the
        value's shape or (`view`) its group_view."""
        c, s = int(knobs["c"]), int(knobs["s"])
        N, C, H, W = (dims.get(n, 0) for n in ("N", "C", "H", "W"))
        G = 1 if banded(dims) else max(1, dims.get("G", 1))  # a band: a block of all C
        if dims.get("L1"):
            if tuple(shape) != (N, C, W):
                return None
            ax, length, pad, top = 2, W, dims["pw"], dims.get("pl")
        elif dims.get("T"):
            if len(shape) != 5 or shape[1] != C or tuple(shape[3:]) != (H, W) \
                    or N % max(shape[0], 1):
                return None
            ax, length, pad, top = 3, H, dims["ph"], dims.get("pt")
        elif tuple(shape) == (N, C, H, W):
            ax, length, pad, top = 2, H, dims["ph"], dims.get("pt")
        else:
            return None
        rows = np.array([self.input_rows(dims, knobs, g) for g in range(s)], np.int64)
        got = covering_rows(rows, pad, length, top)
        if got is None:
            return None
        lo, hi = got
        if stacked(dims):
            return stack_boxes(tuple(int(n) for n in shape), int(G), c, s, lo, hi, ax)
        return channel_row_boxes(tuple(shape), C, G, c, s, lo, hi, ax, view)

    def output_rows(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                    ) -> np.ndarray | None:
        """Output element (n, k, h, w) ends on the reduction-end PE of its
        column's row group: PE row (h // hb) c + c - 1 (hb = ceil(Ho / s)),
        so that row owns its group's output rows, every channel (its PEs
        split them by columns); the other rows own nothing. 2-D convs; with
        a fused pooling (the body's last op) the element-wise tail before it
        runs on these conv rows too (sim_rows.fused_pool: a group pools from
        its own rows and the finished rows the group before sends it). With
        c > 1 the owners are every c-th row: routed, a cut lane and its
        spine deliver to every row they pass, so each owner's box would
        also go to its c - 1 reduction rows (wsec.ir.kernels.input_cut
        keeps such an operand flat)."""
        if dims.get("L1") or dims.get("T"):
            return None
        c, s = int(knobs["c"]), int(knobs["s"])
        N, K, Ho, Wo = (int(dims.get(n, 0)) for n in ("N", "K", "Ho", "Wo"))
        if min(N, K, Ho, Wo) <= 0:
            return None
        if banded(dims):
            return band_rows(N, K, Ho, Wo, band_block(dims, c)[1], c, s)
        if stacked(dims):
            return stack_owners(N, K, int(dims["G"]), Ho, Wo, c, s)
        hb = -(-Ho // s)
        g = np.arange(s)
        out = np.zeros((c * s, 2, 4), np.int64)
        own = g * c + c - 1
        lo, hi = np.minimum(g * hb, Ho), np.minimum((g + 1) * hb, Ho)
        live = hi > lo
        rows = own[live]
        out[rows, 1, 0], out[rows, 1, 1], out[rows, 1, 3] = N, K, Wo
        out[rows, 0, 2], out[rows, 1, 2] = lo[live], hi[live]
        return out

    def spread_operands(self, dims: Dims, knobs: Knobs, body: Sequence[Node],
                        outputs: Sequence[str], shape_of: Callable[[str], tuple[int, ...]]
                        ) -> list[str]:
        """The residual operands each PE row of a group adds as the partial
        sums pass it (skip_boxes), not on the owner row: those a chain of
        Adds after a 2-D conv adds into its output (`chain_operands`;
        `shape_of` gives a value's shape), of the output's shape, where
        there are at least as many channels as reduction rows (c <= K, so
        every row of a live group reads some). Why: the owner row's box is
        all K channels of its group's rows, too heavy for one lane each
        (ResNet-50's request needs about twice as many lanes as there are
        owner rows), so the residual stayed flat and its PEs read outside
        their lanes; spread over the c rows, the operand is an ordinary
        per-row cut whose lanes carry a c-th of an owner box each. Row j
        of a group adds channels [j K // c, (j + 1) K // c), each PE the
        part of them in its column's block, into the partial sums as they
        pass (the simulator: sim_sharded._conv2d); with c = 1 that is the
        owner row, as before. A conv stacked by groups (`stacked`) spreads
        each group's K/G channels over that group's c rows the same way
        (c <= K/G; sim_sharded._conv2d_stacked): its owner rows are one of
        every c and their boxes all of a group's channels, so the residual
        landed on them alone at pitch c ("owners") and, heavy, ShuffleNet's
        were flattened by the router."""
        if dims.get("L1") or dims.get("T") or not body or body[0].op != "Conv" or banded(dims):
            return []
        c = int(knobs.get("c", 0))
        grid = tuple(int(dims.get(n, 0)) for n in ("N", "K", "Ho", "Wo"))
        groups = int(dims["G"]) if stacked(dims) else 1  # a stacked group's rows: its K/G
        if min(grid) <= 0 or c < 1 or c > grid[1] // groups:
            return []
        return [v for v in chain_operands(body, outputs) if tuple(shape_of(v)) == grid]

    def body_cut(self, kernel: Kernel, value: str, ops: Operands) -> np.ndarray | None:
        """A residual operand spread over the reduction rows
        (`spread_operands`): each PE row's skip_boxes; others as input_cut
        and output_rows say (None)."""
        d, kn = kernel.dims, kernel.knobs
        if not kn or ops.const(value) is not None or value not in self.spread_operands(
                d, kn, kernel.body, kernel.outputs, ops.shape):
            return None
        return skip_boxes(*(int(d[n]) for n in ("N", "K", "Ho", "Wo")), int(kn["c"]),
                          int(kn["s"]), int(d["G"]) if stacked(d) else 1)

    def pool_rows(self, dims: Dims, knobs: Knobs, group: int) -> tuple[int, int]:
        """Conv output rows [start, stop) row group `group` holds for a fused
        pooling: its own rows and the pR - 1 before them, the most a window
        ending in its rows reaches back. (The cost model counts pR - psh
        halo rows, which covers windows that never straddle a group
        boundary; the simulator checks the windows against these rows.)"""
        per = -(-dims["Ho"] // int(knobs["s"]))
        first = group * per
        return max(0, first - (int(dims.get("pR", 1)) - 1)), min(dims["Ho"], first + per)

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        K, cg = dims["K"], dims["C"] // dims["G"]
        full = [slice(0, n) for n in weight_shape]
        if banded(dims):  # band py % c's output channels (their one input channel each)
            kb = band_block(dims, int(knobs["c"]))[1]
            j = py % int(knobs["c"])
            band = slice(min(K, j * kb), min(K, (j + 1) * kb))
            if len(weight_shape) >= 3 and weight_shape[0] == K:
                full[0] = band
            elif weight_shape and int(np.prod(weight_shape)) == K and K > 1:
                full[next(i for i, n in enumerate(weight_shape) if n == K)] = band
            return tuple(full)
        if stacked(dims):  # group q's output block px, input-channel block b of row j
            G, c = int(dims["G"]), int(knobs["c"])
            q, b = divmod(py % (G * c), c)
            kg = K // G
            sub = block(kg, int(knobs["k"]), px)
            out = slice(q * kg + sub.start, q * kg + sub.stop)
            if len(weight_shape) >= 3 and weight_shape[0] == K and weight_shape[1] == cg:
                full[0], full[1] = out, block(cg, c, b)
            elif weight_shape and int(np.prod(weight_shape)) == K:
                full[next(i for i, n in enumerate(weight_shape) if n == K)] = out
            return tuple(full)
        if len(weight_shape) >= 3 and weight_shape[0] == K and weight_shape[1] == cg:
            full[0] = block(K, knobs["k"], px)
            full[1] = block(cg, knobs["c"], py % knobs["c"])
        elif weight_shape and int(np.prod(weight_shape)) == K:
            ax = next(i for i, n in enumerate(weight_shape) if n == K)
            full[ax] = block(K, knobs["k"], px)
        return tuple(full)


def _deconv_rows(node: Node, spatial: Sequence[int], kernel: Sequence[int], axis: int
                 ) -> Dims:
    """The row axis (`axis` of the spatial ones) of a transposed conv: pt,
    the rows its full output is cropped by above (ONNX's pads, output_shape
    or auto_pad rules), and dh when dilated: what places an output-row
    group's input rows (DeconvKind.input_cut)."""
    from .opsem_more import _convt_pads  # the reference semantics' own rule

    nd = len(spatial)
    st = pair(node.attrs, "strides", 1, nd)
    dl = pair(node.attrs, "dilations", 1, nd)
    op = pair(node.attrs, "output_padding", 0, nd)
    full = [st[i] * (spatial[i] - 1) + op[i] + (kernel[i] - 1) * dl[i] + 1 for i in range(nd)]
    pb, _ = _convt_pads(node, tuple(spatial), full)
    d = {"pt": int(pb[axis])}
    if dl[axis] != 1:
        d["dh"] = int(dl[axis])
    return d


class DeconvKind(LibraryKind):
    """Transposed convolution (ConvTranspose, + fused bias, activation).

    Mapping as conv: the rectangle is k wide and c*s high; column px owns
    output-channel block px, row py input-channel block py % c for output-
    row group py // c. Each output element gathers ceil(R/sh) x ceil(S/sw)
    taps per input channel (the stride's zero rows/columns are skipped, not
    multiplied), so a PE does rows x Wo x K/k x C/c x taps MACs on its simd
    lanes; it keeps a window of ceil(R/sh) + 1 input rows. With G == 1 the
    weight [C, K, R, S] is sharded [C-block py % c, K-block px]; grouped
    transposed convs hold the weight whole on every PE (rare, small).
    A 3-D transposed conv runs as 2-D planes, as conv does (`fold_depth`):
    N counts samples x output depth planes, each of which gathers the
    ceil(T/sd) input planes its T depth taps reach (weight shard
    [C/c, K/k, T, R, S]).
    dims: N, C, H, W (input), K, R, S, G, sh, sw, Ho, Wo, bias, F/A/P; T, sd
    only for 3-D."""

    name = "deconv"
    knob_names = ("k", "c", "s")
    description = "transposed convolution: k output-channel groups (x), c x s groups (y)"
    ops = frozenset({"ConvTranspose"})

    def dims_from(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        ct = body[0]
        wt = vtype(values, ct.inputs[1]).shape
        if len(wt) not in (3, 4, 5):
            raise UnsupportedShape(f"ConvTranspose with {len(wt) - 2} spatial axes (weight "
                                   f"{list(wt)}; only 1-D, 2-D and 3-D map)")
        if len(wt) == 5:
            return self._dims_3d(body, values)
        g = int(ct.attrs.get("group", 1))
        n, c, h, w = spatial(vtype(values, ct.inputs[0]))
        _, k, ho, wo = spatial(vtype(values, ct.outputs[0]))
        st = pair(ct.attrs, "strides", 1, len(wt) - 2)
        r, s_ = (wt[2], wt[3]) if len(wt) == 4 else (1, wt[2])
        sh, sw = (st[0], st[1]) if len(wt) == 4 else (1, st[0])
        bias = len(ct.inputs) > 2 and bool(ct.inputs[2])
        d = {"N": n, "C": c, "H": h, "W": w, "K": k, "R": r, "S": s_, "G": g, "sh": sh,
             "sw": sw, "Ho": ho, "Wo": wo, "bias": int(bias)}
        if len(wt) == 4:
            d.update(_deconv_rows(ct, (h, w), (r, s_), 0))
        d.update(fused_extras(body, values))
        return d

    def _dims_3d(self, body: Sequence[Node], values: dict[str, Value]) -> Dims:
        ct = body[0]
        wt = vtype(values, ct.inputs[1]).shape
        n, c, _, h, w = vtype(values, ct.inputs[0]).shape
        _, k, do, ho, wo = vtype(values, ct.outputs[0]).shape
        st = pair(ct.attrs, "strides", 1, 3)
        bias = len(ct.inputs) > 2 and bool(ct.inputs[2])
        d = {"N": n * do, "C": c, "H": h, "W": w, "K": k, "R": wt[3], "S": wt[4],
             "G": int(ct.attrs.get("group", 1)), "sh": st[1], "sw": st[2], "Ho": ho, "Wo": wo,
             "bias": int(bias), "T": wt[2], "sd": st[0]}
        d.update(_deconv_rows(ct, vtype(values, ct.inputs[0]).shape[2:], tuple(wt[2:]), 1))
        d.update(fused_extras(body, values))
        return d

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        grouped = dims["G"] > 1
        return {"k": candidates(dims["K"], target.width),
                "c": candidates(1 if grouped else dims["C"], target.height),
                "s": candidates(dims["Ho"], target.height)}

    def _cost(self, d: Dims, kn: dict[str, np.ndarray], target: Target):
        k, c, s = kn["k"], kn["c"], kn["s"]
        G, K, C = d["G"], d["K"], d["C"]
        kb, cb = cdiv(K, k), cdiv(C // G, c)
        t, planes = d.get("T", 1), cdiv(d.get("T", 1), d.get("sd", 1))  # 3-D: depth taps
        taps = cdiv(d["R"], d["sh"]) * cdiv(d["S"], d["sw"]) * planes
        cin = np.minimum(C, cb * np.minimum(G, cdiv(kb * G, K) + 1))
        rows = d["N"] * cdiv(d["Ho"], s)
        red = (c > 1).astype(np.int64)
        outs = rows * d["Wo"] * kb
        compute = rows * cdiv(d["Wo"] * kb, target.lanes) * (cb * taps + d["F"] + red)
        win = cdiv(d["R"], d["sh"]) + 1
        rows_in = d["N"] * np.minimum(d["H"], cdiv(cdiv(d["Ho"], s), d["sh"]) + win)
        epc = elems_per_cycle(target)
        recv = cdiv(rows_in * d["W"] * cin * planes + outs * (d["A"] + red), epc)
        send = cdiv(outs, epc)
        cycles = np.maximum(np.maximum(compute, recv), send) + rows * ROW_OVERHEAD + KERNEL_OVERHEAD
        b = itemsize(target)
        wel = np.where(G > 1, C * (K // G), kb * cb) * d["R"] * d["S"] * t
        sram = (CODE_BYTES + wel * b + win * d["W"] * cin * planes * b
                + d["Wo"] * kb * b * (1 + d["A"])
                + kb * b * d["bias"] + cdiv(d["P"] * kb, K) * b)
        return k, c * s, cycles, sram

    def input_rows(self, dims: Dims, knobs: Knobs, group: int) -> tuple[int, int]:
        """Rows [start, stop) output-row group `group` holds of the input
        dilated by the stride (sh - 1 zero rows between input rows, the
        kernel's reach padded above): its rows' span plus the window halo
        of (R - 1) * dh rows. Only every sh-th of them is an input row."""
        return window_rows(dims["Ho"], int(knobs["s"]), 1, dims["R"], dims.get("dh", 1), group)

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]
                  ) -> np.ndarray | None:
        """PE row py reads input-channel block py % c (grouped: that block
        of every group, as conv) of the input rows among the dilated rows
        its row group py // c holds (`input_rows`): dilated row q is input
        row (q - top) / sh, top = (R - 1) dh - pt above the dilated input
        (pt: the crop above, in the dims). Rows between two groups' windows
        go to the group before, so the boxes cover the input. A 1-D one
        runs on rows of one (row group 0 reads the whole sequence); a 3-D
        one holds its channels x rows of every input plane."""
        c, s = int(knobs["c"]), int(knobs["s"])
        N, C, H, W = (dims.get(n, 0) for n in ("N", "C", "H", "W"))
        G, sh = max(1, dims["G"]), dims["sh"]
        if "pt" in dims and dims.get("T"):
            if len(shape) != 5 or shape[1] != C or tuple(shape[3:]) != (H, W) \
                    or N % max(shape[0], 1):
                return None
            ax = 3
        elif "pt" in dims and tuple(shape) == (N, C, H, W):
            ax = 2
        elif "pt" not in dims and H == 1 and tuple(shape) == (N, C, W):
            ax = None
        else:
            return None
        top = (dims["R"] - 1) * dims.get("dh", 1) - dims.get("pt", 0)
        held = np.array([self.input_rows(dims, knobs, g) for g in range(s)], np.int64)
        first = np.clip(-(-(held[:, 0] - top) // sh), 0, H)
        stop = np.clip(-(-(held[:, 1] - top) // sh), 0, H)
        rows = np.stack([first, np.where(held[:, 1] > held[:, 0], np.maximum(first, stop),
                                         first)], axis=1)
        rows[rows[:, 1] <= rows[:, 0]] = 0
        got = covering_rows(rows, 0, H)
        if got is None:
            return None
        lo, hi = got
        return channel_row_boxes(tuple(shape), C, G, c, s, lo, hi, ax)

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        K, C = dims["K"], dims["C"]
        full = [slice(0, n) for n in weight_shape]
        if dims["G"] > 1:
            return tuple(full)
        if len(weight_shape) >= 3 and weight_shape[0] == C and weight_shape[1] == K:
            full[0] = block(C, knobs["c"], py % knobs["c"])
            full[1] = block(K, knobs["k"], px)
        elif weight_shape and int(np.prod(weight_shape)) == K and K > 1:
            ax = next(i for i, n in enumerate(weight_shape) if n == K)
            full[ax] = block(K, knobs["k"], px)
        return tuple(full)


def channel_shard(C: int, parts: int, weight_shape: tuple[int, ...], px: int) -> tuple[slice, ...]:
    """Per-channel constants (numel == C) split like the channels; others whole."""
    full = [slice(0, n) for n in weight_shape]
    if weight_shape and int(np.prod(weight_shape)) == C and C > 1:
        ax = next(i for i, n in enumerate(weight_shape) if n == C)
        full[ax] = block(C, parts, px)
    return tuple(full)
