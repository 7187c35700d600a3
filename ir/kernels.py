"""The kernel library: every kernel kind wsec can place, by name.

Each kind (a `KernelKind` subclass, see kernel_kind.py) is defined once here
(or in a module this one imports) and registered in `KINDS`. wsec's own
wse2/wse3 kinds live in the `library_*` modules; kinds are target-agnostic
objects (the Target is an argument of every cost function), so other
libraries (e.g. the ISPD-2020 contest kinds for cs1) register into the same
table.
"""

from __future__ import annotations

import numpy as np

from .cuts import broadcast_rows
from .graph import Bundle, Kernel, Node, Value
from .halo import Halo, split
from .kernel_kind import KernelKind
from .lanes import endpoints, spine_dir, union_boxes
from .library_common import ELEMENTWISE_OPS, LibraryKind
from .library_conv import ConvKind, DeconvKind
from .library_conv_grad import ConvWgradKind, is_weight_gradient
from .library_cs1 import ISPD_KINDS
from .library_dense import MatmulKind
from .library_gather import GatherKind
from .library_pool import PoolKind, ResizeKind
from .library_reduce import ReduceKind
from .library_rowwise import DatamoveKind, ElementwiseKind, NormKind, SoftmaxKind
from .movement import Operands

KINDS: dict[str, KernelKind] = {}


def register(kind: KernelKind) -> KernelKind:
    """Add a kind to the library (tests may register their own)."""
    KINDS[kind.name] = kind
    return kind


def kind_of(kernel: Kernel) -> KernelKind:
    try:
        return KINDS[kernel.kind]
    except KeyError:
        raise KeyError(f"kernel '{kernel.name}' has unknown kind '{kernel.kind}' "
                       f"(known: {', '.join(sorted(KINDS))})") from None


def row_read_input(kernel: Kernel) -> str | None:
    """The activation every PE of a row of `kernel` reads all of its row's
    box of (input_cut), so a row's box reaches each of its PEs: the anchor's
    data input, unless the kind's PEs each read their own block of it
    (KernelKind.forwards_blocks: a data movement, whose row box is a hull of
    strided preimages). Another value's row box (a fused tail's residual, a
    matmul's second activation) is a hull of what its PEs read apart. None:
    no such input."""
    if not kernel.body or not kernel.body[0].inputs or kind_of(kernel).forwards_blocks:
        return None
    return kernel.body[0].inputs[0] or None


def input_cut(kernel: Kernel, value: str, shape: tuple[int, ...],
              ops: Operands | None = None) -> np.ndarray | None:
    """The box of `value` each PE row (unrotated y) of `kernel` reads: an
    input of its anchor as its kind declares (KernelKind.input_cut for the
    data input, operand_cut for the others), or an operand only the fused
    element-wise tail reads, as the elements each row owns
    (KernelKind.output_rows) broadcast onto it; else None. A value read
    twice (by the anchor and the tail, or at two anchor positions: x @ x)
    has no one box per row and is not cut, nor, where its lanes are routed
    (`ops` None or routed), a tail operand whose owner rows have rows owning
    nothing before them (gaps), unless the owners are one row of every k
    (owner_pitch: a bundle lands on them alone, cut "owners"). With the
    kernel's operands (`ops`: shapes and constants), a kind whose boxes
    depend on its body (KernelKind.body_cut: a data movement) says first."""
    if not kernel.body or not kernel.knobs or not kernel.body[0].inputs:
        return None
    if ops is not None:
        rows = kind_of(kernel).body_cut(kernel, value, ops)
        if rows is not None:
            return rows
    ins = list(kernel.body[0].inputs)
    tail = [n for n in kernel.body[1:] if value in n.inputs]
    if value in ins:
        if tail or ins.count(value) != 1:
            return None
        i = ins.index(value)
        kind = kind_of(kernel)
        if i == 0 and ops is not None and not ops.routed:
            return kind.held_cut(kernel.dims, kernel.knobs, tuple(shape))
        if i == 0:
            return kind.input_cut(kernel.dims, kernel.knobs, tuple(shape))
        return kind.operand_cut(kernel.dims, kernel.knobs, i, tuple(shape))
    if not tail or any(n.op not in ELEMENTWISE_OPS for n in tail):
        return None
    rows = kind_of(kernel).output_rows(kernel.dims, kernel.knobs, tuple(shape))
    if rows is None or ((ops is None or ops.routed) and gaps(rows) and not owner_pitch(rows)):
        return None
    return broadcast_rows(rows, tuple(shape))


def halo_cut(kernel: Kernel, value: str, shape: tuple[int, ...],
             ops: Operands | None = None) -> tuple[np.ndarray, Halo] | None:
    """(core boxes, Halo) where `value` is the routed data input of a kind
    whose PE rows' boxes (input_cut) overlap by a window's halo
    (KernelKind.halo_axis) and the rows can pass it on (wsec.ir.halo.split);
    else None. A bundle cut "halo" carries the cores, disjoint rows of the
    input, and its rows exchange the rest along the kernel's columns."""
    if not kernel.body or not kernel.knobs or not kernel.body[0].inputs \
            or kernel.body[0].inputs[0] != value or (ops is not None and not ops.routed):
        return None
    rows = input_cut(kernel, value, shape, ops)
    if rows is None:
        return None
    view = cut_view(kernel, value, shape, ops)
    if len(view) != rows.shape[-1]:
        return None
    return split(rows, kind_of(kernel).halo_axis(kernel.dims, kernel.knobs, view))


def spread_over_rows(kernel: Kernel, value: str, ops: Operands) -> int:
    """The rows of each reduction group of `kernel` when `value` is a
    residual they add along the reduction, each row a part of it
    (KernelKind.spread_operands), and there is more than one; else 0. Its
    per-row cut lands a lane on every reduction row where an owner cut
    would land one per group."""
    if not kernel.body or not kernel.knobs:
        return 0
    kind = kind_of(kernel)
    c = kind.reduction_chain(kernel.dims, kernel.knobs)
    if c > 1 and value in kind.spread_operands(kernel.dims, kernel.knobs, kernel.body,
                                               kernel.outputs, ops.shape):
        return int(c)
    return 0


def cut_view(kernel: Kernel, value: str, shape: tuple[int, ...],
             ops: Operands | None = None) -> tuple[int, ...]:
    """The shape input_cut's boxes of `value` are over: the value's own,
    or where its kind declares one for its routed data input
    (KernelKind.input_view) a view splitting one axis of it (a grouped
    conv's channels as (G, C/G)), or for a cut its body decides
    (KernelKind.body_view) the value flattened (a concatenation's input);
    a lane of a cut bundle then carries that box of the value reshaped to
    the view."""
    shape = tuple(int(n) for n in shape)
    if not kernel.body or not kernel.knobs or not kernel.body[0].inputs:
        return shape
    kind = kind_of(kernel)
    if ops is not None and kind.body_cut(kernel, value, ops) is not None:
        view = kind.body_view(kernel, value, ops)
        return shape if view is None else tuple(int(n) for n in view)
    ins = list(kernel.body[0].inputs)
    if (ops is not None and not ops.routed) or ins[0] != value or ins.count(value) != 1 \
            or any(value in n.inputs for n in kernel.body[1:]):
        return shape
    view = kind.input_view(kernel.dims, kernel.knobs, shape)
    if view is None:
        return shape
    return tuple(int(n) for n in view)


def gaps(rows: np.ndarray) -> bool:
    """Whether rows owning nothing lie before a row that owns some (a conv's
    reduction rows before each owner, c > 1). Routed, a cut lane and its
    spine deliver to every row they pass, so each owner's box would go to
    the rows between too, c times the traffic (measured: ResNet-50's
    residuals cut so took it from 1.08x to 1.53x the bound): such rows are
    cut only when their owners lie one every k rows (`owner_pitch`), for a
    bundle landing on the owner rows alone (cut "owners"); a weight-
    streaming phase's rows hold their boxes without lanes."""
    live = np.flatnonzero((rows[:, 1] > rows[:, 0]).all(axis=1))
    return live.size > 0 and int(live[-1]) + 1 > live.size


def owner_pitch(rows: np.ndarray) -> tuple[int, int]:
    """(k, offset) when the rows reading something are exactly one of every
    k > 1 (rows offset, offset + k, ...: a conv's or matmul's owner rows,
    the last of each group of c = k rows), every group holding one; else
    (0, 0). A bundle of R/k lanes landing on those rows with no spine (cut
    "owners") then delivers each reading row its box and nothing to the
    rows between."""
    R = rows.shape[0]
    live = np.flatnonzero((rows[:, 1] > rows[:, 0]).all(axis=1))
    if live.size < 1 or live.size == R or R % live.size:
        return 0, 0
    k = R // live.size
    off = int(live[0])
    if off >= k or (live != off + k * np.arange(live.size)).any():
        return 0, 0
    return k, off


def lane_boxes(kernel: Kernel, b: Bundle, value: str, shape: tuple[int, ...],
               ops: Operands | None = None) -> np.ndarray:
    """(lanes, 2, ndim): the box each lane of cut bundle `b` into `kernel`
    carries: the one its landing PE's row reads (input_cut), or at pitch k
    the bounding box of the boxes of the k rows its landing PE and spine
    serve (wsec.ir.lanes.union_boxes); a bundle landing on owner rows (cut
    "owners", no spine) carries its landing row's box. The lanes serve all
    of the PE rows or a run of them (a concatenation's input, read by the
    rows from the first that forwards some of it to the last: see
    `read_span`); every row they do not serve must read nothing. Boxes are
    over the value's `cut_view` (its own shape or a split of one axis). A
    ValueError says why the cut does not apply (no declared cut, more
    lanes x pitch than PE rows, a spine across the rows, a lane landing
    outside the rows, a row no lane serves that reads the value)."""
    return ribbon_boxes(kernel, [b], value, shape, ops)[0]


def ribbon_boxes(kernel: Kernel, ribbons: list[Bundle], value: str, shape: tuple[int, ...],
                 ops: Operands | None = None) -> list[np.ndarray]:
    """lane_boxes of each of several cut bundles of one value into `kernel`
    (RIBBONS: one request routed as several bundles, each with its own path,
    whose lanes together serve the rows one bundle's would: wsec.ir.lanes
    `ribbons`). Their lanes must land on distinct rows, and together leave
    no row that reads the value unserved; a ValueError names the row."""
    rows = input_cut(kernel, value, shape, ops)
    if rows is None:
        raise ValueError(f"kernel '{kernel.name}' ({kernel.kind}) declares no per-row cut of "
                         f"%{value}")
    if ribbons[0].cut == "halo":  # the rows' cores; the rows exchange the halo (wsec.ir.halo)
        got = halo_cut(kernel, value, shape, ops)
        if got is None:
            raise ValueError(f"kernel '{kernel.name}' ({kernel.kind}): its PE rows exchange no "
                             f"halo of %{value}")
        rows = got[0]
    k = int(ribbons[0].pitch)
    lanes = sum(int(b.lanes) for b in ribbons)
    if lanes * k > rows.shape[0]:
        raise ValueError(f"a cut bundle into kernel '{kernel.name}' needs one lane per "
                         f"{k} PE row{'s' if k > 1 else ''} ({rows.shape[0]} rows) or fewer, "
                         f"it has {lanes}")
    if any(int(b.pitch) != k or b.cut != ribbons[0].cut for b in ribbons):
        raise ValueError(f"the ribbons of %{value} into kernel '{kernel.name}' differ in pitch "
                         "or cut: their lanes would serve rows unevenly")
    assert kernel.rect is not None
    served = [_served_rows(kernel, b) for b in ribbons]
    py = np.concatenate(served)
    n = py.shape[1]  # rows each lane serves
    if ((py < 0) | (py >= rows.shape[0])).any() or np.unique(py).size != py.size:
        raise ValueError(f"the lanes of a cut bundle into kernel '{kernel.name}' do not land "
                         f"one on each {'group of ' + str(k) + ' ' if k > 1 else ''}PE row"
                         f"{'s' if k > 1 else ''}")
    rest = np.ones(rows.shape[0], bool)  # the rows no lane serves read nothing
    rest[py.ravel()] = False
    reads = rest & (rows[:, 1] > rows[:, 0]).all(axis=1)
    if reads.any():
        how = "landing on owner rows of" if n < k else "into"
        raise ValueError(f"a bundle of %{value} {how} kernel '{kernel.name}' leaves PE row "
                         f"{int(np.argmax(reads))} without the box it reads")
    return [rows[s[:, 0]] if n == 1 else union_boxes(rows[s]) for s in served]


def _served_rows(kernel: Kernel, b: Bundle) -> np.ndarray:
    """(lanes, rows each serves): the PE rows of `kernel` (unrotated) each
    lane of `b` delivers to, its landing row first, then its spine's."""
    assert kernel.rect is not None
    _, land = endpoints(b)
    py = land[:, 0] - kernel.rect.x if kernel.rotated else land[:, 1] - kernel.rect.y
    n = b.spine + 1
    if int(b.pitch) > 1:
        sx, sy = spine_dir(b)
        step = sx if kernel.rotated else sy
        if step == 0:
            raise ValueError(f"the {'spines' if n > 1 else 'lanes'} of a cut bundle into kernel "
                             f"'{kernel.name}' run across its PE rows, not along its input side")
        return py[:, None] + step * np.arange(n)[None, :]
    return py[:, None]


def read_span(rows: np.ndarray) -> tuple[int, int]:
    """(first, stop): the run of PE rows from the first that reads
    something of the value to the last (rows: input_cut's boxes). A cut
    bundle lands on just those rows where the others read nothing (a
    concatenation's input is forwarded by a run of its rows, the next
    input by the run after it); (0, 0) when no row reads any of it."""
    live = np.flatnonzero((rows[:, 1] > rows[:, 0]).all(axis=1))
    if not live.size:
        return 0, 0
    return int(live[0]), int(live[-1]) + 1


def kind_for_op(op: str) -> LibraryKind | None:
    """The library kind that implements graph op `op` (None: no kind does)."""
    for kind in KINDS.values():
        if isinstance(kind, LibraryKind) and op in kind.ops:
            return kind
    return None


def kind_for_node(node: Node, values: dict[str, Value]) -> LibraryKind | None:
    """The library kind that runs `node`: `kind_for_op`, except where the
    operands decide (an Einsum of one operand is a reduction, of two a
    matmul)."""
    if node.op == "Einsum" and len([i for i in node.inputs if i]) == 1:
        kind = KINDS["reduce"]
        assert isinstance(kind, LibraryKind)
        return kind
    if is_weight_gradient(node, values):  # training: a Conv with an activation weight
        kind = KINDS["conv_wgrad"]
        assert isinstance(kind, LibraryKind)
        return kind
    return kind_for_op(node.op)


for _kind in (ConvKind(), DeconvKind(), ConvWgradKind(), MatmulKind(), PoolKind(), ResizeKind(),
              NormKind(), SoftmaxKind(), ReduceKind(), GatherKind(), ElementwiseKind(),
              DatamoveKind()):
    register(_kind)

# The ISPD 2020 contest's cost model: the kernel library of the `cs1` target.
for _kind in ISPD_KINDS.values():
    register(_kind)
