"""The fabric API checked against every target (archcheck style), and the
metrics module's definitions on hand-made routes."""

from __future__ import annotations

import numpy as np
import pytest
from wsec.ir.fabric import DIRS, LINK_PLANES, OPPOSITE, PORT_BITS, STEP, Fabric, mask_of, ports_of
from wsec.ir.graph import HOST, PORTS, Bundle, Edge, Module, Rect
from wsec.ir.metrics import (
    RouteArrays,
    busiest_link,
    colors_per_pe,
    first_overlap,
    link_loads,
    merge_shared,
    overlapping_pairs,
    placed_wirelength,
    route_arrays,
    routed_wirelength,
    terminal_hpwl,
)
from wsec.ir.target import TARGETS, get_target


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_archcheck(name: str) -> None:
    f = Fabric.of(get_target(name))
    t = f.target
    assert f.pes == t.width * t.height and f.sram_bytes == t.sram_bytes
    assert 0 < f.usable_colors <= t.colors
    # every port steps one PE and its opposite steps back
    for p in DIRS:
        dx, dy = STEP[p]
        assert abs(dx) + abs(dy) == 1 and STEP[OPPOSITE[p]] == (-dx, -dy)
    # links from the corners: inside the grid, or off it only through an edge
    for x, y in ((0, 0), (t.width - 1, 0), (0, t.height - 1), (t.width - 1, t.height - 1)):
        for p in DIRS:
            n = f.neighbour(x, y, p)
            assert n is None or f.on_grid(*n)
            assert (n is None) == f.off_grid(x, y, p)
            if n is not None:
                assert f.neighbour(*n, OPPOSITE[p]) == (x, y)
    # host inputs enter on the West edge through W, outputs leave East through E
    assert f.host_input_pe(5) == (0, 5) and f.off_grid(0, 5, "W")
    assert f.host_output_pe(5) == (t.width - 1, 5) and f.off_grid(t.width - 1, 5, "E")
    assert f.is_host_input(0, ("W",)) and not f.is_host_input(1, ("W",))
    assert f.is_host_output(t.width - 1, ("E", "RAMP")) and not f.is_host_output(0, ("E",))
    xs, masks = np.array([0, 0, 3]), np.array([PORT_BITS["W"], PORT_BITS["N"], PORT_BITS["W"]])
    assert f.host_input_mask(xs, masks).tolist() == [True, False, False]
    # shapes fit in either orientation
    side = max(t.width, t.height)
    assert f.fits(t.width, t.height) and f.fits(t.height, t.width)  # rotated
    assert not f.fits(side + 1, 1) and not f.fits(t.width + 1, t.height)
    assert f.orientations(1, 1) == [(1, 1, False)]
    if t.width != t.height:
        assert f.orientations(t.height, t.width) == [(t.width, t.height, True)]
        assert f.needs_rotation(t.height, t.width) and not f.needs_rotation(1, 1)
    tall = (1, max(t.width, t.height))
    assert f.fits(*tall) == bool(f.orientations(*tall))
    assert f.fits_array(np.array([1, side + 1]), np.array([1, 1])).tolist() == [True, False]
    assert f.link_capacity(1000) == 1000 and f.wavelets(5) == 2


def test_port_masks_round_trip() -> None:
    assert PORT_BITS == {"N": 1, "E": 2, "S": 4, "W": 8, "RAMP": 16}  # the binary's encoding
    for ports in (("N",), ("E", "RAMP"), PORTS, ()):
        assert ports_of(mask_of(ports)) == tuple(p for p in PORTS if p in ports)
    assert LINK_PLANES[:4] == DIRS


def _routed() -> tuple[Module, Fabric]:
    """host -> a (at x 2..3) -> host on an 8x4 grid, 40 bytes per sample each."""
    from wsec.ir.graph import Kernel
    from wsec.ir.types import TensorType

    m = Module("m", attrs={"grid": [8, 4]})
    t = TensorType("f32", (10,))
    m.add_value("x", t)
    m.add_value("y", t)
    m.inputs, m.outputs = ["x"], ["y"]
    m.nodes = [Kernel("a", "Kernel", ["x"], ["y"], kind="box", rect=Rect(2, 1, 2, 2))]
    m.edges = [Edge("x", HOST, ["a"], 40, bundles=[Bundle("a", 0, 1, (0, 1), ((0, 1), (2, 1)))]),
               Edge("y", "a", [HOST], 40,
                    bundles=[Bundle(HOST, 1, 1, (0, 1), ((3, 1), (7, 1)))])]
    return m, Fabric.of(get_target("wse2", (8, 4)))


def test_metrics_definitions() -> None:
    m, f = _routed()
    ra = route_arrays(m)
    # on-grid links only: the host ports at x=0 (W) and x=7 (E) are I/O
    assert routed_wirelength(ra, f) == 40 * 2 + 40 * 4
    load = link_loads(ra, f)
    assert load[1, 2, LINK_PLANES.index("RAMP-in")] == 10  # delivered to a's core
    assert load[1, 3, LINK_PLANES.index("RAMP-out")] == 10  # injected by a's core
    assert load[1, 7, LINK_PLANES.index("E")] == 10  # the host port carries the output
    top = busiest_link(load)
    assert top is not None and top.wavelets == 10 and (top.x, top.y) == (0, 1)
    assert colors_per_pe(ra) == 1
    assert terminal_hpwl(ra, 2, f).tolist() == [2, 4]
    # placed: host input at x = 0, output at x = width, kernel centre x = 3
    assert placed_wirelength(m, f) == 40 * 3 + 40 * (8 - 3)
    assert placed_wirelength(m, f, host=False) == 0


def test_overlaps_raster_and_sweep_agree() -> None:
    rects = [Rect(0, 0, 2, 2), Rect(5, 5, 2, 2), Rect(1, 1, 2, 2), Rect(9, 0, 1, 1)]
    assert overlapping_pairs(rects) == [(0, 2)]
    assert first_overlap(rects, 10, 10) == (0, 2)
    assert first_overlap(rects, 100_000, 100_000) == (0, 2)  # the sweep on huge grids
    assert first_overlap(rects[:2], 10, 10) is None


def _random_routes(seed: int, span: int) -> RouteArrays:
    """Route entries with many repeats: coordinates drawn from `span`
    values (spread over a wide range when span is large), few colors."""
    rng = np.random.default_rng(seed)
    n = 4000
    pick = rng.integers(0, 12, n)
    x = pick * span + rng.integers(0, 3, n)
    y = rng.integers(0, 6, n) * span
    share = np.where(rng.random(n) < 0.2, -1, (rng.integers(0, 5, n) << 40) | rng.integers(0, 9, n))
    return RouteArrays(x, y, rng.integers(0, 4, n), rng.integers(0, 5, n),
                       rng.integers(0, 32, n), rng.integers(0, 32, n), rng.integers(1, 9, n),
                       share=share)


def _merge_reference(ra: RouteArrays) -> RouteArrays:
    """merge_shared as first written: a lexsort of the five columns."""
    ok = ra.share >= 0
    idx = np.flatnonzero(ok)
    keys = np.stack([ra.share[idx], ra.x[idx], ra.y[idx], ra.color[idx], ra.rx[idx]], axis=1)
    order = np.lexsort(keys.T[::-1])
    k = keys[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = (k[1:] != k[:-1]).any(axis=1)
    starts = np.flatnonzero(first)
    tx = np.bitwise_or.reduceat(ra.tx[idx][order], starts)
    out = ra.take(np.concatenate([np.flatnonzero(~ok), idx[order[starts]]]))
    merged = out.tx.copy()
    merged[int((~ok).sum()):] = tx
    return RouteArrays(out.x, out.y, out.color, out.edge, out.rx, merged, out.bytes,
                       share=out.share)


@pytest.mark.parametrize("span", [1, 1 << 12, 1 << 40])  # one sort key, a table; the lexsort
def test_merge_shared_and_colors_per_pe_match_their_definitions(span: int) -> None:
    ra = _random_routes(span % 97, span)
    got, want = merge_shared(ra), _merge_reference(ra)
    assert got.size < ra.size
    for f in ("x", "y", "color", "edge", "rx", "tx", "bytes", "share"):
        assert np.array_equal(getattr(got, f), getattr(want, f)), f
    per_pe: dict[tuple[int, int], set[int]] = {}
    for x, y, c in zip(ra.x.tolist(), ra.y.tolist(), ra.color.tolist(), strict=True):
        per_pe.setdefault((x, y), set()).add(c)
    assert colors_per_pe(ra) == max(len(v) for v in per_pe.values())
