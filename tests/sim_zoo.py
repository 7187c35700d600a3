"""Small models whose kernels cover every kind with a body and every anchor
op of the kinds that are not chains: the simulator's fault-injection tests
(test_sim_faults) compile them once.

`cnn`: conv, pool (windowed and global), datamove (concat, flatten), norm
(batch norm), element-wise (a sum of two activations with other readers),
deconv, resize, matmul (Gemm), softmax, reduce. `attn`: gather (embedding),
norm (layer norm), matmul (weights, and activation x activation with a
fused mask), datamove (transpose), softmax, reduce. `shapes`: 1-D and 3-D
convs, a fused pooling. `ops`: the rest (see ops_model).
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


def ops_routed_model(path: pathlib.Path) -> None:
    ops_model(path, routed=True)


def ops_model(path: pathlib.Path, routed: bool = False) -> None:
    """The anchors the other models lack, each its own kernel: LRN,
    training-mode BatchNormalization, a grouped transposed conv, Einsum of
    one and two operands (a constant B, two activations), CumSum, scatters
    that combine, Trilu, a Conv whose weight is an activation (conv_wgrad)
    with a fused tail, the other reductions, LogSoftmax, GlobalMaxPool,
    GatherElements, InstanceNormalization. Read straight from the model's
    inputs, each kernel is sized alone (split over many PEs); `routed`:
    every operand comes from a kernel (a negation), so it reaches its
    readers by lanes (and the sizing balances the pipeline instead)."""
    rng = np.random.default_rng(6)
    f = TensorProto.FLOAT

    def ints(name: str, shape: list[int], vals: list[int]) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.INT64, shape, vals)

    inits = [_init(rng, "sc", 8), _init(rng, "bi", 8), _init(rng, "mu", 8),
             helper.make_tensor("va", f, [8], (rng.random(8) + 0.5).tolist()),
             _init(rng, "wd", 8, 3, 3, 3), _init(rng, "bd", 6), _init(rng, "we", 7, 3),
             _init(rng, "wb", 2, 7, 3),
             _init(rng, "kw", 1, 4, 1, 1), _init(rng, "kb", 2, 4, 3, 3),
             _init(rng, "isc", 8), _init(rng, "ibi", 8),
             ints("ax1", [], [1]), ints("ax2", [], [2]), ints("tk", [], [1]),
             ints("axes", [1], [2]), ints("ind", [3, 1], [1, 3, 1]),
             ints("ine", [3, 2], [0, 0, 4, 2, 1, 1]),
             ints("ing", [2, 5], [0, 1, 2, 0, 1, 2, 2, 1, 0, 0])]
    nd = helper.make_node
    nodes = [
        nd("LRN", ["x"], ["lrn"], size=3, alpha=1e-2, beta=0.75, bias=1.0),
        nd("BatchNormalization", ["x", "sc", "bi", "mu", "va"], ["bn", "bn_m", "bn_v"],
           training_mode=1, epsilon=1e-3),
        nd("ConvTranspose", ["x", "wd", "bd"], ["dg"], strides=[2, 2], group=2,
           pads=[0, 0, 1, 1]),
        nd("Einsum", ["s"], ["e1"], equation="bij->bj"),
        nd("Einsum", ["s", "we"], ["e2"], equation="bij,jk->bik"),
        nd("Einsum", ["s", "z"], ["e3"], equation="bij,bkj->bik"),
        nd("MatMul", ["s", "wb"], ["mb"]),
        nd("CumSum", ["s", "ax2"], ["cs"]),
        nd("CumSum", ["s", "ax1"], ["cs_x"], exclusive=1, reverse=1),
        nd("ScatterND", ["d", "ind", "u"], ["snd"], reduction="add"),
        nd("ScatterElements", ["t", "ine", "v"], ["sel"], axis=1, reduction="mul"),
        nd("Trilu", ["s", "tk"], ["tri"], upper=0),
        nd("Conv", ["a", "g"], ["wg"]),
        nd("Mul", ["wg", "kw"], ["wgm"]),
        nd("Add", ["wgm", "kb"], ["wga"]),
        nd("ReduceMin", ["s", "axes"], ["rmin"], keepdims=0),
        nd("ReduceProd", ["s", "axes"], ["rprod"], keepdims=0),
        nd("ReduceMean", ["s", "axes"], ["rmean"]),
        nd("ReduceL1", ["s", "axes"], ["rl1"], keepdims=0),
        nd("ReduceL2", ["s", "axes"], ["rl2"], keepdims=0),
        nd("ReduceSumSquare", ["s", "axes"], ["rss"], keepdims=0),
        nd("ArgMax", ["s"], ["amax"], axis=2, keepdims=0),
        nd("ArgMin", ["s"], ["amin"], axis=1, keepdims=1),
        nd("LogSoftmax", ["s"], ["lsm"], axis=-1),
        nd("GlobalMaxPool", ["x"], ["gmp"]),
        nd("GatherElements", ["t", "ing"], ["ge"], axis=0),
        nd("InstanceNormalization", ["x", "isc", "ibi"], ["inn"]),
    ]
    vi = helper.make_tensor_value_info
    outs = [vi("lrn", f, [1, 8, 6, 6]), vi("bn", f, [1, 8, 6, 6]), vi("bn_m", f, [8]),
            vi("bn_v", f, [8]), vi("dg", f, [1, 6, 12, 12]), vi("e1", f, [2, 7]),
            vi("e2", f, [2, 5, 3]), vi("e3", f, [2, 5, 4]), vi("mb", f, [2, 5, 3]),
            vi("cs", f, [2, 5, 7]),
            vi("cs_x", f, [2, 5, 7]), vi("snd", f, [6, 4]), vi("sel", f, [3, 5]),
            vi("tri", f, [2, 5, 7]), vi("wga", f, [2, 4, 3, 3]), vi("rmin", f, [2, 5]),
            vi("rprod", f, [2, 5]), vi("rmean", f, [2, 5, 1]), vi("rl1", f, [2, 5]),
            vi("rl2", f, [2, 5]),
            vi("rss", f, [2, 5]), vi("amax", TensorProto.INT64, [2, 5]),
            vi("amin", TensorProto.INT64, [2, 1, 7]), vi("lsm", f, [2, 5, 7]),
            vi("gmp", f, [1, 8, 1, 1]), vi("ge", f, [2, 5]), vi("inn", f, [1, 8, 6, 6])]
    shapes = {"x": [1, 8, 6, 6], "s": [2, 5, 7], "z": [2, 4, 7], "d": [6, 4], "u": [3, 4],
              "t": [3, 5], "v": [3, 2], "a": [2, 3, 8, 8], "g": [4, 3, 6, 6]}
    if routed:
        nodes = [nd("Neg", [f"{n}_in"], [n]) for n in shapes] + nodes
    ins = [vi(f"{n}_in" if routed else n, f, shp) for n, shp in shapes.items()]
    _save(helper.make_graph(nodes, "zoo_ops", ins, outs, inits), 18, path)


def cases_model(path: pathlib.Path) -> None:
    """Anchors whose types or extra outputs the other models lack, each its
    own kernel: reductions of int32 and int64 tensors (sums, products,
    means and norms that wrap or truncate at the integer type, arg
    reductions), MaxPool with its Indices (1-D, 2-D, 3-D; row- and
    column-major), LayerNormalization with Mean and InvStdDev, 3-D pooling
    with auto_pad SAME_UPPER / SAME_LOWER, Resize with antialias=1 (linear,
    cubic). Every input reaches its readers by lanes from a negation."""
    rng = np.random.default_rng(8)
    f, i32, i64 = TensorProto.FLOAT, TensorProto.INT32, TensorProto.INT64
    inits = [_init(rng, "lg", 16), _init(rng, "lb", 16),
             helper.make_tensor("ax", i64, [1], [2]), helper.make_tensor("ax1", i64, [1], [1]),
             helper.make_tensor("ax12", i64, [2], [1, 2]),
             helper.make_tensor("ax02", i64, [2], [0, 2]),
             helper.make_tensor("rs", f, [4], [1, 1, 0.5, 0.5]),
             helper.make_tensor("rs2", f, [4], [1, 1, 0.4, 0.75])]
    nd = helper.make_node
    nodes = [
        nd("ReduceSum", ["q", "ax12"], ["q_sum"], keepdims=0),
        nd("ReduceProd", ["q", "ax"], ["q_prod"], keepdims=0),
        nd("ReduceMean", ["q", "ax12"], ["q_mean"], keepdims=0),
        nd("ReduceSumSquare", ["q", "ax1"], ["q_ss"], keepdims=1),
        nd("ReduceMin", ["q", "ax12"], ["q_min"], keepdims=0),
        nd("ArgMin", ["q"], ["q_amin"], axis=2, keepdims=0),
        nd("ReduceL1", ["ql", "ax02"], ["l_l1"], keepdims=0),
        nd("ReduceL2", ["ql", "ax12"], ["l_l2"], keepdims=0),
        nd("ReduceMax", ["ql"], ["l_max"], keepdims=1),
        nd("ReduceMean", ["ql", "ax1"], ["l_mean"], keepdims=0),
        nd("ArgMax", ["ql"], ["l_amax"], axis=1, keepdims=1, select_last_index=1),
        nd("MaxPool", ["x"], ["mp", "mp_i"], kernel_shape=[3, 3], strides=[2, 2],
           pads=[1, 1, 1, 1]),
        nd("MaxPool", ["x"], ["mpc", "mpc_i"], kernel_shape=[2, 3], strides=[2, 2],
           dilations=[1, 2], storage_order=1, ceil_mode=1),
        nd("MaxPool", ["s"], ["m1", "m1_i"], kernel_shape=[3], strides=[2], pads=[1, 1]),
        nd("MaxPool", ["v"], ["m3", "m3_i"], kernel_shape=[3, 3, 3], strides=[2, 2, 2],
           auto_pad="SAME_UPPER", storage_order=1),
        nd("AveragePool", ["v"], ["a3"], kernel_shape=[2, 3, 3], strides=[1, 2, 2],
           auto_pad="SAME_LOWER"),
        nd("AveragePool", ["v"], ["a3c"], kernel_shape=[3, 3, 3], strides=[2, 1, 1],
           auto_pad="SAME_UPPER", count_include_pad=1),
        nd("LayerNormalization", ["t", "lg", "lb"], ["ln", "ln_mean", "ln_inv"], axis=-1,
           epsilon=1e-5),
        nd("Resize", ["r", "", "rs"], ["rz"], mode="linear", antialias=1),
        nd("Resize", ["r", "", "rs2"], ["rzc"], mode="cubic", antialias=1, exclude_outside=1,
           coordinate_transformation_mode="pytorch_half_pixel"),
    ]
    vi = helper.make_tensor_value_info
    outs = [vi("q_sum", i32, [2]), vi("q_prod", i32, [2, 24]), vi("q_mean", i32, [2]),
            vi("q_ss", i32, [2, 1, 32]), vi("q_min", i32, [2]), vi("q_amin", i64, [2, 24]),
            vi("l_l1", i64, [16]), vi("l_l2", i64, [3]), vi("l_max", i64, [1, 1, 1]),
            vi("l_mean", i64, [3, 24]), vi("l_amax", i64, [3, 1, 24]),
            vi("mp", f, [1, 4, 8, 8]), vi("mp_i", i64, [1, 4, 8, 8]),
            vi("mpc", f, [1, 4, 8, 7]), vi("mpc_i", i64, [1, 4, 8, 7]),
            vi("m1", f, [2, 3, 6]), vi("m1_i", i64, [2, 3, 6]),
            vi("m3", f, [1, 3, 3, 5, 5]), vi("m3_i", i64, [1, 3, 3, 5, 5]),
            vi("a3", f, [1, 3, 5, 5, 5]), vi("a3c", f, [1, 3, 3, 9, 9]),
            vi("ln", f, [2, 6, 16]), vi("ln_mean", f, [2, 6, 1]), vi("ln_inv", f, [2, 6, 1]),
            vi("rz", f, [1, 2, 6, 6]), vi("rzc", f, [1, 2, 4, 9])]
    shapes = {"q": ([2, 24, 32], i32), "ql": ([3, 16, 24], i64), "x": ([1, 4, 16, 16], f),
              "s": ([2, 3, 11], f), "v": ([1, 3, 5, 9, 9], f), "t": ([2, 6, 16], f),
              "r": ([1, 2, 12, 12], f)}
    nodes = [nd("Neg", [f"{n}_in"], [n]) for n in shapes] + nodes
    ins = [vi(f"{n}_in", dt, shp) for n, (shp, dt) in shapes.items()]
    _save(helper.make_graph(nodes, "zoo_cases", ins, outs, inits), 18, path)


def gaps_model(path: pathlib.Path) -> None:
    """Anchors the executors used to reject, each its own kernel (opset 20):
    bool reductions (ReduceMax: any, ReduceMin: all), reductions to and of a
    0-d tensor, int8 MaxPool, Einsums of three and four operands (one with
    an ellipsis and a constant), LayerNormalization and BatchNormalization
    whose scale / variance another kernel computes, LRN, a linear Resize
    whose rows split over row groups, and a 3-D ConvTranspose."""
    rng = np.random.default_rng(12)
    f, b8, i8 = TensorProto.FLOAT, TensorProto.BOOL, TensorProto.INT8
    inits = [_init(rng, "ew", 6, 5), _init(rng, "bb", 16), _init(rng, "bnb", 4),
             _init(rng, "bnm", 4), helper.make_tensor("z", f, [], [0.0]),
             helper.make_tensor("ax1", TensorProto.INT64, [1], [1]),
             helper.make_tensor("rsc", f, [4], [1, 1, 2, 1.5]),
             _init(rng, "dw", 5, 3, 3, 3, 3), _init(rng, "db", 3)]
    nd = helper.make_node
    nodes = [
        nd("Greater", ["xb", "z"], ["b"]),
        nd("ReduceMax", ["b", "ax1"], ["bmax"], keepdims=0),
        nd("ReduceMin", ["b"], ["bmin"], keepdims=1),
        nd("ReduceSum", ["x0"], ["ssum"], keepdims=0),
        nd("ReduceMax", ["sc"], ["smax"], keepdims=0),
        nd("MaxPool", ["q8"], ["p8"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        nd("Einsum", ["ea", "eb", "ec"], ["e3"], equation="ij,jk,kl->il"),
        nd("Einsum", ["ed", "ew", "ee", "ef"], ["e4"], equation="...ij,jk,...k,k->...i"),
        nd("Relu", ["g"], ["gr"]),
        nd("LayerNormalization", ["t", "gr", "bb"], ["lnv"], axis=-1, epsilon=1e-5),
        nd("Abs", ["v"], ["va"]),
        nd("BatchNormalization", ["xn", "bs", "bnb", "bnm", "va"], ["bnv"], epsilon=1e-3),
        nd("LRN", ["xn"], ["lrn"], size=3, alpha=0.01, beta=0.75, bias=1.0),
        nd("Resize", ["r", "", "rsc"], ["rz"], mode="linear"),
        nd("ConvTranspose", ["dx", "dw", "db"], ["dc3"], strides=[2, 2, 2],
           pads=[1, 1, 1, 1, 1, 1], output_padding=[1, 0, 1]),
    ]
    vi = helper.make_tensor_value_info
    outs = [vi("bmax", b8, [3, 16]), vi("bmin", b8, [1, 1, 1]), vi("ssum", f, []),
            vi("smax", f, []), vi("p8", i8, [1, 4, 8, 8]), vi("e3", f, [4, 7]),
            vi("e4", f, [2, 3]), vi("lnv", f, [2, 6, 16]), vi("bnv", f, [2, 4, 6, 6]),
            vi("lrn", f, [2, 4, 6, 6]), vi("rz", f, [1, 2, 24, 18]),
            vi("dc3", f, [1, 3, 6, 9, 10])]
    shapes = {"xb": ([3, 8, 16], f), "x0": ([4, 8], f), "sc": ([], f),
              "q8": ([1, 4, 16, 16], i8), "ea": ([4, 6], f), "eb": ([6, 5], f),
              "ec": ([5, 7], f), "ed": ([2, 3, 6], f), "ee": ([2, 5], f), "ef": ([5], f),
              "g": ([16], f), "t": ([2, 6, 16], f), "v": ([4], f), "bs": ([4], f),
              "xn": ([2, 4, 6, 6], f), "r": ([1, 2, 12, 12], f), "dx": ([1, 5, 3, 5, 5], f)}
    nodes = [nd("Neg", [f"{n}_in"], [n]) for n in shapes] + nodes
    ins = [vi(f"{n}_in", dt, shp) for n, (shp, dt) in shapes.items()]
    _save(helper.make_graph(nodes, "zoo_gaps", ins, outs, inits), 20, path)


def pitched_model(path: pathlib.Path) -> None:
    """A 3x3 conv, then a 1x1: the second's input side has far more PE rows
    than its lanes need and each row reads a small share, so the router cuts
    its input into pitched lanes (a spine per lane hands each lane on to the
    rows between)."""
    rng = np.random.default_rng(5)
    inits = [_init(rng, "w1", 16, 16, 3, 3), _init(rng, "w2", 16, 16, 1, 1)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"])]
    _save(helper.make_graph(
        nodes, "zoo_pitched", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                             [1, 16, 24, 24])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 24, 24])], inits),
        17, path)
