"""verify_module: one valid module, then one broken invariant per test.

Each failing case asserts the message names the node/kernel/edge/value, so
a pass author reading it knows what they broke.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from wsec.ir.errors import WsecError
from wsec.ir.graph import HOST, Bundle, Edge, Kernel, Module, Node, Rect, SramRegion, Value
from wsec.ir.kernel_kind import KernelKind
from wsec.ir.kernels import register
from wsec.ir.types import Dense, Splat, TensorType
from wsec.ir.verify import VerifyError, verify_module

T = TensorType("f32", (1, 8))


class _Ew(KernelKind):
    """The fixture's kind: knob n, a 2x2 rectangle, a body of ONNX ops."""

    name = "ew"
    knob_names = ("n",)
    has_body = True

    def shape(self, dims, knobs, target):  # noqa: ANN001, ANN201
        return 2, 2

    def cycles(self, dims, knobs, target):  # noqa: ANN001, ANN201
        return 100


class _Bare(KernelKind):
    """A cost-model-only kind (as the ISPD contest's): kernels without bodies."""

    name = "bare"


register(_Ew())
register(_Bare())


def valid() -> Module:
    """x -> k0[a = Relu(x); b = Add(a, c)] -> b -> k1[Neg] -> y, placed and routed."""
    m = Module("m", attrs={"target": "wse2", "grid": [16, 8]},
               properties={"canonical", "kernels", "sized", "placed", "routed", "allocated"})
    for name in ("x", "a", "b", "y"):
        m.add_value(name, T)
    m.add_value("c", T, Splat(T, 1.0))
    m.inputs, m.outputs = ["x"], ["y"]
    k0 = Kernel("k0", "ew", ["x", "c"], ["b"], kind="ew", knobs={"n": 1}, rect=Rect(0, 0, 2, 2),
                sram=[SramRegion("buf", 0, 64)],
                body=[Node("relu", "Relu", ["x"], ["a"]), Node("add", "Add", ["a", "c"], ["b"])])
    k1 = Kernel("k1", "ew", ["b"], ["y"], kind="ew", knobs={"n": 1}, rect=Rect(2, 0, 2, 2),
                sram=[], body=[Node("neg", "Neg", ["b"], ["y"])])
    m.nodes = [k0, k1]
    m.edges = [
        Edge("x", HOST, ["k0"], 32, [Bundle("k0", 1, 1, (0, 1), ((0, 0),))]),
        Edge("b", "k0", ["k1"], 32, [Bundle("k1", 2, 1, (0, 1), ((1, 0), (2, 0)))]),
        Edge("y", "k1", [HOST], 32, [Bundle(HOST, 3, 1, (0, 1), ((3, 0), (15, 0)))]),
    ]
    return m


def graph_level() -> Module:
    """x -> Relu -> a -> Add(a, c) -> y, no kernels."""
    m = Module("g")
    for name in ("x", "a", "y"):
        m.add_value(name, T)
    m.add_value("c", T, Dense(T, np.ones((1, 8), dtype=np.float32)))
    m.inputs, m.outputs = ["x"], ["y"]
    m.nodes = [Node("relu", "Relu", ["x"], ["a"]), Node("add", "Add", ["a", "c", ""], ["y"])]
    return m


def test_valid_modules_pass() -> None:
    verify_module(valid())
    verify_module(graph_level())


def _fails(m: Module, pattern: str) -> None:
    with pytest.raises(VerifyError, match=pattern) as exc:
        verify_module(m)
    assert isinstance(exc.value, WsecError)


def _k(m: Module, name: str) -> Kernel:
    return m.kernel(name)


Break = Callable[[Module], object]

CASES: list[tuple[str, Break, str]] = [
    ("name mismatch", lambda m: m.values.__setitem__("a", Value("z", T)),
     r"value %a is stored under that key but is named %z"),
    ("no type", lambda m: setattr(m.values["a"], "type", None), r"value %a has no type"),
    ("const type", lambda m: setattr(m.values["c"], "const", Splat(TensorType("f16", (1, 8)), 1)),
     r"constant %c is typed f32\[1,8\] but its data is f16\[1,8\]"),
    ("twice", lambda m: m.nodes[1].outputs.__setitem__(0, "a"),
     r"value %a is defined twice: by node 'relu' \(Relu\) and by node 'add' \(Add\)"),
    ("input and const", lambda m: m.inputs.append("c"),
     r"value %c is defined twice: by model input and by a constant"),
    ("undeclared output", lambda m: m.nodes[0].outputs.append("q"),
     r"node 'relu' \(Relu\) defines %q, which is not in the module's values"),
    ("never defined", lambda m: m.add_value("orphan", T), r"value %orphan is never defined"),
    ("unknown use", lambda m: m.nodes[1].inputs.append("nope"),
     r"node 'add' \(Add\) uses %nope, which is not a value of the module"),
    ("order", lambda m: m.nodes.reverse(),
     r"node 'add' \(Add\) uses %a before its definition by node 'relu' \(Relu\); nodes must "
     r"be listed in topological order"),
    ("cycle", lambda m: m.nodes[0].inputs.__setitem__(0, "y"),
     r"the graph has a cycle: node 'relu' \(Relu\) -> node 'add' \(Add\) -> node 'relu'"),
    ("bad model output", lambda m: m.outputs.append("zz"),
     r"model output %zz is not a value of the module"),
    ("bad model input", lambda m: m.inputs.append("zz"),
     r"model input defines %zz, which is not in the module's values"),
]


@pytest.mark.parametrize("what, brk, pattern", CASES, ids=[c[0] for c in CASES])
def test_graph_rules(what: str, brk: Break, pattern: str) -> None:
    m = graph_level()
    brk(m)
    _fails(m, pattern)


def _body_reads_outside(m: Module) -> None:
    _k(m, "k0").inputs.remove("c")


def _internal_used(m: Module) -> None:
    _k(m, "k1").inputs.append("a")


def _output_not_from_body(m: Module) -> None:
    k = _k(m, "k0")
    k.body.pop()  # "add" gone: b has no producer inside k0
    m.values.pop("b")
    m.edges = []
    m.properties.discard("routed")


def _internal_model_output(m: Module) -> None:
    m.outputs.append("a")


KERNEL_CASES: list[tuple[str, Break, str]] = [
    ("body reads outside", _body_reads_outside,
     r"node 'add' \(Add\) in the body of kernel 'k0' \(ew\) reads %c from outside the kernel, "
     r"but %c is not among the kernel's inputs"),
    ("internal value used", _internal_used,
     r"kernel 'k1' \(ew\) uses %a, which is internal to the body of kernel 'k0' \(ew\)"),
    ("output not produced", _output_not_from_body,
     r"kernel 'k0' \(ew\) lists output %b but no op of its body produces it"),
    ("internal model output", _internal_model_output,
     r"model output %a is internal to a kernel body"),
    ("body order", lambda m: _k(m, "k0").body.reverse(),
     r"node 'add' \(Add\) in the body of kernel 'k0' \(ew\) uses %a before its definition"),
    ("duplicate kernel", lambda m: setattr(_k(m, "k1"), "name", "k0"),
     r"two kernels are named 'k0'"),
    ("edge value", lambda m: setattr(m.edges[1], "value", "nope"),
     r"edge %nope from 'k0' carries %nope, which is not a value of the module"),
    ("edge src", lambda m: setattr(m.edges[1], "src", "k9"),
     r"edge %b from 'k9': source 'k9' is neither a kernel nor '@host'"),
    ("edge dst", lambda m: m.edges[1].dsts.append("k7"),
     r"edge %b from 'k0': destination 'k7' is neither a kernel nor '@host'"),
    ("edge src produces", lambda m: setattr(m.edges[1], "src", "k1"),
     r"edge %b from 'k1': kernel 'k1' does not produce %b"),
    ("edge dst reads", lambda m: setattr(m.edges[0], "dsts", ["k1"]),
     r"edge %x from '@host' goes to kernel 'k1', which does not read %x"),
    ("edge host src", lambda m: setattr(m.edges[1], "src", HOST),
     r"edge %b from '@host': the host only sends model inputs and constants"),
    ("edge host dst", lambda m: m.edges[1].dsts.append(HOST),
     r"edge %b from 'k0' goes to '@host' but %b is not a model output"),
    ("edge bytes", lambda m: setattr(m.edges[1], "bytes_per_sample", -1),
     r"edge %b from 'k0': bytes_per_sample must be an integer >= 0, got -1"),
    ("edge no dsts", lambda m: setattr(m.edges[1], "dsts", []), r"edge %b from 'k0' has no dest"),
    ("bundle no color", lambda m: setattr(m.edges[1], "bundles", [
        Bundle("k1", None, 1, (0, 1), ((1, 0), (2, 0)))]),  # type: ignore[arg-type]
     r"edge %b from 'k0': the bundle to 'k1' has color None; colors are integers >= 0"),
    ("bundle to a stranger", lambda m: m.edges[1].bundles.append(
        Bundle("k0", 4, 1, (0, 1), ((1, 0), (2, 0)))),
     r"edge %b from 'k0' has a bundle to 'k0', which is not one of its destinations \['k1'\]"),
    ("two bundles", lambda m: m.edges[1].bundles.append(
        Bundle("k1", 4, 1, (0, 1), ((1, 1), (2, 1)))),
     r"edge %b from 'k0' has two bundles to 'k1'"),
    ("diagonal lane", lambda m: setattr(m.edges[1], "bundles", [
        Bundle("k1", 2, 1, (0, 1), ((1, 0), (2, 1)))]),
     r"edge %b from 'k0': the bundle to 'k1' is not a valid set of lanes: segment \(1, 0\) -> "
     r"\(2, 1\) is not axis-aligned"),
    ("no grid", lambda m: m.attrs.pop("grid"),
     r"kernel 'k0' has a rect, but the module has no grid attribute"),
    ("rect outside", lambda m: setattr(_k(m, "k1"), "rect", Rect(15, 0, 2, 2)),
     r"kernel 'k1' rect \[x=15, y=0, w=2, h=2\] is not inside the 16x8 grid"),
    ("rect empty", lambda m: setattr(_k(m, "k1"), "rect", Rect(5, 0, 0, 2)),
     r"kernel 'k1' rect \[x=5, y=0, w=0, h=2\] is not inside"),
    ("overlap", lambda m: setattr(_k(m, "k1"), "rect", Rect(1, 1, 3, 3)),
     r"kernels 'k0' \[0, 0, 2, 2\] and 'k1' \[1, 1, 3, 3\] overlap"),
    ("lane outside", lambda m: setattr(m.edges[1], "bundles", [
        Bundle("k1", 2, 9, (0, 1), ((1, 0), (2, 0)))]),
     r"edge %b from 'k0' has a lane at PE \(1, 8\), outside the 16x8 grid"),
    ("color clash", lambda m: setattr(m.edges[2], "bundles", [
        Bundle(HOST, 2, 1, (0, 1), ((3, 0), (15, 0)))]) or setattr(m.edges[1], "bundles", [
            Bundle("k1", 2, 1, (0, 1), ((1, 0), (2, 0)), 1)]),
     r"color 2 at PE \(3, 0\) carries two routes: edge %b from 'k0' and edge %y from 'k1'"),
    ("lanes fold onto themselves", lambda m: setattr(m.edges[1], "bundles", [
        Bundle("k1", 2, 1, (0, 1), ((1, 0), (4, 0), (4, 1), (2, 1), (2, 0)))]),
     r"carries two routes: edge %b from 'k0' and itself"),
    ("unknown property", lambda m: m.properties.add("fused"), r"unknown property 'fused'"),
    ("kernels", lambda m: m.nodes.append(Node("loose", "Neg", ["y"], [])),
     r"property 'kernels' holds but node 'loose' \(Neg\) is not inside a kernel"),
    ("sized", lambda m: setattr(_k(m, "k1"), "knobs", None),
     r"property 'sized' holds but kernel 'k1' has no knobs"),
    ("placed", lambda m: setattr(_k(m, "k1"), "rect", None),
     r"property 'placed' holds but kernel 'k1' has no rect"),
    ("allocated", lambda m: setattr(_k(m, "k0"), "sram", None),
     r"property 'allocated' holds but kernel 'k0' has no sram map"),
    ("routed", lambda m: setattr(m.edges[0], "bundles", None),
     r"property 'routed' holds but edge %x from '@host' has no bundle to 'k0'"),
    ("routed, one sink short", lambda m: setattr(m.edges[0], "bundles", []),
     r"property 'routed' holds but edge %x from '@host' has no bundle to 'k0'"),
]


@pytest.mark.parametrize("what, brk, pattern", KERNEL_CASES, ids=[c[0] for c in KERNEL_CASES])
def test_kernel_level_rules(what: str, brk: Break, pattern: str) -> None:
    m = valid()
    verify_module(m)
    brk(m)
    _fails(m, pattern)


def test_cycle_between_kernels_is_named() -> None:
    m = valid()
    k0 = _k(m, "k0")
    k0.inputs.append("y")
    k0.body[0].inputs.append("y")
    _fails(m, r"the graph has a cycle: kernel 'k0' \(ew\) -> kernel 'k1' \(ew\) -> kernel 'k0'")


def test_kernel_without_body_defines_its_outputs() -> None:
    m = valid()
    for k in m.kernels():
        k.body, k.kind, k.knobs = [], "bare", {}
    m.values.pop("a")
    verify_module(m)


def _sized_k1(m: Module) -> Kernel:
    k = _k(m, "k1")
    k.cost = {"cycles": 100, "sram": 64, "w": 2, "h": 2}
    return k


STRICT_CASES: list[tuple[str, Break, str]] = [
    ("unknown kind", lambda m: setattr(_k(m, "k1"), "kind", "elemwise"),
     r"kernel 'k1' \(elemwise\) names an unknown kernel kind \(known: .*\bew\b"),
    ("empty body", lambda m: setattr(_k(m, "k1"), "body", []),
     r"kernel 'k1' \(ew\) has an empty body, but a ew kernel computes the ONNX ops of its body"),
    ("knob names", lambda m: setattr(_k(m, "k1"), "knobs", {"h": 3, "w": 2}),
     r"kernel 'k1' \(ew\) has knobs \{h, w\} but its kind takes \{n\}"),
    ("cost field", lambda m: _sized_k1(m).cost.update(wires=3),
     r"kernel 'k1' \(ew\) records unknown cost field\(s\) wires"),
    ("cost cycles", lambda m: _sized_k1(m).cost.update(cycles=99),
     r"kernel 'k1' \(ew\) records 99 cycles per sample but its kind gives 100 for knobs "
     r"\{n = 1\}"),
    ("cost shape", lambda m: _sized_k1(m).cost.update(w=3),
     r"kernel 'k1' \(ew\) records a 3x2 shape but its kind gives 2x2 PEs"),
    ("rect shape", lambda m: _sized_k1(m) and setattr(_k(m, "k1"), "rect", Rect(2, 0, 3, 2)),
     r"kernel 'k1' \(ew\) rect is 3x2 PEs but its knobs give 2x2"),
]


@pytest.mark.parametrize("what, brk, pattern", STRICT_CASES, ids=[c[0] for c in STRICT_CASES])
def test_kernels_agree_with_their_kind(what: str, brk: Break, pattern: str) -> None:
    """The verifier is as strict as the emitter and the simulator: a kernel a
    binary could not run never passes it."""
    m = valid()
    _sized_k1(m)
    verify_module(m)
    brk(m)
    _fails(m, pattern)


def test_overlap_check_names_the_pair_among_many_kernels() -> None:
    n = 2000
    m = Module("many", attrs={"grid": [750, 994]}, properties={"kernels", "placed"})
    m.add_value("x", T)
    m.inputs = ["x"]
    for i in range(n):
        m.add_value(f"v{i}", T)
        m.nodes.append(Kernel(f"k{i}", "bare", ["x"], [f"v{i}"], kind="bare",
                              rect=Rect((i % 50) * 15, (i // 50) * 24, 15, 24)))
    m.outputs = [f"v{n - 1}"]
    verify_module(m)
    m.nodes[1234].rect = Rect(m.nodes[77].rect.x + 14, m.nodes[77].rect.y + 23, 1, 1)
    _fails(m, r"kernels 'k77' \[.*\] and 'k1234' \[.*\] overlap")


def test_overlap_sweep_for_huge_grids() -> None:
    m = valid()
    m.attrs["grid"] = [100_000, 100_000]
    m.edges = []
    m.properties.discard("routed")
    verify_module(m)
    _k(m, "k1").rect = Rect(1, 1, 5, 5)
    _fails(m, r"kernels 'k0' \[0, 0, 2, 2\] and 'k1' \[1, 1, 5, 5\] overlap")
