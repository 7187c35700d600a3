"""Contest-style variants of kernel graphs (wsec.ispd.variants) and the
driver's process clock."""

from __future__ import annotations

import os

import pytest
from wsec.frontends.kgraph import parse_kgraph
from wsec.ir.errors import WsecError
from wsec.ispd.driver import process_seconds
from wsec.ispd.variants import _fastest_fill, open_grid_side, variants, with_header

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "ispd")


def _text(name: str) -> str:
    with open(os.path.join(DATA, name), encoding="utf-8") as f:
        return f.read()


def test_with_header_changes_only_the_header() -> None:
    text = _text("tiny.kgraph")
    new = with_header(text, wlength=400, width=99)
    m = parse_kgraph(new)
    assert m.attrs["wlength"] == 400 and m.attrs["grid"] == [99, 32]
    assert m.attrs["wdeltat"] == 2 and m.attrs["memlimit"] == 100
    assert new.replace("wlength=400", "wlength=3").replace("width=99", "width=32") == text
    one_line = with_header(_text("cycle.kgraph"), wlength=7)
    assert "wlength=7 wadapter=0" in one_line
    with pytest.raises(WsecError, match="header has no 'speed=' entry"):
        with_header(text, speed=3)


def test_open_grid_is_the_smallest_where_the_area_does_not_bind() -> None:
    text = _text("tiny.kgraph")
    side = open_grid_side(text)
    assert side > 32
    assert _fastest_fill(text, side) <= 0.5 < _fastest_fill(text, int(side * 0.95))


def test_variants_set() -> None:
    names = [n for n, _ in variants(_text("tiny.kgraph"), "tiny")]
    assert names == ["tiny-wl4", "tiny-wl40", "tiny-wl400", "tiny-open"]


def test_process_seconds_counts_from_process_start() -> None:
    a = process_seconds()
    b = process_seconds()
    assert 0.0 < a <= b
