"""`wsec run` and `wsec MODEL -o OUT --verify` as a user runs them."""

from __future__ import annotations

import pathlib
from dataclasses import replace

import numpy as np
import pytest
from conftest import EXAMPLE, run_wsec
from test_sim import _swap_two_shards, compile_bin
from wsec.backends.emit import write_program
from wsec.backends.format import BUNDLE_FROM_HOST, BUNDLE_TO_HOST, Program
from wsec.backends.loader import BinaryError, load_binary


@pytest.fixture(scope="module")
def tiny_bin(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, Program]:
    path = tmp_path_factory.mktemp("run") / "tiny.bin"
    return path, compile_bin(EXAMPLE, path)


def test_check_passes(tiny_bin: tuple[pathlib.Path, Program]) -> None:
    path, _ = tiny_bin
    r = run_wsec("run", str(path), "--check", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert "PASS" in r.stdout and "FAIL" not in r.stdout
    assert "max abs" in r.stdout and "float32" in r.stdout


def test_inputs_outputs_and_seed(tiny_bin: tuple[pathlib.Path, Program],
                                 tmp_path: pathlib.Path) -> None:
    path, prog = tiny_bin
    name = prog.info["inputs"][0]
    x = np.random.default_rng(5).standard_normal((1, 3, 32, 32)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    outs = []
    for args in (["--input", f"{name}={tmp_path / 'x.npy'}"], ["--seed", "3"], ["--seed", "3"],
                 []):
        out = tmp_path / f"o{len(outs)}.npz"
        r = run_wsec("run", str(path), *args, "-o", str(out))
        assert r.returncode == 0, r.stderr
        with np.load(out) as z:
            assert sorted(z.files) == sorted(prog.info["outputs"])
            outs.append(z[prog.info["outputs"][0]])
    assert np.array_equal(outs[1], outs[2])
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[2], outs[3])
    from wsec.backends.sim import simulate

    direct = simulate(prog, {name: x}).outputs[prog.info["outputs"][0]]
    assert np.array_equal(direct, outs[0])


def test_stats(tiny_bin: tuple[pathlib.Path, Program]) -> None:
    path, prog = tiny_bin
    r = run_wsec("run", str(path), "--stats")
    assert r.returncode == 0, r.stderr
    for k in prog.kernels:
        assert f"\n{k.name} " in r.stdout
    assert "busiest link" in r.stdout and "wav/link" in r.stdout
    ops = sum(len(k.body) for k in prog.kernels)
    assert f"whole_tensor_ops 0: {ops} of {ops} body ops of {len(prog.kernels)} kernels ran " \
        "per PE" in r.stdout


def test_inboxes_line_and_strict(tiny_bin: tuple[pathlib.Path, Program]) -> None:
    """`wsec run` says how much of the run its inbox checks proved (the same
    figures as the simulator's per-kernel counts, also in --json); --strict
    fails, with one line naming the PE, exactly when some PE read an element
    no route brought."""
    import json

    from wsec.backends.sim import random_inputs, simulate

    path, prog = tiny_bin
    st = simulate(prog, random_inputs(prog, 0)).kernel_stats
    fwd = {n: int(s["forwarded_pes"]) for n, s in st.items() if "forwarded_pes" in s}
    r = run_wsec("run", str(path))
    assert r.returncode == 0, r.stderr
    proven = sum(1 for v in fwd.values() if not v)
    assert f"inboxes: {proven} of {len(prog.kernels)} kernels read only what their routes " \
        "delivered" in r.stdout
    if sum(fwd.values()):
        n = sum(1 for v in fwd.values() if v)
        assert f"{sum(fwd.values()):,} PEs of {n} kernel{'s' if n != 1 else ''} read " \
            "elements forwarded" in r.stdout
    doc = json.loads(run_wsec("run", str(path), "--json").stdout)["inboxes"]
    assert (doc["proven"], doc["forwarded_pes"]) == (proven, sum(fwd.values()))
    s = run_wsec("run", str(path), "--strict")
    if sum(fwd.values()):
        assert s.returncode == 1 and s.stdout == ""
        assert len(s.stderr.strip().splitlines()) == 1
        assert "never arrived there" in s.stderr and "PE (" in s.stderr and "lane" in s.stderr
    else:
        assert s.returncode == 0, s.stderr


def test_strict_passes_where_every_pe_reads_its_inbox(tmp_path: pathlib.Path) -> None:
    """A model whose every PE reads only what its lanes delivered runs the
    same with --strict (strict raises only on reads outside an inbox)."""
    import sim_zoo
    from wsec.backends.sim import random_inputs, simulate

    sim_zoo.pitched_model(tmp_path / "m.onnx")
    prog = compile_bin(tmp_path / "m.onnx", tmp_path / "m.bin")
    res = simulate(prog, random_inputs(prog, 0), strict=True)
    assert all(not s.get("forwarded_pes") for s in res.kernel_stats.values())
    r = run_wsec("run", str(tmp_path / "m.bin"), "--strict", "--check", str(tmp_path / "m.onnx"))
    assert r.returncode == 0, r.stderr
    assert f"inboxes: {len(prog.kernels)} of {len(prog.kernels)} kernels" in r.stdout


def test_lane_running_past_its_sink_fails_naming_pe_color_edge(
        tiny_bin: tuple[pathlib.Path, Program], tmp_path: pathlib.Path) -> None:
    """A bundle whose lanes go on delivering past their sink's rectangle is a
    valid file (its geometry holds); only the simulator's trace can tell."""
    _, prog = tiny_bin
    bad = tmp_path / "bad_route.bin"
    for bi in range(len(prog.bundles)):
        if int(prog.bundles["sink"][bi]) < 0 or int(prog.bundles["flags"][bi]) & (
                BUNDLE_FROM_HOST | BUNDLE_TO_HOST):
            continue  # a bundle between two kernels
        for extra in range(1, 64):
            b = prog.bundles.copy()
            b["reach"][bi] += extra
            try:
                bad.write_bytes(write_program(replace(prog, bundles=b)))
                load_binary(str(bad))
            except BinaryError:
                continue
            r = run_wsec("run", str(bad))
            if r.returncode == 0:
                continue  # still inside the sink
            err = r.stderr.strip()
            color = int(b["color"][bi])
            value = prog.edges[int(b["edge"][bi])].value
            assert r.returncode == 1 and err.startswith("wsec: error: misrouted: ")
            assert "Traceback" not in err and "\n" not in err
            assert "PE (" in err and f"color {color}" in err and f"%{value}" in err
            return
    pytest.fail("no bundle could be made to run past its sink")


def test_swapped_weight_shards_fail_the_check(
        tiny_bin: tuple[pathlib.Path, Program], tmp_path: pathlib.Path) -> None:
    _, prog = tiny_bin
    bad = tmp_path / "swapped.bin"
    bad.write_bytes(write_program(_swap_two_shards(prog)))
    r = run_wsec("run", str(bad), "--check", str(EXAMPLE))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL" in r.stdout


def test_bad_input_name_is_a_user_error(tiny_bin: tuple[pathlib.Path, Program],
                                        tmp_path: pathlib.Path) -> None:
    path, _ = tiny_bin
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    r = run_wsec("run", str(path), "--input", f"nope={tmp_path / 'x.npy'}")
    assert r.returncode == 2 and "wsec: error: --input nope" in r.stderr
    r = run_wsec("run", str(tmp_path / "missing.bin"))
    assert r.returncode == 1 and "wsec: error: cannot read" in r.stderr


def test_compile_verify(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsec.cli import main

    out = tmp_path / "v.bin"
    rc = main([str(EXAMPLE), "-o", str(out), "-q", "--verify"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "check against onnxruntime" in text and "PASS" in text


def test_route_relay_option_gives_a_strict_binary(tmp_path: pathlib.Path) -> None:
    """`-p route{relay=1}` (opt-in) relays what a flat bundle's rows read
    outside their lanes: a fixture whose PEs read forwarded elements by
    default runs `--strict` and matches onnxruntime."""
    model = pathlib.Path(__file__).parent / "fixtures" / "cnn" / "misc_o11.onnx"
    out = tmp_path / "relay.bin"
    r = run_wsec(str(model), "-o", str(out), "-q", "-p", "route{relay=1}")
    assert r.returncode == 0, r.stderr
    r = run_wsec("run", str(out), "--strict", "--check", str(model))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout
