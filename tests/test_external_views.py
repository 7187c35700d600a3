"""External weights are never read at compile time, not even to fold a Transpose.

Why: torch's dynamo exporter writes every Linear as MatMul(x, Transpose(W))
and only folds the Transpose for weights under 512 x 512 elements, so every
large weight of a real export reaches wsec behind a Transpose. Folding that
by evaluating it read the whole external-data file into memory (41 GB for
GPT-NeoX-20B: ~15 minutes on a sparse file, out of memory on a real one)
and turned each weight into an in-memory constant that stream mode then
embedded instead of streaming it from the file. Now a Transpose or a
relabelling of a large external weight folds into a view of its file range
(`External.perm`), which the emitter, the stream descriptors and the
simulator read as the transposed array.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from wsec.backends.emit import write_binary
from wsec.backends.loader import load_binary
from wsec.backends.sim import simulate
from wsec.driver import CompileOptions, compile_model
from wsec.ir.parser import parse_module
from wsec.ir.printer import print_module
from wsec.ir.types import External, TensorType
from wsec.run import compare, onnx_reference, tolerances


def _linear_model(path: pathlib.Path, seq: int, hidden: int, ffn: int,
                  values: bool = True) -> dict[str, int]:
    """x[1, seq, hidden] -> MatMul(Transpose(W1[ffn, hidden])) -> Relu
    -> MatMul(Reshape(W2[hidden * ffn]) as [ffn, hidden]) -> y, as dynamo
    writes a Linear (the Transpose) plus a relabelled weight (the Reshape);
    fp16 weights in `path.data`. With `values=False` the data file is only
    sized (sparse, never written). Returns the weights' byte offsets."""
    nbytes = 2 * ffn * hidden  # each weight's
    data = path.name + ".data"
    offsets = {"w1": 0, "w2": nbytes}
    inits = []
    for name, dims in (("w1", [ffn, hidden]), ("w2", [ffn * hidden])):
        t = TensorProto()
        t.name, t.data_type = name, TensorProto.FLOAT16
        t.dims.extend(dims)
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", data), ("offset", str(offsets[name])),
                     ("length", str(nbytes))):
            e = t.external_data.add()
            e.key, e.value = k, v
        inits.append(t)
    inits.append(helper.make_tensor("w2_shape", TensorProto.INT64, [2], [ffn, hidden]))
    nodes = [helper.make_node("Transpose", ["w1"], ["w1_t"], perm=[1, 0]),
             helper.make_node("MatMul", ["x", "w1_t"], ["h"]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Reshape", ["w2", "w2_shape"], ["w2_2d"]),
             helper.make_node("MatMul", ["r", "w2_2d"], ["y"])]
    g = helper.make_graph(nodes, "linear",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT16,
                                                         [1, seq, hidden])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT16,
                                                         [1, seq, hidden])], initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    with open(path.parent / data, "wb") as f:
        if values:
            rng = np.random.default_rng(0)
            f.write((rng.standard_normal(ffn * hidden) / np.sqrt(hidden)).astype(
                np.float16).tobytes())
            f.write((rng.standard_normal(ffn * hidden) / np.sqrt(ffn)).astype(
                np.float16).tobytes())
        else:
            f.truncate(2 * nbytes)  # sparse: sized, never written
    return offsets


def test_external_view_is_the_transposed_file_range(tmp_path: pathlib.Path) -> None:
    a = np.arange(24, dtype=np.float16).reshape(2, 3, 4)
    (tmp_path / "w.bin").write_bytes(b"\0" * 8 + a.tobytes())
    c = External(TensorType("f16", (2, 3, 4)), "w.bin", 8, a.nbytes, str(tmp_path))
    t = c.transposed([2, 0, 1], TensorType("f16", (4, 2, 3)))
    assert t.perm == (2, 0, 1) and t.stored_shape() == (2, 3, 4)
    assert np.array_equal(t.array(), a.transpose(2, 0, 1))
    back = t.transposed([1, 2, 0], TensorType("f16", (2, 3, 4)))
    assert back.perm is None and np.array_equal(back.array(), a)  # identity: plain range
    assert t.reshaped(TensorType("f16", (24,))) is None  # not in file order
    flat = c.reshaped(TensorType("f16", (6, 4)))
    assert flat is not None and np.array_equal(flat.array(), a.reshape(6, 4))
    with pytest.raises(ValueError, match="no permutation"):
        External(TensorType("f16", (2, 3)), "w.bin", 0, 12, perm=(0, 0))


def test_transposed_external_prints_and_parses_back(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "m.onnx"
    _linear_model(path, seq=4, hidden=16, ffn=32)
    res = compile_model(str(path), CompileOptions(stop_after="canonicalize", pass_options=[
        "canonicalize{external_limit=0}"]))
    text = print_module(res.module)
    assert 'external("m.onnx.data", 0, 1024, [1, 0])' in text
    assert "Transpose" not in text and "Reshape" not in text
    back = parse_module(text, base_dir=str(tmp_path))
    assert print_module(back) == text
    w = back.values["w1_t"].const
    assert isinstance(w, External) and w.perm == (1, 0) and w.type.shape == (16, 32)


@pytest.mark.parametrize("mode", ["pipeline", "stream"])
def test_folded_views_simulate_like_onnxruntime(mode: str, tmp_path: pathlib.Path) -> None:
    """With every external weight above the limit, the Transpose and the
    Reshape fold into views; both modes compute what onnxruntime computes,
    and stream mode streams the weights from the file (not embedded)."""
    path = tmp_path / "m.onnx"
    _linear_model(path, seq=4, hidden=16, ffn=32)
    res = compile_model(str(path), CompileOptions(mode=mode, pass_options=[
        "canonicalize{external_limit=0}"]))
    assert not [n for n in res.module.kernels() for b in n.body if b.op == "Transpose"]
    write_binary(res.module, str(tmp_path / "m.bin"))
    prog = load_binary(str(tmp_path / "m.bin"))
    if mode == "stream":
        streams = prog.info["streams"]
        assert {d["source"] for d in streams} == {"file"}
        assert [d.get("perm") for d in streams] == [[1, 0], None]
    x = np.random.default_rng(1).standard_normal((1, 4, 16)).astype(np.float16)
    got = simulate(prog, {"x": x}).outputs["y"]
    ref, _ = onnx_reference(str(path), {"x": x})
    row = compare("y", got, ref["y"], *tolerances(prog))
    assert row.ok, f"max abs {row.max_abs:.3g}, max rel {row.max_rel:.3g}"


def test_export_train_writes_a_view_as_its_stored_tensor_and_a_transpose(
        tmp_path: pathlib.Path) -> None:
    from wsec.export_onnx import module_to_onnx

    path = tmp_path / "m.onnx"
    _linear_model(path, seq=4, hidden=16, ffn=32)
    res = compile_model(str(path), CompileOptions(stop_after="canonicalize", pass_options=[
        "canonicalize{external_limit=0}"]))
    out = module_to_onnx(res.module, str(tmp_path))
    stored = {t.name: list(t.dims) for t in out.graph.initializer}
    assert stored["w1_t.stored"] == [32, 16]
    (tr,) = [n for n in out.graph.node if n.op_type == "Transpose"]
    assert list(tr.input) == ["w1_t.stored"] and list(tr.output) == ["w1_t"]
    onnx.save(out, str(tmp_path / "again.onnx"))
    x = np.ones((1, 4, 16), np.float16)
    a, _ = onnx_reference(str(tmp_path / "again.onnx"), {"x": x})
    b, _ = onnx_reference(str(path), {"x": x})
    assert np.array_equal(a["y"], b["y"])


# A compile in a fresh process that records every Python-level open() and mmap
# of the weight file (sys.addaudithook sees both, numpy's memmap included) and
# which function opened it.
_AUDIT = r"""
import json, os, sys
data = os.path.realpath(sys.argv[1])
seen = []

def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        if os.path.realpath(os.fsdecode(args[0])) == data:
            f = sys._getframe(1)
            names = []
            while f is not None:
                names.append(f.f_code.co_name)
                f = f.f_back
            seen.append(["open", names])
    elif event == "mmap.__new__" and args[0] not in (-1, None):
        try:
            target = os.readlink(f"/proc/self/fd/{args[0]}")
        except OSError:
            return
        if os.path.realpath(target) == data:
            seen.append(["mmap", []])

sys.addaudithook(hook)
from wsec.cli import main
rc = main(sys.argv[2:])
print(json.dumps({"rc": rc, "seen": seen}))
"""


def test_a_huge_sparse_weight_file_is_never_read(tmp_path: pathlib.Path) -> None:
    """A model whose weights are 512 MiB of sparse file (one 256 MiB weight
    behind a Transpose, one behind a Reshape) compiles in auto mode, which
    streams on this small grid; the only reads of the file are the stream
    descriptors' fingerprints (1 MiB at each end of a weight), and nothing
    ever maps it."""
    model_dir, work = tmp_path / "model", tmp_path / "work"
    model_dir.mkdir()
    work.mkdir()
    path = model_dir / "big.onnx"
    _linear_model(path, seq=8, hidden=8192, ffn=16384, values=False)
    data = model_dir / "big.onnx.data"
    assert data.stat().st_size == 2 * 2 * 8192 * 16384
    assert data.stat().st_blocks == 0  # sparse
    r = subprocess.run([sys.executable, "-c", _AUDIT, str(data), str(path), "-o", "m.bin",
                        "-q", "--grid", "60x60", "--report-json", "r.json"],
                       capture_output=True, text=True, cwd=work)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["rc"] == 0
    assert json.loads((work / "r.json").read_text())["mode"] == "stream"
    assert out["seen"], "the fingerprints read the file"
    assert all(kind == "open" and "fingerprint" in names for kind, names in out["seen"])
    assert len(out["seen"]) == 2  # one fingerprint per weight
    prog = load_binary(str(work / "m.bin"), check_files=False)
    streams = sorted((d["value"], d["source"], d.get("perm")) for d in prog.info["streams"])
    assert streams == [("w1_t", "file", [1, 0]), ("w2_2d", "file", None)]
