"""Auto mode decides before placing, and a fallback says why in one line.

Why: a pipeline attempt that places and routes a large model only to find
it infeasible, then starts over in stream mode, costs the user the whole
pipeline back end (issue 8: GPT-2 XL spent most of its compile that way).
What is known before placing — each kernel's smallest legal size (SRAM),
the PEs those sizes need, and a lower bound on the router colours one PE
needs (edges that share both ends share a route: each needs a colour of its
own there) — decides the mode; only what placement or routing alone can
find still falls back, once, and the report's one-line reason names it.
"""

from __future__ import annotations

import pathlib

import onnx
import pytest
from conftest import EXAMPLE, run_wsec
from onnx import TensorProto, helper
from wsec.driver import CompileOptions, compile_model
from wsec.ir.fabric import Fabric
from wsec.ir.target import get_target
from wsec.ir.templates import INTERNAL_COLORS
from wsec.mode import ModeError, colour_bound, select_mode
from wsec.passes.place import Place

USABLE = Fabric.of(get_target("wse2")).usable_colors


def _wide(path: pathlib.Path, n: int) -> pathlib.Path:
    """n model inputs summed by one kernel: n host edges with the same ends."""
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [4, 64]) for i in range(n)]
    g = helper.make_graph([helper.make_node("Sum", [f"x{i}" for i in range(n)], ["s"]),
                           helper.make_node("Relu", ["s"], ["y"])], "wide", ins,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 64])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _no_place(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(self, module, ctx):  # noqa: ANN001
        raise AssertionError("auto mode placed a pipeline layout it should have ruled out")

    monkeypatch.setattr(Place, "run", fail)


def test_colour_bound_counts_edges_that_share_both_ends(tmp_path: pathlib.Path) -> None:
    res = compile_model(str(_wide(tmp_path / "w.onnx", 5)),
                        CompileOptions(stop_after="form-kernels"))
    m = res.module
    (k,) = m.kernels()
    b = colour_bound(m, res.target)
    assert b.colours == 5 and b.where == f"5 values from the host to {k.name} share one route"


def test_colour_bound_of_sized_kernels_counts_edges_per_pe(tmp_path: pathlib.Path) -> None:
    """A kernel of P PEs touched by d edges has a PE that ceil(d / P) pass."""
    import copy

    res = compile_model(str(_wide(tmp_path / "w.onnx", 5)),
                        CompileOptions(stop_after="form-kernels"))
    m = res.module
    sized = copy.copy(m)
    sized.nodes = [copy.copy(k) for k in m.kernels()]
    for k in sized.nodes:
        k.cost = {"w": 1, "h": 2}  # a 2-PE kernel: its 5 inputs and 1 output, 3 per PE
    b = colour_bound(m, res.target, sized)
    assert b.colours == 5  # the shared route still binds
    for k in sized.nodes:
        k.cost = {"w": 1, "h": 1}
    b = colour_bound(m, res.target, sized)
    assert b.colours == 6 and "has 1 PE(s) and 6 edges" in b.where


def test_auto_streams_before_placing_when_one_pe_needs_too_many_colours(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    n = USABLE + 2
    path = _wide(tmp_path / "w.onnx", n)
    _no_place(monkeypatch)
    res = compile_model(str(path), CompileOptions())
    m = res.module
    assert res.completed and m.attrs["mode"] == "stream"
    assert m.attrs["mode_reason"] == (
        f"stream (auto): a pipeline layout needs at least {n} router colours at one PE "
        f"({n} values from the host to k0 share one route); wse2 has {USABLE} usable")
    names = [name for name, _ in res.manager.timings]
    assert "place" not in names and "route" not in names and "size" not in names


def test_forced_pipeline_with_too_many_colours_is_one_line(tmp_path: pathlib.Path) -> None:
    path = _wide(tmp_path / "w.onnx", USABLE + 1)
    res = compile_model(str(path), CompileOptions(stop_after="form-kernels"))
    with pytest.raises(ModeError) as e:
        select_mode(res.module, res.target, "pipeline")
    msg = str(e.value)
    assert "\n" not in msg and f"at least {USABLE + 1} router colours" in msg
    assert msg.endswith("compile with --mode stream (or auto)")


def test_as_many_colours_as_usable_still_pipelines(tmp_path: pathlib.Path) -> None:
    res = compile_model(str(_wide(tmp_path / "w.onnx", USABLE)), CompileOptions())
    assert res.module.attrs["mode"] == "pipeline"
    # bundles to and from the host may also take the colors kept for host I/O
    # (only the kernels' interior colors are off limits)
    assert res.module.attrs["max_colors_per_pe"] <= res.target.colors - INTERNAL_COLORS


def test_auto_streams_before_sizing_when_the_smallest_kernels_exceed_the_grid(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from wsec.passes.size import Size

    def fail(self, module, ctx):  # noqa: ANN001
        raise AssertionError("sized a model whose smallest kernels exceed the grid")

    monkeypatch.setattr(Size, "run", fail)
    res = compile_model(str(EXAMPLE), CompileOptions(grid=(2, 2)))
    assert res.module.attrs["mode"] == "stream"
    assert res.module.attrs["mode_reason"] == (
        "stream (auto): the kernels' smallest legal sizes need 7 PEs; the 2x2 grid of wse2 "
        "has 4")


def test_cli_report_gives_the_reason_in_one_line(tmp_path: pathlib.Path) -> None:
    n = USABLE + 2
    path = _wide(tmp_path / "w.onnx", n)
    r = run_wsec(str(path), "-o", str(tmp_path / "w.bin"), "--time-passes", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip().startswith("mode ")]
    assert lines == [f"  mode           stream (auto): a pipeline layout needs at least {n} "
                     f"router colours at one PE ({n} values from the host to k0 share one "
                     f"route); wse2 has {USABLE} usable"]
    timing = (r.stderr + r.stdout).split("pass execution timing", 1)[1].split(" total")[0]
    passes = [ln.split()[-1] for ln in timing.splitlines()[2:]]
    assert "place" not in passes and "route" not in passes and "schedule-phases" in passes


def test_cli_report_gives_a_fallback_in_one_line(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """What only routing can find still falls back, once; the report line
    names the pass and the error's first clause."""
    from wsec.cli import main
    from wsec.passes import LayoutInfeasible
    from wsec.passes.route import Route

    def fail(self, module, ctx):  # noqa: ANN001
        raise LayoutInfeasible("edge %h cannot be routed: no color of the 21 usable is free "
                               "on all 961 PEs of its route; use a larger grid (--grid)")

    monkeypatch.setattr(Route, "run", fail)
    assert main([str(EXAMPLE), "-o", str(tmp_path / "m.bin"), "--time-passes"]) == 0
    cap = capsys.readouterr()
    out = cap.out + cap.err
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("mode ")]
    assert lines == ["  mode           stream (auto, fallback): the checks before placing "
                     "allowed a pipeline, but route found it infeasible (edge %h cannot be "
                     "routed: no color of the 21 usable is free on all 961 PEs of its route)"]
    passes = out.split("pass execution timing", 1)[1].split("total")[0]
    assert passes.count(" place\n") == 1 and "route (failed pipeline)" in passes
    assert "schedule-phases" in passes
