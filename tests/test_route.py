"""Route pass: trees re-derived from the hops reach every sink, colors never
clash, accounting is right, and running out of colors is explained."""

from __future__ import annotations

import re

import fake_kinds as fk
import numpy as np
import pytest
from wsec.ir.fabric import Fabric
from wsec.ir.graph import HOST, Edge, Hop, Module, Rect
from wsec.ir.target import Target, get_target
from wsec.ir.types import TensorType
from wsec.passes.base import PassContext, PassError
from wsec.passes.place import Place
from wsec.passes.route import Route

STEP = {"N": (0, 1), "E": (1, 0), "S": (0, -1), "W": (-1, 0)}
OPPOSITE = {"N": "S", "S": "N", "E": "W", "W": "E"}


def trace(m: Module, e: Edge, t: Target) -> None:
    """Follow the edge's tx ports from its source; every sink must be reached,
    every hop visited once, and only the East host port may leave the grid."""
    assert e.routes and e.color is not None and 0 <= e.color < Fabric.of(t).usable_colors
    hops = {(h.x, h.y): h for h in e.routes}
    assert len(hops) == len(e.routes), "two hops on one PE"
    assert [(h.y, h.x) for h in e.routes] == sorted((h.y, h.x) for h in e.routes)
    for h in e.routes:
        assert len(h.rx) == 1, h
        assert 0 <= h.x < t.width and 0 <= h.y < t.height, h
    if e.src == HOST:
        sources = [h for h in e.routes if h.rx == ("W",) and h.x == 0]
    else:
        sources = [h for h in e.routes if h.rx == ("RAMP",)]
        assert m.kernel(e.src).rect.contains(sources[0].x, sources[0].y)
    assert len(sources) == 1, sources
    delivered: set[str] = set()
    seen: set[tuple[int, int]] = set()
    stack = [sources[0]]
    while stack:
        h = stack.pop()
        assert (h.x, h.y) not in seen, f"loop at {h}"
        seen.add((h.x, h.y))
        for p in h.tx:
            if p == "RAMP":
                owners = [d for d in e.dsts if d != HOST and m.kernel(d).rect.contains(h.x, h.y)]
                assert owners, f"RAMP at ({h.x}, {h.y}) is in no destination kernel"
                delivered.update(owners)
                continue
            nx, ny = h.x + STEP[p][0], h.y + STEP[p][1]
            if not (0 <= nx < t.width and 0 <= ny < t.height):
                assert p == "E" and HOST in e.dsts, f"{h} leaves the grid"
                delivered.add(HOST)
                continue
            nxt = hops.get((nx, ny))
            assert nxt is not None and nxt.rx == (OPPOSITE[p],), (h, p, nxt)
            stack.append(nxt)
    assert seen == set(hops), "hops not reachable from the source"
    assert delivered == set(e.dsts)


def check_routed(m: Module, t: Target) -> None:
    taken: dict[tuple[int, int, int], str] = {}
    for e in m.edges:
        trace(m, e, t)
        for h in e.routes:
            key = (e.color, h.x, h.y)
            assert key not in taken, f"color clash {key}: {taken[key]} and {e.value}"
            taken[key] = e.value


@pytest.mark.parametrize("build", [fk.chain, fk.diamond, fk.fanout])
def test_placed_modules_route(build) -> None:
    m = build()
    t = get_target("wse2", (16, 16))
    Place().run(m, PassContext(t))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    assert m.attrs["routed_wirelength"] > 0
    assert 1 <= m.attrs["max_colors_per_pe"] <= Fabric.of(t).usable_colors


def _manual(grid: tuple[int, int]) -> Module:
    m = fk.sized("manual")
    m.attrs["grid"] = list(grid)
    m.properties.add("placed")
    return m


def _put(m: Module, name: str, ins: list[str], out: str, rect: Rect) -> None:
    fk.box(m, name, ins, out, rect.w, rect.h).rect = rect


def test_host_ports_and_accounting() -> None:
    m = _manual((6, 3))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "a", ["x"], "va", Rect(0, 0, 1, 1))
    _put(m, "b", ["va"], "vb", Rect(3, 0, 1, 1))
    m.outputs = ["vb"]
    fk.connect(m)
    t = get_target("wse2", (6, 3))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    e = {e.value: e for e in m.edges}
    assert e["x"].routes == [Hop(0, 0, ("W",), ("RAMP",))]
    assert [(h.x, h.rx, h.tx) for h in e["va"].routes] == [
        (0, ("RAMP",), ("E",)), (1, ("W",), ("E",)), (2, ("W",), ("E",)), (3, ("W",), ("RAMP",))]
    assert e["vb"].routes[-1] == Hop(5, 0, ("W",), ("E",))  # East host port
    assert (e["va"].color, e["vb"].color, e["x"].color) == (0, 1, 1)
    assert m.attrs["max_link_load"] == 32  # 128 bytes / 4-byte wavelets
    assert m.attrs["max_link"] == [0, 0, "E"]
    assert m.attrs["routed_wirelength"] == 128 * 3 + 128 * 2
    assert m.attrs["max_colors_per_pe"] == 2


def test_multicast_is_one_tree() -> None:
    m = _manual((12, 12))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "s", ["x"], "v", Rect(5, 5, 2, 2))
    for i, r in enumerate([Rect(0, 0, 2, 2), Rect(10, 10, 2, 2), Rect(0, 10, 1, 1),
                           Rect(10, 0, 2, 1), Rect(5, 0, 2, 2)]):
        _put(m, f"c{i}", ["v"], f"o{i}", r)
    m.outputs = ["v"]
    fk.connect(m)
    t = get_target("wse2", (12, 12))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    (e,) = [e for e in m.edges if e.value == "v"]
    assert len(e.dsts) == 6 and e.color == 0


def test_falls_back_to_y_then_x() -> None:
    m = _manual((32, 12))
    names = []
    for j in range(21):  # 21 edges converge on the hub through PE (5, 5)
        _put(m, f"p{j}", [], f"b{j}", Rect(10 + j, 0, 1, 1))
        names.append(f"b{j}")
    _put(m, "hub", names, "h", Rect(5, 5, 1, 1))
    _put(m, "t", [], "tv", Rect(2, 5, 1, 1))
    _put(m, "u", ["tv"], "uv", Rect(8, 8, 1, 1))
    fk.connect(m)
    t = get_target("wse2", (32, 12))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    (e,) = [e for e in m.edges if e.value == "tv"]
    pes = {(h.x, h.y) for h in e.routes}
    assert (5, 5) not in pes and (2, 8) in pes  # went up column 2 first


def test_out_of_colors_message() -> None:
    m = _manual((8, 24))
    names = []
    for j in range(22):  # 22 edges all end at PE (5, 0); wse2 has 21 usable colors
        _put(m, f"p{j}", [], f"b{j}", Rect(0, j, 1, 1))
        names.append(f"b{j}")
    _put(m, "hub", names, "h", Rect(5, 0, 1, 1))
    fk.connect(m)
    with pytest.raises(PassError) as e:
        Route().run(m, PassContext(get_target("wse2", (8, 24))))
    msg = str(e.value)
    assert re.fullmatch(
        r"edge %b(\d+) from 'p\1' to \['hub'\] cannot be routed: no color of the 21 usable is "
        r"free on all \d+ PEs of its route; the busiest, PE \(5, 0\), already carries 21 other "
        r"edges; use a larger grid \(--grid\) or target so that kernels spread out, or reduce "
        r"fan-out there", msg), msg


def test_unplaced_kernel_is_an_error() -> None:
    m = fk.chain(2)
    with pytest.raises(PassError, match="kernel 'k0' \\(box\\) has no rectangle"):
        Route().run(m, PassContext(get_target("wse2", (16, 16))))


def test_large_grid_fast() -> None:
    rng = np.random.default_rng(3)
    m = fk.sized("big")
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    prev = ["x"]
    for i in range(120):  # dense-block-like: each kernel reads up to 4 of the last 24 values
        pool = prev[-24:]
        ins = list(dict.fromkeys(prev[-1:] + list(rng.choice(pool, min(3, len(pool))))))
        fk.box(m, f"k{i}", ins, f"v{i}", int(rng.integers(20, 60)), int(rng.integers(20, 60)))
        prev.append(f"v{i}")
    m.outputs = [prev[-1]]
    fk.connect(m)
    t = get_target("wse2")
    Place().run(m, PassContext(t))
    assert len(m.edges) >= 100
    Route().run(m, PassContext(t))
    check_routed(m, t)
