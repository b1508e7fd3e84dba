"""The blue-green release: one switch to the checked colour, verification through the live URL, the
record, the old colour's scale-down; and the way back. A failed verification switches back (unless
auto_rollback is off, or there is nothing to go back to); a cancellation from the switch until
verification passed switches back whatever auto_rollback says. Also what promote and rollback check
before they switch: the prepared release, and the colour a rollback may go back to."""

from __future__ import annotations

import shlex
import time

from ..cancel import CANCEL, Cancelled
from ..config import Colour, other_colour
from ..errors import BluegreenError
from ..history import served_live, was_live
from ..migrations import rollback_refusal
from ..state.base import Release
from .checks import CheckPhases
from .hooks import HookPoints
from .run import _AfterSwitchFailure
from .scaledown import ScaleDown

CANCELLED_SWITCH_BACK = 5.0  # seconds a cancelled run waits for a router to apply the switch back


class BlueGreenRelease(CheckPhases, ScaleDown, HookPoints):
    """Built on the checks (verify, analysis through the live URL), the scale-down that follows a release and the
    hook points around the switch."""

    def _release(
        self, action: str, to: Colour, version: str, live: Colour | None, live_version: str | None,
        smoke_window: bool = True, preflight: bool = True,
    ) -> None:
        """Switch to `to`, verify through the live URL, switch back if that fails; record; scale down.
        `smoke_window=False` (a forced rollback) checks only that the version answers; `preflight=False`:
        the analysis's queries were checked before (a canary's first step)."""
        analysed = self.settings.analysis is not None and action != "rollback"  # a rollback goes back, fast
        self._preflight(to, version, analysed=analysed and preflight)
        self._hook("before_switch")  # the gate: its failure stops the run here, live untouched
        try:
            with CANCEL.shielded():  # a switch is never cut in half; a signal meanwhile is raised after it
                with self._phase(f"switch {live or 'none'} -> {to}") as p:
                    try:
                        self.target.switch(to, time.monotonic() + self.settings.timeouts.switch)
                        p.detail = self.target.switch_detail() or p.detail
                        if live is not None:  # clients had an answer to keep
                            self._note_caches(p)
                    except Exception as exc:  # a bug too: whatever failed, the router says where traffic is
                        # A router that failed mid-change must be read, not assumed: carry on only if it
                        # moved, and let verification through the live URL decide whether it really serves.
                        try:
                            moved = self.target.live() == to
                        except BluegreenError:  # unreadable now (a hand edit): the switch's own error says more
                            moved = False
                        if not moved:
                            raise
                        p.detail = f"the router points at {to}, but: {exc}"
                        self.events.warning(f"switch: {exc}; the router points at {to}, verifying through the live URL")
                self.result.switched = True
                self.result.live_colour, self.result.idle_colour = to, live
            self._hook("after_switch")
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
        self._hook("after_verify")

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
            with self._phase(f"roll back {to} -> {live}") as p:
                self.target.switch(live, time.monotonic() + budget)
                self._note_caches(p)
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

    def _find_prepared(self, idle: Colour, expect_version: str | None) -> str:
        """The version `deploy --no-switch` prepared on `idle`, if it still runs there and is the one expected."""
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
        return prepared.version or ""

    def _rollback_target(
        self, live: Colour, live_version: str | None, expect_version: str | None,
    ) -> tuple[Colour, str, bool]:
        """The previous colour, its version and whether it runs, if a rollback may go there (see `rollback`)."""
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
        return previous, state.version, state.running

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
