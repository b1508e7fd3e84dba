"""Routers: what switches live traffic between the colours, one module per kind, imported only when a
config uses it (so `bluegreen --help` loads none of them).

A target outside Kubernetes is a runtime (where the colours run: local processes, docker
containers) plus one of these. The Kubernetes Service selector and HTTPRoute are routers of the
Kubernetes target itself (targets/kubernetes.py).
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from ..config import Colour, ProxyRouter
from ..remote import Shell
from .base import Router, Weights

__all__ = ["Router", "Weights", "make_router"]

# kind -> "module:class"
_ROUTERS = {
    "caddy": "bluegreen.routers.caddy:CaddyRouter",
    "haproxy": "bluegreen.routers.haproxy:HAProxyRouter",
    "envoy": "bluegreen.routers.envoy:EnvoyRouter",
    "traefik": "bluegreen.routers.traefik:TraefikRouter",
    "nginx": "bluegreen.routers.nginx:NginxRouter",
}


def make_router(config: ProxyRouter, *, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                shell: Shell | None = None) -> Router:
    """`upstreams`: colour -> the host:port of each of its servers, as the proxy dials them; `state_dir`: where a
    managed proxy keeps its files; `shell`: the host the proxy runs on (None: this machine). With a shell every
    file, socket and probe of the router goes through it (a load balancer reached over SSH)."""
    module, _, name = _ROUTERS[config.kind].partition(":")  # type: ignore[attr-defined]
    return getattr(import_module(module), name)(config, upstreams, state_dir, app, shell)
