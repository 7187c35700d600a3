"""Issue 10's bad-input campaign, in the suite: every case of
tests/badinputs.py behaves (one stderr line, the right exit code, no
traceback, no Python warning, no new, partial or clobbered file)."""

from __future__ import annotations

import pathlib

import pytest
from badinputs import Case, cases, make_base, problems, run_case

CASES = cases()


def test_the_campaign_is_large_enough() -> None:
    assert len(CASES) >= 300
    cats = {c.name.split("/", 1)[0] for c in CASES}
    assert cats >= {"output", "size", "model", "option", "binary", "run", "kgraph", "score",
                    "interrupt"}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("campaign") / "base"
    make_base(d)
    return d


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, base: pathlib.Path, tmp_path: pathlib.Path) -> None:
    r = run_case(case, base, tmp_path / "case")
    bad = problems(case, r)
    assert not bad, f"{case.name}: {'; '.join(bad)}\nstderr: {r.stderr}"
