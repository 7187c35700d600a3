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


def barrier(kernel: object, values: dict) -> bool:
    """Does a kernel need a whole sample before its output is complete?

    Kernels stream a sample row by row (the last axis is a row), so their
    latency is a few rows — except those whose outputs depend on every row:
    reductions over more than the last axis (batch statistics, bias
    gradients, the loss), global pooling, products whose second operand is
    an activation (attention, weight gradients) and convolution weight
    gradients. Each of those delays a sample by one sample time."""
    k = kernel
    body = getattr(k, "body", [])
    if not body:
        return False
    head = body[0]
    kind = getattr(k, "kind", "")
    if kind == "conv_wgrad":
        return True
    if kind == "pool":
        return head.op.startswith("Global")
    if kind == "matmul":
        dims = getattr(k, "dims", {})
        return bool(dims.get("Bact")) or bool(head.attrs.get("transA"))
    if kind != "reduce" or not head.inputs or head.inputs[0] not in values:
        return False
    shape = values[head.inputs[0]].type.shape
    axes = head.attrs.get("axes")
    if axes is None and len(head.inputs) > 1 and head.inputs[1]:
        c = values[head.inputs[1]].const
        axes = [] if c is None else [int(a) for a in c.array().reshape(-1)]
    if not axes:
        axes = list(range(len(shape)))
    big = [int(a) % len(shape) for a in axes if shape[int(a) % len(shape)] > 1] if shape else []
    return any(a != len(shape) - 1 for a in big)


def pipeline_stash(kernels: list, edges: list, values: dict | None = None
                   ) -> dict[str, tuple[int, int]]:
    """Per kernel of a layer-pipelined training step: (bytes per sample, the
    longest distance in samples) of the activations it must stash.

    A sample reaches kernel c at arrival(c) sample times after entering:
    the most `barrier` kernels (each a sample time late) on any path to c;
    streaming kernels add only a few rows. A value kernel p produces for c
    is therefore arrival(c) - arrival(p) - latency(p) samples old when c
    reads it, and c holds that many samples' worth of it: a forward
    activation read by its layer's backward kernels waits for every barrier
    down the rest of the network and back."""
    from .graph import HOST

    vals = values or {}
    lat = {k.name: int(barrier(k, vals)) for k in kernels}
    arrival: dict[str, int] = {k.name: 0 for k in kernels}
    preds: dict[str, list[tuple[str, int]]] = {k.name: [] for k in kernels}
    for e in edges:
        for d in e.dsts:
            if d != HOST and e.src != HOST and d in preds:
                preds[d].append((e.src, int(e.bytes_per_sample)))
    for k in kernels:  # kernels are in topological order
        if preds[k.name]:
            arrival[k.name] = max(arrival[p] + lat[p] for p, _ in preds[k.name])
    out: dict[str, tuple[int, int]] = {}
    for k in kernels:
        total, far = 0, 0
        for p, nbytes in preds[k.name]:
            dist = arrival[k.name] - arrival[p] - lat[p]
            if dist > 0:
                total += nbytes * dist
                far = max(far, dist)
        if total:
            out[k.name] = (total, far)
    return out


def placement_order(kernels: list) -> list[int]:
    """Kernel indices in the order a training step is packed: every forward
    kernel followed by the backward kernels that differentiate it (its input
    and weight gradients, its parameters' gradient sums and updates).

    Why: kernel order is dataflow order — the whole forward pass, the loss,
    then the backward pass in reverse — so packing in it puts a layer's
    forward kernel and its backward kernels at opposite ends of the wafer,
    and the activations stashed for the backward pass, read across the
    wafer, cross every kernel in between. Interleaved, a forward kernel's
    stash edges, its successor in the forward pass and the gradients it
    receives from the next layer's backward kernels all run to neighbours.

    A backward op names the forward node it differentiates (`dgrad/<node>`),
    the value whose gradient it sums (`dgrad/<value>`) or the parameter it
    updates (`update/<param>`); each is anchored on the forward kernel that
    holds that node, makes that value or first reads that parameter. Loss
    kernels come after the forward pass; a kernel anchored on nothing stays
    right after the kernel before it."""
    anchor_of: dict[str, int] = {}  # forward op, value or parameter -> forward position
    pos = 0
    for k in kernels:
        if role_of_kernel(k.origin) != "forward":
            continue
        for name in k.origin:
            anchor_of.setdefault(name, pos)
        for n in getattr(k, "body", []):
            anchor_of.setdefault(n.name, pos)
            for v in n.outputs:
                if v:
                    anchor_of.setdefault(v, pos)
        for v in k.inputs:  # a parameter: its first forward reader
            if v:
                anchor_of.setdefault(v, pos)
        pos += 1
    keys: list[tuple[int, int, int]] = []
    last = -1
    for i, k in enumerate(kernels):
        role = role_of_kernel(k.origin)
        if role == "forward":
            last = anchor_of[k.origin[0]] if k.origin else last
            keys.append((last, 0, i))
            continue
        if role == "loss":
            keys.append((pos, 0, i))
            continue
        found = anchor_of.get(forward_node_of(k.origin[0])) if k.origin else None
        keys.append((last if found is None else found, 1, i))
        if found is not None:
            last = found
    return [k[2] for k in sorted(keys)]
