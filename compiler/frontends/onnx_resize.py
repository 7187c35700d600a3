"""Resize across opsets: what onnx's version converter gets wrong or cannot do.

Why: wsec computes every Resize with the opset-17 semantics, but

- Upsample (opsets 7..9) and Resize-10 had fixed semantics: asymmetric
  coordinates (x_in = x_out / scale) and, for nearest, the truncated
  coordinate (onnxruntime: floor when upsampling, ceil when downsampling).
  onnx's converter turns them into Resize-11+ nodes without the attributes,
  so they would silently take opset 11's defaults (half_pixel,
  round_prefer_floor): different numbers. `legacy_resize_modes` records the
  modes before conversion and `fix_legacy_resize` writes them after.
- Resize-18 added `axes`, `antialias` and `keep_aspect_ratio_policy`, which
  opset 17 rejects; `downgrade_resize` rewrites them (constant scales/sizes
  expanded to every axis), or names the node when it cannot. `antialias`
  has no opset-17 form: `antialias_resizes` records, before conversion,
  the Resize nodes (by output) that use it, and the IR node gets the
  attribute back (wsec's reference semantics and kinds know it).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper
from wsec.ir.errors import WsecError


class ResizeConversionError(WsecError):
    """A Resize/Upsample node has no opset-17 form; the message names it."""


def _attr(n: onnx.NodeProto, key: str, default: object = None) -> object:
    for a in n.attribute:
        if a.name == key:
            v = helper.get_attribute_value(a)
            return v.decode() if isinstance(v, bytes) else v
    return default


def _consts(g: onnx.GraphProto) -> dict[str, np.ndarray]:
    out = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            out[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    return out


def legacy_resize_modes(model: onnx.ModelProto) -> dict[str, str]:
    """Data input name -> nearest_mode of every Upsample / Resize-10 node of
    an opset < 11 model (their coordinates are asymmetric). Keyed by the
    input: the converter renames the outputs."""
    if not any(n.op_type in ("Upsample", "Resize") for n in model.graph.node):
        return {}
    consts = _consts(model.graph)
    out: dict[str, str] = {}
    for i, n in enumerate(model.graph.node):
        if n.op_type not in ("Upsample", "Resize"):
            continue
        scales = _attr(n, "scales")
        if scales is None and len(n.input) > 1 and n.input[1] in consts:
            scales = consts[n.input[1]].reshape(-1).tolist()
        if scales is None:
            raise ResizeConversionError(
                f"{n.op_type} node '{n.name or f'#{i}'}' takes its scales from "
                f"'{n.input[-1]}', which is not a constant; wsec needs constant scales for "
                "opset < 11 resizing (or re-export the model at opset 11 or newer)")
        up, down = any(s > 1 for s in scales), any(s < 1 for s in scales)
        if up and down and str(_attr(n, "mode", "nearest")) == "nearest":
            raise ResizeConversionError(
                f"{n.op_type} node '{n.name or f'#{i}'}' (nearest) enlarges some axes and "
                f"shrinks others (scales {scales}); opset {11}+ Resize cannot express that "
                "rounding; re-export the model at opset 11 or newer")
        out[n.input[0]] = "ceil" if down else "floor"
    return out


def fix_legacy_resize(model: onnx.ModelProto, modes: dict[str, str]) -> None:
    """Give the Resize nodes converted from `legacy_resize_modes` their old
    semantics explicitly."""
    for n in model.graph.node:
        if n.op_type != "Resize" or n.input[0] not in modes:
            continue
        keep = [a for a in n.attribute
                if a.name not in ("coordinate_transformation_mode", "nearest_mode")]
        del n.attribute[:]
        n.attribute.extend(keep)
        n.attribute.extend([helper.make_attribute("coordinate_transformation_mode", "asymmetric"),
                            helper.make_attribute("nearest_mode", modes[n.input[0]])])


def antialias_resizes(model: onnx.ModelProto) -> set[str]:
    """The first output of every Resize that blends with antialias=1
    (linear or cubic; nearest ignores it), before opset conversion drops
    the attribute."""
    return {n.output[0] for n in model.graph.node
            if n.op_type == "Resize" and int(_attr(n, "antialias", 0) or 0)
            and str(_attr(n, "mode", "nearest")) != "nearest"}


def downgrade_resize(n: onnx.NodeProto, name: str, g: onnx.GraphProto,
                     shapes: dict[str, list[int]]) -> onnx.NodeProto:
    """An opset-18+ Resize in its opset-17 form (no axes, antialias,
    keep_aspect_ratio_policy; `antialias_resizes` keeps the antialias)."""
    axes = _attr(n, "axes")
    policy = str(_attr(n, "keep_aspect_ratio_policy", "stretch"))
    inputs = list(n.input) + [""] * (4 - len(n.input))
    if axes is not None or policy != "stretch":
        rank = len(shapes.get(n.input[0], []))
        if not rank:
            raise ResizeConversionError(f"Resize node '{name}' uses axes or "
                                        f"keep_aspect_ratio_policy on '{n.input[0]}', whose "
                                        "shape is not static; pass --input-shape")
        axes = [int(a) % rank for a in (axes if axes is not None else range(rank))]
        consts = _consts(g)
        for slot, fill in ((1, None), (2, 1.0), (3, None)):
            v = inputs[slot]
            if not v:
                continue
            if v not in consts:
                raise ResizeConversionError(f"Resize node '{name}' uses axes or "
                                            f"keep_aspect_ratio_policy with a computed input "
                                            f"'{v}'; wsec needs it constant")
            inputs[slot] = _expand(consts[v], slot, fill, axes, rank, shapes[n.input[0]],
                                   policy, f"{name}.{('roi', 'scales', 'sizes')[slot - 1]}", g)
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute
             if a.name not in ("axes", "antialias", "keep_aspect_ratio_policy")}
    while inputs and not inputs[-1]:
        inputs.pop()
    return helper.make_node("Resize", inputs, list(n.output), name=n.name, **attrs)


def _expand(a: np.ndarray, slot: int, fill: float | None, axes: list[int], rank: int,
            shape: list[int], policy: str, new: str, g: onnx.GraphProto) -> str:
    """roi / scales / sizes given for `axes` as a full-rank initializer."""
    a = a.reshape(-1)
    if slot == 1:  # roi: starts then ends
        full = np.concatenate([np.zeros(rank), np.ones(rank)]).astype(a.dtype)
        for j, ax in enumerate(axes):
            full[ax], full[rank + ax] = a[j], a[len(axes) + j]
    elif slot == 2:
        full = np.full(rank, fill, a.dtype)
        full[axes] = a
    else:
        full = np.array(shape, np.int64)
        want = a.astype(np.int64)
        if policy != "stretch":
            ratios = [want[j] / shape[ax] for j, ax in enumerate(axes)]
            s = min(ratios) if policy == "not_larger" else max(ratios)
            want = np.array([int(np.floor(s * shape[ax] + 0.5)) for ax in axes], np.int64)
        full[axes] = want
    g.initializer.append(numpy_helper.from_array(full, new))
    return new
