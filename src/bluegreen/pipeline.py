"""The run, phase by phase, over a Target.

deploy:   lock -> resolve live -> [contract of the previous release, expand, smoke checks on live]
          -> deploy idle -> wait ready -> test suite -> smoke checks
          -> switch -> verify through the live URL -> (switch back on failure) -> record -> scale down old
contract: lock -> resolve live -> refuse unless nothing older can come back -> [retire previous] -> contract
canary:   deploy as above, then per step: weights {new: w, old: 100 - w} -> gates through the live URL
          (smoke checks, analysis) for the pause -> ... -> the 100% step as the switch above; a failed gate
          or a cancellation: the new colour to 0% in one change; a step `until promoted`: status paused
promote:  lock -> resolve live -> re-check the prepared idle colour -> switch -> verify -> record
          (a paused canary: re-check it -> its next step, or --full: the 100% step)
abort:    lock -> a paused canary's new colour to 0% in one change -> record
rollback: lock -> resolve live -> start the previous colour if stopped -> check it -> switch -> verify -> record

Live routing is touched only by `Target.switch`, and only after the idle colour is
ready and checked. Every wait has a deadline. Every phase is an event.

A cancelled run (SIGINT, SIGTERM: see cancel.py) obeys one rule per phase: before the
switch it stops what runs and leaves live untouched (status cancelled, exit 1); from the
switch until verification has passed it switches back to the colour that was live (exit 4);
while waiting to scale the old colour down, the release stands and the scale-down stays due.
"""

from __future__ import annotations

import os
import secrets
import shlex
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

from .cancel import CANCEL, Cancelled
from .checks import analysis, smoke
from .checks.suite import run_test_suite
from .config import UNTIL_PROMOTED, CanaryStep, Colour, MigrationLint, Settings, other_colour
from .errors import BluegreenError, CheckFailed, ConfigError, LockHeldError
from .events import Events
from .history import served_live, was_live
from .migrations import (
    Half, SchemaState, contract_refusal, lint_expand, old_versions, pending_contract, pending_contracts,
    rollback_refusal, run_half, schema_state,
)
from .report import CheckResult, Phase, Result
from .targets import ColourState, LockInfo, Release, Target
from .targets.base import RouterState, larger_share


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


CANCELLED_SWITCH_BACK = 5.0  # seconds a cancelled run waits for a router to apply the switch back


class _AfterSwitchFailure(BluegreenError):
    """Verification failed after live traffic moved."""


class Pipeline:
    def __init__(
        self, settings: Settings, target: Target, events: Events, run: RunInfo,
        checkpoint: Callable[[Result], None] | None = None,
    ) -> None:
        self.settings = settings
        self.target = target
        self.events = events
        self.run = run
        # Called with the result as it stands when the run begins and after every phase, so the
        # report on disk is never a previous run's, even when this one is killed outright.
        self.checkpoint = checkpoint or (lambda result: None)
        self.release_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + secrets.token_hex(3)
        self.result: Result
        self._holder: str | None = None  # our lock's holder id while we hold it
        self._pending_scale_down: tuple[Colour, float] | None = None  # (old colour, seconds to wait)

    # --- commands --------------------------------------------------------------------------

    def deploy(self, version: str, *, switch: bool = True, dry_run: bool = False) -> Result:
        self._begin("deploy", f"deploy {version} to {self.settings.app}/{self.settings.environment}")
        self.result.version = version
        if dry_run:
            return self._plan(version, switch)
        with self._guarded(), self._locked():
            self._refuse_during_canary()
            live, live_version = self._resolve_live()
            idle = other_colour(live) if live else "blue"
            self.result.idle_colour = idle
            self._schema_changes(version, live, live_version, idle)

            with self._phase(f"deploy {idle}") as p:
                self.target.deploy(idle, version)
                p.detail = f"version {version}"
            self._wait_ready(idle)
            self.result.preview_url = self.target.preview_url(idle)
            self._test_suite(idle, version)
            self._smoke_checks(idle, version)

            if not switch:
                with CANCEL.held():
                    self._record("prepare", "prepared", idle, version, live, live_version)
                    return self._finish("prepared")
            self._go_live("deploy", idle, version, live, live_version)
        self._scale_down_after_wait()
        return self.result

    def promote(self, *, expect_version: str | None = None, full: bool = False) -> Result:
        """Resume a paused canary at its next step (`full`: straight to 100%), or switch to the colour
        prepared by `deploy --no-switch`."""
        self._begin("promote", f"promote the prepared colour of {self.settings.app}/{self.settings.environment}")
        with self._guarded(), self._locked():
            if (paused := self._paused_canary()) is not None:
                self._resume_canary(paused, full, expect_version)
            else:
                self._promote_prepared(expect_version, full)
        self._scale_down_after_wait()
        return self.result

    def _promote_prepared(self, expect_version: str | None, full: bool) -> None:
        if full:
            raise BluegreenError("--full: no canary is paused, nothing changed (promote a prepared release without it)")
        live, live_version = self._resolve_live()
        idle = other_colour(live) if live else "blue"
        self.result.idle_colour = idle
        with self._phase("find prepared release") as p:
            prepared = next(iter(self.target.state.history()), None)
            state = self.target.colour_state(idle)
            if prepared is None or prepared.action != "prepare" or prepared.colour != idle:
                raise BluegreenError(f"nothing is prepared on {idle}: run `deploy --no-switch` first")
            if state.version != prepared.version or not state.running:
                raise BluegreenError(
                    f"{idle} no longer runs the prepared version {prepared.version} (it runs {state.version})"
                )
            if expect_version is not None and prepared.version != expect_version:
                raise BluegreenError(
                    f"the prepared version is {prepared.version}, not {expect_version}: a later deploy replaced it; "
                    "nothing changed"
                )
            p.detail = f"version {prepared.version} on {idle}"
        version = prepared.version or ""
        self.result.version = version
        self.result.preview_url = self.target.preview_url(idle)
        self._wait_ready(idle)
        self._smoke_checks(idle, version)
        self._go_live("promote", idle, version, live, live_version)

    def rollback(self, *, force: bool = False, expect_version: str | None = None) -> Result:
        """Switch back to the previous colour, but only to a release that was live and verified there:
        `force` skips that release's health checks, never that rule (a failed or only prepared release
        on the previous colour was never good; going "back" to it would be an outage)."""
        self._begin("rollback", f"roll back {self.settings.app}/{self.settings.environment}")
        with self._guarded(), self._locked():
            self._refuse_during_canary()
            live, live_version = self._resolve_live()
            if live is None:
                raise BluegreenError("nothing is live yet: there is nothing to roll back")
            if expect_version is not None and live_version != expect_version:
                raise BluegreenError(
                    f"version {live_version} is live, not {expect_version}: traffic moved since (a later release "
                    "or a rollback), and rolling back now would undo that; nothing changed"
                )
            previous = other_colour(live)
            self.result.idle_colour = previous
            state = self.target.colour_state(previous)
            if state.version is None:
                raise BluegreenError(f"{previous} has never been deployed: there is nothing to roll back to")
            history = self.target.state.history()
            if refusal := rollback_refusal(history, state.version):
                raise BluegreenError(f"{refusal}; {live} stays live with version {live_version}, nothing changed")
            if not was_live(history, previous, state.version):
                raise BluegreenError(
                    f"{previous} runs version {state.version}, which never went live (its release stopped before "
                    f"the switch, was switched back or was only prepared), so it is no rollback target, forced or not; {live} "
                    f"stays live with version {live_version}. {self._redeploy_hint(history, live_version)}"
                )
            self.result.version = state.version  # only now: a refused rollback went to no version
            if not state.running:
                with self._phase(f"start {previous}") as p:
                    replicas = max(1, self.target.colour_state(live).replicas)
                    self.target.scale(previous, replicas)
                    p.detail = f"version {state.version}, {replicas} replica(s)"
            self._wait_ready(previous)
            self.result.preview_url = self.target.preview_url(previous)
            if force:
                self.events.warning(f"--force: switching without checking the previous colour ({previous}, "
                                    f"version {state.version}, which was live before)")
            else:
                self._smoke_checks(previous, state.version)
            self._release("rollback", previous, state.version, live, live_version, smoke_window=not force)
        self._scale_down_after_wait()
        return self.result

    def _redeploy_hint(self, history: list[Release], live_version: str | None) -> str:
        """What to do instead of a rollback: deploy the newest version that served live traffic, other than the live one."""
        good = next((version for _, version in served_live(history) if version != live_version), None)
        if good is None:
            return "No other version served live traffic here: to change what runs, deploy a version."
        argv = shlex.split(self.run.rollback_command)
        if "rollback" in argv:  # the same command line, as deploy: same config, same environment
            argv[argv.index("rollback")] = "deploy"
        return (f"To go back to version {good}, the last other one that served live traffic, deploy it again: "
                f"{shlex.join([*argv, f'--version={good}'])}")

    def contract(self, *, retire_previous: bool = False) -> Result:
        """Run the pending contract, a release after its expand; refused while a colour that runs a version
        from before the expand can still be switched to (`retire_previous` stops it first)."""
        migrations = self.settings.migrations
        if migrations is None or migrations.contract is None:
            raise ConfigError(f"{self.settings.source}: migrations.contract is not configured: there is no contract to run")
        self._begin("contract", f"contract the schema of {self.settings.app}/{self.settings.environment}")
        with self._guarded(), self._locked():
            live, live_version = self._resolve_live()
            self.result.idle_colour = other_colour(live) if live else None
            self._contract(live, live_version, retire_previous=retire_previous, required=True)
            self._finish("succeeded")
        return self.result

    def status(self) -> Status:
        colours = [self.target.colour_state(c) for c in ("blue", "green")]
        history = self.target.state.history()
        router = self.target.router_state()  # read once: the live colour is the one with the larger share
        if router is None:
            live = self.target.live()
        else:  # nothing live yet, or a garbled value (the router line says what it holds)
            live = larger_share(router.weights) if router.weights else None
        return Status(
            app=self.settings.app,
            environment=self.settings.environment,
            live=live,
            live_url=self._public_url(),
            colours=colours,
            lock=self.target.state.read_lock(),
            history=history,
            router=router,
            schema=schema_state(history) if self.settings.migrations else None,
        )

    # --- the switch and what follows it ----------------------------------------------------

    def _release(
        self, action: str, to: Colour, version: str, live: Colour | None, live_version: str | None,
        smoke_window: bool = True, preflight: bool = True,
    ) -> None:
        """Switch to `to`, verify through the live URL, switch back if that fails; record; scale down.
        `smoke_window=False` (a forced rollback) checks only that the version answers; `preflight=False`:
        the analysis's queries were checked before (a canary's first step)."""
        analysed = self.settings.analysis is not None and action != "rollback"  # a rollback goes back, fast
        if analysed and preflight:
            with self._phase("analysis preflight") as p:  # a query Prometheus cannot answer: live untouched
                analysis.preflight(self.settings.analysis, self._query_values(to, version))
                p.detail = f"{len(self.settings.analysis.queries)} queries answered"
        if note := self.target.check_router():  # raises when the router is down for good: live untouched
            self.events.warning(note)
        try:
            with CANCEL.shielded():  # a switch is never cut in half; a signal meanwhile is raised after it
                with self._phase(f"switch {live or 'none'} -> {to}") as p:
                    try:
                        self.target.switch(to, time.monotonic() + self.settings.timeouts.switch)
                        p.detail = self.target.switch_detail() or p.detail
                    except Exception as exc:  # a bug too: whatever failed, the router says where traffic is
                        # A router that failed mid-change must be read, not assumed: carry on only if it
                        # moved, and let verification through the live URL decide whether it really serves.
                        if self.target.live() != to:
                            raise
                        p.detail = f"the router points at {to}, but: {exc}"
                        self.events.warning(f"switch: {exc}; the router points at {to}, verifying through the live URL")
                self.result.switched = True
                self.result.live_colour, self.result.idle_colour = to, live
            with self._phase("verify live"):
                self._verify(to, version, smoke_window)
            if analysed:
                with self._phase("analysis") as p:
                    p.detail = self._analyse(to, version)
        except _AfterSwitchFailure as failure:
            with CANCEL.held():  # switching back is the way out: a signal must not stop it half-way
                self._after_failed_verify(action, to, version, live, live_version, str(failure))
            return
        except Cancelled as stop:
            self._after_cancelled_switch(action, to, version, live, live_version, stop)
            return

        with CANCEL.held():  # verified: the release stands, whatever signal comes now
            self._record(action, "succeeded", to, version, live, live_version)
            self._finish("succeeded")
            if live is not None:
                self._plan_scale_down(live)

    def _go_live(self, action: str, to: Colour, version: str, live: Colour | None, live_version: str | None) -> None:
        """The strategy's way to live traffic: one switch, or the canary's steps."""
        if self.settings.strategy == "canary" and live is not None:
            self._canary(action, to, version, live, live_version)
        else:  # blue-green; or nothing is live yet: no stable colour to split with, the first release is whole
            self._release(action, to, version, live, live_version)

    # --- canary ----------------------------------------------------------------------------

    def _canary(
        self, action: str, to: Colour, version: str, old: Colour, old_version: str | None, first: int = 0,
    ) -> None:
        """Walk the steps from `first`: `to` gets the step's weight, `old` the rest, then the gates hold.
        A failed gate or a cancellation sends `to` back to 0% in one change; a step `until promoted` ends
        the run as paused; the 100% step is a blue-green release (verify, record, scale down)."""
        steps = self._steps()
        try:
            if first < len(steps) - 1:
                self._before_split(to, version)
            for index in range(first, len(steps) - 1):
                self._canary_step(index, to, version, old, old_version)
                if steps[index].pause == UNTIL_PROMOTED:
                    with CANCEL.held():
                        self._pause(action, index, to, version, old, old_version)
                    return
        except _AfterSwitchFailure as failure:
            with CANCEL.held():  # 0% on the new colour is the way out: a signal must not stop it half-way
                self._after_failed_verify(action, to, version, old, old_version, str(failure))
            return
        except Cancelled as stop:
            self._after_cancelled_switch(action, to, version, old, old_version, stop)
            return
        finally:
            self._read_split(to)
        self.result.canary_step = f"{len(steps)}/{len(steps)}"
        self._release(action, to, version, old, old_version, preflight=first == len(steps) - 1)
        self._read_split(to)

    def _steps(self) -> list[CanaryStep]:
        assert self.settings.canary is not None  # config validation: strategy canary has steps
        return self.settings.canary.steps

    def _before_split(self, to: Colour, version: str) -> None:
        """Before the first step, as before a switch: the analysis's queries answer, the router serves."""
        if self.settings.analysis is not None:
            with self._phase("analysis preflight") as p:
                analysis.preflight(self.settings.analysis, self._query_values(to, version))
                p.detail = f"{len(self.settings.analysis.queries)} queries answered"
        if note := self.target.check_router():
            self.events.warning(note)

    def _canary_step(self, index: int, to: Colour, version: str, old: Colour, old_version: str | None) -> None:
        """Set the weights of step `index` in one change, then hold its gates for its pause."""
        steps = self._steps()
        step = steps[index]
        with self._phase(f"canary step {index + 1}/{len(steps)}: {to} {step.weight}%") as p:
            with CANCEL.shielded():  # a change of weights is never cut in half
                self._set_weights({to: step.weight, old: 100 - step.weight}, old)
            self.result.canary_weight, self.result.canary_step = step.weight, f"{index + 1}/{len(steps)}"
            p.detail = f"{to} {step.weight}%, {old} {100 - step.weight}%; " + self._gates(step, to, version, old, old_version)

    def _set_weights(self, weights: dict[Colour, int], old: Colour) -> None:
        try:
            self.target.set_weights(weights, time.monotonic() + self.settings.timeouts.switch)
        except BluegreenError as exc:
            if not self.result.switched and self._split_or_none() == {old: 100, other_colour(old): 0}:
                raise  # nothing moved: a plain failure, live untouched
            raise _AfterSwitchFailure(f"setting the weights {weights}: {exc}") from None
        self.result.switched = True  # some live traffic reaches the new colour now

    def _gates(self, step: CanaryStep, to: Colour, version: str, old: Colour, old_version: str | None) -> str:
        """The smoke checks through the live URL (an answer from either version passes) for the step's pause,
        at least verify.window; with `analysis`, the analysis for the pause after them."""
        verify, pause = self.settings.verify, (step.pause if isinstance(step.pause, float) else 0.0)
        started = time.monotonic()
        analysed = self.settings.analysis is not None
        window = max(verify.window, 0.0 if analysed else pause)
        live_url = self._verify_url()
        results = smoke.hold(
            self.settings.smoke.checks, live_url, {"version": version, "colour": to}, window=window,
            interval=verify.interval, request_timeout=self.settings.smoke.request_timeout,
            also={"version": old_version or "", "colour": old},
        )
        self.result.checks.extend(results)
        if failed := next((c for c in results if not c.passed), None):
            raise _AfterSwitchFailure(f"canary gate: smoke check {failed.name!r} failed through {live_url}: {failed.detail}")
        detail = f"{len(results)} smoke check(s) held {window:g}s"
        if analysed and pause:
            detail += "; " + self._analyse(to, version, pause)
        CANCEL.wait(started + pause - time.monotonic())  # the step holds its whole pause
        return detail

    def _pause(self, action: str, index: int, to: Colour, version: str, old: Colour, old_version: str | None) -> None:
        """Hold at step `index` until a person decides: the lock is released, the split stays, `promote` resumes."""
        weight, steps = self._steps()[index].weight, len(self._steps())
        detail = (f"canary paused at step {index + 1}/{steps}: {to} {weight}%; `bluegreen promote` resumes it, "
                  "`bluegreen abort` sends it back to 0%")
        self._record(action, "paused", to, version, old, old_version, detail=detail, step=index, weight=weight)
        self.result.switched = False  # `old` still serves most requests: it stays the live colour and version
        self.result.reason = detail
        self._finish("paused", keep_reason=True)

    def _paused_canary(self) -> Release | None:
        """The newest release, when it is a canary paused at a step."""
        newest = next(iter(self.target.state.history()), None)
        return newest if newest is not None and newest.outcome == "paused" else None

    def _refuse_during_canary(self) -> None:
        """Both colours serve while the router splits: neither is idle, so nothing may be deployed over one.
        The router says whether it splits (the history is read only then: a deploy does not need it)."""
        split = self._split_or_none()
        if split is None or 100 in split.values():
            return
        held = " / ".join(f"{c} {w}%" for c, w in split.items())
        if (paused := self._paused_canary()) is None:
            raise BluegreenError(f"the router splits traffic ({held}), and no canary of bluegreen's is paused: "
                                 "send it all to one colour first; nothing changed")
        raise BluegreenError(f"a canary of version {paused.version} on {paused.colour} is paused ({held}): "
                             "`bluegreen promote` or `bluegreen abort` it first; nothing changed")

    def _resume_canary(self, paused: Release, full: bool, expect_version: str | None) -> None:
        """From a fresh process: check the paused canary is as it was left, then walk on from its next step."""
        to, old, version = paused.colour, paused.previous_colour, paused.version or ""
        assert to is not None and old is not None and paused.step is not None and paused.weight is not None
        self.result.version, self.result.previous_version = version, paused.previous_version
        self.result.live_colour = self.result.previous_colour = old
        self.result.idle_colour, self.result.live_url = to, self._public_url()
        with self._phase("find paused canary") as p:
            if expect_version is not None and version != expect_version:
                raise BluegreenError(f"the paused canary runs version {version}, not {expect_version}; nothing changed")
            state = self.target.colour_state(to)
            if state.version != version or not state.running:
                raise BluegreenError(f"{to} no longer runs the canary's version {version} (it runs {state.version})")
            split = self._split_or_none()
            if split != {to: paused.weight, old: 100 - paused.weight}:
                raise BluegreenError(f"the router holds {split}, not the paused canary's {to} {paused.weight}%: it "
                                     "was changed since; nothing changed")
            p.detail = f"version {version} on {to} at {paused.weight}%"
        self.result.switched = True  # this canary already moved some live traffic
        self.result.preview_url = self.target.preview_url(to)
        self._wait_ready(to)
        if self.settings.strategy != "canary":  # the config changed since the pause: the rest is one switch
            self._release("promote", to, version, old, paused.previous_version)
            self._read_split(to)
            return
        last = len(self._steps()) - 1
        self._canary("promote", to, version, old, paused.previous_version, last if full else min(paused.step + 1, last))

    def abort(self) -> Result:
        """A paused canary's new colour back to 0% in one change; the stable colour never stopped serving."""
        self._begin("abort", f"abort the canary of {self.settings.app}/{self.settings.environment}")
        with self._guarded(), self._locked():
            paused = self._paused_canary()
            if paused is None or paused.colour is None or paused.previous_colour is None:
                raise BluegreenError("no canary is paused: nothing to abort (after a release, use rollback)")
            to, old = paused.colour, paused.previous_colour
            self.result.version, self.result.previous_version = paused.previous_version, paused.version
            self.result.live_colour, self.result.previous_colour, self.result.idle_colour = old, to, to
            self.result.live_url = self._public_url()
            with CANCEL.held():
                with self._phase(f"abort: {to} {paused.weight}% -> 0%"):
                    self.target.switch(old, time.monotonic() + self.settings.timeouts.switch)
                self.result.canary_weight = 0
                self._record("abort", "succeeded", old, paused.previous_version or "", to, paused.version,
                             detail=f"canary of version {paused.version} on {to} aborted at {paused.weight}%",
                             went_live=True)
                self._finish("succeeded")
        return self.result

    def _split_or_none(self) -> dict[Colour, int] | None:
        try:
            return self.target.weights()
        except BluegreenError:
            return None

    def _read_split(self, to: Colour) -> None:
        """The new colour's share as the router reports it when the run ends (after an abort: 0)."""
        if (split := self._split_or_none()) is not None:
            self.result.canary_weight = split.get(to)

    def _plan_scale_down(self, old: Colour) -> None:
        """The old colour keeps running for scale_down_delay, so a rollback meanwhile is one switch."""
        delay = self.settings.scale_down_delay
        with self._phase(f"scale down {old}") as p:
            if delay == "never":
                p.status, p.detail = "skipped", "scale_down_delay: never keeps it running"
                return
            try:
                wait = self.target.schedule_scale_down(old, delay, self.release_id)
            except BluegreenError as exc:  # the release stands; an idle colour left running is cheap
                p.status, p.detail = "failed", str(exc)
                self.events.warning(f"could not scale {old} down: {exc}")
                return
            p.detail = f"in {delay:g}s" if delay else "now"
            if wait is not None:
                self._pending_scale_down = (old, wait)
                p.detail += " (this run waits, without holding the lock)"

    def _scale_down_after_wait(self) -> None:
        """Wait out a short scale-down delay with the lock released (a rollback in that window must not
        be blocked), then take the lock again to apply it; if another run holds it, that run applies it."""
        if self._pending_scale_down is None:
            return
        colour, wait = self._pending_scale_down
        self._pending_scale_down = None
        self.events.log(f"{colour} is scaled down in {wait:g}s; the lock is free meanwhile (a rollback can run)")
        try:
            CANCEL.wait(wait)
        except Cancelled as stop:  # the release stands; the scale-down stays due for the next run
            with self._phase(f"scale down {colour} (due)") as p:
                p.status, p.detail = "skipped", f"{stop}: the next run applies it"
            return
        with self._phase(f"scale down {colour} (due)") as p:
            holder = f"{self.release_id} (scale-down)"
            try:
                self.target.state.acquire_lock(holder, self.settings.timeouts.lock)
            except LockHeldError:
                p.status, p.detail = "skipped", "another run holds the lock; it applies the scale-down"
                return
            except BluegreenError as exc:
                p.status, p.detail = "failed", f"{exc}; the next run applies it"
                return
            try:
                self.target.apply_scale_downs()
            except BluegreenError as exc:
                p.status, p.detail = "failed", f"{exc}; the next run applies it"
            finally:
                self.target.state.release_lock(holder)

    def _after_failed_verify(
        self, action: str, to: Colour, version: str, live: Colour | None, live_version: str | None, reason: str
    ) -> None:
        if action == "rollback" or live is None or not self.settings.auto_rollback:
            why = (
                "auto_rollback is off" if not self.settings.auto_rollback
                else "there is no previous colour" if live is None
                else "this was the rollback"
            )
            self.result.reason = f"{reason}; {to} stays live ({why}): a human must act"
            self._record(action, "rollback_failed", to, version, live, live_version)
            self._finish("rollback_failed", keep_reason=True)
            return
        self._switch_back(action, to, version, live, live_version, reason, "rolled_back", "rollback_failed")

    def _after_cancelled_switch(
        self, action: str, to: Colour, version: str, live: Colour | None, live_version: str | None, stop: Cancelled
    ) -> None:
        """Cancelled during or after the switch, before verification passed: the new colour was never
        verified, so traffic goes back to where this run found it (whatever auto_rollback says)."""
        self._mark_cancelled(stop)
        reason = f"{stop} during {self.result.cancelled_in}"
        if not self.result.switched:  # the router did not move
            self.result.reason = f"{reason}; live untouched"
            self._finish("cancelled", keep_reason=True)
        elif live is None:
            self.result.reason = f"{reason}; {to} stays live, unverified (nothing was live before): a human must act"
            self._record(action, "cancelled", to, version, live, live_version, detail=self.result.reason)
            self._finish("cancelled", keep_reason=True)
        else:
            self._switch_back(action, to, version, live, live_version, f"{reason}, before {to} was verified",
                              "cancelled", "cancelled")

    def _switch_back(
        self, action: str, to: Colour, version: str, live: Colour, live_version: str | None, reason: str,
        outcome: str, outcome_if_stuck: str,
    ) -> None:
        """`to` went live and must not stay: switch back to `live`, the previous colour, still running."""
        budget = self.settings.timeouts.switch
        if CANCEL.requested:  # GitHub kills a step 10 s after its first signal: an asynchronous router gets 5 s
            budget = min(budget, CANCELLED_SWITCH_BACK)
        try:
            with self._phase(f"roll back {to} -> {live}"):
                self.target.switch(live, time.monotonic() + budget)
        except BluegreenError as exc:
            self.result.reason = f"{reason}; switching back to {live} failed too: {exc}"
            self._record(action, outcome_if_stuck, to, version, live, live_version, detail=self.result.reason)
            self._finish(outcome_if_stuck, keep_reason=True)
            return
        self.result.switched, self.result.switched_back = False, True
        self.result.live_colour, self.result.idle_colour = live, to
        self.result.reason = f"{reason}; switched back to {live} (version {live_version})"
        self._record(action, outcome, to, version, live, live_version, detail=self.result.reason)
        self._finish(outcome, keep_reason=True)

    def _mark_cancelled(self, stop: Cancelled) -> None:
        stopped = next((p for p in reversed(self.result.phases) if p.status == "cancelled"), None)
        last = self.result.phases[-1].name if self.result.phases else "start"
        self.result.cancelled_in = stopped.name if stopped else last
        self.events.warning(f"{stop}: stopping (phase {self.result.cancelled_in})")

    def _verify(self, colour: Colour, version: str, smoke_window: bool = True) -> None:
        verify = self.settings.verify
        live_url = self._verify_url()
        values = {"version": version, "colour": colour}
        if verify.version_check is not None:
            check = smoke.run_until_passing(
                verify.version_check, live_url, values, consecutive=verify.consecutive_successes,
                interval=verify.interval, deadline=time.monotonic() + verify.timeout,
                request_timeout=self.settings.smoke.request_timeout, kind="verify", label="live",
                failure_limit=verify.failure_limit, log=self.events.log,
            )
            self.result.checks.append(check)
            if not check.passed:
                raise _AfterSwitchFailure(f"verify: the new version does not answer through {live_url}: {check.detail}")
        if not smoke_window:
            return
        results = smoke.hold(
            self.settings.smoke.checks, live_url, values, window=verify.window, interval=verify.interval,
            request_timeout=self.settings.smoke.request_timeout,
        )
        self.result.checks.extend(results)
        failed = next((c for c in results if not c.passed), None)
        if failed:
            raise _AfterSwitchFailure(f"verify: smoke check {failed.name!r} failed through {live_url}: {failed.detail}")

    def _public_url(self) -> str:
        """Where users reach the app: the environment's `url`, else the router's own address."""
        return self.settings.url or self.target.live_url()

    def _verify_url(self) -> str:
        """Where verification and the canary gates look: what users reach (a CDN, DNS name or load balancer in
        front of the router), unless `verify.url` asks for another address (the router itself, bypassing a CDN)."""
        return self.settings.verify.url or self._public_url()

    def _query_values(self, colour: Colour, version: str) -> dict[str, str]:
        return {"colour": colour, "version": version, "app": self.settings.app, "environment": self.settings.environment}

    def _analyse(self, colour: Colour, version: str, duration: float | None = None) -> str:
        """Post-switch metric analysis (the old colour still runs): a failure switches back like a failed verify.
        `duration`: a canary step's pause; default analysis.duration."""
        settings = self.settings.analysis
        assert settings is not None
        duration = settings.duration if duration is None else duration
        results = analysis.analyse(settings, self._query_values(colour, version), duration, self.events.log)
        self.result.checks.extend(results)
        failed = [r for r in results if not r.passed]
        if failed:
            raise _AfterSwitchFailure("analysis: " + "; ".join(f"query {r.name!r}: {r.detail}" for r in failed))
        return f"{len(results)} queries within bounds for {duration:g}s"

    # --- database changes (migrations.py) --------------------------------------------------

    def _schema_changes(self, version: str, live: Colour | None, live_version: str | None, idle: Colour) -> None:
        """Before the idle colour is deployed: the previous release's contract (run_contract: on_next_release),
        this release's expand, then the smoke checks through the live URL: the live version must still work."""
        migrations = self.settings.migrations
        if migrations is None:
            return
        if migrations.lint is not None and migrations.expand is not None:
            self._lint(migrations.lint, version, idle)
        if migrations.contract and migrations.run_contract == "on_next_release":
            self._contract(live, live_version, retire_previous=True, required=False)
        if migrations.expand is None:
            return
        with self._phase("expand") as p:
            check = self._run_half("expand", version, idle, live, live_version)
            p.detail = check.detail
            if not check.passed:
                raise CheckFailed(f"expand {check.detail}; nothing deployed, live untouched (see its output in the log)")
        if live is not None and live_version is not None:
            try:
                self._smoke_checks(live, live_version, live=True)
            except CheckFailed as exc:
                raise CheckFailed(
                    f"after the expand, the live version {live_version} on {live} fails: {exc}; the expand is not "
                    "backwards compatible: nothing deployed, traffic untouched"
                ) from None

    def _lint(self, lint: MigrationLint, version: str, idle: Colour) -> None:
        """squawk on the expand's SQL, before anything changes: a dangerous statement stops the run."""
        with self._phase("lint expand") as p:
            values = {"version": version, "colour": idle}
            findings, checked = lint_expand(lint, base_dir=self.settings.base_dir, values=values)
            for finding in findings:
                self.events.log(f"squawk: {finding}")
            blocking = [f for f in findings if f.blocking]
            p.detail = f"{checked} file(s), {len(blocking)} blocking and {len(findings) - len(blocking)} other finding(s)"
            if blocking:
                more = f" (and {len(blocking) - 1} more, in the log)" if len(blocking) > 1 else ""
                raise CheckFailed(f"lint: {blocking[0]}{more}; nothing ran, live untouched")

    def _contract(
        self, live: Colour | None, live_version: str | None, *, retire_previous: bool, required: bool,
    ) -> None:
        """The contracts of the pending expands, oldest first, if nothing that needs an old schema can come back.
        `required` (the contract command): a refusal fails the run; else (on_next_release) they wait."""
        history = self.target.state.history()
        pending = pending_contracts(history)
        if not pending:
            if required:
                with self._phase("contract") as p:
                    p.status, p.detail = "skipped", "no expand is waiting for its contract"
            return
        idle = self.target.colour_state(other_colour(live)) if live else None
        old = set().union(*(old_versions(expand, history) for expand in pending))
        for expand in pending:  # all are checked before any runs: either all may run, or none
            refusal = contract_refusal(expand, history, live, live_version, None if retire_previous else idle)
            if refusal is not None:
                if required:
                    raise BluegreenError(f"contract refused: {refusal}; nothing changed")
                with self._phase("contract") as p:
                    p.status, p.detail = "skipped", f"not now: {refusal}"
                self.events.warning(f"the contract of release {expand.version} stays pending: {refusal}")
                return
        if idle is not None and idle.running and idle.version in old:
            with self._phase(f"retire {idle.colour}") as p:
                self.target.scale(idle.colour, 0)
                p.detail = f"stopped version {idle.version}, which needs the schema the contract removes"
        for expand in pending:
            assert expand.version is not None
            self.result.version = expand.version
            with self._phase("contract") as p:
                check = self._run_half("contract", expand.version, live or "blue", completes=expand.id)
                p.detail = f"of release {expand.version}: {check.detail}"
                if not check.passed:
                    raise CheckFailed(f"contract of release {expand.version} {check.detail}; it stays pending "
                                      "(see its output in the log)")

    def _run_half(
        self, half: Half, version: str, colour: Colour, live: Colour | None = None, live_version: str | None = None,
        completes: str | None = None,
    ) -> CheckResult:
        """Run the expand or the contract command and record it in the history, whatever its outcome."""
        assert self.settings.migrations is not None
        env = {
            "BLUEGREEN_MIGRATION": half,
            "BLUEGREEN_VERSION": version,
            "BLUEGREEN_APP": self.settings.app,
            "BLUEGREEN_ENVIRONMENT": self.settings.environment,
        }
        values = {"version": version, "colour": colour, "python": sys.executable}
        outcome, detail = "cancelled", "cancelled: the command was stopped; the schema may be half changed"
        try:
            check = run_half(half, self.settings.migrations, base_dir=self.settings.base_dir, values=values, env=env,
                             log=self.events.log)
            outcome, detail = ("succeeded" if check.passed else "failed"), check.detail
        finally:
            with CANCEL.held():
                self._record(half, outcome, None, version, live, live_version, detail=detail, completes=completes)
        self.result.checks.append(check)
        return check

    # --- phases before the switch ----------------------------------------------------------

    def _resolve_live(self) -> tuple[Colour | None, str | None]:
        with self._phase("resolve live") as p:
            live = self.target.live()
            state = self.target.colour_state(live) if live else None
            live_version = state.version if state else None
            p.detail = f"{live} (version {live_version})" if live else "nothing live yet"
            if state is not None and not state.running:  # users get errors now: say so, and go on
                p.detail += f", not running: {state.detail}"
                self.events.warning(f"the live colour {live} is not running: {state.detail}")
        self.result.live_colour = self.result.previous_colour = live
        self.result.previous_version = live_version
        self.result.live_url = self._public_url()
        return live, live_version

    def _wait_ready(self, colour: Colour) -> None:
        with self._phase(f"wait ready {colour}"):
            self.target.wait_ready(colour, time.monotonic() + self.settings.timeouts.ready)

    def _test_suite(self, colour: Colour, version: str) -> None:
        suite = self.settings.test_suite
        if suite is None:
            return
        with self._phase("test suite") as p:
            urls = self.target.preview_urls(colour)
            for where, url in urls.items():  # each host in turn: a user's suite need not be safe to run twice at once
                env = {
                    "BLUEGREEN_PREVIEW_URL": url,
                    "BLUEGREEN_HOST": where,
                    "BLUEGREEN_COLOUR": colour,
                    "BLUEGREEN_VERSION": version,
                    "BLUEGREEN_APP": self.settings.app,
                    "BLUEGREEN_ENVIRONMENT": self.settings.environment,
                }
                values = {"version": version, "colour": colour, "python": sys.executable}
                check = run_test_suite(suite, base_dir=self.settings.base_dir, env=env, values=values,
                                       log=self.events.log)
                on = f" on {where}" if len(urls) > 1 else ""
                check.detail += on
                self.result.checks.append(check)
                p.detail = check.detail
                if not check.passed:
                    raise CheckFailed(f"test suite {check.detail}")
            if len(urls) > 1:
                p.detail = f"passed on each of {len(urls)} hosts"

    def _smoke_checks(self, colour: Colour, version: str, live: bool = False) -> None:
        """On the preview URL of `colour`; `live`: through the live URL (the live colour after an expand)."""
        cfg = self.settings.smoke
        if not cfg.checks:
            return
        with self._phase("smoke checks live" if live else "smoke checks") as p:
            # Every place the colour runs (each host of a servers target), all checks at once.
            urls = {"live": self._verify_url()} if live else self.target.preview_urls(colour)
            jobs = [(check, where, url) for where, url in urls.items() for check in cfg.checks]
            deadline = time.monotonic() + cfg.timeout
            values = {"version": version, "colour": colour}
            results = smoke.run_all(
                jobs,
                lambda job: smoke.run_until_passing(
                    job[0], job[2], values, consecutive=cfg.consecutive_successes, interval=cfg.interval,
                    deadline=deadline, request_timeout=cfg.request_timeout, same_failure_limit=cfg.failure_limit,
                    log=self.events.log,
                    label="live" if live else ("preview" if len(urls) == 1 else f"preview {job[1]}"),
                ),
            )
            self.result.checks.extend(results)
            passed = sum(r.passed for r in results)
            p.detail = f"{passed}/{len(results)} passed on {colour}" + (f" ({len(urls)} hosts)" if len(urls) > 1 else "")
            failed = next(((r, job) for r, job in zip(results, jobs) if not r.passed), None)
            if failed:
                result, (_, where, url) = failed
                on = f"{colour} on {where}" if len(urls) > 1 else colour
                raise CheckFailed(f"smoke check {result.name!r} failed on {on} ({url}): {result.detail}")

    def _plan(self, version: str, switch: bool) -> Result:
        with self._guarded():
            live, _ = self._resolve_live()
            idle = other_colour(live) if live else "blue"
            self.result.idle_colour = idle
            self.result.preview_url = self.target.preview_url(idle)
            steps = [f"deploy {version} to {idle}", f"wait until ready ({self.settings.timeouts.ready:g}s)"]
            migrations = self.settings.migrations
            if migrations and migrations.expand:
                steps[:0] = ["run the expand migration"] + ([f"smoke checks on live {live}"] if live else [])
            if migrations and migrations.contract and migrations.run_contract == "on_next_release":
                steps.insert(0, "run the pending contract, if any")
            if self.settings.test_suite:
                steps.append("run the test suite")
            if self.settings.smoke.checks:
                steps.append(f"run {len(self.settings.smoke.checks)} smoke check(s) on {idle}")
            if switch and self.settings.strategy == "canary" and live is not None:
                weights = " -> ".join(f"{step.weight}%" for step in self._steps())
                steps += [f"send {idle} {weights} of the requests, with gates at each step", "verify through the live URL"]
            elif switch:
                steps += [f"switch {live or 'none'} -> {idle}", "verify through the live URL"]
            self.result.plan = "would " + ", ".join(steps)
            return self._finish("planned")

    # --- plumbing --------------------------------------------------------------------------

    def _begin(self, command: str, title: str) -> None:
        s = self.settings
        self.result = Result(
            command=command, status="running", app=s.app, environment=s.environment,
            rollback_command=self.run.rollback_command, release_id=self.release_id,
            raw_rollback_command=None,
        )
        self.events.started(title)
        self.checkpoint(self.result)

    def _finish(self, status: str, keep_reason: bool = False) -> Result:
        self.result.status = status  # type: ignore[assignment]
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
