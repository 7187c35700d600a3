"""Cut bundles into the kinds beyond conv, and cut bundles from the host.

Each kind whose PE rows read separable parts of their input declares per
row the box they read (KernelKind.input_cut); its per-PE executor declares
each PE's window and the simulator checks it against the box of the lane
the PE's core received (sim_inbox.check_windows). These tests check the
declared boxes cover the input and hold every PE's window, that a fault in
the boxes or the lanes (a shortened box, two lanes swapped, a lane
dropped) is a SimError at that PE, and that a compiled binary whose
bundles into pool, matmul, norm and softmax kernels are cut runs with
every one of those PEs reading only what its lane delivered. A cut bundle
from the host has its boxes in the I/O map, which must agree with its lanes.
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from test_lane_cut import _P, _delivery
from wsec.backends.emit import write_binary
from wsec.backends.format import BUNDLE_CUT, BUNDLE_FROM_HOST, PORT_BITS, FormatError, Program
from wsec.backends.lanes import check_records
from wsec.backends.loader import load_binary
from wsec.backends.sim import RunResult, SimError, random_inputs, simulate
from wsec.backends.sim_einsum import reduction_need
from wsec.backends.sim_inbox import check_windows
from wsec.backends.sim_rows import grouped_need, window_need
from wsec.backends.sim_stats import format_stats
from wsec.driver import CompileOptions, compile_model
from wsec.ir.cuts import flat_hulls, row_hulls
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import check_cut
from wsec.ir.library_common import MAX_COLUMN
from wsec.ir.library_rowwise import softmax_cells
from wsec.run import onnx_reference


def test_flat_hulls_bound_each_range() -> None:
    shape = (2, 3, 4)
    got = flat_hulls(np.array([0, 5, 3, 12, 13, 7, 3]),
                     np.array([24, 7, 12, 24, 14, 7, 4]), shape)
    assert got.tolist() == [
        [[0, 0, 0], [2, 3, 4]],  # everything
        [[0, 1, 1], [1, 2, 3]],  # elements 5, 6: both in one row of axis 1
        [[0, 0, 0], [1, 3, 4]],  # elements 3..12: rows 0..2 of sample 0, whole
        [[1, 0, 0], [2, 3, 4]],  # the second sample
        [[1, 0, 1], [2, 1, 2]],  # one element
        [[0, 0, 0], [0, 0, 0]],  # empty
        [[0, 0, 3], [1, 1, 4]],
    ]
    flat = np.arange(24).reshape(shape)
    for i, (a, b) in enumerate(zip([0, 5, 3, 12, 13, 7, 3], [24, 7, 12, 24, 14, 7, 4],
                                          strict=True)):
        box = flat[tuple(slice(x, y) for x, y in zip(got[i, 0], got[i, 1], strict=True))]
        assert set(range(a, b)) <= set(box.ravel().tolist())


def test_row_hulls_skip_pes_reading_nothing() -> None:
    pe = np.zeros((2, 3, 2, 2), np.int64)
    pe[0, 0] = [[0, 2], [1, 5]]
    pe[0, 2] = [[1, 0], [3, 1]]
    pe[1, 1] = [[2, 2], [2, 4]]  # empty: the row reads nothing
    assert row_hulls(pe).tolist() == [[[0, 0], [3, 5]], [[0, 0], [0, 0]]]


def _pool_dims(N: int, C: int, H: int, R: int, sh: int, pt: int, pb: int, glob: int
               ) -> tuple[dict[str, int], int]:
    Ho = 1 if glob else (H + pt + pb - R) // sh + 1
    return ({"N": N, "C": C, "H": H, "W": H, "R": H if glob else R, "S": R, "sh": sh, "sw": sh,
             "dh": 1, "dw": 1, "ph": pt + pb, "pw": 0, "Ho": Ho, "Wo": Ho, "glob": glob}, Ho)


POOLS = [  # N, C, H, R, sh, pad_top, pad_bottom, glob, c, s
    (1, 8, 12, 3, 2, 1, 1, 0, 2, 3),
    (1, 6, 14, 1, 3, 0, 0, 0, 3, 4),     # stride past the window: rows nobody reads
    (2, 4, 9, 3, 1, 1, 1, 0, 4, 5),      # more rows than a column holds: 4 x 5 PEs
    (1, 5, 7, 2, 2, 0, 0, 0, 1, 9),      # more row groups than output rows
    (1, 16, 6, 6, 1, 0, 0, 1, 4, 3),     # global pooling: blocks of rows
    (1, 600, 8, 3, 1, 1, 1, 0, 150, 4),  # 600 PEs: two columns of the grouped layout
]


def _pool_case(case: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """(input shape, the kind's per-row boxes, the executor's per-PE windows)."""
    N, C, H, R, sh, pt, pb, glob, c, s = case
    dims, Ho = _pool_dims(N, C, H, R, sh, pt, pb, glob)
    shape = (N, C, H, H)
    rows = KINDS["pool"].input_cut(dims, {"c": c, "s": s}, shape)
    assert rows is not None
    n = c * s
    uh = min(n, MAX_COLUMN)
    rect = (-(-n // uh), uh)
    if glob:
        held = np.array([KINDS["pool"].input_rows(dims, {"c": c, "s": s}, g) for g in range(s)])
        lo, hi = held[:, 0], held[:, 1]
    else:
        lo, hi = window_need(s, -(-Ho // s), sh, R, 1, Ho, pt, H)
    return shape, rows, grouped_need(shape, c, s, rect, lo, hi)


@pytest.mark.parametrize("case", POOLS)
def test_pool_input_cut_covers_the_input_and_holds_each_pes_window(case: tuple[int, ...]
                                                                     ) -> None:
    shape, rows, need = _pool_case(case)
    assert rows.shape == (need.shape[0], 2, 4)
    check_cut(shape, rows)
    reads = (need[:, :, 1] > need[:, :, 0]).all(axis=2)
    inside = ((rows[:, None, 0] <= need[:, :, 0]) & (need[:, :, 1] <= rows[:, None, 1])).all(
        axis=2)
    assert (inside | ~reads).all()
    N, C, H, R, sh, pt, pb, glob, c, s = case
    dims, _ = _pool_dims(N, C, H, R, sh, pt, pb, glob)
    assert KINDS["pool"].input_cut(dims, {"c": c, "s": s}, (N, C, H)) is None  # 1-D: no cut
    assert KINDS["pool"].input_cut({**dims, "T": 2}, {"c": c, "s": s}, shape) is None


def _row_multicast(uh: int, uw: int) -> np.ndarray:
    return np.repeat(np.arange(uh)[:, None], uw, axis=1)  # lane r lands on row r


def test_pool_windows_against_cut_lanes_name_the_pe_on_a_fault() -> None:
    shape, rows, need = _pool_case((2, 4, 9, 3, 1, 1, 1, 0, 4, 5))
    uh, uw = need.shape[:2]
    lane_at = _row_multicast(uh, uw)
    p = _P(shape)
    assert check_windows(p, 0, _delivery(rows, lane_at, shape), need) == 0  # type: ignore[arg-type]
    short = rows.copy()
    short[3, 1, 2] -= 1  # row 3's box loses its last input row (the halo of a PE's window)
    with pytest.raises(SimError, match=r"PE \(\d+, 23\) \(offset \(\d+, 3\)\) reads "
                                       r"%x\[\d+, \d+, \d+, 0\], which never arrived"):
        check_windows(p, 0, _delivery(short, lane_at, shape), need)  # type: ignore[arg-type]
    swapped = lane_at.copy()
    swapped[[0, 5]] = swapped[[5, 0]]  # two lanes misdirected onto each other's rows
    with pytest.raises(SimError, match=r"offset \(0, 0\)\) reads"):
        check_windows(p, 0, _delivery(rows, swapped, shape), need)  # type: ignore[arg-type]
    dropped = lane_at.copy()
    dropped[7, uw - 1] = -1  # the multicast stops short of the row's last PE
    with pytest.raises(SimError, match=rf"offset \({uw - 1}, 7\).*the PE holds no lane"):
        check_windows(p, 0, _delivery(rows, dropped, shape), need)  # type: ignore[arg-type]
    # flat lanes carry ranges of whole channels: most PEs would need forwarding
    assert check_windows(p, 0, _delivery(None, lane_at, shape), need) > 0  # type: ignore[arg-type]


def test_pool_grouped_columns_read_different_boxes_from_one_lane() -> None:
    """Two columns of a grouped layout: each row's lane carries the hull of
    both PEs' windows, and each PE is checked against its own window."""
    shape, rows, need = _pool_case((1, 600, 8, 3, 1, 1, 1, 0, 150, 4))
    uh, uw = need.shape[:2]
    assert uw == 2 and not (need[:, 0] == need[:, 1]).all()
    lane_at = _row_multicast(uh, uw)
    p = _P(shape)
    assert check_windows(p, 0, _delivery(rows, lane_at, shape), need) == 0  # type: ignore[arg-type]
    # a row whose column-1 PE's window ends past its column-0 PE's on some axis
    y, ax = next((y, ax) for y in range(uh) for ax in range(need.shape[-1])
                 if need[y, 1, 1, ax] > need[y, 0, 1, ax] > need[y, 0, 0, ax])
    narrow = rows.copy()
    narrow[y, 1, ax] = need[y, 0, 1, ax]  # the box holds column 0's window only
    with pytest.raises(SimError, match=rf"offset \(1, {y}\)\) reads"):
        check_windows(p, 0, _delivery(narrow, lane_at, shape), need)  # type: ignore[arg-type]


MATMULS = [  # A's shape, Kd blocks ky
    ((4, 10), 3),
    ((2, 5, 16), 16),
    ((7,), 4),
    ((3, 6), 8),  # more reduction blocks than Kd: rows that read nothing
]


@pytest.mark.parametrize("case", MATMULS)
def test_matmul_input_cut_is_each_rows_reduction_block(case: tuple[tuple[int, ...], int]
                                                       ) -> None:
    shape, ky = case
    Kd = shape[-1]
    dims = {"M": int(np.prod(shape[:-1])), "Kd": Kd, "N": 5, "Bt": 1, "tB": 0, "bias": 0,
            "Bact": 0, "Bwhole": 0}
    rows = KINDS["matmul"].input_cut(dims, {"kx": 2, "ky": ky}, shape)
    assert rows is not None and rows.shape == (ky, 2, len(shape))
    check_cut(shape, rows)
    need = reduction_need(shape, ky, -(-Kd // ky))
    reads = (need[:, 1] > need[:, 0]).all(axis=1)
    assert ((rows[:, 0] <= need[:, 0]) & (need[:, 1] <= rows[:, 1])).all(axis=1)[reads].all()
    assert KINDS["matmul"].input_cut({**dims, "tA": 1}, {"kx": 2, "ky": ky}, shape) is None
    lane_at = _row_multicast(ky, 2)
    p = _P(shape)
    assert check_windows(p, 0, _delivery(rows, lane_at, shape), need) == 0  # type: ignore[arg-type]
    if ky < 2 or Kd < ky:
        return
    swapped = lane_at.copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    with pytest.raises(SimError, match=r"offset \(0, 0\)\) reads"):
        check_windows(p, 0, _delivery(rows, swapped, shape), need)  # type: ignore[arg-type]
    short = rows.copy()
    short[1, 1, -1] -= 1  # row 1's block loses its last reduction index
    with pytest.raises(SimError, match=r"offset \(0, 1\)\) reads"):
        check_windows(p, 0, _delivery(short, lane_at, shape), need)  # type: ignore[arg-type]


def test_matmul_dims_mark_a_whose_reduction_is_not_its_last_axis() -> None:
    from wsec.ir.graph import Node, Value
    from wsec.ir.types import TensorType

    def v(*shape: int) -> Value:
        return Value("x", TensorType("f32", shape))

    vals = {"a": v(6, 4), "b": Value("b", TensorType("f32", (6, 5)), object()),  # type: ignore[arg-type]
            "c": v(4, 6)}
    kind = KINDS["matmul"]
    gemm_t = Node("g", "Gemm", ["a", "b"], ["y"], {"transA": 1})
    assert kind.dims_from([gemm_t], {**vals, "y": v(4, 5)}).get("tA") == 1
    gemm = Node("g", "Gemm", ["c", "b"], ["y"], {})
    assert "tA" not in kind.dims_from([gemm], {**vals, "y": v(4, 5)})
    ein = Node("e", "Einsum", ["a", "b"], ["y"], {"equation": "km,kn->mn"})
    assert kind.dims_from([ein], {**vals, "y": v(4, 5)}).get("tA") == 1
    ein = Node("e", "Einsum", ["c", "b"], ["y"], {"equation": "mk,kn->mn"})
    assert "tA" not in kind.dims_from([ein], {**vals, "y": v(4, 5)})


def _model(path: pathlib.Path) -> None:
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, list(shape),
                                  rng.standard_normal(shape).astype(np.float32).ravel().tolist())

    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxPool", ["p"], ["q"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["q"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Relu", ["f"], ["f2"]),
             helper.make_node("Gemm", ["f2", "w", "b"], ["h"]),
             helper.make_node("Relu", ["h"], ["h2"]),
             helper.make_node("MatMul", ["h2", "w2"], ["y"])]
    g = helper.make_graph(
        nodes, "cut_kinds",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 24, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])],
        [init("w", 16, 32), init("b", 32), init("w2", 32, 6)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _compile_wide(d: pathlib.Path, build: Callable[[pathlib.Path], None]
                  ) -> tuple[Program, pathlib.Path]:
    """The model `build` writes, compiled with lanes as wide as their sides
    allow (route headroom), so its bundles get one lane per sink row."""
    build(d / "m.onnx")
    m = compile_model(str(d / "m.onnx"),
                      CompileOptions(pass_options=["route{headroom=1000}"])).module
    write_binary(m, str(d / "m.bin"))
    return load_binary(str(d / "m.bin")), d / "m.onnx"


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    """Pools and matmuls compiled with lanes as wide as their sides allow
    (route headroom): their bundles get one lane per sink row, cut."""
    return _compile_wide(tmp_path_factory.mktemp("cutk"), _model)


def _cut_sinks(p: Program) -> dict[int, int]:
    """Cut bundle index -> its sink kernel."""
    return {bi: int(b["sink"]) for bi, b in enumerate(p.bundles)
            if int(b["flags"]) & BUNDLE_CUT}


def runs_from_its_lanes(p: Program, onnx_path: pathlib.Path, kernels: Iterable[int]
                        ) -> RunResult:
    """Simulate p: the kernels given read only what their lanes delivered
    and the output matches onnxruntime's. Returns the run."""
    x = random_inputs(p, 0)
    res = simulate(p, x)
    for ki in kernels:
        assert res.kernel_stats[p.kernels[ki].name]["forwarded_pes"] == 0
    ref, _ = onnx_reference(str(onnx_path), x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-4, atol=1e-5)
    return res


def test_cut_pool_and_matmul_kernels_read_only_their_lanes(
        wide: tuple[Program, pathlib.Path]) -> None:
    p, onnx_path = wide
    cut = _cut_sinks(p)
    kinds = {p.kernels[ki].kind for ki in cut.values()}
    assert {"pool", "matmul"} <= kinds
    ops = {p.kernels[ki].body[0]["op"] for ki in cut.values()}
    assert {"MaxPool", "GlobalAveragePool"} <= ops
    res = runs_from_its_lanes(p, onnx_path, cut.values())
    text = format_stats(p, res)
    assert "by kind (kernels checked" in text and " pool " in text


def _first_cut(p: Program, kind: str, op: str | None = None) -> int:
    return next(bi for bi, ki in _cut_sinks(p).items() if p.kernels[ki].kind == kind
                and (op is None or p.kernels[ki].body[0]["op"] == op) and int(
                    p.bundles[bi]["lanes"]) > 1)


def swapped_boxes_raise(p: Program, bi: int, a: int, b: int, offset: str) -> None:
    """Swapping slice records a and b (two lanes' boxes of cut bundle bi,
    still a cover) makes a PE of its sink, at an offset matching `offset`,
    read an element that never arrived there."""
    name = p.kernels[int(p.bundles[bi]["sink"])].name
    p.slices[[a, b]] = p.slices[[b, a]].copy()
    try:
        with pytest.raises(SimError, match=rf"kernel '{name}' .*PE \(\d+, \d+\) \(offset "
                                           rf"\({offset}\)\) reads .*never arrived there"):
            simulate(p, random_inputs(p, 0))
    finally:
        p.slices[[a, b]] = p.slices[[b, a]].copy()


def swapped_end_lanes_raise(p: Program, bi: int, offset: str = r"\d+, \d+") -> None:
    """swapped_boxes_raise on the first and the last lane of bundle bi."""
    first = int(p.bundles[bi]["slice0"])
    swapped_boxes_raise(p, bi, first, first + int(p.bundles[bi]["lanes"]) - 1, offset)


def dropped_lane_raises(p: Program, bi: int) -> None:
    """Lane 0 of bundle bi delivering to no core (its RAMP bit cleared)
    makes the simulator fail naming the bundle's value and a PE."""
    r = p.routes.copy()
    lane = np.flatnonzero((r["bundle"] == bi) & (r["lane"] == 0))
    r["tx"][lane] &= ~np.uint8(PORT_BITS["RAMP"])  # lane 0 delivers to no core
    value = p.edges[int(p.bundles[bi]["edge"])].value
    with pytest.raises(SimError) as ex:
        simulate(replace(p, routes=r), random_inputs(p))
    msg = str(ex.value)
    assert f"%{value}" in msg and re.search(r"PE \(\d+, \d+\)", msg), msg


@pytest.mark.parametrize("kind, op", [("pool", "MaxPool"), ("pool", "GlobalAveragePool"),
                                      ("matmul", None)])
def test_swapping_two_cut_lanes_boxes_is_an_error_at_a_pe(
        wide: tuple[Program, pathlib.Path], kind: str, op: str | None) -> None:
    p, _ = wide
    bi = _first_cut(p, kind, op)
    swapped_end_lanes_raise(p, bi, r"0, 0")


def test_shortening_a_pools_halo_is_an_error_at_its_pe(wide: tuple[Program, pathlib.Path]
                                                        ) -> None:
    p, _ = wide
    bi = _first_cut(p, "pool", "MaxPool")
    s0 = int(p.bundles[bi]["slice0"])
    boxes = p.lane_boxes(bi)
    assert boxes is not None
    cut = 2  # more than the pad above the input (the box's margin for it)
    lane = next(i for i in range(len(boxes) - 1)
                if boxes[i, 1, 2] - cut >= max(boxes[i, 0, 2] + 1, boxes[i + 1, 0, 2])
                and (boxes[i, :, 1] == boxes[i + 1, :, 1]).all())
    p.slices["stop"][s0 + lane, 2] -= cut  # the next lane still carries those rows
    try:
        with pytest.raises(SimError, match=r"PE \(\d+, \d+\) \(offset \(0, \d+\)\) reads "
                                           r".*never arrived there \(lane \d+ of .* carries it"):
            simulate(p, random_inputs(p, 0))
    finally:
        p.slices["stop"][s0 + lane, 2] += cut


def test_dropping_a_cut_lane_at_a_matmul_pe_is_an_error(wide: tuple[Program, pathlib.Path]
                                                         ) -> None:
    p, _ = wide
    bi = _first_cut(p, "matmul")
    r = p.routes
    ramp = PORT_BITS["RAMP"]
    mine = np.flatnonzero((r["bundle"] == bi) & ((r["tx"].astype(np.int64) & ramp) != 0))
    i = int(mine[-1])
    old = int(r["tx"][i])
    r["tx"][i] = old & ~ramp  # the lane passes the PE's core by
    try:
        with pytest.raises(SimError, match=r"PE \(\d+, \d+\)"):
            simulate(p, random_inputs(p, 0))
    finally:
        r["tx"][i] = old


def _inside_row_boxes(shape: tuple[int, ...], rows: np.ndarray, reads: list[np.ndarray],
                      row_of: list[int]) -> None:
    """Every element PE index i reads (a boolean mask of the value) lies in
    the box of its PE row row_of[i]; the boxes cover the value."""
    check_cut(shape, rows)
    for i, mask in enumerate(reads):
        lo, hi = rows[row_of[i]]
        box = np.zeros(shape, bool)
        box[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
        assert not (mask & ~box).any(), f"PE index {i} reads outside row {row_of[i]}'s box"


def _spread_row(p: int) -> list[int]:
    w = int(np.ceil(np.sqrt(p)))
    return [i // w for i in range(p)]


def _grouped_row(n: int) -> list[int]:
    return [i % min(n, MAX_COLUMN) for i in range(n)]


@pytest.mark.parametrize("shape, p", [((1, 64, 7, 7), 10), ((3, 5), 4), ((2, 3, 4), 24),
                                      ((5, 9, 2), 7)])
def test_elementwise_rows_hold_each_pes_block(shape: tuple[int, ...], p: int) -> None:
    E = int(np.prod(shape))
    kind = KINDS["elementwise"]
    rows = kind.held_cut({"E": E, "Pf": 0}, {"p": p}, shape)  # in the value's shape
    assert rows is not None
    n = -(-E // p)
    flat = np.arange(E).reshape(shape)
    reads = [(flat >= i * n) & (flat < (i + 1) * n) for i in range(p)]
    _inside_row_boxes(shape, rows, reads, _spread_row(p))
    # routed, over the value flattened where that is lighter (input_view)
    view = kind.input_view({"E": E, "Pf": 0}, {"p": p}, shape)
    cut = kind.input_cut({"E": E, "Pf": 0}, {"p": p}, shape)
    if view is None:
        assert np.array_equal(cut, rows)
    else:
        assert view == (E,)
        _inside_row_boxes((E,), cut, [r.reshape(-1) for r in reads], _spread_row(p))
    assert KINDS["elementwise"].input_cut({"E": E, "Pf": 1}, {"p": p}, shape) is None
    assert KINDS["elementwise"].input_cut({"E": 2 * E, "Pf": 0}, {"p": p}, shape) is None


@pytest.mark.parametrize("shape, axis, p", [((1, 1000), 1, 16), ((2, 3, 5), 1, 7),
                                            ((4, 6), 0, 30), ((3, 4, 5), 2, 40)])
def test_softmax_rows_hold_each_pes_segment(shape: tuple[int, ...], axis: int, p: int) -> None:
    E = shape[axis]
    dims = {"E": E, "rows": int(np.prod(shape)) // E}
    if axis != len(shape) - 1:
        dims["after"] = len(shape) - 1 - axis
    rows = KINDS["softmax"].input_cut(dims, {"p": p}, shape)
    assert rows is not None
    pe, pr = min(p, E), max(1, p // E)
    nb, rl = -(-E // pe), -(-(int(np.prod(shape)) // E) // pr)
    idx = np.indices(shape)
    other = [a for a in range(len(shape)) if a != axis]
    row = np.ravel_multi_index(tuple(idx[a] for a in other), [shape[a] for a in other]) \
        if other else np.zeros(shape, np.int64)
    seg, rg = softmax_cells(shape, axis, p)  # which PE index holds which pair
    reads = [(idx[axis] // nb == seg[i]) & (row // rl == rg[i]) for i in range(p)]
    _inside_row_boxes(shape, rows, reads, _spread_row(p))
    if axis != len(shape) - 1:  # the axis is known only from the dims
        assert KINDS["softmax"].input_cut({**dims, "after": 0}, {"p": p}, shape) is None \
            or shape[-1] == E


NORMS = [  # shape, c, s, r, L (LRN window), row norm (LayerNormalization over the last `lead` axes)
    ((2, 16, 5, 5), 4, 3, 1, 1, 0),
    ((1, 8, 7, 7), 3, 4, 1, 5, 0),
    ((4, 6), 2, 3, 1, 1, 0),
    ((2, 6, 9), 3, 2, 1, 1, 0),
    ((2, 5, 12), 3, 1, 4, 1, 1),
    ((6, 8), 6, 1, 1, 1, 1),
    ((2, 3, 4, 5), 4, 1, 3, 1, 2),
]


@pytest.mark.parametrize("case", NORMS)
def test_norm_rows_hold_each_pes_channels_and_rows(case: tuple) -> None:
    shape, c, s, r, L, trailing = case
    idx = np.indices(shape)
    n = c * s * r
    if trailing:
        lead = len(shape) - trailing
        C, W = int(np.prod(shape[:lead])), int(np.prod(shape[lead:]))
        dims = {"N": 1, "C": C, "H": 1, "W": W, "L": 1, "Pr": 2 * W}
        flat = np.arange(C * W).reshape(shape)
        rb, wb = -(-C // c), -(-W // r)
        reads = [(flat // W // rb == i // (s * r)) & (flat % W // wb == i % r) for i in range(n)]
    else:
        N, C = shape[:2]
        H = shape[2] if len(shape) >= 4 else 1
        dims = {"N": N, "C": C, "H": H, "W": int(np.prod(shape[2:])) // H, "L": L, "Pr": 0}
        cb, hb = -(-C // c), -(-(N * H) // s)
        nh = idx[0] * H + (idx[2] if len(shape) >= 4 else 0)
        half = (L - 1) // 2
        group, row = KINDS["norm"].cells(dims, {"c": c, "s": s, "r": r})  # an LRN's may snake
        reads = [(idx[1] >= group[i] * cb - half) & (idx[1] < (group[i] + 1) * cb + L - 1 - half)
                 & (nh // hb == row[i]) for i in range(n)]
    rows = KINDS["norm"].input_cut(dims, {"c": c, "s": s, "r": r}, shape)
    assert rows is not None
    _inside_row_boxes(shape, rows, reads, _grouped_row(n))


def _norms_model(path: pathlib.Path) -> None:
    rng = np.random.default_rng(1)

    def init(name: str, *shape: int, scale: float = 1.0) -> onnx.TensorProto:
        v = (rng.random(shape) + 0.5) * scale
        return helper.make_tensor(name, TensorProto.FLOAT, list(shape),
                                  v.astype(np.float32).ravel().tolist())

    nodes = [helper.make_node("Conv", ["x", "w"], ["cv"], pads=[1, 1, 1, 1]),
             helper.make_node("LRN", ["cv"], ["l"], size=3),
             helper.make_node("LayerNormalization", ["l", "ls", "lb"], ["n"], axis=-1),
             helper.make_node("MaxPool", ["cv"], ["mp"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["mp", "n"], ["a"]),
             helper.make_node("Mul", ["mp", "a"], ["a2"]),
             helper.make_node("BatchNormalization", ["a2", "sc", "bi", "mu", "va"], ["bn"]),
             helper.make_node("Softmax", ["bn"], ["y"], axis=1)]
    g = helper.make_graph(
        nodes, "cut_norms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 12, 12])],
        [init("w", 16, 16, 3, 3, scale=0.02), init("sc", 16), init("bi", 16), init("mu", 16),
         init("va", 16), init("ls", 12), init("lb", 12)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def norms(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    """LRN, BatchNormalization and Softmax kernels compiled with wide lanes:
    their bundles are cut."""
    return _compile_wide(tmp_path_factory.mktemp("cutn"), _norms_model)


def test_cut_norm_and_softmax_kernels_read_only_their_lanes(
        norms: tuple[Program, pathlib.Path]) -> None:
    p, onnx_path = norms
    cut = _cut_sinks(p)
    ops = {p.kernels[ki].body[0]["op"] for ki in cut.values()}
    assert {"LRN", "BatchNormalization", "Softmax"} <= ops
    runs_from_its_lanes(p, onnx_path, cut.values())


@pytest.mark.parametrize("op", ["LRN", "BatchNormalization", "Softmax"])
def test_swapping_two_cut_lanes_into_a_norm_or_softmax_is_an_error_at_a_pe(
        norms: tuple[Program, pathlib.Path], op: str) -> None:
    p, _ = norms
    bi = next(b for b, ki in _cut_sinks(p).items() if p.kernels[ki].body[0]["op"] == op)
    swapped_end_lanes_raise(p, bi, r"0, 0")


def test_narrowing_an_lrn_lanes_channels_is_an_error_at_its_pe(
        norms: tuple[Program, pathlib.Path]) -> None:
    """An LRN row's box holds its channels plus the window's neighbours; a
    lane without the neighbour channel above leaves the PE short."""
    p, _ = norms
    bi = next(b for b, ki in _cut_sinks(p).items() if p.kernels[ki].body[0]["op"] == "LRN")
    s0 = int(p.bundles[bi]["slice0"])
    boxes = p.lane_boxes(bi)
    assert boxes is not None
    C = int(boxes[:, 1, 1].max())
    lane = next(i for i in range(len(boxes)) if 0 < boxes[i, 1, 1] < C)
    p.slices["stop"][s0 + lane, 1] -= 1  # its last channel: another lane still carries it
    try:
        with pytest.raises(SimError, match=rf"offset \(0, {lane}\)\) reads %\w+\[0, "
                                           rf"{int(boxes[lane, 1, 1]) - 1}, "):
            simulate(p, random_inputs(p, 0))
    finally:
        p.slices["stop"][s0 + lane, 1] += 1


def _host_cut(p: Program) -> tuple[int, dict]:
    """The cut bundle from the host and its I/O map entry."""
    bi = next(b for b in _cut_sinks(p) if int(p.bundles[b]["flags"]) & BUNDLE_FROM_HOST)
    e = p.edges[int(p.bundles[bi]["edge"])]
    sink = p.kernels[int(p.bundles[bi]["sink"])].name
    io = next(d for d in p.info["host_io"]["inputs"] if d["value"] == e.value
              and d["sink"] == sink)
    return bi, io


def test_a_cut_host_input_sends_each_lane_its_box(norms: tuple[Program, pathlib.Path]) -> None:
    p, _ = norms
    bi, io = _host_cut(p)
    boxes = p.lane_boxes(bi)
    assert boxes is not None and "ranges" not in io
    assert io["boxes"] == boxes.tolist() and len(io["pes"]) == len(boxes)
    res = simulate(p, random_inputs(p, 0))
    assert res.kernel_stats[p.kernels[int(p.bundles[bi]["sink"])].name]["forwarded_pes"] == 0


def test_host_boxes_that_differ_from_the_lanes_are_rejected(
        norms: tuple[Program, pathlib.Path]) -> None:
    p, _ = norms
    bi, io = _host_cut(p)
    saved = [[list(a), list(b)] for a, b in io["boxes"]]
    io["boxes"][3][0][2] += 1  # the host would send lane 3 one row less
    try:
        with pytest.raises(FormatError, match=rf"bundle #{bi} .* from the host to .*: the I/O "
                                              r"map sends lane 3 .* its slice record says"):
            check_records(p)
        with pytest.raises(SimError, match=r"the I/O map sends lane 3 the box \[.*\], its "
                                           r"bundle's lane 3 carries \["):
            simulate(p, random_inputs(p, 0))
    finally:
        io["boxes"] = saved


def test_a_short_host_lane_is_an_error_at_its_pe(norms: tuple[Program, pathlib.Path]) -> None:
    """Host and lane agree on a box one row short of what its PE row's
    window reads (the next lane still carries the row): the PE raises."""
    p, _ = norms
    bi, io = _host_cut(p)
    s0 = int(p.bundles[bi]["slice0"])
    boxes = p.lane_boxes(bi)
    assert boxes is not None
    lo, hi = boxes[:, 0, 2], boxes[:, 1, 2]
    lane = next(i for i in range(len(boxes)) if hi[i] - 2 > lo[i] and any(
        j != i and (boxes[j, :, 1] == boxes[i, :, 1]).all() and lo[j] <= hi[i] - 2
        and hi[j] >= hi[i] for j in range(len(boxes))))  # another lane carries its last rows
    saved = [[list(a), list(b)] for a, b in io["boxes"]]
    p.slices["stop"][s0 + lane, 2] -= 2
    io["boxes"][lane][1][2] -= 2
    try:
        check_records(p)  # still a cover, and the I/O map agrees
        with pytest.raises(SimError, match=rf"offset \(\d+, {lane}\)\) reads %x\[.*never "
                                           r"arrived there"):
            simulate(p, random_inputs(p, 0))
    finally:
        p.slices["stop"][s0 + lane, 2] += 2
        io["boxes"] = saved


def test_every_library_kind_says_whether_its_rows_read_a_box() -> None:
    """Each kind of wsec's own library overrides input_cut: a per-row cut,
    or None with the reason in its docstring (not the silent default)."""
    from wsec.ir.kernel_kind import KernelKind
    from wsec.ir.library_common import LibraryKind

    for name, kind in KINDS.items():
        if not isinstance(kind, LibraryKind) or not type(kind).__module__.startswith("wsec.ir"):
            continue  # cost-model kinds (ISPD 2020) compute nothing; tests register their own
        fn = type(kind).input_cut
        assert fn is not KernelKind.input_cut, f"kind '{name}' keeps the default input_cut"
        assert fn.__doc__ and len(fn.__doc__.split()) > 8, f"kind '{name}': say why"


def test_a_scalar_inbox_is_whole_or_absent() -> None:
    """A 0-d value travels on one lane: a PE whose core received it holds
    all of it (its routes are checked by the routers), so no window of it
    is short; a window of 0 dims is the whole scalar, read by every PE of
    the row, and a PE no lane reached reads what never arrived."""
    d = _delivery(None, np.zeros((2, 3), np.int64), ())
    assert check_windows(_P(()), 0, d, np.zeros((2, 2, 0), np.int64)) == 0  # type: ignore[arg-type]
    d = _delivery(None, np.array([[0, -1, -1], [0, 0, 0]]), ())
    assert check_windows(_P(()), 0, d, np.zeros((2, 2, 0), np.int64)) == 2  # type: ignore[arg-type]


def test_an_elementwise_kernel_tiling_a_constant_cuts_its_input_by_the_tiles() -> None:
    """A learned position table added to the embeddings is tiled over the
    rectangle (its first long axis in blocks along y): PE row py owns the
    outputs of table rows block py, so the embeddings' row box is that block
    of every other axis whole. Routed, rows owning none of it (a table
    shorter than the rectangle is high) leave the input flat; held, they
    hold nothing."""
    from wsec.ir.graph import Kernel, Node
    from wsec.ir.kernels import KINDS, input_cut
    from wsec.ir.movement import Operands

    def cut(T: int, D: int, p: int, routed: bool) -> np.ndarray | None:
        shapes = {"x": (1, T, D), "pos": (1, T, D), "y": (1, T, D)}
        dims = {"E": T * D, "I": 1, "O": 1, "Q": 1, "P": 0, "Pf": 1, "Fa": T, "Fb": D, "Fr": 1}
        k = Kernel("k0", "kernel", ["x", "pos"], ["y"], kind="elementwise", dims=dims,
                   knobs={"p": p}, body=[Node("a", "Add", ["x", "pos"], ["y"])])
        ops = Operands(shapes.__getitem__, {"pos": np.zeros(shapes["pos"])}.get, routed)
        rows = input_cut(k, "x", shapes["x"], ops)
        if rows is not None:  # each row's box: the table rows its tiles hold (weight_shard)
            for py in range(rows.shape[0]):
                held = KINDS["elementwise"].weight_shard(dims, {"p": p}, 0, shapes["pos"], 0, py)
                if held[1].stop > held[1].start:
                    assert rows[py, :, 1].tolist() == [held[1].start, held[1].stop]
        return rows

    rows = cut(17, 32, 544, routed=False)  # 24 x 23 PEs: rows 17.. own nothing
    assert rows is not None and rows.shape == (23, 2, 3)
    for py in range(17):
        assert rows[py].tolist() == [[0, py, 0], [1, py + 1, 32]]
    assert not rows[17:].any()
    assert cut(17, 32, 544, routed=True) is None
    rows = cut(64, 8, 64, routed=True)  # 8 x 8 PEs, 8 table rows each
    assert rows is not None
    assert rows[:, 0, 1].tolist() == list(range(0, 64, 8)) and (rows[:, 1, 2] == 8).all()


@pytest.mark.parametrize("n,h", [(3456, 512), (7, 7), (513, 512), (1024, 512), (1000, 512)])
def test_grouped_layout_fills_rows_with_consecutive_pes(n: int, h: int) -> None:
    """grouped_pe puts every PE index on its own cell of the (w, h) layout,
    every row holding some, a row's PEs consecutive indices (so a pooling
    row reads adjacent row groups of one channel block), and grouped_index
    inverts it (n or more where no PE sits)."""
    from wsec.ir.library_common import grouped_cells, grouped_index

    w = -(-n // h)
    cells = grouped_cells(w, h, n)
    assert sorted(cells[cells >= 0].tolist()) == list(range(n))
    assert (cells >= 0).any(axis=1).all()
    for y in range(h):
        row = cells[y][cells[y] >= 0]
        assert (np.diff(row) == 1).all()
        for x in range(w):
            i = grouped_index(x, y, (w, h), n)
            assert i == cells[y, x] if cells[y, x] >= 0 else i >= n
