"""Parse the textual IR of docs/ir.md back into a `Module`.

The exact inverse of `printer.print_module`, so every pass can be run alone
on a printed file (`wsec opt FILE.wsir`) and golden tests can be written by
hand. One statement per line; a kernel's body lines sit between its `{` and
a closing `}` line. A regex tokenizer feeds a small recursive-descent parser;
a routed edge's `bundle` lines follow it.
The parser checks syntax and types only; graph rules are `verify_module`'s.
"""

from __future__ import annotations

import binascii
import gc
import json
import re
from typing import Any

import numpy as np

from .errors import WsecError
from .graph import Bundle, Edge, Kernel, Module, Node, Rect, SramRegion, Value
from .types import DTYPES, Dense, External, Splat, TensorType

__all__ = ["ParseError", "parse_module"]

_STR = r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"'
_TOKEN = re.compile(rf"""
   (?P<ws>[ \t\r\f\v]+)
  |(?P<comment>//.*)
  |(?P<str>{_STR})
  |(?P<vref>%(?:{_STR}|(?:[A-Za-z0-9_.:\-]|/(?!/))+))
  |(?P<num>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![A-Za-z0-9_.])|-?inf\b|nan\b)
  |(?P<ident>[A-Za-z_@][A-Za-z0-9_.]*)
  |(?P<punct>->|[{{}}\[\](),=:])
""", re.X)
_KERNEL_FIELDS = ("dims", "origin", "op", "attrs", "knobs", "rect", "rotated", "cost", "sram")


class ParseError(WsecError):
    """A syntax or type error in IR text; the message starts with `line N:`."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


Tok = tuple[str, str]
_EOL: Tok = ("eol", "")


def _describe(tok: Tok) -> str:
    kind, text = tok
    if kind == "eol":
        return "end of line"
    return f"'{text if len(text) <= 40 else text[:37] + '...'}'"


class _Line:
    """Tokens of one line and a cursor over them."""

    def __init__(self, text: str, lineno: int) -> None:
        self.lineno = lineno
        toks: list[Tok] = []
        pos = 0
        for mt in _TOKEN.finditer(text):
            if mt.start() != pos:
                break
            pos = mt.end()
            kind = mt.lastgroup or ""
            if kind not in ("ws", "comment"):
                toks.append((kind, mt.group()))
        if pos != len(text):
            what = ("unterminated string" if text.startswith(('"', '%"'), pos)
                    else f"unexpected character {text[pos]!r}")
            raise ParseError(lineno, f"{what} at column {pos + 1}")
        self.toks = toks
        self.i = 0

    # --- cursor ---------------------------------------------------------
    def peek(self) -> Tok:
        return self.toks[self.i] if self.i < len(self.toks) else _EOL

    def next(self) -> Tok:
        t = self.peek()
        self.i += 1
        return t

    def fail(self, expected: str) -> ParseError:
        return ParseError(self.lineno, f"expected {expected}, found {_describe(self.peek())}")

    def at(self, kind: str, text: str | None = None) -> bool:
        k, t = self.peek()
        return k == kind and (text is None or t == text)

    def expect(self, kind: str, text: str | None = None, what: str | None = None) -> str:
        if not self.at(kind, text):
            raise self.fail(what or (f"'{text}'" if text else kind))
        return self.next()[1]

    def accept(self, kind: str, text: str) -> bool:
        if self.at(kind, text):
            self.i += 1
            return True
        return False

    def end(self) -> None:
        if self.i < len(self.toks):
            raise self.fail("end of line")

    # --- pieces ---------------------------------------------------------
    def json(self, text: str) -> str:
        try:
            return json.loads(text)
        except ValueError as e:
            raise ParseError(self.lineno, f"bad string {text[:40]}: {e}") from None

    def string(self, what: str = "a string") -> str:
        return self.json(self.expect("str", what=what))

    def name(self, what: str) -> str:
        """An op or kernel kind: identifier or JSON string."""
        k, t = self.peek()
        if k == "ident":
            self.i += 1
            return t
        if k == "str":
            self.i += 1
            return self.json(t)
        raise self.fail(what)

    def integer(self, what: str = "an integer") -> int:
        t = self.expect("num", what=what)
        try:
            return int(t)
        except ValueError:
            raise ParseError(self.lineno, f"expected {what}, found '{t}'") from None

    def vref(self) -> str:
        t = self.expect("vref", what="a value name like %x")
        return self.json(t[1:]) if t[1] == '"' else t[1:]

    def vrefs(self) -> list[str]:
        """`(%a, %b, ...)`"""
        self.expect("punct", "(")
        out: list[str] = []
        if not self.accept("punct", ")"):
            while True:
                out.append(self.vref())
                if self.accept("punct", ")"):
                    break
                self.expect("punct", ",", what="',' or ')'")
        return out

    def type(self) -> TensorType:
        k, dt = self.peek()
        if k != "ident" or dt not in DTYPES:
            raise self.fail(f"a type like f32[1,3] (dtype one of {', '.join(DTYPES)})")
        self.i += 1
        self.expect("punct", "[")
        dims: list[int] = []
        if not self.accept("punct", "]"):
            while True:
                dims.append(self.integer("a dimension"))
                if self.accept("punct", "]"):
                    break
                self.expect("punct", ",", what="',' or ']'")
        return TensorType(dt, tuple(dims))

    def value(self) -> Any:
        """An attribute value: number, string, true/false/null, list or dict."""
        k, t = self.peek()
        if k == "num":
            self.i += 1
            if t in ("inf", "-inf", "nan") or any(c in t for c in ".eE"):
                return float(t)
            return int(t)
        if k == "str":
            self.i += 1
            return self.json(t)
        if k == "ident" and t in ("true", "false", "null"):
            self.i += 1
            return {"true": True, "false": False, "null": None}[t]
        if k == "punct" and t == "[":
            self.i += 1
            out: list[Any] = []
            if not self.accept("punct", "]"):
                while True:
                    out.append(self.value())
                    if self.accept("punct", "]"):
                        break
                    self.expect("punct", ",", what="',' or ']'")
            return out
        if k == "punct" and t == "{":
            return self.dict()
        raise self.fail("a value (number, string, true/false, [list] or {dict})")

    def dict(self) -> dict[str, Any]:
        """`{key = value, ...}`; keys are identifiers or JSON strings."""
        self.expect("punct", "{")
        out: dict[str, Any] = {}
        if self.accept("punct", "}"):
            return out
        while True:
            k, t = self.peek()
            if k == "ident" or (k == "num" and t in ("inf", "nan")):
                key = t
            elif k == "str":
                key = self.json(t)
            else:
                raise self.fail("a key")
            self.i += 1
            if key in out:
                raise ParseError(self.lineno, f"key '{key}' given twice")
            self.expect("punct", "=", what=f"'=' after key '{key}'")
            out[key] = self.value()
            if self.accept("punct", "}"):
                return out
            self.expect("punct", ",", what="',' or '}'")


class _Parser:
    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.m: Module | None = None
        self.stack: list[tuple[Kernel, int]] = []  # open kernel bodies
        self.last_edge: Edge | None = None
        self.payload: str | None = None  # base64 of the current line's dense(...)

    # --- helpers --------------------------------------------------------
    def module(self, ln: _Line) -> Module:
        if self.m is None:
            raise ParseError(ln.lineno, "expected a 'module \"name\"' line before anything else")
        return self.m

    def define(self, ln: _Line, name: str, t: TensorType | None) -> Value | None:
        m = self.module(ln)
        if not name or t is None:
            return m.values.get(name) if name else None
        v = m.values.get(name)
        if v is None:
            v = m.values[name] = Value(name, t)
        elif v.type != t:
            raise ParseError(ln.lineno, f"value %{name} declared as {t} but earlier as {v.type}")
        return v

    def defs(self, ln: _Line) -> list[str]:
        """`(%y : f32[..], ...)`: defines each typed value."""
        ln.expect("punct", "(")
        out: list[str] = []
        if ln.accept("punct", ")"):
            return out
        while True:
            name = ln.vref()
            t = ln.type() if ln.accept("punct", ":") else None
            self.define(ln, name, t)
            out.append(name)
            if ln.accept("punct", ")"):
                return out
            ln.expect("punct", ",", what="',' or ')'")

    def add_node(self, ln: _Line, n: Node) -> None:
        m = self.module(ln)
        (self.stack[-1][0].body if self.stack else m.nodes).append(n)

    # --- statements -----------------------------------------------------
    def stmt_module(self, ln: _Line) -> None:
        if self.m is not None:
            raise ParseError(ln.lineno, "a second 'module' line (one module per file)")
        self.m = Module(ln.string("the module name as a string"))
        if ln.at("punct", "{"):
            self.m.attrs = ln.dict()

    def stmt_properties(self, ln: _Line) -> None:
        m = self.module(ln)
        v = ln.value()
        if not isinstance(v, list) or not all(isinstance(p, str) for p in v):
            raise ParseError(ln.lineno, 'expected properties ["name", ...]')
        m.properties = set(v)

    def stmt_input(self, ln: _Line) -> None:
        name = ln.vref()
        ln.expect("punct", ":", what="':' and the input's type")
        self.define(ln, name, ln.type())
        self.module(ln).inputs.append(name)

    def stmt_output(self, ln: _Line) -> None:
        name = ln.vref()
        self.module(ln).outputs.append(name)

    def stmt_const(self, ln: _Line) -> None:
        name = ln.vref()
        ln.expect("punct", ":", what="':' and the constant's type")
        t = ln.type()
        ln.expect("punct", "=", what="'=' and the constant's data")
        kind = ln.expect("ident", what="splat(...), dense(...) or external(...)")
        ln.expect("punct", "(")
        if kind == "splat":
            x = ln.value()
            k = t.np_dtype.kind
            if k == "b" and isinstance(x, bool):
                c: Any = Splat(t, x)
            elif k in "iu" and isinstance(x, int) and not isinstance(x, bool):
                c = Splat(t, x)
            elif k == "f" and isinstance(x, int | float) and not isinstance(x, bool):
                c = Splat(t, float(x))
            else:
                raise ParseError(ln.lineno, f"splat value {x!r} does not fit type {t}")
        elif kind == "dense":
            text = ln.string("base64 data as a string")
            c = self.dense(ln, name, t, self.payload if self.payload is not None else text)
        elif kind == "external":
            path = ln.string("the external file path")
            ln.expect("punct", ",")
            off = ln.integer("a byte offset")
            ln.expect("punct", ",")
            length = ln.integer("a byte length")
            perm = ln.value() if ln.accept("punct", ",") else None
            if perm is not None and (not isinstance(perm, list) or sorted(perm) != list(
                    range(len(t.shape)))):
                raise ParseError(ln.lineno, f"external perm {perm!r} is no permutation of the "
                                            f"{len(t.shape)} axes of {t}")
            c = External(t, path, off, length, base_dir=self.base_dir, perm=perm)
        else:
            raise ParseError(ln.lineno, f"expected splat, dense or external, found '{kind}'")
        ln.expect("punct", ")")
        v = self.define(ln, name, t)
        assert v is not None
        if v.const is not None:
            raise ParseError(ln.lineno, f"constant %{name} defined twice")
        v.const = c

    @staticmethod
    def dense(ln: _Line, name: str, t: TensorType, text: str) -> Dense:
        try:
            raw = binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error as e:
            raise ParseError(ln.lineno, f"dense data of %{name} is not valid base64: {e}") from None
        if len(raw) != t.nbytes:
            raise ParseError(ln.lineno, f"dense data of %{name} has {len(raw)} bytes but its "
                             f"type {t} needs {t.nbytes}")
        arr = np.frombuffer(raw, dtype=t.np_dtype.newbyteorder("<")).astype(t.np_dtype)
        return Dense(t, arr.reshape(t.shape))

    def stmt_node(self, ln: _Line) -> None:
        name = ln.string("the node name as a string")
        ln.expect("punct", "=", what="'=' after the node name")
        op = ln.name("an op name")
        ins = ln.vrefs()
        ln.expect("punct", "->", what="'->' and the outputs")
        outs = self.defs(ln)
        attrs = ln.dict() if ln.at("punct", "{") else {}
        self.add_node(ln, Node(name, op, ins, outs, attrs))

    def stmt_kernel(self, ln: _Line) -> None:
        name = ln.string("the kernel name as a string")
        kind = ln.name("a kernel kind")
        ins = ln.vrefs()
        ln.expect("punct", "->", what="'->' and the outputs")
        outs = self.defs(ln)
        if not ln.at("punct", "{"):
            raise ln.fail("the kernel fields {dims = {...}, origin = [...], ...}")
        f = ln.dict()
        ln.expect("punct", "{", what="'{' opening the kernel body")
        bad = [k for k in f if k not in _KERNEL_FIELDS]
        if bad:
            raise ParseError(ln.lineno, f"unknown kernel field '{bad[0]}' "
                             f"(expected one of {', '.join(_KERNEL_FIELDS)})")
        k = Kernel(name, f.get("op", kind), ins, outs, attrs=self._dict(ln, f, "attrs") or {},
                   kind=kind, dims=self._dict(ln, f, "dims") or {},
                   origin=self._strs(ln, f.get("origin", []), "origin"),
                   knobs=self._dict(ln, f, "knobs"), cost=self._dict(ln, f, "cost"),
                   rotated=bool(f.get("rotated", False)))
        if "rect" in f:
            r = f["rect"]
            if not (isinstance(r, list) and len(r) == 4 and all(type(x) is int for x in r)):
                raise ParseError(ln.lineno, f"kernel '{name}': rect must be [x, y, w, h], got {r}")
            k.rect = Rect(*r)
        if "sram" in f:
            regions = []
            for s in f["sram"] if isinstance(f["sram"], list) else [None]:
                if not (isinstance(s, list) and len(s) == 3 and isinstance(s[0], str)
                        and type(s[1]) is int and type(s[2]) is int):
                    raise ParseError(ln.lineno, f"kernel '{name}': sram must be a list of "
                                     f"[\"name\", offset, size], got {s}")
                regions.append(SramRegion(*s))
            k.sram = regions
        self.add_node(ln, k)
        self.stack.append((k, ln.lineno))

    @staticmethod
    def _dict(ln: _Line, f: dict[str, Any], key: str) -> dict[str, Any] | None:
        v = f.get(key)
        if v is not None and not isinstance(v, dict):
            raise ParseError(ln.lineno, f"kernel field '{key}' must be a {{dict}}, got {v!r}")
        return v

    @staticmethod
    def _strs(ln: _Line, v: Any, what: str) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
            raise ParseError(ln.lineno, f"{what} must be a list of strings, got {v!r}")
        return v

    def stmt_edge(self, ln: _Line) -> None:
        m = self.module(ln)
        value = ln.vref()
        ln.expect("ident", "from", what="'from'")
        src = ln.string("the source kernel name (or \"@host\")")
        ln.expect("ident", "to", what="'to'")
        dsts = self._strs(ln, ln.value(), "edge destinations")
        ln.expect("ident", "bytes", what="'bytes'")
        nbytes = ln.integer("bytes per sample")
        e = Edge(value, src, dsts, nbytes)
        m.edges.append(e)
        self.last_edge = e

    def stmt_bundle(self, ln: _Line) -> None:
        e = self.last_edge
        if e is None:
            raise ParseError(ln.lineno, "a 'bundle' line must follow its 'edge' line")
        sink = ln.string("the bundle's sink (a kernel name or \"@host\")")
        nums: dict[str, Any] = {}
        for word in ("color", "lanes", "axis", "reach", "path"):
            ln.expect("ident", word, what=f"'{word}'")
            nums[word] = ln.integer(word) if word in ("color", "lanes", "reach") else ln.value()
        axis, path = nums["axis"], nums["path"]
        if not (isinstance(axis, list) and len(axis) == 2
                and all(isinstance(v, int) for v in axis)):
            raise ParseError(ln.lineno, f"bundle axis must be [dx, dy], got {axis!r}")
        if not (isinstance(path, list) and path and all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) for v in p)
                for p in path)):
            raise ParseError(ln.lineno, f"bundle path must be a list of [x, y] points, "
                             f"got {path!r}")
        cut = ""
        if ln.accept("ident", "cut"):
            cut = ("owners" if ln.accept("ident", "owners")
                   else "halo" if ln.accept("ident", "halo")
                   else ln.expect("ident", "rows", what="the cut 'rows', 'owners' or 'halo'"))
        pitch = 1
        if ln.accept("ident", "pitch"):
            pitch = ln.integer("pitch")
            if pitch < 1:
                raise ParseError(ln.lineno, f"bundle pitch must be >= 1, got {pitch}")
        src_pitch = 0
        if ln.accept("ident", "src_pitch"):
            src_pitch = ln.integer("src_pitch")
            if not 1 <= src_pitch <= pitch:
                raise ParseError(ln.lineno, f"bundle src_pitch must lie in 1..{pitch} (its "
                                 f"pitch: lanes widen, never narrow), got {src_pitch}")
        if e.bundles is None:
            e.bundles = []
        e.bundles.append(Bundle(sink, nums["color"], nums["lanes"], (axis[0], axis[1]),
                                tuple((p[0], p[1]) for p in path), nums["reach"], cut, pitch,
                                src_pitch))

    # --- driver ---------------------------------------------------------
    def parse(self, text: str) -> Module:
        statements = {
            "module": self.stmt_module, "properties": self.stmt_properties,
            "input": self.stmt_input, "output": self.stmt_output, "const": self.stmt_const,
            "node": self.stmt_node, "kernel": self.stmt_kernel, "edge": self.stmt_edge,
            "bundle": self.stmt_bundle,
        }
        lineno = 0
        for lineno, raw in enumerate(text.split("\n"), 1):
            self.payload = None
            at = raw.find('dense("')
            if at >= 0:  # keep megabytes of base64 out of the tokenizer
                end = raw.find('"', at + 7)
                if end > 0:
                    self.payload = raw[at + 7:end]
                    raw = raw[:at + 7] + raw[end:]
            ln = _Line(raw, lineno)
            if not ln.toks:
                continue
            kind, word = ln.next()
            if word != "bundle":
                self.last_edge = None
            if kind == "punct" and word == "}":
                if not self.stack:
                    raise ParseError(lineno, "'}' without an open kernel body")
                self.stack.pop()
                ln.end()
                continue
            stmt = statements.get(word) if kind == "ident" else None
            if stmt is None:
                raise ParseError(lineno, f"expected a statement ({', '.join(statements)}), "
                                 f"found {_describe((kind, word))}")
            if self.stack and word not in ("node", "kernel"):
                k, at = self.stack[-1]
                raise ParseError(lineno, f"expected '}}' closing the body of kernel '{k.name}' "
                                 f"(opened on line {at}), found '{word}'")
            stmt(ln)
            ln.end()
        if self.stack:
            k, at = self.stack[-1]
            raise ParseError(lineno, f"end of input inside the body of kernel '{k.name}' "
                             f"(opened on line {at}): expected '}}'")
        if self.m is None:
            raise ParseError(max(lineno, 1), "expected a 'module \"name\"' line, found no module")
        return self.m


def parse_module(text: str, base_dir: str = "") -> Module:
    """Parse IR text (docs/ir.md) into a Module; raise ParseError on bad input.

    `base_dir` becomes `External.base_dir` of external constants, so their
    paths resolve relative to the IR file's directory.
    """
    enabled = gc.isenabled()
    gc.disable()  # parsing allocates only acyclic objects; collections would cost ~2x
    try:
        return _Parser(base_dir).parse(text)
    finally:
        if enabled:
            gc.enable()
