"""Progress for people at a terminal: what a long compile is doing.

Why a module: a compile that takes minutes must not look hung, but a script
piping wsec's output must see nothing extra. So progress goes to stderr,
only when stderr is a terminal, never with -q, and only once the command
has run for a while (2 s; the environment variable WSEC_PROGRESS_AFTER sets
it, in seconds): one line when each pass starts, and a running solver's
best figures (ISPD: Δt and wirelength, elapsed of the time limit) at most
once a second. `-v` adds a line per pass as it ends (its time and the notes
it left), terminal or not.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, TextIO

AFTER_S = 2.0
SOLVER_EVERY_S = 1.0


class Progress:
    def __init__(self, enabled: bool, verbose: bool = False, after: float = AFTER_S,
                 limit: float | None = None, started: float | None = None,
                 stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.verbose = verbose
        self.after = after
        self.limit = limit
        self.t0 = time.perf_counter() if started is None else started
        self.stream = stream if stream is not None else sys.stderr
        self.current: str | None = None
        self.shown: str | None = None  # the pass whose start line is out
        self.last_solver = -1e9
        self.notes_seen = 0
        self.lock = threading.Lock()
        self.timer: threading.Timer | None = None
        if enabled and after > 0:  # a long first pass: say so when the time comes
            self.timer = threading.Timer(max(0.0, after - self.elapsed()), self._late)
            self.timer.daemon = True
            self.timer.start()

    @classmethod
    def for_cli(cls, quiet: bool, verbose: bool = False, limit: float | None = None,
                started: float | None = None) -> Progress:
        try:
            after = float(os.environ.get("WSEC_PROGRESS_AFTER", AFTER_S))
        except ValueError:
            after = AFTER_S
        tty = sys.stderr.isatty()
        return cls(enabled=tty and not quiet, verbose=verbose and not quiet, after=after,
                   limit=limit, started=started)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def _print(self, text: str) -> None:
        with self.lock:
            try:
                print(text, file=self.stream, flush=True)
            except (OSError, ValueError):  # a closed terminal: progress is not worth an error
                self.enabled = self.verbose = False

    def _late(self) -> None:
        name = self.current
        if name is not None and self.shown != name and self.enabled:
            self.shown = name
            self._print(f"wsec: {name} ... ({self.elapsed():.1f} s)")

    def pass_event(self, name: str, seconds: float | None, ctx: Any = None) -> None:
        """The pass manager's observer: a pass starts (seconds None) or ends."""
        if seconds is None:
            self.current = name
            if ctx is not None and getattr(ctx, "progress", None) is None:
                ctx.progress = self.solver
            if self.enabled and self.elapsed() >= self.after:
                self.shown = name
                self._print(f"wsec: {name} ... ({self.elapsed():.1f} s)")
            return
        self.current = None
        if self.verbose:
            notes = list(getattr(ctx, "notes", []) or [])
            new, self.notes_seen = notes[self.notes_seen:], len(notes)
            extra = "".join(f"\n  {n}" for n in new)
            self._print(f"wsec: {name} done in {seconds:.2f} s ({self.elapsed():.1f} s "
                        f"elapsed){extra}")

    def solver(self, name: str, figures: dict[str, float]) -> None:
        """A solver's better layout: its figures, at most once a second."""
        if not self.enabled or self.elapsed() < self.after:
            return
        now = time.perf_counter()
        if now - self.last_solver < SOLVER_EVERY_S:
            return
        self.last_solver = now
        parts = []
        if "delta_t" in figures:
            parts.append(f"best Δt {figures['delta_t']:,.6g}")
        if "wirelength" in figures:
            parts.append(f"wirelength {figures['wirelength']:,.6g}")
        limit = f" / {self.limit:g} s" if self.limit else " s"
        self._print(f"wsec: {name}: {', '.join(parts)} ({self.elapsed():.1f}{limit})")

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
