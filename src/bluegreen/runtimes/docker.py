"""The docker runtime: each colour is a container on a Docker engine, on its own host port.

Containers are driven through the Docker Engine API with httpx over the engine's unix
socket (or `DOCKER_HOST`), so no docker CLI is needed: in a GitHub container action the
runner mounts the host's socket, and the containers it starts live on the host, not in
the step. Each colour is the container `<app>-<environment>-<colour>`, labelled with its
app, environment, colour and version (the labels are the truth about what runs where),
and published on its own host port (the preview URL, bluegreen's health checks).

What switches traffic is paired by the factory (targets/__init__.py): by default a Caddy
container beside the colours on a network of its own (routers/caddy_container.py, the
state in its volume: state/volume.py), else a proxy on the host that dials the published
ports, with the lock and history in `state_dir`.

Nothing may outlive a CI step, so the old colour's scale-down is planned in the state
store and applied by the one rule (targets/scaledown.py).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..config import COLOURS, Colour, Settings, render
from ..config import DockerTarget as DockerConfig
from ..docker_api import DockerAPI, safe_name
from ..errors import NotReadyError, TargetError
from .base import ColourState
from .hostports import HostPortRuntime

LABEL = "dev.bluegreen."


def in_container() -> bool:
    """True inside a container (the action's own): a process started here ends with the step."""
    return Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


class DockerRuntime(HostPortRuntime):
    config: DockerConfig

    def __init__(self, settings: Settings, api: DockerAPI, network: str | None) -> None:
        super().__init__(settings)
        self.api = api
        self.network = network  # the colours' network: where a router container dials them by name

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
        return ColourState(
            colour=colour, version=labels.get(LABEL + "version"), running=running, ready=ready,
            replicas=1 if running else 0,
            detail=f"container {info['Name'].lstrip('/')} {info['Id'][:12]} {how}, port {port}",
        )

    # --- actions -----------------------------------------------------------------------------

    def deploy(self, colour: Colour, version: str) -> None:
        image = self.image(version)
        ensure_image(self.api, image, self.config.pull)
        name = self.container_name(colour)
        self.api.remove(name)
        body = colour_container(self.config, self.settings, colour, version, image=image, host_port=self.ports[colour],
                                bind=self.config.bind, network=self.network)
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
            return
        if info is None:
            raise TargetError(f"{colour} has never been deployed (no container {name}); nothing to start")
        self.api.start(name)

    def stop_colours(self) -> list[str]:
        stopped = []
        for colour in COLOURS:
            name = self.container_name(colour)
            if self.api.remove(name):
                stopped.append(f"{colour} (container {name}, port {self.ports[colour]})")
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
            LABEL + "deployed-at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
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
