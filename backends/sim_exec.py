"""Per-kernel execution on the simulated PEs: each PE computes its shard.

Every kind of the library has a per-PE executor (`PER_PE`) that runs its
kernel's body that way: the anchor op on the PEs its mapping gives (conv,
matmul, Einsum: sim_sharded, sim_einsum; element-wise chains and data
movement: sim_spread; ...), then the fused element-wise ops on the PEs that
own their elements (sim_tail), views and a conv's fused pooling. There is
no whole-tensor path: a body op no executor runs per PE (a kind without
one, a shape its mapping does not cover) is a SimError naming the kernel
and the op, never a silent evaluation through the reference semantics.
The reference semantics on whole tensors remain only as the reference:
`reference_kernel` (what `wsec run --per-kernel` compares with) and the
interpreter (wsec.ir.interp). `whole_tensor_ops` stays in every kernel's
stats, 0, so `wsec run --stats` and the benches show it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from wsec.ir.graph import Node

from .format import KernelInfo
from .sim_base import SimError
from .sim_inbox import Delivery
from .sim_pe import Env, KernelRun, SramImages, node_of, run_op
from .sim_reduce import decomposed_ln, gather, instance_norm, reduce
from .sim_resample import deconv, resize
from .sim_rows import fused_pool, norm, pool, softmax
from .sim_sharded import SHARDED
from .sim_spread import datamove, elementwise
from .sim_tail import run_tail

# what an op raises when a binary's kernel description (attributes, omitted
# inputs, shapes) contradicts itself in a way the loader cannot see
_INCONSISTENT = (ValueError, TypeError, IndexError, KeyError, AttributeError,
                 ZeroDivisionError, OverflowError)

Executor = Callable[[Env, list[Node], dict[str, int]], int]


def anchored(fn: Callable[[Env, Node, dict[str, int]], bool]) -> Executor:
    """An anchor executor (runs body[0] per PE) followed by the fused
    element-wise ops on the PEs that own the anchor's elements."""
    def run(env: Env, body: list[Node], stats: dict[str, int]) -> int:
        if not body or not fn(env, body[0], stats):
            return 0
        out = body[0].outputs[0]
        if out not in env.owner:
            return 1
        done = 1 + run_tail(env, body[1:], env.shape_of(out), env.owner[out], stats)
        while done < len(body):  # a pooling fused into a conv, a view of the result
            node = body[done]
            if env.k.kind == "conv" and fused_pool(env, node, stats):
                done += 1
            elif not view(env, node):
                break
            else:
                done += 1
            o = node.outputs[0]
            done += run_tail(env, body[done:], env.shape_of(o), env.owner[o], stats)
        return done
    return run


_VIEWS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def view(env: Env, node: Node) -> bool:
    """A fused view (Reshape back to 3-D after a matmul, ...): the elements
    stay where they are, on the PEs that own them."""
    src = node.inputs[0] if node.inputs else ""
    if node.op not in _VIEWS or src not in env.owner or src not in env.vals:
        return False
    args = [env.get(i, node.name) if i else None for i in node.inputs]
    out = run_op(env.k.name, node, args)[0]
    if out.size != env.vals[src].size:
        return False
    env.store(node.outputs[0], out)
    env.owner[node.outputs[0]] = np.broadcast_to(env.owner[src], env.vals[src].shape) \
        .reshape(out.shape)
    return True


# kind -> its per-PE executor (returns how many body ops it ran per PE)
PER_PE: dict[str, Executor] = {name: anchored(fn) for name, fn in SHARDED.items()}
_norm, _instance = anchored(norm), anchored(instance_norm)


def _norms(env: Env, body: list[Node], stats: dict[str, int]) -> int:
    if body and body[0].op == "ReduceMean":
        return decomposed_ln(env, body, stats)
    if body and body[0].op == "InstanceNormalization":
        return _instance(env, body, stats)
    return _norm(env, body, stats)


PER_PE.update({"pool": anchored(pool), "softmax": anchored(softmax), "norm": _norms,
               "reduce": reduce, "gather": gather, "deconv": anchored(deconv),
               "resize": anchored(resize)})
PER_PE.update({"elementwise": elementwise, "datamove": datamove})


def run_kernel(mem: SramImages, ki: int, delivered: dict[str, np.ndarray],
               lanes: dict[str, Delivery] | None = None) -> KernelRun:
    """Run kernel `ki` on the values its routes delivered."""
    k = mem.p.kernels[ki]
    missing = [i for i in k.inputs if i and i not in delivered and i not in k.weights]
    if missing:
        raise SimError(f"kernel '{k.name}' ({k.kind}) needs %{missing[0]}, but no route "
                       f"delivers it to the kernel's entry PE")
    env = Env(mem, ki, delivered, lanes)
    for d in env.deliveries.values():
        d.outside = None
    body = [node_of(d) for d in k.body]
    stats: dict[str, int] = {}
    fn = PER_PE.get(k.kind)
    node = body[0] if body else None
    try:
        done = fn(env, body, stats) if fn is not None else 0
    except _INCONSISTENT as e:  # as run_op does for the reference semantics
        what = f"op '{node.name}' ({node.op})" if node is not None else "its body"
        raise SimError(f"kernel '{k.name}': {what} failed: "
                       f"{' '.join(str(e).split()) or type(e).__name__}; the binary's "
                       f"description of the kernel is inconsistent") from None
    if done < len(body):
        raise _no_executor(k, body, done, fn is not None)
    stats["whole_tensor_ops"] = 0
    if "forwarded_pes" in stats:  # each PE once, however many values it read outside a lane
        stats["forwarded_pes"] = _outside(env)
    if env.deliveries:
        uw, uh = k.unrotated_shape
        landed = np.zeros((uh, uw), bool)
        for d in env.deliveries.values():
            landed |= d.lane_at >= 0
        stats["pes"] = uw * uh
        stats["landing_pes"] = int(landed.sum())
    outs = {}
    for o in k.outputs:
        if o not in env.vals:
            raise SimError(f"kernel '{k.name}' does not compute its output %{o}")
        outs[o] = env.vals[o]
    return KernelRun(outs, stats, {o: env.owner[o] for o in outs if o in env.owner})


def _outside(env: Env) -> int:
    """PEs of the kernel that read an element outside the lane of a flat
    bundle (sim_inbox.forwarded), each counted once."""
    uw, uh = env.k.unrotated_shape
    bad = np.zeros((uh, uw), bool)
    for d in env.deliveries.values():
        if d.outside is not None:
            bad |= d.outside
    return int(bad.sum())


def _no_executor(k: KernelInfo, body: list[Node], done: int, has: bool) -> SimError:
    node = body[done]
    if not has:
        why = f"the kind '{k.kind}' has no per-PE executor"
    elif done == 0:
        why = f"the {k.kind} executor does not run its anchor per PE for this shape or type"
    else:
        why = (f"the {k.kind} executor ran {done} of its {len(body)} ops per PE; this op is "
               f"not element-wise on the PEs owning its operands")
    return SimError(f"kernel '{k.name}' ({k.kind}): op '{node.name}' ({node.op}) cannot be "
                    f"simulated per PE: {why}; the simulator evaluates no kernel on whole "
                    f"tensors (compare it with `wsec run --per-kernel`'s reference instead)")


def reference_kernel(mem: SramImages, ki: int, delivered: dict[str, np.ndarray]
                     ) -> dict[str, np.ndarray]:
    """Kernel `ki`'s outputs by the reference op semantics on whole tensors
    (constants rebuilt from the shards): what `wsec run --per-kernel`
    compares the per-PE execution with, on the same delivered inputs."""
    k = mem.p.kernels[ki]
    env = Env(mem, ki, delivered)
    node = None
    try:
        for node in (node_of(d) for d in k.body):
            env.run_node(node)
    except _INCONSISTENT as e:
        what = f"op '{node.name}' ({node.op})" if node is not None else "its body"
        raise SimError(f"kernel '{k.name}': reference {what} failed: "
                       f"{' '.join(str(e).split()) or type(e).__name__}") from None
    return {o: env.vals[o] for o in k.outputs if o in env.vals}
