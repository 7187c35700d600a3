"""Regenerate the inputs of pass-level golden tests from their GEN lines.

A golden file is a comment header (RUN / CHECK lines, prose) followed by the
IR its RUN lines feed to one pass. That IR must be what wsec itself
produces, never typed by hand: a file's `// GEN: wsec opt SRC ...` line says
which command (run in the file's directory) prints it, from a graph-level
source model in tests/golden/src/ (or a kernel graph). A file whose input is
wrong on purpose (a malformed graph for an error test) says
`// GEN: none (why)`.

    python tests/golden/regen.py            rewrite every input from its GEN line
    python tests/golden/regen.py --check    exit 1 if any input differs (what the suite checks)

After regenerating, re-read the CHECK lines: a changed input can change what
the pass prints.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import shlex
import subprocess
import sys

GOLDEN = pathlib.Path(__file__).resolve().parent
_GEN = re.compile(r"^\s*//\s*GEN:\s*(.*)$")


def split(path: pathlib.Path) -> tuple[list[str], str]:
    """(header comment lines, IR body) of a golden file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    n = 0
    while n < len(lines) and (lines[n].lstrip().startswith("//") or not lines[n].strip()):
        n += 1
    return lines[:n], "\n".join(lines[n:]).strip("\n") + "\n"


def gen_command(header: list[str]) -> str | None:
    """The GEN command of a header; None for `GEN: none (...)`; raises if absent."""
    for line in header:
        m = _GEN.match(line)
        if m:
            cmd = m.group(1).strip()
            return None if cmd.startswith("none") else cmd
    raise ValueError("no '// GEN:' line")


def generate(path: pathlib.Path, cmd: str) -> str:
    """Run a GEN command (wsec from this interpreter's environment) in the file's directory."""
    argv = shlex.split(cmd)
    if not argv or argv[0] != "wsec":
        raise ValueError(f"{path}: GEN must run wsec, got '{cmd}'")
    exe = pathlib.Path(sys.executable).parent / "wsec"
    r = subprocess.run([str(exe), *argv[1:]], capture_output=True, text=True, cwd=path.parent,
                       env=dict(os.environ))
    if r.returncode != 0:
        raise RuntimeError(f"{path}: GEN '{cmd}' failed:\n{r.stderr}")
    return r.stdout.strip("\n") + "\n"


def files() -> list[pathlib.Path]:
    return sorted(p for p in GOLDEN.rglob("*.wsir") if p.parent.name != "src")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="report differences, write nothing")
    a = ap.parse_args()
    stale = 0
    for path in files():
        header, body = split(path)
        cmd = gen_command(header)
        if cmd is None:
            continue
        new = generate(path, cmd)
        if new != body:
            stale += 1
            print(f"{'stale' if a.check else 'regenerated'}: {path.relative_to(GOLDEN)}")
            if not a.check:
                path.write_text("\n".join(header) + "\n" + new, encoding="utf-8")
    return 1 if (a.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
