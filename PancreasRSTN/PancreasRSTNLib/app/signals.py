"""SIGTERM and SIGHUP end a run the way Ctrl-C does.

Why: schedulers (SLURM, Kubernetes), ``timeout`` and a closed terminal send SIGTERM or SIGHUP, not SIGINT. Python's
default for them is to die at once, which skips every ``except``/``finally`` and leaves staged outputs behind.
Turned into a ``KeyboardInterrupt`` (``Terminated``), they take the one cleanup path that Ctrl-C takes: what the
run made is removed, finished work is kept, and the message names the signal. The exit code is the shell's
convention, 128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

#: The signals handled like Ctrl-C (SIGHUP does not exist on Windows).
HANDLED = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None)


class Terminated(KeyboardInterrupt):
    """A termination signal, raised where the program was, like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, _frame: FrameType | None) -> None:
    for s in HANDLED:  # one interruption: a second signal must not break the cleanup the first one started
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


@contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Terminated`` in the main thread (elsewhere: no change)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def signal_name(exc: KeyboardInterrupt) -> str:
    """'SIGTERM', 'SIGHUP', or 'Ctrl-C' for a plain KeyboardInterrupt."""
    return signal.Signals(exc.signum).name if isinstance(exc, Terminated) else "Ctrl-C"


def exit_code(exc: KeyboardInterrupt) -> int:
    return 128 + (exc.signum if isinstance(exc, Terminated) else int(signal.SIGINT))
