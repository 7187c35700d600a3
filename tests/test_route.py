"""Route pass: every edge becomes one bundle of lanes per sink whose lanes
start in the producer (or at the West host edge), land in the consumer (or
leave East to the host), never share a PE and color with another route,
carry no more than the bottleneck time allows, and running out of colors is
explained."""

from __future__ import annotations

import copy
import re

import fake_kinds as fk
import numpy as np
import pytest
from test_lanes import random_path
from wsec.ir.fabric import Fabric
from wsec.ir.graph import HOST, Module, Rect
from wsec.ir.lanes import endpoints, expand
from wsec.ir.metrics import (
    RouteArrays,
    busiest_link,
    link_loads,
    merge_shared,
    route_arrays,
    routed_wirelength,
    share_key,
)
from wsec.ir.target import Target, get_target
from wsec.ir.types import TensorType
from wsec.ir.verify import verify_module
from wsec.passes.base import LayoutInfeasible, PassContext, PassError
from wsec.passes.place import Place
from wsec.passes.route import Route
from wsec.passes.route_bundles import Port, Request, assign_slots, dst_span, host_ports, legalize


def check_routed(m: Module, t: Target) -> None:
    """Each edge has one bundle per sink, every lane starts at its source and
    lands at its sink, and no PE carries two routes on one color (verify)."""
    for e in m.edges:
        assert e.bundles is not None
        assert sorted(b.sink for b in e.bundles) == sorted(dict.fromkeys(e.dsts))
        for b in e.bundles:
            assert 0 <= b.color < t.colors  # host bundles may take the host I/O colors
            src, land = endpoints(b)
            if e.src == HOST:
                assert (src[:, 0] == 0).all()
            else:
                r = m.kernel(e.src).rect
                assert all(r.contains(int(x), int(y)) for x, y in src), (e.value, b)
            if b.sink == HOST:
                assert (land[:, 0] == t.width - 1).all()
            else:
                r = m.kernel(b.sink).rect
                assert all(r.contains(int(x), int(y)) for x, y in land), (e.value, b)
            ex = expand(b, e.src == HOST, b.sink == HOST)
            assert np.unique(ex.y * t.width + ex.x).size == ex.x.size  # lanes PE-disjoint
    m.properties.add("routed")
    m.attrs["grid"] = [t.width, t.height]
    verify_module(m)


@pytest.mark.parametrize("build", [fk.chain, fk.diamond, fk.fanout])
def test_placed_modules_route(build) -> None:
    m = build()
    t = get_target("wse2", (16, 16))
    Place().run(m, PassContext(t))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    assert m.attrs["routed_wirelength"] > 0
    assert 1 <= m.attrs["max_colors_per_pe"] <= Fabric.of(t).usable_colors
    assert m.attrs["route_iterations"] and "overused_links" in m.attrs["route_iterations"][0]


def _manual(grid: tuple[int, int]) -> Module:
    m = fk.sized("manual")
    m.attrs["grid"] = list(grid)
    m.properties.add("placed")
    return m


def _put(m: Module, name: str, ins: list[str], out: str, rect: Rect,
         shape: tuple[int, ...] = (1, 64), work: int = 1000) -> None:
    fk.box(m, name, ins, out, rect.w, rect.h, out_shape=shape, work=work).rect = rect


def test_host_ports_and_accounting() -> None:
    m = _manual((8, 3))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "a", ["x"], "va", Rect(1, 0, 1, 1))
    _put(m, "b", ["va"], "vb", Rect(4, 0, 1, 1))
    m.outputs = ["vb"]
    fk.connect(m)
    t = get_target("wse2", (8, 3))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    fabric = Fabric.of(t)
    ra = route_arrays(m)
    top = busiest_link(link_loads(ra, fabric))
    assert top is not None
    wav = max(e.bytes_per_sample for e in m.edges) // 4  # 4-byte wavelets
    assert m.attrs["max_link_load"] == top.wavelets == wav
    assert m.attrs["max_link"] == top.as_list()
    assert m.attrs["routed_wirelength"] == routed_wirelength(ra, fabric) > 0
    # a sample takes the slower of the kernels and the busiest link (or RAMP)
    assert m.attrs["realised_cycles"] == max(1000, top.wavelets)


def test_big_edge_is_split_into_lanes_within_capacity() -> None:
    """An edge carrying far more wavelets than the bottleneck time becomes
    many lanes, each within the capacity, so no link bounds throughput."""
    m = _manual((40, 40))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "a", ["x"], "va", Rect(2, 2, 8, 32), shape=(1, 16 * 1024), work=256 * 400)
    _put(m, "b", ["va"], "vb", Rect(20, 2, 8, 32), work=256 * 400)
    m.outputs = ["vb"]
    fk.connect(m)
    t = get_target("wse2", (40, 40))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    (e,) = [e for e in m.edges if e.value == "va"]
    (b,) = e.bundles
    assert b.lanes >= -(-e.bytes_per_sample // 4 // 400)  # its wavelets at 400 cycles/sample
    assert m.attrs["max_link_load"] <= 400
    assert m.attrs["realised_cycles"] == 400


def test_multicast_gets_a_bundle_per_sink() -> None:
    m = _manual((24, 24))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "s", ["x"], "v", Rect(10, 10, 2, 2))
    for i, r in enumerate([Rect(1, 1, 2, 2), Rect(20, 20, 2, 2), Rect(1, 20, 1, 1),
                           Rect(20, 1, 2, 1), Rect(16, 10, 2, 2)]):
        _put(m, f"c{i}", ["v"], f"o{i}", r)
    m.outputs = ["v"]
    fk.connect(m)
    t = get_target("wse2", (24, 24))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    (e,) = [e for e in m.edges if e.value == "v"]
    assert len(e.bundles) == 6


def test_out_of_colors_message() -> None:
    m = _manual((8, 24))
    names = []
    for j in range(24):  # 24 edges all end at the one-PE hub: more than the colors left
        _put(m, f"p{j}", [], f"b{j}", Rect(0, j, 1, 1))
        names.append(f"b{j}")
    _put(m, "hub", names, "h", Rect(5, 0, 1, 1))
    fk.connect(m)
    with pytest.raises(LayoutInfeasible) as e:
        Route().run(m, PassContext(get_target("wse2", (8, 24))))
    msg = str(e.value)
    assert re.fullmatch(
        r"edge %b(\d+) from 'p\1' to 'hub' cannot be routed: its bundle needs a color beyond "
        r"the 19 left for bundles; the busiest PE \(\d+, \d+\) is crossed by \d+ bundles "
        r"\(of %b\d+, %b\d+, %b\d+, %b\d+ and \d+ more\); use a larger grid \(--grid\) or "
        r"target so that kernels spread out, or reduce fan-out there",
        msg), msg


def test_unplaced_kernel_is_an_error() -> None:
    m = fk.chain(2)
    with pytest.raises(PassError, match="kernel 'k0' \\(box\\) has no rectangle"):
        Route().run(m, PassContext(get_target("wse2", (16, 16))))


def test_dense_block_graph_routes() -> None:
    m = _dense_block(60)
    t = get_target("wse2")
    Place().run(m, PassContext(t))
    assert len(m.edges) >= 60
    Route().run(m, PassContext(t))
    check_routed(m, t)


def test_hopeless_colors_stop_negotiation_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bundles needing more than twice the colors there are cannot be fixed
    by negotiation: the router says so after its first pass."""
    from wsec.passes import route as route_mod

    rounds: list[dict[str, float]] = []
    real = route_mod._Negotiator.stats

    def spy(self):  # noqa: ANN001, ANN202
        rounds.append(real(self))
        return rounds[-1]

    monkeypatch.setattr(route_mod._Negotiator, "stats", spy)
    m = _manual((8, 60))
    names = []
    for j in range(60):  # 60 edges into a one-PE hub: 60 colors at its PE
        _put(m, f"p{j}", [], f"b{j}", Rect(0, j, 1, 1))
        names.append(f"b{j}")
    _put(m, "hub", names, "h", Rect(5, 0, 1, 1))
    fk.connect(m)
    ctx = PassContext(get_target("wse2", (8, 60)))
    with pytest.raises(LayoutInfeasible, match="cannot be routed: its bundle needs a color"):
        Route().run(m, ctx)
    assert len(rounds) == 1 and rounds[0]["colors_needed"] > 2 * 22


def test_best_round_is_kept() -> None:
    """The routes kept are those of the round with the least-loaded busiest
    link, and the module's figures describe them."""
    m = fk.diamond()
    t = get_target("wse2", (16, 16))
    Place().run(m, PassContext(t))
    Route().run(m, PassContext(t))
    rounds = m.attrs["route_iterations"]
    best = min(r["max_link_over_capacity"] for r in rounds)
    cap = max(int(k.cost["cycles"]) for k in m.kernels())
    assert m.attrs["max_link_load"] <= int(np.ceil(best * cap)) + 1


def test_auto_headroom_keeps_the_less_loaded_layout() -> None:
    """headroom=0 routes with each AUTO_HEADROOMS value (while the first is
    colorable and link-bound) and keeps the layout whose busiest link is
    lightest: never worse than the first alone."""
    from wsec.passes.route import AUTO_HEADROOMS

    def routed(headroom: float) -> Module:
        m = fk.diamond()
        t = get_target("wse2", (16, 16))
        Place().run(m, PassContext(t))
        Route(headroom=headroom).run(m, PassContext(t))
        check_routed(m, t)
        return m

    auto, first = routed(0.0), routed(AUTO_HEADROOMS[0])
    assert auto.attrs["max_link_load"] <= first.attrs["max_link_load"]
    with pytest.raises(PassError, match="headroom"):
        Route(headroom=0.5)


def test_sinks_in_line_share_one_multicast_route() -> None:
    """A value going to two kernels in a row leaves its producer once: the
    bundle to the far sink runs on through the near sink's rows carrying the
    same slices on the same lanes, so both bundles take one color and each
    link carries the value's lanes once (a multicast fork), not twice."""
    m = _manual((12, 4))
    m.add_value("x", TensorType("f32", (1, 256)))
    m.inputs = ["x"]
    _put(m, "a", ["x"], "va", Rect(1, 0, 2, 4), shape=(1, 256), work=64)
    _put(m, "b", ["va"], "vb", Rect(4, 0, 2, 4), shape=(1, 256), work=64)
    _put(m, "c", ["va"], "vc", Rect(7, 0, 2, 4), shape=(1, 256), work=64)
    m.outputs = ["vb", "vc"]
    fk.connect(m)
    t = get_target("wse2", (12, 4))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    va = next(e for e in m.edges if e.value == "va")
    near, far = sorted(va.bundles, key=lambda b: b.sink)
    assert near.color == far.color and near.lanes == far.lanes
    assert np.array_equal(endpoints(near)[0], endpoints(far)[0])  # the same source PEs
    ra = route_arrays(m)
    mine = ra.take(np.flatnonzero(ra.edge == m.edges.index(va)))
    loads = link_loads(mine, Fabric.of(t))
    per_lane = -(-va.bytes_per_sample // near.lanes) // 4
    # every link va uses carries one of its lanes, once, whichever sink it is for
    assert int(loads.max()) == per_lane
    assert int(loads[:, 4:6, :4].max()) == per_lane  # through b's rows on to c


def test_shared_route_entries_merge_and_conflicts_stay() -> None:
    """Entries carrying the same lane of the same value into a PE from the
    same port are one router entry (ports united); any other pair on a PE
    and color is a conflict the verifier reports."""
    ra = RouteArrays(*(np.array(v, dtype=np.int64) for v in (
        [3, 3, 3], [0, 0, 0], [2, 2, 2], [0, 0, 1], [1, 1, 1], [2, 4, 4], [8, 8, 8])),
        share=share_key(np.array([0, 0, 1]), 4, np.array([1, 1, 1])))
    m = merge_shared(ra)
    assert m.size == 2
    mine = m.edge == 0
    assert int(m.tx[mine][0]) == 6  # the union of both sends
    assert int(merge_shared(RouteArrays(*(getattr(ra, f) for f in (
        "x", "y", "color", "edge")), np.array([1, 2, 1]), ra.tx, ra.bytes,
        share=ra.share)).size) == 3  # different receive ports: not one entry


def test_a_side_gives_each_bundle_the_lanes_it_needs_first() -> None:
    """Shares of a side: what each bundle's capacity needs, then its headroom,
    then the rest in proportion; when the needs overflow the side, each gets
    at least one slot and the shares still fill it exactly."""
    from wsec.passes.route_bundles import _split

    def sizes(*a: object) -> list[int]:
        return [n for _, n in _split(*a)]  # type: ignore[arg-type]

    assert sizes(6, [2, 2, 1, 1], [3, 3, 2, 2]) == [2, 2, 1, 1]
    assert sizes(10, [2, 2, 1, 1], [3, 3, 2, 2]) == [3, 3, 2, 2]
    assert sum(sizes(14, [2, 2, 1, 1], [3, 3, 2, 2])) == 14
    over = sizes(6, [3, 3, 1, 1], [4, 4, 2, 2])
    assert sum(over) == 6 and min(over) >= 1 and over[0] >= over[2]
    starts = [a for a, _ in _split(10, [2, 2, 1, 1], [3, 3, 2, 2])]
    assert starts == [0, 3, 6, 8]  # consecutive, in order


def _two_into_one() -> tuple[Module, Fabric]:
    """Kernels a and b both feed c's input side (8 rows)."""
    m = _manual((12, 8))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "a", ["x"], "va", Rect(1, 0, 2, 4), shape=(1, 1024), work=64)
    _put(m, "b", ["x"], "vb", Rect(1, 4, 2, 4), shape=(1, 1024), work=64)
    _put(m, "c", ["va", "vb"], "vc", Rect(6, 0, 2, 8), shape=(1, 64), work=64)
    m.outputs = ["vc"]
    fk.connect(m)
    return m, Fabric.of(get_target("wse2", (12, 8)))


def test_a_widened_bundle_gets_its_lanes_first() -> None:
    """A bundle a previous attempt found overfilling a shared link asks for
    more lanes (min_lanes): its side gives them first, from the others'
    headroom, and never below the others' needs; when the side cannot give
    all it asks, it gets the side's rows beyond the others' needs."""
    from wsec.passes.route_bundles import assign_slots, requests

    m, fabric = _two_into_one()

    def lanes(min_lanes: dict[str, int]) -> dict[str, int]:
        reqs = requests(m, fabric)
        for r in reqs:
            r.min_lanes = min_lanes.get(m.edges[r.edge].value, 0)
        assign_slots(reqs, max(r.wavelets for r in reqs), 1.0)  # each needs 1 lane
        into_c = [r for r in reqs if r.sink == "c"]
        assert sum(r.share["dst"][1] for r in into_c) <= 8
        return {m.edges[r.edge].value: r.lanes for r in into_c}

    plain = lanes({})
    assert plain == {"va": 1, "vb": 1}
    assert lanes({"va": 3}) == {"va": 3, "vb": 1}
    got = lanes({"va": 6, "vb": 6})  # 12 asked of 8 rows: beyond the needs, shared
    assert sum(got.values()) == 8 and min(got.values()) >= 1


def test_widen_only_the_bundles_on_the_busiest_link() -> None:
    """`wider` names the requests whose lanes share a link loaded to the
    maximum, with the lanes that bring their own lane within capacity beside
    the rest there; where no lanes would, the next side pair of the most
    roundabout one; nothing when no link is over capacity."""
    from wsec.passes.route import _Negotiator
    from wsec.passes.route_bundles import assign_slots, requests

    m, fabric = _two_into_one()
    reqs = requests(m, fabric)
    assign_slots(reqs, 512, 1.0)
    neg = _Negotiator(reqs, fabric, 512, [], 6)
    neg.run(1, None)
    occ = neg.occ.copy()
    assert neg.wider(occ, set()) == ({}, {})  # within capacity
    i = next(i for i, r in enumerate(reqs) if m.edges[r.edge].value == "va")
    key = (reqs[i].edge, "c")
    link = int(neg.routes[i].links[0])
    occ[link] = neg.lane_load[i] + 300  # another lane of 300 wavelets shares its link
    want, move = neg.wider(occ, set())
    assert list(want) == [key] and move == {}
    assert want[key] == -(-reqs[i].wavelets // (512 - 300))
    # the others there fill the link: no lanes would do; its next side pair might
    assert len(reqs[i].pairs) > 1
    occ[link] = neg.lane_load[i] + 512
    assert neg.wider(occ, set()) == ({}, {key: reqs[i].choice + 1})
    assert neg.wider(occ, {key}) == ({}, {})  # tried already



def _cut_request(grid: tuple[int, int], a: Rect, c: Rect) -> tuple[Module, Fabric, list]:
    """Kernel a (at `a`) feeds c's input side (at `c`, 8 rows) with a value c
    cuts per row: row j reads the j-th eighth of it. The requests into c."""
    from wsec.passes.route_bundles import requests

    m = _manual(grid)
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "a", ["x"], "va", a, shape=(1, 1024), work=64)
    _put(m, "c", ["va"], "vc", c, shape=(1, 64), work=64)
    m.outputs = ["vc"]
    fk.connect(m)
    fabric = Fabric.of(get_target("wse2", grid))
    reqs = [r for r in requests(m, fabric) if r.sink == "c"]
    for r in reqs:
        r.cut_rows, r.numel = 8, 1024
        r.row_boxes = np.array([[[0, 128 * j], [1, 128 * (j + 1)]] for j in range(8)])
    return m, fabric, reqs


def _cut_into_one() -> tuple[Module, Fabric, list]:
    """Kernel a feeds c's input side (8 rows) with a value c cuts per row."""
    return _cut_request((12, 8), Rect(1, 0, 2, 8), Rect(6, 0, 2, 8))


def test_siblings_from_a_short_side_cut_where_their_flat_split_lanes_are_heavier() -> None:
    """a's output side (2 rows) feeds two sinks c and d (8 rows each, both
    cutting the value per row). Routed flat, the two requests share those 2
    slots, one lane each carrying the whole value, however many lanes the
    headroom asks for; cut at pitch 4, 2 lanes widen from the side at their
    corner, each carrying half of it. The cut is lighter than the flat
    lanes the side can give, so both sinks are cut (choose_pitch compares
    with the flat split their sides can deal, _flat_shares), though twice
    the capacity's lanes (what the headroom asks) would carry less each."""
    from wsec.passes.route_bundles import _flat_shares, choose_pitch, requests

    m = _manual((14, 8))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "a", ["x"], "va", Rect(1, 0, 2, 2), shape=(1, 1024), work=64)
    _put(m, "c", ["va"], "vc", Rect(6, 0, 2, 8), shape=(1, 64), work=64)
    _put(m, "d", ["va"], "vd", Rect(10, 0, 2, 8), shape=(1, 64), work=64)
    m.outputs = ["vc", "vd"]
    fk.connect(m)
    fabric = Fabric.of(get_target("wse2", (14, 8)))
    reqs = [r for r in requests(m, fabric) if r.sink in ("c", "d")]
    for r in reqs:
        r.cut_rows, r.numel = 8, 1024
        r.row_boxes = np.array([[[0, 128 * j], [1, 128 * (j + 1)]] for j in range(8)])
    assert reqs[0].src is reqs[1].src and reqs[0].src.length == 2
    wav = reqs[0].wavelets
    cap = -(-wav // 2)  # the capacity needs 2 lanes; the headroom asks 3 of each
    for r in reqs:
        r.need = 2
    assert sorted(_flat_shares(reqs, 1.25).values()) == [1, 1]  # 2 slots, 6 lanes asked
    assign_slots(reqs, cap, 1.25)
    for r in reqs:
        assert (r.cut_pitch, r.src_pitch, r.lanes) == (4, 1, 2), r.sink
        assert r.lane_wavelets == -(-wav // 2)
    # against the 3 lanes the headroom asks (more than the side has), no pitch fits
    lone = copy.copy(reqs[0])
    choose_pitch(lone, 3, cap)
    assert lone.cut_pitch == 0


def test_a_cut_that_no_pitch_fits_beside_a_passing_bundle_routes_flat() -> None:
    """A cut request's lanes land on every row of its sink's side, so a
    bundle passing those rows meets one on each: where even its lightest
    cut (pitch 1: one eighth per lane) overfills what the others leave of
    an overloaded link, `flatten` names it, and routed again it stays flat
    (its lanes then take only some rows); where a finer pitch fits beside
    them, widening handles it; within capacity, nothing."""
    from wsec.passes.route import _attempt, _Negotiator
    from wsec.passes.route_bundles import assign_slots, lightest_cut

    m, fabric, reqs = _cut_into_one()
    assign_slots(reqs, 512, 1.0)
    (r,) = reqs
    assert r.cut_pitch > 1 and r.lanes * r.cut_pitch == 8  # cut, coarser than pitch 1
    assert lightest_cut(r) == r.wavelets // 8  # pitch 1
    neg = _Negotiator(reqs, fabric, 512, [], 6)
    neg.run(1, None)
    occ = neg.occ.copy()
    assert neg.flatten(occ) == set()  # within capacity
    link = int(neg.routes[0].links[0])
    occ[link] = neg.lane_load[0] + 512 - lightest_cut(r) // 2  # a passing bundle's lane
    assert neg.flatten(occ) == {(r.edge, "c")}
    occ[link] = neg.lane_load[0] + 512 - lightest_cut(r)  # pitch 1 would just fit
    assert neg.flatten(occ) == set()
    got = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None, flat={(r.edge, "c")})
    (flat,) = got.neg.reqs
    assert flat.cut_pitch == 0 and not got.routes[0].bundle.cut
    assert _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None).routes[0].bundle.cut == "rows"

def test_flat_cuts_name_the_sink_pes_and_what_cutting_each_would_cost() -> None:
    """_flat_cuts lists the cut requests left flat, most sink PEs first, each
    with the busiest link its known cut route would load in place of its
    flat route (capacity 1000): k0's cut lane (400) on links 0 (500) and 1
    (200): 0.9; k1's (900) on link 1, where its own flat lane (100) goes:
    200 - 100 + 900 = 1.0; k6's cut route passes link 2 twice (not distinct,
    300 each): 600, over the busiest link elsewhere (link 0: 500): 0.6; k2
    has no cut route (None) and
    is cut onto a run of half its rows (2 of its 4 PEs). Cut requests, those
    routed as ribbons (a cut bundle into the sink) and inputs no row cuts
    are not listed."""
    from types import SimpleNamespace as NS

    from wsec.passes.route import _flat_cuts, _flat_note

    def req(edge: int, w: int, pitch: int = 0, rows: int = 4, sink_rows: int = 0) -> NS:
        return NS(edge=edge, sink=f"k{edge}", cut_rows=rows, cut_pitch=pitch,
                  sink_rows=sink_rows, dst=NS(rect=NS(w=w, h=w)))

    def route(links: list[int], distinct: bool = True) -> NS:
        return NS(links=np.array(links), pes=np.array([9]), distinct=distinct)

    reqs = [req(0, 4), req(1, 3), req(2, 2, rows=2, sink_rows=4), req(3, 5, pitch=1),
            req(4, 5), req(5, 5, rows=0), req(6, 1)]
    routes = [route([3]), route([1]), route([4]), route([0]), route([4]), route([4]), route([5])]
    neg = NS(cap=1000, reqs=reqs, routes=routes, lane_load=[100.0] * 7,
             occ=np.array([500.0, 200.0, 0.0, 100.0, 300.0, 100.0]),
             _counted=lambda i, rt: (rt.links, rt.pes))
    edges = [NS(bundles=[]) for _ in range(7)]
    edges[4].bundles = [NS(cut="rows", sink="k4")]  # ribbons into k4
    edges[6].bundles = [NS(cut="", sink="k6")]  # flat
    cut_in = {(0, "k0"): (route([0, 1]), 400.0), (1, "k1"): (route([1]), 900.0),
              (6, "k6"): (route([2, 2], distinct=False), 300.0)}
    got = _flat_cuts(NS(edges=edges), NS(neg=neg), cut_in)
    assert got == [((0, "k0"), 16, 0.9), ((1, "k1"), 9, 1.0), ((2, "k2"), 2, None),
                   ((6, "k6"), 1, 0.6)]
    note = _flat_note(got, most=2)
    assert note.startswith("route: 4 cut requests routed flat, 28 sink PEs on flat lanes")
    assert "k0 16 PEs (cut alone, busiest link ~0.90x capacity); k1 9 PEs" in note
    assert note.endswith(", 2 more")
    assert "k2 2 PEs (no attempt cut it)" in _flat_note(got)


def test_a_cut_left_flat_is_noted_with_its_cut_routes_busiest_link() -> None:
    """Compiled: a cut request routed flat (a passing bundle's lanes leave no
    room) is named in the route note with its sink's PEs and the busiest
    link its cut route, as another attempt found it, would load: estimated
    on the flat attempt's loads, as the cut attempt negotiates it."""
    from wsec.passes.route import _attempt, _commit, _cut_routes, _flat_cuts
    from wsec.passes.route_bundles import assign_slots

    m, fabric, reqs = _cut_into_one()
    assign_slots(reqs, 512, 1.0)
    key = (reqs[0].edge, "c")
    flat = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None, flat={key})
    cut = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None)
    _commit(m, flat)
    ((k, pes, est),) = _flat_cuts(m, flat, _cut_routes(cut, {key}))
    assert k == key and pes == 16
    assert est == pytest.approx(cut.score[1])
    _commit(m, cut)
    assert _flat_cuts(m, cut, {}) == []


def test_a_cut_thinned_for_a_recut_takes_the_coarsest_pitch_that_light() -> None:
    """A cut bundle whose lanes a re-cut's pass beside is thinned to the
    coarsest finer pitch that leaves room (_thinned, on the negotiator's
    loads: c's lane overfills a link by 64 wavelets), asked as a lane cap;
    routed with it (Request.lane_cap) c is cut at that pitch, with a cap
    below every pitch's load at its lightest, and flat stays flat."""
    from wsec.passes.route import _attempt, _thinned
    from wsec.passes.route_bundles import pitch_loads

    _, fabric, reqs = _cut_into_one()
    key = (reqs[0].edge, "c")
    got = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None)
    (r,) = got.neg.reqs
    loads = pitch_loads(r)
    assert r.cut_pitch > 1 and loads == {k: 64 * k for k in loads}  # 64 per row, no halo
    occ = got.neg.occ.copy()
    link = int(got.routes[0].links[0])
    occ[link] = 512 + 64  # c's lane and others' over the capacity
    thin = _thinned(got.neg, occ, got.routes[0].links, 512, {}, set())
    cap = max(v for v in loads.values() if v <= r.lane_wavelets - 64)
    assert thin == {key: (0, cap)} and cap < r.lane_wavelets
    assert occ[link] == 512 + 64 - (r.lane_wavelets - cap)  # its lighter lanes counted
    assert _thinned(got.neg, occ, got.routes[0].links, 0, {}, set()) is None  # nothing that light
    (c,) = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None, caps={key: cap}).neg.reqs
    assert (c.cut_pitch, c.lane_wavelets) == (cap // 64, cap)
    (c,) = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None, caps={key: 1}).neg.reqs
    assert c.cut_pitch == min(loads, key=loads.__getitem__)
    (c,) = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None, flat={key}, caps={key: cap}).neg.reqs
    assert c.cut_pitch == 0


def test_a_flattened_cut_is_cut_again_at_its_lightest_pitch() -> None:
    """Routed flat because even its lightest cut overfilled a link beside a
    passing bundle (`flatten` judges it on lightest_cut), a request the
    router cuts again (`light`) takes that pitch: one eighth per lane at
    pitch 1, where the fair-share rule alone cuts it coarser (heavier lanes
    a passing bundle meets on each row)."""
    from wsec.passes.route import _attempt
    from wsec.passes.route_bundles import lightest_cut

    _, fabric, reqs = _cut_into_one()
    key = (reqs[0].edge, "c")
    (r,) = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None).neg.reqs
    assert r.cut_pitch > 1 and r.lane_wavelets > lightest_cut(r)
    got = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None, light={key})
    (r,) = got.neg.reqs
    assert (r.cut_pitch, r.lanes, r.lane_wavelets) == (1, 8, lightest_cut(r))
    b = got.routes[0].bundle
    assert (b.cut, b.lanes, b.pitch) == ("rows", 8, 1)
    # flat stays flat: `light` only picks the pitch of a request that is cut
    got = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None, flat={key}, light={key})
    assert got.neg.reqs[0].cut_pitch == 0 and not got.routes[0].bundle.cut


def test_unflatten_hands_the_cut_routes_it_found_to_the_re_cuts() -> None:
    """_unflatten routes the widening attempts' flattened cuts cut again; an
    attempt it does not keep (its busiest link is busier) still found each
    of them a cut route, which it keeps in `cut_in` (with its lane load) so
    that _recut can cut them again within the proof slack after widening;
    a request that attempt routed flat gets none."""
    from types import SimpleNamespace as NS

    import wsec.passes.route as rt

    def req(edge: int, pitch: int) -> NS:
        return NS(edge=edge, sink=f"k{edge}", cut_pitch=pitch)

    cut0, cut1 = NS(name="cut0"), NS(name="cut1")
    flat = {(0, "k0"), (1, "k1")}
    neg = NS(reqs=[req(0, 2), req(1, 0)], routes=[cut0, cut1], lane_load=[10.0, 20.0],
             flatten=lambda loads: {(0, "k0")}, passer=lambda loads, cut, tried: None)
    got = NS(colored=True, score=(False, 1.3), neg=neg)
    best = NS(colored=True, score=(False, 1.1))
    calls: list[set] = []

    def again(move: dict, still: set) -> NS:
        calls.append(set(still))
        return got

    saved = rt._loads, rt._flat_rows
    rt._loads = lambda module, a, fabric: None
    rt._flat_rows = lambda a: 5 if a is got else 10
    try:
        cut_in: dict = {}
        out = rt._unflatten(None, None, best, {}, flat, again, None, cut_in)
    finally:
        rt._loads, rt._flat_rows = saved
    assert out == (best, {}, flat)  # 1.3 > 1.1: not kept, both stay flat
    assert calls[0] == set()  # first all cut again
    assert cut_in == {(0, "k0"): (cut0, 10.0)}


@pytest.mark.parametrize("c_rect", [Rect(6, 0, 2, 8), Rect(13, 5, 2, 8)],
                         ids=["straight", "offset"])
def test_a_residual_read_on_every_cth_row_is_cut_onto_the_owner_rows(c_rect: Rect) -> None:
    """c = 2 reduction rows per group: only the odd rows (each group's last,
    its owner) read the value, a quarter each. The request's pitch is fixed
    at 2 and its 4 lanes land on the owner rows with no spine (cut
    "owners"), each carrying its owner's quarter; the even rows receive
    nothing of it."""
    from wsec.ir.kernels import owner_pitch
    from wsec.passes.route import _attempt
    from wsec.passes.route_bundles import choose_pitch

    _, fabric, reqs = _cut_request((18, 14), Rect(1, 0, 2, 8), c_rect)
    (r,) = reqs
    r.row_boxes = np.array([[[0, 256 * (j // 2)], [1, 256 * (j // 2 + 1)]] if j % 2 else
                            [[0, 0], [0, 0]] for j in range(8)])
    r.owner_pitch, r.owner_offset = owner_pitch(r.row_boxes)
    assert (r.owner_pitch, r.owner_offset) == (2, 1)
    choose_pitch(r, 8, 512)
    assert (r.cut_pitch, r.lanes, r.lane_wavelets) == (2, 4, -(-r.wavelets // 4))
    b = _attempt(reqs, fabric, 512, [], 1.0, 1, 6, None).routes[0].bundle
    assert (b.cut, b.pitch, b.lanes, b.spine) == ("owners", 2, 4, 0)
    ex = expand(b)
    pe = ex.x * 10_000 + ex.y
    assert np.unique(pe).size == pe.size
    core = (ex.tx & 16) != 0  # delivered into the PE's core (RAMP)
    inside = ((ex.x[core] >= c_rect.x) & (ex.x[core] < c_rect.x1))
    assert inside.all()
    assert sorted(set((ex.y[core] - c_rect.y).tolist())) == [1, 3, 5, 7]  # owner rows only
    _, land = endpoints(b)
    assert sorted((land[:, 1] - c_rect.y).tolist()) == [1, 3, 5, 7]
    assert len(set(zip(ex.lane[core].tolist(), ex.y[core].tolist(), strict=True))) == 4


def _skip_across_a_cut() -> Module:
    """Kernel c (8 rows, kind 'rows': each reads an eighth of %va) takes a's
    output; below it, s sends %vs to b1 (its West neighbour) and to t (below
    them both). s's East side faces b2, t's West side b3, so the skip s -> t
    ranks first the pair that leaves s West (free: b1 takes %vs too) and
    lands on t's East side: a U turn through the corridor above s, whose
    lanes run East along c's rows, where c's cut lanes land one on each."""
    m = _manual((40, 24))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]

    def put(name: str, ins: list[str], out: str, rect: Rect, shape: tuple[int, ...] = (1, 64),
            kind=fk.box) -> None:
        kind(m, name, ins, out, rect.w, rect.h, out_shape=shape,
             work=600 * rect.w * rect.h).rect = rect  # every kernel 600 cycles

    put("a", ["x"], "va", Rect(0, 0, 4, 8), shape=(1, 1024))
    put("c", ["va"], "vc", Rect(4, 0, 4, 8), kind=fk.rows)
    put("s", ["x"], "vs", Rect(8, 8, 4, 4), shape=(1, 4640))  # 4 lanes of 580 wavelets
    put("b1", ["vs"], "v1", Rect(4, 8, 4, 4))
    put("b2", ["x"], "v2", Rect(12, 8, 4, 4))
    put("t", ["vs"], "vt", Rect(6, 12, 4, 4))
    put("b3", ["x"], "v3", Rect(2, 12, 4, 4))
    put("b4", ["x"], "v4", Rect(10, 12, 4, 3))
    m.outputs = ["vc", "v1", "v2", "vt", "v3", "v4"]
    fk.connect(m)
    return m


def test_passer_is_the_roundabout_bundle_on_a_cuts_overloaded_links() -> None:
    """Routed on its first side pair, the skip s -> t runs along c's rows,
    overfilling links beside c's lightest cut: `flatten` names c, and
    `passer` names the skip (a U turn: the most roundabout bundle there)
    as the one to move instead; once tried, or for no cut, nothing."""
    from wsec.passes.route import _attempt, _corridors, _detour, _loads
    from wsec.passes.route_bundles import requests

    m = _skip_across_a_cut()
    fabric = Fabric.of(get_target("wse2", (40, 24)))
    got = _attempt(requests(m, fabric), fabric, 600, _corridors(m, fabric), 1.25, 12, 6, None)
    neg = got.neg
    keys = [(r.edge, r.sink) for r in neg.reqs]
    skip = next(k for k in keys if k[1] == "t")
    i = keys.index(skip)
    assert neg.reqs[i].choice == 0 and _detour(neg.reqs[i], neg.routes[i]) > 0
    occ = _loads(m, got, fabric)
    assert occ.max() > 600
    cut = neg.flatten(occ)
    assert cut == {next(k for k in keys if k[1] == "c")}
    assert neg.passer(occ, cut, set()) == skip
    assert neg.passer(occ, cut, {skip}) is None
    assert neg.passer(occ, set(), set()) is None


def test_a_skip_bundle_crossing_a_cut_sinks_rows_moves_and_the_cut_stays() -> None:
    """The router moves the skip s -> t off c's rows (to t's West side) and
    routes c's input cut again, its lanes landing on every row; the busiest
    link stays within the kernels' 600 cycles. (It used to keep the
    flattened attempt: c's input on two flat lanes, its other rows reading
    what no lane brought.)"""
    m = _skip_across_a_cut()
    t = get_target("wse2", (40, 24))
    Route().run(m, PassContext(t))
    check_routed(m, t)
    (into_c,) = [b for e in m.edges if e.value == "va" for b in e.bundles]
    assert into_c.cut == "rows" and into_c.lanes * into_c.pitch == 8
    (skip,) = [b for e in m.edges if e.value == "vs" for b in e.bundles if b.sink == "t"]
    assert expand(skip, False, False).y.min() >= 8  # below c's rows
    assert m.attrs["realised_cycles"] == 600
def _req(edge: int, pitch: int, lanes: int = 2) -> object:
    from types import SimpleNamespace as NS

    return NS(edge=edge, sink=f"k{edge}", cut_pitch=pitch, lanes=lanes)


def _attempt(reqs: list, most: int, **neg: object) -> object:
    """A stand-in for route._Attempt: its log's kept round holds `most`
    bundles on a PE; `neg` the negotiator's fields _crowding_cuts reads."""
    from types import SimpleNamespace as NS

    log = [{"max_bundles_per_pe": most, "score": 1}, {"max_bundles_per_pe": 0, "score": 2}]
    return NS(log=log, neg=NS(reqs=reqs, _score=lambda st: st["score"], **neg))


def test_new_cuts_crowding_a_link_or_a_pe_go_flat() -> None:
    """Of the cuts an attempt makes that the kept one did not, those on a
    link loaded past the bound go flat, the heaviest lanes first and only
    as many as bring the link back under it; and those on a PE carrying
    more than COLOR_RISE bundles over the kept layout's most, those on the
    most such PEs first, until no PE does. A cut the kept attempt made
    already, one on links and PEs under the limits and a flat request never
    do."""
    from types import SimpleNamespace as NS

    from wsec.passes.route import COLOR_RISE, _crowding_cuts

    reqs = [_req(0, 2), _req(1, 1), _req(2, 4), _req(3, 2), _req(4, 0), _req(5, 2)]
    links = [[0, 1], [1], [1, 2], [1], [1], [3]]
    pes = [[0, 1], [1], [1, 2], [1, 2], [1, 2], [2, 3]]
    occ = np.array([400.0, 1350.0, 500.0, 900.0])  # link 1 is 350 over the capacity 1000
    most = 4 + COLOR_RISE  # the kept layout's most bundles on a PE, and the rise allowed
    got = _attempt(reqs, 0, cap=1000, occ=occ, pe_cnt=np.full(4, most),
                  lane_load=np.array([300, 200, 100, 400, 500, 50]),
                  routes=[NS(links=np.array(x), pes=np.array(p))
                          for x, p in zip(links, pes, strict=True)])
    best = _attempt([_req(0, 0), _req(1, 0), _req(2, 0), _req(3, 1), _req(4, 0), _req(5, 0)],
                    4)
    # k3 (400) was cut before, k4 is flat: k0 (300) then k1 (200) cover the 350
    assert _crowding_cuts(got, best, 1.0) == {(0, "k0"), (1, "k1")}
    assert _crowding_cuts(got, best, 1.1) == {(0, "k0")}  # 250 over 1100
    assert _crowding_cuts(got, best, 1.35) == set()  # nothing over the bound
    got.neg.pe_cnt = most + np.array([0, 2, 1, 0])  # too many on PEs 1 and 2: k2 (on both), k0
    assert _crowding_cuts(got, best, 1.35) == {(2, "k2"), (0, "k0")}
    got.neg.pe_cnt = most + np.array([0, 1, 0, 0])  # one too many on PE 1: the first there
    assert _crowding_cuts(got, best, 1.35) == {(0, "k0")}
    assert _crowding_cuts(got, best, 1.0) == {(0, "k0"), (1, "k1")}  # k0 is flat already


def test_kept_one_lane_cuts_go_flat_where_no_new_cut_crosses_an_overfilled_link() -> None:
    """A link past the bound that only cuts the kept attempt made cross
    (the new cuts moved a flat bundle onto it): its one-lane cuts (a whole
    value on one link) go flat, the heaviest first, so the new cuts
    elsewhere stay; its cuts of several lanes never do, nor does any kept
    cut where a new one crosses an overfilled link."""
    from types import SimpleNamespace as NS

    from wsec.passes.route import COLOR_RISE, _crowding_cuts

    # k0: new cut off the hot link; k1, k2: kept one-lane cuts on it; k3: kept, 4 lanes
    reqs = [_req(0, 4), _req(1, 12, 1), _req(2, 16, 1), _req(3, 4, 4), _req(4, 0)]
    links = [[0], [1], [1], [1], [1]]
    occ = np.array([500.0, 1296.0])  # link 1 is 76 over the capacity 1220
    most = 4 + COLOR_RISE

    def got_with(lane_load: list[int], links: list[list[int]]) -> object:
        return _attempt(reqs, 0, cap=1220, occ=occ, pe_cnt=np.full(2, most),
                        lane_load=np.array(lane_load),
                        routes=[NS(links=np.array(x), pes=np.array([0])) for x in links])

    best = _attempt([_req(0, 0), _req(1, 12, 1), _req(2, 16, 1), _req(3, 4, 4), _req(4, 0)], 4)
    assert _crowding_cuts(got_with([300, 512, 256, 128, 512], links), best, 1.0) == {(1, "k1")}
    assert _crowding_cuts(got_with([300, 40, 50, 128, 512], links), best, 1.0) == {
        (1, "k1"), (2, "k2")}  # both, and still over: the 4-lane cut stays
    assert _crowding_cuts(got_with([300, 512, 256, 128, 512], links), best, 1.1) == set()
    # a new cut on the hot link: it goes flat, the kept ones stay
    assert _crowding_cuts(got_with([300, 512, 256, 128, 512], [[1], [1], [1], [1], [1]]),
                          best, 1.0) == {(0, "k0")}


def _recut_fixture() -> tuple[object, object, dict]:
    """Three requests routed flat on links 3-5 (load 100 each) that crowding
    flattened, with the cut routes they had: k0 (the largest sink) on links
    0 and 1, k1 on link 1, k2 on links 1 and 2; link 1 carries 200 of other
    bundles, the capacity is 1000, the settled attempt's busiest link 0.9 of
    it and its most bundles on a PE 4 (the kept layout's: 2)."""
    from types import SimpleNamespace as NS

    def req(edge: int, pes: int) -> NS:
        return NS(edge=edge, sink=f"k{edge}", dst=NS(rect=NS(w=pes, h=1)))

    def route(links: list[int], pes: list[int]) -> NS:
        return NS(links=np.array(links), pes=np.array(pes), distinct=True)

    flat = [route([3], [3]), route([4], [4]), route([5], [5])]
    neg = NS(cap=1000, reqs=[req(0, 100), req(1, 50), req(2, 10)], routes=flat,
             lane_load=[100.0, 100.0, 100.0], occ=np.array([500.0, 200.0, 300.0, 100, 100, 100]),
             pe_cnt=np.array([2, 2, 2, 1, 1, 1]), _counted=lambda i, rt: (rt.links, rt.pes),
             _score=lambda st: 0)
    got = NS(neg=neg, log=[{"max_link_over_capacity": 0.9, "max_bundles_per_pe": 4}])
    best = NS(log=[{"max_bundles_per_pe": 2}], neg=NS(_score=lambda st: 0))
    cut_in = {(0, "k0"): (route([0, 1], [0, 1]), 400.0), (1, "k1"): (route([1], [1]), 300.0),
              (2, "k2"): (route([1, 2], [1, 2]), 200.0)}
    return got, best, cut_in


def test_crowding_flattened_cuts_that_fit_beside_the_others_are_cut_again() -> None:
    """_recuts trades each crowding-flattened request's flat route for the
    cut route it had, the largest sink first, on the loads the settled
    attempt leaves: k0 (link 0 at 900, link 1 at 600) and then k1 (link 1
    at 900) fit under 1000; k2 would fit alone but not beside them (link 1
    at 1100). Under 850 k0 does not fit and the other two do; with at most
    2 bundles on a PE (PEs 0-2 carry 2 already) none does."""
    from wsec.passes.route import _recuts

    got, best, cut_in = _recut_fixture()
    assert _recuts(got, 1000, 4, cut_in) == {(0, "k0"), (1, "k1")}
    assert _recuts(got, 1000, 4, {k: cut_in[k] for k in [(2, "k2")]}) == {(2, "k2")}
    # under 850: k0 is over on link 0 (900), so k1 and k2 fit beside each other on link 1
    assert _recuts(got, 850, 4, cut_in) == {(1, "k1"), (2, "k2")}
    assert _recuts(got, 1000, 2, cut_in) == set()
    assert (got.neg.occ == [500.0, 200.0, 300.0, 100, 100, 100]).all()  # estimated on a copy


def test_recut_keeps_the_attempt_cutting_what_fits_and_leaves_out_what_crowds() -> None:
    """_recut routes the fitting ones cut (the others stay flat) and keeps
    that attempt where it is colored, crowds nothing, fewer sink PEs read
    flat lanes and neither its busiest link nor its most bundles on a PE
    exceed the settled attempt's, then tries the rest on its loads; where
    the negotiator finds one crowding after all, it is left out and the rest
    are tried again; where nothing helps, the settled attempt stays."""
    from types import SimpleNamespace as NS

    import wsec.passes.route as rt

    got, best, cut_in = _recut_fixture()
    crowding = set(cut_in)
    routed: list[set] = []

    def attempt(flat_rows: int, score: float = 0.9, colored: bool = True, most: int = 4) -> NS:
        return NS(colored=colored, score=(not colored, score), flat_rows=flat_rows,
                  neg=got.neg,  # estimated again on the same loads
                  log=[{"max_link_over_capacity": score, "max_bundles_per_pe": most}])

    def run(results: list[NS], crowds: list[set]) -> tuple[object, set]:
        routed.clear()
        it, cr = iter(results), iter(crowds)

        def route(still: set) -> NS:
            routed.append(set(still))
            return next(it)

        saved = rt._crowding_cuts, rt._flat_rows
        rt._crowding_cuts = lambda a, b, bound: next(cr)
        rt._flat_rows = lambda a: a.flat_rows
        try:
            got.flat_rows = 160
            return rt._recut(got, best, 1.0, crowding, cut_in, route, None)
        finally:
            rt._crowding_cuts, rt._flat_rows = saved

    ok = attempt(10)
    assert run([ok, attempt(10)], [set(), set()]) == (ok, {(2, "k2")})
    # k0 and k1 cut again; then k2 too, not kept: as many sink PEs read flat lanes
    assert routed == [{(2, "k2")}, set()]
    assert run([attempt(10), ok], [{(0, "k0")}, set()]) == (ok, {(0, "k0")})
    assert routed == [{(2, "k2")}, {(0, "k0")}]  # k0 crowds: without it k1 and k2 fit
    for worse in (attempt(10, 0.95), attempt(10, most=5), attempt(10, colored=False),
                  attempt(160)):  # a busier link, more colors, none, no fewer flat PEs
        assert run([worse], [set()]) == (got, crowding)
        assert routed == [{(2, "k2")}]


def test_recut_within_the_proof_slack_cuts_what_overfills_a_link_a_little() -> None:
    """With a ceiling above the bound (Route.proof_slack), _recut estimates the
    re-cuts under the ceiling (k2 fits beside k0 and k1: link 1 at 1100)
    and keeps an attempt whose busiest link exceeds the settled one's (0.9)
    up to the ceiling, with up to COLOR_RISE more bundles on a PE than the
    kept layout has (not only the settled attempt's most); without a
    ceiling the same attempt is not kept (k2 stays flat), nor one beyond
    the ceiling: then the re-cuts are estimated under the bound again."""
    from types import SimpleNamespace as NS

    import wsec.passes.route as rt

    got, best, cut_in = _recut_fixture()
    best.log[0]["max_bundles_per_pe"] = 3  # up to 3 + COLOR_RISE on a PE: k2 fits on PE 1
    crowding = set(cut_in)
    got.flat_rows = 160
    routed: list[set] = []

    def attempt(score: float, most: int = 5) -> NS:
        return NS(colored=True, score=(False, score), flat_rows=0, neg=got.neg,
                  log=[{"max_link_over_capacity": score, "max_bundles_per_pe": most}])

    def run(result: NS, ceiling: float) -> tuple[object, set]:
        routed.clear()

        def route(still: set) -> NS:
            routed.append(set(still))
            return result

        saved = rt._crowding_cuts, rt._flat_rows
        rt._crowding_cuts = lambda a, b, bound: set()
        rt._flat_rows = lambda a: a.flat_rows
        try:
            return rt._recut(got, best, 1.0, crowding, cut_in, route, None, ceiling)
        finally:
            rt._crowding_cuts, rt._flat_rows = saved

    ok = attempt(1.05)
    assert run(ok, 1.1) == (ok, set())  # all three cut again at 1.05x the capacity
    assert routed[0] == set()
    assert run(ok, 0.0) == (got, crowding)  # no slack: k2 left out, 1.05 > 0.9 not kept
    assert routed[0] == {(2, "k2")}
    assert run(attempt(1.15), 1.1)[0] is got  # beyond the ceiling
    assert routed == [set(), {(2, "k2")}]  # then k0 and k1 alone, under the bound
    assert run(attempt(1.05, most=6), 1.1)[0] is got  # more colors than COLOR_RISE allows


def _thin_fixture() -> tuple[object, dict]:
    """One request k0 routed flat on link 3 that crowding flattened, with the
    cut route it had on links 0 and 1 (lane load 400); flat bundles k1 (2
    lanes of 300, 600 wavelets, sides of 8 slots, sibling k3: same edge, same
    lanes) and k2 (1 lane of 200, sides of 1 slot) pass on link 1, a cut
    bundle k4 (lane load 300) on link 0; capacity 1000."""
    from types import SimpleNamespace as NS

    def req(edge: int, sink: str, wavelets: int, lanes: int, side: int, pitch: int = 0) -> NS:
        return NS(edge=edge, sink=sink, wavelets=wavelets, lanes=lanes, cut_pitch=pitch,
                  src=NS(length=side), dst=NS(length=side, rect=NS(w=4, h=4)))

    def route(links: list[int]) -> NS:
        return NS(links=np.array(links), pes=np.array([9]), distinct=True)

    reqs = [req(0, "k0", 400, 1, 8), req(1, "k1", 600, 2, 8), req(2, "k2", 200, 1, 1),
            req(1, "k3", 600, 2, 8), req(4, "k4", 500, 1, 8, pitch=1)]
    routes = [route([3]), route([1, 5]), route([1]), route([5, 6]), route([0])]
    neg = NS(cap=1000, reqs=reqs, routes=routes, lane_load=[100.0, 300.0, 200.0, 300.0, 300.0],
             occ=np.array([300.0, 500.0, 0.0, 100.0, 0.0, 300.0, 300.0]),
             pe_cnt=np.zeros(10, dtype=np.int64), siblings=[[], [3], [], [1], []],
             _counted=lambda i, rt: (rt.links, rt.pes), _score=lambda st: 0)
    got = NS(neg=neg, log=[{"max_link_over_capacity": 0.5, "max_bundles_per_pe": 4}])
    return got, {(0, "k0"): (route([0, 1]), 400.0)}


def test_recuts_thin_the_bundles_passing_a_recut_sinks_rows(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-cut whose lane overfills a link beside other bundles fits where
    those take lighter lanes (_thinned): k0's cut lane on link 1 (500 + 400
    over 800) fits when k1's lanes shed 100 (600 wavelets on 3 lanes: 200
    each); k1's sibling k3 is asked as many lanes (they share them), k2 (one
    slot) cannot thin. Under 650 link 0 (the cut k4's 300 beside k0's 400)
    needs k4 at a finer pitch: the coarsest as light (200, a cap), and link 1
    (250 over) k1 and k2 sharing the excess evenly, once k2 has the slots.
    Without `thin` it stays flat."""
    import wsec.passes.route as rt

    monkeypatch.setattr(rt, "pitch_loads", lambda r: {1: 100, 2: 200, 4: 300})
    got, cut_in = _thin_fixture()
    assert rt._recuts(got, 800, 10, cut_in) == set()
    thin: dict = {}
    assert rt._recuts(got, 800, 10, cut_in, thin) == {(0, "k0")}
    assert thin == {(1, "k1"): (3, 0), (1, "k3"): (3, 0)}
    assert (got.neg.occ == [300.0, 500.0, 0.0, 100.0, 0.0, 300.0, 300.0]).all()  # on a copy
    thin = {}
    assert rt._recuts(got, 850, 10, cut_in, thin) == {(0, "k0")}  # link 1 at 900: 50 to shed
    assert thin == {(1, "k1"): (3, 0), (1, "k3"): (3, 0)}  # whole lanes: 250 -> 200 each
    thin = {}
    assert rt._recuts(got, 650, 10, cut_in, thin) == set()  # k2 has no slot to thin onto
    assert thin == {}
    got.neg.reqs[2].src.length = got.neg.reqs[2].dst.length = 8
    assert rt._recuts(got, 650, 10, cut_in, thin) == {(0, "k0")}
    # 125 each off link 1: k1 onto 4 lanes (150), k2 onto 3 (67); k4 at 200 (pitch 2)
    assert thin == {(4, "k4"): (0, 200), (1, "k1"): (4, 0), (1, "k3"): (4, 0), (2, "k2"): (3, 0)}
    got.neg.reqs[1].src.length = 2  # k1 has no slot to widen onto
    assert rt._recuts(got, 650, 10, cut_in, {}) == set()


def test_thin_recut_cuts_one_at_a_time_where_the_passing_bundles_thin() -> None:
    """_thin_recut routes a still-flat request cut with the passing bundles'
    lanes asked (route's second argument) and keeps that attempt where it
    is no busier than the kept one (nor `bound`), crowds nothing and fewer
    sink PEs read flat lanes; otherwise the kept attempt stays."""
    from types import SimpleNamespace as NS

    import wsec.passes.route as rt

    got, cut_in = _thin_fixture()
    best = NS(log=[{"max_bundles_per_pe": 4}], neg=NS(_score=lambda st: 0))
    got.flat_rows = 16
    routed: list[tuple[set, dict]] = []

    def attempt(score: float, most: int = 4) -> NS:
        return NS(colored=True, score=(False, score), flat_rows=0, neg=got.neg,
                  log=[{"max_link_over_capacity": score, "max_bundles_per_pe": most}])

    def run(result: NS, crowds: set) -> tuple[object, set]:
        routed.clear()

        def route(still: set, thin: dict | None = None) -> NS:
            routed.append((set(still), dict(thin or {})))
            return result

        saved = rt._crowding_cuts, rt._flat_rows
        rt._crowding_cuts = lambda a, b, bound: crowds
        rt._flat_rows = lambda a: a.flat_rows
        try:
            return rt._thin_recut(got, best, 0.8, set(cut_in), cut_in, route, None)
        finally:
            rt._crowding_cuts, rt._flat_rows = saved

    ok = attempt(0.8)
    assert run(ok, set()) == (ok, set())
    assert routed == [(set(), {(1, "k1"): (3, 0), (1, "k3"): (3, 0)})]
    for worse, crowds in ((attempt(0.85), set()), (attempt(0.8, most=5), set()),
                          (ok, {(0, "k0")})):  # busier, more bundles on a PE, crowding
        assert run(worse, crowds) == (got, set(cut_in))
    got.neg.occ[1] = 700.0  # k0 no longer fits beside k2 (one slot) however k1 thins
    assert run(ok, set()) == (got, set(cut_in))
    assert routed == []


def test_lone_recut_cuts_a_still_flat_request_alone_where_free(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """_lone_recut routes each request the kept attempt still routes flat cut
    alone (route's second argument: the one at its lightest pitch), the most
    sink PEs first, and keeps the attempt where it is no busier than the
    kept one (below the capacity: than the capacity), fewer sink PEs read
    flat lanes, no PE carries more than COLOR_RISE bundles over the kept
    most and nothing crowds. A request whose known cut route (cut_in),
    estimated on the kept loads, overfills a link past the ceiling is not
    routed; one without a known route is."""
    from types import SimpleNamespace as NS

    import wsec.passes.route as rt

    def req(edge: int, sink: str, side: int, flat: bool = True) -> NS:
        return NS(edge=edge, sink=sink, flat=flat, cut_rows=side, cut_pitch=0,
                  dst=NS(rect=NS(w=side, h=side)))

    # k0 (16 PEs) has a known cut route, k1 (9 PEs) none, k2 is cut, k3 (4 PEs) flat
    reqs = [req(0, "k0", 4), req(1, "k1", 3), req(2, "k2", 5, flat=False), req(3, "k3", 2)]
    flat = {(0, "k0"), (1, "k1"), (3, "k3")}
    neg = NS(cap=1000, reqs=reqs, _score=lambda st: 0, routes=[None] * 4, lane_load=[0.0] * 4)
    best = NS(colored=True, score=(False, 0.8), neg=neg, flat=flat, flat_rows=29,
              log=[{"max_link_over_capacity": 0.8, "max_bundles_per_pe": 4}])
    cut_in = {(0, "k0"): (None, 400.0)}
    fits: set = set()  # the known cut routes the estimate lets through
    estimated: list = []

    def recuts(got: NS, limit: float, most: int, known: dict) -> set:
        estimated.append((limit, set(known)))
        return set(known) & fits

    monkeypatch.setattr(rt, "_recuts", recuts)
    monkeypatch.setattr(rt, "_flat_rows", lambda a: a.flat_rows)
    crowds: set = set()
    monkeypatch.setattr(rt, "_crowding_cuts", lambda a, b, bound: crowds)
    routed: list = []

    def attempt(score: float, flat_rows: int = 20, most: int = 4, colored: bool = True) -> NS:
        return NS(colored=colored, score=(False, score), flat_rows=flat_rows, neg=neg,
                  log=[{"max_link_over_capacity": score, "max_bundles_per_pe": most}])

    def run(results: dict, ceiling: float = 1.05) -> object:
        routed.clear()
        estimated.clear()

        def route(still: set, key: tuple) -> NS:
            assert key not in still and still | {key} <= flat  # the kept attempt's flat
            routed.append(key)
            got = results.get(key, attempt(2.0))
            got.flat = still
            return got

        return rt._lone_recut(best, ceiling, cut_in, route, None)

    ok = attempt(0.95)  # busier than 0.8, but under the capacity: bounds nothing
    assert run({(1, "k1"): ok}) is ok
    assert routed == [(1, "k1"), (3, "k3")]  # k0's known route overfills past the ceiling
    assert estimated == [(1050.0, {(0, "k0")})]
    fits.add((0, "k0"))
    assert run({(1, "k1"): ok}) is ok
    assert routed == [(0, "k0"), (1, "k1"), (3, "k3")]  # most sink PEs first
    for worse in (attempt(1.01), attempt(0.9, flat_rows=29), attempt(0.9, most=7),
                  attempt(0.9, colored=False)):  # busier, no fewer flat PEs, crowded PE, colors
        assert run({(1, "k1"): worse}) is best
    assert run({(1, "k1"): attempt(0.9, most=6)}) is not best  # COLOR_RISE = 2 more
    crowds.add((9, "k9"))
    assert run({(1, "k1"): ok}) is best  # the attempt's new cuts crowd a link
    crowds.clear()
    monkeypatch.setattr(rt, "LONE_ATTEMPTS", 2)
    assert run({(3, "k3"): ok}) is best  # k3's turn never comes
    assert routed == [(0, "k0"), (1, "k1")]
    # an attempt not kept that cut its request leaves that cut route in cut_in
    cut = NS(links=np.array([7]))
    cuts_k1 = NS(cap=1000, _score=lambda st: 0, reqs=[NS(edge=1, sink="k1", cut_pitch=2)],
                 routes=[cut], lane_load=[300.0])
    busy = attempt(1.2)
    busy.neg = cuts_k1
    assert run({(1, "k1"): busy}) is best
    assert cut_in[(1, "k1")] == (cut, 300.0) and cut_in[(0, "k0")] == (None, 400.0)


def _dense_block(n: int = 40) -> Module:
    """Dense-block-like: each kernel reads up to 4 of the last 12 values."""
    rng = np.random.default_rng(3)
    m = fk.sized("big")
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    prev = ["x"]
    for i in range(n):
        pool = prev[-12:]
        ins = list(dict.fromkeys(prev[-1:] + list(rng.choice(pool, min(3, len(pool))))))
        fk.box(m, f"k{i}", ins, f"v{i}", int(rng.integers(10, 30)), int(rng.integers(10, 30)))
        prev.append(f"v{i}")
    m.outputs = [prev[-1]]
    fk.connect(m)
    return m


@pytest.mark.parametrize("enough", [1, 5, 24])
def test_candidates_are_the_shortest_valid_shapes(enough: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Shapes are checked lazily, shortest first, until `enough` pass: the
    result is what checking every shape and keeping the `enough` shortest
    (ties in the order drawn up) gives, with far fewer checks."""
    from wsec.passes import route as route_mod
    from wsec.passes import route_bundles as rb

    m = _dense_block()
    t = get_target("wse2")
    Place().run(m, PassContext(t))
    fabric = Fabric.of(t)
    reqs = rb.requests(m, fabric)
    rb.assign_slots(reqs, int(m.attrs["delta_t"]), 1.25)
    corridors = route_mod._corridors(m, fabric)
    lazy = [rb.candidates(r, fabric, corridors, enough) for r in reqs]
    checks = {"n": 0}
    real_finish = rb._finish

    def counted(*a):  # noqa: ANN002, ANN202
        checks["n"] += 1
        return real_finish(*a)

    def every(r, fab, kept, raw, k):  # noqa: ANN001, ANN202
        ok = list(kept)
        seen = {(b.axis, b.path) for _, _, b in kept}
        base = 1 + max((i for _, i, _ in kept), default=-1)
        for i, (slot, axis, path) in enumerate(raw):
            r.dst_slot = slot
            b = counted(r, axis, path)
            if b is not None and rb._inside(b, fab) and (b.axis, b.path) not in seen:
                seen.add((b.axis, b.path))
                ok.append((rb._length(list(b.path)), base + i, b))
        return sorted(ok, key=lambda x: (x[0], x[1]))[:k]

    monkeypatch.setattr(rb, "_shortest_valid", every)
    full = [rb.candidates(r, fabric, corridors, enough) for r in reqs]
    everything = checks["n"]
    monkeypatch.undo()
    monkeypatch.setattr(rb, "_finish", counted)
    checks["n"] = 0
    assert [rb.candidates(r, fabric, corridors, enough) for r in reqs] == lazy
    assert lazy == full
    assert all(0 < len(c) <= enough for c in lazy)
    lengths = [[route_mod._path_length(b.path) for b in c] for c in lazy]
    assert all(x == sorted(x) for x in lengths)
    assert checks["n"] < everything


def test_member_is_isin_on_a_sorted_array() -> None:
    from wsec.passes.route import _member

    rng = np.random.default_rng(3)
    a = rng.integers(0, 1 << 40, 500)
    b = np.concatenate([a[::7], rng.integers(0, 1 << 40, 50)])
    assert np.array_equal(_member(a, np.sort(b)), np.isin(a, b))
    assert not _member(a, np.zeros(0, np.int64)).any()
    assert _member(np.array([b.max() + 1, b.min() - 1]), np.sort(b)).tolist() == [False, False]


def test_inside_checks_every_lane_by_the_outer_two() -> None:
    """A bundle is on the grid when every waypoint of every lane and every
    PE its lanes reach past landing are; the first and last lanes decide."""
    from wsec.ir.graph import Bundle
    from wsec.ir.lanes import segment_dirs, travel, waypoints
    from wsec.passes.route_bundles import _inside

    def every_lane(b: Bundle, f: Fabric) -> bool:
        pts = waypoints(b)
        far = pts[:, -1, :] + b.reach * np.array(travel(b.axis, segment_dirs(b.path)))
        p = np.concatenate([pts.reshape(-1, 2), far])
        return bool(((p >= 0) & (p < [f.width, f.height])).all())

    shapes = [((2, 3), (9, 3)), ((4, 2), (4, 9), (12, 9)), ((2, 10), (6, 10), (6, 4), (12, 4)),
              ((2, 3), (14, 3), (14, 12), (3, 12)), ((0, 2),)]
    for grid in [(8, 8), (13, 11), (16, 16), (40, 40)]:
        f = Fabric.of(get_target("wse2", grid))
        for path in shapes:
            for axis in [(0, 1), (0, -1), (1, 0), (-1, 0)]:
                for lanes, reach in [(1, 0), (3, 2), (6, 9)]:
                    b = Bundle("k", 0, lanes, axis, path, reach)
                    try:
                        want = every_lane(b, f)
                    except ValueError:  # not a valid lane axis for this path
                        continue
                    assert _inside(b, f) == want, (grid, b)


def test_path_dirs_takes_only_paths_that_turn_at_every_corner() -> None:
    from wsec.passes.route_bundles import _path_dirs

    assert _path_dirs([(0, 0), (5, 0), (5, -2), (9, -2)]) == [(1, 0), (0, -1), (1, 0)]
    assert _path_dirs([(3, 3), (3, 9)]) == [(0, 1)]
    for bad in ([(0, 0), (2, 1)],  # diagonal
                [(0, 0), (0, 0), (4, 0)],  # an empty segment
                [(0, 0), (4, 0), (6, 0)],  # on straight at a corner
                [(0, 0), (4, 0), (1, 0)],  # back along the same row
                [(0, 0), (0, 3), (2, 3), (2, 7), (2, 9)]):
        assert _path_dirs(bad) is None, bad


def test_blocked_counts_the_facing_side_as_free() -> None:
    """_blocked (the side-pair ranking) as first defined: PEs off the grid or
    in a kernel, except those of the facing side, by membership."""
    from wsec.passes.route_bundles import Port, _blocked

    W, H = 12, 9
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        pes = np.where(rng.random(n) < 0.2, -1, rng.integers(0, W * H, n))
        who = np.where(pes < 0, -2, rng.integers(-1, 3, n)).astype(np.int32)
        axis = [(1, 0), (0, 1)][int(rng.integers(0, 2))]
        length = int(rng.integers(1, 6))
        ox = int(rng.integers(0, W - (length if axis[0] else 1) + 1))
        oy = int(rng.integers(0, H - (length if axis[1] else 1) + 1))
        facing = Port("k", (ox, oy), axis, length, (axis[1], axis[0]))
        if rng.random() < 0.5:  # some of the PEs on the facing side itself
            pes[: n // 2] = [(oy + i * axis[1]) * W + ox + i * axis[0]
                             for i in rng.integers(0, length, n // 2)]
        side = np.array([(oy + i * axis[1]) * W + ox + i * axis[0] for i in range(length)])
        want = float((((who == -2) | (who >= 0)) & ~np.isin(pes, side)).mean())
        assert _blocked((pes, who), facing, W) == want


def test_blocked_counts_kernels_taking_the_same_value_as_free() -> None:
    """PEs of a kernel that takes the bundle's value (another sink of its
    edge) do not block its lanes: they pass on that kernel's own lanes."""
    from wsec.passes.route_bundles import Port, _blocked

    W = 10
    pes = np.arange(4, dtype=np.int64)
    who = np.array([3, 3, 5, -1], dtype=np.int32)
    facing = Port("k", (9, 0), (0, 1), 1, (1, 0))  # far away: no PE of it among them
    assert _blocked((pes, who), facing, W) == 0.75
    assert _blocked((pes, who), facing, W, np.array([3], dtype=np.int32)) == 0.25
    assert _blocked((pes, who), facing, W, np.array([3, 5], dtype=np.int32)) == 0.0


def test_a_skip_leaves_through_the_sibling_it_shares_lanes_with() -> None:
    """A value going to its touching neighbour and, skipping it, to a kernel
    further on leaves from the side facing both, straight through the
    neighbour on the lanes they share, rather than out of the back side
    and around."""
    from wsec.passes.route_bundles import requests

    m = _manual((14, 6))
    _put(m, "a", [], "va", Rect(3, 0, 2, 6))
    _put(m, "b", ["va"], "vb", Rect(5, 0, 2, 6))
    _put(m, "c", ["vb", "va"], "vc", Rect(7, 0, 2, 6))
    _put(m, "d", ["vc"], "vd", Rect(9, 0, 2, 6))  # flow shelves: c's other side faces d
    fk.connect(m)
    fabric = Fabric.of(get_target("wse2", (14, 6)))
    skip = next(r for r in requests(m, fabric) if r.sink == "c" and r.src.owner == "a")
    assert skip.src.normal == (1, 0) and skip.dst.normal == (1, 0)


def test_an_attempt_on_the_same_requests_and_start_is_not_negotiated_again() -> None:
    """_attempt routes the same requests (same keys: sides, slots, lanes,
    pitches) started from no routes, or from that attempt's own, once: the
    second call returns its negotiation with the caller's flags; other
    sides (a request moved) or another start are negotiated."""
    from wsec.passes import route as route_mod
    from wsec.passes.route_bundles import requests

    m = fk.diamond()
    t = get_target("wse2", (16, 16))
    Place().run(m, PassContext(t))
    fabric = Fabric.of(t)
    cap = max(int(k.cost["cycles"]) for k in m.kernels() if k.cost)
    corridors = route_mod._corridors(m, fabric)
    base = requests(m, fabric)
    known = route_mod._Candidates(fabric, corridors, len(base))

    def attempt(headroom: float = 3.0, **kw: object) -> route_mod._Attempt:
        return route_mod._attempt(base, fabric, cap, corridors, headroom, 12, 6, None,
                                  known=known, **kw)

    first = attempt()
    again = attempt(solo={(0, "x")}, pairs=True)
    assert again.neg is first.neg and again.routes is first.routes
    assert again.solo == {(0, "x")} and again.pairs and not first.pairs
    assert attempt(warm=first.warm()).neg is first.neg  # from its own routes
    r = next(r for r in first.neg.reqs if len(r.pairs) > 1)
    other = attempt(moved={(r.edge, r.sink): 1})  # on its next side pair: other keys
    assert other.neg.keys != first.neg.keys and other.neg is not first.neg
    assert attempt(warm=other.warm()).neg is not first.neg  # another start


@pytest.mark.parametrize("build", [fk.diamond, fk.fanout])
def test_negotiator_keeps_pe_uses_and_conflicts_agree(build) -> None:
    """The negotiator's count of routes per PE (siblings too) is the count of
    its placed routes' PEs, and conflicts found with it (and with kept fork
    checks) are those found from scratch."""
    from wsec.passes import route as route_mod
    from wsec.passes.route_bundles import requests

    m = build()
    t = get_target("wse2", (16, 16))
    Place().run(m, PassContext(t))
    fabric = Fabric.of(t)
    cap = max(int(k.cost["cycles"]) for k in m.kernels() if k.cost)
    got = route_mod._attempt(requests(m, fabric), fabric, cap, route_mod._corridors(m, fabric),
                             3.0, 12, 6, None)
    routes, reqs = got.routes, got.neg.reqs
    assert np.array_equal(got.neg.pe_uses, np.bincount(np.concatenate([r.pes for r in routes]),
                                                       minlength=fabric.width * fabric.height))
    fresh = route_mod._conflicts(routes, reqs)
    assert route_mod._conflicts(routes, reqs, {}, got.neg.pe_uses) == fresh
    assert route_mod._conflicts(routes, reqs, got.neg.known.forks, got.neg.pe_uses) == fresh


def test_a_pitched_bundle_that_runs_through_its_own_rows_is_no_candidate() -> None:
    """Past its last lane's landing PE a pitched bundle's spine and the rows
    it feeds lie outside the ribbon of lanes the pattern checks bound; a
    lane coming in from that side would meet them (two routes of one color
    at one PE: a 1.5B GPT's matmul input failed verify so). _folds sees it
    from the expansion; the same bundle entering clear of its rows is kept."""
    from wsec.ir.graph import Bundle
    from wsec.passes.route_bundles import _folds

    through = Bundle("k", 0, 2, (-1, 0), ((641, 496), (641, 494), (657, 494), (657, 466),
                                          (645, 466)), 19, "rows", 10)
    clear = Bundle("k", 0, 2, (-1, 0), ((641, 499), (641, 501), (647, 501), (647, 485),
                                        (645, 485)), 19, "rows", 10)
    assert _folds(through, False)
    assert not _folds(clear, False)
    ex = expand(through)
    assert np.unique(ex.x * 4096 + ex.y).size < ex.x.size


def _short_into_tall() -> tuple[Module, Fabric, list]:
    """Kernel a's output side (4 rows) feeds c's input side (8 rows, row j
    reading the j-th eighth of the value)."""
    return _cut_request((16, 8), Rect(1, 2, 2, 4), Rect(11, 0, 2, 8))


def test_a_cut_with_fewer_lanes_than_the_flat_split_asks_is_taken_when_light() -> None:
    """The flat split asks for headroom lanes (3x what the capacity needs:
    6 here, each at most 512/6 wavelets); c's 8 rows fed from a's 4 can
    be cut only at pitch 2 (4 lanes of 128) or coarser, so no cut lane is
    that light and none has 6 lanes. Pitch 2 is still taken: its 4 lanes
    are what the capacity needs or more and each leaves half a link free
    (flat, c's rows away from the flat lanes read what no lane brought).
    Not where a lane would take more than half a link, nor where an
    earlier attempt asked for more lanes than the cut has, nor in the
    router's first attempts (no widening), where a cut needs the flat
    split's lanes."""
    from wsec.passes.route_bundles import choose_pitch

    _, _, (r,) = _short_into_tall()
    assert r.wavelets == 512 and r.cut_rows == 8
    r.need = 2  # 512 wavelets over a capacity of 300
    choose_pitch(r, 6, 300)
    assert (r.cut_pitch, r.src_pitch, r.lanes, r.lane_wavelets) == (2, 1, 4, 128)
    choose_pitch(r, 6, 250)  # 128 is more than half of 250
    assert r.cut_pitch == 0
    r.widen = False  # the router's first attempts: as many lanes as the flat split
    choose_pitch(r, 6, 300)
    assert r.cut_pitch == 0
    choose_pitch(r, 4, 300)
    assert (r.cut_pitch, r.lanes) == (2, 4)
    r.widen, r.min_lanes = True, 5  # an earlier attempt asked for 5 lanes: the cut has 4
    choose_pitch(r, 6, 300)
    assert r.cut_pitch == 0


def test_a_source_side_shorter_than_the_sinks_rows_is_cut_by_widening() -> None:
    """Kernel a's output side (4 rows) is half as long as c's input side (8
    rows, each reading an eighth of the value). Uniform lanes at pitch k
    need 8 - k + 1 source slots, so only pitch 8 fits (one lane carrying
    everything: heavier than a flat lane, so the bundle stayed flat and
    most of c's PEs read elements no lane brought). Widening, 4 lanes leave
    a side by side (or 2) and spread to pitch 2 (or 4) at their last
    corner: every row of c gets the share its rows read."""
    from wsec.passes.route import _attempt
    from wsec.passes.route_bundles import _pitches, assign_slots

    m, fabric, reqs = _short_into_tall()
    (r,) = reqs
    assert r.src.length == 4 and _pitches(r) == {2: 1, 4: 1, 8: 0}  # 8: uniform, else widened
    assign_slots(reqs, 512, 1.0)
    assert r.cut_pitch in (2, 4) and (r.src_pitch, r.lanes) == (1, 8 // r.cut_pitch)  # widened
    flat = _attempt(reqs, fabric, 512, [], 1.0, 2, 6, None)  # the first attempts: no widening
    assert flat.routes[0].bundle.pitch in (1, 8) and not flat.routes[0].bundle.src_pitch
    got = _attempt(reqs, fabric, 512, [], 1.0, 2, 6, None, widen=True)
    b = got.routes[0].bundle
    k = b.pitch  # the fair pitch, or a coarser one where its lanes find no room to turn
    assert k >= r.cut_pitch and (b.cut, k, b.src_pitch, b.lanes) == ("rows", k, 1, 8 // k)
    assert len(b.path) >= 3  # it widens at a corner
    src, land = endpoints(b)
    a, c = m.kernel("a").rect, m.kernel("c").rect
    assert all(a.contains(int(x), int(y)) for x, y in src)
    assert sorted(src[:, 1].tolist()) == list(range(int(src[:, 1].min()),
                                                    int(src[:, 1].min()) + b.lanes))
    assert (np.diff(np.sort(land[:, 1])) == k).all() and (land[:, 0] == c.x).all()
    ex = expand(b)
    assert np.unique(ex.y * 16 + ex.x).size == ex.x.size  # lanes, spines, rows PE-disjoint
    ramp = 16
    rows = {int(y) for y, t in zip(ex.y, ex.tx, strict=True) if t & ramp}
    assert rows == set(range(8))  # every row of c's side receives a lane
    before = copy.copy(r)  # the router before widening: pitch 8 only (or flat)
    before.no_widen = True
    assert _pitches(before) == {8: 0}


def test_a_widening_cut_with_no_room_at_its_pitch_widens_at_a_coarser_one() -> None:
    """With the headroom of the router's first attempts (3x the lanes the
    capacity needs) the fair pitch of c's 8 rows fed from a's 4 is 2: 4
    lanes leaving a side by side, spreading to pitch 2 at a corner. In
    this grid 8 PEs high no such route exists; pitch 4's 2 lanes turn in
    fewer columns and do fit. The request widens at pitch 4 (it gave up
    widening, and was routed flat or as one lane of the whole value,
    before), and where no widening pitch finds room (c right beside a: no
    room to turn at all) it gives up widening."""
    from wsec.passes.route import _attempt, _Candidates, _choose_sides
    from wsec.passes.route_bundles import _pitches, assign_slots

    m, fabric, reqs = _short_into_tall()
    (r,) = reqs
    assign_slots(reqs, 512, 3.0)
    assert (r.cut_pitch, r.src_pitch) == (2, 1)  # the fair pitch, widening
    known = _Candidates(fabric, [], 1)
    assert not known(r)  # no room for 4 lanes to spread to pitch 2
    _choose_sides(reqs, 512, 3.0, known)
    assert (r.cut_pitch, r.src_pitch, r.lanes, r.widen_failed, r.no_widen) == (
        4, 1, 2, {2}, False)
    assert _pitches(r) == {4: 1, 8: 0}
    got = _attempt(reqs, fabric, 512, [], 3.0, 2, 6, None, widen=True)
    b = got.routes[0].bundle
    assert (b.cut, b.pitch, b.src_pitch, b.lanes) == ("rows", 4, 1, 2)
    src, land = endpoints(b)
    assert np.diff(np.sort(land[:, 1])).tolist() == [4]
    assert (land[:, 0] == m.kernel("c").rect.x).all()
    a = m.kernel("a").rect
    assert all(a.contains(int(x), int(y)) for x, y in src)
    ex = expand(b)
    ramp = 16
    assert {int(y) for y, t in zip(ex.y, ex.tx, strict=True) if t & ramp} == set(range(8))

    _, fabric, reqs = _cut_request((16, 8), Rect(1, 2, 2, 4), Rect(4, 0, 2, 8))  # side by side
    (r,) = reqs
    _choose_sides(reqs, 512, 3.0, _Candidates(fabric, [], 1))
    assert r.no_widen and not r.src_pitch and r.cut_pitch in (0, 8)


def test_folds_is_the_expansions_duplicate_check() -> None:
    """_folds checks segments against the rectangle of spines and rows; on
    every random pitched or widening bundle that passes the ribbon checks
    it says what a duplicate PE in the full expansion says."""
    from wsec.ir.graph import Bundle
    from wsec.ir.lanes import LaneError, check, segment_dirs, waypoints
    from wsec.passes.route_bundles import _crosses, _folds, _ribbon_simple

    rng = np.random.default_rng(3)
    seen = {True: 0, False: 0}
    for _ in range(3000):
        p = list(random_path(rng, fewest=1))
        d0 = segment_dirs(tuple(p))[0]
        axis = (d0[1], d0[0]) if rng.integers(2) else (-d0[1], -d0[0])
        k = int(rng.integers(2, 7))
        s = k if rng.integers(2) or len(p) == 2 else int(rng.integers(1, k + 1))
        b = Bundle("k", 0, int(rng.integers(1, 9)), axis, tuple(p), int(rng.integers(0, 12)),
                   "rows", k, s)
        try:
            check(b)
        except LaneError:
            continue
        pts = waypoints(b)
        first = [tuple(int(v) for v in q) for q in pts[0]]
        last = [tuple(int(v) for v in q) for q in pts[-1]]
        if len(p) > 2 and (_crosses(first, first, True) or _crosses(last, last, True)
                           or (b.lanes > 1 and not _ribbon_simple(first, last))):
            continue
        ex = expand(b)
        dup = np.unique(ex.x * 100_000 + ex.y).size != ex.x.size
        assert _folds(b, False) == dup, b
        seen[dup] += 1
    assert seen[True] > 20 and seen[False] > 500  # both answers were exercised


def test_a_widening_cut_with_no_room_for_a_corner_looks_for_another_side_pair() -> None:
    """Kernels a (4 rows) and c (8 rows, each reading an eighth) side by side:
    no room between them for the corner a widening bundle turns at. Without
    the side-pair search it gives up widening (and stays flat: pitch 8
    alone would fit uniform, one lane four times a flat one); with it, it
    moves to a side pair where its lanes widen at pitch 2."""
    from wsec.passes.route import _Candidates, _choose_sides
    from wsec.passes.route_bundles import requests

    def build() -> tuple[Fabric, list]:
        m = _manual((24, 24))
        m.add_value("x", TensorType("f32", (1, 64)))
        m.inputs = ["x"]
        _put(m, "a", ["x"], "va", Rect(9, 10, 2, 4), shape=(1, 4096), work=64)
        _put(m, "c", ["va"], "vc", Rect(11, 8, 2, 8), shape=(1, 64), work=64)
        m.outputs = ["vc"]
        fk.connect(m)
        fabric = Fabric.of(get_target("wse2", (24, 24)))
        reqs = [r for r in requests(m, fabric) if r.sink == "c"]
        for r in reqs:
            r.cut_rows, r.numel = 8, 1024
            r.row_boxes = np.array([[[0, 128 * j], [1, 128 * (j + 1)]] for j in range(8)])
        return fabric, reqs

    fabric, reqs = build()
    (r,) = reqs
    first = r.choice
    _choose_sides(reqs, 512, 1.0, _Candidates(fabric, [], 1))
    assert r.no_widen and r.cut_pitch == 0 and r.choice == first  # flat, where it was
    fabric, reqs = build()
    (r,) = reqs
    known = _Candidates(fabric, [1, 22], 1)
    _choose_sides(reqs, 512, 1.0, known, pairs=True)
    assert (r.cut_pitch, r.src_pitch) == (2, 1) and r.choice != first  # on another pair
    b = known(r)[0]
    assert (b.cut, b.lanes, b.pitch, b.src_pitch) == ("rows", 4, 2, 1) and len(b.path) > 2


def test_outputs_to_the_host_take_their_own_rows_of_its_edge_near_their_sources() -> None:
    """Many kernels' outputs leave to the host (a training step's weight
    gradients), from sides across the East edge's axis: each bundle takes
    its own rows of the edge, near its source's, so they do not all cross
    the PEs of one slot (there the colors ran out)."""
    fabric = Fabric.of(get_target("wse2", (40, 64)))
    _, out = host_ports(fabric)
    reqs = []
    for j in range(18):  # three kernels to a row band, their North sides out
        x, y = 2 + 9 * (j % 3), 3 * (j // 3) + 20
        src = Port(f"g{j}", (x, y), (1, 0), 8, (0, 1))
        reqs.append(Request(j, HOST, src, out, wavelets=64 * (1 + j % 2)))
    assign_slots(reqs, cap=64, headroom=1.0)
    taken = np.zeros(out.length, int)
    for r in reqs:
        taken[r.dst_slot:r.dst_slot + dst_span(r)] += 1
        assert abs(r.dst_slot - r.src.origin[1]) <= 12, (r.src.owner, r.dst_slot)
    assert taken.max() == 1  # no two windows share a slot


@pytest.mark.parametrize("seed", range(20))
def test_legalize_keeps_order_and_moves_as_little_as_it_can(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    width = rng.integers(1, 6, n).tolist()
    length = int(sum(width) + rng.integers(0, 10))
    ideal = rng.integers(-3, length + 3, n).tolist()
    at = legalize(ideal, width, length)
    assert at is not None
    order = sorted(range(n), key=lambda i: (ideal[i], i))
    for a, b in zip(order, order[1:], strict=False):  # in the wished order, side by side at most
        assert at[a] + width[a] <= at[b]
    assert all(0 <= a and a + w <= length for a, w in zip(at, width, strict=True))
    # no window moves when the wishes already fit apart and inside the line
    free = sorted(range(n), key=lambda i: ideal[i])
    apart = all(ideal[a] + width[a] <= ideal[b] for a, b in zip(free, free[1:], strict=False))
    inside = max(i + w for i, w in zip(ideal, width, strict=True)) <= length
    if apart and min(ideal) >= 0 and inside:
        assert at == ideal
    assert legalize([0, 0], [3, 3], 5) is None
    assert legalize([4, 4, 4], [2, 2, 2], 12) == [2, 4, 6]  # a cluster centred on its wishes


def test_a_side_on_the_host_input_edge_is_fed_landed() -> None:
    """A kernel whose row ends lie on the host input edge takes the host's
    lanes there (they start landed): the grid's edge beyond that side blocks
    nothing, so the far end of its rows (free beside it) does not win."""
    from wsec.passes.route_bundles import requests

    m = _manual((12, 8))
    m.add_value("x", TensorType("f32", (1, 64)))
    m.inputs = ["x"]
    _put(m, "a", ["x"], "va", Rect(0, 0, 2, 4), shape=(1, 64), work=64)
    m.outputs = ["va"]
    fk.connect(m)
    fabric = Fabric.of(get_target("wse2", (12, 8)))
    r = next(r for r in requests(m, fabric) if r.sink == "a")
    assert r.src.owner == HOST
    assert r.dst.origin == (0, 0) and r.dst.normal == (1, 0)  # the West end of a's rows
