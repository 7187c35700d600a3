"""SRAM allocation: the per-PE memory map of every kernel.

Why one map per kernel: all PEs of a kernel run the same program on their
shard, so one map sized for the worst-case PE serves them all and the
emitter can share it (DESIGN.md section 3: per-PE data deduplicated). The
map is what the emitter lays the weight shards and buffers out by, so it is
checked against the PE's SRAM here, with a message that says what to change.

Regions, in this order, each rounded up to 16 bytes and packed from 0:
- "weights:<value>" per constant input: the largest shard any PE holds,
  as the kernel kind's `weight_shard` says, in the target's element type;
- "code": program, stack and descriptors (the library's CODE_BYTES);
- "stash" (training pipelines): the kernel's share of the forward
  activations it holds until the backward pass reads them (dim `stash`);
- "buffers": the rest of what the kind's SRAM model (`cost["sram"]`)
  budgets per PE -- line buffers, partial sums, the PE's share of streamed
  inputs and outputs. The kind is the one authority on buffer sizes
  (DESIGN.md: a kernel kind lives in one place); this pass does not
  re-derive them, it checks that weights + code + buffers fit the PE.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from wsec.ir.graph import Kernel, Module, SramRegion
from wsec.ir.kernels import kind_of
from wsec.ir.library_common import CODE_BYTES
from wsec.ir.sizing import kernel_shape
from wsec.ir.target import Target
from wsec.ir.types import DTYPES

from .base import Pass, PassContext, PassError

ALIGN = 16
_MAX_PROBES = 8  # PE offsets probed per axis at each end and across the middle


def _align(n: int) -> int:
    return -(-int(n) // ALIGN) * ALIGN


def _numel(sl: tuple[slice, ...], shape: tuple[int, ...]) -> int:
    n = 1
    for s, d in zip(sl, shape, strict=False):
        n *= len(range(*s.indices(d)))
    for d in shape[len(sl):]:
        n *= d
    return n


def _probes(n: int) -> np.ndarray:
    """PE offsets along an axis of length n to probe for the largest shard:
    all of them for small kernels, else both ends and an even spread."""
    if n <= 3 * _MAX_PROBES:
        return np.arange(n)
    return np.unique(np.concatenate([np.arange(_MAX_PROBES), np.arange(n - _MAX_PROBES, n),
                                     np.linspace(0, n - 1, _MAX_PROBES).astype(np.int64)]))


def largest_shard(k: Kernel, index: int, shape: tuple[int, ...], w: int, h: int) -> int:
    """Elements of constant input `index` held by the PE with the largest
    shard. Shards are probed along the first row and column, then at the
    product of the worst offsets (exact for separable block shardings)."""
    kind = kind_of(k)
    assert k.knobs is not None

    def size(px: int, py: int) -> int:
        return _numel(kind.weight_shard(k.dims, k.knobs, index, shape, px, py, (w, h)), shape)

    row = {int(px): size(int(px), 0) for px in _probes(w)}
    col = {int(py): size(0, int(py)) for py in _probes(h)}
    bx, by = max(row, key=row.__getitem__), max(col, key=col.__getitem__)
    return max(max(row.values()), max(col.values()), size(bx, by))


def sram_map(module: Module, k: Kernel, target: Target) -> list[SramRegion]:
    """The SRAM regions of kernel `k`'s worst-case PE, packed from offset 0."""
    elem = DTYPES[target.dtype].itemsize
    w, h = kernel_shape(k, target)
    sizes: list[tuple[str, int]] = []
    consts = [i for i in k.inputs if i and module.values[i].const is not None]
    for idx, v in enumerate(consts):
        if v not in consts[:idx]:
            shape = module.values[v].type.shape
            sizes.append((f"weights:{v}", largest_shard(k, idx, shape, w, h) * elem))
    sizes.append(("code", CODE_BYTES))
    if k.dims.get("stash"):  # training: activations waiting for the backward pass
        sizes.append(("stash", -(-int(k.dims["stash"]) // (w * h))))
    used = sum(_align(s) for _, s in sizes)
    need = int(k.cost["sram"]) if k.cost and "sram" in k.cost else 0
    if need > used:
        sizes.append(("buffers", need - used))
    regions, off = [], 0
    for name, s in sizes:
        regions.append(SramRegion(name, off, _align(s)))
        off += _align(s)
    return regions


def _overflow(k: Kernel, regions: list[SramRegion], target: Target) -> PassError:
    total = sum(r.size for r in regions)

    def part(prefix: str) -> int:
        return sum(r.size for r in regions if r.name.startswith(prefix))

    origin = ", ".join(k.origin[:3]) + (", ..." if len(k.origin) > 3 else "")
    src = f", from {origin}" if origin else ""
    breakdown = (f"weights {part('weights:')} B, buffers {part('buffers')} B, "
                 f"code {part('code')} B")
    return PassError(
        f"kernel '{k.name}' ({k.kind}{src}) needs {total} B of SRAM per PE but a PE has "
        f"{target.sram_bytes} B ({breakdown}); re-size with more PEs (a faster bottleneck "
        f"time gives every kernel more PEs) or choose knobs that shard the weights further")


@dataclass(frozen=True)
class Allocate(Pass):
    """Give every kernel an SRAM map and check it fits a PE."""

    name = "allocate"
    requires = ("sized",)
    ensures = ("allocated",)

    def run(self, module: Module, ctx: PassContext) -> None:
        target = ctx.target
        worst: list[object] = [0, ""]
        maps: list[tuple[Kernel, list[SramRegion]]] = []
        for k in module.kernels():
            regions = sram_map(module, k, target)
            total = sum(r.size for r in regions)
            if total > target.sram_bytes:
                raise _overflow(k, regions, target)
            if total > worst[0]:  # type: ignore[operator]
                worst = [total, k.name]
            maps.append((k, regions))
        for k, regions in maps:
            k.sram = regions
        module.attrs["max_sram"] = worst
