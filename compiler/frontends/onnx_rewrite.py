"""Exporter idioms rewritten into forms wsec's kernels map well.

Why each:

- GatherND with constant indices: PyTorch's dynamo exporter decomposes some
  ops into index arithmetic, e.g. 1-D linear interpolation becomes
  `Transpose -> GatherND(constant indices) -> Transpose`
  (aten._unsafe_index). With `batch_dims` = 0 and constant indices of
  depth k, GatherND(data, idx) is Gather(axis 0) of data with its first k
  axes flattened into one, at the flat (row-major) index of each k-tuple,
  which wsec runs as a gather kernel. GatherND with computed indices or
  batch_dims > 0 is left alone (and reported as unsupported).
- InstanceNormalization of a 3-D (N, C, L) tensor: the TorchScript
  exporter writes GroupNorm as Reshape(N, G, -1) -> InstanceNormalization
  -> Reshape back, so one (sample, group) row holds C/G x H x W elements
  (152 KB for a ConvNeXt stage at 224x224), which no PE can hold. The
  statistics run over all of L, so (N, C, A, B) with A x B = L normalises
  identically; as a 4-D tensor the norm kernel splits the A rows over PEs.
- Einsum of three or more operands: a chain of two-operand Einsums, left
  to right, each keeping only the indices a later operand or the output
  still names (what opt_einsum does, in the model's order): each maps onto
  the matmul kernel, which only multiplies two operands.
- ReduceMax / ReduceMin over bool (opset 20: any / all): opset 18, which
  wsec converts to, has no bool reductions, so `bool_reductions` wraps them
  in Casts to and from uint8 before the conversion and names the Casts; the
  IR builder drops them again, so the IR reduces the bool tensor itself.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

SPLIT_ROW = 4096  # elements: longer InstanceNorm rows are folded into rows x columns


def rewrite_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return `model` with the idioms above rewritten (unchanged if none)."""
    g = model.graph
    if not any(n.op_type in ("GatherND", "InstanceNormalization") or
               (n.op_type == "Einsum" and len(n.input) > 2) for n in g.node):
        return model
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    try:
        inferred = shape_inference.infer_shapes(model).graph
    except Exception:
        return model  # shape inference reports the problem later, with names
    shapes: dict[str, list[int]] = {}
    for vi in list(inferred.input) + list(inferred.value_info):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]
    for t in g.initializer:
        shapes.setdefault(t.name, list(t.dims))
    producer = {o: n for n in g.node for o in n.output}
    out: list[onnx.NodeProto] = []
    for i, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{i}"
        if n.op_type == "GatherND":
            out.extend(_gathernd(n, name, g, consts, shapes))
        elif n.op_type == "InstanceNormalization":
            out.extend(_instance_norm(n, name, g, shapes, producer))
        elif n.op_type == "Einsum" and len(n.input) > 2:
            out.extend(_einsum_pairs(n, name, shapes))
        else:
            out.append(n)
    del g.node[:]
    g.node.extend(out)
    return model


def _gathernd(n: onnx.NodeProto, name: str, g: onnx.GraphProto, consts: dict[str, np.ndarray],
              shapes: dict[str, list[int]]) -> list[onnx.NodeProto]:
    batch = next((a.i for a in n.attribute if a.name == "batch_dims"), 0)
    if batch or n.input[1] not in consts or n.input[0] not in shapes:
        return [n]
    shape, idx = shapes[n.input[0]], consts[n.input[1]].astype(np.int64)
    k = idx.shape[-1]
    lead = shape[:k]
    flat = np.ravel_multi_index(tuple(np.moveaxis(idx % np.array(lead), -1, 0)), lead)
    p = f"{name}.nd"
    g.initializer.extend([
        numpy_helper.from_array(np.array([-1, *shape[k:]], np.int64), f"{p}.shape"),
        numpy_helper.from_array(np.asarray(flat, np.int64), f"{p}.flat")])
    return [helper.make_node("Reshape", [n.input[0], f"{p}.shape"], [f"{p}.data"],
                             name=f"{p}.reshape"),
            helper.make_node("Gather", [f"{p}.data", f"{p}.flat"], list(n.output), name=n.name,
                             axis=0)]


def _columns(length: int, hint: list[int] | None) -> int:
    """Row length B for folding `length` elements into A x B: the width of
    the tensor the exporter flattened when it divides, else the largest
    divisor not above sqrt(length)."""
    if hint and len(hint) >= 3 and hint[-1] > 1 and length % hint[-1] == 0:
        return hint[-1]
    return max(d for d in range(1, math.isqrt(length) + 1) if length % d == 0)


def _instance_norm(n: onnx.NodeProto, name: str, g: onnx.GraphProto,
                   shapes: dict[str, list[int]],
                   producer: dict[str, onnx.NodeProto]) -> list[onnx.NodeProto]:
    shape = shapes.get(n.input[0])
    if shape is None or len(shape) != 3 or shape[2] <= SPLIT_ROW:
        return [n]
    src = producer.get(n.input[0])
    hint = shapes.get(src.input[0]) if src is not None and src.op_type == "Reshape" else None
    b = _columns(shape[2], hint)
    if b == 1:
        return [n]  # a prime length cannot fold
    p = f"{name}.rows"
    g.initializer.extend([
        numpy_helper.from_array(np.array([*shape[:2], shape[2] // b, b], np.int64),
                                f"{p}.shape4"),
        numpy_helper.from_array(np.array(shape, np.int64), f"{p}.shape3")])
    return [helper.make_node("Reshape", [n.input[0], f"{p}.shape4"], [f"{p}.x"],
                             name=f"{p}.fold"),
            helper.make_node("InstanceNormalization", [f"{p}.x", *n.input[1:]], [f"{p}.y"],
                             name=n.name, **{a.name: helper.get_attribute_value(a)
                                             for a in n.attribute}),
            helper.make_node("Reshape", [f"{p}.y", f"{p}.shape3"], list(n.output),
                             name=f"{p}.unfold")]


def _einsum_terms(n: onnx.NodeProto, shapes: dict[str, list[int]]
                  ) -> tuple[list[str], str] | None:
    """The operands' index strings and the output's, with every ellipsis
    spelled out in letters the equation does not use (None: a rank unknown)."""
    eq = helper.get_attribute_value(next(a for a in n.attribute if a.name == "equation"))
    eq = (eq.decode() if isinstance(eq, bytes) else str(eq)).replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    ins = lhs.split(",")
    free = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in eq]
    ell = 0
    for t, x in zip(ins, n.input, strict=True):
        if "..." in t:
            if x not in shapes:
                return None
            ell = max(ell, len(shapes[x]) - (len(t) - 3))
    dots = "".join(free[:ell])
    terms = []
    for t, x in zip(ins, n.input, strict=True):
        if "..." in t:
            k = len(shapes[x]) - (len(t) - 3)
            t = t.replace("...", dots[ell - k:])
        terms.append(t)
    if "->" not in eq:  # implicit output: the indices named once, sorted, after the ellipsis
        once = sorted(c for c in set("".join(terms)) if "".join(terms).count(c) == 1
                      and c not in dots)
        rhs = dots + "".join(once)
    else:
        rhs = rhs.replace("...", dots)
    return terms, rhs


def _einsum_pairs(n: onnx.NodeProto, name: str, shapes: dict[str, list[int]]
                  ) -> list[onnx.NodeProto]:
    got = _einsum_terms(n, shapes)
    if got is None:
        return [n]  # shape inference names the problem later
    terms, rhs = got
    nodes = []
    acc, acc_t = n.input[0], terms[0]
    for j in range(1, len(terms)):
        last = j == len(terms) - 1
        later = set(rhs).union(*terms[j + 1:])
        keep = rhs if last else "".join(dict.fromkeys(
            c for c in acc_t + terms[j] if c in later))
        out = n.output[0] if last else f"{name}.pair{j}"
        nodes.append(helper.make_node("Einsum", [acc, n.input[j]], [out],
                                      name=name if last else f"{name}.pair{j}",
                                      equation=f"{acc_t},{terms[j]}->{keep}"))
        acc, acc_t = out, keep
    return nodes


BOOL_CAST = ".as_u8"  # the names bool_reductions gives its Casts' outputs


def bool_reductions(model: onnx.ModelProto) -> bool:
    """ReduceMax / ReduceMin over bool (opset 20+) as Cast(uint8) -> the
    reduction -> Cast(bool), the Casts' outputs named `<value>` + BOOL_CAST
    (the IR builder drops them: `bool_aliases`); whether any was rewritten."""
    g = model.graph
    if not any(n.op_type in ("ReduceMax", "ReduceMin") for n in g.node):
        return False
    try:
        inferred = shape_inference.infer_shapes(model).graph
    except Exception:
        return False  # shape inference reports the problem later, with names
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.input) + list(inferred.value_info)}
    out: list[onnx.NodeProto] = []
    done = False
    cast: set[str] = set()
    for n in g.node:
        if n.op_type not in ("ReduceMax", "ReduceMin") or \
                types.get(n.input[0]) != onnx.TensorProto.BOOL:
            out.append(n)
            continue
        x, y = n.input[0], n.output[0]
        red = onnx.NodeProto()
        red.CopyFrom(n)
        red.input[0], red.output[0] = x + BOOL_CAST, y + BOOL_CAST
        if x not in cast:  # one Cast per reduced value
            cast.add(x)
            out.append(helper.make_node("Cast", [x], [x + BOOL_CAST], to=onnx.TensorProto.UINT8,
                                        name=f"{x}{BOOL_CAST}.in"))
        out += [red,
                helper.make_node("Cast", [y + BOOL_CAST], [y], to=onnx.TensorProto.BOOL,
                                 name=f"{y}{BOOL_CAST}.out")]
        done = True
    if done:
        del g.node[:]
        g.node.extend(out)
    return done


def bool_aliases(g: onnx.GraphProto) -> dict[str, str]:
    """What the IR builder renames to drop bool_reductions' Casts: each
    Cast's uint8 value -> the bool value it stands for (a Cast whose output
    is a key is dropped)."""
    alias = {}
    for n in g.node:
        if n.op_type == "Cast" and n.name.endswith(BOOL_CAST + ".in"):
            alias[n.output[0]] = n.input[0]
        elif n.op_type == "Cast" and n.name.endswith(BOOL_CAST + ".out"):
            alias[n.input[0]] = n.output[0]
    return alias
