"""One progress convention for every command: a bar on a terminal, one line per step (a round, a case, an
epoch) when the output is piped, nothing with ``--quiet``. Everything goes to stderr, so stdout stays clean for
results (``--json``).

Why: bars drawn into a pipe fill log files with carriage-return frames, and a silent command looks hung.
"""

from __future__ import annotations

import sys
import time
from typing import Literal, TextIO

from tqdm import tqdm

Mode = Literal["bar", "lines", "quiet"]


def progress_mode(quiet: bool = False, stream: TextIO | None = None) -> Mode:
    """'quiet' when asked, 'bar' on a terminal, 'lines' when stderr is a pipe or a file."""
    if quiet:
        return "quiet"
    stream = stream or sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


class Progress:
    """A bar for fractions (the engine's ``(fraction, stage)`` callbacks) or counted items (``advance``), and
    lines for the steps worth a line (``line``). In 'lines' mode only those lines are printed."""

    def __init__(self, mode: Mode, total: float = 1000, desc: str = "", unit: str = "", fraction: bool = True) -> None:
        self.mode = mode
        self.total = total
        self.fraction = fraction  # update() receives fractions of 1 (engine) rather than counts
        self._bar: tqdm | None = None
        self._desc = desc
        self._unit = unit
        self._t0 = time.perf_counter()

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            bar_format = "{l_bar}{bar}| {elapsed}<{remaining}" if self.fraction else None
            self._bar = tqdm(total=self.total, desc=self._desc, unit=self._unit, file=sys.stderr, dynamic_ncols=True,
                             bar_format=bar_format)
        return self

    def update(self, fraction: float, stage: str) -> None:
        """Engine callback: the real fraction of the work done and the current stage."""
        if self._bar is None:
            return
        self._bar.set_description_str(stage)
        self._bar.n = int(round(self.total * min(max(fraction, 0.0), 1.0)))
        self._bar.refresh()

    def advance(self, n: int = 1, **postfix) -> None:
        """Counted progress (training steps, cases)."""
        if self._bar is None:
            return
        self._bar.update(n)
        if postfix:
            self._bar.set_postfix(**postfix, refresh=False)

    def line(self, message: str, stream: TextIO | None = None) -> None:
        """A line worth keeping (to stderr, or ``stream``): above the bar on a terminal, alone in a pipe,
        nothing when quiet."""
        stream = stream or sys.stderr
        if self.mode == "quiet":
            return
        if self._bar is not None:
            self._bar.write(message, file=stream)
        else:
            print(message, file=stream, flush=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class CohortProgress:
    """Two bars on a terminal: the cases of the cohort, and the rounds of the case that runs (the engine's
    fractions). In a pipe, one line per case; nothing when quiet."""

    def __init__(self, mode: Mode, cases: int, rank: int = 0) -> None:
        self.mode = mode
        self._cases = Progress(mode, total=cases, desc="cases" if rank == 0 else f"rank {rank} cases", unit="case",
                               fraction=False)
        self._case = Progress(mode, desc="case")

    def __enter__(self) -> CohortProgress:
        self._cases.__enter__()
        self._case.__enter__()
        return self

    def case_update(self, fraction: float, stage: str) -> None:
        self._case.update(fraction, stage)

    def case_done(self) -> None:
        self._cases.advance()
        self._case.update(0.0, "next case")

    def line(self, message: str) -> None:
        self._cases.line(message)

    def __exit__(self, *exc) -> None:
        self._case.__exit__(*exc)
        self._cases.__exit__(*exc)
