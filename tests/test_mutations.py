"""Property-based bad inputs (hypothesis): mutated binaries and ONNX models.

The campaign (tests/badinputs.py) tries the classes of bad input people
found; these properties let hypothesis look for the ones nobody thought of,
and shrink what it finds to a small example. The property is the issue's:
a mutated file either works or fails with a WsecError (one line for the
user), never with another exception — for the loader, for the simulator on
whatever the loader accepts, and for the ONNX frontend.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import onnx
import pytest
from conftest import EXAMPLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsec.ir.errors import WsecError

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

NASTY = st.one_of(st.sampled_from([-1, 0, 1, 2**31, 2**62, 2**63 - 1, 10**30, -(2**63), 0.5,
                                   float("nan"), "", "x", "f32[1]", None, True, [], {}, [0, 1],
                                   [-1, 2], {"a": 1}]),
                  st.integers(), st.text(max_size=8))


class _Binary(bytes):
    def __repr__(self) -> str:  # hypothesis prints its arguments on failure
        return f"<tiny_cnn binary, {len(self)} bytes>"


@pytest.fixture(scope="module")
def good_binary(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from wsec.backends.emit import emit_bytes
    from wsec.driver import CompileOptions, compile_model

    res = compile_model(str(EXAMPLE), CompileOptions())
    return _Binary(emit_bytes(res.module))


def _load_and_run(data: bytes) -> None:
    """Load the bytes; if the loader accepts them, simulate a random input."""
    from wsec.backends.loader import load_binary
    from wsec.backends.sim import random_inputs, simulate

    try:
        prog = load_binary(data)
    except WsecError:
        return
    try:
        simulate(prog, random_inputs(prog, 0))
    except WsecError:
        pass


@SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), min_size=1,
                      max_size=8),
       cut=st.one_of(st.none(), st.integers(0, 1 << 30)))
def test_byte_mutations_of_a_binary(good_binary: bytes, edits: list[tuple[int, int]],
                                    cut: int | None) -> None:
    data = bytearray(good_binary)
    for pos, val in edits:
        data[pos % len(data)] = val
    if cut is not None:
        data = data[:cut % (len(data) + 1)]
    _load_and_run(bytes(data))


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a leaf or container in a JSON document."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):  # the head of long lists is enough
            out += _paths(v, (*prefix, i))
    return out


def _repack_meta(good: bytes, meta: dict[str, Any]) -> bytes:
    """The binary with its META section replaced (checksums made right)."""
    from wsec.backends.format import HEADER, META, SECTION, canonical_json, pack_file

    _, version, flags, count, _ = HEADER.unpack_from(good)
    sections = []
    for i in range(count):
        sid, _, off, ln = SECTION.unpack_from(good, HEADER.size + i * SECTION.size)
        sections.append((sid, canonical_json(meta) if sid == META else good[off:off + ln]))
    return pack_file(sections, version, flags)


def _meta(good: bytes) -> dict[str, Any]:
    from wsec.backends.format import HEADER, META, SECTION

    count = HEADER.unpack_from(good)[3]
    for i in range(count):
        sid, _, off, ln = SECTION.unpack_from(good, HEADER.size + i * SECTION.size)
        if sid == META:
            return json.loads(good[off:off + ln])
    raise AssertionError("no META")


@SETTINGS
@given(data=st.data())
def test_semantic_mutations_of_a_binary(good_binary: bytes, data: st.DataObject) -> None:
    """Well-checksummed binaries whose META says something else somewhere."""
    meta = _meta(good_binary)
    paths = [p for p in _paths(meta) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = meta
        try:
            for k in path[:-1]:
                parent = parent[k]
            parent[path[-1]] = data.draw(NASTY)
        except (KeyError, IndexError, TypeError):
            continue
    try:
        blob = _repack_meta(good_binary, meta)
    except (TypeError, ValueError):  # not JSON-encodable (NaN): not a file anyone could write
        return
    _load_and_run(blob)


def _onnx_fields(model: onnx.ModelProto) -> list[tuple[str, Any, str]]:
    """Mutable spots of a model: (what, message, field)."""
    g = model.graph
    spots: list[tuple[str, Any, str]] = []
    for vi in list(g.input) + list(g.output):
        for d in vi.type.tensor_type.shape.dim:
            spots.append(("dim", d, "dim_value"))
        spots.append(("elem", vi.type.tensor_type, "elem_type"))
    for t in g.initializer:
        spots.append(("dims", t, "dims"))
        spots.append(("raw", t, "raw_data"))
        spots.append(("dtype", t, "data_type"))
    for n in g.node:
        for a in n.attribute:
            spots.append(("ints", a, "ints"))
            spots.append(("i", a, "i"))
        spots.append(("input", n, "input"))
    return spots


@SETTINGS
@given(data=st.data())
def test_field_mutations_of_an_onnx_model(tmp_path: pathlib.Path, data: st.DataObject) -> None:
    from wsec.frontends.onnx import load_onnx

    model = onnx.load(str(EXAMPLE))
    spots = _onnx_fields(model)
    for _ in range(data.draw(st.integers(1, 3))):
        kind, msg, fld = data.draw(st.sampled_from(spots))
        if kind in ("dim", "i", "elem", "dtype"):
            v = data.draw(st.sampled_from([-1, 0, 1, 3, 7, 2**31, 2**40, 2**62, 2**63 - 1]))
            if kind in ("elem", "dtype"):
                v = data.draw(st.integers(0, 30))
            setattr(msg, fld, v)
        elif kind in ("dims", "ints"):
            del getattr(msg, fld)[:]
            getattr(msg, fld).extend(data.draw(st.lists(
                st.sampled_from([-1, 0, 1, 2, 3, 16, 2**31, 2**62]), max_size=5)))
        elif kind == "raw":
            setattr(msg, fld, getattr(msg, fld)[:data.draw(st.integers(0, 64))])
        elif kind == "input" and len(msg.input):
            msg.input[data.draw(st.integers(0, len(msg.input) - 1))] = data.draw(
                st.sampled_from(["", "nope", "image", "prob"]))
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    try:
        load_onnx(str(path))
    except WsecError:
        pass


@SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1,
                      max_size=6))
def test_byte_mutations_of_an_onnx_model(tmp_path: pathlib.Path,
                                         edits: list[tuple[int, int]]) -> None:
    from wsec.frontends.onnx import load_onnx

    raw = bytearray(EXAMPLE.read_bytes())
    for pos, val in edits:
        raw[pos % len(raw)] = val
    path = tmp_path / "m.onnx"
    path.write_bytes(bytes(raw))
    try:
        load_onnx(str(path))
    except WsecError:
        pass
