"""A windowed kernel's row boxes start at the pad above (window_dims' pt).

Why: the dims held only the pads' sum ph, so each row group's box started
ph rows above the rows its windows read (a 3x3 conv's one-row groups held 5
input rows for the 3 they read), its cut lanes were 5/3 as heavy, and
convs whose lanes that made too heavy were routed flat: their PEs read rows
no lane brought (issue 12). These tests hold the boxes to the executor's
windows (tight inside, never short), and compiled convs with asymmetric,
SAME and dilated pads to onnxruntime with every PE proven.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from conftest import compiled_graph
from onnx import TensorProto, helper, numpy_helper
from wsec.backends.format import BUNDLE_CUT
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_sharded import _conv_need
from wsec.ir.graph import Node
from wsec.ir.kernels import KINDS
from wsec.ir.library_conv import window_dims
from wsec.ir.opsem_core import pads

# (H, W, R, stride, dilation, pads [top, left, bottom, right] or an auto_pad, C, c, s)
CASES = [
    (17, 13, 3, 1, 1, [1, 1, 1, 1], 8, 2, 17),
    (19, 11, 3, 1, 2, [2, 2, 2, 2], 8, 4, 19),  # dilated: a halo of 4 rows
    (23, 9, 3, 2, 1, [1, 0, 0, 1], 6, 3, 12),  # strided, the pad above only
    (15, 15, 5, 1, 3, [0, 6, 6, 0], 4, 2, 3),  # dilated, the pad below only
    (21, 7, 4, 1, 1, [1, 2, 2, 1], 8, 8, 7),  # even window, more pad below
    (13, 13, 3, 3, 1, "SAME_LOWER", 5, 1, 5),
    (16, 10, 4, 2, 2, "SAME_UPPER", 8, 2, 8),
    (9, 9, 3, 1, 4, "VALID", 8, 4, 1),
]


def _node(R: int, st: int, dl: int, pad: list[int] | str) -> Node:
    attrs: dict[str, object] = {"kernel_shape": [R, R], "strides": [st, st],
                                "dilations": [dl, dl]}
    if isinstance(pad, str):
        attrs["auto_pad"] = pad
    else:
        attrs["pads"] = list(pad)
    return Node("conv", "Conv", ["x", "w"], ["y"], attrs)


def _out(H: int, R: int, st: int, dl: int, node: Node, W: int) -> tuple[int, int, int]:
    """(Ho, Wo, the pad above) as the executor computes them."""
    pb, pe = pads(node, [H, W], [R, R], [st, st], [dl, dl])
    Ho = (H + pb[0] + pe[0] - dl * (R - 1) - 1) // st + 1
    Wo = (W + pb[1] + pe[1] - dl * (R - 1) - 1) // st + 1
    return Ho, Wo, pb[0]


@pytest.mark.parametrize("case", CASES)
def test_conv_row_boxes_are_the_windows_the_executor_reads(case: tuple) -> None:
    """Every PE row's box (ConvKind.input_cut) holds the rows its group's
    windows read (sim_sharded._conv_need, the executor's check), and, but
    for the first and last groups (the pad clips them, or they take the
    rows no window reads), no more."""
    H, W, R, st, dl, pad, C, c, s = case
    node = _node(R, st, dl, pad)
    Ho, Wo, top = _out(H, R, st, dl, node, W)
    dims = window_dims(node, (1, C, H, W), (1, 8, Ho, Wo), (R, R), 2)
    assert dims["pt"] == top
    dims.update({"K": 8, "G": 1, "bias": 0})
    boxes = KINDS["conv"].input_cut(dims, {"k": 1, "c": c, "s": s}, (1, C, H, W))
    assert boxes is not None and boxes.shape == (c * s, 2, 4)
    need = _conv_need((1, C, H, W), c, s, -(-C // c), -(-Ho // s), st, R, dl, Ho, top)
    live = (need[:, 1] > need[:, 0]).all(axis=1)
    assert live.any()
    assert ((boxes[live, 0] <= need[live, 0]) & (need[live, 1] <= boxes[live, 1])).all()
    groups = np.flatnonzero(live.reshape(s, c).any(axis=1))
    inner = np.isin(np.arange(c * s) // c, groups[1:-1]) & live
    np.testing.assert_array_equal(boxes[inner], need[inner])


def test_conv_row_boxes_without_the_pad_above_stay_whole() -> None:
    """IR or binaries written before the dims said where the pad is (no
    pt): the boxes start ph rows early, as before, so they still hold the
    windows."""
    H, W, R = 17, 13, 3
    node = _node(R, 1, 1, [1, 1, 1, 1])
    dims = window_dims(node, (1, 8, H, W), (1, 8, H, W), (R, R), 2)
    dims.update({"K": 8, "G": 1, "bias": 0})
    del dims["pt"]
    boxes = KINDS["conv"].input_cut(dims, {"k": 1, "c": 1, "s": H}, (1, 8, H, W))
    assert boxes is not None
    assert (boxes[5:-2, 1, 2] - boxes[5:-2, 0, 2] == R + dims["ph"]).all()


def test_pool_row_boxes_start_at_the_pad_above() -> None:
    """A padded pooling's rows (PoolKind.input_cut): the rows its windows
    read, one-row groups of a 3x3 pool at pad 1 hold 3 input rows."""
    H, W = 15, 11
    node = Node("p", "MaxPool", ["x"], ["y"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    dims = window_dims(node, (1, 4, H, W), (1, 4, H, W), (3, 3), 2)
    dims.update({"glob": 0})
    boxes = KINDS["pool"].input_cut(dims, {"c": 1, "s": H}, (1, 4, H, W))
    assert boxes is not None
    rows = boxes[:, :, 2]
    assert rows[0].tolist() == [0, 2] and rows[-1].tolist() == [H - 2, H]
    np.testing.assert_array_equal(rows[1:-1, 0], np.arange(H - 2))
    assert (rows[1:-1, 1] - rows[1:-1, 0] == 3).all()


def _two_convs(name: str, C: int, H: int, W: int, second: dict) -> object:
    """x -> 3x3 conv (pad 1) -> Relu -> `second` conv: the second conv's
    input comes from a kernel, so its bundle is routed on the fabric."""
    rng = np.random.default_rng(7)
    R = second["kernel_shape"][0]
    inits = [numpy_helper.from_array(rng.standard_normal((C, 3, 3, 3)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((C, C, R, R)).astype(np.float32), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], **second)]
    st, dl = second.get("strides", [1])[0], second.get("dilations", [1])[0]
    Ho, Wo, _ = _out(H, R, st, dl, _node(R, st, dl, second.get("auto_pad") or second["pads"]),
                     W)
    return helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, Ho, Wo])], inits)


SMALL = {
    "dilated": (4, 19, 13, {"kernel_shape": [3, 3], "dilations": [2, 2], "pads": [2, 1, 2, 3]}),
    "strided": (8, 21, 11, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 0, 0, 1]}),
    "same": (6, 17, 9, {"kernel_shape": [4, 4], "auto_pad": "SAME_LOWER"}),
}


@pytest.fixture(scope="module")
def small_bins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, pathlib.Path]]:
    d = tmp_path_factory.mktemp("pads")
    return {name: compiled_graph(d, _two_convs(name, *spec)) for name, spec in SMALL.items()}


@pytest.mark.parametrize("name", list(SMALL))
def test_small_padded_convs_match_onnxruntime_every_pe_proven(small_bins, name: str) -> None:  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    p, path = small_bins[name]
    x = random_inputs(p, 0)
    res = simulate(p, x, strict=True)
    for k in p.kernels:
        if k.kind == "conv":
            assert res.kernel_stats[k.name]["forwarded_pes"] == 0, k.name
    ref = ort.InferenceSession(str(path)).run(None, {"x": x["x"]})[0]
    np.testing.assert_allclose(res.outputs["y"], ref, rtol=1e-4, atol=1e-4)


def _cut_into(p, kind: str) -> int:  # type: ignore[no-untyped-def]
    """The cut bundle from a kernel into the last kernel of `kind`."""
    ki = max(i for i, k in enumerate(p.kernels) if k.kind == kind)
    got = [i for i, b in enumerate(p.bundles)
           if int(b["sink"]) == ki and int(b["flags"]) & BUNDLE_CUT and int(b["edge"]) > 0]
    assert got, "the second conv's input is not cut"
    return got[0]


@pytest.mark.parametrize("name", list(SMALL))
def test_a_lane_short_of_its_last_row_is_an_error_at_a_pe(small_bins, name: str) -> None:  # type: ignore[no-untyped-def]
    """The boxes are tight: a lane that brings one input row less than its
    box (the last, where the next group's window starts) leaves a PE of
    its rows reading a row no lane brought, a SimError naming the PE."""
    p, _ = small_bins[name]
    bi = _cut_into(p, "conv")
    a, n = int(p.bundles["slice0"][bi]), int(p.bundles["lanes"][bi])
    rows = p.slices["stop"][a:a + n, 2] - p.slices["start"][a:a + n, 2]
    lane = int(np.flatnonzero(rows >= 2)[len(np.flatnonzero(rows >= 2)) // 2])
    p.slices["stop"][a + lane, 2] -= 1
    with pytest.raises(SimError, match=r"PE \(\d+, \d+\) .*reads %r\[.*never arrived there"):
        simulate(p, random_inputs(p, 0))


@pytest.mark.parametrize("name", list(SMALL))
def test_a_lane_short_of_its_first_row_is_an_error_at_a_pe(small_bins, name: str) -> None:  # type: ignore[no-untyped-def]
    """The boxes start where the windows do: a lane that starts one input
    row later than its box (an inner one: the first group's box starts at
    row 0, the pad above) leaves a PE of its rows reading a row no lane
    brought, a SimError naming the PE. Boxes that started the pads' sum
    above the rows read had that row to spare."""
    p, _ = small_bins[name]
    bi = _cut_into(p, "conv")
    a, n = int(p.bundles["slice0"][bi]), int(p.bundles["lanes"][bi])
    start, stop = p.slices["start"][a:a + n, 2], p.slices["stop"][a:a + n, 2]
    inner = np.flatnonzero((start > 0) & (stop - start >= 2))
    assert inner.size
    p.slices["start"][a + int(inner[inner.size // 2]), 2] += 1
    with pytest.raises(SimError, match=r"PE \(\d+, \d+\) .*reads %r\[.*never arrived there"):
        simulate(p, random_inputs(p, 0))
