"""PE inboxes: which lane of which bundle delivered into which PE's core.

Why: the simulator is a proof, so a PE may compute only from what reached
it. The routers (sim_routes) check every lane from its source to its sink;
this module turns the route table into, per kernel and delivered value, the
lane each PE's core received (`Delivery.lane_at`, offsets of the kernel's
unrotated rectangle; a bundle's lanes never share a PE, so a PE receives at
most one lane of it) and the slice that lane carries (`lane_slices`).

A kernel's executor (sim_exec) declares the window of each input a PE
holds (a conv row group's input rows plus its halo, a matmul row's
reduction block, ...) and reads only inside it; reading outside raises
`SimError` naming the PE, the element and the lane that carried it.
Elements a PE holds but whose lane landed on another PE of the kernel were
forwarded inside the rectangle (the kind's input distribution); the
simulator counts those PEs (`forwarded_pes`), since the routers configure
only the row multicast (`reach`) and the reduction chains, not that
distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wsec.ir.fabric import PORT_BITS
from wsec.ir.lanes import lane_slices

from .format import NO_BUNDLE, Program, type_shape
from .sim_base import SimError, edge_name

_RAMP = PORT_BITS["RAMP"]


@dataclass
class Delivery:
    """One value's bundle into one kernel."""

    value: str
    edge: int
    bundle: int
    numel: int
    slices: np.ndarray  # (lanes, 2) [start, stop) of the flattened value
    lane_at: np.ndarray  # [uh, uw]: lane delivered into the PE's core, -1 for none

    @property
    def lanes(self) -> int:
        return int(self.slices.shape[0])

    def lane_of(self, flat: np.ndarray | int) -> np.ndarray:
        """The lane carrying each flat element."""
        return np.searchsorted(self.slices[:, 1], np.asarray(flat), side="right")

    def landing_pes(self) -> int:
        return int((self.lane_at >= 0).sum())


def unrotated_offsets(p: Program, ki: int, x: np.ndarray, y: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """(px, py) offsets inside kernel ki's unrotated rectangle of grid PEs."""
    k = p.kernels[ki]
    if k.rotated:
        return y - k.rect.y, x - k.rect.x
    return x - k.rect.x, y - k.rect.y


def grid_pe(p: Program, ki: int, px: int, py: int) -> tuple[int, int]:
    k = p.kernels[ki]
    return (k.rect.x + py, k.rect.y + px) if k.rotated else (k.rect.x + px, k.rect.y + py)


def deliveries(p: Program) -> list[dict[str, Delivery]]:
    """Per kernel (program order): value -> its Delivery, from the route
    table (vectorised over the entries of each bundle)."""
    out: list[dict[str, Delivery]] = [{} for _ in p.kernels]
    r = p.routes
    if not len(p.bundles) or not r.size:
        return out
    core = (r["tx"].astype(np.int64) & _RAMP) != 0
    lanes = r["bundle"] != NO_BUNDLE
    sel = np.flatnonzero(core & lanes)
    by_bundle = r["bundle"][sel].astype(np.int64)
    order = np.argsort(by_bundle, kind="stable")
    sel, by_bundle = sel[order], by_bundle[order]
    cuts = np.searchsorted(by_bundle, np.arange(len(p.bundles) + 1))
    for bi, b in enumerate(p.bundles):
        ki = int(b["sink"])
        if ki < 0:
            continue
        k = p.kernels[ki]
        e = p.edges[int(b["edge"])]
        mine = sel[cuts[bi]:cuts[bi + 1]]
        uw, uh = k.unrotated_shape
        px, py = unrotated_offsets(p, ki, r["x"][mine].astype(np.int64),
                                   r["y"][mine].astype(np.int64))
        inside = (px >= 0) & (px < uw) & (py >= 0) & (py < uh)
        if not inside.all():  # sim_routes reports misrouted lanes first; never silent
            i = int(np.flatnonzero(~inside)[0])
            raise SimError(f"lane {int(r['lane'][mine[i]])} of {edge_name(p, int(b['edge']))} "
                           f"is delivered outside kernel '{k.name}'")
        at = np.full((uh, uw), -1, np.int32)
        at[py, px] = r["lane"][mine].astype(np.int32)
        numel = int(np.prod(type_shape(p.info["values"][e.value]), dtype=np.int64))
        out[ki][e.value] = Delivery(e.value, int(b["edge"]), bi, numel,
                                    lane_slices(numel, int(b["lanes"])), at)
    return out


def unravel(flat: int, shape: tuple[int, ...]) -> list[int]:
    return [int(v) for v in np.unravel_index(int(flat), shape)] if shape else []


def read_error(p: Program, ki: int, px: int, py: int, value: str, flat: int,
               held: str, d: Delivery | None) -> SimError:
    """The error of PE (px, py) of kernel ki reading element `flat` of
    `value` outside the window it holds (`held` describes that window)."""
    k = p.kernels[ki]
    shape = tuple(type_shape(p.info["values"][value])) if value in p.info["values"] else ()
    x, y = grid_pe(p, ki, px, py)
    how = (f"lane {int(d.lane_of(flat))} of {edge_name(p, d.edge)} carries it"
           if d is not None else "no lane carries it to the kernel")
    return SimError(f"kernel '{k.name}' ({k.kind}): PE ({x}, {y}) (offset ({px}, {py})) reads "
                    f"%{value}{unravel(flat, shape)}, which never arrived there ({how}; the PE "
                    f"holds {held})")
