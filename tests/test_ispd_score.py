"""ISPD 2020 solutions: writer/reader round trip and the scorer, checked by hand."""

from __future__ import annotations

import os

import pytest
from wsec.frontends.kgraph import load_kgraph
from wsec.ir.graph import Rect
from wsec.ir.verify import verify_module
from wsec.ispd.score import score, sizing_bound
from wsec.ispd.solution import SolutionError, read_solution, write_solution
from wsec.passes.base import PassContext
from wsec.passes.place import Place
from wsec.passes.size import Size

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "ispd")
BENCH = os.environ.get("WSEC_ISPD2020", os.path.join(HERE, "..", "..", "shared", "ispd2020"))

with open(os.path.join(DATA, "tiny.sol"), encoding="utf-8") as _f:
    TINY_SOL = _f.read()


def tiny(solution: str = TINY_SOL):  # noqa: ANN201
    m = load_kgraph(os.path.join(DATA, "tiny.kgraph"))
    read_solution(solution, m, "tiny.sol")
    return m


def test_tiny_score_by_hand() -> None:
    m = tiny()
    verify_module(m)
    assert m.properties >= {"sized", "placed"}
    k2 = m.kernel("k2")
    assert k2.knobs == {"h": 1, "w": 2, "c1": 4, "c2": 1, "c3": 2, "k1": 1, "k2": 2, "k3": 4}
    assert k2.rotated and k2.rect == Rect(12, 0, 10, 21)
    s = score(m)
    assert s["legal"] and s["violations"] == []
    # k1 conv(4 4 8 8 3 3 1) h=w=2 c=2 k=4: 12x12, time 2*2*4*2*9 = 288,
    #   memory 4*2*9 + 3*3*2 = 90 words
    # k2 dblock(4 4 8) h=1 w=2: width 3*(1+2+4) = 21, height max(2*5, 2*2, 2*3) = 10,
    #   times 4*2*2*2 = 32, 4*2*2*1*9 = 144, 4*2*1*2 = 16 -> 144; memory max(20, 36, 18)
    # k3 conv(5 5 8 8 1 1 2) h=w=1 c=k=3: 9x4, time 5*5*3*3/4 = 56.25
    rows = {r["name"]: r for r in s["kernels"]}
    assert rows["k1"]["time"] == 288 and rows["k1"]["memory_words"] == 90
    assert rows["k2"]["time"] == 144 and rows["k2"]["memory_words"] == 36
    assert rows["k2"]["shape"] == [21, 10]
    assert rows["k3"]["time"] == 56.25
    assert s["delta_t"] == 288
    # centres k1 (6, 6), k2 (17, 10.5), k3 (26.5, 2); host edges excluded
    # k1->k2 11+4.5, k1->k3 20.5+4, k2->k3 9.5+8.5
    assert s["wirelength"] == 15.5 + 24.5 + 18
    assert s["weighted"] == 2 * 288 + 3 * 58
    assert s["area_used"] == 144 + 210 + 36 and s["grid_area"] == 32 * 32


def test_round_trip() -> None:
    m = tiny()
    text = write_solution(m)
    assert text == TINY_SOL
    m2 = tiny(text)
    assert write_solution(m2) == text
    assert score(m2) == score(m)


def _edit(old: str, new: str) -> str:
    assert old in TINY_SOL
    return TINY_SOL.replace(old, new)


@pytest.mark.parametrize("old,new,violation", [
    ("k3 : place(22 0 R0)", "k3 : place(20 0 R0)",
     "kernels 'k2' and 'k3' overlap on 2x4 PEs (from (20, 0))"),
    ("k3 : place(22 0 R0)", "k3 : place(30 0 R0)",
     "kernel 'k3' at (30, 0) size 9x4 reaches (39, 4), outside the 32x32 grid"),
    ("k2 : place(12 0 R90)", "k2 : place(12 0 R0)",
     "kernel 'k2' at (12, 0) size 21x10 reaches (33, 10), outside the 32x32 grid"),
    ("k1 = conv( 4 4 8 8 3 3 1 1 2 2 2 4 )", "k1 = conv( 4 4 8 8 3 3 1 1 2 2 1 4 )",
     "kernel 'k1' needs 162.0 words of memory per PE but memlimit is 100 (62.0 over)"),
    ("k1 = conv( 4 4 8 8 3 3 1 1 2 2 2 4 )", "k1 = conv( 4 4 8 8 3 3 1 1 5 2 0 4 )",
     "kernel 'k1' (conv (H=4 W=4 C=8 K=8 R=3 S=3 T=1 U=1)): knob h=5 is outside 1..4; "
     "knob c=0 is outside 1..8"),
    ("k3 : place(22 0 R0)\n", "", "kernel 'k3' is not placed"),
    ("k2 = dblock( 4 4 8 1 2 4 1 2 1 2 4 )\n", "",
     "kernel 'k2' (dblock) has no knobs (missing from the solution)"),
])
def test_illegal_solutions(old: str, new: str, violation: str) -> None:
    m = tiny(_edit(old, new))
    s = score(m)
    assert not s["legal"]
    assert any(violation in v for v in s["violations"]), s["violations"]


@pytest.mark.parametrize("old,new,message", [
    ("k1 = conv(", "k9 = conv(", "tiny.sol:1: kernel 'k9' is not in the kernel graph"),
    ("k1 = conv(", "k1 = dblock(", "tiny.sol:1: kernel 'k1' is a conv in the kernel graph, "
     "not a dblock"),
    ("k1 = conv( 4 4 8 8", "k1 = conv( 4 4 8 9", "tiny.sol:1: 'k1' has K=8 in the kernel graph "
     "but the solution says K=9"),
    ("k3 = conv( 5 5 8 8 1 1 2 2 1 1 3 3 )", "k3 = conv( 5 5 8 8 1 1 2 2 1 1 3 )",
     "tiny.sol:3: conv 'k3' takes 12 arguments (H W C K R S T U h w c k), got 11"),
    ("k1 : place(0 0 R0)", "k1 : place(0 0 R45)", "tiny.sol:4: cannot read"),
    ("k3 : place(22 0 R0)", "k3 : place(22 0 R0)\nk3 : place(1 1 R0)",
     "tiny.sol:7: kernel 'k3' is placed twice (first on line 6)"),
])
def test_unreadable_solutions(old: str, new: str, message: str) -> None:
    with pytest.raises(SolutionError) as ei:
        tiny(_edit(old, new))
    assert message in str(ei.value)


def test_writer_needs_sized_and_placed() -> None:
    m = load_kgraph(os.path.join(DATA, "tiny.kgraph"))
    with pytest.raises(SolutionError, match=r"kernel 'k1' \(ispd.conv\) has no knobs \(run size\)"):
        write_solution(m)


def test_tiny_bound_is_below_hand_solution() -> None:
    m = tiny()
    b = sizing_bound(m)
    assert 0 < b <= score(m)["delta_t"]
    assert score(m, bound=True)["bound"] == b


@pytest.mark.skipif(not os.path.isdir(BENCH), reason="ISPD benchmarks not present")
@pytest.mark.parametrize("bench", ["A", "D"])
def test_size_place_write_read_score(bench: str) -> None:
    """The ordinary size and place passes run on a contest graph, and the
    solution they give reads back to the same, legal, score."""
    m = load_kgraph(os.path.join(BENCH, f"{bench}.kgraph"))
    ctx = PassContext.for_module(m)
    Size().run(m, ctx)
    Place().run(m, ctx)
    verify_module(m)
    s = score(m, bound=True)
    assert s["legal"], s["violations"]
    assert s["bound"] <= s["delta_t"] and s["wirelength"] > 0
    text = write_solution(m)
    m2 = load_kgraph(os.path.join(BENCH, f"{bench}.kgraph"))
    read_solution(text, m2)
    s2 = score(m2)
    assert {k: s2[k] for k in ("legal", "delta_t", "wirelength", "weighted", "area_used")} == {
        k: s[k] for k in ("legal", "delta_t", "wirelength", "weighted", "area_used")}


def test_score_command(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsec.cli import main

    kg = os.path.join(DATA, "tiny.kgraph")
    good = tmp_path / "good.sol"
    good.write_text(TINY_SOL)
    assert main(["score", kg, str(good)]) == 0
    out = capsys.readouterr().out
    assert "legal          yes" in out and "bound (area)" in out and "weighted" in out
    bad = tmp_path / "bad.sol"
    first_place = next(ln for ln in TINY_SOL.splitlines() if "place(" in ln)
    name = first_place.split(":")[0].strip()
    bad.write_text(TINY_SOL.replace(first_place, f"{name} : place(1000 0 R0)"))
    assert main(["score", kg, str(bad), "--no-bound"]) == 1
    out = capsys.readouterr().out
    assert "legal          NO" in out and "outside the 32x32 grid" in out and "bound" not in out
    garbled = tmp_path / "garbled.sol"
    garbled.write_text("k1 = conv( 1 2 3 )\n")
    assert main(["score", kg, str(garbled)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("wsec: error: ") and "garbled.sol:1" in err
    assert main(["score", kg, str(tmp_path / "missing.sol")]) == 1
    assert "cannot read solution" in capsys.readouterr().err


def test_compile_kgraph_errors(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsec.cli import main

    kg = os.path.join(DATA, "tiny.kgraph")
    assert main([kg, "-o", str(tmp_path / "t.sol"), "-p", "route{x=1}"]) == 2
    assert "not in the kernel-graph pipeline (size, place)" in capsys.readouterr().err
    assert main([str(tmp_path / "nope.kgraph"), "-o", str(tmp_path / "t.sol")]) == 1
    assert "cannot read kernel graph" in capsys.readouterr().err
    assert main([kg, "-o", str(tmp_path / "t.sol"), "--time-limit", "5"]) == 0
    out = capsys.readouterr().out
    assert "3 kernels" in out and "legal          yes" in out
    m = load_kgraph(kg)
    read_solution((tmp_path / "t.sol").read_text(), m)
    assert score(m)["legal"]
