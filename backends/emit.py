"""The emitter: a fully compiled Module -> `Program` -> binary bytes (format v1).

`build_program` gathers everything the device loader needs from the Module
(kernels, routes, SRAM maps, weight shards, host I/O map) into a `Program`;
`write_program` encodes any Program (the tests also feed it deliberately
inconsistent ones); `emit_bytes` validates with the loader's rules first,
so wsec never writes a binary its own loader would reject. Output depends
only on the Module: same Module, same bytes.

Weight shards: the kernel kind says which slice of each constant a PE holds
(`weight_shard`). Calling it for every PE of a 750x994 grid is too slow, and
one record per distinct shard too big, so `shard_tiling` evaluates one row
and one column of the rectangle, assumes each tensor dimension's slice
varies with px alone or py alone (true of every library kind), checks that
on sampled PEs, and only falls back to the per-PE loop when a kind's layout
is not separable. The result is stored as x-runs x y-runs plus rectangles
of equal blob (format.MAP_DTYPE); equal contents share one blob and a
splat never materialises. A shard depends only on weight_shard's arguments,
so kernels alike in kind, dims, knobs, weight shape and rectangle (a GPT's
layers) share one tiling; and a weight whose elements all have the same
bits (a structure-only model's zeros) gets its blobs from one element times
the shard size, as a splat does, instead of slicing every shard.
"""

from __future__ import annotations

import errno
import importlib.metadata
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from wsec.ir.errors import WsecError
from wsec.ir.graph import HOST, Kernel, Module, Value
from wsec.ir.kernels import kind_of
from wsec.ir.lanes import endpoints, lane_slices
from wsec.ir.target import Target, module_target
from wsec.ir.types import DTYPES, ConstData, External

from .format import (
    AXIS_CELL,
    AXIS_CONST,
    AXIS_X,
    AXIS_Y,
    BLOB_RAW,
    BLOB_SPLAT,
    BLOBS,
    CELL_DTYPE,
    LANES,
    MAP_DTYPE,
    MAX_RANK,
    META,
    REGION_DTYPE,
    RUN_DTYPE,
    SRAM,
    STRINGS,
    TEMPLATE_DTYPE,
    Blob,
    EdgeInfo,
    FormatError,
    KernelInfo,
    Program,
    canonical_json,
    encode_blobs,
    encode_lanes,
    encode_meta,
    encode_sram,
    encode_strings,
    pack_file,
)
from .lanes import (
    bundle_records,
    check_records,
    expand_routes,
    halo_records,
    relay_records,
    template_records,
)

SliceKey = tuple[tuple[int, int], ...]
Block = tuple[int, int, int, int, SliceKey]  # x0, x1, y0, y1, slice
# PEs off row 0 / column 0 checked against a separable layout's prediction
SAMPLES = 48


class EmitError(WsecError):
    """The module cannot be turned into a valid binary (message for people)."""


def compiler_version() -> str:
    try:
        return importlib.metadata.version("wsec")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


# --- public API --------------------------------------------------------------
def write_program(p: Program) -> bytes:
    """Encode a Program as format bytes (no validation)."""
    return pack_file([(META, encode_meta(p)), (STRINGS, encode_strings(p.strings)),
                      (LANES, encode_lanes(p.bundles, p.points, p.templates, p.slices)),
                      (SRAM, encode_sram(p)),
                      (BLOBS, encode_blobs(p.blobs))], p.version, p.flags)


def emit_bytes(module: Module, version: str | None = None, embed_weights: bool = False,
               out_dir: str | None = None) -> bytes:
    """The binary for a compiled module, validated as the loader would.
    Stream mode: `embed_weights` copies external weights into BLOBS instead
    of referencing their file (named relative to `out_dir`)."""
    from .loader import BinaryError, validate_program

    p = _gather(module, version, embed_weights, out_dir)
    try:  # checks the records and expands the routes, as build_program would
        validate_program(p)
    except BinaryError as e:
        raise EmitError(f"refusing to write an invalid binary: {e}") from None
    p.info["summary"] = summary(p)
    return write_program(p)


def write_binary(module: Module, path: str, version: str | None = None,
                 embed_weights: bool = False) -> None:
    """Write the binary atomically: a temp file in the same directory, then
    os.replace, so `path` is either the old file or the complete new one."""
    d = os.path.dirname(os.path.abspath(path))
    data = emit_bytes(module, version, embed_weights, d)
    fd, tmp = tempfile.mkstemp(prefix=".wsec-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a binary is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --- Module -> Program -------------------------------------------------------
def build_program(module: Module, version: str | None = None, embed_weights: bool = False,
                  out_dir: str | None = None) -> Program:
    """The Program of a compiled module, its records checked and routes expanded."""
    p = _gather(module, version, embed_weights, out_dir)
    try:
        check_records(p)
    except FormatError as e:
        raise EmitError(f"refusing to write an invalid binary: {e}") from None
    p.routes = expand_routes(p)
    p.info["summary"] = summary(p)
    return p


def _gather(module: Module, version: str | None, embed_weights: bool,
            out_dir: str | None) -> Program:
    """The module's Program, unchecked, without its expanded routes and summary."""
    try:
        target = module_target(module.attrs)
    except WsecError as e:
        raise EmitError(str(e)) from None
    kernels = list(module.kernels())
    for k in kernels:
        _require_pass_fields(k, module)
    values = _value_types(module, kernels)
    strings: list[str] = []
    sid: dict[str, int] = {}
    regions = []
    for ki, k in enumerate(kernels):
        for r in sorted(k.sram or [], key=lambda r: (r.offset, r.name)):
            if r.name not in sid:
                sid[r.name] = len(strings)
                strings.append(r.name)
            regions.append((ki, sid[r.name], r.offset, r.size))
    blobs = _BlobTable(target)
    acc = _MapAcc()
    stream = module.attrs.get("mode") == "stream"
    if stream:  # weights stream in per phase: descriptors, not shards (backends/stream.py)
        from .weight_stream import StreamError, stream_host_io, stream_tables

        try:
            phases, streams, store = stream_tables(module, kernels,
                                                   [_weight_names(k, module) for k in kernels],
                                                   blobs, embed_weights, out_dir)
        except StreamError as e:
            raise EmitError(str(e)) from None
    else:
        tilings: dict[tuple[object, ...], Tiling] = {}
        for ki, k in enumerate(kernels):
            _weight_maps(ki, k, module, blobs, acc, tilings)
    edges = [EdgeInfo(e.value, e.src, list(e.dsts), int(e.bytes_per_sample))
             for e in module.edges]
    bundles, points, slices, views = bundle_records(module,
                                                    {k.name: i for i, k in enumerate(kernels)})
    # a stream binary's phases reuse the same PEs one after another; their kernels'
    # internal flows are configured per phase, not in the resident route table
    templates, entries, per_kernel = (
        ([], np.zeros(0, TEMPLATE_DTYPE), [-1] * len(kernels)) if stream
        else template_records(module))
    infos = [KernelInfo(k.name, k.kind, dict(k.dims), dict(k.knobs or {}), k.rect,  # type: ignore[arg-type]
                        bool(k.rotated), dict(k.cost or {}), list(k.origin),
                        [_op_json(n) for n in k.body], list(k.inputs), list(k.outputs),
                        _weight_names(k, module), t) for k, t in zip(kernels, per_kernel,
                                                                    strict=True)]
    info = {
        "compiler_version": version or compiler_version(),
        "model_hash": str(module.attrs.get("model_hash", "")),
        "source": str(module.attrs.get("source", module.name)),
        "mode": str(module.attrs.get("mode", "pipeline")),
        "values": values,
        "consts": {n: _storage(module.values[n].const) for n in values
                   if n in module.values and module.values[n].const is not None},
        "inputs": list(module.inputs), "outputs": list(module.outputs),
        "host_io": stream_host_io(module, target) if stream else _host_io(module),
        "attrs": _plain_attrs(module.attrs),
        "templates": templates,
    }
    if views:
        info["cut_views"] = views
    halos = halo_records(module)
    if halos:
        info["halos"] = halos
    relays = relay_records(module)
    if relays:
        info["relays"] = relays
    if stream:
        info.update(phases=phases, streams=streams, activations=[
            {"value": v, "first": a, "last": b, "offset": off, "bytes": size}
            for v, a, b, off, size in module.attrs.get("activations", [])])
        if "store_steps" in module.attrs:
            info.update(store_steps=store, micro_batch=int(module.attrs["micro_batch"]))
    reg = np.array(regions, REGION_DTYPE) if regions else np.zeros(0, REGION_DTYPE)
    return Program(target, infos, edges, bundles, points, entries, reg, *acc.arrays(),
                   blobs.blobs, strings, info, slices=slices)


def summary(p: Program) -> dict[str, int]:
    """Headline figures stored in META (and recomputable from the sections)."""
    areas = [k.rect.area for k in p.kernels]
    stream = "stream" in str(p.info.get("mode", ""))  # phases share the PEs one after another
    return {"kernels": len(p.kernels), "pes_used": max(areas, default=0) if stream else sum(areas),
            "grid_pes": p.target.pes,
            "bottleneck_cycles": max((int(k.cost.get("cycles", 0)) for k in p.kernels), default=0),
            "edges": len(p.edges), "route_entries": int(p.routes.size),
            "colors_used": int(np.unique(p.routes["color"]).size),
            "blobs": len(p.blobs), "blob_bytes": sum(len(b.payload) for b in p.blobs),
            "weight_bytes": p.weight_pe_bytes()}


def _require_pass_fields(k: Kernel, m: Module) -> None:
    for fld, pass_name in (("knobs", "size"), ("cost", "size"), ("rect", "place"),
                           ("sram", "allocate")):
        if getattr(k, fld) is None:
            raise EmitError(f"kernel '{k.name}' ({k.kind}) has no {fld}: run the '{pass_name}' "
                            f"pass before emitting (module properties: "
                            f"{', '.join(sorted(m.properties)) or 'none'})")
    try:
        kind_of(k)
    except KeyError as e:
        raise EmitError(str(e.args[0])) from None


def _weight_names(k: Kernel, m: Module) -> list[str]:
    return [i for i in k.inputs if i and i in m.values and m.values[i].const is not None]


def _value_types(m: Module, kernels: list[Kernel]) -> dict[str, str]:
    names: set[str] = set(m.inputs) | set(m.outputs) | {e.value for e in m.edges}
    for k in kernels:
        names.update(k.inputs, k.outputs)
        for n in k.body:
            names.update(n.inputs, n.outputs)
    return {n: str(m.values[n].type) for n in sorted(names) if n and n in m.values}


def _storage(c: ConstData | None) -> str:
    return type(c).__name__.lower() if c is not None else "none"


def _op_json(n: object) -> dict[str, object]:
    return {"name": n.name, "op": n.op, "inputs": list(n.inputs),  # type: ignore[attr-defined]
            "outputs": list(n.outputs), "attrs": dict(n.attrs)}  # type: ignore[attr-defined]


def _plain_attrs(attrs: dict[str, object]) -> dict[str, object]:
    out = {}
    for key, v in attrs.items():
        if key in ("target", "grid", "model_hash", "source", "mode", "phases", "store_steps",
                   "activations"):
            continue
        try:
            canonical_json(v)
            out[key] = v
        except (TypeError, ValueError):
            out[key] = str(v)
    return out


def _host_io(m: Module) -> dict[str, list[dict[str, object]]]:
    """Where the host feeds model inputs and takes outputs: per bundle of a
    host edge, its lanes' PEs on the West edge (inputs) or East edge
    (outputs) and the element range each lane carries, or, for an input
    bundle cut per PE row of its sink, the box each lane carries (the
    bundle's slice records, wsec.ir.kernels.lane_boxes)."""
    from wsec.ir.kernels import cut_view, lane_boxes
    from wsec.ir.movement import Operands

    kernels = {k.name: k for k in m.kernels()}
    ins, outs = [], []
    for e in m.edges:
        numel = m.values[e.value].type.numel
        for b in e.bundles or ():
            if e.src != HOST and b.sink != HOST:
                continue
            src, land = endpoints(b)
            pes = src if e.src == HOST else land
            d: dict[str, object] = {"value": e.value, "type": str(m.values[e.value].type),
                                    "sink": b.sink, "pes": pes.tolist()}
            if b.cut and e.src == HOST and b.sink in kernels:
                shape, ops = tuple(m.values[e.value].type.shape), Operands.of_module(m, runs=True)
                d["boxes"] = lane_boxes(kernels[b.sink], b, e.value, shape, ops).tolist()
                view = cut_view(kernels[b.sink], e.value, shape, ops)
                if view != shape:  # the boxes are over the bundle's view (META cut_views)
                    d["view"] = list(view)
            else:
                d["ranges"] = lane_slices(numel, b.lanes).tolist()
            (ins if e.src == HOST else outs).append(d)
    return {"inputs": ins, "outputs": outs}


# --- weights -----------------------------------------------------------------
class _BlobTable:
    """Blobs deduplicated by content digest, in first-seen order."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.blobs: list[Blob] = []
        self.ids: dict[tuple[int, str, int, bytes], int] = {}

    def device_dtype(self, dtype: str) -> str:
        return self.target.dtype if np.issubdtype(DTYPES[dtype], np.floating) else dtype

    def add(self, b: Blob) -> int:
        # keyed by content itself: Python's hash of the bytes is several times
        # cheaper than their sha256 (written once per distinct blob), and
        # equal hashes are compared byte for byte
        d = (b.encoding, b.dtype, b.count, b.payload)
        if d not in self.ids:
            self.ids[d] = len(self.blobs)
            self.blobs.append(b)
        return self.ids[d]

    def splat(self, dtype: str, count: int, value: object) -> int:
        dt = self.device_dtype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            payload = np.array(value, DTYPES[dt].newbyteorder("<")).tobytes()
        return self.add(Blob(BLOB_SPLAT, dt, count, payload))

    def dense(self, arr: np.ndarray, dtype: str) -> int:
        dt = self.device_dtype(dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            data = np.ascontiguousarray(arr, DTYPES[dt].newbyteorder("<")).tobytes()
        return self.add(Blob(BLOB_RAW, dt, int(arr.size), data))


@dataclass
class Tiling:
    """A weight's layout found by `shard_tiling` (see MAP_DTYPE in format.py).

    Run and cell keys are full slice keys; only the dims whose axis points
    at them are stored. `cells` is None when the layout is separable (the
    caller then groups (x-run, y-run) pairs by blob)."""

    axes: list[int]
    xruns: list[tuple[int, int, SliceKey]]
    yruns: list[tuple[int, int, SliceKey]]
    cells: list[Block] | None

    def key(self, i: int, j: int) -> SliceKey:
        """Full slice of x-run i, y-run j (separable tilings)."""
        xk, yk = self.xruns[i][2], self.yruns[j][2]
        return tuple(yk[d] if a == AXIS_Y else xk[d] for d, a in enumerate(self.axes))

    @cached_property
    def counts(self) -> np.ndarray:
        """(y-runs, x-runs): elements of each shard (separable tilings)."""
        lx = np.array([_numel(kx, self.axes, AXIS_X) for *_, kx in self.xruns], np.int64)
        ly = np.array([_numel(ky, self.axes, AXIS_Y) for *_, ky in self.yruns], np.int64)
        return np.outer(ly, lx) * _numel(self.xruns[0][2], self.axes, AXIS_CONST)


def shard_tiling(shard: Callable[[int, int], SliceKey], uw: int, uh: int) -> Tiling:
    """The layout of one weight over uw x uh PE offsets, from `shard(px, py)`."""
    row = [shard(px, 0) for px in range(uw)]
    col = [row[0]] + [shard(0, py) for py in range(1, uh)]
    nd = len(row[0])
    vx = [any(r[d] != row[0][d] for r in row) for d in range(nd)]
    vy = [any(c[d] != col[0][d] for c in col) for d in range(nd)]
    if not any(a and b for a, b in zip(vx, vy, strict=True)):
        axes = [AXIS_X if vx[d] else AXIS_Y if vy[d] else AXIS_CONST for d in range(nd)]
        xr = [(a, b, row[a]) for a, b in _runs([tuple(r[d] for d in range(nd) if vx[d])
                                                for r in row])]
        yr = [(a, b, col[a]) for a, b in _runs([tuple(c[d] for d in range(nd) if vy[d])
                                                for c in col])]
        t = Tiling(axes, xr, yr, None)
        xi = np.repeat(np.arange(len(xr)), [b - a for a, b, _ in xr])
        yi = np.repeat(np.arange(len(yr)), [b - a for a, b, _ in yr])
        if uw == 1 or uh == 1:
            pts = set()  # row 0 and column 0 were every PE
        elif uw * uh <= SAMPLES:
            pts = {(px, py) for px in range(1, uw) for py in range(1, uh)}
        else:
            rng = np.random.default_rng(0)
            pts = {(uw - 1, uh - 1), (uw - 1, uh // 2), (uw // 2, uh - 1)}
            pts.update(zip(rng.integers(1, uw, SAMPLES).tolist(),
                           rng.integers(1, uh, SAMPLES).tolist(), strict=True))
        if all(shard(px, py) == t.key(int(xi[px]), int(yi[py])) for px, py in sorted(pts)):
            return t
    const = [all(k[d] == row[0][d] for k in row + col) for d in range(nd)]
    blocks = _blocks_per_pe(shard, uw, uh)
    if any(b[4][d] != row[0][d] for b in blocks for d in range(nd) if const[d]):
        const = [False] * nd
    return Tiling([AXIS_CONST if c else AXIS_CELL for c in const],
                  [(px, px + 1, row[0]) for px in range(uw)],
                  [(py, py + 1, row[0]) for py in range(uh)], blocks)


def _weight_maps(ki: int, k: Kernel, m: Module, blobs: _BlobTable, acc: _MapAcc,
                 tilings: dict[tuple[object, ...], Tiling]) -> None:
    kind = kind_of(k)
    uw, uh = (k.rect.h, k.rect.w) if k.rotated else (k.rect.w, k.rect.h)  # type: ignore[union-attr]
    # a shard is a function of these alone (KernelKind.weight_shard's arguments):
    # kernels of equal kind, dims, knobs and shape (a GPT's 48 layers) share tilings
    kkey = (k.kind, repr(sorted(k.dims.items())), repr(sorted((k.knobs or {}).items())), uw, uh)
    for wi, name in enumerate(_weight_names(k, m)):
        v = m.values[name]
        shape = v.type.shape
        if len(shape) > MAX_RANK:
            raise EmitError(f"kernel '{k.name}': weight %{name} has rank {len(shape)}; "
                            f"format v1 stores weights of rank <= {MAX_RANK}")

        def shard(px: int, py: int, wi: int = wi, shape: tuple[int, ...] = shape,
                  name: str = name) -> SliceKey:
            sl = kind.weight_shard(k.dims, k.knobs or {}, wi, shape, px, py, (uw, uh))
            return _slice_key(sl, shape, k.name, name)

        tkey = (*kkey, wi, tuple(shape))
        if tkey not in tilings:
            tilings[tkey] = shard_tiling(shard, uw, uh)
        t = tilings[tkey]
        const = v.const
        assert const is not None
        src = _WeightSource(v, blobs)
        if t.cells is None:
            if src.by_count:  # the blob depends only on the element count
                ids = src.count_ids(t.counts.reshape(-1)).reshape(t.counts.shape)
            else:
                ids = _pair_ids(t, src.blob)
            cells = [(x0, x1, y0, y1, None, int(b)) for x0, x1, y0, y1, b in _matrix_blocks(ids)]
        else:
            cells = [(x0, x1, y0, y1, key, src.blob(key)) for x0, x1, y0, y1, key in t.cells]
        acc.add(ki, wi, shape, t, cells)


def _pair_ids(t: Tiling, blob: Callable[[SliceKey], int]) -> np.ndarray:
    """(y-runs, x-runs) blob ids of a separable tiling. Runs repeat keys (a
    conv's row groups each cycle through its channel blocks), so one blob per
    distinct (y key, x key) pair, made in the order a row-major scan of all
    pairs first meets them: y keys as first met, and x keys so in each."""
    def distinct(runs: list[tuple[int, int, SliceKey]], axis: int) -> tuple[list[int], list[int]]:
        pos: dict[tuple[tuple[int, int], ...], int] = {}
        first, inv = [], []
        for r, (*_, key) in enumerate(runs):
            k = tuple(s for s, a in zip(key, t.axes, strict=True) if a == axis)
            if k not in pos:
                pos[k] = len(first)
                first.append(r)
            inv.append(pos[k])
        return first, inv

    fx, ix = distinct(t.xruns, AXIS_X)
    fy, iy = distinct(t.yruns, AXIS_Y)
    table = np.array([[blob(t.key(i, j)) for i in fx] for j in fy], np.int64)
    return table[np.ix_(iy, ix)]


class _WeightSource:
    """Blob ids of one weight's shards, each blob made once per distinct
    content. A splat's shard, or any shard of a weight whose elements all
    have the same bits (a structure-only model's zeros, a constant-filled
    parameter), is its element count times one value: `by_count` gives
    those bytes without reading any shard; other weights are sliced."""

    def __init__(self, v: Value, blobs: _BlobTable) -> None:
        const = v.const
        assert const is not None
        self.blobs = blobs
        self.dtype = blobs.device_dtype(v.type.dtype)
        self.cache: dict[object, int] = {}
        self.splat = const.is_splat
        self.full: np.ndarray | None = None
        self.one: bytes | None = None
        if not self.splat:
            self.full = np.asarray(const.array())  # a plain view of a memory map: cheaper slices
            le = DTYPES[self.dtype].newbyteorder("<")
            if isinstance(const, External) and _file_hole(const):  # zeros, known unread
                self.one = _uniform_bytes(np.zeros(min(self.full.size, UNIFORM_PROBE),
                                                   self.full.dtype), le)
            else:
                self.one = _uniform_bytes(self.full, le)
        self.value = const.value if self.splat else None  # type: ignore[attr-defined]
        self.by_count = self.splat or self.one is not None

    def count_blob(self, count: int) -> int:
        if count not in self.cache:
            if self.splat:
                self.cache[count] = self.blobs.splat(self.dtype, count, self.value)
            else:
                assert self.one is not None
                self.cache[count] = self.blobs.add(Blob(BLOB_RAW, self.dtype, count,
                                                        self.one * count))
        return self.cache[count]

    def count_ids(self, counts: np.ndarray) -> np.ndarray:
        """Blob ids of shards of `counts` elements, made in the order the
        per-shard path makes them: a splat's by ascending count (one per
        count), others by first appearance."""
        uniq, first, inv = np.unique(counts, return_index=True, return_inverse=True)
        order = range(len(uniq)) if self.splat else np.argsort(first, kind="stable").tolist()
        ids = np.zeros(len(uniq), np.int64)
        for u in order:
            ids[u] = self.count_blob(int(uniq[u]))
        return ids[inv.reshape(-1)]

    def blob(self, key: SliceKey) -> int:
        if self.by_count:
            return self.count_blob(int(math.prod(b - a for a, b in key)))
        if key not in self.cache:
            assert self.full is not None
            self.cache[key] = self.blobs.dense(self.full[tuple(slice(a, b) for a, b in key)],
                                               self.dtype)
        return self.cache[key]


def _file_hole(c: External) -> bool:
    """The constant's bytes lie in a hole of its sparse file (as a
    structure-only model's weights do), so they are zeros, known without
    reading them (lseek SEEK_DATA); False where the OS cannot tell."""
    nbytes = c.type.numel * c.type.np_dtype.itemsize
    if not nbytes or not hasattr(os, "SEEK_DATA"):
        return False
    try:
        fd = os.open(c.resolved_path(), os.O_RDONLY)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size < c.offset + nbytes:
            return False  # a short file: reading it fails as it should
        try:
            return os.lseek(fd, c.offset, os.SEEK_DATA) >= c.offset + nbytes
        except OSError as e:  # ENXIO: no data at or after the offset
            return e.errno == errno.ENXIO
    finally:
        os.close(fd)


UNIFORM_PROBE = 4096  # elements compared first (a real weight differs within them)
UNIFORM_CHUNK = 1 << 22  # elements compared at once after that


def _uniform_bytes(arr: np.ndarray, dtype: np.dtype) -> bytes | None:
    """One element of `arr` as `dtype` bytes when every element has the same
    bits and so the same bytes (None otherwise, or when `arr` is not a
    permutation of contiguous memory). Reads the array in chunks, stopping
    at the first that differs."""
    if not arr.size or arr.dtype.kind not in "biuf" or arr.dtype.itemsize not in (1, 2, 4, 8):
        return None
    order = np.argsort([-s for s in arr.strides], kind="stable")
    flat = arr.transpose(order)  # a transposed external weight: its stored order
    if not flat.flags.c_contiguous:
        return None
    flat = flat.reshape(-1)
    bits = flat.view(f"u{arr.dtype.itemsize}")
    first = bits[0]
    for a, b in [(0, UNIFORM_PROBE)] + [(i, i + UNIFORM_CHUNK)
                                        for i in range(UNIFORM_PROBE, bits.size, UNIFORM_CHUNK)]:
        if bits[a:b].any() if first == 0 else not (bits[a:b] == first).all():  # zeros: no temporary
            return None
    with np.errstate(over="ignore", invalid="ignore"):
        one = np.ascontiguousarray(flat[:1], dtype).tobytes()
        run = np.ascontiguousarray(flat[:UNIFORM_PROBE], dtype).tobytes()
    # the cast of one element and of a run agree (as they must) before one stands for all
    return one if run == one * min(flat.size, UNIFORM_PROBE) else None


def _numel(key: SliceKey, axes: list[int], axis: int) -> int:
    return int(math.prod(b - a for (a, b), ax in zip(key, axes, strict=True) if ax == axis))


class _MapAcc:
    """Accumulates MAP/RUN/CELL records of all weights."""

    def __init__(self) -> None:
        self.maps: list[np.ndarray] = []
        self.runs: list[np.ndarray] = []
        self.cells: list[np.ndarray] = []
        self.nruns = self.ncells = 0

    @staticmethod
    def _slices(rec: np.ndarray, keys: list[SliceKey | None], axes: list[int], axis: int) -> None:
        sel = [d for d, a in enumerate(axes) if a == axis]
        if not sel or not keys:
            return
        se = np.array([[k[d] for d in sel] for k in keys], np.int64)  # type: ignore[index]
        rec["start"][:, sel], rec["stop"][:, sel] = se[:, :, 0], se[:, :, 1]

    def add(self, ki: int, wi: int, shape: tuple[int, ...], t: Tiling,
            cells: list[tuple[int, int, int, int, SliceKey | None, int]]) -> None:
        mp = np.zeros(1, MAP_DTYPE)
        mp["kernel"], mp["weight"], mp["ndim"] = ki, wi, len(shape)
        mp["axis"][0, :len(shape)] = t.axes
        mp["nx"], mp["ny"], mp["run0"] = len(t.xruns), len(t.yruns), self.nruns
        mp["cell0"], mp["ncells"] = self.ncells, len(cells)
        self._slices(mp, [t.xruns[0][2]], t.axes, AXIS_CONST)
        runs = np.zeros(len(t.xruns) + len(t.yruns), RUN_DTYPE)
        both = t.xruns + t.yruns
        runs["p0"], runs["p1"] = [r[0] for r in both], [r[1] for r in both]
        self._slices(runs[:len(t.xruns)], [r[2] for r in t.xruns], t.axes, AXIS_X)
        self._slices(runs[len(t.xruns):], [r[2] for r in t.yruns], t.axes, AXIS_Y)
        cr = np.zeros(len(cells), CELL_DTYPE)
        if cells:
            arr = np.array([c[:4] + (c[5],) for c in cells], np.int64)
            for j, f in enumerate(("xr0", "xr1", "yr0", "yr1", "blob")):
                cr[f] = arr[:, j]
            self._slices(cr, [c[4] for c in cells], t.axes, AXIS_CELL)
        self.maps.append(mp)
        self.runs.append(runs)
        self.cells.append(cr)
        self.nruns += len(runs)
        self.ncells += len(cells)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        def cat(parts: list[np.ndarray], dt: np.dtype) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros(0, dt)
        return (cat(self.maps, MAP_DTYPE), cat(self.runs, RUN_DTYPE),
                cat(self.cells, CELL_DTYPE))


def _matrix_blocks(ids: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """Rectangles (x0, x1, y0, y1, id) of equal ids covering an (ny, nx)
    matrix: runs per row, merged with the row below when they match."""
    ny, nx = ids.shape
    if (ids == ids[0, 0]).all():
        return [(0, nx, 0, ny, int(ids[0, 0]))]
    blocks: list[list[int]] = []
    open_: dict[tuple[int, int, int], int] = {}
    for j, row in enumerate(ids):
        cuts = np.concatenate([[0], np.flatnonzero(np.diff(row)) + 1, [nx]])
        nxt = {}
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
            key = (a, b, int(row[a]))
            if key in open_:
                blocks[open_[key]][3] = j + 1
                nxt[key] = open_[key]
            else:
                nxt[key] = len(blocks)
                blocks.append([a, b, j, j + 1, int(row[a])])
        open_ = nxt
    return sorted((tuple(b) for b in blocks), key=lambda b: (b[2], b[0]))  # type: ignore[misc]


def _slice_key(sl: tuple[slice, ...], shape: tuple[int, ...], kname: str, wname: str) -> SliceKey:
    if len(sl) < len(shape):
        sl = tuple(sl) + tuple(slice(0, d) for d in shape[len(sl):])
    idx = [s.indices(n) for s, n in zip(sl, shape, strict=True)]
    if any(st != 1 for _, _, st in idx):
        raise EmitError(f"kernel '{kname}': the shard of weight %{wname} uses a strided "
                        f"slice {sl}, which format v1 cannot store")
    return tuple((a, b) if b >= a else (a, a) for a, b, _ in idx)


def _runs(keys: list[object]) -> list[tuple[int, int]]:
    """Maximal [i0, i1) runs of equal consecutive keys."""
    runs, start = [], 0
    for i in range(1, len(keys) + 1):
        if i == len(keys) or keys[i] != keys[start]:
            runs.append((start, i))
            start = i
    return runs


def _blocks_per_pe(shard: Callable[[int, int], SliceKey], uw: int, uh: int) -> list[Block]:
    """General case: runs of equal shards per row, merged with the row below
    when they span the same columns."""
    blocks: list[list[object]] = []
    open_: dict[tuple[int, int, SliceKey], int] = {}
    for py in range(uh):
        keys = [shard(px, py) for px in range(uw)]
        nxt = {}
        for x0, x1 in _runs(keys):  # type: ignore[arg-type]
            k = (x0, x1, keys[x0])
            if k in open_:
                blocks[open_[k]][3] = py + 1
                nxt[k] = open_[k]
            else:
                nxt[k] = len(blocks)
                blocks.append([x0, x1, py, py + 1, keys[x0]])
        open_ = nxt
    out = [tuple(b) for b in blocks]
    return sorted(out, key=lambda b: (b[2], b[0]))  # type: ignore[return-value]
