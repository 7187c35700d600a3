"""The graph-level operator table: which ONNX operators wsec understands.

One place lists them (what `wsec ops` prints, what the frontend accepts);
`wsec.ir.opsem` implements each one, and a test keeps the two in step.
Semantics are those of the default ONNX domain at the canonical opset.
"""

from __future__ import annotations

# Every module is converted to this opset by the frontend.
CANONICAL_OPSET = 17

# ONNX op type -> one-line description (for `wsec ops`).
SUPPORTED_OPS: dict[str, str] = {
    "Abs": "elementwise |x|",
    "Add": "elementwise a + b (numpy broadcasting)",
    "AveragePool": "average pooling (pads, strides, ceil_mode, count_include_pad)",
    "BatchNormalization": "inference batch norm over axis 1 (folded into a preceding Conv/Gemm)",
    "Cast": "convert to another element type (`to`)",
    "Ceil": "elementwise ceiling",
    "Clip": "clamp to optional [min, max] inputs",
    "Concat": "concatenate along `axis`",
    "ConstantOfShape": "tensor of the given shape filled with `value`",
    "Conv": "N-d convolution, NCHW (pads, strides, dilations, group, auto_pad)",
    "Div": "elementwise a / b (integer division truncates)",
    "Dropout": "identity at inference (optional mask of ones)",
    "Equal": "elementwise a == b",
    "Erf": "elementwise error function",
    "Exp": "elementwise e^x",
    "Expand": "broadcast to a shape",
    "Flatten": "reshape to 2-D at `axis`",
    "Floor": "elementwise floor",
    "Gather": "take indices along `axis`",
    "Gemm": "alpha * A' @ B' + beta * C (transA, transB)",
    "GlobalAveragePool": "mean over all spatial dimensions",
    "GlobalMaxPool": "max over all spatial dimensions",
    "Greater": "elementwise a > b",
    "Identity": "copy of the input",
    "LayerNormalization": "normalise over the trailing axes from `axis` (scale, bias)",
    "LeakyRelu": "elementwise x if x >= 0 else alpha * x",
    "Less": "elementwise a < b",
    "Log": "elementwise natural logarithm",
    "LRN": "local response normalisation across channels",
    "MatMul": "matrix product with numpy batching",
    "Max": "elementwise maximum of all inputs",
    "MaxPool": "max pooling (pads, strides, dilations, ceil_mode)",
    "Min": "elementwise minimum of all inputs",
    "Mul": "elementwise a * b",
    "Neg": "elementwise -x",
    "Not": "elementwise logical not",
    "Pad": "constant/reflect/edge padding",
    "Pow": "elementwise a ** b",
    "Range": "arithmetic sequence [start, limit) by delta",
    "Reciprocal": "elementwise 1 / x",
    "ReduceMax": "max over `axes`",
    "ReduceMean": "mean over `axes`",
    "ReduceSum": "sum over the axes input",
    "Relu": "elementwise max(x, 0)",
    "Reshape": "reshape (0 copies a dim, -1 infers one)",
    "Shape": "the shape of a tensor as i64 (start, end)",
    "Sigmoid": "elementwise 1 / (1 + e^-x)",
    "Slice": "strided slice (starts, ends, axes, steps inputs)",
    "Softmax": "softmax along `axis`",
    "Split": "split along `axis` (split sizes input or equal parts)",
    "Sqrt": "elementwise square root",
    "Squeeze": "remove size-1 axes",
    "Sub": "elementwise a - b",
    "Sum": "elementwise sum of all inputs",
    "Tanh": "elementwise tanh",
    "Tile": "repeat along each axis",
    "Transpose": "permute axes (`perm`, default reversed)",
    "Unsqueeze": "insert size-1 axes",
    "Where": "elementwise select cond ? a : b",
}

# ONNX TensorProto element types -> IR dtype names (see wsec.ir.types.DTYPES).
ONNX_DTYPES: dict[int, str] = {
    1: "f32", 2: "u8", 3: "i8", 4: "u16", 5: "i16", 6: "i32", 7: "i64",
    9: "bool", 10: "f16", 11: "f64", 12: "u32", 13: "u64",
}
IR_TO_ONNX_DTYPE: dict[str, int] = {v: k for k, v in ONNX_DTYPES.items()}

# Ops whose output equals an input, elementwise ops and pure data movement:
# canonicalize folds these over splat constants without materialising them.
ELEMENTWISE_OPS = frozenset({
    "Abs", "Add", "Ceil", "Clip", "Div", "Equal", "Erf", "Exp", "Floor", "Greater",
    "LeakyRelu", "Less", "Log", "Max", "Min", "Mul", "Neg", "Not", "Pow", "Reciprocal",
    "Relu", "Sigmoid", "Sqrt", "Sub", "Sum", "Tanh", "Where", "Cast",
})
SHAPE_ONLY_OPS = frozenset({
    "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
    "Expand", "Tile",
})
