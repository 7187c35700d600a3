"""An LRN's PEs in a row-major snake (NormKind.cells): a PE row holds
neighbouring channel groups of one row group, so a cut lane carries one
channel halo for all of its PEs, and a row straddling two row groups holds
the same channels of both. The kind declares those boxes, the executor
(sim_channels.lrn) reads only them, and a wrong lane is an error at a PE.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_cut_kinds import (
    _compile_wide,
    _cut_sinks,
    dropped_lane_raises,
    runs_from_its_lanes,
    swapped_end_lanes_raise,
)
from wsec.backends.format import Program
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.ir.cuts import grouped_rows
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import box_elements, check_cut, union_boxes
from wsec.ir.library_common import MAX_COLUMN
from wsec.ir.library_rowwise import _norm_boxes

NORM = KINDS["norm"]


def _lrn_dims(C: int, H: int, L: int = 5) -> dict[str, int]:
    return {"N": 1, "C": C, "H": H, "W": H, "O": L + 8 if L > 1 else 2, "L": L,
            "Pc": 0 if L > 1 else 4, "Pr": 0, "F": 0, "A": 0, "P": 0}


@pytest.mark.parametrize("C, H, c, s", [(96, 54, 96, 9), (64, 55, 8, 55), (8, 16, 8, 16),
                                        (7, 5, 3, 4)])
def test_cells_deal_every_channel_group_and_row_once(C: int, H: int, c: int, s: int) -> None:
    d, kn = _lrn_dims(C, H), {"c": c, "s": s, "r": 1}
    group, row = NORM.cells(d, kn)
    assert sorted(zip(group.tolist(), row.tolist(), strict=True)) == [
        (g, j) for g in range(c) for j in range(s)]
    assert (NORM.pe_index(d, kn, group, row) == np.arange(c * s)).all()


def _busiest_lane(rows: np.ndarray, k: int) -> int:
    h = rows.shape[0]
    return int(box_elements(union_boxes(rows.reshape(h // k, k, 2, -1))).max())


def test_an_alexnet_lrns_lanes_carry_one_halo() -> None:
    """AlexNet's LRN: one channel per group, 9 row groups of 6 rows, in
    rows of two PEs. Channel-major, a lane of 4 rows (8 PEs) straddles two
    channels and spans every input row of both (6 x 54 x 54); in the snake
    it holds 8 neighbouring channels plus the window's 4 of one row group
    (or two row groups' same few channels where it straddles them)."""
    C, H, c, s = 96, 54, 96, 9
    d, kn = _lrn_dims(C, H), {"c": c, "s": s, "r": 1}
    shape = (1, C, H, H)
    snake = NORM.input_cut(d, kn, shape)
    assert NORM.input_view(d, kn, shape) is None
    check_cut(shape, snake)
    i = np.arange(c * s)
    major = grouped_rows(_norm_boxes(d, kn, shape, i // s, i % s), MAX_COLUMN)
    assert _busiest_lane(snake, 4) <= 12 * 6 * H
    assert _busiest_lane(major, 4) >= 6 * H * H
    # the output stays where its PEs computed it: the rows own a partition
    own = NORM.output_rows(d, kn, shape)
    assert box_elements(own).sum() == C * H * H
    check_cut(shape, own)


def test_norms_without_a_window_keep_channel_major() -> None:
    """A BatchNormalization reads no neighbour channels: its cells stay
    channel-major (and so its binaries)."""
    d, kn = _lrn_dims(96, 54, L=1), {"c": 96, "s": 9, "r": 1}
    group, row = NORM.cells(d, kn)
    i = np.arange(96 * 9)
    assert (group == i // 9).all() and (row == i % 9).all()


def _lrn_model(path: pathlib.Path) -> None:
    rng = np.random.default_rng(1)
    w = helper.make_tensor("w", TensorProto.FLOAT, [8, 3, 3, 3],
                           (rng.random((8, 3, 3, 3)) * 0.1).astype(np.float32).ravel().tolist())
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["cv"], pads=[1, 1, 1, 1]),
                           helper.make_node("LRN", ["cv"], ["y"], size=5)], "lrn",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, path)


@pytest.fixture(scope="module")
def snaked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path, int]:
    """A conv feeding an LRN of 8 channel groups x 16 row groups in one
    column: its cells snake and its input is cut (lanes of several rows)."""
    p, path = _compile_wide(tmp_path_factory.mktemp("snake"), _lrn_model)
    bi = next(b for b, ki in _cut_sinks(p).items() if p.kernels[ki].kind == "norm")
    k = p.kernels[_cut_sinks(p)[bi]]
    group, _ = NORM.cells(k.dims, k.knobs)
    assert not (group == np.arange(group.size) // int(k.knobs["s"])).all()  # snaked
    assert int(p.bundles[bi]["lanes"]) > 1
    return p, path, bi


def test_a_snaked_lrn_reads_only_its_lanes(snaked: tuple[Program, pathlib.Path, int]) -> None:
    p, path, bi = snaked
    runs_from_its_lanes(p, path, [int(p.bundles[bi]["sink"])])


def test_swapping_a_snaked_lrns_lanes_is_an_error_at_a_pe(
        snaked: tuple[Program, pathlib.Path, int]) -> None:
    p, _, bi = snaked
    swapped_end_lanes_raise(p, bi, r"0, 0")


def test_dropping_a_snaked_lrns_lane_is_an_error(
        snaked: tuple[Program, pathlib.Path, int]) -> None:
    p, _, bi = snaked
    dropped_lane_raises(p, bi)


def test_a_snaked_lrn_read_channel_major_is_an_error(
        snaked: tuple[Program, pathlib.Path, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """The executor takes each PE's cell from the kind: were it to run the
    PEs channel-major on the snake's lanes, PEs would read channels their
    lanes never brought: the cut lanes are a proof, an error at the PE."""
    p, _, bi = snaked
    k = p.kernels[int(p.bundles[bi]["sink"])]
    n = int(k.knobs["c"]) * int(k.knobs["s"])
    i = np.arange(n)
    monkeypatch.setattr(type(NORM), "cells",
                        lambda self, d, kn: (i // int(kn["s"]), i % int(kn["s"])))
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \(norm\): PE \(\d+, \d+\) .*"
                                       r"reads %\w+\[.*never arrived there"):
        simulate(p, random_inputs(p, 0))
