"""Padding channel blocks of the conv kind (wsec.ir.library_conv.ConvKind):
a conv with few input channels (an image's three) may take more reduction
rows than it has channels, so that it can be raised to the rows of the
consumer that cuts its output (wsec.passes.place_rows) and that
consumer's lanes land uniform."""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from wsec.backends.emit import write_binary
from wsec.backends.loader import load_binary
from wsec.backends.sim import random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.ir.graph import Kernel
from wsec.ir.kernels import KINDS, gaps
from wsec.ir.library_conv import channel_row_boxes
from wsec.ir.sizing import kernel_choices, shapes_at_width
from wsec.ir.target import get_target


def _dims(C: int, K: int, H: int) -> dict[str, int]:
    """A 3x3 conv, stride 1, padding 1, of a (1, C, H, H) input."""
    return {"N": 1, "C": C, "H": H, "W": H, "R": 3, "S": 3, "sh": 1, "sw": 1, "dh": 1,
            "dw": 1, "ph": 2, "pw": 2, "Ho": H, "Wo": H, "K": K, "G": 1, "bias": 0, "F": 0,
            "A": 0, "P": 0}


def _live(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 1] > boxes[:, 0]).all(axis=1)


def test_a_padding_row_declares_one_element_of_its_groups_last_block() -> None:
    """c = 4 blocks of 3 channels: the fourth row of every row group has no
    channel; it declares the first element of the third row's box (one
    wavelet, inside the box of the row before it), so the rows read with
    no gaps."""
    kind = KINDS["conv"]
    shape = (1, 3, 8, 8)
    rows = kind.input_cut(_dims(3, 8, 8), {"k": 2, "c": 4, "s": 4}, shape)
    assert rows is not None and rows.shape[0] == 16
    assert _live(rows).all() and not gaps(rows)
    pad, last = rows[3::4], rows[2::4]
    assert (np.prod(pad[:, 1] - pad[:, 0], axis=1) == 1).all()
    assert (pad[:, 0] == last[:, 0]).all() and (pad[:, 1] <= last[:, 1]).all()
    assert (last[:, 0, 1] == 2).all() and (last[:, 1, 1] == 3).all()  # channel 2
    for j in range(3):  # the channel rows read their channel, as without padding
        assert (rows[j::4, 0, 1] == j).all() and (rows[j::4, 1, 1] == j + 1).all()


def test_a_block_past_the_channels_is_padding_too() -> None:
    """64 channels in c = 12 blocks of 6: 11 blocks hold them, the twelfth
    row of a group is padding (before, it read nothing: a gap that kept
    the cut from lanes and its producer from being raised)."""
    rows = channel_row_boxes((1, 64, 8, 8), 64, 1, 12, 2, np.array([0, 4]), np.array([5, 8]), 2)
    assert _live(rows).all() and not gaps(rows)
    assert (np.prod(rows[11::12, 1] - rows[11::12, 0], axis=1) == 1).all()
    assert (rows[11::12, 0, 1] == 60).all()
    assert (rows[10::12, 0, 1] == 60).all() and (rows[10::12, 1, 1] == 64).all()
    # grouped, over the group view: the same rows, in (N, G, C/G, H, W)
    view = channel_row_boxes((1, 64, 8, 8), 64, 2, 12, 1, np.array([0]), np.array([8]), 2,
                             view=True)
    assert view.shape == (12, 2, 5) and _live(view).all() and not gaps(view)
    assert tuple(view[10, 0]) == (0, 0, 30, 0, 0) and tuple(view[10, 1]) == (1, 2, 32, 8, 8)
    assert tuple(view[11, 0]) == (0, 0, 30, 0, 0) and tuple(view[11, 1]) == (1, 1, 31, 1, 1)


def test_sizing_never_takes_a_padding_block_but_a_raise_may() -> None:
    """Padding blocks cost PEs for no cycles: no choice of the sizer has
    one, but at the width of the conv's tallest unpadded shape a taller,
    padded one is offered (what place_rows raises a producer to)."""
    t = get_target("wse2", (64, 96))
    k = Kernel("k0", "Kernel", ["x", "w"], ["y"], kind="conv", dims=_dims(3, 16, 16))
    assert all(dict(c.knobs)["c"] <= 3 for c in kernel_choices(k, t))
    opts = shapes_at_width(k, t, 10**9, 8)
    hs = {c.h: dict(c.knobs)["c"] for c in opts}
    assert max(h for h, c in hs.items() if c <= 3) == 48  # 3 channels x 16 output rows
    assert hs[64] == 4 and hs[96] == 6  # padded: 4 or 6 blocks of one channel


def _model(d: pathlib.Path) -> pathlib.Path:
    """x (1, 3, 16, 16) -> conv 3->16 -> relu -> conv 16->16 -> y."""
    rng = np.random.default_rng(0)
    w0 = numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w0")
    w1 = numpy_helper.from_array(rng.standard_normal((16, 16, 3, 3)).astype(np.float32), "w1")
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w1"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "padconv",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
                          [w0, w1])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = d / "padconv.onnx"
    onnx.save(m, str(path))
    return path


def test_a_three_channel_conv_raised_to_its_consumers_rows(tmp_path: pathlib.Path) -> None:
    """On a 64x96 grid the second conv takes 6 x 16 = 96 rows; the first,
    with 3 channels, at most 48 unpadded, so its output could not land
    uniform on the second's rows (1,536 PEs read outside their lanes). Raised
    to 6 blocks (3 padding), it has 96 rows: every PE of both convs reads
    only what its lanes brought, and the outputs are the model's."""
    import onnxruntime as ort

    path = _model(tmp_path)
    m = compile_model(str(path), CompileOptions(grid=(64, 96))).module
    k0, k1 = m.kernel("k0"), m.kernel("k1")
    rows = [k.rect.w if k.rotated else k.rect.h for k in (k0, k1)]
    assert k0.knobs["c"] > 3 and rows[0] == rows[1] == k1.knobs["c"] * k1.knobs["s"]
    out = tmp_path / "padconv.bin"
    write_binary(m, str(out))
    p = load_binary(str(out))
    x = random_inputs(p, 0)
    res = simulate(p, x, strict=True)
    assert res.kernel_stats["k0"]["forwarded_pes"] == 0
    assert res.kernel_stats["k1"]["forwarded_pes"] == 0
    ref = ort.InferenceSession(str(path)).run(None, {"x": x["x"]})[0]
    np.testing.assert_allclose(res.outputs["y"], ref, rtol=1e-4, atol=1e-3)
