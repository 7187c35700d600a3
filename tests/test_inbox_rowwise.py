"""Row-wise kinds whose activations are read more than once, held to their lanes.

A LayerNorm as older exporters decompose it (ReduceMean, Sub, Pow, ...)
reads its data input in the first ReduceMean and again in the Sub; an
element-wise chain reads a residual as its Add's second operand, a value
in two of its ops. Each such
read is of the elements the reading PE owns, so the kinds declare one box
per PE row for them (NormKind.body_cut, ElementwiseKind.body_cut), the
router cuts their bundles and the simulator proves every PE from its lane;
a swapped or shortened lane is a SimError at the PE.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_cut_kinds import _compile_wide, _cut_sinks
from test_inbox_kinds import _boundary, _faulty, _window_faults
from wsec.backends.format import Program
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_inbox import pe_windows
from wsec.ir.graph import Kernel, Node
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import box_elements, check_cut
from wsec.ir.library_pool import tap_windows
from wsec.ir.library_rowwise import softmax_boxes, softmax_cells
from wsec.ir.movement import Operands
from wsec.ir.opsem_more import resize_taps
from wsec.run import onnx_reference

_F = TensorProto.FLOAT
_SHAPE = [1, 48, 64]


def _model(path: pathlib.Path) -> None:
    """x -> decomposed LayerNorm; g -> tanh GELU; (a + b) * s + a (a read
    twice, b the Add's second operand, s a constant scale); x, g, a, b
    each a matmul of t."""
    rng = np.random.default_rng(3)
    vi = helper.make_tensor_value_info

    def const(name: str, value: np.ndarray) -> onnx.TensorProto:
        return helper.make_tensor(name, _F, list(value.shape), value.ravel().tolist())

    consts = [const("two", np.array(2.0, np.float32)), const("eps", np.array(1e-5, np.float32)),
              const("gam", rng.standard_normal(64).astype(np.float32)),
              const("bet", rng.standard_normal(64).astype(np.float32)),
              const("c3", np.array(3.0, np.float32)), const("k1", np.array(0.044715, np.float32)),
              const("k2", np.array(0.7978845, np.float32)), const("one", np.array(1.0, np.float32)),
              const("half", np.array(0.5, np.float32)),
              const("s", rng.standard_normal((1, 1, 64)).astype(np.float32))]
    consts += [const(f"w{v}", (rng.standard_normal((64, 64)) * 0.2).astype(np.float32))
               for v in "xgab"]
    n = helper.make_node
    # matmuls make the activations (and set a time at which the row-wise
    # kernels take a few rows each)
    nodes = [n("MatMul", ["t", f"w{v}"], [v]) for v in "xgab"] + [
        n("ReduceMean", ["x"], ["m"], axes=[-1]), n("Sub", ["x", "m"], ["d"]),
        n("Pow", ["d", "two"], ["d2"]), n("ReduceMean", ["d2"], ["v"], axes=[-1]),
        n("Add", ["v", "eps"], ["ve"]), n("Sqrt", ["ve"], ["sd"]), n("Div", ["d", "sd"], ["nx"]),
        n("Mul", ["nx", "gam"], ["ng"]), n("Add", ["ng", "bet"], ["ln"]),
        n("Pow", ["g", "c3"], ["g3"]), n("Mul", ["g3", "k1"], ["g3k"]),
        n("Add", ["g", "g3k"], ["gi"]), n("Mul", ["gi", "k2"], ["gs"]), n("Tanh", ["gs"], ["gt"]),
        n("Add", ["gt", "one"], ["g1"]), n("Mul", ["g", "half"], ["gh"]),
        n("Mul", ["gh", "g1"], ["gelu"]),
        n("Add", ["a", "b"], ["ab"]), n("Mul", ["ab", "s"], ["abs"]),
        n("Add", ["abs", "a"], ["res"]),
    ]
    ins = [vi("t", _F, _SHAPE)]
    # g, a and b are outputs too: read twice, not fused into their matmuls
    outs = [vi(k, _F, _SHAPE) for k in ("ln", "gelu", "res", "g", "a", "b")]
    m = helper.make_model(helper.make_graph(nodes, "rowwise_reads", ins, outs, consts),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return _compile_wide(tmp_path_factory.mktemp("rowwise"), _model)


def _kernel(p: Program, first_op: str, reads: str) -> int:
    return next(ki for ki, k in enumerate(p.kernels)
                if k.body[0]["op"] == first_op and reads in k.body[0]["inputs"])


def _cut_into(p: Program, ki: int) -> dict[str, int]:
    """Value -> cut bundle into kernel ki."""
    return {p.edges[int(p.bundles[bi]["edge"])].value: bi
            for bi, sink in _cut_sinks(p).items() if sink == ki}


@pytest.mark.parametrize("first_op, value", [("ReduceMean", "x"), ("Add", "a"),
                                             ("Add", "b")])
def test_values_read_more_than_once_are_cut_and_proven(
        wide: tuple[Program, pathlib.Path], first_op: str, value: str) -> None:
    p, onnx_path = wide
    ki = _kernel(p, first_op, "x" if first_op == "ReduceMean" else "a")
    assert value in _cut_into(p, ki), f"{value} into {p.kernels[ki].name} is not cut"
    x = random_inputs(p, 0)
    res = simulate(p, x)
    assert res.kernel_stats[p.kernels[ki].name]["forwarded_pes"] == 0
    ref, _ = onnx_reference(str(onnx_path), x)
    for name, want in ref.items():
        np.testing.assert_allclose(res.outputs[name], want, rtol=1e-4, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("first_op, value", [("ReduceMean", "x"), ("Add", "a"), ("Add", "b")])
def test_swapping_two_lanes_is_an_error_at_a_pe(
        wide: tuple[Program, pathlib.Path], first_op: str, value: str) -> None:
    p, _ = wide
    ki = _kernel(p, first_op, "x" if first_op == "ReduceMean" else "a")
    bi = _cut_into(p, ki)[value]
    assert int(p.bundles[bi]["lanes"]) > 1
    name = p.kernels[ki].name

    def swap(b: np.ndarray) -> None:
        assert not (b[0] == b[-1]).all()
        b[[0, -1]] = b[[-1, 0]].copy()

    with pytest.raises(SimError, match=rf"kernel '{name}' .*PE \(\d+, \d+\) \(offset "
                                       rf"\(\d+, \d+\)\) reads %{value}\[.*never arrived there"):
        _faulty(p, bi, swap)


@pytest.mark.parametrize("first_op, value", [("ReduceMean", "x"), ("Add", "b")])
def test_shortening_a_lane_is_an_error_at_its_pe(
        wide: tuple[Program, pathlib.Path], first_op: str, value: str) -> None:
    """A lane's box loses its last element along an axis its rows split,
    which the next lane takes over (still a cover, so the binary loads): a
    PE the short lane serves reads that element and raises."""
    p, _ = wide
    ki = _kernel(p, first_op, "x" if first_op == "ReduceMean" else "a")
    bi = _cut_into(p, ki)[value]
    boxes = p.lane_boxes(bi)
    assert boxes is not None
    got = _boundary(boxes)
    assert got is not None
    ax, i, j = got

    def short(b: np.ndarray) -> None:
        b[i, 1, ax] -= 1
        b[j, 0, ax] = min(b[j, 0, ax], b[i, 1, ax])

    with pytest.raises(SimError, match=rf"kernel '{p.kernels[ki].name}' .*reads %{value}\[.*"
                                       r"never arrived there"):
        _faulty(p, bi, short)


def _ops(shapes: dict[str, tuple[int, ...]], routed: bool = True) -> Operands:
    return Operands(lambda v: shapes[v], lambda v: np.ones(shapes[v]) if v == "w" else None,
                    routed)


def test_the_declared_boxes() -> None:
    """The norm's second read and the chain's operands get input_cut's row
    boxes; an operand broadcast onto the grid, a constant, a weight-
    streaming phase (not routed) and a LayerNorm read otherwise stay as
    before."""
    norm, ew = KINDS["norm"], KINDS["elementwise"]
    body = [Node("rm", "ReduceMean", ["x"], ["m"], {"axes": [-1]}),
            Node("sub", "Sub", ["x", "m"], ["d"])]
    dims = {"N": 1, "C": 12, "H": 1, "W": 10, "O": 6, "L": 1, "Pc": 0, "Pr": 2}
    k = Kernel("k0", "kernel", ["x"], ["d"], kind="norm", dims=dims, body=body,
               knobs={"c": 3, "s": 1, "r": 2})
    sh = {"x": (12, 10), "m": (12, 1), "d": (12, 10), "w": (10,)}
    rows = norm.body_cut(k, "x", _ops(sh))
    want = norm.input_cut(dims, k.knobs, (12, 10))
    assert rows is not None and np.array_equal(rows, want)
    assert rows.shape[0] == 6 and rows[1].tolist() == [[0, 5], [4, 10]]
    assert norm.body_cut(k, "x", _ops(sh, routed=False)) is None
    k.body = [body[0], Node("mul", "Mul", ["w", "x"], ["d"])]  # x read as a second operand
    assert norm.body_cut(k, "x", _ops(sh)) is None
    ebody = [Node("add", "Add", ["a", "b"], ["ab"]), Node("m1", "Mul", ["ab", "s"], ["y"]),
             Node("m2", "Mul", ["y", "w"], ["z"])]
    edims = {"E": 120, "I": 3, "O": 3, "Q": 1, "P": 10, "Pf": 0}
    ek = Kernel("k1", "kernel", ["a", "b", "s"], ["z"], kind="elementwise", dims=edims,
                body=ebody, knobs={"p": 4})
    esh = {"a": (12, 10), "b": (12, 10), "ab": (12, 10), "s": (1, 10), "y": (12, 10),
           "z": (12, 10), "w": (10,)}
    b = ew.body_cut(ek, "b", _ops(esh))
    assert b is not None and np.array_equal(b, ew.input_cut(edims, ek.knobs, (12, 10)))
    # broadcast, at most a row's share of the grid: every row reads all of it
    assert ew.body_cut(ek, "s", _ops(esh)).tolist() == [[[0, 0], [1, 10]]] * 2
    assert ew.body_cut(ek, "w", _ops(esh)) is None  # a constant: held, never routed
    assert ew.body_cut(ek, "b", _ops(esh, routed=False)) is None


@pytest.mark.parametrize("shape, p", [((1, 4, 17, 17), 36), ((1, 4, 64, 64), 128),
                                      ((2, 8, 6), 20), ((1, 1000), 10)])
def test_softmax_rows_read_about_their_share(shape: tuple[int, ...], p: int) -> None:
    """Every (segment, row group) pair on one PE index; the rows' boxes
    cover the value, hold every PE's window, and where the pairs wrap
    within a PE row (ViT's 17 segments x 2 groups on 6 x 6 PEs) the busiest
    row reads about 1/h of it, not all of it; swapped and dropped lanes
    are errors at the PE."""
    axis = len(shape) - 1
    E = shape[axis]
    rows_n = int(np.prod(shape)) // E
    seg, rg = softmax_cells(shape, axis, p)
    pe, pr = min(p, E), max(1, p // E)
    live = (seg < pe) & (rg < pr)
    pairs = set(zip(seg[live].tolist(), rg[live].tolist(), strict=True))
    assert len(pairs) == live.sum() == pe * pr
    dims = {"E": E, "rows": rows_n}
    rows = KINDS["softmax"].input_cut(dims, {"p": p}, shape)
    assert rows is not None
    check_cut(shape, rows)
    w = int(np.ceil(np.sqrt(p)))
    h = -(-p // w)
    assert rows.shape[0] == h
    numel = int(np.prod(shape))
    assert int(box_elements(rows).max()) <= -(-numel // h) + numel // pe * 2
    need = pe_windows(softmax_boxes(shape, axis, p), np.arange(p), w, h)
    _window_faults(shape, rows, need)


def _resize_kernel(scale: float, mode: str, tail: bool, H: int = 12) -> tuple[Kernel, Operands]:
    Ho = int(H * scale)
    dims = {"N": 1, "C": 4, "H": H, "W": 10, "Ho": Ho, "Wo": 10, "Q": 4,
            "th": 1 if mode == "nearest" else 2, "tw": 1}
    body = [Node("rz", "Resize", ["x", "", "sc"], ["r"], {"mode": mode})]
    if tail:
        body.append(Node("add", "Add", ["x", "r"], ["y"]))
    k = Kernel("k0", "kernel", ["x"], [body[-1].outputs[0]], kind="resize", dims=dims,
               body=body, knobs={"c": 2, "s": 4})
    sh = {"x": (1, 4, H, 10), "r": (1, 4, Ho, 10), "y": (1, 4, Ho, 10), "sc": (4,)}
    sc = np.array([1, 1, scale, 1.0])
    return k, Operands(lambda v: sh[v], lambda v: sc if v == "sc" else None, True)


def test_resize_rows_are_what_its_taps_read() -> None:
    """x + Resize(x) at scale 1 (U-Net): group g reads and adds its own 3
    rows; 2x linear: each group's box holds every row its taps of non-zero
    weight read, and fewer rows than the dims' margin (input_cut); a
    constant-free or weight-streaming cut stays input_cut's. Swapped and
    dropped lanes are errors at the PE."""
    kind = KINDS["resize"]
    k, ops = _resize_kernel(1.0, "nearest", tail=True)
    shape = (1, 4, 12, 10)
    rows = kind.body_cut(k, "x", ops)
    base = kind.input_cut(k.dims, k.knobs, shape)
    assert rows is not None and base is not None
    check_cut(shape, rows)
    assert rows[:, :, 2].tolist() == [[3 * g, 3 * g + 3] for g in range(4)]
    assert int(box_elements(rows).sum()) < int(box_elements(base).sum())
    assert kind.body_cut(k, "x", Operands(ops.shape, ops.const, False)) is None
    assert kind.body_cut(k, "x", Operands(ops.shape, lambda v: None, True)) is None
    k2, ops2 = _resize_kernel(2.0, "linear", tail=False, H=6)
    up = kind.body_cut(k2, "x", ops2)
    assert up is not None
    check_cut((1, 4, 6, 10), up)
    idx, w, _ = resize_taps(k2.body[0], 6, 12, 2.0, (0.0, 1.0))
    for o in range(12):  # output row o is in group o // 3
        read = idx[o][w[o] != 0]
        assert (up[o // 3, 0, 2] <= read).all() and (read < up[o // 3, 1, 2]).all()
    assert int(box_elements(up).sum()) < int(box_elements(
        kind.input_cut(k2.dims, k2.knobs, (1, 4, 6, 10))).sum())
    win = tap_windows(k2.body[0], (1, 4, 6, 10), [None, np.array([1, 1, 2.0, 1]), None], 4)
    need = np.zeros((4, 2, 2, 4), np.int64)  # as sim_resample._check_resize
    need[:, :, 1] = (1, 4, 6, 10)
    need[:, :, 0, 2], need[:, :, 1, 2] = win[:, 0:1], win[:, 1:2]
    need[:, :, 0, 1], need[:, :, 1, 1] = [0, 2], [2, 4]
    _window_faults((1, 4, 6, 10), up, need)
