"""The device simulator: configure a fabric from a `Program` and run it.

Why a simulator and not the reference interpreter: the binary is what a
wafer would run, so the proof that wsec compiled the model must use nothing
else. This module is the fabric half: it builds the router table (one
(rx, tx) configuration per PE and color, as the ROUTES section holds) and
traces every dataflow edge hop by hop from its source PE on the edge's
color. A kernel receives a value only if the trace of that value's edge
reaches its entry PE with RAMP in tx; the host gets a model output only if
the trace leaves an East-edge PE of the I/O map through its E port. Every
way a route can fail (broken hop, leaving the grid, a loop, two routes on
one color at a PE, a sink never reached) is a `SimError` naming the PE,
the color and the edge. The compute half, per kernel and per PE, is
`sim_exec`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from wsec.ir.graph import HOST
from wsec.ir.types import DTYPES

from .format import PORT_BITS, EdgeInfo, Program, mask_ports, type_dtype, type_shape

_STEP = {"N": (0, 1), "E": (1, 0), "S": (0, -1), "W": (-1, 0)}
_OPPOSITE = {"N": "S", "S": "N", "E": "W", "W": "E"}


class SimError(Exception):
    """The binary cannot execute as configured (the message names where)."""


def edge_name(p: Program, ei: int) -> str:
    e = p.edges[ei]
    return f"edge #{ei} %{e.value} ({e.src} -> {', '.join(e.dsts)})"


@dataclass
class Trace:
    """Where one edge's wavelets go: the sinks reached and the links used.

    `sinks` maps a kernel name (or HOST) to the entry PE where the value
    arrived; `links` lists (x, y, port) for every transmitting port along
    the tree, the host port included."""

    edge: int
    color: int
    sinks: dict[str, tuple[int, int]] = field(default_factory=dict)
    links: list[tuple[int, int, str]] = field(default_factory=list)
    pes: int = 0


class Fabric:
    """The routers of the grid, configured from the binary's route records."""

    def __init__(self, p: Program) -> None:
        self.p = p
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
        sel = p.routes[(p.routes["edge"] == ei) & ((p.routes["rx"] & PORT_BITS["RAMP"]) != 0)]
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
            stack.append((x, y, "W" if e.src == HOST else "RAMP"))
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
                if port == "RAMP":
                    k = self.kernel_at(x, y)
                    if k is None or k not in e.dsts:
                        raise SimError(f"misrouted: {what} is delivered to the core of {at}, "
                                       f"which belongs to {repr(k) if k else 'no kernel'}, "
                                       f"not a sink of the edge")
                    tr.sinks.setdefault(k, (x, y))
                    continue
                tr.links.append((x, y, port))
                dx, dy = _STEP[port]
                nx, ny = x + dx, y + dy
                if 0 <= nx < self.W and 0 <= ny < self.H:
                    stack.append((nx, ny, _OPPOSITE[port]))
                elif port == "E" and HOST in e.dsts and (x, y) in host_out:
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


def value_array_type(p: Program, name: str) -> tuple[tuple[int, ...], np.dtype]:
    text = p.info["values"][name]
    return tuple(type_shape(text)), DTYPES[type_dtype(text)]


@dataclass
class RunResult:
    outputs: dict[str, np.ndarray]
    traces: list[Trace]
    kernel_seconds: dict[str, float]
    kernel_stats: dict[str, dict[str, int]]


def configure(p: Program) -> tuple[Fabric, list[Trace]]:
    """Configure the routers and trace every edge (raises SimError)."""
    fab = Fabric(p)
    return fab, [fab.trace(i) for i in range(len(p.edges))]


def random_inputs(p: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded input of the right shape and type for every model input."""
    rng = np.random.default_rng(seed)
    out = {}
    for name in p.info["inputs"]:
        shape, dt = value_array_type(p, name)
        if np.issubdtype(dt, np.floating):
            out[name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            out[name] = rng.integers(0, 2, shape).astype(dt)
        else:
            out[name] = rng.integers(0, 4, shape).astype(dt)
    return out


def _host_slices(p: Program, e: EdgeInfo, x: np.ndarray) -> np.ndarray:
    """What the West-edge PEs of the I/O map inject: the flattened input cut
    into the map's ranges, reassembled in range order at the sink."""
    ios = [d for d in p.info.get("host_io", {}).get("inputs", []) if d["value"] == e.value]
    flat = x.reshape(-1)
    ranges = [r for d in ios for r in d.get("ranges", [[0, flat.size]])]
    covered = sorted((int(a), int(b)) for a, b in ranges)
    pos = 0
    for a, b in covered:
        if a != pos:
            break
        pos = b
    if pos != flat.size:
        raise SimError(f"host input %{e.value}: the I/O map's ranges {ranges} do not cover its "
                       f"{flat.size} elements")
    return np.concatenate([flat[a:b] for a, b in covered]).reshape(x.shape)


def simulate(p: Program, inputs: Mapping[str, np.ndarray]) -> RunResult:
    """Execute the program on `inputs`: host inputs enter through the I/O map,
    kernels run in order (each PE its shard, see sim_exec), values move only
    along traced routes; returns the outputs the host receives."""
    if "stream" in str(p.info.get("mode", "")):  # weight streaming: phase after phase
        from .sim_stream import simulate_stream
        return simulate_stream(p, inputs)
    from .sim_exec import KernelRun, SramImages, run_kernel

    mem = SramImages(p)
    fab, traces = configure(p)
    missing = [n for n in p.info["inputs"] if n not in inputs]
    if missing:
        raise SimError(f"no value given for model input(s) {', '.join(missing)}")
    # inbox[kernel][value] = array delivered to that kernel's entry PE
    inbox: dict[str, dict[str, np.ndarray]] = {k.name: {} for k in p.kernels}
    host_out: dict[str, np.ndarray] = {}
    by_src: dict[str, list[int]] = {}
    for i, e in enumerate(p.edges):
        by_src.setdefault(e.src, []).append(i)

    def send(ei: int, arr: np.ndarray) -> None:
        e = p.edges[ei]
        for sink in traces[ei].sinks:
            if sink == HOST:
                host_out[e.value] = arr
            else:
                inbox[sink][e.value] = arr

    for ei in by_src.get(HOST, []):
        e = p.edges[ei]
        shape, dt = value_array_type(p, e.value)
        x = np.asarray(inputs[e.value])
        if x.shape != shape:
            raise SimError(f"input %{e.value} has shape {list(x.shape)} but the binary expects "
                           f"{list(shape)}")
        send(ei, _host_slices(p, e, x.astype(dt, copy=False)))
    seconds: dict[str, float] = {}
    stats: dict[str, dict[str, int]] = {}
    for ki, k in enumerate(p.kernels):
        t0 = time.perf_counter()
        run: KernelRun = run_kernel(mem, ki, inbox[k.name])
        seconds[k.name] = time.perf_counter() - t0
        stats[k.name] = run.stats
        for ei in by_src.get(k.name, []):
            v = p.edges[ei].value
            if v not in run.values:
                raise SimError(f"{edge_name(p, ei)}: kernel '{k.name}' does not compute %{v}")
            send(ei, run.values[v])
        inbox[k.name] = {}  # buffers are freed once the kernel ran
    outs = {}
    for name in p.info["outputs"]:
        if name not in host_out:
            raise SimError(f"model output %{name} never reaches the host: no routed edge "
                           f"carries it off the grid")
        shape, dt = value_array_type(p, name)
        outs[name] = np.asarray(host_out[name]).astype(dt, copy=False).reshape(shape)
    return RunResult(outs, traces, seconds, stats)
