"""One run orchestrator for the panel and for scripts: it opens the session (every check happens before a node
is made), runs the jobs on a worker thread (the panel polls it from a timer) or synchronously (``run``), turns
each round into nodes as it arrives, and on any failure or cancel removes everything the run made.

The panel only shows the events ``poll`` returns; ``PancreasRSTNLogic.run`` uses ``run``. Both go through the
same ``_on_round`` / ``_finish`` / ``_abort`` steps.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

from PancreasRSTNLib.app.background_run import (
    BackgroundRun,
    Failed,
    Finished,
    JobOptions,
    Progress,
    RoundReady,
    iterate_jobs,
    user_message,
)

from .session import RoundNodes, RunResult, RunSession


@dataclass
class Progressed:
    fraction: float
    stage: str


@dataclass
class RoundShown:
    nodes: RoundNodes


@dataclass
class RunFinished:
    result: RunResult
    seconds: float


@dataclass
class RunFailed:
    message: str  # for the user
    kind: str  # "cancelled" | "out_of_memory" | "error"
    details: str = ""  # traceback, for the log


Event = Progressed | RoundShown | RunFinished | RunFailed


class RunController:
    """Runs of one Logic, one at a time."""

    def __init__(self, logic) -> None:
        self.logic = logic
        self.session: RunSession | None = None
        self._run: BackgroundRun | None = None

    @property
    def running(self) -> bool:
        return self._run is not None

    # ------------------------------------------------------------------ on a worker thread (the panel)
    def start(self, input_node, options, **job_kwargs) -> RunSession:
        """Check everything and start; raises (nothing made) when the input, options or models are wrong."""
        self.session = self.logic.begin_run(input_node, options)
        self._run = BackgroundRun(self.session.ct, self.session.jobs, self.session.config, options.device,
                                  resample=options.resample, **job_kwargs).start()
        return self.session

    def cancel(self) -> None:
        """Stop after the current batch; a RunFailed(kind="cancelled") event follows."""
        if self._run is not None:
            self._run.cancel()

    def poll(self) -> list[Event]:
        """What happened since the last poll, with the scene already updated."""
        if self._run is None:
            return []
        events: list[Event] = []
        for message in self._run.poll():
            if isinstance(message, Progress):
                events.append(Progressed(message.fraction, message.stage))
            elif isinstance(message, RoundReady):
                try:
                    events.append(RoundShown(self._on_round(message.organ, message.result)))
                except Exception as exc:  # noqa: BLE001 - turned into an event; the run stops
                    self._run.cancel()
                    events.append(self._abort(exc))
                    break
            elif isinstance(message, Finished):
                try:
                    events.append(RunFinished(self._finish(), message.seconds))
                except Exception as exc:  # noqa: BLE001
                    events.append(self._abort(exc))
                break
            elif isinstance(message, Failed):
                self._abort(None)
                events.append(RunFailed(message.message, message.kind, message.details))
                break
        return events

    # ------------------------------------------------------------------ synchronously (scripts, tests, self-test)
    def run(self, input_node, options, progress: Callable[[float, str], None] | None = None,
            cancel: Callable[[], bool] | None = None, on_round: Callable[[RoundNodes], None] | None = None,
            **job_kwargs) -> RunResult:
        """The whole run in this thread. On any error the scene is left unchanged and the error is raised."""
        self.session = session = self.logic.begin_run(input_node, options)
        try:
            job_options = JobOptions(resample=options.resample, **job_kwargs)  # the input is checked already
            for organ, result in iterate_jobs(session.ct, session.jobs, session.config, options.device,
                                              progress=progress, cancel=cancel, options=job_options):
                nodes = self._on_round(organ, result)
                if on_round is not None:
                    on_round(nodes)
            return self._finish()
        except BaseException:
            self._abort(None)
            raise

    # ------------------------------------------------------------------ the shared steps
    def _on_round(self, organ: str, result) -> RoundNodes:
        return self.session.add_round(organ, result)

    def _finish(self) -> RunResult:
        result = self.session.finish()
        self._run = None
        return result

    def _abort(self, exc: BaseException | None) -> RunFailed:
        if self.session is not None:
            self.session.abort()
        self._run = None
        if exc is None:
            return RunFailed("", "error")
        message, kind = user_message(exc)
        return RunFailed(message, kind, "".join(traceback.format_exception(exc)))
