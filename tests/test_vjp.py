"""Every gradient rule against central finite differences, in float64,
through the op semantics (wsec.ir.opsem via the reference interpreter).

For an op y = f(x1, .., xk) and a random cotangent w, the rule's gradient
of sum(w * y) with respect to each differentiable input must equal the
central difference (f(x + h e_i) - f(x - h e_i)) / 2h, element by element.
A rule registered without a case here fails `test_every_rule_has_a_case`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
from wsec.ir.graph import Module, Node
from wsec.ir.interp import evaluate_module
from wsec.ir.types import Dense, TensorType
from wsec.ir.vjp import Emitter, GradError, Namer, vjp
from wsec.ir.vjp_base import VJPS

F = "f64"


@dataclass
class Case:
    op: str
    inputs: list  # (shape) for a float input to differentiate, or an ndarray constant
    outs: list  # output shapes
    attrs: dict = field(default_factory=dict)
    id: str = ""
    low: float = -1.0  # float inputs are drawn uniformly from [low, high]
    high: float = 1.0
    seeded: int = 0  # outputs that carry a gradient (0: all)


def c(*vals, dtype=np.int64):
    return np.asarray(vals, dtype)


CASES = [
    Case("Add", [(3, 4), (4,)], [(3, 4)], id="Add-broadcast"),
    Case("Sub", [(3, 1), (1, 4)], [(3, 4)], id="Sub-broadcast"),
    Case("Mul", [(2, 3, 4), (3, 1)], [(2, 3, 4)]),
    Case("Div", [(3, 4), (3, 4)], [(3, 4)], low=0.5, high=2.0),
    Case("Pow", [(3, 4), (4,)], [(3, 4)], low=0.5, high=2.0),
    Case("Max", [(3, 4), (3, 4)], [(3, 4)]),
    Case("Min", [(3, 4), (4,)], [(3, 4)]),
    Case("Sum", [(3, 4), (4,), (3, 4)], [(3, 4)]),
    Case("Mean", [(3, 4), (3, 4)], [(3, 4)]),
    Case("Where", [np.array([[True, False, True, False]] * 3), (3, 4), (4,)], [(3, 4)]),
    Case("PRelu", [(2, 3, 4), (3, 1)], [(2, 3, 4)]),
    *[Case(op, [(3, 5)], [(3, 5)], low=lo, high=hi) for op, lo, hi in (
        ("Neg", -1, 1), ("Relu", -1, 1), ("Sigmoid", -2, 2), ("Tanh", -2, 2), ("Exp", -1, 1),
        ("Log", 0.5, 2), ("Sqrt", 0.5, 2), ("Reciprocal", 0.5, 2), ("Abs", -1, 1),
        ("Erf", -1.5, 1.5), ("Softplus", -2, 2), ("Softsign", -2, 2), ("Elu", -2, 2),
        ("Selu", -2, 2), ("HardSigmoid", -4, 4), ("HardSwish", -4, 4), ("Sin", -2, 2),
        ("Cos", -2, 2))],
    Case("LeakyRelu", [(3, 5)], [(3, 5)], {"alpha": 0.1}),
    Case("Clip", [(3, 5), np.array(-0.3), np.array(0.4)], [(3, 5)]),
    Case("Identity", [(3, 5)], [(3, 5)]),
    Case("Dropout", [(3, 5)], [(3, 5)]),
    Case("Cast", [(3, 5)], [(3, 5)], {"to": 11}),
    Case("Reshape", [(2, 6), c(3, 4)], [(3, 4)]),
    Case("Flatten", [(2, 3, 4)], [(2, 12)], {"axis": 1}),
    Case("Squeeze", [(2, 1, 4), c(1)], [(2, 4)]),
    Case("Unsqueeze", [(2, 4), c(0)], [(1, 2, 4)]),
    Case("Transpose", [(2, 3, 4)], [(4, 2, 3)], {"perm": [2, 0, 1]}),
    Case("Expand", [(3, 1), c(2, 3, 4)], [(2, 3, 4)]),
    Case("Tile", [(2, 3), c(2, 2)], [(4, 6)]),
    Case("Concat", [(2, 3), (2, 1), (2, 2)], [(2, 6)], {"axis": 1}),
    Case("Split", [(5, 4), c(2, 3)], [(2, 4), (3, 4)], {"axis": 0}),
    Case("Slice", [(5, 6), c(1, -4), c(4, 100), c(0, 1)], [(3, 4)]),
    Case("Pad", [(2, 3), c(0, 1, 2, 0)], [(4, 4)], {"mode": "constant"}),
    Case("ReduceSum", [(2, 3, 4), c(1)], [(2, 1, 4)], {"keepdims": 1}),
    Case("ReduceMean", [(2, 3, 4)], [(2,)], {"axes": [1, 2], "keepdims": 0}),
    Case("ReduceSumSquare", [(2, 3, 4)], [(2, 1, 1)], {"axes": [1, 2]}),
    Case("CumSum", [(3, 4), c(1)], [(3, 4)], {"reverse": 1}),
    Case("MatMul", [(2, 3, 4), (4, 5)], [(2, 3, 5)], id="MatMul-weight"),
    Case("MatMul", [(2, 3, 4), (2, 4, 5)], [(2, 3, 5)], id="MatMul-batched"),
    Case("MatMul", [(2, 3, 4), (1, 4, 5)], [(2, 3, 5)], id="MatMul-broadcast"),
    Case("MatMul", [(4,), (4, 5)], [(5,)], id="MatMul-vector"),
    Case("Gemm", [(3, 4), (5, 4), (5,)], [(3, 5)], {"transB": 1, "alpha": 0.5, "beta": 2.0}),
    Case("Gemm", [(4, 3), (4, 5), (1, 5)], [(3, 5)], {"transA": 1}, id="Gemm-transA"),
    Case("Einsum", [(2, 3, 4), (4, 5)], [(2, 5, 3)], {"equation": "bik,kj->bji"}),
    Case("Gather", [(5, 3), np.array([[0, 4, -1], [2, 2, 1]])], [(2, 3, 3)], {"axis": 0}),
    Case("Gather", [(2, 5, 3), c(1, 3)], [(2, 2, 3)], {"axis": 1}, id="Gather-axis1"),
    Case("Conv", [(2, 3, 7, 6), (4, 3, 3, 2), (4,)], [(2, 4, 4, 3)],
         {"strides": [2, 2], "pads": [1, 0, 1, 0], "kernel_shape": [3, 2]}),
    Case("Conv", [(1, 4, 6, 6), (4, 2, 3, 3)], [(1, 4, 2, 4)],
         {"group": 2, "dilations": [2, 1], "pads": [0, 0, 0, 0]}, id="Conv-grouped-dilated"),
    Case("Conv", [(2, 3, 9), (2, 3, 3)], [(2, 2, 5)], {"strides": [2], "pads": [1, 1]},
         id="Conv-1d"),
    Case("MaxPool", [(2, 3, 7, 7)], [(2, 3, 4, 4)],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    Case("MaxPool", [(1, 2, 5, 5)], [(1, 2, 3, 3)], {"kernel_shape": [2, 2], "strides": [2, 2],
                                                    "ceil_mode": 1}, id="MaxPool-ceil"),
    Case("AveragePool", [(2, 3, 6, 5)], [(2, 3, 3, 3)],
         {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 0, 1]}),
    Case("AveragePool", [(1, 2, 5, 5)], [(1, 2, 3, 3)],
         {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
          "count_include_pad": 1}, id="AveragePool-count-pad"),
    Case("AveragePool", [(1, 2, 5, 4)], [(1, 2, 2, 2)], {"kernel_shape": [2, 2],
                                                       "strides": [2, 2]}, id="AveragePool-tiles"),
    Case("AveragePool", [(1, 3, 3, 3)], [(1, 3, 1, 1)], {"kernel_shape": [3, 3]},
         id="AveragePool-whole"),
    Case("GlobalAveragePool", [(2, 3, 4, 5)], [(2, 3, 1, 1)]),
    Case("GlobalMaxPool", [(2, 3, 4, 5)], [(2, 3, 1, 1)]),
    Case("Softmax", [(3, 5)], [(3, 5)], {"axis": -1}),
    Case("LogSoftmax", [(2, 3, 4)], [(2, 3, 4)], {"axis": 1}),
    Case("LayerNormalization", [(2, 3, 4), (4,), (4,)], [(2, 3, 4)], {"axis": -1}),
    Case("BatchNormalization", [(2, 3, 4, 3), (3,), (3,), np.zeros(3), np.ones(3)],
         [(2, 3, 4, 3), (3,), (3,)], {"training_mode": 1, "epsilon": 1e-3}, seeded=1),
    Case("LayerNormalization", [(2, 3, 4), (3, 4)], [(2, 3, 4)], {"axis": 1, "epsilon": 1e-3},
         id="LayerNormalization-2axes"),
]


def _module(case: Case, rng: np.random.Generator) -> tuple[Module, Node, dict, list[str]]:
    m = Module("vjp")
    feeds: dict[str, np.ndarray] = {}
    names, diff = [], []
    for i, spec in enumerate(case.inputs):
        name = f"in{i}"
        names.append(name)
        if isinstance(spec, tuple):
            m.add_value(name, TensorType(F, spec))
            m.inputs.append(name)
            feeds[name] = rng.uniform(case.low, case.high, spec)
            diff.append(name)
        else:
            arr = np.asarray(spec)
            dt = {np.dtype(np.int64): "i64", np.dtype(bool): "bool"}.get(arr.dtype, F)
            t = TensorType(dt, arr.shape)
            m.add_value(name, t, Dense(t, arr.astype(t.np_dtype)))
    outs = []
    for j, shape in enumerate(case.outs):
        m.add_value(f"out{j}", TensorType(F, shape))
        outs.append(f"out{j}")
    node = Node(case.op.lower(), case.op, names, outs, dict(case.attrs))
    m.nodes.append(node)
    return m, node, feeds, diff


def _gradients(case: Case, rng: np.random.Generator):
    m, node, feeds, diff = _module(case, rng)
    gys = []
    seeded = node.outputs[:case.seeded or len(node.outputs)]
    for j, o in enumerate(seeded):
        m.add_value(f"w{j}", m.values[o].type)
        m.inputs.append(f"w{j}")
        feeds[f"w{j}"] = rng.standard_normal(m.values[o].type.shape)
        gys.append(f"w{j}")
    gys += [None] * (len(node.outputs) - len(seeded))
    e = Emitter(m, Namer(m), "grad")
    want = [i in diff for i in node.inputs]
    grads = vjp(e, node, gys, want)
    m.nodes.extend(e.nodes)
    m.outputs = [g for g, w in zip(grads, want, strict=True) if w]
    analytic = evaluate_module(m, feeds)

    fwd, _, _, _ = _module(case, np.random.default_rng(0))
    fwd.outputs = list(seeded)

    def objective(x: dict) -> float:
        ys = evaluate_module(fwd, {k: x[k] for k in diff})
        return float(sum(np.sum(ys[o] * feeds[f"w{j}"]) for j, o in enumerate(seeded)))

    h = 1e-6
    out = []
    for name, g in zip(diff, m.outputs, strict=True):
        x0 = feeds[name]
        num = np.zeros_like(x0)
        for idx in np.ndindex(x0.shape):
            xp = dict(feeds)
            for sgn in (1, -1):
                arr = x0.copy()
                arr[idx] += sgn * h
                xp[name] = arr
                num[idx] += sgn * objective(xp) / (2 * h)
        out.append((name, analytic[g], num))
    return out


@pytest.mark.parametrize("case", CASES, ids=[c_.id or c_.op for c_ in CASES])
def test_rule_matches_finite_differences(case: Case) -> None:
    rng = np.random.default_rng(sum(map(ord, case.id or case.op)))
    for name, got, want in _gradients(case, rng):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6,
                                   err_msg=f"{case.op}: gradient of {name}")


def test_every_rule_has_a_case() -> None:
    assert set(VJPS) <= {c_.op for c_ in CASES}


def test_an_op_without_a_rule_is_an_error_naming_it() -> None:
    m = Module("x")
    m.add_value("a", TensorType(F, (3,)))
    m.add_value("b", TensorType("i64", (3,)))
    n = Node("am", "Round", ["a"], ["b"])
    with pytest.raises(GradError, match=r"op 'Round' \(node 'am'\) has no gradient rule; "
                                        r"freeze the parameters before it with --freeze"):
        vjp(Emitter(m, Namer(m), "g"), n, ["b"], [True])
