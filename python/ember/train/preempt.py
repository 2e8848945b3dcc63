"""Stopping a run cleanly when asked to: a cluster's preemption sends SIGTERM, Ctrl-C sends SIGINT.

The first signal only sets a flag. The trainer finishes the optimizer step in progress, writes a
checkpoint and raises `Preempted`; `ember train` then exits with EXIT_PREEMPTED. Under torchrun
the flag rides on each step's loss all-reduce (no extra collective), so every rank stops after
the same step. A second signal does what it would have done without ember (SIGTERM kills,
SIGINT raises KeyboardInterrupt): a checkpoint being written is left as a temporary folder that
loading ignores, and the last complete one stays (a background save, --checkpoint.async_save,
is finished and published before the process exits).
"""

from __future__ import annotations

import os
import signal
import threading

# EX_TEMPFAIL (sysexits.h): a temporary failure, try again later. Not 128+N, which a shell also
# reports for a process killed by signal N.
EXIT_PREEMPTED = 75

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after `step`, with a checkpoint of that step."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class StopSignal:
    """Within `with StopSignal() as stop:`, the first SIGTERM/SIGINT sets `stop.received` (its
    name) and puts the previous handlers back, so a second one acts at once."""

    def __init__(self, verbose: bool = True):
        self.received: str | None = None
        self.verbose = verbose
        self._previous: dict = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():  # Python's rule for handlers
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        self._restore()
        if self.verbose:  # os.write: print() may be mid-write to the same stream
            os.write(
                2,
                f"\nember train: {self.received}: finishing this step, then writing a checkpoint (send it again to stop at once, without one)\n".encode(),
            )

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous = {}
