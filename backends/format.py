"""The wsec binary format, version 5: the one spec shared by writer and loader.

Every byte layout lives here (header, section table, section encodings, the
numpy record dtypes) together with `Program`, the decoded program both the
emitter (which builds one from a Module, then encodes it) and the loader
(which decodes and validates one) use. docs/binary-format.md is the prose
version of this module; change both together and bump FORMAT_VERSION when a
layout changes incompatibly.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from wsec.ir.errors import WsecError
from wsec.ir.fabric import PORT_BITS as FABRIC_PORT_BITS
from wsec.ir.fabric import mask_of, ports_of
from wsec.ir.graph import HOST, Rect, SramRegion
from wsec.ir.halo import Halo
from wsec.ir.target import Target
from wsec.ir.types import DTYPES

MAGIC = b"WSEC\x00BIN"
FORMAT_VERSION = 10  # 2: routes as bundles of lanes (LANES) and kernel route templates;
# 3: cut bundles, whose lanes carry boxes of the slice table (LANES); 4: a bundle's lane
# pitch (LANES: lanes every pitch-th row, each handing on along a spine to pitch rows);
# 5: a bundle's source pitch (LANES: lanes widen from it to the pitch at the last corner);
# 6: a cut bundle's boxes may be over a view of its value (META cut_views: one axis split);
# BUNDLE_OWNERS (LANES: pitched lanes land on owner rows, with no spine); 7: a stream-mode
# binary records where each activation lives between phases (META activations, required);
# 8: a cut bundle's view may be its value flattened (META cut_views: one dim), and its lanes
# may land on a run of its sink's rows (the others read none of the value); 9: ribbons
# (LANES lane0, sink_lanes: several cut bundles of one edge into one sink, each a run of
# the lanes one bundle would have) and BUNDLE_HALO (LANES: a cut bundle's lanes carry its
# sink rows' cores, the rows exchange the halo as META halos says: wsec.ir.halo); 10:
# BUNDLE_RELAY (LANES: a flat bundle's sink rows relay their boxes, the slice table's
# records from slice0 on, one per PE row, META relays its colors: wsec.ir.relay)

# header: magic, format version, flags, section count, crc32(header[:20] + table)
HEADER = struct.Struct("<8sIIII")
# one section-table entry: section id, crc32 of its bytes, offset, length
SECTION = struct.Struct("<IIQQ")
COUNT2 = struct.Struct("<II")  # (count, reserved) / (count_a, count_b) prefixes

META, STRINGS, LANES, SRAM, BLOBS = 1, 2, 3, 4, 5
SECTION_NAMES = {META: "META", STRINGS: "STRINGS", LANES: "LANES", SRAM: "SRAM",
                 BLOBS: "BLOBS"}
REQUIRED_SECTIONS = (META, STRINGS, LANES, SRAM, BLOBS)

# router port bits of the rx/tx masks of a route record (the fabric API's)
PORT_BITS = FABRIC_PORT_BITS  # N=1 E=2 S=4 W=8 RAMP=16

# LANES: one record per bundle (an edge's lanes to one sink, on one color:
# wsec.ir.lanes), then the waypoints of lane 0's path. sink: kernel index or
# -1 for the host; flags: BUNDLE_FROM_HOST, BUNDLE_TO_HOST, BUNDLE_CUT (lane i
# carries the box slices[slice0 + i] instead of its flat range), BUNDLE_OWNERS
# (with BUNDLE_CUT: no spine, lane i delivers to its landing row alone, the
# sink's owner row whose box it carries: cut "owners"); pitch: lane i runs
# i*pitch steps from lane 0 and serves pitch rows of the sink (wsec.ir.lanes);
# src_pitch (0: the pitch): the lanes' spacing before the path's last corner;
# lane0, sink_lanes: the bundle carries lanes lane0 .. lane0 + lanes - 1 of the
# sink_lanes its sink takes the value on (one bundle: 0 and its lanes; a cut
# routed as RIBBONS, wsec.ir.lanes: several bundles whose runs partition them).
# BUNDLE_HALO (with BUNDLE_CUT): the boxes are the sink's PE rows' cores and
# each row takes its halo from a partner row inside the sink: META `halos`
# names the bundle with [axis, period, depth] (wsec.ir.halo.Halo).
# BUNDLE_RELAY (a flat bundle into a kernel): its lanes carry the flat split and
# the sink's PEs relay what each row's box (slices[slice0 + py], one per
# unrotated PE row, over the bundle's cut view) needs beyond its lane, on the
# RELAY_COLORS colors META `relays` names (wsec.ir.relay).
BUNDLE_DTYPE = np.dtype([("edge", "<u4"), ("sink", "<i4"), ("color", "u1"), ("flags", "u1"),
                         ("src_pitch", "<u2"), ("lanes", "<u4"), ("axis", "i1", (2,)),
                         ("pitch", "<u2"), ("reach", "<u4"), ("point0", "<u4"),
                         ("npoints", "<u4"), ("slice0", "<u4"), ("lane0", "<u4"),
                         ("sink_lanes", "<u4")])
POINT_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2")])
# a cut bundle's lane box: [start, stop) per dim of the value (dims past its
# rank are 0:0)
CUT_DIMS = 6
SLICE_DTYPE = np.dtype([("start", "<u4", (CUT_DIMS,)), ("stop", "<u4", (CUT_DIMS,))])
# a kernel route template's entries (wsec.ir.templates), in offsets of the
# kernel's unrotated rectangle; META `templates[t]` says which slice is whose
TEMPLATE_DTYPE = np.dtype([("px", "<u2"), ("py", "<u2"), ("color", "u1"), ("rx", "u1"),
                           ("tx", "u1"), ("reserved", "u1")])
BUNDLE_FROM_HOST, BUNDLE_TO_HOST, BUNDLE_CUT, BUNDLE_OWNERS, BUNDLE_HALO = 1, 2, 4, 8, 16
BUNDLE_RELAY = 32
NO_BUNDLE = 0xFFFFFFFF  # a route entry of a kernel's template, not of a bundle

# The routers' configuration as the loader expands it from LANES and the
# kernels' templates (not stored): one entry per PE, color and route. For a
# bundle's entry: its edge, bundle and lane; for a template's: edge and
# bundle NO_BUNDLE, lane = the kernel's index.
ROUTE_DTYPE = np.dtype([("x", "<u2"), ("y", "<u2"), ("color", "u1"), ("rx", "u1"),
                        ("tx", "u1"), ("reserved", "u1"), ("edge", "<u4"), ("bundle", "<u4"),
                        ("lane", "<u4")])
REGION_DTYPE = np.dtype([("kernel", "<u4"), ("name", "<u4"), ("offset", "<u4"),
                         ("size", "<u4")])
MAX_RANK = 8  # weight tensors of rank <= 8 (the start/stop arrays below)
_SLICE = [("start", "<u4", (MAX_RANK,)), ("stop", "<u4", (MAX_RANK,))]
# How one weight is spread over a kernel's PEs (offsets px, py inside the
# kernel's *unrotated* rectangle): a tiling. Its x-runs cut [0, uw) and its
# y-runs cut [0, uh) into intervals; each tensor dimension takes its slice
# from the map itself (AXIS_CONST), from the PE's x-run (AXIS_X), its y-run
# (AXIS_Y), or the cell (AXIS_CELL). Cells are rectangles of (x-run, y-run)
# index pairs covering all of them once, each naming the blob every PE in it
# holds (a splat blob is valid for every PE of the cell whose slice has its
# element count).
AXIS_CONST, AXIS_X, AXIS_Y, AXIS_CELL = 0, 1, 2, 3
MAP_DTYPE = np.dtype([("kernel", "<u4"), ("weight", "<u2"), ("ndim", "u1"), ("reserved", "u1"),
                      ("axis", "u1", (MAX_RANK,)), ("nx", "<u4"), ("ny", "<u4"), ("run0", "<u4"),
                      ("cell0", "<u4"), ("ncells", "<u4"), ("reserved2", "<u4")] + _SLICE)
RUN_DTYPE = np.dtype([("p0", "<u2"), ("p1", "<u2"), ("reserved", "<u4")] + _SLICE)
CELL_DTYPE = np.dtype([("xr0", "<u4"), ("xr1", "<u4"), ("yr0", "<u4"), ("yr1", "<u4"),
                       ("blob", "<u4"), ("reserved", "<u4")] + _SLICE)
BLOB_DTYPE = np.dtype([("encoding", "u1"), ("dtype", "u1"), ("reserved", "<u2"),
                       ("reserved2", "<u4"), ("count", "<u8"), ("offset", "<u8"),
                       ("length", "<u8"), ("sha256", "S32")])

BLOB_RAW, BLOB_SPLAT = 0, 1
DTYPE_CODES = ("f16", "f32", "f64", "i8", "i16", "i32", "i64", "u8", "u16", "u32", "u64",
               "bool")
assert set(DTYPE_CODES) == set(DTYPES)


class FormatError(WsecError):
    """A section's bytes do not decode (the loader turns it into BinaryError)."""


ports_mask = mask_of
mask_ports = ports_of


def pe_of(rect: Rect, rotated: bool, px: int, py: int) -> tuple[int, int]:
    """Grid coordinates of the PE at offset (px, py) of a kernel's unrotated
    rectangle: a rotated kernel is placed transposed."""
    return (rect.x + py, rect.y + px) if rotated else (rect.x + px, rect.y + py)


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, ASCII only: equal objects, equal bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=_json_default).encode("ascii")


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, (tuple, set, frozenset)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    raise TypeError(f"cannot store {type(o).__name__} in META")


# --- decoded program ---------------------------------------------------------
@dataclass(frozen=True)
class Blob:
    """One deduplicated data blob: `count` elements of `dtype`, stored raw
    (little-endian) or as a splat (one element repeated)."""

    encoding: int
    dtype: str
    count: int
    payload: bytes = field(repr=False)

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize

    @property
    def nbytes(self) -> int:
        """Bytes the blob occupies once expanded in a PE's SRAM."""
        return self.count * self.itemsize

    def digest(self) -> bytes:
        h = hashlib.sha256(struct.pack("<BBQ", self.encoding, DTYPE_CODES.index(self.dtype),
                                       self.count))
        h.update(self.payload)
        return h.digest()

    def array(self) -> np.ndarray:
        """The elements, 1-D (a splat is expanded: use `value` for big ones)."""
        dt = DTYPES[self.dtype].newbyteorder("<")
        if self.encoding == BLOB_SPLAT:
            return np.full(self.count, np.frombuffer(self.payload, dt)[0], dtype=DTYPES[self.dtype])
        return np.frombuffer(self.payload, dt).astype(DTYPES[self.dtype])

    @property
    def value(self) -> float | int | bool:
        """The repeated element of a splat blob."""
        return np.frombuffer(self.payload[:self.itemsize],
                             DTYPES[self.dtype].newbyteorder("<"))[0].item()


@dataclass
class KernelInfo:
    """What the binary says about one kernel (META `kernels[i]`)."""

    name: str
    kind: str
    dims: dict[str, int]
    knobs: dict[str, int]
    rect: Rect
    rotated: bool
    cost: dict[str, int]
    origin: list[str]
    body: list[dict[str, Any]]  # {name, op, inputs, outputs, attrs}
    inputs: list[str]
    outputs: list[str]
    weights: list[str]  # const inputs in order: a weight record's `weight` indexes this
    template: int = -1  # META templates[i]: the kernel's own route template, -1 for none

    @property
    def unrotated_shape(self) -> tuple[int, int]:
        return (self.rect.h, self.rect.w) if self.rotated else (self.rect.w, self.rect.h)

    def to_json(self) -> dict[str, Any]:
        r = self.rect
        return {"name": self.name, "kind": self.kind, "dims": self.dims, "knobs": self.knobs,
                "rect": [r.x, r.y, r.w, r.h], "rotated": bool(self.rotated), "cost": self.cost,
                "origin": self.origin, "body": self.body, "inputs": self.inputs,
                "outputs": self.outputs, "weights": self.weights, "template": self.template}

    @staticmethod
    def from_json(d: dict[str, Any]) -> KernelInfo:
        x, y, w, h = (int(v) for v in d["rect"])
        return KernelInfo(str(d["name"]), str(d["kind"]), dict(d["dims"]), dict(d["knobs"]),
                          Rect(x, y, w, h), bool(d["rotated"]), dict(d["cost"]),
                          [str(o) for o in d["origin"]], list(d["body"]),
                          [str(i) for i in d["inputs"]], [str(o) for o in d["outputs"]],
                          [str(w) for w in d["weights"]], int(d.get("template", -1)))


@dataclass
class EdgeInfo:
    """A dataflow edge (META `edges[i]`); bundle records point at it by index."""

    value: str
    src: str
    dsts: list[str]
    bytes_per_sample: int

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "src": self.src, "dsts": self.dsts,
                "bytes": self.bytes_per_sample}

    @staticmethod
    def from_json(d: dict[str, Any]) -> EdgeInfo:
        return EdgeInfo(str(d["value"]), str(d["src"]), [str(s) for s in d["dsts"]],
                        int(d["bytes"]))


@dataclass(frozen=True)
class SectionInfo:
    id: int
    offset: int
    length: int
    crc32: int

    @property
    def name(self) -> str:
        return SECTION_NAMES.get(self.id, f"#{self.id}")


@dataclass
class Program:
    """A decoded wsec binary. `info` holds the rest of META: compiler_version,
    model_hash, source, mode, values (name -> type text), inputs, outputs,
    host_io, summary, attrs."""

    target: Target
    kernels: list[KernelInfo]
    edges: list[EdgeInfo]
    bundles: np.ndarray  # BUNDLE_DTYPE, by edge then sink
    points: np.ndarray  # POINT_DTYPE: bundle b's path is points[point0:point0 + npoints]
    templates: np.ndarray  # TEMPLATE_DTYPE: META templates[t] owns entries [entry0, +n)
    regions: np.ndarray  # REGION_DTYPE, sorted by (kernel, offset)
    wmaps: np.ndarray  # MAP_DTYPE, one per (kernel, weight), sorted
    wruns: np.ndarray  # RUN_DTYPE: each map's nx x-runs then its ny y-runs, from run0
    wcells: np.ndarray  # CELL_DTYPE: each map's ncells cells, from cell0
    blobs: list[Blob]
    strings: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    version: int = FORMAT_VERSION
    flags: int = 0
    sections: list[SectionInfo] = field(default_factory=list)  # set by the loader
    base_dir: str = ""  # the binary's directory (set by the loader): stream files resolve here
    # the routers' configuration, expanded from LANES and the templates (ROUTE_DTYPE,
    # sorted by (x, y, color)); set by `wsec.backends.lanes.expand_routes`
    routes: np.ndarray = field(default_factory=lambda: np.zeros(0, ROUTE_DTYPE))
    slices: np.ndarray = field(default_factory=lambda: np.zeros(0, SLICE_DTYPE))  # LANES

    def lane_boxes(self, bi: int) -> np.ndarray | None:
        """(lanes, 2, ndim) boxes the lanes of cut bundle `bi` carry; None
        for a bundle whose lanes carry the flat split (lane_slices)."""
        b = self.bundles[bi]
        if not int(b["flags"]) & BUNDLE_CUT:
            return None
        nd = len(self.lane_view(bi))
        rec = self.slices[int(b["slice0"]):int(b["slice0"]) + int(b["lanes"])]
        return np.stack([rec["start"][:, :nd], rec["stop"][:, :nd]], axis=1).astype(np.int64)

    def halo(self, bi: int) -> Halo | None:
        """How the sink rows of bundle `bi` exchange halos (META `halos`),
        None where its lanes carry their rows' whole boxes."""
        if not int(self.bundles[bi]["flags"]) & BUNDLE_HALO:
            return None
        axis, period, depth = (int(v) for v in self.info.get("halos", {})[str(bi)])
        return Halo(axis, period, depth)

    def relay_boxes(self, bi: int) -> np.ndarray | None:
        """(uh, 2, ndim): per PE row of its sink the box bundle `bi`'s relay
        brings it (BUNDLE_RELAY), None for a bundle with no relay."""
        b = self.bundles[bi]
        if not int(b["flags"]) & BUNDLE_RELAY:
            return None
        nd = max(1, len(self.lane_view(bi)))  # a scalar's boxes: of its one element
        uh = self.kernels[int(b["sink"])].unrotated_shape[1]
        rec = self.slices[int(b["slice0"]):int(b["slice0"]) + uh]
        return np.stack([rec["start"][:, :nd], rec["stop"][:, :nd]], axis=1).astype(np.int64)

    def lane_view(self, bi: int) -> tuple[int, ...]:
        """The shape bundle `bi`'s lane boxes are over: its value's, or
        where META `cut_views` names the bundle, that view of it (a reshape
        splitting one axis: a grouped conv's channels as (G, C/G))."""
        view = self.info.get("cut_views", {}).get(str(bi))
        if view is not None:
            return tuple(int(n) for n in view)
        return tuple(type_shape(self.info["values"][self.edges[int(self.bundles[bi]["edge"])]
                                                    .value]))

    def kernel_index(self, name: str) -> int:
        for i, k in enumerate(self.kernels):
            if k.name == name:
                return i
        raise KeyError(f"no kernel '{name}' in the program")

    def kernel_regions(self, ki: int) -> list[SramRegion]:
        rows = self.regions[self.regions["kernel"] == ki]
        return [SramRegion(self.strings[int(r["name"])], int(r["offset"]), int(r["size"]))
                for r in rows]

    def kernel_sram(self, ki: int) -> int:
        """Bytes of SRAM per PE the kernel's region map reaches."""
        rows = self.regions[self.regions["kernel"] == ki]
        return int((rows["offset"].astype(np.int64) + rows["size"]).max()) if rows.size else 0

    def weight_map(self, ki: int, wi: int) -> np.void:
        sel = np.nonzero((self.wmaps["kernel"] == ki) & (self.wmaps["weight"] == wi))[0]
        if not sel.size:
            raise KeyError(f"kernel #{ki} has no map for weight {wi}")
        return self.wmaps[sel[0]]

    def weight_blocks(self, ki: int, wi: int) -> list[tuple[int, int, int, int, tuple[slice, ...],
                                                            int]]:
        """The tiling expanded: (x0, x1, y0, y1, slice, blob) per (x-run,
        y-run) pair, in PE offsets of the unrotated rectangle."""
        m = self.weight_map(ki, wi)
        n, axis = int(m["ndim"]), m["axis"]
        r0, nx, ny = int(m["run0"]), int(m["nx"]), int(m["ny"])
        xr, yr = self.wruns[r0:r0 + nx], self.wruns[r0 + nx:r0 + nx + ny]
        out = []
        for c in self.wcells[int(m["cell0"]):int(m["cell0"]) + int(m["ncells"])]:
            for j in range(int(c["yr0"]), int(c["yr1"])):
                for i in range(int(c["xr0"]), int(c["xr1"])):
                    src = [m, xr[i], yr[j], c]
                    sl = tuple(slice(int(src[a]["start"][d]), int(src[a]["stop"][d]))
                               for d, a in enumerate(axis[:n]))
                    out.append((int(xr[i]["p0"]), int(xr[i]["p1"]), int(yr[j]["p0"]),
                                int(yr[j]["p1"]), sl, int(c["blob"])))
        return out

    def assemble_weight(self, ki: int, wi: int) -> np.ndarray:
        """The weight tensor as the PEs hold it (device dtype), rebuilt from
        its shards; elements no PE holds are NaN (0 for integers)."""
        k = self.kernels[ki]
        shape = tuple(type_shape(self.info["values"][k.weights[wi]]))
        blocks = self.weight_blocks(ki, wi)
        dt = DTYPES[self.blobs[blocks[0][5]].dtype] if blocks else np.float16
        out = np.full(shape, np.nan if np.issubdtype(dt, np.floating) else 0, dtype=dt)
        for *_, sl, bi in blocks:
            out[sl] = self.blobs[bi].array().reshape(out[sl].shape)
        return out

    def weight_pe_bytes(self) -> int:
        """Bytes of weight shards over all PEs (what the blobs expand to)."""
        total = 0
        nbytes = np.array([b.nbytes for b in self.blobs] or [0], np.int64)
        width = (self.wruns["p1"].astype(np.int64) - self.wruns["p0"])
        cum = np.concatenate([[0], np.cumsum(width)])
        for m in self.wmaps:
            r0, nx, c0 = int(m["run0"]), int(m["nx"]), int(m["cell0"])
            c = self.wcells[c0:c0 + int(m["ncells"])]
            xs = cum[r0 + c["xr1"].astype(np.int64)] - cum[r0 + c["xr0"].astype(np.int64)]
            ys = cum[r0 + nx + c["yr1"].astype(np.int64)] - cum[r0 + nx + c["yr0"].astype(np.int64)]
            total += int((xs * ys * nbytes[c["blob"]]).sum())
        return total

    def host_kernels(self) -> list[str]:
        return [HOST] + [k.name for k in self.kernels]


def type_shape(text: str) -> list[int]:
    """Shape of a type written `f32[1,3,224,224]`."""
    inner = text[text.index("[") + 1:text.rindex("]")]
    return [int(d) for d in inner.split(",")] if inner.strip() else []


def type_dtype(text: str) -> str:
    return text[:text.index("[")]


# --- section codecs ----------------------------------------------------------
def encode_meta(p: Program) -> bytes:
    meta = dict(p.info)
    meta.update({"format_version": p.version, "target": p.target.to_dict(),
                 "kernels": [k.to_json() for k in p.kernels],
                 "edges": [e.to_json() for e in p.edges]})
    return canonical_json(meta)


def decode_meta(data: bytes) -> tuple[Target, list[KernelInfo], list[EdgeInfo], dict[str, Any]]:
    meta = json.loads(data.decode("ascii"))
    if not isinstance(meta, dict):
        raise FormatError("META is not a JSON object")
    target = Target(**meta.pop("target"))
    kernels = [KernelInfo.from_json(k) for k in meta.pop("kernels")]
    edges = [EdgeInfo.from_json(e) for e in meta.pop("edges")]
    meta.pop("format_version", None)
    for key, typ in (("values", dict), ("consts", dict), ("host_io", dict), ("inputs", list),
                     ("outputs", list), ("summary", dict), ("attrs", dict)):
        if not isinstance(meta.setdefault(key, typ()), typ):
            raise FormatError(f"'{key}' must be a JSON {typ.__name__.replace('dict', 'object')}")
    if not all(isinstance(v, str) for v in meta["values"].values()):
        raise FormatError("'values' must map value names to type strings")
    for d in meta["host_io"].get("inputs", []) + meta["host_io"].get("outputs", []):
        d["pes"] = [[int(x), int(y)] for x, y in d["pes"]]
        str(d["value"])
    return target, kernels, edges, meta


def encode_strings(strings: list[str]) -> bytes:
    data = [s.encode("utf-8") for s in strings]
    ends = np.cumsum([len(d) for d in data], dtype=np.int64).astype("<u4")
    return struct.pack("<I", len(data)) + ends.tobytes() + b"".join(data)


def decode_strings(data: bytes) -> list[str]:
    (n,) = struct.unpack_from("<I", data)
    need = 4 + 4 * n
    if len(data) < need:
        raise FormatError(f"{n} strings need an offset table of {4 * n} bytes, "
                          f"section has {len(data) - 4}")
    ends = np.frombuffer(data, "<u4", n, 4).astype(np.int64)
    blob = data[need:]
    if n and (np.any(np.diff(ends) < 0) or ends[-1] != len(blob)):
        raise FormatError("string offsets do not match the string data")
    starts = np.concatenate([[0], ends[:-1]]) if n else ends
    return [blob[int(s):int(e)].decode("utf-8") for s, e in zip(starts, ends, strict=True)]


def _records(data: bytes, offset: int, n: int, dtype: np.dtype, what: str) -> np.ndarray:
    if offset + n * dtype.itemsize > len(data):
        raise FormatError(f"{n} {what} records need {n * dtype.itemsize} bytes, "
                          f"only {len(data) - offset} present")
    return np.frombuffer(data, dtype, n, offset).copy()


def encode_lanes(bundles: np.ndarray, points: np.ndarray, templates: np.ndarray,
                 slices: np.ndarray) -> bytes:
    return (COUNT2.pack(len(bundles), len(points)) + COUNT2.pack(len(templates), len(slices))
            + np.ascontiguousarray(bundles, BUNDLE_DTYPE).tobytes()
            + np.ascontiguousarray(points, POINT_DTYPE).tobytes()
            + np.ascontiguousarray(templates, TEMPLATE_DTYPE).tobytes()
            + np.ascontiguousarray(slices, SLICE_DTYPE).tobytes())


def decode_lanes(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    if len(data) < 2 * COUNT2.size:
        raise FormatError("LANES section is shorter than its counts")
    nb, npt = COUNT2.unpack_from(data)
    nt, ns = COUNT2.unpack_from(data, COUNT2.size)
    head = 2 * COUNT2.size
    sizes = (nb * BUNDLE_DTYPE.itemsize, npt * POINT_DTYPE.itemsize,
             nt * TEMPLATE_DTYPE.itemsize, ns * SLICE_DTYPE.itemsize)
    _exact(data, head + sum(sizes), f"{nb} bundle, {npt} point, {nt} template and {ns} slice "
           "records")
    b = _records(data, head, nb, BUNDLE_DTYPE, "bundle")
    pts = _records(data, head + sizes[0], npt, POINT_DTYPE, "point")
    tpl = _records(data, head + sizes[0] + sizes[1], nt, TEMPLATE_DTYPE, "template")
    sl = _records(data, head + sum(sizes[:3]), ns, SLICE_DTYPE, "slice")
    return b, pts, tpl, sl


_SRAM_HEAD = struct.Struct("<IIII")


def encode_sram(p: Program) -> bytes:
    parts = [(p.regions, REGION_DTYPE), (p.wmaps, MAP_DTYPE), (p.wruns, RUN_DTYPE),
             (p.wcells, CELL_DTYPE)]
    return (_SRAM_HEAD.pack(*(len(a) for a, _ in parts))
            + b"".join(np.ascontiguousarray(a, dt).tobytes() for a, dt in parts))


def decode_sram(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    counts = _SRAM_HEAD.unpack_from(data)
    dts = (REGION_DTYPE, MAP_DTYPE, RUN_DTYPE, CELL_DTYPE)
    need = _SRAM_HEAD.size + sum(n * dt.itemsize for n, dt in zip(counts, dts, strict=True))
    _exact(data, need, "{} regions, {} weight maps, {} runs and {} cells".format(*counts))
    out, off = [], _SRAM_HEAD.size
    for n, dt, what in zip(counts, dts, ("region", "map", "run", "cell"), strict=True):
        out.append(_records(data, off, n, dt, what))
        off += n * dt.itemsize
    return out[0], out[1], out[2], out[3]


def encode_blobs(blobs: list[Blob]) -> bytes:
    table = np.zeros(len(blobs), BLOB_DTYPE)
    pos = 0
    for i, b in enumerate(blobs):
        table[i] = (b.encoding, DTYPE_CODES.index(b.dtype), 0, 0, b.count, pos,
                    len(b.payload), b.digest())
        pos += len(b.payload)
    return COUNT2.pack(len(blobs), 0) + table.tobytes() + b"".join(b.payload for b in blobs)


def decode_blobs(data: bytes) -> list[Blob]:
    n, _ = COUNT2.unpack_from(data)
    table = _records(data, COUNT2.size, n, BLOB_DTYPE, "blob")
    base = COUNT2.size + n * BLOB_DTYPE.itemsize
    size = len(data) - base
    out = []
    for i, r in enumerate(table):
        off, ln, enc, code = int(r["offset"]), int(r["length"]), int(r["encoding"]), int(r["dtype"])
        if off + ln > size:
            raise FormatError(f"blob {i} (offset {off}, length {ln}) extends past the "
                              f"blob data ({size} bytes)")
        if enc not in (BLOB_RAW, BLOB_SPLAT) or code >= len(DTYPE_CODES):
            raise FormatError(f"blob {i} has unknown encoding {enc} or dtype code {code}")
        b = Blob(enc, DTYPE_CODES[code], int(r["count"]), data[base + off:base + off + ln])
        want = b.itemsize if enc == BLOB_SPLAT else b.nbytes
        if ln != want:
            raise FormatError(f"blob {i} holds {ln} bytes but its {b.count} x {b.dtype} "
                              f"{'splat' if enc == BLOB_SPLAT else 'raw'} encoding needs {want}")
        if b.digest() != bytes(r["sha256"]).ljust(32, b"\0"):
            raise FormatError(f"blob {i} does not match its sha256")
        out.append(b)
    return out


def _exact(data: bytes, need: int, what: str) -> None:
    if len(data) != need:
        raise FormatError(f"{what} need {need} bytes, section has {len(data)}")


def section_crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def pack_file(sections: list[tuple[int, bytes]], version: int = FORMAT_VERSION,
              flags: int = 0) -> bytes:
    """Header + section table + the sections, back to back in table order."""
    pos = HEADER.size + SECTION.size * len(sections)
    table = b""
    for sid, data in sections:
        table += SECTION.pack(sid, section_crc(data), pos, len(data))
        pos += len(data)
    head = HEADER.pack(MAGIC, version, flags, len(sections), 0)[:HEADER.size - 4]
    crc = section_crc(head + table)
    return head + struct.pack("<I", crc) + table + b"".join(d for _, d in sections)
