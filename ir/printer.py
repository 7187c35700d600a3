"""Print a `Module` in the textual IR of docs/ir.md.

The text is the observable output of every pass (golden tests FileCheck it)
and the input of `wsec opt`, so it must be deterministic (sorted attribute
keys, `repr` floats) and exact (parse_module(print_module(m)) == m). Output
is built as a list of lines joined once: printing stays linear in the module
size even with thousands of kernels.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np

from .graph import Edge, Kernel, Module, Node
from .types import ConstData, Dense, External, Splat, TensorType

# A value name printed without quotes; "//" would start a comment.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:/-]+")
# Dictionary keys, ops and kernel kinds printed without quotes.
PLAIN_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
# Identifiers with a meaning of their own as attribute values.
KEYWORDS = frozenset({"true", "false", "null", "inf", "nan"})

INDENT = "  "


def vref(name: str) -> str:
    """`%name`, or `%"name"` (JSON) when the name is not a plain identifier."""
    if PLAIN_NAME.fullmatch(name) and "//" not in name:
        return "%" + name
    return "%" + json.dumps(name)


def ident(text: str) -> str:
    """An op / kind / dictionary key: bare when it is a plain identifier."""
    if PLAIN_IDENT.fullmatch(text) and text not in KEYWORDS:
        return text
    return json.dumps(text)


def fmt_float(x: float) -> str:
    """`repr` of a float (round-trips exactly); non-finite as inf/-inf/nan."""
    x = float(x)
    if math.isnan(x):
        return "nan"
    return repr(x)


def fmt_attr(v: Any) -> str:
    """An attribute value: int, float, str, bool, None, list/tuple or dict."""
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        return fmt_float(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list | tuple | np.ndarray):
        return "[" + ", ".join([fmt_attr(x) for x in v]) + "]"
    if isinstance(v, dict):
        return fmt_dict(v)
    if v is None:
        return "null"
    if isinstance(v, bytes):
        return json.dumps(v.decode("utf-8", "surrogateescape"))
    raise TypeError(f"cannot print attribute value {v!r} of type {type(v).__name__}")


def fmt_dict(d: dict[str, Any]) -> str:
    """`{key = value, ...}` with keys sorted."""
    return "{" + ", ".join([f"{ident(str(k))} = {fmt_attr(d[k])}" for k in sorted(d)]) + "}"


def fmt_type(t: TensorType) -> str:
    return f"{t.dtype}[{','.join([str(d) for d in t.shape])}]"


def fmt_const(c: ConstData) -> str:
    """`splat(v)`, `dense("base64")` or `external("path", offset, length[, perm])`."""
    if isinstance(c, Splat):
        kind = c.type.np_dtype.kind
        if kind == "b":
            return f"splat({'true' if c.value else 'false'})"
        if kind in "iu":
            return f"splat({int(c.value)})"
        return f"splat({fmt_float(c.value)})"
    if isinstance(c, Dense):
        return f'dense("{c.to_base64()}")'
    if isinstance(c, External):
        perm = "" if c.perm is None else f", {list(c.perm)}"
        return f"external({json.dumps(c.path)}, {int(c.offset)}, {int(c.length)}{perm})"
    raise TypeError(f"cannot print constant of type {type(c).__name__}")


def _def(m: Module, name: str) -> str:
    """A defined value: `%name : type` (type omitted if the value is unknown)."""
    v = m.values.get(name) if name else None
    return f"{vref(name)} : {fmt_type(v.type)}" if v is not None else vref(name)


def _kernel_fields(k: Kernel) -> str:
    """The first `{...}` of a kernel line, in the fixed order of docs/ir.md."""
    parts = [f"dims = {fmt_dict(k.dims)}", f"origin = {fmt_attr(k.origin)}"]
    if k.op != k.kind:
        parts.append(f"op = {json.dumps(k.op)}")
    if k.attrs:
        parts.append(f"attrs = {fmt_dict(k.attrs)}")
    if k.knobs is not None:
        parts.append(f"knobs = {fmt_dict(k.knobs)}")
    if k.rect is not None:
        r = k.rect
        parts.append(f"rect = [{int(r.x)}, {int(r.y)}, {int(r.w)}, {int(r.h)}]")
    if k.rect is not None or k.rotated:
        parts.append(f"rotated = {1 if k.rotated else 0}")
    if k.cost is not None:
        parts.append(f"cost = {fmt_dict(k.cost)}")
    if k.sram is not None:
        regions = ", ".join([f"[{json.dumps(s.name)}, {int(s.offset)}, {int(s.size)}]"
                             for s in k.sram])
        parts.append(f"sram = [{regions}]")
    return "{" + ", ".join(parts) + "}"


def _print_node(m: Module, n: Node, depth: int, out: list[str]) -> None:
    pad = INDENT * depth
    ins = ", ".join([vref(i) for i in n.inputs])
    outs = ", ".join([_def(m, o) for o in n.outputs])
    if isinstance(n, Kernel):
        out.append(f"{pad}kernel {json.dumps(n.name)} {ident(n.kind)}({ins}) -> ({outs}) "
                   f"{_kernel_fields(n)} {{")
        for b in n.body:
            _print_node(m, b, depth + 1, out)
        out.append(pad + "}")
        return
    line = f"{pad}node {json.dumps(n.name)} = {ident(n.op)}({ins}) -> ({outs})"
    if n.attrs:
        line += " " + fmt_dict(n.attrs)
    out.append(line)


def _print_edge(e: Edge, out: list[str]) -> None:
    line = (f"edge {vref(e.value)} from {json.dumps(e.src)} to "
            f"[{', '.join([json.dumps(d) for d in e.dsts])}] bytes {int(e.bytes_per_sample)}")
    out.append(line)
    for b in e.bundles or ():
        path = ", ".join(f"[{x}, {y}]" for x, y in b.path)
        out.append(f"  bundle {json.dumps(b.sink)} color {int(b.color)} lanes {int(b.lanes)} "
                   f"axis [{b.axis[0]}, {b.axis[1]}] reach {int(b.reach)} path [{path}]"
                   + (f" cut {b.cut}" if b.cut else "")
                   + (f" pitch {int(b.pitch)}" if b.pitch != 1 else "")
                   + (f" src_pitch {int(b.src_pitch)}" if b.src_pitch else ""))


def print_module(m: Module) -> str:
    """The module in the textual IR (docs/ir.md), ending with a newline."""
    out: list[str] = []
    head = f"module {json.dumps(m.name)}"
    if m.attrs:
        head += " " + fmt_dict(m.attrs)
    out.append(head)
    if m.properties:
        out.append("properties [" + ", ".join([json.dumps(p) for p in sorted(m.properties)]) + "]")
    for name in m.inputs:
        out.append(f"input {_def(m, name)}")
    for key, v in m.values.items():
        if v.const is not None:
            out.append(f"const {vref(key)} : {fmt_type(v.type)} = {fmt_const(v.const)}")
    for n in m.nodes:
        _print_node(m, n, 0, out)
    for e in m.edges:
        _print_edge(e, out)
    for name in m.outputs:
        out.append(f"output {vref(name)}")
    out.append("")
    return "\n".join(out)
