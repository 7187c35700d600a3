"""The cut-cover check counts cells, not elements: it must agree with the
per-element definition (`cut_counts`) on any boxes, covers and gaps alike,
and name the same first gap."""

from __future__ import annotations

import numpy as np
import pytest
from wsec.ir.lanes import LaneError, _corner_counts, cell_counts, check_cut, cut_counts


def _reference(shape: tuple[int, ...], boxes: np.ndarray) -> str | None:
    """check_cut's verdict from per-element counts (boxes lie in the value)."""
    count = cut_counts(shape, boxes)
    if count.size and count.min() == 0:
        at = [int(v) for v in np.unravel_index(int(np.argmin(count)), shape)]
        return f"no lane carries element {at} of the value {list(shape)} (a gap)"
    return None


def _random_boxes(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A grid of per-axis intervals (as kinds' input_cut declare), widened
    here and there (halo), some boxes dropped or emptied (gaps), plus a few
    arbitrary boxes."""
    nd = len(shape)
    axes = []
    for n in shape:
        k = int(rng.integers(1, min(n, 4) + 1))
        inner = np.sort(rng.choice(np.arange(1, n), k - 1, replace=False)) if n > 1 else []
        cuts = np.concatenate([[0], inner, [n]]).astype(np.int64)
        axes.append(np.stack([cuts[:-1], cuts[1:]], axis=1))
    grid = np.stack(np.meshgrid(*[np.arange(len(a)) for a in axes], indexing="ij"),
                    axis=-1).reshape(-1, nd)
    boxes = np.zeros((len(grid), 2, nd), np.int64)
    for d in range(nd):
        boxes[:, :, d] = axes[d][grid[:, d]]
    halo = rng.random(boxes.shape) < 0.2
    boxes[:, 0][halo[:, 0]] -= 1
    boxes[:, 1][halo[:, 1]] += 1
    boxes = np.clip(boxes, 0, np.asarray(shape, np.int64))
    keep = rng.random(len(boxes)) > 0.15
    boxes = boxes[keep]
    if len(boxes) and rng.random() < 0.2:  # an empty box among live ones
        i, d = int(rng.integers(len(boxes))), int(rng.integers(nd))
        boxes[i, 1, d] = boxes[i, 0, d]
    extra = []
    for _ in range(int(rng.integers(0, 3))):
        a = np.array([rng.integers(0, n + 1) for n in shape], np.int64)
        b = np.array([rng.integers(x, n + 1) for x, n in zip(a, shape, strict=True)], np.int64)
        extra.append(np.stack([a, b]))
    if extra:
        boxes = np.concatenate([boxes, np.array(extra)])
    return boxes[rng.permutation(len(boxes))]


@pytest.mark.parametrize("seed", range(8))
def test_cell_counts_agree_with_per_element_counts_on_random_boxes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    verdicts = set()
    for _ in range(60):
        shape = tuple(int(n) for n in rng.integers(1, 7, int(rng.integers(1, 5))))
        boxes = _random_boxes(rng, shape)
        cuts, cells = cell_counts(shape, boxes)
        dense = cells
        for d, c in enumerate(cuts):
            dense = np.repeat(dense, np.diff(c), axis=d)
        assert np.array_equal(dense, cut_counts(shape, boxes))
        want = _reference(shape, boxes)
        verdicts.add(want is None)
        if want is None:
            check_cut(shape, boxes)
        else:
            with pytest.raises(LaneError) as err:
                check_cut(shape, boxes)
            assert str(err.value) == want
    assert verdicts == {True, False}  # covers and gaps both drawn


def test_corner_counts_agree_with_slices() -> None:
    rng = np.random.default_rng(11)
    for nd in range(1, 5):
        cells = tuple(int(n) for n in rng.integers(1, 6, nd))
        ia = np.stack([rng.integers(0, n, 20) for n in cells], axis=1)
        ib = np.stack([rng.integers(a + 1, n + 1) for a, n in zip(ia.T, cells, strict=True)],
                      axis=1)
        want = np.zeros(cells, np.int64)
        for a, b in zip(ia.tolist(), ib.tolist(), strict=True):
            want[tuple(slice(x, y) for x, y in zip(a, b, strict=True))] += 1
        assert np.array_equal(_corner_counts(cells, ia, ib), want)


def test_check_cut_of_scalars_and_empty_values() -> None:
    check_cut((), np.zeros((1, 2, 0), np.int64))
    with pytest.raises(LaneError, match=r"element \[\]"):
        check_cut((), np.zeros((0, 2, 0), np.int64))
    check_cut((3, 0), np.zeros((0, 2, 2), np.int64))  # nothing to carry
    big = (1 << 40, 3)  # cells, not elements: a huge value costs nothing
    check_cut(big, np.array([[[0, 0], [1 << 39, 3]], [[1 << 39, 0], [1 << 40, 3]]]))
    with pytest.raises(LaneError, match=rf"element \[{1 << 39}, 1\]"):
        check_cut(big, np.array([[[0, 0], [1 << 39, 3]], [[1 << 39, 0], [1 << 40, 1]],
                                 [[1 << 39, 2], [1 << 40, 3]]]))


def test_cell_counts_of_boxes_cutting_every_axis_everywhere() -> None:
    """Boxes on a diagonal cut each axis at every box: more cells than the
    boxes hold (counted box by box instead of by corners), still exact."""
    n = 40
    shape = (n, n, n)
    diag = np.arange(n)
    boxes = np.stack([np.stack([diag] * 3, axis=1), np.stack([diag + 1] * 3, axis=1)], axis=1)
    whole = np.array([[[0, 0, 0], [n, n, n]]])
    for b in (boxes, np.concatenate([boxes, whole])):
        cuts, cells = cell_counts(shape, b)
        assert [len(c) - 1 for c in cuts] == [n] * 3
        assert np.array_equal(cells, cut_counts(shape, b))
    with pytest.raises(LaneError, match=r"element \[0, 0, 1\]"):
        check_cut(shape, boxes)
