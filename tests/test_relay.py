"""Relays (wsec.ir.relay): a flat bundle's sink rows pass each other the boxes
their lanes did not bring; the simulator proves every read from what arrived.

The relay is opt-in (Route.relay: `-p route{relay=1}`). A user depends on:
with it off, a compile is what it was (no relay, the bundles' color pool
as before); with it on, a binary whose flat bundle's rows read outside their
lanes runs strict and matches onnxruntime (the relay's routes are in
the router table and its loads in the link loads), and a relay broken in
one place (a hop not routed, a lane missing at a carrier, a record
corrupted) is an error at the PE that depended on it or a loader error
naming the bundle.
"""

from __future__ import annotations

import pathlib
import re
from dataclasses import replace

import numpy as np
import pytest
from wsec.backends.emit import write_binary
from wsec.backends.format import BUNDLE_RELAY, NO_BUNDLE, FormatError, Program
from wsec.backends.lanes import check_records
from wsec.backends.loader import load_binary
from wsec.backends.relays import program_relays
from wsec.backends.sim import random_inputs, simulate
from wsec.backends.sim_base import SimError
from wsec.driver import CompileOptions, compile_model
from wsec.ir.fabric import PORT_BITS
from wsec.ir.halo import HALO_COLORS
from wsec.ir.lanes import lane_slices
from wsec.ir.parser import parse_module
from wsec.ir.printer import print_module
from wsec.ir.relay import (
    RELAY_COLORS,
    count_below,
    entries,
    mesh_color,
    plan,
    reached,
    relay_colors,
)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
MISC = FIXTURES / "cnn" / "misc_o11.onnx"  # a resize input the route leaves flat


def test_count_below_counts_a_boxs_elements_under_each_flat_index() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        shape = tuple(int(v) for v in rng.integers(1, 6, int(rng.integers(1, 5))))
        lo = np.array([rng.integers(0, s) for s in shape])
        hi = np.maximum(lo, [rng.integers(0, s + 1) for s in shape])
        m = np.zeros(shape, bool)
        m[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))] = True
        want = np.concatenate([[0], np.cumsum(m.ravel())])
        got = count_below(np.stack([lo, hi])[None], shape, np.arange(m.size + 1))[0]
        assert (got == want).all()


def _rows() -> tuple[np.ndarray, tuple[int, ...]]:
    """Six PE rows each reading all channels of two image rows (a conv's
    row groups), over a (1, 4, 6, 3) value."""
    boxes = np.zeros((6, 2, 4), np.int64)
    for r in range(6):
        boxes[r, 0] = [0, 0, r, 0]
        boxes[r, 1] = [1, 4, min(6, r + 2), 3]
    return boxes, (1, 4, 6, 3)


def test_plan_deals_lanes_over_columns_and_rows_without_lanes_take_all() -> None:
    boxes, shape = _rows()
    lane_at = np.full((6, 3), -1)
    lane_at[:4] = np.arange(4)[:, None]  # 4 flat lanes on the first 4 rows, 3 PEs wide
    p = plan(boxes, shape, lane_slices(72, 4), lane_at)
    assert p is not None
    assert p.lane.size == 12 and set(p.col.tolist()) == {0, 1, 2}  # a piece per lane and column
    assert (p.stop - p.start).sum() == 72  # the pieces partition the value
    rows_lanes = np.zeros((6, 4), bool)
    np.logical_or.at(rows_lanes, (slice(None), p.lane), p.need)
    assert rows_lanes[4].all() and rows_lanes[5].all()  # no lane of their own: every lane
    assert not rows_lanes[0, 0] and rows_lanes[0, 1:].all()
    # the routes: one per PE and color, five colors, every PE's neighbours on others
    ent, whose = entries(3, 6, p.stream > 0, (10, 11, 12, 13, 14))
    key = ent[:, 0] * 1000 + ent[:, 1] * 10 + ent[:, 2] - 10
    assert np.unique(key).size == key.size
    assert set(ent[:, 2].tolist()) == {10, 11, 12, 13, 14}
    assert whose.size == ent.shape[0]
    # everything reaches every PE where every hop is routed; a hop cut starves the PEs
    # beyond it of the pieces above it
    on = np.ones((6, 3), bool)
    va, west, east = reached(p, lane_at, on, on, on, on)
    assert (va | ~p.need).all() and (west == 0).all() and (east == 2).all()
    north = on.copy()
    north[3, :] = False  # row 3's PEs no longer reach row 4
    va, _, _ = reached(p, lane_at, north, on, on, on)
    lane3 = p.lane == 3
    assert not va[4, lane3].any() and not va[5, p.lane == 0].any() and va[3, p.lane == 0].all()


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, int]:
    """A fixture whose resize input stays flat (its rows read outside their
    lanes), compiled with the relay on: its program and the relayed bundle."""
    out = tmp_path_factory.mktemp("relay") / "misc.bin"
    res = compile_model(str(MISC), CompileOptions(pass_options=["route{relay=1}"]))
    assert res.module.attrs.get("relay") is True
    write_binary(res.module, str(out))
    p = load_binary(str(out))
    bis = [bi for bi in range(len(p.bundles)) if int(p.bundles[bi]["flags"]) & BUNDLE_RELAY]
    if not bis:
        pytest.skip("the route cut every input of this fixture: no relay to test")
    return p, bis[0]


def test_relayed_flat_bundle_runs_strict_with_its_routes_and_loads(relayed) -> None:  # type: ignore[no-untyped-def]
    p, bi = relayed
    res = simulate(p, random_inputs(p, 0), strict=True)
    assert sum(s.get("forwarded_pes", 0) for s in res.kernel_stats.values()) == 0
    ki = int(p.bundles[bi]["sink"])
    mine = p.routes[(p.routes["bundle"] == NO_BUNDLE) & (p.routes["lane"] == ki)]
    assert np.isin(mine["color"], relay_colors(p.target)).any()
    lanes = p.routes["color"][p.routes["bundle"] != NO_BUNDLE]
    assert not np.isin(lanes, relay_colors(p.target)).any()  # no bundle on the relay's colors


def _grid(p: Program, ki: int, px: int, py: int) -> tuple[int, int]:
    k = p.kernels[ki]
    return (k.rect.x + py, k.rect.y + px) if k.rotated else (k.rect.x + px, k.rect.y + py)


def test_a_relay_hop_not_routed_is_an_error_at_a_pe_beyond_it(relayed) -> None:  # type: ignore[no-untyped-def]
    """A PE's route no longer sending its stream North (and the PE above no
    longer taking it in): a PE above that read a piece through it fails,
    named with the hop's column and rows."""
    p, bi = relayed
    rl = program_relays(p)[bi]
    pl = rl.plan
    ki = int(p.bundles[bi]["sink"])
    k = p.kernels[ki]
    # a piece relayed North: its lane's last row below a row that takes it
    rows = np.arange(pl.need.shape[0])[:, None]
    up = pl.need & (rows > pl.last[None, :])
    q = int(np.flatnonzero(up.any(axis=0))[0])
    x, y = int(pl.col[q]), int(pl.last[q])
    cols = relay_colors(p.target)
    col = cols[int(mesh_color(x, y))]
    gx, gy = _grid(p, ki, x, y)
    nx, ny = _grid(p, ki, x, y + 1)
    r = p.routes.copy()
    at = (r["x"] == gx) & (r["y"] == gy) & (r["color"] == col) & (r["bundle"] == NO_BUNDLE)
    north = np.uint8(PORT_BITS["E"] if k.rotated else PORT_BITS["N"])
    assert at.sum() == 1 and r["tx"][at][0] & north
    r["tx"][at] &= ~north
    gone = (r["x"] == nx) & (r["y"] == ny) & (r["color"] == col) & (r["bundle"] == NO_BUNDLE)
    assert gone.sum() == 1
    value = p.edges[int(p.bundles[bi]["edge"])].value
    with pytest.raises(SimError, match=rf"%{value}.*the relay along PE column \d+ between PE "
                       r"rows \d+ and \d+ is not routed"):
        simulate(replace(p, routes=r[~gone]), random_inputs(p, 0))


def test_a_lane_missing_at_a_pe_starves_the_rows_it_feeds(relayed) -> None:  # type: ignore[no-untyped-def]
    """A flat lane no longer delivered into the core of the PE that relays
    a piece of it (the lane still passes on along the row): the PEs that
    read that piece through the relay fail, naming the lane and the PE."""
    p, bi = relayed
    pl = program_relays(p)[bi].plan
    ki = int(p.bundles[bi]["sink"])
    q = int(np.flatnonzero(pl.need.any(axis=0))[0])
    lane, x = int(pl.lane[q]), int(pl.col[q])
    rows = np.flatnonzero(pl.need[:, q])
    y = int(pl.last[q]) if rows[0] > pl.last[q] else int(pl.first[q])
    gx, gy = _grid(p, ki, x, y)
    r = p.routes.copy()
    at = (r["bundle"] == bi) & (r["x"] == gx) & (r["y"] == gy)
    assert at.sum() == 1
    r["tx"][at] &= ~np.uint8(PORT_BITS["RAMP"])  # its core takes it no more
    with pytest.raises(SimError, match=rf"lane {lane} never reached PE offset \({x}, {y}\)"
                       ) as ex:
        simulate(replace(p, routes=r), random_inputs(p, 0))
    assert re.search(r"PE \(\d+, \d+\)", str(ex.value))


def test_loader_checks_the_relay_records(relayed) -> None:  # type: ignore[no-untyped-def]
    p, bi = relayed
    check_records(p)
    q = replace(p, info={**p.info, "relays": {**p.info["relays"], str(bi): 3}})
    with pytest.raises(FormatError, match=rf"bundle #{bi} .*META relays must give the 5 colors"):
        check_records(q)
    q = replace(p, info={**p.info, "relays": {}})
    with pytest.raises(FormatError, match=rf"bundle #{bi} .*META relays must give"):
        check_records(q)
    s = p.slices.copy()
    s["stop"][int(p.bundles[bi]["slice0"]), 0] = 1 << 20  # a row box past its value
    with pytest.raises(FormatError, match=rf"bundle #{bi} .*box of PE row 0 lies outside"):
        check_records(replace(p, slices=s))
    b = p.bundles.copy()
    b["flags"][bi] &= ~np.uint8(BUNDLE_RELAY)
    with pytest.raises(FormatError, match=rf"META relays names bundle #{bi}"):
        check_records(replace(p, bundles=b))


def test_relay_off_by_default_compiles_as_before(tmp_path: pathlib.Path) -> None:
    """Without route{relay=1} the same fixture keeps its flat bundle unrelayed:
    no relay flag, record or route, no module attr, the relays' colors left
    to the bundles (only a halo cut takes colors from their pool), and its
    sink's PEs counted as reading forwarded elements (`--strict` fails)."""
    from wsec.passes.route_bundles import Request, exchange_colors

    res = compile_model(str(MISC), CompileOptions())
    assert "relay" not in res.module.attrs
    out = tmp_path / "plain.bin"
    write_binary(res.module, str(out))
    p = load_binary(str(out))
    assert not any(int(f) & BUNDLE_RELAY for f in p.bundles["flags"])
    assert not p.info.get("relays")
    assert not program_relays(p)
    got = simulate(p, random_inputs(p, 0))
    assert sum(s.get("forwarded_pes", 0) for s in got.kernel_stats.values()) > 0
    with pytest.raises(SimError):
        simulate(p, random_inputs(p, 0), strict=True)
    # the color pool: a cut request routed flat reserves the relays' colors only with
    # the relay on
    flat = Request.__new__(Request)
    flat.__dict__.update(cut_rows=4, cut_pitch=0, halo=None, relay=False)
    assert exchange_colors([flat]) == 0
    flat.relay = True
    assert exchange_colors([flat]) == RELAY_COLORS
    halo = Request.__new__(Request)
    halo.__dict__.update(cut_rows=4, cut_pitch=1, halo=True, relay=False)
    assert exchange_colors([halo]) == HALO_COLORS


def test_relay_attr_round_trips_the_ir_text() -> None:
    """The route's `relay` attr prints and parses back, and verifies."""
    from wsec.ir.verify import verify_module

    res = compile_model(str(MISC), CompileOptions(pass_options=["route{relay=1}"]))
    back = parse_module(print_module(res.module))
    assert back.attrs.get("relay") is True
    verify_module(back)
