"""Cut bundles: lanes that carry the box their sink's PE row reads.

A kind declares per PE row the box of its data input the row reads
(KernelKind.input_cut); a bundle with one lane per row can carry exactly
those boxes (wsec.ir.lanes), so the row multicast alone delivers every PE
its window. At pitch k a lane serves k rows (a spine along the sink's side
hands it on) and carries the bounding box of their boxes. The binary stores
the boxes (LANES slice records) and the pitch, the loader checks they cover
the value and the spines stay in the sink, and the simulator checks each
PE's window against the box of the lane its core received
(sim_inbox.check_windows).
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import numpy as np
import pytest
import sim_zoo
from conftest import compiled_light
from wsec.backends.emit import write_binary
from wsec.backends.format import BUNDLE_CUT, BUNDLE_FROM_HOST, PORT_BITS, SLICE_DTYPE, FormatError
from wsec.backends.lanes import check_records, to_bundle
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_inbox import Delivery, check_windows
from wsec.backends.sim_sharded import _conv_need
from wsec.backends.sim_stats import format_stats
from wsec.driver import CompileOptions, compile_model
from wsec.ir.fabric import STEP
from wsec.ir.kernels import KINDS, input_cut, lane_boxes
from wsec.ir.lanes import (
    LaneError,
    check_cut,
    cut_counts,
    endpoints,
    lane_slices,
    segment_dirs,
    spine_dir,
    travel,
    waypoints,
)
from wsec.ir.parser import parse_module
from wsec.ir.printer import print_module


def test_check_cut_accepts_a_cover_and_names_a_gap() -> None:
    boxes = np.array([[[0, 0], [2, 3]], [[1, 0], [4, 3]]])  # rows 0..1 and 1..3: overlap
    check_cut((4, 3), boxes)
    assert cut_counts((4, 3), boxes)[1].tolist() == [2, 2, 2]
    with pytest.raises(LaneError, match=r"no lane carries element \[2, 0\]"):
        check_cut((4, 3), np.array([[[0, 0], [2, 3]], [[3, 0], [4, 3]]]))
    with pytest.raises(LaneError, match="outside the value"):
        check_cut((4, 3), np.array([[[0, 0], [5, 3]]]))


CONVS = [  # N, C, H, W, K, R, sh, pad_top, pad_bottom, knobs c, s
    (1, 8, 12, 12, 4, 3, 1, 1, 1, 2, 3),
    (1, 6, 14, 14, 4, 1, 2, 0, 0, 3, 4),   # stride past the window: rows nobody reads
    (2, 3, 20, 20, 8, 7, 2, 3, 2, 1, 5),
    (1, 4, 5, 5, 4, 3, 1, 1, 1, 2, 7),     # more row groups than output rows
]


@pytest.mark.parametrize("case", CONVS)
def test_conv_input_cut_covers_the_input_and_each_rows_window(case: tuple[int, ...]) -> None:
    N, C, H, W, K, R, sh, pt, pb, c, s = case
    Ho = (H + pt + pb - R) // sh + 1
    Wo = Ho
    dims = {"N": N, "C": C, "H": H, "W": W, "K": K, "R": R, "S": R, "G": 1, "sh": sh, "sw": sh,
            "dh": 1, "dw": 1, "ph": max(0, (Ho - 1) * sh + R - H), "pw": 0, "Ho": Ho, "Wo": Wo}
    knobs = {"k": 2, "c": c, "s": s}
    rows = KINDS["conv"].input_cut(dims, knobs, (N, C, H, W))
    assert rows is not None and rows.shape == (c * s, 2, 4)
    check_cut((N, C, H, W), rows)
    need = _conv_need((N, C, H, W), c, s, -(-C // c), -(-Ho // s), sh, R, 1, Ho, pt)
    reads = (need[:, 1] > need[:, 0]).all(axis=1)
    inside = ((rows[:, 0] <= need[:, 0]) & (need[:, 1] <= rows[:, 1])).all(axis=1)
    assert (inside | ~reads).all()
    assert KINDS["conv"].input_cut(dims, knobs, (N, C, H + 1, W)) is None  # not its input


def _delivery(boxes: np.ndarray | None, lane_at: np.ndarray, shape: tuple[int, ...]
              ) -> Delivery:
    n = int(np.prod(shape))
    return Delivery("x", 0, 0, n, lane_slices(n, lane_at.max() + 1), lane_at, shape, boxes)


class _P:  # what read_error needs of a program
    def __init__(self, shape: tuple[int, ...]) -> None:
        from wsec.backends.format import Rect

        self.kernels = [type("K", (), {"name": "k0", "kind": "conv", "rotated": False,
                                       "rect": Rect(10, 20, 3, 4)})()]
        self.info = {"values": {"x": f"f32[{','.join(map(str, shape))}]"}}
        self.edges = [type("E", (), {"value": "x", "src": "k9", "dsts": ["k0"]})()]


def test_check_windows_proves_cut_inboxes_and_counts_flat_ones() -> None:
    shape = (1, 4, 6, 5)
    need = _conv_need(shape, 2, 2, 2, 2, 1, 3, 1, 4, 0)  # 3x3, no pad, Ho 4
    rows = KINDS["conv"].input_cut({"N": 1, "C": 4, "H": 6, "W": 5, "K": 3, "R": 3, "S": 3,
                                    "G": 1, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "ph": 0,
                                    "pw": 0, "Ho": 4, "Wo": 3}, {"k": 3, "c": 2, "s": 2}, shape)
    assert rows is not None
    lane_at = np.repeat(np.arange(4)[:, None], 3, axis=1)  # lane r lands on row r, multicast
    p = _P(shape)
    assert check_windows(p, 0, _delivery(rows, lane_at, shape), need) == 0  # type: ignore[arg-type]
    short = rows.copy()
    short[2, 0, 2] += 1  # row 2's halo row shortened
    with pytest.raises(SimError, match=r"PE \(10, 22\) \(offset \(0, 2\)\) reads %x\[0, 0, 2, 0\]"
                                       r".*lane 0 of .* carries it"):
        check_windows(p, 0, _delivery(short, lane_at, shape), need)  # type: ignore[arg-type]
    swapped = lane_at.copy()
    swapped[[0, 1]] = swapped[[1, 0]]  # two lanes misdirected onto each other's rows
    with pytest.raises(SimError, match=r"offset \(0, 0\)"):
        check_windows(p, 0, _delivery(rows, swapped, shape), need)  # type: ignore[arg-type]
    dropped = lane_at.copy()
    dropped[3, 1] = -1  # the multicast stops short of one PE
    with pytest.raises(SimError, match=r"offset \(1, 3\).*the PE holds no lane"):
        check_windows(p, 0, _delivery(rows, dropped, shape), need)  # type: ignore[arg-type]
    # flat lanes carry channel ranges of every row: most PEs would need forwarding
    assert check_windows(p, 0, _delivery(None, lane_at, shape), need) > 0  # type: ignore[arg-type]


def test_strict_flat_lanes_fail_at_the_first_pe_reading_outside_its_lane() -> None:
    """`wsec run --strict`: a flat lane's PE reading an element outside its
    lane's range is the error a cut lane's is, naming the PE, the element,
    the lane that carries it and the range the PE received."""
    shape = (1, 4, 6, 5)  # 120 elements over 4 flat lanes of 30
    need = _conv_need(shape, 2, 2, 2, 2, 1, 3, 1, 4, 0)
    lane_at = np.repeat(np.arange(4)[:, None], 3, axis=1)
    flat = _delivery(None, lane_at, shape)
    flat.strict = True
    # row 0 reads channels 0-1 of input rows 0-3: its last element, channel 1's
    # row 3 col 4 (flat 49), lies in lane 1
    with pytest.raises(SimError, match=r"PE \(10, 20\) \(offset \(0, 0\)\) reads "
                                       r"%x\[0, 1, 3, 4\].*lane 1 of .* carries it; the PE "
                                       r"holds lane 0's elements \[0, 30\)"):
        check_windows(_P(shape), 0, flat, need)  # type: ignore[arg-type]
    dropped = lane_at.copy()
    dropped[0, 0] = -1
    flat = _delivery(None, dropped, shape)
    flat.strict = True
    with pytest.raises(SimError, match=r"offset \(0, 0\)\) reads %x\[0, 0, 0, 0\].*holds no "
                                       r"lane of it"):
        check_windows(_P(shape), 0, flat, need)  # type: ignore[arg-type]
    # a window inside its lane passes: row r reads only lane r's first element
    inside = np.zeros((4, 2, 4), np.int64)
    for r in range(4):
        inside[r, 0] = np.unravel_index(30 * r, shape)
        inside[r, 1] = inside[r, 0] + 1
    flat = _delivery(None, lane_at, shape)
    flat.strict = True
    assert check_windows(_P(shape), 0, flat, inside) == 0  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("cut")
    sim_zoo.cnn_model(d / "cnn.onnx")
    write_binary(compile_model(str(d / "cnn.onnx"), CompileOptions()).module, str(d / "c.bin"))
    return d / "c.bin"


def test_loader_checks_a_cut_bundles_boxes(cnn: pathlib.Path) -> None:
    p = load_binary(str(cnn))
    bi = next(i for i, b in enumerate(p.bundles)
              if int(b["sink"]) >= 0 and int(b["flags"]) & ~BUNDLE_CUT == 0
              and p.kernels[int(b["sink"])].kind == "conv")
    shape = [int(v) for v in p.info["values"][p.edges[int(p.bundles[bi]["edge"])].value]
             .split("[")[1].rstrip("]").split(",")]
    L = int(p.bundles[bi]["lanes"])
    sl = np.zeros(L, SLICE_DTYPE)
    sl["stop"][:, :len(shape)] = shape
    sl["start"][:, 2] = np.minimum(np.arange(L), shape[2])  # every lane from its row down
    sl["start"][0, 2] = 0
    at = len(p.slices)  # after the cut bundles' own boxes
    p.slices = np.concatenate([p.slices, sl])
    p.bundles["flags"][bi] |= BUNDLE_CUT
    p.bundles["slice0"][bi] = at
    check_records(p)  # overlapping boxes covering the value: a declared cover
    p.slices["start"][at:, 2] = np.maximum(1, sl["start"][:, 2])  # nobody carries row 0
    with pytest.raises(FormatError, match=r"do not cover it: no lane carries element \[0, 0, 0"):
        check_records(p)
    p.bundles["slice0"][bi] = at + 1
    with pytest.raises(FormatError, match="outside the .* stored"):
        check_records(p)


@pytest.mark.slow
def test_resnet50_cut_bundles_carry_each_rows_window(tmp_path: pathlib.Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from wsec.backends import sim_sharded

    m = compiled_light("resnet50").module
    assert any(b.cut and b.pitch > 1 for e in m.edges for b in e.bundles or ())
    path = str(tmp_path / "r.bin")
    write_binary(m, path)
    p = load_binary(path)
    x = random_inputs(p, 0)
    seen: dict[int, tuple[Delivery, np.ndarray]] = {}  # what each conv PE row reads
    forwarded: dict[int, int] = {}

    def spy(p_, ki, d, need):  # type: ignore[no-untyped-def]
        seen[ki] = (d, need)
        forwarded[ki] = check_windows(p_, ki, d, need)
        return forwarded[ki]

    monkeypatch.setattr(sim_sharded, "check_windows", spy)
    res = simulate(p, x)
    stats = res.kernel_stats
    cut = [int(b["sink"]) for b in p.bundles if int(b["flags"]) & BUNDLE_CUT
           and p.kernels[int(b["sink"])].kind == "conv"]
    # every conv PE whose input is cut reads only its lane (a residual its
    # tail adds may still come flat: its PEs count apart, in the stats)
    assert cut and all(forwarded[ki] == 0 for ki in cut)
    # a kernel all of whose inputs come cut reads only what they delivered
    every = {int(b["sink"]) for b in p.bundles if int(b["flags"]) & BUNDLE_CUT}
    whole = {ki for ki in every if all(int(b["flags"]) & BUNDLE_CUT for b in p.bundles
                                       if int(b["sink"]) == ki)}
    assert whole and all(stats[p.kernels[ki].name]["forwarded_pes"] == 0 for ki in whole)
    # every such kernel is among those reading only their lanes (so may be a
    # kernel whose one flat lane carries its whole input)
    proven = re.search(r"(\d+) read only what their lanes delivered", format_stats(p, res))
    assert proven is not None and int(proven.group(1)) >= len(whole)
    # shorten a halo: a lane loses the last input row one of its PE rows reads, which
    # another lane carries too (so no gap: the PE must find it missing)
    for ki in cut:
        d, need = seen[ki]
        assert d.boxes is not None
        if int(p.bundles[d.bundle]["flags"]) & BUNDLE_FROM_HOST:
            continue  # its boxes are the I/O map's too: shortening one is a map mismatch
        count = cut_counts(d.shape, d.boxes)
        for lane in range(d.lanes):
            rows = np.unique(np.nonzero(d.lane_at == lane)[0])
            rows = rows[(need[rows, 1] > need[rows, 0]).all(axis=1)]
            if not rows.size:
                continue
            end = int(need[rows, 1, 2].max())
            lo = d.boxes[lane, 0]
            if end - lo[2] > 1 and count[lo[0], lo[1], end - 1, lo[3]] > 1:
                p.slices["stop"][int(p.bundles[d.bundle]["slice0"]) + lane, 2] = end - 1
                with pytest.raises(SimError, match=r"PE \(.*reads .*never arrived there"):
                    simulate(p, x)
                return
    raise AssertionError("no cut lane of ResNet-50 carries a halo row another lane carries")


# --- pitched cut bundles ------------------------------------------------------------------
@pytest.fixture(scope="module")
def pitched(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, pathlib.Path]:
    d = tmp_path_factory.mktemp("pitched")
    sim_zoo.pitched_model(d / "p.onnx")
    m = compile_model(str(d / "p.onnx"), CompileOptions()).module
    write_binary(m, str(d / "p.bin"))
    return m, d / "p.bin"


def _pitched_bundle(p) -> int:  # type: ignore[no-untyped-def]
    return next(i for i, b in enumerate(p.bundles) if int(b["pitch"]) > 1)


def test_pitched_lanes_carry_the_union_of_their_rows_boxes(pitched) -> None:  # type: ignore[no-untyped-def]
    m, _ = pitched
    e, b = next((e, b) for e in m.edges for b in e.bundles or () if b.pitch > 1)
    assert b.cut == "rows"
    k = next(k for k in m.kernels() if k.name == b.sink)
    shape = tuple(m.values[e.value].type.shape)
    rows = input_cut(k, e.value, shape)
    assert rows is not None and b.lanes * b.pitch == rows.shape[0]
    boxes = lane_boxes(k, b, e.value, shape)
    # conv rows py = group * c + channel block: a pitch dividing c serves adjacent channel
    # blocks of one row group, whose union is exactly their bounding box
    assert int(k.knobs["c"]) % b.pitch == 0  # type: ignore[index]
    groups = rows.reshape(b.lanes, b.pitch, 2, -1)
    for i in range(0, b.lanes, max(1, b.lanes // 7)):
        # the lane lands on a row and its spine serves the next ones; rows ascending or
        # descending, the union is the same
        exact = cut_counts(shape, groups[i]) > 0
        assert exact.sum() == int(np.prod(boxes[i, 1] - boxes[i, 0]))
    check_cut(shape, boxes)
    # at pitch 3 the lanes serve fewer rows than read the value: the first unserved one
    with pytest.raises(ValueError, match=r"leaves PE row \d+ without the box it reads"):
        lane_boxes(k, replace(b, pitch=3), e.value, shape)


def test_pitch_round_trips_through_ir_text_and_binary(pitched) -> None:  # type: ignore[no-untyped-def]
    m, path = pitched
    text = print_module(m)
    line = next(ln for ln in text.splitlines() if " pitch " in ln)
    want = next(b for e in m.edges for b in e.bundles or () if b.pitch > 1)
    assert line.endswith(f" cut rows pitch {want.pitch}")
    back = parse_module(text)
    assert [b for e in back.edges for b in e.bundles or ()] == [
        b for e in m.edges for b in e.bundles or ()]
    p = load_binary(str(path))
    bi = _pitched_bundle(p)
    assert to_bundle(p, bi) == want
    res = simulate(p, random_inputs(p, 0))
    sink = p.kernels[int(p.bundles["sink"][bi])].name
    assert res.kernel_stats[sink]["forwarded_pes"] == 0  # every PE proven from its inbox


def test_loader_rejects_a_bad_pitch(pitched) -> None:  # type: ignore[no-untyped-def]
    _, path = pitched
    p = load_binary(str(path))
    bi = _pitched_bundle(p)
    p.bundles["pitch"][bi] = 0
    with pytest.raises(FormatError, match=rf"bundle #{bi} has lane pitch 0; a pitch is at "
                                          "least 1"):
        check_records(p)
    p = load_binary(str(path))
    k = int(p.bundles["pitch"][bi])
    p.bundles["pitch"][bi] = 2 * k  # the lanes spread twice as far: the last spines leave the sink
    with pytest.raises(FormatError, match=rf"bundle #{bi} .* at pitch {2 * k}: the spine of lane "
                                          r"\d+ reaches PE \(\d+, \d+\), outside its sink"):
        check_records(p)
    p = load_binary(str(path))
    flat = next(i for i, b in enumerate(p.bundles) if not int(b["flags"]) & BUNDLE_CUT)
    p.bundles["pitch"][flat] = 2
    with pytest.raises(FormatError, match=rf"bundle #{flat} has lane pitch 2 but is not cut"):
        check_records(p)
    p = load_binary(str(path))
    p.bundles["src_pitch"][bi] = k + 1  # lanes that would narrow at the last corner
    with pytest.raises(FormatError, match=rf"bundle #{bi} has source pitch {k + 1} above its "
                                          rf"pitch {k}: lanes widen on their way, never narrow"):
        check_records(p)
    p = load_binary(str(path))
    p.bundles["src_pitch"][bi], p.bundles["npoints"][bi] = 1, 2  # widening on a straight run
    with pytest.raises(FormatError, match=rf"bundle #{bi} .* is not a valid bundle of lanes: "
                                          r"lanes at source pitch 1 and pitch \d+ widen at the "
                                          r"path's last corner, but the path has 1 segment"):
        check_records(p)
    data = path.read_bytes()
    assert load_binary(data).bundles["pitch"][bi] == k  # the file itself is fine


def test_shortened_spine_is_an_error_at_that_pe(pitched) -> None:  # type: ignore[no-untyped-def]
    """Lane 0's spine stops one PE short: the row it no longer reaches has
    no lane, and the simulator names its first PE and the lane."""
    _, path = pitched
    p = load_binary(str(path))
    bi = _pitched_bundle(p)
    b = to_bundle(p, bi)
    (sx, sy), (tx, ty) = spine_dir(b), travel(b.axis, segment_dirs(b.path))
    _, land = endpoints(b)
    k = b.pitch
    end = (int(land[0, 0]) + (k - 1) * sx, int(land[0, 1]) + (k - 1) * sy)  # the spine's end
    r = p.routes.copy()
    x, y = r["x"].astype(np.int64), r["y"].astype(np.int64)
    lane0 = (r["bundle"] == bi) & (r["lane"] == 0)
    t = (x - end[0]) * tx + (y - end[1]) * ty  # steps along the row from the spine's end
    row = lane0 & (x - t * tx == end[0]) & (y - t * ty == end[1]) & (t >= 0)
    assert row.sum() == b.reach + 1
    before = np.flatnonzero(lane0 & (x == end[0] - sx) & (y == end[1] - sy))
    bit = next(PORT_BITS[d] for d, v in STEP.items() if v == (sx, sy))
    r["tx"][before] &= ~np.uint8(bit)
    short = replace(p, routes=r[~row])
    with pytest.raises(SimError, match=rf"PE \({end[0]}, {end[1]}\) .*reads %.+, which never "
                                       r"arrived there \(lane 0 of edge #\d+ .*carries it; the "
                                       r"PE holds no lane\)"):
        simulate(short, random_inputs(p, 0))


# --- widening cut bundles ------------------------------------------------------------------
@pytest.mark.slow
def test_resnet50_widened_lanes_round_trip_and_faults_raise_at_the_pe(
        tmp_path: pathlib.Path) -> None:
    """ResNet-50 has convs whose source side is shorter than their input
    side's rows: their cut bundles leave side by side and widen to their
    pitch at the last corner. The binary keeps the source pitch, every PE
    of the sink reads only its lane's box, and a misdirected or shortened
    widened lane is a SimError at that PE."""
    m = compiled_light("resnet50").module
    widened = [(e, b) for e in m.edges for b in e.bundles or () if b.src_pitch]
    assert widened and all(b.cut and b.src_pitch < b.pitch and len(b.path) > 2
                           for _, b in widened)
    path = str(tmp_path / "r.bin")
    write_binary(m, path)
    p = load_binary(path)
    bi = next(i for i, r in enumerate(p.bundles) if int(r["src_pitch"]))
    e, want = next((e, b) for e in m.edges for b in e.bundles or ()
                   if b.src_pitch and e.value == p.edges[int(p.bundles["edge"][bi])].value
                   and b.sink == p.kernels[int(p.bundles["sink"][bi])].name)
    b = to_bundle(p, bi)
    assert b == want
    x = random_inputs(p, 0)
    res = simulate(p, x)
    assert res.kernel_stats[b.sink]["forwarded_pes"] == 0  # widened: every row its box
    # misdirect: lane 0 turns the wrong way at its last corner
    dirs = segment_dirs(b.path)
    corner = tuple(int(v) for v in waypoints(b)[0, -2])
    r = p.routes.copy()
    at = np.flatnonzero((r["bundle"] == bi) & (r["lane"] == 0) & (r["x"] == corner[0])
                        & (r["y"] == corner[1]))
    assert at.size == 1
    good = next(PORT_BITS[d] for d, v in STEP.items() if v == dirs[-1])
    bad = next(PORT_BITS[d] for d, v in STEP.items() if v == (-dirs[-1][0], -dirs[-1][1]))
    r["tx"][at] = (r["tx"][at] & ~np.uint8(good)) | np.uint8(bad)
    with pytest.raises(SimError, match=rf"lane 0 of edge .* from PE \({corner[0]}, "
                                       rf"{corner[1]}\)|PE \({corner[0]}, {corner[1]}\)"):
        simulate(replace(p, routes=r), x)
    # shorten: the last lane's spine stops one PE short; its last row has no lane
    (sx, sy), (tx, ty) = spine_dir(b), travel(b.axis, dirs)
    _, land = endpoints(b)
    i, k = b.lanes - 1, b.pitch
    end = (int(land[i, 0]) + (k - 1) * sx, int(land[i, 1]) + (k - 1) * sy)
    r = p.routes.copy()
    rx, ry = r["x"].astype(np.int64), r["y"].astype(np.int64)
    mine = (r["bundle"] == bi) & (r["lane"] == i)
    t = (rx - end[0]) * tx + (ry - end[1]) * ty
    row = mine & (rx - t * tx == end[0]) & (ry - t * ty == end[1]) & (t >= 0)
    assert row.sum() == b.reach + 1
    before = np.flatnonzero(mine & (rx == end[0] - sx) & (ry == end[1] - sy))
    bit = next(PORT_BITS[d] for d, v in STEP.items() if v == (sx, sy))
    r["tx"][before] &= ~np.uint8(bit)
    # (the element's carrier named is the first lane whose box holds it: with
    # halos another lane's box may hold it too)
    with pytest.raises(SimError, match=r"PE \(\d+, \d+\) .*reads %.+, which never arrived "
                                       r"there \(lane \d+ of edge #\d+ .*carries it; the PE "
                                       r"holds no lane\)") as err:
        simulate(replace(p, routes=r[~row]), x)
    named = re.search(r"PE \((\d+), (\d+)\)", str(err.value))
    assert named is not None  # a PE of the row the shortened spine no longer reaches
    assert (int(named.group(1)), int(named.group(2))) in set(zip(rx[row].tolist(),
                                                                 ry[row].tolist(), strict=True))
