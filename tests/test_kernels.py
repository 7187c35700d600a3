"""The wse2/wse3 kernel library: cost models, search spaces, weight shards."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from wsec.ir.graph import Kernel
from wsec.ir.kernels import KINDS, kind_for_op
from wsec.ir.library_common import LibraryKind, candidates
from wsec.ir.library_conv import banded, stacked
from wsec.ir.target import get_target

WSE2 = get_target("wse2")
WSE3 = get_target("wse3")

CONV = dict(N=1, C=64, H=56, W=56, K=128, R=3, S=3, sh=1, sw=1, dh=1, dw=1, ph=2, pw=2,
            Ho=56, Wo=56, G=1, bias=1, F=1, A=0, P=0)
CONV_BIG = dict(CONV, C=512, K=2048, R=1, S=1, H=7, W=7, Ho=7, Wo=7, ph=0, pw=0)
CONV_FIRST = dict(CONV, C=3, K=64, H=224, W=224, R=7, S=7, sh=2, sw=2, ph=5, pw=5, Ho=112,
                  Wo=112)
CONV_DW = dict(CONV, C=96, K=96, G=96, A=1)
CONV_GROUPED = dict(CONV, C=96, K=256, G=2, R=5, S=5, H=27, W=27, Ho=27, Wo=27, ph=4, pw=4)
MATMUL = dict(M=1, Kd=2048, N=1000, Bt=1, tB=1, bias=1000, Bact=0, F=0, A=0, P=0)
MATMUL_SEQ = dict(M=128, Kd=768, N=3072, Bt=1, tB=0, bias=0, Bact=0, F=12, A=1, P=0)
POOL = dict(N=1, C=64, H=112, W=112, R=3, S=3, sh=2, sw=2, dh=1, dw=1, ph=1, pw=1, Ho=56, Wo=56,
            glob=0, F=0, A=0, P=0)
GPOOL = dict(POOL, C=2048, H=7, W=7, R=7, S=7, sh=1, sw=1, ph=0, pw=0, Ho=1, Wo=1, glob=1)
NORM = dict(N=1, C=96, H=54, W=54, O=13, L=5, Pc=0, Pr=0, F=0, A=0, P=0)
BN = dict(N=1, C=256, H=28, W=28, O=2, L=1, Pc=4, Pr=0, F=3, A=0, P=0)
ELEM = dict(E=802816, I=2, O=2, P=0, Q=1)
MOVE = dict(E=100352, I=1, P=4)
SOFTMAX = dict(E=1000, rows=1, F=0, A=0, P=0)

# new kinds and extensions: reductions, embeddings, transposed / 3-D convs, attention
REDUCE = dict(E=4096 * 768, O=4096, R=768, scan=0, C=1, F=1, A=0, P=1)
ARGMAX = dict(E=50257 * 8, O=8, R=50257, scan=0, C=2, F=0, A=0, P=0)
CUMSUM = dict(E=2048, O=2048, R=2048, scan=1, C=1, F=0, A=0, P=0)
EMBED = dict(T=50000 * 6144, V=50000, Dq=6144, ax=0, nd=2, L=2048, O=2048 * 6144, Cst=1)
GATHER_ACT = dict(T=197 * 768, V=197, Dq=768, ax=1, nd=3, L=1, O=768, Cst=0)
DECONV = dict(N=1, C=64, H=16, W=16, K=32, R=4, S=4, G=1, sh=2, sw=2, Ho=32, Wo=32, bias=1,
              F=0, A=0, P=0)
CONV3D = dict(CONV, N=8, C=16, K=32, H=28, W=28, Ho=28, Wo=28, T=3)
POOL3D = dict(POOL, N=8, T=3)
INSTNORM = dict(N=1, C=64, H=32, W=32, O=6, L=1, Pc=2, Pr=0, F=0, A=0, P=0)
RESIZE_NN = dict(N=1, C=256, H=40, W=40, Ho=80, Wo=80, th=1, tw=1, Q=4, F=1, A=1, P=0)
RESIZE_LIN = dict(RESIZE_NN, th=2, tw=2, F=0, A=0)
RESIZE_CUBIC_DOWN = dict(RESIZE_NN, H=161, W=161, Ho=80, Wo=80, th=4, tw=4, F=0, A=0)
ATTN_QK = dict(M=12 * 512, Kd=64, N=512, Bt=12, tB=0, bias=0, Bact=1, Bwhole=0, F=1, A=0, P=1)

CASES = [("conv", CONV), ("conv", CONV_BIG), ("conv", CONV_FIRST), ("conv", CONV_DW),
         ("conv", CONV_GROUPED), ("matmul", MATMUL), ("matmul", MATMUL_SEQ), ("pool", POOL),
         ("pool", GPOOL), ("norm", NORM), ("norm", BN), ("elementwise", ELEM),
         ("datamove", MOVE), ("softmax", SOFTMAX), ("reduce", REDUCE), ("reduce", ARGMAX),
         ("reduce", CUMSUM), ("gather", EMBED), ("gather", GATHER_ACT), ("deconv", DECONV),
         ("conv", CONV3D), ("pool", POOL3D), ("norm", INSTNORM), ("matmul", ATTN_QK),
         ("resize", RESIZE_NN), ("resize", RESIZE_LIN), ("resize", RESIZE_CUBIC_DOWN)]
IDS = [f"{k}-{i}" for i, (k, _) in enumerate(CASES)]


def _mesh(kind, dims, target):
    grid = kind.knob_grid(dims, target)
    names = list(kind.knob_names)
    mesh = np.meshgrid(*[grid[n] for n in names], indexing="ij")
    return names, mesh, kind.evaluate(dims, dict(zip(names, mesh, strict=True)), target)


def test_library_registered_with_docstrings() -> None:
    for name in ("conv", "matmul", "elementwise", "pool", "norm", "softmax", "datamove",
                 "reduce", "gather", "deconv", "resize"):
        kind = KINDS[name]
        assert isinstance(kind, LibraryKind)
        assert kind.__doc__ and len(kind.__doc__) > 80, f"{name} needs a docstring on its mapping"
    assert kind_for_op("Conv").name == "conv"
    assert kind_for_op("Gemm").name == "matmul"
    assert kind_for_op("Relu").name == "elementwise"
    assert kind_for_op("Flatten").name == "datamove"
    assert kind_for_op("Cast").name == "datamove"
    assert kind_for_op("GlobalAveragePool").name == "pool"
    assert kind_for_op("LRN").name == "norm"
    assert kind_for_op("NonMaxSuppression") is None
    assert kind_for_op("ReduceMean").name == "reduce"
    assert kind_for_op("ArgMax").name == "reduce"
    assert kind_for_op("Gather").name == "gather"
    assert kind_for_op("ConvTranspose").name == "deconv"
    assert kind_for_op("Resize").name == "resize"
    assert kind_for_op("InstanceNormalization").name == "norm"
    assert kind_for_op("Einsum").name == "matmul"
    for op in ("Erf", "Where", "Xor", "Sin", "Mod", "IsNaN", "Trilu"):
        assert kind_for_op(op).name == "elementwise", op
    for op in ("Shape", "Size", "ConstantOfShape", "Range"):  # folded by canonicalize
        assert kind_for_op(op) is None


@pytest.mark.parametrize("target", [WSE2, WSE3], ids=["wse2", "wse3"])
@pytest.mark.parametrize(("kind", "dims"), CASES, ids=IDS)
def test_choices_are_a_legal_pareto_frontier(kind: str, dims: dict, target) -> None:
    k = KINDS[kind]
    ch = k.choices(dims, target)
    assert ch, f"{kind} {dims} has no legal choice on {target.name}"
    for a, b in itertools.pairwise(ch):
        assert a.area < b.area and a.cycles > b.cycles
    for c in ch:
        assert c.sram <= target.sram_bytes
        assert (c.w <= target.width and c.h <= target.height) or (
            c.h <= target.width and c.w <= target.height)
        kn = c.knob_dict()
        # the scalar contract agrees with the vectorised model
        assert k.shape(dims, kn, target) == (c.w, c.h)
        assert k.cycles(dims, kn, target) == c.cycles
        assert k.sram(dims, kn, target) == c.sram
    # more PEs are worth it: the fastest choice beats the smallest one
    if len(ch) > 1:
        assert ch[-1].cycles < ch[0].cycles


@pytest.mark.parametrize(("kind", "dims"), [c for c in CASES if c[0] != "softmax"],
                         ids=[i for c, i in zip(CASES, IDS, strict=True) if c[0] != "softmax"])
def test_more_pes_never_slower(kind: str, dims: dict) -> None:
    """Raising any one knob (more PEs) never raises the cycles."""
    k = KINDS[kind]
    names, mesh, (w, h, cyc, _) = _mesh(k, dims, WSE2)
    for ax, name in enumerate(names):
        d = np.diff(cyc, axis=ax)
        assert (d <= 0).all(), f"{kind}: raising {name} raised the cycles"
        assert (np.diff(w * h, axis=ax) >= 0).all(), f"{kind}: raising {name} shrank the area"


def test_wider_simd_is_faster_when_compute_bound() -> None:
    kn = {"k": 8, "c": 4, "s": 4}
    assert KINDS["conv"].cycles(CONV, kn, WSE3) < KINDS["conv"].cycles(CONV, kn, WSE2)
    kn2 = {"kx": 4, "ky": 8}
    assert KINDS["matmul"].cycles(MATMUL_SEQ, kn2, WSE3) < KINDS["matmul"].cycles(
        MATMUL_SEQ, kn2, WSE2)


def test_conv_cycles_follow_the_macs() -> None:
    """Compute-bound conv: cycles ~ MACs per PE / simd (within overheads)."""
    k = KINDS["conv"]
    kn = {"k": 16, "c": 8, "s": 7}
    macs = -(-56 // 7) * 56 * -(-128 // 16) * -(-64 // 8) * 9
    cyc = k.cycles(CONV, kn, WSE2)
    assert macs / WSE2.simd <= cyc <= 1.3 * macs / WSE2.simd + 2000


def test_knob_grids_capped_and_useful() -> None:
    g = KINDS["conv"].knob_grid(CONV_BIG, WSE2)
    # c past the 512 channels: padding blocks (ConvKind), at most twice them
    assert g["k"].max() <= min(2048, WSE2.width) and g["c"].max() <= min(1024, WSE2.height)
    assert (g["c"][g["c"] > 512] <= 1024).all() and 512 in g["c"]
    assert g["s"].max() <= 7 and 7 in g["s"] and 1 in g["k"]
    assert set(candidates(24, 1000)) >= {1, 2, 3, 4, 6, 8, 12, 24}
    assert candidates(10**6, 10**6, limit=20).size <= 20
    dw = KINDS["conv"].knob_grid(CONV_DW, WSE2)
    # depthwise: one PE wide, its rows split the channels into c bands (library_conv.banded)
    assert dw["k"].tolist() == [1] and 96 in dw["c"] and 1 in dw["c"]


def test_choices_fast_for_resnet50_convs() -> None:
    k = KINDS["conv"]
    for dims in (CONV, CONV_BIG, CONV_FIRST, dict(CONV, C=256, K=512, H=28, W=28, Ho=28, Wo=28)):
        assert k.choices(dims, WSE2)


def _coverage(kind, dims, knobs, shape, nx, ny) -> np.ndarray:
    count = np.zeros(shape, dtype=np.int64)
    for px in range(nx):
        for py in range(ny):
            count[kind.weight_shard(dims, knobs, 0, shape, px, py)] += 1
    return count


@pytest.mark.parametrize(("dims", "k", "c"), [(CONV, 8, 4), (CONV, 3, 5), (CONV_GROUPED, 7, 3),
                                              (CONV_DW, 1, 5), (CONV_BIG, 64, 48)])
def test_conv_shards_tile_weight_once(dims: dict, k: int, c: int) -> None:
    kind = KINDS["conv"]
    shape = (dims["K"], dims["C"] // dims["G"], dims["R"], dims["S"])
    knobs = {"k": k, "c": c, "s": 1}
    rows = dims["G"] * c if stacked(dims) else c  # a stacked conv's groups over rows
    assert (_coverage(kind, dims, knobs, shape, k, rows) == 1).all()
    # bias: one block per column (a depthwise conv's: per channel band, its rows;
    # a stacked conv's: per column of each group)
    bias = np.zeros(dims["K"], dtype=np.int64)
    pes = [(0, py) for py in range(c)] if banded(dims) else \
        [(px, q * c) for q in range(dims["G"]) for px in range(k)] if stacked(dims) else \
        [(px, 0) for px in range(k)]
    for px, py in pes:
        bias[kind.weight_shard(dims, knobs, 1, (dims["K"],), px, py)] += 1
    assert (bias == 1).all()


def test_conv_row_groups_replicate_the_shard() -> None:
    kind, knobs = KINDS["conv"], {"k": 4, "c": 2, "s": 3}
    shape = (128, 64, 3, 3)
    for py in range(6):
        assert kind.weight_shard(CONV, knobs, 0, shape, 1, py) == kind.weight_shard(
            CONV, knobs, 0, shape, 1, py % 2)
    assert (_coverage(kind, CONV, knobs, shape, 4, 6) == 3).all()


@pytest.mark.parametrize(("tb", "kx", "ky"), [(1, 8, 16), (0, 7, 3), (0, 1, 1)])
def test_matmul_shards_tile_weight_once(tb: int, kx: int, ky: int) -> None:
    kind = KINDS["matmul"]
    dims = dict(MATMUL, Kd=96, N=40, tB=tb)
    shape = (40, 96) if tb else (96, 40)
    knobs = {"kx": kx, "ky": ky}
    assert (_coverage(kind, dims, knobs, shape, kx, ky) == 1).all()
    # the held block matches the PE's role: columns px, reduction rows py
    sl = kind.weight_shard(dims, knobs, 0, shape, kx - 1, 0)
    cols = sl[0] if tb else sl[1]
    assert cols.stop == 40


def test_sram_drives_the_split() -> None:
    """A weight too big for one PE forces a split; the chosen shard fits."""
    kind = KINDS["matmul"]
    big = dict(MATMUL, Kd=4096, N=4096, tB=0, bias=0)
    assert kind.sram(big, {"kx": 1, "ky": 1}, WSE2) > WSE2.sram_bytes
    smallest = kind.choices(big, WSE2)[0]
    kn = smallest.knob_dict()
    assert -(-4096 // kn["kx"]) * -(-4096 // kn["ky"]) * 2 <= WSE2.sram_bytes


def test_embedding_table_is_split_not_copied() -> None:
    """A 50k x 6144 table (600 MiB in f16) is cut into row x column blocks
    that fit a PE; the blocks tile the table exactly once."""
    kind = KINDS["gather"]
    assert kind.sram(EMBED, {"q": 1, "p": 1}, WSE2) > 50000 * 6144
    best = kind.choices(EMBED, WSE2)[0]
    kn = best.knob_dict()
    assert best.sram <= WSE2.sram_bytes and kn["p"] * kn["q"] >= 50000 * 6144 * 2 // 48000
    small = dict(EMBED, T=50 * 12, V=50, Dq=12)
    knobs = {"q": 5, "p": 7}
    assert (_coverage(kind, small, knobs, (50, 12), 5, 7) == 1).all()
    # indices (the second constant) and activation tables stay whole
    assert kind.weight_shard(small, knobs, 1, (4,), 2, 3) == (slice(0, 4),)
    act = dict(small, Cst=0)
    assert kind.weight_shard(act, knobs, 0, (50, 12), 2, 3) == (slice(0, 50), slice(0, 12))


def test_gather_columns_buy_speed_rows_buy_memory() -> None:
    kind = KINDS["gather"]
    base = kind.cycles(EMBED, {"q": 64, "p": 64}, WSE2)
    assert kind.cycles(EMBED, {"q": 128, "p": 64}, WSE2) < base
    assert kind.cycles(EMBED, {"q": 64, "p": 128}, WSE2) == base
    assert kind.sram(EMBED, {"q": 64, "p": 128}, WSE2) < kind.sram(EMBED, {"q": 64, "p": 64},
                                                                    WSE2)


def test_reduce_splits_long_rows_over_segments() -> None:
    """ArgMax over a 50k vocabulary: 8 outputs, so PEs beyond 8 split each row."""
    kind = KINDS["reduce"]
    c8, c512 = kind.cycles(ARGMAX, {"p": 8}, WSE2), kind.cycles(ARGMAX, {"p": 512}, WSE2)
    assert c512 * 20 < c8
    elems = -(-50257 // 64)
    assert c512 >= elems * 2 / WSE2.simd


@pytest.mark.parametrize(("k", "c"), [(4, 8), (3, 5), (1, 1)])
def test_deconv_shards_tile_weight_once(k: int, c: int) -> None:
    kind = KINDS["deconv"]
    shape = (64, 32, 4, 4)  # ConvTranspose weights are [C, K/G, R, S]
    knobs = {"k": k, "c": c, "s": 2}
    assert (_coverage(kind, DECONV, knobs, shape, k, c * 2) == 2).all()
    grouped = dict(DECONV, G=2)
    assert kind.weight_shard(grouped, knobs, 0, (64, 16, 4, 4), 1, 1) == tuple(
        slice(0, n) for n in (64, 16, 4, 4))


def test_3d_conv_pays_for_its_depth_taps() -> None:
    kind, kn = KINDS["conv"], {"k": 4, "c": 4, "s": 4}
    flat = {k: v for k, v in CONV3D.items() if k != "T"}
    assert kind.cycles(CONV3D, kn, WSE2) > 2 * kind.cycles(flat, kn, WSE2)
    assert kind.sram(CONV3D, kn, WSE2) > kind.sram(flat, kn, WSE2)


def test_elementwise_tiles_a_large_constant_instead_of_copying_it() -> None:
    """An attention mask as large as the output is split over the PEs (each
    element held by exactly one PE), so its SRAM per PE shrinks with p."""
    from wsec.ir.graph import Node, Value
    from wsec.ir.types import Splat, TensorType

    t = TensorType("f32", (1, 1, 64, 64))
    values = {"x": Value("x", t), "m": Value("m", t, Splat(t, -1.0)), "y": Value("y", t)}
    body = [Node("add", "Add", ["x", "m"], ["y"])]
    kind = KINDS["elementwise"]
    dims = kind.dims_from(body, values)
    assert dims["Pf"] == 1 and dims["P"] == 0
    small = kind.sram(dims, {"p": 4}, WSE2)
    big = kind.sram(dims, {"p": 256}, WSE2)
    assert big < small
    p = 100
    w, h = kind.shape(dims, {"p": p}, WSE2)
    owner = np.zeros(t.shape, dtype=np.int64)
    for py in range(h):
        for px in range(w):
            owner[kind.weight_shard(dims, {"p": p}, 1, t.shape, px, py)] += 1
    assert (owner == 1).all()


def test_resize_pays_for_its_taps_and_replicates_constants() -> None:
    """Nearest is a copy (fabric-bound), linear blends 2 + 2 taps, cubic 4 + 4;
    the scales/sizes constants are never split across PEs."""
    kn = {"c": 1, "s": 1}
    k = KINDS["resize"]
    nn, lin = dict(RESIZE_NN, F=0, A=0), RESIZE_LIN
    cubic = dict(RESIZE_LIN, th=4, tw=4)
    cyc = [k.cycles(d, kn, WSE2) for d in (nn, lin, cubic)]
    assert cyc[0] < cyc[1] < cyc[2]
    assert k.sram(cubic, kn, WSE2) > k.sram(nn, kn, WSE2)
    assert k.weight_shard(nn, {"c": 8, "s": 2}, 0, (4,), 3, 1) == (slice(0, 4),)


def test_lane_cycles_count_whole_rows_per_bundle() -> None:
    """n bundles sharing a side take whole rows each: the ports' cycles use
    R - n + 1 rows, so their roundings up always fit the side."""
    from wsec.ir.library_common import lane_cycles

    t = get_target("wse2")
    one = int(lane_cycles({"Ie": 6000, "In": 1}, np.array(6), t))
    four = int(lane_cycles({"Ie": 6000, "In": 4}, np.array(6), t))
    assert four == -(-one * 6 // 3)
    out = int(lane_cycles({"Oe": 6000, "On": 2}, np.array(6), t))
    assert out == -(-one * 6 // 5)


def test_datamove_stands_in_columns_so_its_lanes_cost_few_pes() -> None:
    """A concatenation's time is its lanes, one per PE row: its PEs stand in
    c columns of h rows (h at most MAX_COLUMN), so the rows its lanes need
    at a time t cost a column of PEs, not a square of that height; the
    lanes are sized to run at most 1 / LANE_HEADROOM loaded."""
    from wsec.ir.library_common import MAX_COLUMN, lane_cycles
    from wsec.ir.library_rowwise import LANE_HEADROOM, DatamoveKind
    from wsec.ir.sizing import min_area_at

    k = KINDS["datamove"]
    assert k.shape(MOVE, {"c": 1, "h": 300}, WSE2) == (1, 300)
    assert DatamoveKind.pes({"c": 3, "h": 16}) == 48
    assert int(k.knob_grid(MOVE, WSE2)["h"].max()) == MAX_COLUMN
    # DenseNet-121's largest concatenation: 702,464 elements in, two sinks out
    cat = dict(E=702464, I=2, P=0, Ie=702464, Oe=2 * 702464, In=2, On=2)
    t = 7232
    fast = [c for c in k.choices(cat, WSE2) if c.cycles <= t]
    best = min(fast, key=lambda c: c.area)
    assert best.area == min_area_at(k.choices(cat, WSE2), t)
    full = next(h for h in range(1, 994) if int(lane_cycles(cat, np.array(h), WSE2)) <= t)
    assert best.w == 1 and LANE_HEADROOM * (full - 2) <= best.h <= LANE_HEADROOM * full + 8
    assert LANE_HEADROOM * int(lane_cycles(cat, np.array(best.h), WSE2)) <= t
    half = {"c": 1, "h": full}  # lanes sized at full load: too slow with the headroom
    assert k.cycles(cat, best.knob_dict(), WSE2) <= t < k.cycles(cat, half, WSE2)


def test_datamove_offers_columns_to_wide_and_low_at_one_pe_count() -> None:
    """When SRAM, not lanes, sets a data movement's PEs, it has shapes from
    one column to wide and low at about that count, for the placer to pack."""
    from wsec.ir.sizing import shape_options

    split = dict(E=4915200, I=1, P=0, Ie=4915200, Oe=4915200, In=1, On=3)
    kern = Kernel("k", "kernel", [], [], kind="datamove", dims=split)
    shapes = [(c.w, c.h) for c in shape_options(kern, WSE2, 2_000_000)]
    assert shapes[0][0] == 1 and len(shapes) >= 5
    areas = [w * h for w, h in shapes]
    assert max(areas) <= 1.25 * min(areas)  # about one PE count, every aspect
    assert [h for _, h in shapes] == sorted((h for _, h in shapes), reverse=True)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "asymmetric",
                                 "pytorch_half_pixel", "half_pixel_symmetric"])
@pytest.mark.parametrize("antialias", [0, 1])
def test_resize_row_windows_cover_the_taps(mode: str, ctm: str, antialias: int) -> None:
    """Every input row an output-row group's taps read (with non-zero
    weight) lies in the window ResizeKind.input_rows gives that group, for
    up- and down-sampling, odd scales and every group count."""
    from wsec.ir.graph import Node
    from wsec.ir.library_pool import _RESIZE_TAPS, _antialias_taps
    from wsec.ir.opsem_more import resize_taps

    kind = KINDS["resize"]
    for H, Ho in ((12, 24), (12, 6), (7, 17), (17, 7), (5, 5), (9, 4), (3, 13)):
        node = Node("rz", "Resize", ["x"], ["y"], {"mode": mode, "antialias": antialias,
                                                  "coordinate_transformation_mode": ctm})
        idx, w, _ = resize_taps(node, H, Ho, Ho / H, (0.0, 1.0))
        used = np.ones(idx.shape, bool) if mode == "nearest" else w != 0
        th = _RESIZE_TAPS[mode]  # as ResizeKind.dims_from counts them
        if antialias and mode != "nearest":
            th = _antialias_taps(th, H, Ho)
        dims = {"H": H, "Ho": Ho, "th": th}
        for s in range(1, Ho + 1):
            hb = -(-Ho // s)
            win = np.array([kind.input_rows(dims, {"s": s}, g) for g in range(s)])
            g = np.arange(Ho) // hb
            inside = (idx >= win[g, 0:1]) & (idx < win[g, 1:2])
            assert (inside | ~used).all(), (H, Ho, s)
            assert (win[:, 1] - win[:, 0]).max() <= H
