"""Routing: turn every dataflow edge into a multicast tree on one color.

Why dimension-ordered trees: the union of X-then-Y paths from one source PE
is a tree (a trunk along the source row, one branch per sink column), so each
PE on it receives from exactly one port and the router configuration is a
single (rx, tx) pair per PE and color — what the hardware holds. Colors are
then a graph-colouring problem on shared PEs, solved greedily (longest
routes first, lowest free color) with a per-PE bitmask in numpy; an edge
whose X-Y tree finds no free color retries as a Y-then-X tree.

Endpoints and host-port convention (the fabric API's, wsec.ir.fabric;
documented in docs/ir.md by example):
- a kernel source sends from the PE of its rectangle boundary nearest the
  centroid of its sinks; that PE's rx is RAMP;
- a host input enters at the West edge, PE (0, y) with y the consumers'
  mean centre row: its rx is "W", the off-grid host port;
- a kernel sink is its entry PE (the PE of its rectangle nearest the source),
  whose tx includes RAMP;
- a host output leaves at the East edge, PE (W-1, y) with y the source row:
  its tx includes "E", the off-grid host port.
Nothing else ever points off the grid.

Accounting (wsec.ir.metrics): per-link load in wavelets per sample over
links (x, y, port) leaving a PE, the host ports and RAMPs included; the
routed wirelength; the most colors at one PE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wsec.ir.fabric import HOST_IN_PORT, HOST_OUT_PORT, Fabric
from wsec.ir.graph import HOST, PORTS, Edge, Hop, Module, Rect
from wsec.ir.metrics import (
    busiest_link,
    colors_per_pe,
    edge_wavelets,
    link_loads,
    route_arrays,
    routed_wirelength,
)

from .base import LayoutInfeasible, Pass, PassContext, PassError, check_range


def _clamp(v: float, lo: int, hi: int) -> int:
    return int(min(max(int(np.floor(v)), lo), hi))


def _nearest_pe(r: Rect, x: float, y: float) -> tuple[int, int]:
    """The PE of `r` nearest the point (x, y)."""
    return _clamp(x, r.x, r.x1 - 1), _clamp(y, r.y, r.y1 - 1)


def _boundary_pe(r: Rect, x: float, y: float) -> tuple[int, int]:
    """The PE on the boundary of `r` nearest (x, y); a point inside the rect
    is pushed to the closest side."""
    px, py = _nearest_pe(r, x, y)
    if r.x < px < r.x1 - 1 and r.y < py < r.y1 - 1:
        sides = [(px - r.x, (r.x, py)), (r.x1 - 1 - px, (r.x1 - 1, py)),
                 (py - r.y, (px, r.y)), (r.y1 - 1 - py, (px, r.y1 - 1))]
        return min(sides, key=lambda s: s[0])[1]
    return px, py


@dataclass
class _Ends:
    """Where an edge starts and ends on the grid."""

    source: tuple[int, int]
    source_rx: str  # RAMP, or W for a host input
    sinks: dict[tuple[int, int], set[str]]  # PE -> extra tx ports (RAMP / E)


def _endpoints(e: Edge, rects: dict[str, Rect], fabric: Fabric) -> _Ends:
    W, H = fabric.width, fabric.height
    kern_dsts = [rects[d] for d in dict.fromkeys(e.dsts) if d != HOST]
    if e.src == HOST:
        ys = [r.centre()[1] for r in kern_dsts]
        sy = _clamp(sum(ys) / len(ys), 0, H - 1) if ys else H // 2
        source, rx = fabric.host_input_pe(sy), HOST_IN_PORT
    else:
        s = rects[e.src]
        pts = [r.centre() for r in kern_dsts]
        if HOST in e.dsts:
            pts.append((W - 0.5, s.centre()[1]))
        cx = sum(p[0] for p in pts) / len(pts)
        cy = sum(p[1] for p in pts) / len(pts)
        source, rx = _boundary_pe(s, cx, cy), "RAMP"
    sinks: dict[tuple[int, int], set[str]] = {}
    for r in kern_dsts:
        sinks.setdefault(_nearest_pe(r, source[0] + 0.5, source[1] + 0.5), set()).add("RAMP")
    if HOST in e.dsts:
        sinks.setdefault(fabric.host_output_pe(source[1]), set()).add(HOST_OUT_PORT)
    return _Ends(source, rx, sinks)


def _tree(ends: _Ends, order: str) -> list[Hop]:
    """The dimension-ordered multicast tree ("xy" or "yx"), as hops sorted by
    (y, x). Coordinates are handled as (a, b): a is routed first."""
    xy = order == "xy"

    def ab(p: tuple[int, int]) -> tuple[int, int]:
        return p if xy else (p[1], p[0])

    a_plus, a_minus, b_plus, b_minus = ("E", "W", "N", "S") if xy else ("N", "S", "E", "W")
    sa, sb = ab(ends.source)
    sinks = {ab(p): ports for p, ports in ends.sinks.items()}
    a_lo = min([sa] + [a for a, _ in sinks])
    a_hi = max([sa] + [a for a, _ in sinks])
    b_span: dict[int, tuple[int, int]] = {}
    for a, b in sinks:
        lo, hi = b_span.get(a, (sb, sb))
        b_span[a] = (min(lo, b), max(hi, b))
    hops: dict[tuple[int, int], tuple[str, set[str]]] = {}
    for a in range(a_lo, a_hi + 1):  # trunk along the source row/column
        rx = ends.source_rx if a == sa else (a_minus if a > sa else a_plus)
        tx = set(sinks.get((a, sb), ()))
        if sa <= a < a_hi:
            tx.add(a_plus)
        if a_lo < a <= sa:
            tx.add(a_minus)
        lo, hi = b_span.get(a, (sb, sb))
        if hi > sb:
            tx.add(b_plus)
        if lo < sb:
            tx.add(b_minus)
        hops[(a, sb)] = (rx, tx)
    for a, (lo, hi) in b_span.items():  # one branch per sink column/row
        for b in range(lo, hi + 1):
            if b == sb:
                continue
            tx = set(sinks.get((a, b), ()))
            if sb < b < hi:
                tx.add(b_plus)
            if lo < b < sb:
                tx.add(b_minus)
            hops[(a, b)] = (b_minus if b > sb else b_plus, tx)
    out = []
    for (a, b), (rx, tx) in hops.items():
        x, y = (a, b) if xy else (b, a)
        out.append(Hop(x, y, (rx,), tuple(p for p in PORTS if p in tx)))
    out.sort(key=lambda h: (h.y, h.x))
    return out


def _coords(hops: list[Hop]) -> tuple[np.ndarray, np.ndarray]:
    return (np.fromiter((h.x for h in hops), np.int64, len(hops)),
            np.fromiter((h.y for h in hops), np.int64, len(hops)))


def _lowest_free(used: np.ndarray, colors: int) -> int | None:
    busy = int(np.bitwise_or.reduce(used)) if used.size else 0
    for c in range(colors):
        if not busy >> c & 1:
            return c
    return None


def _popcount(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.uint32)
    return np.unpackbits(a.view(np.uint8).reshape(*a.shape, 4), axis=-1).sum(axis=-1)


class _Colorer:
    """Greedy coloring (longest route first, lowest color free on every PE of
    the X-Y tree, else of the Y-X tree), then min-conflicts repair: an edge
    with no free color takes the (tree, color) that evicts the fewest routed
    edges, which go back in the queue; a tabu list stops ping-pong. The work
    is bounded by an eviction budget."""

    def __init__(self, ends: list[_Ends], W: int, H: int, colors: int) -> None:
        self.ends, self.W, self.H, self.colors = ends, W, H, colors
        n = len(ends)
        self.trees: dict[str, list[list[Hop] | None]] = {"xy": [_tree(e, "xy") for e in ends],
                                                         "yx": [None] * n}
        self.pts: dict[str, list[tuple[np.ndarray, np.ndarray] | None]] = {
            "xy": [_coords(t) for t in self.trees["xy"]], "yx": [None] * n}  # type: ignore[arg-type]
        self.color: list[int | None] = [None] * n
        self.variant = ["xy"] * n
        self.used = np.zeros((H, W), dtype=np.uint32)
        self.owner: np.ndarray | None = None  # (colors, H, W) edge index + 1, made on demand

    def _alt(self, i: int, v: str) -> tuple[np.ndarray, np.ndarray]:
        if self.pts[v][i] is None:
            self.trees[v][i] = _tree(self.ends[i], v)
            self.pts[v][i] = _coords(self.trees[v][i])  # type: ignore[arg-type]
        return self.pts[v][i]  # type: ignore[return-value]

    @property
    def coords(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [self.pts[v][i] for i, v in enumerate(self.variant)]  # type: ignore[misc]

    def _assign(self, i: int, v: str, c: int) -> None:
        xs, ys = self._alt(i, v)
        self.used[ys, xs] |= np.uint32(1 << c)
        if self.owner is not None:
            self.owner[c, ys, xs] = i + 1
        self.color[i], self.variant[i] = c, v

    def _unassign(self, i: int) -> None:
        c = self.color[i]
        assert c is not None
        xs, ys = self._alt(i, self.variant[i])
        self.used[ys, xs] &= np.uint32(~(1 << c) & 0xFFFFFFFF)
        if self.owner is not None:
            self.owner[c, ys, xs] = 0
        self.color[i] = None

    def _make_owner(self) -> np.ndarray:
        dt = np.int16 if len(self.ends) < 32767 else np.int32
        owner = np.zeros((self.colors, self.H, self.W), dtype=dt)
        for i, c in enumerate(self.color):
            if c is not None:
                xs, ys = self._alt(i, self.variant[i])
                owner[c, ys, xs] = i + 1
        return owner

    def run(self, budget: int) -> int | None:
        """Color every edge; the index of an edge that cannot be colored, or None."""
        n = len(self.ends)
        queue = sorted(range(n), key=lambda i: (-len(self.trees["xy"][i]), i))  # type: ignore[arg-type]
        tabu: dict[tuple[int, int], int] = {}  # (edge, color) -> step until which barred
        step = 0
        while queue:
            i = queue.pop(0)
            step += 1
            done = False
            for v in ("xy", "yx"):
                xs, ys = self._alt(i, v)
                c = _lowest_free(self.used[ys, xs], self.colors)
                if c is not None:
                    self._assign(i, v, c)
                    done = True
                    break
            if done:
                continue
            if budget <= 0:
                self.variant[i] = "xy"
                return i
            if self.owner is None:
                self.owner = self._make_owner()
            best: tuple[int, int, str, int, np.ndarray] | None = None
            for v in ("xy", "yx"):
                xs, ys = self._alt(i, v)
                owners = self.owner[:, ys, xs]
                for c in range(self.colors):
                    if tabu.get((i, c), -1) >= step:
                        continue
                    hit = np.unique(owners[c])
                    hit = hit[hit > 0] - 1
                    cost = sum(len(self.trees[self.variant[j]][j]) for j in hit)  # type: ignore[arg-type]
                    if best is None or (len(hit), cost) < (best[0], best[1]):
                        best = (len(hit), cost, v, c, hit)
            if best is None:
                self.variant[i] = "xy"
                return i
            _, _, v, c, hit = best
            for j in hit:
                self._unassign(int(j))
                tabu[(int(j), c)] = step + 2 * self.colors
                queue.insert(0, int(j))
                budget -= 1
            self._assign(i, v, c)
        return None


@dataclass(frozen=True)
class Route(Pass):
    """Route every edge as a colored multicast tree and account link loads."""

    name = "route"
    requires = ("placed",)
    ensures = ("routed",)
    invalidates = ("allocated",)
    repair_factor: int = 10  # rip-up budget: evictions per edge before giving up

    def __post_init__(self) -> None:
        check_range(self, "repair_factor", 0)

    def run(self, module: Module, ctx: PassContext) -> None:
        fabric = ctx.fabric
        W, H, colors = fabric.width, fabric.height, fabric.usable_colors
        if colors > 32:
            raise PassError(f"route: target '{ctx.target.name}' has {colors} usable colors; "
                            f"the router's color masks hold at most 32")
        rects = _rects(module)
        ends = [_endpoints(e, rects, fabric) for e in module.edges]
        col = _Colorer(ends, W, H, colors)
        failed = col.run(budget=self.repair_factor * len(ends))
        if failed is not None:
            xs, ys = col.coords[failed]
            raise _color_error(module.edges[failed], xs, ys, col.used, fabric)
        for i, e in enumerate(module.edges):
            e.color, e.routes = col.color[i], col.trees[col.variant[i]][i]
        _account(module, fabric)


def _rects(module: Module) -> dict[str, Rect]:
    rects: dict[str, Rect] = {}
    for k in module.kernels():
        if k.rect is None:
            raise PassError(f"kernel '{k.name}' ({k.kind}) has no rectangle: run the place pass "
                            f"before route")
        rects[k.name] = k.rect
    for e in module.edges:
        for n in [e.src, *e.dsts]:
            if n != HOST and n not in rects:
                raise PassError(f"edge %{e.value} names kernel '{n}', which is not in the module")
    return rects


def _color_error(e: Edge, xs: np.ndarray, ys: np.ndarray, used: np.ndarray,
                 fabric: Fabric) -> LayoutInfeasible:
    counts = _popcount(used[ys, xs])
    j = int(np.argmax(counts))
    x, y = int(xs[j]), int(ys[j])
    return LayoutInfeasible(
        f"edge %{e.value} from '{e.src}' to {e.dsts} cannot be routed: no color of the "
        f"{fabric.usable_colors} usable is free on all {len(xs)} PEs of its route; the busiest, "
        f"PE ({x}, {y}), already carries {int(counts[j])} other edges; use a larger grid "
        f"(--grid) or target so that kernels spread out, or reduce fan-out there")


def _account(module: Module, fabric: Fabric) -> None:
    """Link loads (wavelets/sample, RAMP included), routed wirelength and color use."""
    ra = route_arrays(module.edges)
    ebytes = np.array([e.bytes_per_sample for e in module.edges], dtype=np.int64)
    top = busiest_link(link_loads(ra, edge_wavelets(ebytes, fabric), fabric))
    module.attrs["max_link_load"] = top.wavelets if top else 0
    module.attrs["max_link"] = top.as_list() if top else [0, 0, "N"]
    module.attrs["routed_wirelength"] = routed_wirelength(ra, ebytes, fabric)
    module.attrs["max_colors_per_pe"] = colors_per_pe(ra)
