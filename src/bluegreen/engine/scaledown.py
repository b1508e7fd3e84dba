"""The old colour after a release: it keeps running for scale_down_delay, so a rollback meanwhile is
one switch, then it is scaled down; a short delay is waited out by this run, without the lock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from ..cancel import CANCEL, Cancelled
from ..config import Colour
from ..errors import BluegreenError, LockHeldError
from ..report import Phase
from .run import RunContext

LONG_TTL = 300.0  # seconds: above this a record's TTL is a warning (the old colour runs that long after a switch)


def cache_margin(ttl: float) -> float:
    """Beyond the TTL: resolvers that count late, clients that fetched just before the switch."""
    return max(10.0, 0.1 * ttl)


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
            ttl = self.target.cache_ttl()
            margin = cache_margin(ttl) if ttl is not None else 0.0
            if ttl is not None and delay < ttl + margin:  # clients with the old answer still reach it
                self.events.warning(f"scale_down_delay {delay:g}s raised to {ttl + margin:g}s: clients may keep the old "
                                    f"DNS answer for its TTL ({ttl:g}s), so {old} keeps serving until resolver caches "
                                    f"expire, plus a {margin:g}s margin")
                delay = ttl + margin
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

    def _note_caches(self, phase: Phase) -> None:
        """After a switch of a DNS router: when the resolvers' caches of the old answer expire."""
        ttl = self.target.cache_ttl()
        if ttl is None:
            return
        at = datetime.now(timezone.utc) + timedelta(seconds=ttl)
        self.result.caches_expire = at.isoformat(timespec="seconds")
        phase.detail = (f"{phase.detail}; " if phase.detail else "") + (
            f"clients may keep the old answer until resolver caches expire at {at.strftime('%H:%M:%S')} UTC "
            f"(TTL {ttl:g}s)")

    def _warn_long_ttl(self) -> None:
        ttl = self.target.cache_ttl()
        if ttl is not None and ttl > LONG_TTL:
            self.events.warning(f"router {self.target.router.name}: TTL {ttl:g}s is above {LONG_TTL:g}s: after a switch "
                                f"clients keep the old answer up to {ttl:g}s, so the old colour keeps running that long "
                                "and a rollback takes as long to reach everyone; lower router.ttl")

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
            if CANCEL.requested:  # cancelled earlier (an after_verify hook stopped): the signal was raised already
                raise Cancelled(CANCEL.signal_name or "a signal")
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
