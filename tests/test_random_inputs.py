"""The seeded inputs `wsec run` feeds when no --input is given, and the
--check note when they make the reference non-finite.

Why: a check on inputs the model cannot take proves nothing. A BERT's token
type ids index a 2-row table, so ids up to 3 made the simulator fail at that
Gather; its attention mask of 3 scaled the additive bias past the float range
and every output was NaN on both sides, which the check passed on NaN = NaN.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
from conftest import run_wsec
from onnx import TensorProto, numpy_helper
from onnx import helper as oh
from test_sim_fixtures import compile_fixture
from wsec.backends.sim import index_bounds, random_inputs, simulate


def test_bert_inputs_stay_in_their_tables_and_masks_are_bits(tmp_path: pathlib.Path) -> None:
    prog = compile_fixture("bert_dynamic_o17", tmp_path / "bert.bin")
    # the word table has 64 rows, the segment table 2; the mask indexes nothing
    assert index_bounds(prog) == {"input_ids": 64, "token_type_ids": 2}
    for seed in range(3):
        x = random_inputs(prog, seed)
        assert x["token_type_ids"].max() <= 1 and x["input_ids"].max() <= 3
        assert set(np.unique(x["attention_mask"])) <= {0, 1}
        out = simulate(prog, x).outputs
        assert all(np.isfinite(v).all() for v in out.values())


def test_check_says_when_the_reference_has_no_finite_value(tmp_path: pathlib.Path) -> None:
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    nodes = [oh.make_node("Abs", ["x"], ["a"]), oh.make_node("Neg", ["a"], ["n"]),
             oh.make_node("Sub", ["n", "one"], ["s"]), oh.make_node("Sqrt", ["s"], ["y"])]
    g = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                      [oh.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [one])
    model = tmp_path / "nan.onnx"
    onnx.save(oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]), model)
    binary = tmp_path / "nan.bin"
    assert run_wsec(str(model), "-o", str(binary), "-q").returncode == 0
    r = run_wsec("run", str(binary), "--check", str(model))
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout and "has no finite value" in r.stdout and "--input" in r.stdout
