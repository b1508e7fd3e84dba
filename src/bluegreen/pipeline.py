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

import secrets
from datetime import datetime, timezone
from typing import Callable

from .cancel import CANCEL
from .config import Colour, Settings, other_colour
from .engine.canary import CanarySteps
from .engine.plan import DryRunPlan
from .engine.run import RunInfo, Status
from .engine.schema import SchemaChanges
from .errors import BluegreenError, ConfigError
from .events import Events
from .migrations import schema_state
from .report import Result
from .targets import Target
from .traffic import larger_share

__all__ = ["Pipeline", "RunInfo", "Status"]


class Pipeline(DryRunPlan, CanarySteps, SchemaChanges):
    """The commands, each a sequence of phases; the phases are the engine's concerns (engine/), inherited:
    the plan, the canary and the schema changes, and through them the release, the checks, the scale-down
    and the run itself."""

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
        self._holder = None
        self._pending_scale_down = None
        self._points_reached = set()

    # --- commands --------------------------------------------------------------------------

    def deploy(self, version: str, *, switch: bool = True, dry_run: bool = False) -> Result:
        self._begin("deploy", f"deploy {version} to {self.settings.app}/{self.settings.environment}")
        self._warn_long_ttl()
        self.result.version = version
        if dry_run:
            return self._plan(version, switch)
        with self._guarded(), self._locked(), self._outcome_hooks_after():
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
        self._warn_long_ttl()
        with self._guarded(), self._locked(), self._outcome_hooks_after():
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
        version = self._find_prepared(idle, expect_version)
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
        self._warn_long_ttl()
        with self._guarded(), self._locked(), self._outcome_hooks_after():
            self._refuse_during_canary()
            live, live_version = self._resolve_live()
            if live is None:
                raise BluegreenError("nothing is live yet: there is nothing to roll back")
            previous, version, running = self._rollback_target(live, live_version, expect_version)
            self.result.version = version  # only now: a refused rollback went to no version
            if not running:
                with self._phase(f"start {previous}") as p:
                    replicas = max(1, self.target.colour_state(live).replicas)
                    self.target.scale(previous, replicas)
                    p.detail = f"version {version}, {replicas} replica(s)"
            self._wait_ready(previous)
            self.result.preview_url = self.target.preview_url(previous)
            if force:
                self.events.warning(f"--force: switching without checking the previous colour ({previous}, "
                                    f"version {version}, which was live before)")
            else:
                self._smoke_checks(previous, version)
            self._release("rollback", previous, version, live, live_version, smoke_window=not force)
        self._scale_down_after_wait()
        return self.result

    def contract(self, *, retire_previous: bool = False) -> Result:
        """Run the pending contract, a release after its expand; refused while a colour that runs a version
        from before the expand can still be switched to (`retire_previous` stops it first)."""
        migrations = self.settings.migrations
        if migrations is None or migrations.contract is None:
            raise ConfigError(f"{self.settings.source}: migrations.contract is not configured: there is no contract to run")
        self._begin("contract", f"contract the schema of {self.settings.app}/{self.settings.environment}")
        with self._guarded(), self._locked(), self._outcome_hooks_after():
            live, live_version = self._resolve_live()
            self.result.idle_colour = other_colour(live) if live else None
            self._contract(live, live_version, retire_previous=retire_previous, required=True)
            self._finish("succeeded")
        return self.result

    def abort(self) -> Result:
        """A paused canary's new colour back to 0% in one change; the stable colour never stopped serving."""
        self._begin("abort", f"abort the canary of {self.settings.app}/{self.settings.environment}")
        with self._guarded(), self._locked(), self._outcome_hooks_after():
            self._abort_canary()
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

    # --- the strategy: chosen here, as the canary is built on the blue-green release ------

    def _go_live(self, action: str, to: Colour, version: str, live: Colour | None, live_version: str | None) -> None:
        """The strategy's way to live traffic: one switch, or the canary's steps."""
        if self.settings.strategy == "canary" and live is not None:
            self._canary(action, to, version, live, live_version)
        else:  # blue-green; or nothing is live yet: no stable colour to split with, the first release is whole
            self._release(action, to, version, live, live_version)
