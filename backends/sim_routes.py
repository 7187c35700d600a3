"""The simulated routers: configure them from a binary's route records and
trace every dataflow edge hop by hop on its color.

A kernel receives a value only if the trace of that value's edge reaches
its entry PE with RAMP in tx; the host gets a model output only if the trace
leaves an East-edge PE of the I/O map through its host port. Every way a
route can fail (broken hop, leaving the grid, a loop, two routes on one
color at a PE, a sink never reached) is a `SimError` naming the PE, the
color and the edge. Ports, neighbours and the host I/O rule come from the
fabric API (wsec.ir.fabric).
"""

from __future__ import annotations

import numpy as np
from wsec.ir.fabric import HOST_IN_PORT, OPPOSITE, PORT_BITS, RAMP, Fabric
from wsec.ir.graph import HOST

from .format import Program, mask_ports
from .sim_base import SimError, Trace, edge_name


class Routers:
    """The routers of the grid, configured from the binary's route records."""

    def __init__(self, p: Program) -> None:
        self.p = p
        self.fabric = Fabric.of(p.target)
        self.W, self.H = p.target.width, p.target.height
        self.table: dict[tuple[int, int, int], int] = {}  # (x, y, color) -> record index
        r = p.routes
        xs, ys, cs = (r[f].astype(np.int64).tolist() for f in ("x", "y", "color"))
        for i, key in enumerate(zip(xs, ys, cs, strict=True)):
            j = self.table.setdefault(key, i)
            if j != i:
                raise SimError(f"two routes on color {key[2]} at PE ({key[0]}, {key[1]}): "
                               f"{self._edge_of(j)} and {self._edge_of(i)}")
        # PE -> kernel name (for RAMP deliveries)
        self.owner = np.full((self.H, self.W), -1, np.int32)
        for ki, k in enumerate(p.kernels):
            rc = k.rect
            self.owner[rc.y:rc.y1, rc.x:rc.x1] = ki

    def _edge_of(self, rec: int) -> str:
        return edge_name(self.p, int(self.p.routes["edge"][rec]))

    def _record(self, x: int, y: int, color: int) -> np.void | None:
        i = self.table.get((x, y, color))
        return None if i is None else self.p.routes[i]

    def kernel_at(self, x: int, y: int) -> str | None:
        ki = int(self.owner[y, x])
        return None if ki < 0 else self.p.kernels[ki].name

    def sources(self, ei: int) -> list[tuple[int, int]]:
        """Where edge `ei` enters the fabric: the host_io PEs of a model input
        (rx W), else the PEs of the source kernel whose route on the edge's
        color receives from RAMP."""
        p, e = self.p, self.p.edges[ei]
        if e.src == HOST:
            ios = [d for d in p.info.get("host_io", {}).get("inputs", []) if d["value"] == e.value]
            pes = [tuple(pe) for d in ios for pe in d["pes"]]
            if not pes:
                raise SimError(f"{edge_name(p, ei)}: the host I/O map has no entry PE for "
                               f"model input %{e.value}")
            return pes  # type: ignore[return-value]
        rc = p.kernels[p.kernel_index(e.src)].rect
        sel = p.routes[(p.routes["edge"] == ei) & ((p.routes["rx"] & PORT_BITS[RAMP]) != 0)]
        pes = [(int(s["x"]), int(s["y"])) for s in sel if rc.contains(int(s["x"]), int(s["y"]))]
        if not pes:
            raise SimError(f"{edge_name(p, ei)} on color {e.color}: no PE of kernel '{e.src}' "
                           f"[{rc.x}, {rc.y}, {rc.w}, {rc.h}] sends it (no route record of the "
                           f"edge with rx RAMP inside the kernel)")
        return pes

    def trace(self, ei: int) -> Trace:
        """Follow edge `ei` hop by hop from its source PE(s) on its color."""
        p, e = self.p, self.p.edges[ei]
        what = edge_name(p, ei)
        if e.color is None:
            raise SimError(f"{what} has no color: it was never routed")
        color = int(e.color)
        tr = Trace(ei, color)
        host_out = {tuple(pe) for d in p.info.get("host_io", {}).get("outputs", [])
                    if d["value"] == e.value for pe in d["pes"]}
        seen: set[tuple[int, int]] = set()
        stack: list[tuple[int, int, str]] = []
        for x, y in self.sources(ei):
            stack.append((x, y, HOST_IN_PORT if e.src == HOST else RAMP))
        while stack:
            x, y, came = stack.pop()
            at = f"PE ({x}, {y}) on color {color}"
            rec = self._record(x, y, color)
            if rec is None:
                raise SimError(f"broken route: {what} reaches {at} (from {came}), which has no "
                               f"route on that color")
            if int(rec["edge"]) != ei:
                raise SimError(f"route collision at {at}: {what} arrives there from {came}, "
                               f"but the PE's route on that color belongs to "
                               f"{edge_name(p, int(rec['edge']))}")
            rx = mask_ports(int(rec["rx"]))
            if came not in rx:
                raise SimError(f"broken route: {what} arrives at {at} from {came}, but the PE "
                               f"receives only from {'+'.join(rx) or 'nothing'}")
            if (x, y) in seen:
                raise SimError(f"route loop: {what} reaches {at} a second time")
            seen.add((x, y))
            for port in mask_ports(int(rec["tx"])):
                if port == RAMP:
                    k = self.kernel_at(x, y)
                    if k is None or k not in e.dsts:
                        raise SimError(f"misrouted: {what} is delivered to the core of {at}, "
                                       f"which belongs to {repr(k) if k else 'no kernel'}, "
                                       f"not a sink of the edge")
                    tr.sinks.setdefault(k, (x, y))
                    continue
                tr.links.append((x, y, port))
                nxt = self.fabric.neighbour(x, y, port)
                if nxt is not None:
                    stack.append((*nxt, OPPOSITE[port]))
                elif self.fabric.is_host_output(x, (port,)) and HOST in e.dsts \
                        and (x, y) in host_out:
                    tr.sinks.setdefault(HOST, (x, y))
                else:
                    raise SimError(f"route leaves the grid: {what} is sent {port} from {at}, "
                                   f"off the {self.W}x{self.H} grid (only the I/O map's "
                                   f"East-edge PEs may send to the host)")
        tr.pes = len(seen)
        stray = [(int(r["x"]), int(r["y"])) for r in p.routes[p.routes["edge"] == ei]
                 if (int(r["x"]), int(r["y"])) not in seen]
        if stray:
            x, y = stray[0]
            raise SimError(f"broken route: PE ({x}, {y}) on color {color} is configured for "
                           f"{what}, but the trace from the source never reaches it "
                           f"({len(stray)} such PEs)")
        for d in dict.fromkeys(e.dsts):
            if d not in tr.sinks:
                where = "the host (an East-edge PE of the I/O map)" if d == HOST else \
                    f"kernel '{d}' {_rect_text(p, d)}"
                raise SimError(f"broken route: {what} on color {color} never reaches {where}; "
                               f"the trace covers {len(seen)} PEs from "
                               f"{', '.join(map(str, self.sources(ei)))}")
        return tr


def _rect_text(p: Program, name: str) -> str:
    r = p.kernels[p.kernel_index(name)].rect
    return f"[{r.x}, {r.y}, {r.w}, {r.h}]"


def configure(p: Program) -> tuple[Routers, list[Trace]]:
    """Configure the routers and trace every edge (raises SimError)."""
    fab = Routers(p)
    return fab, [fab.trace(i) for i in range(len(p.edges))]
