"""The factory: a target is a runtime, a router and a state store, paired here from the config.

This is the one place that knows which kinds exist and which fit together. Each module is imported only
when a config uses it, so `bluegreen --help` loads none of them.
"""

from __future__ import annotations

import os
from importlib import import_module
from importlib.util import find_spec
from typing import Any

from ..config import RouterModel, Settings
from ..errors import ConfigError
from .target import Target

__all__ = ["Target", "check_installed", "make_target"]

# runtime kind -> the library it needs beyond the core, and the extra that installs it
_EXTRAS = {
    "kubernetes": ("lightkube", "kubernetes"),
    "servers": ("asyncssh", "servers"),
}


def check_installed(settings: Settings) -> None:
    """A kind whose library is missing is a config the installation cannot run: one line naming the extra."""
    kind = settings.target.kind
    if kind in _EXTRAS and find_spec(_EXTRAS[kind][0]) is None:
        library, extra = _EXTRAS[kind]
        raise ConfigError(
            f"{settings.source}: target kind {kind!r} needs {library}, which is not installed: "
            f"pip install 'bluegreen[{extra}]'"
        )
    router = getattr(settings.target, "router", None)
    for module, distribution, extra in router.libraries() if isinstance(router, RouterModel) else []:
        if find_spec(module) is None:
            raise ConfigError(f"{settings.source}: router kind {router.kind!r} needs {distribution}, which is not "
                              f"installed: pip install 'bluegreen[{extra}]'")


def make_target(settings: Settings) -> Target:
    check_installed(settings)
    pair = {"local": _local, "docker": _docker, "servers": _servers, "kubernetes": _kubernetes}[settings.target.kind]
    return pair(settings)


def load(path: str) -> Any:
    """"module:name" -> the object, imported now."""
    module, _, name = path.partition(":")
    return getattr(import_module(module), name)


def scale_down_wait(configured: float | None) -> float:
    """How long a run waits out a scale-down itself: as configured; else none in CI, where a wait would hold
    up the job's later steps (the next run applies it), and a minute elsewhere."""
    if configured is not None:
        return configured
    ci = os.environ.get("GITHUB_ACTIONS") == "true" or os.environ.get("GITLAB_CI") == "true"
    return 0.0 if ci else 60.0


# --- the pairings: one function per runtime kind -------------------------------------------------


def _local(settings: Settings) -> Target:
    from ..routers import make_router
    from ..runtimes.local import LocalRuntime
    from ..state.files import FileStateStore

    runtime = LocalRuntime(settings)
    router = make_router(settings.target.router, upstreams=runtime.upstreams(), state_dir=runtime.state_dir,
                         app=settings.app)
    state = FileStateStore(runtime.state_dir, lock_ttl=settings.timeouts.lock)
    return Target(settings, runtime, router, state, scale_down_wait=0.0)  # a longer delay: runtime's follow-up


def _docker(settings: Settings) -> Target:
    """By default Caddy as a container beside the colours, the state in its volume; any other router (or
    `router.mode: host`) is a proxy on the host that dials the published ports, the state in state_dir."""
    from ..config import COLOURS, DockerCaddyRouter
    from ..docker_api import DockerAPI
    from ..runtimes.docker import LABEL, DockerRuntime, in_container
    from ..state.files import FileStateStore

    cfg = settings.target
    api = DockerAPI(cfg.docker_host)
    wait = scale_down_wait(cfg.scale_down_wait)
    if isinstance(cfg.router, DockerCaddyRouter) and cfg.router.resolved_mode() == "container":
        from ..routers.caddy_container import CaddyContainerRouter, RouterContainer
        from ..state.volume import VolumeStateStore

        labels = {LABEL + "app": settings.app, LABEL + "environment": settings.environment, LABEL + "role": "router"}
        container = RouterContainer(api, cfg.router, settings.app, settings.environment, cfg.network, labels)
        runtime = DockerRuntime(settings, api, network=container.network)  # where the router dials them by name
        router = CaddyContainerRouter(container, {c: f"{runtime.container_name(c)}:{cfg.container_port}" for c in COLOURS},
                                      own_network=not cfg.network and not cfg.router.network)
        return Target(settings, runtime, router, VolumeStateStore(container, lock_ttl=settings.timeouts.lock), wait)

    from ..routers import make_router
    from ..routers.proxy import ProxyRouter, RefusedProcess

    runtime = DockerRuntime(settings, api, network=cfg.network)
    proxy = make_router(cfg.router, upstreams=runtime.upstreams(), state_dir=runtime.state_dir, app=settings.app)
    if isinstance(proxy, ProxyRouter) and proxy.config.manage and in_container():
        # a proxy started in the action's container dies with the step and takes the live URL down
        proxy.process = RefusedProcess(
            f"router: refusing to start {cfg.router.kind} inside this container (the action's): it would die when the "
            "step ends and take the live URL down. Run the proxy on the host and set router.manage: false"
            + (", or remove router.mode: host to let bluegreen run Caddy as a container on the Docker engine"
               if cfg.router.kind == "caddy" else ""))
    return Target(settings, runtime, proxy, FileStateStore(runtime.state_dir, lock_ttl=settings.timeouts.lock), wait)


def _servers(settings: Settings) -> Target:
    from ..routers import Router, make_router
    from ..routers.hosts import FanOut, OnHost
    from ..runtimes.servers import ServersRuntime
    from ..state.shell import ShellStateStore

    cfg = settings.target
    runtime = ServersRuntime(settings)

    def proxy(host: str) -> Router:  # switched over the host's SSH connection
        return make_router(cfg.router, upstreams=runtime.upstreams(), state_dir=runtime.dir,  # type: ignore[arg-type]
                           app=settings.app, shell=runtime.shell(host))

    router: Router
    if runtime.proxy_on_each_host:  # a proxy on every app host, switched as one
        router = FanOut({h: proxy(h) for h in runtime.router_hosts}, name=f"{cfg.router.kind} on "
                        f"{len(runtime.router_hosts)} hosts", each=runtime.each, by_hand=runtime.by_hand)
    else:  # one load balancer in front of every host
        lb = runtime.router_hosts[0]
        router = OnHost(proxy(lb), lb, each=runtime.each, by_hand=runtime.by_hand)
    state_host = runtime.shell(runtime.router_hosts[0])  # the first app host for `each`
    state = ShellStateStore(lambda: state_host, runtime.dir, lock_ttl=settings.timeouts.lock)
    return Target(settings, runtime, router, state, scale_down_wait=scale_down_wait(cfg.scale_down_wait))


def _kubernetes(settings: Settings) -> Target:
    from ..config import COLOURS, KubernetesRouteRouter, render
    from ..routers.kube_base import KubeRouter
    from ..runtimes.kubernetes import KubernetesRuntime
    from ..state.kubernetes import KubeStateStore

    config, app = settings.target, settings.app
    route = config.router if isinstance(config.router, KubernetesRouteRouter) else None
    services = {c: render(route.services, app=app, colour=c) for c in COLOURS} if route else None
    preview = render(config.router.preview_service, app=app) if config.router.preview_service else None
    runtime = KubernetesRuntime(settings, preview_service=preview, colour_services=services)
    # what a router needs from the Deployments, as callables: routers never import runtimes
    given: dict[str, Any] = {
        "colour_label": config.colour_label, "kubectl": runtime.kubectl, "available_version": runtime.available_version,
        "pod_labels": runtime.pod_labels, "point_preview": runtime.point_preview, "warm_up": runtime.warm_up_command}
    router: KubeRouter
    if route is not None and services is not None:
        from ..routers.kube_route import KubeRouteRouter

        router = KubeRouteRouter(runtime.objects, render(route.route, app=app), services, **given)
    else:
        from ..routers.kube_service import KubeServiceRouter

        router = KubeServiceRouter(runtime.objects, render(config.router.service, app=app), **given)
    state = KubeStateStore(runtime.objects, app, {c: runtime.deployment_name(c) for c in COLOURS})
    state.on_recorded.append(router.annotate_release)  # the deploy id and CI run beside the live colour
    return Target(settings, runtime, router, state, scale_down_wait=scale_down_wait(config.scale_down_wait))
