"""form-kernels: partition the graph-level ops into kernels of the library.

Why fuse: every kernel is a rectangle of PEs and every value crossing
kernels is a routed flow, so an activation, bias or residual add that can
run on the PEs that computed its input should not cost its own rectangle
and route. Rules (greedy, in topological order, deterministic):

- a LayerNorm as older exporters decompose it (ReduceMean, Sub, Pow,
  ReduceMean, Add, Sqrt, Div, [Mul], [Add]) becomes one `norm` kernel;
- a conv absorbs a windowed pooling (MaxPool, AveragePool) that is the only
  reader of its output: alone, the pooling would take the conv's full-size
  output across a kernel boundary, more bytes per sample than its few PE
  rows can take as lanes; fused, only the pooled rows leave the conv;
- an anchor (an op of conv, deconv, matmul, pool, norm, softmax or reduce
  kind) absorbs the element-wise ops that follow it (bias Add, Relu/Erf/...,
  residual Add/Sum) as long as each intermediate value has that op as its
  only reader, is not a model output, and keeps its shape; a matmul also
  absorbs a following pure relabelling (Reshape/Flatten/Squeeze/Unsqueeze
  with constant shape operands), as Linear / Conv1D exports end with one;
- the remaining element-wise ops form element-wise kernels, chained the same
  way; consecutive data-movement ops (Reshape, Concat, Transpose, ...) form
  one datamove kernel; a gather (table lookup) kernel stands alone;
- a group also absorbs "diamonds": an op of the same fusable class whose
  activation inputs are all computed inside the group or already read by it
  (the Gelu formula x * 0.5 * (1 + erf(x / sqrt 2)) reads x twice), so no
  new dependency, hence no cycle, can arise; values with readers outside the
  group become extra kernel outputs.

Fusing only along single-reader chains and closed diamonds keeps the kernel
graph acyclic. The kernels replace `module.nodes` (named k0, k1, ... in topological order);
`module.edges` gets one edge per
activation value crossing kernels (model inputs from and outputs to the
host); constants are no edges: they live in the SRAM of the kernels that
read them.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from wsec.ir.graph import HOST, Edge, Kernel, Module, Node
from wsec.ir.kernels import KINDS, kind_for_node
from wsec.ir.library_common import LibraryKind, UnsupportedShape
from wsec.ir.library_conv import FUSED_POOLS
from wsec.ir.library_dense import VIEW_OPS
from wsec.ir.types import DTYPES

from .base import Pass, PassContext, PassError

# element-wise ops an anchor absorbs (activations, bias / residual arithmetic, the
# float-valued math of an activation formula); comparisons and logic stay apart
ANCHOR_FUSES = frozenset({
    "Add", "Sub", "Mul", "Div", "Sum", "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh",
    "HardSigmoid", "HardSwish", "Elu", "Selu", "Gelu", "Softplus", "Softsign", "Erf", "Exp",
    "Log", "Sqrt", "Reciprocal", "Neg", "Abs", "Pow", "Max", "Min", "Mean",
})
# a matmul absorbs a following pure relabelling (VIEW_OPS: its output block is
# the same bytes before and after), as exporters write Linear / Conv1D:
# Gemm -> Reshape back to 3-D; alone, each would be a kernel and a route
VIEW_ANCHORS = ("matmul",)
CHAIN_KINDS = ("elementwise", "datamove")
ALONE_KINDS = ("gather",)


def _kind_name(n: Node, module: Module) -> str:
    kind = kind_for_node(n, module.values)
    if kind is None:
        raise PassError(f"node '{n.name}' ({n.op}): no kernel kind implements {n.op}; "
                        "remove or replace the op in the model (see `wsec ops`), or run "
                        "canonicalize if it should have been folded away")
    return kind.name


def _only_user(g: _Grouper, v: str, ops: tuple[str, ...]) -> int | None:
    """The single reader of `v` if it is untaken, has one of `ops` and `v` is
    no model output; else None."""
    us = g.users.get(v, [])
    if v in g.outputs or len(us) != 1 or g.taken[us[0]] or g.nodes[us[0]].op not in ops:
        return None
    return us[0]


def _const_operand(g: _Grouper, n: Node, v: str) -> bool:
    """Node n reads `v` and a constant as its other operand."""
    other = [x for x in n.inputs if x and x != v]
    return len(other) == 1 and g.m.values[other[0]].const is not None


def match_layernorm(g: _Grouper, i: int) -> list[int] | None:
    """Node indices of a decomposed LayerNorm starting at ReduceMean node i:
    m = ReduceMean(x); d = x - m; v = ReduceMean(d^2); y = d / sqrt(v + eps);
    then optionally y * gamma and + beta (constants). Every intermediate value
    must be read only inside the pattern and be no model output."""
    nodes = g.nodes
    rm = nodes[i]
    if rm.op != "ReduceMean" or not rm.attrs.get("axes") or not rm.attrs.get("keepdims", 1):
        return None
    x = rm.inputs[0]
    sub = _only_user(g, rm.outputs[0], ("Sub",))
    if sub is None or nodes[sub].inputs != [x, rm.outputs[0]]:
        return None
    d = nodes[sub].outputs[0]
    us = g.users.get(d, [])
    if d in g.outputs or len(us) != 2 or any(g.taken[u] for u in us):
        return None
    sq = next((u for u in us if nodes[u].op == "Pow" and _const_operand(g, nodes[u], d)
               or nodes[u].op == "Mul" and nodes[u].inputs == [d, d]), None)
    div = next((u for u in us if nodes[u].op == "Div" and nodes[u].inputs[0] == d), None)
    if sq is None or div is None:
        return None
    body = [i, sub, sq, div]
    rm2 = _only_user(g, nodes[sq].outputs[0], ("ReduceMean",))
    if rm2 is None or nodes[rm2].attrs.get("axes") != rm.attrs.get("axes"):
        return None
    add = _only_user(g, nodes[rm2].outputs[0], ("Add",))
    if add is None or not _const_operand(g, nodes[add], nodes[rm2].outputs[0]):
        return None
    sqrt = _only_user(g, nodes[add].outputs[0], ("Sqrt",))
    if sqrt is None or nodes[div].inputs[1] != nodes[sqrt].outputs[0] or len(
            g.users.get(nodes[sqrt].outputs[0], [])) != 1:
        return None
    body += [rm2, add, sqrt]
    last = nodes[div].outputs[0]
    for op in ("Mul", "Add"):  # the affine scale and shift, when present
        j = _only_user(g, last, (op,))
        if j is None or not _const_operand(g, nodes[j], last):
            break
        body.append(j)
        last = nodes[j].outputs[0]
    return sorted(body)


class _Grouper:
    """Greedy grouping state: who reads each value, which nodes are taken."""

    def __init__(self, module: Module) -> None:
        self.m = module
        self.nodes = module.nodes
        self.users: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for v in dict.fromkeys(x for x in n.inputs if x):
                self.users.setdefault(v, []).append(i)
        self.outputs = set(module.outputs)
        self.kinds = [_kind_name(n, module) for n in self.nodes]
        self.taken = [False] * len(self.nodes)

    def _shape(self, v: str) -> tuple[int, ...]:
        return self.m.values[v].type.shape

    def _fits(self, kind: str, anchor: int, j: int) -> bool:
        """May node j join a group of `kind` anchored at node `anchor`?"""
        if self.taken[j]:
            return False
        if kind in CHAIN_KINDS:
            return self.kinds[j] == kind
        nxt, first = self.nodes[j], self.nodes[anchor]
        outs = [o for o in first.outputs if o]
        if nxt.op in FUSED_POOLS:  # a conv takes its pooling along (see module doc)
            return (kind == "conv" and len([o for o in nxt.outputs if o]) == 1
                    and len(self._shape(nxt.inputs[0])) == 4 and len(first.inputs) > 1
                    and len(self.m.values[first.inputs[1]].type.shape) == 4)
        if nxt.op in VIEW_OPS:
            return (kind in VIEW_ANCHORS and len(outs) == 1 and len(nxt.outputs) == 1
                    and all(self.m.values[i].const is not None for i in nxt.inputs[1:] if i))
        return (nxt.op in ANCHOR_FUSES and len(nxt.outputs) == 1 and len(outs) == 1
                and self._shape(nxt.outputs[0]) == self._shape(outs[0]))

    def _is_act(self, v: str) -> bool:
        return bool(v) and self.m.values[v].const is None

    def _chain(self, kind: str, body: list[int]) -> bool:
        """Extend along single-reader chains from the last node; True if grown."""
        grown = False
        while True:
            last = self.nodes[body[-1]]
            if last.op in FUSED_POOLS and kind == "conv":
                return grown  # nothing joins after a fused pooling
            outs = [o for o in last.outputs if o]
            if len(outs) != 1 or outs[0] in self.outputs or len(self.users.get(outs[0], [])) != 1:
                return grown
            j = self.users[outs[0]][0]
            if not self._fits(kind, body[0], j):
                return grown
            body.append(j)
            self.taken[j] = True
            grown = True

    def _exports(self, body: list[int]) -> int:
        """How many values of the group are read outside it or are model outputs."""
        inside = set(body)
        return sum(1 for i in body for o in self.nodes[i].outputs if o and (
            o in self.outputs or any(u not in inside for u in self.users.get(o, []))))

    def _diamonds(self, kind: str, body: list[int]) -> bool:
        """Absorb readers of group values whose activation inputs the group
        already computes or reads (no new dependency, so no cycle), all or
        nothing: only if the group then exports no more values than before
        (a value also read elsewhere is not worth a second output stream).
        True if grown."""
        trial = list(body)
        changed = True
        while changed:
            changed = False
            produced = {o for i in trial for o in self.nodes[i].outputs if o}
            read = {v for i in trial for v in self.nodes[i].inputs if self._is_act(v)}
            for j in sorted({j for v in produced for j in self.users.get(v, [])}):
                if j in trial or self.nodes[j].op in FUSED_POOLS or \
                        not self._fits(kind, body[0], j):
                    continue
                if all(x in produced or x in read for x in self.nodes[j].inputs
                       if self._is_act(x)):
                    trial.append(j)
                    changed = True
                    break
        if len(trial) == len(body) or self._exports(trial) > self._exports(body):
            return False
        for j in trial[len(body):]:
            self.taken[j] = True
        body[:] = trial
        return True

    def groups(self) -> list[tuple[str, list[int]]]:
        out: list[tuple[str, list[int]]] = []
        for i in range(len(self.nodes)):
            if self.taken[i]:
                continue
            ln = match_layernorm(self, i)
            if ln is not None:
                for j in ln:
                    self.taken[j] = True
                out.append(("norm", ln))
                continue
            kind = self.kinds[i]
            body = [i]
            self.taken[i] = True
            if kind not in ALONE_KINDS:
                while self._chain(kind, body) | self._diamonds(kind, body):
                    pass
            out.append((kind, sorted(body)))
        return out


def _groups(module: Module) -> list[tuple[str, list[int]]]:
    """(kind, node indices) per kernel, built greedily along single-reader chains."""
    return _Grouper(module).groups()


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
    lib = KINDS[kind]
    assert isinstance(lib, LibraryKind)
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
        port_dims(module)


def port_dims(module: Module) -> None:
    """Record in each kernel's dims what crosses its ports per sample: `Ie`,
    the elements of its activation inputs, and `Oe`, those of its outputs
    times the sinks each goes to (every sink gets its own bundle of lanes),
    and how many bundles share each side (`In` in, `On` out), so the kinds'
    cost models can charge the lanes (wsec.ir.library_common.lane_cycles)."""
    ie: dict[str, int] = {}
    oe: dict[str, int] = {}
    n_in: dict[str, int] = {}
    n_out: dict[str, int] = {}
    for e in module.edges:
        n = module.values[e.value].type.numel
        sinks = list(dict.fromkeys(e.dsts))
        if e.src != HOST:
            oe[e.src] = oe.get(e.src, 0) + n * len(sinks)
            n_out[e.src] = n_out.get(e.src, 0) + len(sinks)
        for d in sinks:
            if d != HOST:
                ie[d] = ie.get(d, 0) + n
                n_in[d] = n_in.get(d, 0) + 1
    for k in module.kernels():
        k.dims["Ie"] = ie.get(k.name, 0)
        k.dims["Oe"] = oe.get(k.name, 0)
        k.dims["In"] = n_in.get(k.name, 0)
        k.dims["On"] = n_out.get(k.name, 0)
