"""Run segmentations off the GUI thread: a worker thread feeds a queue that the GUI polls (Slicer: a QTimer).

No Qt and no MRML, so it is tested with pytest; it lives on the Slicer side because only the panel uses it and
its messages speak the panel's words (Device = CPU, Advanced). The worker never touches MRML: it only puts
messages on the queue; the main thread turns each round into nodes as it arrives. Cancelling sets an event
that the engine checks between batches (it then raises ``RunCancelled``).
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PancreasRSTNLib.errors import DeviceOutOfMemoryError, RSTNError, RunCancelled

if TYPE_CHECKING:
    import SimpleITK as sitk

    from PancreasRSTNLib.engine.config import CancelCallback, ProgressCallback, RunSettings
    from PancreasRSTNLib.engine.guidance import Guidance
    from PancreasRSTNLib.engine.segmentation import CheckedCT, GridRound


@dataclass(frozen=True)
class Job:
    """One organ to segment with the model folder that does it."""

    organ: str
    model_dir: Path


@dataclass
class ProgressMessage:
    """How far the run is (a queue message; ``PancreasRSTNLib.progress`` draws a terminal's bars instead)."""

    fraction: float  # of the whole run (all organs), in [0, 1]
    stage: str  # human readable, e.g. "Pancreas: fine round 2"
    organ: str


@dataclass
class RoundReady:
    organ: str
    result: GridRound  # one round, with its converters onto the input grid


@dataclass
class Finished:
    seconds: float


@dataclass
class Failed:
    message: str  # for the user, one paragraph
    kind: str  # "cancelled" | "out_of_memory" | "error"
    details: str = field(default="", repr=False)  # traceback, for the log only


Message = ProgressMessage | RoundReady | Finished | Failed


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's CUDA/MPS/CPU out-of-memory errors and our DeviceOutOfMemoryError."""
    if isinstance(exc, DeviceOutOfMemoryError):
        return True
    try:
        import torch

        if isinstance(exc, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    if isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def user_message(exc: BaseException) -> tuple[str, str]:
    """(message for the user, kind) for any exception the run may raise."""
    if isinstance(exc, RunCancelled):
        return str(exc), "cancelled"
    if is_out_of_memory(exc):
        return (
            "The device ran out of memory while segmenting. Try again with Device = CPU (Advanced), or set a "
            "smaller batch size (Advanced > Batch size, e.g. 4), or crop the CT to the abdomen first "
            f"(Crop Volume module). Details: {_first_line(exc)}",
            "out_of_memory",
        )
    if isinstance(exc, RSTNError):
        return str(exc), "error"
    return f"Unexpected error ({type(exc).__name__}: {exc}). See the Python console for details.", "error"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def iterate_jobs(image: sitk.Image | CheckedCT, jobs: list[Job], settings: RunSettings, *,
                 progress: ProgressCallback | None = None, cancel: CancelCallback | None = None,
                 guidance: Guidance | None = None) -> Iterator[tuple[str, GridRound]]:
    """Segment ``image`` for every job in turn, yielding (organ, round) as rounds finish; ``guidance`` (a
    person's prior and/or region of interest, on the CT's canonical grid) steers every job.

    The CT is checked once for the whole run (not per organ); a ``CheckedCT`` was checked by the caller.
    Progress fractions cover the whole run (organ i of n takes [i/n, (i+1)/n])."""
    from PancreasRSTNLib.engine.segmentation import CheckedCT, prepare_ct, segment_image
    from PancreasRSTNLib.io.model_package import load_model_package
    from PancreasRSTNLib.organs import get_organ

    ct = image if isinstance(image, CheckedCT) else prepare_ct(image, settings.allow_non_ct)
    n = max(1, len(jobs))
    for i, job in enumerate(jobs):
        display = get_organ(job.organ).display_name

        def organ_progress(fraction: float, stage: str, _i: int = i, _d: str = display) -> None:
            if progress is not None:
                progress((_i + min(max(fraction, 0.0), 1.0)) / n, f"{_d}: {stage}")

        if cancel is not None and cancel():
            raise RunCancelled()
        organ_progress(0.0, "loading model")
        package = load_model_package(job.model_dir, device="cpu")  # the engine moves it to the run device
        for result in segment_image(ct, package, settings.for_model_views(package.views), progress=organ_progress,
                                    cancel=cancel, guidance=guidance):
            yield job.organ, result
        organ_progress(1.0, "done")


class BackgroundRun:
    """A daemon thread running ``iterate_jobs``; the GUI calls ``poll()`` from a timer and ``cancel()``."""

    def __init__(self, image: sitk.Image | CheckedCT, jobs: list[Job], settings: RunSettings,
                 guidance: Guidance | None = None) -> None:
        self._queue: queue.Queue[Message] = queue.Queue()
        self._cancel = threading.Event()
        self._args = (image, list(jobs), settings)
        self._guidance = guidance
        self._thread = threading.Thread(target=self._work, name="PancreasRSTN-run", daemon=True)
        self.finished = False

    def start(self) -> BackgroundRun:
        self._thread.start()
        return self

    def cancel(self) -> None:
        """Ask the run to stop; a Failed(kind="cancelled") message follows within one batch."""
        self._cancel.set()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _work(self) -> None:
        t0 = time.perf_counter()
        image, jobs, settings = self._args
        current: list[str] = []

        def progress(fraction: float, stage: str) -> None:
            self._queue.put(ProgressMessage(fraction, stage, current[-1] if current else ""))

        try:
            for organ, result in iterate_jobs(image, jobs, settings, progress=progress, cancel=self._cancel.is_set,
                                              guidance=self._guidance):
                if not current or current[-1] != organ:
                    current.append(organ)
                self._queue.put(RoundReady(organ, result))
            self._queue.put(Finished(time.perf_counter() - t0))
        except BaseException as exc:  # noqa: BLE001 - everything must reach the GUI thread
            message, kind = user_message(exc)
            self._queue.put(Failed(message, kind, traceback.format_exc()))

    def poll(self, max_messages: int = 1000) -> list[Message]:
        """Messages since the last poll (non-blocking). After Finished or Failed, ``finished`` is True."""
        out: list[Message] = []
        while len(out) < max_messages:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                break
            out.append(msg)
            if isinstance(msg, Finished | Failed):
                self.finished = True
        return out

    def wait_messages(self, timeout: float = 60.0) -> Iterator[Message]:
        """Blocking iteration over messages until Finished/Failed (tests and scripts without a GUI loop)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("The background run did not finish in time.")
            try:
                msg = self._queue.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                continue
            yield msg
            if isinstance(msg, Finished | Failed):
                self.finished = True
                return
