"""Binary format v1: emit -> load round trip, determinism, weight sharding,
atomic writes and `inspect` text, on a small hand-built compiled Module."""

from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest
from wsec.backends.emit import (
    EmitError,
    build_program,
    emit_bytes,
    shard_tiling,
    write_binary,
    write_program,
)
from wsec.backends.format import (
    BLOB_SPLAT,
    FORMAT_VERSION,
    SECTION_NAMES,
    Program,
    mask_ports,
    pe_of,
)
from wsec.backends.inspect import inspect_text
from wsec.backends.lanes import to_bundle
from wsec.backends.loader import load_binary
from wsec.ir.graph import HOST, Bundle, Edge, Kernel, Module, Node, Rect, SramRegion
from wsec.ir.kernel_kind import KernelKind
from wsec.ir.kernels import KINDS, register
from wsec.ir.types import Dense, External, Splat, TensorType


def _block(n: int, parts: int, i: int) -> slice:
    step = -(-n // parts)
    return slice(min(n, i * step), min(n, (i + 1) * step))


class GridMM(KernelKind):
    """Test kind: weight dim 1 split over px (knob kx), dim 0 over py (ky);
    rank-1 weights split over px."""

    name = "t_gridmm"
    knob_names = ("kx", "ky")

    def weight_shard(self, dims, knobs, weight_index, weight_shape, px, py, rect=None):  # type: ignore[no-untyped-def]
        if len(weight_shape) == 1:
            return (_block(weight_shape[0], knobs["kx"], px),)
        return (_block(weight_shape[0], knobs["ky"], py), _block(weight_shape[1], knobs["kx"], px))


class FlatMM(KernelKind):
    """Test kind whose layout is not separable: rows split by py * w + px."""

    name = "t_flatmm"
    knob_names = ("w", "n")

    def weight_shard(self, dims, knobs, weight_index, weight_shape, px, py, rect=None):  # type: ignore[no-untyped-def]
        return (_block(weight_shape[0], knobs["n"], py * knobs["w"] + px),)


for _kind in (GridMM(), FlatMM()):
    if _kind.name not in KINDS:
        register(_kind)

RNG = np.random.default_rng(7)
W1 = RNG.standard_normal((16, 32)).astype(np.float32)
W2 = RNG.standard_normal((30, 8)).astype(np.float32)


def build_module() -> Module:
    """A fully compiled 3-kernel module on an 8x8 wse2 grid."""
    m = Module("tiny", attrs={"target": "wse2", "grid": [8, 8], "model_hash": "sha256:abc",
                              "opset": 17})
    m.properties = {"canonical", "kernels", "sized", "placed", "routed", "allocated"}
    f = TensorType
    m.add_value("x", f("f32", (1, 16)))
    m.add_value("w1", f("f32", (16, 32)), Dense(f("f32", (16, 32)), W1))
    m.add_value("b1", f("f32", (32,)), Splat(f("f32", (32,)), 0.5))
    m.add_value("w2", f("f32", (30, 8)), Dense(f("f32", (30, 8)), W2))
    m.add_value("w3", f("f32", (8, 8)), Splat(f("f32", (8, 8)), 0.01))
    for n, s in (("m1", (1, 32)), ("h", (1, 32)), ("g", (1, 8)), ("y", (1, 8))):
        m.add_value(n, f("f32", s))
    m.inputs, m.outputs = ["x"], ["y"]
    m.nodes = [
        Kernel("k0", "k0", ["x", "w1", "b1"], ["h"], kind="t_gridmm", dims={"M": 1, "N": 32},
               body=[Node("mm", "MatMul", ["x", "w1"], ["m1"]),
                     Node("add", "Add", ["m1", "b1"], ["h"])],
               origin=["mm", "add"], knobs={"kx": 4, "ky": 2}, rect=Rect(0, 0, 4, 2),
               cost={"cycles": 120, "sram": 600},
               sram=[SramRegion("weights", 0, 512), SramRegion("acts", 512, 88)]),
        # rotated: unrotated 3x2 PEs placed as a 2x3 rectangle
        Kernel("k1", "k1", ["h", "w2"], ["g"], kind="t_flatmm", dims={"K": 30},
               body=[Node("mm2", "Gemm", ["h", "w2"], ["g"], {"alpha": 1.0, "transB": 0})],
               origin=["mm2"], knobs={"w": 3, "n": 6}, rect=Rect(4, 0, 2, 3), rotated=True,
               cost={"cycles": 200, "sram": 300}, sram=[SramRegion("weights", 0, 300)]),
        Kernel("k2", "k2", ["g", "w3"], ["y"], kind="t_gridmm", dims={"M": 1, "N": 8},
               body=[Node("mm3", "MatMul", ["g", "w3"], ["y"])], origin=["mm3"],
               knobs={"kx": 1, "ky": 1}, rect=Rect(6, 0, 1, 1),
               cost={"cycles": 50, "sram": 256}, sram=[SramRegion("weights", 0, 256)]),
    ]
    m.edges = [
        # two host lanes land on k0's West side and run on along its rows
        Edge("x", HOST, ["k0"], 64, [Bundle("k0", 0, 2, (0, 1), ((0, 0),), 3)]),
        Edge("h", "k0", ["k1"], 128, [Bundle("k1", 1, 2, (0, 1), ((3, 0), (4, 0)))]),
        Edge("g", "k1", ["k2"], 32, [Bundle("k2", 2, 1, (0, 1), ((5, 0), (6, 0)))]),
        Edge("y", "k2", [HOST], 32, [Bundle(HOST, 1, 1, (0, 1), ((6, 0), (7, 0)))]),
    ]
    return m


@pytest.fixture
def blob() -> bytes:
    return emit_bytes(build_module(), version="test")


def test_round_trip_kernels_routes_regions(blob: bytes) -> None:
    m = build_module()
    p = load_binary(blob)
    assert p.version == FORMAT_VERSION == 10 and p.target.name == "wse2"
    assert (p.target.width, p.target.height, p.target.sram_bytes) == (8, 8, 48 * 1024)
    assert p.info["compiler_version"] == "test" and p.info["model_hash"] == "sha256:abc"
    assert p.info["attrs"] == {"opset": 17}
    assert [s.name for s in p.sections] == [SECTION_NAMES[i] for i in (1, 2, 3, 4, 5)]
    for k, ki in zip(m.kernels(), p.kernels, strict=True):
        assert (ki.name, ki.kind, ki.dims, ki.knobs, ki.rect, ki.rotated, ki.cost, ki.origin) == \
               (k.name, k.kind, k.dims, k.knobs, k.rect, k.rotated, k.cost, k.origin)
        assert [(b["op"], b["inputs"], b["outputs"], b["attrs"]) for b in ki.body] == \
               [(n.op, n.inputs, n.outputs, n.attrs) for n in k.body]
        assert p.kernel_regions(p.kernel_index(k.name)) == sorted(k.sram, key=lambda r: r.offset)
    assert p.kernels[0].weights == ["w1", "b1"]
    assert p.info["values"]["w2"] == "f32[30,8]"
    for ei, e in enumerate(m.edges):
        pe = p.edges[ei]
        assert (pe.value, pe.src, pe.dsts, pe.bytes_per_sample) == \
               (e.value, e.src, e.dsts, e.bytes_per_sample)
    assert [to_bundle(p, bi) for bi in range(len(p.bundles))] == \
           [b for e in m.edges for b in e.bundles]
    # the router table: every lane expanded, host lanes from the West edge, off the East
    hops = {(int(r["x"]), int(r["y"]), int(r["color"])): (set(mask_ports(int(r["rx"]))),
                                                          set(mask_ports(int(r["tx"]))))
            for r in p.routes}
    assert hops[(0, 1, 0)] == ({"W"}, {"RAMP", "E"}) and hops[(3, 1, 0)] == ({"W"}, {"RAMP"})
    assert hops[(3, 1, 1)] == ({"RAMP"}, {"E"}) and hops[(4, 1, 1)] == ({"W"}, {"RAMP"})
    assert hops[(7, 0, 1)] == ({"W"}, {"E"})
    r = p.routes
    keys = list(zip(r["x"].tolist(), r["y"].tolist(), r["color"].tolist(), strict=True))
    assert keys == sorted(keys)
    # the host feeds each lane its slice of %x at the lane's West-edge PE
    assert p.info["host_io"]["inputs"] == [{"value": "x", "type": "f32[1,16]", "sink": "k0",
                                            "pes": [[0, 0], [0, 1]], "ranges": [[0, 8], [8, 16]]}]
    assert p.info["host_io"]["outputs"][0]["pes"] == [[7, 0]]
    assert p.info["summary"]["kernels"] == 3 and p.info["summary"]["route_entries"] == r.size


def test_weights_reassemble_as_f16(blob: bytes) -> None:
    m = build_module()
    p = load_binary(blob)
    for ki, k in enumerate(p.kernels):
        for wi, name in enumerate(k.weights):
            got = p.assemble_weight(ki, wi)
            want = m.values[name].const.array().astype(np.float16)
            assert got.dtype == np.float16
            np.testing.assert_array_equal(got, want)
    # splat weights stay splats; the dense ones are raw f16 bytes
    kinds = {p.blobs[b[5]].encoding for b in p.weight_blocks(0, 1)}
    assert kinds == {BLOB_SPLAT}
    raw = [b for b in p.blobs if b.encoding != BLOB_SPLAT]
    assert sum(b.count for b in raw) == W1.size + W2.size


def test_shard_blocks_follow_the_kind(blob: bytes) -> None:
    """Every PE's block holds exactly the slice the kind assigns to it."""
    m = build_module()
    p = load_binary(blob)
    for ki, k in enumerate(m.kernels()):
        uw, uh = p.kernels[ki].unrotated_shape
        kind = KINDS[k.kind]
        for wi, name in enumerate(p.kernels[ki].weights):
            shape = m.values[name].type.shape
            seen = np.zeros((uw, uh), int)
            for x0, x1, y0, y1, sl, bi in p.weight_blocks(ki, wi):
                for px in range(x0, x1):
                    for py in range(y0, y1):
                        seen[px, py] += 1
                        want = kind.weight_shard(k.dims, k.knobs, wi, shape, px, py)
                        want = tuple(want) + tuple(slice(0, d) for d in shape[len(want):])
                        assert [(s.start, s.stop) for s in sl] == [(s.start, s.stop) for s in want]
                assert p.blobs[bi].count == np.prod([s.stop - s.start for s in sl])
            assert (seen == 1).all()
    # the rotated kernel's offset (px, py) sits transposed on the grid
    k1 = p.kernels[1]
    assert pe_of(k1.rect, k1.rotated, 2, 1) == (5, 2) and k1.rect.contains(5, 2)
    # k0's w1 is separable (dim 0 by row, dim 1 by column); k1's w2 is not
    assert p.weight_map(0, 0)["axis"][:2].tolist() == [2, 1]
    assert p.weight_map(1, 0)["axis"][:2].tolist() == [3, 0]


def test_emit_is_deterministic_and_rewrite_is_identity(blob: bytes) -> None:
    assert emit_bytes(build_module(), version="test") == blob
    assert write_program(load_binary(blob)) == blob


def test_dedup_shares_blobs() -> None:
    m = build_module()
    m.values["w3"].const = Splat(TensorType("f32", (8, 8)), 0.5)  # same value as b1
    p = build_program(m, "test")
    splats = [b for b in p.blobs if b.encoding == BLOB_SPLAT]
    # b1 shards of 8 elements and w3's 64: two counts, one value -> 2 blobs
    assert sorted(b.count for b in splats) == [8, 64]
    assert all(b.value == 0.5 for b in splats)


@pytest.mark.parametrize("fn", [
    lambda px, py: ((px // 3, px // 3 + 1), (py % 2, py % 2 + 1)),
    lambda px, py: ((0, 4), (py // 5, 9)),
    lambda px, py: (((py * 7 + px) // 4, 99),),  # not separable
    lambda px, py: ((px * py, px * py + 1),),  # looks constant on row 0 and column 0
])
def test_shard_tiling_reproduces_every_pe(fn) -> None:  # type: ignore[no-untyped-def]
    uw, uh = 11, 13
    t = shard_tiling(fn, uw, uh)
    xi = [i for i, (a, b, _) in enumerate(t.xruns) for _ in range(a, b)]
    yi = [j for j, (a, b, _) in enumerate(t.yruns) for _ in range(a, b)]
    assert len(xi) == uw and len(yi) == uh
    if t.cells is None:
        for px in range(uw):
            for py in range(uh):
                assert t.key(xi[px], yi[py]) == fn(px, py)
    else:
        cover = np.zeros((uw, uh), int)
        for x0, x1, y0, y1, key in t.cells:
            for px in range(x0, x1):
                for py in range(y0, y1):
                    cover[px, py] += 1
                    assert fn(px, py) == key
        assert (cover == 1).all()


def test_emit_refuses_unplaced_and_invalid_modules(tmp_path: pathlib.Path) -> None:
    m = build_module()
    m.kernel("k1").rect = None
    with pytest.raises(EmitError, match=r"^kernel 'k1' \(t_flatmm\) has no rect: run the "
                                        r"'place' pass before emitting"):
        emit_bytes(m)
    m = build_module()
    m.kernel("k2").sram = [SramRegion("weights", 0, 60000)]
    out = tmp_path / "m.bin"
    out.write_bytes(b"old")
    with pytest.raises(EmitError, match="refusing to write an invalid binary: kernel 'k2' needs "
                                        "60000 bytes of SRAM per PE"):
        write_binary(m, str(out))
    assert out.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["m.bin"]


def test_write_binary_is_atomic_and_loads_from_path(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "m.bin"
    write_binary(build_module(), str(out), version="test")
    assert os.listdir(tmp_path) == ["m.bin"]
    p = load_binary(str(out))
    assert [k.name for k in p.kernels] == ["k0", "k1", "k2"]
    assert out.read_bytes() == emit_bytes(build_module(), version="test")


def test_inspect_text(blob: bytes) -> None:
    text = inspect_text(load_binary(blob))
    for word in ("format version 10", "wse2, grid 8x8", "wsec test", "sha256:abc", "META",
                 "LANES", "BLOBS", "crc32", "k0", "t_gridmm", "0,0,4,2", "kx=4,ky=2", "mm, add",
                 "route entries    16", "colors used      3 of 24", "max colors/PE    2",
                 "4 bundles of 6 lanes",
                 "max per PE       600 B", "PEs used         15 / 64",
                 "dedup ratio", "in  %x f32[1,16]: 2 West-edge PEs"):
        assert word in text, word
    # the program the emitter built (no section table yet) prints too
    assert "k2" in inspect_text(build_program(build_module(), "test"))


def test_big_splat_on_full_wafer_is_fast() -> None:
    """A 25088x4096 splat sharded over all 750x994 PEs: one blob per shard
    size, one run per PE column/row, a few cells, no per-PE work."""
    m = Module("big", attrs={"target": "wse2"})
    t = TensorType("f32", (25088, 4096))
    m.add_value("x", TensorType("f32", (1, 25088)))
    m.add_value("w", t, Splat(t, 0.01))
    m.add_value("y", TensorType("f32", (1, 4096)))
    m.inputs, m.outputs = ["x"], ["y"]
    m.nodes = [Kernel("fc", "fc", ["x", "w"], ["y"], kind="t_gridmm", knobs={"kx": 750, "ky": 994},
                      rect=Rect(0, 0, 750, 994), cost={"cycles": 1}, sram=[SramRegion("w", 0, 512)],
                      body=[Node("fc", "MatMul", ["x", "w"], ["y"])], origin=["fc"])]
    data = emit_bytes(m, version="test")
    p: Program = load_binary(data)
    # ceil-sized blocks: 4 shard sizes (and 0 past the end) -> 5 splat blobs
    assert len(p.blobs) == 5 and len(data) < 500_000
    assert p.wruns.size <= 750 + 994 and p.wcells.size <= 9
    assert p.info["summary"]["weight_bytes"] == 25088 * 4096 * 2


def test_blob_table_keeps_one_blob_per_content() -> None:
    """Blobs are deduplicated by their bytes, encoding, dtype and count: equal
    contents share an id (first seen first), any difference makes a new one."""
    from wsec.backends.emit import _BlobTable
    from wsec.ir.target import get_target

    t = _BlobTable(get_target("wse2"))
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    ids = [t.dense(a, "f32"), t.dense(a.copy(), "f32"), t.dense(a[:, :2], "f32"),
           t.dense(a.T, "f32"), t.splat("f32", 12, 0.0), t.dense(np.zeros(12, np.float32), "f32"),
           t.splat("f32", 12, 0.0), t.splat("f32", 6, 0.0)]
    assert ids == [0, 0, 1, 2, 3, 4, 3, 5]
    assert len(t.blobs) == 6


def test_uniform_weights_emit_the_bytes_of_their_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A weight whose elements all have the same bits gets its blobs from
    one element times the shard size; the bytes are those of slicing every
    shard. 0.0 and -0.0 differ in bits, so such a weight is sliced."""
    import wsec.backends.emit as emit

    m = build_module()
    f = TensorType
    m.values["w1"].const = Dense(f("f32", (16, 32)), np.full((16, 32), 0.25, np.float32))
    signed = np.zeros((30, 8), np.float32)
    signed[-1, -1] = -0.0
    m.values["w2"].const = Dense(f("f32", (30, 8)), signed)
    found: list[bytes | None] = []
    real = emit._uniform_bytes
    monkeypatch.setattr(emit, "_uniform_bytes", lambda a, d: found.append(real(a, d)) or found[-1])
    fast = emit_bytes(m, version="test")
    assert found == [np.float16(0.25).tobytes(), None]  # w1 by count, w2 sliced
    monkeypatch.setattr(emit, "_uniform_bytes", lambda a, d: None)
    assert emit_bytes(m, version="test") == fast


def test_uniform_bytes_reads_until_an_element_differs() -> None:
    from wsec.backends.emit import UNIFORM_PROBE, _uniform_bytes

    le16 = np.dtype("<f2")
    late = np.zeros((3, UNIFORM_PROBE), np.float32)
    assert _uniform_bytes(late, le16) == b"\0\0"
    late[-1, -1] = 1.0  # past the first probe
    assert _uniform_bytes(late, le16) is None
    assert _uniform_bytes(late[:2].T, le16) == b"\0\0"  # a transposed view: its stored order
    assert _uniform_bytes(late[:, ::2], le16) is None  # strided: not one block of memory
    assert _uniform_bytes(np.full((2, 3), 7, np.int32), np.dtype("<i4")) == b"\7\0\0\0"
    assert _uniform_bytes(np.zeros(0, np.float32), le16) is None


class DimSplit(KernelKind):
    """Test kind whose shards depend on dims, not knobs: dim 0 in P parts over px."""

    name = "t_dimsplit"
    knob_names = ("kx",)

    def weight_shard(self, dims, knobs, weight_index, weight_shape, px, py, rect=None):  # type: ignore[no-untyped-def]
        return (_block(weight_shape[0], dims["P"], px),)


def test_kernels_share_a_weight_tiling_only_when_their_shards_agree() -> None:
    """Tilings are shared between kernels of equal kind, dims, knobs, shape
    and rectangle (KernelKind.weight_shard's arguments): the maps equal
    those found per kernel."""
    from wsec.backends.emit import _BlobTable, _MapAcc, _weight_maps
    from wsec.ir.target import get_target

    if DimSplit.name not in KINDS:
        register(DimSplit())
    m = Module("share", attrs={"target": "wse2"})
    t = TensorType("f32", (12, 3))
    kernels = []
    for i, (parts, w) in enumerate(((2, 4), (4, 4), (2, 4), (2, 3))):
        m.add_value(f"w{i}", t, Dense(t, RNG.standard_normal((12, 3)).astype(np.float32)))
        kernels.append(Kernel(f"k{i}", f"k{i}", [f"w{i}"], [], kind="t_dimsplit",
                              dims={"P": parts}, knobs={"kx": 1}, rect=Rect(0, 0, w, 1)))

    def maps(share: bool) -> tuple[np.ndarray, ...]:
        blobs, acc, tilings = _BlobTable(get_target("wse2")), _MapAcc(), {}  # type: ignore[var-annotated]
        for ki, k in enumerate(kernels):
            _weight_maps(ki, k, m, blobs, acc, tilings if share else {})
        assert len(tilings) == (3 if share else 0)
        return acc.arrays()

    for a, b in zip(maps(True), maps(False), strict=True):
        assert a.tobytes() == b.tobytes()


def test_a_weight_in_a_file_hole_is_zeros_known_unread(tmp_path: pathlib.Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse external-data file's holes read as zeros: a weight wholly in
    one is known to be zeros without reading it (where the file system
    tells holes apart), never one that overlaps data or runs past the end;
    its blobs are those of reading it."""
    import wsec.backends.emit as emit

    block = 1 << 16
    path = tmp_path / "w.bin"
    with open(path, "wb") as f:
        f.truncate(3 * block)
        f.seek(block + 8)
        f.write(RNG.standard_normal(4).astype(np.float32).tobytes())
    f32 = TensorType("f32", (16, 32))

    def ext(offset: int) -> External:
        return External(f32, "w.bin", offset, 2048, str(tmp_path))

    before, data, after, short = ext(0), ext(block), ext(2 * block), ext(3 * block - 1024)
    for c in (before, data, after, short):
        if emit._file_hole(c):
            assert not np.asarray(c.array()).any()
    assert not emit._file_hole(data) and not emit._file_hole(short)
    with open(path, "rb") as f:
        holes = os.lseek(f.fileno(), 0, os.SEEK_DATA) >= block if hasattr(os, "SEEK_DATA") \
            else False
    if holes:  # this file system reports holes
        assert emit._file_hole(before) and emit._file_hole(after)
    m = build_module()
    m.values["w1"].const = after
    fast = emit_bytes(m, version="test")
    monkeypatch.setattr(emit, "_file_hole", lambda c: False)
    monkeypatch.setattr(emit, "_uniform_bytes", lambda a, d: None)
    assert emit_bytes(m, version="test") == fast


def test_pair_ids_make_blobs_in_the_order_a_scan_of_every_shard_would() -> None:
    """Runs repeat keys (row groups cycling through channel blocks): each
    distinct shard gets one blob, numbered as a row-major scan numbers them."""
    from wsec.backends.emit import _pair_ids
    from wsec.backends.format import AXIS_CONST, AXIS_X, AXIS_Y

    fn = lambda px, py: ((px // 2 % 3, px // 2 % 3 + 1), (0, 4), (py % 4, py % 4 + 1))  # noqa: E731
    t = shard_tiling(fn, 13, 11)
    assert t.cells is None and t.axes == [AXIS_X, AXIS_CONST, AXIS_Y]
    assert len(t.xruns) == 7 and len(t.yruns) == 11  # keys repeat along both

    def numbering() -> tuple[dict[object, int], object]:
        seen: dict[object, int] = {}
        return seen, lambda key: seen.setdefault(key, len(seen))

    seen, blob = numbering()
    ids = _pair_ids(t, blob)
    want_seen, want_blob = numbering()
    want = [[want_blob(t.key(i, j)) for i in range(7)] for j in range(11)]
    assert ids.tolist() == want and seen == want_seen and len(seen) == 12
