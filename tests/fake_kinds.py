"""A test-only kernel kind and module builders for the place/route/allocate
tests, so those tests do not depend on the real kernel library's formulas.

Kind "box": knobs w, h give the rectangle directly; cycles = dims["work"] /
(w*h); SRAM = dims["sram"] (bytes, default 1024). Its constant inputs are
sharded along dim 0 over px and along dim 1 over py (ceil division), so the
PEs in the first column/row hold the largest shard.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import HOST, Edge, Kernel, Module, Node
from wsec.ir.kernel_kind import Dims, KernelKind, Knobs
from wsec.ir.kernels import register
from wsec.ir.target import Target
from wsec.ir.types import Splat, TensorType


class BoxKind(KernelKind):
    name = "box"
    knob_names = ("w", "h")
    description = "test kind: a w x h rectangle"

    def shape(self, dims: Dims, knobs: Knobs, target: Target) -> tuple[int, int]:
        return knobs["w"], knobs["h"]

    def cycles(self, dims: Dims, knobs: Knobs, target: Target) -> int:
        return -(-dims.get("work", 1000) // (knobs["w"] * knobs["h"]))

    def sram(self, dims: Dims, knobs: Knobs, target: Target) -> int:
        return dims.get("sram", 1024)

    def knob_grid(self, dims: Dims, target: Target) -> dict[str, np.ndarray]:
        return {"w": np.arange(1, 9), "h": np.arange(1, 9)}

    def weight_shard(self, dims: Dims, knobs: Knobs, weight_index: int,
                     weight_shape: tuple[int, ...], px: int, py: int,
                     rect: tuple[int, int] | None = None) -> tuple[slice, ...]:
        out = []
        for d, (n, p, parts) in enumerate(zip(weight_shape, (px, py), (knobs["w"], knobs["h"]),
                                              strict=False)):
            step = -(-n // parts)
            out.append(slice(min(n, p * step), min(n, (p + 1) * step)) if d < 2 else slice(0, n))
        out += [slice(0, n) for n in weight_shape[len(out):]]
        return tuple(out)


BOX = register(BoxKind())


class RowsKind(BoxKind):
    """A box whose PE rows each read an even share of its first input's last
    dim (a conv's input cut, without its halo)."""

    name = "rows"
    description = "test kind: a box whose rows each read a share of its input"

    def input_cut(self, dims: Dims, knobs: Knobs, shape: tuple[int, ...]) -> np.ndarray:
        h, n = knobs["h"], shape[-1]
        edges = np.arange(h + 1) * n // h
        boxes = np.zeros((h, 2, len(shape)), dtype=np.int64)
        boxes[:, 1, :] = shape
        boxes[:, 0, -1], boxes[:, 1, -1] = edges[:-1], edges[1:]
        return boxes


ROWS = register(RowsKind())

F32 = "f32"


def box(m: Module, name: str, inputs: list[str], out: str, w: int, h: int,
        sram: int = 1024, work: int = 1000, out_shape: tuple[int, ...] = (1, 64)) -> Kernel:
    """Add a sized 'box' kernel producing `out` to `m`."""
    m.add_value(out, TensorType(F32, out_shape))
    k = Kernel(name=name, op="Kernel", inputs=inputs, outputs=[out], kind="box",
               dims={"work": work, "sram": sram}, origin=[f"{name}_node"],
               knobs={"w": w, "h": h},
               cost={"cycles": -(-work // (w * h)), "sram": sram, "w": w, "h": h})
    m.nodes.append(k)
    return k


def rows(m: Module, name: str, inputs: list[str], out: str, w: int, h: int,
         work: int = 1000, out_shape: tuple[int, ...] = (1, 64)) -> Kernel:
    """Add a sized 'rows' kernel (its rows cut its first input) to `m`."""
    k = box(m, name, inputs, out, w, h, work=work, out_shape=out_shape)
    k.kind = "rows"
    k.body = [Node(f"{name}_node", "Rows", list(inputs), [out])]
    return k


def const(m: Module, name: str, shape: tuple[int, ...]) -> str:
    m.add_value(name, TensorType(F32, shape), Splat(TensorType(F32, shape), 0.5))
    return name


def connect(m: Module) -> Module:
    """Derive m.edges from kernel inputs/outputs (host I/O included)."""
    prod = {o: k.name for k in m.kernels() for o in k.outputs}
    for v in m.inputs:
        prod[v] = HOST
    users: dict[str, list[str]] = {}
    for k in m.kernels():
        for i in k.inputs:
            if i in prod and k.name not in users.setdefault(i, []):
                users[i].append(k.name)
    for v in m.outputs:
        users.setdefault(v, []).append(HOST)
    for v, src in prod.items():
        if users.get(v):
            m.edges.append(Edge(v, src, users[v], m.values[v].type.numel * 2))
    return m


def sized(name: str) -> Module:
    m = Module(name, attrs={"target": "wse2", "grid": [16, 16]})
    m.properties = {"canonical", "kernels", "sized"}
    return m


def chain(n: int = 4, w: int = 3, h: int = 2) -> Module:
    """host -> k0 -> k1 -> ... -> host."""
    m = sized("chain")
    m.add_value("x", TensorType(F32, (1, 64)))
    m.inputs = ["x"]
    prev = "x"
    for i in range(n):
        box(m, f"k{i}", [prev], f"v{i}", w, h)
        prev = f"v{i}"
    m.outputs = [prev]
    return connect(m)


def diamond() -> Module:
    """host -> a -> (b, c) -> d -> host; a's output is multicast."""
    m = sized("diamond")
    m.add_value("x", TensorType(F32, (1, 64)))
    m.inputs = ["x"]
    box(m, "a", ["x"], "va", 2, 3)
    box(m, "b", ["va"], "vb", 3, 3)
    box(m, "c", ["va"], "vc", 4, 2)
    box(m, "d", ["vb", "vc"], "vd", 2, 2)
    m.outputs = ["vd", "va"]
    return connect(m)


def fanout(n: int = 6) -> Module:
    """One producer multicast to n consumers, each an output."""
    m = sized("fanout")
    m.add_value("x", TensorType(F32, (1, 64)))
    m.inputs = ["x"]
    box(m, "src", ["x"], "s", 2, 2)
    for i in range(n):
        box(m, f"c{i}", ["s"], f"o{i}", 2, 1)
    m.outputs = [f"o{i}" for i in range(n)]
    return connect(m)
