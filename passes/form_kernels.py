"""form-kernels: partition the graph-level ops into kernels of the library.

Why fuse: every kernel is a rectangle of PEs and every value crossing
kernels is a routed flow, so an activation, bias or residual add that can
run on the PEs that computed its input should not cost its own rectangle
and route. Rules (greedy, in topological order, deterministic):

- an anchor (an op of conv, matmul, pool, norm or softmax kind) absorbs the
  element-wise ops that follow it (bias Add, Relu/Clip/Sigmoid..., residual
  Add/Sum) as long as each intermediate value has that op as its only
  reader, is not a model output, and keeps its shape;
- the remaining element-wise ops form element-wise kernels, chained the same
  way; consecutive data-movement ops (Reshape, Concat, Transpose, ...) form
  one datamove kernel.

Fusing only along single-reader chains keeps the kernel graph acyclic. The
kernels replace `module.nodes` (named k0, k1, ... in topological order);
`module.edges` gets one edge per activation value crossing kernels (model
inputs from and outputs to the host); constants are no edges: they live in
the SRAM of the kernels that read them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from wsec.ir.graph import HOST, Edge, Kernel, Module, Node
from wsec.ir.kernels import kind_for_op
from wsec.ir.library_common import UnsupportedShape
from wsec.ir.types import DTYPES

from .base import Pass, PassContext, PassError

# element-wise ops an anchor absorbs (activations, bias / residual arithmetic)
ANCHOR_FUSES = frozenset({
    "Add", "Sub", "Mul", "Div", "Sum", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh",
    "HardSigmoid", "HardSwish", "Elu", "Selu", "Gelu", "Softplus",
})
CHAIN_KINDS = ("elementwise", "datamove")


def _kind_name(n: Node) -> str:
    kind = kind_for_op(n.op)
    if kind is None:
        raise PassError(f"node '{n.name}' ({n.op}): no kernel kind implements {n.op}; "
                        "remove or replace the op in the model (see `wsec ops`), or run "
                        "canonicalize if it should have been folded away")
    return kind.name


def _groups(module: Module) -> list[tuple[str, list[int]]]:
    """(kind, node indices) per kernel, built greedily along single-reader chains."""
    nodes = module.nodes
    users: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for v in dict.fromkeys(x for x in n.inputs if x):
            users.setdefault(v, []).append(i)
    outputs = set(module.outputs)
    kinds = [_kind_name(n) for n in nodes]
    taken = [False] * len(nodes)
    groups: list[tuple[str, list[int]]] = []
    for i in range(len(nodes)):
        if taken[i]:
            continue
        kind = kinds[i]
        body = [i]
        taken[i] = True
        while True:
            last = nodes[body[-1]]
            outs = [o for o in last.outputs if o]
            if len(outs) != 1 or outs[0] in outputs or len(users.get(outs[0], [])) != 1:
                break
            j = users[outs[0]][0]
            nxt = nodes[j]
            if taken[j]:
                break
            if kind in CHAIN_KINDS:
                ok = kinds[j] == kind
            else:
                ok = (nxt.op in ANCHOR_FUSES and len(nxt.outputs) == 1
                      and module.values[nxt.outputs[0]].type.shape
                      == module.values[outs[0]].type.shape)
            if not ok:
                break
            body.append(j)
            taken[j] = True
        groups.append((kind, body))
    return groups


def _topo_order(module: Module, groups: list[tuple[str, list[int]]]) -> list[int]:
    """Group indices in a topological order, ties broken by first node index."""
    owner: dict[str, int] = {}
    for g, (_, body) in enumerate(groups):
        for i in body:
            for o in module.nodes[i].outputs:
                if o:
                    owner[o] = g
    succs: list[set[int]] = [set() for _ in groups]
    indeg = [0] * len(groups)
    for g, (_, body) in enumerate(groups):
        preds = {owner[v] for i in body for v in module.nodes[i].inputs
                 if v in owner and owner[v] != g}
        indeg[g] = len(preds)
        for p in preds:
            succs[p].add(g)
    heap = [(groups[g][1][0], g) for g in range(len(groups)) if indeg[g] == 0]
    heapq.heapify(heap)
    order: list[int] = []
    while heap:
        _, g = heapq.heappop(heap)
        order.append(g)
        for s in sorted(succs[g]):
            indeg[s] -= 1
            if indeg[s] == 0:
                heapq.heappush(heap, (groups[s][1][0], s))
    if len(order) != len(groups):
        raise PassError("form-kernels: the graph has a cycle; it cannot be partitioned "
                        "into kernels (is the input graph in topological order?)")
    return order


def _make_kernel(module: Module, name: str, kind: str, body: list[Node],
                 external_users: set[str]) -> Kernel:
    produced = {o for n in body for o in n.outputs if o}
    inputs = list(dict.fromkeys(i for n in body for i in n.inputs if i and i not in produced))
    outputs = [o for n in body for o in n.outputs if o and o in external_users]
    lib = kind_for_op(body[0].op)
    assert lib is not None and lib.name == kind
    try:
        dims = lib.dims_from(body, module.values)
    except UnsupportedShape as e:
        raise PassError(f"node '{body[0].name}' ({body[0].op}): the {kind} kernel cannot map "
                        f"it: {e}") from None
    return Kernel(name=name, op=kind, inputs=inputs, outputs=outputs, kind=kind,
                  dims={k: int(v) for k, v in dims.items()}, body=body,
                  origin=[n.name for n in body])


def build_edges(module: Module, itemsize: int) -> list[Edge]:
    """One edge per activation value crossing kernels (host I/O included)."""
    src: dict[str, str] = {v: HOST for v in module.inputs}
    for k in module.kernels():
        for o in k.outputs:
            src[o] = k.name
    dsts: dict[str, list[str]] = {}
    for k in module.kernels():
        for i in k.inputs:
            if i in src and src[i] != k.name:
                lst = dsts.setdefault(i, [])
                if k.name not in lst:
                    lst.append(k.name)
    for v in module.outputs:
        if v in src and HOST not in dsts.setdefault(v, []):
            dsts[v].append(HOST)
    edges = []
    for v, s in src.items():
        if dsts.get(v) and not (s == HOST and dsts[v] == [HOST]):
            edges.append(Edge(v, s, dsts[v], module.values[v].type.numel * itemsize))
    return edges


@dataclass(frozen=True)
class FormKernels(Pass):
    """Group graph ops into library kernels and derive the kernel-level edges."""

    name = "form-kernels"
    requires = ("canonical",)
    ensures = ("kernels",)

    def run(self, module: Module, ctx: PassContext) -> None:
        done = [n for n in module.nodes if isinstance(n, Kernel)]
        if done:
            raise PassError(f"form-kernels: the module already has kernels ('{done[0].name}'); "
                            "run it on a graph-level module")
        groups = _groups(module)
        order = _topo_order(module, groups)
        owner = {o: g for g, (_, body) in enumerate(groups)
                 for i in body for o in module.nodes[i].outputs if o}
        external: set[str] = set(module.outputs)
        for g, (_, body) in enumerate(groups):
            for i in body:
                for v in module.nodes[i].inputs:
                    if v in owner and owner[v] != g:
                        external.add(v)
        kernels = []
        for idx, g in enumerate(order):
            kind, body = groups[g]
            kernels.append(_make_kernel(module, f"k{idx}", kind,
                                        [module.nodes[i] for i in body], external))
        module.nodes = list(kernels)
        module.edges = build_edges(module, DTYPES[ctx.target.dtype].itemsize)
