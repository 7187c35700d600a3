"""Every PyTorch test case shipped in onnx's wheel, compiled and simulated.

Why: these ~120 small models are what PyTorch's exporter writes for its
layers and operators (mostly at opset 6, so they also exercise version
conversion). `gen_coverage.run_case` compiles each for the full wse2 wafer,
emits and loads the binary, runs the device simulator on the case's
test_data_set_0 inputs and compares with its reference outputs. A case in
PASSING must pass; a case in UNSUPPORTED must be refused with the reason
given. A case changing side, or a new case in a new onnx release, fails the
test until the table (and docs/onnx-coverage.md, via
`python tests/gen_coverage.py`) is updated. All 117 cases are simulated in
the suite (about 25 s); the doc is checked against the same results.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import onnx
import pytest
from gen_coverage import DOC, CaseResult, all_cases, doc_rows, run_case, write_doc
from onnx import TensorProto, helper
from wsec.frontends.onnx import FrontendError, load_onnx

PASSING = set("""
    test_AvgPool1d test_AvgPool1d_stride test_AvgPool2d test_AvgPool2d_stride test_AvgPool3d
    test_AvgPool3d_stride test_AvgPool3d_stride1_pad0_gpu_input test_BatchNorm1d_3d_input_eval
    test_BatchNorm2d_eval test_BatchNorm2d_momentum_eval test_BatchNorm3d_eval
    test_BatchNorm3d_momentum_eval test_ConstantPad2d test_Conv1d test_Conv1d_dilated
    test_Conv1d_groups test_Conv1d_pad1 test_Conv1d_pad1size1 test_Conv1d_pad2
    test_Conv1d_pad2size1 test_Conv1d_stride test_Conv2d test_Conv2d_depthwise
    test_Conv2d_depthwise_padded test_Conv2d_depthwise_strided
    test_Conv2d_depthwise_with_multiplier test_Conv2d_dilated test_Conv2d_groups
    test_Conv2d_groups_thnn test_Conv2d_no_bias test_Conv2d_padding test_Conv2d_strided
    test_Conv3d test_Conv3d_dilated test_Conv3d_dilated_strided test_Conv3d_groups
    test_Conv3d_no_bias test_Conv3d_stride test_Conv3d_stride_padding test_ConvTranspose2d
    test_ConvTranspose2d_no_bias test_ELU test_Embedding test_Embedding_sparse test_GLU
    test_GLU_dim test_LeakyReLU test_LeakyReLU_with_negval test_Linear test_Linear_no_bias
    test_LogSoftmax test_MaxPool1d test_MaxPool1d_stride
    test_MaxPool2d test_MaxPool3d test_MaxPool3d_stride
    test_MaxPool3d_stride_padding test_PReLU_1d test_PReLU_1d_multiparam test_PReLU_2d
    test_PReLU_2d_multiparam test_PReLU_3d test_PReLU_3d_multiparam test_PixelShuffle
    test_PoissonNLLLLoss_no_reduce test_ReLU test_ReflectionPad2d test_ReplicationPad2d
    test_SELU test_Sigmoid test_Softmax test_Softmin test_Softplus test_Softsign test_Tanh
    test_ZeroPad2d test_log_softmax_dim3 test_log_softmax_lastdim test_softmax_functional_dim3
    test_softmax_lastdim test_operator_add_broadcast test_operator_add_size1_broadcast
    test_operator_add_size1_right_broadcast test_operator_add_size1_singleton_broadcast
    test_operator_addconstant test_operator_addmm test_operator_basic test_operator_chunk
    test_operator_clip test_operator_concat2 test_operator_conv test_operator_convtranspose
    test_operator_exp test_operator_flatten test_operator_index test_operator_max
    test_operator_maxpool test_operator_min test_operator_mm test_operator_non_float_params
    test_operator_pad test_operator_params test_operator_permute2 test_operator_pow
    test_operator_reduced_mean test_operator_reduced_mean_keepdim test_operator_reduced_sum
    test_operator_reduced_sum_keepdim test_operator_repeat test_operator_repeat_dim_overflow
    test_operator_selu test_operator_sqrt test_operator_symbolic_override
    test_operator_symbolic_override_nested test_operator_view
""".split())

# case -> regex wsec's refusal must match. Both are pool windows dilated by 10
# over very wide rows: the pool kind splits channels and rows but not a row's
# width, so one PE would need the whole padded row window (megabytes).
_POOL_TOO_BIG = r"kernel 'k0' \(pool, from MaxPool_0\) needs .*SRAM"
UNSUPPORTED: dict[str, str] = {
    "test_MaxPool1d_stride_padding_dilation": _POOL_TOO_BIG,
    "test_MaxPool2d_stride_padding_dilation": _POOL_TOO_BIG,
}

CASES = all_cases()


@functools.cache
def result(suite: str, case: str) -> CaseResult:
    return run_case(suite, case)


def test_table_lists_every_case_once() -> None:
    names = [c for _, c in CASES]
    assert len(names) == len(set(names))
    assert not PASSING & set(UNSUPPORTED)
    assert set(names) == PASSING | set(UNSUPPORTED), (
        f"cases not in the table: {sorted(set(names) - PASSING - set(UNSUPPORTED))}; "
        f"stale entries: {sorted((PASSING | set(UNSUPPORTED)) - set(names))}")
    assert len(PASSING) / len(names) >= 0.9


@pytest.mark.parametrize("suite,case", CASES, ids=[c for _, c in CASES])
def test_case(suite: str, case: str) -> None:
    r = result(suite, case)
    if case in PASSING:
        assert r.status == "PASS", f"{case}: {r.status}: {r.reason}"
        assert r.kernels > 0
    else:
        assert r.status == "UNSUPPORTED", f"{case} now {r.status}: {r.reason}"
        assert re.search(UNSUPPORTED[case], r.reason), r.reason


def test_doc_is_the_current_table() -> None:
    """docs/onnx-coverage.md states, per case, the status this suite sees."""
    rows = doc_rows(DOC.read_text())
    assert set(rows) == {c for _, c in CASES}, "regenerate: python tests/gen_coverage.py"
    stale = {c: rows[c] for s, c in CASES if rows[c] != result(s, c).status}
    assert not stale, f"regenerate docs/onnx-coverage.md (stale rows: {stale})"
    n_pass = sum(v == "PASS" for v in rows.values())
    assert f"**{n_pass} of {len(rows)} cases pass" in DOC.read_text()


def test_simulation_really_compares(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wrong op semantics in the executed binary turns a case into FAIL (the
    harness can fail). Tanh on a model input is not folded at compile time,
    so only the simulator evaluates it."""
    from wsec.ir import opsem_core
    monkeypatch.setitem(opsem_core.UNARY, "Tanh", np.sinh)
    r = run_case("pytorch-converted", "test_Tanh")
    assert r.status == "FAIL" and "max abs error" in r.reason


def test_simulator_error_is_a_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsec.backends import sim

    def broken(p: object, inputs: object) -> None:
        raise sim.SimError("broken route: PE (1, 2) on color 3")

    monkeypatch.setattr(sim, "simulate", broken)
    r = run_case("pytorch-converted", "test_ReLU")
    assert r.status == "FAIL" and r.reason == "simulate: SimError: broken route: PE (1, 2) " \
        "on color 3"


def _save(tmp_path, node: onnx.NodeProto, opset: int, domain: str = "") -> str:
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1, 2, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])])
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    model = helper.make_model(g, opset_imports=ops)
    model.ir_version = 8
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    return path


def test_unsupported_operator_is_named(tmp_path) -> None:
    path = _save(tmp_path, helper.make_node("LpNormalization", ["x"], ["y"], name="lpn"), 17)
    with pytest.raises(FrontendError, match=r"unsupported operator 'LpNormalization' "
                                            r"\(node 'lpn'\); see `wsec ops`"):
        load_onnx(path)
    path = _save(tmp_path, helper.make_node("FusedConv", ["x"], ["y"], name="fc",
                                            domain="com.microsoft"), 17, "com.microsoft")
    with pytest.raises(FrontendError, match=r"unsupported operator 'com.microsoft.FusedConv'"):
        load_onnx(path)


def test_coverage_doc_states_pass_rate(tmp_path) -> None:
    results = [result(s, c) for s, c in CASES[:3]]
    text = write_doc(results, tmp_path / "cov.md")
    assert "**3 of 3 cases pass (100.0%); 0 fail, 0 unsupported.**" in text
    row = "| pytorch-converted | test_AvgPool1d | 6 | AveragePool, Squeeze, Unsqueeze | PASS | "
    assert row in text
    assert doc_rows(text) == {c: "PASS" for _, c in CASES[:3]}
