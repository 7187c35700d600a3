"""`wsec run --stats`: what the simulator measured, next to the compiler's estimates.

Why: the compiler's cost figures are estimates made before there was a
binary; the simulator can count. Per kernel it reports the links its output
edges really use (from the traced routes), the wavelets each carries per
sample (the value's elements in the device dtype, 32-bit wavelets) and the
load of the busiest of those links summed over every edge sharing it; and
the cycles per sample the kind's model gives for the binary's knobs, next to
the estimate stored in the binary and, for the sharded kinds, the compute
cycles implied by the busiest PE's multiply-accumulates.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from wsec.ir.fabric import LINK_PLANES, Fabric
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import box_elements, lane_slices
from wsec.ir.metrics import RouteArrays, link_loads, merge_shared
from wsec.ir.types import DTYPES

from .format import Program, type_shape
from .inspect import program_routes
from .sim_base import RunResult


def edge_wavelets(p: Program, ei: int) -> int:
    """Wavelets one sample of edge `ei` puts on the busiest lane of its
    bundles, counted from the lane's elements in the device dtype (not the
    binary's bytes)."""
    t = p.target
    n = int(np.prod(type_shape(p.info["values"][p.edges[ei].value]), dtype=np.int64))
    mine = [bi for bi, b in enumerate(p.bundles) if int(b["edge"]) == ei]
    lanes = [int(p.bundles[bi]["lanes"]) for bi in mine] or [1]
    sl = lane_slices(max(n, 1), min(lanes))
    top = int((sl[:, 1] - sl[:, 0]).max())
    for bi in mine:
        boxes = p.lane_boxes(bi)
        if boxes is not None:  # a cut lane carries its box, halo included
            top = max(top, int(box_elements(boxes).max()))
    return int(Fabric.of(t).wavelets(top * DTYPES[t.dtype].itemsize))


def _link_dict(p: Program, ra: RouteArrays, count: bool = False
               ) -> dict[tuple[int, int, str], int]:
    """Nonzero link loads of `ra` as {(x, y, port): wavelets (or lanes)}."""
    load = link_loads(ra, Fabric.of(p.target), count=count)
    y, x, d = np.nonzero(load)
    return {(int(a), int(b), LINK_PLANES[int(c)]): int(load[b, a, c])
            for a, b, c in zip(x.tolist(), y.tolist(), d.tolist(), strict=True)}


def measured_link_loads(p: Program, res: RunResult,
                        every: RouteArrays | None = None) -> dict[tuple[int, int, str], int]:
    """Wavelets per sample on every used link (x, y, port), from the route
    entries the simulator's traces followed, each lane carrying its slice
    (the measurement of wsec.ir.metrics.link_loads). `every`: the program's
    route arrays, when the caller has them."""
    if not res.traces:
        return {}
    every = every if every is not None else program_routes(p, templates=True, merge=False)
    return _link_dict(p, merge_shared(every.take(np.concatenate([tr.indices
                                                                 for tr in res.traces]))))


def kernel_stats(p: Program, res: RunResult) -> list[dict[str, object]]:
    every = program_routes(p, templates=True, merge=False)  # once: traces index into it
    load = measured_link_loads(p, res, every)
    t = p.target
    rows = []
    for k in p.kernels:
        outs = [merge_shared(every.take(tr.indices)) for tr in res.traces
                if p.edges[tr.edge].src == k.name]
        links = {lk for ra in outs for lk in _link_dict(p, ra, count=True)}
        wav = max((edge_wavelets(p, tr.edge) for tr in res.traces
                   if p.edges[tr.edge].src == k.name), default=0)
        # the compiler's estimate for the same lane: its share of the edge's bytes
        est = max((int(Fabric.of(t).wavelets(int(ra.bytes.max()))) for ra in outs if ra.size),
                  default=0)
        busiest = max((load.get(lk, 0) for lk in links), default=0)  # an empty box: 0
        st = res.kernel_stats.get(k.name, {})
        macs = int(st.get("pe_macs_max", 0))
        rows.append({
            "kernel": k.name, "kind": k.kind, "pes": k.rect.area,
            "links": len(links), "wavelets_per_link": wav, "est_wavelets_per_link": est,
            "busiest_link_load": busiest,
            "cycles_binary": int(k.cost.get("cycles", 0)),
            "cycles_kind": int(KINDS[k.kind].cycles(k.dims, k.knobs, t)),
            "pe_compute_cycles": -(-macs // t.lanes) if macs else 0,
            "sim_seconds": res.kernel_seconds.get(k.name, 0.0),
        })
    return rows


def format_stats(p: Program, res: RunResult) -> str:
    rows = kernel_stats(p, res)
    load = measured_link_loads(p, res)
    hdr = (f"{'kernel':<8}{'kind':<12}{'PEs':>8}{'links':>8}{'wav/link':>10}{'est':>10}"
           f"{'busiest':>10}{'cyc(kind)':>11}{'cyc(bin)':>10}{'PE MAC cyc':>12}{'sim s':>8}")
    lines = ["per kernel (per sample): links its output routes use, wavelets each carries "
             "(measured vs the compiler's estimate), load of the busiest of them; cycles from "
             "the kind's model vs the binary's estimate, and the busiest PE's MACs / simd",
             hdr, "-" * len(hdr)]
    for r in rows:
        lines.append(f"{r['kernel']:<8}{r['kind']:<12}{r['pes']:>8}{r['links']:>8}"
                     f"{r['wavelets_per_link']:>10}{r['est_wavelets_per_link']:>10}"
                     f"{r['busiest_link_load']:>10}{r['cycles_kind']:>11}{r['cycles_binary']:>10}"
                     f"{r['pe_compute_cycles'] or '-':>12}{r['sim_seconds']:>8.3f}")
    if load:
        # ties as wsec.ir.metrics.busiest_link: the lowest y, then x, then plane
        (x, y, port), top = min(load.items(), key=lambda kv: (
            -kv[1], kv[0][1], kv[0][0], LINK_PLANES.index(kv[0][2])))
        attrs = p.info.get("attrs", {})
        lines.append(f"busiest link: ({x},{y}) {port}, {top} wavelets/sample measured; the "
                     f"compiler estimated {attrs.get('max_link_load', '?')} at "
                     f"{attrs.get('max_link', '?')}")
        lines.append(f"wavelet-hops per sample: {sum(load.values())} over {len(load)} links")
    lines += _move_lines(res)
    whole = sum(int(st.get("whole_tensor_ops", 0)) for st in res.kernel_stats.values())
    ops = sum(len(k.body) for k in p.kernels)
    lines.append(f"whole_tensor_ops {whole}: {ops - whole} of {ops} body ops of "
                 f"{len(p.kernels)} kernels ran per PE")
    fwd = _forwarded(res)
    if fwd:
        pes = sum(int(res.kernel_stats[n].get("pes", 0)) for n in fwd)
        if "stream" in str(p.info.get("mode", "")):  # phases: their rows hold what moved in
            got, flat = ("what their rows held", "their row did not hold (flat shares: "
                         "forwarded inside the phase's rectangle)")
        else:
            got, flat = ("what their lanes delivered", "their lane did not bring (flat lanes: "
                         "forwarded inside the rectangle, not routed)")
        lines.append(f"inboxes checked in {len(fwd)} kernels ({pes} PEs): "
                     f"{sum(1 for v in fwd.values() if not v)} read only {got}; "
                     f"{sum(fwd.values())} PEs of {sum(1 for v in fwd.values() if v)} "
                     f"read elements {flat}")
        kinds = {k.name: k.kind for k in p.kernels}
        per: dict[str, list[int]] = {}
        for n, v in fwd.items():
            row = per.setdefault(kinds.get(n, "?"), [0, 0, 0])
            row[0] += 1
            row[1] += not v
            row[2] += v
        only = "their rows' holdings" if got.startswith("what their rows") else "their lanes"
        lines.append(f"  by kind (kernels checked / read only {only} / PEs reading "
                     "forwarded elements): " + ", ".join(
                         f"{kind} {a}/{b}/{c}" for kind, (a, b, c) in sorted(per.items())))
    return "\n".join(lines)


class Proof(NamedTuple):
    """How much of a run the inbox checks proved (`wsec run`'s inboxes line)."""

    mode: str  # "pipeline": PEs against their lanes; "stream": against their rows' holdings
    kernels: int
    checked: int  # kernels whose PEs' reads were checked against their inboxes
    proven: int  # of those, kernels whose every PE read only what it received
    forwarded_pes: int  # PEs reading elements their lane (row) did not bring (hold)
    forwarding: int  # kernels with such PEs


def _forwarded(res: RunResult) -> dict[str, int]:
    return {n: int(st["forwarded_pes"]) for n, st in res.kernel_stats.items()
            if "forwarded_pes" in st}


def proof_figures(p: Program, res: RunResult) -> Proof:
    """The run's inbox checks summed over its kernels (sim_inbox.check_windows)."""
    fwd = _forwarded(res)
    return Proof("stream" if "stream" in str(p.info.get("mode", "")) else "pipeline",
                 len(p.kernels), len(fwd), sum(1 for v in fwd.values() if not v),
                 sum(fwd.values()), sum(1 for v in fwd.values() if v))


def proof_line(pr: Proof) -> str:
    """One line saying what the run proved: the kernels whose PEs read only
    what their routes delivered (stream: what their rows held), and the PEs
    reading elements forwarded inside their rectangle, which no route
    configures (`wsec run` refuses them; --count-forwarded counts them)."""
    got = "their rows held" if pr.mode == "stream" else "their routes delivered"
    unchecked = (f"; {pr.kernels - pr.checked} not checked"
                 if pr.checked < pr.kernels else "")
    if not pr.forwarded_pes:
        return f"inboxes: {pr.proven} of {pr.kernels} kernels read only what {got}{unchecked}"
    of = f"{pr.forwarding} kernel{'s' if pr.forwarding != 1 else ''}"
    return (f"inboxes: {pr.proven} of {pr.kernels} kernels read only what {got}{unchecked}; "
            f"{pr.forwarded_pes:,} PEs of {of} read elements forwarded inside their "
            f"rectangle, which no route configures (without --count-forwarded, "
            f"an error)")


def move_figures(res: RunResult) -> tuple[int, int, int, int]:
    """A stream-mode run's moves between phases, summed over its phases:
    (the schedule's estimate, what delivering the rows' holdings takes at
    the least (sim_stream_pe.held_wavelets), phases it underestimates,
    phases whose holdings take longer than the phase's cycles)."""
    st = [s for s in res.kernel_stats.values() if "held_move" in s]
    est = sum(int(s["phase_move"]) for s in st)
    held = sum(int(s["held_move"]) for s in st)
    under = sum(1 for s in st if int(s["held_move"]) > int(s["phase_move"]))
    over = sum(1 for s in st if int(s["held_move"]) > int(s["phase_cycles"]))
    return est, held, under, over


def _move_lines(res: RunResult) -> list[str]:
    if not any("held_move" in s for s in res.kernel_stats.values()):
        return []
    est, held, under, over = move_figures(res)
    return [f"moves between phases: the schedule estimates {est} cycles/sample; delivering "
            f"the rows' holdings takes at least {held} (busiest PE, one wavelet per cycle): "
            f"{under} phases move more than estimated, {over} longer than the phase's cycles"]
