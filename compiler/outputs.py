"""Every file a command writes goes through here: checked, staged, committed.

Why one place: a user's data must never be lost to a typo or a script. The
commands name their inputs (the model, its external-data files, --input
files, the --check model, a binary's weight files) and their outputs; an
output that resolves to an input or to another output of the same command
is refused before any work is done (symbolic and hard links count as the
same file). Outputs are staged in a temp file beside their destination and
renamed into place together when the command succeeds, so an error or a
Ctrl-C leaves every destination as it was — never a partial file, never a
stray temp file. /dev/null, FIFOs and other character devices are written
into (never replaced by a regular file); directories, sockets and block
devices are refused.

    with Outputs() as outs:
        outs.input("model.onnx", "the input model")
        outs.output("model.bin", "the binary")        # checked now
        ...
        outs.put("model.bin", data)                    # staged
    # committed here (discarded if the block raised)
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from types import TracebackType

from wsec.ir.errors import UsageError, WsecError

from . import signals

STDOUT = "-"  # an output path naming the standard output


class OutputError(UsageError):
    """An output path that would destroy data or cannot be written."""


@dataclass
class _File:
    path: str  # as the user gave it
    what: str  # "the binary", "the input model", ...
    key: tuple[int, int] | None  # (st_dev, st_ino) when the file exists
    real: str  # the resolved absolute path


@dataclass
class _Staged:
    out: _File
    tmp: str | None  # temp file beside the destination (regular files)
    data: bytes | None  # kept in memory for special files (written at commit)


def _identity(path: str) -> tuple[tuple[int, int] | None, str]:
    real = os.path.realpath(path)
    try:
        st = os.stat(path)
    except OSError:
        return None, real
    return (st.st_dev, st.st_ino), real


def _kind(mode: int) -> str | None:
    """A file kind an output may never be (None: it may)."""
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISBLK(mode):
        return "a block device"
    return None


class Outputs:
    """The inputs and outputs of one command (see the module docstring)."""

    def __init__(self, final: bool = False) -> None:
        self.final = final  # the command line: nothing runs after the commit
        self.inputs: list[_File] = []
        self.outputs: list[_File] = []
        self.staged: list[_Staged] = []

    # --- declaring --------------------------------------------------------
    def input(self, path: str | os.PathLike[str] | None, what: str) -> None:
        """A file the command reads (missing files are the reader's business)."""
        if path is None or os.fspath(path) == "":
            return
        path = os.fspath(path)
        key, real = _identity(path)
        f = _File(path, what, key, real)
        for o in self.outputs:
            _refuse_same(o, f)
        self.inputs.append(f)

    def output(self, path: str | os.PathLike[str], what: str) -> str:
        """Check an output path now, before any work; returns it. `-` is the
        standard output (written at commit, like a file, so an error or a
        Ctrl-C leaves nothing half-written there either)."""
        path = os.fspath(path)
        if path == "":
            raise OutputError(f"empty output file name for {what}: give a path")
        if path == STDOUT:
            other = next((o for o in self.outputs if o.path == STDOUT), None)
            if other is not None:
                raise OutputError(f"{what} and {other.what} cannot both go to the standard "
                                  f"output ('-'): give one of them a file name")
            self.outputs.append(_File(path, what, None, STDOUT))
            return path
        key, real = _identity(path)
        f = _File(path, what, key, real)
        for other in self.inputs + self.outputs:
            _refuse_same(f, other)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            raise OutputError(f"cannot write {what} '{path}': {e.strerror}") from None
        if st is not None:
            kind = _kind(st.st_mode)
            if kind:
                raise OutputError(f"cannot write {what} '{path}': it is {kind}; give a file "
                                  f"name")
        elif os.path.islink(path):  # a dangling symlink: it would be written through
            pass
        d = os.path.dirname(real) or "."
        if not os.path.isdir(d):
            raise WsecError(f"cannot write {what} '{path}': directory '{d}' does not exist")
        if not os.access(d, os.W_OK) and (st is None or stat.S_ISREG(st.st_mode)):
            raise WsecError(f"cannot write {what} '{path}': directory '{d}' is not writable")
        self.outputs.append(f)
        return path

    # --- staging ----------------------------------------------------------
    def put(self, path: str | os.PathLike[str], data: bytes | str) -> None:
        """Stage `data` for the declared output `path` (written at commit)."""
        path = os.fspath(path)
        out = next((o for o in self.outputs if o.path == path), None)
        if out is None:
            raise ValueError(f"output '{path}' was not declared")
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if out.path == STDOUT or _is_special(out.real):
            self.staged.append(_Staged(out, None, raw))
            return
        d = os.path.dirname(out.real) or "."
        with signals.deferred():  # a Ctrl-C between creating and recording it would leak it
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(out.real)}.",
                                       suffix=".wsec-tmp", dir=d)
            st = self._staged_entry(out, tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
            os.chmod(tmp, _mode_for(out.real))
        except OSError as e:
            self._drop(st)
            raise WsecError(f"cannot write {out.what} '{out.path}': {e.strerror}") from None
        except BaseException:
            self._drop(st)
            raise

    def _staged_entry(self, out: _File, tmp: str) -> _Staged:
        s = _Staged(out, tmp, None)
        self.staged.append(s)
        return s

    def _drop(self, s: _Staged) -> None:
        if s.tmp is not None:
            try:
                os.unlink(s.tmp)
            except OSError:
                pass
        if s in self.staged:
            self.staged.remove(s)

    # --- finishing --------------------------------------------------------
    def commit(self) -> None:
        """Rename every staged file into place (Ctrl-C waits until all are)."""
        with signals.deferred(self.final):
            try:
                for s in self.staged:
                    if s.tmp is not None:
                        os.replace(s.tmp, s.out.real)
                        s.tmp = None
                    elif s.out.path == STDOUT:
                        sys.stdout.flush()
                        sys.stdout.buffer.write(s.data or b"")
                        sys.stdout.buffer.flush()
                    else:
                        with open(s.out.real, "wb") as f:
                            f.write(s.data or b"")
            except OSError as e:
                raise WsecError(f"cannot write {s.out.what} '{s.out.path}': "
                                f"{e.strerror}") from None
            finally:
                self.discard()

    @property
    def to_stdout(self) -> bool:
        """Whether an output goes to the standard output (then messages for
        people go to the standard error)."""
        return any(o.path == STDOUT for o in self.outputs)

    def discard(self) -> None:
        for s in list(self.staged):
            self._drop(s)

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        if et is None:
            self.commit()
        else:
            self.discard()


def _is_special(real: str) -> bool:
    try:
        mode = os.stat(real).st_mode
    except OSError:
        return False
    return not stat.S_ISREG(mode)


def _mode_for(real: str) -> int:
    """An existing file keeps its permissions; a new one gets 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(real).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _same(a: _File, b: _File) -> bool:
    if a.key is not None and b.key is not None:
        return a.key == b.key
    return a.real == b.real


def _refuse_same(out: _File, other: _File) -> None:
    if not _same(out, other):
        return
    if out.path == other.path:
        how = ""
    elif os.path.islink(out.path) or os.path.islink(other.path):
        how = " (a symbolic link to the same file)"
    elif out.real == other.real:
        how = " (the same file by another name)"
    else:
        how = " (a hard link to the same file)"
    raise OutputError(f"{out.what} '{out.path}' is {other.what} '{other.path}'{how}; "
                      f"writing it would destroy it: give another output path")


def model_files(path: str) -> list[str]:
    """An ONNX model's external-data files (absolute), read without the data;
    [] when the file is not a readable model (its reader says why later)."""
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - not a model: the frontend reports it
        return []
    d = os.path.dirname(os.path.abspath(path))
    out = []
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        if loc and "\0" not in loc:
            full = os.path.join(d, loc)
            if full not in out:
                out.append(full)
    return out
