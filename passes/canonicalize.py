"""canonicalize: bring a freshly imported graph to the form later passes expect.

Exporters leave noise that would otherwise become kernels: constant
sub-graphs (ConstantOfShape -> Unsqueeze -> ...), Identity/Dropout at
inference, BatchNormalization that is just a rescaled Conv, single-input
Sum. Rules run to a fixpoint:

- constant folding; splats stay splats (never materialised), Shape/Size of
  any typed value becomes a Dense i64 (so exporters' shape arithmetic,
  Shape -> Gather -> Concat -> Reshape / Range / ConstantOfShape, folds
  away), other ops are evaluated with `wsec.ir.opsem` only when every
  input/output has <= `fold_limit` elements; a weight in the model's
  external-data file with more than `external_limit` elements is never
  read: a Transpose or relabelling of it folds into a view of its file
  range (`External.perm`), other ops on it stay;
- Identity / Dropout (mask unused) / one-input Sum are bypassed, keeping a
  graph output's name when the removed node produced it;
- BatchNormalization folds into a preceding Conv or Gemm that feeds only it;
- Sum of two inputs becomes Add;
- dead nodes and unused constants are removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from wsec.ir.graph import Kernel, Module, Node
from wsec.ir.ops import ELEMENTWISE_OPS, SHAPE_ONLY_OPS
from wsec.ir.opsem import evaluate
from wsec.ir.types import ConstData, Dense, External, Splat, TensorType, splat_of

from .base import Pass, PassContext, PassError

# ops whose every output element is some input element of the first input
_SPLAT_PRESERVING = SHAPE_ONLY_OPS | {"Gather", "Slice", "Split"}
# ops that only rearrange (or narrow) their first input: folding one costs no
# more memory than the constant it reads, so big weights may fold
_REARRANGING = frozenset({"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                          "Identity", "Cast", "Slice", "Split"})
# ops whose output is their first input's elements in the same order
_RELABELLING = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


@dataclass(frozen=True)
class Canonicalize(Pass):
    name: ClassVar[str] = "canonicalize"
    ensures: ClassVar[tuple[str, ...]] = ("canonical",)
    fold_limit: int = 1 << 20  # max elements materialised when folding a non-splat
    move_fold_limit: int = 1 << 28  # the same for ops that only rearrange a constant
    # the largest external-data constant (elements) folding may read; larger ones
    # only fold into views of their file range (`External.perm`)
    external_limit: int = 1 << 16

    def run(self, module: Module, ctx: PassContext) -> None:
        rules = (self._fold_constants, _bypass_copies, self._fold_batchnorm, _sum_to_add,
                 _eliminate_dead_code)
        for _ in range(100):
            changed = False
            for rule in rules:
                changed |= rule(module)
            if not changed:
                return
        raise PassError("canonicalize did not reach a fixpoint after 100 rounds")

    # --- constant folding -------------------------------------------------
    def _fold_constants(self, m: Module) -> bool:
        keep: list[Node] = []
        for n in m.nodes:
            # exporters' constant arithmetic may pass through inf/nan that a
            # later Where masks out (T5's log(0) at relative position 0)
            with np.errstate(all="ignore"):
                results = None if isinstance(n, Kernel) else self._fold(m, n)
            if results is None:
                keep.append(n)
                continue
            for o, data in zip(n.outputs, results, strict=False):
                if o:
                    m.values[o].const = data
        changed = len(keep) != len(m.nodes)
        m.nodes = keep
        return changed

    def _fold(self, m: Module, n: Node) -> list[ConstData] | None:
        out_types = [m.values[o].type if o else None for o in n.outputs]
        if n.op in ("Shape", "Size") and n.inputs and n.inputs[0]:
            shaped = np.broadcast_to(np.int8(0), m.values[n.inputs[0]].type.shape)  # no memory
            (arr,) = evaluate(n, [shaped])
            return [_const(out_types[0], arr, n)]
        ins = [m.values[i].const if i else None for i in n.inputs]
        if any(c is None for i, c in zip(n.inputs, ins, strict=True) if i) or not n.outputs:
            return None
        if n.op == "ConstantOfShape":
            return [Splat(out_types[0], _cast_scalar(n.attrs.get("value", 0.0), out_types[0]))]
        given = [c for c in ins if c is not None]
        first = ins[0] if ins else None
        if n.op in _SPLAT_PRESERVING and first is not None and first.is_splat:
            if n.op == "Dropout" and len(out_types) > 1 and out_types[1] is not None:
                return [Splat(out_types[0], first.value), Splat(out_types[1], True)]
            return [Splat(t, first.value) if t else None for t in out_types]
        if n.op == "Concat" and given and all(c.is_splat for c in given) and \
                len({c.value for c in given}) == 1:
            return [Splat(out_types[0], given[0].value)]
        if n.op in ELEMENTWISE_OPS and given and all(c.is_splat for c in given):
            scalars = [np.array(c.value, c.type.np_dtype) if c is not None else None for c in ins]
            try:
                (r,) = evaluate(n, scalars)[:1]
            except (ValueError, TypeError, KeyError, IndexError):
                return None
            return [Splat(out_types[0], _cast_scalar(np.asarray(r).item(), out_types[0]))]
        if any(isinstance(c, External) and c.type.numel > self.external_limit for c in given):
            # a weight in the model's external-data file is never read here: it may
            # be tens of GB (DESIGN.md section 5); only views of it fold
            return _external_view(n, ins, out_types)
        sizes = [c.type.numel for c in given] + [t.numel for t in out_types if t]
        limit = self.fold_limit
        if n.op in _REARRANGING and first is not None and \
                all(t.numel <= first.type.numel for t in out_types if t):
            limit = max(limit, self.move_fold_limit)
        if any(s > limit for s in sizes):
            return None
        try:
            arrays = evaluate(n, [c.array() if c is not None else None for c in ins])
        except (ValueError, TypeError, KeyError, IndexError):
            return None  # leave it to the kernels; opsem's own error names it at run time
        return [_const(t, a, n) if t else None for t, a in zip(out_types, arrays, strict=False)]

    # --- BatchNormalization into Conv / Gemm ------------------------------
    def _fold_batchnorm(self, m: Module) -> bool:
        producers, consumers = m.producers(), m.consumers()
        graph_outs = set(m.outputs)
        dropped: set[int] = set()
        for bn in m.nodes:
            if bn.op != "BatchNormalization" or bn.attrs.get("training_mode", 0):
                continue
            if len([o for o in bn.outputs if o]) != 1 or not bn.inputs[0]:
                continue
            x = bn.inputs[0]
            prod = producers.get(x)
            if prod is None or isinstance(prod, Kernel) or prod.op not in ("Conv", "Gemm"):
                continue
            if len(consumers.get(x, [])) != 1 or x in graph_outs or id(prod) in dropped:
                continue
            params = [m.values[i].const if i else None for i in bn.inputs[1:5]]
            if len(params) != 4 or any(p is None or p.type.numel > self.fold_limit
                                       for p in params):
                continue
            if self._fold_one_bn(m, prod, bn, params):  # type: ignore[arg-type]
                dropped.add(id(bn))
        if not dropped:
            return False
        m.nodes = [n for n in m.nodes if id(n) not in dropped]
        return True

    def _fold_one_bn(self, m: Module, prod: Node, bn: Node, params: list[ConstData]) -> bool:
        gamma, beta, mean, var = (p.array().astype(np.float64).reshape(-1) for p in params)
        eps = float(bn.attrs.get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        shift = beta - mean * scale
        w_name = prod.inputs[1] if len(prod.inputs) > 1 else ""
        w = m.values[w_name].const if w_name else None
        if w is None:
            return False
        b_name = prod.inputs[2] if len(prod.inputs) > 2 else ""
        b = m.values[b_name].const if b_name else None
        if b_name and b is None:
            return False
        nch = m.values[prod.outputs[0]].type.shape[1]
        if prod.op == "Conv":
            axis = 0
        elif len(m.values[prod.outputs[0]].type.shape) == 2:
            axis = 0 if prod.attrs.get("transB", 0) else 1
        else:
            return False
        uniform = bool(np.all(scale == scale[0]))
        if w.is_splat and uniform:
            new_w: ConstData = Splat(w.type, _cast_scalar(w.value * scale[0], w.type))
        elif w.type.numel <= self.fold_limit:
            shp = [1] * len(w.type.shape)
            shp[axis] = nch
            new_w = _const(w.type, w.array() * scale.reshape(shp), prod)
        else:
            return False
        if prod.op == "Conv":
            b_arr = b.array().astype(np.float64) if b is not None else np.zeros(nch)
            new_b = b_arr * scale + shift
        else:
            cbeta = float(prod.attrs.get("beta", 1.0))
            b_arr = b.array().astype(np.float64) if b is not None else np.zeros(())
            new_b = (cbeta * b_arr) * scale + shift
            prod.attrs["beta"] = 1.0
        b_type = TensorType(w.type.dtype, new_b.shape)
        w_new_name = m.fresh_name(f"{w_name}.bn")
        m.add_value(w_new_name, w.type, new_w)
        b_new_name = m.fresh_name(f"{b_name or prod.outputs[0] + '.bias'}.bn")
        m.add_value(b_new_name, b_type, _const(b_type, new_b, prod))
        inputs = list(prod.inputs) + [""] * (3 - len(prod.inputs))
        inputs[1], inputs[2] = w_new_name, b_new_name
        prod.inputs = inputs
        old_out = prod.outputs[0]
        prod.outputs = [bn.outputs[0]] + prod.outputs[1:]
        del m.values[old_out]
        return True


# --- rules without options -------------------------------------------------


def _external_view(n: Node, ins: list[ConstData | None],
                   out_types: list[TensorType | None]) -> list[ConstData] | None:
    """`n` folded without reading its external-data input: a Transpose
    becomes a transposed view of the file range, a relabelling (Reshape,
    Flatten, Squeeze, Unsqueeze, Identity, a Cast to the same type) the same
    range under the new type; None for anything that would need the values."""
    first = ins[0] if ins else None
    out = out_types[0] if len(out_types) == 1 else None
    if not isinstance(first, External) or out is None:
        return None
    if n.op == "Transpose":
        perm = [int(p) for p in n.attrs.get("perm") or range(len(first.type.shape))[::-1]]
        shape = [first.type.shape[p] for p in perm] if sorted(perm) == list(
            range(len(first.type.shape))) else None
        if shape != list(out.shape):
            raise PassError(f"constant folding of node '{n.name}' (Transpose) gave shape "
                            f"{shape}, but the IR declares {out}; the model's value types are "
                            f"inconsistent")
        return [first.transposed(perm, out)]
    if n.op in _RELABELLING or (n.op == "Cast" and out.dtype == first.type.dtype):
        view = first.reshaped(out)
        return None if view is None else [view]
    return None




def _cast_scalar(v: float | int | bool, t: TensorType) -> float | int | bool:
    return np.asarray(v).astype(t.np_dtype).item()


def _const(t: TensorType, arr: np.ndarray, n: Node) -> ConstData:
    a = np.asarray(arr)
    if a.shape != t.shape:
        raise PassError(f"constant folding of node '{n.name}' ({n.op}) gave shape "
                        f"{list(a.shape)}, but the IR declares {t}; the model's value types "
                        f"are inconsistent")
    a = a.astype(t.np_dtype, copy=False)
    s = splat_of(a)
    return Splat(t, s.value) if s is not None else Dense(t, a)


def _bypass_target(n: Node, consumers: dict[str, list[Node]], outs: set[str]) -> str | None:
    """The value that can stand for `n`'s output, if `n` merely copies its input."""
    if isinstance(n, Kernel) or not n.inputs or not n.inputs[0] or not n.outputs:
        return None
    if n.op == "Identity" or (n.op == "Sum" and len(n.inputs) == 1):
        return n.inputs[0]
    if n.op == "Dropout":
        extra = [o for o in n.outputs[1:] if o]
        if any(o in consumers or o in outs for o in extra):
            return None
        return n.inputs[0]
    return None


def _bypass_copies(m: Module) -> bool:
    consumers, producers = m.consumers(), m.producers()
    outs, ins = set(m.outputs), set(m.inputs)
    repl: dict[str, str] = {}
    touched: set[str] = set()
    dropped: set[int] = set()
    for n in m.nodes:
        x = _bypass_target(n, consumers, outs)
        if x is None:
            continue
        y = n.outputs[0]
        if x in touched or y in touched:
            continue
        if y in outs:
            prod = producers.get(x)
            if x in outs or x in ins or prod is None or isinstance(prod, Kernel):
                continue  # both names must survive: keep the copy
            prod.outputs = [y if o == x else o for o in prod.outputs]
            repl[x] = y
            _drop_value(m, y, keep_as=x)
        else:
            repl[y] = x
            del m.values[y]
        for o in n.outputs[1:]:
            if o:
                del m.values[o]
        touched.update((x, y))
        dropped.add(id(n))
    if not dropped:
        return False
    m.nodes = [n for n in m.nodes if id(n) not in dropped]
    for n in m.nodes:
        n.inputs = [repl.get(i, i) for i in n.inputs]
    m.outputs = [repl.get(o, o) for o in m.outputs]
    return True


def _drop_value(m: Module, name: str, keep_as: str) -> None:
    """Delete value `name` and rename value `keep_as` to `name`, keeping dict order."""
    v = m.values[keep_as]
    v.name = name
    m.values = {(name if k == keep_as else k): (v if k == keep_as else val)
                for k, val in m.values.items() if k != name}


def _sum_to_add(m: Module) -> bool:
    changed = False
    for n in m.nodes:
        if n.op == "Sum" and not isinstance(n, Kernel) and len(n.inputs) == 2:
            n.op = "Add"
            changed = True
    return changed


def _eliminate_dead_code(m: Module) -> bool:
    needed = set(m.outputs)
    live: list[Node] = []
    for n in reversed(m.nodes):
        if isinstance(n, Kernel) or not n.outputs or any(o and o in needed for o in n.outputs):
            live.append(n)
            needed.update(i for i in n.inputs if i)
    live.reverse()
    changed = len(live) != len(m.nodes)
    m.nodes = live
    defined = set(m.inputs)
    for n in m.nodes:
        defined.update(o for o in n.outputs if o)
        if isinstance(n, Kernel):
            defined.update(o for b in n.body for o in b.outputs if o)
            needed.update(i for b in n.body for i in b.inputs if i)
    dead = [k for k, v in m.values.items()
            if (v.const is not None and k not in needed) or (v.const is None and k not in defined)]
    for k in dead:
        del m.values[k]
    return changed or bool(dead)
