"""Cut operands of a kernel's fused element-wise tail (a residual add).

After its anchor (a conv, a pooling, a norm) every output element lives on
one PE, its owner (a conv's: the reduction-end PE of its column and row
group), and the fused tail runs there; an operand only the tail reads (the residual) is read by each
owner at the elements it owns. The kind declares per PE row the box of the
output the row owns (KernelKind.output_rows); the router cuts the operand
to those boxes (broadcast onto the operand), and the simulator checks each
owner's window against the lane its core received (sim_tail.check_operand):
these tests check the boxes match the executor's owners, that a compiled
residual add's operand is cut and read only from its lanes, and that
swapped boxes are a SimError at an owner PE.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_cut_kinds import _compile_wide, swapped_boxes_raise
from wsec.backends.format import BUNDLE_CUT, Program
from wsec.backends.sim import random_inputs, simulate
from wsec.ir.graph import Kernel, Node
from wsec.ir.kernels import KINDS, broadcast_rows, input_cut, owner_pitch
from wsec.ir.lanes import check_cut
from wsec.ir.movement import Operands
from wsec.run import onnx_reference


@pytest.mark.parametrize("N, K, Ho, Wo, s", [(1, 8, 12, 12, 3), (2, 5, 7, 3, 4),
                                              (1, 4, 3, 9, 5)])
def test_conv_rows_own_their_groups_outputs(N: int, K: int, Ho: int, Wo: int, s: int) -> None:
    dims, knobs = {"N": N, "K": K, "Ho": Ho, "Wo": Wo}, {"k": 2, "c": 1, "s": s}
    rows = KINDS["conv"].output_rows(dims, knobs, (N, K, Ho, Wo))
    assert rows is not None and rows.shape == (s, 2, 4)
    check_cut((N, K, Ho, Wo), rows)
    hb = -(-Ho // s)
    owner_row = np.arange(Ho) // hb  # the executor's (sim_sharded._conv2d) with c = 1
    for py in range(s):
        lo, hi = rows[py]
        mine = np.flatnonzero(owner_row == py)
        if mine.size:
            assert lo.tolist() == [0, 0, int(mine[0]), 0]
            assert hi.tolist() == [N, K, int(mine[-1]) + 1, Wo]
        else:
            assert not (hi > lo).all(), f"row {py} owns nothing"
    # a fused pooling: the tail before it runs on the same conv rows
    assert KINDS["conv"].output_rows({**dims, "pool": 1}, knobs, (N, K, Ho, Wo)).tolist() \
        == rows.tolist()
    # c > 1: each group's last row owns its outputs, its reduction rows nothing
    two = KINDS["conv"].output_rows(dims, {**knobs, "c": 2}, (N, K, Ho, Wo))
    assert two is not None and two.shape == (2 * s, 2, 4)
    assert two[1::2].tolist() == rows.tolist() and not two[0::2].any()


def test_operand_boxes_broadcast_onto_the_grid() -> None:
    rows = np.array([[[0, 0, 0, 0], [1, 8, 3, 5]], [[0, 0, 0, 0], [0, 0, 0, 0]],
                     [[0, 0, 3, 0], [1, 8, 6, 5]]])
    assert broadcast_rows(rows, (1, 8, 6, 5)).tolist() == rows.tolist()
    assert broadcast_rows(rows, (8, 1, 1)).tolist() == [
        [[0, 0, 0], [8, 1, 1]], [[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [8, 1, 1]]]
    assert broadcast_rows(rows, (6, 5))[2].tolist() == [[3, 0], [6, 5]]
    assert broadcast_rows(rows, (1, 8, 6, 4)) is None
    assert broadcast_rows(rows, (2, 1, 8, 6, 5)) is None


def test_only_an_operand_the_tail_alone_reads_is_cut() -> None:
    dims = {"N": 1, "C": 4, "H": 6, "W": 6, "K": 4, "R": 3, "S": 3, "sh": 1, "sw": 1, "dh": 1,
            "dw": 1, "ph": 2, "pw": 2, "Ho": 6, "Wo": 6, "G": 1}
    knobs = {"k": 1, "c": 1, "s": 3}
    conv = Node("c", "Conv", ["x", "w"], ["y"])

    def kernel(*tail: Node) -> Kernel:
        return Kernel("k0", "kernel", ["x", "w"], ["z"], kind="conv", dims=dims,
                      body=[conv, *tail], knobs=knobs)

    k = kernel(Node("a", "Add", ["y", "r"], ["z"]))
    assert input_cut(k, "x", (1, 4, 6, 6)) is not None  # the anchor's data input
    assert input_cut(k, "r", (1, 4, 6, 6)).tolist() == KINDS["conv"].output_rows(
        dims, knobs, (1, 4, 6, 6)).tolist()
    k = kernel(Node("a", "Add", ["y", "x"], ["z"]))  # the tail reads the anchor's input too
    assert input_cut(k, "x", (1, 4, 6, 6)) is None
    k = kernel(Node("a", "Add", ["y", "r"], ["z"]), Node("m", "MaxPool", ["r"], ["q"]))
    assert input_cut(k, "r", (1, 4, 6, 6)) is None  # not only element-wise readers


def test_a_residual_owned_by_every_cth_row_is_cut_only_where_rows_hold_it() -> None:
    """c > 1: the owners are every c-th row (the last of each group). Routed,
    a bundle landing on the owner rows alone (cut "owners", no spine)
    carries each owner its box, so the operand is cut there as a weight-
    streaming phase's owner rows hold it; rows reading the value at no
    regular spacing stay uncut when routed (a lane and its spine would hand
    an owner's box to the rows between). The conv's result is scaled
    before the add, so the residual meets the finished sum on the owner
    rows (an add right after the conv spreads it over the reduction rows
    instead: test_skip_spread)."""
    dims = {"N": 1, "C": 4, "H": 6, "W": 6, "K": 4, "R": 3, "S": 3, "sh": 1, "sw": 1, "dh": 1,
            "dw": 1, "ph": 2, "pw": 2, "Ho": 6, "Wo": 6, "G": 1}
    knobs = {"k": 1, "c": 2, "s": 3}
    k = Kernel("k0", "kernel", ["x", "w", "g", "r"], ["z"], kind="conv", dims=dims,
               knobs=knobs, body=[Node("c", "Conv", ["x", "w"], ["y"]),
                                  Node("m", "Mul", ["y", "g"], ["t"]),
                                  Node("a", "Add", ["t", "r"], ["z"])])
    shapes = {"x": (1, 4, 6, 6), "w": (4, 4, 3, 3), "g": (1,), "r": (1, 4, 6, 6)}
    held = Operands(shapes.__getitem__, {"w": np.zeros(shapes["w"]), "g": np.ones(1)}.get)
    rows = input_cut(k, "r", shapes["r"], held)
    assert rows is not None and rows.shape == (6, 2, 4)
    assert not rows[0::2].any() and (rows[1::2, 1] > rows[1::2, 0]).all()
    for routed in (input_cut(k, "r", shapes["r"]),
                   input_cut(k, "r", shapes["r"], Operands(held.shape, held.const, routed=True))):
        assert routed is not None and np.array_equal(routed, rows)
    assert owner_pitch(rows) == (2, 1)
    irregular = rows.copy()
    irregular[3] = 0  # an owner without a box: rows 1 and 5 read, no spacing
    assert owner_pitch(irregular) == (0, 0)
    assert owner_pitch(rows[:, :, :]) == (2, 1) and owner_pitch(rows[1:]) == (0, 0)


def _residual(path: pathlib.Path) -> None:
    """A conv; its layer norm plus its max pooling: the add fuses into the
    norm's kernel, its operand comes from the pooling's kernel."""
    rng = np.random.default_rng(1)

    def w(name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, list(shape),
                                  (scale * (rng.random(shape) + 0.5)).astype(np.float32).ravel())

    nodes = [helper.make_node("Conv", ["x", "w"], ["cv"], pads=[1, 1, 1, 1]),
             helper.make_node("LayerNormalization", ["cv", "ls", "lb"], ["n"], axis=-1),
             helper.make_node("MaxPool", ["cv"], ["mp"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["n", "mp"], ["y"])]
    g = helper.make_graph(
        nodes, "residual",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])],
        [w("w", 16, 16, 3, 3, scale=0.02), w("ls", 12, scale=1.0), w("lb", 12, scale=1.0)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def residual(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return _compile_wide(tmp_path_factory.mktemp("tail"), _residual)


def _tail_cut(p: Program) -> int:
    """The cut bundle carrying the residual operand into the tail's kernel."""
    for bi, b in enumerate(p.bundles):
        k = p.kernels[int(b["sink"])] if int(b["sink"]) >= 0 else None
        if k is None or not int(b["flags"]) & BUNDLE_CUT:
            continue
        value = p.edges[int(b["edge"])].value
        if any(n["op"] == "Add" and value in n["inputs"] for n in k.body[1:]):
            return bi
    raise AssertionError("the residual operand is not cut")


def test_a_cut_residual_is_read_only_from_its_lanes(residual: tuple[Program, pathlib.Path]
                                                    ) -> None:
    p, onnx_path = residual
    bi = _tail_cut(p)
    name = p.kernels[int(p.bundles[bi]["sink"])].name
    x = random_inputs(p, 0)
    res = simulate(p, x)
    assert res.kernel_stats[name]["forwarded_pes"] == 0
    ref, _ = onnx_reference(str(onnx_path), x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-4, atol=1e-4)


def test_swapped_residual_boxes_are_an_error_at_an_owner_pe(
        residual: tuple[Program, pathlib.Path]) -> None:
    p, _ = residual
    bi = _tail_cut(p)
    s0 = int(p.bundles[bi]["slice0"])
    boxes = p.lane_boxes(bi)
    assert boxes is not None
    live = np.flatnonzero((boxes[:, 1] > boxes[:, 0]).all(axis=1))
    # the first and last owners' rows
    swapped_boxes_raise(p, bi, s0 + int(live[0]), s0 + int(live[-1]), r"\d+, \d+")


def test_a_matmuls_reduction_end_row_owns_its_output() -> None:
    rows = KINDS["matmul"].output_rows({"M": 4, "Kd": 8, "N": 6}, {"kx": 2, "ky": 3}, (4, 6))
    assert rows is not None and rows.shape == (3, 2, 2)
    assert rows[2].tolist() == [[0, 0], [4, 6]] and not rows[:2].any()
    check_cut((4, 6), rows)


def _pooled_tail(path: pathlib.Path) -> None:
    """ResNet's last block: the block input r feeds two convs in a row and
    is added to the second's output, then ReLU and the global average
    pooling fused after them."""
    rng = np.random.default_rng(2)

    def w(name: str) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, [16, 16, 3, 3], (
            0.02 * (rng.random((16, 16, 3, 3)) + 0.5)).astype(np.float32).ravel())

    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["t"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["t", "w2"], ["cv"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["cv", "r"], ["a"]),
             helper.make_node("Relu", ["a"], ["z"]),
             helper.make_node("AveragePool", ["z"], ["y"], kernel_shape=[8, 8])]
    g = helper.make_graph(
        nodes, "pooled_tail",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 1, 1])],
        [w("w1"), w("w2")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_a_pooled_convs_residual_is_held_on_its_owner_rows(tmp_path: pathlib.Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """The tail before a fused pooling runs on the conv's rows: a weight-
    streaming phase's owner rows hold the residual's boxes (ResNet-50's last
    conv read it whole before), and a row holding less raises at a PE."""
    import wsec
    from wsec.backends import sim_weight_stream
    from wsec.backends.loader import load_binary
    from wsec.backends.sim import SimError

    model, out = tmp_path / "m.onnx", tmp_path / "m.bin"
    _pooled_tail(model)
    wsec.compile(str(model), mode="stream", embed_weights=True).save(str(out))
    p = load_binary(str(out))
    (k,) = [k for k in p.kernels if [n["op"] for n in k.body][-1] == "AveragePool"]
    assert [n["op"] for n in k.body][:2] == ["Conv", "Add"]
    x = random_inputs(p, 0)
    res = simulate(p, x)
    assert res.kernel_stats[k.name]["forwarded_pes"] == 0
    ref, _ = onnx_reference(str(model), x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-4, atol=1e-4)

    real = sim_weight_stream.held

    def shrunk(p, ki, acts, weights):  # noqa: ANN001, ANN202
        got = real(p, ki, acts, weights)
        if p.kernels[ki].name == k.name:
            d = got["r"]
            assert d.boxes is not None  # the owner rows hold boxes of it
            live = np.flatnonzero((d.boxes[:, 1] > d.boxes[:, 0]).all(axis=1))
            d.boxes = d.boxes.copy()
            d.boxes[live[-1], 1, 2] -= 1  # the last owner row holds one row less
        return got

    monkeypatch.setattr(sim_weight_stream, "held", shrunk)
    with pytest.raises(SimError, match=rf"kernel '{k.name}' \(conv\): PE \(\d+, \d+\) .*%r\["):
        simulate(p, x)
