"""The loader rejects damaged and inconsistent binaries with one-line
messages (never a traceback): truncation, bit flips, magic, version, and
well-checksummed files whose content is wrong (written through
`write_program` from a decoded Program that was then tampered with)."""

from __future__ import annotations

import json
import pathlib
import re
import struct
import zlib
from collections.abc import Callable

import numpy as np
import pytest
from test_binary import build_module
from wsec.backends.emit import emit_bytes, write_program
from wsec.backends.format import HEADER, MAGIC, SECTION, Program
from wsec.backends.loader import BinaryError, load_binary
from wsec.ir.graph import Rect


@pytest.fixture(scope="module")
def good() -> bytes:
    return emit_bytes(build_module(), version="test")


def reject(data: bytes) -> str:
    with pytest.raises(BinaryError) as e:
        load_binary(data)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_good_file_loads(good: bytes) -> None:
    assert [k.name for k in load_binary(good).kernels] == ["k0", "k1", "k2"]


@pytest.mark.parametrize("cut,expect", [
    (0, "truncated file: the header needs 24 bytes, the file has 0"),
    (5, "truncated file: the header needs 24 bytes, the file has 5"),
    (20, "truncated file: the header needs 24 bytes, the file has 20"),
    (30, "truncated file: the section table (5 entries) needs 144 bytes, the file has 30"),
    (143, "truncated file: the section table (5 entries) needs 144 bytes, the file has 143"),
])
def test_truncated_header_and_table(good: bytes, cut: int, expect: str) -> None:
    assert reject(good[:cut]) == expect


def test_truncated_inside_each_section(good: bytes) -> None:
    p = load_binary(good)
    for s in p.sections:
        for cut in (s.offset, s.offset + s.length // 2, s.offset + s.length - 1):
            assert reject(good[:cut]) == (
                f"truncated file: section {s.name} (offset {s.offset}, length {s.length}) "
                f"extends past the end of the file ({cut} bytes)")


def test_bit_flip_in_each_section_names_it(good: bytes) -> None:
    p = load_binary(good)
    assert len(p.sections) == 5
    for s in p.sections:
        for pos in (s.offset, s.offset + s.length // 2, s.offset + s.length - 1):
            bad = bytearray(good)
            bad[pos] ^= 0x10
            body = bytes(bad[s.offset:s.offset + s.length])
            assert reject(bytes(bad)) == (
                f"checksum mismatch in section {s.name} (stored {s.crc32:#010x}, computed "
                f"{zlib.crc32(body):#010x}): the file is corrupted")


def test_bit_flip_in_header_or_table(good: bytes) -> None:
    for pos in (12, 17, HEADER.size + 5, HEADER.size + 3 * SECTION.size + 9):
        bad = bytearray(good)
        bad[pos] ^= 0x01
        assert reject(bytes(bad)).startswith("checksum mismatch in the header (stored ")


def test_bad_magic_and_version(good: bytes) -> None:
    assert reject(b"PK\x03\x04" + good[4:]) == "not a wsec binary (bad magic)"
    assert reject(b"hello") == "not a wsec binary (bad magic)"
    assert reject(b"") == "truncated file: the header needs 24 bytes, the file has 0"
    bad = good[:8] + struct.pack("<I", 11) + good[12:]
    assert reject(bad) == "format version 11 is not supported (this wsec reads version 10)"


def test_trailing_garbage(good: bytes) -> None:
    assert reject(good + b"xx") == (f"2 unexpected bytes after the last section (file is "
                                    f"{len(good) + 2} bytes, sections end at {len(good)})")


def test_missing_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(BinaryError, match=r"^cannot read '.*nope\.bin': No such file"):
        load_binary(str(tmp_path / "nope.bin"))


def test_malformed_but_checksummed_sections(good: bytes) -> None:
    """Sections with valid checksums whose content does not decode."""
    p = load_binary(good)
    from wsec.backends.format import LANES, META, pack_file

    def repack(sid: int, body: bytes) -> bytes:
        secs = [(s.id, good[s.offset:s.offset + s.length]) for s in p.sections]
        return pack_file([(i, body if i == sid else d) for i, d in secs])

    assert reject(repack(META, b"{not json")).startswith("malformed section META: ")
    assert reject(repack(META, b'{"target": {}}')).startswith("malformed section META: ")
    assert reject(repack(LANES, b"\x05\x00")) == (
        "malformed section LANES: LANES section is shorter than its counts")
    assert reject(repack(LANES, struct.pack("<IIII", 3, 0, 0, 0))).startswith(
        "malformed section LANES: 3 bundle, 0 point, 0 template and 0 slice records need ")
    assert reject(repack(META, good[144:200])).startswith("malformed section META")
    secs = [(s.id, good[s.offset:s.offset + s.length]) for s in p.sections]
    assert reject(pack_file(secs[:3] + secs[4:])) == "section SRAM is missing"
    assert reject(pack_file(secs + secs[:1])) == "section META appears twice in the section table"


# --- inconsistent content, valid checksums ------------------------------------
def tamper(good: bytes, edit: Callable[[Program], None]) -> str:
    p = load_binary(good)
    edit(p)
    return reject(write_program(p))


def _set_bundle(p: Program, i: int, **fields: int) -> None:
    for k, v in fields.items():
        p.bundles[k][i] = v


def test_lane_outside_grid(good: bytes) -> None:
    def edit(p: Program) -> None:  # %y's lane runs on past the East edge
        p.points["x"][int(p.bundles["point0"][3]) + 1] = 9

    assert tamper(good, edit) == ("lane 0 of edge %y (bundle #3, color 1) lands at PE (9, 0), "
                                  "outside the host's East edge")


def test_bundle_names_missing_edge(good: bytes) -> None:
    assert tamper(good, lambda p: _set_bundle(p, 0, edge=9)) == \
        "bundle #0 names edge #9; the program has 4"


def test_two_routes_on_one_color_at_one_pe(good: bytes) -> None:
    # %g lands at PE (6, 0), where %y starts on color 1
    assert tamper(good, lambda p: _set_bundle(p, 2, color=1)) == (
        "two routes on color 1 at PE (6, 0): lane 0 of edge %g (#2) (rx W tx RAMP) and "
        "lane 0 of edge %y (#3) (rx RAMP tx E)")


def test_bundle_color_beyond_target(good: bytes) -> None:
    assert tamper(good, lambda p: _set_bundle(p, 0, color=30)) == \
        "bundle #0 uses color 30; the target has 24"


def test_lanes_must_land_in_their_sink(good: bytes) -> None:
    def edit(p: Program) -> None:  # %h's lanes land one PE short of k1
        p.points["x"][int(p.bundles["point0"][1]) + 1] = 3
        p.points["x"][int(p.bundles["point0"][1])] = 2

    assert "lands at PE (3, 0), outside kernel 'k1' [4, 0, 2, 3]" in tamper(good, edit)


def test_lane_slices_partition_the_value(good: bytes) -> None:
    def edit(p: Program) -> None:  # a second bundle of %h to k1: every slice twice
        p.bundles = np.concatenate([p.bundles, p.bundles[1:2]])
        p.bundles["color"][-1] = 5

    assert tamper(good, edit) == ("lane slices of edge %h to 'k1' overlap: bundles #1 and #4 "
                                  "each carry all of it")

    def edit2(p: Program) -> None:  # %g's only bundle dropped: k2 never gets its input
        p.bundles = p.bundles[[0, 1, 3]]

    assert tamper(good, edit2) == ("edge %g has no bundle of lanes to 'k2': the value would "
                                   "never arrive")


def test_link_over_capacity(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.info["attrs"]["realised_cycles"] = 10  # %h's lanes carry 16 wavelets each

    assert tamper(good, edit) == ("link (3, 0) E carries 16 wavelets per sample, more than the "
                                  "10 cycles per sample the binary states")


def test_rect_outside_grid(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.kernels[2].rect = Rect(7, 7, 2, 1)

    assert tamper(good, edit) == "kernel 'k2' rectangle [7, 7, 2, 1] lies outside the 8x8 grid"


def test_overlapping_rects(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.kernels[2].rect = Rect(3, 1, 1, 1)

    assert tamper(good, edit) == "kernels 'k0' [0, 0, 4, 2] and 'k2' [3, 1, 1, 1] overlap"


def test_sram_overflow(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.regions["size"][p.regions["kernel"] == 2] = 50000

    assert tamper(good, edit) == (
        "kernel 'k2' needs 50000 bytes of SRAM per PE (region 'weights' at offset 0, 50000 "
        "bytes) but a wse2 PE has 49152: 848 bytes over")


def test_unknown_kind(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.kernels[1].kind = "warp_drive"

    assert re.fullmatch(r"kernel 'k1' has unknown kind 'warp_drive' \(this wsec knows: .*\)",
                        tamper(good, edit))


def test_edge_names_unknown_kernel(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.edges[1].dsts = ["k9"]

    assert tamper(good, edit) == "edge %h names unknown kernel 'k9'"


def test_weight_cell_blob_out_of_range(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.wcells["blob"][0] = 99

    assert tamper(good, edit) == (
        "kernel 'k0', weight %w1: weight cell 0 names blob 99 but the file has "
        f"{len(load_binary(good).blobs)} blobs")


def test_weight_cells_must_cover_every_pe(good: bytes) -> None:
    p0 = load_binary(good)
    m = p0.weight_map(0, 0)  # w1 is dense: one cell per (x-run, y-run), 4 x 2
    assert (int(m["nx"]), int(m["ny"]), int(m["ncells"])) == (4, 2, 8)

    def edit(p: Program) -> None:
        p.wcells["xr1"][int(m["cell0"])] = 2  # cell 0 now also covers cell 1's PEs

    assert tamper(good, edit) == ("kernel 'k0', weight %w1: the weight cells do not cover every "
                                  "PE exactly once")

    def edit2(p: Program) -> None:
        p.wcells["yr1"][int(m["cell0"])] = 3

    assert tamper(good, edit2) == ("kernel 'k0', weight %w1: weight cell 0 spans runs outside "
                                   "the map's 4x2")


def test_weight_slice_out_of_bounds_and_count_mismatch(good: bytes) -> None:
    def edit(p: Program) -> None:
        m = p.weight_map(0, 0)  # w1 f32[16,32]: dim 1 runs along x
        p.wruns["stop"][int(m["run0"]), 1] = 40

    assert tamper(good, edit) == ("kernel 'k0', weight %w1: slice [0:40] of dims [1] lies "
                                  "outside shape [16, 32]")

    def edit2(p: Program) -> None:
        m = p.weight_map(0, 0)
        p.wruns["stop"][int(m["run0"]), 1] = 7  # 8 -> 7 columns: blob no longer matches

    assert tamper(good, edit2) == ("kernel 'k0', weight %w1: weight cell 0 holds blob 0 of 64 "
                                   "elements but its PEs' slices have 56..56")


def test_missing_weight_map(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.wmaps = p.wmaps[1:]

    assert tamper(good, edit) == "kernel 'k0' has no weight map for %w1"


def test_host_io_outside_grid(good: bytes) -> None:
    def edit(p: Program) -> None:
        p.info["host_io"]["inputs"][0]["pes"] = [[-1, 0]]

    assert tamper(good, edit) == "host I/O of %x uses PE (-1, 0) outside the 8x8 grid"


def test_tampered_meta_json_types_do_not_crash(good: bytes) -> None:
    """Fuzz META with wrong types: always a BinaryError, never a traceback."""
    p = load_binary(good)
    meta = json.loads(good[p.sections[0].offset:p.sections[0].offset + p.sections[0].length])
    from wsec.backends.format import META, canonical_json, pack_file

    secs = [(s.id, good[s.offset:s.offset + s.length]) for s in p.sections]
    for key, val in (("kernels", 3), ("edges", [{"value": 1}]), ("target", []),
                     ("kernels", [{"name": "k0"}]), ("values", 5)):
        bad = dict(meta)
        bad[key] = val
        data = pack_file([(META, canonical_json(bad))] + secs[1:])
        with pytest.raises(BinaryError):
            load_binary(data)


def test_random_corruption_never_crashes(good: bytes) -> None:
    rng = np.random.default_rng(1)
    for _ in range(200):
        bad = bytearray(good)
        for pos in rng.integers(0, len(good), 3):
            bad[int(pos)] = int(rng.integers(0, 256))
        if bytes(bad) == good:
            continue
        with pytest.raises(BinaryError):
            load_binary(bytes(bad))
    assert MAGIC == good[:8]
