"""The docker target: each colour is a container on a Docker engine; a Caddy switches between them.

Containers are driven through the Docker Engine API with httpx over the engine's unix
socket (or `DOCKER_HOST`), so no docker CLI is needed: in a GitHub container action the
runner mounts the host's socket, and the containers it starts live on the host, not in
the step. Each colour is the container `<app>-<environment>-<colour>`, labelled with its
app, environment, colour and version (the labels are the truth about what runs where),
and published on its own host port (the preview URL, bluegreen's health checks).

The router, by default (`router.mode: container`), is a Caddy container on the same engine,
and the live colour, the lock, the history and the planned scale-downs live in a named
volume mounted in it: nothing to set up on the host, nothing in the workspace that a cleaned
checkout could delete (docker_router.py says how and why). `router.mode: host`, and every
router kind but Caddy (HAProxy, Envoy, Traefik, nginx: routers/), is a proxy on the host that
dials the colours' published ports, with the lock and history in `state_dir`; bluegreen starts
that proxy itself only outside a container (a process started in the action's container dies
with the step, so there it is refused).

Scaling the old colour down: nothing may outlive a CI step, so the due time is written to
`scale-down.json` with the state; a delay up to `scale_down_wait` (0 in CI, so later steps
are not held up) is waited for in the run itself and applied, a longer one is applied by
the next bluegreen run that takes the lock. A colour that became live again in the meantime
is never stopped.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..config import COLOURS, Colour, Settings, render
from ..config import DockerCaddyRouter
from ..config import DockerTarget as DockerConfig
from ..docker_api import DockerAPI
from ..errors import NotReadyError, TargetError
from .base import ColourState, utcnow
from .docker_router import CaddyContainerRouter, RouterContainer, VolumeStateStore, safe_name
from .filestate import FileStateStore
from .hostports import HostPortTarget
from .scaledown import DUE, PlannedScaleDowns

LABEL = "dev.bluegreen."


def in_container() -> bool:
    """True inside a container (the action's own): a process started here ends with the step."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


class DockerTarget(PlannedScaleDowns, HostPortTarget):
    config: DockerConfig

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.api = DockerAPI(self.config.docker_host)
        # Only Caddy runs as a container beside the colours; every other router kind is a proxy on the host.
        router = self.config.router
        self.mode = router.resolved_mode() if isinstance(router, DockerCaddyRouter) else "host"
        self.state: FileStateStore
        if self.mode == "container":
            labels = {LABEL + "app": settings.app, LABEL + "environment": settings.environment, LABEL + "role": "router"}
            self.router_container = RouterContainer(self.api, self.config.router, settings.app, settings.environment,
                                                    self.config.network, labels)
            upstreams = {c: f"{self.container_name(c)}:{self.config.container_port}" for c in COLOURS}
            self.router = CaddyContainerRouter(self.router_container, upstreams)
            self.state = VolumeStateStore(self.router_container)
        else:
            self.state = FileStateStore(self.state_dir)
        self.state.on_locked.append(self.apply_scale_downs)
        if self.config.scale_down_wait is not None:
            self.scale_down_wait = self.config.scale_down_wait
        else:  # in CI a wait would hold up the job's later steps: the next run applies it
            ci = os.environ.get("GITHUB_ACTIONS") == "true" or os.environ.get("GITLAB_CI") == "true"
            self.scale_down_wait = 0.0 if ci else 60.0

    def ensure_router(self) -> None:
        """Start the router container when missing; in host mode, check the host's router (or start it outside a
        container). Called before anything changes, so a missing router stops the run with live untouched."""
        if self.mode == "container":
            self.router.ensure_running()  # type: ignore[attr-defined]
            return
        self._refuse_proxy_in_container()
        super().ensure_router()

    def check_router(self) -> str | None:
        if self.mode == "container":
            self.router.check()
            return None
        self._refuse_proxy_in_container()
        return super().check_router()

    def _refuse_proxy_in_container(self) -> None:
        if self.config.router.manage and in_container():
            raise TargetError(
                f"router: refusing to start {self.config.router.kind} inside this container (the action's): it would "
                "die when the step ends and take the live URL down. Run the proxy on the host and set router.manage: "
                "false" + (", or remove router.mode: host to let bluegreen run Caddy as a container on the Docker "
                           "engine" if self.config.router.kind == "caddy" else ""))

    def container_name(self, colour: Colour) -> str:
        return safe_name(f"{self.settings.app}-{self.settings.environment}-{colour}")

    def image(self, version: str) -> str:
        return render(self.config.image, version=version)

    # --- questions ---------------------------------------------------------------------------

    def colour_state(self, colour: Colour) -> ColourState:
        info = self.api.inspect(self.container_name(colour))
        port = self.ports[colour]
        if info is None:
            return ColourState(colour=colour, detail=f"no container (port {port})")
        labels = info["Config"].get("Labels") or {}
        state = info["State"]
        running = bool(state.get("Running"))
        ready = running and self.health(colour, timeout=1.0) is None
        how = "running" if running else f"{state.get('Status', 'stopped')} (exit code {state.get('ExitCode')})"
        due = self._due().get(colour)
        return ColourState(
            colour=colour, version=labels.get(LABEL + "version"), running=running, ready=ready,
            replicas=1 if running else 0,
            detail=f"container {info['Name'].lstrip('/')} {info['Id'][:12]} {how}, port {port}"
            + (f", scale-down due {due['at']}" if due and running else ""),
        )

    # --- actions -----------------------------------------------------------------------------

    def deploy(self, colour: Colour, version: str) -> None:
        self.ensure_router()
        image = self.image(version)
        ensure_image(self.api, image, self.config.pull)
        name = self.container_name(colour)
        self._drop_due(colour)
        self.api.remove(name)
        # Container mode: on the router's network, where it dials this colour by name.
        network = self.router_container.network if self.mode == "container" else self.config.network
        body = colour_container(self.config, self.settings, colour, version, image=image, host_port=self.ports[colour],
                                bind=self.config.bind, network=network)
        self.api.call("POST", "/containers/create", params={"name": name}, json=body)
        self.api.start(name)

    def check_running(self, colour: Colour) -> None:
        crash = crashed(self.api, self.container_name(colour))
        if crash:
            raise NotReadyError(f"{colour}: {crash}")

    def scale(self, colour: Colour, replicas: int) -> None:
        """One container per colour: 0 stops it (kept, so it can start again), anything else starts it."""
        name = self.container_name(colour)
        info = self.api.inspect(name)
        if replicas <= 0:
            if info is not None and info["State"].get("Running"):
                self.api.stop(name, self.config.stop_timeout)
            self._drop_due(colour)
            return
        if info is None:
            raise TargetError(f"{colour} has never been deployed (no container {name}); nothing to start")
        self._drop_due(colour)
        self.api.start(name)

    def switch(self, to: Colour, deadline: float) -> None:
        super().switch(to, deadline)
        self._drop_due(to)  # live again: a scale-down planned for it no longer applies

    def stop_all(self, purge: bool = False) -> list[str]:
        stopped = []
        for colour in COLOURS:
            name = self.container_name(colour)
            if self.api.remove(name):
                stopped.append(f"{colour} (container {name}, port {self.ports[colour]})")
        if self.mode == "container":
            if self.router_container.stop(purge):  # the volume (state) is kept unless purged
                stopped.append(f"router (container {self.router_container.name}, {self.config.router.listen})")
            if purge and not self.config.network and not self.config.router.network:
                self.api.call("DELETE", f"/networks/{quote(self.router_container.network)}", ok=(204, 404, 409))
            return stopped
        if self.router.stop():
            stopped.append(f"proxy ({self.router.name})")
        self.router.reset()  # nothing is live any more
        (self.state_dir / DUE).unlink(missing_ok=True)
        if purge:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        return stopped

    def close(self) -> None:
        self.api.close()



def ensure_image(api: DockerAPI, image: str, pull: str) -> None:
    """The image on the engine, pulled as `pull` (missing | always | never) says."""
    if pull == "always" or (pull == "missing" and not api.image_exists(image)):
        api.pull(image)
    elif not api.image_exists(image):
        raise TargetError(f"docker: image {image} is not on the engine (pull: never)")


def colour_container(config: Any, settings: Settings, colour: Colour, version: str, *, image: str, host_port: int,
                     bind: str, network: str | None) -> dict[str, Any]:
    """The Engine API body of one colour's container. `config`: the docker target's or the servers target's `run`
    (container_port, env, labels, command)."""
    values = {"port": config.container_port, "version": version, "colour": colour}
    port_key = f"{config.container_port}/tcp"
    body: dict[str, Any] = {
        "Image": image,
        "Env": [f"{k}={render(v, **values)}" for k, v in config.env.items()],
        "Labels": {
            **config.labels,
            LABEL + "app": settings.app,
            LABEL + "environment": settings.environment,
            LABEL + "colour": colour,
            LABEL + "version": version,
            LABEL + "deployed-at": utcnow().isoformat(timespec="seconds"),
        },
        "ExposedPorts": {port_key: {}},
        "StopTimeout": int(settings.target.stop_timeout),
        "HostConfig": {
            "PortBindings": {port_key: [{"HostIp": bind, "HostPort": str(host_port)}]},
            # A reboot of the host brings a colour back as it was; a stopped (scaled-down) one stays stopped.
            "RestartPolicy": {"Name": "unless-stopped"},
            **({"NetworkMode": network} if network else {}),
        },
    }
    if config.command is not None:
        body["Cmd"] = [render(arg, **values) for arg in config.command]
    return body


def crashed(api: DockerAPI, name: str) -> str | None:
    """Why container `name` is not running (it exited, crashed, or does not exist), with the end of its log;
    None while it runs. A crashed one is stopped, not removed: no crash loop, and `docker logs` still shows why."""
    info = api.inspect(name)
    if info is None:
        return f"container {name} does not exist"
    state = info["State"]
    # The restart policy brings a crashed container back: a restart before ready is a crash too.
    if state.get("Running") and not state.get("Restarting") and info.get("RestartCount", 0) == 0:
        return None
    logs = api.logs_tail(name)
    api.stop(name, 0)
    if state.get("Running") or state.get("Restarting"):  # caught between a crash and its restart
        how = f"crashed (restarted {info.get('RestartCount', 0)} time(s))"
    else:
        how = f"exited with code {state.get('ExitCode')}"
    return f"container {name} {how} before it was ready; its log ends: {logs}"
