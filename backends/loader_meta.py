"""The loader's checks of what a binary's metadata means, before anyone uses it.

Why: the container checks (magic, checksums, truncation) prove that the
bytes are the ones written, not that they make sense. `wsec inspect` and
`wsec run` must agree on what a valid binary is, so everything `run`
relies on is checked here, once, when the binary is loaded: the grid and
SRAM size against sane limits, the section layout (no gap, no overlap),
every value's type (a known dtype, dims that are positive integers within
limits), that the inputs, outputs, edges, host I/O and kernels name values
the binary declares, and that every kernel body op is one the simulator can
execute. `check_sim_memory` is the simulator's look at the sizes before it
allocates anything.
"""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from wsec.ir.errors import WsecError
from wsec.ir.graph import HOST
from wsec.ir.lanes import check_view
from wsec.ir.limits import available_memory, grid_problem, human_bytes, shape_problem
from wsec.ir.opsem import has_semantics
from wsec.ir.target import DEVICE_DTYPES
from wsec.ir.types import DTYPES

from .format import HEADER, SECTION, Program


class MetaError(WsecError):
    """The binary's metadata is well-formed JSON but means something impossible."""


def check_sections(p: Program) -> None:
    """The sections lie back to back after the section table, as written."""
    pos = HEADER.size + SECTION.size * len(p.sections)
    for s in sorted(p.sections, key=lambda s: s.offset):
        if s.offset > pos:
            raise MetaError(f"a gap of {s.offset - pos} bytes before section {s.name} (offset "
                            f"{s.offset}, previous data ends at {pos}): the file was edited")
        if s.offset < pos:
            raise MetaError(f"section {s.name} (offset {s.offset}) overlaps the data before it "
                            f"(which ends at {pos}): the file was edited")
        pos = s.offset + s.length


def value_type(name: str, text: object) -> tuple[str, list[int]]:
    """A value's type string `f32[1,3,224,224]` parsed and checked."""
    where = f"value %{name}"
    if not isinstance(text, str) or "[" not in text or not text.endswith("]"):
        raise MetaError(f"{where} has type {text!r}, not DTYPE[D0,D1,...]")
    dtype, inner = text[:-1].split("[", 1)
    if dtype not in DTYPES:
        raise MetaError(f"{where} has unknown element type '{dtype}' (known: "
                        f"{', '.join(sorted(DTYPES))})")
    try:
        dims = [int(d) for d in inner.split(",")] if inner.strip() else []
    except ValueError:
        raise MetaError(f"{where} has type {text!r}: its dims are not integers") from None
    bad = shape_problem(dims, zero_ok=True)  # an empty constant is a real thing
    if bad:
        raise MetaError(f"{where} has type {text}: {bad}")
    return dtype, dims


def check_meta(p: Program) -> None:
    """Everything `wsec run` relies on in META (see the module docstring)."""
    check_sections(p)
    t = p.target
    bad = grid_problem(t.width, t.height)
    if bad:
        raise MetaError(f"the binary's {t.name} grid {t.width}x{t.height} is impossible: {bad}")
    for f in fields(t):  # the grid is checked above
        v = getattr(t, f.name)
        if f.name in ("name", "dtype"):
            ok = isinstance(v, str) and (f.name == "name" or v in DEVICE_DTYPES)
        else:
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) \
                and v >= 0
        if not ok:
            raise MetaError(f"the binary's target field '{f.name}' is {v!r}")
    if not isinstance(t.sram_bytes, int) or not 1 <= t.sram_bytes <= 1 << 30:
        raise MetaError(f"the binary's target has {t.sram_bytes!r} bytes of SRAM per PE")
    if not isinstance(t.colors, int) or not 1 <= t.colors <= 1 << 10:
        raise MetaError(f"the binary's target has {t.colors!r} colors")
    values: dict[str, Any] = p.info["values"]
    sizes = {name: value_type(name, text) for name, text in values.items()}
    for role in ("inputs", "outputs"):
        names = p.info[role]
        if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise MetaError(f"the binary's model {role} {names!r} are not distinct value names")
        for name in names:
            if name not in sizes:
                raise MetaError(f"the binary's model {role} name %{name}, which is not a value "
                                f"it declares")
            if 0 in sizes[name][1]:
                raise MetaError(f"the binary's model {role[:-1]} %{name} has zero-size type "
                                f"{values[name]}: it carries nothing")
    if not p.info["outputs"]:
        raise MetaError("the binary declares no model outputs: it computes nothing")
    for e in p.edges:
        if e.value not in sizes:
            raise MetaError(f"edge %{e.value} ({e.src} -> {', '.join(e.dsts)}) carries a value "
                            f"the binary does not declare")
        if e.src == HOST and e.value not in p.info["inputs"]:
            raise MetaError(f"edge %{e.value} comes from the host, but %{e.value} is not one of "
                            f"the binary's model inputs")
        if HOST in e.dsts and e.value not in p.info["outputs"]:
            raise MetaError(f"edge %{e.value} goes to the host, but %{e.value} is not one of "
                            f"the binary's model outputs")
    for k in p.kernels:
        _check_kernel(k, sizes)
    _check_cut_views(p)
    for role in ("inputs", "outputs"):
        for io in p.info["host_io"].get(role, []):
            name = str(io.get("value"))
            if name not in sizes:
                raise MetaError(f"host I/O names %{name}, which is not a value the binary "
                                f"declares")
            n = 1
            for d in sizes[name][1]:
                n *= d
            ranges = io.get("ranges", [])
            if not isinstance(ranges, list):
                raise MetaError(f"host I/O of %{name}: 'ranges' is {ranges!r}, not a list")
            for r in ranges:
                if (not isinstance(r, list) or len(r) != 2
                        or not all(isinstance(v, int) for v in r) or not 0 <= r[0] <= r[1] <= n):
                    raise MetaError(f"host I/O of %{name}: range {r!r} lies outside its {n} "
                                    f"elements")
            if "boxes" in io:
                _check_host_boxes(name, io["boxes"], _host_view(name, io, sizes[name][1]))


def _check_cut_views(p: Program) -> None:
    """META cut_views (optional): bundle index (a string) -> the shape its
    lane boxes are over, a list of ints (that it splits one axis of the
    bundle's value is checked with the lanes, backends.lanes)."""
    views = p.info.get("cut_views", {})
    if not isinstance(views, dict):
        raise MetaError(f"'cut_views' is {views!r}, not a map of bundle index to shape")
    for key, view in views.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) < len(p.bundles)):
            raise MetaError(f"'cut_views' names bundle {key!r}; the binary has "
                            f"{len(p.bundles)} bundles")
        if not (isinstance(view, list) and view
                and all(isinstance(v, int) and v > 0 for v in view)):
            raise MetaError(f"'cut_views' of bundle #{key} is {view!r}, not a shape")


def _host_view(name: str, io: dict[str, Any], shape: list[int]) -> list[int]:
    """The shape a cut host input's boxes are over: its own, or its
    optional `view` (a reshape splitting one axis, or flattening it, as
    its bundle's META cut_views entry; wsec.ir.lanes.check_view)."""
    view = io.get("view")
    if view is None:
        return shape
    if not isinstance(view, list) or not all(isinstance(v, int) for v in view):
        raise MetaError(f"host I/O of %{name}: 'view' is {view!r}, not a list of ints")
    try:
        check_view(tuple(shape), tuple(view))
    except ValueError as err:
        raise MetaError(f"host I/O of %{name}: {err}") from None
    return view


def _check_host_boxes(name: str, boxes: object, shape: list[int]) -> None:
    """A cut host input's boxes: per lane [start, stop] lists of the value's
    rank, inside it (that they equal the bundle's slice records is checked
    with the lanes, backends.lanes)."""
    if not isinstance(boxes, list):
        raise MetaError(f"host I/O of %{name}: 'boxes' is {boxes!r}, not a list")
    for b in boxes:
        ok = isinstance(b, list) and len(b) == 2 and all(
            isinstance(c, list) and len(c) == len(shape) and all(isinstance(v, int) for v in c)
            for c in b)
        if not ok or not all(0 <= lo <= hi <= n for lo, hi, n in zip(b[0], b[1], shape,
                                                                     strict=True)):
            raise MetaError(f"host I/O of %{name}: box {b!r} is not a box of its shape {shape}")


def _check_kernel(k: Any, sizes: dict[str, tuple[str, list[int]]]) -> None:
    where = f"kernel '{k.name}'"
    for key, v in list(k.dims.items()) + list(k.knobs.items()):
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1 << 40:
            raise MetaError(f"{where} has {key}={v!r}; a kernel's dims and knobs are integers "
                            f"from 0 to 2^40")
    for role, names in (("input", k.inputs), ("output", k.outputs), ("weight", k.weights)):
        for name in names:
            if name and name not in sizes:
                raise MetaError(f"{where} names %{name} as an {role}, which is not a value the "
                                f"binary declares")
    for i, n in enumerate(k.body):
        if not isinstance(n, dict) or not isinstance(n.get("op"), str) \
                or not isinstance(n.get("inputs"), list) or not isinstance(n.get("outputs"), list):
            raise MetaError(f"{where}: body node {i} is not {{name, op, inputs, outputs, attrs}}")
        node = f"{where}: body node '{n.get('name', i)}'"
        if not has_semantics(n["op"]):
            raise MetaError(f"{node} has op '{n['op']}', which this wsec cannot execute")
        if not isinstance(n.get("attrs", {}), dict):
            raise MetaError(f"{node}: its attrs are not an object")
        for name in n["inputs"] + n["outputs"]:
            if not isinstance(name, str):
                raise MetaError(f"{node} names a value {name!r}, not a string")
            if name and name not in sizes:
                raise MetaError(f"{node} ({n['op']}) names %{name}, which is not a value the "
                                f"binary declares")


def check_sim_memory(p: Program, factor: float = 3.0) -> None:
    """Before simulating: the binary's values (in float32, with `factor` for
    the copies a kernel makes) must fit the memory this machine has free."""
    consts = p.info.get("consts", {})
    acts, largest = 0, 0
    for name, text in p.info["values"].items():
        _, dims = value_type(name, text)
        n = 4
        for d in dims:
            n *= d
        if name in consts:  # weights are rebuilt one kernel at a time
            largest = max(largest, n)
        else:
            acts += n
    need = int((acts + largest) * factor)
    have = available_memory()
    if need > have:
        raise MetaError(f"simulating this binary needs about {human_bytes(need)} of memory for "
                        f"its values, but this machine has {human_bytes(have)} available",
                        hint="simulate a smaller input shape, or on a larger machine")
