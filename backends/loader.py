"""The loader: bytes -> validated `Program`, the one reader every tool shares.

A device must never be configured from a damaged or inconsistent file, and
a person must be told in one line what is wrong with it. So the loader
checks the layers in order — magic, version, sizes (truncation), checksums,
section decoding, then the program's meaning (grid bounds, overlapping
rectangles, SRAM overflow, route conflicts, dangling references) — and
turns every failure, including struct/JSON decoding errors, into a
`BinaryError` with a one-line message. The semantic rules are also run by
the emitter before it writes (`validate_program`).
"""

from __future__ import annotations

import os
import struct

import numpy as np
from wsec.ir.errors import WsecError
from wsec.ir.fabric import LINK_PLANES, Fabric
from wsec.ir.graph import HOST
from wsec.ir.kernels import KINDS
from wsec.ir.lanes import endpoints
from wsec.ir.metrics import first_overlap, link_loads

from .format import (
    AXIS_CELL,
    AXIS_CONST,
    AXIS_X,
    AXIS_Y,
    BLOBS,
    FORMAT_VERSION,
    HEADER,
    LANES,
    MAGIC,
    META,
    NO_BUNDLE,
    REQUIRED_SECTIONS,
    SECTION,
    SECTION_NAMES,
    SRAM,
    STRINGS,
    FormatError,
    KernelInfo,
    Program,
    SectionInfo,
    decode_blobs,
    decode_lanes,
    decode_meta,
    decode_sram,
    decode_strings,
    mask_ports,
    section_crc,
    type_shape,
)
from .lanes import check_records, conflicting, expand_routes, to_bundle


class BinaryError(WsecError):
    """The file is not a valid wsec binary; the message says why, in one line."""


def load_binary(src: str | bytes | os.PathLike[str], validate: bool = True,
                base_dir: str | None = None, check_files: bool = True) -> Program:
    """Read, check and decode a wsec binary (a path or the bytes themselves).
    A stream-mode binary's weight files resolve against `base_dir` (default:
    the binary's directory, or the working directory for bytes) and, with
    `check_files`, must exist and match their fingerprints."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
    else:
        base_dir = base_dir if base_dir is not None else os.path.dirname(
            os.path.abspath(os.fspath(src)))
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise BinaryError(f"cannot read '{os.fspath(src)}': {e.strerror or e}") from None
    p = decode_program(data)
    p.base_dir = base_dir if base_dir is not None else os.getcwd()
    if validate:
        from .loader_meta import check_meta

        check_meta(p)  # what `run` relies on, before any rule indexes into it
        try:
            validate_program(p)
        except BinaryError:
            raise
        except Exception as e:  # a rule tripped over malformed content
            raise BinaryError(f"inconsistent program ({type(e).__name__}: {e})") from None
        if check_files and is_stream(p):
            from .weight_stream import StreamError, check_weight_files

            try:
                check_weight_files(p)
            except StreamError as e:
                raise BinaryError(str(e)) from None
    return p


def is_stream(p: Program) -> bool:
    return "stream" in str(p.info.get("mode", ""))


def decode_program(data: bytes) -> Program:
    """Container checks (magic, version, truncation, checksums) and decoding."""
    n = len(data)
    if n < len(MAGIC) and MAGIC.startswith(data):
        raise BinaryError(f"truncated file: the header needs {HEADER.size} bytes, "
                          f"the file has {n}")
    if data[:len(MAGIC)] != MAGIC:
        raise BinaryError("not a wsec binary (bad magic)")
    if n < HEADER.size:
        raise BinaryError(f"truncated file: the header needs {HEADER.size} bytes, "
                          f"the file has {n}")
    _, version, flags, count, crc = HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise BinaryError(f"format version {version} is not supported "
                          f"(this wsec reads version {FORMAT_VERSION})")
    table_end = HEADER.size + count * SECTION.size
    if table_end > n:
        raise BinaryError(f"truncated file: the section table ({count} entries) needs "
                          f"{table_end} bytes, the file has {n}")
    got = section_crc(data[:HEADER.size - 4] + data[HEADER.size:table_end])
    if got != crc:
        raise BinaryError(f"checksum mismatch in the header (stored {crc:#010x}, computed "
                          f"{got:#010x}): the file is corrupted")
    sections = []
    for i in range(count):
        sid, crc32, offset, length = SECTION.unpack_from(data, HEADER.size + i * SECTION.size)
        sections.append(SectionInfo(sid, offset, length, crc32))
    for s in sections:
        if s.offset + s.length > n:
            raise BinaryError(f"truncated file: section {s.name} (offset {s.offset}, length "
                              f"{s.length}) extends past the end of the file ({n} bytes)")
    end = max((s.offset + s.length for s in sections), default=table_end)
    if end < n:
        raise BinaryError(f"{n - end} unexpected bytes after the last section (file is {n} "
                          f"bytes, sections end at {end})")
    by_id: dict[int, bytes] = {}
    for s in sections:
        body = data[s.offset:s.offset + s.length]
        got = section_crc(body)
        if got != s.crc32:
            raise BinaryError(f"checksum mismatch in section {s.name} (stored {s.crc32:#010x}, "
                              f"computed {got:#010x}): the file is corrupted")
        if s.id in by_id:
            raise BinaryError(f"section {s.name} appears twice in the section table")
        by_id[s.id] = body
    for sid in REQUIRED_SECTIONS:
        if sid not in by_id:
            raise BinaryError(f"section {SECTION_NAMES[sid]} is missing")
    try:
        target, kernels, edges, info = _decode(META, decode_meta, by_id)
        strings = _decode(STRINGS, decode_strings, by_id)
        bundles, points, templates, slices = _decode(LANES, decode_lanes, by_id)
        regions, wmaps, wruns, wcells = _decode(SRAM, decode_sram, by_id)
        blobs = _decode(BLOBS, decode_blobs, by_id)
    except BinaryError:
        raise
    return Program(target, kernels, edges, bundles, points, templates, regions, wmaps, wruns,
                   wcells, blobs, strings, info, version, flags, sections, slices=slices)


def _decode(sid: int, fn, by_id: dict[int, bytes]):  # type: ignore[no-untyped-def]
    try:
        return fn(by_id[sid])
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error,
            UnicodeDecodeError, OverflowError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if isinstance(e, KeyError):
            msg = f"missing field {e}"
        raise BinaryError(f"malformed section {SECTION_NAMES[sid]}: {msg}") from None
    except Exception as e:  # FormatError and anything else a decoder raises
        raise BinaryError(f"malformed section {SECTION_NAMES[sid]}: {e}") from None


# --- semantic validation -----------------------------------------------------
def validate_program(p: Program) -> None:
    """The program's meaning: every rule of docs/binary-format.md section 6."""
    t = p.target
    W, H = t.width, t.height
    if W < 1 or H < 1:
        raise BinaryError(f"target '{t.name}' has an empty grid {W}x{H}")
    names: set[str] = set()
    for k in p.kernels:
        if k.name in names:
            raise BinaryError(f"two kernels are named '{k.name}'")
        names.add(k.name)
        if k.kind not in KINDS:
            raise BinaryError(f"kernel '{k.name}' has unknown kind '{k.kind}' (this wsec knows: "
                              f"{', '.join(sorted(KINDS)) or 'none'})")
        r = k.rect
        if r.x < 0 or r.y < 0 or r.w < 1 or r.h < 1 or r.x1 > W or r.y1 > H:
            raise BinaryError(f"kernel '{k.name}' rectangle [{r.x}, {r.y}, {r.w}, {r.h}] lies "
                              f"outside the {W}x{H} grid")
    if "stream" not in str(p.info.get("mode", "")):
        _check_overlaps(p)
    _check_edges(p, names)
    _check_routes(p)
    _check_sram(p)
    if is_stream(p):  # weights arrive per phase: stream descriptors instead of shard maps
        from .activations import ActivationError, check_activations
        from .weight_stream import StreamError, check_streams

        try:
            check_streams(p)
            check_activations(p)
        except (StreamError, ActivationError) as e:
            raise BinaryError(str(e)) from None
    else:
        _check_weights(p)
    for io in p.info.get("host_io", {}).get("inputs", []) + \
            p.info.get("host_io", {}).get("outputs", []):
        for x, y in io.get("pes", []):
            if not (0 <= x < W and 0 <= y < H):
                raise BinaryError(f"host I/O of %{io.get('value')} uses PE ({x}, {y}) outside "
                                  f"the {W}x{H} grid")


def _check_overlaps(p: Program) -> None:
    pair = first_overlap([k.rect for k in p.kernels], p.target.width, p.target.height)
    if pair is not None:
        ka, kb = p.kernels[pair[0]], p.kernels[pair[1]]
        raise BinaryError(f"kernels '{ka.name}' {_rect(ka)} and '{kb.name}' {_rect(kb)} "
                          f"overlap")


def _rect(k: object) -> str:
    r = k.rect  # type: ignore[attr-defined]
    return f"[{r.x}, {r.y}, {r.w}, {r.h}]"


def _check_edges(p: Program, names: set[str]) -> None:
    for e in p.edges:
        for end in [e.src, *e.dsts]:
            if end != HOST and end not in names:
                raise BinaryError(f"edge %{e.value} names unknown kernel '{end}'")


def _check_routes(p: Program) -> None:
    """Bundles and templates are well formed; expanded, they stay on the grid,
    start in their source and land in their sink, give each PE and color one
    route, and load no link beyond the binary's stated cycles per sample."""
    try:
        check_records(p)
    except FormatError as e:
        raise BinaryError(str(e)) from None
    for k in p.kernels:
        if k.template >= 0:
            temps = p.info.get("templates", [])
            if k.template >= len(temps):
                raise BinaryError(f"kernel '{k.name}' names route template #{k.template}; the "
                                  f"program has {len(temps)}")
            t = temps[k.template]
            if (int(t["w"]), int(t["h"])) != k.unrotated_shape:
                raise BinaryError(f"kernel '{k.name}' occupies {k.unrotated_shape} PEs but its "
                                  f"route template is for {t['w']}x{t['h']}")
    _check_lane_ends(p)
    p.routes = expand_routes(p)
    r = p.routes
    if not r.size:
        return
    W, H = p.target.width, p.target.height
    bad = np.nonzero((r["x"] >= W) | (r["y"] >= H))[0]
    if bad.size:
        b = r[bad[0]]
        raise BinaryError(f"route record at PE ({b['x']}, {b['y']}) lies outside the {W}x{H} grid")
    s = r  # sorted by (x, y, color)
    dup = np.nonzero((s["x"][1:] == s["x"][:-1]) & (s["y"][1:] == s["y"][:-1])
                     & (s["color"][1:] == s["color"][:-1]))[0]
    dup = dup[conflicting(p, dup, dup + 1, s)]
    if dup.size:
        a, b = s[dup[0]], s[dup[0] + 1]
        raise BinaryError(f"two routes on color {a['color']} at PE ({a['x']}, {a['y']}): "
                          f"{_owner(p, a)} ({_ports(a)}) and {_owner(p, b)} ({_ports(b)})")
    _check_capacity(p)


def _owner(p: Program, rec: np.void) -> str:
    if int(rec["bundle"]) == NO_BUNDLE:
        return f"the route template of kernel '{p.kernels[int(rec['lane'])].name}'"
    e = p.edges[int(rec["edge"])]
    return f"lane {int(rec['lane'])} of edge %{e.value} (#{int(rec['edge'])})"


def _check_lane_ends(p: Program) -> None:
    """Each bundle's lanes start inside its source kernel (or on the West
    edge, from the host) and land inside its sink (or on the East edge)."""
    fabric = Fabric.of(p.target)
    index = {k.name: i for i, k in enumerate(p.kernels)}
    for bi, r in enumerate(p.bundles):
        b = to_bundle(p, bi)
        e = p.edges[int(r["edge"])]
        if b.sink not in e.dsts:
            raise BinaryError(f"bundle #{bi} of edge %{e.value} goes to '{b.sink}', which is not "
                              f"one of the edge's destinations {e.dsts}")
        src, land = endpoints(b)
        for pts, who, host_x, what in ((src, e.src, fabric.host_input_x, "starts"),
                                       (land, b.sink, fabric.host_output_x, "lands")):
            if who == HOST:
                ok = pts[:, 0] == host_x
                where = f"the host's {'West' if what == 'starts' else 'East'} edge"
            else:
                rc = p.kernels[index[who]].rect
                ok = ((pts[:, 0] >= rc.x) & (pts[:, 0] < rc.x1) & (pts[:, 1] >= rc.y)
                      & (pts[:, 1] < rc.y1))
                where = f"kernel '{who}' [{rc.x}, {rc.y}, {rc.w}, {rc.h}]"
            if not ok.all():
                i = int(np.argmin(ok))
                raise BinaryError(f"lane {i} of edge %{e.value} (bundle #{bi}, color {b.color}) "
                                  f"{what} at PE ({int(pts[i, 0])}, {int(pts[i, 1])}), outside "
                                  f"{where}")


def _check_capacity(p: Program) -> None:
    """No link or RAMP carries more wavelets per sample than the binary says
    a sample takes (its realised cycles per sample: one wavelet per cycle)."""
    cap = int(p.info.get("attrs", {}).get("realised_cycles", 0) or 0)
    if cap <= 0:
        return
    from .inspect import program_routes

    load = link_loads(program_routes(p), Fabric.of(p.target))
    top = int(load.max(initial=0))
    if top > cap:
        y, x, d = np.unravel_index(int(np.argmax(load)), load.shape)
        raise BinaryError(f"link ({int(x)}, {int(y)}) {LINK_PLANES[int(d)]} carries {top} "
                          f"wavelets per sample, more than the {cap} cycles per sample the "
                          f"binary states")


def _ports(rec: np.void) -> str:
    return (f"rx {'+'.join(mask_ports(int(rec['rx']))) or '-'} "
            f"tx {'+'.join(mask_ports(int(rec['tx']))) or '-'}")


def _check_sram(p: Program) -> None:
    g = p.regions
    if not g.size:
        return
    bad = np.nonzero(g["kernel"] >= len(p.kernels))[0]
    if bad.size:
        raise BinaryError(f"SRAM region record {bad[0]} names kernel {g['kernel'][bad[0]]} but "
                          f"the program has {len(p.kernels)} kernels")
    bad = np.nonzero(g["name"] >= len(p.strings))[0]
    if bad.size:
        raise BinaryError(f"SRAM region record {bad[0]} names string {g['name'][bad[0]]} but "
                          f"the string table has {len(p.strings)} entries")
    end = g["offset"].astype(np.int64) + g["size"]
    bad = np.nonzero(end > p.target.sram_bytes)[0]
    if bad.size:
        i = int(bad[0])
        k = p.kernels[int(g["kernel"][i])]
        raise BinaryError(f"kernel '{k.name}' needs {int(end[i])} bytes of SRAM per PE (region "
                          f"'{p.strings[int(g['name'][i])]}' at offset {g['offset'][i]}, "
                          f"{g['size'][i]} bytes) but a {p.target.name} PE has "
                          f"{p.target.sram_bytes}: {int(end[i]) - p.target.sram_bytes} bytes "
                          f"over")


def _check_weights(p: Program) -> None:
    """Every kernel weight has one map; its runs tile the kernel's PEs, its
    cells cover every (x-run, y-run) pair once, slices are in bounds and each
    cell's blob has as many elements as its PEs' slices."""
    nk, nb, t = len(p.kernels), len(p.blobs), p.target
    seen: set[tuple[int, int]] = set()
    bcount = np.array([b.count for b in p.blobs] or [0], np.int64)
    bbytes = np.array([b.nbytes for b in p.blobs] or [0], np.int64)
    for mi, m in enumerate(p.wmaps):
        ki, wi = int(m["kernel"]), int(m["weight"])
        if ki >= nk:
            raise BinaryError(f"weight map {mi} names kernel {ki} but the program has {nk} "
                              f"kernels")
        k = p.kernels[ki]
        if wi >= len(k.weights):
            raise BinaryError(f"weight map {mi} names weight {wi} of kernel '{k.name}', which "
                              f"has {len(k.weights)} weights")
        if (ki, wi) in seen:
            raise BinaryError(f"kernel '{k.name}': two weight maps for %{k.weights[wi]}")
        seen.add((ki, wi))
        _check_map(p, m, k, wi, bcount, bbytes, nb, t.sram_bytes)
    for ki, k in enumerate(p.kernels):
        for wi, wn in enumerate(k.weights):
            if (ki, wi) not in seen:
                raise BinaryError(f"kernel '{k.name}' has no weight map for %{wn}")


def _check_map(p: Program, m: np.void, k: KernelInfo, wi: int, bcount: np.ndarray,
               bbytes: np.ndarray, nb: int, sram: int) -> None:
    wn = k.weights[wi]
    where = f"kernel '{k.name}', weight %{wn}"
    ty = str(p.info.get("values", {}).get(wn, "?[]"))
    shape = np.array(type_shape(ty), np.int64)
    n = int(m["ndim"])
    axes = m["axis"][:n].astype(np.int64)
    if n != shape.size or np.any(axes > AXIS_CELL):
        raise BinaryError(f"{where}: the weight map describes {n} dims with axes "
                          f"{axes.tolist()} but the weight is {ty}")
    r0, nx, ny = int(m["run0"]), int(m["nx"]), int(m["ny"])
    c0, nc = int(m["cell0"]), int(m["ncells"])
    if r0 + nx + ny > len(p.wruns) or c0 + nc > len(p.wcells) or nx < 1 or ny < 1:
        raise BinaryError(f"{where}: the weight map's runs [{r0}, +{nx}+{ny}) or cells "
                          f"[{c0}, +{nc}) exceed the tables ({len(p.wruns)} runs, "
                          f"{len(p.wcells)} cells)")
    uw, uh = k.unrotated_shape
    lengths = []
    for runs, size, ax, what in ((p.wruns[r0:r0 + nx], uw, AXIS_X, "columns"),
                                 (p.wruns[r0 + nx:r0 + nx + ny], uh, AXIS_Y, "rows")):
        p0, p1 = runs["p0"].astype(np.int64), runs["p1"].astype(np.int64)
        if p0[0] != 0 or p1[-1] != size or np.any(p0 >= p1) or np.any(p0[1:] != p1[:-1]):
            raise BinaryError(f"{where}: the weight map's runs do not tile the kernel's {size} "
                              f"PE {what}")
        lengths.append(_part(runs, axes, ax, shape, where))
    lx, ly = lengths
    lc = int(_part(m[None], axes, AXIS_CONST, shape, where)[0])
    cells = p.wcells[c0:c0 + nc]
    x0, x1, y0, y1 = (cells[f].astype(np.int64) for f in ("xr0", "xr1", "yr0", "yr1"))
    bad = np.nonzero((x0 >= x1) | (x1 > nx) | (y0 >= y1) | (y1 > ny))[0]
    if bad.size:
        raise BinaryError(f"{where}: weight cell {bad[0]} spans runs outside the map's {nx}x{ny}")
    bi = cells["blob"].astype(np.int64)
    bad = np.nonzero(bi >= nb)[0]
    if bad.size:
        raise BinaryError(f"{where}: weight cell {bad[0]} names blob {bi[bad[0]]} but the file "
                          f"has {nb} blobs")
    cover = np.zeros((ny + 1, nx + 1), np.int64)
    np.add.at(cover, (y0, x0), 1)
    np.add.at(cover, (y0, x1), -1)
    np.add.at(cover, (y1, x0), -1)
    np.add.at(cover, (y1, x1), 1)
    if np.any(cover.cumsum(0).cumsum(1)[:ny, :nx] != 1):
        raise BinaryError(f"{where}: the weight cells do not cover every PE exactly once")
    lcell = _part(cells, axes, AXIS_CELL, shape, where) * lc
    lo = _range_reduce(np.minimum, lx, x0, x1) * _range_reduce(np.minimum, ly, y0, y1) * lcell
    hi = _range_reduce(np.maximum, lx, x0, x1) * _range_reduce(np.maximum, ly, y0, y1) * lcell
    bad = np.nonzero((lo != bcount[bi]) | (hi != bcount[bi]))[0]
    if bad.size:
        i = int(bad[0])
        raise BinaryError(f"{where}: weight cell {i} holds blob {bi[i]} of {bcount[bi[i]]} "
                          f"elements but its PEs' slices have {lo[i]}..{hi[i]}")
    bad = np.nonzero(bbytes[bi] > sram)[0]
    if bad.size:
        raise BinaryError(f"{where}: a shard needs {bbytes[bi[bad[0]]]} bytes per PE but a "
                          f"{p.target.name} PE has {sram} bytes of SRAM")


def _part(rec: np.ndarray, axes: np.ndarray, axis: int, shape: np.ndarray, where: str
          ) -> np.ndarray:
    """Elements of the dims on `axis` per record; checks the slices' bounds."""
    sel = np.nonzero(axes == axis)[0]
    start, stop = rec["start"][:, sel].astype(np.int64), rec["stop"][:, sel].astype(np.int64)
    bad = np.nonzero(np.any((start > stop) | (stop > shape[sel]), axis=1))[0]
    if bad.size:
        i = int(bad[0])
        raise BinaryError(f"{where}: slice {_slices(start[i], stop[i])} of dims "
                          f"{sel.tolist()} lies outside shape {shape.tolist()}")
    return np.prod(stop - start, axis=1)


def _range_reduce(fn: np.ufunc, a: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """fn.reduce(a[lo:hi]) for every (lo, hi) pair (non-empty ranges)."""
    if not lo.size:
        return np.zeros(0, np.int64)
    ext = np.append(a, 0)
    idx = np.stack([lo, hi], axis=1).reshape(-1)
    return fn.reduceat(ext, idx)[::2]


def _slices(start: np.ndarray, stop: np.ndarray) -> str:
    return "[" + ", ".join(f"{a}:{b}" for a, b in zip(start.tolist(), stop.tolist(),
                                                      strict=True)) + "]"
