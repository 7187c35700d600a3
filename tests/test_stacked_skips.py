"""Residuals spread over the reduction rows of a conv stacked by groups (issue 12).

A grouped conv of more than two groups stacks its groups over rows
(wsec.ir.library_conv.stacked): group q's c rows of a row group reduce its
partial sums, the last of them owning q's K/G output channels. A residual
that a chain of Adds adds into the output was cut onto those owner rows
alone (one of every c, pitch c) with all of a group's channels per lane:
heavy, ShuffleNet's were flattened by the router and their reads went
unproven. Now each of group q's c rows adds a c-th of q's channels as the
sums pass (skip_boxes with G; sim_sharded._conv2d_stacked), an ordinary
per-row cut. These tests check the boxes, that a compiled stacked conv with
a residual cuts it so and matches onnxruntime, and that swapping or
dropping one of its lanes is a SimError at a PE.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from conftest import compiled_graph
from onnx import TensorProto, helper
from test_cut_kinds import dropped_lane_raises, swapped_end_lanes_raise
from wsec.backends.format import BUNDLE_CUT, BUNDLE_OWNERS, Program
from wsec.backends.sim import random_inputs, simulate
from wsec.ir.graph import Node
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import box_elements, check_cut
from wsec.ir.library_conv import skip_boxes, stack_owners, stacked
from wsec.run import compare, onnx_reference

CONV = KINDS["conv"]


@pytest.mark.parametrize("N, K, G, Ho, Wo, c, s", [(1, 16, 4, 12, 12, 2, 3),
                                                    (1, 240, 4, 28, 28, 6, 28),
                                                    (2, 24, 3, 7, 5, 4, 2)])
def test_a_stacked_groups_rows_partition_its_owner_box(N: int, K: int, G: int, Ho: int, Wo: int,
                                                       c: int, s: int) -> None:
    boxes = skip_boxes(N, K, Ho, Wo, c, s, G)
    assert boxes.shape == (G * c * s, 2, 4)
    check_cut((N, K, Ho, Wo), boxes)
    assert box_elements(boxes).sum() == N * K * Ho * Wo  # disjoint
    owners = stack_owners(N, K, G, Ho, Wo, c, s)
    for py in range(G * c * s):
        own = owners[(py // c) * c + c - 1]  # the owner row of py's group
        if not (own[1] > own[0]).all():
            assert not boxes[py].any()
            continue
        # inside its group's owner box, a c-th of its channels, all of its rows
        assert (own[0] <= boxes[py, 0]).all() and (boxes[py, 1] <= own[1]).all()
        assert boxes[py][:, [0, 2, 3]].tolist() == own[:, [0, 2, 3]].tolist()
    assert (skip_boxes(N, K, Ho, Wo, c, s, 1) == skip_boxes(N, K, Ho, Wo, c, s)).all()


def _graph() -> onnx.GraphProto:
    """A ShuffleNet-like unit: 3x3 conv, 4-group 1x1 conv, depthwise 3x3, a
    4-group 1x1 conv (bias) adding the first conv's output back."""
    rng = np.random.default_rng(3)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (rng.standard_normal(shape) * 0.3).ravel().tolist())

    C = 48
    nd = helper.make_node
    nodes = [nd("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]), nd("Relu", ["c0"], ["r0"]),
             nd("Conv", ["r0", "w1", "b1"], ["c1"], group=4), nd("Relu", ["c1"], ["r1"]),
             nd("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=C),
             nd("Conv", ["c2", "w3", "b3"], ["c3"], group=4),
             nd("Add", ["c3", "r0"], ["a"]), nd("Relu", ["a"], ["y"])]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "stack", [vi("x", TensorProto.FLOAT, [1, 8, 56, 56])],
                          [vi("y", TensorProto.FLOAT, [1, C, 56, 56])],
                          [init("w0", C, 8, 3, 3), init("w1", C, C // 4, 1, 1), init("b1", C),
                           init("w2", C, 1, 3, 3), init("w3", C, C // 4, 1, 1),
                           init("b3", C)])
    return g


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return compiled_graph(tmp_path_factory.mktemp("stacked"), _graph())


def _skip_cut(p: Program) -> int:
    """The cut bundle of the residual %r0 into the stacked conv."""
    for bi in range(len(p.bundles)):
        ki, flags = int(p.bundles[bi]["sink"]), int(p.bundles[bi]["flags"])
        if ki >= 0 and p.edges[int(p.bundles[bi]["edge"])].value == "r0" \
                and stacked(p.kernels[ki].dims) and flags & BUNDLE_CUT:
            return bi
    raise AssertionError("the residual is not cut into the stacked conv")


def test_the_residual_is_cut_over_every_reduction_row(unit: tuple[Program, pathlib.Path]
                                                      ) -> None:
    p, model = unit
    bi = _skip_cut(p)
    assert not int(p.bundles[bi]["flags"]) & BUNDLE_OWNERS  # every row, not the owners
    k = p.kernels[int(p.bundles[bi]["sink"])]
    d, kn = k.dims, k.knobs
    boxes = p.lane_boxes(bi)
    rows = skip_boxes(*(int(d[n]) for n in ("N", "K", "Ho", "Wo")), int(kn["c"]), int(kn["s"]),
                      int(d["G"]))
    # each lane's box is the bounding box of its rows' boxes: no more than a group's block
    assert box_elements(boxes).max() <= box_elements(rows).max() * int(p.bundles[bi]["pitch"])
    x = random_inputs(p, 1)
    res = simulate(p, x)
    want, _ = onnx_reference(str(model), x)
    assert compare("y", res.outputs["y"], want["y"]).ok


def test_swapping_two_residual_lanes_is_an_error_at_a_pe(unit: tuple[Program, pathlib.Path]
                                                         ) -> None:
    p, _ = unit
    bi = _skip_cut(p)
    swapped_end_lanes_raise(p, bi)


def test_a_dropped_residual_lane_is_an_error_naming_the_pe(unit: tuple[Program, pathlib.Path]
                                                           ) -> None:
    p, _ = unit
    bi = _skip_cut(p)
    dropped_lane_raises(p, bi)


def test_spread_needs_a_channel_per_row_of_a_group() -> None:
    d = {"N": 1, "C": 16, "H": 8, "W": 8, "K": 8, "R": 1, "S": 1, "G": 4, "sh": 1, "sw": 1,
         "dh": 1, "dw": 1, "ph": 0, "pw": 0, "Ho": 8, "Wo": 8, "bias": 0, "F": 0, "A": 1,
         "P": 0}
    body = [Node("c", "Conv", ["x", "w"], ["y0"], {}), Node("a", "Add", ["y0", "r"], ["y"], {})]

    def shape(v: str) -> tuple[int, ...]:
        return (1, 8, 8, 8)
    assert stacked(d)
    assert CONV.spread_operands(d, {"k": 1, "c": 2, "s": 2}, body, ["y"], shape) == ["r"]
    # 3 rows per group, 2 channels per group: a row would read none
    assert CONV.spread_operands(d, {"k": 1, "c": 3, "s": 2}, body, ["y"], shape) == []
