"""The training part of the report: what a `--train` compile lays out.

Pipeline mode — per layer (a forward op and the kernels that differentiate
and update it) its forward, input-gradient and weight-gradient/update
kernels, all sized to one bottleneck time; the activations stashed for the
backward pass (bytes and forward-to-backward distance); the weights and
optimizer state resident in SRAM.

Stream mode — the step: micro-batch, forward / backward / recompute phases
and their time, what bounds each phase (compute, weights in, gradients out,
activation movement), the optimizer run off the wafer by the weight store,
samples and tokens per second.
Schema: docs/report.md (`train`).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from wsec.ir.graph import Module
from wsec.ir.target import Target
from wsec.ir.training import forward_node_of, role_of_kernel
from wsec.ir.types import DTYPES

BOUNDS = ("compute", "stream", "stream_out", "move")
POLICY_WORDS = {"keep": "kept", "recompute": "recomputed where cheaper than kept",
                "checkpoint": "kept at layer boundaries, layers recomputed"}
BOUND_WORDS = {"compute": "compute", "stream": "weights in", "stream_out": "gradients out",
               "move": "activation movement"}


def tokens_per_sample(module: Module) -> int | None:
    """Tokens of one sample when the model reads token ids (an integer first
    input), else None (samples are the unit)."""
    if not module.inputs:
        return None
    t = module.values[module.inputs[0]].type
    return t.numel if t.dtype.startswith(("i", "u")) else None


def train_report(doc: dict[str, Any], module: Module, target: Target) -> None:
    """Add the `train` section (and the training figures of `summary`)."""
    tr = dict(module.attrs["train"])
    params = list(tr.get("params", []))
    item = DTYPES[target.dtype].itemsize
    elems = sum(module.values[p].type.numel for p in params if p in module.values)
    states = sum(module.values[v].type.numel for v in module.values if v.startswith("opt:")
                 and module.values[v].const is not None)
    sec: dict[str, Any] = {
        "loss": tr.get("loss"), "optimizer": tr.get("optimizer"), "lr": tr.get("lr"),
        "step": tr.get("step"), "parameters": len(params), "parameter_elements": elems,
        "optimizer_state_elements": states, "frozen": tr.get("frozen", 0),
        "tokens_per_sample": tokens_per_sample(module),
    }
    kernels = list(module.kernels())
    roles = Counter()
    for k in kernels:
        roles[_role(k.origin)] += 1
    sec["kernels_by_role"] = dict(sorted(roles.items()))
    if doc["mode"] == "stream":
        _stream(doc, sec, module, target)
    else:
        _pipeline(doc, sec, module, kernels, (elems + states) * item)
    doc["train"] = sec


def _role(origin: list[str]) -> str:
    r = role_of_kernel(origin)
    return "forward" if r == "loss" else r


def _pipeline(doc: dict[str, Any], sec: dict[str, Any], module: Module, kernels: list,
              resident: int) -> None:
    rows = {r["name"]: r for r in doc["kernels"]}
    layers: dict[str, dict[str, Any]] = {}
    by_role: dict[str, dict[str, int]] = {}
    for k in kernels:
        role = _role(k.origin)
        row = rows[k.name]
        stash = int(k.dims.get("stash", 0))
        row["role"] = role
        row["stash_bytes_per_sample"] = stash
        agg = by_role.setdefault(role, {"kernels": 0, "pes": 0, "max_cycles": 0})
        agg["kernels"] += 1
        agg["pes"] += row["pes"]
        agg["max_cycles"] = max(agg["max_cycles"], row["cycles_per_sample"])
        layer = forward_node_of(k.origin[0]) if k.origin else k.name
        if role == "update":
            layer = f"update:{layer}"
        lay = layers.setdefault(layer, {"layer": layer, "forward": [], "dgrad": [], "wgrad": [],
                                        "update": [], "cycles": 0, "stash_bytes": 0})
        lay[role if role in lay else "forward"].append(k.name)
        lay["cycles"] = max(lay["cycles"], row["cycles_per_sample"])
        lay["stash_bytes"] += stash
    stash_total = sum(int(k.dims.get("stash", 0)) for k in kernels)
    sec.update({
        "roles": by_role,
        "layers": [v for v in layers.values() if v["forward"] and (v["dgrad"] or v["wgrad"])],
        "stash_bytes_per_sample": stash_total,
        "stash_kernel": max(kernels, key=lambda k: int(k.dims.get("stash", 0))).name
        if stash_total else None,
        "resident_weight_and_state_bytes": resident,
    })


def _stream(doc: dict[str, Any], sec: dict[str, Any], module: Module, target: Target) -> None:
    phases = doc.get("phases", [])
    batch = int(module.attrs.get("micro_batch", 1))
    step = sum(int(p["cycles"]) for p in phases)
    secs = step / target.clock_hz if step else 0.0
    per_role = {}
    for p in phases:
        p["bound"] = max(BOUNDS, key=lambda f: int(p.get(f, 0)))
        agg = per_role.setdefault(p.get("role", "forward"), {"phases": 0, "cycles": 0})
        agg["phases"] += 1
        agg["cycles"] += int(p["cycles"])
    store = module.attrs.get("store_steps", [])
    sched = dict(module.attrs.get("train_schedule", {}))
    tps = sec["tokens_per_sample"]
    sps = batch / secs if secs else None
    sec.update({
        "micro_batch": batch, "micro_batch_source": str(sched.get("micro_batch_source", "sram")),
        "policy": sched.get("policy"), "step_cycles": step, "step_seconds": secs,
        "samples_per_second": sps, "tokens_per_second": sps * tps if sps and tps else None,
        "phases_by_role": per_role,
        "phases_bound_by": dict(Counter(p["bound"] for p in phases)),
        "weights_in_bytes_per_step": sum(int(p["weight_bytes"]) * int(p.get("passes", 1))
                                         for p in phases),
        "gradients_out_bytes_per_step": sum(int(p.get("grad_bytes", 0)) for p in phases),
        "store_optimizer": {"where": "weight store (off the wafer)", "steps": len(store),
                      "weight_and_state_bytes": sum(int(s["weight_bytes"]) for s in store),
                      "gradient_bytes": sum(int(s["grad_bytes"]) for s in store)},
        "store_bytes_per_second": target.store_bytes_per_second,
        "edge_io_bytes_per_second": target.io_bytes_per_cycle_per_edge_pe * target.height
        * target.clock_hz,
    })
    s = doc["summary"]
    s["cycles_per_sample"] = step // max(1, batch)
    s["samples_per_second"] = sps


def train_summary(report: dict[str, Any]) -> list[str]:
    """The terminal lines of the `train` section."""
    tr, t = report["train"], report["target"]
    lines = [f"  training       {tr['loss']} loss, {tr['optimizer']} (lr {tr['lr']:g}): "
             f"{tr['parameters']} trained initializers ({tr['parameter_elements']:,} elements)"
             + (f", {tr['frozen']} frozen" if tr["frozen"] else "")]
    if report["mode"] != "stream":
        ro = tr["roles"]
        parts = [f"{name} {ro[r]['kernels']} kernels on {ro[r]['pes']:,} PEs"
                 for r, name in (("forward", "forward"), ("dgrad", "input-grad"),
                                 ("wgrad", "weight-grad"), ("update", "update")) if r in ro]
        lines.append(f"  roles          {'; '.join(parts)}; all sized to one bottleneck time")
        lines.append(f"  stash          {tr['stash_bytes_per_sample']:,} B/sample of forward "
                     f"activations held for the backward pass"
                     + (f" (most in {tr['stash_kernel']})" if tr["stash_kernel"] else ""))
        lines.append(f"  resident       {tr['resident_weight_and_state_bytes']:,} B of weights "
                     f"and optimizer state updated in place in SRAM")
        return lines
    pr = tr["phases_by_role"]
    counts = ", ".join(f"{v['phases']} {r}" for r, v in pr.items())
    src = {"option": "--micro-batch", "compute": "every phase compute-bound at this size",
           }.get(tr["micro_batch_source"], "the most the SRAM holds")
    rate = f"{tr['samples_per_second']:,.2f} samples/s" if tr["samples_per_second"] else "-"
    if tr["tokens_per_second"]:
        rate += f", {tr['tokens_per_second']:,.0f} tokens/s"
    lines += [
        f"  micro-batch    {tr['micro_batch']} sample{'s' if tr['micro_batch'] > 1 else ''} "
        f"per phase ({src}; activations "
        f"{POLICY_WORDS.get(tr['policy'], tr['policy'])})",
        f"  step           {tr['step_cycles']:,} cycles = {tr['step_seconds']:.4g} s per "
        f"micro-batch at {t['clock_hz'] / 1e9:g} GHz: {rate}",
        f"  phases         {counts}; "
        + ", ".join(f"{r} {v['cycles']:,} cycles" for r, v in pr.items()),
        "  bound by       " + ", ".join(f"{BOUND_WORDS[b]} {n}" for b, n in
                                       sorted(tr["phases_bound_by"].items())),
        f"  weight store   {tr['weights_in_bytes_per_step']:,} B of weights in, "
        f"{tr['gradients_out_bytes_per_step']:,} B of gradients out per step at "
        f"{tr['store_bytes_per_second'] / 1e9:g} GB/s (on-wafer edge I/O "
        f"{tr['edge_io_bytes_per_second'] / 1e12:.1f} TB/s)",
        f"  optimizer      {tr['store_optimizer']['steps']} update steps in the weight store, off "
        f"the wafer, once per step ({tr['store_optimizer']['weight_and_state_bytes']:,} B of "
        f"weights and state)",
    ]
    return lines
