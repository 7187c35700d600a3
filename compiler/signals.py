"""Ctrl-C (SIGINT): what the command line promises about it.

Why a module: an interrupted command must exit 130 with one line, leave no
new or clobbered file, and an interrupted ISPD run must still write its best
legal solution. Python turns SIGINT into KeyboardInterrupt wherever the
main thread happens to be; `wsec.outputs` stages every output so that an
interrupt anywhere before the commit changes nothing. Two moments need more:

- the commit itself (renaming staged files into place) runs with SIGINT
  deferred, so a set of outputs is renamed entirely or not at all;
- once the command line has committed its outputs it has nothing left to
  undo: SIGINT is ignored for the few instructions before exit, so an exit
  status of 130 always means "nothing was written".

Native solvers must not take SIGINT for themselves (CP-SAT would swallow it
and restore the default action, killing the process on the next one): the
placer sets `catch_sigint_signal = False`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


_SEEN: list[int] = []  # SIGINTs received while `watching`


def _interrupt(sig: int, frame: object) -> None:
    """Python's default (KeyboardInterrupt), remembered: a C extension
    loading when it lands may report it as its own error with no trace of
    the interrupt (numpy: "Importing the numpy C-extensions failed", from a
    KeyboardInterrupt inside PyCapsule_Import)."""
    _SEEN.append(sig)
    signal.default_int_handler(sig, frame)


@contextmanager
def watching() -> Iterator[None]:
    """The command line's SIGINT handling for the block: as Python's
    default, but `seen` tells afterwards whether a Ctrl-C came (so an error
    it caused anywhere is reported as the interrupt). The main thread only,
    and only where SIGINT is at Python's default."""
    _SEEN.clear()
    if not _main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    signal.signal(signal.SIGINT, _interrupt)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGINT) is _interrupt:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def seen() -> bool:
    """Whether a Ctrl-C came while `watching` (the last block)."""
    return bool(_SEEN)


@contextmanager
def deferred(final: bool = False) -> Iterator[None]:
    """Hold SIGINT off for the block. An interrupt received meanwhile is
    raised (KeyboardInterrupt) when it ends; with `final` (the command line's
    last act: its outputs are committed) SIGINT stays ignored until exit,
    so an exit status of 130 always means that nothing was written."""
    if not _main_thread():
        yield
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda sig, frame: got.append(sig))
    ok = False
    try:
        yield
        ok = True
    finally:
        if final and ok:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        else:
            signal.signal(signal.SIGINT, old)
            if got and old in (signal.default_int_handler, _interrupt):
                if old is _interrupt:
                    _SEEN.extend(got)
                raise KeyboardInterrupt
