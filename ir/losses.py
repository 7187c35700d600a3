"""The losses a training step can end in, written as standard ONNX ops.

A loss reads the model's first output and a new model input `labels`, and
gives the scalar `loss` and the gradient of the loss with respect to that
output — in closed form, which is shorter and better conditioned than
differentiating the loss's own ops:

- cross-entropy: `labels` are int64 class indices, shaped like the output
  without its last axis; loss = mean over all positions of
  -log softmax(output)[label] along the last axis;
  d loss / d output = (softmax(output) - onehot(labels)) / positions.
  A label outside [0, classes) selects no class (its one-hot row is zero).
- mse: `labels` has the output's shape and type; loss = mean of
  (output - labels)^2 over every element; the gradient 2 (output - labels)
  / elements.
"""

from __future__ import annotations

import numpy as np

from .types import TensorType
from .vjp_base import Emitter, GradError


def labels_type(kind: str, output: TensorType) -> TensorType:
    """The type of the `labels` input a loss of `kind` needs for `output`."""
    if kind == "cross-entropy":
        if len(output.shape) < 1 or not output.dtype.startswith("f"):
            raise GradError(f"cross-entropy needs float logits with a class axis, but the "
                            f"model's first output is {output}; use --loss mse")
        return TensorType("i64", output.shape[:-1])
    if kind == "mse":
        if not output.dtype.startswith("f"):
            raise GradError(f"mse needs a float output, but the model's first output is {output}")
        return output
    raise GradError(f"unknown loss '{kind}' (known: cross-entropy, mse)")


def add_loss(e: Emitter, kind: str, output: str, labels: str) -> tuple[str, str]:
    """Write the loss of `output` against `labels`; returns (loss, d loss / d output)."""
    t = e.t(output)
    dt = t.dtype
    scalar = TensorType(dt, ())
    if kind == "mse":
        diff = e.sub(output, labels)
        n = max(1, t.numel)
        loss = e.op("ReduceMean", [e.mul(diff, diff)], scalar, axes=list(range(len(t.shape))),
                    keepdims=0)
        return loss, e.scale(diff, 2.0 / n)
    classes = t.shape[-1]
    positions = max(1, t.numel // max(1, classes))
    lsm = e.op("LogSoftmax", [output], t, axis=-1)
    lab = e.reshape(labels, t.shape[:-1] + (1,))
    hot = e.binary("Equal", lab, e.array(np.arange(classes), "i64"))
    onehot = e.where(hot, e.scalar(1.0, dt), e.scalar(0.0, dt))
    picked = e.op("ReduceSum", [e.mul(lsm, onehot), e.ints(list(range(len(t.shape))))], scalar,
                  keepdims=0)
    loss = e.scale(picked, -1.0 / positions)
    grad = e.scale(e.sub(e.unary("Exp", lsm), onehot), 1.0 / positions)
    return loss, grad
