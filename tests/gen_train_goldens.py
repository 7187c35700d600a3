"""Generate the training goldens in tests/data/train/ with PyTorch autograd.

Not run by the test suite (torch is no test dependency): run it once after
changing a model here, and commit what it writes:

    .venv/bin/pip install torch==2.13.0
    .venv/bin/python tests/gen_train_goldens.py

For each model — a small MLP, a small CNN (Conv, BatchNorm in training
mode, overlapping MaxPool, a strided Conv, global average pooling) and a
2-layer GPT (token and position embeddings, pre-LN blocks with causal
attention and an erf-GELU MLP, final LayerNorm, LM head) — it writes
`<name>.onnx` (exported in eval mode, BatchNorm unfolded, parameters as
named initializers) and `<name>.npz`: the inputs, `labels`, the
cross-entropy `loss`, `grad:<parameter>` for every parameter and
`new:<parameter>` after one SGD step with lr = LR, all from torch.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch import nn

LR = 0.1
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "train")


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)  # BatchNorm follows
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, seq: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, ffn), nn.Linear(ffn, d)
        self.register_buffer("mask", torch.tril(torch.ones(seq, seq, dtype=torch.bool)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.reshape(b, t, self.heads, hd).transpose(1, 2) for z in (q, k, v))
        s = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
        s = s.masked_fill(~self.mask[:t, :t], float("-inf"))
        a = torch.softmax(s, dim=-1) @ v
        x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
        return x + self.out(nn.functional.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab: int = 32, seq: int = 8, d: int = 16, heads: int = 2,
                 ffn: int = 32, layers: int = 2) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads, ffn, seq) for _ in range(layers))
        self.ln_f, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)
        self.register_buffer("pos", torch.arange(seq).unsqueeze(0))
        with torch.no_grad():  # distinct norm parameters (the exporter merges equal tensors)
            for m in self.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.add_(0.1 * torch.randn_like(m.weight))
                    m.bias.add_(0.1 * torch.randn_like(m.bias))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(ids) + self.wpe(self.pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


def _golden(name: str, model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
            input_name: str) -> None:
    path = os.path.join(OUT, f"{name}.onnx")
    model.eval()
    torch.onnx.export(model, (x,), path, input_names=[input_name], output_names=["y"],
                      opset_version=17, dynamo=False, do_constant_folding=False)
    names = {t.name for t in __import__("onnx").load(path).graph.initializer}
    missing = [p for p, _ in model.named_parameters() if p not in names]
    assert not missing, f"{name}: parameters not exported as initializers: {missing}"
    model.train()  # BatchNorm normalises with the batch's statistics
    y = model(x)
    loss = nn.functional.cross_entropy(y.reshape(-1, y.shape[-1]), labels.reshape(-1))
    loss.backward()
    out = {input_name: x.numpy(), "labels": labels.numpy(), "loss": loss.detach().numpy()}
    for pname, p in model.named_parameters():
        out[f"grad:{pname}"] = p.grad.numpy()
        out[f"new:{pname}"] = (p - LR * p.grad).detach().numpy()
    np.savez_compressed(os.path.join(OUT, f"{name}.npz"), **out)
    print(f"{path}: loss {float(loss):.6f}, {len(list(model.parameters()))} parameters")


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    _golden("mlp", MLP(), torch.randn(4, 8), torch.tensor([1, 7, 3, 0]), "x")
    torch.manual_seed(1)
    _golden("cnn", CNN(), torch.randn(2, 3, 12, 12), torch.tensor([4, 1]), "x")
    torch.manual_seed(2)
    gpt = GPT()
    ids = torch.randint(0, 32, (1, 8))
    _golden("gpt2l", gpt, ids, torch.randint(0, 32, (1, 8)), "input_ids")


if __name__ == "__main__":
    main()
