"""SSH to the servers and the load balancer (asyncssh), behind a small synchronous API.

One connection per host, opened in parallel and kept for the run (keepalive notices a dead host); every
command, port forward and probe of a host goes over it. asyncssh runs on a private event loop in a daemon
thread, so callers stay synchronous and `SSHPool.each` works on every host at once from threads.

Host keys are always checked against the `known_hosts` content: an unknown host or a changed key is refused
before anything runs, with the offered key's SHA256 fingerprint (as `ssh-keygen -lf` prints it). The private
key, its passphrase and the known_hosts content never appear in a message, a log line or a repr.

Importing this module imports asyncssh (a few hundred ms): import it only where a config uses servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncssh

from .each import NamedErrors, at_once
from .errors import ConfigError, TargetError, one_line
from .remote import CommandResult, split_host

T = TypeVar("T")

MAX_SESSIONS = 8  # commands at once per connection: OpenSSH's MaxSessions is 10 by default

logging.getLogger("asyncssh").setLevel(logging.WARNING)  # its INFO lines are per channel: noise in CI logs


class SSHError(TargetError):
    """A host could not be reached, refused us, or lost the connection; one line naming the host."""


@dataclass(frozen=True)
class Login:
    """How to log in to every host (and the jump host). Secrets are content, never echoed (repr=False)."""

    user: str
    known_hosts: str = field(repr=False)
    port: int = 22
    private_key: str | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    jump_host: str | None = None  # [user@]host[:port]
    connect_timeout: float = 10.0
    # a host that answers no keepalive for `keepalive_interval * keepalive_count_max` seconds is dead: its
    # commands fail with "connection lost" instead of hanging
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 3


def parse_jump_host(spec: str, login: Login) -> tuple[str, str, int]:
    """'[user@]host[:port]' -> (user, host, port); the user and port default to the login's."""
    user, at, rest = spec.rpartition("@")
    host, port = split_host(rest, 22)
    return (user if at else login.user), host, port


def load_client_keys(login: Login) -> list[asyncssh.SSHKey] | None:
    """The private key from its content, or None (use the agent). Errors name the field, never its content."""
    if login.private_key is None:
        return None
    text = login.private_key.strip() + "\n"
    passphrase = login.passphrase or None
    try:
        return [asyncssh.import_private_key(text, passphrase)]
    except asyncssh.KeyEncryptionError:
        raise ConfigError("ssh.passphrase does not decrypt ssh.private_key") from None
    except asyncssh.KeyImportError as exc:
        if "bcrypt" in str(exc):
            raise ConfigError("ssh.private_key: an OpenSSH key with a passphrase needs the Python package bcrypt "
                              "(pip install 'asyncssh[bcrypt]')") from None
        if "passphrase" in str(exc).lower():
            raise ConfigError("ssh.private_key is encrypted: set ssh.passphrase") from None
        raise ConfigError("ssh.private_key is not a private key (expected the content of an OpenSSH or PEM key "
                          "file)") from None
    except (ValueError, TypeError):
        raise ConfigError("ssh.private_key could not be read (expected the content of an OpenSSH or PEM key "
                          "file)") from None


def load_known_hosts(login: Login) -> asyncssh.SSHKnownHosts:
    """The known_hosts content, every entry checked (asyncssh skips a key it cannot decode without a word, which
    would turn a typo into an 'unknown host'). Errors name the line, never its content."""
    if not login.known_hosts.strip():
        raise ConfigError("ssh.known_hosts is empty: give the hosts' keys (e.g. the output of ssh-keyscan, checked)")
    for number, line in enumerate(login.known_hosts.splitlines(), 1):
        fields = line.split()
        if fields and fields[0].startswith("@"):  # @cert-authority / @revoked
            fields = fields[1:]
        if not fields or fields[0].startswith("#"):
            continue
        try:
            asyncssh.import_public_key(" ".join(fields[1:3]))
        except (ValueError, TypeError):
            raise ConfigError(f"ssh.known_hosts line {number} is not `host key-type base64-key`") from None
    try:
        return asyncssh.import_known_hosts(login.known_hosts)
    except (ValueError, TypeError):
        raise ConfigError("ssh.known_hosts is not in known_hosts format (`host key-type base64-key` per line)"
                          ) from None


class _Client(asyncssh.SSHClient):
    """Notes the key a host offered when known_hosts does not trust it (and refuses it), and a lost connection."""

    def __init__(self) -> None:
        self.offered: asyncssh.SSHKey | None = None
        self.lost = False
        self.lost_reason = ""

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.offered = key
        return False  # nothing is accepted that known_hosts does not list

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if exc is not None:
            self.lost_reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__


@dataclass
class _Connection:
    conn: asyncssh.SSHClientConnection
    client: _Client
    sessions: asyncio.Semaphore
    tcp_forwards: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    unix_forwards: dict[str, str] = field(default_factory=dict)
    listeners: list[asyncssh.SSHListener] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return not self.client.lost and not self.conn.is_closed()


class SSHPool:
    """SSH connections to a set of hosts, one each, for the run. Thread-safe; `close()` when done."""

    def __init__(self, login: Login) -> None:
        self.login = login
        self._known_hosts = load_known_hosts(login)
        self._client_keys = load_client_keys(login)
        self._agent: asyncssh.SSHAgentClient | None = None
        self._jump: _Connection | None = None
        self._hosts: dict[str, SSHHost] = {}
        self._connections: dict[str, _Connection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._socket_dir: str | None = None
        self._socket_numbers = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._mutex = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bluegreen-ssh", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"SSHPool({self.login!r}, hosts={sorted(self._connections)})"

    # --- the sync API -------------------------------------------------------------------------------

    def connect(self, addresses: list[str]) -> None:
        """Connect to every host at once; one SSHError naming every host that failed, and why."""
        failures = self._call(self._connect_all(addresses))
        if failures:
            raise SSHError("; ".join(failures))

    def host(self, address: str) -> SSHHost:
        with self._mutex:
            if address not in self._hosts:
                self._hosts[address] = SSHHost(self, address)
            return self._hosts[address]

    def each(self, addresses: list[str], fn: Callable[[SSHHost], T]) -> dict[str, T]:
        """`fn(host)` on every host at once (threads); after all ended, one HostErrors naming each that failed."""
        hosts = {host.name: host for host in map(self.host, addresses)}
        return at_once(list(hosts), lambda name: fn(hosts[name]), threads="bluegreen-host")

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._close_all(), timeout=10)
        except (TargetError, TimeoutError):
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()
        if self._socket_dir:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> SSHPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- on the loop -------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._loop.is_closed():
            coro.close()
            raise SSHError("the SSH connections are closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect_all(self, addresses: list[str]) -> list[str]:
        if self.login.jump_host:
            try:
                await self._jump_connection()
            except SSHError as exc:
                return [str(exc)]
        results = await asyncio.gather(*(self._connection(a) for a in addresses), return_exceptions=True)
        failures = []
        for result in results:
            if isinstance(result, SSHError):
                failures.append(str(result))
            elif isinstance(result, BaseException):
                raise result
        return failures

    async def _keys(self) -> list[Any]:
        if self._client_keys is not None:
            return list(self._client_keys)
        if self._agent is None:
            path = os.environ.get("SSH_AUTH_SOCK")
            if not path:
                raise ConfigError("ssh.private_key is not set and no ssh-agent runs (SSH_AUTH_SOCK is not set)")
            self._agent = asyncssh.SSHAgentClient(path)
        try:
            keys = await self._agent.get_keys()
        except (OSError, asyncssh.Error) as exc:
            raise ConfigError(f"ssh.private_key is not set and the ssh-agent at SSH_AUTH_SOCK does not answer "
                              f"({one_line(str(exc))})") from None
        if not keys:
            raise ConfigError("ssh.private_key is not set and the ssh-agent (SSH_AUTH_SOCK) holds no key")
        return list(keys)

    async def _jump_connection(self) -> _Connection:
        assert self.login.jump_host
        if self._jump is None or not self._jump.alive:
            user, host, port = parse_jump_host(self.login.jump_host, self.login)
            self._jump = await self._open(host, port, user, None, f"jump host {self.login.jump_host}")
        return self._jump

    async def _connection(self, address: str) -> _Connection:
        lock = self._connecting.setdefault(address, asyncio.Lock())
        async with lock:
            current = self._connections.get(address)
            if current is not None and current.alive:
                return current
            tunnel = (await self._jump_connection()).conn if self.login.jump_host else None
            host, port = split_host(address, self.login.port)
            opened = await self._open(host, port, self.login.user, tunnel, address)
            self._connections[address] = opened
            return opened

    async def _open(self, host: str, port: int, user: str, tunnel: Any, name: str) -> _Connection:
        """One connection; SSHError '<name>: why' (why in a few words) when it fails."""
        client = _Client()
        timeout = self.login.connect_timeout
        try:
            conn = await self._connect(host, port, user, tunnel, client, self._known_hosts)
        except asyncssh.HostKeyNotVerifiable:
            raise SSHError(f"{name}: {self._host_key_refusal(host, port, client.offered)}") from None
        except asyncssh.PermissionDenied:
            raise SSHError(f"{name}: authentication refused for user {user} (is the key in "
                           f"~{user}/.ssh/authorized_keys on the host?)") from None
        except (asyncio.TimeoutError, TimeoutError):
            raise SSHError(f"{name}: timed out connecting to port {port} after {timeout:g}s (ssh.connect_timeout)"
                           ) from None
        except socket.gaierror as exc:
            raise SSHError(f"{name}: cannot resolve the host name ({exc.strerror or exc})") from None
        except ConnectionRefusedError:
            raise SSHError(f"{name}: connection refused on port {port} (no SSH server listening)") from None
        except asyncssh.ChannelOpenError as exc:  # through a jump host
            raise SSHError(f"{name}: the jump host could not reach port {port} ({one_line(exc.reason)})") from None
        except (asyncssh.Error, OSError) as exc:
            if self._listed(host, port) and (offered := await self._offered_key(host, port, user, tunnel)):
                # known_hosts lists only key types the host does not have: sshd hung up in the key exchange
                raise SSHError(f"{name}: {self._host_key_refusal(host, port, offered)}") from None
            why = exc.reason if isinstance(exc, asyncssh.Error) else (exc.strerror or str(exc))
            raise SSHError(f"{name}: cannot connect to port {port} ({one_line(why or type(exc).__name__)})") from None
        return _Connection(conn, client, asyncio.Semaphore(MAX_SESSIONS))

    async def _connect(self, host: str, port: int, user: str, tunnel: Any, client: _Client,
                       known_hosts: asyncssh.SSHKnownHosts) -> asyncssh.SSHClientConnection:
        timeout = self.login.connect_timeout
        return await asyncio.wait_for(asyncssh.connect(
            host, port, tunnel=tunnel, username=user, client_factory=lambda: client,
            known_hosts=known_hosts, client_keys=await self._keys(), agent_path=None, passphrase=None,
            config=[], password=None, kbdint_auth=False, gss_auth=False, host_based_auth=False,
            preferred_auth="publickey", connect_timeout=timeout, login_timeout=timeout,
            keepalive_interval=self.login.keepalive_interval, keepalive_count_max=self.login.keepalive_count_max,
        ), timeout + 1)

    async def _offered_key(self, host: str, port: int, user: str, tunnel: Any) -> asyncssh.SSHKey | None:
        """The key the host offers when any key type is allowed; refused all the same (nothing trusted)."""
        client = _Client()
        with contextlib.suppress(asyncssh.Error, OSError):
            conn = await self._connect(host, port, user, tunnel, client, asyncssh.import_known_hosts(""))
            conn.close()  # unreachable: nothing is trusted, validate_host_public_key says no
        return client.offered

    def _listed(self, host: str, port: int) -> bool:
        return any(self._known_hosts.match(host, "", port if port != 22 else None)[:2])

    def _host_key_refusal(self, host: str, port: int, offered: asyncssh.SSHKey | None) -> str:
        listed = self._listed(host, port)
        state = "changed (known_hosts lists another key for it)" if listed else "unknown (not in known_hosts)"
        if offered is None:
            return f"host key {state}; refused, nothing run"
        fingerprint = offered.get_fingerprint("sha256")
        return f"host key {state}: it offers {offered.get_algorithm()} {fingerprint}; refused, nothing run"

    async def _close_all(self) -> None:
        connections = list(self._connections.values()) + ([self._jump] if self._jump else [])
        self._connections.clear()
        for c in connections:
            for listener in c.listeners:
                listener.close()
            c.conn.close()
        await asyncio.gather(*(c.conn.wait_closed() for c in connections), return_exceptions=True)
        if self._agent is not None:
            self._agent.close()
            await self._agent.wait_closed()

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        """A task on the loop that nobody awaits (kept referenced until it ends)."""
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _socket_path(self) -> str:
        with self._mutex:
            if self._socket_dir is None:
                self._socket_dir = tempfile.mkdtemp(prefix="bluegreen-ssh-")  # mode 700: ours alone
            return os.path.join(self._socket_dir, f"{next(self._socket_numbers)}.sock")


async def _release_when_closed(process: asyncssh.SSHClientProcess, sessions: asyncio.Semaphore) -> None:
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        await asyncio.wait_for(process.wait_closed(), 60)
    sessions.release()


HostErrors = NamedErrors  # some hosts of an `each` failed: one line, `app2: why; app3: why`


class SSHHost:
    """One host over its pooled connection: a `bluegreen.remote.Shell`."""

    def __init__(self, pool: SSHPool, address: str) -> None:
        self.pool = pool
        self.name = address

    def __repr__(self) -> str:
        return f"SSHHost({self.name!r})"

    def run(self, command: str, *, input: str | None = None, timeout: float | None = None) -> CommandResult:
        return self.pool._call(self._run(command, input, timeout))

    def dial_tcp(self, host: str, port: int) -> tuple[str, int]:
        """A local port forwarded to host:port as this host sees it (opened once; dial again after a lost
        connection: the old local end died with it)."""
        return self.pool._call(self._dial_tcp(host, port))

    def dial_unix(self, path: str) -> str:
        """A local unix socket (in a private temp folder) forwarded to `path` on this host."""
        return self.pool._call(self._dial_unix(path))

    def probe_tcp(self, host: str, port: int, timeout: float = 1.0) -> str | None:
        """None if host:port accepts a connection from this host (sshd connects for us), else why not."""
        return self.pool._call(self._probe_tcp(host, port, timeout))

    # --- on the loop -------------------------------------------------------------------------------

    async def _run(self, command: str, input: str | None, timeout: float | None) -> CommandResult:
        c = await self.pool._connection(self.name)
        await c.sessions.acquire()  # released once sshd has closed the session: it counts it until then
        try:
            process = await self._open_session(c, command, input)
        except (asyncssh.Error, OSError) as exc:
            c.sessions.release()
            raise self._lost(exc, f"running `{command[:80]}`") from None
        try:
            done = await process.wait(check=False, timeout=timeout)
        except asyncssh.TimeoutError:
            with contextlib.suppress(asyncssh.Error, OSError):
                process.send_signal("KILL")  # sshd keeps the session until the command ends
            raise SSHError(f"{self.name}: `{command[:80]}` did not end within {timeout:g}s") from None
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"running `{command[:80]}`") from None
        finally:
            process.close()
            self.pool._background(_release_when_closed(process, c.sessions))
        if done.returncode is None:  # the channel closed without an exit status: the connection went down
            await asyncio.sleep(0)  # let connection_lost land first
            raise self._lost(c.client.lost_reason or "the session ended without an exit status",
                             f"running `{command[:80]}`")
        return CommandResult(done.returncode, str(done.stdout or ""), str(done.stderr or ""))

    @staticmethod
    async def _open_session(c: _Connection, command: str, input: str | None) -> asyncssh.SSHClientProcess:
        """sshd frees a session only once it has reaped the command, a moment after the channel closed: a
        refusal then ("no more sessions") is retried for a second while the connection lives."""
        for _ in range(20):
            try:
                return await c.conn.create_process(command, input=input, errors="replace")
            except asyncssh.ChannelOpenError:
                if not c.alive:
                    raise
                await asyncio.sleep(0.05)
        return await c.conn.create_process(command, input=input, errors="replace")

    async def _dial_tcp(self, host: str, port: int) -> tuple[str, int]:
        c = await self.pool._connection(self.name)
        if (host, port) not in c.tcp_forwards:
            try:
                listener = await c.conn.forward_local_port("127.0.0.1", 0, host, port)
            except (asyncssh.Error, OSError) as exc:
                raise self._lost(exc, f"forwarding a local port to {host}:{port}") from None
            c.listeners.append(listener)
            c.tcp_forwards[(host, port)] = ("127.0.0.1", listener.get_port())
        return c.tcp_forwards[(host, port)]

    async def _dial_unix(self, path: str) -> str:
        c = await self.pool._connection(self.name)
        if path not in c.unix_forwards:
            local = self.pool._socket_path()
            try:
                listener = await c.conn.forward_local_path(local, path)
            except (asyncssh.Error, OSError) as exc:
                raise self._lost(exc, f"forwarding a local socket to {path}") from None
            c.listeners.append(listener)
            c.unix_forwards[path] = local
        return c.unix_forwards[path]

    async def _probe_tcp(self, host: str, port: int, timeout: float) -> str | None:
        c = await self.pool._connection(self.name)
        try:
            _, writer = await asyncio.wait_for(c.conn.open_connection(host, port), timeout)
        except asyncssh.ChannelOpenError as exc:
            return f"nothing accepts connections on {host}:{port} as {self.name} sees it ({one_line(exc.reason)})"
        except (asyncio.TimeoutError, TimeoutError):
            return f"no answer from {host}:{port} as {self.name} sees it within {timeout:g}s"
        except (asyncssh.Error, OSError) as exc:
            raise self._lost(exc, f"probing {host}:{port}") from None
        writer.close()
        return None

    def _lost(self, exc: BaseException | str, doing: str) -> SSHError:
        why = exc if isinstance(exc, str) else exc.reason if isinstance(exc, asyncssh.Error) else (
            getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        detail = f" ({one_line(why)})" if why and why.lower() != "connection lost" else ""
        return SSHError(f"{self.name}: connection lost {doing}{detail}")
