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
    "And": "elementwise logical and",
    "ArgMax": "index of the maximum along `axis` (keepdims, select_last_index)",
    "ArgMin": "index of the minimum along `axis` (keepdims, select_last_index)",
    "AveragePool": "average pooling (pads, strides, ceil_mode, count_include_pad)",
    "BatchNormalization": "batch norm over axis 1 (inference: folded into a preceding Conv/Gemm; "
                          "training_mode: the batch's statistics)",
    "Cast": "convert to another element type (`to`)",
    "Ceil": "elementwise ceiling",
    "Clip": "clamp to optional [min, max] inputs",
    "Concat": "concatenate along `axis`",
    "ConstantOfShape": "tensor of the given shape filled with `value`",
    "Conv": "N-d convolution, NCHW (pads, strides, dilations, group, auto_pad)",
    "ConvTranspose": "N-d transposed convolution (strides, pads, output_padding, group)",
    "Cos": "elementwise cosine",
    "CumSum": "cumulative sum along an axis (exclusive, reverse)",
    "DepthToSpace": "move channel blocks into spatial blocks (DCR/CRD)",
    "Div": "elementwise a / b (integer division truncates)",
    "Dropout": "identity at inference (optional mask of ones)",
    "Einsum": "Einstein summation (`equation`)",
    "Elu": "elementwise x if x > 0 else alpha * (e^x - 1)",
    "Equal": "elementwise a == b",
    "Erf": "elementwise error function",
    "Exp": "elementwise e^x",
    "Expand": "broadcast to a shape",
    "Flatten": "reshape to 2-D at `axis`",
    "Floor": "elementwise floor",
    "Gather": "take indices along `axis`",
    "GatherElements": "take elements by an index tensor along `axis`",
    "Gemm": "alpha * A' @ B' + beta * C (transA, transB)",
    "GlobalAveragePool": "mean over all spatial dimensions",
    "GlobalMaxPool": "max over all spatial dimensions",
    "Greater": "elementwise a > b",
    "GreaterOrEqual": "elementwise a >= b",
    "HardSigmoid": "elementwise clamp(alpha * x + beta, 0, 1)",
    "HardSwish": "elementwise x * clamp(x / 6 + 1/2, 0, 1)",
    "Identity": "copy of the input",
    "InstanceNormalization": "normalise each (sample, channel) over its spatial dims (scale, bias)",
    "IsInf": "elementwise test for +inf / -inf (detect_positive, detect_negative)",
    "IsNaN": "elementwise x != x",
    "LayerNormalization": "normalise over the trailing axes from `axis` (scale, bias)",
    "LeakyRelu": "elementwise x if x >= 0 else alpha * x",
    "Less": "elementwise a < b",
    "LessOrEqual": "elementwise a <= b",
    "Log": "elementwise natural logarithm",
    "LogSoftmax": "log of softmax along `axis`",
    "LRN": "local response normalisation across channels",
    "MatMul": "matrix product with numpy batching",
    "Max": "elementwise maximum of all inputs",
    "MaxPool": "max pooling (pads, strides, dilations, ceil_mode)",
    "Mean": "elementwise mean of all inputs",
    "Min": "elementwise minimum of all inputs",
    "Mod": "elementwise remainder (fmod: sign of the dividend)",
    "Mul": "elementwise a * b",
    "Neg": "elementwise -x",
    "Not": "elementwise logical not",
    "Or": "elementwise logical or",
    "Pad": "constant/reflect/edge padding",
    "Pow": "elementwise a ** b",
    "PRelu": "elementwise x if x >= 0 else slope * x (broadcast slope)",
    "Range": "arithmetic sequence [start, limit) by delta",
    "Reciprocal": "elementwise 1 / x",
    "ReduceL1": "sum of |x| over `axes`",
    "ReduceL2": "square root of the sum of squares over `axes`",
    "ReduceMax": "max over `axes`",
    "ReduceMean": "mean over `axes`",
    "ReduceMin": "min over `axes`",
    "ReduceProd": "product over `axes`",
    "ReduceSum": "sum over the axes input",
    "ReduceSumSquare": "sum of squares over `axes`",
    "Relu": "elementwise max(x, 0)",
    "Reshape": "reshape (0 copies a dim, -1 infers one)",
    "Resize": "nearest/linear/cubic resampling by scales or sizes (all coordinate modes)",
    "Round": "elementwise round half to even",
    "Selu": "elementwise gamma * (x if x > 0 else alpha * (e^x - 1))",
    "ScatterElements": "copy of data with updates written at an index tensor along `axis` "
                       "(reduction)",
    "ScatterND": "copy of data with updates written at k-tuples of indices (reduction)",
    "Shape": "the shape of a tensor as i64 (start, end)",
    "Sigmoid": "elementwise 1 / (1 + e^-x)",
    "Sign": "elementwise sign (-1, 0, 1)",
    "Sin": "elementwise sine",
    "Size": "number of elements of a tensor as an i64 scalar",
    "Slice": "strided slice (starts, ends, axes, steps inputs)",
    "Softmax": "softmax along `axis`",
    "Softplus": "elementwise log(1 + e^x)",
    "Softsign": "elementwise x / (1 + |x|)",
    "SpaceToDepth": "move spatial blocks into channels",
    "Split": "split along `axis` (split sizes input or equal parts)",
    "Sqrt": "elementwise square root",
    "Squeeze": "remove size-1 axes",
    "Sub": "elementwise a - b",
    "Sum": "elementwise sum of all inputs",
    "Tanh": "elementwise tanh",
    "Tile": "repeat along each axis",
    "Transpose": "permute axes (`perm`, default reversed)",
    "Trilu": "keep the upper/lower triangle of the last two axes (k diagonal offset)",
    "Unsqueeze": "insert size-1 axes",
    "Where": "elementwise select cond ? a : b",
    "Xor": "elementwise logical xor",
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
    "And", "Cos", "Elu", "GreaterOrEqual", "HardSigmoid", "HardSwish", "IsInf", "IsNaN",
    "LessOrEqual",
    "Mean", "Mod", "Or", "PRelu", "Round", "Selu", "Sign", "Sin", "Softplus", "Softsign", "Xor",
})
SHAPE_ONLY_OPS = frozenset({
    "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose",
    "Expand", "Tile",
})
