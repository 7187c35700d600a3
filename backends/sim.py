"""The device simulator: run a `Program` on the simulated wafer.

Why a simulator and not the reference interpreter: the binary is what a
wafer would run, so the proof that wsec compiled the model must use nothing
else. Host inputs enter through the I/O map, the routers (sim_routes) carry
every value along its traced routes, kernels run in order with each PE
computing its shard (sim_exec), and the host receives the outputs. Weight
streaming binaries run phase after phase (sim_weight_stream).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from wsec.ir.graph import HOST

from .format import Program
from .sim_base import KernelIO, RunResult, SimError, Trace, edge_name, value_array_type
from .sim_exec import KernelRun, run_kernel
from .sim_inbox import deliveries
from .sim_pe import SramImages
from .sim_routes import Routers, configure
from .sim_weight_stream import simulate_stream

__all__ = ["RunResult", "Routers", "SimError", "Trace", "configure", "random_inputs",
           "simulate"]


# ops an integer input passes through unchanged in value on its way to a
# Gather's indices (its shape or type may change)
_INDEX_KEEPS = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity",
                          "Expand"})


def index_bounds(p: Program) -> dict[str, int]:
    """Per integer model input that indexes a table (a Gather's or
    GatherElements' indices, directly or through value-preserving ops), the
    fewest entries along the axis it indexes: random indices must stay below
    it (a BERT's token type ids index a 2-row table)."""
    ops = [op for k in p.kernels for op in k.body]
    alias = {name: name for name in p.info["inputs"]}
    grew = True
    while grew:  # bodies are per kernel: follow the chains until nothing new
        grew = False
        for op in ops:
            if op["op"] in _INDEX_KEEPS and op["inputs"] and op["inputs"][0] in alias:
                for o in op["outputs"]:
                    if o not in alias:
                        alias[o] = alias[op["inputs"][0]]
                        grew = True
    bounds: dict[str, int] = {}
    for op in ops:
        if op["op"] in ("Gather", "GatherElements") and len(op["inputs"]) > 1 \
                and op["inputs"][1] in alias and op["inputs"][0] in p.info["values"]:
            shape, _ = value_array_type(p, op["inputs"][0])
            axis = int(op["attrs"].get("axis", 0))
            if shape and -len(shape) <= axis < len(shape):
                src = alias[op["inputs"][1]]
                bounds[src] = min(bounds.get(src, shape[axis]), shape[axis])
    return bounds


def random_inputs(p: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded input of the right shape and type for every model input.
    Integers that index a table are 0..3, kept below its size (index_bounds);
    the others are 0 or 1, what a mask holds: a BERT's attention mask of 3
    scales its additive bias past the float range and every output is NaN,
    which a --check then passes on NaN = NaN alone."""
    rng = np.random.default_rng(seed)
    bounds = index_bounds(p)
    out = {}
    for name in p.info["inputs"]:
        shape, dt = value_array_type(p, name)
        if np.issubdtype(dt, np.floating):
            out[name] = rng.standard_normal(shape).astype(dt)
        elif dt == np.bool_:
            out[name] = rng.integers(0, 2, shape).astype(dt)
        else:
            out[name] = rng.integers(0, max(1, min(4, bounds.get(name, 2))), shape).astype(dt)
    return out


def _host_slices(p: Program, ei: int, sink: str, x: np.ndarray) -> np.ndarray:
    """What the West-edge PEs of the I/O map inject towards `sink`: the
    flattened input cut into the lanes' ranges, reassembled in range order
    at the sink (the ranges must cover the input exactly once)."""
    e = p.edges[ei]
    ios = [d for d in p.info.get("host_io", {}).get("inputs", [])
           if d["value"] == e.value and d.get("sink", sink) == sink]
    if any("boxes" in d for d in ios):
        return _host_boxes(p, ei, sink, x, ios)
    flat = x.reshape(-1)
    ranges = [r for d in ios for r in d.get("ranges", [[0, flat.size]])]
    covered = sorted((int(a), int(b)) for a, b in ranges)
    pos = 0
    for a, b in covered:
        if a != pos:
            break
        pos = b
    if pos != flat.size or not covered:
        raise SimError(f"host input %{e.value} to '{sink}': the I/O map's ranges {ranges} do "
                       f"not cover its {flat.size} elements exactly once")
    return np.concatenate([flat[a:b] for a, b in covered]).reshape(x.shape)


def _box_text(b: np.ndarray) -> str:
    return "[" + ", ".join(f"{int(a)}:{int(c)}" for a, c in zip(b[0], b[1], strict=True)) + "]"


def _host_boxes(p: Program, ei: int, sink: str, x: np.ndarray, ios: list[dict]
                ) -> np.ndarray:
    """A cut host input: the I/O map sends each lane of the bundle to `sink`
    its box, which must be the box the bundle's slice record says the lane
    carries (what the sink's PEs are checked against); the boxes together
    must cover the input. Returns the input as the lanes deliver it."""
    e = p.edges[ei]
    bis = [bi for bi, b in enumerate(p.bundles) if int(b["edge"]) == ei
           and int(b["sink"]) >= 0 and p.kernels[int(b["sink"])].name == sink]
    boxes = p.lane_boxes(bis[0]) if len(bis) == 1 and len(ios) == 1 else None
    sent = np.asarray(ios[0].get("boxes", []), np.int64)
    if boxes is None or sent.shape != boxes.shape:
        raise SimError(f"host input %{e.value} to '{sink}': the I/O map sends "
                       f"{len(sent)} boxes, its bundle's lanes carry "
                       f"{'no cut' if boxes is None else f'{len(boxes)} boxes'}")
    if (sent != boxes).any():
        i = int(np.flatnonzero((sent != boxes).reshape(len(sent), -1).any(axis=1))[0])
        raise SimError(f"host input %{e.value} to '{sink}': the I/O map sends lane {i} the "
                       f"box {_box_text(sent[i])}, its bundle's lane {i} carries "
                       f"{_box_text(boxes[i])}")
    shape = x.shape
    x = x.reshape(p.lane_view(bis[0]))  # the boxes are over the bundle's view of the value
    got = np.zeros(x.shape, bool)
    out = np.zeros_like(x)
    for lo, hi in zip(sent[:, 0], sent[:, 1], strict=True):
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        out[box] = x[box]
        got[box] = True
    if got.size and not got.all():
        at = [int(v) for v in np.unravel_index(int(np.argmin(got)), x.shape)]
        at = [int(v) for v in np.unravel_index(int(np.ravel_multi_index(at, x.shape)), shape)]
        raise SimError(f"host input %{e.value} to '{sink}': no lane of the I/O map carries "
                       f"element {at}")
    return out.reshape(shape)


def simulate(p: Program, inputs: Mapping[str, np.ndarray], keep: bool = False,
             strict: bool = False) -> RunResult:
    """Execute the program on `inputs`: host inputs enter through the I/O map,
    kernels run in order (each PE its shard, see sim_exec), values move only
    along traced routes; returns the outputs the host receives (`keep`: and
    every kernel's inputs and outputs, for `wsec run --per-kernel`).
    `strict`: a PE reading an element of a flat bundle that neither its lane
    nor its rows' relay (wsec.ir.relay, with route{relay=1}) brought is a
    SimError naming the PE, the element and the lane carrying it (as on a
    cut bundle), instead of a count (`forwarded_pes`)."""
    from .loader_meta import check_sim_memory

    check_sim_memory(p)  # the declared sizes against free memory, before allocating
    if "stream" in str(p.info.get("mode", "")):  # weight streaming: phase after phase
        return simulate_stream(p, inputs, keep, strict)
    mem = SramImages(p)
    fab, traces = configure(p)
    lanes = deliveries(p, strict)
    missing = [n for n in p.info["inputs"] if n not in inputs]
    if missing:
        raise SimError(f"no value given for model input(s) {', '.join(missing)}")
    # inbox[kernel][value] = array delivered to that kernel's entry PE
    inbox: dict[str, dict[str, np.ndarray]] = {k.name: {} for k in p.kernels}
    host_out: dict[str, np.ndarray] = {}
    by_src: dict[str, list[int]] = {}
    for i, e in enumerate(p.edges):
        by_src.setdefault(e.src, []).append(i)

    def deliver(ei: int, sink: str, arr: np.ndarray) -> None:
        e = p.edges[ei]
        if sink == HOST:
            host_out[e.value] = arr
        else:
            inbox[sink][e.value] = arr

    def send(ei: int, arr: np.ndarray) -> None:
        for sink in traces[ei].sinks:
            deliver(ei, sink, arr)

    for ei in by_src.get(HOST, []):
        e = p.edges[ei]
        shape, dt = value_array_type(p, e.value)
        x = np.asarray(inputs[e.value])
        if x.shape != shape:
            raise SimError(f"input %{e.value} has shape {list(x.shape)} but the binary expects "
                           f"{list(shape)}")
        for sink in traces[ei].sinks:
            deliver(ei, sink, _host_slices(p, ei, sink, x.astype(dt, copy=False)))
    seconds: dict[str, float] = {}
    stats: dict[str, dict[str, int]] = {}
    kept: dict[str, KernelIO] = {}
    for ki, k in enumerate(p.kernels):
        t0 = time.perf_counter()
        run: KernelRun = run_kernel(mem, ki, inbox[k.name], lanes[ki])
        seconds[k.name] = time.perf_counter() - t0
        stats[k.name] = run.stats
        if keep:
            kept[k.name] = KernelIO(dict(inbox[k.name]), dict(run.values), dict(run.owner))
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
    return RunResult(outs, traces, seconds, stats, kept)
