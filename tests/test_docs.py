"""The documents a clone ships: every relative link resolves inside the
repository (nothing points at files a clone does not have), and the
license, changelog and versioning policies are there."""

from __future__ import annotations

import pathlib
import re

import pytest
from conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_stay_inside_the_clone(doc: pathlib.Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name}: {target} leaves the repository"
        assert path.exists(), f"{doc.name}: {target} does not exist"
    assert "shared/" not in text and "DESIGN.md" not in text, doc.name


def test_license_changelog_and_versioning_policies() -> None:
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "Binary format: 2" in changelog and "wsec-report/1" in changelog
    from wsec.backends.format import FORMAT_VERSION
    from wsec.report import SCHEMA

    fmt = (ROOT / "docs" / "binary-format.md").read_text()
    assert f"# The wsec binary format, version {FORMAT_VERSION}" in fmt and "Policy" in fmt
    report = (ROOT / "docs" / "report.md").read_text()
    assert f"`{SCHEMA}`" in report and "## Versioning" in report
