"""wsec.outputs: the output guard and the atomic commit every command uses,
and --check's treatment of NaN and infinities (issue 10)."""

from __future__ import annotations

import os
import pathlib
import stat
import threading

import numpy as np
import pytest
from conftest import EXAMPLE, run_wsec
from wsec.ir.errors import UsageError
from wsec.outputs import OutputError, Outputs
from wsec.run import compare


def test_an_output_that_is_an_input_is_refused_naming_both(tmp_path: pathlib.Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    os.symlink(model, tmp_path / "link.bin")
    os.link(model, tmp_path / "hard.bin")
    for path, how in ((model, ""), (tmp_path / "link.bin", "a symbolic link"),
                      (tmp_path / "hard.bin", "a hard link"),
                      (f"{tmp_path}/./m.onnx", "the same file by another name")):
        outs = Outputs()
        outs.input(model, "the input model")
        with pytest.raises(OutputError) as e:
            outs.output(path, "the binary")
        msg = str(e.value)
        assert f"the binary '{path}' is the input model '{model}'" in msg and how in msg
        assert isinstance(e.value, UsageError) and e.value.exit_code == 2
    assert model.read_bytes() == b"model"


def test_two_outputs_of_one_command_may_not_coincide(tmp_path: pathlib.Path) -> None:
    outs = Outputs()
    outs.output(tmp_path / "a.bin", "the binary")
    with pytest.raises(OutputError, match="the JSON report '.*a.bin' is the binary"):
        outs.output(str(tmp_path / "sub" / ".." / "a.bin"), "the JSON report")


def test_directories_sockets_and_block_devices_are_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="it is a directory"):
        Outputs().output(tmp_path / "d", "the binary")


def test_nothing_is_written_until_commit_and_nothing_left_on_error(
        tmp_path: pathlib.Path) -> None:
    out = tmp_path / "m.bin"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), Outputs() as outs:
        outs.output(out, "the binary")
        outs.put(out, b"new")
        assert out.read_bytes() == b"old"
        raise RuntimeError("a later stage failed")
    assert out.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["m.bin"]
    with Outputs() as outs:
        outs.output(out, "the binary")
        outs.put(out, b"new")
    assert out.read_bytes() == b"new" and sorted(os.listdir(tmp_path)) == ["m.bin"]


def test_permissions_and_symlinks_are_kept(tmp_path: pathlib.Path) -> None:
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    real.chmod(0o640)
    os.symlink("real.bin", tmp_path / "link.bin")
    with Outputs() as outs:
        outs.output(tmp_path / "link.bin", "the binary")
        outs.put(tmp_path / "link.bin", b"new")
    assert (tmp_path / "link.bin").is_symlink() and real.read_bytes() == b"new"
    assert stat.S_IMODE(real.stat().st_mode) == 0o640


def test_a_fifo_is_written_into_not_replaced(tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    r = run_wsec(str(EXAMPLE), "-o", str(fifo), "-q")
    reader.join(timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got and got[0][:4] == b"WSEC"


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_a_null_device_stays_a_device(tmp_path: pathlib.Path) -> None:
    """-o /dev/null, on a private copy of the device (the real one is never
    put at risk by a failing test)."""
    null = tmp_path / "null"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    r = run_wsec(str(EXAMPLE), "-o", str(null), "--report-json", str(tmp_path / "r.json"), "-q")
    assert r.returncode == 0, r.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["null", "r.json"]


def test_check_counts_nan_as_nan_and_equal_infinities_as_equal() -> None:
    ref = np.array([1.0, np.nan, np.inf, -np.inf, 2.0], np.float32)
    row = compare("y", ref.copy(), ref)
    assert row.ok and row.max_abs == 0.0
    assert "1 NaN as in the reference" in row.note and "2 Inf equal" in row.note
    for bad in ([1.0, 0.0, np.inf, -np.inf, 2.0], [1.0, np.nan, -np.inf, -np.inf, 2.0],
                [1.0, np.nan, np.inf, -np.inf, np.nan]):
        assert not compare("y", np.array(bad, np.float32), ref).ok
