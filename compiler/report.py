"""The placement report: a short terminal summary and a JSON document.

Everything is derived from the compiled Module (kernel costs, rectangles,
routes, SRAM maps), so the report agrees with what the binary carries.
Schema: docs/report.md.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Module
from wsec.ir.lanes import endpoints
from wsec.ir.metrics import (
    busiest_link,
    colors_per_pe,
    edge_links,
    lane_bytes,
    link_loads,
    placed_wirelength,
    route_arrays,
    routed_wirelength,
)
from wsec.ir.target import Target
from wsec.ir.training import is_training

SCHEMA = "wsec-report/1"


def _sram_of(k: Any) -> int:
    if k.sram:
        return max(r.offset + r.size for r in k.sram)
    return int((k.cost or {}).get("sram", 0))


def build_report(module: Module, target: Target,
                 timings: list[tuple[str, float]] | None = None) -> dict[str, Any]:
    kernels = list(module.kernels())
    rows = []
    for k in kernels:
        cost = k.cost or {}
        rows.append({
            "name": k.name, "kind": k.kind, "origin": list(k.origin), "knobs": dict(k.knobs or {}),
            "rect": [k.rect.x, k.rect.y, k.rect.w, k.rect.h] if k.rect else None,
            "rotated": bool(k.rotated), "pes": k.rect.area if k.rect else 0,
            "cycles_per_sample": int(cost.get("cycles", 0)), "sram_bytes": _sram_of(k),
        })
    bottleneck = max(rows, key=lambda r: r["cycles_per_sample"], default=None)
    delta_t = bottleneck["cycles_per_sample"] if bottleneck else 0
    pes_used = sum(r["pes"] for r in rows)

    fabric = Fabric.of(target)
    ra = route_arrays(module)
    links_per_edge = edge_links(ra, len(module.edges), fabric)
    placed_wl = placed_wirelength(module, fabric)
    routed_wl = routed_wirelength(ra, fabric)
    hpwl_wl = _lane_lower_bound(module)
    edge_rows = [{"value": e.value, "src": e.src, "dsts": list(e.dsts),
                  "bytes_per_sample": e.bytes_per_sample,
                  "bundles": [{"sink": b.sink, "color": b.color, "lanes": b.lanes}
                              for b in e.bundles or ()],
                  "links": int(links_per_edge[i])} for i, e in enumerate(module.edges)]
    top = busiest_link(link_loads(ra, fabric))
    max_link = (tuple(top.as_list()), top.wavelets) if top else None
    max_sram = max(rows, key=lambda r: r["sram_bytes"], default=None)
    colors_used = len({b.color for e in module.edges for b in e.bundles or ()})
    summary = {
        "kernels": len(rows),
        "pes_used": pes_used,
        "pes_total": target.pes,
        "utilisation": pes_used / target.pes if target.pes else 0.0,
        "cycles_per_sample": delta_t,
        "bound_cycles_per_sample": module.attrs.get("bound"),
        # throughput: the kernels' bottleneck or the busiest link, whichever is slower
        # realised: a sample takes the slowest kernel or the busiest link or RAMP, whichever
        # is slower (one wavelet per link per cycle)
        "realised_cycles_per_sample": max(delta_t, max_link[1] if max_link else 0),
        "samples_per_second": (target.clock_hz / max(delta_t, max_link[1] if max_link else 0)
                               if delta_t else None),
        "bottleneck": ({"kernel": bottleneck["name"], "kind": bottleneck["kind"],
                        "origin": bottleneck["origin"][:3]} if bottleneck else None),
        "wirelength_placed": round(placed_wl, 1),
        "wirelength_routed": routed_wl,
        "detour_ratio": (routed_wl / hpwl_wl) if hpwl_wl else None,
        "edges": len(module.edges),
        "colors_used": colors_used,
        "colors_max_per_pe": colors_per_pe(ra),
        # cuts routed as several bundles whose lanes widen at corners of their own
        "ribbon_requests": int((module.attrs.get("ribbons") or [0, 0])[0]),
        "ribbon_bundles": int((module.attrs.get("ribbons") or [0, 0])[1]),
        "max_link_wavelets_per_sample": max_link[1] if max_link else 0,
        "max_link": list(max_link[0]) if max_link else None,
        "max_link_utilisation": (max_link[1] / delta_t) if (max_link and delta_t) else 0.0,
        # a link moves one wavelet per cycle: the busiest link bounds throughput too
        "link_bound_cycles_per_sample": max_link[1] if max_link else 0,
        "throughput_bound": ("link" if max_link and max_link[1] > delta_t else "compute"),
        "max_sram_bytes": max_sram["sram_bytes"] if max_sram else 0,
        "max_sram_kernel": max_sram["name"] if max_sram else None,
        "sram_bytes_per_pe": target.sram_bytes,
    }
    doc = {
        "schema": SCHEMA,
        "model": module.name,
        "source": module.attrs.get("source"),
        "model_hash": module.attrs.get("model_hash"),
        "mode": module.attrs.get("mode", "pipeline"),
        "mode_reason": module.attrs.get("mode_reason"),
        "target": target.to_dict(),
        "summary": summary,
        "kernels": rows,
        "edges": edge_rows,
        "passes": [{"name": n, "seconds": round(t, 6)} for n, t in (timings or [])],
        "route_iterations": list(module.attrs.get("route_iterations") or []),
    }
    if module.attrs.get("mode") == "stream":
        _stream_report(doc, module, target)
    if is_training(module.attrs):
        from .report_train import train_report

        train_report(doc, module, target)
    return doc


def _stream_report(doc: dict[str, Any], module: Module, target: Target) -> None:
    """Weight streaming: phases run one after another, so time adds up and
    PEs are reused; utilisation is PE-cycles busy over grid PE-cycles."""
    phases = [dict(p) for p in module.attrs.get("phases", [])]
    kinds = {k.name: k for k in module.kernels()}
    total = sum(int(p["cycles"]) for p in phases)
    busy = sum(int(p["pes"]) * int(p["cycles"]) for p in phases)
    for p in phases:
        k = kinds.get(p["kernel"])
        p["kind"] = k.kind if k else "?"
        p["origin"] = list(k.origin[:3]) if k else []
        p["bound"] = max(("compute", "stream", "move"), key=lambda f: int(p[f]))
    s = doc["summary"]
    slow = sorted(phases, key=lambda p: (-int(p["cycles"]), p["kernel"]))
    s.update({
        "phases": len(phases), "cycles_per_sample": total,
        "samples_per_second": target.clock_hz / total if total else None,
        "pes_used": max((int(p["pes"]) for p in phases), default=0),
        "utilisation": busy / (target.pes * total) if total else 0.0,
        "compute_fraction": (sum(int(p["compute"]) for p in phases) / total) if total else 0.0,
        "bytes_streamed_per_sample": sum(int(p["weight_bytes"]) * int(p.get("passes", 1))
                                         for p in phases),
        "stream_bound_phases": sum(1 for p in phases if p["bound"] == "stream"),
        "activation_bytes_per_pe": module.attrs.get("activation_bytes_per_pe"),
        "distinct_phase_layouts": module.attrs.get("phase_plans"),
        "repeats": module.attrs.get("repeats"),
        "slowest_phases": [p["kernel"] for p in slow[:5]],
        "bottleneck": ({"kernel": slow[0]["kernel"], "kind": slow[0]["kind"],
                        "origin": slow[0]["origin"]} if slow else None),
    })
    s["pes_total"] = target.pes
    doc["phases"] = phases


def _stream_summary(report: dict[str, Any]) -> list[str]:
    s, t = report["summary"], report["target"]
    by = {p["kernel"]: p for p in report.get("phases", [])}
    sps = s["samples_per_second"]
    lines = [f"  phases         {s['phases']} (one kernel each, run one after another; "
             f"{s['distinct_phase_layouts']} distinct layouts sized)",
             f"  cycles/sample  {s['cycles_per_sample']:,} (sum of phase times)"
             + (f" = {sps:,.2f} samples/s at {t['clock_hz'] / 1e9:g} GHz" if sps else ""),
             f"  streamed       {s['bytes_streamed_per_sample']:,} B of weights per sample "
             f"({s['stream_bound_phases']} phases bound by the I/O stream)",
             f"  utilisation    {100 * s['utilisation']:.1f}% of PE-cycles "
             f"(largest phase {s['pes_used']:,} / {s['pes_total']:,} PEs), compute "
             f"{100 * s['compute_fraction']:.1f}% of the time",
             f"  activations    {s['activation_bytes_per_pe']:,} B per PE kept on the wafer "
             f"between phases"]
    for name in s["slowest_phases"][:3]:
        p = by[name]
        lines.append(f"  slow phase     {name} ({p['kind']}: {', '.join(p['origin'])}): "
                     f"{p['cycles']:,} cycles ({p['bound']}-bound; compute {p['compute']:,}, "
                     f"stream {p['stream']:,}, move {p['move']:,}) on {p['pes']:,} PEs")
    return lines


def _rate(sps: float) -> str:
    return f"{sps:,.0f} samples/s" if sps >= 100 else f"{sps:,.3g} samples/s"


def headline(report: dict[str, Any]) -> str:
    """What a reader wants first: the throughput and what limits it, e.g.
    '1,096 samples/s, limited by link (622,95) N at 139x the kernel time'."""
    s = report["summary"]
    sps = s.get("samples_per_second")
    if not sps:
        return "no throughput: the layout has no kernels"
    b = s.get("bottleneck")
    if report.get("mode") == "stream":
        by = {p["kernel"]: p for p in report.get("phases", [])}
        p = by.get(b["kernel"]) if b else None
        total = s.get("cycles_per_sample") or 0
        slow = (f"; slowest phase {p['kernel']} ({p['kind']}, {p['bound']}-bound) "
                f"{100 * int(p['cycles']) / total:.0f}% of the time" if p and total else "")
        return (f"{_rate(sps)}, weight streaming: {s.get('phases', 0)} phases one after "
                f"another{slow}")
    if s.get("throughput_bound") == "link" and s.get("max_link"):
        ratio = s["link_bound_cycles_per_sample"] / max(1, s["cycles_per_sample"])
        return (f"{_rate(sps)}, limited by link {_link_txt(s['max_link'])} at "
                f"{_multiple(ratio)} the kernel time")
    bound = s.get("bound_cycles_per_sample")
    realised = s.get("realised_cycles_per_sample") or s["cycles_per_sample"]
    tail = f" at {_multiple(realised / bound)} the area bound" if bound else ""
    what = f"kernel {b['kernel']} ({b['kind']}: {', '.join(b['origin'][:1])})" if b else \
        "the kernels"
    return f"{_rate(sps)}, limited by {what}{tail}"


def _multiple(r: float) -> str:
    return f"{r:.2f}x" if r < 10 else f"{r:,.0f}x"


def format_summary(report: dict[str, Any]) -> str:
    s = report["summary"]
    t = report["target"]
    lines = [f"wsec: {report['model']} -> {t['name']} ({t['width']}x{t['height']} PEs), "
             f"mode {report['mode']}", f"  {headline(report)}"]
    if report.get("mode_reason"):
        lines.append(f"  mode           {report['mode_reason']}")
    lines.append(f"  kernels        {s['kernels']}")
    if report["mode"] == "stream":
        if "train" in report:
            from .report_train import train_summary

            return "\n".join(lines + train_summary(report))
        return "\n".join(lines + _stream_summary(report))
    lines.append(f"  PEs used       {s['pes_used']} / {s['pes_total']} "
                 f"({100 * s['utilisation']:.1f}%)")
    b = s["bottleneck"]
    bound = s["bound_cycles_per_sample"]
    realised = s.get("realised_cycles_per_sample") or s["cycles_per_sample"]
    link_set = s.get("throughput_bound") == "link"
    sps = s["samples_per_second"]
    if sps:
        by = (f"the busiest link {_link_txt(s['max_link'])}" if link_set
              else f"the bottleneck kernel {b['kernel']}" if b else "the kernels")
        lines.append(f"  throughput     {sps:,.0f} samples/s at {t['clock_hz'] / 1e9:g} GHz "
                     f"({realised:,} cycles/sample), set by {by}")
    mult = [f"{_multiple(realised / bound)} the area bound {bound:,}"] if bound else []
    mult.append(f"{_multiple(realised / max(1, s['cycles_per_sample']))} the slowest kernel "
                f"{s['cycles_per_sample']:,}")
    if s["max_link"]:
        mult.append(f"busiest link {s['link_bound_cycles_per_sample']:,}")
    lines.append(f"  cycles/sample  {realised:,}: " + ", ".join(mult))
    if b:
        lines.append(f"  bottleneck     {b['kernel']} ({b['kind']}: {', '.join(b['origin'])})")
    detour = f", detour {s['detour_ratio']:.2f}x" if s["detour_ratio"] else ""
    lines.append(f"  wirelength     {s['wirelength_routed']:,} byte-hops/sample routed{detour}")
    if s["max_link"]:
        lines.append(f"  busiest link   {_link_txt(s['max_link'])}: "
                     f"{s['max_link_wavelets_per_sample']:,} wavelets/sample "
                     f"({s['max_link_utilisation']:.2f}x the kernel time); "
                     f"{s['colors_used']} colors used, at most "
                     f"{s.get('colors_max_per_pe', 0)} at one PE")
    if s.get("ribbon_requests"):
        lines.append(f"  ribbons        {s['ribbon_requests']} cut"
                     f"{'s' if s['ribbon_requests'] > 1 else ''} routed as "
                     f"{s['ribbon_bundles']} bundles widening at corners of their own")
    lines.append(f"  largest SRAM   {s['max_sram_bytes']:,} / {s['sram_bytes_per_pe']:,} B "
                 f"per PE ({s['max_sram_kernel']})")
    if "train" in report:
        from .report_train import train_summary

        lines += train_summary(report)
    return "\n".join(lines)


def _lane_lower_bound(module: Module) -> int:
    """Σ over lanes of the bytes of the lane's slice x the fewest links that
    join its source and landing PEs and deliver along its reach."""
    total = 0
    for e in module.edges:
        numel = module.values[e.value].type.numel if e.value in module.values else 1
        for b in e.bundles or ():
            src, land = endpoints(b)
            links = np.abs(land - src).sum(axis=1) + b.reach
            total += int((lane_bytes(e.bytes_per_sample, numel, b.lanes) * links).sum())
    return total


def _link_txt(link: list[object]) -> str:
    x, y, d = link
    return f"({x},{y}) {d}"


def write_report_json(report: dict[str, Any], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")
