"""Frontend for ISPD 2020 kernel graphs (`.kgraph`, Cerebras' contest format).

Why: the contest is the public benchmark of wsec's sizing + placement, so
its graphs load straight into the kernel level of the IR (property
"kernels") and the normal size/place passes, the scorer and the solution
writer run on them unchanged. Kernels use the `cs1` library kinds
ispd.conv / ispd.dblock / ispd.cblock; `input`/`output` pseudo nodes are not
placed and become the module's inputs/outputs.

Format:  a `(* key=value ... *)` header; `(* Node Definitions *)` lines
`conv[2] W=14 H=14 R=3 S=3 C=512 K=512 T=2 U=2 name='k2'`,
`dblock[5] f=2048 h=7 w=7 name='k5'`, `input[0] n=[112 112 128] name='k0'`;
`(* Connectivity *)` lines `cblock[ 1]:y -> dblock[ 6]:x, shape:[7][7][2048]`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from wsec.ir.errors import WsecError
from wsec.ir.graph import HOST, Edge, Kernel, Module
from wsec.ir.library_cs1 import ISPD_KINDS
from wsec.ir.limits import MAX_KGRAPH_PARAM, MAX_WEIGHT, grid_problem
from wsec.ir.types import TensorType

HEADER_INTS = ("width", "height", "wlength", "wdeltat", "wadapter", "memlimit")
CONV_ARGS = ("H", "W", "R", "S", "C", "K", "T", "U")
BLOCK_ARGS = {"f": "F", "h": "H", "w": "W"}  # kgraph spelling -> dims key
VALUE_DTYPE = "f16"

_NODE = re.compile(r"^(input|output|conv|dblock|cblock)\[\s*(\d+)\s*\](.*)$")
_EDGE = re.compile(r"^(\w+)\[\s*(\d+)\s*\]:(\w+)\s*->\s*(\w+)\[\s*(\d+)\s*\]:(\w+)\s*,"
                   r"\s*shape:\s*((?:\[\s*\d+\s*\])+)\s*$")
_ATTR = re.compile(r"(\w+)=('[^']*'|\[[^\]]*\]|\S+)")


class KgraphError(WsecError):
    """A malformed kernel graph; the message names the file and line."""


_Err = Callable[[int, str], KgraphError]
_Link = tuple[int, tuple[str, int, str], tuple[str, int, str], tuple[int, ...]]


@dataclass
class _Node:
    kind: str
    index: int
    name: str
    attrs: dict[str, str]
    line: int
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def load_kgraph(path: str | os.PathLike[str]) -> Module:
    """Parse a .kgraph file into a kernel-level Module (target cs1)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise KgraphError(f"{path}: cannot read kernel graph: {e.strerror}") from None
    return parse_kgraph(decode_text(raw, path, "kernel graph", KgraphError), path)


def decode_text(raw: bytes, path: str, what: str, error: type[WsecError]) -> str:
    """`raw` as UTF-8 text without NUL bytes, else `error` naming the line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise error(f"{path}:{line}: byte {raw[e.start]:#04x} is not UTF-8 text: this is not "
                    f"a {what} (which is ASCII text)") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise error(f"{path}:{line}: a NUL byte: this is not a {what} (which is text)")
    return text


def parse_kgraph(text: str, path: str = "<kgraph>") -> Module:
    """Parse kernel-graph text (see module docstring); `path` names it in errors."""
    header: dict[str, str] = {}
    nodes: dict[tuple[str, int], _Node] = {}
    links: list[_Link] = []
    in_header = False

    def err(lineno: int, msg: str) -> KgraphError:
        return KgraphError(f"{path}:{lineno}: {msg}")

    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith("(*"):
            body = line[2:]
            closed = body.endswith("*)")
            body = body[:-2] if closed else body
            if "=" in body:
                _header_line(body, header, lineno, err)
            in_header = not closed and (not body.strip() or "=" in body)
            continue
        if in_header:
            if line.endswith("*)"):
                in_header = False
                line = line[:-2].strip()
            if line:
                _header_line(line, header, lineno, err)
            continue
        if "->" in line:
            links.append(_parse_link(line, lineno, err))
            continue
        m = _NODE.match(line)
        if not m:
            raise err(lineno, f"cannot read line '{line}': expected a node definition such as "
                      "\"conv[1] W=14 H=14 ... name='k1'\" or a connection 'a[1]:y -> b[2]:x, "
                      "shape:[7][7][64]'")
        kind, idx = m.group(1), int(m.group(2))
        attrs = {k: v.strip("'") for k, v in _ATTR.findall(m.group(3))}
        if (kind, idx) in nodes:
            raise err(lineno, f"node {kind}[{idx}] is defined twice (first on line "
                      f"{nodes[(kind, idx)].line})")
        name = attrs.get("name") or f"{kind}{idx}"
        nodes[(kind, idx)] = _Node(kind, idx, name, attrs, lineno)
    return _build(path, header, nodes, links, err)


def _header_line(text: str, header: dict[str, str], lineno: int, err: _Err) -> None:
    for part in text.split():
        key, sep, val = part.partition("=")
        if not sep or not key:
            raise err(lineno, f"header entry '{part}' is not key=value")
        header[key] = val


def _parse_link(line: str, lineno: int, err: _Err) -> _Link:
    m = _EDGE.match(line)
    if not m:
        raise err(lineno, f"cannot read connection '{line}': expected "
                  "'src[i]:port -> dst[j]:port, shape:[d0][d1]...'")
    shape = tuple(int(d) for d in re.findall(r"\d+", m.group(7)))
    if any(not 1 <= d <= MAX_KGRAPH_PARAM for d in shape):
        raise err(lineno, f"connection shape {list(shape)}: every dimension must be from 1 to "
                  f"{MAX_KGRAPH_PARAM}")
    return (lineno, (m.group(1), int(m.group(2)), m.group(3)),
            (m.group(4), int(m.group(5)), m.group(6)), shape)


def _dims(n: _Node, memlimit: int, err: _Err) -> dict[str, int]:
    keys = CONV_ARGS if n.kind == "conv" else tuple(BLOCK_ARGS)
    dims: dict[str, int] = {}
    for key in keys:
        if key not in n.attrs:
            raise err(n.line, f"{n.kind}[{n.index}] ('{n.name}') lacks argument {key}= "
                      f"(a {n.kind} needs {' '.join(keys)})")
        try:
            v = int(n.attrs[key])
        except ValueError:
            raise err(n.line, f"{n.kind}[{n.index}] ('{n.name}'): {key}={n.attrs[key]} is not "
                      "an integer") from None
        if v < 1 or v > MAX_KGRAPH_PARAM:
            raise err(n.line, f"{n.kind}[{n.index}] ('{n.name}'): {key}={v} must be from 1 to "
                      f"{MAX_KGRAPH_PARAM}")
        dims[BLOCK_ARGS.get(key, key)] = v
    if n.kind != "conv" and dims["F"] % 4:
        raise err(n.line, f"{n.kind}[{n.index}] ('{n.name}'): f={dims['F']} must be a "
                  "multiple of 4 (its convs use F/4 features)")
    dims["memlimit"] = memlimit
    return dims


def _build(path: str, header: dict[str, str], nodes: dict[tuple[str, int], _Node],
           links: list[_Link], err: _Err) -> Module:
    ints: dict[str, int] = {}
    for key in HEADER_INTS:
        if key not in header:
            raise err(1, f"the header lacks '{key}=' (needs {', '.join(HEADER_INTS)})")
        try:
            ints[key] = int(header[key])
        except ValueError:
            raise err(1, f"header {key}={header[key]} is not an integer") from None
    bad = grid_problem(ints["width"], ints["height"], placed_only=True)
    if bad:
        raise err(1, f"header width={ints['width']} height={ints['height']}: the grid is "
                  f"unusable: {bad}")
    if not 1 <= ints["memlimit"] <= 1 << 40:
        raise err(1, f"header memlimit={ints['memlimit']}: the memory per PE must be from 1 to "
                  f"2^40 bytes")
    for key in ("wlength", "wdeltat", "wadapter"):
        if not 0 <= ints[key] <= MAX_WEIGHT:
            raise err(1, f"header {key}={ints[key]}: an objective weight must be from 0 to "
                      f"{MAX_WEIGHT:.0e}")
    test = header.get("test", os.path.splitext(os.path.basename(path))[0])
    m = Module(name=test)
    m.attrs.update({"target": "cs1", "grid": [ints["width"], ints["height"]], "test": test,
                    **{k: ints[k] for k in HEADER_INTS if k not in ("width", "height")}})
    names: dict[str, _Node] = {}
    for n in nodes.values():
        if n.name in names:
            raise err(n.line, f"name '{n.name}' is used twice (also on line "
                      f"{names[n.name].line}); node names must be unique")
        names[n.name] = n
    # one value per (source node, port, shape): a fan-out is one multicast edge
    values: dict[tuple[str, int, str, tuple[int, ...]], tuple[str, _Node, list[_Node]]] = {}
    for lineno, src, dst, shape in links:
        s, d = (nodes.get((k, i)) for k, i, _ in (src, dst))
        for who, node in ((src, s), (dst, d)):
            if node is None:
                raise err(lineno, f"connection names {who[0]}[{who[1]}], which is not defined")
        assert s is not None and d is not None
        if s.kind == "output" or d.kind == "input":
            raise err(lineno, f"connection {s.kind}[{s.index}] -> {d.kind}[{d.index}] runs "
                      "the wrong way (inputs only send, outputs only receive)")
        key = (s.kind, s.index, src[2], shape)
        if key not in values:
            base = s.name if s.kind == "input" else f"{s.name}:{src[2]}"
            vname = m.fresh_name(base)
            m.add_value(vname, TensorType(VALUE_DTYPE, shape))
            values[key] = (vname, s, [])
            s.outputs.append(vname)
            if s.kind == "input":
                m.inputs.append(vname)
        vname, _, dsts = values[key]
        if d.kind == "output":
            if vname not in m.outputs:
                m.outputs.append(vname)
        elif vname not in d.inputs:
            d.inputs.append(vname)
        if d not in dsts:
            dsts.append(d)
    kernels = {n.name: n for n in nodes.values() if n.kind in ISPD_KINDS}
    if not kernels:
        raise err(1, "the kernel graph defines no conv, dblock or cblock node")
    order = _topo_order(kernels, err)
    for n in order:
        m.nodes.append(Kernel(name=n.name, op=ISPD_KINDS[n.kind].name, inputs=list(n.inputs),
                              outputs=list(n.outputs), kind=ISPD_KINDS[n.kind].name,
                              dims=_dims(n, ints["memlimit"], err), origin=[n.name],
                              attrs={"ispd_index": n.index}))
    for (_kind, _idx, _port, shape), (vname, s, dsts) in values.items():
        src = HOST if s.kind == "input" else s.name
        bps = 1
        for dim in shape:
            bps *= dim
        m.edges.append(Edge(vname, src, [HOST if d.kind == "output" else d.name for d in dsts],
                            bps))
    m.properties = {"canonical", "kernels"}
    return m


def _topo_order(kernels: dict[str, _Node], err: _Err) -> list[_Node]:
    """Kernels in dataflow order (Kahn, ties by file index) so uses follow definitions."""
    producer = {v: n for n in kernels.values() for v in n.outputs}
    preds = {name: {producer[v].name for v in n.inputs if v in producer}
             for name, n in kernels.items()}
    done: list[_Node] = []
    seen: set[str] = set()
    ready = sorted((n for n in kernels.values() if not preds[n.name]), key=lambda n: n.index)
    while ready:
        n = ready.pop(0)
        done.append(n)
        seen.add(n.name)
        for other in kernels.values():
            if other.name not in seen and other not in ready and preds[other.name] <= seen:
                ready.append(other)
        ready.sort(key=lambda x: x.index)
    if len(done) != len(kernels):
        left = sorted((n for n in kernels.values() if n.name not in seen), key=lambda n: n.index)
        raise err(left[0].line, "the connections form a cycle through "
                  + ", ".join(f"{n.kind}[{n.index}] ('{n.name}')" for n in left[:6]))
    return done
