"""The one root of every user-facing error, and the exit codes it maps to.

Why one root: the command line must tell a user's mistake (a message for
people, exit 1 or 2) from a bug in wsec (a 'please report' line, exit 70)
without knowing every module's exception classes. Every error a user can
cause derives from `WsecError`; anything else reaching the CLI is internal.

An error carries a one-line message that names the node, kernel or file,
the resource and the shortfall, and optionally a `hint`: what to change.

Exit codes (docs/user-guide.md):
    0   success
    1   an error in the input or a failed check (`--check` FAIL)
    2   a usage error (bad flag, option value, conflicting options)
    70  an internal error (a bug in wsec: please report it)
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

from collections.abc import Iterable

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 70  # EX_SOFTWARE of sysexits.h
EXIT_INTERRUPTED = 130


class WsecError(Exception):
    """A user-facing error: `str(e)` is the message, `e.hint` what to change."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str = "", hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def one_line(self) -> str:
        """The message (first line) and the hint, as one line."""
        lines = self.message.strip().splitlines()
        text = lines[0] if lines else type(self).__name__
        return f"{text} (hint: {self.hint})" if self.hint else text


class UsageError(WsecError):
    """A bad command line: unknown flag, bad option value, conflicting options."""

    exit_code = EXIT_USAGE


class PassError(WsecError):
    """A pass cannot do its job on this input (names kernel, resource, shortfall)."""


class PassOptionError(UsageError, PassError):
    """A pass option with a bad name or value (found when the pass is built)."""


class LayoutInfeasible(PassError):
    """No layout of the requested kind exists for this model on this target
    (SRAM, area, colors or placement run out). The only error auto mode
    answers by falling back to weight streaming."""


def did_you_mean(word: str, choices: Iterable[object]) -> str:
    """' (did you mean 'X'?)' for the closest of `choices` (names), or ''."""
    import difflib

    near = difflib.get_close_matches(word, [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else ""

