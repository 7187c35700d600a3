"""Lanes landing on owner rows (cut "owners"), end to end.

A conv with c > 1 input-channel blocks reduces down each row group's c
rows; only the group's last row (its owner) holds the finished output and
runs the fused tail (a residual add), so only owner rows read the
residual. Its bundle lands a lane on each owner row with no spine
(wsec.ir.lanes): these tests compile a small ResNet whose residuals are
routed so (its conv results scaled before the add: an add right after the
conv spreads the residual over the reduction rows, test_skip_spread),
check the binary records them (flag, boxes, round trips of the IR text
and the binary), that the simulator proves every owner read from
its lane, and that a lane dropped or turned onto a non-owner row is a
SimError naming the PE.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from wsec.backends.emit import write_binary
from wsec.backends.format import BUNDLE_CUT, BUNDLE_OWNERS, PORT_BITS, FormatError, Program
from wsec.backends.lanes import check_records, to_bundle
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.ir.fabric import STEP
from wsec.ir.graph import Module
from wsec.ir.kernels import input_cut, owner_pitch
from wsec.ir.lanes import endpoints, spine_dir
from wsec.ir.movement import Operands
from wsec.ir.parser import parse_module
from wsec.ir.printer import print_module
from wsec.run import onnx_reference

RESNET = pathlib.Path(__file__).parent / "fixtures" / "cnn" / "resnet_odd_o17.onnx"


def _scaled(path: pathlib.Path) -> None:
    """The ResNet fixture with each residual block's conv result halved
    before its Add: the residual meets the finished sum on the owner rows
    (an Add right after the conv would spread it over the reduction rows,
    wsec.ir.library_conv.ConvKind.spread_operands)."""
    model = onnx.load(str(RESNET))
    convs = {o for n in model.graph.node if n.op_type == "Conv" for o in n.output}
    half = helper.make_tensor("half", TensorProto.FLOAT, [], [0.5])
    model.graph.initializer.append(half)
    nodes = []
    for n in model.graph.node:
        if n.op_type == "Add" and n.input[0] in convs:
            scaled = n.input[0] + "_half"
            nodes.append(helper.make_node("Mul", [n.input[0], "half"], [scaled]))
            n.input[0] = scaled
        nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))


@pytest.fixture(scope="module")
def scaled(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("owners") / "m.onnx"
    _scaled(path)
    return path


@pytest.fixture(scope="module")
def compiled(scaled: pathlib.Path) -> tuple[Module, Program]:
    m = compile_model(str(scaled), CompileOptions()).module
    path = scaled.with_suffix(".bin")
    write_binary(m, str(path))
    return m, load_binary(str(path))


def _owner_bundles(p: Program) -> list[int]:
    return [bi for bi, b in enumerate(p.bundles) if int(b["flags"]) & BUNDLE_OWNERS]


def test_residuals_land_on_the_owner_rows(compiled: tuple[Module, Program]) -> None:
    m, p = compiled
    kernels = {k.name: k for k in m.kernels()}
    ops = Operands.of_module(m)
    owned = [(e, b) for e in m.edges for b in e.bundles or () if b.cut == "owners"]
    assert owned  # the residuals of convs with c > 1
    for e, b in owned:
        k = kernels[b.sink]
        rows = input_cut(k, e.value, tuple(m.values[e.value].type.shape), ops)
        assert rows is not None
        pitch, off = owner_pitch(rows)
        assert (b.pitch, b.spine, b.lanes * b.pitch) == (pitch, 0, rows.shape[0])
        _, land = endpoints(b)
        py = (land[:, 0] - k.rect.x) if k.rotated else (land[:, 1] - k.rect.y)
        assert sorted(py.tolist()) == list(range(off, rows.shape[0], pitch))
    assert len(_owner_bundles(p)) == len(owned)
    for bi in _owner_bundles(p):
        assert int(p.bundles[bi]["flags"]) & BUNDLE_CUT
        assert to_bundle(p, bi).cut == "owners"


def test_owner_bundles_round_trip_the_ir_text_and_the_binary(
        compiled: tuple[Module, Program]) -> None:
    m, p = compiled
    text = print_module(m)
    assert " cut owners pitch " in text
    again = parse_module(text)
    want = [b for e in m.edges for b in e.bundles or ()]
    assert [b for e in again.edges for b in e.bundles or ()] == want
    assert [to_bundle(p, bi) for bi in range(len(p.bundles))] == want


def test_owner_lanes_prove_the_residual_reads(compiled: tuple[Module, Program],
                                              scaled: pathlib.Path) -> None:
    _, p = compiled
    x = random_inputs(p, 0)
    res = simulate(p, x)
    for bi in _owner_bundles(p):
        name = p.kernels[int(p.bundles[bi]["sink"])].name
        assert res.kernel_stats[name]["forwarded_pes"] == 0, name
    ref, _ = onnx_reference(str(scaled), x)
    for k, v in ref.items():
        np.testing.assert_allclose(res.outputs[k], v, rtol=1e-3, atol=1e-3)


def _lane0(p: Program, bi: int) -> tuple[np.ndarray, int]:
    """Route entries of lane 0 of bundle bi, and the one delivering at its
    landing PE."""
    r = p.routes
    lane = np.flatnonzero((r["bundle"] == bi) & (r["lane"] == 0))
    _, land = endpoints(to_bundle(p, bi))
    at = lane[(r["x"][lane] == land[0, 0]) & (r["y"][lane] == land[0, 1])]
    assert at.size == 1
    return lane, int(at[0])


def test_owner_lane_turned_onto_a_non_owner_row_is_an_error_at_that_pe(
        compiled: tuple[Module, Program]) -> None:
    """Lane 0's landing PE sends it on along the sink's side to the next row
    (which reads nothing of it) and that row's PE takes it in, instead of
    the owner: the owner PE reads what never arrived, a SimError naming it
    (where that PE's color is taken, the collision names the PE)."""
    _, p = compiled
    r0 = p.routes
    for bi in _owner_bundles(p):
        lane, land = _lane0(p, bi)
        b = to_bundle(p, bi)
        sx, sy = spine_dir(b)
        x, y = int(r0["x"][land]), int(r0["y"][land])
        taken = ((r0["x"] == x + sx) & (r0["y"] == y + sy) & (r0["color"] == b.color)).any()
        if b.reach == 0 and not taken:
            break
    else:
        pytest.skip("no owner lane of reach 0 with its next row's PE free on its color")
    d = next(k for k, v in STEP.items() if v == (sx, sy))
    r = r0.copy()
    r["tx"][land] = PORT_BITS[d]
    moved = r[land:land + 1].copy()
    moved["x"], moved["y"], moved["tx"] = x + sx, y + sy, PORT_BITS["RAMP"]
    moved["rx"] = PORT_BITS[{"N": "S", "S": "N", "E": "W", "W": "E"}[d]]
    r = np.concatenate([r, moved])
    r = r[np.lexsort((r["color"], r["y"], r["x"]))]
    with pytest.raises(SimError) as ex:
        simulate(replace(p, routes=r), random_inputs(p))
    msg = str(ex.value)
    assert re.search(rf"PE \({x}, {y}\) .*reads .*never arrived", msg), msg


def test_owner_lane_dropped_is_an_error_naming_the_pe(compiled: tuple[Module, Program]) -> None:
    """Lane 0 delivers to no core: its owner row never receives its box."""
    _, p = compiled
    bi = _owner_bundles(p)[0]
    lane, _ = _lane0(p, bi)
    r = p.routes.copy()
    r["tx"][lane] &= ~np.uint8(PORT_BITS["RAMP"])
    with pytest.raises(SimError) as ex:
        simulate(replace(p, routes=r), random_inputs(p))
    assert re.search(r"PE \(\d+, \d+\)", str(ex.value)), str(ex.value)


def test_loader_rejects_bad_owner_records(compiled: tuple[Module, Program],
                                          tmp_path: pathlib.Path) -> None:
    m, _ = compiled
    path = tmp_path / "m.bin"
    write_binary(m, str(path))
    p = load_binary(str(path))
    bi = _owner_bundles(p)[0]
    check_records(p)
    p.bundles["flags"][bi] &= ~np.uint8(BUNDLE_CUT)
    with pytest.raises(FormatError, match=rf"bundle #{bi} lands on owner rows but is not cut"):
        check_records(p)
    p = load_binary(str(path))
    p.bundles["flags"][bi] &= ~np.uint8(BUNDLE_OWNERS)  # spines: past the last owner row
    b = to_bundle(p, bi)
    assert b.cut == "rows" and b.spine == b.pitch - 1
    p = load_binary(str(path))
    p.bundles["pitch"][bi] = 2 * int(p.bundles["pitch"][bi])  # the last lanes land outside
    with pytest.raises(FormatError, match=rf"bundle #{bi} .*: lane \d+ lands on PE \(\d+, \d+\), "
                                          "outside its sink"):
        check_records(p)
