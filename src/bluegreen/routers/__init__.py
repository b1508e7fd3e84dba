"""Routers: what switches live traffic between the colours, one module per kind, imported only when a
config uses it (so `bluegreen --help` loads none of them).

The proxies (Caddy, HAProxy, Envoy, Traefik, nginx) are made here from the colours' addresses; the
factory (targets/__init__.py) pairs them, or a router of its own kind (the Caddy container, the
Kubernetes Service selector and HTTPRoute), with the runtime.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from ..config import Colour, RouterModel
from ..remote import Shell
from ..traffic import Weights
from .base import Router

__all__ = ["Router", "Weights", "make_router"]


def make_router(config: RouterModel, *, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                shell: Shell | None = None) -> Router:
    """`upstreams`: colour -> the host:port of each of its servers, as the proxy dials them; `state_dir`: where a
    managed proxy keeps its files; `shell`: the host the proxy runs on (None: this machine). With a shell every
    file, socket and probe of the router goes through it (a load balancer reached over SSH)."""
    module, _, name = config.implementation.partition(":")  # the registry is the config model (config/routers.py)
    return getattr(import_module(module), name)(config, upstreams, state_dir, app, shell)
