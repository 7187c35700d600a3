"""Issue 12 deliverable 2, weight streaming: a phase's PEs compute from the
activations their rows hold (moved in before the phase: the kind's per-row
cut, sim_stream_pe.held), as a pipeline kernel's PEs from their lanes. A
PE reading outside its row's box is a SimError at that PE; the stats say
which phases read only what their rows held."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import wsec
from conftest import ROOT
from wsec.backends import sim_weight_stream
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.backends.sim_base import value_array_type
from wsec.backends.sim_pe import node_of
from wsec.backends.sim_stats import format_stats, move_figures
from wsec.backends.sim_stream_pe import held
from wsec.backends.weight_stream import stream_weight
from wsec.ir.graph import Kernel
from wsec.ir.kernels import row_read_input
from wsec.run import onnx_reference

MODEL = ROOT / "tests" / "fixtures" / "vit_o17.onnx"  # conv, matmuls, norms, softmax, ...


@pytest.fixture(scope="module")
def stream_bin(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("held") / "vit.bin"
    wsec.compile(str(MODEL), mode="stream", embed_weights=True).save(str(out))
    return out


def _cut_phase(p, every: bool = False, kind: str = "") -> tuple[int, str]:  # noqa: ANN001
    """A phase (of `kind`) with an activation its kind cuts into row boxes
    (`every`: all of its activations cut), the largest."""
    best = None
    for ph in p.info["phases"]:
        ki = int(ph["kernel"])
        k = p.kernels[ki]
        if kind and k.kind != kind:
            continue
        acts = [i for i in dict.fromkeys(k.inputs) if i and i not in k.weights]
        streams = {int(d["weight"]): d for d in p.info["streams"] if int(d["kernel"]) == ki}
        got = held(p, ki, acts, {w: stream_weight(p, streams[i]) for i, w in enumerate(k.weights)})
        if every and any(d.boxes is None for d in got.values()):
            continue
        for v, d in got.items():
            if d.boxes is not None and (best is None or d.numel > best[2]):
                best = (ki, v, d.numel)
    assert best is not None, "no phase holds a cut activation"
    return best[0], best[1]


def test_phases_compute_from_their_rows_holdings(stream_bin: pathlib.Path) -> None:
    p = load_binary(str(stream_bin))
    x = random_inputs(p, 0)
    res = simulate(p, x, strict=True)  # no PE reads outside its row's holding, flat ones too
    ref, _ = onnx_reference(str(MODEL), x)
    for name, want in ref.items():
        np.testing.assert_allclose(res.outputs[name], want, rtol=1e-4, atol=1e-4)
    checked = [k.name for k in p.kernels if "forwarded_pes" in res.kernel_stats[k.name]]
    acts = [k.name for k in p.kernels if any(i and i not in k.weights for i in k.inputs)]
    assert checked == acts  # every phase reading an activation checks its PEs' windows
    ki, _ = _cut_phase(p, every=True)
    assert res.kernel_stats[p.kernels[ki].name]["forwarded_pes"] == 0  # proven from its rows
    # every phase reads only what its rows hold: conv, matmul (a residual tail's
    # operand on the reduction-end row), norm, softmax, data movement, gather and
    # the element-wise add of the position table (tiled over its rows)
    assert {k.kind for k in p.kernels} >= {"conv", "matmul", "norm", "softmax", "datamove",
                                           "elementwise"}
    for k in p.kernels:
        assert res.kernel_stats[k.name].get("forwarded_pes", 0) == 0, (k.name, k.kind)
    assert "read only what their rows held" in format_stats(p, res)


@pytest.mark.parametrize("kind", ["conv", "datamove", "elementwise", "matmul", "norm", "softmax"])
def test_a_row_holding_less_than_its_pes_read_is_an_error_at_a_pe(
        stream_bin: pathlib.Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    p = load_binary(str(stream_bin))
    ki, value = _cut_phase(p, kind=kind)
    real = held

    def shrunk(prog, k, values, consts=None):  # noqa: ANN001, ANN202
        out = real(prog, k, values, consts)
        if k == ki:
            d = out[value]
            boxes = d.boxes.copy()
            r = int(np.flatnonzero((boxes[:, 1] > boxes[:, 0]).all(axis=1))[-1])
            ax = int(np.argmax(boxes[r, 1] - boxes[r, 0]))
            boxes[r, 1, ax] -= 1  # the last holding row misses its last slice
            d.boxes = boxes
        return out

    monkeypatch.setattr(sim_weight_stream, "held", shrunk)
    with pytest.raises(SimError, match=rf"kernel '{p.kernels[ki].name}' \({p.kernels[ki].kind}\)"
                       r": PE \(\d+, \d+\) \(offset \(\d+, \d+\)\) reads %.*, which never "
                       r"arrived there \((no row|PE row \d+) of the phase holds it; the PE "
                       r"holds its row's box "):
        simulate(p, random_inputs(p, 0))


def test_a_grouped_convs_rows_hold_their_boxes_routed_over_its_view() -> None:
    """A grouped conv's row reads its channel block of every group (with
    c = 1 every channel) of its rows and halo: routed, its lanes carry that
    as one box of the input viewed as (N, G, C/G, H, W) (cut_view); held
    without lanes, the rows hold their bounding boxes in the value's shape,
    and each PE's window lies in its row's."""
    from wsec.ir.graph import Kernel, Node
    from wsec.ir.kernels import KINDS, cut_view, input_cut
    from wsec.ir.lanes import check_cut
    from wsec.ir.movement import Operands

    dims = {"N": 1, "C": 8, "H": 6, "W": 6, "K": 8, "R": 3, "S": 3, "sh": 1, "sw": 1, "dh": 1,
            "dw": 1, "ph": 2, "pw": 2, "Ho": 6, "Wo": 6, "G": 2}
    knobs = {"k": 2, "c": 1, "s": 3}  # (more groups: stacked over rows, library_conv.stacked)
    k = Kernel("k0", "kernel", ["x", "w"], ["y"], kind="conv", dims=dims, knobs=knobs,
               body=[Node("c", "Conv", ["x", "w"], ["y"], {"group": 2})])
    shapes = {"x": (1, 8, 6, 6), "w": (8, 4, 3, 3)}
    held_ops = Operands(shapes.__getitem__, {"w": np.zeros(shapes["w"])}.get)
    routed = Operands(held_ops.shape, held_ops.const, True)
    assert cut_view(k, "x", shapes["x"], routed) == (1, 2, 4, 6, 6)
    assert cut_view(k, "x", shapes["x"], held_ops) == shapes["x"]
    viewed = input_cut(k, "x", shapes["x"], routed)
    assert viewed is not None and viewed.shape == (3, 2, 5)
    assert (viewed[:, 1, 1] == 2).all() and (viewed[:, 1, 2] == 4).all()  # every group, whole
    assert input_cut(k, "x", shapes["x"]).tolist() == viewed.tolist()
    rows = input_cut(k, "x", shapes["x"], held_ops)
    assert rows is not None and rows.shape == (3, 2, 4)
    check_cut(shapes["x"], rows)
    assert rows.tolist() == KINDS["conv"].held_cut(dims, knobs, shapes["x"]).tolist()
    assert (rows[:, 1, 1] == 8).all()  # every channel: its PEs' groups together


def test_stats_report_what_moving_the_rows_holdings_takes(stream_bin: pathlib.Path) -> None:
    """Per phase the simulator counts the wavelets its busiest PE receives
    to hold its row's boxes (held_wavelets): at least any one row's box of
    the data input every PE of a row reads (row_read_input; the conv's
    window, not the 1/(h w) share), at least the share of any other input,
    and `--stats` sums them next to the schedule's move estimate, which
    counts the same holdings (plus the outputs' share), so no phase moves
    more than its schedule said."""
    p = load_binary(str(stream_bin))
    res = simulate(p, random_inputs(p, 0))
    wl = p.target.wavelet_bytes
    for ph in p.info["phases"]:
        ki = int(ph["kernel"])
        k = p.kernels[ki]
        st = res.kernel_stats[k.name]
        assert st["phase_move"] == int(ph["move"])
        acts = [i for i in dict.fromkeys(k.inputs) if i and i not in k.weights]
        streams = {int(d["weight"]): d for d in p.info["streams"] if int(d["kernel"]) == ki}
        got = held(p, ki, acts, {w: stream_weight(p, streams[i]) for i, w in enumerate(k.weights)})
        data = row_read_input(Kernel(k.name, "kernel", list(k.inputs), list(k.outputs),
                                     kind=k.kind, body=[node_of(d) for d in k.body]))
        uw, uh = k.unrotated_shape
        for v, d in got.items():
            item = np.dtype(value_array_type(p, v)[1]).itemsize
            if d.boxes is not None and v == data:
                box = int(np.prod(np.maximum(d.boxes[:, 1] - d.boxes[:, 0], 0), axis=1).max())
                assert st["held_move"] >= -(-box * item // wl), (k.name, v)
            assert st["held_move"] >= -(-d.numel // (uw * uh)) * item // wl, (k.name, v)
        assert st["phase_move"] >= st["held_move"], k.name
    est, moved, under, _ = move_figures(res)
    assert under == 0
    assert est == sum(int(ph["move"]) for ph in p.info["phases"])
    assert moved == sum(int(res.kernel_stats[k.name]["held_move"]) for k in p.kernels)
    assert (f"moves between phases: the schedule estimates {est} cycles/sample; delivering the "
            f"rows' holdings takes at least {moved}") in format_stats(p, res)


def test_only_the_data_input_of_a_kind_whose_row_pes_read_it_all_counts_its_row_box() -> None:
    """A conv's PEs of a row all read the row's window (its box reaches each
    of them); a fused tail's residual is read apart, and a data movement's
    PEs each forward their own block of a hull: those count their share."""
    from wsec.ir.graph import Node
    conv = Kernel("k0", "kernel", ["x", "w", "r"], ["y"], kind="conv",
                  body=[Node("c", "Conv", ["x", "w"], ["t"]), Node("a", "Add", ["t", "r"], ["y"])])
    assert row_read_input(conv) == "x"
    move = Kernel("k1", "kernel", ["x"], ["y"], kind="datamove",
                  body=[Node("t", "Transpose", ["x"], ["y"])])
    assert row_read_input(move) is None
    assert row_read_input(Kernel("k2", "kernel", [], ["y"], kind="conv")) is None
