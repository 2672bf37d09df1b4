"""SIGTERM and SIGINT, the preemption signals: caught for the whole of a stage, so that a stop at any moment
(training, validation, weights writing, the report) ends with a state that `--resume` finishes.

While training, a signal only sets a flag: the loop finishes the step (or the validation) it is in, writes a
checkpoint and returns. In the report phase, which has no checkpoint to write, a signal interrupts at once
(`Stopped`): the report is built in a staging folder, so nothing half-written is published.
"""

from __future__ import annotations

import contextlib
import signal


class Stopped(BaseException):
    """A stop signal arrived where work can be abandoned (the report phase). BaseException: no `except
    Exception` on the way swallows it."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class StopSignals:
    def __init__(self):
        self.received: str | None = None
        self.interrupt = False  # raise Stopped in the handler instead of only recording the signal
        self._previous: dict = {}

    def _handler(self, signum, frame):
        self.received = signal.Signals(signum).name
        if self.interrupt:
            raise Stopped(self.received)

    @property
    def exit_code(self) -> int:
        """128 + the signal number, the shell's convention for a process stopped by a signal."""
        return 128 + int(signal.Signals[self.received]) if self.received else 0

    def __enter__(self) -> StopSignals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for sig, h in self._previous.items():
            signal.signal(sig, h)
        self._previous = {}

    @contextlib.contextmanager
    def interrupting(self):
        """Within this block a signal raises Stopped (one that arrived before it raises on entry)."""
        if self.received:
            raise Stopped(self.received)
        self.interrupt = True
        try:
            yield
        finally:
            self.interrupt = False
