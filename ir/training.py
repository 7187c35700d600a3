"""What a training step is made of: the roles of its ops, and its settings.

Why here (ir): the autodiff pass writes a training step, and every later
stage reads it differently — form-kernels keeps optimizer updates apart,
pipeline sizing stashes forward activations for the backward pass, the
weight-streaming schedule runs forward phases, then backward phases, then
the optimizer off the wafer, the report groups kernels per layer. They all
learn an op's role from its name, which the autodiff pass gives it:

    <forward node name>        forward (the model, unchanged)
    loss/...                   the loss and its gradient seed
    dgrad/<forward node>#k     input (activation) gradient of that node
    wgrad/<forward node>#k     weight gradient of that node
    update/<initializer>#k     the optimizer step of that initializer

`module.attrs["train"]` holds the step's settings (`TrainSpec.to_attrs`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ROLES = ("forward", "loss", "dgrad", "wgrad", "update")
LOSSES = ("cross-entropy", "mse")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


def node_role(name: str) -> str:
    """The role of a training-step op, from its name (see the module doc)."""
    head, sep, _ = name.partition("/")
    return head if sep and head in ROLES[1:] else "forward"


def role_of_kernel(origin: list[str]) -> str:
    """A kernel's role: that of the op it is anchored on (its first op)."""
    return node_role(origin[0]) if origin else "forward"


def forward_node_of(name: str) -> str:
    """The forward node a dgrad/wgrad op differentiates (its own name for a
    forward op; the initializer for an update op)."""
    head, sep, rest = name.partition("/")
    if not sep or head not in ROLES[1:]:
        return name
    return rest.rsplit("#", 1)[0]


def is_training(attrs: dict[str, object]) -> bool:
    return isinstance(attrs.get("train"), dict)


@dataclass(frozen=True)
class TrainSpec:
    """The loss and optimizer of a training step (the `--train` options).

    Optimizer semantics are those of ONNX's ai.onnx.preview.training ops:
    `momentum` is Momentum (alpha = momentum, beta = 1 - dampening,
    norm_coefficient = weight_decay, mode standard or nesterov); `adam` is
    Adam with norm_coefficient = weight_decay; `adamw` is Adam with
    norm_coefficient_post = lr x weight_decay (decoupled decay). `step` is
    the update count T of this step (1 = the first)."""

    loss: str = "cross-entropy"
    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    step: int = 1

    def to_attrs(self) -> dict[str, object]:
        return asdict(self)
