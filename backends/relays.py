"""Relays from a binary's records, and a bundle record as the IR's Bundle.

Why a module of its own: the simulator's inboxes (sim_inbox) need the
relays the loader checks (wsec.ir.relay, BUNDLE_RELAY), and backends.lanes
reaches the simulator's modules through sink_reads; here both read the
records without that cycle.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import HOST, Bundle
from wsec.ir.lanes import check_view, endpoints, expand, lane_slices
from wsec.ir.relay import RELAY_COLORS, Relay, lane_grid, plan

from .format import (
    BUNDLE_CUT,
    BUNDLE_FROM_HOST,
    BUNDLE_HALO,
    BUNDLE_OWNERS,
    BUNDLE_RELAY,
    BUNDLE_TO_HOST,
    FormatError,
    Program,
    type_shape,
)


def to_bundle(p: Program, bi: int) -> Bundle:
    """Bundle record `bi` as the IR's Bundle."""
    r = p.bundles[bi]
    a, n = int(r["point0"]), int(r["npoints"])
    pts = p.points[a:a + n]
    sink = HOST if int(r["sink"]) < 0 else p.kernels[int(r["sink"])].name
    return Bundle(sink, int(r["color"]), int(r["lanes"]), (int(r["axis"][0]), int(r["axis"][1])),
                  tuple((int(q["x"]), int(q["y"])) for q in pts), int(r["reach"]),
                  _cut_of(int(r["flags"])), int(r["pitch"]),
                  int(r["src_pitch"]))


def _cut_of(flags: int) -> str:
    """A bundle record's cut: "owners", "rows" or none."""
    if not flags & BUNDLE_CUT:
        return ""
    return "owners" if flags & BUNDLE_OWNERS else "halo" if flags & BUNDLE_HALO else "rows"


def program_relays(p: Program) -> dict[int, Relay]:
    """Per bundle with BUNDLE_RELAY its relay as the records describe it:
    the rows' boxes (Program.relay_boxes), the lanes each PE receives as the
    bundle's geometry lands them and the plan (wsec.ir.relay.plan);
    computed once per program. A FormatError names the bundle whose
    records disagree."""
    got = p.__dict__.get("_relays")
    if got is not None:
        return got
    out: dict[int, Relay] = {}
    flags = p.bundles["flags"].astype(np.int64) if len(p.bundles) else np.zeros(0, np.int64)
    for bi in np.flatnonzero(flags & BUNDLE_RELAY).tolist():
        if lands_inside(p, bi):  # else the loader names the lane landing outside its sink
            out[bi] = _relay_of(p, bi)
    p.__dict__["_relays"] = out
    return out


def lands_inside(p: Program, bi: int) -> bool:
    """Whether every lane of bundle bi lands inside its sink kernel."""
    r = p.bundles[bi]
    if int(r["sink"]) < 0:
        return False
    k = p.kernels[int(r["sink"])]
    _, land = endpoints(to_bundle(p, bi))
    x, y = land[:, 0], land[:, 1]
    return bool(((x >= k.rect.x) & (x < k.rect.x + k.rect.w) & (y >= k.rect.y)
                 & (y < k.rect.y + k.rect.h)).all())


def _relay_of(p: Program, bi: int) -> Relay:
    r = p.bundles[bi]
    e = p.edges[int(r["edge"])]
    what = f"bundle #{bi} (edge %{e.value})"
    flags = int(r["flags"])
    ki = int(r["sink"])
    if flags & (BUNDLE_CUT | BUNDLE_TO_HOST) or ki < 0:
        raise FormatError(f"{what} relays its rows' boxes but is not a flat bundle into a "
                          "kernel")
    k = p.kernels[ki]
    uw, uh = k.unrotated_shape
    scheme = p.info.get("relays", {}).get(str(bi))
    if scheme != RELAY_COLORS:
        raise FormatError(f"{what} into kernel '{k.name}' relays its rows' boxes; META relays "
                          f"must give the {RELAY_COLORS} colors of its relay, got {scheme!r}")
    a = int(r["slice0"])
    if a + uh > len(p.slices):
        raise FormatError(f"{what} into kernel '{k.name}': its relay's {uh} row boxes from "
                          f"slice {a} lie outside the {len(p.slices)} stored")
    value = tuple(type_shape(p.info["values"][e.value])) or (1,)  # a scalar: one element
    view = p.lane_view(bi) or (1,)
    try:
        check_view(value, view)
    except ValueError as err:
        raise FormatError(f"{what} relays boxes over a view of %{e.value}: {err}") from None
    boxes = p.relay_boxes(bi)
    assert boxes is not None
    bad = ((boxes[:, 0] > boxes[:, 1]) | (boxes[:, 1] > np.asarray(view))).any(axis=1)
    if bad.any():
        raise FormatError(f"{what} into kernel '{k.name}': its relay's box of PE row "
                          f"{int(np.flatnonzero(bad)[0])} lies outside %{e.value} {list(view)}")
    ex = expand(to_bundle(p, bi), bool(flags & BUNDLE_FROM_HOST), False)
    at = lane_grid(ex.x, ex.y, ex.tx, ex.lane, (k.rect.x, k.rect.y, k.rect.w, k.rect.h),
                   bool(k.rotated))
    pl = plan(boxes, view, lane_slices(int(np.prod(view, dtype=np.int64)), int(r["lanes"])),
              at)
    if pl is None:
        raise FormatError(f"{what} into kernel '{k.name}': a lane lands on no PE, or on PEs of "
                          "a column that are no one run of rows: no relay deals it")
    return Relay(boxes, view, pl)


def relay_sinks(p: Program) -> dict[int, np.ndarray]:
    """Per kernel a relayed bundle runs into: [uh, uw] the elements each PE
    sends, summed over its relayed bundles: one relay per kernel
    (wsec.ir.relay)."""
    out: dict[int, np.ndarray] = {}
    for bi, rl in program_relays(p).items():
        ki = int(p.bundles[bi]["sink"])
        out[ki] = out.get(ki, 0) + rl.plan.stream
    return out
