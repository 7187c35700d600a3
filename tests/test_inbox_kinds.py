"""Every kind that reads an activation holds its PEs to their lanes.

The kinds beyond those of test_cut_kinds (data movement, reductions,
lookups, Resize, transposed, grouped, 1-D and 3-D convolution and pooling,
a matmul's activation B, the weight gradient): each executor declares
every PE's window of every activation it reads and checks it against the
lane the PE's core received (sim_inbox.check_windows), and where a PE row
reads a box the kind declares it (input_cut / operand_cut) so the router
can cut the bundle and the simulator prove it. These tests check the
declared boxes cover the input and hold the executors' windows, that a
compiled model with every such kind on cut lanes is proven PE by PE and
matches onnxruntime, and that a fault in a cut lane (two lanes' boxes
swapped, a box shortened) is a SimError at that PE.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_cut_kinds import _compile_wide, _cut_sinks, _inside_row_boxes
from test_lane_cut import _P, _delivery
from wsec.backends.format import BUNDLE_FROM_HOST, Program
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_inbox import check_windows, pe_windows, point_hulls, union_boxes
from wsec.backends.sim_sharded import _conv_need, _grouped_need, _planes_view, _seq_view
from wsec.backends.sim_spread import _TAG, move_boxes
from wsec.backends.sim_wgrad import wgrad_need
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import check_cut
from wsec.ir.library_reduce import reduce_boxes, reduce_layout, reduce_ranges, working_pes
from wsec.run import onnx_reference


def test_point_hulls_bound_each_pes_reads() -> None:
    coords = np.array([[0, 3, 1, 2, 2], [5, 1, 4, 0, 0]])
    owner = np.array([2, 0, 2, 0, 0])
    got = point_hulls(coords, owner, 4)
    assert got.tolist() == [[[2, 0], [4, 2]], [[0, 0], [0, 0]], [[0, 4], [2, 6]],
                            [[0, 0], [0, 0]]]
    a = np.array([[[0, 0], [2, 2]], [[0, 0], [0, 0]], [[1, 1], [2, 2]]])
    b = np.array([[[1, 3], [3, 4]], [[2, 2], [3, 3]], [[0, 0], [0, 0]]])
    assert union_boxes(a, b).tolist() == [[[0, 0], [3, 4]], [[2, 2], [3, 3]],
                                          [[1, 1], [2, 2]]]


def _masks(shape: tuple[int, ...], boxes: np.ndarray) -> list[np.ndarray]:
    out = []
    for lo, hi in boxes:
        m = np.zeros(shape, bool)
        m[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
        out.append(m)
    return out


def test_move_boxes_hold_what_each_block_copies() -> None:
    """A Concat and a Transpose traced on tags: each PE's box holds every
    element its output block copies, and nothing of an input it does not
    copy from."""
    a, b = (np.arange(24, dtype=np.float64).reshape(2, 3, 4) + (i + 1) * _TAG
            for i in range(2))
    out = np.concatenate([a, b.transpose(0, 2, 1).reshape(2, 3, 4)], axis=1).reshape(-1)
    p = 5
    owner = np.arange(out.size) // -(-out.size // p)
    for i, src in enumerate((a, b)):
        boxes = move_boxes([(out, owner)], i, (2, 3, 4), p)
        for pe in range(p):
            mine = out[(owner == pe) & (out // _TAG - 1 == i)]
            pos = (mine - (i + 1) * _TAG).astype(np.int64)
            if not pos.size:
                assert (boxes[pe] == 0).all()
                continue
            held = _masks((2, 3, 4), boxes[pe:pe + 1])[0].reshape(-1)
            assert held[pos].all()
            assert src.size == 24


REDUCES = [  # shape, axes, p
    ((4, 6, 5), (2,), 7), ((4, 6, 5), (1,), 30), ((3, 8), (0, 1), 5), ((2, 3, 4, 5), (1, 3), 64),
    ((6, 10), (1,), 100), ((5,), (0,), 3),
    # global means: segments of channel maps, rows straddling two maps (flattened
    # one range); maps dealt two per PE with PEs left over; more PEs than maps
    ((1, 16, 8, 8), (2, 3), 48), ((1, 16, 16, 16), (2, 3), 192), ((1, 12, 8, 8), (2, 3), 8),
    ((1, 24, 8, 8), (2, 3), 32), ((1, 7, 5, 3), (2, 3), 11),
]


@pytest.mark.parametrize("shape, axes, p", REDUCES)
def test_reduce_rows_hold_each_pes_block(shape: tuple[int, ...], axes: tuple[int, ...],
                                         p: int) -> None:
    E = int(np.prod(shape))
    R = int(np.prod([shape[a] for a in axes]))
    O = E // R  # noqa: E741
    dims = {"E": E, "O": O, "R": R, "scan": 0, "Rx": sum(1 << a for a in axes)}
    kind = KINDS["reduce"]
    rows = kind.held_cut(dims, {"p": p}, shape)  # in the value's shape
    assert rows is not None
    po, pr = min(p, O), min(max(1, p // O), R)
    keep = [a for a in range(len(shape)) if a not in axes]
    idx = np.indices(shape)
    kept = np.ravel_multi_index(tuple(idx[a] for a in keep), [shape[a] for a in keep]) \
        if keep else np.zeros(shape, np.int64)
    red = np.ravel_multi_index(tuple(idx[a] for a in axes), [shape[a] for a in axes])
    ob, rb = -(-O // po), -(-R // pr)
    reads = [(kept // ob == i // pr) & (red // rb == i % pr) for i in range(po * pr)]
    # the PEs holding work (whole output groups) spread over the h rows in runs
    # as even as they go (reduce_layout), not row-major over the first rows
    n = sum(1 for i in range(0, po * pr, pr) if reads[i].any()) * pr
    w = int(np.ceil(np.sqrt(p)))
    h = -(-p // w)
    row_of = [i * h // n if i < n else h - 1 for i in range(po * pr)]
    per_row = np.bincount(row_of[:n], minlength=h)
    assert per_row.max() - per_row.min() <= 1
    _inside_row_boxes(shape, rows, reads, row_of)
    # routed, over the value flattened where that is lighter (input_view): the
    # reduced axes trailing, a row's PEs read one range of it
    view = kind.input_view(dims, {"p": p}, shape)
    cut = kind.input_cut(dims, {"p": p}, shape)
    if view is None:
        assert cut is not None and (cut == rows).all()
    else:
        assert view == (E,) and tuple(axes) == tuple(range(len(shape) - len(axes), len(shape)))
        flat = [m.reshape(-1) for m in reads]
        _inside_row_boxes((E,), cut, flat, row_of)
        assert int((cut[:, 1] - cut[:, 0]).sum()) < int(np.prod(rows[:, 1] - rows[:, 0],
                                                                axis=1).sum())
        ranges = reduce_ranges(shape, axes, po, pr)
        assert ranges is not None
        for i, m in enumerate(flat):  # the executor's windows over the view hold the reads
            if m.any():
                assert not (m & ~_masks((E,), ranges[i:i + 1])[0]).any()
    boxes = reduce_boxes(shape, axes, po, pr)
    for i, m in enumerate(reads):  # the executor's windows hold the reads too
        if m.any():
            assert not (m & ~_masks(shape, boxes[i:i + 1])[0]).any()
    assert KINDS["reduce"].input_cut({**dims, "scan": 1}, {"p": p}, shape) is None
    assert KINDS["reduce"].input_cut({k: v for k, v in dims.items() if k != "Rx"},
                                     {"p": p}, shape) is None


def test_grouped_1d_and_3d_conv_rows_hold_each_pes_window() -> None:
    # grouped: 4 groups of 3 in-channels, 8 out-channels in k = 3 blocks
    N, C, H, W, K, G, R = 1, 12, 9, 9, 8, 4, 3
    dims = {"N": N, "C": C, "H": H, "W": W, "K": K, "R": R, "S": R, "G": G, "sh": 1, "sw": 1,
            "dh": 1, "dw": 1, "ph": 2, "pw": 2, "Ho": 9, "Wo": 9}
    kn = {"k": 3, "c": 2, "s": 3}
    # stacked by groups (library_conv.stacked): G c s rows, each its group's block
    stack = KINDS["conv"].input_cut(dims, kn, (N, C, H, W))
    assert stack is not None and stack.shape == (G * 2 * 3, 2, 4)
    check_cut((N, C, H, W), stack)
    # the k-column layout a pooling-fused grouped conv keeps: each PE's window
    # holds the channels its out-channel block reads in each group: as a hull
    # in the value, and exactly as a box of the input viewed as (N, G, C/G, H, W),
    # where the row's cut (ConvKind.input_view) holds it (k = 3: a PE reads 1 or 2
    # of the 4 groups' blocks, a quarter of its row's box, cut all the same, since
    # a fused pooling keeps it from being stacked; k = 1: every PE reads all of them)
    dims = {**dims, "pool": 1}
    assert KINDS["conv"].input_view(dims, kn, (N, C, H, W)) == (N, G, C // G, H, W)
    rows3k = KINDS["conv"].input_cut(dims, kn, (N, C, H, W))
    assert rows3k is not None and rows3k.shape == (6, 2, 5)
    _holds(rows3k, _grouped_need(_conv_need((N, C, H, W), 2, 3, 2, 3, 1, R, 1, 9, 1), 3, 3,
                                 K // G, C // G, G, view=True))
    kn1 = {**kn, "k": 1}
    view = KINDS["conv"].input_view(dims, kn1, (N, C, H, W))
    rows = KINDS["conv"].input_cut(dims, kn1, (N, C, H, W))
    assert view == (N, G, C // G, H, W) and rows is not None and rows.shape == (6, 2, 5)
    check_cut(view, rows)
    base = _conv_need((N, C, H, W), 2, 3, 2, 3, 1, R, 1, 9, 1)
    _holds(rows, _grouped_need(base, 1, K, K // G, C // G, G, view=True))
    need = _grouped_need(base, 3, 3, K // G, C // G, G)
    exact = _grouped_need(base, 3, 3, K // G, C // G, G, view=True)
    cg, kb = C // G, 3
    for py in range(6):
        for px in range(3):
            outs = range(px * kb, min(K, (px + 1) * kb))
            chans = {(o // (K // G)) * cg + j for o in outs
                     for j in range((py % 2) * 2, min(cg, (py % 2 + 1) * 2))}
            lo, hi = need[py, px, 0, 1], need[py, px, 1, 1]
            assert all(lo <= ch < hi for ch in chans), (px, py)
            (g0, j0), (g1, j1) = exact[py, px, 0, 1:3], exact[py, px, 1, 1:3]
            held = {g * cg + j for g in range(g0, g1) for j in range(j0, j1)}
            assert held == chans, (px, py)  # exactly the channels it reads
    # 1-D: the sequence is the rows
    d1 = {**dims, "C": 4, "G": 1, "H": 1, "R": 1, "W": 20, "S": 3, "Ho": 1, "Wo": 20, "ph": 0,
          "L1": 1}
    rows1 = KINDS["conv"].input_cut(d1, kn, (1, 4, 20))
    assert rows1 is not None
    check_cut((1, 4, 20), rows1)
    _holds(rows1, _seq_view(_conv_need((1, 4, 20, 1), 2, 3, 2, 7, 1, 3, 1, 20, 1)))
    # 3-D: N counts samples x 4 output planes, every plane held
    d3 = {**dims, "N": 2 * 4, "C": 4, "G": 1, "T": 3}
    rows3 = KINDS["conv"].input_cut(d3, kn, (2, 4, 6, H, W))
    assert rows3 is not None
    check_cut((2, 4, 6, H, W), rows3)
    _holds(rows3, _planes_view(_conv_need((8, 4, H, W), 2, 3, 2, 3, 1, R, 1, 9, 1), 2, 6))


def _holds(rows: np.ndarray, need: np.ndarray) -> None:
    """Each PE's window (need: per row or per PE) lies in its row's box."""
    if need.ndim == 3:
        need = need[:, None]
    reads = (need[:, :, 1] > need[:, :, 0]).all(axis=2)
    inside = ((rows[:, None, 0] <= need[:, :, 0]) & (need[:, :, 1] <= rows[:, None, 1])).all(
        axis=2)
    assert (inside | ~reads).all()


def test_wgrad_rows_hold_each_pes_windows() -> None:
    # X'' [C/G, G N, H, W] (*) dY'' [M, N, Ho, Wo]: stride 2, pad 1, 3x3, G 2
    cg, G, N, H, W, M, R = 3, 2, 2, 9, 9, 4, 3
    Ho = (H + 2 - R) // 2 + 1
    dims = {"N": N, "C": cg * G, "H": H, "W": W, "M": M, "R": R, "S": R, "G": G, "sh": 2,
            "sw": 2, "dh": 1, "dw": 1, "ph": 2, "pw": 2, "Ho": Ho, "Wo": Ho}
    kn = {"k": 3, "c": 2, "s": 3}
    x = KINDS["conv_wgrad"].input_cut(dims, kn, (cg, G * N, H, W))
    dy = KINDS["conv_wgrad"].operand_cut(dims, kn, 1, (M, N, Ho, Ho))
    assert x is not None and dy is not None
    check_cut((cg, G * N, H, W), x)
    check_cut((M, N, Ho, Ho), dy)
    hb = -(-Ho // 3)
    nx, ndy = wgrad_need((cg, G * N, H, W, M, N, Ho, Ho), (3, 2, 3, 2, 2, hb, G), (1, 1, 2, R))
    _holds(x, nx)
    _holds(dy, ndy)
    assert KINDS["conv_wgrad"].operand_cut(dims, kn, 2, (M, N, Ho, Ho)) is None


def test_resize_and_gather_rows() -> None:
    dims = {"N": 1, "C": 2, "H": 12, "W": 12, "Ho": 24, "Wo": 18, "th": 2, "tw": 2}
    rows = KINDS["resize"].input_cut(dims, {"c": 2, "s": 5}, (1, 2, 12, 12))
    assert rows is not None and rows.shape == (5, 2, 4)
    check_cut((1, 2, 12, 12), rows)
    for g in range(5):
        a, b = KINDS["resize"].input_rows(dims, {"c": 2, "s": 5}, g)
        assert rows[g, 0, 2] <= a and b <= rows[g, 1, 2]
    assert KINDS["resize"].input_cut(dims, {"c": 2, "s": 5}, (1, 2, 12)) is None
    gd = {"T": 48, "V": 8, "Dq": 6, "ax": 0, "nd": 2, "L": 3, "O": 18, "Cst": 0}
    g = KINDS["gather"].input_cut(gd, {"q": 2, "p": 3}, (8, 6))
    assert g is not None
    assert g.tolist() == [[[0, 0], [3, 6]], [[3, 0], [6, 6]], [[6, 0], [8, 6]]]


_F = TensorProto.FLOAT
# per model: its inputs, nodes, outputs; a few host inputs each, so the
# host's corner of the fabric keeps up and the bundles into the kinds under
# test get one lane per sink row (cut)
_GROUPS = {
    "resize": ({"r": [1, 8, 24, 24]}, [
        ("Resize", ["r", "", "rsc"], ["rz"], {"mode": "linear"}),
    ], {"rz": [1, 8, 48, 36]}),
    "reduce": ({"m3": [32, 48, 40]}, [
        ("ReduceMean", ["m3", "ax2"], ["rm"], {}),
        ("ReduceSum", ["m3", "ax1"], ["rs"], {"keepdims": 0}),
        ("Transpose", ["m3"], ["tp"], {"perm": [0, 2, 1]}),
    ], {"rm": [32, 48, 1], "rs": [32, 40], "tp": [32, 40, 48]}),
    "gather": ({"s": [64, 32], "tab": [256, 64]}, [
        ("ArgMax", ["s"], ["ix"], {"axis": 1, "keepdims": 0}),
        ("Gather", ["tab", "ix"], ["ga"], {"axis": 0}),
    ], {"ga": [64, 64]}),
    "pairs": ({"qa": [8, 32, 64], "kb": [8, 64, 48], "c1": [1, 16, 24, 24],
               "c2": [1, 16, 24, 24]}, [
        ("MatMul", ["qa", "kb"], ["att"], {}),
        ("Concat", ["c1", "c2"], ["cat"], {"axis": 1}),
    ], {"att": [8, 32, 48], "cat": [1, 32, 24, 24]}),
    "windows": ({"g": [1, 16, 24, 24], "q1": [1, 16, 200], "v3": [1, 4, 12, 24, 24]}, [
        ("Conv", ["g", "wg"], ["gc"], {"group": 4, "pads": [1, 1, 1, 1]}),
        ("Conv", ["g", "wd"], ["dwc"], {"group": 16, "pads": [1, 1, 1, 1]}),
        ("Conv", ["q1", "w1"], ["c1d"], {"pads": [1, 1]}),
        ("MaxPool", ["c1d"], ["p1d"], {"kernel_shape": [3], "strides": [2]}),
        ("MaxPool", ["v3"], ["p3"], {"kernel_shape": [2, 3, 3], "pads": [0, 1, 1, 0, 1, 1]}),
        ("GlobalAveragePool", ["v3"], ["g3"], {}),
    ], {"gc": [1, 16, 24, 24], "dwc": [1, 16, 24, 24], "p1d": [1, 16, 99],
        "p3": [1, 4, 11, 24, 24], "g3": [1, 4, 1, 1, 1]}),
    "deconv": ({"dx": [1, 16, 12, 12]}, [
        ("ConvTranspose", ["dx", "dw"], ["dc"], {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ], {"dc": [1, 8, 23, 23]}),
}


def _model(group: str, path: pathlib.Path) -> None:
    """The kinds of one group of _GROUPS, each its own kernel, fed by the host."""
    rng = np.random.default_rng(7)
    ins, ops, outs = _GROUPS[group]

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, _F, list(shape),
                                  (rng.standard_normal(shape) * 0.3).ravel().tolist())

    consts = {"wg": init("wg", 16, 4, 3, 3), "wd": init("wd", 16, 1, 3, 3),
              "w1": init("w1", 16, 16, 3), "dw": init("dw", 16, 8, 3, 3),
              "rsc": helper.make_tensor("rsc", _F, [4], [1, 1, 2, 1.5]),
              "ax1": helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
              "ax2": helper.make_tensor("ax2", TensorProto.INT64, [1], [2])}
    nodes = [helper.make_node(op, i, o, **a) for op, i, o, a in ops]
    used = {i for _, i, _, _ in ops for i in i}
    vi = helper.make_tensor_value_info
    g = helper.make_graph(nodes, f"inbox_{group}", [vi(n, _F, s) for n, s in ins.items()],
                          [vi(n, _F, s) for n, s in outs.items()],
                          [t for n, t in consts.items() if n in used])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Program, pathlib.Path]]:
    """Every group of _GROUPS compiled with lanes as wide as their sides allow."""
    return {group: _compile_wide(tmp_path_factory.mktemp(f"inbox_{group}"),
                                 lambda path, group=group: _model(group, path))
            for group in sorted(_GROUPS)}


# the ops whose kernels' inputs each group's compile cuts (at least)
# (the router keeps the resize, reduce and gather inputs flat here: their
# windows are checked and counted, and test_windows_against_cut_lanes holds
# them to cut lanes of the boxes their kinds declare)
CUT = {"resize": set(), "reduce": set(), "gather": set(), "pairs": {"MatMul"},
       "windows": {"Conv", "MaxPool", "GlobalAveragePool"}, "deconv": {"ConvTranspose"}}


def _program(compiled: dict[str, tuple[Program, pathlib.Path]], op: str) -> Program:
    return next(p for p, _ in compiled.values() if any(k.body[0]["op"] == op
                                                        for k in p.kernels))


def _kernel_of(p: Program, op: str, group: int | None = None) -> int:
    return next(ki for ki, k in enumerate(p.kernels) if k.body[0]["op"] == op and (
        group is None or int(k.body[0].get("attrs", {}).get("group", 1)) == group))


@pytest.mark.parametrize("group", sorted(_GROUPS))
def test_every_kernel_is_checked_and_the_cut_ones_proven(
        compiled: dict[str, tuple[Program, pathlib.Path]], group: str) -> None:
    p, onnx_path = compiled[group]
    x = random_inputs(p, 0)
    res = simulate(p, x)
    unchecked = [k.name for k in p.kernels if "forwarded_pes" not in res.kernel_stats[k.name]]
    assert not unchecked, f"kernels whose PEs no window check holds: {unchecked}"
    cut = _cut_sinks(p)
    into: dict[int, list[bool]] = {}
    for bi, b in enumerate(p.bundles):
        into.setdefault(int(b["sink"]), []).append(bi in cut)
    for ki, flags in into.items():  # all inputs cut: every PE proven from its inbox
        if ki >= 0 and all(flags):
            assert res.kernel_stats[p.kernels[ki].name]["forwarded_pes"] == 0
    ops = {p.kernels[ki].body[0]["op"] for ki in cut.values()}
    assert CUT[group] <= ops
    if group == "pairs":
        matmul = _kernel_of(p, "MatMul")
        cut_values = {p.edges[int(p.bundles[bi]["edge"])].value for bi, ki in cut.items()
                      if ki == matmul}
        assert "kb" in cut_values  # the activation B, cut by reduction blocks
    ref, _ = onnx_reference(str(onnx_path), x)
    for name, want in ref.items():
        np.testing.assert_allclose(res.outputs[name], want, rtol=1e-4, atol=1e-5,
                                   err_msg=name)


FAULTS = ["MatMul", "ConvTranspose", "GlobalAveragePool", "MaxPool", "Conv"]


def _cut_bundles(p: Program, op: str) -> list[int]:
    return [bi for bi, ki in _cut_sinks(p).items() if p.kernels[ki].body[0]["op"] == op
            and int(p.bundles[bi]["lanes"]) > 1]


def _host_io(p: Program, bi: int) -> dict | None:
    """The I/O map entry of a cut bundle from the host (None: from a kernel)."""
    if not int(p.bundles[bi]["flags"]) & BUNDLE_FROM_HOST:
        return None
    e = p.edges[int(p.bundles[bi]["edge"])]
    sink = p.kernels[int(p.bundles[bi]["sink"])].name
    return next(d for d in p.info["host_io"]["inputs"] if d["value"] == e.value
                and d["sink"] == sink)


def _faulty(p: Program, bi: int, fault: Callable[[np.ndarray], None]) -> None:
    """Simulate with `fault` applied to the bundle's lane boxes ((lanes, 2,
    ndim), in place), in its slice records and, from the host, in the I/O
    map (which must agree with them); restore both after."""
    s0, n = int(p.bundles[bi]["slice0"]), int(p.bundles[bi]["lanes"])
    io = _host_io(p, bi)
    saved = p.slices[s0:s0 + n].copy()
    saved_io = None if io is None else [[list(a), list(b)] for a, b in io["boxes"]]
    boxes = p.lane_boxes(bi)
    assert boxes is not None
    nd = boxes.shape[2]
    fault(boxes)
    p.slices["start"][s0:s0 + n, :nd] = boxes[:, 0]
    p.slices["stop"][s0:s0 + n, :nd] = boxes[:, 1]
    if io is not None:
        io["boxes"] = boxes.tolist()
    try:
        simulate(p, random_inputs(p, 0))
    finally:
        p.slices[s0:s0 + n] = saved
        if io is not None:
            io["boxes"] = saved_io


@pytest.mark.parametrize("op", FAULTS)
def test_swapping_two_cut_lanes_boxes_is_an_error_at_a_pe(
        compiled: dict[str, tuple[Program, pathlib.Path]], op: str) -> None:
    p = _program(compiled, op)
    bi = _cut_bundles(p, op)[-1]
    name = p.kernels[int(p.bundles[bi]["sink"])].name

    def swap(b: np.ndarray) -> None:
        assert not (b[0] == b[-1]).all()
        b[[0, -1]] = b[[-1, 0]].copy()  # the first and last rows' boxes

    with pytest.raises(SimError, match=rf"kernel '{name}' .*PE \(\d+, \d+\) \(offset "
                                       r"\(\d+, \d+\)\) reads .*never arrived there"):
        _faulty(p, bi, swap)


def _boundary(boxes: np.ndarray) -> tuple[int, int, int] | None:
    """(axis, lane i, lane j): lanes whose boxes agree but on `axis`, where
    j's box starts inside i's or at its end (j can take over
    i's last element and the lanes still cover the value)."""
    for ax in range(boxes.shape[2]):
        other = [a for a in range(boxes.shape[2]) if a != ax]
        for i in range(len(boxes)):
            lo, hi = boxes[i, 0, ax], boxes[i, 1, ax]
            if hi - lo < 1:
                continue
            for j in range(len(boxes)):
                if j != i and lo < boxes[j, 0, ax] <= hi and boxes[j, 1, ax] >= hi and (
                        boxes[j, :, other] == boxes[i, :, other]).all():
                    return ax, i, j
    return None


@pytest.mark.parametrize("op", ["MatMul", "Conv", "ConvTranspose", "MaxPool"])
def test_shortening_a_cut_lanes_box_is_an_error_at_its_pe(
        compiled: dict[str, tuple[Program, pathlib.Path]], op: str) -> None:
    """A lane's box loses its last element along an axis its rows split,
    which the next lane takes over (still a cover, so the binary loads):
    the PE row the short lane serves reads that element and raises."""
    p = _program(compiled, op)
    for bi in _cut_bundles(p, op):
        boxes = p.lane_boxes(bi)
        assert boxes is not None
        got = _boundary(boxes)
        if got is None:
            continue
        ax, i, j = got
        name = p.kernels[int(p.bundles[bi]["sink"])].name

        def short(b: np.ndarray, ax: int = ax, i: int = i, j: int = j) -> None:
            b[i, 1, ax] -= 1
            b[j, 0, ax] = min(b[j, 0, ax], b[i, 1, ax])

        with pytest.raises(SimError, match=rf"kernel '{name}' .*PE \(\d+, \d+\) \(offset "
                                           r"\(\d+, \d+\)\) reads .*never arrived there"):
            _faulty(p, bi, short)
        return
    pytest.fail(f"no cut bundle into a {op} kernel with rows reading different boxes")


def _row_lanes(uh: int, uw: int) -> np.ndarray:
    return np.repeat(np.arange(uh)[:, None], uw, axis=1)  # lane r lands on row r


def _window_faults(shape: tuple[int, ...], rows: np.ndarray, need: np.ndarray) -> None:
    """PEs reading `need` hold it from cut lanes of `rows`; two swapped
    lanes and a dropped multicast are errors naming the PE."""
    uh, uw = need.shape[:2]
    p, lane_at = _P(shape), _row_lanes(uh, uw)
    assert check_windows(p, 0, _delivery(rows, lane_at, shape), need) == 0  # type: ignore[arg-type]
    swapped = lane_at.copy()
    a, b = 0, uh - 1
    swapped[[a, b]] = swapped[[b, a]]
    with pytest.raises(SimError, match=rf"offset \(\d+, (0|{b})\)\) reads %x\[.*never arrived"):
        check_windows(p, 0, _delivery(rows, swapped, shape), need)  # type: ignore[arg-type]
    reads = (need[:, :, 1] > need[:, :, 0]).all(axis=2)
    py, px = (int(v) for v in np.argwhere(reads)[-1])
    dropped = lane_at.copy()
    dropped[py, px] = -1
    with pytest.raises(SimError, match=rf"offset \({px}, {py}\)\).*the PE holds no lane"):
        check_windows(p, 0, _delivery(rows, dropped, shape), need)  # type: ignore[arg-type]


def test_reduce_windows_against_cut_lanes() -> None:
    shape, axes, p = (4, 6, 5), (1,), 30
    E, R = 120, 6
    dims = {"E": E, "O": E // R, "R": R, "scan": 0, "Rx": 2}
    rows = KINDS["reduce"].input_cut(dims, {"p": p}, shape)
    assert rows is not None
    po, pr = min(p, E // R), min(max(1, p // (E // R)), R)
    w = int(np.ceil(np.sqrt(p)))
    n = working_pes(E // R, po, pr)  # 20 maps on 30 PEs: 4 on each of 5 rows
    need = pe_windows(reduce_boxes(shape, axes, po, pr)[:n],
                      reduce_layout(n, w, -(-p // w)), w, -(-p // w))
    assert ((need[:, :, 1] > need[:, :, 0]).all(axis=2).sum(axis=1) == 4).all()
    _window_faults(shape, rows, need)


def test_resize_and_gather_windows_against_cut_lanes() -> None:
    dims = {"N": 1, "C": 4, "H": 12, "W": 12, "Ho": 24, "Wo": 18, "th": 2, "tw": 2}
    kn = {"c": 2, "s": 5}
    shape = (1, 4, 12, 12)
    rows = KINDS["resize"].input_cut(dims, kn, shape)
    assert rows is not None
    need = np.zeros((5, 2, 2, 4), np.int64)  # as sim_resample._check_resize
    need[:, :, 1] = shape
    for g in range(5):
        need[g, :, 0, 2], need[g, :, 1, 2] = KINDS["resize"].input_rows(dims, kn, g)
    need[:, :, 0, 1] = [0, 2]
    need[:, :, 1, 1] = [2, 4]
    _window_faults(shape, rows, need)
    gd = {"T": 48, "V": 8, "Dq": 6, "ax": 0, "nd": 2, "L": 3, "O": 18, "Cst": 0}
    g = KINDS["gather"].input_cut(gd, {"q": 2, "p": 3}, (8, 6))
    assert g is not None
    gneed = np.zeros((3, 2, 2, 2), np.int64)  # as sim_reduce._check_gather
    for py in range(3):
        for px in range(2):
            gneed[py, px] = [[3 * py, 3 * px], [min(8, 3 * py + 3), 3 * px + 3]]
    _window_faults((8, 6), g, gneed)


def test_a_pe_reading_outside_two_flat_lanes_counts_once() -> None:
    """`forwarded_pes` counts PEs: a PE reading elements outside the lanes of
    two flat values (a conv's input and its tail's residual) is one PE that
    needs forwarding, not two."""
    from types import SimpleNamespace

    from wsec.backends.sim_exec import _outside

    shape, uh, uw = (1, 4, 6, 6), 4, 3
    p = _P(shape)
    lane_at = np.repeat(np.arange(uh)[:, None], uw, axis=1)  # a lane per row
    a, b = _delivery(None, lane_at, shape), _delivery(None, lane_at, shape)
    whole = np.zeros((uh, 2, 4), np.int64)
    whole[:, 1] = shape  # every row reads the whole value: outside its lane's range
    first = np.zeros((uh, 2, 4), np.int64)
    first[:, 1] = (1, 1, 1, 1)  # every row reads element 0: only row 0's lane holds it
    assert check_windows(p, 0, a, whole) == uh * uw  # type: ignore[arg-type]
    assert check_windows(p, 0, b, first) == (uh - 1) * uw  # type: ignore[arg-type]
    env = SimpleNamespace(k=SimpleNamespace(unrotated_shape=(uw, uh)),
                          deliveries={"a": a, "b": b})
    assert _outside(env) == uh * uw  # type: ignore[arg-type]  (not 2 uh uw - uw)
    b.outside = None
    assert _outside(env) == uh * uw  # type: ignore[arg-type]
    a.outside = None
    assert _outside(env) == 0  # type: ignore[arg-type]
