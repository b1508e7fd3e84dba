"""`router.kind: all`: several routers of any kinds switched as one (two regions' load balancers, a DNS record
and the proxies behind it), all or nothing, by the same FanOut that switches a proxy on every host (hosts.py):
if one refuses, the ones that moved are switched back, and the report gives the skew between the first and the
last."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..config import AllRouters as AllConfig
from ..config import Colour
from ..remote import Shell
from .hosts import FanOut


class AllRouters(FanOut):
    kind = "all"

    def __init__(self, config: AllConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        from . import make_router  # the package builds each of them, as it builds one alone

        routers = {}
        seen: Counter[str] = Counter()
        for part in config.routers:
            seen[part.kind] += 1
            nth = seen[part.kind]
            # Each keeps its files where it would alone; a second of the same kind in a folder of its own.
            where = state_dir / f"{part.kind}-{nth}" if nth > 1 else state_dir
            router = make_router(part, upstreams=upstreams, state_dir=where, app=app, shell=shell)
            routers[router.name if router.name not in routers else f"{router.name} ({len(routers) + 1})"] = router
        super().__init__(routers, name=" + ".join(routers), members="routers")

    @property
    def live_url(self) -> str | None:
        """The first of them that has an address of its own (the environment's url overrides it)."""
        return next((r.live_url for r in self.routers.values() if r.live_url), None)
