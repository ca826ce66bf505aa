"""A terminal progress bar (tqdm) that takes the engine's (fraction, stage) callbacks."""

from __future__ import annotations

import sys

from tqdm import tqdm


class ProgressBar:
    """Shows a real fraction done and the stage name on a terminal; silent when not a TTY or disabled."""

    def __init__(self, disable: bool = False) -> None:
        self.disable = disable or not sys.stderr.isatty()
        self._bar: tqdm | None = None

    def __enter__(self) -> ProgressBar:
        self._bar = tqdm(total=1000, disable=self.disable, file=sys.stderr, unit="", bar_format="{l_bar}{bar}| {elapsed}<{remaining}")
        return self

    def update(self, fraction: float, stage: str) -> None:
        if self._bar is None or self.disable:
            return
        self._bar.set_description_str(stage)
        self._bar.n = int(round(1000 * fraction))
        self._bar.refresh()

    def write(self, message: str) -> None:
        if self._bar is not None and not self.disable:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
