"""The narrow interface every runtime implements: where the colours run.

A runtime answers what runs on a colour and where to reach it, and does few things: deploy a
version to a colour, wait until it serves, scale it. It knows nothing of routers: what moves
traffic is paired with it by the factory (targets/__init__.py), which hands the router what it
needs of the runtime as plain values (where each colour's servers are) or callables (the
version a Kubernetes colour runs).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from pydantic import BaseModel

from ..config import Colour


class ColourState(BaseModel):
    """What runs on one colour, as the runtime sees it now."""

    colour: Colour
    version: str | None = None  # None: nothing deployed
    running: bool = False  # serving (possibly scaled to zero replicas = False)
    ready: bool = False
    replicas: int = 0  # instances serving now
    detail: str = ""  # e.g. "pid 123, port 8081" or "2/2 replicas available"


class Runtime(ABC):
    """One environment's pair of colours, wherever they run."""

    @abstractmethod
    def colour_state(self, colour: Colour) -> ColourState: ...

    @abstractmethod
    def deploy(self, colour: Colour, version: str) -> None:
        """Put `version` on `colour` (which takes no live traffic) and start it; returns without waiting."""

    @abstractmethod
    def wait_ready(self, colour: Colour, deadline: float) -> None:
        """Block until `colour` serves (health path, rollout complete); NotReadyError with the reason at `deadline`
        (a time.monotonic() value)."""

    @abstractmethod
    def scale(self, colour: Colour, replicas: int) -> None:
        """0 stops the colour (keeping what it runs, so it can be started again); >0 starts it."""

    def scale_down(self, colour: Colour) -> None:
        """The old colour after a release, once its planned scale-down is due: stopped (or its idle size)."""
        self.scale(colour, 0)

    @abstractmethod
    def preview_url(self, colour: Colour) -> str:
        """A URL that reaches `colour` and only `colour`."""

    def preview_urls(self, colour: Colour) -> dict[str, str]:
        """Every place `colour` runs, by name (several hosts): the smoke checks and the test suite run against
        each. Default: one, the preview URL, named after the colour."""
        return {colour: self.preview_url(colour)}

    def live_url(self) -> str | None:
        """Where live traffic enters when the runtime knows better than its router (None: the router's)."""
        return None

    def follow_up_scale_down(self, delay: float) -> None:
        """A scale-down is planned `delay` seconds from now and this run will not wait for it: a runtime whose
        environment has no later run to apply it (the local demo) may arrange one. Default: the next run
        that takes the lock applies it."""

    def stop_colours(self) -> list[str]:
        """`down`: stop both colours; returns what was stopped, for the message."""
        raise NotImplementedError(f"{type(self).__name__} has no `down`")

    def close(self) -> None:
        """Release clients and connections."""
