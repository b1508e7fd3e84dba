"""The narrow interface every router implements: what moves live traffic between the colours.

A router owns one value (a proxy's map entry or weighted service, a Kubernetes Service selector or
HTTPRoute, a load balancer's listener, a DNS record) and answers from the thing itself, never from a
cache, which colour that value sends traffic to. The value is seen as weights, the percent of new
requests each colour gets: a blue-green switch is {to: 100, other: 0}, and a canary step is any split,
on the routers that can split (`weighted`).

A router implements `read`, `write` and `raw_switch_command`, and where it has more to say `applied`,
`reachable`, `check` and `prepare`; `switch` and `set_weights` (one change, read back, within a deadline)
are the same for all. Proxies share more (listen, manage, a process): routers/proxy.py.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import ClassVar

from pydantic import BaseModel

from ..config import Colour
from ..errors import TargetError
from ..traffic import Weights, all_to, check_weights, describe, larger_share

POLL = 0.01  # seconds between read-backs while an asynchronous router applies a change


class RouterState(BaseModel):
    """The router as `status` shows it: read from the router, never assumed."""

    name: str  # e.g. "haproxy at 127.0.0.1:8080"
    serving: bool
    weights: dict[str, int] | None = None  # percent of new requests per colour; None: nothing live yet
    detail: str = ""  # why it does not serve
    unreadable: str = ""  # what it holds when that is neither colour (someone edited it)


class Router(ABC):
    """What moves live traffic between the colours, in front of wherever they run."""

    kind: ClassVar[str]
    weighted: ClassVar[bool] = False  # can send a share of requests to each colour (canary steps)

    @property
    def name(self) -> str:
        """For messages: which router, where."""
        return self.kind

    @property
    def live_url(self) -> str | None:
        """Where live traffic enters, when the router knows (a proxy's listen address); None: the runtime's."""
        return None

    # --- the one value bluegreen owns: each router implements these ---------------------------

    @abstractmethod
    def read(self) -> Weights | None:
        """The split applied now, read from the router itself, never from a cache; None before the first
        release. A value that is neither colour (someone edited it) is a TargetError that says what was found."""

    @abstractmethod
    def write(self, weights: Weights) -> None:
        """One atomic change of the value; raises on failure (the caller reads back before deciding)."""

    @abstractmethod
    def raw_switch_command(self, to: Colour) -> str | None:
        """The shell command that makes the same switch without bluegreen, for the incident runbook."""

    def applied(self, weights: Weights) -> bool:
        """Whether new requests are routed by `weights` now. Synchronous routers: what they report."""
        return self.read() == weights

    def reachable(self) -> str | None:
        """None when bluegreen reaches the router, else why not (for `status`)."""
        return None

    def prepare(self) -> str | None:
        """At deploy start, before the checks: start what bluegreen runs itself (a managed proxy), so a router
        that cannot run fails the run before the test suite, not after it. A note when it repaired something."""
        return None

    def check(self) -> str | None:
        """Right before a switch: the router must serve, so a switch never goes out blind. A note when it had
        to repair something (a proxy restarted); TargetError naming the router when it cannot serve, so the
        run stops with live traffic untouched."""
        return None

    def reset(self) -> None:
        """`down`: nothing is live any more (the value bluegreen wrote is removed, where it is a file)."""

    def stop(self, purge: bool = False) -> str | None:
        """`down`: stop what bluegreen runs of the router itself; what was stopped, for the message (None:
        nothing). `purge` also removes what it keeps (a volume, a network)."""
        return None

    def cache_ttl(self) -> float | None:
        """How long clients may keep the old answer after a switch (a DNS record's TTL), in seconds; None: they
        follow at once. The engine keeps the old colour serving that long and reports when caches expire."""
        return None

    def switch_detail(self) -> str | None:
        """What the last change has to report beyond its duration (several proxies switched: the skew)."""
        return None

    def close(self) -> None:
        """Release clients and connections."""

    # --- what the engine calls ------------------------------------------------------------------

    def live(self) -> Colour | None:
        """The colour that takes live traffic: the one with the larger share (the stable one during a canary)."""
        weights = self.read()
        return larger_share(weights) if weights else None

    def weights(self) -> Weights | None:
        return self.read()

    def switch(self, to: Colour, deadline: float) -> None:
        """All new requests to `to`, in one change; returns once the router applies it."""
        self.set_weights(all_to(to), deadline)

    def set_weights(self, weights: Weights, deadline: float) -> None:
        """Each colour its share of new requests in one change (canary steps); returns once applied."""
        check_weights(weights)
        if not self.weighted and 100 not in weights.values():
            raise TargetError(f"router {self.kind} cannot split traffic between the colours (only switch it)")
        self.before_write()
        try:
            self.write(weights)
        except (OSError, TargetError) as exc:
            # The change may have gone through with its answer lost: the router decides, not the error.
            try:
                now = self.read()
            except (OSError, TargetError):
                now = None
            if now != weights:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise TargetError(f"router {self.name}: the switch failed: {reason}; live routing is unchanged"
                                  + (f" ({describe(now)})" if now else "")) from None
        while not self.applied(weights):
            if time.monotonic() > deadline:
                raise TargetError(f"router {self.name}: the change to {describe(weights)} was not applied "
                                  "before timeouts.switch")
            time.sleep(POLL)  # inside the shielded switch: bounded by the deadline, not by a cancel

    def before_write(self) -> None:
        """Inside set_weights, right before the write (a managed proxy that died is started again)."""

    def state(self) -> RouterState:
        """For `status`: whether the router serves and the split it applies; a garbled value is shown, not raised."""
        why = self.reachable()
        try:
            weights = self.weights()
        except TargetError as exc:
            return RouterState(name=self.name, serving=why is None, detail=why or "", unreadable=str(exc))
        return RouterState(name=self.name, serving=why is None, weights=weights, detail=why or "")
