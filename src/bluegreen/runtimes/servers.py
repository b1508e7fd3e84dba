"""The servers runtime: the colours run on hosts reached over SSH.

Every host gets one SSH connection for the whole run (ssh.py), opened for all hosts at once the first time any
is used, and every step that touches the hosts runs on all of them at once. A colour runs on each host in one
of two ways (`run.mode`, server_modes.py): a container on the host's own Docker engine, or the user's commands.

The router is paired by the factory (targets/__init__.py): one load balancer in front of every host
(`router_host: lb1`), or a proxy on every app host (`router_host: each`, routers/hosts.py), each switched over
its host's shell from here. The lock, the history and the planned scale-downs are files on the router host
(the first app host for `each`: state/shell.py).
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter
from pathlib import PurePosixPath
from typing import Callable, TypeVar

import httpx

from ..cancel import CANCEL
from ..config import COLOURS, Colour, DockerRun, Settings, render
from ..config import ServersTarget as ServersConfig
from ..errors import NotReadyError
from ..remote import CommandResult, Shell, join_host, split_host
from .base import ColourState, Runtime
from .server_modes import CommandMode, DockerMode

T = TypeVar("T")


def address(host: str) -> str:
    """'app2:2222' -> 'app2' (the SSH port is not where the colours listen)."""
    return split_host(host, 0)[0]


class HostShell:
    """One host's Shell that connects every host the first time it is used: an unreachable host or a wrong
    host key stops the run before anything changed, naming the host, whichever host was asked first."""

    def __init__(self, host: Shell, connect: Callable[[], None]) -> None:
        self.host = host
        self.name = host.name
        self.connect = connect

    def run(self, command: str, *, input: str | None = None, timeout: float | None = None) -> CommandResult:
        self.connect()
        return self.host.run(command, input=input, timeout=timeout)

    def dial_tcp(self, host: str, port: int) -> tuple[str, int]:
        self.connect()
        return self.host.dial_tcp(host, port)

    def dial_unix(self, path: str) -> str:
        self.connect()
        return self.host.dial_unix(path)

    def probe_tcp(self, host: str, port: int, timeout: float = 1.0) -> str | None:
        self.connect()
        return self.host.probe_tcp(host, port, timeout)


class ServersRuntime(Runtime):
    config: ServersConfig

    def __init__(self, settings: Settings) -> None:
        from ..ssh import Login, SSHPool  # asyncssh is imported only by a config that uses servers

        self.settings = settings
        self.config = cfg = settings.target  # type: ignore[assignment]
        ssh = cfg.ssh
        self.pool = SSHPool(Login(
            user=ssh.user, port=ssh.port, known_hosts=ssh.known_hosts.get_secret_value(), jump_host=ssh.jump_host,
            # An empty value (`${SSH_KEY_PASSPHRASE:-}` unset) means none: the agent's keys, no passphrase.
            private_key=(ssh.private_key.get_secret_value() if ssh.private_key else "") or None,
            passphrase=(ssh.passphrase.get_secret_value() if ssh.passphrase else "") or None,
            connect_timeout=ssh.connect_timeout,
        ))
        self.hosts = cfg.all_hosts
        self.colour_hosts: dict[Colour, list[str]] = {c: cfg.hosts_of(c) for c in COLOURS}
        self.proxy_on_each_host = cfg.proxy_on_each_host
        self.router_hosts = cfg.router_hosts
        self.ports: dict[Colour, int] = {"blue": cfg.ports.blue, "green": cfg.ports.green}
        self.dir = PurePosixPath(render(cfg.state_dir, app=settings.app, environment=settings.environment))
        self._connected = False
        self._connecting = threading.Lock()
        self.mode: DockerMode | CommandMode = DockerMode(self) if isinstance(cfg.run, DockerRun) else CommandMode(self)

    # --- what the factory pairs with it ---------------------------------------------------------

    def upstreams(self) -> dict[Colour, list[str]]:
        """What the router dials for each colour: every app host's colour port, or the local one on each host."""
        if self.proxy_on_each_host:
            return {c: [f"127.0.0.1:{p}"] for c, p in self.ports.items()}
        return {c: [f"{address(h)}:{p}" for h in self.colour_hosts[c]] for c, p in self.ports.items()}

    def shell(self, host: str) -> Shell:
        """`host`'s shell, connecting every host at its first use."""
        return HostShell(self.pool.host(host), self.connect)

    def each(self, hosts: list[str], fn: Callable[[str], T]) -> dict[str, T]:
        """`fn(host)` on every host at once; after all ended, one TargetError naming each host that failed."""
        return self.on_hosts(hosts, lambda sh: fn(sh.name))

    def by_hand(self, host: str, command: str) -> str:
        """`command` as the runbook runs it on `host`, with OpenSSH's client."""
        ssh = self.config.ssh
        host_address, port = split_host(host, ssh.port)
        return f"ssh -p {port} {ssh.user}@{host_address} {shlex.quote(command)}"

    # --- the hosts -----------------------------------------------------------------------------

    def connect(self) -> None:
        """Every host at once, the first time anything is asked: an unreachable host or a wrong host key stops
        the run before anything changed, naming the host."""
        with self._connecting:
            if not self._connected:
                self.pool.connect(list(dict.fromkeys([*self.hosts, *self.router_hosts])))
                self._connected = True

    def on_hosts(self, hosts: list[str], fn: Callable[[Shell], T]) -> dict[str, T]:
        self.connect()
        return self.pool.each(hosts, fn)

    def _colour_url(self, host: str, colour: Colour) -> str:
        port = self.ports[colour]
        if self.config.checks_via == "direct":
            return f"http://{address(host)}:{port}"
        bind = getattr(self.config.run, "bind", "0.0.0.0")
        local_host, local_port = self.shell(host).dial_tcp("127.0.0.1" if bind == "0.0.0.0" else bind, port)
        return f"http://{local_host}:{local_port}"

    def health(self, host: str, colour: Colour, timeout: float) -> str | None:
        """None when the health path answers 2xx on `host`, else why not."""
        url = self._colour_url(host, colour) + self.config.health_path
        try:
            response = httpx.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            return f"GET {self.config.health_path} on port {self.ports[colour]}: {type(exc).__name__}"
        return None if response.is_success else f"GET {self.config.health_path}: status {response.status_code}"

    # --- questions -----------------------------------------------------------------------------

    def colour_state(self, colour: Colour) -> ColourState:
        hosts = self.colour_hosts[colour]
        states = self.on_hosts(hosts, lambda sh: self.mode.state(sh, colour))
        versions = Counter(s.version for s in states.values() if s.version)
        running = [h for h, s in states.items() if s.running]
        ready = all(s.ready for s in states.values())
        detail = "; ".join(f"{h}: {s.detail}" for h, s in states.items())
        if len(versions) > 1:
            detail = "versions differ: " + ", ".join(f"{h} {s.version}" for h, s in states.items()) + "; " + detail
        return ColourState(colour=colour, version=versions.most_common(1)[0][0] if versions else None,
                           running=len(running) == len(hosts), ready=ready, replicas=len(running),
                           detail=f"{len(running)}/{len(hosts)} hosts running; {detail}")

    def preview_urls(self, colour: Colour) -> dict[str, str]:
        return {h: self._colour_url(h, colour) for h in self.colour_hosts[colour]}

    def preview_url(self, colour: Colour) -> str:
        # The output outlives the run: the first host's own address, never this run's port forward (with
        # checks_via: ssh a 127.0.0.1 port on the runner, gone when the step ends).
        return f"http://{address(self.colour_hosts[colour][0])}:{self.ports[colour]}"

    def live_url(self) -> str | None:
        # The listen address when it names one (`10.0.0.5:80`), else the router host's (`:80`, `0.0.0.0:80`).
        listen = self.config.router.listen_address()
        if listen is None:
            return None  # a router without an address of its own: the environment's url says where users enter
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::", "*"):
            host = address(self.router_hosts[0])
        return f"http://{join_host(host, port)}"

    # --- actions -------------------------------------------------------------------------------

    def deploy(self, colour: Colour, version: str) -> None:
        self.on_hosts(self.colour_hosts[colour], lambda sh: self.mode.deploy(sh, colour, version))

    def wait_ready(self, colour: Colour, deadline: float) -> None:
        def ready(sh: Shell) -> str | None:
            while True:
                crash = self.mode.crashed(sh, colour)  # a crash ends the wait at once, not at the deadline
                if crash:
                    return crash
                failure = self.health(sh.name, colour, timeout=1.0)
                if failure is None:
                    return None
                if time.monotonic() >= deadline:
                    return f"not ready before the deadline: {failure}"
                CANCEL.wait(0.1)
                if CANCEL.requested:  # in a worker thread: the main thread raises the cancellation
                    return "cancelled"

        hosts = self.colour_hosts[colour]
        failures = {h: why for h, why in self.on_hosts(hosts, ready).items() if why}
        if failures:
            raise NotReadyError(f"{colour} not ready on {len(failures)} of {len(hosts)} hosts: "
                                + "; ".join(f"{h}: {why}" for h, why in failures.items()))

    def scale(self, colour: Colour, replicas: int) -> None:
        self.on_hosts(self.colour_hosts[colour], lambda sh: self.mode.scale(sh, colour, replicas))

    def stop_colours(self) -> list[str]:
        stopped = []
        for colour in COLOURS:
            removed = self.on_hosts(self.colour_hosts[colour], lambda sh: self.mode.remove(sh, colour))
            hosts = [h for h, done in removed.items() if done]
            if hosts:
                stopped.append(f"{colour} on {', '.join(hosts)}")
        return stopped

    def close(self) -> None:
        self.mode.close()
        self.pool.close()
