"""Repetition detection: find structurally identical layers of a kernel graph.

Why: a transformer is the same layer N times (44 for GPT-NeoX 20B, 96 for
GPT-3 175B) with different weights. Sizing, placing and routing one layer
and reusing its layout for the others (each with its own weight
descriptors) keeps compile time flat in N. This module only *finds* the
repetition; the streaming phase schedule uses it.

Method, linear in the kernel count:
1. Every kernel gets a structural signature: its kind, dims, and per body op
   the op type, attributes, and the types of its operands, where an operand
   is described by its role (activation from outside the kernel, a constant
   with its type only — weights differ between layers —, or an op-internal
   value by position). Names never enter a signature.
2. Each kernel is labelled by its signature hash; the kernel sequence (in
   topological order) is then scanned for the period p and start s that make
   the longest run of back-to-back identical blocks of p kernels, where a
   block must also have the same *internal wiring* (which kernel of the
   block feeds which, by offset) as the first one. Candidate periods come
   from the gaps between occurrences of the rarest-but-repeated signature.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass

from .graph import Kernel, Module, Node
from .library_common import PORT_DIMS


@dataclass(frozen=True)
class RepeatGroup:
    """`count` back-to-back blocks of `period` kernels each, first block
    starting at kernel index `start`; every block has signature `signature`."""

    signature: str
    start: int
    period: int
    count: int
    blocks: tuple[tuple[str, ...], ...]  # kernel names per block

    @property
    def kernels(self) -> int:
        return self.period * self.count


def _node_sig(n: Node, m: Module, local: dict[str, int], body_consts: set[str]) -> list:
    ins = []
    for i in n.inputs:
        if not i:
            ins.append("-")
        elif i in local:
            ins.append(f"v{local[i]}")
        else:
            v = m.values.get(i)
            role = "c" if (v is not None and v.const is not None) else "a"
            if role == "c" and v is not None and v.const is not None and v.const.is_splat:
                role = f"s{v.const.value!r}"  # a splat's value is structure (scales, eps)
            ins.append(f"{role}:{v.type if v is not None else '?'}")
            if role == "c":
                body_consts.add(i)
    outs = []
    for o in n.outputs:
        if o:
            local[o] = len(local)
            v = m.values.get(o)
            outs.append(str(v.type) if v is not None else "?")
        else:
            outs.append("-")
    return [n.op, sorted((k, repr(v)) for k, v in n.attrs.items()), ins, outs]


def kernel_signature(k: Kernel, m: Module) -> str:
    """A hash of a kernel's structure (not its names, not its weights' values)."""
    local: dict[str, int] = {}
    consts: set[str] = set()
    body = [_node_sig(n, m, local, consts) for n in k.body] if k.body else []
    # the port dims (what crosses the kernel's sides) depend on its neighbours, not on it
    dims = sorted((d, v) for d, v in k.dims.items() if d not in PORT_DIMS)
    doc = [k.kind, dims, body, len(k.inputs), len(k.outputs)]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _wiring(kernels: list[Kernel], start: int, period: int,
            owner: dict[str, int]) -> tuple:
    """Which kernel (block offset) feeds which inside a block, plus which
    inputs come from before the block (by distance in blocks, capped)."""
    out = []
    for j in range(period):
        k = kernels[start + j]
        srcs = []
        for v in k.inputs:
            src = owner.get(v)
            if src is None:
                srcs.append("x")  # host input or constant
            elif src >= start:
                srcs.append(src - start)
            else:
                srcs.append("prev")
        out.append(tuple(srcs))
    return tuple(out)


def _block_hash(sigs: list[str], wiring: tuple) -> str:
    doc = json.dumps([sigs, wiring], default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _candidate_periods(sigs: list[str], min_count: int) -> set[int]:
    """Per repeated signature, its most common gap between occurrences."""
    positions: dict[str, list[int]] = {}
    for i, s in enumerate(sigs):
        positions.setdefault(s, []).append(i)
    out: set[int] = set()
    for pos in positions.values():
        if len(pos) < min_count:
            continue
        gaps = Counter(b - a for a, b in zip(pos, pos[1:], strict=False))
        out.add(max(gaps.items(), key=lambda kv: (kv[1], -kv[0]))[0])
    return out


def find_repeats(module: Module, min_count: int = 2) -> list[RepeatGroup]:
    """Non-overlapping runs of back-to-back structurally identical blocks of
    kernels, the most kernels covered first (ties: shorter period, earlier
    start). A module without repetition gives []."""
    kernels = list(module.kernels())
    n = len(kernels)
    sigs = [kernel_signature(k, module) for k in kernels]
    owner = {o: i for i, k in enumerate(kernels) for o in k.outputs}
    runs: list[tuple[int, int, int, str]] = []  # (start, period, count, hash)
    for p in sorted(_candidate_periods(sigs, min_count)):
        hashes = [_block_hash(sigs[s:s + p], _wiring(kernels, s, p, owner))
                  for s in range(n - p + 1)]
        for s in range(n - p + 1):
            if s >= p and hashes[s - p] == hashes[s]:
                continue  # inside a run that starts earlier
            count = 1
            while s + (count + 1) * p <= n and hashes[s + count * p] == hashes[s]:
                count += 1
            if count >= min_count:
                runs.append((s, p, count, hashes[s]))
    runs.sort(key=lambda r: (-r[1] * r[2], r[1], r[0]))
    used = [False] * n
    groups: list[RepeatGroup] = []
    for s, p, count, h in runs:
        if any(used[s:s + p * count]):
            continue
        used[s:s + p * count] = [True] * (p * count)
        groups.append(RepeatGroup(h, s, p, count, tuple(
            tuple(k.name for k in kernels[s + b * p:s + (b + 1) * p]) for b in range(count))))
    return groups
