"""The state a target keeps where it lives: the deploy lock, the release history and the planned
scale-downs, so a rollback dispatched days later, from a fresh process, needs no artifacts.

One interface, three stores: files in a directory (or a Docker volume, or on a host over SSH,
state/files.py), and Kubernetes objects (a Lease and a ConfigMap, state/kubernetes.py).
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, Field

from ..config import Colour
from ..errors import TargetError


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class LockInfo(BaseModel):
    holder: str  # who: a deploy id, with the CI job URL or user@host
    acquired_at: datetime
    renewed_at: datetime
    expires_at: datetime
    # Where the holder runs and what it is doing, so a run killed outright (SIGKILL, a runner that
    # vanished) is recognised: on the same host its process is gone, elsewhere its lock expires.
    host: str | None = None
    pid: int | None = None
    pid_started: str | None = None  # the process's start time, so a reused pid is not taken for it
    command: str | None = None  # deploy, promote, rollback
    phase: str | None = None  # the phase it was in when it last said so

    def expired(self) -> bool:
        return utcnow() >= self.expires_at

    def holder_gone(self) -> bool:
        """The holder can no longer release it: it expired, or its process on this host has ended."""
        if self.expired():
            return True
        if self.host != socket.gethostname() or self.pid is None:
            return False
        from ..proc import start_time

        return start_time(self.pid) != self.pid_started

    def where(self) -> str:
        """`deploy, in phase 'test suite'`: what the holder was doing, as far as it said."""
        what = self.command or "a run"
        return what + (f", in phase {self.phase!r}" if self.phase else "")


def this_process() -> dict:
    """The LockInfo fields that identify the current process."""
    from ..proc import start_time

    return {"host": socket.gethostname(), "pid": os.getpid(), "pid_started": start_time(os.getpid())}


class Release(BaseModel):
    """One line of history: what happened to live traffic."""

    id: str
    action: Literal["deploy", "promote", "rollback", "prepare", "expand", "contract", "abort"]
    outcome: str  # a Result status: succeeded, prepared, rolled_back, failed...
    at: datetime = Field(default_factory=utcnow)
    version: str | None = None
    colour: Colour | None = None  # the colour this release made live (or prepared)
    previous_colour: Colour | None = None
    previous_version: str | None = None
    run_url: str | None = None  # the CI job that did it, when known
    actor: str | None = None
    detail: str | None = None  # e.g. why it was cancelled or where it was interrupted
    completes: str | None = None  # a contract: the id of the release whose expand it completes
    step: int | None = None  # a canary: the index of the step reached (in the canary's steps)
    weight: int | None = None  # a canary: the percent of requests the new colour got when the run ended
    # `colour` served all live traffic when the run ended (a switch that stood, verified or not); None: not
    # recorded (histories written before it was kept)
    went_live: bool | None = None


class ScaleDownPlan(BaseModel):
    """An old colour to stop once `at` has passed, unless it takes traffic again by then."""

    at: datetime
    release: str  # the release that planned it


class StateStore(ABC):
    """Lock, history and planned scale-downs, kept where the target lives.

    Hooks: `on_locked` callbacks run each time acquire_lock succeeds (overdue scale-downs are applied
    then), `on_recorded` ones with each release once it is in the history (a store's platform may mirror
    it, e.g. as annotations)."""

    # Set by acquire_lock when it replaced the lock of a run that was killed or vanished (the lock
    # expired, or its process is gone): the pipeline records that run as interrupted.
    taken_over: LockInfo | None = None

    def __init__(self) -> None:
        self.on_locked: list[Callable[[], None]] = []
        self.on_recorded: list[Callable[[Release], None]] = []

    def locked(self) -> None:
        """Called by acquire_lock once the lock is ours."""
        for callback in self.on_locked:
            callback()

    def recorded(self, release: Release) -> None:
        """Called by record once the release is in the history."""
        for callback in self.on_recorded:
            callback(release)

    @abstractmethod
    def acquire_lock(self, holder: str, ttl: float) -> LockInfo:
        """Take the lock, or take over an expired one; raise LockHeldError naming holder and since."""

    @abstractmethod
    def renew_lock(self, holder: str, ttl: float) -> None:
        """Push the expiry forward; raise TargetError when the lock is no longer ours."""

    def note_progress(self, holder: str, command: str, phase: str) -> None:
        """Record in the lock what its holder is doing, so `status` can say where a killed run stopped.
        Optional: a store that cannot afford a write per phase keeps only the expiry."""

    @abstractmethod
    def release_lock(self, holder: str) -> None:
        """Release the lock if we hold it; never fails on a missing lock."""

    @abstractmethod
    def read_lock(self) -> LockInfo | None: ...

    @abstractmethod
    def force_unlock(self) -> LockInfo | None:
        """Remove whoever's lock; returns what was removed."""

    @abstractmethod
    def history(self) -> list[Release]:
        """Releases, newest first."""

    @abstractmethod
    def record(self, release: Release, limit: int) -> None:
        """Add a release, keeping at most `limit` entries."""



    def purge(self, keep: Path) -> None:
        """`down --purge`: delete the lock, the history and the plans; refuse when that would delete `keep`
        (the config file). Default: a store on a platform whose objects are the user's keeps them."""
        raise TargetError("down --purge: this target's state is not bluegreen's to delete")

    # --- planned scale-downs (targets/scaledown.py decides; the store only keeps them) ----------

    @abstractmethod
    def scale_downs(self) -> dict[Colour, ScaleDownPlan]:
        """The planned scale-downs, by colour (an unreadable plan counts as none: the worst case is an idle
        colour left running)."""

    @abstractmethod
    def plan_scale_down(self, colour: Colour, plan: ScaleDownPlan) -> None:
        """Plan (or re-plan) the scale-down of `colour`."""

    @abstractmethod
    def drop_scale_down(self, colour: Colour) -> None:
        """Forget the plan for `colour` (done, or the colour takes traffic again); no error when there is none."""
