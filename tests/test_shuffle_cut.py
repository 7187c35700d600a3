"""A permutation's data movement read from its lanes: a channel shuffle.

A data-movement kernel deals each output's elements over its PEs in the
order of their sources (wsec.ir.movement.block_owners, source_order), so a
PE row of a permutation (ShuffleNet's Reshape / Transpose / Reshape channel
shuffle, a transpose) copies one run of consecutive elements of its input:
over the input flattened its box is exact. Dealt in the output's order, a
row's block copied a strided set (one channel from each group) whose hull
held most of the input, in its shape, flattened or in the groups' view,
and its lanes were too heavy to cut. These tests check the dealing, the
kind's boxes, and that a compiled shuffle reads only its lanes, matches
onnxruntime, and that a lane dropped or two lanes' boxes swapped is a
SimError naming the PE.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from conftest import compiled_graph
from onnx import TensorProto, helper
from test_cut_kinds import _cut_sinks, dropped_lane_raises, swapped_end_lanes_raise
from wsec.backends.format import Program
from wsec.backends.sim import random_inputs, simulate
from wsec.ir.graph import Kernel, Node
from wsec.ir.lanes import box_elements, check_cut
from wsec.ir.library_rowwise import DatamoveKind
from wsec.ir.movement import TAG, Operands, block_owners, rows_read, source_order, sources
from wsec.run import onnx_reference

G, CG, H, W = 4, 6, 5, 5  # groups, channels per group, spatial
C = G * CG
SHAPE = (1, C, H, W)
NUMEL = C * H * W


def _shuffle_body() -> list[Node]:
    return [Node("r1", "Reshape", ["x", "s1"], ["a"]),
            Node("tr", "Transpose", ["a"], ["b"], {"perm": [0, 2, 1, 3, 4]}),
            Node("r2", "Reshape", ["b", "s2"], ["y"])]


CONSTS = {"s1": np.array([1, G, CG, H, W], np.int64), "s2": np.array(SHAPE, np.int64)}
SHAPES = {"x": SHAPE, "s1": (5,), "s2": (4,), "y": SHAPE}


def _tags() -> np.ndarray:
    tags = sources(_shuffle_body(), ["x"], SHAPES, CONSTS.get)
    assert tags is not None
    return tags["y"]


def test_source_order_is_the_identity_where_sources_ascend() -> None:
    t = TAG + np.arange(10, dtype=np.float64)
    np.testing.assert_array_equal(source_order(t), np.arange(10))
    # a reversal is dealt backwards; fills (no source) last, in the output's order
    rev = np.array([TAG + 2, -1.0, TAG + 1, TAG, 0.0])
    np.testing.assert_array_equal(source_order(rev), [2, 3, 1, 0, 4])
    # equal sources (a broadcast) keep the output's order among them
    dup = np.array([TAG + 1, TAG, TAG + 1, TAG])
    np.testing.assert_array_equal(source_order(dup), [2, 0, 3, 1])


@pytest.mark.parametrize("pes", [1, 7, 12, 30, NUMEL])
def test_a_shuffles_pes_copy_consecutive_elements_of_its_input(pes: int) -> None:
    t = _tags()
    owner = block_owners([t], pes)[0]
    n = -(-NUMEL // pes)
    src = (t - TAG).astype(np.int64)
    # PE i copies exactly the input elements [i n, (i + 1) n), n each at most
    np.testing.assert_array_equal(owner, src // n)
    assert np.bincount(owner).max() <= n


def test_a_shuffles_rows_are_exact_ranges_of_its_input_flattened() -> None:
    """Routed, the kind's boxes are over the input flattened, each row the
    range its PEs copy: they partition it (no element carried twice). In
    the value's shape the same rows' hulls span whole channels of several
    groups; dealt in the output's order they spanned most of the input."""
    k = Kernel("k0", "kernel", ["x"], ["y"], kind="datamove", dims={"E": NUMEL},
               body=_shuffle_body(), knobs={"c": 1, "h": 7})
    ops = Operands(lambda n: SHAPES[n], CONSTS.get, routed=True)
    kind = DatamoveKind()
    rows = kind.body_cut(k, "x", ops)
    assert kind.body_view(k, "x", ops) == (NUMEL,)
    assert rows is not None and rows.shape == (7, 2, 1)
    n = -(-NUMEL // 7)  # 86: rows straddle channels (25 elements each)
    np.testing.assert_array_equal(rows[:, :, 0], [[n * r, min(NUMEL, n * (r + 1))]
                                                  for r in range(7)])
    check_cut((NUMEL,), rows)
    assert int(box_elements(rows).sum()) == NUMEL
    # the output's order, as block_owners dealt it before: each row's hull is
    # heavier than the input's sixth it now reads
    t = _tags()
    by_output = np.zeros((7, 2, 1), np.int64)
    owner = np.arange(NUMEL) // n
    src = (t - TAG).astype(np.int64)
    for r in range(7):
        by_output[r, 0, 0], by_output[r, 1, 0] = src[owner == r].min(), src[owner == r].max() + 1
    assert int(box_elements(by_output).max()) > 2 * int(box_elements(rows).max())
    # held (no lanes), in the shape: still a cover of it
    check_cut(SHAPE, rows_read([t], 0, SHAPE, 7, 1))


# --- a compiled shuffle ---------------------------------------------------------------------
def shuffle_model() -> onnx.GraphProto:
    """A 4-group 1x1 conv, its channels shuffled, a depthwise 3x3 conv."""
    rng = np.random.default_rng(5)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (rng.standard_normal(shape) * 0.3).ravel().tolist())

    hw = 14
    inits = [init("w0", C, 8 // G, 1, 1), init("w1", C, 1, 3, 3),
             helper.make_tensor("s1", TensorProto.INT64, [5], [1, G, CG, hw, hw]),
             helper.make_tensor("s2", TensorProto.INT64, [4], [1, C, hw, hw])]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], group=G),
             helper.make_node("Relu", ["c0"], ["a"]),
             helper.make_node("Reshape", ["a", "s1"], ["r1"]),
             helper.make_node("Transpose", ["r1"], ["t"], perm=[0, 2, 1, 3, 4]),
             helper.make_node("Reshape", ["t", "s2"], ["sh"]),
             helper.make_node("Conv", ["sh", "w1"], ["y"], group=C, pads=[1, 1, 1, 1])]
    return helper.make_graph(
        nodes, "shuffle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, hw, hw])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, hw, hw])], inits)


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return compiled_graph(tmp_path_factory.mktemp("shuffle"), shuffle_model())


def _shuffle_input(p: Program) -> int:
    return next(bi for bi, ki in _cut_sinks(p).items() if p.kernels[ki].kind == "datamove"
                and any(b["op"] == "Transpose" for b in p.kernels[ki].body))


def test_a_compiled_shuffle_reads_only_its_lanes(shuffled: tuple[Program, pathlib.Path]
                                                 ) -> None:
    p, path = shuffled
    bi = _shuffle_input(p)
    assert int(p.bundles[bi]["lanes"]) > 1
    x = random_inputs(p, 0)
    res = simulate(p, x)  # a cut bundle: a PE reading what its lane did not bring raises
    assert res.kernel_stats[p.kernels[int(p.bundles[bi]["sink"])].name]["forwarded_pes"] == 0
    ref, _ = onnx_reference(str(path), x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-4, atol=1e-5)


def test_a_shuffles_lanes_dropped_or_swapped_are_errors_at_a_pe(
        shuffled: tuple[Program, pathlib.Path]) -> None:
    p, _ = shuffled
    bi = _shuffle_input(p)
    dropped_lane_raises(p, bi)
    swapped_end_lanes_raise(p, bi)
