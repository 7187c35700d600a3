"""The device simulator: binaries execute and match onnxruntime; broken
routes and misplaced weight shards are caught.

Binaries for the exact checks are compiled for an f32 variant of wse2 (the
same grid, device dtype f32) so that weights keep the model's precision:
the default targets store weights as f16, which alone costs ~1e-3 relative
accuracy (see the report of issue 3).
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import replace

import numpy as np
import onnx
import pytest
from conftest import EXAMPLE, LIGHT_MODELS, light_model
from onnx import TensorProto, helper
from wsec.backends.emit import write_binary, write_program
from wsec.backends.format import PORT_BITS, Program
from wsec.backends.loader import load_binary
from wsec.backends.sim import SimError, random_inputs, simulate
from wsec.driver import CompileOptions, compile_model
from wsec.run import ATOL, RTOL, compare, onnx_reference

# light models simulated in every run of the suite; WSEC_SIM_ALL=1 runs all nine
FAST_LIGHT = ("squeezenet", "inception_v1", "shufflenet", "densenet121")


def compile_bin(model: str | os.PathLike[str], out: pathlib.Path, target: str = "wse2",
                dtype: str = "auto") -> Program:
    """Compile as a user would (device dtype follows the model: f32 here)."""
    res = compile_model(str(model), CompileOptions(target=target, dtype=dtype))
    write_binary(res.module, str(out))
    return load_binary(str(out))


def assert_matches_ort(prog: Program, model: str | os.PathLike[str], seed: int = 0) -> None:
    x = random_inputs(prog, seed)
    got = simulate(prog, x).outputs
    ref, _ = onnx_reference(str(model), x)
    for name, arr in got.items():
        row = compare(name, arr, ref[name], RTOL, ATOL)
        assert row.ok, f"%{name}: max abs {row.max_abs:.3g}, max rel {row.max_rel:.3g}"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Program:
    return compile_bin(EXAMPLE, tmp_path_factory.mktemp("sim") / "tiny.bin")


def mixed_model(path: pathlib.Path) -> None:
    """Random weights through the sharded paths: strided conv with asymmetric
    pads, grouped and depthwise convs, a BN-style Mul/Add tail, concat,
    pooling, Gemm (B not transposed) and MatMul."""
    rng = np.random.default_rng(1)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return helper.make_tensor(name, TensorProto.FLOAT, shape,
                                  (rng.standard_normal(shape) * 0.3).ravel().tolist())

    inits = [init("w1", 12, 3, 3, 3), init("b1", 12), init("w2", 12, 4, 3, 3),
             init("w3", 12, 1, 3, 3), init("b3", 12), init("sc", 1, 12, 1, 1),
             init("sh", 1, 12, 1, 1), init("g", 24 * 4 * 4, 20), init("gb", 20),
             init("m", 20, 7)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 0, 2, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=3),
        helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], group=12,
                         dilations=[1, 1]),
        helper.make_node("Mul", ["c3", "sc"], ["m3"]),
        helper.make_node("Add", ["m3", "sh"], ["a3"]),
        helper.make_node("Concat", ["a3", "r1"], ["cat"], axis=1),
        helper.make_node("MaxPool", ["cat"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "g", "gb"], ["h"], alpha=0.5),
        helper.make_node("Tanh", ["h"], ["t"]),
        helper.make_node("MatMul", ["t", "m"], ["y"]),
    ]
    g = helper.make_graph(nodes, "mixed",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 17, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


# --- matches onnxruntime -----------------------------------------------------
def test_tiny_cnn_matches_onnxruntime(tiny: Program) -> None:
    assert {b.dtype for b in tiny.blobs} <= {"f32", "i64"}
    for seed in (0, 1):
        assert_matches_ort(tiny, EXAMPLE, seed)


def test_mixed_ops_match_onnxruntime(tmp_path: pathlib.Path) -> None:
    model = tmp_path / "mixed.onnx"
    mixed_model(model)
    prog = compile_bin(model, tmp_path / "mixed.bin")
    kinds = {k.kind for k in prog.kernels}
    assert {"conv", "matmul"} <= kinds
    assert any(k.kind == "conv" and k.dims["G"] > 1 for k in prog.kernels)
    assert_matches_ort(prog, model)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_matches_onnxruntime(name: str, tmp_path: pathlib.Path) -> None:
    if name not in FAST_LIGHT and not os.environ.get("WSEC_SIM_ALL"):
        pytest.skip("set WSEC_SIM_ALL=1 (or run bench/simulate.py) for all nine")
    prog = compile_bin(light_model(name), tmp_path / f"{name}.bin")
    assert_matches_ort(prog, light_model(name))


def test_sharded_kernels_report_per_pe_work(tiny: Program) -> None:
    res = simulate(tiny, random_inputs(tiny))
    conv = [k for k in tiny.kernels if k.kind == "conv"]
    for k in conv:
        st = res.kernel_stats[k.name]
        assert st["sharded_pes"] == k.rect.area
        assert 0 < st["pe_macs_max"]


# --- weights come from each PE's own shard -------------------------------------
def _swap_two_shards(p: Program) -> Program:
    """Swap the blobs of two cells of the first conv weight (same element
    count, different contents)."""
    ki = next(i for i, k in enumerate(p.kernels) if k.kind == "conv")
    m = p.weight_map(ki, 0)
    cells = p.wcells[int(m["cell0"]):int(m["cell0"]) + int(m["ncells"])]
    for i in range(len(cells)):
        for j in range(i + 1, len(cells)):
            a, b = int(cells[i]["blob"]), int(cells[j]["blob"])
            if a != b and p.blobs[a].count == p.blobs[b].count and \
                    not np.array_equal(p.blobs[a].array(), p.blobs[b].array()):
                wc = p.wcells.copy()
                c0 = int(m["cell0"])
                wc["blob"][c0 + i], wc["blob"][c0 + j] = b, a
                return replace(p, wcells=wc)
    raise AssertionError("no two distinct shards of equal size")


def test_swapped_shards_change_the_answer(tiny: Program) -> None:
    bad = load_binary(write_program(_swap_two_shards(tiny)))
    x = random_inputs(tiny)
    good, wrong = simulate(tiny, x).outputs, simulate(bad, x).outputs
    assert not all(compare(n, wrong[n], good[n]).ok for n in good)


def test_shard_at_the_wrong_slice_is_an_error(tiny: Program) -> None:
    ki = next(i for i, k in enumerate(tiny.kernels) if k.kind == "conv")
    m = tiny.weight_map(ki, 0)
    runs = tiny.wruns.copy()
    r0, nx = int(m["run0"]), int(m["nx"])
    assert nx > 1
    runs[r0]["start"], runs[r0 + 1]["start"] = runs[r0 + 1]["start"].copy(), \
        runs[r0]["start"].copy()
    runs[r0]["stop"], runs[r0 + 1]["stop"] = runs[r0 + 1]["stop"].copy(), \
        runs[r0]["stop"].copy()
    bad = replace(tiny, wruns=runs)
    with pytest.raises(SimError, match=r"kernel 'k\d+'.*computes with"):
        simulate(bad, random_inputs(bad))


# --- data moves only along the routes --------------------------------------------
def _edge_between_kernels(p: Program) -> int:
    return next(i for i, e in enumerate(p.edges) if e.src != "@host" and "@host" not in e.dsts)


def _source_record(p: Program, ei: int) -> int:
    r = p.routes
    return int(np.nonzero((r["edge"] == ei) & ((r["rx"] & PORT_BITS["RAMP"]) != 0))[0][0])


def _with_routes(p: Program, routes: np.ndarray) -> Program:
    return load_binary(write_program(replace(p, routes=routes)))


def test_changed_route_entry_names_pe_color_edge(tiny: Program) -> None:
    ei = _edge_between_kernels(tiny)
    e = tiny.edges[ei]
    i = _source_record(tiny, ei)
    r = tiny.routes.copy()
    tx = int(r["tx"][i])
    r["tx"][i] = PORT_BITS["N"] if tx != PORT_BITS["N"] else PORT_BITS["S"]
    bad = _with_routes(tiny, r)
    with pytest.raises(SimError) as ex:
        simulate(bad, random_inputs(bad))
    msg = str(ex.value)
    assert f"color {e.color}" in msg and f"%{e.value}" in msg and "PE (" in msg
    assert f"{e.src} -> {', '.join(e.dsts)}" in msg


def test_route_leaving_the_grid(tiny: Program) -> None:
    ei = next(i for i, e in enumerate(tiny.edges) if e.src == "@host")
    r = tiny.routes.copy()
    i = int(np.nonzero((r["edge"] == ei) & (r["x"] == 0) & ((r["rx"] & PORT_BITS["W"]) != 0))[0][0])
    r["tx"][i] = PORT_BITS["W"]
    bad = _with_routes(tiny, r)
    with pytest.raises(SimError, match=r"leaves the grid.*sent W from PE \(0, \d+\) on color"):
        simulate(bad, random_inputs(bad))


def test_route_loop(tiny: Program) -> None:
    ei = _edge_between_kernels(tiny)
    r = tiny.routes.copy()
    i = _source_record(tiny, ei)
    x, y = int(r["x"][i]), int(r["y"][i])
    assert int(r["tx"][i]) == PORT_BITS["E"], "expected a route leaving East"
    j = int(np.nonzero((r["edge"] == ei) & (r["x"] == x + 1) & (r["y"] == y))[0][0])
    r["rx"][i] |= PORT_BITS["E"]
    r["tx"][j] |= PORT_BITS["W"]
    bad = _with_routes(tiny, r)
    with pytest.raises(SimError, match=rf"route loop: .* PE \({x}, {y}\) on color"):
        simulate(bad, random_inputs(bad))


def test_two_routes_on_one_color_at_a_pe(tiny: Program) -> None:
    ei = _edge_between_kernels(tiny)
    r = tiny.routes.copy()
    i = _source_record(tiny, ei)
    other = next(j for j, e in enumerate(tiny.edges) if j != ei and e.color == tiny.edges[ei].color)
    dup = r[i:i + 1].copy()
    dup["edge"] = other
    bad = replace(tiny, routes=np.sort(np.concatenate([r, dup]), order=["x", "y", "color", "edge"]))
    with pytest.raises(SimError, match=r"two routes on color \d+ at PE"):
        simulate(bad, random_inputs(bad))


def test_missing_input_and_wrong_shape(tiny: Program) -> None:
    with pytest.raises(SimError, match="no value given"):
        simulate(tiny, {})
    name = tiny.info["inputs"][0]
    with pytest.raises(SimError, match="has shape"):
        simulate(tiny, {name: np.zeros((1, 2), np.float32)})


def test_f16_binary_keeps_its_precision_visible(tmp_path: pathlib.Path) -> None:
    """`--dtype f16` stores f16 weights; the simulator computes with exactly
    those values (in f32), so the result differs from the f32 model by more
    than f32 rounding but stays close."""
    prog = compile_bin(EXAMPLE, tmp_path / "t16.bin", dtype="f16")
    assert "f16" in {b.dtype for b in prog.blobs}
    x = random_inputs(prog)
    got = simulate(prog, x).outputs
    ref, _ = onnx_reference(str(EXAMPLE), x)
    for n, a in got.items():
        row = compare(n, a, ref[n], rtol=1e-2, atol=1e-3)
        assert row.ok and row.max_abs > 1e-7
