"""Issue 5 part A: the GPT generator, a frontend that never reads weights,
mode selection, and repetition detection.

The generated models are checked against onnxruntime at tiny dims (real
weights); at GPT-NeoX-20B dims (sparse weight file, 2 layers) the frontend,
canonicalize and form-kernels must be fast and must not touch the weights
(peak RSS of a fresh process stays far below the weight file's size).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from conftest import ROOT, light_model
from wsec.driver import CompileOptions, compile_model
from wsec.frontends.onnx import load_onnx
from wsec.ir.interp import evaluate_module
from wsec.ir.repeats import find_repeats, kernel_signature
from wsec.ir.target import get_target
from wsec.mode import ModeError, select_mode
from wsec.passes.base import PassContext
from wsec.passes.canonicalize import Canonicalize
from wsec.passes.form_kernels import FormKernels

_spec = importlib.util.spec_from_file_location("gen_gpt", ROOT / "bench" / "gen_gpt.py")
gen_gpt = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules["gen_gpt"] = gen_gpt  # dataclasses look their module up
_spec.loader.exec_module(gen_gpt)  # type: ignore[union-attr]

TINY = dict(layers=2, hidden=32, heads=4, ffn=64, vocab=50, seq=8)
NEOX_2L = dict(gen_gpt.PRESETS["neox20b"], layers=2)


def _front(path: str, target: str = "wse2"):
    m = load_onnx(path)
    ctx = PassContext(get_target(target))
    Canonicalize().run(m, ctx)
    m.properties.add("canonical")
    return m, ctx


@pytest.mark.parametrize("rotary,mask", [(False, "where"), (True, "add"), (True, "where")])
def test_tiny_gpt_matches_onnxruntime(tmp_path: pathlib.Path, rotary: bool, mask: str) -> None:
    path = str(tmp_path / "gpt.onnx")
    gen_gpt.make_gpt(path, **TINY, rotary=rotary, sparse=False, dtype="float32", mask=mask)
    ids = np.random.default_rng(1).integers(0, TINY["vocab"], (1, TINY["seq"]))
    ref = ort.InferenceSession(path).run(None, {"input_ids": ids})[0]
    raw = load_onnx(path)
    m, _ = _front(path)
    assert len(m.nodes) < len(raw.nodes) * 0.75, "exporter noise was not folded"
    assert not {"Shape", "Cast", "Concat", "Unsqueeze", "Identity"} & {n.op for n in m.nodes
                                                                       if not rotary}
    got = evaluate_module(m, {"input_ids": ids})["logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_tiny_gpt_fp16_runs_in_onnxruntime(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "gpt16.onnx")
    gen_gpt.make_gpt(path, **TINY, sparse=False)
    ids = np.zeros((1, TINY["seq"]), np.int64)
    ref = ort.InferenceSession(path).run(None, {"input_ids": ids})[0]
    m, _ = _front(path)
    got = evaluate_module(m, {"input_ids": ids})["logits"]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), ref.astype(np.float32), atol=2e-2)


def test_sparse_weight_file_takes_no_disk(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "neox.onnx")
    data = gen_gpt.make_gpt(path, **NEOX_2L)
    st = os.stat(data)
    assert st.st_size > 3e9  # 2 layers + embeddings + LM head at NeoX dims, fp16
    assert st.st_blocks * 512 < 1e6
    assert os.path.getsize(path) < 1e6


_PROBE = """
import json, sys, time
t0 = time.perf_counter()
from wsec.frontends.onnx import load_onnx
from wsec.ir.target import get_target
from wsec.passes.base import PassContext
from wsec.passes.canonicalize import Canonicalize
m = load_onnx(sys.argv[1])
nodes = len(m.nodes)
Canonicalize().run(m, PassContext(get_target("wse2")))
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so it would
# report the forking test runner's own peak
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"seconds": time.perf_counter() - t0, "before": nodes, "after": len(m.nodes),
                  "rss_mb": hwm / 1024}))
"""


def test_neox20b_two_layers_loads_without_reading_weights(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "neox.onnx")
    gen_gpt.make_gpt(path, **NEOX_2L, rotary=True)
    r = subprocess.run([sys.executable, "-c", _PROBE, path], capture_output=True, text=True,
                       check=True)
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["rss_mb"] < 400  # the weights alone are 3 GB
    assert stats["after"] < stats["before"]


def test_auto_mode_streams_neox_dims(tmp_path: pathlib.Path) -> None:
    """Two NeoX-20B layers need 6.7 GB of SRAM: they fit the whole wse2 wafer
    (36.6 GB), so auto streams them on a 1.5 GB program grid (150 x 200)."""
    path = str(tmp_path / "neox.onnx")
    gen_gpt.make_gpt(path, **NEOX_2L)
    res = compile_model(path, CompileOptions(stop_after="form-kernels", grid=(150, 200)))
    m = res.module
    d = select_mode(m, res.target, "auto")
    assert d.mode == "stream" and m.attrs["mode"] == "stream"
    assert "stream (auto)" in m.attrs["mode_reason"]
    assert f"{d.bytes_available:,} B" in d.reason and d.bytes_needed > d.bytes_available
    with pytest.raises(ModeError, match=r"--mode pipeline: .* has 1,474,560,000 B"):
        select_mode(m, res.target, "pipeline")
    assert select_mode(m, res.target, "stream").mode == "stream"


def test_full_neox_layers_do_not_fit_the_wafer() -> None:
    """The 44-layer model's weights alone exceed wse2's total SRAM."""
    n = gen_gpt.param_count(**gen_gpt.PRESETS["neox20b"])
    t = get_target("wse2")
    assert 19e9 < n < 22e9 and 2 * n > t.pes * t.sram_bytes


def test_auto_mode_keeps_resnet50_pipelined() -> None:
    res = compile_model(str(light_model("resnet50")), CompileOptions(stop_after="form-kernels"))
    d = select_mode(res.module, res.target, "auto")
    assert d.mode == "pipeline" and d.bytes_needed < d.bytes_available
    assert "pipeline (auto)" in d.reason
    assert "sized" not in res.module.properties  # the size probe left the module alone
    assert all(k.knobs is None for k in res.module.kernels())


def test_forced_pipeline_on_small_grid_is_one_line_error() -> None:
    res = compile_model(str(light_model("resnet50")),
                        CompileOptions(grid=(16, 16), stop_after="form-kernels"))
    with pytest.raises(ModeError) as e:
        select_mode(res.module, res.target, "pipeline")
    msg = str(e.value)
    assert "\n" not in msg and "16x16 grid" in msg and "--mode stream" in msg


def test_driver_records_mode_in_report(tmp_path: pathlib.Path) -> None:
    from wsec.report import build_report, format_summary

    res = compile_model(str(light_model("squeezenet")), CompileOptions())
    rep = build_report(res.module, res.target, res.manager.timings)
    assert rep["mode"] == "pipeline" and rep["mode_reason"].startswith("pipeline (auto)")
    assert "select-mode" in [n for n, _ in res.manager.timings]
    assert "  mode           pipeline (auto)" in format_summary(rep)


def test_driver_stream_mode_without_backend_names_the_reason(tmp_path: pathlib.Path) -> None:
    from wsec.passes import REGISTRY

    if "schedule-phases" in REGISTRY:
        pytest.skip("the streaming back end is registered")
    with pytest.raises(ModeError, match=r"stream \(forced by --mode stream\).*schedule-phases"):
        compile_model(str(light_model("squeezenet")), CompileOptions(mode="stream"))


def test_repeated_layers_are_detected(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "gpt.onnx")
    gen_gpt.make_gpt(path, **dict(TINY, layers=5), rotary=True)
    m, ctx = _front(path)
    FormKernels().run(m, ctx)
    groups = find_repeats(m)
    assert groups and groups[0].count == 5
    per_layer = groups[0].period
    assert len(list(m.kernels())) - 5 * per_layer < per_layer
    # different weights, same structure: same signatures position by position
    first, second = groups[0].blocks[:2]
    assert [kernel_signature(m.kernel(k), m) for k in first] == \
        [kernel_signature(m.kernel(k), m) for k in second]
    assert m.kernel(first[1]).inputs != m.kernel(second[1]).inputs
    assert len({kernel_signature(m.kernel(k), m) for k in first}) > per_layer // 2


def test_neox20b_44_layers_are_one_repeat_group(tmp_path: pathlib.Path) -> None:
    path = str(tmp_path / "neox.onnx")
    gen_gpt.make_gpt(path, **gen_gpt.PRESETS["neox20b"], rotary=True)
    m, ctx = _front(path)
    FormKernels().run(m, ctx)
    groups = find_repeats(m)
    assert groups[0].count == 44
    assert len(list(m.kernels())) - 44 * groups[0].period < groups[0].period


def test_no_repetition_in_a_cnn() -> None:
    res = compile_model(str(light_model("squeezenet")), CompileOptions(stop_after="form-kernels"))
    for g in find_repeats(res.module):
        assert g.kernels < len(list(res.module.kernels()))
