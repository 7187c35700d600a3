"""QoR goldens of onnx's nine light models on wse2 (tests/qor/*.json): Δt
against the area bound, PEs used, routed wirelength, busiest link against Δt,
colors at the busiest PE and the largest SRAM use, each within its
tolerance range. Refresh with `python tests/qor/qor.py [MODEL]`."""

from __future__ import annotations

import pathlib
import sys

import pytest
from conftest import LIGHT_MODELS, compiled_light

sys.path.insert(0, str(pathlib.Path(__file__).parent / "qor"))
import qor  # noqa: E402

pytestmark = pytest.mark.qor


def test_every_light_model_has_a_golden() -> None:
    assert sorted(p.stem for p in qor.HERE.glob("*.json")) == sorted(LIGHT_MODELS)


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_qor(name: str) -> None:
    from wsec.report import build_report

    golden = qor.load(name)
    res = compiled_light(name, golden["target"])
    got = qor.metrics(build_report(res.module, res.target, res.manager.timings))
    bad = qor.check(golden, got)
    assert not bad, f"{name}: " + "; ".join(bad)


def test_check_flags_worse_and_better() -> None:
    golden = {"model": "m", "metrics": {"pes_used": {"value": 100.0, "range": [0.95, 1.05]}}}
    assert not qor.check(golden, {"pes_used": 104.0})
    assert "worse" in qor.check(golden, {"pes_used": 106.0})[0]
    assert "better" in qor.check(golden, {"pes_used": 90.0})[0]
