"""End-to-end: onnx's nine light models compile for wse2 and wse3, the
binaries load, and the IR round-trips through text after every pass."""

from __future__ import annotations

import pathlib

import pytest
from conftest import LIGHT_MODELS, compiled_light, light_ir_dumps, light_model
from wsec.backends.inspect import inspect_text
from wsec.backends.loader import load_binary
from wsec.driver import CompileOptions, compile_model
from wsec.ir.parser import parse_module
from wsec.ir.printer import print_module


@pytest.mark.parametrize("target", ["wse2", "wse3"])
@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_light_model_compiles_and_loads(name: str, target: str, tmp_path: pathlib.Path) -> None:
    from wsec.backends.emit import write_binary

    res = compiled_light(name, target)
    assert res.completed
    out = tmp_path / f"{name}.bin"
    write_binary(res.module, str(out))
    prog = load_binary(str(out))
    text = inspect_text(prog)
    kernels = list(res.module.kernels())
    assert kernels
    for k in kernels:
        assert k.name in text
        assert k.rect is not None and k.sram is not None


@pytest.mark.parametrize("name", LIGHT_MODELS)
def test_ir_round_trips_after_every_pass(name: str) -> None:
    dumps = light_ir_dumps(name)
    assert [p for p, _ in dumps] == ["canonicalize", "form-kernels", "size", "place", "route",
                                     "allocate"]
    for pass_name, text in dumps:
        again = print_module(parse_module(text))
        assert again == text, f"{name}: IR after {pass_name} does not round-trip"


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1"])
def test_same_model_twice_gives_identical_binaries(name: str) -> None:
    """A second compile in the same process (the session's first is shared:
    compiled_light) emits the same bytes."""
    from wsec.backends.emit import emit_bytes

    first = emit_bytes(compiled_light(name).module)
    second = emit_bytes(compile_model(str(light_model(name)), CompileOptions()).module)
    assert first == second
