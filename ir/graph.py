"""The wsec IR: one typed dataflow graph that travels the whole pipeline.

Graph level: `Node`s are ONNX-like ops (op = ONNX op type) on typed `Value`s.
Kernel level: `Kernel`s (a Node subclass) implement fused groups of graph
ops (kept in `body`) and are connected by `Edge`s that carry bytes per
sample. Passes enrich the same objects in place: a kernel gains `knobs`
after sizing, a `rect` after placement, an `sram` map after allocation; an
edge gains a `color` and `routes` after routing. `Module.properties` records
which of those stages hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .types import ConstData, TensorType

# Stage properties a pass may require / ensure, in pipeline order.
PROPERTIES = ("canonical", "kernels", "sized", "placed", "routed", "allocated", "scheduled")

# Router ports. RAMP is the link between a router and its own core.
PORTS = ("N", "E", "S", "W", "RAMP")

# Pseudo kernel names for host I/O endpoints of edges.
HOST = "@host"

AttrValue = int | float | str | list[int] | list[float] | list[str]


@dataclass
class Value:
    """A single-assignment tensor value; `const` is set for constants."""

    name: str
    type: TensorType
    const: ConstData | None = None


@dataclass
class Node:
    """A graph-level operation (ONNX semantics for `op`, default domain).

    `inputs` may contain "" for an omitted optional input, as in ONNX.
    """

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, AttrValue] = field(default_factory=dict)


@dataclass(frozen=True)
class Rect:
    """A placed rectangle of PEs: lower-left corner (x, y), width w, height h."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h

    @property
    def x1(self) -> int:
        return self.x + self.w

    @property
    def y1(self) -> int:
        return self.y + self.h

    def overlaps(self, o: Rect) -> bool:
        return self.x < o.x1 and o.x < self.x1 and self.y < o.y1 and o.y < self.y1

    def contains(self, x: int, y: int) -> bool:
        return self.x <= x < self.x1 and self.y <= y < self.y1

    def centre(self) -> tuple[float, float]:
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)


@dataclass
class SramRegion:
    """One named region of a PE's SRAM map (byte offset and size)."""

    name: str
    offset: int
    size: int


@dataclass
class Kernel(Node):
    """A kernel of the kernel library: a rectangle of PEs running `body`.

    `kind` names the kernel kind in `wsec.ir.kernels`; `dims` are the problem
    dimensions its cost model reads; `origin` lists the ONNX node names it
    implements. Pass-provided fields are None until that pass has run.
    """

    kind: str = ""
    dims: dict[str, int] = field(default_factory=dict)
    body: list[Node] = field(default_factory=list)
    origin: list[str] = field(default_factory=list)
    knobs: dict[str, int] | None = None
    rect: Rect | None = None
    cost: dict[str, int] | None = None
    sram: list[SramRegion] | None = None
    rotated: bool = False


@dataclass(frozen=True)
class Bundle:
    """How an edge's value reaches one of its sinks: `lanes` parallel lanes on
    one `color`. Lane i carries the elements [N*i//L, N*(i+1)//L) of the
    flattened value (N elements, L lanes); lane 0 runs along `path` (the
    waypoints of axis-aligned segments, from its source PE to its landing
    PE), lane i is lane 0 shifted i steps along `axis` at the source and
    nested at every corner, and each lane goes on for `reach` more PEs past
    its landing PE, delivering to every PE it passes (the row multicast of a
    kernel's input). wsec.ir.lanes expands a bundle into per-PE routes.
    `cut` "rows": lane i carries instead the box the sink's kind declares for
    the PE row it lands on (KernelKind.input_cut), not a flat range.
    `pitch` k: lane i is lane 0 shifted i*k steps (every k-th row of the
    path), and at its landing PE a spine of k - 1 PEs along the sink's side
    hands it on to the k - 1 rows after it, each multicast like the landing
    row: a cut lane then carries the union of those k rows' boxes.
    `src_pitch` s (0: the same as `pitch`): the lanes are spaced s on every
    segment before the path's last corner and `pitch` only after it, so a
    bundle WIDENS at its last corner: L lanes leave (L-1)*s+1 slots of the
    source side and serve L*pitch rows of the sink (a source side shorter
    than the sink's rows can still feed every row). A path with no corner
    cannot widen.
    `cut` "owners" (a pitched bundle into a kernel whose rows read the value
    on one row of every k only: a conv's or matmul's owner rows, where its
    fused tail runs): lane i lands on a row that reads, every k-th from
    lane 0's, with NO spine, delivering to its landing row alone (multicast
    along it) and carrying that row's box; the k - 1 rows between read
    nothing of the value and get nothing.
    `cut` "halo" (a windowed kernel's data input: wsec.ir.halo): as "rows",
    but lane i carries its rows' CORE boxes, disjoint rows of the value, and
    the sink's PE rows pass each other the halo rows they share along the
    kernel's columns."""

    sink: str  # a kernel name, or HOST
    color: int
    lanes: int
    axis: tuple[int, int]  # lane 0 -> lane 1 at the source: a unit step along the source side
    path: tuple[tuple[int, int], ...]
    reach: int = 0
    cut: str = ""
    pitch: int = 1
    src_pitch: int = 0

    @property
    def spacing(self) -> int:
        """The lane spacing before the last corner (src_pitch, or pitch)."""
        return self.src_pitch or self.pitch

    @property
    def spine(self) -> int:
        """PEs of the spine each lane hands on along from its landing PE:
        pitch - 1, none for a bundle landing on owner rows (cut "owners")."""
        return 0 if self.cut == "owners" else self.pitch - 1


@dataclass
class Edge:
    """A kernel-level dataflow edge: `value` flows from `src` to every `dsts`.

    `src`/`dsts` are kernel names, or HOST for model inputs/outputs.
    `bytes_per_sample` is what one inference moves along the edge. After
    routing, `bundles` holds one bundle of lanes per sink.
    """

    value: str
    src: str
    dsts: list[str]
    bytes_per_sample: int
    bundles: list[Bundle] | None = None


@dataclass
class Module:
    """A whole model: values, nodes in topological order, edges, attributes."""

    name: str
    values: dict[str, Value] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    properties: set[str] = field(default_factory=set)

    # --- queries -------------------------------------------------------
    def kernels(self) -> Iterator[Kernel]:
        for n in self.nodes:
            if isinstance(n, Kernel):
                yield n

    def kernel(self, name: str) -> Kernel:
        for k in self.kernels():
            if k.name == name:
                return k
        raise KeyError(name)

    def producers(self) -> dict[str, Node]:
        """Map value name -> node producing it (top-level nodes only)."""
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        """Map value name -> top-level nodes consuming it, in node order."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    lst = out.setdefault(i, [])
                    if not lst or lst[-1] is not n:
                        lst.append(n)
        return out

    def add_value(self, name: str, type_: TensorType, const: ConstData | None = None) -> Value:
        if name in self.values:
            raise ValueError(f"value %{name} defined twice")
        v = Value(name, type_, const)
        self.values[name] = v
        return v

    def fresh_name(self, base: str) -> str:
        """A value/node name not used yet, derived from `base`."""
        if base not in self.values:
            return base
        i = 1
        while f"{base}.{i}" in self.values:
            i += 1
        return f"{base}.{i}"

    @property
    def target_name(self) -> str | None:
        return self.attrs.get("target")

    @property
    def grid(self) -> tuple[int, int] | None:
        g = self.attrs.get("grid")
        return (int(g[0]), int(g[1])) if g else None
