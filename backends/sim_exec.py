"""Per-kernel execution on the simulated PEs: each PE computes its shard.

The weight-holding kinds run sharded (sim_sharded); element-wise ops fused
after the anchor, and the kinds without a sharded executor, evaluate their
body through the reference op semantics with constants rebuilt from the
PEs' shards (sim_pe).
"""

from __future__ import annotations

import numpy as np

from .sim_base import SimError
from .sim_pe import Env, KernelRun, SramImages, node_of
from .sim_sharded import SHARDED

# what an op raises when a binary's kernel description (attributes, omitted
# inputs, shapes) contradicts itself in a way the loader cannot see
_INCONSISTENT = (ValueError, TypeError, IndexError, KeyError, AttributeError,
                 ZeroDivisionError, OverflowError)


def run_kernel(mem: SramImages, ki: int, delivered: dict[str, np.ndarray]) -> KernelRun:
    """Run kernel `ki` on the values its routes delivered."""
    k = mem.p.kernels[ki]
    missing = [i for i in k.inputs if i and i not in delivered and i not in k.weights]
    if missing:
        raise SimError(f"kernel '{k.name}' ({k.kind}) needs %{missing[0]}, but no route "
                       f"delivers it to the kernel's entry PE")
    env = Env(mem, ki, delivered)
    body = [node_of(d) for d in k.body]
    stats: dict[str, int] = {}
    start = 0
    fn = SHARDED.get(k.kind)
    node = body[0] if body else None
    try:
        if fn is not None and body:
            done = fn(env, body[0], stats)
            start = 1 if done else 0
        for node in body[start:]:
            env.run_node(node)
    except _INCONSISTENT as e:  # as run_op does for the reference semantics
        what = f"op '{node.name}' ({node.op})" if node is not None else "its body"
        raise SimError(f"kernel '{k.name}': {what} failed: "
                       f"{' '.join(str(e).split()) or type(e).__name__}; the binary's "
                       f"description of the kernel is inconsistent") from None
    outs = {}
    for o in k.outputs:
        if o not in env.vals:
            raise SimError(f"kernel '{k.name}' does not compute its output %{o}")
        outs[o] = env.vals[o]
    return KernelRun(outs, stats)
