"""How a colour runs on each host of the servers runtime (`run.mode`):

- docker: a container `<app>-<environment>-<colour>` on the host's own Docker engine, whose socket is
  reached through the SSH connection; labelled with its version, published on the colour's port;
- command: the user's `deploy` / `start` / `stop` templates (e.g. a systemd unit `app@{colour}`); the
  version on a colour is recorded on the host, in `<state_dir>/<colour>.version`.

Each mode does one host at a time; the runtime runs it on every host at once.
"""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from ..config import Colour, CommandRun, DockerRun, render
from ..docker_api import DockerAPI
from ..errors import TargetError
from ..remote import CommandResult, Shell
from .base import ColourState
from .docker import LABEL, colour_container, crashed, ensure_image, safe_name

if TYPE_CHECKING:
    from .servers import ServersRuntime


class DockerMode:
    """run.mode docker: the colour's container on each host's Docker engine, through the SSH connection."""

    def __init__(self, runtime: ServersRuntime) -> None:
        self.runtime = runtime
        self.run: DockerRun = runtime.config.run  # type: ignore[assignment]  # the runtime chose by run.mode
        self._apis: dict[str, DockerAPI] = {}

    def api(self, sh: Shell) -> DockerAPI:
        if sh.name not in self._apis:
            api = DockerAPI("unix://" + sh.dial_unix(self.run.docker_socket), retry_for=2.0)
            api.where = f"{sh.name}:{self.run.docker_socket}"  # messages name the host's socket, not our forward
            self._apis[sh.name] = api
        return self._apis[sh.name]

    def name(self, colour: Colour) -> str:
        return safe_name(f"{self.runtime.settings.app}-{self.runtime.settings.environment}-{colour}")

    def deploy(self, sh: Shell, colour: Colour, version: str) -> None:
        api, name = self.api(sh), self.name(colour)
        image = render(self.run.image, version=version)
        ensure_image(api, image, self.run.pull)
        api.remove(name)
        body = colour_container(self.run, self.runtime.settings, colour, version, image=image,
                                host_port=self.runtime.ports[colour], bind=self.run.bind, network=None)
        api.call("POST", "/containers/create", params={"name": name}, json=body)
        api.start(name)

    def crashed(self, sh: Shell, colour: Colour) -> str | None:
        return crashed(self.api(sh), self.name(colour))

    def state(self, sh: Shell, colour: Colour) -> ColourState:
        info = self.api(sh).inspect(self.name(colour))
        if info is None:
            return ColourState(colour=colour, detail="no container")
        running = bool(info["State"].get("Running"))
        ready = running and self.runtime.health(sh.name, colour, timeout=1.0) is None
        version = (info["Config"].get("Labels") or {}).get(LABEL + "version")
        how = "running" if running else f"{info['State'].get('Status', 'stopped')}"
        return ColourState(colour=colour, version=version, running=running, ready=ready, replicas=int(running),
                           detail=f"container {info['Id'][:12]} {how}")

    def scale(self, sh: Shell, colour: Colour, replicas: int) -> None:
        api, name = self.api(sh), self.name(colour)
        if replicas <= 0:
            api.stop(name, self.runtime.config.stop_timeout, missing_ok=True)
        elif api.inspect(name) is None:
            raise TargetError(f"{colour} has never been deployed on {sh.name} (no container {name}); nothing to start")
        else:
            api.start(name)

    def remove(self, sh: Shell, colour: Colour) -> bool:
        return self.api(sh).remove(self.name(colour))

    def close(self) -> None:
        for api in self._apis.values():
            api.close()


class CommandMode:
    """run.mode command: the user's templates on each host; the version of each colour in a file there."""

    def __init__(self, runtime: ServersRuntime) -> None:
        self.runtime = runtime
        self.run: CommandRun = runtime.config.run  # type: ignore[assignment]  # the runtime chose by run.mode

    def _version_file(self, colour: Colour) -> str:
        return shlex.quote(str(self.runtime.dir / f"{colour}.version"))

    def _version(self, sh: Shell, colour: Colour) -> str:
        """The version recorded for `colour` on the host; '' when none is."""
        done = sh.run(f"cat {self._version_file(colour)} 2>/dev/null", timeout=30)
        return done.stdout.strip() if done.ok else ""

    def _command(self, sh: Shell, step: str, colour: Colour, version: str = "") -> CommandResult:
        """Run `run.<step>`; the error names the step and the host, never the command (it may hold a secret)."""
        template = getattr(self.run, step)
        command = render(template, colour=colour, version=version, port=self.runtime.ports[colour],
                         app=self.runtime.settings.app, environment=self.runtime.settings.environment)
        done = sh.run(command, timeout=self.run.timeout)
        if not done.ok and step != "status":
            raise TargetError(f"run.{step} for {colour} on {sh.name} exited {done.exit_status}: "
                              f"{done.last_error_line()}")
        return done

    def deploy(self, sh: Shell, colour: Colour, version: str) -> None:
        if self.run.deploy:
            self._command(sh, "deploy", colour, version)
        record = sh.run(f"mkdir -p {shlex.quote(str(self.runtime.dir))} && printf '%s\\n' {shlex.quote(version)} > "
                        f"{self._version_file(colour)}", timeout=30)
        if not record.ok:
            raise TargetError(f"cannot record the version of {colour} on {sh.name} in {self.runtime.dir}: "
                              f"{record.last_error_line()}")
        self._command(sh, "start", colour, version)

    def crashed(self, sh: Shell, colour: Colour) -> str | None:
        if self.run.status is None:
            return None  # the health path decides
        done = self._command(sh, "status", colour)
        return None if done.ok else f"run.status says {colour} is not running: {done.last_error_line()}"

    def state(self, sh: Shell, colour: Colour) -> ColourState:
        version = self._version(sh, colour) or None
        ready = self.runtime.health(sh.name, colour, timeout=1.0) is None
        running = ready if self.run.status is None else self._command(sh, "status", colour).ok
        return ColourState(colour=colour, version=version, running=running, ready=ready, replicas=int(running),
                           detail="running" if running else "stopped")

    def scale(self, sh: Shell, colour: Colour, replicas: int) -> None:
        self._command(sh, "stop" if replicas <= 0 else "start", colour, self._version(sh, colour))

    def remove(self, sh: Shell, colour: Colour) -> bool:
        had = sh.run(f"test -e {self._version_file(colour)}", timeout=30).ok
        self._command(sh, "stop", colour)
        sh.run(f"rm -f {self._version_file(colour)}", timeout=30)
        return had

    def close(self) -> None:
        pass
