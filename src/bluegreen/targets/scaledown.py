"""The one rule for the old colour after a release: it keeps running for `scale_down_delay`, so a
rollback meanwhile is one switch, then it is scaled down, unless it takes traffic again by then.

The plan is kept by the state store (beside the lock and the history), never only in a process: nothing
may outlive a CI step. A delay up to the runtime's `scale_down_wait` is waited out by the run itself
(without the lock); a longer one is applied by the next bluegreen run that takes the lock (or by a
follow-up the runtime arranges, for the local demo). A colour deployed to again, or that takes any share
of traffic again (a rollback, a canary), is never stopped by an old plan.
"""

from __future__ import annotations

import time
from datetime import timedelta

from ..config import Colour
from ..errors import LockHeldError, TargetError
from ..routers.base import Router
from ..runtimes.base import Runtime
from ..state.base import ScaleDownPlan, StateStore, utcnow


class ScaleDowns:
    def __init__(self, runtime: Runtime, router: Router, state: StateStore, wait: float) -> None:
        self.runtime, self.router, self.state = runtime, router, state
        self.wait = wait  # the longest delay a run waits out itself
        state.on_locked.append(self.apply_due)  # every run that takes the lock applies what is overdue

    def schedule(self, colour: Colour, delay: float, release_id: str) -> float | None:
        """Plan `colour`'s scale-down in `delay` seconds; returns how long this run should wait before calling
        apply_due() (outside the lock), or None when nothing is left for it."""
        self.state.plan_scale_down(colour, ScaleDownPlan(at=utcnow() + timedelta(seconds=delay), release=release_id))
        if delay <= 0:
            self.apply_due()
            return None
        if delay <= self.wait:
            return delay
        self.runtime.follow_up_scale_down(delay)
        return None

    def apply_due(self) -> None:
        """Stop each colour whose plan is due and that takes no traffic; forget plans of colours that do."""
        try:
            plans = self.state.scale_downs()
            due = [c for c, plan in plans.items() if plan.at <= utcnow()]
            weights = (self.router.weights() or {}) if due else {}
        except TargetError:
            return  # the next run tries again; never a reason to fail this one
        for colour in due:
            try:
                if weights.get(colour, 0) == 0:
                    self.runtime.scale_down(colour)
                self.state.drop_scale_down(colour)
            except TargetError:
                pass

    def apply_when_free(self, holder: str, patience: float) -> str:
        """For a follow-up process once the delay has passed: take the deploy lock, waiting while a run holds it
        (so it never races a deploy or a rollback), which applies what is due; then release it."""
        give_up = time.monotonic() + patience
        while True:
            try:
                self.state.acquire_lock(holder, ttl=60)
                break
            except LockHeldError:
                if time.monotonic() > give_up:
                    return "skipped: the lock stayed held; the next run applies the scale-down"
                time.sleep(2)
        self.state.release_lock(holder)
        return "applied the scale-downs that were due"

    def planned(self, colour: Colour) -> ScaleDownPlan | None:
        """For `status`; a store that cannot be read has nothing to say."""
        try:
            return self.state.scale_downs().get(colour)
        except TargetError:
            return None

    def cancel(self, colour: Colour) -> None:
        """`colour` is deployed to again: an old plan must not stop the new release."""
        if colour in self.state.scale_downs():
            self.state.drop_scale_down(colour)
