"""Residuals spread over a conv's reduction rows (issue 12: the skip read only from its lanes).

A conv with c > 1 input-channel blocks reduces its partial sums down each
row group's c rows; its fused tail runs on the group's last row. When the
ops between the conv and a residual Add are themselves additions, the
residual can join the partial sums as they pass any row (addition is
associative): row j of a group adds output channels [j K // c, (j + 1) K // c)
of the group's rows (wsec.ir.library_conv.skip_boxes), so the residual is
an ordinary per-row cut whose lanes carry a c-th of an owner row's box and
the simulator proves every read (sim_sharded._spread_skips). These tests
check the boxes and the condition, that a compiled ResNet's residuals are
cut so and proven and its outputs match onnxruntime, and that a shrunk box
or a dropped lane is a SimError at the PE reading the residual.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import numpy as np
import pytest
from test_cut_kinds import swapped_end_lanes_raise
from wsec.backends.emit import write_binary
from wsec.backends.format import BUNDLE_CUT, BUNDLE_OWNERS, PORT_BITS, Program
from wsec.backends.lanes import to_bundle
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.ir.graph import Kernel, Module, Node
from wsec.ir.kernels import KINDS, input_cut, owner_pitch, spread_over_rows
from wsec.ir.lanes import check_cut
from wsec.ir.library_conv import chain_operands, skip_boxes
from wsec.ir.movement import Operands
from wsec.run import onnx_reference

MODEL = pathlib.Path(__file__).parent / "fixtures" / "cnn" / "resnet_odd_o17.onnx"


@pytest.mark.parametrize("N, K, Ho, Wo, c, s", [(1, 8, 12, 12, 3, 3), (2, 5, 7, 3, 2, 4),
                                                 (1, 64, 56, 56, 6, 56), (1, 7, 3, 9, 7, 5)])
def test_a_groups_rows_partition_its_owner_rows_box(N: int, K: int, Ho: int, Wo: int, c: int,
                                                    s: int) -> None:
    boxes = skip_boxes(N, K, Ho, Wo, c, s)
    assert boxes.shape == (c * s, 2, 4)
    check_cut((N, K, Ho, Wo), boxes)  # inside the value, covering it
    owners = KINDS["conv"].output_rows({"N": N, "K": K, "Ho": Ho, "Wo": Wo}, {"c": c, "s": s},
                                       (N, K, Ho, Wo))
    elems = (boxes[:, 1] - boxes[:, 0]).clip(0).prod(axis=1)
    assert elems.sum() == N * K * Ho * Wo  # disjoint: each element on one row
    for g in range(s):
        mine = boxes[g * c:(g + 1) * c]
        own = owners[g * c + c - 1]
        if not (own[1] > own[0]).all():
            assert not mine.any()  # a group past the last output row reads nothing
            continue
        # every row of a live group reads a c-th of the channels, all of the group's rows
        assert (mine[:, 1] > mine[:, 0]).all()
        assert mine[:, :, [0, 2, 3]].tolist() == [own[:, [0, 2, 3]].tolist()] * c
        assert mine[0, 0, 1] == 0 and mine[-1, 1, 1] == K
        assert (mine[1:, 0, 1] == mine[:-1, 1, 1]).all()
        assert np.ptp(mine[:, 1, 1] - mine[:, 0, 1]) <= 1


def _n(name: str, op: str, *io: list[str]) -> Node:
    return Node(name, op, io[0], io[1])


def test_only_a_chain_of_adds_after_the_conv_spreads_its_operands() -> None:
    conv = _n("c", "Conv", ["x", "w"], ["y"])
    assert chain_operands([conv, _n("a", "Add", ["y", "r"], ["z"]),
                           _n("u", "Relu", ["z"], ["o"])], ["o"]) == ["r"]
    # a bias added first (either side), then the residual, then another
    assert chain_operands([conv, _n("b", "Add", ["bias", "y"], ["t"]),
                           _n("a", "Add", ["t", "r"], ["z"]),
                           _n("d", "Add", ["q", "z"], ["o"])], ["o"]) == ["bias", "r", "q"]
    # a scale before the add: the residual must meet the finished sum
    assert chain_operands([conv, _n("m", "Mul", ["y", "g"], ["t"]),
                           _n("a", "Add", ["t", "r"], ["o"])], ["o"]) == []
    # the conv's own result leaves the kernel: its owner must hold it without r
    assert chain_operands([conv, _n("a", "Add", ["y", "r"], ["o"])], ["o", "y"]) == []
    # the residual read twice, or computed in the body, or the sum read twice
    assert chain_operands([conv, _n("a", "Add", ["y", "r"], ["z"]),
                           _n("m", "Mul", ["z", "r"], ["o"])], ["o"]) == []
    assert chain_operands([conv, _n("u", "Relu", ["x"], ["r"]),
                           _n("a", "Add", ["y", "r"], ["o"])], ["o"]) == []
    assert chain_operands([conv, _n("a", "Add", ["y", "y"], ["o"])], ["o"]) == []
    assert chain_operands([conv, _n("a", "Add", ["y", "r"], ["z"]),
                           _n("e", "Add", ["z", "s"], ["o"]),
                           _n("f", "Mul", ["z", "h"], ["p"])], ["o", "p"]) == ["r"]


DIMS = {"N": 1, "C": 8, "H": 6, "W": 6, "K": 4, "R": 3, "S": 3, "sh": 1, "sw": 1, "dh": 1,
        "dw": 1, "ph": 2, "pw": 2, "Ho": 6, "Wo": 6, "G": 1}
SHAPES = {"x": (1, 8, 6, 6), "w": (4, 8, 3, 3), "r": (1, 4, 6, 6), "g": (1,), "b": (4, 1, 1)}


def _kernel(tail: list[Node], c: int = 2, k: int = 1, dims: dict | None = None) -> Kernel:
    return Kernel("k0", "kernel", ["x", "w", "r"], [tail[-1].outputs[0]], kind="conv",
                  dims=dims or DIMS, knobs={"k": k, "c": c, "s": 3},
                  body=[Node("c", "Conv", ["x", "w"], ["y"]), *tail])


def _ops(routed: bool) -> Operands:
    consts = {"w": np.zeros(SHAPES["w"]), "g": np.ones(1), "b": np.zeros(SHAPES["b"])}
    return Operands(SHAPES.__getitem__, consts.get, routed=routed)


@pytest.mark.parametrize("routed", [False, True])
def test_a_residual_after_additions_is_cut_on_every_reduction_row(routed: bool) -> None:
    k = _kernel([_n("b", "Add", ["y", "b"], ["t"]), _n("a", "Add", ["t", "r"], ["z"]),
                 _n("u", "Relu", ["z"], ["o"])])
    rows = input_cut(k, "r", SHAPES["r"], _ops(routed))
    assert rows is not None and rows.tolist() == skip_boxes(1, 4, 6, 6, 2, 3).tolist()
    assert (rows[:, 1] > rows[:, 0]).all() and owner_pitch(rows) == (0, 0)
    assert spread_over_rows(k, "r", _ops(routed))
    assert not spread_over_rows(k, "x", _ops(routed))


def test_a_residual_after_a_scale_or_with_too_few_channels_stays_on_the_owner_rows() -> None:
    ops = _ops(True)
    scaled = _kernel([_n("m", "Mul", ["y", "g"], ["t"]), _n("a", "Add", ["t", "r"], ["o"])])
    few = _kernel([_n("a", "Add", ["y", "r"], ["o"])], c=8)  # K = 4 < c = 8 rows
    one = _kernel([_n("a", "Add", ["y", "r"], ["o"])], c=1)  # its rows are the owners
    for k in (scaled, few):
        rows = input_cut(k, "r", SHAPES["r"], ops)
        assert rows is not None and owner_pitch(rows) == (k.knobs["c"], k.knobs["c"] - 1)
        assert not spread_over_rows(k, "r", ops)
    rows = input_cut(one, "r", SHAPES["r"], ops)
    assert rows.tolist() == KINDS["conv"].output_rows(DIMS, one.knobs, SHAPES["r"]).tolist()
    assert not spread_over_rows(one, "r", ops)  # no reduction to spread over


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Module, Program]:
    m = compile_model(str(MODEL), CompileOptions()).module
    path = tmp_path_factory.mktemp("spread") / "m.bin"
    write_binary(m, str(path))
    return m, load_binary(str(path))


def _spread_bundles(m: Module, p: Program) -> list[int]:
    """Binary bundle indices of the residuals spread over reduction rows
    that the router cut (it may route one flat where its lanes would
    overfill a link)."""
    kernels = {k.name: k for k in m.kernels()}
    ops = Operands.of_module(m)
    out = []
    for bi in range(len(p.bundles)):
        b = p.bundles[bi]
        if int(b["sink"]) < 0:
            continue
        k = kernels[p.kernels[int(b["sink"])].name]
        if spread_over_rows(k, p.edges[int(b["edge"])].value, ops) \
                and int(b["flags"]) & BUNDLE_CUT:
            out.append(bi)
    return out


def test_a_resnets_residuals_are_cut_over_the_reduction_rows(
        compiled: tuple[Module, Program]) -> None:
    m, p = compiled
    spread = _spread_bundles(m, p)
    assert spread  # the fixture has residual convs with c > 1
    for bi in spread:
        flags = int(p.bundles[bi]["flags"])
        assert flags & BUNDLE_CUT and not flags & BUNDLE_OWNERS
        b = to_bundle(p, bi)
        k = p.kernels[int(p.bundles[bi]["sink"])]
        c, s = int(k.knobs["c"]), int(k.knobs["s"])
        assert c > 1 and b.lanes * b.pitch == c * s
        boxes = p.lane_boxes(bi)
        d = k.dims
        rows = skip_boxes(d["N"], d["K"], d["Ho"], d["Wo"], c, s)
        assert boxes is not None and (boxes[:, 1] > boxes[:, 0]).all()
        if b.pitch == 1:  # each lane a c-th of an owner row's box
            assert sorted(map(str, boxes.tolist())) == sorted(map(str, rows.tolist()))


def test_spread_residuals_are_proven_and_the_outputs_match(
        compiled: tuple[Module, Program]) -> None:
    m, p = compiled
    x = random_inputs(p, 0)
    res = simulate(p, x)
    for bi in _spread_bundles(m, p):
        name = p.kernels[int(p.bundles[bi]["sink"])].name
        assert res.kernel_stats[name]["forwarded_pes"] == 0, name
    ref, _ = onnx_reference(str(MODEL), x)
    for key, v in ref.items():
        np.testing.assert_allclose(res.outputs[key], v, rtol=1e-3, atol=1e-3)


def test_swapped_row_boxes_of_the_residual_are_an_error_at_a_pe(
        compiled: tuple[Module, Program]) -> None:
    """The first and last lanes of a spread residual trade boxes (still a
    cover of the value): a PE of the row lane 0 serves reads channels of
    the residual that never arrived there."""
    m, p = compiled
    bi = next(bi for bi in _spread_bundles(m, p) if int(p.bundles[bi]["lanes"]) > 1)
    swapped_end_lanes_raise(p, bi)


def test_a_dropped_residual_lane_is_an_error_naming_the_pe(
        compiled: tuple[Module, Program]) -> None:
    """Lane 0 of a spread residual delivers to no core: the reduction row
    it served would add channels that never arrived; the lane's broken
    route (or that row's read) is an error naming a PE."""
    m, p = compiled
    bi = _spread_bundles(m, p)[0]
    r = p.routes.copy()
    lane = np.flatnonzero((r["bundle"] == bi) & (r["lane"] == 0))
    r["tx"][lane] &= ~np.uint8(PORT_BITS["RAMP"])
    value = p.edges[int(p.bundles[bi]["edge"])].value
    with pytest.raises(SimError) as ex:
        simulate(replace(p, routes=r), random_inputs(p))
    msg = str(ex.value)  # the route check or the PE's read names the PE and the residual
    assert f"%{value}" in msg and re.search(r"PE \(\d+, \d+\)", msg), msg


def test_a_small_residual_from_a_short_side_is_one_lane_to_every_row(
        compiled: tuple[Module, Program]) -> None:
    """A shortcut conv two PEs tall feeds a residual spread over 24 and 32
    reduction rows: no pitch below a group's c rows fits its side (the
    lanes would need R - k + 1 slots, or a corner to widen at, where source
    and sink face each other straight), so they read flat lanes (54 PEs
    reading what no lane brought). Half a link holds each residual whole:
    one lane carries it, its spine hands it to every row, the run is
    strict, and a PE of a row it skips is an error naming the PE."""
    m, p = compiled
    one = [bi for bi in _spread_bundles(m, p) if int(p.bundles[bi]["lanes"]) == 1]
    assert len(one) == 2
    for bi in one:
        k = p.kernels[int(p.bundles[bi]["sink"])]
        assert to_bundle(p, bi).pitch == int(k.knobs["c"]) * int(k.knobs["s"])
    x = random_inputs(p, 0)
    res = simulate(p, x, strict=True)  # no PE of the model reads what no lane brought
    ref, _ = onnx_reference(str(MODEL), x)
    for key, v in ref.items():
        np.testing.assert_allclose(res.outputs[key], v, rtol=1e-3, atol=1e-3)
    r = p.routes.copy()
    spine = np.flatnonzero((r["bundle"] == one[0]) & (r["lane"] == 0))
    last = spine[np.argmax(r["y"][spine])]  # the spine's last PE: the sink's last row
    r["tx"][last] &= ~np.uint8(PORT_BITS["RAMP"])
    with pytest.raises(SimError, match=r"PE \(\d+, \d+\)"):
        simulate(replace(p, routes=r), x)
