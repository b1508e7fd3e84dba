"""The narrow interface every target implements, and the state it keeps.

A target answers few questions (which colour is live, what runs on a colour,
where to reach it) and does few things (deploy, wait until ready, scale,
switch). Its `state` keeps the deploy lock and the release history on the
target itself, so a rollback dispatched days later, from a fresh process,
needs no artifacts.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from ..config import Colour
from ..errors import TargetError


Weights = dict[Colour, int]  # percent of new requests per colour; the values add up to 100


def all_to(colour: Colour) -> Weights:
    return {c: (100 if c == colour else 0) for c in ("blue", "green")}


def larger_share(weights: Weights) -> Colour:
    """The colour that takes most new requests: the live one (the stable one during a canary; blue on a tie)."""
    return max(("blue", "green"), key=lambda c: weights.get(c, 0))


def check_weights(weights: Weights) -> None:
    """A programming error, not a user's: both colours, shares from 0 adding up to 100."""
    if sorted(weights) != ["blue", "green"] or sum(weights.values()) != 100 or min(weights.values()) < 0:
        raise ValueError(f"weights must give both colours a share adding up to 100, not {weights}")


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
        from .proc import start_time

        return start_time(self.pid) != self.pid_started

    def where(self) -> str:
        """`deploy, in phase 'test suite'`: what the holder was doing, as far as it said."""
        what = self.command or "a run"
        return what + (f", in phase {self.phase!r}" if self.phase else "")


def this_process() -> dict:
    """The LockInfo fields that identify the current process."""
    from .proc import start_time

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


class ColourState(BaseModel):
    """What runs on one colour, as the target sees it now."""

    colour: Colour
    version: str | None = None  # None: nothing deployed
    running: bool = False  # serving (possibly scaled to zero replicas = False)
    ready: bool = False
    replicas: int = 0  # instances serving now
    detail: str = ""  # e.g. "pid 123, port 8081" or "2/2 replicas available"


class RouterState(BaseModel):
    """The router as `status` shows it: read from the router, never assumed."""

    name: str  # e.g. "haproxy at 127.0.0.1:8080"
    serving: bool
    weights: dict[str, int] | None = None  # percent of new requests per colour; None: nothing live yet
    detail: str = ""  # why it does not serve
    unreadable: str = ""  # what it holds when that is neither colour (someone edited it)


class StateStore(ABC):
    """Lock and history, kept where the target lives."""

    # Set by acquire_lock when it replaced the lock of a run that was killed or vanished (the lock
    # expired, or its process is gone): the pipeline records that run as interrupted.
    taken_over: LockInfo | None = None

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


class Target(ABC):
    """One environment's pair of colours and the router in front of them."""

    state: StateStore

    @abstractmethod
    def live(self) -> Colour | None:
        """The colour the router sends traffic to, read from the router itself; None before the first release."""

    @abstractmethod
    def colour_state(self, colour: Colour) -> ColourState: ...

    @abstractmethod
    def deploy(self, colour: Colour, version: str) -> None:
        """Put `version` on `colour` (which takes no live traffic) and start it; returns without waiting."""

    @abstractmethod
    def wait_ready(self, colour: Colour, deadline: float) -> None:
        """Block until `colour` serves (health path, rollout complete); NotReadyError with the reason at `deadline`
        (a time.monotonic() value)."""

    @abstractmethod
    def scale(self, colour: Colour, replicas: int) -> None:
        """0 stops the colour (keeping what it runs, so it can be started again); >0 starts it."""

    @abstractmethod
    def preview_url(self, colour: Colour) -> str:
        """A URL that reaches `colour` and only `colour`."""

    def preview_urls(self, colour: Colour) -> dict[str, str]:
        """Every place `colour` runs, by name (several hosts): the smoke checks and the test suite run against
        each. Default: one, the preview URL, named after the colour."""
        return {colour: self.preview_url(colour)}

    @abstractmethod
    def live_url(self) -> str:
        """The URL the router serves live traffic on."""

    @abstractmethod
    def switch(self, to: Colour, deadline: float) -> None:
        """One atomic change of the router; returns once new requests reach `to`."""

    def switch_detail(self) -> str | None:
        """What the last switch or set_weights has to report (a switch made on several proxies: the skew)."""
        return None

    def weights(self) -> Weights | None:
        """The split the router applies now (percent of new requests per colour), read from the router; None
        before the first release. Default: all to the live colour (a router that cannot split)."""
        live = self.live()
        return all_to(live) if live else None

    def set_weights(self, weights: Weights, deadline: float) -> None:
        """Send each colour its share of new requests in one change (canary steps); returns once applied.
        Default: only whole switches (a router that cannot split refuses a split)."""
        to = [c for c, w in weights.items() if w == 100]
        if not to:
            raise TargetError(f"{type(self).__name__}: this router cannot split traffic between the colours")
        self.switch(to[0], deadline)

    def check_router(self) -> str | None:
        """Called right before a switch: make sure the router serves, so a switch never goes out blind.
        Returns a note when it had to repair something (a proxy restarted); raises TargetError when the
        router is not running and cannot be, so the run stops with live routing untouched. Default: nothing
        to check (the router is the platform's, e.g. a Kubernetes Service)."""
        return None

    def router_state(self) -> RouterState | None:
        """For `status`: the router, whether it serves and the split it applies. None: not a router of ours."""
        return None

    def schedule_scale_down(self, colour: Colour, delay: float, release_id: str) -> float | None:
        """Plan to stop `colour` in `delay` seconds, unless it is live again by then.

        Returns how long this run should wait before calling `apply_scale_downs()`; the pipeline
        waits outside the lock, so a rollback in that window is not blocked. None: nothing is left
        for this run (done at once, or left to a detached process or to the next run).
        Default: stop it at once."""
        self.scale(colour, 0)
        return None

    def apply_scale_downs(self) -> None:
        """Stop the colours whose planned scale-down is due and that are not live again."""

    def raw_rollback_command(self, to: Colour) -> str | None:
        """A command that switches back without bluegreen, for the incident runbook."""
        return None

    def stop_all(self, purge: bool = False) -> list[str]:
        """Stop everything this target started (the `down` command); returns what was stopped.
        `purge` also deletes the state it keeps (history, lock)."""
        raise NotImplementedError(f"{type(self).__name__} has no `down`")

    def close(self) -> None:
        """Release clients and connections."""
