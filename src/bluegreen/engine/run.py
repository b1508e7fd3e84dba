"""The run itself: the result it builds and checkpoints, its phases as events, the lock it holds,
and how it ends: every error a status and a one-line reason, never a traceback."""

from __future__ import annotations

import os
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

from ..cancel import CANCEL, Cancelled
from ..config import Colour, Settings
from ..errors import BluegreenError, LockHeldError
from ..events import Events
from ..migrations import SchemaState, pending_contract
from ..report import Phase, Result
from ..routers.base import RouterState
from ..runtimes.base import ColourState
from ..state.base import LockInfo, Release
from ..targets import Target


@dataclass
class RunInfo:
    """Who runs this and how to undo it; filled in by the CI adapter."""

    rollback_command: str  # the exact command that switches back after this run
    run_url: str | None = None  # the CI job, kept in the release history
    actor: str | None = None


@dataclass
class Status:
    app: str
    environment: str
    live: Colour | None
    live_url: str
    colours: list[ColourState]
    lock: LockInfo | None
    history: list[Release]
    router: RouterState | None = None
    schema: SchemaState | None = None  # with `migrations` configured: pending contract, last expand and contract


class _AfterSwitchFailure(BluegreenError):
    """Verification failed after live traffic moved."""


class RunContext:
    """The state of one run, which every concern reads and writes (set by `Pipeline.__init__`)."""

    settings: Settings
    target: Target
    events: Events
    run: RunInfo
    checkpoint: Callable[[Result], None]
    release_id: str
    result: Result  # this command's, from `_begin` on
    _started: float  # monotonic time of `_begin`: the duration in the report
    _holder: str | None  # our lock's holder id while we hold it

    def _begin(self, command: str, title: str) -> None:
        s = self.settings
        self.result = Result(
            command=command, status="running", app=s.app, environment=s.environment,
            rollback_command=self.run.rollback_command, release_id=self.release_id,
            raw_rollback_command=None, run_url=self.run.run_url, actor=self.run.actor,
            started_at=datetime.now(timezone.utc),
        )
        self._started = time.monotonic()
        self.events.started(title)
        self.checkpoint(self.result)

    def _finish(self, status: str, keep_reason: bool = False) -> Result:
        self.result.status = status  # type: ignore[assignment]
        self.result.duration = time.monotonic() - self._started
        if not keep_reason:
            self.result.reason = None
        if self.result.switched and self.result.previous_colour:
            self.result.raw_rollback_command = self.target.raw_rollback_command(self.result.previous_colour)
        if self.settings.migrations is not None:
            try:
                pending = pending_contract(self.target.state.history())
                self.result.pending_contract = pending.version if pending else None
            except Exception:  # an output, not a reason to change the outcome (the target may be what failed)
                pass
        return self.result

    def _record(
        self, action: str, outcome: str, colour: Colour | None, version: str, live: Colour | None,
        live_version: str | None, detail: str | None = None, completes: str | None = None,
        step: int | None = None, weight: int | None = None, went_live: bool | None = None,
    ) -> None:
        if went_live is None and colour is not None:  # the switch to `colour` stands (verified or not)
            went_live = self.result.switched and self.result.live_colour == colour
        release = Release(
            id=self.release_id, action=action, outcome=outcome, version=version, colour=colour,  # type: ignore[arg-type]
            previous_colour=live, previous_version=live_version, run_url=self.run.run_url, actor=self.run.actor,
            detail=detail, completes=completes, step=step, weight=weight, went_live=went_live,
        )
        try:
            self.target.state.record(release, self.settings.history_limit)
        except BluegreenError as exc:  # history is a record, not a reason to undo a good release
            self.events.warning(f"could not record the release in the history: {exc}")

    @contextmanager
    def _phase(self, name: str) -> Iterator[Phase]:
        phase = Phase(name=name, started_at=datetime.now(timezone.utc))
        self.result.phases.append(phase)
        self.events.phase_started(name)
        if self._holder is not None:
            try:
                self.target.state.note_progress(self._holder, self.result.command, name)
            except BluegreenError:
                pass  # a note for `status` after a crash; never a reason to stop
        started = time.monotonic()
        try:
            yield phase
        except Cancelled as stop:
            phase.status, phase.detail = "cancelled", str(stop)
            raise
        except BaseException as exc:
            phase.status = "failed"
            phase.detail = str(exc) or type(exc).__name__
            raise
        else:
            if phase.status == "running":
                phase.status = "succeeded"
        finally:
            phase.duration = time.monotonic() - started
            self.events.phase_finished(phase)
            self.checkpoint(self.result)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """A BluegreenError ends the run with a status and a one-line reason instead of a traceback."""
        try:
            yield
        except Cancelled as stop:
            if self.result.status != "running":
                return  # the outcome was decided before the signal: it stands
            self._mark_cancelled(stop)
            if self.result.switched:  # not expected: _release handles a cancellation after the switch
                self.result.reason = f"{stop} during {self.result.cancelled_in}; {self.result.live_colour} stays live"
            else:
                self.result.reason = f"{stop} during {self.result.cancelled_in}; live untouched"
            self._finish("cancelled", keep_reason=True)
        except LockHeldError as exc:
            self.result.reason = str(exc)
            self._finish("locked", keep_reason=True)
        except BluegreenError as exc:
            self.result.reason = str(exc)
            self._finish("failed", keep_reason=True)
        except Exception as exc:  # a bug must still end in a status, and say whether traffic moved
            if os.environ.get("BLUEGREEN_DEBUG"):
                traceback.print_exc()
            self.result.reason = f"internal error: {type(exc).__name__}: {exc} (BLUEGREEN_DEBUG=1 shows the traceback)"
            self._finish("rollback_failed" if self.result.switched else "failed", keep_reason=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the deploy lock for the whole run, renewing it so long waits do not let it expire."""
        ttl = self.settings.timeouts.lock
        holder = self.release_id + (f" ({self.run.run_url})" if self.run.run_url else "")
        stop = threading.Event()
        renewer = None

        def renew() -> None:
            while not stop.wait(max(1.0, ttl / 4)):
                try:
                    self.target.state.renew_lock(holder, ttl)
                except BluegreenError as exc:
                    self.events.warning(f"could not renew the deploy lock: {exc}")

        try:
            with CANCEL.shielded():  # the lock is taken whole and then released, or not taken at all
                with self._phase("lock") as p:
                    info = self.target.state.acquire_lock(holder, ttl)
                    p.detail = f"held until {info.expires_at:%H:%M:%S} UTC unless renewed"
                self._holder = holder
                self._record_interrupted(self.target.state.taken_over)
            renewer = threading.Thread(target=renew, name="lock-renewer", daemon=True)
            renewer.start()
            yield
        finally:
            stop.set()
            if renewer is not None:
                renewer.join(timeout=5)
            if self._holder is not None:
                self._holder = None
                with CANCEL.held():
                    try:
                        self.target.state.release_lock(holder)
                    except BluegreenError as exc:
                        self.events.warning(f"could not release the deploy lock (it expires by itself): {exc}")

    def _record_interrupted(self, previous: LockInfo | None) -> None:
        """The lock we took belonged to a run that was killed outright: say so, and keep it in the history."""
        if previous is None:
            return
        self.target.state.taken_over = None
        how = (f"its process {previous.pid} on {previous.host} is gone" if not previous.expired()
               else f"its lock expired at {previous.expires_at:%H:%M:%S} UTC")
        detail = f"interrupted during {previous.where()}: {how}"
        self.events.warning(f"took over the deploy lock of {previous.holder}, {detail}")
        action = previous.command if previous.command in ("deploy", "promote", "rollback", "contract") else "deploy"
        try:
            self.target.state.record(
                Release(id=previous.holder.split(" ")[0], action=action, outcome="interrupted",  # type: ignore[arg-type]
                        at=previous.renewed_at, detail=detail),
                self.settings.history_limit,
            )
        except BluegreenError as exc:
            self.events.warning(f"could not record the interrupted run in the history: {exc}")

    def _mark_cancelled(self, stop: Cancelled) -> None:
        stopped = next((p for p in reversed(self.result.phases) if p.status == "cancelled"), None)
        last = self.result.phases[-1].name if self.result.phases else "start"
        self.result.cancelled_in = stopped.name if stopped else last
        self.events.warning(f"{stop}: stopping (phase {self.result.cancelled_in})")
