"""Weight-streamed training steps: the store's link, the micro-batch, the
keep / recompute activation policies, and the simulator's proof that the
schedule's frees and recomputations are right."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.cli import main
from wsec.ir.fabric import Fabric
from wsec.ir.target import get_target

DATA = os.path.join(os.path.dirname(__file__), "data", "train")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "bench"))
from gen_gpt import make_gpt  # noqa: E402


@pytest.fixture(scope="module")
def small_gpt(tmp_path_factory) -> str:
    """A GPT of two layers from the benchmark generator (sparse weight file)."""
    d = tmp_path_factory.mktemp("gpt")
    path = str(d / "gpt.onnx")
    make_gpt(path, layers=2, hidden=128, heads=4, ffn=512, vocab=500, seq=32)
    return path


def test_auto_mode_streams_a_model_that_does_not_fit(small_gpt, tmp_path, capsys) -> None:
    out, rep = tmp_path / "t.bin", tmp_path / "r.json"
    rc = main([small_gpt, "-o", str(out), "--train", "--grid", "64x64", "--report-json",
               str(rep)])
    text = capsys.readouterr().out
    assert rc == 0
    report = json.load(open(rep))
    assert report["mode"] == "stream" and "mode stream" in text
    tr = report["train"]
    # per-step and per-phase figures, the micro-batch, tokens per second
    assert tr["micro_batch"] >= 1 and tr["micro_batch_source"] in ("sram", "compute")
    assert tr["tokens_per_sample"] == 32
    assert tr["tokens_per_second"] == pytest.approx(tr["samples_per_second"] * 32)
    assert tr["step_seconds"] == pytest.approx(tr["step_cycles"] / 1.1e9)
    assert tr["store_bytes_per_second"] == 150e9
    assert {"forward", "backward"} <= set(tr["phases_by_role"])
    for line in ("micro-batch", "step", "weight store", "optimizer"):
        assert f"  {line}" in text
    # a weight streams at the store's link, not the (wider) edge I/O
    bw = Fabric.of(get_target("wse2", (64, 64))).weight_stream_bytes_per_cycle
    assert bw == pytest.approx(150e9 / 1.1e9)
    for ph in report["phases"]:
        assert ph["stream"] == int(np.ceil(ph["weight_bytes"] * ph["passes"] / bw))
        assert ph["cycles"] == max(ph["compute"], ph["stream"], ph["stream_out"], ph["move"])


def test_micro_batch_option_is_honoured(small_gpt, tmp_path) -> None:
    rep = {}
    for b in (1, 4):
        path = tmp_path / f"r{b}.json"
        assert main([small_gpt, "-o", str(tmp_path / f"t{b}.bin"), "--train", "--mode",
                     "stream", "--micro-batch", str(b), "-q", "--report-json", str(path)]) == 0
        rep[b] = json.load(open(path))["train"]
    assert rep[4]["micro_batch"] == 4 and rep[4]["micro_batch_source"] == "option"
    # four samples share each weight stream: a sample costs no more than alone
    per = {b: rep[b]["step_cycles"] / b for b in rep}
    assert per[4] <= per[1]
    assert rep[4]["weights_in_bytes_per_step"] == rep[1]["weights_in_bytes_per_step"]


def test_bad_micro_batch_is_a_usage_error(small_gpt, tmp_path, capsys) -> None:
    rc = main([small_gpt, "-o", str(tmp_path / "t.bin"), "--train", "--micro-batch", "0"])
    assert rc == 2 and "--micro-batch 0" in capsys.readouterr().err
    rc = main([small_gpt, "-o", str(tmp_path / "t.bin"), "--micro-batch", "4"])
    assert rc == 2 and "add --train" in capsys.readouterr().err


def _compile(tmp: str, policy: str) -> str:
    out = os.path.join(tmp, f"{policy}.bin")
    assert main([os.path.join(DATA, "gpt2l.onnx"), "-o", out, "--train", "--mode", "stream",
                 "-p", f"schedule-train{{activations={policy}}}", "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def recomputed(tmp_path_factory) -> str:
    return _compile(str(tmp_path_factory.mktemp("rc")), "recompute")


@pytest.mark.parametrize("policy", ["recompute", "checkpoint"])
def test_recomputed_schedule_computes_the_step(policy, recomputed, tmp_path, capsys) -> None:
    binary = recomputed if policy == "recompute" else _compile(str(tmp_path), policy)
    p = load_binary(binary)
    phases = p.info["phases"]
    again = [ph for ph in phases if ph["role"] == "recompute"]
    assert again and p.info["attrs"]["train_schedule"]["policy"] == policy
    fwd = {ph["kernel"] for ph in phases if ph["role"] == "forward"}
    assert {ph["kernel"] for ph in again} <= fwd
    if policy == "checkpoint":  # whole layers again: matmuls with weights too
        assert any(p.kernels[ph["kernel"]].kind == "matmul" and p.kernels[ph["kernel"]].weights
                   for ph in again)
    rc = main(["run", binary, "--check", os.path.join(DATA, "gpt2l.onnx")])
    assert rc == 0 and "FAIL" not in capsys.readouterr().out


def test_simulator_refuses_a_value_freed_too_early(recomputed) -> None:
    p = load_binary(recomputed)
    phases = p.info["phases"]
    # free the first forward activation a backward phase reads right after it is made
    bwd_reads = {i for ph in phases if ph["role"] == "backward"
                 for i in p.kernels[ph["kernel"]].inputs}
    pos, value = next((i, o) for i, ph in enumerate(phases) if ph["role"] == "forward"
                      for o in p.kernels[ph["kernel"]].outputs if o in bwd_reads)
    phases[pos]["free"] = sorted(set(phases[pos]["free"]) | {value})
    with pytest.raises(SimError, match=rf"needs %{value}, which no earlier phase left in SRAM"):
        simulate(p, random_inputs(p))


def test_a_step_that_fits_no_policy_says_why(small_gpt, tmp_path, capsys) -> None:
    rc = main([small_gpt, "-o", str(tmp_path / "t.bin"), "--train", "--mode", "stream",
               "--grid", "2x2"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and "\n" not in err and not (tmp_path / "t.bin").exists()
    assert "one sample does not fit a PE's 49152 B under any activation policy" in err
    for policy in ("keep", "recompute", "checkpoint"):
        assert f"policy {policy}: the live activations need" in err


def test_a_real_export_with_external_weights_trains_and_checks_from_elsewhere(
        tmp_path, monkeypatch, capsys) -> None:
    """A NeoX dynamo export (fp16, weights in its .onnx.data, its MatMuls
    reading Transposes of them, as the real GPT-NeoX-20B's do), compiled and
    checked from a directory that is not the model's: the reference step is
    given to onnxruntime as bytes, its external data found beside the model."""
    model = os.path.join(os.path.dirname(__file__), "fixtures", "half", "neox_dynamo_o20.onnx")
    monkeypatch.chdir(tmp_path)
    assert main([model, "-o", "t.bin", "--train", "--mode", "stream", "-q"]) == 0
    capsys.readouterr()
    rc = main(["run", "t.bin", "--check", model])
    text = capsys.readouterr().out
    assert rc == 0 and "FAIL" not in text and "training step exported from" in text
    assert text.count("PASS") == len(load_binary("t.bin").info["outputs"])
