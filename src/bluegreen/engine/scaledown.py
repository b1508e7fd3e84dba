"""The old colour after a release: it keeps running for scale_down_delay, so a rollback meanwhile is
one switch, then it is scaled down; a short delay is waited out by this run, without the lock."""

from __future__ import annotations

from ..cancel import CANCEL, Cancelled
from ..config import Colour
from ..errors import BluegreenError, LockHeldError
from .run import RunContext


class ScaleDown(RunContext):
    """The old colour's scale-down, planned by a release and applied after it."""

    _pending_scale_down: tuple[Colour, float] | None  # (old colour, seconds to wait)

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
