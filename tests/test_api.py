"""The Python API (docs/api.md): the page's examples run as written, and
the API agrees with the command line."""

from __future__ import annotations

import pathlib
import re
import shutil

import pytest
from conftest import EXAMPLE, ROOT, run_wsec


def _examples() -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, re.S)


def test_the_api_page_examples_run(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    blocks = _examples()
    assert len(blocks) >= 4
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "examples" / "tiny_cnn.onnx")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, object] = {}
    for block in blocks:  # one session, as a reader would type them
        exec(compile(block, "docs/api.md", "exec"), scope)  # noqa: S102
    out = capsys.readouterr().out
    assert "samples/s, limited by" in out and "(1, 10)" in out
    assert "did you mean" in out
    for name in ("tiny_cnn.bin", "tiny_cnn.json", "tiny_cnn.html"):
        assert (tmp_path / name).stat().st_size > 0


def test_the_api_binary_is_the_command_line_binary(tmp_path: pathlib.Path) -> None:
    import wsec

    c = wsec.compile(str(EXAMPLE))
    assert run_wsec(str(EXAMPLE), "-o", "cli.bin", "-q", cwd=tmp_path).returncode == 0
    assert (tmp_path / "cli.bin").read_bytes() == c.binary
    assert c.summary().splitlines()[1] == f"  {c.headline}"
    with pytest.raises(wsec.UsageError, match="is the input model"):
        c.save(str(EXAMPLE))
    assert wsec.run(c).outputs["prob"].shape == (1, 10)
