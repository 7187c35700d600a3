"""Bad inputs, per category, as a new user or a careless script would try them.

Why a generator: each class of bad input the campaign of issue 10 found
(data loss, hangs and memory, internal errors, nonsense accepted, Python
warnings, Ctrl-C) is a family of cases, not one; new cases are one line
here. `cases()` returns every case; `run_case` runs one in a forked child
of the calling process (wsec already imported, so a case costs milliseconds,
not an interpreter start) with a memory cap and a time cap, and `problems`
says what went wrong with the result:

- exactly one line on stderr, `wsec: error: ...` (or `wsec: interrupted`),
  no traceback, no 'internal error', no Python warning;
- the expected exit code (1 input error, 2 usage error, 130 interrupted);
- no new file, no changed file, no temp file left in the case directory
  (the inputs are untouched), unless the case says which output may appear.

`python tests/badinputs.py [SUBSTRING]` runs the cases and prints a table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pathlib
import random
import resource
import shutil
import signal
import socket
import stat
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"
ISPD = ROOT / "tests" / "data" / "ispd"
MEM_LIMIT = 4 << 30  # a case that needs more than this is a failure to fail fast
TIME_LIMIT = 60.0  # a case slower than this hangs


@dataclass(frozen=True)
class Case:
    """One bad input: files to make, the command line (run in the case's
    directory, which holds the base fixtures), and what must happen."""

    name: str  # category/what
    argv: tuple[str, ...]
    code: int  # expected exit status
    expect: str = ""  # a substring the one stderr line must contain
    make: Callable[[pathlib.Path], None] | None = None
    may_write: tuple[str, ...] = ()  # outputs that may appear on success (exit 0)
    keeps_best: bool = False  # an interrupted ISPD run may write its best solution too
    codes: tuple[int, ...] = ()  # other acceptable exit codes (mutations: 0 is fine too)
    sigint_after: float | None = None  # seconds after the start to send SIGINT
    report_ok: bool = False  # exit 1 with a report on stdout (a failed check) is right too
    special: tuple[str, ...] = ()  # special files in the directory (not content-compared)

    @property
    def ok_codes(self) -> tuple[int, ...]:
        return (self.code, *self.codes)


# --- the base fixtures every case directory starts from ----------------------

BASE_FILES = ("model.onnx", "ext.onnx", "ext.onnx.data", "model.bin", "stream.bin",
              "A.kgraph", "A.sol", "x.npy")


def make_base(d: pathlib.Path) -> None:
    """model.onnx (tiny CNN), ext.onnx + ext.onnx.data (the same with external
    data), model.bin (compiled), stream.bin (weight streaming, referencing
    ext.onnx.data), A.kgraph + A.sol (ISPD), x.npy (an input for model.bin)."""
    from wsec.backends.emit import write_binary
    from wsec.driver import CompileOptions, compile_model

    d.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLE, d / "model.onnx")
    m = onnx.load(str(EXAMPLE))
    onnx.save(m, str(d / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.onnx.data", size_threshold=0)
    res = compile_model(str(d / "model.onnx"), CompileOptions())
    write_binary(res.module, str(d / "model.bin"))
    res = compile_model(str(d / "ext.onnx"), CompileOptions(mode="stream"))
    write_binary(res.module, str(d / "stream.bin"))
    shutil.copy(ISPD / "tiny.kgraph", d / "A.kgraph")
    shutil.copy(ISPD / "tiny.sol", d / "A.sol")
    np.save(d / "x.npy", np.random.default_rng(0).standard_normal((1, 3, 32, 32))
            .astype(np.float32))


# --- helpers that make bad files ---------------------------------------------

def _write(name: str, data: bytes | str) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        p = d / name
        if isinstance(data, str):
            p.write_text(data, encoding="utf-8")
        else:
            p.write_bytes(data)
    return make


def _both(*fns: Callable[[pathlib.Path], None] | None) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        for f in fns:
            if f is not None:
                f(d)
    return make


def _model(name: str, graph: onnx.GraphProto, opset: int = 17,
           ir_version: int | None = None) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        if ir_version is not None:
            m.ir_version = ir_version
        (d / name).write_bytes(m.SerializeToString())
    return make


def _relu(dims: list, dtype: int = TensorProto.FLOAT, name: str = "x") -> onnx.GraphProto:
    return helper.make_graph([helper.make_node("Relu", [name], ["y"])], "g",
                             [helper.make_tensor_value_info(name, dtype, dims)],
                             [helper.make_tensor_value_info("y", dtype, dims)])


def _add_init(dims: list[int], raw: bytes, dtype: int = TensorProto.FLOAT) -> onnx.GraphProto:
    """y = x + w, w an initializer of `dims` storing `raw` (maybe not enough)."""
    w = TensorProto(name="w", data_type=dtype, dims=dims, raw_data=raw)
    xdims = dims if all(0 < d < 1 << 20 for d in dims) else [1]
    return helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                             [helper.make_tensor_value_info("x", dtype, xdims)],
                             [helper.make_tensor_value_info("y", dtype, dims)], [w])


def _external_model(name: str, offset: str = "0", location: str = "w.data",
                    length: str | None = None, data: bytes = b"\0" * 64,
                    dims: tuple[int, ...] = (16,)) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=list(dims))
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", offset), ("length", length)):
            if v is not None:
                e = w.external_data.add()
                e.key, e.value = k, v
        g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [16])], [w])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        (d / name).write_bytes(m.SerializeToString())
        (d / "w.data").write_bytes(data)
    return make


def _tamper_bin(name: str, edit: Callable[[object], None], src: str = "model.bin"
                ) -> Callable[[pathlib.Path], None]:
    """A well-checksummed binary whose decoded content `edit` made wrong."""
    def make(d: pathlib.Path) -> None:
        from wsec.backends.emit import write_program
        from wsec.backends.loader import load_binary

        p = load_binary(str(d / src), validate=False)
        edit(p)
        (d / name).write_bytes(write_program(p))
    return make


def _set_grid(w: int, h: int) -> Callable[[object], None]:
    def edit(p: object) -> None:
        p.target = dataclasses.replace(p.target, width=w, height=h)  # type: ignore[attr-defined]
    return edit


def _set_value(name: str, text: str) -> Callable[[object], None]:
    def edit(p: object) -> None:
        p.info["values"][name] = text  # type: ignore[attr-defined]
    return edit


def _edit_info(fn: Callable[[dict], None]) -> Callable[[object], None]:
    def edit(p: object) -> None:
        fn(p.info)  # type: ignore[attr-defined]
    return edit


def _edit_kernel(fn: Callable[[object], None], index: int = 0) -> Callable[[object], None]:
    def edit(p: object) -> None:
        fn(p.kernels[index])  # type: ignore[attr-defined]
    return edit


def _section_gap(name: str, src: str = "model.bin") -> Callable[[pathlib.Path], None]:
    """Move every section after the first by 8 bytes: a gap, checksums intact."""
    def make(d: pathlib.Path) -> None:
        from wsec.backends.format import HEADER, SECTION, section_crc

        data = bytearray((d / src).read_bytes())
        _, version, flags, count, _ = HEADER.unpack_from(data)
        secs = [SECTION.unpack_from(data, HEADER.size + i * SECTION.size) for i in range(count)]
        secs.sort(key=lambda s: s[2])
        body = bytearray(data[:secs[0][2]])
        for i, (sid, crc, off, ln) in enumerate(secs):
            if i == 1:
                body += b"\0" * 8
            new_off = len(body)
            body += data[off:off + ln]
            SECTION.pack_into(body, HEADER.size + i * SECTION.size, sid, crc, new_off, ln)
        table_end = HEADER.size + count * SECTION.size
        crc = section_crc(bytes(body[:HEADER.size - 4] + body[HEADER.size:table_end]))
        struct.pack_into("<I", body, HEADER.size - 4, crc)
        (d / name).write_bytes(bytes(body))
    return make


def _npy_header(name: str, descr: str, shape: tuple[int, ...],
                payload: bytes = b"") -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        hdr = repr({"descr": descr, "fortran_order": False, "shape": shape}).encode("latin1")
        hdr += b" " * (63 - (len(hdr) + 10) % 64) + b"\n"
        (d / name).write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(hdr)) + hdr + payload)
    return make


def _npy(name: str, arr: np.ndarray) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        np.save(d / name, arr, allow_pickle=False)
    return make


def _kgraph_edit(name: str, fn: Callable[[str], str]) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        (d / name).write_text(fn((ISPD / "tiny.kgraph").read_text(encoding="utf-8")),
                              encoding="utf-8")
    return make


def _header(key: str, value: str) -> Callable[[str], str]:
    import re

    return lambda t: re.sub(rf"(?m)^{key}=\S*$", f"{key}={value}", t)


def _symlink(link: str, target: str) -> Callable[[pathlib.Path], None]:
    return lambda d: os.symlink(target, d / link)


def _hardlink(link: str, target: str) -> Callable[[pathlib.Path], None]:
    return lambda d: os.link(d / target, d / link)


def _mknull(name: str) -> Callable[[pathlib.Path], None]:
    """A private character device equal to /dev/null (the real one is never
    put at risk by a failing test)."""
    return lambda d: os.mknod(d / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))


def _mkblock(name: str) -> Callable[[pathlib.Path], None]:
    return lambda d: os.mknod(d / name, 0o600 | stat.S_IFBLK, os.makedev(7, 200))


def _mksocket(name: str) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(d / name))
        s.close()
    return make


def _mkdir(name: str) -> Callable[[pathlib.Path], None]:
    return lambda d: (d / name).mkdir()


def _random_bytes(name: str, n: int, seed: int) -> Callable[[pathlib.Path], None]:
    return _write(name, random.Random(seed).randbytes(n))


def _flip(name: str, src: str, seed: int, flips: int = 1) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        data = bytearray((d / src).read_bytes())
        rng = random.Random(seed)
        for _ in range(flips):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        (d / name).write_bytes(bytes(data))
    return make


def _truncate(name: str, src: str, frac: float) -> Callable[[pathlib.Path], None]:
    def make(d: pathlib.Path) -> None:
        data = (d / src).read_bytes()
        (d / name).write_bytes(data[:int(len(data) * frac)])
    return make


# --- the cases, per category --------------------------------------------------

def output_cases() -> Iterator[Case]:
    """Data loss: an output that is an input, or another output; special files."""
    inputs = {"model": "model.onnx", "dot-model": "./model.onnx",
              "symlink": "link.onnx", "hardlink": "hard.onnx"}
    links = _both(_symlink("link.onnx", "model.onnx"), _hardlink("hard.onnx", "model.onnx"))
    for what, path in inputs.items():
        yield Case(f"output/compile -o {what}", ("model.onnx", "-o", path), 2,
                   "is the input model", links)
        yield Case(f"output/--report-json {what}", ("model.onnx", "-o", "m.bin",
                                                    "--report-json", path), 2,
                   "is the input model", links)
        yield Case(f"output/export-train -o {what}", ("export-train", "model.onnx", "-o", path),
                   2, "is the input model", links)
    yield Case("output/--report-json = -o", ("model.onnx", "-o", "m.bin", "--report-json",
                                             "m.bin"), 2, "is the binary")
    yield Case("output/--report-json = -o via ./", ("model.onnx", "-o", "m.bin",
                                                    "--report-json", "./m.bin"), 2,
               "is the binary")
    yield Case("output/compile -o external data", ("ext.onnx", "-o", "ext.onnx.data"), 2,
               "external data")
    yield Case("output/--report-json external data", ("ext.onnx", "-o", "m.bin",
                                                      "--report-json", "ext.onnx.data"), 2,
               "external data")
    yield Case("output/export-train -o external data", ("export-train", "ext.onnx", "-o",
                                                        "ext.onnx.data"), 2, "external data")
    yield Case("output/--stop-after -o model", ("model.onnx", "--stop-after", "canonicalize",
                                                "-o", "model.onnx"), 2, "is the input model")
    # wsec run
    yield Case("output/run -o binary", ("run", "model.bin", "-o", "model.bin"), 2,
               "is the binary")
    yield Case("output/run -o binary symlink", ("run", "model.bin", "-o", "b.npz"), 2,
               "is the binary", _symlink("b.npz", "model.bin"))
    yield Case("output/run -o --input file", ("run", "model.bin", "--input", "image=x.npy",
                                              "-o", "x.npy"), 2, "x.npy")
    yield Case("output/run -o --check model", ("run", "model.bin", "--check", "model.onnx",
                                               "-o", "model.onnx"), 2, "--check")
    yield Case("output/run -o weight file", ("run", "stream.bin", "-o", "ext.onnx.data"), 2,
               "weight")
    yield Case("output/run -o --check external data", ("run", "stream.bin", "--check",
                                                       "ext.onnx", "-o", "ext.onnx.data"), 2,
               "ext.onnx.data")
    # ISPD
    yield Case("output/kgraph -o kgraph", ("A.kgraph", "-o", "A.kgraph"), 2, "kernel graph")
    yield Case("output/kgraph -o symlink to kgraph", ("A.kgraph", "-o", "l.sol"), 2,
               "kernel graph", _symlink("l.sol", "A.kgraph"))
    yield Case("output/kgraph -o hardlink to kgraph", ("A.kgraph", "-o", "h.sol"), 2,
               "kernel graph", _hardlink("h.sol", "A.kgraph"))
    yield Case("output/kgraph --report-json kgraph", ("A.kgraph", "-o", "B.sol",
                                                      "--report-json", "A.kgraph"), 2,
               "kernel graph")
    yield Case("output/kgraph --report-json = -o", ("A.kgraph", "-o", "B.sol",
                                                    "--report-json", "B.sol"), 2, "solution")
    # special and impossible outputs
    for cmd, argv in (("compile", ("model.onnx", "-o")),
                      ("report-json", ("model.onnx", "-o", "m.bin", "--report-json")),
                      ("run", ("run", "model.bin", "-o")),
                      ("kgraph", ("A.kgraph", "-o")),
                      ("export-train", ("export-train", "model.onnx", "-o"))):
        yield Case(f"output/{cmd} into a directory", (*argv, "adir"), 2, "directory",
                   _mkdir("adir"))
        yield Case(f"output/{cmd} onto a socket", (*argv, "sock"), 2, "socket",
                   _mksocket("sock"), special=("sock",))
        yield Case(f"output/{cmd} onto a block device", (*argv, "blk"), 2, "block device",
                   _mkblock("blk"), special=("blk",))
        yield Case(f"output/{cmd} in a missing directory", (*argv, "nodir/out"), 1,
                   "does not exist")
        yield Case(f"output/{cmd} empty name", (*argv, ""), 2, "output")


def size_cases() -> Iterator[Case]:
    """Hangs and memory: absurd dims, grids, npy headers, binaries' sizes."""
    huge = {"1x1e9x1e9": [1, 10**9, 10**9], "2^62x8": [2**62, 8], "2^63-1": [2**63 - 1],
            "2^40x2^30": [2**40, 2**30], "1e12": [10**12]}
    for what, dims in huge.items():
        word = "SRAM" if what == "1e12" else "limit"
        yield Case(f"size/input {what}", ("big.onnx", "-o", "big.bin"), 1, word,
                   _model("big.onnx", _relu(dims)))
        yield Case(f"size/input {what} --stop-after", ("big.onnx", "--stop-after",
                                                       "canonicalize"), 1, word,
                   _model("big.onnx", _relu(dims)))
    yield Case("size/input 1x3x65536x65536 exceeds the wafer", ("big.onnx", "-o", "big.bin"), 1,
               "SRAM", _model("big.onnx", _relu([1, 3, 65536, 65536])))
    yield Case("size/initializer dims beyond its data", ("w.onnx", "-o", "w.bin"), 1,
               "w", _model("w.onnx", _add_init([4, 4], b"\0" * 8)))
    yield Case("size/initializer huge dims, tiny data", ("w.onnx", "-o", "w.bin"), 1,
               "w", _model("w.onnx", _add_init([2**31, 2**31], b"\0" * 64)))
    yield Case("size/initializer 1e7x1e7 no data", ("w.onnx", "-o", "w.bin"), 1,
               "w", _model("w.onnx", _add_init([10**7, 10**7], b"")))
    for grid in ("1000000x1000000", "100000x100000", "99999999999999999999x2", "0x5", "5x0",
                 "-3x4", "1e3x1e3", "x", "64", "64x64x64", "1x1000000000"):
        yield Case(f"size/--grid {grid}", ("model.onnx", "-o", "m.bin", f"--grid={grid}"), 2,
                   "grid")
    for spec in ("image=99999999999999999999,16", "image=1,3,32,99999999999",
                 "image=1,3,0,32", "image=1,-3,32,32", "image=", "image=a,b", "=1,2",
                 "image=1,3,32,32.5", "image=1e3,3,32,32"):
        yield Case(f"size/--input-shape {spec}", ("model.onnx", "-o", "m.bin", "--input-shape",
                                                  spec), 2, "--input-shape")
    # binaries whose header claims absurd sizes
    for w, h in ((1000000, 1000000), (2**31, 2), (0, 10), (-5, 10)):
        yield Case(f"size/binary grid {w}x{h} inspect", ("inspect", "g.bin"), 1, "grid",
                   _tamper_bin("g.bin", _set_grid(w, h)))
        yield Case(f"size/binary grid {w}x{h} run", ("run", "g.bin"), 1, "grid",
                   _tamper_bin("g.bin", _set_grid(w, h)))
    for ty in ("f32[1,3,1000000000,1000000000]", "f32[4611686018427387904,8]",
               "f32[1,3,32,-32]", "q7[1,3,32,32]",
               "f32[1,3,3.5,32]", "f32", "f32[1,3,32,32"):
        yield Case(f"size/binary input type {ty} run", ("run", "t.bin"), 1, "image",
                   _tamper_bin("t.bin", _set_value("image", ty)))
        yield Case(f"size/binary input type {ty} inspect", ("inspect", "t.bin"), 1, "image",
                   _tamper_bin("t.bin", _set_value("image", ty)))
    yield Case("size/npy header 1e7x1e7", ("run", "model.bin", "--input", "image=big.npy"), 1,
               "big.npy", _npy_header("big.npy", "<f4", (10**7, 10**7)))
    yield Case("size/npy header 2^62", ("run", "model.bin", "--input", "image=big.npy"), 1,
               "big.npy", _npy_header("big.npy", "<f4", (2**62,)))
    yield Case("size/npy header shape says more than the file", ("run", "model.bin", "--input",
                                                                 "image=s.npy"), 1, "s.npy",
               _npy_header("s.npy", "<f4", (1, 3, 32, 32), b"\0" * 16))


def model_cases() -> Iterator[Case]:
    """ONNX files that are wrong in ways the checker does not catch."""
    yield Case("model/no outputs", ("n.onnx", "-o", "n.bin"), 1, "no outputs",
               _model("n.onnx", helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [])))
    yield Case("model/zero-size input", ("z.onnx", "-o", "z.bin"), 1, "zero",
               _model("z.onnx", _relu([1, 0, 4])))
    yield Case("model/zero-size input via --input-shape", ("model.onnx", "-o", "m.bin",
                                                           "--input-shape", "image=1,3,0,32"),
               2, "--input-shape")
    yield Case("model/zero-size initializer", ("z.onnx", "-o", "z.bin"), 1, "zero",
               _model("z.onnx", _add_init([0, 4], b"")))
    yield Case("model/empty file", ("e.onnx", "-o", "e.bin"), 1, "e.onnx", _write("e.onnx", b""))
    yield Case("model/text file", ("e.onnx", "-o", "e.bin"), 1, "e.onnx",
               _write("e.onnx", "hello\n"))
    yield Case("model/missing", ("nope.onnx", "-o", "n.bin"), 1, "nope.onnx")
    yield Case("model/directory", ("adir", "-o", "n.bin"), 1, "adir", _mkdir("adir"))
    yield Case("model/--format ispd2020 on onnx", ("model.onnx", "--format", "ispd2020",
                                                   "-o", "m.sol"), 1, "model.onnx")
    yield Case("model/--format ispd2020 on a binary", ("model.bin", "--format", "ispd2020",
                                                       "-o", "m.sol"), 1, "model.bin")
    yield Case("model/a binary as the model", ("model.bin", "-o", "m2.bin"), 1, "model.bin")
    yield Case("model/a kgraph named .onnx", ("k.onnx", "-o", "k.bin"), 1, "k.onnx",
               lambda d: shutil.copy(d / "A.kgraph", d / "k.onnx"))
    for seed in range(6):
        yield Case(f"model/random bytes {seed}", ("r.onnx", "-o", "r.bin"), 1, "r.onnx",
                   _random_bytes("r.onnx", 200 + 300 * seed, seed))
    for frac in (0.1, 0.5, 0.9, 0.99):
        yield Case(f"model/truncated {frac}", ("t.onnx", "-o", "t.bin"), 1, "t.onnx",
                   _truncate("t.onnx", "model.onnx", frac))
    yield Case("model/external data missing", ("ext.onnx", "-o", "e.bin"), 1, "ext.onnx.data",
               lambda d: (d / "ext.onnx.data").unlink())
    yield Case("model/external data short", ("ext.onnx", "-o", "e.bin"), 1, "ext.onnx.data",
               lambda d: (d / "ext.onnx.data").write_bytes(b"\0" * 100))
    # external-data locations
    for what, kw in (("NUL byte in location", {"location": "w.da\0ta"}),
                     ("negative offset", {"offset": "-8"}),
                     ("non-integer offset", {"offset": "abc"}),
                     ("float offset", {"offset": "1.5"}),
                     ("huge offset", {"offset": str(2**70)}),
                     ("negative length", {"length": "-64"}),
                     ("non-integer length", {"length": "x"}),
                     ("absolute location", {"location": "/etc/passwd"}),
                     ("location outside", {"location": "../w.data"}),
                     ("empty location", {"location": ""}),
                     ("location is a directory", {"location": "."}),
                     ("huge dims external", {"dims": (2**40, 2**30)})):
        yield Case(f"model/external {what}", ("xd.onnx", "-o", "xd.bin"), 1,
                   "xd.onnx" if what == "huge dims external" else "'w'",
                   _external_model("xd.onnx", **kw))
    yield Case("model/unknown element type", ("u.onnx", "-o", "u.bin"), 1, "x",
               _model("u.onnx", _relu([4], TensorProto.STRING)))
    yield Case("model/complex input", ("c.onnx", "-o", "c.bin"), 1, "COMPLEX64",
               _model("c.onnx", helper.make_graph(
                   [helper.make_node("Identity", ["x"], ["y"])], "g",
                   [helper.make_tensor_value_info("x", TensorProto.COMPLEX64, [4])],
                   [helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [4])])))
    yield Case("model/opset 99", ("o.onnx", "-o", "o.bin"), 1, "opset",
               _model("o.onnx", _relu([4]), opset=99))
    yield Case("model/opset 1", ("o.onnx", "-o", "o.bin"), 1, "opset",
               _model("o.onnx", _relu([4]), opset=1))
    yield Case("model/input named twice", ("d.onnx", "-o", "d.bin"), 1, "d.onnx",
               _model("d.onnx", helper.make_graph(
                   [helper.make_node("Add", ["x", "x"], ["y"])], "g",
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                    helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])))
    yield Case("model/output is an input", ("io.onnx", "-o", "io.bin"), 1, "'x'",
               _model("io.onnx", helper.make_graph(
                   [], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])])))
    yield Case("model/cycle", ("cy.onnx", "-o", "cy.bin"), 1, "cy.onnx",
               _model("cy.onnx", helper.make_graph(
                   [helper.make_node("Add", ["x", "b"], ["a"]),
                    helper.make_node("Relu", ["a"], ["b"])], "g",
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                   [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4])])))


def option_cases() -> Iterator[Case]:
    """Conflicting or meaningless options."""
    m = ("model.onnx",)
    yield Case("option/--input-shape twice, different", (*m, "-o", "m.bin", "--input-shape",
                                                         "image=1,3,32,32", "--input-shape",
                                                         "image=1,3,64,64"), 2, "--input-shape")
    yield Case("option/--input-shape unknown input", (*m, "-o", "m.bin", "--input-shape",
                                                      "nope=1,2"), 2, "nope")
    yield Case("option/--stop-after with --verify", (*m, "--stop-after", "canonicalize",
                                                     "--verify"), 2, "--verify")
    yield Case("option/--stop-after with --report-json", (*m, "--stop-after", "canonicalize",
                                                          "--report-json", "r.json"), 2,
               "--report-json")
    yield Case("option/--stop-after with -o x.bin", (*m, "--stop-after", "canonicalize", "-o",
                                                     "x.bin"), 2, "--stop-after")
    yield Case("option/--stop-after unknown pass", (*m, "--stop-after", "nope"), 2, "nope")
    yield Case("option/--print-ir-after unknown pass", (*m, "-o", "m.bin", "--print-ir-after",
                                                        "nope"), 2, "nope")
    for v in ("nan", "inf", "-1", "0", "-inf", "abc", "1e400"):
        yield Case(f"option/--time-limit {v} (kgraph)", ("A.kgraph", "-o", "B.sol",
                                                         f"--time-limit={v}"), 2,
                   "--time-limit")
    yield Case("option/--time-limit nan (onnx)", (*m, "-o", "m.bin", "--time-limit=nan"), 2,
               "--time-limit")
    yield Case("option/--target unknown", (*m, "-o", "m.bin", "--target", "wse9"), 2, "wse9")
    yield Case("option/-p unknown pass", (*m, "-o", "m.bin", "-p", "nope{x=1}"), 2, "nope")
    yield Case("option/-p bad option", (*m, "-o", "m.bin", "-p", "place{seed=abc}"), 2, "seed")
    yield Case("option/-p unbalanced", (*m, "-o", "m.bin", "-p", "place{seed=3"), 2, "place")
    yield Case("option/--micro-batch 0", (*m, "-o", "m.bin", "--train", "--micro-batch", "0"),
               2, "--micro-batch")
    yield Case("option/--micro-batch without --train", (*m, "-o", "m.bin", "--micro-batch",
                                                        "4"), 2, "--train")
    yield Case("option/--lr nan", (*m, "-o", "m.bin", "--train", "--lr", "nan"), 2, "lr")
    yield Case("option/--lr inf", ("export-train", *m, "-o", "s.onnx", "--lr", "inf"), 2,
               "--lr")
    yield Case("option/--embed-weights in pipeline mode", (*m, "-o", "m.bin", "--mode",
                                                           "pipeline", "--embed-weights"), 2,
               "--embed-weights")
    yield Case("option/--format ispd2020 with --verify", ("A.kgraph", "-o", "B.sol",
                                                          "--verify"), 2, "--verify")
    yield Case("option/--format ispd2020 with --train", ("A.kgraph", "-o", "B.sol",
                                                         "--train"), 2, "--train")
    yield Case("option/kgraph --stop-after", ("A.kgraph", "--stop-after", "size"), 2,
               "--stop-after")
    yield Case("option/kgraph --input-shape", ("A.kgraph", "-o", "B.sol", "--input-shape",
                                               "x=1"), 2, "--input-shape")
    yield Case("option/unknown flag", (*m, "-o", "m.bin", "--nope"), 2, "--nope")
    yield Case("option/run --rtol nan", ("run", "model.bin", "--rtol", "nan"), 2, "--rtol")
    yield Case("option/run --atol -1", ("run", "model.bin", "--atol", "-1"), 2, "--atol")
    yield Case("option/run --seed -1", ("run", "model.bin", "--seed", "-1"), 2, "--seed")
    yield Case("option/run --input twice", ("run", "model.bin", "--input", "image=x.npy",
                                            "--input", "image=x.npy"), 2, "image")
    yield Case("option/run --input no =", ("run", "model.bin", "--input", "x.npy"), 2,
               "--input")
    yield Case("option/run --input unknown", ("run", "model.bin", "--input", "nope=x.npy"), 2,
               "nope")
    yield Case("option/inspect two files", ("inspect", "model.bin", "stream.bin"), 2,
               "unrecognized")
    yield Case("option/no model, only flags", ("-o", "m.bin"), 2, "model")


def binary_cases() -> Iterator[Case]:
    """Binaries: damaged containers and well-checksummed but wrong meaning."""
    sem: dict[str, Callable[[object], None]] = {
        "negative kernel dim": _edit_kernel(lambda k: k.dims.__setitem__("K", -16)),
        "huge kernel dim": _edit_kernel(lambda k: k.dims.__setitem__("K", 2**62)),
        "non-integer kernel dim": _edit_kernel(lambda k: k.dims.__setitem__("K", "x")),
        "unknown op in a body": _edit_kernel(lambda k: k.body[0].__setitem__("op", "Frobnicate")),
        "body reads an unknown value": _edit_kernel(
            lambda k: k.body[0].__setitem__("inputs", ["nope", *k.body[0]["inputs"][1:]])),
        "body is not a list of nodes": _edit_kernel(lambda k: k.body.__setitem__(0, 7)),
        "kernel input unknown": _edit_kernel(lambda k: k.inputs.__setitem__(0, "nope")),
        "kernel output unknown": _edit_kernel(lambda k: k.outputs.__setitem__(0, "nope")),
        "kernel weight unknown": _edit_kernel(lambda k: k.weights.__setitem__(0, "nope")),
        "inputs name an unknown value": _edit_info(lambda i: i.__setitem__("inputs", ["nope"])),
        "outputs name an unknown value": _edit_info(lambda i: i.__setitem__("outputs",
                                                                           ["nope"])),
        "no outputs": _edit_info(lambda i: i.__setitem__("outputs", [])),
        "input type unknown dtype": _set_value("image", "c64[1,3,32,32]"),
        "output type negative dim": _set_value("prob", "f32[1,-10]"),
        "output type zero dim": _set_value("prob", "f32[1,0]"),
        "value type not a type": _set_value("prob", "hello"),
        "host_io on unknown value": _edit_info(
            lambda i: i["host_io"]["inputs"][0].__setitem__("value", "nope")),
        "host_io ranges beyond the value": _edit_info(
            lambda i: i["host_io"]["inputs"][0].__setitem__("ranges", [[0, 10**12]])),
        "edge carries an unknown value": lambda p: setattr(p.edges[0], "value", "nope"),
        "values is a list": _edit_info(lambda i: i.__setitem__("values", [])),
    }
    for what, edit in sem.items():
        for cmd in ("inspect", "run"):
            yield Case(f"binary/{what} ({cmd})", (cmd, "t.bin"), 1, "",
                       _tamper_bin("t.bin", edit))
    yield Case("binary/gap between sections (inspect)", ("inspect", "g.bin"), 1, "gap",
               _section_gap("g.bin"))
    yield Case("binary/gap between sections (run)", ("run", "g.bin"), 1, "gap",
               _section_gap("g.bin"))
    yield Case("binary/stream weight file gone", ("run", "stream.bin"), 1, "ext.onnx.data",
               lambda d: (d / "ext.onnx.data").unlink())
    yield Case("binary/empty", ("inspect", "e.bin"), 1, "truncated", _write("e.bin", b""))
    yield Case("binary/a directory", ("inspect", "adir"), 1, "adir", _mkdir("adir"))
    yield Case("binary/missing", ("run", "nope.bin"), 1, "nope.bin")
    yield Case("binary/an onnx model", ("run", "model.onnx"), 1, "magic")
    for seed in range(40):
        cmd = "inspect" if seed % 2 else "run"
        yield Case(f"binary/bit flip {seed} ({cmd})", (cmd, "f.bin"), 1, "",
                   _flip("f.bin", "model.bin", seed), codes=(0,))
    for frac in (0.0, 0.01, 0.3, 0.6, 0.999):
        yield Case(f"binary/truncated {frac}", ("run", "t.bin"), 1, "truncated",
                   _truncate("t.bin", "model.bin", frac))
    for seed in range(4):
        yield Case(f"binary/random bytes {seed}", ("inspect", "r.bin"), 1, "",
                   _random_bytes("r.bin", 100 * (seed + 1) ** 2, seed))


def run_cases() -> Iterator[Case]:
    """`wsec run` inputs and `--check` models."""
    r = ("run", "model.bin")
    yield Case("run/npy wrong shape", (*r, "--input", "image=w.npy"), 1, "shape",
               _npy("w.npy", np.zeros((2, 2), np.float32)))
    yield Case("run/npy complex", (*r, "--input", "image=c.npy"), 1, "complex",
               _npy("c.npy", np.ones((1, 3, 32, 32), np.complex64)))
    yield Case("run/npy string dtype", (*r, "--input", "image=s.npy"), 1, "s.npy",
               _npy("s.npy", np.full((1, 3, 32, 32), "a")))
    yield Case("run/npy object dtype (pickle)", (*r, "--input", "image=o.npy"), 1, "o.npy",
               lambda d: np.save(d / "o.npy", np.array([{}], dtype=object), allow_pickle=True))
    yield Case("run/npy not an npy", (*r, "--input", "image=t.npy"), 1, "t.npy",
               _write("t.npy", "1 2 3\n"))
    yield Case("run/npy empty", (*r, "--input", "image=t.npy"), 1, "t.npy", _write("t.npy", b""))
    yield Case("run/npy missing", (*r, "--input", "image=nope.npy"), 1, "nope.npy")
    yield Case("run/npy directory", (*r, "--input", "image=adir"), 1, "adir", _mkdir("adir"))
    yield Case("run/npz given as npy", (*r, "--input", "image=z.npz"), 1, "z.npz",
               lambda d: np.savez(d / "z.npz", a=np.zeros(3)))
    yield Case("run/npy zero-size", (*r, "--input", "image=z.npy"), 1, "shape",
               _npy("z.npy", np.zeros((1, 3, 0, 32), np.float32)))
    yield Case("run/--check corrupted model", (*r, "--check", "bad.onnx"), 1, "bad.onnx",
               _truncate("bad.onnx", "model.onnx", 0.5))
    yield Case("run/--check random bytes", (*r, "--check", "bad.onnx"), 1, "bad.onnx",
               _random_bytes("bad.onnx", 999, 7))
    yield Case("run/--check missing", (*r, "--check", "nope.onnx"), 1, "nope.onnx")
    yield Case("run/--check a directory", (*r, "--check", "adir"), 1, "adir", _mkdir("adir"))
    yield Case("run/--check a binary", (*r, "--check", "model.bin"), 1, "model.bin")
    yield Case("run/--check mismatching model (other input)", (*r, "--check", "o.onnx"), 1,
               "o.onnx", _model("o.onnx", _relu([4])))
    yield Case("run/--check mismatching model (same input name, other shape)",
               (*r, "--check", "o.onnx"), 1, "image",
               _model("o.onnx", _relu([1, 3, 8, 8], name="image")))
    yield Case("run/--check mismatching model (same input, other dtype)",
               (*r, "--check", "o.onnx"), 1, "image",
               _model("o.onnx", _relu([1, 3, 32, 32], TensorProto.DOUBLE, name="image")))
    yield Case("run/--check model with external data missing", ("run", "stream.bin",
                                                                "--check", "ext2.onnx"), 1,
               "ext2.onnx", lambda d: shutil.copy(d / "ext.onnx", d / "ext2.onnx")
               if False else _external_model("ext2.onnx", location="gone.data")(d))


def kgraph_cases() -> Iterator[Case]:
    """ISPD 2020 kernel graphs and solutions."""
    k = ("-o", "B.sol")
    for seed in range(6):
        yield Case(f"kgraph/random bytes {seed}", ("r.kgraph", *k), 1, "r.kgraph",
                   _random_bytes("r.kgraph", 50 + 400 * seed, 100 + seed))
    yield Case("kgraph/latin-1 byte in a name", ("l.kgraph", *k), 1, "l.kgraph",
               lambda d: (d / "l.kgraph").write_bytes(
                   (ISPD / "tiny.kgraph").read_bytes().replace(b"name='k1'", b"name='k\xe91'")))
    yield Case("kgraph/NUL bytes", ("l.kgraph", *k), 1, "l.kgraph",
               lambda d: (d / "l.kgraph").write_bytes(
                   (ISPD / "tiny.kgraph").read_bytes().replace(b"k1", b"k\0")))
    yield Case("kgraph/empty", ("e.kgraph", *k), 1, "e.kgraph", _write("e.kgraph", ""))
    for key, val, word in (("width", "0", "width"), ("height", "0", "height"),
                           ("width", "-4", "width"), ("width", "100000000", "width"),
                           ("height", str(2**63), "height"), ("memlimit", "-1", "memlimit"),
                           ("memlimit", "0", "memlimit"), ("wlength", "-1", "wlength"),
                           ("wdeltat", "-1", "wdeltat"), ("wdeltat", "nan", "wdeltat"),
                           ("wlength", "1e999", "wlength"), ("wadapter", "-2", "wadapter"),
                           ("wdeltat", str(10**30), "wdeltat")):
        yield Case(f"kgraph/header {key}={val}", ("h.kgraph", *k), 1, word,
                   _kgraph_edit("h.kgraph", _header(key, val)))
    for what, old, new in (("conv W huge", "W=4 H=4 R=3", "W=4000000000 H=4 R=3"),
                           ("conv C huge", "C=8 K=8 T=1", "C=99999999999999999999 K=8 T=1"),
                           ("dblock f huge", "f=8 h=4", f"f={2**62} h=4"),
                           ("shape huge", "shape:[4][4][8]", f"shape:[4][4][{10**18}]"),
                           ("shape zero", "shape:[4][4][8]", "shape:[4][0][8]"),
                           ("conv T zero", "T=1 U=1", "T=0 U=1")):
        yield Case(f"kgraph/{what}", ("h.kgraph", *k), 1, "h.kgraph",
                   _kgraph_edit("h.kgraph", lambda t, o=old, n=new: t.replace(o, n, 1)))
    # wsec score
    s = ("score", "A.kgraph")
    for seed in range(4):
        yield Case(f"score/random bytes solution {seed}", (*s, "r.sol"), 1, "r.sol",
                   _random_bytes("r.sol", 64 + 300 * seed, 200 + seed))
        yield Case(f"score/random bytes kgraph {seed}", ("score", "r.kgraph", "A.sol"), 1,
                   "r.kgraph", _random_bytes("r.kgraph", 64 + 300 * seed, 300 + seed))
    yield Case("score/missing solution", (*s, "nope.sol"), 1, "nope.sol")
    yield Case("score/solution is a directory", (*s, "adir"), 1, "adir", _mkdir("adir"))
    yield Case("score/empty solution", (*s, "e.sol"), 1, "e.sol", _write("e.sol", ""))
    yield Case("score/latin-1 solution", (*s, "l.sol"), 1, "l.sol",
               lambda d: (d / "l.sol").write_bytes((d / "A.sol").read_bytes() + b"\xe9\n"))
    yield Case("score/solution of another graph", ("score", "o.kgraph", "A.sol"), 1, "A.sol",
               lambda d: shutil.copy(ISPD / "chain8.kgraph", d / "o.kgraph"))
    yield Case("score/solution with huge numbers", (*s, "h.sol"), 1, "h.sol",
               lambda d: (d / "h.sol").write_text(
                   (d / "A.sol").read_text().replace("1", "9" * 30, 3)), report_ok=True)
    yield Case("score/kgraph width=0", ("score", "h.kgraph", "A.sol"), 1, "width",
               _kgraph_edit("h.kgraph", _header("width", "0")))


def interrupt_cases() -> Iterator[Case]:
    """Ctrl-C at various moments of a compile, a run and an ISPD compile.
    A tiny model may finish before the signal: exit 0 with complete outputs
    is right then; exit 130 must leave every file as it was."""
    for t in (0.01, 0.05, 0.1, 0.2, 0.3, 0.5):
        yield Case(f"interrupt/compile at {t}s", ("model.onnx", "-o", "model.bin",
                                                  "--report-json", "r.json"), 130,
                   "interrupted", sigint_after=t, codes=(0,) if t > 0.01 else (),
                   may_write=("model.bin", "r.json"))
        yield Case(f"interrupt/compile --verify at {t}s", ("model.onnx", "-o", "v.bin",
                                                           "--verify"), 130, "interrupted",
                   sigint_after=t, codes=(0,) if t > 0.01 else (), may_write=("v.bin",))
        yield Case(f"interrupt/stream compile at {t}s", ("ext.onnx", "-o", "stream.bin",
                                                         "--mode", "stream"), 130,
                   "interrupted", sigint_after=t, codes=(0,) if t > 0.01 else (),
                   may_write=("stream.bin",))
        yield Case(f"interrupt/run at {t}s", ("run", "model.bin", "-o", "out.npz", "--check",
                                              "model.onnx"), 130, "interrupted",
                   sigint_after=t, codes=(0,) if t > 0.01 else (), may_write=("out.npz",))
        yield Case(f"interrupt/export-train at {t}s", ("export-train", "model.onnx", "-o",
                                                       "step.onnx"), 130, "interrupted",
                   sigint_after=t, codes=(0,) if t > 0.01 else (), may_write=("step.onnx",))
        yield Case(f"interrupt/kgraph at {t}s", ("A.kgraph", "-o", "B.sol", "--time-limit",
                                                 "30"), 130, "interrupted", sigint_after=t,
                   codes=(0,) if t > 0.01 else (), may_write=("B.sol",), keeps_best=True)


def cases() -> list[Case]:
    out = [*output_cases(), *size_cases(), *model_cases(), *option_cases(), *binary_cases(),
           *run_cases(), *kgraph_cases(), *interrupt_cases()]
    names = [c.name for c in out]
    dup = {n for n in names if names.count(n) > 1}
    assert not dup, f"duplicate case names: {sorted(dup)}"
    return out


# --- running a case -----------------------------------------------------------

@dataclass
class Result:
    code: int  # exit status (negative: killed by that signal)
    stdout: str
    stderr: str
    before: dict[str, str]
    after: dict[str, str]
    seconds: float
    notes: list[str] = field(default_factory=list)


def snapshot(d: pathlib.Path) -> dict[str, str]:
    """Every entry of the directory tree: kind and, for files, a content hash."""
    out = {}
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            p = pathlib.Path(root, name)
            rel = str(p.relative_to(d))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = "file:" + hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            else:
                out[rel] = f"special:{stat.S_IFMT(st.st_mode):o}"
    return out


def prepare(case: Case, base: pathlib.Path, d: pathlib.Path) -> None:
    d.mkdir(parents=True)
    for name in BASE_FILES:
        shutil.copy2(base / name, d / name)
    if case.make is not None:
        case.make(d)


def run_case(case: Case, base: pathlib.Path, d: pathlib.Path) -> Result:
    """Run `wsec` on the case in a forked child of this process."""
    prepare(case, base, d)
    before = snapshot(d)
    out_fd, out_path = _tmpfile(d.parent, d.name + ".stdout")
    err_fd, err_path = _tmpfile(d.parent, d.name + ".stderr")
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        _child(case, d, out_fd, err_fd)
    os.close(out_fd)
    os.close(err_fd)
    code = _wait(pid, TIME_LIMIT)
    secs = time.perf_counter() - t0
    stdout = pathlib.Path(out_path).read_text(encoding="utf-8", errors="replace")
    stderr = pathlib.Path(err_path).read_text(encoding="utf-8", errors="replace")
    os.unlink(out_path)
    os.unlink(err_path)
    return Result(code, stdout, stderr, before, snapshot(d), secs)


def _tmpfile(d: pathlib.Path, name: str) -> tuple[int, str]:
    path = str(d / name)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), path


def _child(case: Case, d: pathlib.Path, out_fd: int, err_fd: int) -> None:
    code = 71
    try:
        os.chdir(d)
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=True)
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
        resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import warnings

        # as a user who asked to see every warning: none may reach stderr
        sys.warnoptions[:] = ["always"]
        warnings.resetwarnings()
        warnings.simplefilter("always")
        # an interrupt that lands inside a library's `open` leaves it to the
        # garbage collector: noise of Python's, shown only under -W always
        warnings.simplefilter("ignore", ResourceWarning)
        from wsec.cli import main

        def fire() -> None:
            assert case.sigint_after is not None
            time.sleep(case.sigint_after)
            os.kill(os.getpid(), signal.SIGINT)

        try:
            if case.sigint_after is not None:  # inside: the timer may fire before start returns
                threading.Thread(target=fire, daemon=True).start()
            code = main(list(case.argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except KeyboardInterrupt:
            # the signal landed before `main` took over SIGINT (a loaded
            # machine can delay the main thread past the timer): as for a
            # process interrupted while Python starts, it dies of SIGINT
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a late signal is the harness's
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException as e:  # noqa: BLE001 - report anything, never run the parent's code
        try:
            os.write(2, f"campaign child: {type(e).__name__}: {e}\n".encode())
        except BaseException:  # noqa: BLE001
            pass
        code = 72
    os._exit(code)


def _wait(pid: int, limit: float) -> int:
    deadline = time.monotonic() + limit
    while True:
        got, status = os.waitpid(pid, os.WNOHANG)
        if got:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return -signal.SIGKILL
        time.sleep(0.01)


def problems(case: Case, r: Result) -> list[str]:
    """What is wrong with the result (empty: the case behaved)."""
    bad = []
    if r.code == -signal.SIGKILL:
        bad.append(f"did not finish in {TIME_LIMIT:g} s")
    elif r.code == -signal.SIGINT and case.sigint_after is not None:
        pass  # died of the signal before wsec started: nothing may have changed (below)
    elif r.code not in case.ok_codes:
        bad.append(f"exit {r.code}, expected {case.code}")
    lines = r.stderr.splitlines()
    if r.code == 1 and case.report_ok and not lines and r.stdout.strip():
        pass  # a failed check: the report on stdout says why
    elif r.code not in (0, -signal.SIGINT):
        if len(lines) != 1:
            bad.append(f"{len(lines)} stderr lines")
        elif not (lines[0].startswith("wsec: error: ")
                  or lines[0].startswith("wsec: interrupted")):
            bad.append("stderr is not 'wsec: error: ...'")
        if case.expect and case.expect not in r.stderr:
            bad.append(f"stderr lacks '{case.expect}'")
    elif lines and case.sigint_after is None:
        bad.append(f"stderr on success: {lines[0][:80]}")
    for word in ("Traceback", "internal error", "Warning:", "campaign child"):
        if word in r.stderr:
            bad.append(f"'{word}' on stderr")
    allowed = set(case.may_write) if r.code == 0 or (r.code == 130 and case.keeps_best) \
        else set()
    new = sorted(n for n in set(r.after) - set(r.before) if n not in allowed)
    gone = sorted(set(r.before) - set(r.after))
    changed = sorted(n for n in set(r.after) & set(r.before)
                     if r.after[n] != r.before[n] and n not in allowed)
    if new:
        bad.append(f"new files {new}")
    if gone:
        bad.append(f"files gone {gone}")
    if changed:
        bad.append(f"files changed {changed}")
    return bad


def main(argv: list[str]) -> int:
    import tempfile

    pick = argv[0] if argv else ""
    with tempfile.TemporaryDirectory(prefix="wsec-campaign-") as tmp:
        base = pathlib.Path(tmp) / "base"
        make_base(base)
        failed = 0
        chosen = [c for c in cases() if pick in c.name]
        for i, c in enumerate(chosen):
            r = run_case(c, base, pathlib.Path(tmp) / f"case{i}")
            bad = problems(c, r)
            failed += bool(bad)
            line = r.stderr.strip().splitlines()[-1][:150] if r.stderr.strip() else ""
            print(f"{'FAIL' if bad else 'ok  '} {c.name:<60} {r.code:>4} {r.seconds:5.2f}s "
                  f"{'; '.join(bad)} | {line}", flush=True)
            shutil.rmtree(pathlib.Path(tmp) / f"case{i}", ignore_errors=True)
        print(f"{len(chosen)} cases, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "tests"))
    sys.exit(main(sys.argv[1:]))
