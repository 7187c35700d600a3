"""opsem.evaluate against onnxruntime, one single-node model per case."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from wsec.ir.graph import Node
from wsec.ir.ops import IR_TO_ONNX_DTYPE, SUPPORTED_OPS
from wsec.ir.opsem import evaluate
from wsec.ir.types import dtype_name

R = np.random.default_rng(0)


def f32(*shape: int) -> np.ndarray:
    return R.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return (np.abs(R.standard_normal(shape)) + 0.1).astype(np.float32)


def i64(*vals: int) -> np.ndarray:
    return np.array(vals, dtype=np.int64)


def run_ort(op: str, inputs: list[np.ndarray | None], attrs: dict, n_out: int,
            opset: int = 17) -> list[np.ndarray]:
    names = [f"in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    outs = [f"out{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    g_in = [helper.make_tensor_value_info(nm, IR_TO_ONNX_DTYPE[dtype_name(x.dtype)], x.shape)
            for nm, x in zip(names, inputs, strict=True) if x is not None]
    g_out = [helper.make_empty_tensor_value_info(o) for o in outs]
    graph = helper.make_graph([node], "t", g_in, g_out)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {nm: x for nm, x in zip(names, inputs, strict=True) if x is not None}
    return sess.run(None, feeds)


CASES: list[tuple[str, list, dict]] = [
    ("Conv", [f32(2, 3, 9, 9), f32(4, 3, 3, 3), f32(4)], {}),
    ("Conv", [f32(1, 3, 11, 10), f32(6, 3, 3, 2)],
     {"pads": [1, 0, 2, 1], "strides": [2, 3], "dilations": [2, 1]}),
    ("Conv", [f32(1, 4, 8, 8), f32(6, 2, 3, 3), f32(6)], {"group": 2, "pads": [1, 1, 1, 1]}),
    ("Conv", [f32(1, 5, 7, 7), f32(5, 1, 3, 3)], {"group": 5, "strides": [2, 2]}),
    ("Conv", [f32(1, 3, 7, 8), f32(2, 3, 3, 3)], {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ("Conv", [f32(1, 3, 7, 8), f32(2, 3, 2, 2)], {"auto_pad": "SAME_LOWER"}),
    ("Conv", [f32(2, 3, 12), f32(4, 3, 3)], {"pads": [1, 2]}),
    ("MaxPool", [f32(1, 3, 9, 9)], {"kernel_shape": [3, 3], "strides": [2, 2]}),
    ("MaxPool", [f32(1, 2, 8, 8)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                     "pads": [0, 0, 1, 1], "ceil_mode": 1}),
    ("MaxPool", [f32(1, 2, 10, 9)], {"kernel_shape": [2, 3], "dilations": [2, 1],
                                      "pads": [1, 1, 1, 1]}),
    ("AveragePool", [f32(1, 3, 9, 9)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    ("AveragePool", [f32(1, 3, 9, 9)], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                         "count_include_pad": 1}),
    ("AveragePool", [f32(1, 2, 8, 8)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                         "ceil_mode": 1, "pads": [1, 1, 0, 0]}),
    ("AveragePool", [f32(1, 2, 8, 8)], {"kernel_shape": [3, 3], "strides": [2, 2],
                                         "ceil_mode": 1, "count_include_pad": 1,
                                         "pads": [1, 1, 1, 1]}),
    ("GlobalAveragePool", [f32(2, 3, 5, 4)], {}),
    ("GlobalMaxPool", [f32(2, 3, 5, 4)], {}),
    ("LRN", [f32(1, 7, 4, 4)], {"size": 5, "alpha": 1e-2, "beta": 0.75, "bias": 1.0}),
    ("LRN", [f32(1, 6, 3, 3)], {"size": 3, "alpha": 0.1, "beta": 0.5, "bias": 2.0}),
    ("Gemm", [f32(3, 5), f32(4, 5), f32(4)], {"transB": 1}),
    ("Gemm", [f32(5, 3), f32(5, 4), f32(3, 4)], {"transA": 1, "alpha": 0.5, "beta": 2.0}),
    ("BatchNormalization", [f32(2, 3, 4, 4), f32(3), f32(3), f32(3), pos(3)], {"epsilon": 1e-3}),
    ("LayerNormalization", [f32(2, 3, 8), f32(8), f32(8)], {"epsilon": 1e-5}),
    ("MatMul", [f32(2, 3, 4, 5), f32(5, 6)], {}),
    ("Softmax", [f32(2, 3, 4)], {"axis": 1}),
    ("Softmax", [f32(2, 10)], {}),
    ("Add", [f32(2, 3, 4), f32(3, 1)], {}),
    ("Sub", [f32(2, 3), f32(3)], {}),
    ("Mul", [f32(2, 3), f32(1)], {}),
    ("Div", [f32(2, 3), pos(2, 3)], {}),
    ("Div", [i64(7, -7, 9, -9), i64(2, 2, -4, -4)], {}),
    ("Pow", [pos(3, 4), f32(3, 4)], {}),
    ("Sum", [f32(2, 3), f32(3), f32(2, 1)], {}),
    ("Max", [f32(2, 3), f32(3), f32(2, 1)], {}),
    ("Min", [f32(2, 3), f32(3)], {}),
    ("Equal", [i64(1, 2, 3), i64(1, 0, 3)], {}),
    ("Less", [f32(4), f32(4)], {}),
    ("Greater", [f32(4), f32(4)], {}),
    ("Where", [np.array([True, False, True]), f32(3), f32(3)], {}),
    ("Not", [np.array([True, False])], {}),
    ("Relu", [f32(3, 4)], {}), ("Sigmoid", [f32(3, 4)], {}), ("Tanh", [f32(3, 4)], {}),
    ("Exp", [f32(3, 4)], {}), ("Log", [pos(3, 4)], {}), ("Sqrt", [pos(3, 4)], {}),
    ("Abs", [f32(3, 4)], {}), ("Neg", [f32(3, 4)], {}), ("Floor", [f32(3, 4)], {}),
    ("Ceil", [f32(3, 4)], {}), ("Reciprocal", [pos(3, 4)], {}), ("Erf", [f32(50)], {}),
    ("LeakyRelu", [f32(3, 4)], {"alpha": 0.2}),
    ("Clip", [f32(3, 4), np.array(-0.5, np.float32), np.array(0.5, np.float32)], {}),
    ("Clip", [f32(3, 4), None, np.array(0.1, np.float32)], {}),
    ("Reshape", [f32(2, 3, 4), i64(0, -1)], {}),
    ("Flatten", [f32(2, 3, 4, 5)], {"axis": 2}),
    ("Unsqueeze", [f32(3, 4), i64(0, -1)], {}),
    ("Squeeze", [f32(1, 3, 1, 4), i64(2)], {}),
    ("Squeeze", [f32(1, 3, 1, 4)], {}),
    ("Transpose", [f32(2, 3, 4)], {"perm": [1, 2, 0]}),
    ("Transpose", [f32(2, 3, 4)], {}),
    ("Concat", [f32(2, 3), f32(2, 5)], {"axis": 1}),
    ("Identity", [f32(2, 3)], {}),
    ("Shape", [f32(2, 3, 4)], {"start": 1}),
    ("Gather", [f32(5, 3), i64(0, -1, 2)], {"axis": 0}),
    ("Gather", [f32(5, 3), np.array([[0, 2], [1, 1]], np.int64)], {"axis": 1}),
    ("Cast", [f32(2, 3) * 10], {"to": 7}),
    ("Expand", [f32(3, 1), i64(2, 3, 4)], {}),
    ("Tile", [f32(2, 3), i64(2, 1)], {}),
    ("Slice", [f32(5, 6), i64(1, -4), i64(4, 100), i64(0, 1), i64(2, 1)], {}),
    ("Slice", [f32(5, 6), i64(-1), i64(-100), i64(1), i64(-2)], {}),
    ("Split", [f32(2, 7), i64(3, 4)], {"axis": 1}),
    ("Pad", [f32(2, 3), i64(1, 0, 0, 2), np.array(1.5, np.float32)], {}),
    ("Pad", [f32(3, 4), i64(1, 2, 1, 2)], {"mode": "reflect"}),
    ("Range", [np.array(1, np.int64), np.array(10, np.int64), np.array(3, np.int64)], {}),
    ("ReduceMean", [f32(2, 3, 4)], {"axes": [1], "keepdims": 1}),
    ("ReduceSum", [f32(2, 3, 4), i64(0, 2)], {"keepdims": 0}),
    ("ReduceMax", [f32(2, 3, 4)], {}),
    # activations and ops PyTorch's exporter emits (opsem_ext)
    ("Elu", [f32(3, 4)], {"alpha": 0.7}), ("Selu", [f32(3, 4)], {}),
    ("Softplus", [f32(3, 4) * 30], {}), ("Softsign", [f32(3, 4)], {}),
    ("HardSigmoid", [f32(3, 4) * 4], {"alpha": 0.3}), ("HardSwish", [f32(3, 4) * 4], {}),
    ("Sin", [f32(5)], {}), ("Cos", [f32(5)], {}), ("Sign", [f32(5)], {}),
    ("Round", [np.array([0.5, 1.5, -2.5, 2.4, -0.6], np.float32)], {}),
    ("IsNaN", [np.array([0.0, np.nan, np.inf], np.float32)], {}),
    ("IsInf", [np.array([0.0, np.nan, np.inf, -np.inf], np.float64)], {}),
    ("ScatterND", [f32(4, 5, 3), np.array([[1, 2], [-1, 0]], np.int64), f32(2, 3)], {}),
    ("ScatterND", [f32(4, 5), np.array([[2], [0], [2]], np.int64), f32(3, 5)],
     {"reduction": "add"}),
    ("ScatterND", [f32(2, 3), np.array([[0, 1], [1, 2], [0, 1]], np.int64), f32(3)],
     {"reduction": "mul"}),
    ("ScatterND", [np.zeros((1, 6, 6, 1), np.float16),
                   np.stack(np.meshgrid([0], [4, 5], range(6), [0], indexing="ij"), -1),
                   np.full((1, 2, 6, 1), 3, np.float16)], {}),
    ("ScatterElements", [f32(3, 4), np.array([[1, 0, 2, -1], [0, 2, 1, 0]], np.int64),
                         f32(2, 4)], {"axis": 0}),
    ("ScatterElements", [f32(3, 4), np.array([[1, 1], [0, 0]], np.int64), f32(2, 2)],
     {"axis": 1, "reduction": "add"}),
    ("IsInf", [np.array([0.0, np.inf, -np.inf], np.float32)], {"detect_positive": 0}),
    ("PRelu", [f32(2, 3, 4, 4), f32(3, 1, 1)], {}),
    ("GreaterOrEqual", [i64(1, 2, 3), i64(2, 2, 2)], {}),
    ("LessOrEqual", [f32(4), f32(4)], {}),
    ("And", [np.array([True, False, True]), np.array([True, True, False])], {}),
    ("Or", [np.array([True, False, False]), np.array([False, False, True])], {}),
    ("Xor", [np.array([True, False, True]), np.array([True, True, False])], {}),
    ("Mod", [i64(7, -7, 9, -9), i64(2, 3, -4, 4)], {}),
    ("Mod", [f32(6) * 5, pos(6)], {"fmod": 1}),
    ("Mean", [f32(2, 3), f32(3), f32(2, 1)], {}),
    ("LogSoftmax", [f32(2, 3, 5)], {"axis": 1}),
    ("ReduceMin", [f32(2, 3, 4)], {"axes": [2], "keepdims": 0}),
    ("ReduceProd", [f32(2, 3, 4)], {"axes": [0, 1]}),
    ("ReduceL1", [f32(2, 3, 4)], {"axes": [1]}), ("ReduceL2", [f32(2, 3, 4)], {}),
    ("ReduceSumSquare", [f32(2, 3, 4)], {"axes": [-1], "keepdims": 0}),
    ("ArgMax", [np.array([[1, 3, 3], [2, 0, 2]], np.float32)], {"axis": 1}),
    ("ArgMax", [np.array([[1, 3, 3], [2, 0, 2]], np.float32)],
     {"axis": 1, "keepdims": 0, "select_last_index": 1}),
    ("ArgMin", [f32(3, 4)], {"axis": 0}),
    ("InstanceNormalization", [f32(2, 3, 4, 5), f32(3), f32(3)], {"epsilon": 1e-3}),
    ("CumSum", [f32(3, 4), np.array(1, np.int64)], {}),
    ("CumSum", [f32(3, 4), np.array(0, np.int64)], {"exclusive": 1, "reverse": 1}),
    ("Trilu", [f32(2, 5, 5), np.array(1, np.int64)], {}),
    ("Trilu", [f32(4, 6)], {"upper": 0}),
    ("Einsum", [f32(2, 3, 4), f32(2, 4, 5)], {"equation": "bij,bjk->bik"}),
    ("GatherElements", [f32(3, 4), np.array([[0, 3], [-1, 2], [1, 1]], np.int64)], {"axis": 1}),
    ("Size", [f32(2, 3, 4)], {}),
    ("DepthToSpace", [f32(1, 8, 2, 3)], {"blocksize": 2}),
    ("DepthToSpace", [f32(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}),
    ("SpaceToDepth", [f32(1, 2, 4, 6)], {"blocksize": 2}),
    ("ConvTranspose", [f32(1, 3, 5, 5), f32(3, 4, 3, 3), f32(4)], {}),
    ("ConvTranspose", [f32(2, 4, 4, 5), f32(4, 3, 3, 2)],
     {"strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 2], "group": 2,
      "dilations": [1, 2]}),
    ("ConvTranspose", [f32(1, 2, 4, 4), f32(2, 3, 3, 3)],
     {"strides": [2, 2], "output_shape": [9, 10]}),
    ("ConvTranspose", [f32(1, 2, 4, 4), f32(2, 3, 3, 3)],
     {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("ConvTranspose", [f32(1, 2, 7), f32(2, 2, 3)], {"strides": [3]}),
] + [  # Resize: every mode, coordinate transform and nearest rounding onnxruntime has
    ("Resize", [f32(1, 2, 4, 5), None, np.array([1, 1, 2, 3], np.float32)],
     {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": nm})
    for nm in ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
] + [
    ("Resize", [f32(1, 3, 5, 7), None, np.array([1, 1, 1.5, 0.6], np.float32)],
     {"mode": mode, "coordinate_transformation_mode": ctm})
    for mode in ("nearest", "linear", "cubic")
    for ctm in ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric")
] + [
    ("Resize", [f32(2, 2, 6, 6), None, None, i64(2, 2, 3, 9)], {"mode": "linear"}),
    ("Resize", [f32(1, 1, 6, 5), None, None, i64(1, 1, 1, 11)],
     {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}),
    ("Resize", [f32(1, 2, 7, 7), None, np.array([1, 1, 0.5, 2.5], np.float32)],
     {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}),
    ("Resize", [f32(1, 1, 6, 8), np.array([0, 0, 0.2, -0.1, 1, 1, 0.7, 1.2], np.float32), None,
                i64(1, 1, 5, 7)],
     {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
      "extrapolation_value": 3.5}),
    ("Resize", [f32(1, 2, 9), None, np.array([1, 1, 1.7], np.float32)], {"mode": "linear"}),
]


@pytest.mark.parametrize("op,inputs,attrs", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_op_matches_onnxruntime(op: str, inputs: list, attrs: dict) -> None:
    n_out = len(inputs[1]) if op == "Split" else 1
    node = Node("n", op, [f"in{i}" for i in range(len(inputs))],
                [f"out{i}" for i in range(n_out)], dict(attrs))
    got = evaluate(node, inputs)
    want = run_ort(op, inputs, attrs, n_out)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-5)


def test_split_equal_parts_and_dropout() -> None:
    x = f32(2, 6)
    got = evaluate(Node("s", "Split", ["x"], ["a", "b", "c"], {"axis": 1}), [x])
    want = run_ort("Split", [x], {"axis": 1}, 3)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)
    y, mask = evaluate(Node("d", "Dropout", ["x"], ["y", "m"], {}), [x])
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()


@pytest.mark.parametrize("shape,attrs", [
    ((2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ((1, 2, 9, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 9, 10), {"kernel_shape": [2, 3], "dilations": [1, 2], "ceil_mode": 1,
                     "strides": [2, 2], "storage_order": 1}),
    ((1, 2, 5, 7, 6), {"kernel_shape": [3, 2, 2], "strides": [2, 2, 2],
                       "auto_pad": "SAME_LOWER", "storage_order": 1}),
    ((1, 2, 5, 7, 6), {"kernel_shape": [2, 3, 3], "pads": [1, 1, 0, 0, 1, 1]}),
])
def test_maxpool_indices_match_onnxruntime(shape: tuple[int, ...], attrs: dict) -> None:
    """MaxPool's second output: the flat input index of each maximum (the
    first in row-major window order), column-major in its plane for
    storage_order 1; ties (rounded inputs) pick as onnxruntime does."""
    x = np.round(f32(*shape) * 2).astype(np.float32)
    got = evaluate(Node("m", "MaxPool", ["x"], ["y", "i"], dict(attrs)), [x])
    want = run_ort("MaxPool", [x], attrs, 2)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("scales,attrs", [
    ([1, 1, 0.5, 0.5], {"mode": "linear"}),
    ([1, 1, 0.45, 0.7], {"mode": "cubic"}),
    ([1, 1, 0.3, 0.6], {"mode": "linear", "exclude_outside": 1}),
    ([1, 1, 0.4, 1.7], {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}),
    ([1, 1, 0.5, 0.5], {"mode": "linear", "coordinate_transformation_mode": "align_corners"}),
    ([1, 1, 0.37, 0.5], {"mode": "linear",
                         "coordinate_transformation_mode": "pytorch_half_pixel"}),
    ([1, 1, 0.6, 0.35], {"mode": "cubic", "coordinate_transformation_mode": "asymmetric"}),
    ([1, 1, 2.0, 0.5], {"mode": "linear"}),
])
def test_resize_antialias_matches_onnxruntime(scales: list[float], attrs: dict) -> None:
    """Resize-18 antialias=1: a shrinking axis blends every input under
    its stretched filter (and an enlarging one interpolates as usual)."""
    x = f32(1, 2, 13, 12)
    attrs = {**attrs, "antialias": 1}
    ins = [x, None, np.array(scales, np.float32)]
    (got,) = evaluate(Node("r", "Resize", ["x", "", "s"], ["y"], dict(attrs)), ins)
    (want,) = run_ort("Resize", ins, attrs, 1, opset=18)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


def test_constant_of_shape_uses_scalar_value_and_dtype() -> None:
    (y,) = evaluate(Node("c", "ConstantOfShape", ["s"], ["y"], {"value": 3, "dtype": "i32"}),
                    [i64(2, 3)])
    want = run_ort("ConstantOfShape", [i64(2, 3)],
                   {"value": onnx.numpy_helper.from_array(np.array([3], np.int32))}, 1)[0]
    np.testing.assert_array_equal(y, want)
    assert y.dtype == want.dtype


def test_every_supported_op_has_semantics_and_unknown_op_is_named() -> None:
    node = Node("weird", "NoSuchOp", [], ["y"])
    with pytest.raises(ValueError, match="'NoSuchOp' \\(node 'weird'\\)"):
        evaluate(node, [])
    tested = {c[0] for c in CASES} | {"Split", "Dropout", "ConstantOfShape"}
    assert tested == set(SUPPORTED_OPS)
