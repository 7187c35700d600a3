"""Two small models whose kernels cover every kind with a body: the
simulator's fault-injection tests (test_sim_faults) compile them once.

`cnn`: conv, pool (windowed and global), datamove (concat, flatten), norm
(batch norm), element-wise (a sum of two activations with other readers),
deconv, resize, matmul (Gemm), softmax, reduce. `attn`: gather (embedding),
norm (layer norm), matmul (weights, and activation x activation with a
fused mask), datamove (transpose), softmax, reduce.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper


def _init(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, shape,
                              (rng.standard_normal(shape) * 0.3).ravel().tolist())


def _save(g: onnx.GraphProto, opset: int, path: pathlib.Path) -> None:
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def cnn_model(path: pathlib.Path) -> None:
    rng = np.random.default_rng(3)
    inits = [_init(rng, "w1", 8, 3, 3, 3), _init(rng, "b1", 8), _init(rng, "w2", 8, 16, 3, 3),
             _init(rng, "b2", 8), _init(rng, "fc", 8, 5), _init(rng, "fb", 5),
             _init(rng, "sc", 16), _init(rng, "bi", 16), _init(rng, "mu", 16),
             helper.make_tensor("va", TensorProto.FLOAT, [16], (rng.random(16) + 0.5).tolist()),
             _init(rng, "wd", 8, 4, 2, 2),
             helper.make_tensor("rs", TensorProto.FLOAT, [4], [1, 1, 2, 2])]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["p1", "r1"], ["cat"], axis=1),
        helper.make_node("Add", ["p1", "r1"], ["sum"]),
        helper.make_node("ReduceSum", ["sum"], ["z"], keepdims=0),
        helper.make_node("BatchNormalization", ["cat", "sc", "bi", "mu", "va"], ["bn"]),
        helper.make_node("Conv", ["bn", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Sigmoid", ["c2"], ["s2"]),
        helper.make_node("ConvTranspose", ["s2", "wd"], ["d"], strides=[2, 2]),
        helper.make_node("Resize", ["d", "", "rs"], ["up"], mode="linear"),
        helper.make_node("GlobalAveragePool", ["s2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fb"], ["h"]),
        helper.make_node("Softmax", ["h"], ["y"], axis=1),
        helper.make_node("ReduceMax", ["up"], ["m"], axes=[2, 3], keepdims=0),
    ]
    _save(helper.make_graph(
        nodes, "zoo_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5]),
         helper.make_tensor_value_info("m", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, [])], inits), 17, path)


def attn_model(path: pathlib.Path) -> None:
    rng = np.random.default_rng(4)
    T, D = 6, 16
    mask = np.triu(np.full((T, T), -1e4, np.float32), 1)
    inits = [_init(rng, "emb", 20, D), _init(rng, "g", D), _init(rng, "b", D),
             _init(rng, "wq", D, D), _init(rng, "wk", D, D), _init(rng, "wv", D, D),
             helper.make_tensor("mask", TensorProto.FLOAT, [T, T], mask.ravel().tolist()),
             helper.make_tensor("sc", TensorProto.FLOAT, [], [0.25]),
             helper.make_tensor("ax", TensorProto.INT64, [1], [1])]
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], axis=0),
        helper.make_node("LayerNormalization", ["e", "g", "b"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "wq"], ["q"]),
        helper.make_node("MatMul", ["n", "wk"], ["k"]),
        helper.make_node("MatMul", ["n", "wv"], ["v"]),
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Mul", ["s", "sc"], ["ss"]),
        helper.make_node("Add", ["ss", "mask"], ["sm"]),
        helper.make_node("Softmax", ["sm"], ["pr"], axis=-1),
        helper.make_node("MatMul", ["pr", "v"], ["o"]),
        helper.make_node("Add", ["o", "e"], ["res"]),
        helper.make_node("ReduceSum", ["res", "ax"], ["y"], keepdims=1),
    ]
    _save(helper.make_graph(
        nodes, "zoo_attn", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, T])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, D])], inits), 18, path)


def shapes_model(path: pathlib.Path) -> None:
    """1-D and 3-D convs, a conv with a fused max-pooling, 1-D pooling."""
    rng = np.random.default_rng(5)
    inits = [_init(rng, "w1", 6, 2, 3), _init(rng, "b1", 6), _init(rng, "w3", 4, 2, 3, 3, 3),
             _init(rng, "w2", 8, 3, 3, 3), _init(rng, "b2", 8)]
    nodes = [
        helper.make_node("Conv", ["s", "w1", "b1"], ["c1"], pads=[1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("AveragePool", ["r1"], ["y1"], kernel_shape=[3], strides=[2],
                         pads=[1, 1]),
        helper.make_node("Conv", ["v", "w3"], ["y3"], pads=[1, 1, 1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["y2"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
    ]
    _save(helper.make_graph(
        nodes, "zoo_shapes",
        [helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 2, 24]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 2, 4, 6, 6]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1, 6, 12]),
         helper.make_tensor_value_info("y3", TensorProto.FLOAT, [1, 4, 4, 6, 6]),
         helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 8, 6, 6])], inits), 17, path)
