"""Builds examples/tiny_cnn.onnx: a small residual CNN used by `make demo`.

Conv-BN-Relu stem, max-pool, one residual block, global pool, Gemm and
Softmax -- the shapes of a ResNet in miniature, with seeded weights.
Run: python examples/make_tiny_cnn.py
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits: list[TensorProto] = []

    def w(name: str, *shape: int, scale: float = 0.1) -> str:
        inits.append(numpy_helper.from_array(
            (rng.standard_normal(shape) * scale).astype(np.float32), name))
        return name

    def bn(prefix: str, c: int) -> list[str]:
        inits.append(numpy_helper.from_array(
            (1 + 0.1 * rng.standard_normal(c)).astype(np.float32), f"{prefix}_g"))
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32),
                                             f"{prefix}_b"))
        inits.append(numpy_helper.from_array((0.1 * rng.standard_normal(c)).astype(np.float32),
                                             f"{prefix}_m"))
        inits.append(numpy_helper.from_array(
            (1 + 0.1 * rng.random(c)).astype(np.float32), f"{prefix}_v"))
        return [f"{prefix}_g", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"]

    n = helper.make_node
    nodes = [
        n("Conv", ["image", w("stem_w", 16, 3, 3, 3)], ["stem"], name="stem_conv",
          pads=[1, 1, 1, 1], strides=[2, 2]),
        n("BatchNormalization", ["stem", *bn("stem_bn", 16)], ["stem_n"], name="stem_bn"),
        n("Relu", ["stem_n"], ["stem_r"], name="stem_relu"),
        n("MaxPool", ["stem_r"], ["pool"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["pool", w("b1_w", 16, 16, 3, 3), w("b1_b", 16)], ["b1"], name="block_conv1",
          pads=[1, 1, 1, 1]),
        n("Relu", ["b1"], ["b1_r"], name="block_relu1"),
        n("Conv", ["b1_r", w("b2_w", 16, 16, 3, 3), w("b2_b", 16)], ["b2"], name="block_conv2",
          pads=[1, 1, 1, 1]),
        n("Add", ["b2", "pool"], ["res"], name="block_add"),
        n("Relu", ["res"], ["res_r"], name="block_relu2"),
        n("GlobalAveragePool", ["res_r"], ["gap"], name="gap"),
        n("Flatten", ["gap"], ["flat"], name="flatten"),
        n("Gemm", ["flat", w("fc_w", 10, 16), w("fc_b", 10)], ["logits"], name="fc", transB=1),
        n("Softmax", ["logits"], ["prob"], name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="wsec-examples")
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tiny_cnn.onnx")
    onnx.save(build(), out)
    print(f"wrote {out}")
