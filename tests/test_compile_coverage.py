"""Every model the frontend accepts compiles, and still computes the same.

Why: the frontend and canonicalize accept ~95 ONNX ops, but a model is only
useful once every op lands on a kernel kind that sizes, places, routes and
allocates. This runs the whole pipeline (`wsec.driver.compile_model`, wse2)
on every transformer fixture in tests/fixtures/ and every onnx
`pytorch-converted` / `pytorch-operator` case, then evaluates the compiled
module (kernels execute their body ops) with the reference interpreter and
compares with the reference outputs: fusion must never change the result.
A case that cannot compile is listed in EXPECTED_FAIL with the reason its
error must give; a case changing side fails until the table is updated.

Small custom grids (96x96, placement effort "fast") keep the suite quick;
`test_full_wafer_gpt` compiles one fixture on the full wse2 wafer.
"""

from __future__ import annotations

import pathlib
import re
import sys

import numpy as np
import pytest
from onnx import numpy_helper
from wsec.driver import CompileOptions, compile_model
from wsec.ir.graph import Module
from wsec.ir.interp import evaluate_module
from wsec.ir.kernels import kind_for_op
from wsec.ir.ops import SUPPORTED_OPS

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from gen_coverage import DATA_DIR, _read_pbs, all_cases  # noqa: E402

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.onnx"))
GRID = (96, 96)
FAST = ["place{effort=fast}"]
CASES = all_cases()
# ops only meaningful on constants: canonicalize folds them, no kernel runs them
FOLDED_ONLY = {"Shape", "Size", "ConstantOfShape", "Range"}

# case -> regex its compile error must match
POOL_TOO_BIG = r"kernel 'k0' \(pool, from MaxPool_0\).*(no legal size|SRAM per PE)"
EXPECTED_FAIL: dict[str, str] = {
    # a 1 x 220000 row with a 200-tap window dilated by 10: the pool kind
    # splits channels and rows but not a row's width, so one PE must hold the
    # whole padded row window (about a megabyte) -> no legal size in a
    # 48 KiB PE
    "test_MaxPool1d_stride_padding_dilation": POOL_TOO_BIG,
    # a 60x80 window dilated by 10 over a 1000x1000 map: 591 rows x 1031
    # columns of window per PE (over a megabyte) for the same reason
    "test_MaxPool2d_stride_padding_dilation": POOL_TOO_BIG,
}


def _fixture(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    d = np.load(FIXTURES / f"{name}.npz")
    return ({k[3:]: d[k] for k in d.files if k.startswith("in.")},
            {k[4:]: d[k] for k in d.files if k.startswith("out.")})


def _check_same(m: Module, ins: dict[str, np.ndarray], want: dict[str, np.ndarray],
                what: str) -> None:
    assert m.kernels() and all(n.body for n in m.nodes), f"{what}: not a kernel-level module"
    got = evaluate_module(m, ins)
    assert set(got) == set(want), (what, sorted(got), sorted(want))
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5, err_msg=f"{what}:{k}")


def test_every_kernel_op_has_a_kind() -> None:
    missing = sorted(op for op in SUPPORTED_OPS if op not in FOLDED_ONLY
                     and kind_for_op(op) is None)
    assert not missing, f"ops with no kernel kind: {missing}"
    assert all(kind_for_op(op) is None for op in FOLDED_ONLY)


@pytest.mark.parametrize("name", FIXTURE_NAMES)
def test_fixture_compiles_and_computes_the_same(name: str) -> None:
    ins, want = _fixture(name)
    shapes = {k: list(v.shape) for k, v in ins.items()} if "dynamic" in name else {}
    res = compile_model(str(FIXTURES / f"{name}.onnx"),
                        CompileOptions(grid=GRID, input_shapes=shapes, pass_options=FAST))
    assert res.completed and "allocated" in res.module.properties
    _check_same(res.module, ins, want, name)


def test_full_wafer_gpt() -> None:
    ins, want = _fixture("gpt_o14")
    res = compile_model(str(FIXTURES / "gpt_o14.onnx"), CompileOptions())
    m = res.module
    assert res.completed and "allocated" in m.properties
    assert (res.target.width, res.target.height) == (750, 994)
    kinds = {k.kind for k in m.kernels()}
    assert {"gather", "norm", "matmul", "softmax"} <= kinds
    # the decomposed LayerNorms became norm kernels, not reduce + element-wise
    assert "reduce" not in kinds
    _check_same(m, ins, want, "gpt_o14@wse2")


@pytest.mark.parametrize("suite,case", CASES, ids=[c for _, c in CASES])
def test_onnx_case_compiles_and_computes_the_same(suite: str, case: str) -> None:
    case_dir = DATA_DIR / suite / case
    try:
        res = compile_model(str(case_dir / "model.onnx"),
                            CompileOptions(grid=GRID, pass_options=FAST))
    except Exception as e:  # noqa: BLE001 - any failure must be an expected one
        assert case in EXPECTED_FAIL, f"{case}: {type(e).__name__}: {e}"
        assert re.search(EXPECTED_FAIL[case], str(e)), str(e)
        return
    assert case not in EXPECTED_FAIL, f"{case} compiles now; remove it from EXPECTED_FAIL"
    m = res.module
    ins = {}
    for k, t in enumerate(_read_pbs(case_dir, "input")):
        ins[t.name if t.name in m.inputs else m.inputs[k]] = numpy_helper.to_array(t)
    outs = [numpy_helper.to_array(t) for t in _read_pbs(case_dir, "output")]
    _check_same(m, ins, dict(zip(m.outputs, outs, strict=True)), case)


def test_coverage_numbers() -> None:
    """At least 98% of the onnx cases compile end to end."""
    assert len(EXPECTED_FAIL) <= 0.02 * len(CASES)
    assert set(EXPECTED_FAIL) <= {c for _, c in CASES}
