"""See the layout: an SVG map, a self-contained HTML page and an ASCII mini-map.

Why here: users judge a layout by looking at it (nextpnr's --placed-svg,
VPR's graphics). One renderer serves `wsec MODEL -o m.bin --report-html`
(from the compiled Module's report) and `wsec inspect m.bin --html/--svg`
(from the binary alone): both hand it a report document (the JSON report's
schema, docs/report.md) and the routes as `RouteArrays`; the link loads come
from `wsec.ir.metrics.link_loads`, never recomputed here.

The page needs no network: the heat maps are PNG images inlined as data
URIs, the script and style are inline, and nothing refers to another file.
"""

from __future__ import annotations

import base64
import html
import json
import struct
import zlib
from typing import Any

import numpy as np
from wsec.ir.fabric import DIRS, STEP, Fabric
from wsec.ir.metrics import RouteArrays, link_loads

# one colour per kernel kind (fill), stable across runs; unknown kinds hash into the palette
_KIND_COLOURS = {
    "conv": "#4e79a7", "matmul": "#f28e2b", "dense": "#f28e2b", "pool": "#59a14f",
    "rowwise": "#76b7b2", "reduce": "#edc948", "gather": "#b07aa1", "eltwise": "#9c755f",
    "softmax": "#ff9da7", "norm": "#bab0ac", "cs1": "#4e79a7",
}
_PALETTE = ("#4e79a7", "#f28e2b", "#59a14f", "#76b7b2", "#edc948", "#b07aa1", "#9c755f",
            "#ff9da7", "#bab0ac", "#e15759")
_BOUND_COLOURS = {"compute": "#4e79a7", "stream": "#e15759", "move": "#edc948",
                  "stream_out": "#b07aa1"}
_MINI_WIDTH = 60  # columns of the ASCII mini-map


def kind_colour(kind: str) -> str:
    if kind in _KIND_COLOURS:
        return _KIND_COLOURS[kind]
    return _PALETTE[zlib.crc32(kind.encode()) % len(_PALETTE)]


# --- the report document of a binary -------------------------------------------

def program_report(prog: Any) -> dict[str, Any]:
    """The parts of the report (docs/report.md) a view needs, from a loaded
    binary alone: the compiler's figures stored in META, the kernels and,
    in stream mode, the phases."""
    info = prog.info
    attrs = info.get("attrs") or {}
    t = prog.target
    kernels = [{"name": k.name, "kind": k.kind, "origin": list(k.origin),
                "rect": [k.rect.x, k.rect.y, k.rect.w, k.rect.h], "rotated": bool(k.rotated),
                "pes": k.rect.area, "cycles_per_sample": int(k.cost.get("cycles", 0)),
                "sram_bytes": prog.kernel_sram(i), "knobs": dict(k.knobs)}
               for i, k in enumerate(prog.kernels)]
    slow = max(kernels, key=lambda r: r["cycles_per_sample"], default=None)
    delta_t = slow["cycles_per_sample"] if slow else 0
    link = attrs.get("max_link")
    load = int(attrs.get("max_link_load") or 0)
    realised = max(delta_t, load)
    s: dict[str, Any] = {
        "kernels": len(kernels), "pes_total": t.pes,
        "pes_used": sum(r["pes"] for r in kernels),
        "cycles_per_sample": delta_t, "bound_cycles_per_sample": attrs.get("bound"),
        "realised_cycles_per_sample": realised,
        "samples_per_second": t.clock_hz / realised if realised else None,
        "bottleneck": ({"kernel": slow["name"], "kind": slow["kind"],
                        "origin": slow["origin"][:3]} if slow else None),
        "max_link": list(link) if link else None, "max_link_wavelets_per_sample": load,
        "link_bound_cycles_per_sample": load,
        "max_link_utilisation": load / delta_t if delta_t else 0.0,
        "throughput_bound": "link" if link and load > delta_t else "compute",
    }
    doc: dict[str, Any] = {"model": str(info.get("source", "?")), "mode": info.get("mode"),
                           "mode_reason": attrs.get("mode_reason"), "target": t.to_dict(),
                           "summary": s, "kernels": kernels}
    if "phases" in info:
        by = {k["name"]: k for k in kernels}
        phases = []
        for ph in info["phases"]:
            k = by.get(str(ph["name"]), {})
            p = {"kernel": str(ph["name"]), "kind": k.get("kind", "?"),
                 "origin": list(k.get("origin", []))[:3], "pes": int(np.prod(ph["rect"][2:])),
                 **{f: int(ph.get(f, 0)) for f in ("cycles", "compute", "stream", "move",
                                                   "weight_bytes")}}
            p["bound"] = max(("compute", "stream", "move"), key=lambda f: p[f])
            phases.append(p)
        total = sum(p["cycles"] for p in phases)
        slowest = max(phases, key=lambda p: p["cycles"], default=None)
        s.update({"phases": len(phases), "cycles_per_sample": total,
                  "samples_per_second": t.clock_hz / total if total else None,
                  "pes_used": max((p["pes"] for p in phases), default=0),
                  "bottleneck": ({"kernel": slowest["kernel"], "kind": slowest["kind"],
                                  "origin": slowest["origin"]} if slowest else None)})
        doc["phases"] = phases
    return doc


# --- PNG without dependencies ------------------------------------------------

def png_bytes(rgba: np.ndarray) -> bytes:
    """An RGBA uint8 image (rows top to bottom) as PNG."""
    h, w, _ = rgba.shape
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rgba.reshape(h, w * 4)], axis=1)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + tag + data
                + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b""))


# heat ramp: pale yellow (light load) -> orange -> red (the realised cycle time) -> purple
_RAMP = np.array([[255, 255, 178], [254, 204, 92], [253, 141, 60], [240, 59, 32],
                  [189, 0, 38], [84, 0, 110]], np.float64)


def heat_rgba(load: np.ndarray, scale: float) -> np.ndarray:
    """Per-PE load (H, W) -> RGBA rows top (north, y = H-1) to bottom; 0 is transparent."""
    u = np.clip(load / max(scale, 1.0), 0.0, 1.25) / 1.25 * (len(_RAMP) - 1)
    lo = np.floor(u).astype(np.int64).clip(0, len(_RAMP) - 2)
    f = (u - lo)[..., None]
    rgb = _RAMP[lo] * (1 - f) + _RAMP[lo + 1] * f
    a = np.where(load > 0, 210, 0)
    img = np.concatenate([rgb, a[..., None]], axis=-1).astype(np.uint8)
    return np.ascontiguousarray(img[::-1])


def pe_load(ra: RouteArrays, fabric: Fabric) -> np.ndarray:
    """Each PE's busiest link or RAMP, wavelets per sample (H, W)."""
    return link_loads(ra, fabric).max(axis=2)


# --- the SVG map -------------------------------------------------------------------

def _fmt(n: float) -> str:
    return f"{n:,.0f}"


def _esc(x: object) -> str:
    return html.escape(str(x), quote=True)


class _Map:
    """What the SVG and the page are drawn from."""

    def __init__(self, report: dict[str, Any], ra: RouteArrays | None, fabric: Fabric) -> None:
        self.report = report
        self.fabric = fabric
        self.W, self.H = fabric.width, fabric.height
        s = report["summary"]
        self.stream = report.get("mode") == "stream"
        self.realised = int(s.get("realised_cycles_per_sample") or s.get("cycles_per_sample")
                            or 1)
        b = s.get("bottleneck")
        self.bottleneck = b["kernel"] if b else None
        self.link = None if self.stream else s.get("max_link")
        self.heat: list[tuple[str, str, int]] = []  # (key, data URI, max load)
        if ra is not None and ra.size and not self.stream:
            load = pe_load(ra, fabric)
            self.heat.append(("all", _uri(load, self.realised), int(load.max())))
            for c in np.unique(ra.color):
                sub = ra.take(np.nonzero(ra.color == c)[0])
                lc = pe_load(sub, fabric)
                self.heat.append((f"color {int(c)}", _uri(lc, self.realised), int(lc.max())))
        rects = [k["rect"] for k in report["kernels"] if k.get("rect")]
        if rects:
            x0 = min(r[0] for r in rects)
            y0 = min(r[1] for r in rects)
            x1 = max(r[0] + r[2] for r in rects)
            y1 = max(r[1] + r[3] for r in rects)
        else:
            x0 = y0 = 0
            x1, y1 = self.W, self.H
        pad = max(2, (max(x1 - x0, y1 - y0)) // 30)
        self.fit = (max(0, x0 - pad), max(0, y0 - pad), min(self.W, x1 + pad),
                    min(self.H, y1 + pad))

    def svg_y(self, y: int, h: int) -> int:
        return self.H - y - h  # north (y grows) is up on the page

    def viewbox(self) -> str:
        x0, y0, x1, y1 = self.fit
        return f"{x0} {self.H - y1} {x1 - x0} {y1 - y0}"


def _uri(load: np.ndarray, scale: float) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(heat_rgba(load, scale))).decode()


def _kernel_title(k: dict[str, Any], phase: dict[str, Any] | None) -> str:
    x, y, w, h = k["rect"]
    lines = [f"{k['name']} ({k['kind']}) at ({x},{y}) {w}x{h} = {w * h:,} PEs",
             f"{k['cycles_per_sample']:,} cycles/sample, {k['sram_bytes']:,} B SRAM/PE",
             "ONNX nodes: " + (", ".join(k["origin"]) or "-")]
    if phase:
        lines.append(f"phase: {phase['cycles']:,} cycles ({phase['bound']}-bound; compute "
                     f"{phase['compute']:,}, stream {phase['stream']:,}, move "
                     f"{phase['move']:,})")
    return "\n".join(lines)


def _labels(m: _Map, k: dict[str, Any]) -> str:
    x, y, w, h = k["rect"]
    sy = m.svg_y(y, h)
    span = max(m.fit[2] - m.fit[0], m.fit[3] - m.fit[1])
    size = min(w / 6.5, h / 4.2, span / 45)
    if size < span / 400:  # too small to read at any zoom the page offers
        return ""
    origin = k["origin"][0] + (f" +{len(k['origin']) - 1}" if len(k["origin"]) > 1 else "") \
        if k["origin"] else ""
    cx = x + w / 2
    rows = [k["name"], origin, f"{k['cycles_per_sample']:,} cyc"]
    out = []
    for i, text in enumerate(rows):
        if not text:
            continue
        ty = sy + h / 2 + (i - 1) * size * 1.15 + size * 0.35
        out.append(f'<text class="label" x="{cx:.2f}" y="{ty:.2f}" font-size="{size:.2f}">'
                   f"{_esc(text)}</text>")
    return "".join(out)


def render_svg(report: dict[str, Any], ra: RouteArrays | None, fabric: Fabric,
               standalone: bool = True, _m: _Map | None = None) -> str:
    """The layout as SVG: the grid, kernels as rect.kernel (coloured by kind,
    labelled, a <title> each for hover), the link-load heat map (all colours)
    under them, the bottleneck kernel outlined and the busiest link marked."""
    m = _m or _Map(report, ra, fabric)
    phases = {p["kernel"]: (i, p) for i, p in enumerate(report.get("phases", []))}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="layout" viewBox="{m.viewbox()}" '
             f'data-grid="{m.W}x{m.H}" data-bottleneck="{_esc(m.bottleneck or "")}" '
             f'data-busiest-link="{_esc(" ".join(map(str, m.link)) if m.link else "")}" '
             f'preserveAspectRatio="xMidYMid meet">']
    if standalone:
        parts.append(f"<style>{_SVG_STYLE}</style>")
    parts.append(f'<rect class="grid" x="0" y="0" width="{m.W}" height="{m.H}"/>')
    outline = None
    labels = []
    for k in report["kernels"]:
        if not k.get("rect"):
            continue
        x, y, w, h = k["rect"]
        ph = phases.get(k["name"])
        attrs = (f'data-name="{_esc(k["name"])}" data-kind="{_esc(k["kind"])}" '
                 f'data-cycles="{k["cycles_per_sample"]}" data-sram="{k["sram_bytes"]}" '
                 f'data-origin="{_esc(", ".join(k["origin"]))}" '
                 f'data-rect="{x},{y},{w},{h}"')
        if ph is not None:
            attrs += f' data-phase="{ph[0]}"'
        hidden = ' visibility="hidden"' if m.stream and ph is not None and ph[0] != 0 else ""
        cls = "kernel bottleneck" if k["name"] == m.bottleneck else "kernel"
        parts.append(f'<rect class="{cls}" {attrs}{hidden} x="{x}" y="{m.svg_y(y, h)}" '
                     f'width="{w}" height="{h}" fill="{kind_colour(k["kind"])}">'
                     f"<title>{_esc(_kernel_title(k, ph[1] if ph else None))}</title></rect>")
        text = _labels(m, k)
        if text:
            labels.append(f'<g class="klabel" data-name="{_esc(k["name"])}"{hidden}>{text}</g>')
        if k["name"] == m.bottleneck:
            outline = (x, m.svg_y(y, h), w, h)
    # the heat map over the kernels' fills (it takes no pointer events), the labels on top
    for key, uri, _ in m.heat:
        vis = "" if key == "all" else ' visibility="hidden"'
        parts.append(f'<image class="heat" data-key="{_esc(key)}" x="0" y="0" width="{m.W}" '
                     f'height="{m.H}" preserveAspectRatio="none" href="{uri}"{vis}/>')
    parts += labels
    if outline is not None:
        x, y, w, h = outline
        sw = max(1.0, max(m.fit[2] - m.fit[0], m.fit[3] - m.fit[1]) / 250)
        parts.append(f'<rect id="bottleneck-outline" class="outline" x="{x}" y="{y}" '
                     f'width="{w}" height="{h}" stroke-width="{sw:.2f}">'
                     f"<title>bottleneck kernel {_esc(m.bottleneck)}</title></rect>")
    if m.link:
        parts.append(_link_mark(m))
    parts.append("</svg>")
    return "".join(parts)


def _link_mark(m: _Map) -> str:
    x, y, port = m.link  # type: ignore[misc]
    s = m.report["summary"]
    cx, cy = x + 0.5, m.H - y - 0.5
    span = max(m.fit[2] - m.fit[0], m.fit[3] - m.fit[1])
    r = max(2.0, span / 80)
    dx, dy = STEP.get(str(port), (0, 0))
    arrow = (f'<line class="link-arrow" x1="{cx}" y1="{cy}" x2="{cx + dx * 2 * r:.2f}" '
             f'y2="{cy - dy * 2 * r:.2f}" stroke-width="{r / 3:.2f}"/>') if port in DIRS else ""
    title = (f"busiest link ({x},{y}) {port}: {s['max_link_wavelets_per_sample']:,} "
             f"wavelets/sample")
    return (f'<g id="busiest-link" data-x="{x}" data-y="{y}" data-port="{_esc(port)}">'
            f'<circle class="link-mark" cx="{cx}" cy="{cy}" r="{r:.2f}" '
            f'stroke-width="{r / 4:.2f}"/>{arrow}<title>{_esc(title)}</title></g>')


_SVG_STYLE = """
.grid { fill: #f7f7f7; stroke: #999; stroke-width: 0.5; }
.heat { image-rendering: pixelated; pointer-events: none; }
.kernel { fill-opacity: 0.45; stroke: #222; stroke-width: 0.4; vector-effect: non-scaling-stroke; }
.kernel:hover { fill-opacity: 0.8; }
.label { fill: #111; text-anchor: middle; font-family: sans-serif; pointer-events: none; }
.outline { fill: none; stroke: #d00000; pointer-events: none; }
.link-mark { fill: none; stroke: #000; }
.link-arrow { stroke: #000; }
"""


# --- the page ------------------------------------------------------------------------

def headline_lines(report: dict[str, Any]) -> list[str]:
    from .report import headline

    out = [headline(report)]
    if report.get("mode_reason"):
        out.append(str(report["mode_reason"]))
    return out


def render_html(report: dict[str, Any], ra: RouteArrays | None, fabric: Fabric) -> str:
    """One self-contained page: headline, the map (heat map per colour on
    demand), hover details, the kernel table and, for weight streaming, the
    phase timeline with a per-phase view."""
    m = _Map(report, ra, fabric)
    t = report["target"]
    s = report["summary"]
    title = f"wsec layout: {report['model']} on {t['name']}"
    head = headline_lines(report)
    figures = _figure_rows(report)
    colour_opts = "".join(f'<option value="{_esc(k)}">{_esc(k)} (busiest '
                          f"{mx:,} wavelets/sample)</option>" for k, _, mx in m.heat)
    legend = "".join(f'<span class="swatch" style="background:{kind_colour(kd)}"></span>'
                     f"{_esc(kd)} " for kd in sorted({k['kind'] for k in report['kernels']}))
    rows = "".join(
        f'<tr data-name="{_esc(k["name"])}"><td>{_esc(k["name"])}</td><td>{_esc(k["kind"])}</td>'
        f'<td>{",".join(map(str, k["rect"]))}</td><td class="num">{k["cycles_per_sample"]:,}'
        f'</td><td class="num">{k["sram_bytes"]:,}</td><td>{_esc(", ".join(k["origin"]))}</td>'
        f"</tr>" for k in report["kernels"])
    timeline = _timeline(report) if m.stream else ""
    data = {"kernels": {k["name"]: {"kind": k["kind"], "rect": k["rect"],
                                    "cycles": k["cycles_per_sample"], "sram": k["sram_bytes"],
                                    "origin": k["origin"]} for k in report["kernels"]},
            "phases": report.get("phases", []), "stream": m.stream,
            "bottleneck": m.bottleneck, "grid": [m.W, m.H], "fit": m.viewbox(),
            "realised": m.realised}
    heat_ui = (f'<label>link load <select id="color-select">{colour_opts}</select></label> '
               f'<span class="scale">0 <span class="ramp"></span> '
               f'{_fmt(m.realised)} wavelets/sample (the realised cycle time) and over</span>'
               if m.heat else '<span class="muted">no routes to show</span>')
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>{_SVG_STYLE}{_PAGE_STYLE}</style></head>
<body data-mode="{_esc(report.get('mode'))}">
<header><h1>{_esc(title)}</h1>
<p id="headline">{_esc(head[0])}</p>
{"".join(f'<p class="reason">{_esc(x)}</p>' for x in head[1:])}
<table class="figures">{figures}</table></header>
<main>
<section id="map-panel">
<div class="toolbar">{heat_ui}
<button id="fit-layout" type="button">fit layout</button>
<button id="fit-grid" type="button">whole grid</button>
<span class="legend">{legend}</span></div>
{timeline}
<div id="map">{render_svg(report, ra, fabric, standalone=False, _m=m)}</div>
</section>
<aside id="details"><h2>details</h2><p id="details-body" class="muted">hover over a kernel
(or a phase) to see its figures</p></aside>
</main>
<section><h2>kernels ({len(report["kernels"])})</h2>
<table id="kernels"><thead><tr><th>name</th><th>kind</th><th>rect x,y,w,h</th>
<th>cycles/sample</th><th>SRAM B/PE</th><th>ONNX nodes</th></tr></thead>
<tbody>{rows}</tbody></table></section>
<footer>wsec report for {_esc(report["model"])}: {s["kernels"]} kernels on
{t["width"]}x{t["height"]} PEs; grid north is up.</footer>
<script id="layout-data" type="application/json">{_json_for_script(data)}</script>
<script>{_SCRIPT}</script>
</body></html>
"""


def _json_for_script(data: Any) -> str:
    return json.dumps(data, sort_keys=True).replace("</", "<\\/")


def _figure_rows(report: dict[str, Any]) -> str:
    s, t = report["summary"], report["target"]
    rows = [("mode", report.get("mode") or "?"),
            ("kernels", f"{s['kernels']}"),
            ("PEs used", f"{s['pes_used']:,} / {s['pes_total']:,}")]
    realised = s.get("realised_cycles_per_sample") or s.get("cycles_per_sample")
    if report.get("mode") != "stream":
        bound = s.get("bound_cycles_per_sample")
        rows.append(("cycles/sample", f"{realised:,}" + (
            f" ({realised / bound:.2f}x the area bound {bound:,})" if bound else "")))
        if s.get("max_link"):
            x, y, d = s["max_link"]
            rows.append(("busiest link", f"({x},{y}) {d}: "
                         f"{s['max_link_wavelets_per_sample']:,} wavelets/sample"))
    else:
        rows.append(("cycles/sample", f"{s['cycles_per_sample']:,} over {s.get('phases', 0)} "
                     f"phases"))
    b = s.get("bottleneck")
    if b:
        rows.append(("bottleneck" if report.get("mode") != "stream" else "slowest phase",
                     f"{b['kernel']} ({b['kind']}: {', '.join(b['origin'])})"))
    rows.append(("clock", f"{t['clock_hz'] / 1e9:g} GHz"))
    return "".join(f"<tr><th>{_esc(a)}</th><td>{_esc(v)}</td></tr>" for a, v in rows)


def _timeline(report: dict[str, Any]) -> str:
    phases = report.get("phases", [])
    total = sum(p["cycles"] for p in phases) or 1
    x = 0.0
    bars = []
    for i, p in enumerate(phases):
        w = 1000 * p["cycles"] / total
        bars.append(f'<rect class="phase" data-phase="{i}" data-kernel="{_esc(p["kernel"])}" '
                    f'x="{x:.3f}" y="0" width="{max(w, 0.5):.3f}" height="30" '
                    f'fill="{_BOUND_COLOURS.get(p["bound"], "#888")}"><title>phase {i}: '
                    f'{_esc(p["kernel"])}, {p["cycles"]:,} cycles ({p["bound"]}-bound)</title>'
                    f"</rect>")
        x += w
    legend = " ".join(f'<span class="swatch" style="background:{c}"></span>{b}-bound'
                      for b, c in _BOUND_COLOURS.items() if b != "stream_out")
    return (f'<div id="timeline-panel"><div class="toolbar">phases, one after another '
            f'({len(phases)}; {total:,} cycles per sample in all) — {legend} '
            f'<label>phase <input id="phase-slider" type="range" min="0" '
            f'max="{max(len(phases) - 1, 0)}" value="0"></label> '
            f'<span id="phase-name"></span> '
            f'<label><input id="all-phases" type="checkbox"> all phases</label></div>'
            f'<svg id="timeline" viewBox="0 0 1000 30" preserveAspectRatio="none">'
            f'{"".join(bars)}<rect id="phase-cursor" x="0" y="0" width="0" height="30"/></svg>'
            f"</div>")


_PAGE_STYLE = """
body { font-family: sans-serif; margin: 12px 18px; color: #222; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
h2 { font-size: 15px; margin: 6px 0; }
#headline { font-size: 20px; font-weight: bold; margin: 4px 0; }
.reason { color: #555; margin: 2px 0 8px 0; }
.figures th { text-align: left; padding-right: 12px; font-weight: normal; color: #555; }
main { display: flex; gap: 16px; align-items: flex-start; }
#map-panel { flex: 1 1 auto; min-width: 0; }
#map svg#layout { width: 100%; height: 70vh; border: 1px solid #ccc; background: #fff; }
#details { flex: 0 0 280px; border: 1px solid #ccc; padding: 8px; min-height: 200px;
           white-space: pre-wrap; font-size: 13px; }
.toolbar { margin: 6px 0; font-size: 13px; }
.swatch { display: inline-block; width: 12px; height: 12px; margin: 0 3px 0 8px;
          vertical-align: middle; border: 1px solid #555; }
.ramp { display: inline-block; width: 120px; height: 10px; vertical-align: middle;
        background: linear-gradient(to right, #ffffb2, #fecc5c, #fd8d3c, #f03b20, #bd0026,
                                    #54006e); }
.muted { color: #777; }
#timeline { width: 100%; height: 30px; border: 1px solid #ccc; }
.phase { stroke: #fff; stroke-width: 0.3; cursor: pointer; }
#phase-cursor { fill: none; stroke: #000; stroke-width: 2; vector-effect: non-scaling-stroke; }
table#kernels { border-collapse: collapse; font-size: 12px; }
table#kernels td, table#kernels th { border-bottom: 1px solid #eee; padding: 2px 8px;
                                     text-align: left; }
td.num { text-align: right; }
tr.hot { background: #ffe9a8; }
footer { margin-top: 10px; color: #777; font-size: 12px; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("layout-data").textContent);
  var svg = document.getElementById("layout");
  var body = document.getElementById("details-body");
  function fmt(n) { return Number(n).toLocaleString("en-US"); }
  function show(name) {
    var k = data.kernels[name];
    if (!k) { return; }
    var r = k.rect;
    var lines = [name + " (" + k.kind + ")" + (name === data.bottleneck ?
                   (data.stream ? "  slowest phase" : "  bottleneck") : ""),
                 "rect x,y,w,h  " + r.join(","), "PEs  " + fmt(r[2] * r[3]),
                 "cycles/sample  " + fmt(k.cycles), "SRAM/PE  " + fmt(k.sram) + " B",
                 "ONNX nodes  " + (k.origin.join(", ") || "-")];
    body.textContent = lines.join("\n");
    body.classList.remove("muted");
    document.querySelectorAll("#kernels tr.hot").forEach(function (t) {
      t.classList.remove("hot"); });
    var row = document.querySelector('#kernels tr[data-name="' + CSS.escape(name) + '"]');
    if (row) { row.classList.add("hot"); }
  }
  document.querySelectorAll("rect.kernel").forEach(function (el) {
    el.addEventListener("mouseenter", function () { show(el.getAttribute("data-name")); });
  });
  var link = document.getElementById("busiest-link");
  if (link) {
    link.addEventListener("mouseenter", function () {
      body.textContent = link.querySelector("title").textContent;
      body.classList.remove("muted");
    });
  }
  var sel = document.getElementById("color-select");
  if (sel) {
    sel.addEventListener("change", function () {
      document.querySelectorAll("image.heat").forEach(function (im) {
        im.setAttribute("visibility", im.getAttribute("data-key") === sel.value ?
                        "visible" : "hidden");
      });
    });
  }
  document.getElementById("fit-layout").addEventListener("click", function () {
    svg.setAttribute("viewBox", data.fit); });
  document.getElementById("fit-grid").addEventListener("click", function () {
    svg.setAttribute("viewBox", "0 0 " + data.grid[0] + " " + data.grid[1]); });
  if (data.stream) {
    var slider = document.getElementById("phase-slider");
    var all = document.getElementById("all-phases");
    var name = document.getElementById("phase-name");
    var cursor = document.getElementById("phase-cursor");
    var bars = document.querySelectorAll("rect.phase");
    var pick = function (i) {
      i = Number(i);
      var phaseOf = {};
      document.querySelectorAll("rect.kernel").forEach(function (r) {
        var on = all.checked || Number(r.getAttribute("data-phase")) === i;
        phaseOf[r.getAttribute("data-name")] = on;
        r.setAttribute("visibility", on ? "visible" : "hidden");
      });
      document.querySelectorAll("g.klabel").forEach(function (g) {
        g.setAttribute("visibility", phaseOf[g.getAttribute("data-name")] ? "visible" : "hidden");
      });
      var ol = document.getElementById("bottleneck-outline");
      if (ol) {
        var b = document.querySelector("rect.kernel.bottleneck");
        ol.setAttribute("visibility", (all.checked ||
          Number(b.getAttribute("data-phase")) === i) ? "visible" : "hidden");
      }
      var p = data.phases[i];
      if (p) {
        name.textContent = "#" + i + " " + p.kernel + ": " + fmt(p.cycles) + " cycles (" +
          p.bound + "-bound)";
        var bar = bars[i];
        cursor.setAttribute("x", bar.getAttribute("x"));
        cursor.setAttribute("width", bar.getAttribute("width"));
        show(p.kernel);
      }
    };
    slider.addEventListener("input", function () { pick(slider.value); });
    all.addEventListener("change", function () { pick(slider.value); });
    bars.forEach(function (bar) {
      bar.addEventListener("mouseenter", function () {
        slider.value = bar.getAttribute("data-phase"); pick(slider.value); });
    });
    pick(0);
  }
})();
"""


# --- the terminal's mini-map ----------------------------------------------------------

def ascii_map(report: dict[str, Any], width: int = _MINI_WIDTH) -> list[str]:
    """A character map of the placement (north up), zoomed to the part of
    the grid the kernels use: each cell shows the kind letter of the kernel
    covering its centre, upper and lower case alternating from kernel to
    kernel so neighbours stand apart ('#' the bottleneck kernel, '.' free
    PEs), with a legend. Stream mode: the phases share the PEs, so the map
    shows the largest phase."""
    t = report["target"]
    W, H = int(t["width"]), int(t["height"])
    kernels = [k for k in report["kernels"] if k.get("rect")]
    if report.get("mode") == "stream" and kernels:
        kernels = [max(kernels, key=lambda k: k["rect"][2] * k["rect"][3])]
    if not kernels:
        return [f"map ({W}x{H} PEs): no kernel placed"]
    # the used corner of the grid (from the origin, so positions read true), a margin kept
    mx = max(k["rect"][0] + k["rect"][2] for k in kernels)
    my = max(k["rect"][1] + k["rect"][3] for k in kernels)
    vw = min(W, mx + max(1, mx // 20))
    vh = min(H, my + max(1, my // 20))
    cols = max(1, min(width, vw))
    scale = vw / cols
    rows = max(1, min(int(round(vh / scale / 2)), 2 * cols))  # a cell: twice as high as wide
    sy = vh / rows
    b = (report["summary"].get("bottleneck") or {}).get("kernel")
    mark_b = report.get("mode") != "stream"
    letters: dict[str, str] = {}
    for k in kernels:
        if k["kind"] not in letters:
            c = (k["kind"][:1] or "k").lower()
            while c in letters.values() or not c.isalpha():
                c = chr(ord("a") + (ord(c) - ord("a") + 1) % 26)
            letters[k["kind"]] = c
    grid = np.full((rows, cols), ".", dtype="<U1")
    cx = (np.arange(cols) + 0.5) * scale
    cy = (np.arange(rows) + 0.5) * sy
    for i, k in enumerate(kernels):
        x, y, w, h = k["rect"]
        xs = np.nonzero((cx >= x) & (cx < x + w))[0]
        ys = np.nonzero((cy >= y) & (cy < y + h))[0]
        if not xs.size:  # narrower than a cell: the nearest column
            xs = np.array([min(cols - 1, int((x + w / 2) / scale))])
        if not ys.size:
            ys = np.array([min(rows - 1, int((y + h / 2) / sy))])
        ch = letters[k["kind"]]
        ch = "#" if k["name"] == b and mark_b else (ch.upper() if i % 2 else ch)
        grid[np.ix_(ys, xs)] = ch
    part = "" if (vw, vh) == (W, H) else f", showing x < {vw} and y < {vh}"
    out = [f"map ({W}x{H} PEs{part}; north up, one character ~ {scale:.1f}x{sy:.1f} PEs):"]
    out += ["  |" + "".join(r) + "|" for r in grid[::-1]]
    legend = ", ".join(f"{c}/{c.upper()} {kd}" for kd, c in letters.items())
    if b and mark_b:
        legend += f", # bottleneck {b}"
    out.append(f"  {legend}, . free")
    return out
