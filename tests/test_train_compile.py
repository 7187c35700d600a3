"""A compiled training step, simulated: `wsec MODEL --train` in both modes,
then `wsec run --check` against onnxruntime on the exported step, and the
torch goldens (loss, gradients, SGD-updated weights) to 1e-4 relative.

Also what each mode lays out for training: pipeline stashes forward
activations by forward-to-backward distance and holds weights in SRAM;
stream runs forward phases, then backward phases, streams gradients out
and leaves the optimizer to the weight store.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from wsec.backends.loader import load_binary
from wsec.cli import main
from wsec.ir.training import pipeline_stash

DATA = os.path.join(os.path.dirname(__file__), "data", "train")
MODELS = ("mlp", "cnn", "gpt2l")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[tuple[str, str], tuple[str, str]]:
    """(model, mode) -> (binary, report json), compiled once from another directory."""
    out: dict[tuple[str, str], tuple[str, str]] = {}
    cwd = os.getcwd()
    work = tmp_path_factory.mktemp("train")
    os.chdir(work)
    try:
        for name in MODELS:
            for mode in ("pipeline", "stream"):
                binary, rep = f"{name}.{mode}.bin", f"{name}.{mode}.json"
                rc = main([os.path.join(DATA, f"{name}.onnx"), "-o", binary, "--train",
                           "--mode", mode, "--lr", "0.1", "-q", "--report-json", rep])
                assert rc == 0, (name, mode)
                assert json.load(open(rep))["mode"] == mode  # forced, never fallen back
                out[(name, mode)] = (str(work / binary), str(work / rep))
    finally:
        os.chdir(cwd)
    return out


@pytest.mark.parametrize("mode", ["pipeline", "stream"])
@pytest.mark.parametrize("name", MODELS)
def test_simulated_step_matches_onnxruntime_and_torch(name, mode, compiled, tmp_path,
                                                      capsys) -> None:
    binary, _ = compiled[(name, mode)]
    g = dict(np.load(os.path.join(DATA, f"{name}.npz")))
    args = ["run", binary, "-o", str(tmp_path / "out.npz"),
            "--check", os.path.join(DATA, f"{name}.onnx")]
    for k in load_binary(binary).info["inputs"]:
        np.save(tmp_path / f"{k}.npy", g[k])
        args += ["--input", f"{k}={tmp_path / f'{k}.npy'}"]
    rc = main(args)
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "FAIL" not in text and "training step exported from" in text
    out = dict(np.load(tmp_path / "out.npz"))
    keys = [k for k in g if k == "loss" or k.startswith(("grad:", "new:"))]
    params = load_binary(binary).info["attrs"]["train"]["params"]
    assert len(keys) == 1 + 2 * len(params)  # the loss, every gradient, every update
    for k in keys:
        want = g[k]
        scale = max(float(np.abs(want).max()), 1e-12)
        err = np.abs(out[k] - want) / np.maximum(np.abs(want), 1e-2 * scale)
        assert float(err.max()) <= 1e-4, (k, float(err.max()))


def test_pipeline_stashes_activations_by_distance(compiled) -> None:
    binary, rep = compiled[("cnn", "pipeline")]
    report = json.load(open(rep))
    tr = report["train"]
    assert set(tr["roles"]) == {"forward", "dgrad", "wgrad", "update"}
    assert tr["stash_bytes_per_sample"] > 0
    p = load_binary(binary)
    # the first conv's output waits longest: its reader (the BatchNorm weight
    # gradient) sits near the end of the pipeline
    stashed = [k for k in p.kernels if k.dims.get("stash")]
    assert stashed and all(k.kind != "conv" or k.dims["stash"] for k in stashed)
    by_kind = {k.name: k.kind for k in p.kernels}
    assert "conv_wgrad" in by_kind.values()
    regions = {p.strings[int(r[1])] for r in p.regions}
    assert "stash" in regions
    # every kernel is sized to the one bottleneck time
    cyc = [k["cycles_per_sample"] for k in report["kernels"]]
    assert max(cyc) == report["summary"]["cycles_per_sample"]


def test_stash_grows_with_forward_to_backward_distance() -> None:
    from wsec.ir.graph import Node

    class K:  # a kernel as pipeline_stash sees it: kind, dims, body
        def __init__(self, name: str, kind: str, dims: dict | None = None) -> None:
            self.name, self.kind, self.dims = name, kind, dims or {}
            self.body = [Node(name, "Einsum" if kind == "matmul" else "Add", [], [])]

    class E:
        def __init__(self, src: str, dsts: list[str], nbytes: int) -> None:
            self.src, self.dsts, self.bytes_per_sample = src, dsts, nbytes

    # f2 (attention-like, B an activation) and f3 (a weight gradient) need a
    # whole sample: each delays it by one sample time; the rest stream rows
    ks = [K("f1", "elementwise"), K("f2", "matmul", {"Bact": 1}), K("f3", "conv_wgrad"),
          K("b3", "elementwise"), K("b2", "elementwise"), K("b1", "elementwise")]
    edges = [E("f1", ["f2", "b1"], 10), E("f2", ["f3", "b2"], 20), E("f3", ["b3"], 30),
             E("b3", ["b2"], 5), E("b2", ["b1"], 5)]
    stash = pipeline_stash(ks, edges)
    # arrivals f1 0, f2 0, f3 1, b3 2, b2 2, b1 2: f1's output waits 2 samples for
    # b1, f2's waits 1 (its own sample time excluded) for b2
    assert stash == {"b1": (10 * 2, 2), "b2": (20 * 1, 1)}


def test_stream_runs_forward_then_backward_with_the_optimizer_off_wafer(compiled) -> None:
    binary, rep = compiled[("gpt2l", "stream")]
    p = load_binary(binary)
    roles = [ph["role"] for ph in p.info["phases"]]
    first_bwd = roles.index("backward")
    assert set(roles[:first_bwd]) == {"forward"}
    assert set(roles[first_bwd:]) <= {"backward", "recompute"}
    store = p.info["store_steps"]
    assert len(store) == 2 * 29 - 29  # one optimizer step per trained parameter
    assert all(p.kernels[int(s["kernel"])].origin[0].startswith("update/") for s in store)
    report = json.load(open(rep))
    tr = report["train"]
    assert tr["micro_batch"] == p.info["micro_batch"] >= 1
    assert tr["tokens_per_second"] == pytest.approx(tr["samples_per_second"] * 8)
    assert tr["step_cycles"] == sum(ph["cycles"] for ph in p.info["phases"])
    assert tr["gradients_out_bytes_per_step"] > 0
    for ph in p.info["phases"]:
        assert ph["cycles"] == max(ph["compute"], ph["stream"], ph["stream_out"], ph["move"])


def test_weight_gradient_kernels_run_sharded_by_row_group(compiled) -> None:
    from wsec.backends.sim import random_inputs, simulate

    binary, _ = compiled[("cnn", "pipeline")]
    p = load_binary(binary)
    res = simulate(p, random_inputs(p))
    wg = [k for k in p.kernels if k.kind == "conv_wgrad"]
    assert wg and any(int(k.knobs["s"]) > 1 for k in wg)
    for k in wg:  # every PE of the rectangle took part in its row group
        uw, uh = k.unrotated_shape
        assert res.kernel_stats[k.name]["sharded_pes"] == uw * uh
