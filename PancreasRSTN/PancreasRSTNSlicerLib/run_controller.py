"""One run orchestrator for the panel and for scripts: it opens the session (every check happens before a node
is made), runs the jobs on a worker thread (the panel polls it from a timer) or synchronously (``run``), turns
each round into nodes as it arrives, and on any failure or cancel removes everything the run made.

The panel only shows the events ``poll`` returns; scripts, tests and the self-test call ``run``. Both go through
the same ``_begin`` / ``_on_round`` / ``_finish`` / ``_abort`` steps. The Logic is reached through ``RunLogic``, so
tests may hand in any object that answers it.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .background_run import (
    BackgroundRun,
    Failed,
    Finished,
    ProgressMessage,
    RoundReady,
    iterate_jobs,
    user_message,
)
from .session import RoundNodes, RunResult, RunSession

if TYPE_CHECKING:
    from PancreasRSTNLib.engine.guidance import Guidance
    from PancreasRSTNLib.engine.segmentation import CheckedCT

    from .background_run import Job
    from .guidance_nodes import GuidanceNodes
    from .logic import RunOptions
    from .scene import SceneContext


class RunLogic(Protocol):
    """What a run asks of the Logic: the scene, the checked input, and one job per organ."""

    context: SceneContext

    def validate_input(self, input_node: object, allow_non_ct: bool = False) -> CheckedCT: ...

    def resolve_jobs(self, organs: Sequence[str]) -> list[Job]: ...

    def build_guidance(self, ct: CheckedCT, input_node: object, nodes: GuidanceNodes | None) -> Guidance | None: ...


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

    def __init__(self, logic: RunLogic) -> None:
        self.logic = logic
        self.session: RunSession | None = None
        self._run: BackgroundRun | None = None

    @property
    def running(self) -> bool:
        return self._run is not None

    # ------------------------------------------------------------------ on a worker thread (the panel)
    def start(self, input_node, options, guidance: GuidanceNodes | None = None) -> RunSession:
        """Check everything and start; raises (nothing made) when the input, options, guidance (a segment to
        refine, an ROI) or models are wrong."""
        self.session = self._begin(input_node, options, guidance)
        self._run = BackgroundRun(self.session.ct, self.session.jobs, self.session.settings,
                                  self.session.guidance).start()
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
            if isinstance(message, ProgressMessage):
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
            guidance: GuidanceNodes | None = None) -> RunResult:
        """The whole run in this thread. On any error the scene is left unchanged and the error is raised."""
        self.session = session = self._begin(input_node, options, guidance)
        try:
            for organ, result in iterate_jobs(session.ct, session.jobs, session.settings, progress=progress,
                                              cancel=cancel, guidance=session.guidance):
                nodes = self._on_round(organ, result)
                if on_round is not None:
                    on_round(nodes)
            return self._finish()
        except BaseException:
            self._abort(None)
            raise

    # ------------------------------------------------------------------ the shared steps
    def _begin(self, input_node, options: RunOptions, guidance_nodes: GuidanceNodes | None = None) -> RunSession:
        """Check input, options, models and guidance, then open a session (it creates the run folder only)."""
        from PancreasRSTNLib.errors import OptionsError

        ct = self.logic.validate_input(input_node, options.allow_non_ct)
        options.run_settings()
        jobs = self.logic.resolve_jobs(options.organs)
        guidance = None
        if guidance_nodes is not None and not guidance_nodes.empty:  # a Logic is asked only when there is some
            if guidance_nodes.refine and len(jobs) > 1:
                raise OptionsError("A segment refines one organ: choose one organ to refine it as.")
            guidance = self.logic.build_guidance(ct, input_node, guidance_nodes)
        return RunSession(self.logic.context, input_node, ct, options, jobs, guidance, guidance_nodes)

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
