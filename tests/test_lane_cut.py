"""Cut bundles: lanes that carry the box their sink's PE row reads.

A kind declares per PE row the box of its data input the row reads
(KernelKind.input_cut); a bundle with one lane per row can carry exactly
those boxes (wsec.ir.lanes), so the row multicast alone delivers every PE
its window. The binary stores the boxes (LANES slice records), the loader
checks they cover the value, and the simulator checks each PE's window
against the box of the lane its core received (sim_inbox.check_windows).
"""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
import sim_zoo
from conftest import compiled_light
from wsec.backends.emit import write_binary
from wsec.backends.format import BUNDLE_CUT, SLICE_DTYPE, FormatError
from wsec.backends.lanes import check_records
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_inbox import Delivery, check_windows
from wsec.backends.sim_sharded import _conv_need
from wsec.backends.sim_stats import format_stats
from wsec.driver import CompileOptions, compile_model
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import LaneError, check_cut, cut_counts, lane_slices


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


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("cut")
    sim_zoo.cnn_model(d / "cnn.onnx")
    write_binary(compile_model(str(d / "cnn.onnx"), CompileOptions()).module, str(d / "c.bin"))
    return d / "c.bin"


def test_loader_checks_a_cut_bundles_boxes(cnn: pathlib.Path) -> None:
    p = load_binary(str(cnn))
    bi = next(i for i, b in enumerate(p.bundles)
              if int(b["sink"]) >= 0 and int(b["flags"]) == 0 and p.kernels[int(b["sink"])].kind
              == "conv")
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
def test_resnet50_cut_bundles_carry_each_rows_window(tmp_path: pathlib.Path) -> None:
    m = compiled_light("resnet50").module
    assert any(b.cut for e in m.edges for b in e.bundles or ())
    path = str(tmp_path / "r.bin")
    write_binary(m, path)
    p = load_binary(path)
    x = random_inputs(p, 0)
    res = simulate(p, x)
    stats = res.kernel_stats
    cut = [int(b["sink"]) for b in p.bundles if int(b["flags"]) & BUNDLE_CUT]
    assert all(stats[p.kernels[ki].name]["forwarded_pes"] == 0 for ki in cut)
    # every cut kernel is among those reading only their lanes (so may be a
    # kernel whose one flat lane carries its whole input)
    proven = re.search(r"(\d+) read only what their lanes delivered", format_stats(p, res))
    assert proven is not None and int(proven.group(1)) >= len(set(cut))
    # shorten a halo: a lane whose last row another lane carries too loses it
    convs = [i for i, b in enumerate(p.bundles) if int(b["flags"]) & BUNDLE_CUT
             and p.kernels[int(b["sink"])].kind == "conv"]  # [N, C, H, W] boxes
    for bi in convs:
        boxes = p.lane_boxes(bi)
        assert boxes is not None
        shape = tuple(int(v) for v in boxes[:, 1].max(axis=0))
        count = cut_counts(shape, boxes)
        for lane, (lo, hi) in enumerate(zip(boxes[:, 0], boxes[:, 1], strict=True)):
            if hi[2] - lo[2] > 1 and count[lo[0], lo[1], hi[2] - 1, lo[3]] > 1:
                p.slices["stop"][int(p.bundles[bi]["slice0"]) + lane, 2] -= 1
                with pytest.raises(SimError, match=r"PE \(.*reads .*never arrived there"):
                    simulate(p, x)
                return
    # no halo (1x1 convs): the shortened lane leaves a gap the routers report
    bi = convs[0]
    p.slices["stop"][int(p.bundles[bi]["slice0"]), 2] -= 1
    with pytest.raises(SimError, match=r"no lane carries element .*a gap"):
        simulate(p, x)
