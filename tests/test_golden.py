"""Pass-level golden tests: every tests/golden/**/*.wsir file's RUN lines.

Like LLVM lit: `%s` is the file; lines run under bash with pipefail; `not`
inverts a command's exit status; CHECK lines are read by `filecheck`.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

GOLDEN = pathlib.Path(__file__).parent / "golden"
FILES = sorted(GOLDEN.rglob("*.wsir"))
_RUN = re.compile(r"^\s*//\s*RUN:\s*(.*)$")


def run_lines(path: pathlib.Path) -> list[str]:
    lines, cur = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _RUN.match(line)
        if m:
            cur += m.group(1).rstrip()
            if cur.endswith("\\"):
                cur = cur[:-1] + " "
                continue
            lines.append(cur)
            cur = ""
    return lines


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(GOLDEN)) for f in FILES])
def test_golden(path: pathlib.Path) -> None:
    runs = run_lines(path)
    assert runs, f"{path} has no RUN line"
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    prelude = 'not() { if "$@"; then return 1; else return 0; fi; }\n'
    for cmd in runs:
        script = prelude + cmd.replace("%s", f"'{path}'")
        r = subprocess.run(["bash", "-o", "pipefail", "-c", script], capture_output=True,
                           text=True, env=env, cwd=path.parent)
        assert r.returncode == 0, (f"RUN: {cmd}\nexit {r.returncode}\n--- stdout\n{r.stdout}"
                                   f"\n--- stderr\n{r.stderr}")
