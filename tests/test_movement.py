"""wsec.ir.movement: a data-movement body run on index tensors names every
output element's source, and the datamove kind's per-row cut (body_cut) is
the hull of what each PE row forwards."""

from __future__ import annotations

import numpy as np
import pytest
from wsec.ir.graph import Kernel, Node
from wsec.ir.kernels import read_span
from wsec.ir.lanes import LaneError, check_cut, check_reads
from wsec.ir.library_rowwise import DatamoveKind
from wsec.ir.movement import TAG, Operands, block_owners, rows_read, sources

SHAPES = {"a": (1, 2, 3, 4), "b": (1, 3, 3, 4)}


def _decode(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    band = np.floor(t / TAG).astype(np.int64) - 1
    return band, (t - (band + 1) * TAG).astype(np.int64)


def _body() -> list[Node]:
    return [Node("cat", "Concat", ["a", "b"], ["c"], {"axis": 1}),
            Node("tr", "Transpose", ["c"], ["t"], {"perm": [0, 3, 1, 2]}),
            Node("rs", "Reshape", ["t", "shape"], ["y"])]


CONSTS = {"shape": np.array([1, 4, 15], np.int64)}


def test_tags_name_each_output_elements_source() -> None:
    tags = sources(_body(), ["a", "b"], SHAPES, CONSTS.get)
    assert tags is not None
    band, pos = _decode(tags["y"])
    # the same movement on (input, position) pairs, by numpy
    a = np.stack([np.zeros(24), np.arange(24)], -1).reshape(1, 2, 3, 4, 2)
    b = np.stack([np.ones(36), np.arange(36)], -1).reshape(1, 3, 3, 4, 2)
    want = np.concatenate([a, b], 1).transpose(0, 3, 1, 2, 4).reshape(-1, 2)
    np.testing.assert_array_equal(band, want[:, 0])
    np.testing.assert_array_equal(pos, want[:, 1])


def test_an_activation_steering_the_movement_or_a_combining_scatter_is_no_movement() -> None:
    body = [Node("rs", "Reshape", ["a", "s"], ["y"])]
    assert sources(body, ["a", "s"], {**SHAPES, "s": (2,)}, {}.get) is None  # shape: an input
    upd = [Node("sc", "ScatterND", ["a", "i", "b"], ["y"], {"reduction": "add"})]
    assert sources(upd, ["a", "b"], SHAPES, {"i": np.zeros((1, 1), np.int64)}.get) is None


@pytest.mark.parametrize("pes, cols", [(1, 1), (6, 2), (7, 1), (60, 4), (120, 3)])
def test_rows_read_is_the_hull_of_each_rows_blocks(pes: int, cols: int) -> None:
    tags = sources(_body(), ["a", "b"], SHAPES, CONSTS.get)
    assert tags is not None
    t = tags["y"]
    for band, name in enumerate(("a", "b")):
        rows = rows_read([t], band, SHAPES[name], pes, cols)
        owner = block_owners([t], pes)[0]  # dealt in the order of their sources
        for r in range(rows.shape[0]):  # brute force: the row's elements of this input
            mine = [i for i in range(t.size) if owner[i] // cols == r
                    and _decode(t[i])[0] == band]
            if not mine:
                assert (rows[r] == 0).all()
                continue
            at = np.array([np.unravel_index(int(_decode(t[i])[1]), SHAPES[name]) for i in mine])
            np.testing.assert_array_equal(rows[r, 0], at.min(axis=0))
            np.testing.assert_array_equal(rows[r, 1], at.max(axis=0) + 1)


def _kernel(body: list[Node], c: int, h: int) -> Kernel:
    outs = [body[-1].outputs[0]]
    return Kernel("k0", "kernel", ["a", "b"], outs, kind="datamove", dims={"E": 60},
                  body=body, knobs={"c": c, "h": h})


def _ops(extra: dict[str, tuple[int, ...]] | None = None) -> Operands:
    shapes = {**SHAPES, "shape": (3,), **(extra or {})}
    return Operands(lambda n: shapes[n], CONSTS.get)


def test_the_datamove_kind_cuts_each_input_by_its_rows_preimage() -> None:
    kind = DatamoveKind()
    k = _kernel(_body(), 2, 5)
    for name in ("a", "b"):
        rows = kind.body_cut(k, name, _ops())
        assert rows is not None and rows.shape == (5, 2, 4)
        check_cut(SHAPES[name], rows)  # every element on some row's lane
    assert kind.body_cut(k, "shape", _ops()) is None  # a constant: no lanes


def test_a_slice_that_leaves_elements_unread_is_cut_on_what_its_rows_read() -> None:
    """Its rows' boxes leave the unread columns in no box (not a cover of
    the value; the loader checks the lanes carry every element a row
    reads: wsec.ir.lanes.check_reads), each row exactly its part."""
    body = [Node("sl", "Slice", ["a", "st", "en", "ax"], ["y"])]
    consts = {"st": np.array([1]), "en": np.array([3]), "ax": np.array([3])}
    ops = Operands(lambda n: {**SHAPES, "st": (1,), "en": (1,), "ax": (1,)}[n], consts.get)
    k = Kernel("k0", "kernel", ["a"], ["y"], kind="datamove", dims={"E": 12}, body=body,
               knobs={"c": 1, "h": 3})
    rows = DatamoveKind().body_cut(k, "a", ops)
    assert rows is not None and rows.shape == (3, 2, 4)
    with pytest.raises(LaneError, match="a gap"):
        check_cut(SHAPES["a"], rows)
    # y is (1, 2, 3, 2): 12 elements, 4 per row, columns 1:3 of a's last axis
    assert (rows[:, 0, 3] >= 1).all() and (rows[:, 1, 3] <= 3).all()
    check_reads(SHAPES["a"], rows, rows)


def test_a_concatenations_input_is_cut_on_the_run_of_rows_reading_it() -> None:
    """A concatenation's input is forwarded by a run of the rows (the first
    part by the first rows, the second by the rest): routed or held, its
    rows' boxes say so, rows reading none of it an empty box, and the
    run from its first reading row to its last (read_span) is where its
    lanes land; the two inputs' runs meet at most on a shared row."""
    body = [Node("cat", "Concat", ["a", "b"], ["y"], {"axis": 1})]
    k = _kernel(body, 1, 5)
    kind = DatamoveKind()
    held = kind.body_cut(k, "a", _ops())
    assert held is not None and not (held[:, 1] > held[:, 0]).all()  # some rows read none
    # routed where lanes land on every row (placement's question): flat
    assert kind.body_cut(k, "a", Operands(_ops().shape, CONSTS.get, routed=True)) is None
    routed = Operands(_ops().shape, CONSTS.get, routed=True, runs=True)
    got = kind.body_cut(k, "a", routed)
    assert got is not None
    np.testing.assert_array_equal(got, held)
    a0, a1 = read_span(got)
    other = kind.body_cut(k, "b", routed)
    assert other is not None
    b0, b1 = read_span(other)
    # a's 24 of the 60 elements are the first, dealt 12 to a row: rows 0-1; b's rows 2-4
    assert (a0, a1, b0, b1) == (0, 2, 2, 5)
    live = (got[:, 1] > got[:, 0]).all(axis=1)
    assert live[a0:a1].all() and not live[:a0].any() and not live[a1:].any()
    check_cut(SHAPES["a"], got[a0:a1])  # the run's boxes cover the input
    assert read_span(np.zeros((3, 2, 4), np.int64)) == (0, 0)  # no row reads it
