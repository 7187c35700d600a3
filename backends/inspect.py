"""`wsec inspect`: a readable account of what a binary holds.

Everything here is computed from the decoded `Program` alone (no Module, no
model file), so it shows what the device loader will actually see: header
and sections, the kernel table, route, SRAM and weight-blob statistics.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.fabric import Fabric
from wsec.ir.metrics import (
    RouteArrays,
    busiest_link,
    colors_per_pe,
    concat,
    cut_lane_bytes,
    cut_share_key,
    lane_bytes,
    link_loads,
    merge_shared,
    share_key,
)

from .format import NO_BUNDLE, Program, type_shape


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _table(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        out.append("  " + "  ".join(cells).rstrip())
    return out


def program_routes(p: Program, templates: bool = False, merge: bool = True) -> RouteArrays:
    """A binary's router table as the metrics module's route arrays: every
    lane's entries with the bytes its slice carries (with `templates`, the
    kernels' internal flows too, carrying no edge's bytes, edge index -1).
    `merge=False` keeps one entry per router-table record (index i is
    `p.routes[i]`: what the simulator's traces index), shared multicast
    entries unmerged."""
    r = p.routes
    lanes = r["bundle"] != NO_BUNDLE
    if not templates:
        r = r[lanes]
        lanes = lanes[lanes]
    edge = np.where(lanes, r["edge"].astype(np.int64), -1)
    # per bundle with entries, its lanes' bytes and share keys, end to end; each
    # entry reads its lane's at its bundle's offset
    bid = np.where(lanes, r["bundle"], 0).astype(np.int64)
    present = np.unique(bid[lanes]).tolist()
    off = np.zeros(len(p.bundles) + 1, np.int64)
    tab_bytes, tab_share = [], []
    for bi in present:
        b = p.bundles[bi]
        e = p.edges[int(b["edge"])]
        numel = int(np.prod(type_shape(p.info["values"][e.value]), dtype=np.int64)) \
            if e.value in p.info.get("values", {}) else 1
        n = int(b["lanes"])
        boxes = p.lane_boxes(bi)
        if boxes is None:
            tab_bytes.append(lane_bytes(e.bytes_per_sample, numel, n))
            tab_share.append(share_key(int(b["edge"]), n, np.arange(n)))
        else:
            tab_bytes.append(cut_lane_bytes(e.bytes_per_sample, numel, boxes))
            tab_share.append(cut_share_key(bi, np.arange(n)))
        off[bi] = off[-1]
        off[-1] += n
    lane = r["lane"].astype(np.int64)
    if lanes.any() and (lane[lanes] >= p.bundles["lanes"][bid[lanes]]).any():
        raise IndexError("a route entry names a lane its bundle does not have")
    at = off[bid] + lane
    nbytes = np.zeros(r.size, np.int64)
    share = np.full(r.size, -1, np.int64)
    if present:
        nbytes[lanes] = np.concatenate(tab_bytes)[at[lanes]]
        share[lanes] = np.concatenate(tab_share)[at[lanes]]
    ra = RouteArrays(r["x"].astype(np.int64), r["y"].astype(np.int64),
                     r["color"].astype(np.int64), edge, r["rx"].astype(np.int64),
                     r["tx"].astype(np.int64), nbytes, share=share)
    ra = merge_shared(ra) if merge else ra
    return concat(ra, *halo_routes(p), *relay_routes(p)) if merge else ra


def halo_routes(p: Program) -> list[RouteArrays]:
    """The halo exchange of every bundle cut "halo" (wsec.ir.halo) as route
    arrays carrying its bytes per sample: what each PE row received, from
    the lanes the routes deliver (sim_inbox.deliveries), on every link and
    RAMP of its carrier column and its row (the router table's records of
    the exchange carry no edge's bytes)."""
    from wsec.ir.halo import carried, entries, halo_colors
    from wsec.ir.templates import place

    from .sim_inbox import deliveries

    out: list[RouteArrays] = []
    halo = [bi for bi in range(len(p.bundles)) if p.halo(bi) is not None]
    if not halo:
        return out
    got = deliveries(p)
    for bi in halo:
        ki, e = int(p.bundles["sink"][bi]), p.edges[int(p.bundles["edge"][bi])]
        d = got[ki].get(e.value)
        h = p.halo(bi)
        if d is None or d.held is None or h is None:
            continue
        k = p.kernels[ki]
        uw, uh = k.unrotated_shape
        ent, whose = entries(uw, uh, h.period, halo_colors(p.target))
        _, per_row = exchange_rows(d, h)
        nbytes = -(-int(e.bytes_per_sample) * carried(whose, per_row) // max(1, d.numel))
        at = place(ent, k.rect.x, k.rect.y, k.rotated)
        live = nbytes > 0
        n = int(live.sum())
        out.append(RouteArrays(at[live, 0], at[live, 1], at[live, 2],
                               np.full(n, int(p.bundles["edge"][bi]), np.int64), at[live, 3],
                               at[live, 4], nbytes[live], share=np.full(n, -1, np.int64)))
    return out


def relay_routes(p: Program) -> list[RouteArrays]:
    """The relay of every kernel a relayed flat bundle runs into
    (wsec.ir.relay) as route arrays carrying its bytes per sample: what each
    PE's stream carries (the plan the loader recomputes from the records),
    on every link and RAMP it sends on, its bundles summed (the router
    table's records of the relay carry no edge's bytes)."""
    from wsec.ir.relay import entries, relay_colors
    from wsec.ir.templates import place

    from .relays import program_relays

    per: dict[int, tuple[int, np.ndarray]] = {}
    for bi, rl in program_relays(p).items():
        ki, ei = int(p.bundles["sink"][bi]), int(p.bundles["edge"][bi])
        e = p.edges[ei]
        numel = max(1, int(np.prod(rl.view, dtype=np.int64)))
        nb = -(-int(e.bytes_per_sample) * rl.plan.stream // numel)
        edge, load = per.get(ki, (ei, 0))
        per[ki] = (edge, load + nb)
    out: list[RouteArrays] = []
    for ki, (edge, load) in per.items():
        k = p.kernels[ki]
        uw, uh = k.unrotated_shape
        ent, whose = entries(uw, uh, load > 0, relay_colors(p.target))
        at = place(ent, k.rect.x, k.rect.y, k.rotated)
        n = at.shape[0]
        out.append(RouteArrays(at[:, 0], at[:, 1], at[:, 2], np.full(n, edge, np.int64),
                               at[:, 3], at[:, 4], load.ravel()[whose],
                               share=np.full(n, -1, np.int64)))
    return out


def exchange_rows(d, h):  # type: ignore[no-untyped-def]
    """(held, elements per PE row received) of delivery d's exchange."""
    from wsec.ir.halo import exchange

    own = np.where((d.lane_at >= 0)[:, :, None, None], d.boxes[np.maximum(d.lane_at, 0)], 0)
    return exchange(own, h)


def route_stats(p: Program) -> dict[str, int]:
    fabric = Fabric.of(p.target)
    ra = program_routes(p)
    every = program_routes(p, templates=True)
    stats = {"edges": len(p.edges), "routed_edges": int(np.unique(ra.edge).size),
             "bundles": len(p.bundles), "lanes": int(p.bundles["lanes"].sum()),
             "templates": len(p.info.get("templates", [])),
             "route_entries": int(every.size), "colors_used": int(np.unique(every.color).size),
             "max_colors_per_pe": colors_per_pe(every), "max_link_edges": 0,
             "max_link_wavelets": 0, "max_link": ""}
    if not ra.size:
        return stats
    top = busiest_link(link_loads(ra, fabric))
    count = busiest_link(link_loads(ra, fabric, count=True))
    stats["max_link_edges"] = count.wavelets if count else 0
    if top:
        stats["max_link_wavelets"] = top.wavelets
        stats["max_link"] = f"({top.x},{top.y}) {top.port}"
    return stats


def sram_stats(p: Program) -> dict[str, float]:
    area = np.array([k.rect.area for k in p.kernels], np.int64)
    use = np.array([p.kernel_sram(i) for i in range(len(p.kernels))], np.int64)
    used = int(area.sum())
    return {"max": int(use.max()) if use.size else 0,
            "mean": float((area * use).sum() / used) if used else 0.0,
            "pes_used": used, "grid_pes": p.target.pes}


def blob_stats(p: Program) -> dict[str, float]:
    stored = sum(len(b.payload) for b in p.blobs)
    logical = p.weight_pe_bytes()
    return {"blobs": len(p.blobs), "stored_bytes": stored, "maps": int(p.wmaps.size),
            "runs": int(p.wruns.size), "cells": int(p.wcells.size),
            "splats": sum(1 for b in p.blobs if b.encoding == 1),
            "pe_bytes": logical, "dedup_ratio": logical / stored if stored else 1.0}


def inspect_text(p: Program) -> str:
    t = p.target
    i = p.info
    lines = [f"wsec binary, format version {p.version}",
             f"  target           {t.name}, grid {t.width}x{t.height} "
             f"({t.pes} PEs, {t.sram_bytes} B SRAM/PE, {t.colors} colors)",
             f"  compiler         wsec {i.get('compiler_version', '?')}",
             f"  model            {i.get('source', '?')} ({i.get('model_hash', '') or 'no hash'})",
             f"  mode             {i.get('mode', '?')}"]
    if p.sections:
        lines.append("sections:")
        lines += _table([[s.name, str(s.offset), str(s.length), f"crc32 {s.crc32:08x}"]
                         for s in p.sections], {1, 2})
    lines.append(f"kernels ({len(p.kernels)}):")
    rows = [["name", "kind", "rect x,y,w,h", "rot", "knobs", "cycles", "SRAM B", "origin"]]
    for ki, k in enumerate(p.kernels):
        r = k.rect
        origin = ", ".join(k.origin[:3]) + (f" +{len(k.origin) - 3}" if len(k.origin) > 3 else "")
        rows.append([k.name, k.kind, f"{r.x},{r.y},{r.w},{r.h}", "R" if k.rotated else "-",
                     ",".join(f"{a}={b}" for a, b in sorted(k.knobs.items())) or "-",
                     str(k.cost.get("cycles", "?")), str(p.kernel_sram(ki)), origin or "-"])
    lines += _table(rows, {5, 6})
    rs = route_stats(p)
    lines += ["routes:",
              f"  edges            {rs['edges']} ({rs['routed_edges']} routed), "
              f"{rs['bundles']} bundles of {rs['lanes']} lanes, {rs['templates']} kernel route "
              f"templates",
              f"  route entries    {rs['route_entries']}",
              f"  colors used      {rs['colors_used']} of {t.colors}",
              f"  max colors/PE    {rs['max_colors_per_pe']}",
              f"  busiest link     {rs['max_link'] or '-'}: {rs['max_link_wavelets']} "
              f"wavelets/sample (RAMPs included)",
              f"  most lanes/link  {rs['max_link_edges']}"]
    ss = sram_stats(p)
    frac = 100.0 * ss["pes_used"] / ss["grid_pes"] if ss["grid_pes"] else 0.0
    lines += ["SRAM:",
              f"  max per PE       {ss['max']} B of {t.sram_bytes} "
              f"({100.0 * ss['max'] / t.sram_bytes:.1f}%)",
              f"  mean per used PE {ss['mean']:.0f} B",
              f"  PEs used         {ss['pes_used']} / {ss['grid_pes']} ({frac:.1f}%)"]
    bs = blob_stats(p)
    lines += ["weight blobs:",
              f"  blobs            {bs['blobs']} ({bs['splats']} splat), "
              f"{_fmt_bytes(bs['stored_bytes'])} stored",
              f"  weight maps      {bs['maps']} ({bs['runs']} runs, {bs['cells']} cells)",
              f"  bytes on PEs     {_fmt_bytes(bs['pe_bytes'])} "
              f"(dedup ratio {bs['dedup_ratio']:.1f}x)"]
    if "phases" in i:
        lines += _phase_lines(p)
    io = i.get("host_io", {})
    if io:
        lines.append("host I/O:")
        for d in io.get("inputs", []):
            lines.append(f"  in  %{d['value']} {d['type']}: {len(d['pes'])} West-edge PEs")
        for d in io.get("outputs", []):
            lines.append(f"  out %{d['value']} {d['type']}: {len(d['pes'])} East-edge PEs")
    return "\n".join(lines) + "\n"


def _phase_lines(p: Program) -> list[str]:
    """Stream mode: the phase schedule and where each phase's weights come from."""
    phases, streams = p.info.get("phases", []), p.info.get("streams", [])
    total = sum(int(ph["cycles"]) for ph in phases)
    files = sorted({str(d["file"]) for d in streams if d.get("source") == "file"})
    ext = sum(int(d["length"]) for d in streams if d.get("source") == "file")
    lines = [f"phases ({len(phases)}, {total:,} cycles/sample in total):"]
    rows = [["#", "kernel", "rect x,y,w,h", "cycles", "compute", "stream", "move",
             "weights B", "streams"]]
    for n, ph in enumerate(phases):
        srcs = [streams[j] for j in ph.get("streams", [])]
        nf = sum(1 for d in srcs if d.get("source") == "file")
        rows.append([str(n), str(ph["name"]), ",".join(str(v) for v in ph["rect"]),
                     str(ph["cycles"]), str(ph["compute"]), str(ph["stream"]), str(ph["move"]),
                     str(ph["weight_bytes"]), f"{nf} file, {len(srcs) - nf} blob"])
    lines += _table(rows, {0, 3, 4, 5, 6, 7})
    lines.append(f"weight streams: {len(streams)} descriptors, {_fmt_bytes(ext)} from "
                 f"{', '.join(files) or 'no external file'}")
    return lines


def inspect_json(p: Program) -> dict[str, object]:
    """What `inspect` prints, as one JSON document (`wsec inspect --json`)."""
    t, i = p.target, p.info
    kernels = [{"name": k.name, "kind": k.kind, "rect": [k.rect.x, k.rect.y, k.rect.w, k.rect.h],
                "rotated": bool(k.rotated), "knobs": dict(k.knobs),
                "cycles_per_sample": int(k.cost.get("cycles", 0)), "sram_bytes": p.kernel_sram(ki),
                "origin": list(k.origin)} for ki, k in enumerate(p.kernels)]
    doc: dict[str, object] = {
        "format_version": p.version, "target": t.to_dict(),
        "compiler_version": i.get("compiler_version"), "source": i.get("source"),
        "model_hash": i.get("model_hash"), "mode": i.get("mode"),
        "sections": [{"name": s.name, "offset": s.offset, "length": s.length,
                      "crc32": f"{s.crc32:08x}"} for s in p.sections],
        "kernels": kernels, "routes": route_stats(p), "sram": sram_stats(p),
        "weight_blobs": blob_stats(p), "host_io": i.get("host_io", {}),
        "inputs": list(i.get("inputs", [])), "outputs": list(i.get("outputs", []))}
    if "phases" in i:
        doc["phases"] = list(i["phases"])
    return doc
