"""Reference semantics of the scatter ops: ScatterND and ScatterElements.

Why: exporters write slice assignment (`mask[:, a:b, c:d] = k`, Swin's
shifted-window mask; in-place index updates of training graphs) as
ScatterND / ScatterElements. Over constants canonicalize folds them through
these definitions; over activations they run as data-movement kernels. The
`reduction` attribute (none, add, mul, max, min) applies updates in index
order, so duplicate indices accumulate as ONNX specifies (numpy's ufunc.at
is unbuffered, unlike fancy assignment).
"""

from __future__ import annotations

import numpy as np

from .graph import Node
from .opsem_base import op

_REDUCE = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _reduction(n: Node) -> np.ufunc | None:
    r = str(n.attrs.get("reduction", "none"))
    if r == "none":
        return None
    if r not in _REDUCE:
        raise ValueError(f"{n.op} '{n.name}': unknown reduction '{r}'")
    return _REDUCE[r]


def _wrap(idx: np.ndarray, dims: np.ndarray | int, what: str, n: Node) -> np.ndarray:
    idx = idx.astype(np.int64)
    if ((idx < -dims) | (idx >= dims)).any():
        raise ValueError(f"{n.op} '{n.name}': {what} out of range")
    return np.where(idx < 0, idx + dims, idx)


@op("ScatterND")
def _scatter_nd(n: Node, ins: list) -> list:
    x, idx, upd = ins[0], ins[1], ins[2]
    k = idx.shape[-1]
    if k > x.ndim:
        raise ValueError(f"ScatterND '{n.name}': index depth {k} exceeds data rank {x.ndim}")
    idx = _wrap(idx.reshape(-1, k), np.array(x.shape[:k]), "an index", n)
    y = np.array(x, copy=True)
    rows = y.reshape(-1, *x.shape[k:])  # a view: data with its first k axes flattened
    flat = np.ravel_multi_index(tuple(idx.T), x.shape[:k]) if k else np.zeros(1, np.int64)
    vals = np.asarray(upd, x.dtype).reshape(-1, *x.shape[k:])
    red = _reduction(n)
    if red is None:
        rows[flat] = vals  # duplicates: ONNX leaves the order open; the last one wins
    else:
        red.at(rows, flat, vals)
    return [y]


@op("ScatterElements")
def _scatter_elements(n: Node, ins: list) -> list:
    x, idx, upd = ins[0], ins[1], ins[2]
    axis = int(n.attrs.get("axis", 0)) % x.ndim
    idx = _wrap(idx, x.shape[axis], "an index", n)
    y = np.array(x, copy=True)
    pos = list(np.indices(idx.shape, sparse=True))
    pos[axis] = idx
    where = tuple(np.broadcast_arrays(*pos))
    vals = np.asarray(upd, x.dtype)
    red = _reduction(n)
    if red is None:
        y[where] = vals
    else:
        red.at(y, where, vals)
    return [y]
