"""A shell on a host: what the servers target and a router on another machine need from it.

`Shell` is the narrow interface: run a command (with optional stdin) and reach an address as the
host sees it (`dial`: a TCP port or a unix socket on that host, e.g. HAProxy's Runtime API socket on a
load balancer). `ssh.SSHHost` implements it over one SSH connection per host; `LocalShell` implements it
on this machine, so a router's remote code path runs in tests against a real proxy without SSH, and so
the local code path and the remote one are the same code.
"""

from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from typing import Protocol

from .errors import TargetError


def split_host(address: str, default_port: int) -> tuple[str, int]:
    """A host as configured -> (host, SSH port): 'app1', 'app1:2222', '[2001:db8::1]:2222' or a bare IPv6 address."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else default_port
    if address.count(":") == 1:
        host, _, port = address.partition(":")
        if port.isdigit():
            return host, int(port)
    return address, default_port


def join_host(host: str, port: int | str) -> str:
    """(host, port) -> 'host:port' as a URL or a dial string takes it: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0

    def last_error_line(self) -> str:
        """The last non-empty line of stderr (else stdout): what a one-line error quotes."""
        for text in (self.stderr, self.stdout):
            lines = [line.strip() for line in text.splitlines() if line.strip()]
            if lines:
                return lines[-1][:300]
        return f"exit status {self.exit_status}"


class Shell(Protocol):
    """A POSIX shell on one host. `name` is how messages name the host (e.g. 'lb1' or 'app2:2222')."""

    name: str

    def run(self, command: str, *, input: str | None = None, timeout: float | None = None) -> CommandResult:
        """Run `command` with `sh -c` semantics; never raises on a non-zero exit (the caller decides), raises
        TargetError naming the host when the host cannot be reached or the command does not end by `timeout`."""
        ...

    def dial_tcp(self, host: str, port: int) -> tuple[str, int]:
        """A local (host, port) that reaches `host:port` as the remote host sees it (an SSH port forward,
        opened once and reused); LocalShell returns its arguments."""
        ...

    def dial_unix(self, path: str) -> str:
        """A local unix socket path that reaches the unix socket `path` on the remote host."""
        ...

    def probe_tcp(self, host: str, port: int, timeout: float = 1.0) -> str | None:
        """None when something accepts a connection on `host:port` as the remote host sees it, else why not.
        (A forward's local end always accepts, so reachability is asked of the host itself.)"""
        ...


class LocalShell:
    """This machine as a Shell: `sh -c` in a subprocess, addresses as they are."""

    name = "localhost"

    def run(self, command: str, *, input: str | None = None, timeout: float | None = None) -> CommandResult:
        try:
            done = subprocess.run(["sh", "-c", command], input=input, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TargetError(f"{self.name}: `{command[:80]}` did not end within {timeout:g}s") from None
        return CommandResult(done.returncode, done.stdout, done.stderr)

    def dial_tcp(self, host: str, port: int) -> tuple[str, int]:
        return host, port

    def dial_unix(self, path: str) -> str:
        return path

    def probe_tcp(self, host: str, port: int, timeout: float = 1.0) -> str | None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return None
        except OSError as exc:
            return f"nothing accepts connections on {host}:{port} ({exc.strerror or exc})"
