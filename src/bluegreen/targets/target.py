"""A target: one environment's pair of colours (a runtime), what moves traffic between them (a router)
and the state kept beside them (a state store), paired by the factory (targets/__init__.py).

The engine talks to this one object; it forwards each question to the part that knows the answer.
"""

from __future__ import annotations

from ..config import Colour, Settings
from ..routers.base import Router, RouterState
from ..runtimes.base import ColourState, Runtime
from ..state.base import StateStore
from ..traffic import Weights
from .scaledown import ScaleDowns


class Target:
    def __init__(self, settings: Settings, runtime: Runtime, router: Router, state: StateStore,
                 scale_down_wait: float) -> None:
        self.settings = settings
        self.runtime = runtime
        self.router = router
        self.state = state
        self.scale_downs = ScaleDowns(runtime, router, state, scale_down_wait)
        self._router_notes: list[str] = []  # repairs made at deploy start, reported by the next check_router()

    # --- where the colours run ------------------------------------------------------------------

    def colour_state(self, colour: Colour) -> ColourState:
        state = self.runtime.colour_state(colour)
        plan = self.scale_downs.planned(colour) if state.running else None
        if plan:
            state.detail += f", scale-down due {plan.at.isoformat(timespec='seconds')}"
        return state

    def deploy(self, colour: Colour, version: str) -> None:
        """A router that is down and cannot be started fails the run here, before the test suite and the
        checks run, not after them."""
        note = self.router.prepare()
        if note:
            self._router_notes.append(note)
        self.scale_downs.cancel(colour)
        self.runtime.deploy(colour, version)

    def wait_ready(self, colour: Colour, deadline: float) -> None:
        self.runtime.wait_ready(colour, deadline)

    def scale(self, colour: Colour, replicas: int) -> None:
        self.runtime.scale(colour, replicas)

    def preview_url(self, colour: Colour) -> str:
        return self.runtime.preview_url(colour)

    def preview_urls(self, colour: Colour) -> dict[str, str]:
        return self.runtime.preview_urls(colour)

    # --- what moves traffic ------------------------------------------------------------------

    def live(self) -> Colour | None:
        """The colour the router sends traffic to, read from the router itself; None before the first release."""
        return self.router.live()

    def weights(self) -> Weights | None:
        return self.router.weights()

    def live_url(self) -> str:
        url = self.runtime.live_url() or self.router.live_url
        assert url, f"{type(self.runtime).__name__} and {type(self.router).__name__}: neither knows the live URL"
        return url

    def check_router(self) -> str | None:
        """Right before the switch (not inside it): a proxy restart may take seconds, and a router that cannot
        serve must stop the run while live routing is untouched."""
        notes, self._router_notes = [*self._router_notes, self.router.check()], []
        return "; ".join(n for n in notes if n) or None

    def switch(self, to: Colour, deadline: float) -> None:
        self.router.switch(to, deadline)
        self.scale_downs.cancel(to)  # live again: a scale-down planned for it no longer applies

    def set_weights(self, weights: Weights, deadline: float) -> None:
        self.router.set_weights(weights, deadline)

    def switch_detail(self) -> str | None:
        return self.router.switch_detail()

    def cache_ttl(self) -> float | None:
        """How long clients may keep the old answer after a switch (a DNS record's TTL); None: they follow at once."""
        return self.router.cache_ttl()

    def router_state(self) -> RouterState:
        return self.router.state()

    def raw_rollback_command(self, to: Colour) -> str | None:
        return self.router.raw_switch_command(to)

    # --- after a release ---------------------------------------------------------------------

    def schedule_scale_down(self, colour: Colour, delay: float, release_id: str) -> float | None:
        return self.scale_downs.schedule(colour, delay, release_id)

    def apply_scale_downs(self) -> None:
        self.scale_downs.apply_due()

    def stop_all(self, purge: bool = False) -> list[str]:
        """`down`: the colours, then what bluegreen runs of the router; nothing is live any more."""
        stopped = self.runtime.stop_colours()
        for colour in self.state.scale_downs():  # while the router (which may keep them) still runs
            self.state.drop_scale_down(colour)
        router = self.router.stop(purge)
        if router:
            stopped.append(router)
        self.router.reset()
        if purge:
            self.state.purge(keep=self.settings.source)
        return stopped

    def close(self) -> None:
        self.runtime.close()
        self.router.close()
