"""A gather's indices cut whole onto every PE row (GatherKind.operand_cut).

Why: every PE of a gather tests every index against the table rows it
holds, so each of its p rows reads all the indices. Routed flat, the
indices' lanes carried contiguous parts of them, each multicast along some
rows, and a gather of more than one row read indices no lane brought (the
NeoX exports' token embedding, raised to its consumer's six rows: 6
forwarded PEs each). Cut, each lane carries the whole index tensor (a
spine hands it on to the rows of its pitch).
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from conftest import compiled_graph
from onnx import TensorProto, helper
from test_cut_kinds import dropped_lane_raises
from wsec.backends.format import Program
from wsec.backends.sim import random_inputs, simulate
from wsec.ir.kernels import KINDS
from wsec.run import compare, onnx_reference


def test_every_row_reads_all_the_indices() -> None:
    dims = {"T": 48, "V": 8, "Dq": 6, "ax": 0, "nd": 2, "L": 6, "O": 36, "Cst": 1}
    got = KINDS["gather"].operand_cut(dims, {"q": 2, "p": 3}, 1, (2, 3))
    assert got is not None and got.tolist() == [[[0, 0], [2, 3]]] * 3
    assert KINDS["gather"].operand_cut(dims, {"q": 2, "p": 3}, 2, (2, 3)) is None
    assert KINDS["gather"].operand_cut(dims, {"q": 2, "p": 3}, 1, ()) is None  # a scalar index


def _lookup() -> onnx.GraphProto:
    """Eight token ids from the host into a 2048 x 32 embedding table: too
    large for one PE's SRAM, so its rows are split over p > 1 PE rows."""
    rng = np.random.default_rng(5)
    tab = helper.make_tensor("tab", TensorProto.FLOAT, [2048, 32],
                             (rng.standard_normal((2048, 32)) * 0.3).ravel().tolist())
    vi = helper.make_tensor_value_info
    return helper.make_graph([helper.make_node("Gather", ["tab", "ids"], ["y"], axis=0)],
                             "lookup", [vi("ids", TensorProto.INT64, [1, 8])],
                             [vi("y", TensorProto.FLOAT, [1, 8, 32])], [tab])


@pytest.fixture(scope="module")
def lookup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, pathlib.Path]:
    return compiled_graph(tmp_path_factory.mktemp("lookup"), _lookup())


def _indices_bundle(p: Program) -> int:
    (ki,) = [i for i, k in enumerate(p.kernels) if k.kind == "gather"]
    assert int(p.kernels[ki].knobs["p"]) > 1, (
        "precondition: the gather's table rows split over more than one PE row")
    (bi,) = [bi for bi, b in enumerate(p.bundles) if int(b["sink"]) == ki]
    return bi


def test_a_gather_of_several_rows_reads_only_the_indices_its_lanes_brought(
        lookup: tuple[Program, pathlib.Path]) -> None:
    p, model = lookup
    bi = _indices_bundle(p)
    boxes = p.lane_boxes(bi)
    assert boxes is not None, "the indices into the gather are routed flat"
    assert (boxes[:, 0] == 0).all() and (boxes[:, 1] == [1, 8]).all()  # each lane: all of them
    x = random_inputs(p, 2)
    res = simulate(p, x, strict=True)
    want, _ = onnx_reference(str(model), x)
    assert compare("y", res.outputs["y"], want["y"]).ok
    assert res.kernel_stats[p.kernels[int(p.bundles[bi]["sink"])].name]["forwarded_pes"] == 0


def test_an_index_lane_dropped_is_an_error_at_a_pe(lookup: tuple[Program, pathlib.Path]
                                                   ) -> None:
    p, _ = lookup
    dropped_lane_raises(p, _indices_bundle(p))
