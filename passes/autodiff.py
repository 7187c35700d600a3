"""autodiff: turn a forward graph into one training step (loss, backward,
optimizer update) on the graph-level IR.

Why a graph pass: the user hands over a forward model and a choice of loss
and optimizer; everything else — the backward ops, the update — must be
derived, and derived as ordinary graph ops so that form-kernels, sizing,
both execution modes and the simulator handle a training step exactly as
they handle inference, and `wsec export-train` can write it as standard
ONNX. It runs on the imported graph, before canonicalize, so constant
folding never merges a trained initializer into another constant and
BatchNormalization is not folded with its running statistics.

The step (reverse-mode autodiff, one VJP rule per op: wsec.ir.vjp):
1. ops whose training forward differs (BatchNormalization: batch
   statistics) are rewritten (`TRAINING_FORMS`);
2. the loss reads the model's first output and a new input `labels`
   (wsec.ir.losses);
3. trained parameters: every float initializer (the frontend's list in
   `module.attrs["initializers"]`, else every float constant) except those
   `freeze` names (';'-separated names or globs) and those the loss does
   not depend on;
4. gradients flow backwards through the ops between the parameters and the
   loss, summed where a value has several readers;
5. each parameter's optimizer step (wsec.ir.optimizers).
Outputs: `loss`, then `grad:<p>` per parameter, then `new:<p>` per
parameter and optimizer state. Op names carry their role
(wsec.ir.training). An op on the way with no rule is an error naming it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from wsec.ir.graph import Kernel, Module, Node
from wsec.ir.losses import add_loss, labels_type
from wsec.ir.optimizers import add_update
from wsec.ir.training import LOSSES, OPTIMIZERS, TrainSpec
from wsec.ir.vjp import TRAINING_FORMS, Emitter, GradError, Namer, vjp

from .base import Pass, PassContext, PassError, PassOptionError, check_choice, check_range

LABELS = "labels"
LOSS = "loss"


@dataclass(frozen=True)
class Autodiff(Pass):
    """Derive the training step: loss, gradients, optimizer update."""

    name = "autodiff"
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
    freeze: str = ""  # ';'-separated initializer names or globs

    def __post_init__(self) -> None:
        check_choice(self, "loss", LOSSES)
        check_choice(self, "optimizer", OPTIMIZERS)
        check_range(self, "lr", 0.0)
        for opt in ("momentum", "dampening", "beta1", "beta2"):
            check_range(self, opt, 0.0, 1.0)
        check_range(self, "eps", 0.0)
        check_range(self, "weight_decay", 0.0)
        check_range(self, "step", 0)

    @property
    def spec(self) -> TrainSpec:
        return TrainSpec(self.loss, self.optimizer, float(self.lr), float(self.momentum),
                         float(self.dampening), bool(self.nesterov), float(self.beta1),
                         float(self.beta2), float(self.eps), float(self.weight_decay),
                         int(self.step))

    def run(self, module: Module, ctx: PassContext) -> None:
        if "train" in module.attrs:
            raise PassError("autodiff: the module is already a training step")
        if any(isinstance(n, Kernel) for n in module.nodes):
            raise PassError("autodiff runs on a graph-level module (before form-kernels)")
        if not module.outputs:
            raise PassError("autodiff: the model has no output to train")
        derive_step(module, self.spec, self._frozen())

    def _frozen(self) -> list[str]:
        return [p.strip() for p in str(self.freeze).split(";") if p.strip()]


def _candidates(module: Module, frozen: list[str]) -> tuple[list[str], int]:
    """Float initializers to train, and how many `frozen` removed."""
    names = module.attrs.pop("initializers", None)
    if names is None:
        names = [v for v, val in module.values.items() if val.const is not None]
    floats = [v for v in names if v in module.values and module.values[v].const is not None
              and module.values[v].type.dtype.startswith("f")]
    for pat in frozen:
        if not any(fnmatch.fnmatchcase(v, pat) for v in floats):
            raise PassOptionError(f"--freeze '{pat}' names no float initializer of the model "
                                  f"(e.g. {', '.join(floats[:3]) or 'none'})")
    keep = [v for v in floats if not any(fnmatch.fnmatchcase(v, p) for p in frozen)]
    return keep, len(floats) - len(keep)


def _training_forms(module: Module, names: Namer) -> list[Node]:
    out: list[Node] = []
    for n in module.nodes:
        form = TRAINING_FORMS.get(n.op)
        if form is None:
            out.append(n)
            continue
        e = Emitter(module, names, n.name)
        out.extend(form(e, n))
    return out


def derive_step(module: Module, spec: TrainSpec, frozen: list[str]) -> None:
    """Rewrite `module` (graph level) into its training step (see module doc)."""
    names = Namer(module)
    y = module.outputs[0]
    for reserved in (LABELS, LOSS):
        if reserved in module.values:
            raise PassError(f"autodiff: the model already has a value named '{reserved}', which "
                            f"the training step needs for its {reserved} "
                            f"{'input' if reserved == LABELS else 'output'}; rename it")
    params, n_frozen = _candidates(module, frozen)
    forward = _training_forms(module, names)
    module.add_value(LABELS, labels_type(spec.loss, module.values[y].type))
    le = Emitter(module, names, "loss")
    loss, seed = add_loss(le, spec.loss, y, LABELS)
    _name(le.nodes, "loss", names)
    loss_nodes = le.nodes + [Node(names.node("loss"), "Identity", [loss], [LOSS])]
    module.add_value(LOSS, module.values[loss].type)

    pset = set(params)
    needs = set(pset)  # values that depend on a trained parameter
    for n in forward:
        if any(i in needs for i in n.inputs if i):
            needs.update(o for o in n.outputs if o and module.values[o].type.dtype.startswith("f"))
    relevant = {y}  # values the loss depends on (through y)
    for n in reversed(forward):
        if any(o in relevant for o in n.outputs if o):
            relevant.update(i for i in n.inputs if i and i in needs)
    trained = [p for p in params if p in relevant]

    grads: dict[str, list[str]] = {y: [seed]}
    backward: list[Node] = []

    def total(v: str) -> str | None:
        parts = grads.get(v)
        if not parts:
            return None
        if len(parts) > 1:
            role = "wgrad" if v in pset else "dgrad"
            e = Emitter(module, names, f"{role}/{v}")
            acc = parts[0]
            for p in parts[1:]:
                acc = e.add(acc, p)
            backward.extend(e.nodes)
            grads[v] = [acc]
        return grads[v][0]

    for n in reversed(forward):
        if not any(o in relevant for o in n.outputs if o):
            continue
        want = [bool(i) and i in needs and i in relevant for i in n.inputs]
        if not any(want):
            continue
        gys = [total(o) if o else None for o in n.outputs]
        if all(g is None for g in gys):
            continue
        e = Emitter(module, names, n.name)
        try:
            res = vjp(e, n, gys, want)
        except GradError as err:
            raise GradError(f"{err} (the training step differentiates it because it lies "
                            f"between trained parameters and the loss)") from None
        _classify(e.nodes, n, res, pset, names)
        backward.extend(e.nodes)
        for i, g in zip(n.inputs, res, strict=False):
            if g is not None and i:
                grads.setdefault(i, []).append(g)

    # inputs a rule gives no gradient (BatchNorm's running statistics) are not trained
    trained = [p for p in trained if grads.get(p)]
    outputs = [LOSS]
    updates: list[Node] = []
    news: list[str] = []
    finals: list[Node] = []
    for p in trained:
        g = total(p)
        assert g is not None
        gname = f"grad:{p}"
        _reserve(module, gname, g)
        finals.append(Node(names.node(f"wgrad/{p}"), "Identity", [g], [gname]))
        outputs.append(gname)
        ue = Emitter(module, names, f"update/{p}")
        new = add_update(ue, spec, p, g)
        for target, v in new.items():
            nname = f"new:{target}"
            _reserve(module, nname, v)
            ue.nodes.append(Node(names.node(f"update/{p}"), "Identity", [v], [nname]))
            news.append(nname)
        _name(ue.nodes, f"update/{p}", names)
        updates.extend(ue.nodes)
    if not trained:
        raise PassError("autodiff: no trained parameter reaches the loss (every float "
                        "initializer is frozen or unused); nothing to train")
    module.nodes = forward + loss_nodes + backward + finals + updates
    module.inputs = list(module.inputs) + [LABELS]
    module.outputs = outputs + news
    module.attrs["train"] = {**spec.to_attrs(), "params": trained, "frozen": n_frozen,
                             "freeze": list(frozen),
                             "output": y, "labels": LABELS,
                             "unused": len([p for p in params if p not in trained])}


def _reserve(module: Module, name: str, like: str) -> None:
    if name in module.values:
        raise PassError(f"autodiff: the model already has a value named '{name}'")
    module.add_value(name, module.values[like].type)


def _name(nodes: list[Node], tag: str, names: Namer) -> None:
    for nd in nodes:
        nd.name = names.node(tag)


def _classify(nodes: list[Node], fwd: Node, res: list[str | None], params: set[str],
              names: Namer) -> None:
    """Name each op of one rule's output `wgrad/...` when it only feeds the
    gradients of parameters, else `dgrad/...`."""
    feeds: dict[str, set[int]] = {}
    for i, g in enumerate(res):
        if g is not None:
            feeds.setdefault(g, set()).add(i)
    for nd in reversed(nodes):
        mine: set[int] = set()
        for o in nd.outputs:
            mine |= feeds.get(o, set())
        for i in nd.inputs:
            if i:
                feeds.setdefault(i, set()).update(mine)
        only_params = bool(mine) and all(fwd.inputs[i] in params for i in mine)
        nd.name = names.node(f"{'wgrad' if only_params else 'dgrad'}/{fwd.name}")
