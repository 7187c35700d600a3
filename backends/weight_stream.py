"""Weight-streaming parts of the binary (format v1, META `phases` / `streams`).

Why a module of its own: in stream mode the binary does not carry weight
shards in BLOBS (41 GB would not fit anywhere useful); it carries the phase
schedule and, per kernel weight, a *stream descriptor* saying where the
bytes come from — a range of the model's external-data file (name, offset,
length, dtype, shape and a fingerprint) or, for small constants and with
`--embed-weights`, a blob — and where they go (the phase's rectangle; each
PE takes the slice the kernel kind's `weight_shard` gives it for the
kernel's knobs). The emitter builds them (`stream_tables`), the loader
validates them (`check_streams`) and checks the referenced files
(`check_weight_files`), the simulator reads weights through `stream_weight`.

Fingerprint (hashing a 41 GB file on every load is too slow): SHA-256 over
`b"wsec-fp1"`, then u64 little-endian file size, offset and length, then
the range's bytes if it is at most 2 MiB long, else its first 1 MiB and
its last 1 MiB. It catches a missing, truncated, resized or swapped file
and edits near either end of every weight; edits in the middle of a weight
larger than 2 MiB go unnoticed (documented in docs/binary-format.md).
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

import numpy as np
from wsec.ir.errors import WsecError
from wsec.ir.fabric import Fabric
from wsec.ir.graph import Kernel, Module
from wsec.ir.target import Target
from wsec.ir.types import DTYPES, External

from .format import Program, type_dtype, type_shape

FP_CHUNK = 1 << 20  # 1 MiB at each end of a range
FP_MAGIC = b"wsec-fp1"


class StreamError(WsecError):
    """A stream descriptor or its weight file is wrong (one line, for people)."""


def fingerprint(path: str, offset: int, length: int) -> str:
    """`sha256:<hex>` over the file size, the range and its end chunks (see module doc)."""
    size = os.path.getsize(path)
    h = hashlib.sha256(FP_MAGIC + struct.pack("<QQQ", size, offset, length))
    with open(path, "rb") as f:
        if length <= 2 * FP_CHUNK:
            f.seek(offset)
            h.update(f.read(length))
        else:
            f.seek(offset)
            h.update(f.read(FP_CHUNK))
            f.seek(offset + length - FP_CHUNK)
            h.update(f.read(FP_CHUNK))
    return "sha256:" + h.hexdigest()


def _file_name(path: str, out_dir: str | None) -> str:
    """The weight file as the binary names it: relative to the binary's
    directory when there is one (so the pair can move together)."""
    full = os.path.abspath(path)
    if out_dir is None:
        return full
    return os.path.relpath(full, os.path.abspath(out_dir))


# what a training step's phase carries besides the inference fields (see
# passes/schedule_train.py): its role, the gradients streamed out, the
# values it frees
TRAIN_PHASE_KEYS = ("role", "cycles", "compute", "stream", "stream_out", "move",
                    "weight_bytes", "grad_bytes", "free")


def stream_tables(module: Module, kernels: list[Kernel], weight_names: list[list[str]],
                  blobs: Any, embed: bool, out_dir: str | None
                  ) -> tuple[list[dict], list[dict], list[dict]]:
    """(phases, streams, store steps) for META. `blobs` is the emitter's blob
    table (its `dense`/`splat` add a blob and return its index). External
    constants reference their file unless `embed`; other constants are
    embedded. A training step's phases follow its schedule (recomputations
    repeat a kernel); its optimizer kernels are store steps, run off the
    wafer by the weight store."""
    train = "store_steps" in module.attrs
    by_index: list[list[int]] = []
    store: list[dict[str, Any]] = []
    streams: list[dict[str, Any]] = []
    fps: dict[tuple[str, int, int], str] = {}
    by_kernel = {p["kernel"]: p for p in module.attrs.get("phases", [])}
    phases = []
    for ki, k in enumerate(kernels):
        ids = []
        r = k.rect
        assert r is not None
        for wi, name in enumerate(weight_names[ki]):
            v = module.values[name]
            c = v.const
            assert c is not None
            d: dict[str, Any] = {"kernel": ki, "weight": wi, "value": name,
                                 "dtype": v.type.dtype, "shape": list(v.type.shape),
                                 "rect": [r.x, r.y, r.w, r.h], "rotated": bool(k.rotated)}
            if isinstance(c, External) and not embed:
                path = c.resolved_path()
                if not os.path.exists(path):
                    raise StreamError(f"kernel '{k.name}': weight %{name} is stored in "
                                      f"'{path}', which does not exist")
                key = (os.path.abspath(path), c.offset, c.length)
                if key not in fps:
                    fps[key] = fingerprint(path, c.offset, c.length)
                d.update(source="file", file=_file_name(path, out_dir), offset=int(c.offset),
                         length=int(c.length), fingerprint=fps[key])
                if c.perm is not None:  # the file stores it transposed (a folded Transpose)
                    d["perm"] = list(c.perm)
            elif c.is_splat:
                d.update(source="blob", blob=blobs.splat(v.type.dtype, v.type.numel,
                                                         c.value))  # type: ignore[attr-defined]
            else:
                d.update(source="blob", blob=blobs.dense(np.asarray(c.array()).reshape(-1),
                                                         v.type.dtype))
            ids.append(len(streams))
            streams.append(d)
        by_index.append(ids)
        if train:
            continue
        p = by_kernel.get(k.name, {})
        cost = k.cost or {}
        phases.append({"kernel": ki, "name": k.name, "rect": [r.x, r.y, r.w, r.h],
                       "cycles": int(p.get("cycles", cost.get("cycles", 0))),
                       "compute": int(p.get("compute", cost.get("compute", 0))),
                       "stream": int(p.get("stream", cost.get("stream", 0))),
                       "move": int(p.get("move", cost.get("move", 0))),
                       "weight_bytes": int(p.get("weight_bytes", 0)), "streams": ids})
    if train:
        index = {k.name: ki for ki, k in enumerate(kernels)}
        for p in module.attrs["phases"]:
            ki = index[p["kernel"]]
            r = kernels[ki].rect
            assert r is not None
            phases.append({**{key: p[key] for key in TRAIN_PHASE_KEYS if key in p},
                           "kernel": ki, "name": p["kernel"], "rect": [r.x, r.y, r.w, r.h],
                           "streams": by_index[ki]})
        for st in module.attrs["store_steps"]:
            ki = index[st["kernel"]]
            store.append({"kernel": ki, "name": st["kernel"], "streams": by_index[ki],
                          "weight_bytes": int(st["weight_bytes"]),
                          "grad_bytes": int(st["grad_bytes"])})
    return phases, streams, store


def stream_host_io(module: Module, t: Target) -> dict[str, list[dict[str, object]]]:
    """Stream mode has no routes: model inputs enter evenly over the West-edge
    PEs (x = 0), outputs leave over the East-edge PEs, in y order."""
    def side(names: list[str], x: int, ranges: bool) -> list[dict[str, object]]:
        out = []
        for name in names:
            n = module.values[name].type.numel
            k = max(1, min(t.height, n))
            d: dict[str, object] = {"value": name, "type": str(module.values[name].type),
                                    "pes": [[x, y] for y in range(k)]}
            if ranges:
                cuts = [n * i // k for i in range(k + 1)]
                d["ranges"] = [[cuts[i], cuts[i + 1]] for i in range(k)]
            out.append(d)
        return out
    fabric = Fabric.of(t)
    return {"inputs": side(list(module.inputs), fabric.host_input_x, True),
            "outputs": side(list(module.outputs), fabric.host_output_x, False)}


def check_streams(p: Program) -> None:
    """The schedule and descriptors are consistent with the kernels (raises StreamError)."""
    phases, streams = p.info.get("phases"), p.info.get("streams")
    if not isinstance(phases, list) or not isinstance(streams, list):
        raise StreamError("a stream-mode binary needs META 'phases' and 'streams' lists")
    store = p.info.get("store_steps")
    if isinstance(store, list):  # a training step: recomputations repeat forward kernels
        once = [int(ph["kernel"]) for ph in phases if ph.get("role") != "recompute"]
        once += [int(st["kernel"]) for st in store]
        again = {int(ph["kernel"]) for ph in phases if ph.get("role") == "recompute"}
        fwd = {int(ph["kernel"]) for ph in phases if ph.get("role") == "forward"}
        if sorted(once) != list(range(len(p.kernels))) or not again <= fwd:
            raise StreamError(f"the training schedule must run every kernel once as a phase "
                              f"or a store step (recomputing only forward kernels); it has "
                              f"{len(phases)} phases and {len(store)} store steps for "
                              f"{len(p.kernels)} kernels")
    elif sorted(int(ph["kernel"]) for ph in phases) != list(range(len(p.kernels))):
        raise StreamError(f"the phase schedule must run every kernel once; it has "
                          f"{len(phases)} phases for {len(p.kernels)} kernels")
    seen: set[tuple[int, int]] = set()
    for si, d in enumerate(streams):
        ki, wi = int(d["kernel"]), int(d["weight"])
        if not 0 <= ki < len(p.kernels) or not 0 <= wi < len(p.kernels[ki].weights):
            raise StreamError(f"stream descriptor {si} names weight {wi} of kernel {ki}, "
                              f"which does not exist")
        k = p.kernels[ki]
        name = k.weights[wi]
        where = f"kernel '{k.name}', weight %{name}"
        if (ki, wi) in seen:
            raise StreamError(f"{where}: two stream descriptors")
        seen.add((ki, wi))
        ty = p.info["values"].get(name, "")
        if d["dtype"] != type_dtype(ty) or list(d["shape"]) != type_shape(ty):
            raise StreamError(f"{where}: the descriptor says {d['dtype']}{d['shape']} but the "
                              f"value is {ty}")
        r = k.rect
        if list(d["rect"]) != [r.x, r.y, r.w, r.h]:
            raise StreamError(f"{where}: the descriptor streams to {d['rect']} but the kernel "
                              f"runs on [{r.x}, {r.y}, {r.w}, {r.h}]")
        numel = int(np.prod(d["shape"], dtype=np.int64))
        if d["source"] == "blob":
            bi = int(d["blob"])
            if not 0 <= bi < len(p.blobs) or p.blobs[bi].count != numel:
                raise StreamError(f"{where}: the descriptor names blob {bi}, which does not "
                                  f"exist or does not hold {numel} elements")
        elif d["source"] == "file":
            want = numel * DTYPES[d["dtype"]].itemsize
            if int(d["length"]) != want or int(d["offset"]) < 0:
                raise StreamError(f"{where}: the descriptor streams {d['length']} bytes at "
                                  f"offset {d['offset']} but {ty} needs {want}")
            str(d["file"]), str(d["fingerprint"])
            perm = d.get("perm")
            if perm is not None and (not isinstance(perm, list) or sorted(
                    int(a) for a in perm) != list(range(len(d["shape"])))):
                raise StreamError(f"{where}: the descriptor's perm {perm} is no permutation "
                                  f"of the {len(d['shape'])} axes of {ty}")
        else:
            raise StreamError(f"{where}: unknown stream source '{d['source']}'")
    for ki, k in enumerate(p.kernels):
        for wi, wn in enumerate(k.weights):
            if (ki, wi) not in seen:
                raise StreamError(f"kernel '{k.name}' has no stream descriptor for %{wn}")


def resolve(p: Program, d: dict[str, Any]) -> str:
    name = str(d["file"])
    return name if os.path.isabs(name) else os.path.join(p.base_dir or ".", name)


def weight_files(p: Program) -> list[str]:
    """The weight files a stream-mode binary reads (resolved, each once)."""
    out: list[str] = []
    for d in p.info.get("streams", []):
        if d.get("source") == "file" and resolve(p, d) not in out:
            out.append(resolve(p, d))
    return out


def check_weight_files(p: Program) -> None:
    """Every referenced weight file exists, is large enough and matches its
    fingerprint (each distinct range is hashed once)."""
    done: set[tuple[str, int, int]] = set()
    for d in p.info.get("streams", []):
        if d.get("source") != "file":
            continue
        path = resolve(p, d)
        off, ln = int(d["offset"]), int(d["length"])
        if (path, off, ln) in done:
            continue
        done.add((path, off, ln))
        k = p.kernels[int(d["kernel"])].name
        if not os.path.isfile(path):
            raise StreamError(f"weight file '{path}' (weight %{d['value']} of kernel '{k}') "
                              f"does not exist; keep it beside the binary or recompile with "
                              f"--embed-weights")
        size = os.path.getsize(path)
        if off + ln > size:
            raise StreamError(f"weight file '{path}' has {size} bytes but weight %{d['value']} "
                              f"of kernel '{k}' streams bytes {off}..{off + ln}: wrong or "
                              f"truncated file")
        if fingerprint(path, off, ln) != d["fingerprint"]:
            raise StreamError(f"weight file '{path}' does not match the binary: weight "
                              f"%{d['value']} of kernel '{k}' (offset {off}, {ln} bytes) has "
                              f"another fingerprint; recompile against this file")


def stream_weight(p: Program, d: dict[str, Any]) -> np.ndarray:
    """One weight as its phase streams it in, in the device dtype for floats:
    a read-only memory map of the file range (nothing is read before the
    phase touches it), or the blob."""
    shape = tuple(int(s) for s in d["shape"])
    if d["source"] == "blob":
        return p.blobs[int(d["blob"])].array().reshape(shape)
    dt = DTYPES[d["dtype"]]
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:
        return np.zeros(shape, dt)
    perm = [int(a) for a in d.get("perm") or range(len(shape))]
    stored = tuple(shape[int(i)] for i in np.argsort(perm))  # the file's row-major layout
    arr = np.memmap(resolve(p, d), dtype=dt.newbyteorder("<"), mode="r",
                    offset=int(d["offset"]), shape=(n,)).reshape(stored).transpose(perm)
    if np.issubdtype(dt, np.floating):  # the PEs hold floats in the device dtype
        return arr.astype(DTYPES[p.target.dtype])
    return arr
