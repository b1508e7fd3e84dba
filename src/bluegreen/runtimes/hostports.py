"""What the local and docker runtimes share: each colour listens on its own host port, where a router
in front of them (a proxy) dials it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from ..config import Colour, Settings
from ..errors import NotReadyError
from ..remote import join_host
from .base import Runtime


class HostPortRuntime(Runtime):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.target  # a LocalTarget or DockerTarget: ports, host, health_path, router, state_dir
        self.state_dir: Path = settings.path(self.config.state_dir)
        self.ports: dict[Colour, int] = {"blue": self.config.ports.blue, "green": self.config.ports.green}
        own = getattr(self.config, "addresses", None)  # the local target can put each colour on its own address
        self.hosts: dict[Colour, str] = {c: getattr(own, c) if own else self.config.host for c in self.ports}

    def address(self, colour: Colour) -> str:
        return join_host(self.hosts[colour], self.ports[colour])

    def upstreams(self) -> dict[Colour, list[str]]:
        """What a proxy on this machine dials for each colour."""
        return {c: [self.address(c)] for c in self.ports}

    def preview_url(self, colour: Colour) -> str:
        return f"http://{self.address(colour)}"

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
