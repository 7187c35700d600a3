"""Reads of the small kinds proven from their lanes: a split's outputs, a
small operand broadcast onto an element-wise kernel, an element-wise
kernel's rows cut over its input flattened.

A data-movement kernel deals its outputs over its PEs in sequence, in the
order of their sources (wsec.ir.movement.block_owners), so the rows of a
split (q, k and v of an attention's packed projection) each copy a block
of one or two neighbouring slices of its input: their boxes are light
enough to cut, where each output dealt over all the PEs made every row's
hull span nearly the whole input. An element-wise kernel's small operand
broadcast onto its grid (a squeeze-excitation scale) is read whole by
every row: one lane whose spine hands it to every row carries it (a
multicast: route_bundles.choose_pitch cuts a value half a link holds with
a single lane), where a flat lane landed on one PE and the others read
what no lane brought. An element-wise row of consecutive blocks reads one
range of its input flattened, where in the value's shape its hull spans
every channel it straddles (ElementwiseKind.input_view). These tests
check the pieces,
that compiled models read so from their lanes and match onnxruntime, and
that a lane dropped or boxes swapped is a SimError naming the PE.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from conftest import compiled_file, compiled_graph
from onnx import TensorProto, helper
from test_cut_kinds import _cut_sinks, dropped_lane_raises, swapped_end_lanes_raise
from test_transformer_fixtures import FIXTURES, fixture_data
from wsec.backends.format import Program
from wsec.backends.sim import simulate
from wsec.ir.graph import Kernel, Node
from wsec.ir.lanes import box_elements, check_cut
from wsec.ir.library_rowwise import DatamoveKind, ElementwiseKind
from wsec.ir.movement import TAG, Operands, block_owners, rows_read, sources
from wsec.passes.route_bundles import pick_pitch
from wsec.run import ATOL, RTOL, compare, onnx_reference

T, D = 5, 6  # tokens, and the width of each of q, k, v


def _split_body() -> list[Node]:
    """x [1, T, 3D] split into q, k, v; k transposed; the kernel lists its
    outputs v, kt, q (as exporters order them by their readers)."""
    return [Node("sp", "Split", ["x", "sizes"], ["q", "k", "v"], {"axis": 2}),
            Node("tr", "Transpose", ["k"], ["kt"], {"perm": [0, 2, 1]})]


CONSTS = {"sizes": np.array([D, D, D], np.int64)}
SHAPES = {"x": (1, T, 3 * D), "sizes": (3,)}
OUTS = ["v", "kt", "q"]


def _tags() -> list[np.ndarray]:
    tags = sources(_split_body(), ["x"], SHAPES, CONSTS.get)
    assert tags is not None
    return [tags[o] for o in OUTS]


@pytest.mark.parametrize("pes", [1, 4, 7, 18, 90])
def test_outputs_are_dealt_in_the_order_of_their_sources(pes: int) -> None:
    """q, k's transpose and v together, sorted by the element of x each
    copies: PE i copies elements [i n, (i + 1) n) of x (each once here),
    a run of consecutive ones, and forwards at most n elements."""
    tags = _tags()
    owners = block_owners(tags, pes)
    total = sum(t.size for t in tags)
    n = -(-total // pes)
    src = np.concatenate([(t - TAG).astype(np.int64) for t in tags])
    seq = np.concatenate(owners)
    np.testing.assert_array_equal(seq, src // n)
    assert np.bincount(seq).max() <= n


def test_a_splits_rows_read_consecutive_ranges_of_its_input() -> None:
    """Each row copies a run of consecutive elements of x: over x flattened
    its box is exact (the rows partition x), and in x's shape the rows'
    boxes together hold no more elements than with each output dealt over
    all the PEs (every row then reads part of each slice)."""
    tags = _tags()
    pes, cols = 6, 2
    flat = (int(np.prod(SHAPES["x"])),)
    line = rows_read(tags, 0, flat, pes, cols)
    check_cut(flat, line)
    assert int(box_elements(line).sum()) == flat[0]
    rows = rows_read(tags, 0, SHAPES["x"], pes, cols)
    check_cut(SHAPES["x"], rows)
    apart = np.zeros_like(rows)
    for t in tags:
        one = rows_read([t], 0, SHAPES["x"], pes, cols)
        live = (apart[:, 1] > apart[:, 0]).all(axis=1)[:, None]
        apart[:, 0] = np.where(live, np.minimum(apart[:, 0], one[:, 0]), one[:, 0])
        apart[:, 1] = np.where(live, np.maximum(apart[:, 1], one[:, 1]), one[:, 1])
    assert int(box_elements(rows).sum()) <= int(box_elements(apart).sum())
    # brute force: row r's box is the hull of the elements its PEs copy
    owners = block_owners(tags, pes)
    for r in range(pes // cols):
        at = np.concatenate([(t - TAG)[o // cols == r] for t, o in zip(tags, owners, strict=True)])
        idx = np.array(np.unravel_index(at.astype(np.int64), SHAPES["x"]))
        np.testing.assert_array_equal(rows[r, 0], idx.min(axis=1))
        np.testing.assert_array_equal(rows[r, 1], idx.max(axis=1) + 1)


def test_the_datamove_kind_cuts_a_split_by_its_rows_ranges() -> None:
    k = Kernel("k0", "kernel", ["x"], OUTS, kind="datamove", dims={"E": T * 3 * D},
               body=_split_body(), knobs={"c": 1, "h": 4})
    ops = Operands(lambda n: SHAPES[n], CONSTS.get, routed=True)
    kind = DatamoveKind()
    rows = kind.body_cut(k, "x", ops)
    assert rows is not None
    # routed, over x flattened: four rows, a quarter of x each (23, 23, 23, 21)
    assert kind.body_view(k, "x", ops) == (T * 3 * D,)
    assert rows[:, :, 0].tolist() == [[0, 23], [23, 46], [46, 69], [69, 90]]


def _spread(shape: tuple[int, ...], operand: tuple[int, ...], p: int) -> tuple[Kernel, Operands]:
    body = [Node("mul", "Mul", ["a", "s"], ["m"])]
    e = int(np.prod(shape))
    k = Kernel("k0", "kernel", ["a", "s"], ["m"], kind="elementwise",
               dims={"E": e, "I": 2, "O": 1, "Q": 1, "P": 0}, body=body, knobs={"p": p})
    shapes = {"a": shape, "s": operand, "m": shape}
    return k, Operands(lambda n: shapes[n], {}.get, routed=True)


def test_a_small_broadcast_operand_is_read_whole_by_every_row() -> None:
    kind = ElementwiseKind()
    k, ops = _spread((1, 8, 6, 6), (1, 8, 1, 1), 16)
    rows = kind.body_cut(k, "s", ops)
    assert rows is not None
    live = (rows[:, 1] > rows[:, 0]).all(axis=1)
    assert live.all() and (rows[:, 0] == 0).all() and (rows[:, 1] == [1, 8, 1, 1]).all()
    # an operand larger than a row's share of the grid (288 / 8 rows) stays flat
    k, ops = _spread((1, 8, 6, 6), (1, 8, 6, 1), 64)
    assert kind.body_cut(k, "s", ops) is None
    # one that does not broadcast onto the grid has no rows
    k, ops = _spread((1, 8, 6, 6), (1, 3, 1, 1), 16)
    assert kind.body_cut(k, "s", ops) is None


def test_pick_pitch_cuts_one_lane_where_least_allows_it() -> None:
    """One lane carrying all of a value to every row is cut only where
    `least` allows a single lane (choose_pitch: half a link holds the
    value), not where the flat split's headroom asks for two; boxes lighter
    at finer pitches keep the rule of the fair share."""
    assert pick_pitch({8: 16}, 8, 16, 2, 2, 1000) == 0
    assert pick_pitch({8: 16}, 8, 16, 2, 1, 1000) == 8
    assert pick_pitch({8: 16}, 8, 16, 2, 1, 31) == 0  # more than half a link
    # the finest pitch whose lanes carry a fair share (LANE_SHARE) of the
    # flat lane: 4 (10 of 16; 2's 3 are less than a quarter); 8's lanes are
    # heavier
    lighter = {1: 2, 2: 3, 4: 10, 8: 16}
    assert pick_pitch(lighter, 8, 16, 1, 1, 1000) == 4


# --- compiled models ------------------------------------------------------------------------
C, H, W = 16, 12, 12


def se_model() -> onnx.GraphProto:
    """A squeeze-excitation block: a conv's output scaled per channel by a
    sigmoid of its pooled channels [1, C, 1, 1], then a 1x1 conv."""
    rng = np.random.default_rng(3)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (rng.standard_normal(shape) * 0.3).ravel().tolist())

    inits = [init("w0", C, 3, 3, 3), init("w1", 4, C, 1, 1), init("w2", C, 4, 1, 1),
             init("w3", 8, C, 1, 1)]
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c0"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["g"]),
             helper.make_node("Conv", ["g", "w1"], ["g1"]),
             helper.make_node("Relu", ["g1"], ["g2"]),
             helper.make_node("Conv", ["g2", "w2"], ["g3"]),
             helper.make_node("Sigmoid", ["g3"], ["s"]),
             helper.make_node("Mul", ["a", "s"], ["m"]),
             helper.make_node("Conv", ["m", "w3"], ["y"])]
    return helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, H, W])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, H, W])], inits)


@pytest.fixture(scope="module")
def se(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return compiled_graph(tmp_path_factory.mktemp("se"), se_model())


def _bundle_into(p: Program, kind: str, value: str) -> int:
    return next(bi for bi, ki in _cut_sinks(p).items() if p.kernels[ki].kind == kind
                and p.edges[int(p.bundles[bi]["edge"])].value == value)


def test_the_scale_reaches_every_row_of_the_multiply(se: tuple[Program, pathlib.Path]) -> None:
    p, path = se
    bi = _bundle_into(p, "elementwise", "s")
    assert int(p.bundles[bi]["lanes"]) == 1  # one lane, its spine along every row
    ki = int(p.bundles[bi]["sink"])
    from wsec.backends.sim import random_inputs

    x = random_inputs(p, 0)
    res = simulate(p, x)
    assert res.kernel_stats[p.kernels[ki].name]["forwarded_pes"] == 0  # all from its lanes
    ref, _ = onnx_reference(str(path), x)
    np.testing.assert_allclose(res.outputs["y"], ref["y"], rtol=1e-4, atol=1e-5)


def test_the_scales_lane_dropped_is_an_error_at_a_pe(se: tuple[Program, pathlib.Path]) -> None:
    p, _ = se
    dropped_lane_raises(p, _bundle_into(p, "elementwise", "s"))


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Program:
    return compiled_file(tmp_path_factory.mktemp("gpt"), FIXTURES / "gpt_o14.onnx")


def _split_inputs(p: Program) -> list[int]:
    return [bi for bi, ki in _cut_sinks(p).items() if p.kernels[ki].kind == "datamove"
            and any(b["op"] == "Split" for b in p.kernels[ki].body)]


def test_a_gpts_splits_read_only_their_lanes(gpt: Program) -> None:
    """The packed q, k, v projections of both blocks are cut into their
    splits; the model runs strict (no PE reads what its lanes did not
    bring) and matches onnxruntime."""
    p = gpt
    assert len(_split_inputs(p)) == 2
    ins, _ = fixture_data("gpt_o14")
    res = simulate(p, ins, strict=True)
    want, _ = onnx_reference(str(FIXTURES / "gpt_o14.onnx"), ins)
    for name, v in want.items():
        assert compare(name, res.outputs[name], v, RTOL, ATOL).ok


def test_a_splits_lanes_dropped_or_swapped_are_errors_at_a_pe(gpt: Program) -> None:
    bi = _split_inputs(gpt)[0]
    dropped_lane_raises(gpt, bi)
    swapped_end_lanes_raise(gpt, bi)


def test_an_elementwise_rows_blocks_are_cut_over_the_value_flattened() -> None:
    """[1, 4, 100] over 25 PEs, five to a row: a row's blocks (80
    elements) straddle channels, whose whole rows its hull in the shape
    holds; flattened, each row reads exactly its range."""
    kind = ElementwiseKind()
    dims, knobs, shape = {"E": 400, "I": 1, "O": 1, "Q": 1, "P": 0}, {"p": 25}, (1, 4, 100)
    assert kind.input_view(dims, knobs, shape) == (400,)
    flat = kind.input_cut(dims, knobs, shape)
    assert flat is not None and flat[:, :, 0].tolist() == [[80 * r, 80 * r + 80]
                                                          for r in range(5)]
    held = kind.held_cut(dims, knobs, shape)  # rows holding it without lanes: in its shape
    assert held is not None and held.shape == (5, 2, 3)
    assert int(box_elements(held).sum()) > int(box_elements(flat).sum())
    # 16 PEs, four to a row: a row's blocks are one channel, as tight in the shape
    assert kind.input_view(dims, {"p": 16}, shape) is None
    # the operands the chain reads on their owners take the same view, routed
    k, ops = _spread((1, 4, 100), (1, 4, 100), 25)
    assert kind.body_view(k, "s", ops) == (400,)
    got = kind.body_cut(k, "s", ops)
    assert got is not None and (got == flat).all()


CNN = FIXTURES / "cnn"


@pytest.fixture(scope="module")
def selin(tmp_path_factory: pytest.TempPathFactory) -> Program:
    return compiled_file(tmp_path_factory.mktemp("selin"), CNN / "selin_d18.onnx")


def _viewed_elementwise(p: Program) -> list[int]:
    return [bi for bi, ki in _cut_sinks(p).items() if p.kernels[ki].kind == "elementwise"
            and len(p.lane_view(bi)) == 1 and int(p.bundles[bi]["lanes"]) > 1]


def test_a_cnns_elementwise_inputs_cut_flattened_read_only_their_lanes(selin: Program
                                                                       ) -> None:
    """A fixture whose element-wise multiply reads two activations over
    rows straddling channels: cut over the value flattened, the whole model
    runs strict and matches onnxruntime."""
    p = selin
    assert _viewed_elementwise(p)
    d = np.load(CNN / "selin_d18.npz")
    ins = {k[3:]: d[k] for k in d.files if k.startswith("in.")}
    res = simulate(p, ins, strict=True)
    want, _ = onnx_reference(str(CNN / "selin_d18.onnx"), ins)
    for name, v in want.items():
        assert compare(name, res.outputs[name], v, RTOL, ATOL).ok


def test_a_flattened_elementwise_cuts_lanes_swapped_or_dropped_are_errors(selin: Program
                                                                         ) -> None:
    bi = _viewed_elementwise(selin)[0]
    swapped_end_lanes_raise(selin, bi)
    dropped_lane_raises(selin, bi)
