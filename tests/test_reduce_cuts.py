"""Global means (a squeeze-excitation's ReduceMean, a classifier's pooling)
cut onto their PE rows, proven PE by PE.

Why: a reduction's PE rows hold consecutive segments of consecutive
channel maps, so in (N, C, H, W) a row straddling two maps has both whole
maps as its box, and where the PEs holding work were dealt row-major the
first rows took all of them: either way a row's lane carried more than a
link's capacity and the router kept the bundle flat, its rows reading
what no lane brought. The kind now cuts over the value flattened where
the reduced axes trail (one range per row: wsec.ir.library_reduce.
reduce_ranges) and spreads the PEs holding work over all its rows
(reduce_layout); the executor's windows follow both.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from conftest import compiled_file
from test_cut_kinds import _cut_sinks, dropped_lane_raises, swapped_end_lanes_raise
from wsec.backends.format import Program
from wsec.backends.sim import simulate
from wsec.ir.kernels import KINDS
from wsec.ir.library_reduce import reduce_layout, reduce_ranges, working_pes
from wsec.run import ATOL, RTOL, compare, onnx_reference

CNN = pathlib.Path(__file__).resolve().parent / "fixtures" / "cnn"


def _inputs(name: str) -> dict[str, np.ndarray]:
    d = np.load(CNN / f"{name}.npz")
    return {k[3:]: d[k] for k in d.files if k.startswith("in.")}


def test_reduce_ranges_are_each_pes_segments_flattened() -> None:
    """(1, 3, 5, 7) averaged over its 5 x 7 maps: 3 output groups of a
    map, 2 segments of 18 and 17 elements each."""
    got = reduce_ranges((1, 3, 5, 7), (2, 3), 3, 2)
    assert got is not None
    assert got[:, :, 0].tolist() == [[0, 18], [18, 35], [35, 53], [53, 70], [70, 88],
                                     [88, 105]]
    assert reduce_ranges((1, 3, 5, 7), (1, 2), 3, 2) is None  # a kept axis trails
    # two maps a PE (pr = 1): the range of both
    assert reduce_ranges((2, 5, 3), (2,), 4, 1)[:, :, 0].tolist() == [
        [0, 9], [9, 18], [18, 27], [27, 30]]


@pytest.mark.parametrize("n, w, h", [(24, 6, 6), (6, 3, 3), (48, 7, 7), (5, 3, 4), (9, 3, 3)])
def test_reduce_layout_spreads_the_working_pes_over_every_row(n: int, w: int, h: int) -> None:
    at = reduce_layout(n, w, h)
    assert len(set(at.tolist())) == n and at.min() >= 0 and at.max() < w * h
    rows = np.bincount(at // w, minlength=h)
    assert rows.max() - rows.min() <= 1 and rows.max() <= w
    assert (np.diff(at) > 0).all()  # in order: a chain's PEs follow one another
    if n == w * h:
        assert at.tolist() == list(range(n))  # row-major where every PE works


def test_a_global_means_rows_each_take_a_fair_share() -> None:
    """MobileNet-v3's second squeeze-excitation mean: 24 maps of 8 x 8 on
    32 PEs (6 x 6). Dealt row-major, four rows held 6 maps each (1.5x a
    sixth of the value); spread, each of the six rows holds 4."""
    dims = {"E": 1536, "O": 24, "R": 64, "scan": 0, "C": 1, "Rx": 12}
    rows = KINDS["reduce"].input_cut(dims, {"p": 32}, (1, 24, 8, 8))
    assert rows is not None and rows.shape[0] == 6
    assert (rows[:, 1, 1] - rows[:, 0, 1]).tolist() == [4] * 6
    assert working_pes(24, 24, 1) == 24 and working_pes(12, 8, 1) == 6


@pytest.fixture(scope="module")
def shuffle(tmp_path_factory: pytest.TempPathFactory) -> Program:
    return compiled_file(tmp_path_factory.mktemp("shuffle"), CNN / "shuffle_d18.onnx")


def _reduce_inputs(p: Program) -> list[int]:
    return [bi for bi, ki in _cut_sinks(p).items() if p.kernels[ki].kind == "reduce"]


def test_a_shufflenets_mean_is_cut_flattened_and_runs_strict(shuffle: Program) -> None:
    """Its ReduceMean over (1, 16, 8, 8) on 48 PEs in rows of 7: cut over
    the value flattened; the whole model reads only what its lanes brought
    (--strict) and matches onnxruntime."""
    p = shuffle
    (bi,) = _reduce_inputs(p)
    view = p.lane_view(bi)
    assert len(view) == 1 and view[0] == 1024
    ins = _inputs("shuffle_d18")
    res = simulate(p, ins, strict=True)
    want, _ = onnx_reference(str(CNN / "shuffle_d18.onnx"), ins)
    for name, v in want.items():
        row = compare(name, res.outputs[name], v, RTOL, ATOL)
        assert row.ok, f"{name}: max abs {row.max_abs:.3g}"


def test_a_flattened_means_lanes_dropped_or_swapped_are_errors_at_a_pe(shuffle: Program
                                                                       ) -> None:
    bi = _reduce_inputs(shuffle)[0]
    dropped_lane_raises(shuffle, bi)
    swapped_end_lanes_raise(shuffle, bi)


def test_mobilenet_v3s_means_read_only_their_lanes(tmp_path: pathlib.Path) -> None:
    """Its three squeeze-excitation means (one flattened, two of maps
    spread over the rows) are cut and proven; the model matches
    onnxruntime."""
    p = compiled_file(tmp_path, CNN / "mbv3_d18.onnx")
    reduces = {ki for ki, k in enumerate(p.kernels) if k.kind == "reduce"
               and k.body[0]["op"] == "ReduceMean"}
    assert reduces <= {int(p.bundles[bi]["sink"]) for bi in _reduce_inputs(p)}
    ins = _inputs("mbv3_d18")
    res = simulate(p, ins)
    for ki in reduces:
        assert res.kernel_stats[p.kernels[ki].name]["forwarded_pes"] == 0
    want, _ = onnx_reference(str(CNN / "mbv3_d18.onnx"), ins)
    for name, v in want.items():
        assert compare(name, res.outputs[name], v, RTOL, ATOL).ok
