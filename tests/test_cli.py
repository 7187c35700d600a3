"""The command line as users meet it: help, ops, errors, compile, inspect."""

from __future__ import annotations

import pathlib

import onnx
from conftest import EXAMPLE, run_wsec
from onnx import TensorProto, helper


def test_help_lists_commands() -> None:
    r = run_wsec("--help")
    assert r.returncode == 0
    for word in ("wsec ops", "wsec inspect", "--target", "--print-ir-after", "--time-passes",
                 "--report-json", "--input-shape"):
        assert word in r.stdout


def test_ops_lists_light_model_ops() -> None:
    r = run_wsec("ops")
    assert r.returncode == 0
    for op in ("Conv", "BatchNormalization", "Gemm", "LRN", "Softmax", "Concat", "Transpose"):
        assert f"  {op} " in r.stdout
    newest = onnx.defs.onnx_opset_version()  # the range is the installed onnx's
    assert f"opsets 6 to {newest}, converted to opset 17" in r.stdout.splitlines()[0]


def test_truncated_model_is_one_line_error(tmp_path: pathlib.Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(EXAMPLE.read_bytes()[:1000])
    out = tmp_path / "bad.bin"
    r = run_wsec(str(bad), "-o", str(out))
    assert r.returncode == 1
    assert r.stderr.startswith("wsec: error: ") and r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_unsupported_op_names_op_node_and_ops_command(tmp_path: pathlib.Path) -> None:
    g = helper.make_graph(
        [helper.make_node("Det", ["x"], ["y"], name="the_det")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    path = tmp_path / "det.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), path)
    r = run_wsec(str(path), "-o", str(tmp_path / "det.bin"))
    assert r.returncode == 1
    assert "Det" in r.stderr and "the_det" in r.stderr and "wsec ops" in r.stderr
    assert r.stderr.count("\n") == 1


def test_missing_output_is_usage_error() -> None:
    r = run_wsec(str(EXAMPLE))
    assert r.returncode == 2 and "-o" in r.stderr


def test_compile_report_inspect_and_determinism(tmp_path: pathlib.Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    rep = tmp_path / "r.json"
    r = run_wsec(str(EXAMPLE), "-o", str(a), "--report-json", str(rep))
    assert r.returncode == 0, r.stderr
    for word in ("kernels", "PEs used", "cycles/sample", "bottleneck", "wirelength",
                 "busiest link", "largest SRAM"):
        assert word in r.stdout
    r2 = run_wsec(str(EXAMPLE), "-o", str(b), "-q")
    assert r2.returncode == 0 and r2.stdout == ""
    assert a.read_bytes() == b.read_bytes()
    import json

    report = json.loads(rep.read_text())
    assert report["mode"] == "pipeline"
    assert report["summary"]["kernels"] == len(report["kernels"]) > 0
    ins = run_wsec("inspect", str(a))
    assert ins.returncode == 0, ins.stderr
    for k in report["kernels"]:
        assert k["name"] in ins.stdout


def test_print_ir_after_place_and_time_passes(tmp_path: pathlib.Path) -> None:
    r = run_wsec(str(EXAMPLE), "-o", str(tmp_path / "m.bin"), "--print-ir-after=place",
                 "--time-passes", "-q")
    assert r.returncode == 0, r.stderr
    assert "IR Dump After place" in r.stdout and "rect = [" in r.stdout
    assert "IR Dump After route" not in r.stdout
    for name in ("canonicalize", "form-kernels", "size", "place", "route", "allocate", "total"):
        assert name in r.stderr


def test_stop_after_prints_ir_and_writes_no_binary(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "m.bin"
    r = run_wsec(str(EXAMPLE), "--stop-after=size")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("module ") and "knobs = {" in r.stdout and "rect = [" not in r.stdout
    assert not out.exists()


def test_pass_options_from_cli(tmp_path: pathlib.Path) -> None:
    r = run_wsec(str(EXAMPLE), "-o", str(tmp_path / "m.bin"), "-p", "place{seed=3}", "-q")
    assert r.returncode == 0, r.stderr
    r = run_wsec(str(EXAMPLE), "-o", str(tmp_path / "m.bin"), "-p", "place{colour=3}")
    assert r.returncode == 2 and "no option 'colour'" in r.stderr


def test_grid_too_small_fails_without_partial_output(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "m.bin"
    r = run_wsec(str(EXAMPLE), "-o", str(out), "--grid", "2x2", "--mode", "pipeline")
    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith("wsec: error: ") and "Traceback" not in r.stderr
    assert not out.exists()


def test_unwritable_output_fails_before_compiling(tmp_path: pathlib.Path) -> None:
    r = run_wsec(str(EXAMPLE), "-o", str(tmp_path / "missing" / "m.bin"))
    assert r.returncode == 1
    assert "cannot write" in r.stderr and "does not exist" in r.stderr
    assert r.stderr.count("\n") == 1


def test_auto_mode_streams_when_the_pipeline_layout_fails(monkeypatch) -> None:
    """Auto mode's promise is one command for any model: a pipeline layout
    that sizing accepted but routing could not build falls back to weight
    streaming and says why; a forced pipeline reports the routing error."""
    import pytest
    from wsec.driver import CompileOptions, compile_model
    from wsec.passes import LayoutInfeasible, PassError
    from wsec.passes.route import Route

    def fail(self, module, ctx):  # noqa: ANN001
        raise LayoutInfeasible("edge %x cannot be routed: no color is free")

    monkeypatch.setattr(Route, "run", fail)
    res = compile_model(str(EXAMPLE), CompileOptions())
    assert res.completed and res.module.attrs["mode"] == "stream"
    assert res.module.attrs["mode_reason"] == (
        "stream (auto, fallback): the checks before placing allowed a pipeline, but route "
        "found it infeasible (edge %x cannot be routed: no color is free)")
    assert [n for n, _ in res.manager.timings].count("place") == 1  # never placed again
    assert "route (failed pipeline)" in [n for n, _ in res.manager.timings]
    assert all(k.rect is not None for k in res.module.kernels())
    with pytest.raises(LayoutInfeasible, match="cannot be routed"):
        compile_model(str(EXAMPLE), CompileOptions(mode="pipeline"))

    def bug(self, module, ctx):  # noqa: ANN001
        raise PassError("a pass error that is not an infeasible layout")

    monkeypatch.setattr(Route, "run", bug)  # only LayoutInfeasible falls back
    with pytest.raises(PassError, match="not an infeasible layout"):
        compile_model(str(EXAMPLE), CompileOptions())


def test_bad_pass_option_is_a_usage_error_and_never_falls_back(tmp_path: pathlib.Path) -> None:
    for spec, allowed in (("place{effort=hgih}", "allowed values: fast, normal, high"),
                          ("size{utilisation=2}", "allowed values: a number in (0, 1]")):
        out = tmp_path / "m.bin"
        r = run_wsec(str(EXAMPLE), "-o", str(out), "-p", spec)
        assert r.returncode == 2, r.stdout + r.stderr
        assert allowed in r.stderr and r.stderr.count("\n") == 1
        assert not out.exists()
