"""An element-wise kernel's broadcast operand cut per PE row (issue 12).

A squeeze-and-excitation block multiplies a per-channel scale (N, C, 1, 1)
over the feature map. The element-wise kernel deals the map's elements over
its PEs in consecutive blocks; the scale, smaller than the map, had no
per-row box, so its lanes carried the flat split and every PE whose
channels lay outside its lane's few elements read data no route brought.
Now a row's box is the channel range its PEs' blocks broadcast from
(ElementwiseKind._broadcast_cut, wsec.ir.cuts.broadcast_rows). These tests
check the boxes, that a compiled EfficientNet-like fixture cuts its SE
scales so and matches onnxruntime, and that shrinking or dropping such a
lane is a SimError at a PE.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import numpy as np
import pytest
from wsec.backends.format import BUNDLE_CUT, PORT_BITS, Program, type_shape
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.cli import main
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import check_cut
from wsec.run import compare, onnx_reference

ELEM = KINDS["elementwise"]
MODEL = pathlib.Path(__file__).parent / "fixtures" / "cnn" / "effnet_o17.onnx"


@pytest.mark.parametrize("grid, shape, p", [((1, 32, 16, 16), (1, 32, 1, 1), 23 * 23),
                                            ((2, 8, 5, 7), (8, 1, 1), 30),
                                            ((1, 6, 4, 4), (1, 1, 4, 1), 7)])
def test_a_rows_box_holds_what_its_pes_broadcast_from(grid: tuple[int, ...],
                                                       shape: tuple[int, ...], p: int) -> None:
    E = int(np.prod(grid))
    rows = ELEM._broadcast_cut({"E": E}, {"p": p}, grid, shape)
    assert rows is not None
    check_cut(shape, rows)  # inside the operand, covering it
    n = -(-E // p)
    w = int(np.ceil(np.sqrt(p)))
    at = np.stack(np.unravel_index(np.arange(E), grid), axis=1)[:, len(grid) - len(shape):]
    at = np.where(np.asarray(shape) == 1, 0, at)  # the operand element each grid element reads
    pe_row = (np.arange(E) // n) // w
    for py in range(rows.shape[0]):
        mine = at[pe_row == py]
        if mine.size:
            assert (rows[py, 0] <= mine.min(axis=0)).all()
            assert (mine.max(axis=0) < rows[py, 1]).all()


def test_an_operand_as_large_as_the_grid_or_not_broadcasting_has_none() -> None:
    grid = (1, 8, 4, 4)
    assert ELEM._broadcast_cut({"E": 128}, {"p": 16}, grid, grid) is None
    assert ELEM._broadcast_cut({"E": 128}, {"p": 16}, grid, (1, 3, 1, 1)) is None


@pytest.fixture(scope="module")
def effnet(tmp_path_factory: pytest.TempPathFactory) -> Program:
    d = tmp_path_factory.mktemp("bcast")
    assert main([str(MODEL), "-o", str(d / "e.bin"), "-q"]) == 0
    return load_binary(str(d / "e.bin"))


def _scale_cuts(p: Program) -> list[int]:
    """Cut bundles into element-wise kernels carrying an operand smaller
    than the kernel's grid."""
    out = []
    for bi in range(len(p.bundles)):
        ki = int(p.bundles[bi]["sink"])
        if ki < 0 or p.kernels[ki].kind != "elementwise" \
                or not int(p.bundles[bi]["flags"]) & BUNDLE_CUT:
            continue
        value = p.edges[int(p.bundles[bi]["edge"])].value
        numel = int(np.prod(type_shape(p.info["values"][value])))
        if numel < int(p.kernels[ki].dims["E"]):
            out.append(bi)
    return out


def test_the_se_scales_are_cut_and_the_model_matches(effnet: Program) -> None:
    p = effnet
    cuts = _scale_cuts(p)
    assert len(cuts) == 2  # the two SE blocks' scales
    x = random_inputs(p, 4)
    res = simulate(p, x)
    want, _ = onnx_reference(str(MODEL), x)
    for name in want:
        assert compare(name, res.outputs[name], want[name]).ok


def test_a_shrunk_scale_box_is_an_error(effnet: Program) -> None:
    """The scale is small: one lane (pitch R) carries all of it to the
    rows, so a shrunk box leaves channels no lane carries."""
    p = effnet
    bi = _scale_cuts(p)[0]
    s0 = int(p.bundles[bi]["slice0"])
    old = p.slices["stop"][s0].copy()
    p.slices["stop"][s0, 1] = max(1, int(old[1]) // 2)  # half its channels
    try:
        with pytest.raises(SimError, match=r"no lane carries element \[0, \d+, 0, 0\]"):
            simulate(p, random_inputs(p, 0))
    finally:
        p.slices["stop"][s0] = old


def test_a_dropped_scale_lane_is_an_error_naming_the_pe(effnet: Program) -> None:
    p = effnet
    bi = _scale_cuts(p)[0]
    r = p.routes.copy()
    lane = np.flatnonzero((r["bundle"] == bi) & (r["lane"] == 0))
    r["tx"][lane] &= ~np.uint8(PORT_BITS["RAMP"])  # lane 0 delivers to no core
    value = p.edges[int(p.bundles[bi]["edge"])].value
    with pytest.raises(SimError) as ex:
        simulate(replace(p, routes=r), random_inputs(p))
    msg = str(ex.value)
    assert f"%{value}" in msg and re.search(r"PE \(\d+, \d+\)", msg), msg
