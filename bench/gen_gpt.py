"""Generate GPT-style ONNX models of any size, weights as external data.

Why: weight streaming (issue 5) has to be exercised on models that do not
fit anywhere — GPT-NeoX 20B has ~41 GB of fp16 weights. The generator
writes the graph (small) and one external-data file that holds every
weight; with `sparse=True` (the default) that file is only *sized* with
truncate, so a 41 GB model takes no disk and no time to write, and a
compiler that never reads weights can still be measured on it. With
`sparse=False` real random weights are written (tiny models, tests against
onnxruntime).

`exporter_noise=True` adds what torch.onnx exports carry: per reshape a
`Shape -> Gather -> Unsqueeze -> Concat (-> Cast) -> Reshape` chain,
Constant nodes for scalars, Identity copies; canonicalisation must fold
them all away.

CLI: python bench/gen_gpt.py --preset neox20b OUT_DIR [--layers N] [--rotary]
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
ALIGN = 4096  # weight offsets inside the data file (page aligned for mmap)

PRESETS: dict[str, dict[str, int]] = {
    "125m": dict(layers=12, hidden=768, heads=12, ffn=3072, vocab=50257, seq=2048),
    "1.3b": dict(layers=24, hidden=2048, heads=16, ffn=8192, vocab=50257, seq=2048),
    "6.7b": dict(layers=32, hidden=4096, heads=32, ffn=16384, vocab=50257, seq=2048),
    "neox20b": dict(layers=44, hidden=6144, heads=64, ffn=24576, vocab=50432, seq=2048),
    "175b": dict(layers=96, hidden=12288, heads=96, ffn=49152, vocab=50257, seq=2048),
}


@dataclass
class _Builder:
    """Collects nodes, inline constants and external weights of one graph."""

    np_dtype: np.dtype
    sparse: bool
    data_name: str
    noise: bool
    rng: np.random.Generator
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    inits: list[onnx.TensorProto] = field(default_factory=list)
    weights: list[tuple[str, tuple[int, ...], np.ndarray | None, int]] = field(
        default_factory=list)
    offset: int = 0
    counter: int = 0

    def fresh(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    def node(self, op: str, inputs: list[str], name: str | None = None, n_out: int = 1,
             **attrs: object) -> list[str]:
        nm = name or self.fresh(op)
        outs = [f"{nm}_out{i}" if n_out > 1 else f"{nm}_out" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=nm, **attrs))
        return outs

    def op(self, op: str, inputs: list[str], name: str | None = None, **attrs: object) -> str:
        return self.node(op, inputs, name, **attrs)[0]

    def const(self, name: str, value: np.ndarray) -> str:
        """A small constant: a Constant node (exporter style) or an initializer."""
        arr = np.asarray(value)
        if self.noise:
            nm = self.fresh(name)
            self.nodes.append(helper.make_node("Constant", [], [nm], name=nm,
                                               value=numpy_helper.from_array(arr, nm)))
            return nm
        if not any(t.name == name for t in self.inits):
            self.inits.append(numpy_helper.from_array(arr, name))
        return name

    def scalar(self, name: str, v: float) -> str:
        return self.const(name, np.array(v, self.np_dtype))

    def weight(self, name: str, shape: tuple[int, ...], scale: float = 0.02,
               value: np.ndarray | None = None, dtype: np.dtype | None = None) -> str:
        """A weight stored in the external-data file at a page-aligned offset."""
        dt = np.dtype(dtype or self.np_dtype)
        if self.sparse:
            arr = None
        elif value is not None:
            arr = np.asarray(value, dt)
        else:
            arr = (self.rng.standard_normal(shape) * scale).astype(dt)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
        self.offset = -(-self.offset // ALIGN) * ALIGN
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(dt)
        t.dims.extend(shape)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", self.data_name), ("offset", str(self.offset)),
                     ("length", str(nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
        self.inits.append(t)
        self.weights.append((name, shape, arr, self.offset))
        self.offset += nbytes
        return name

    # --- exporter-style building blocks ---------------------------------
    def reshape(self, x: str, keep_dims: int, tail: list[int]) -> str:
        """Reshape x to x.shape[:keep_dims] + tail, the way exporters spell it:
        sizes read from Shape at run time, then Unsqueeze'd and Concat'ed."""
        if not self.noise:
            return self.op("Reshape", [x, self.const(self.fresh("shape"),
                                                         np.array([0] * keep_dims + tail,
                                                                  np.int64))])
        shape = self.op("Shape", [x])
        parts = []
        for d in range(keep_dims):
            g = self.op("Gather", [shape, self.const("idx", np.array(d, np.int64))], axis=0)
            parts.append(self.op("Unsqueeze", [g, self.const("axes", np.array([0], np.int64))]))
        parts += [self.const("dim", np.array([t], np.int64)) for t in tail]
        target = self.op("Concat", parts, axis=0)
        target = self.op("Cast", [target], to=TensorProto.INT64)
        return self.op("Reshape", [x, target])

    def linear(self, x: str, name: str, k: int, n: int, bias: bool = True) -> str:
        y = self.op("MatMul", [x, self.weight(f"{name}.weight", (k, n))], name=f"{name}.matmul")
        if bias:
            y = self.op("Add", [y, self.weight(f"{name}.bias", (n,), scale=0.01)],
                        name=f"{name}.add")
        return y

    def layer_norm(self, x: str, name: str, hidden: int) -> str:
        g = self.weight(f"{name}.weight", (hidden,), value=1.0 + 0.1 * self.rng.standard_normal(
            hidden) if not self.sparse else None)
        b = self.weight(f"{name}.bias", (hidden,), scale=0.1)
        return self.op("LayerNormalization", [x, g, b], name=name, axis=-1, epsilon=1e-5)


def _rotary_tables(seq: int, hd: int) -> tuple[np.ndarray, np.ndarray]:
    inv = 1.0 / (10000.0 ** (np.arange(0, hd, 2) / hd))
    ang = np.outer(np.arange(seq), inv)  # [seq, hd/2]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=1)
    sin = np.concatenate([-np.sin(ang), np.sin(ang)], axis=1)  # rotate_half's sign folded in
    return cos, sin


def make_gpt(path: str, layers: int, hidden: int, heads: int, ffn: int, vocab: int, seq: int,
             rotary: bool = False, exporter_noise: bool = True, sparse: bool = True,
             dtype: str = "float16", mask: str = "where", seed: int = 0) -> str:
    """Write a GPT-style ONNX model to `path` and its weights beside it
    (`<stem>.weights`, one file, every weight at its own offset). Returns
    the path of the weight file. Batch 1; input `input_ids` int64 [1, seq];
    output `logits` [1, seq, vocab]. `mask` is 'where' (Where on a bool
    causal mask) or 'add' (Add of a 0/-inf-like mask)."""
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not divisible by heads {heads}")
    if mask not in ("where", "add"):
        raise ValueError(f"mask must be 'where' or 'add', got '{mask}'")
    npd = np.dtype(dtype)
    hd = hidden // heads
    stem = os.path.splitext(os.path.basename(path))[0]
    data_name = f"{stem}.weights"
    b = _Builder(npd, sparse, data_name, exporter_noise, np.random.default_rng(seed))

    x = b.op("Gather", [b.weight("wte", (vocab, hidden)), "input_ids"], name="embed", axis=0)
    if not rotary:
        x = b.op("Add", [x, b.weight("wpe", (seq, hidden), scale=0.01)], name="embed.pos")
    causal = np.tril(np.ones((seq, seq), bool))
    if mask == "where":
        mask_name = b.weight("causal_mask", (seq, seq), value=causal, dtype=np.dtype(bool))
        neg = float(np.finfo(npd).min)
    else:
        mask_name = b.weight("causal_mask", (seq, seq),
                             value=np.where(causal, 0.0, np.finfo(npd).min))
    if rotary:
        cos, sin = _rotary_tables(seq, hd)
        cos_name = b.weight("rotary.cos", (seq, hd), value=cos)
        sin_name = b.weight("rotary.sin", (seq, hd), value=sin)

    def rope(t: str) -> str:
        lo = b.op("Slice", [t, b.const("starts", np.array([0], np.int64)),
                            b.const("ends", np.array([hd // 2], np.int64)),
                            b.const("axes", np.array([-1], np.int64))])
        hi = b.op("Slice", [t, b.const("starts", np.array([hd // 2], np.int64)),
                            b.const("ends", np.array([hd], np.int64)),
                            b.const("axes", np.array([-1], np.int64))])
        rot = b.op("Concat", [hi, lo], axis=-1)
        return b.op("Add", [b.op("Mul", [t, cos_name]), b.op("Mul", [rot, sin_name])])

    for i in range(layers):
        p = f"h{i}"
        h = b.layer_norm(x, f"{p}.ln_1", hidden)
        qkv = b.linear(h, f"{p}.attn.qkv", hidden, 3 * hidden)
        q, k, v = b.node("Split", [qkv, b.const("split", np.array([hidden] * 3, np.int64))],
                         name=f"{p}.attn.split", n_out=3, axis=-1)
        heads_of = [b.op("Transpose", [b.reshape(t, 2, [heads, hd])], perm=[0, 2, 1, 3])
                    for t in (q, k, v)]
        q, k, v = heads_of
        if rotary:
            q, k = rope(q), rope(k)
        kt = b.op("Transpose", [k], perm=[0, 1, 3, 2])
        s = b.op("MatMul", [q, kt], name=f"{p}.attn.qk")
        s = b.op("Div", [s, b.scalar("scale", math.sqrt(hd))])
        if mask == "where":
            s = b.op("Where", [mask_name, s, b.scalar("neg", neg)], name=f"{p}.attn.mask")
        else:
            s = b.op("Add", [s, mask_name], name=f"{p}.attn.mask")
        a = b.op("Softmax", [s], name=f"{p}.attn.softmax", axis=-1)
        c = b.op("MatMul", [a, v], name=f"{p}.attn.av")
        c = b.op("Transpose", [c], perm=[0, 2, 1, 3])
        c = b.reshape(c, 2, [hidden])
        if exporter_noise:
            c = b.op("Identity", [c])
        x = b.op("Add", [x, b.linear(c, f"{p}.attn.proj", hidden, hidden)], name=f"{p}.res1")
        h = b.layer_norm(x, f"{p}.ln_2", hidden)
        f = b.linear(h, f"{p}.mlp.fc", hidden, ffn)
        erf = b.op("Erf", [b.op("Div", [f, b.scalar("sqrt2", math.sqrt(2.0))])])
        g = b.op("Mul", [b.op("Mul", [f, b.scalar("half", 0.5)]),
                         b.op("Add", [erf, b.scalar("one", 1.0)])], name=f"{p}.mlp.gelu")
        x = b.op("Add", [x, b.linear(g, f"{p}.mlp.proj", ffn, hidden)], name=f"{p}.res2")
    x = b.layer_norm(x, "ln_f", hidden)
    logits = b.op("MatMul", [x, b.weight("lm_head.weight", (hidden, vocab))], name="lm_head")
    b.nodes[-1].output[0] = "logits"

    elem = helper.np_dtype_to_tensor_dtype(npd)
    graph = helper.make_graph(
        b.nodes, f"gpt_{layers}x{hidden}",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, seq])],
        [helper.make_tensor_value_info("logits", elem, [1, seq, vocab])],
        initializer=b.inits)
    del logits
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="wsec-bench-gen_gpt")
    model.ir_version = 8
    out_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(out_dir, exist_ok=True)
    data_path = os.path.join(out_dir, data_name)
    with open(data_path, "wb") as f:
        for _, _, arr, off in b.weights:
            if arr is not None:
                f.seek(off)
                f.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes())
        f.truncate(b.offset)  # sparse: sets the size, writes nothing
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return data_path


def param_count(layers: int, hidden: int, heads: int, ffn: int, vocab: int, seq: int) -> int:
    """Parameters of `make_gpt`'s model (learned positions, biases, norms)."""
    per_layer = 4 * hidden * hidden + 2 * hidden * ffn + 9 * hidden + ffn
    return layers * per_layer + 2 * vocab * hidden + seq * hidden + 2 * hidden


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), required=True)
    ap.add_argument("out_dir")
    ap.add_argument("--layers", type=int, help="override the preset's layer count")
    ap.add_argument("--rotary", action="store_true", help="rotary instead of learned positions")
    ap.add_argument("--no-noise", action="store_true", help="a clean graph (no exporter noise)")
    a = ap.parse_args(argv)
    dims = dict(PRESETS[a.preset])
    if a.layers:
        dims["layers"] = a.layers
    name = f"gpt_{a.preset}" + (f"_{a.layers}l" if a.layers else "")
    path = os.path.join(a.out_dir, name + ".onnx")
    data = make_gpt(path, **dims, rotary=a.rotary, exporter_noise=not a.no_noise)
    print(f"{path}: {param_count(**dims) / 1e9:.2f}B parameters, "
          f"{os.path.getsize(data) / 1e9:.1f} GB weights in {data} (sparse)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
