"""Placing a layer-pipelined training step: each layer's backward kernels
packed beside its forward kernel (wsec.ir.training.placement_order), so the
activations stashed for the backward pass and the gradients passed between
layers travel to neighbours instead of across the wafer — what lets
ResNet-50's training step (1330 kernels) route in the router's colors."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import onnx
import pytest
from wsec.cli import main
from wsec.driver import CompileOptions, compile_model
from wsec.ir.graph import HOST, Node
from wsec.ir.training import placement_order, role_of_kernel

DATA = os.path.join(os.path.dirname(__file__), "data", "train")


class K:  # a kernel as placement_order sees it: origin, body, inputs
    def __init__(self, origin: list[str], inputs: list[str] = (), outputs: list[str] = ()
                 ) -> None:
        self.name, self.origin, self.inputs = origin[0], origin, list(inputs)
        self.body = [Node(origin[0], "Add", list(inputs), list(outputs))]


def test_placement_order_puts_backward_kernels_after_their_forward_kernel() -> None:
    ks = [K(["conv1"], ["x", "w1"], ["a"]), K(["relu1", "conv2"], ["a", "w2"], ["b"]),
          K(["fc"], ["b", "w3"], ["y"]),
          K(["loss/sm#0"], ["y"]), K(["loss/ce#1"]),
          K(["dgrad/fc#2"]), K(["wgrad/fc#3"]),
          K(["dgrad/conv2#4"]), K(["wgrad/conv2#5"]), K(["dgrad/a#6"]),  # the sum for value a
          K(["wgrad/conv1#7"]), K(["dgrad/nowhere#8"]),  # no anchor: after the kernel before
          K(["update/w1#9"]), K(["update/w2#10"]), K(["update/w3#11"])]
    order = [ks[i].origin[0] for i in placement_order(ks)]
    # dgrad/a sums the gradient of conv1's output a; update/w2 follows w2's reader
    assert order == ["conv1", "dgrad/a#6", "wgrad/conv1#7", "dgrad/nowhere#8", "update/w1#9",
                     "relu1", "dgrad/conv2#4", "wgrad/conv2#5", "update/w2#10",
                     "fc", "dgrad/fc#2", "wgrad/fc#3", "update/w3#11",
                     "loss/sm#0", "loss/ce#1"]


def _stash_distance(name: str, cwd: pathlib.Path) -> tuple[float, int]:
    """Mean Manhattan distance between a forward kernel and each backward
    kernel it feeds, the number of such edges, and the mean distance between
    any two kernels, after place."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        res = compile_model(os.path.join(DATA, f"{name}.onnx"),
                            CompileOptions(mode="pipeline", stop_after="place", train={}))
    finally:
        os.chdir(old)
    ks = {k.name: k for k in res.module.kernels()}
    dist, n = 0.0, 0
    for e in res.module.edges:
        if e.src == HOST or role_of_kernel(ks[e.src].origin) != "forward":
            continue
        for d in e.dsts:
            if d != HOST and role_of_kernel(ks[d].origin) != "forward":
                a, b = ks[e.src].rect, ks[d].rect
                dist += abs(a.x + a.w / 2 - b.x - b.w / 2) + abs(a.y + a.h / 2 - b.y - b.h / 2)
                n += 1
    c = np.array([(k.rect.x + k.rect.w / 2, k.rect.y + k.rect.h / 2) for k in ks.values()])
    pair = np.abs(c[:, None, :] - c[None, :, :]).sum(-1)[np.triu_indices(len(c), 1)]
    return dist / n, n, float(pair.mean())


def test_stash_edges_run_to_neighbours(tmp_path, monkeypatch) -> None:
    """A training step's stash edges (forward kernel -> its backward kernels)
    are shorter than the layout's typical distance, and the layer order never
    makes them longer than the dataflow order would. (Since data movement
    stands in columns, gpt2l's dense packing is compact enough that both
    orders reach the same layout; before, the dataflow order put a layer's
    two halves at opposite ends, over 4x farther.)"""
    interleaved, n, typical = _stash_distance("gpt2l", tmp_path)
    import wsec.passes.place as place

    monkeypatch.setattr(place, "placement_order", lambda ks: list(range(len(ks))))
    dataflow, m, _ = _stash_distance("gpt2l", tmp_path)
    assert n == m > 0
    assert interleaved <= dataflow, (interleaved, dataflow)
    assert interleaved < 0.85 * typical, (interleaved, typical)


LIGHT = pathlib.Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


@pytest.mark.slow
def test_resnet50_training_step_compiles_pipelined(tmp_path, monkeypatch) -> None:
    sys.path.insert(0, str(pathlib.Path(__file__).parent.parent / "bench"))
    from train import with_weights  # onnx's light ResNet-50 with its weights as initializers

    path = with_weights(LIGHT / "light_resnet50.onnx", str(tmp_path / "resnet50.onnx"))
    work = tmp_path / "out"
    work.mkdir()
    monkeypatch.chdir(work)  # from another directory than the model's
    rc = main([path, "-o", "t.bin", "--train", "--mode", "pipeline", "-q",
               "--report-json", "r.json"])
    assert rc == 0 and (work / "t.bin").exists()
    report = json.load(open(work / "r.json"))
    assert report["mode"] == "pipeline"
    assert set(report["train"]["roles"]) == {"forward", "dgrad", "wgrad", "update"}
