"""Relays (wsec.ir.relay): a flat bundle's sink rows pass each other the boxes
their lanes did not bring; the simulator proves every read from what arrived.

A user depends on: a binary whose flat bundle's rows read outside their
lanes still runs strict and matches onnxruntime (the relay's routes are in
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
from wsec.backends.lanes import check_records, program_relays
from wsec.backends.loader import load_binary
from wsec.backends.sim import random_inputs, simulate
from wsec.backends.sim_base import SimError
from wsec.driver import CompileOptions, compile_model
from wsec.ir.fabric import PORT_BITS
from wsec.ir.halo import halo_colors
from wsec.ir.lanes import lane_slices
from wsec.ir.relay import count_below, entries, plan, reached

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


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


def test_plan_sends_each_element_once_per_carrier_and_rows_without_lanes_get_all() -> None:
    boxes, shape = _rows()
    own = np.array([0, 1, 2, 3, -1, -1])  # 4 flat lanes on the first 4 rows
    p = plan(boxes, shape, lane_slices(72, 4), own)
    assert p is not None
    assert p.need[4].all() and p.need[5].all()  # no lane of their own: every lane relayed
    assert not p.need[0, 0] and p.need[0, 1:].all()
    # a carrier never sends more than the value
    assert (p.sends <= 72).all() and (p.sends > 0).all()
    # the routes: one per PE and color, three colors for any height
    ent, whose = entries(3, 6, 0, p.sends > 0, (10, 11, 12))
    key = ent[:, 0] * 1000 + ent[:, 1] * 10 + ent[:, 2] - 10
    assert np.unique(key).size == key.size
    assert set(ent[:, 2].tolist()) == {10, 11, 12}
    # everything reaches every row where every hop is routed; a hop cut starves the rows
    # beyond it of the lanes above it
    ok = reached(p, own, np.ones(5, bool), np.ones(5, bool))
    assert (ok | ~p.need).all()
    hop = np.ones(5, bool)
    hop[3] = False  # row 3's stream no longer reaches row 4
    ok = reached(p, own, hop, np.ones(5, bool))
    assert not ok[4, 3] and not ok[5, 0] and ok[3, 0]


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Program, int]:
    """A fixture whose resize input stays flat (its rows read outside their
    lanes), compiled: its program and the relayed bundle."""
    out = tmp_path_factory.mktemp("relay") / "misc.bin"
    res = compile_model(str(FIXTURES / "cnn" / "misc_o11.onnx"), CompileOptions())
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
    assert np.isin(mine["color"], halo_colors(p.target)).any()
    lanes = p.routes["color"][p.routes["bundle"] != NO_BUNDLE]
    assert not np.isin(lanes, halo_colors(p.target)).any()  # no bundle on the relay's colors


def _hop(p: Program, bi: int) -> tuple[np.ndarray, int]:
    """A copy of the routes with one relay hop cut consistently (the sender
    no longer sends North, the next carrier's entry gone) and the row that
    lost it: the first row whose stream another row below it needs."""
    rl = program_relays(p)[bi]
    ki = int(p.bundles[bi]["sink"])
    k = p.kernels[ki]
    cols = halo_colors(p.target)
    y = next(int(y) for y in range(rl.plan.sends.size - 1)
             if rl.plan.need[y + 1:, rl.own[:y + 1][rl.own[:y + 1] >= 0]].any())
    r = p.routes.copy()
    c = rl.carrier
    gx, gy = (k.rect.x + y, k.rect.y + c) if k.rotated else (k.rect.x + c, k.rect.y + y)
    nx, ny = (gx + 1, gy) if k.rotated else (gx, gy + 1)
    col = cols[y % 3]
    at = (r["x"] == gx) & (r["y"] == gy) & (r["color"] == col) & (r["bundle"] == NO_BUNDLE)
    north = np.uint8(PORT_BITS["E"] if k.rotated else PORT_BITS["N"])
    r["tx"][at] &= ~north
    gone = (r["x"] == nx) & (r["y"] == ny) & (r["color"] == col) & (r["bundle"] == NO_BUNDLE)
    assert at.sum() == 1 and gone.sum() == 1
    return r[~gone], y


def test_a_relay_hop_not_routed_is_an_error_at_a_pe_below_it(relayed) -> None:  # type: ignore[no-untyped-def]
    p, bi = relayed
    r, y = _hop(p, bi)
    value = p.edges[int(p.bundles[bi]["edge"])].value
    with pytest.raises(SimError, match=rf"%{value}.*relay between PE rows \d+ and \d+ is not "
                       "routed"):
        simulate(replace(p, routes=r), random_inputs(p, 0), strict=True)


def test_a_lane_missing_at_its_carrier_starves_the_rows_it_feeds(relayed) -> None:  # type: ignore[no-untyped-def]
    p, bi = relayed
    rl = program_relays(p)[bi]
    lane = int(np.flatnonzero(rl.plan.need.any(axis=0))[0])
    row = int(rl.plan.first[lane])
    k = p.kernels[int(p.bundles[bi]["sink"])]
    gx, gy = ((k.rect.x + row, k.rect.y + rl.carrier) if k.rotated
              else (k.rect.x + rl.carrier, k.rect.y + row))
    r = p.routes.copy()
    at = (r["bundle"] == bi) & (r["x"] == gx) & (r["y"] == gy)
    assert at.sum() == 1
    r["tx"][at] &= ~np.uint8(PORT_BITS["RAMP"])  # its core at the carrier takes it no more
    with pytest.raises(SimError, match=rf"lane {lane} never reached the carrier of PE row "
                       rf"{row}") as ex:
        simulate(replace(p, routes=r), random_inputs(p, 0), strict=True)
    assert re.search(r"PE \(\d+, \d+\)", str(ex.value))


def test_loader_checks_the_relay_records(relayed) -> None:  # type: ignore[no-untyped-def]
    p, bi = relayed
    check_records(p)
    q = replace(p, info={**p.info, "relays": {**p.info["relays"], str(bi): 10_000}})
    with pytest.raises(FormatError, match=rf"bundle #{bi} .*META relays must give its carrier"):
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
