"""Optimizer steps as standard ONNX ops, with the semantics of ONNX's
ai.onnx.preview.training operators (whose onnx.reference implementations
are the tests' oracle).

For a parameter X with gradient G, learning rate R and update count T:
- sgd:      X' = X - R (G + wd X)
- momentum: G' = G + wd X; V' = alpha V + b G' with b = beta if T > 0
            else 1; X' = X - R V' (standard) or X - R (G' + alpha V')
            (nesterov). alpha = momentum, beta = 1 - dampening.
- adam:     G' = G + wd X; V' = a V + (1-a) G'; H' = b H + (1-b) G'^2;
            R' = R sqrt(1 - b^T) / (1 - a^T) if T > 0 else R;
            X' = (1 - post) (X - R' V' / (sqrt(H') + eps)),
            post = 0 (adam) or R wd (adamw, with G' = G).
The optimizer state (V, H) of the step is zero (the state before the
first step) and held as constants named `opt:<X>:v`, `opt:<X>:h`; their
updates are outputs like the parameter's.
"""

from __future__ import annotations

import math

from .training import TrainSpec
from .types import Splat
from .vjp_base import Emitter


def state_names(spec: TrainSpec, param: str) -> list[str]:
    """The optimizer-state constants of `param` (the ONNX ops' V, H)."""
    if spec.optimizer == "momentum":
        return [f"opt:{param}:v"]
    if spec.optimizer in ("adam", "adamw"):
        return [f"opt:{param}:v", f"opt:{param}:h"]
    return []


def add_update(e: Emitter, spec: TrainSpec, param: str, grad: str) -> dict[str, str]:
    """Write one parameter's optimizer step; returns {updated name: value}
    for the parameter and each state tensor (states are added as zero
    constants)."""
    t = e.t(param)
    dt = t.dtype
    states = []
    for name in state_names(spec, param):
        if name in e.m.values:
            raise ValueError(f"value '{name}' already exists")
        e.m.add_value(name, t, Splat(t, 0.0))
        states.append(name)
    opt = spec.optimizer
    decay = spec.weight_decay if opt != "adamw" else 0.0
    g = e.add(grad, e.scale(param, decay)) if decay else grad
    lr = spec.lr
    if opt == "sgd":
        return {param: e.sub(param, e.scale(g, lr))}
    if opt == "momentum":
        (v,) = states
        beta = (1.0 - spec.dampening) if spec.step > 0 else 1.0
        v_new = e.add(e.scale(v, spec.momentum), e.scale(g, beta))
        step = e.add(g, e.scale(v_new, spec.momentum)) if spec.nesterov else v_new
        return {param: e.sub(param, e.scale(step, lr)), v: v_new}
    v, h = states
    a, b = spec.beta1, spec.beta2
    v_new = e.add(e.scale(v, a), e.scale(g, 1.0 - a))
    h_new = e.add(e.scale(h, b), e.scale(e.mul(g, g), 1.0 - b))
    r = lr * math.sqrt(1.0 - b ** spec.step) / (1.0 - a ** spec.step) if spec.step > 0 else lr
    denom = e.add(e.unary("Sqrt", h_new), e.scalar(spec.eps, dt))
    x_new = e.sub(param, e.scale(e.div(v_new, denom), r))
    post = lr * spec.weight_decay if opt == "adamw" else 0.0
    if post:
        x_new = e.scale(x_new, 1.0 - post)
    return {param: x_new, v: v_new, h: h_new}
