"""Compile time and peak memory of real fp16 exports at full size, structure only.

Why: the product's headline is a 20-billion-parameter GPT compiled for one
wafer with one command, and a generator's tidy graph (bench/gen_gpt.py) is
not what users bring: torch's dynamo exporter writes thousands of
Reshape/Slice/Cast/Constant nodes, opset 20, fp16 weights in an external
data file. This bench builds each transformers architecture at its real
dimensions on torch's meta device (parameters never materialised), exports
it with the dynamo exporter (opset 20, the exporter's own optimizer run as
by default), and writes every parameter as external data into one sparse
file sized with truncate, so a 350 GB model costs no disk and no memory.
Then, in a fresh process whose current directory is not the model's, it
runs `wsec MODEL -o m.bin` (auto mode) and `wsec inspect m.bin`, and prints
wall time and peak RSS (VmHWM of that process) per model.

    .venv/bin/python bench/real_exports.py [--models gpt2-xl,neox-20b] [--target wse2]
        [--keep DIR]

Needs torch and transformers (not test dependencies; the bench is not run
in CI). Export time is printed separately: it is torch's, not wsec's.

Measured (torch 2.13.0 CPU, transformers 5.25.0, wse2, 2 shared cores, one
run each; `--models gpt2-xl,neox-20b,gpt3-175b`):

    model       params  weights nodes export s compile s RSS MB bin MB inspect mode
    gpt2-xl      1.56B    3.1GB  1788     24.9      13.4    367   3.43      ok stream (*)
    neox-20b    20.55B   41.1GB  2129     43.3       3.3    299   1.68      ok stream
    gpt3-175b  174.60B  349.2GB  3564    121.3       5.7    142   2.66      ok stream

(*) "stream (fallback: route found it infeasible)": GPT-2 XL fits the
wafer's SRAM, so auto mode places and routes a pipeline layout first;
routing runs out of colours (about 3 s placing, 9-14 s routing of its
compile) and it falls back to streaming.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import onnx
from onnx import TensorProto

ALIGN = 4096  # weight offsets inside the data file (page aligned for mmap)


@dataclass(frozen=True)
class Spec:
    """One architecture at full size: its transformers config and input length."""

    family: str
    config: dict
    seq: int
    mask_input: bool = False  # BERT takes an attention mask as a model input


MODELS: dict[str, Spec] = {
    "gpt2-xl": Spec("gpt2", dict(n_embd=1600, n_layer=48, n_head=25, vocab_size=50257,
                                 n_positions=1024), 1024),
    "bert-large": Spec("bert", dict(hidden_size=1024, num_hidden_layers=24,
                                    num_attention_heads=16, intermediate_size=4096,
                                    vocab_size=30522, max_position_embeddings=512), 512, True),
    "llama2-7b": Spec("llama", dict(hidden_size=4096, num_hidden_layers=32,
                                    num_attention_heads=32, num_key_value_heads=32,
                                    intermediate_size=11008, vocab_size=32000,
                                    max_position_embeddings=4096), 2048),
    "neox-20b": Spec("neox", dict(hidden_size=6144, num_hidden_layers=44, num_attention_heads=64,
                                  intermediate_size=24576, vocab_size=50432, rotary_pct=0.25,
                                  max_position_embeddings=2048), 2048),
    "gpt3-175b": Spec("gpt2", dict(n_embd=12288, n_layer=96, n_head=96, vocab_size=50257,
                                   n_positions=2048), 2048),
}


def _model(spec: Spec):  # -> torch.nn.Module (torch is imported lazily)
    import torch
    import transformers as tf

    classes: dict[str, tuple[Callable, Callable]] = {
        "gpt2": (tf.GPT2Config, tf.GPT2LMHeadModel), "bert": (tf.BertConfig, tf.BertModel),
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM),
        "neox": (tf.GPTNeoXConfig, tf.GPTNeoXForCausalLM)}
    config_cls, model_cls = classes[spec.family]
    cfg = config_cls(**spec.config)
    cfg._attn_implementation = "eager"
    cfg.use_cache = False
    with torch.device("meta"):
        model = model_cls(cfg).half().eval()

    class Wrap(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
            mask = torch.ones_like(ids) if mask is None else mask
            return self.model(input_ids=ids, attention_mask=mask, return_dict=False)[0]

    return Wrap()


def export_structure(spec: Spec, path: str) -> dict:
    """Export `spec` with the dynamo exporter; parameters become a sparse external file."""
    import torch

    model = _model(spec)
    ids = torch.zeros((1, spec.seq), dtype=torch.int64, device="meta")
    args = (ids, torch.ones_like(ids)) if spec.mask_input else (ids,)
    names = ["input_ids", "attention_mask"] if spec.mask_input else ["input_ids"]
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the exporter's optimizer cannot read meta tensors: export unoptimised, take the
        # parameters out, then run the same optimizer the default export runs
        prog = torch.onnx.export(model, args, dynamo=True, opset_version=20, optimize=False,
                                 input_names=names, output_names=["y"])
        g = prog.model.graph
        params = {}
        for name, v in list(g.initializers.items()):
            raw = getattr(v.const_value, "raw", None)
            if isinstance(raw, torch.Tensor) and raw.is_meta:
                params[name] = (int(v.dtype), [int(d) for d in v.shape])
                v.const_value = None
        prog.optimize()
        for name in params:
            g.initializers.pop(name, None)
    import onnx_ir

    proto = onnx_ir.serde.serialize_model(prog.model)
    data = os.path.basename(path) + ".data"
    used = {i for n in proto.graph.node for i in n.input}
    offset = 0
    for name, (dtype, dims) in params.items():
        if name not in used:
            continue
        n = 1
        for d in dims:
            n *= d
        length = n * onnx.helper.tensor_dtype_to_np_dtype(dtype).itemsize
        t_ = proto.graph.initializer.add()
        t_.name, t_.data_type, t_.data_location = name, dtype, TensorProto.EXTERNAL
        t_.dims.extend(dims)
        for k, val in (("location", data), ("offset", str(offset)), ("length", str(length))):
            e = t_.external_data.add()
            e.key, e.value = k, val
        offset += -(-length // ALIGN) * ALIGN
    onnx.save(proto, path)
    with open(os.path.join(os.path.dirname(path), data), "wb") as f:
        f.truncate(offset)  # sparse: sized, never written
    return {"export_s": time.perf_counter() - t, "nodes": len(proto.graph.node),
            "weights_gb": offset / 1e9,
            "params_b": sum(_numel(d) for _, d in params.values()) / 1e9}


def _numel(dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


_CHILD = r"""
import json, sys, time
t = time.perf_counter()
from wsec.cli import main
rc = main([sys.argv[1], "-o", "m.bin", "--target", sys.argv[2], "-q",
           "--report-json", "m.json"])
out = {"rc": rc, "compile_s": time.perf_counter() - t,
       "rss_mb": next(int(l.split()[1]) for l in open("/proc/self/status")
                      if l.startswith("VmHWM")) / 1024}
if rc == 0:
    rep = json.load(open("m.json"))
    out.update(mode=rep["mode"], reason=rep.get("mode_reason", ""),
               bin_mb=__import__("os").path.getsize("m.bin") / 1e6)
print(json.dumps(out))
"""


def compile_elsewhere(path: str, target: str, work: str) -> dict:
    """`wsec MODEL -o m.bin` in a fresh process whose cwd is not the model's, then inspect."""
    r = subprocess.run([sys.executable, "-c", _CHILD, path, target], capture_output=True,
                       text=True, cwd=work)
    lines = r.stdout.strip().splitlines()
    row = json.loads(lines[-1]) if lines else {"rc": -1}
    if row.get("rc"):
        row["error"] = (r.stderr.strip().splitlines() or ["?"])[-1][:160]
        return row
    wsec = os.path.join(os.path.dirname(sys.executable), "wsec")
    ins = subprocess.run([wsec, "inspect", "m.bin"], capture_output=True, text=True, cwd=work)
    row["inspect"] = "ok" if ins.returncode == 0 else f"FAIL {ins.stderr.strip()[:80]}"
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--target", default="wse2")
    ap.add_argument("--keep", metavar="DIR", help="export into DIR and keep the models")
    a = ap.parse_args(argv)
    head = (f"{'model':<11} {'params':>8} {'weights':>9} {'nodes':>6} {'export s':>8} "
            f"{'compile s':>9} {'RSS MB':>7} {'bin MB':>7} {'inspect':>7}  mode")
    print(head)
    print("-" * len(head), flush=True)
    for name in (m.strip() for m in a.models.split(",")):
        with tempfile.TemporaryDirectory(prefix="wsec-real-") as tmp:
            model_dir = a.keep or os.path.join(tmp, "model")
            work = os.path.join(tmp, "elsewhere")
            os.makedirs(model_dir, exist_ok=True)
            os.makedirs(work)
            path = os.path.join(model_dir, f"{name}.onnx")
            ex = export_structure(MODELS[name], path)
            r = compile_elsewhere(path, a.target, work)
        mode = r.get("mode") or f"ERROR {r.get('error', '?')}"
        if "fallback" in str(r.get("reason", "")):  # the pipeline was placed, then dropped
            mode += " (fallback: " + r["reason"].split(" but ", 1)[-1].split(" (", 1)[0] + ")"
        print(f"{name:<11} {ex['params_b']:>7.2f}B {ex['weights_gb']:>7.1f}GB {ex['nodes']:>6} "
              f"{ex['export_s']:>8.1f} {r.get('compile_s', 0):>9.1f} {r.get('rss_mb', 0):>7.0f} "
              f"{r.get('bin_mb', 0):>7.2f} {r.get('inspect', '-'):>7}  {mode}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
