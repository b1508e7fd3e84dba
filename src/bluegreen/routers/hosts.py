"""Routers reached on other hosts: several switched as one (`FanOut`: a proxy on every app host, servers'
`router_host: each`), and one on a host of its own (`OnHost`: a load balancer reached over SSH).

Nothing here knows how a host is reached: the factory passes `each` (run a function for every router at once,
e.g. over the SSH pool, whose errors name each host that failed) and `by_hand` (how the runbook runs a router's
own command on its host, e.g. `ssh -p 22 deploy@lb1 '...'`).
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable, TypeVar

from ..config import Colour
from ..each import at_once
from ..errors import TargetError
from ..traffic import Weights
from .base import Router, RouterState

T = TypeVar("T")

# Runs fn(name) for every name at once; returns the results by name once all ended, else one TargetError that
# names each that failed ("app2: why; app3: why").
Each = Callable[[list[str], Callable[[str], Any]], dict[str, Any]]
ByHand = Callable[[str, str], str]  # (name, the router's own command) -> the command as a person runs it there


class FanOut(Router):
    """Several routers switched as one, all or nothing: each change goes to all at once, and if any fails, the
    ones that moved are switched back, so live traffic is never left half-switched. The switch reports the skew
    between the first router switched and the last."""

    kind = "fan-out"

    def __init__(self, routers: dict[str, Router], *, name: str, each: Each = at_once, by_hand: ByHand | None = None,
                 members: str = "proxies") -> None:
        self.routers = routers  # by name: a host, for a proxy on every host
        self._name = name  # e.g. "haproxy on 2 hosts"
        self.each = each
        self.by_hand = by_hand
        self.members = members  # what the routers are, for the switch detail
        self._switch_detail: str | None = None

    @property
    def name(self) -> str:
        return self._name

    @property
    def weighted(self) -> bool:  # type: ignore[override]
        return all(r.weighted for r in self.routers.values())

    def _on_all(self, fn: Callable[[Router], T]) -> dict[str, T]:
        return self.each(list(self.routers), lambda n: fn(self.routers[n]))

    def read(self) -> Weights | None:
        splits = self._on_all(lambda r: r.weights())
        # The routers normally agree; if a past failure left them apart, the most common split is taken as live
        # (status shows each router) and the next switch sets them all.
        counts = Counter(tuple(sorted(w.items())) if w else None for w in splits.values())
        most = counts.most_common(1)[0][0]
        return dict(most) if most else None  # type: ignore[arg-type]

    def write(self, weights: Weights) -> None:
        """Every router at once, without switching back (set_weights is the all-or-nothing change)."""
        self._on_all(lambda r: r.write(weights))

    def set_weights(self, weights: Weights, deadline: float) -> None:
        """Every router at once; if any fails, the routers that changed go back, and the error names each failure."""
        self._switch_detail = None

        def change(router: Router) -> tuple[Weights | None, float | None, str | None]:
            was = None
            try:  # a router that cannot even be read has not moved: it fails, and the others go back
                was = router.weights()
                router.set_weights(weights, deadline)
            except TargetError as exc:
                return was, None, str(exc)
            return was, time.monotonic(), None

        outcomes = self._on_all(change)
        failed = {n: why for n, (_, _, why) in outcomes.items() if why}
        if failed:
            moved = [n for n, (was, done, _) in outcomes.items() if done is not None and was and was != weights]
            self.each(moved, lambda n: self.routers[n].set_weights(outcomes[n][0], deadline + 5))
            why = {n: text.removeprefix(f"router {self.routers[n].name}: ") for n, text in failed.items()}  # named once
            raise TargetError("the switch failed on " + "; ".join(f"{n}: {text}" for n, text in why.items())
                              + (f"; switched {', '.join(moved)} back" if moved else "") + "; live routing is unchanged")
        times = [done for _, done, _ in outcomes.values() if done is not None]
        self._switch_detail = (f"{len(times)} {self.members} switched; skew {1000 * (max(times) - min(times)):.1f} ms "
                               "between the first and the last")

    def switch_detail(self) -> str | None:
        return self._switch_detail

    def cache_ttl(self) -> float | None:
        """The longest any of them lets clients keep the old answer (a DNS record among them)."""
        return max((t for t in (r.cache_ttl() for r in self.routers.values()) if t is not None), default=None)

    def raw_switch_command(self, to: Colour) -> str | None:
        commands = []
        for name, router in self.routers.items():
            command = router.raw_switch_command(to)
            if command is None:
                return None  # the runbook cannot switch them all without bluegreen
            commands.append(self.by_hand(name, command) if self.by_hand else command)
        return " && ".join(commands)

    def _notes(self, notes: dict[str, str | None]) -> str | None:
        return "; ".join(f"{n}: {note}" for n, note in notes.items() if note) or None

    def reachable(self) -> str | None:
        return self._notes(self._on_all(lambda r: r.reachable()))

    def prepare(self) -> str | None:
        return self._notes(self._on_all(lambda r: r.prepare()))

    def check(self) -> str | None:
        """Every router must serve; an error names each that cannot."""
        return self._notes(self._on_all(lambda r: r.check()))

    def state(self) -> RouterState:
        states = self._on_all(lambda r: r.state())
        weights = self.weights()
        apart = [f"{n}: {s.detail or s.unreadable or s.weights}" for n, s in states.items()
                 if not s.serving or s.unreadable or s.weights != weights]
        return RouterState(name=self.name, serving=all(s.serving for s in states.values()), weights=weights,
                           detail=("; ".join(apart) if apart else ""))

    def reset(self) -> None:
        self._on_all(lambda r: r.reset())

    def stop(self, purge: bool = False) -> str | None:
        stopped = self._on_all(lambda r: r.stop(purge))
        return ", ".join(s for s in stopped.values() if s) or None

    def close(self) -> None:
        for router in self.routers.values():
            router.close()


class OnHost(Router):
    """One router on another host (a load balancer reached over SSH): the router itself, but the runbook's
    command is run on that host (`by_hand`), and its value is read through `each`, so a failure names the host
    first, as a fan-out's does."""

    def __init__(self, router: Router, host: str, *, each: Each, by_hand: ByHand) -> None:
        self.router = router
        self.host = host
        self.each = each
        self.by_hand = by_hand

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.router.kind

    @property
    def weighted(self) -> bool:  # type: ignore[override]
        return self.router.weighted

    @property
    def name(self) -> str:
        return self.router.name

    @property
    def live_url(self) -> str | None:
        return None  # the proxy's own address is as its host sees it: the runtime knows where users enter

    def read(self) -> Weights | None:
        return self.each([self.host], lambda _: self.router.weights())[self.host]

    def write(self, weights: Weights) -> None:
        self.router.write(weights)

    def raw_switch_command(self, to: Colour) -> str | None:
        command = self.router.raw_switch_command(to)
        return self.by_hand(self.host, command) if command is not None else None

    def applied(self, weights: Weights) -> bool:
        return self.router.applied(weights)

    def set_weights(self, weights: Weights, deadline: float) -> None:
        self.router.set_weights(weights, deadline)

    def reachable(self) -> str | None:
        return self.router.reachable()

    def prepare(self) -> str | None:
        return self.router.prepare()

    def check(self) -> str | None:
        return self.router.check()

    def state(self) -> RouterState:
        return self.router.state()

    def reset(self) -> None:
        self.each([self.host], lambda _: self.router.reset())

    def stop(self, purge: bool = False) -> str | None:
        return self.router.stop(purge)

    def switch_detail(self) -> str | None:
        return self.router.switch_detail()

    def close(self) -> None:
        self.router.close()
