"""Pool and norm rows cut over the value flattened (issue 12).

A pooling's or norm's PEs stand in a grouped layout whose PE rows hold
consecutive PE indices (channel block i // s, row group i % s). Where s is
not a multiple of a row's width, a row takes the last row groups of one
channel block and the first of the next; in (N, C, H, W) its box was both
channels' whole maps (ZFNet-512's pooling: 2 x 109 x 109 elements on a row
whose share is 2,228), so no pitch's lanes were light enough and its PEs
read outside their flat lanes. Flattened, such a row's reads are one range.
The kinds declare the flattened view where their rows' boxes hold fewer
elements in all there (wsec.ir.cuts.tighter_flat). These tests check the
boxes, that a compiled pooling cut over the view proves every read and
matches onnxruntime, and that swapping or dropping a lane is a SimError at
a PE.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from conftest import compiled_graph
from onnx import TensorProto, helper
from test_cut_kinds import dropped_lane_raises, swapped_end_lanes_raise
from wsec.backends.format import BUNDLE_CUT, Program
from wsec.backends.sim import random_inputs, simulate
from wsec.ir.cuts import flat_reads, grouped_rows, tighter_flat
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import box_elements, check_cut
from wsec.ir.library_common import MAX_COLUMN
from wsec.run import compare, onnx_reference

POOL, NORM = KINDS["pool"], KINDS["norm"]


def _pool_dims(C: int, H: int) -> dict[str, int]:
    Ho = (H - 3) // 2 + 1
    return {"N": 1, "C": C, "H": H, "W": H, "R": 3, "S": 3, "sh": 2, "sw": 2, "dh": 1,
            "dw": 1, "ph": 0, "pw": 0, "Ho": Ho, "Wo": Ho, "glob": 0, "F": 0, "A": 0, "P": 0}


def test_flat_reads_are_the_boxes_first_to_last_element() -> None:
    boxes = np.array([[[0, 1, 2, 0], [1, 2, 4, 5]],    # exact: whole rows of one channel
                      [[0, 1, 3, 1], [1, 3, 4, 2]],    # a superset: strided elements
                      [[0, 0, 0, 0], [0, 0, 0, 0]]])   # empty
    got = flat_reads(boxes, (1, 3, 4, 5))
    assert got[:, :, 0].tolist() == [[30, 40], [36, 57], [0, 0]]


def test_a_pool_of_one_channel_per_block_is_cut_flat_and_exact() -> None:
    C, H, s = 96, 109, 9
    d, kn = _pool_dims(C, H), {"c": C, "s": s}
    shape = (1, C, H, H)
    numel = int(np.prod(shape))
    assert POOL.input_view(d, kn, shape) == (numel,)
    rows = POOL.input_cut(d, kn, shape)
    held = POOL.held_cut(d, kn, shape)
    assert rows.shape == (MAX_COLUMN, 2, 1) and held.shape == (MAX_COLUMN, 2, 4)
    check_cut((numel,), rows)  # the flat boxes cover the value
    check_cut(shape, held)
    # the straddling rows' boxes were both channels' maps; flat they are one range each
    assert box_elements(held).max() == 2 * H * H
    straddle = box_elements(held) > 2 * H * H - 1
    assert straddle.sum() > 30  # the rows of two PEs whose blocks differ
    # flattened, a straddling row holds its PEs' rows (13 + 13 of 109), no whole maps
    assert box_elements(rows)[straddle].tolist() == [26 * H] * int(straddle.sum())
    assert box_elements(rows)[~straddle].tolist() == box_elements(held)[~straddle].tolist()
    # every PE's window (its channel's rows, flattened) lies in its row's range
    pe = POOL._pe_boxes(d, kn, shape)
    per_row = grouped_rows(flat_reads(pe, shape), MAX_COLUMN)
    assert (per_row == rows).all()


def test_a_pool_whose_blocks_span_channels_keeps_its_shape() -> None:
    d, kn = _pool_dims(96, 109), {"c": 16, "s": 54}  # 6 channels per block: flat spans 6 maps
    shape = (1, 96, 109, 109)
    assert POOL.input_view(d, kn, shape) is None
    assert (POOL.input_cut(d, kn, shape) == POOL.held_cut(d, kn, shape)).all()
    assert not tighter_flat(POOL._pe_boxes(d, kn, shape), shape, MAX_COLUMN)


@pytest.mark.parametrize("op, L, flat", [("LRN", 5, False), ("BatchNormalization", 1, True)])
def test_a_norm_row_straddling_channels(op: str, L: int, flat: bool) -> None:
    """One channel per group, 109 row groups on rows of two PEs: a
    BatchNormalization's straddling rows read one range flattened; an LRN's
    PEs read their neighbours' channels too, which the flat range would
    hold whole: it keeps its shape."""
    C, H = 96, 109
    d = {"N": 1, "C": C, "H": H, "W": H, "O": 13 if L > 1 else 2, "L": L, "Pc": 0 if L > 1 else 4,
         "Pr": 0, "F": 0, "A": 0, "P": 0}
    kn = {"c": C, "s": H, "r": 1}
    shape = (1, C, H, H)
    view = NORM.input_view(d, kn, shape)
    assert (view is not None) == flat
    rows = NORM.input_cut(d, kn, shape)
    check_cut(view or shape, rows)
    held = NORM.held_cut(d, kn, shape)
    check_cut(shape, held)
    if flat:
        assert box_elements(rows).sum() < box_elements(held).sum()
    own = NORM.output_rows(d, kn, shape)  # the tail's operands: in the value's own shape
    assert own.shape[2] == 4


def _graph() -> onnx.GraphProto:
    """An LRN of one channel per group feeding a 3x3 / 2 max pooling: the
    pooling's 96 channel blocks x row groups stand in rows of two PEs."""
    nd = helper.make_node
    vi = helper.make_tensor_value_info
    g = helper.make_graph([nd("LRN", ["x"], ["r"], size=5),
                           nd("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2])],
                          "flat", [vi("x", TensorProto.FLOAT, [1, 96, 109, 109])],
                          [vi("y", TensorProto.FLOAT, [1, 96, 54, 54])])
    return g


@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return compiled_graph(tmp_path_factory.mktemp("flat"), _graph())


def _flat_cut(p: Program) -> int:
    """The cut bundle into the pooling, over the value flattened."""
    for bi in range(len(p.bundles)):
        ki = int(p.bundles[bi]["sink"])
        if ki >= 0 and p.kernels[ki].kind == "pool" and int(p.bundles[bi]["flags"]) & BUNDLE_CUT:
            assert len(p.lane_view(bi)) == 1
            return bi
    raise AssertionError("no cut bundle into the pooling")


def test_a_pool_cut_flat_proves_its_reads(flat: tuple[Program, pathlib.Path]) -> None:
    p, model = flat
    bi = _flat_cut(p)
    assert int(p.bundles[bi]["lanes"]) > 1
    x = random_inputs(p, 2)
    res = simulate(p, x)
    want, _ = onnx_reference(str(model), x)
    assert compare("y", res.outputs["y"], want["y"]).ok
    name = p.kernels[int(p.bundles[bi]["sink"])].name
    assert res.kernel_stats[name]["forwarded_pes"] == 0


def test_swapping_two_flat_lanes_is_an_error_at_a_pe(flat: tuple[Program, pathlib.Path]
                                                     ) -> None:
    p, _ = flat
    bi = _flat_cut(p)
    swapped_end_lanes_raise(p, bi)


def test_a_dropped_flat_lane_is_an_error_naming_the_pe(flat: tuple[Program, pathlib.Path]
                                                       ) -> None:
    p, _ = flat
    bi = _flat_cut(p)
    dropped_lane_raises(p, bi)
