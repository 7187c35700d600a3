"""Simulator for weight-streaming binaries: phase after phase.

Why separate from `sim`: a stream-mode binary has no routes and no resident
weight shards. Each phase runs one kernel over its rectangle; its weights
arrive through the stream descriptors — a memory map of the referenced file
range (read only when the phase touches it, so a 41 GB file is never held)
or an embedded blob — and its activations are the values earlier phases
left in SRAM. A phase runs on its rectangle's PEs through the same per-PE
executors as a resident kernel (sim_exec), each PE computing from the
tiles the descriptors stream to it (`weight_shard` of the kind, as in
pipeline mode: sim_stream_pe) and from the activations its row holds (the
kind's per-row cut, moved in before the phase: sim_stream_pe.held) — moved
from the activation area, where a value lives only where and while its span
in META `activations` says (backends/activations.Residency): writing a
span's value evicts what its bytes held, and reading a value no span holds
then (overwritten, its span over, freed, never placed) is a `SimError`
naming the phase and what became of the value. So is a value a phase needs
that no earlier phase produced (and no host input provides), a weight
without a descriptor or a model output never produced.

A training step (META `store_steps`) runs its phases in the schedule's
order — recomputations included — and drops every value a phase's `free`
list names (its copy's last reader), so a backward phase that reads an
activation neither kept nor recomputed fails; values the optimizer needs
are streamed out to the weight store as they are produced, and the store
steps (the optimizer, off the wafer, on the reference semantics) run last
on them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from wsec.ir.types import DTYPES

from .activations import Residency
from .format import Program, type_dtype, type_shape
from .sim_base import COMPUTE_DTYPE, KernelIO, RunResult, SimError, value_array_type
from .sim_exec import run_kernel
from .sim_pe import node_of, run_op
from .sim_stream_pe import StreamImages, held, held_wavelets
from .weight_stream import stream_weight


def _as_compute(arr: np.ndarray) -> np.ndarray:
    a = np.asarray(arr)
    return a.astype(COMPUTE_DTYPE) if np.issubdtype(a.dtype, np.floating) else a


def simulate_stream(p: Program, inputs: Mapping[str, np.ndarray],
                    keep: bool = False, strict: bool = False) -> RunResult:
    """Run a stream-mode program on `inputs`; returns the host's outputs
    (`keep`: and every on-wafer phase's inputs and outputs; `strict`: a PE
    reading outside its row's flat share raises, sim.simulate)."""
    kept: dict[str, KernelIO] = {}
    missing = [n for n in p.info["inputs"] if n not in inputs]
    if missing:
        raise SimError(f"no value given for model input(s) {', '.join(missing)}")
    sram: dict[str, np.ndarray] = {}  # activations resident on the wafer
    area = Residency(p)  # where and while the activation area holds them
    for name in p.info["inputs"]:
        shape, dt = value_array_type(p, name)
        x = np.asarray(inputs[name])
        if x.shape != shape:
            raise SimError(f"input %{name} has shape {list(x.shape)} but the binary expects "
                           f"{list(shape)}")
        if area.place(name, 0, "the host"):
            sram[name] = _as_compute(x.astype(dt, copy=False))
    by_weight = {(int(d["kernel"]), int(d["weight"])): d for d in p.info.get("streams", [])}
    seconds: dict[str, float] = {}
    stats: dict[str, dict[str, int]] = {}
    store_steps = p.info.get("store_steps")
    store: dict[str, np.ndarray] = {}  # values streamed out to the weight store
    wanted = set(p.info["outputs"]) | {i for st in store_steps or []
                                       for i in p.kernels[int(st["kernel"])].inputs}
    steps = [(ph, False) for ph in p.info.get("phases", [])]
    steps += [(st, True) for st in store_steps or []]
    for pi, (ph, offwafer) in enumerate(steps):
        ki = int(ph["kernel"])
        k = p.kernels[ki]
        who = f"phase {pi} (kernel '{k.name}', {k.kind})"
        t0 = time.perf_counter()
        env: dict[str, np.ndarray] = {}
        src = store if offwafer else sram
        streamed = 0
        streamed_w: dict[tuple[int, int], np.ndarray] = {}
        for wi, wn in enumerate(k.weights):
            d = by_weight.get((ki, wi))
            if d is None:
                raise SimError(f"phase {ki} (kernel '{k.name}'): no stream descriptor for "
                               f"weight %{wn}")
            arr = stream_weight(p, d)
            streamed += int(arr.nbytes)
            env[wn] = streamed_w[(ki, wi)] = _as_compute(arr)
        for i in k.inputs:
            if i and i not in env:
                if i not in src:
                    where = "streamed out to the weight store" if offwafer else "left in SRAM"
                    lost = None if offwafer else area.lost(i)
                    raise SimError(f"{'store step' if offwafer else 'phase'} {ki} (kernel "
                                   f"'{k.name}', {k.kind}) needs %{i}, which no earlier phase "
                                   f"{where}" + (f" ({lost})" if lost else ""))
                if not offwafer:
                    area.read(i, pi, who)
                env[i] = src[i]
        st: dict[str, int] = {}
        if not offwafer:  # on the phase's PEs, each from its own streamed tiles
            acts = {i: env[i] for i in k.inputs if i and i not in k.weights}
            hold = held(p, ki, acts, {wn: env[wn] for wn in k.weights})
            for d in hold.values():
                d.strict = strict
            run = run_kernel(StreamImages(p, streamed_w), ki, acts, hold)
            env.update(run.values)
            st = {**run.stats, "held_move": held_wavelets(p, ki, hold)}
            if keep:
                weights = {wn: env[wn] for wn in k.weights}  # as streamed: the reference's
                kept[k.name] = KernelIO({**acts, **weights}, dict(run.values), dict(run.owner))
        else:  # the optimizer, off the wafer (the weight store)
            for nd in k.body:
                node = node_of(nd)
                args = []
                for i in node.inputs:
                    if not i:
                        args.append(None)
                    elif i in env:
                        args.append(env[i])
                    else:
                        raise SimError(f"kernel '{k.name}': op '{node.name}' reads %{i}, which "
                                       f"is neither a kernel input nor computed before it")
                outs = run_op(k.name, node, args)
                for o, a in zip(node.outputs, outs, strict=False):
                    if o:
                        env[o] = _store(p, k.name, o, a)
        for o in k.outputs:
            if o not in env:
                raise SimError(f"kernel '{k.name}' does not compute its output %{o}")
            if offwafer:
                store[o] = env[o]
                continue
            if area.place(o, pi, who):
                sram[o] = env[o]
            else:
                sram.pop(o, None)  # an older copy, if any, is not this phase's value
            if store_steps is not None and o in wanted:
                store[o] = env[o]  # streamed out as it is produced
        for v in ph.get("free", []):  # the schedule's last reader of this copy
            sram.pop(v, None)
            area.drop(v, f"{who} frees it")
        seconds[k.name] = seconds.get(k.name, 0.0) + time.perf_counter() - t0
        stats[k.name] = {**st, "streamed_bytes": streamed,
                         "phase_cycles": int(ph.get("cycles", 0)),
                         "phase_move": int(ph.get("move", 0))}
    outs = {}
    end = len(p.info.get("phases", []))
    for name in p.info["outputs"]:
        if name not in store and name in sram:
            area.read(name, end, "the host, after the last phase,")
        got = store.get(name, sram.get(name))
        if got is None:
            raise SimError(f"model output %{name} is never produced by any phase")
        shape, dt = value_array_type(p, name)
        outs[name] = np.asarray(got).astype(dt, copy=False).reshape(shape)
    return RunResult(outs, [], seconds, stats, kept)


def _store(p: Program, kernel: str, name: str, arr: np.ndarray) -> np.ndarray:
    text = p.info["values"].get(name)
    if text is None:
        return arr
    if tuple(arr.shape) != tuple(type_shape(text)):
        raise SimError(f"kernel '{kernel}' computed {list(arr.shape)} for %{name}, the binary "
                       f"declares {text}")
    if type_dtype(text) in ("f16", "f32"):  # the PE computes floats in f32
        return arr.astype(COMPUTE_DTYPE, copy=False)
    return arr.astype(DTYPES[type_dtype(text)], copy=False)
