"""Depthwise convs in channel bands and grouped convs stacked by groups (issue 12).

A conv's PE row receives one lane (the row multicast), so its box must be
what every PE of the row reads. In the k-column layout over all output
channels a depthwise row's PEs read disjoint channels and a grouped row's
PEs a G-th of the row's channels each, so those bundles stayed flat and
their reads unproven. A depthwise conv now lays its channels over rows in
bands, one PE wide (wsec.ir.library_conv.banded); a conv of more than two
groups stacks its groups over rows (library_conv.stacked): either way a
row's box is exactly its PEs' read. These tests check the boxes and the
owners, that a compiled model of both proves every read and matches
onnxruntime, and that swapping or dropping a lane is a SimError at a PE.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from conftest import compiled_graph
from onnx import TensorProto, helper
from test_cut_kinds import dropped_lane_raises, swapped_end_lanes_raise
from wsec.backends.format import BUNDLE_CUT, BUNDLE_FROM_HOST, Program
from wsec.backends.sim import random_inputs, simulate
from wsec.backends.sim_sharded import _conv_need
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import box_elements, check_cut
from wsec.ir.library_conv import banded, stacked
from wsec.ir.target import get_target
from wsec.run import compare, onnx_reference

CONV = KINDS["conv"]
CONV_TARGET = get_target("wse2")


def _dims(C: int, G: int, K: int, H: int = 12, R: int = 3, sh: int = 1) -> dict[str, int]:
    Ho = (H + 2 * (R // 2) - R) // sh + 1
    ph = max(0, (Ho - 1) * sh + R - H)
    return {"N": 1, "C": C, "H": H, "W": H, "K": K, "R": R, "S": R, "G": G, "sh": sh,
            "sw": sh, "dh": 1, "dw": 1, "ph": ph, "pw": ph, "Ho": Ho, "Wo": Ho, "bias": 1,
            "F": 0, "A": 0, "P": 0}


def test_layout_choice() -> None:
    assert banded(_dims(16, 16, 16)) and banded(_dims(16, 16, 32))  # depthwise, multiplier
    assert not stacked(_dims(16, 16, 16))
    assert stacked(_dims(16, 4, 16)) and not banded(_dims(16, 4, 16))
    assert not stacked(_dims(16, 2, 16)) and not banded(_dims(16, 2, 16))  # the view's
    assert not banded(_dims(16, 1, 16)) and not stacked(_dims(16, 1, 16))
    assert not banded({**_dims(16, 16, 16), "pool": 1})  # a fused pooling keeps k columns
    kn = CONV.knob_grid(_dims(16, 4, 32), CONV_TARGET)
    assert kn["k"].max() <= 8  # a group's 8 output channels


@pytest.mark.parametrize("C, m, c, s, sh", [(16, 1, 5, 3, 1), (12, 2, 4, 2, 2), (8, 1, 8, 12, 1)])
def test_a_band_rows_box_is_its_pes_read(C: int, m: int, c: int, s: int, sh: int) -> None:
    d, kn = _dims(C, C, C * m, sh=sh), {"k": 1, "c": c, "s": s}
    shape = (1, C, 12, 12)
    w, h = CONV.shape(d, kn, CONV_TARGET)
    assert (w, h) == (1, c * s)
    boxes = CONV.input_cut(d, kn, shape)
    assert boxes.shape == (c * s, 2, 4)
    check_cut(shape, boxes)  # inside the value, covering it
    cb = -(-C // c)
    need = _conv_need(shape, c, s, cb, -(-d["Ho"] // s), sh, 3, 1, d["Ho"], 1)
    for py in range(c * s):
        live = (need[py, 1] > need[py, 0]).all()
        if live:  # the PE's window lies in its row's box, all of the box's channels read
            assert (boxes[py, 0] <= need[py, 0]).all() and (need[py, 1] <= boxes[py, 1]).all()
            assert boxes[py, :, 1].tolist() == need[py, :, 1].tolist()
    own = CONV.output_rows(d, kn, (1, C * m, d["Ho"], d["Wo"]))
    assert box_elements(own).sum() == C * m * d["Ho"] * d["Wo"]  # disjoint, every row owns
    check_cut((1, C * m, d["Ho"], d["Wo"]), own)
    assert CONV.reduction_chain(d, kn) == 1


@pytest.mark.parametrize("C, G, K, k, c, s", [(16, 4, 16, 2, 2, 3), (24, 3, 12, 4, 3, 2),
                                               (12, 4, 8, 1, 2, 1)])
def test_a_stacked_rows_box_is_its_groups_block(C: int, G: int, K: int, k: int, c: int,
                                                  s: int) -> None:
    d, kn = _dims(C, G, K, R=1), {"k": k, "c": c, "s": s}
    shape = (1, C, 12, 12)
    assert CONV.shape(d, kn, CONV_TARGET) == (k, G * c * s)
    boxes = CONV.input_cut(d, kn, shape)
    check_cut(shape, boxes)
    cg, step = C // G, -(-(C // G) // c)
    for py in range(G * c * s):
        q, b = divmod(py % (G * c), c)
        lo, hi = boxes[py, :, 1]
        if (boxes[py, 1] > boxes[py, 0]).all():  # one block of one group
            assert (lo, hi) == (q * cg + b * step, q * cg + min(cg, (b + 1) * step))
    own = CONV.output_rows(d, kn, (1, K, 12, 12))
    assert box_elements(own).sum() == K * 144  # the groups' reduction-end rows own all
    owners = np.flatnonzero((own[:, 1] > own[:, 0]).all(axis=1))
    assert (owners % c == c - 1).all()
    assert CONV.reduction_chain(d, kn) == c
    # every PE's weight shard: its group's output block x its row's input block
    wshape = (K, cg, 1, 1)
    count = np.zeros(wshape, np.int64)
    for py in range(G * c):
        for px in range(k):
            sl = CONV.weight_shard(d, kn, 0, wshape, px, py)
            count[sl] += 1
            q = (py % (G * c)) // c
            assert q * (K // G) <= sl[0].start and sl[0].stop <= (q + 1) * (K // G) \
                or sl[0].start == sl[0].stop
    assert (count == 1).all()


def _graph() -> onnx.GraphProto:
    """A ShuffleNet-like unit after a 3x3 conv: a 1x1 conv of 4 groups, a
    depthwise 3x3 (bias), a strided depthwise with multiplier 2, a 1x1 conv
    of 4 groups."""
    rng = np.random.default_rng(7)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (rng.standard_normal(shape) * 0.3).ravel().tolist())

    nd = helper.make_node
    nodes = [nd("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             nd("Relu", ["c0"], ["r0"]),
             nd("Conv", ["r0", "w1"], ["c1"], group=4),
             nd("Relu", ["c1"], ["r1"]),
             nd("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=32),
             nd("Conv", ["c2", "w3"], ["c3"], pads=[1, 1, 1, 1], strides=[2, 2], group=32),
             nd("Relu", ["c3"], ["r3"]),
             nd("Conv", ["r3", "w4"], ["y"], group=4)]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, "bands", [vi("x", TensorProto.FLOAT, [1, 16, 28, 28])],
                          [vi("y", TensorProto.FLOAT, [1, 32, 14, 14])],
                          [init("w0", 16, 16, 3, 3), init("w1", 32, 4, 1, 1),
                           init("w2", 32, 1, 3, 3), init("b2", 32), init("w3", 64, 1, 3, 3),
                           init("w4", 32, 16, 1, 1)])
    return g


@pytest.fixture(scope="module")
def bands(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return compiled_graph(tmp_path_factory.mktemp("bands"), _graph())


def _cut_into(p: Program, test, host: bool = True) -> list[int]:
    """Cut bundles (more than one lane) into conv kernels whose dims pass
    `test` (with host False: none from the host, whose I/O map is checked
    on its own)."""
    out = []
    for bi in range(len(p.bundles)):
        ki, flags = int(p.bundles[bi]["sink"]), int(p.bundles[bi]["flags"])
        if ki >= 0 and flags & BUNDLE_CUT and p.kernels[ki].kind == "conv" \
                and test(p.kernels[ki].dims) and int(p.bundles[bi]["lanes"]) > 1 \
                and (host or not flags & BUNDLE_FROM_HOST):
            out.append(bi)
    return out


def test_bands_and_stacks_read_only_their_lanes(bands: tuple[Program, pathlib.Path]) -> None:
    p, model = bands
    convs = [k for k in p.kernels if k.kind == "conv"]
    assert sum(banded(k.dims) for k in convs) == 2 and sum(stacked(k.dims) for k in convs) == 2
    assert sum(not banded(k.dims) and not stacked(k.dims) for k in convs) == 1
    assert all(k.knobs["k"] == 1 for k in convs if banded(k.dims))
    assert _cut_into(p, banded) and _cut_into(p, stacked)
    x = random_inputs(p, 3)
    res = simulate(p, x)
    want, _ = onnx_reference(str(model), x)
    assert compare("y", res.outputs["y"], want["y"]).ok
    for bi in _cut_into(p, lambda d: banded(d) or stacked(d)):
        name = p.kernels[int(p.bundles[bi]["sink"])].name
        assert res.kernel_stats[name]["forwarded_pes"] == 0, name


@pytest.mark.parametrize("layout", [banded, stacked])
def test_swapping_two_lanes_is_an_error_at_a_pe(bands: tuple[Program, pathlib.Path],
                                                layout) -> None:
    p, _ = bands
    bi = _cut_into(p, layout, host=False)[0]
    swapped_end_lanes_raise(p, bi)


@pytest.mark.parametrize("layout", [banded, stacked])
def test_a_dropped_lane_is_an_error_naming_the_pe(bands: tuple[Program, pathlib.Path],
                                                  layout) -> None:
    p, _ = bands
    bi = _cut_into(p, layout, host=False)[0]
    dropped_lane_raises(p, bi)
