"""The ONNX frontend on onnx's nine light models and on hand-built edge cases."""

from __future__ import annotations

import hashlib
import os
import pathlib

import numpy as np
import onnx
import pytest
from conftest import LIGHT_MODELS, light_model
from onnx import TensorProto, helper, numpy_helper, version_converter
from wsec.frontends.onnx import MAX_OPSET, FrontendError, load_onnx
from wsec.ir.ops import SUPPORTED_OPS
from wsec.ir.types import Dense, External, Splat, TensorType

R = np.random.default_rng(1)


def save(model: onnx.ModelProto, path: pathlib.Path, **kw: object) -> str:
    onnx.save(model, str(path), **kw)
    return str(path)


def conv_model(batch: int | str = 1, opset: int = 17, extra: list | None = None,
               w: np.ndarray | None = None, out_rank: int = 4) -> onnx.ModelProto:
    """x -> Conv(W, B) -> Relu -> y, with random weights as initializers."""
    w = R.standard_normal((8, 3, 3, 3)).astype(np.float32) if w is None else w
    b = R.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu")] + (extra or [])
    g = helper.make_graph(
        nodes, "convnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT,
                                       [f"d{i}" for i in range(out_rank)])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_loads_with_types(name: str) -> None:
    path = light_model(name)
    m = load_onnx(str(path))
    assert {n.op for n in m.nodes} <= set(SUPPORTED_OPS)
    assert all(isinstance(v.type, TensorType) for v in m.values.values())
    assert m.attrs["opset"] == 17 and m.attrs["source"] == path.name
    assert m.attrs["model_hash"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    ref = version_converter.convert_version(onnx.load(str(path)), 17).graph
    inits = {t.name for t in ref.initializer}
    assert m.inputs == [i.name for i in ref.input if i.name not in inits]
    assert m.outputs == [o.name for o in ref.output]
    n_values = len(m.inputs) + len(inits) + sum(1 for n in ref.node for o in n.output if o)
    assert len(m.values) == n_values
    assert len(m.nodes) == sum(1 for n in ref.node if n.op_type != "Constant")
    assert len({n.name for n in m.nodes}) == len(m.nodes)
    assert m.values[m.inputs[0]].type == TensorType("f32", (1, 3, 224, 224))
    defined = set(m.inputs) | {k for k, v in m.values.items() if v.const is not None}
    for n in m.nodes:  # topological order
        assert all(i in defined for i in n.inputs if i), n.name
        defined.update(n.outputs)


def test_opset9_is_converted_to_17() -> None:
    m = load_onnx(str(light_model("densenet121")))
    unsq = next(n for n in m.nodes if n.op == "Unsqueeze")
    assert "axes" not in unsq.attrs and len(unsq.inputs) == 2  # opset-13 form
    axes = m.values[unsq.inputs[1]].const
    assert axes is not None and list(axes.array()) == [1, 2]
    cos = next(n for n in m.nodes if n.op == "ConstantOfShape")
    assert cos.attrs["dtype"] == "f32" and isinstance(cos.attrs["value"], float)
    bn = next(n for n in m.nodes if n.op == "BatchNormalization")
    assert len(bn.outputs) == 1 and isinstance(bn.attrs["epsilon"], float)


def test_densenet_loads_fast() -> None:
    m = load_onnx(str(light_model("densenet121")))
    assert len(m.nodes) >= 1746


def test_opset_range(tmp_path: pathlib.Path) -> None:
    m = load_onnx(save(conv_model(opset=11), tmp_path / "m11.onnx"))
    assert m.attrs["opset"] == 17
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "old",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    old = helper.make_model(g, opset_imports=[helper.make_opsetid("", 5)])
    old.ir_version = 3
    with pytest.raises(FrontendError, match=rf"uses opset 5; wsec accepts opsets 6\.\.{MAX_OPSET}"):
        load_onnx(save(old, tmp_path / "m5.onnx"))


def test_every_opset_onnx_defines_is_accepted(tmp_path: pathlib.Path) -> None:
    """Opsets past 22 (23+: new element types on the same ops) come down to 17."""
    assert MAX_OPSET == onnx.defs.onnx_opset_version() and MAX_OPSET >= 22
    for v in range(18, MAX_OPSET + 1):
        g = helper.make_graph(
            [helper.make_node("Reshape", ["x", "s"], ["r"]),
             helper.make_node("Relu", ["r"], ["y"])],
            "new", [helper.make_tensor_value_info("x", TensorProto.FLOAT16, [2, 3])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT16, [3, 2])],
            [helper.make_tensor("s", TensorProto.INT64, [2], [3, 2])])
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", v)])
        m = load_onnx(save(model, tmp_path / f"m{v}.onnx"))
        assert m.attrs["opset"] == 17 and m.values["y"].type.shape == (3, 2), v


def test_a_newer_opset_than_onnx_defines_names_the_highest(tmp_path: pathlib.Path) -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "future",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", MAX_OPSET + 1)])
    with pytest.raises(FrontendError, match=rf"uses opset {MAX_OPSET + 1}, newer than opset "
                                            rf"{MAX_OPSET}, the highest"):
        load_onnx(save(model, tmp_path / "future.onnx"))


def test_symbolic_batch_needs_input_shape(tmp_path: pathlib.Path) -> None:
    path = save(conv_model(batch="N"), tmp_path / "sym.onnx")
    with pytest.raises(FrontendError) as e:
        load_onnx(path)
    assert str(e.value) == ("input 'x' has symbolic dim 'N' (dim 0); pass --input-shape "
                            "x=N,3,8,8 with the size to compile for")
    m = load_onnx(path, {"x": [4, 3, 8, 8]})
    assert m.values["x"].type.shape == (4, 3, 8, 8)
    assert m.values["y"].type == TensorType("f32", (4, 8, 8, 8))
    with pytest.raises(FrontendError, match="--input-shape names 'z', but the model's inputs"):
        load_onnx(path, {"z": [1]})
    with pytest.raises(FrontendError, match="has rank 2, but input 'x' has rank 4"):
        load_onnx(path, {"x": [1, 3]})


def test_unreadable_files(tmp_path: pathlib.Path) -> None:
    data = light_model("squeezenet").read_bytes()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrontendError, match=r"^cannot read ONNX model '.*trunc\.onnx': "):
        load_onnx(str(bad))
    with pytest.raises(FrontendError, match="cannot read ONNX model '.*nope.onnx'"):
        load_onnx(str(tmp_path / "nope.onnx"))


def test_unsupported_operator_message(tmp_path: pathlib.Path) -> None:
    extra = [helper.make_node("Hardmax", ["y"], ["h"], name="hm")]
    with pytest.raises(FrontendError) as e:
        load_onnx(save(conv_model(extra=extra), tmp_path / "hm.onnx"))
    assert str(e.value) == ("unsupported operator 'Hardmax' (node 'hm'); see `wsec ops` for the "
                            "supported operators")


def test_constants_become_values(tmp_path: pathlib.Path) -> None:
    shape = helper.make_node("Constant", [], ["s"], name="k",
                             value=numpy_helper.from_array(np.array([1, 512], np.int64)))
    extra = [shape, helper.make_node("Reshape", ["y", "s"], ["r"], name="rs")]
    m = load_onnx(save(conv_model(extra=extra, out_rank=2), tmp_path / "k.onnx"))
    assert isinstance(m.values["s"].const, Dense)
    assert list(m.values["s"].const.array()) == [1, 512]
    assert [n.op for n in m.nodes] == ["Conv", "Relu", "Reshape"]
    assert m.values["r"].type == TensorType("f32", (1, 512))
    assert isinstance(m.values["W"].const, Dense)
    m2 = load_onnx(save(conv_model(w=np.full((8, 3, 3, 3), 0.5, np.float32)), tmp_path / "s.onnx"))
    assert m2.values["W"].const == Splat(TensorType("f32", (8, 3, 3, 3)), 0.5)


def test_external_data_stays_on_disk(tmp_path: pathlib.Path) -> None:
    model = conv_model()
    want = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    path = save(model, tmp_path / "ext.onnx", save_as_external_data=True,
                all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    m = load_onnx(path)
    for name, arr in want.items():
        c = m.values[name].const
        assert isinstance(c, External) and c.path == "weights.bin"
        assert c.length == arr.nbytes
        np.testing.assert_array_equal(c.array(), arr)


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_external_data_outside_model_dir_rejected(tmp_path: pathlib.Path, where: str) -> None:
    outside = tmp_path / "outside"
    inside = tmp_path / "model"
    outside.mkdir()
    inside.mkdir()
    model = conv_model()
    save(model, outside / "m.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
         location="w.bin", size_threshold=0)
    loc = {"dotdot": "../outside/w.bin", "absolute": str(outside / "w.bin"),
           "symlink": "link.bin"}[where]
    if where == "symlink":
        os.symlink(outside / "w.bin", inside / "link.bin")
    ext = onnx.load(str(outside / "m.onnx"), load_external_data=False)
    for t in ext.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = loc
    path = save(ext, inside / "m.onnx")
    with pytest.raises(FrontendError, match=f"initializer 'W' stores its data at '{loc}', "
                                            "outside the model directory"):
        load_onnx(path)


def test_value_without_static_shape_is_named(tmp_path: pathlib.Path) -> None:
    g = helper.make_graph(
        [helper.make_node("Reshape", ["x", "s"], ["r"], name="rs")], "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6]),
         helper.make_tensor_value_info("s", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("r", TensorProto.FLOAT, ["a", "b"])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with pytest.raises(FrontendError, match=r"value 'r' \(output of Reshape node 'rs'\) has a "
                                            r"symbolic dim 'a' \(dim 0\) after shape inference"):
        load_onnx(save(model, tmp_path / "dyn.onnx"))
