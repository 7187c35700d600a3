"""The command-line conventions users expect (issue 14), one test each: exit
codes, --json, '-' for stdout, did-you-mean, targets in --help, `python -m
wsec`, --stop-after with -o, progress on a terminal, a missing optional
dependency, and `make demo` installing what `run --check` needs."""

from __future__ import annotations

import json
import os
import pathlib
import pty
import re
import subprocess
import sys

import pytest
from conftest import EXAMPLE, ROOT, run_wsec

WSEC = str(pathlib.Path(sys.executable).parent / "wsec")
KGRAPH = ROOT / "tests" / "data" / "ispd" / "resnet_tail.kgraph"


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    d = tmp_path_factory.mktemp("bin")
    r = run_wsec(str(EXAMPLE), "-o", "m.bin", "-q", cwd=d)
    assert r.returncode == 0, r.stderr
    return d / "m.bin"


def _one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("wsec: error: "), r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    return r.stderr


def test_exit_codes_0_ok_1_error_2_usage(tmp_path: pathlib.Path, binary: pathlib.Path) -> None:
    assert run_wsec("ops").returncode == 0
    assert run_wsec("inspect", str(binary)).returncode == 0
    missing = run_wsec("nope.onnx", "-o", "m.bin", cwd=tmp_path)
    assert missing.returncode == 1 and "no such file" in _one_error_line(missing)
    (tmp_path / "bad.bin").write_bytes(b"not a binary")
    assert run_wsec("inspect", "bad.bin", cwd=tmp_path).returncode == 1
    usage = run_wsec(str(EXAMPLE), "-o", "m.bin", "--no-such-flag", cwd=tmp_path)
    assert usage.returncode == 2
    _one_error_line(usage)
    assert run_wsec(str(EXAMPLE), cwd=tmp_path).returncode == 2  # no output file
    assert run_wsec("run", str(binary), "--seed", "x").returncode == 2
    assert list(tmp_path.iterdir()) == [tmp_path / "bad.bin"]


def test_json_on_inspect_run_score_and_ops(binary: pathlib.Path) -> None:
    ins = run_wsec("inspect", str(binary), "--json")
    assert ins.returncode == 0, ins.stderr
    doc = json.loads(ins.stdout)
    assert doc["format_version"] >= 2 and doc["target"]["name"] == "wse2"
    assert len(doc["kernels"]) == 7 and {"routes", "sram", "weight_blobs"} <= doc.keys()
    run = run_wsec("run", str(binary), "--json", "--check", str(EXAMPLE))
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["check"]["pass"] is True and doc["outputs"]["prob"]["shape"] == [1, 10]
    sol = ROOT / "tests" / "data" / "ispd" / "tiny.sol"
    score = run_wsec("score", str(ROOT / "tests" / "data" / "ispd" / "tiny.kgraph"), str(sol),
                     "--json")
    assert score.returncode == 0, score.stderr
    doc = json.loads(score.stdout)
    assert doc["legal"] is True and doc["delta_t"] > 0 and doc["wirelength"] >= 0
    ops = run_wsec("ops", "--json")
    doc = json.loads(ops.stdout)
    names = {o["op"] for o in doc["ops"]}
    assert {"Conv", "Gemm", "Relu"} <= names and doc["canonical_opset"] == 17


def test_dash_writes_to_stdout(tmp_path: pathlib.Path) -> None:
    p = subprocess.run([WSEC, str(EXAMPLE), "-o", "-"], capture_output=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout[:8] == b"WSEC\0BIN"  # the binary alone owns stdout ...
    assert b"samples/s" in p.stderr  # ... and the report goes to stderr
    assert list(tmp_path.iterdir()) == []
    r = run_wsec(str(EXAMPLE), "-o", "m.bin", "--report-json", "-", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["schema"] == "wsec-report/1"
    assert "samples/s" in r.stderr
    both = run_wsec(str(EXAMPLE), "-o", "-", "--report-json", "-", cwd=tmp_path)
    assert both.returncode == 2 and "standard output" in _one_error_line(both)


@pytest.mark.parametrize("args, wrong, right", [
    (("M", "-o", "m.bin", "--reprot-json", "r.json"), "--reprot-json", "--report-json"),
    (("M", "-o", "m.bin", "--target", "wse"), "wse", "wse"),
    (("M", "-o", "m.bin", "-p", "plce{seed=1}"), "plce", "place"),
    (("M", "--stop-after", "plac"), "plac", "place"),
    (("M", "-o", "m.bin", "--print-ir-after", "rute"), "rute", "route"),
    (("inpsect", "m.bin"), "inpsect", "inspect"),
    (("run", "m.bin", "--chek", "M"), "--chek", "--check"),
])
def test_did_you_mean(tmp_path: pathlib.Path, args: tuple[str, ...], wrong: str,
                      right: str) -> None:
    r = run_wsec(*(str(EXAMPLE) if a == "M" else a for a in args), cwd=tmp_path)
    assert r.returncode == 2
    line = _one_error_line(r)
    assert wrong in line and re.search(rf"did you mean '{re.escape(right)}\w?'\?", line), line


def test_targets_listed_in_help() -> None:
    from wsec.ir.target import TARGETS

    r = run_wsec("--help")
    assert r.returncode == 0
    help_text = " ".join(r.stdout.split())
    for name, t in TARGETS.items():
        assert f"{name} ({t.width}x{t.height})" in help_text


def test_python_dash_m_wsec(binary: pathlib.Path) -> None:
    r = subprocess.run([sys.executable, "-m", "wsec", "--version"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.startswith("wsec ")
    r = subprocess.run([sys.executable, "-m", "wsec", "inspect", str(binary)],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "kernels (7)" in r.stdout


def test_stop_after_with_a_bin_output_is_a_usage_error_and_wsir_gets_the_ir(
        tmp_path: pathlib.Path) -> None:
    r = run_wsec(str(EXAMPLE), "--stop-after", "place", "-o", "x.bin", cwd=tmp_path)
    assert r.returncode == 2 and "x.wsir" in _one_error_line(r)
    assert not (tmp_path / "x.bin").exists()
    r = run_wsec(str(EXAMPLE), "--stop-after", "place", "-o", "x.wsir", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "x.wsir").read_text()
    assert text.startswith("module ") and "rect = [" in text


# --- progress on a terminal ----------------------------------------------------------------

def _on_a_terminal(args: list[str], cwd: pathlib.Path, after: str = "0"
                   ) -> tuple[int, str, str]:
    """Run wsec with its stderr on a pseudo-terminal: (exit, terminal text, stdout)."""
    master, slave = pty.openpty()
    env = dict(os.environ, WSEC_PROGRESS_AFTER=after)
    p = subprocess.Popen([WSEC, *args], cwd=cwd, stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the terminal closed: the process is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    out = p.stdout.read().decode() if p.stdout else ""
    p.wait()
    return p.returncode, b"".join(chunks).decode().replace("\r\n", "\n"), out


def test_progress_lines_on_a_terminal_only(tmp_path: pathlib.Path) -> None:
    code, tty, out = _on_a_terminal([str(EXAMPLE), "-o", "m.bin"], tmp_path)
    assert code == 0, tty
    started = re.findall(r"^wsec: ([\w-]+) \.\.\. \(\d+\.\d s\)$", tty, re.M)
    assert started == ["canonicalize", "form-kernels", "size", "place", "route", "allocate"]
    assert "samples/s" in out and "wsec:" not in out.split("\n", 1)[1]
    code, tty, _ = _on_a_terminal([str(EXAMPLE), "-o", "m.bin", "-q"], tmp_path)
    assert code == 0 and tty == ""
    # an hour's threshold: a short compile prints nothing but its report
    code, tty, _ = _on_a_terminal([str(EXAMPLE), "-o", "m.bin"], tmp_path, after="3600")
    assert code == 0 and tty == ""
    piped = run_wsec(str(EXAMPLE), "-o", "m.bin", cwd=tmp_path)  # not a terminal: quiet
    assert piped.returncode == 0 and piped.stderr == ""
    verbose = run_wsec(str(EXAMPLE), "-o", "m.bin", "-v", cwd=tmp_path)
    done = re.findall(r"^wsec: ([\w-]+) done in \d+\.\d\d s", verbose.stderr, re.M)
    assert done == ["canonicalize", "form-kernels", "size", "place", "route", "allocate"]


def test_ispd_progress_shows_the_best_layout_and_the_time_limit(tmp_path: pathlib.Path) -> None:
    code, tty, out = _on_a_terminal([str(KGRAPH), "-o", "r.sol", "--time-limit", "8"],
                                    tmp_path)
    assert code == 0, tty
    best = re.findall(r"^wsec: place: best Δt ([\d,.]+), wirelength ([\d,.]+) "
                      r"\(\d+\.\d / 8 s\)$", tty, re.M)
    assert best, tty
    assert "legal          yes" in out


def test_an_interrupted_ispd_run_writes_the_best_layout_found_so_far(
        tmp_path: pathlib.Path) -> None:
    """Ctrl-C as the placer reports its second better layout (raised from its
    progress report, so the moment is exact): that layout, the best so far, is
    written, legal, atomically."""
    from wsec.ispd.driver import compile_kgraph
    from wsec.ispd.score import score
    from wsec.outputs import Outputs

    seen: list[dict[str, float]] = []

    class Interrupting:
        def pass_event(self, name: str, seconds: float | None, ctx: object) -> None:
            ctx.progress = self.solver  # type: ignore[attr-defined]

        def solver(self, name: str, figures: dict[str, float]) -> None:
            seen.append(figures)
            if len(seen) == 2:
                raise KeyboardInterrupt

    sol = tmp_path / "r.sol"
    outs = Outputs()
    outs.input(str(KGRAPH), "the kernel graph")
    outs.output(str(sol), "the solution")
    with pytest.raises(KeyboardInterrupt, match="wrote the best legal solution so far"):
        compile_kgraph(str(KGRAPH), str(sol), 30.0, outs=outs, progress=Interrupting())
    assert len(seen) == 2 and sol.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["r.sol"]  # no temp file left
    from wsec.frontends.kgraph import load_kgraph
    from wsec.ispd.solution import read_solution

    module = load_kgraph(str(KGRAPH))
    read_solution(sol.read_text(), module, str(sol))
    s = score(module, bound=False)
    assert s["legal"] and s["delta_t"] == pytest.approx(seen[1]["delta_t"])
    assert s["wirelength"] == pytest.approx(seen[1]["wirelength"])
    assert seen[1]["objective"] < seen[0]["objective"]


# --- optional dependencies -----------------------------------------------------------------

def test_a_missing_onnxruntime_is_one_line_naming_the_install(tmp_path: pathlib.Path,
                                                             binary: pathlib.Path) -> None:
    fake = tmp_path / "site" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "site"))
    r = subprocess.run([WSEC, "run", str(binary), "--check", str(EXAMPLE)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 1
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("wsec: error: --check needs onnxruntime")
    assert "make demo" in err[0] and "pip install -e '.[check]'" in err[0]


def test_make_demo_installs_what_run_check_needs() -> None:
    """A fresh clone's `make demo` installs the `check` extra (onnxruntime)
    and ends with `wsec run out/tiny_cnn.bin --check examples/tiny_cnn.onnx`."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("onnxruntime>=") for d in project["optional-dependencies"]["check"])
    make = subprocess.run(["make", "-n", "-B", "demo", "PYTHON=python3"], cwd=ROOT,
                          capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    lines = make.stdout.splitlines()
    install = next(i for i, ln in enumerate(lines) if "pip install" in ln and "[check]" in ln)
    check = next(i for i, ln in enumerate(lines)
                 if "wsec run out/tiny_cnn.bin --check examples/tiny_cnn.onnx" in ln)
    assert install < check
