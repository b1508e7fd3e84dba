"""The canary: the new colour gets each step's share of the requests, the old one the rest, and the
gates (smoke checks and analysis through the live URL) hold for the step's pause; the 100% step is the
blue-green release (release.py). A failed gate or a cancellation sends the new colour back to 0% in one
change; a step `until promoted` ends the run paused, for `promote` to resume or `abort` to undo."""

from __future__ import annotations

import time

from ..cancel import CANCEL, Cancelled
from ..checks import smoke
from ..config import UNTIL_PROMOTED, CanaryStep, Colour, other_colour
from ..errors import BluegreenError
from ..state.base import Release
from .release import BlueGreenRelease
from .run import _AfterSwitchFailure


class CanarySteps(BlueGreenRelease):
    """Built on the release: the last step is the blue-green release, and a failed gate goes back its way."""

    def _canary(
        self, action: str, to: Colour, version: str, old: Colour, old_version: str | None, first: int = 0,
    ) -> None:
        """Walk the steps from `first`: `to` gets the step's weight, `old` the rest, then the gates hold.
        A failed gate or a cancellation sends `to` back to 0% in one change; a step `until promoted` ends
        the run as paused; the 100% step is a blue-green release (verify, record, scale down)."""
        steps = self._steps()
        try:
            if first < len(steps) - 1:  # before the first step, as before a switch
                self._preflight(to, version, analysed=self.settings.analysis is not None)
                self._hook("before_switch")
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

    def _abort_canary(self) -> None:
        """The paused canary's new colour to 0% in one change, and the record of it."""
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

    def _split_or_none(self) -> dict[Colour, int] | None:
        try:
            return self.target.weights()
        except BluegreenError:
            return None

    def _read_split(self, to: Colour) -> None:
        """The new colour's share as the router reports it when the run ends (after an abort: 0)."""
        if (split := self._split_or_none()) is not None:
            self.result.canary_weight = split.get(to)
