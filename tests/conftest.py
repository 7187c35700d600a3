"""Shared fixtures: where onnx's bundled real models live, and a CLI runner."""

from __future__ import annotations

import functools
import os
import pathlib
import subprocess
import sys

import onnx
import pytest

LIGHT_DIR = pathlib.Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
LIGHT_MODELS = sorted(p.stem.removeprefix("light_") for p in LIGHT_DIR.glob("light_*.onnx"))
ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "tiny_cnn.onnx"


def light_model(name: str) -> pathlib.Path:
    return LIGHT_DIR / f"light_{name}.onnx"


@functools.lru_cache(maxsize=32)
def compiled_light(name: str, target: str = "wse2"):  # noqa: ANN201
    """A light model compiled with default options, once per test session
    (the end-to-end and QoR tests share it; treat it as read-only). The IR
    printed after every pass is kept (`light_ir_dumps`): printing is cheap
    next to compiling, and the round-trip test then needs no compile of its own."""
    from wsec.driver import CompileOptions, compile_model

    dumps: list[tuple[str, str]] = []
    opts = CompileOptions(target=target, print_ir_after={"all"})
    res = compile_model(str(light_model(name)), opts, emit_ir=lambda p, t: dumps.append((p, t)))
    _LIGHT_DUMPS[(name, target)] = dumps
    return res


_LIGHT_DUMPS: dict[tuple[str, str], list[tuple[str, str]]] = {}


def light_ir_dumps(name: str, target: str = "wse2") -> list[tuple[str, str]]:
    """(pass, IR text after it) of compiled_light(name, target)'s compile."""
    compiled_light(name, target)
    return _LIGHT_DUMPS[(name, target)]


def compiled_file(d: pathlib.Path, model: pathlib.Path):  # noqa: ANN201
    """`model` compiled with default options into d/<stem>.bin and the
    binary loaded, as the simulator's tests read a compiled fixture."""
    from wsec.backends.emit import write_binary
    from wsec.backends.loader import load_binary
    from wsec.driver import CompileOptions, compile_model

    out = d / f"{model.stem}.bin"
    write_binary(compile_model(str(model), CompileOptions()).module, str(out))
    return load_binary(str(out))


def compiled_graph(d: pathlib.Path, graph: onnx.GraphProto):  # noqa: ANN201
    """`graph` saved as an opset-17 model in directory d and compiled with
    `wsec MODEL -o MODEL.bin`, as a user would: (the loaded binary, the
    model's path)."""
    from onnx import helper
    from wsec.backends.loader import load_binary
    from wsec.cli import main

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = d / f"{graph.name}.onnx"
    onnx.save(model, str(path))
    assert main([str(path), "-o", str(path.with_suffix(".bin")), "-q"]) == 0
    return load_binary(str(path.with_suffix(".bin"))), path


def run_wsec(*args: str, cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `wsec` command line as a user would."""
    exe = pathlib.Path(sys.executable).parent / "wsec"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="session")
def light_models() -> list[str]:
    assert len(LIGHT_MODELS) == 9, f"expected onnx's nine light models in {LIGHT_DIR}"
    return LIGHT_MODELS
