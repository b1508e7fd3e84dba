"""What the local and docker targets share: each colour listens on its own host port, and a router
(routers/: Caddy, HAProxy, Envoy, Traefik, nginx) in front of them sends live traffic to those ports."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ..config import Colour, Settings
from ..errors import NotReadyError, TargetError
from ..routers import Router, make_router
from .base import RouterState, Target


class HostPortTarget(Target):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.target  # a LocalTarget or DockerTarget: ports, host, health_path, router, state_dir
        self.state_dir: Path = settings.path(self.config.state_dir)
        self.ports: dict[Colour, int] = {"blue": self.config.ports.blue, "green": self.config.ports.green}
        upstreams = {c: [f"{self.config.host}:{p}"] for c, p in self.ports.items()}
        self.router = make_router(self.config.router, upstreams=upstreams, state_dir=self.state_dir, app=settings.app)
        self._router_notes: list[str] = []  # repairs made before the pipeline asked (at deploy start)

    def live(self) -> Colour | None:
        return self.router.live()

    def preview_url(self, colour: Colour) -> str:
        return f"http://{self.config.host}:{self.ports[colour]}"

    def live_url(self) -> str:
        return self.router.live_url

    def switch(self, to: Colour, deadline: float) -> None:
        self.router.switch(to, deadline)

    def weights(self) -> dict[Colour, int] | None:
        return self.router.weights()

    def set_weights(self, weights: dict[Colour, int], deadline: float) -> None:
        self.router.set_weights(weights, deadline)

    def ensure_router(self) -> None:
        """At deploy start: a router that is down and cannot be started fails the run before the test suite
        and the checks run, not after them; a restart is reported by the next check_router()."""
        note = self.router.check()
        if note:
            self._router_notes.append(note)

    def check_router(self) -> str | None:
        """Right before the switch (not inside it): a proxy restart may take seconds, and a proxy that
        cannot run must stop the run while live routing is untouched. The switch itself still starts
        a managed proxy that died in between (switching back after a failed verification needs it)."""
        notes, self._router_notes = [*self._router_notes, self.router.check()], []
        return "; ".join(n for n in notes if n) or None

    def router_state(self) -> RouterState:
        return read_router_state(self.router)

    def raw_rollback_command(self, to: Colour) -> str | None:
        return self.router.raw_switch_command(to)

    def check_running(self, colour: Colour) -> None:
        """Raise NotReadyError, with the reason and the end of its log, if `colour` has stopped."""
        raise NotImplementedError

    def wait_ready(self, colour: Colour, deadline: float) -> None:
        while True:
            self.check_running(colour)  # a crash ends the wait at once, not at the deadline
            failure = self.health(colour, timeout=1.0)
            if failure is None:
                return
            if time.monotonic() >= deadline:
                raise NotReadyError(f"{colour} not ready before the deadline: {failure}")
            time.sleep(0.1)

    def health(self, colour: Colour, timeout: float) -> str | None:
        """None when the health path answers 2xx, else why not."""
        url = self.preview_url(colour) + self.config.health_path
        try:
            response = httpx.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            return f"GET {url}: {type(exc).__name__}"
        return None if response.is_success else f"GET {url}: status {response.status_code}"


def read_router_state(router: Router) -> RouterState:
    """For `status`: whether the router serves and the split it applies; a garbled value is shown, not raised."""
    why = router.reachable()
    try:
        weights = router.weights()
    except TargetError as exc:
        return RouterState(name=router.name, serving=why is None, detail=why or "", unreadable=str(exc))
    return RouterState(name=router.name, serving=why is None, weights=weights, detail=why or "")
