"""The simulated routers: follow every lane of every bundle, and every
kernel's internal route template, through the routers' configuration.

A value reaches a sink only if every lane of its bundle to that sink runs,
link by link on the bundle's color, from its source (a PE of the producing
kernel receiving from its core, or a West-edge PE receiving from the host)
to PEs of the sink (sending into their cores), or off the East edge to the
host; the lanes' slices must then cover the value exactly once (a cut
bundle's boxes at least once: its overlaps are declared halo). Every way a
route can fail — a hop to a PE with no route on that color or one belonging
to another lane, a port the next PE does not receive from, leaving the grid,
a loop, a stray route no source reaches, delivery into the wrong core, a
slice gap or overlap — is a `SimError` naming the PE, the color and the
edge. All checks are vectorised over the route table (no loop per PE):
each entry's successors are looked up by key, and chains are collapsed to
their roots by pointer doubling. A lane is a path, except that a pitched
lane's landing PE and spine PEs send two ways (on along the sink's side and
along their row): a tree, whose every entry still has one predecessor.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.fabric import DIRS, HOST_IN_PORT, HOST_OUT_PORT, OPPOSITE, PORT_BITS, STEP, Fabric
from wsec.ir.graph import HOST
from wsec.ir.lanes import LaneError, lane_slices
from wsec.ir.relay import relay_colors

from .format import BUNDLE_TO_HOST, NO_BUNDLE, Program, mask_ports, type_shape
from .lanes import conflicting, cover
from .sim_base import SimError, Trace, edge_name

_RAMP = PORT_BITS["RAMP"]


class Routers:
    """The routers of the grid, configured from the binary's route table."""

    def __init__(self, p: Program) -> None:
        self.p = p
        self.fabric = Fabric.of(p.target)
        self.W, self.H = p.target.width, p.target.height
        r = p.routes
        self.key = (r["color"].astype(np.int64) * self.H + r["y"]) * self.W + r["x"]
        # a record is found by its PE, color and bundle: lanes of sibling
        # bundles carrying the same slice in from the same port share a PE
        # and color (one multicast route), each bundle keeping its own record
        self.nb = len(p.bundles) + 1
        self.mine = np.where(r["bundle"] == NO_BUNDLE, 0, r["bundle"].astype(np.int64) + 1)
        order = np.argsort(self.key * self.nb + self.mine, kind="stable")
        dup = np.flatnonzero(np.diff(self.key[order]) == 0)
        dup = dup[conflicting(p, order[dup], order[dup + 1])]
        if dup.size:
            a, b = int(order[dup[0]]), int(order[dup[0] + 1])
            raise SimError(f"two routes on color {int(r['color'][a])} at PE ({int(r['x'][a])}, "
                           f"{int(r['y'][a])}): {self._who(a)} and {self._who(b)}")
        self.order = order
        self.sorted_key = self.key[order]
        self.sorted_full = self.sorted_key * self.nb + self.mine[order]
        self.owner = np.full((self.H, self.W), -1, np.int32)
        for ki, k in enumerate(p.kernels):
            rc = k.rect
            self.owner[rc.y:rc.y1, rc.x:rc.x1] = ki

    def _who(self, i: int) -> str:
        r = self.p.routes[i]
        if int(r["bundle"]) == NO_BUNDLE:
            return f"the route template of kernel '{self.p.kernels[int(r['lane'])].name}'"
        return f"lane {int(r['lane'])} of {edge_name(self.p, int(r['edge']))}"

    def _at(self, i: int) -> str:
        r = self.p.routes[i]
        return f"PE ({int(r['x'])}, {int(r['y'])}) on color {int(r['color'])}"

    def _find(self, keys: np.ndarray, mine: np.ndarray | None = None) -> np.ndarray:
        """Route-table index of each key (PE and color), -1 where no route
        exists; with `mine`, the record of that bundle (+1; 0: a template)
        where the PE has one, else any record there."""
        pos = np.searchsorted(self.sorted_key, keys)
        pos = np.minimum(pos, max(self.sorted_key.size - 1, 0))
        hit = (self.sorted_key.size > 0) & (self.sorted_key[pos] == keys)
        found = np.where(hit, self.order[pos], -1)
        if mine is None or not self.sorted_full.size:
            return found
        full = keys * self.nb + mine
        pos = np.minimum(np.searchsorted(self.sorted_full, full), self.sorted_full.size - 1)
        own = self.sorted_full[pos] == full
        return np.where(own, self.order[pos], found)

    def trace(self) -> list[Trace]:
        """Check every route and return, per edge, where its value arrives."""
        p, r = self.p, self.p.routes
        n = r.size
        x, y = r["x"].astype(np.int64), r["y"].astype(np.int64)
        tx, rx = r["tx"].astype(np.int64), r["rx"].astype(np.int64)
        owner_id = np.where(r["bundle"] == NO_BUNDLE, -1 - r["lane"].astype(np.int64),
                            r["bundle"].astype(np.int64))  # bundle, or -1 - kernel
        lane = np.where(r["bundle"] == NO_BUNDLE, 0, r["lane"].astype(np.int64))
        # entries that may send two ways: a pitched lane's landing PE and spine
        # (along the sink's side and along the row), a halo carrier multicasting its
        # row's halo East and West from its core (wsec.ir.halo.entries), a relay's PE
        # sending its stream to its neighbours (wsec.ir.relay.entries); every other
        # entry is a path
        pitched = np.zeros(len(p.bundles) + 1, bool)
        if len(p.bundles):
            pitched[:-1] = p.bundles["pitch"].astype(np.int64) > 1
        bidx = np.where(r["bundle"] == NO_BUNDLE, len(p.bundles), r["bundle"].astype(np.int64))
        spine = pitched[bidx] & ((tx & _RAMP) != 0)
        spine |= ((r["bundle"] == NO_BUNDLE) & ((rx & _RAMP) != 0)
                  & np.isin(r["color"].astype(np.int64), relay_colors(p.target)))
        two_way = np.zeros(n, bool)
        srcs: list[np.ndarray] = [np.zeros(0, np.int64)]
        dsts: list[np.ndarray] = [np.zeros(0, np.int64)]
        for d in DIRS:
            sel = np.flatnonzero((tx & PORT_BITS[d]) != 0)
            if not sel.size:
                continue
            dx, dy = STEP[d]
            nx, ny = x[sel] + dx, y[sel] + dy
            inside = (nx >= 0) & (nx < self.W) & (ny >= 0) & (ny < self.H)
            off = sel[~inside]
            for i in off.tolist():  # only the host ports may lead off the grid
                if not (d == HOST_OUT_PORT and self.fabric.is_host_output(int(x[i]), (d,))
                        and int(r["bundle"][i]) != NO_BUNDLE
                        and int(p.bundles[int(r["bundle"][i])]["flags"]) & BUNDLE_TO_HOST):
                    raise SimError(f"route leaves the grid: {self._who(i)} is sent {d} from "
                                   f"{self._at(i)}, off the {self.W}x{self.H} grid (only lanes "
                                   "to the host may leave, East)")
            sel = sel[inside]
            keys = (r["color"][sel].astype(np.int64) * self.H + ny[inside]) * self.W + nx[inside]
            j = self._find(keys, self.mine[sel])
            bad = np.flatnonzero(j < 0)
            if bad.size:
                i = int(sel[bad[0]])
                raise SimError(f"broken route: {self._who(i)} is sent {d} from {self._at(i)} to "
                               f"PE ({int(nx[inside][bad[0]])}, {int(ny[inside][bad[0]])}), which "
                               f"has no route on that color")
            wrong = np.flatnonzero((owner_id[j] != owner_id[sel]) | (lane[j] != lane[sel]))
            if wrong.size:
                i, k = int(sel[wrong[0]]), int(j[wrong[0]])
                raise SimError(f"route collision: {self._who(i)} is sent {d} from {self._at(i)} "
                               f"into {self._at(k)}, whose route belongs to {self._who(k)}")
            deaf = np.flatnonzero((rx[j] & PORT_BITS[OPPOSITE[d]]) == 0)
            if deaf.size:
                i, k = int(sel[deaf[0]]), int(j[deaf[0]])
                raise SimError(f"broken route: {self._who(i)} arrives at {self._at(k)} from "
                               f"{OPPOSITE[d]}, but the PE receives only from "
                               f"{'+'.join(mask_ports(int(rx[k]))) or 'nothing'}")
            if (two_way[sel] & ~spine[sel]).any():
                i = int(sel[np.flatnonzero(two_way[sel] & ~spine[sel])[0]])
                raise SimError(f"{self._who(i)} is sent two ways from {self._at(i)}: a lane "
                               "is a path (but where a pitched lane's spine turns off)")
            two_way[sel] = True
            srcs.append(sel)
            dsts.append(j)
        self._check_chains(np.concatenate(srcs), np.concatenate(dsts), rx, owner_id)
        return self._deliveries(tx, x, y)

    def _check_chains(self, src: np.ndarray, dst: np.ndarray, rx: np.ndarray,
                      owner_id: np.ndarray) -> None:
        """Each lane is one tree from one source (a path, but for the spine of
        a pitched lane): every entry is reached by at most one predecessor
        (entry src[i] sends into entry dst[i]), and following predecessors
        ends at an entry receiving from a core or the host."""
        n = rx.size
        pred = np.full(n, -1, np.int64)
        counts = np.bincount(dst, minlength=n)
        if (counts > 1).any():
            k = int(np.argmax(counts > 1))
            raise SimError(f"two routes feed {self._at(k)} of {self._who(k)}: a lane is a path")
        pred[dst] = src
        x = self.p.routes["x"].astype(np.int64)
        host = (rx & PORT_BITS[HOST_IN_PORT]) != 0
        source = ((rx & _RAMP) != 0) | (host & (x == self.fabric.host_input_x))
        root = np.where(pred < 0, np.arange(n), pred)
        for _ in range(int(np.ceil(np.log2(max(n, 2)))) + 1):
            root = root[root]
        loop = np.flatnonzero(pred[root] >= 0)
        if loop.size:
            i = int(loop[0])
            raise SimError(f"route loop: {self._who(i)} runs in a circle through {self._at(i)}")
        orphan = np.flatnonzero((pred < 0) & ~source)
        if orphan.size:
            i = int(orphan[0])
            raise SimError(f"broken route: {self._at(i)} is configured for {self._who(i)}, but "
                           f"no route leads to it and it receives from no core")
        self.root = root

    def _deliveries(self, tx: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[Trace]:
        """Per edge: the sinks every lane of a bundle reached, with the slices
        checked to cover the value."""
        p, r = self.p, self.p.routes
        traces = [Trace(ei) for ei in range(len(p.edges))]
        lanes = r["bundle"] != NO_BUNDLE
        core = (tx & _RAMP) != 0
        host_out = (tx & PORT_BITS[HOST_OUT_PORT]) != 0
        landed: dict[tuple[int, str], list[int]] = {}
        for bi, b in enumerate(p.bundles):
            ei, e = int(b["edge"]), p.edges[int(b["edge"])]
            sink = HOST if int(b["sink"]) < 0 else p.kernels[int(b["sink"])].name
            mine = np.flatnonzero(lanes & (r["bundle"] == bi))
            what = f"{edge_name(p, ei)} to '{sink}' (color {int(b['color'])})"
            if sink == HOST:
                ends = mine[host_out[mine] & (x[mine] == self.fabric.host_output_x)]
            else:
                ends = mine[core[mine]]
                ki = int(b["sink"])
                wrong = ends[self.owner[y[ends], x[ends]] != ki]
                if wrong.size:
                    i = int(wrong[0])
                    k = int(self.owner[y[i], x[i]])
                    raise SimError(f"misrouted: lane {int(r['lane'][i])} of {what} is delivered "
                                   f"to the core of PE ({int(x[i])}, {int(y[i])}), which belongs "
                                   f"to {repr(p.kernels[k].name) if k >= 0 else 'no kernel'}")
            got = np.unique(r["lane"][ends].astype(np.int64))
            want = np.arange(int(b["lanes"]))
            missing = np.setdiff1d(want, got)
            if missing.size:
                m0 = int(missing[0])
                at = mine[r["lane"][mine] == m0]
                pe = (f"PE ({int(x[at[-1]])}, {int(y[at[-1]])})" if at.size
                      else "no PE (the lane has no route)")
                raise SimError(f"broken route: lane {m0} of {what} never reaches "
                               f"{'the host' if sink == HOST else repr(sink)}; it ends at {pe}")
            first = ends[np.argmin(r["lane"][ends])]
            traces[ei].sinks.setdefault(sink, (int(x[first]), int(y[first])))
            traces[ei].entries.append(mine)
            landed.setdefault((ei, sink), []).append(bi)
        for (ei, sink), bis in landed.items():
            self._check_cover(ei, sink, bis)
        for tr in traces:
            e = p.edges[tr.edge]
            for d in dict.fromkeys(e.dsts):
                if d not in tr.sinks:
                    raise SimError(f"broken route: {edge_name(p, tr.edge)} has no lanes to "
                                   f"{'the host' if d == HOST else repr(d)}")
        return traces

    def _check_cover(self, ei: int, sink: str, bundles: list[int]) -> None:
        """The lanes' slices of `bundles` (edge ei to sink) cover the value
        exactly once; cut boxes cover it (overlaps: halo) or what the sink
        reads of it (backends.lanes.cover)."""
        p = self.p
        e = p.edges[ei]
        shape = tuple(type_shape(p.info["values"][e.value]))
        numel = int(np.prod(shape, dtype=np.int64))
        cut = [p.lane_boxes(b) for b in bundles]
        if any(c is not None for c in cut):  # boxes: a declared cover (halo on two lanes)
            if len(bundles) > 1 and any(c is None for c in cut):  # (several cut: ribbons)
                raise SimError(f"lane slices of {edge_name(p, ei)} to '{sink}' overlap: "
                               f"{len(bundles)} bundles carry it, one of them cut")
            try:  # or, where they leave a gap, every element the sink's rows read
                cover(p, bundles[0], p.lane_view(bundles[0]), np.concatenate(cut))  # type: ignore[arg-type]
            except LaneError as err:
                raise SimError(f"lane slices of {edge_name(p, ei)} to '{sink}': {err}") from None
            return
        spans = np.concatenate([lane_slices(numel, int(p.bundles[b]["lanes"])) for b in bundles])
        spans = spans[np.argsort(spans[:, 0], kind="stable")]
        pos = 0
        for a, b in spans.tolist():
            if a != pos:
                kind = "gap" if a > pos else "overlap"
                raise SimError(f"lane slices of {edge_name(p, ei)} to '{sink}' leave a {kind} at "
                               f"element {min(a, pos)} of %{e.value} ({numel} elements)")
            pos = b
        if pos != numel:
            raise SimError(f"lane slices of {edge_name(p, ei)} to '{sink}' stop at element "
                           f"{pos} of %{e.value} ({numel} elements)")


def configure(p: Program) -> tuple[Routers, list[Trace]]:
    """Configure the routers and trace every edge (raises SimError)."""
    fab = Routers(p)
    return fab, fab.trace()


__all__ = ["Routers", "configure"]
