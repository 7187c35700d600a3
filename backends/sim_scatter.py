"""The scatters that combine (ScatterND / ScatterElements with a
`reduction`), per PE of a data-movement kernel (sim_spread.datamove).

Why apart from the copies: an output element of an additive scatter is not
one input element but its data element combined with every update aimed at
it. The data element is moved as any copy is (the index trace); each
update element travels to the PE owning its target element, and that PE
combines the updates it receives in update order (ONNX: index order), so a
duplicate index accumulates on one PE. `targets` is the routing: the flat
output element each update element goes to.
"""

from __future__ import annotations

import numpy as np
from wsec.ir.graph import Node
from wsec.ir.opsem_scatter import _REDUCE, _wrap

SCATTERS = frozenset({"ScatterND", "ScatterElements"})


def reduction(node: Node) -> np.ufunc | None:
    """The combining ufunc of a scatter with a reduction (None: a copy)."""
    r = str(node.attrs.get("reduction", "none"))
    if node.op not in SCATTERS or r == "none":
        return None
    if r not in _REDUCE:
        raise ValueError(f"{node.op} '{node.name}': unknown reduction '{r}'")
    return _REDUCE[r]


def targets(node: Node, data_shape: tuple[int, ...], idx: np.ndarray,
            upd_shape: tuple[int, ...]) -> np.ndarray:
    """Flat index into the output of every update element, in update order."""
    idx = np.asarray(idx)
    if node.op == "ScatterElements":
        axis = int(node.attrs.get("axis", 0)) % len(data_shape)
        if idx.shape != upd_shape:
            raise ValueError(f"ScatterElements '{node.name}': indices {list(idx.shape)} and "
                             f"updates {list(upd_shape)} differ")
        pos = list(np.indices(idx.shape))
        pos[axis] = _wrap(idx, data_shape[axis], "an index", node)
        return np.ravel_multi_index(tuple(pos), data_shape).reshape(-1)
    k = idx.shape[-1]
    if k > len(data_shape):
        raise ValueError(f"ScatterND '{node.name}': index depth {k} exceeds data rank "
                         f"{len(data_shape)}")
    rows = _wrap(idx.reshape(-1, k), np.array(data_shape[:k]), "an index", node)
    flat = np.ravel_multi_index(tuple(rows.T), data_shape[:k]) if k else np.zeros(1, np.int64)
    inner = int(np.prod(data_shape[k:], dtype=np.int64))
    out = (flat[:, None] * inner + np.arange(inner)[None, :]).reshape(-1)
    if out.size != int(np.prod(upd_shape, dtype=np.int64)):
        raise ValueError(f"ScatterND '{node.name}': updates {list(upd_shape)} do not match "
                         f"{flat.size} index rows of {list(data_shape[k:])}")
    return out


def combine(out: np.ndarray, owner: np.ndarray, where: np.ndarray, vals: np.ndarray,
            fn: np.ufunc) -> int:
    """Each update combined into its target element by the PE owning it, in
    update order (`fn.at` is unbuffered: duplicates accumulate in order);
    returns how many PEs received updates."""
    fn.at(out, where, vals.astype(out.dtype, copy=False))
    return int(np.unique(owner[where]).size) if where.size else 0
