"""The simulated PEs' memory and op execution: SRAM images, per-PE shards,
the values a kernel sees.

Why per PE: the simulator is a proof, so a weight must come from the SRAM
image of the PE that uses it, never from the model. `SramImages` expands the
blobs of the binary; `pe_array` stacks the shards of one weight with an
explicit PE axis ([uh, uw, *shard], offsets inside the kernel's unrotated
rectangle), placing each PE's blob where that PE's *role* (its position and
the kind's knobs) says it computes, so a swapped shard changes the answer.

The weight-holding kinds run sharded (`sim_sharded`): conv computes a partial
sum per PE (out-channel block px, in-channel block py % c, output-row group
py // c) and reduces along the c PEs of each column; matmul computes a
partial product per PE (column block px, reduction block py) and reduces
along y. Every other kind has its own per-PE executor (sim_exec.PER_PE);
element-wise ops fused after an anchor run on the PEs owning their elements,
with those PEs' shards (sim_tail). The executors apply the reference op
semantics (`wsec.ir.opsem`, the one definition of every op; `run_op`) only
to what they have checked each PE holds (an element-wise op on its owners'
elements, a view, a conv's fused pooling within its row groups, a gather's
lookup of which element each output copies); whole kernels run on it, with
constants rebuilt from the PEs' shards (replicas must agree), only as
`wsec run --per-kernel`'s reference (`sim_exec.reference_kernel`). Every
PE computes in float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.kernels import KINDS
from wsec.ir.opsem import evaluate

from .format import (
    AXIS_CELL,
    AXIS_CONST,
    AXIS_X,
    AXIS_Y,
    KernelInfo,
    Program,
    type_dtype,
    type_shape,
)
from .sim_base import COMPUTE_DTYPE, SimError
from .sim_inbox import Delivery


@dataclass
class KernelRun:
    """What a kernel produced (value -> array) and what its PEs measured."""

    values: dict[str, np.ndarray]
    stats: dict[str, int] = field(default_factory=dict)
    owner: dict[str, np.ndarray] = field(default_factory=dict)


class SramImages:
    """The weight shards of a program as the PEs hold them (blobs expanded
    once, floats converted to the PE compute dtype)."""

    def __init__(self, p: Program) -> None:
        self.p = p
        self._blobs: dict[int, np.ndarray] = {}
        self._layouts: dict[tuple[int, int], Layout] = {}
        self._groups: dict[tuple[int, int], list] = {}

    def blob(self, bi: int) -> np.ndarray:
        if bi not in self._blobs:
            a = self.p.blobs[bi].array()
            if np.issubdtype(a.dtype, np.floating):
                a = a.astype(COMPUTE_DTYPE)
            self._blobs[bi] = a
        return self._blobs[bi]

    def layout(self, ki: int, wi: int) -> Layout:
        """Which blob and which slice every PE of kernel `ki` holds for weight
        `wi`, checked against the role the kind gives each PE."""
        key = (ki, wi)
        if key not in self._layouts:
            self._layouts[key] = _layout(self.p, ki, wi)
        return self._layouts[key]

    def groups(self, ki: int, wi: int) -> list[tuple[np.ndarray, np.ndarray,
                                                     tuple[slice, ...], np.ndarray]]:
        """(ys, xs, slice, shard) per group of PEs holding the same blob at
        the same slice; ys/xs are offsets in the unrotated rectangle."""
        key = (ki, wi)
        if key in self._groups:
            return self._groups[key]
        lay = self.layout(ki, wi)
        n = lay.start.shape[-1]
        uw = lay.code.shape[1]
        uniq, first, inv = np.unique(lay.code.reshape(-1), return_index=True,
                                     return_inverse=True)
        order = np.argsort(inv, kind="stable")
        cuts = np.cumsum(np.bincount(inv, minlength=uniq.size))[:-1]
        # per group, as plain ints: its first PE's blob and slice
        starts = lay.start.reshape(lay.blob.size, n)[first].tolist()
        stops = lay.stop.reshape(lay.blob.size, n)[first].tolist()
        blobs = lay.blob.reshape(-1)[first].tolist()
        ys_all, xs_all = np.divmod(order, uw)
        out = []
        for g, (lo, hi) in enumerate(zip(np.r_[0, cuts].tolist(), np.r_[cuts, order.size].tolist(),
                                         strict=True)):
            st, sp = starts[g], stops[g]
            sl = tuple(slice(a, b) for a, b in zip(st, sp, strict=True))
            want = tuple(b - a for a, b in zip(st, sp, strict=True))
            data = self.blob(blobs[g])
            if data.size != math.prod(want):
                k = self.p.kernels[ki]
                y0, x0 = divmod(int(first[g]), uw)
                raise SimError(f"kernel '{k.name}': PE offset ({x0}, {y0}) holds blob "
                               f"{blobs[g]} of {data.size} elements for %"
                               f"{k.weights[wi]}, but its shard {_txt(sl)} has "
                               f"{math.prod(want)}")
            out.append((ys_all[lo:hi], xs_all[lo:hi], sl, data.reshape(want)))
        self._groups[key] = out
        return out

    def pe_array(self, ki: int, wi: int, pad: tuple[int, ...]) -> np.ndarray:
        """[uh, uw, *pad]: PE (px, py)'s own shard at [py, px, :shard...],
        zero-padded to `pad` (the largest shard).

        Vectorised over PEs: PEs are grouped by (blob, shard extent), each
        group's blob is padded once, and every PE takes its group's copy."""
        uw, uh = self.p.kernels[ki].unrotated_shape
        lay = self.layout(ki, wi)
        n = lay.start.shape[-1]
        if n != len(pad):
            raise SimError(f"kernel '{self.p.kernels[ki].name}': %{self.p.kernels[ki].weights[wi]}"
                           f" has {n} dims but its executor pads shards to {list(pad)}")
        ext = (lay.stop - lay.start).reshape(lay.blob.size, n)
        code = lay.blob.reshape(-1).copy()
        for d in range(n):
            code = code * (int(ext[:, d].max(initial=0)) + 1) + ext[:, d]
        _, first, inv = np.unique(code, return_index=True, return_inverse=True)
        ublob, uext = lay.blob.reshape(-1)[first].tolist(), ext[first]
        datas = [self.blob(b) for b in ublob]
        sizes = np.fromiter((a.size for a in datas), np.int64, len(datas))
        bad = np.nonzero(sizes != np.prod(uext, axis=1))[0]
        if bad.size:
            g = int(bad[0])
            y0, x0 = divmod(int(first[g]), uw)
            k = self.p.kernels[ki]
            raise SimError(f"kernel '{k.name}': PE offset ({x0}, {y0}) holds blob {ublob[g]} of "
                           f"{sizes[g]} elements for %{k.weights[wi]}, but its shard has "
                           f"extent {uext[g].tolist()} ({int(np.prod(uext[g]))} elements)")
        dt = datas[0].dtype if datas else COMPUTE_DTYPE
        stack = np.zeros((len(datas), *pad), dt)
        full = (uext == np.asarray(pad, np.int64)).all(axis=1)
        idx = np.nonzero(full)[0]
        if idx.size:
            stack[idx] = np.concatenate([datas[i].reshape(-1) for i in idx.tolist()]) \
                .reshape(-1, *pad)
        for i in np.nonzero(~full)[0].tolist():
            e = uext[i].tolist()
            stack[(i, *(slice(0, m) for m in e))] = datas[i].reshape(e)
        return stack[inv.reshape(-1)].reshape(uh, uw, *pad)

    def assembled(self, ki: int, wi: int) -> np.ndarray:
        """The whole constant, rebuilt from every PE's shard at its role
        slice; PEs holding the same element must hold the same value."""
        k = self.p.kernels[ki]
        name = k.weights[wi]
        shape = tuple(type_shape(self.p.info["values"][name]))
        groups = self.groups(ki, wi)
        dt = groups[0][3].dtype if groups else COMPUTE_DTYPE
        out = np.zeros(shape, dt)
        have = np.zeros(shape, bool)
        for ys, xs, role, data in groups:
            old, seen = out[role], have[role]
            if seen.any() and not np.array_equal(old[seen], data[seen]):
                raise SimError(f"kernel '{k.name}': the PEs' copies of %{name} disagree (PE "
                               f"offset ({int(xs[0])}, {int(ys[0])}) holds other values at "
                               f"{_txt(role)} than other PEs)")
            out[role] = data
            have[role] = True
        if not have.all():
            raise SimError(f"kernel '{k.name}': no PE holds part of %{name}")
        return out


@dataclass
class Layout:
    """Per PE (offsets [py, px] of the unrotated rectangle): blob index,
    slice start/stop per weight dim, and a code equal for PEs that hold the
    same blob at the same slice."""

    blob: np.ndarray  # [uh, uw]
    start: np.ndarray  # [uh, uw, ndim]
    stop: np.ndarray
    code: np.ndarray  # [uh, uw]


def _layout(p: Program, ki: int, wi: int) -> Layout:
    k = p.kernels[ki]
    kind = KINDS[k.kind]
    name = k.weights[wi]
    shape = tuple(type_shape(p.info["values"][name]))
    m = p.weight_map(ki, wi)
    n, axis = int(m["ndim"]), m["axis"][: int(m["ndim"])].astype(int)
    r0, nx, ny = int(m["run0"]), int(m["nx"]), int(m["ny"])
    xr, yr = p.wruns[r0:r0 + nx], p.wruns[r0 + nx:r0 + nx + ny]
    uw, uh = k.unrotated_shape
    xi = np.repeat(np.arange(nx), (xr["p1"].astype(np.int64) - xr["p0"]))
    yi = np.repeat(np.arange(ny), (yr["p1"].astype(np.int64) - yr["p0"]))
    start = np.zeros((uh, uw, n), np.int64)
    stop = np.zeros((uh, uw, n), np.int64)
    for d in range(n):
        for arr, fld in ((start, "start"), (stop, "stop")):
            if axis[d] == AXIS_CONST:
                arr[:, :, d] = int(m[fld][d])
            elif axis[d] == AXIS_X:
                arr[:, :, d] = xr[fld][xi, d].astype(np.int64)[None, :]
            elif axis[d] == AXIS_Y:
                arr[:, :, d] = yr[fld][yi, d].astype(np.int64)[:, None]
    blob = np.full((uh, uw), -1, np.int64)
    cells = p.wcells[int(m["cell0"]):int(m["cell0"]) + int(m["ncells"])]
    for c in cells:
        ys = slice(int(yr["p0"][int(c["yr0"])]), int(yr["p1"][int(c["yr1"]) - 1]))
        xs = slice(int(xr["p0"][int(c["xr0"])]), int(xr["p1"][int(c["xr1"]) - 1]))
        blob[ys, xs] = int(c["blob"])
        for d in np.nonzero(axis == AXIS_CELL)[0]:
            start[ys, xs, d], stop[ys, xs, d] = int(c["start"][d]), int(c["stop"][d])
    if (blob < 0).any():
        raise SimError(f"kernel '{k.name}': some PEs hold no shard of %{name}")
    # the role check: each PE computes with what the kind says, so the map
    # must place exactly that slice there (per run; per cell for AXIS_CELL)
    probes = [(int(x), 0) for x in xr["p0"]] + [(0, int(y)) for y in yr["p0"]]
    if (axis == AXIS_CELL).any():
        probes += [(int(xr["p0"][int(c["xr0"])]), int(yr["p0"][int(c["yr0"])])) for c in cells]
    for px, py in probes:
        role = _norm(kind.weight_shard(k.dims, k.knobs, wi, shape, px, py, k.unrotated_shape),
                     shape)
        held = tuple(slice(int(a), int(b)) for a, b in zip(start[py, px], stop[py, px],
                                                           strict=True))
        if role != held:
            raise SimError(f"kernel '{k.name}': the PE at offset ({px}, {py}) holds slice "
                           f"{_txt(held)} of %{name}, but as a {k.kind} PE it computes with "
                           f"{_txt(role)}")
    # equal (blob, slice) -> equal code, built from small per-axis key ids
    code = blob.copy()
    for arr in (start, stop):
        for d in range(n):
            v = arr[:, :, d]
            code = code * (int(v.max()) + 1) + v
    return Layout(blob, start, stop, code)


def _norm(sl: tuple[slice, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    sl = tuple(sl) + tuple(slice(0, n) for n in shape[len(sl):])
    out = []
    for s, n in zip(sl, shape, strict=True):
        a, b, _ = s.indices(n)
        out.append(slice(a, max(a, b)))
    return tuple(out)


def _txt(sl: tuple[slice, ...]) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in sl) + "]"


def run_op(kernel: str, node: Node, args: list[np.ndarray | None]) -> list[np.ndarray]:
    """One body op of `kernel` through the reference semantics; a failure
    becomes a SimError naming the kernel and the op."""
    try:
        return evaluate(node, args)
    except (ValueError, TypeError, IndexError, KeyError) as e:
        raise SimError(f"kernel '{kernel}': op '{node.name}' ({node.op}) failed: {e}") from None


def node_of(d: dict[str, Any]) -> Node:
    return Node(str(d["name"]), str(d["op"]), list(d["inputs"]), list(d["outputs"]),
                dict(d["attrs"]))


class Env:
    """The values one kernel's PEs see: activations its routes delivered,
    constants from its SRAM images, and what its body computed so far."""

    def __init__(self, mem: SramImages, ki: int, delivered: dict[str, np.ndarray],
                 lanes: dict[str, Delivery] | None = None) -> None:
        self.mem, self.ki = mem, ki
        self.k: KernelInfo = mem.p.kernels[ki]
        self.vals: dict[str, np.ndarray] = dict(delivered)
        # value -> the lane each PE's core received (sim_inbox); empty for
        # values that reach the kernel without lanes (weight streaming)
        self.deliveries: dict[str, Delivery] = dict(lanes or {})
        # value -> linear offset (py * uw + px) of the PE that computed each
        # element (broadcastable to the value's shape), set by executors
        self.owner: dict[str, np.ndarray] = {}
        # delivered values whose PE windows were checked against their lanes
        self.checked: set[str] = set()
        # residuals the anchor's PE rows added into its partial sums as they
        # passed (sim_sharded._spread_skips): the tail's Add of one is done
        self.spread: set[str] = set()

    def shape_of(self, name: str) -> tuple[int, ...]:
        return tuple(type_shape(self.mem.p.info["values"][name]))

    def get(self, name: str, user: str) -> np.ndarray:
        if name in self.vals:
            return self.vals[name]
        if name in self.k.weights:
            self.vals[name] = self.mem.assembled(self.ki, self.k.weights.index(name))
            return self.vals[name]
        raise SimError(f"kernel '{self.k.name}' ({self.k.kind}): op '{user}' reads %{name}, "
                       f"which no route delivered to the kernel and its PEs do not hold")

    def run_node(self, node: Node) -> None:
        args = [self.get(i, node.name) if i else None for i in node.inputs]
        outs = run_op(self.k.name, node, args)
        for o, a in zip(node.outputs, outs, strict=False):
            if o:
                self.store(o, a)

    def store(self, name: str, arr: np.ndarray) -> None:
        text = self.mem.p.info["values"].get(name)
        if text is not None:
            shape = tuple(type_shape(text))
            if tuple(arr.shape) != shape:
                raise SimError(f"kernel '{self.k.name}' computed {list(arr.shape)} for %{name}, "
                               f"the binary declares {text}")
            if type_dtype(text) in ("f16", "f32"):  # the PE computes floats in f32
                arr = arr.astype(COMPUTE_DTYPE, copy=False)
        self.vals[name] = arr
