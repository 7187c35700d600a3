"""External-data initializers: kept out of every onnx call that would resolve them.

Why: onnx's checker, version converter and shape inference, given an
in-memory model, resolve an external-data `location` against the current
directory (they never learn the model's folder), so a model compiled from
another directory fails with "… should be stored in M.onnx.data, but it is
not regular file" — and when the shell happens to be elsewhere with a file
of that name, they would read the wrong one. None of them needs the weight
values: a weight only needs its type. So the frontend lifts every
external-data initializer out of the graph as a typed graph input
(`detach`), runs the onnx tool chain on that data-free model, and puts the
initializers back afterwards (`reattach`); only the frontend's own loaders
read external data, always relative to the model's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import onnx
from onnx import external_data_helper, helper

SMALL_BYTES = 1 << 16  # integer external tensors this small are read: shapes, axes, indices
_INDEX_TYPES = frozenset({onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16,
                          onnx.TensorProto.INT8, onnx.TensorProto.UINT8, onnx.TensorProto.BOOL})


@dataclass
class Detached:
    """External initializers taken out of a graph, in their original order."""

    tensors: list[onnx.TensorProto] = field(default_factory=list)
    added_inputs: set[str] = field(default_factory=set)  # graph inputs `detach` created


def is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL


def external_location(t: onnx.TensorProto) -> str:
    return {e.key: e.value for e in t.external_data}.get("location", "")


def check_locations(model: onnx.ModelProto, model_dir: str) -> str | None:
    """The first external initializer whose data would be read from outside
    `model_dir`, as an error message; None when all live beside the model."""
    root = os.path.realpath(model_dir)
    for t in model.graph.initializer:
        if not is_external(t):
            continue
        loc = external_location(t)
        if "\0" in loc:
            return (f"initializer '{t.name}' names its external data {loc!r}, which contains a "
                    f"NUL byte; the model is damaged")
        full = os.path.realpath(os.path.join(root, loc))
        if (not loc or os.path.isabs(loc) or os.path.commonpath([root, full]) != root
                or full == root):
            return (f"initializer '{t.name}' stores its data at '{loc}', outside the model "
                    f"directory '{model_dir}'; external data must live beside the model")
    return None


def detach(model: onnx.ModelProto) -> Detached:
    """Move `model`'s external-data initializers out of its graph (in place);
    each becomes a graph input of its own type unless it already is one."""
    g = model.graph
    out = Detached()
    if not any(is_external(t) for t in g.initializer):
        return out
    listed = {i.name for i in g.input}
    keep = []
    for t in g.initializer:
        if not is_external(t):
            keep.append(t)
            continue
        out.tensors.append(t)
        if t.name not in listed:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
            out.added_inputs.add(t.name)
    del g.initializer[:]
    g.initializer.extend(keep)
    return out


def reattach(model: onnx.ModelProto, detached: Detached) -> None:
    """Undo `detach` on `model` (which may be a converted copy): the inputs it
    added go, the initializers come back ahead of the graph's own ones."""
    if not detached.tensors:
        return
    g = model.graph
    inputs = [i for i in g.input if i.name not in detached.added_inputs]
    del g.input[:]
    g.input.extend(inputs)
    rest = list(g.initializer)
    del g.initializer[:]
    g.initializer.extend(detached.tensors)
    g.initializer.extend(rest)


def inline_small(model: onnx.ModelProto, model_dir: str, max_bytes: int = SMALL_BYTES) -> None:
    """Read small integer external initializers into `model` (from `model_dir`).

    Exporters put shape vectors, axes and index tables in the external file
    as well (dynamo writes every initializer there); shape inference and
    constant folding need their values, and they cost nothing to hold.
    Float tensors are weights: they stay on disk (weight streaming reads
    them from there, checksummed)."""
    for t in model.graph.initializer:
        if not is_external(t) or t.data_type not in _INDEX_TYPES:
            continue
        ext = {e.key: e.value for e in t.external_data}
        try:
            length = int(ext.get("length", -1))
            offset = int(ext.get("offset", 0))
        except ValueError:
            continue  # the builder reports the bad entry with the tensor's name
        nbytes = length if length >= 0 else _nbytes(t)
        if nbytes is None or nbytes > max_bytes or offset < 0:
            continue
        full = os.path.join(model_dir, ext.get("location", ""))
        if not os.path.isfile(full) or os.path.getsize(full) < offset + nbytes:
            continue  # the builder reports a missing or short file with the tensor's name
        external_data_helper.load_external_data_for_tensor(t, model_dir)
        t.data_location = onnx.TensorProto.DEFAULT
        del t.external_data[:]


def _nbytes(t: onnx.TensorProto) -> int | None:
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    n = 1
    for d in t.dims:
        n *= int(d)
    return n * itemsize
