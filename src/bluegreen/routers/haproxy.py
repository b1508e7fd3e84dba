"""HAProxy (Debian `haproxy`) switched through its Runtime API, never by a reload.

The frontend picks its backend per request from a map:

    use_backend %[str(<key>),map(<map_file>,<fallback>)]

bluegreen owns the one entry `<key> -> <app>_blue | <app>_green`. A switch is one `set map` over the stats
socket (`level admin`): atomic, ~7 ms here, no failed requests, and kept-alive client connections follow it
(a reload closes them: docs/architecture.md). `show map` reads the live value back from HAProxy itself. The
map file on disk gets the same line first (temp file + rename), so a reload or restart comes back on the live
colour, and a disk that cannot be written stops the switch before live routing changes.

A split (a canary step) points the entry at a third backend with both colours as servers `blue` and `green`,
whose weights are set just before (`set server <split>/<colour> weight N`). For a split the file keeps the
stable colour (the larger share): a restart mid-canary goes back to all-stable, never to a split nobody set.
With several servers per colour (a load balancer in front of N app hosts), the split backend still has the two
servers `blue` and `green`: each reaches its colour's backend (every host) through an internal frontend, as
examples/servers/haproxy.cfg shows, so a split never depends on how many hosts there are.

On another host (a `remote.Shell`), the Runtime API is reached through the shell's forward of its socket: a forward
opens even when nothing listens behind it, so an empty answer is asked again (`show version`) before deciding
between an answer lost and a Runtime API that is not there.
"""

from __future__ import annotations

import re
import shlex
import socket
from pathlib import Path

from ..config import COLOURS, Colour, render, shorten
from ..config import HAProxyRouter as HAProxyConfig
from ..errors import TargetError
from ..remote import Shell
from ..report import write_atomic
from ..state.files import state_io
from ..traffic import Weights, all_to, larger_share
from .proxy import ProxyRouter, Unreachable, find_binary, split_address

TIMEOUT = 5.0  # seconds for one Runtime API command: no answer by then is a lost answer
NO_LIVE = "bluegreen_none"  # the managed config's backend before the first release


class HAProxyRouter(ProxyRouter):
    kind = "haproxy"
    weighted = True
    config: HAProxyConfig

    def __init__(self, config: HAProxyConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        super().__init__(config, upstreams, state_dir, app, shell)
        folder = state_dir if shell else state_dir.resolve()  # a path on another host is never resolved here
        self.socket = config.socket or str(folder / "haproxy.sock")
        self.map_file = config.map_file or str(folder / "haproxy.map")
        self.key = render(config.key, app=app)
        self.backends: dict[Colour, str] = {c: render(getattr(config.backends, c), app=app) for c in COLOURS}
        self.split = render(config.split_backend, app=app)

    # --- the Runtime API: one command per connection ------------------------------------------

    @property
    def _tcp(self) -> bool:
        _, colon, port = self.socket.rpartition(":")
        return "/" not in self.socket and bool(colon) and port.isdigit()

    def _api(self, command: str) -> str:
        """HAProxy answers one command and closes the connection: its answer, stripped."""
        answer, closed = self._exchange(command)
        if not answer:
            if self.shell and not self._exchange("show version")[0]:
                # A forward's local end accepts even when nothing answers behind it on the host: HAProxy always
                # says something (its shortest answer is a newline), so silence twice is no Runtime API there.
                raise Unreachable(self.name, f"no Runtime API answers at {self.socket} ({closed})")
            # sent, but the answer was lost: the caller reads back before deciding
            raise TargetError(f"router {self.name}: no answer from its Runtime API at {self.socket} to `{command}` "
                              f"({closed})")
        return answer.decode(errors="replace").strip()

    def _exchange(self, command: str) -> tuple[bytes, str]:
        """One command on a new connection: HAProxy's answer, and why it is empty when it is."""
        try:
            if self._tcp:
                conn = socket.create_connection(self.dial_tcp(*split_address(self.socket)), timeout=TIMEOUT)
            else:
                path = self.dial_unix(self.socket)
                conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                conn.settimeout(TIMEOUT)
                try:
                    conn.connect(path)
                except OSError:
                    conn.close()
                    raise
        except OSError as exc:
            raise Unreachable(self.name, f"no Runtime API answers at {self.socket} ({exc.strerror or exc})") from None
        chunks: list[bytes] = []
        with conn:
            try:
                conn.sendall(command.encode() + b"\n")
                while chunk := conn.recv(65536):
                    chunks.append(chunk)
            except OSError as exc:
                chunks, closed = [], exc.strerror or "timed out"
            else:
                closed = "closed without a word"  # HAProxy's shortest answer is a newline
        return b"".join(chunks), closed

    def _run(self, command: str) -> None:
        """A command whose success is an empty answer; anything else is HAProxy's error, quoted."""
        answer = self._api(command)
        if answer:
            raise TargetError(f"router {self.name}: HAProxy refused `{command}`: {shorten(answer)!r}")

    def _runtime_entry(self) -> str | None:
        answer = self._api(f"show map {self.map_file}")
        for line in answer.splitlines():  # "0x55d0c08e2ad0 <key> <value>"
            parts = line.split(None, 2)
            if len(parts) != 3 or not parts[0].startswith("0x"):
                raise TargetError(f"router {self.name}: `show map {self.map_file}` answered {shorten(answer)!r} "
                                  "(router.map_file must name the map exactly as the HAProxy config does)")
            if parts[1] == self.key:
                return parts[2]  # the first one wins, as in HAProxy's own lookup
        return None

    # --- the map file on disk -----------------------------------------------------------------

    def _file_lines(self) -> list[str]:
        text = self.files.read(Path(self.map_file), "read the router's map file")
        return text.splitlines() if text else []

    def _file_entry(self, lines: list[str] | None = None) -> str | None:
        for line in self._file_lines() if lines is None else lines:
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0] == self.key:
                return parts[1].strip()
        return None

    def _write_file(self, backend: str | None, old: list[str] | None = None) -> None:
        """Our line set to `backend` (None: removed), the other lines (`old`: as just read) kept, in one atomic
        rename; the file keeps its mode (HAProxy may run as its own user)."""
        lines, ours = [], f"{self.key} {backend}"
        for line in self._file_lines() if old is None else old:
            if line.split(None, 1)[:1] == [self.key]:
                if backend:
                    lines.append(ours)
                backend = None  # written (or removed) once
            else:
                lines.append(line)
        if backend:
            lines.append(ours)
        self.files.write(Path(self.map_file), "".join(line + "\n" for line in lines), "write the router's map file",
                         mode=0o644, keep_mode=True)

    # --- the Router interface -----------------------------------------------------------------

    def read(self) -> Weights | None:
        try:
            backend = self._runtime_entry()
        except Unreachable:
            if not self.process or self.process.running_pid():
                raise
            backend = self._file_entry()  # our proxy is not running: the file is what it starts with
        return self._weights_of(backend)

    def _weights_of(self, backend: str | None) -> Weights | None:
        if backend is None:
            return None
        for colour in COLOURS:
            if backend == self.backends[colour]:
                return all_to(colour)
        if backend == self.split:
            return self._split_weights()
        raise TargetError(
            f"router {self.name}: map {self.map_file} sends {self.key!r} to {shorten(backend)!r}, which is neither "
            f"blue ({self.backends['blue']}) nor green ({self.backends['green']}) nor the split ({self.split}): "
            f"set it back to the live colour's backend (the raw rollback command does), then deploy"
        )

    def _split_weights(self) -> Weights:
        raw: dict[Colour, int] = {}
        for colour in COLOURS:
            command = f"get weight {self.split}/{colour}"
            match = re.match(r"(\d+) \(initial \d+\)$", answer := self._api(command))  # "10 (initial 50)"
            if not match:
                raise TargetError(f"router {self.name}: `{command}` answered {shorten(answer)!r}")
            raw[colour] = int(match.group(1))
        total = sum(raw.values())
        if total == 0:
            raise TargetError(f"router {self.name}: the split backend {self.split} has both weights at 0 (it serves "
                              "nothing)")
        blue = round(100 * raw["blue"] / total)
        return {"blue": blue, "green": 100 - blue}

    def write(self, weights: Weights) -> None:
        stable = larger_share(weights)
        backend = self.backends[stable] if weights[stable] == 100 else self.split
        if backend == self.split:  # weights first: the split serves them from its first request
            for colour in COLOURS:
                self._run(f"set server {self.split}/{colour} weight {weights[colour]}")
        persist = self.config.write_map_file
        lines = self._file_lines() if persist else []
        previous = self._file_entry(lines) if persist else None
        if persist:  # first: a disk that cannot be written stops the switch before live routing changes
            self._write_file(self.backends[stable], lines)  # for a split, the stable colour (module docstring)
        try:
            answer = self._api(f"set map {self.map_file} {self.key} {backend}")
            if answer.startswith("entry not found"):  # the first release on this HAProxy: the key is new
                self._run(f"add map {self.map_file} {self.key} {backend}")
            elif answer:
                raise TargetError(f"router {self.name}: HAProxy refused `set map`: {shorten(answer)!r}")
        except TargetError:
            if persist and not self._runtime_has(backend):
                self._write_file(previous)  # the file keeps what HAProxy routes by, for its next restart
            raise

    def _runtime_has(self, backend: str) -> bool:
        try:
            return self._runtime_entry() == backend
        except TargetError:
            return False

    def reachable(self) -> str | None:
        try:
            self._api("show version")
        except Unreachable as exc:
            return exc.why
        except TargetError as exc:
            return str(exc)
        return super().reachable()  # the Runtime API answers: does the frontend listen?

    def reset(self) -> None:
        """`down`: our entry leaves the map file (and the running HAProxy, if one answers)."""
        if self.config.write_map_file:
            self._write_file(None)
        try:
            self._api(f"del map {self.map_file} {self.key}")
        except TargetError:
            pass  # nothing runs (down stopped our proxy): the file is what counts

    def raw_switch_command(self, to: Colour) -> str:
        command = f"set map {self.map_file} {self.key} {self.backends[to]}"
        address = f"tcp:{self.socket}" if self._tcp else f"unix-connect:{self.files.show(Path(self.socket))}"
        api = f"echo {shlex.quote(command)} | socat stdio {shlex.quote(address)}"
        if not self.config.write_map_file:
            return api
        sed = f"s/^{sed_escape(self.key)}[[:space:]].*/{self.key} {self.backends[to]}/"
        return f"sed -i {shlex.quote(sed)} {shlex.quote(self.files.show(Path(self.map_file)))} && {api}"

    def start(self) -> None:
        config_file = self.state_dir / "haproxy.cfg"
        map_path = Path(self.map_file)
        with state_io(config_file, "write the router's config"):
            if not map_path.exists():  # HAProxy refuses to start without its map file
                write_atomic(map_path, "", mode=0o644)
            write_atomic(config_file, self._haproxy_config())
        assert self.process
        self.process.spawn([find_binary(self.config.binary, "apt-get install haproxy"), "-db", "-f", str(config_file)],
                           ready=lambda: self.reachable() is None, timeout=10)

    def _haproxy_config(self) -> str:
        if self._tcp:
            host, port = split_address(self.socket)
            stats = f"{'ipv6' if ':' in host else 'ipv4'}@{host}:{port}"
        else:
            stats = str(Path(self.socket).resolve()) + " mode 600"
        return f"""\
# Written by bluegreen (router.manage: true) at each start; the live colour is in {self.map_file}.
global
    stats socket {stats} level admin

defaults
    mode http
    option forwardfor  # the app sees its users' addresses, as behind the other routers
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend bluegreen
    bind {self.config.listen}
    use_backend %[str({self.key}),map({self.map_file},{NO_LIVE})]

backend {NO_LIVE}
    http-request return status 503 content-type text/plain string "no release is live yet"

backend {self.backends['blue']}
{self._server_lines('blue')}
backend {self.backends['green']}
{self._server_lines('green')}
backend {self.split}
{self._server_lines('blue', ' weight 50')}{self._server_lines('green', ' weight 50')}"""

    def _servers(self, colour: Colour) -> list[str]:
        """The managed config's server names of a colour: `blue`, then `blue_2`... (bluegreen's own targets give a
        managed HAProxy one upstream per colour, so its split backend holds the servers `blue` and `green`)."""
        return [colour, *(f"{colour}_{n}" for n in range(2, len(self.upstreams[colour]) + 1))]

    def _server_lines(self, colour: Colour, extra: str = "") -> str:
        return "".join(f"    server {name} {address}{extra}\n"
                       for name, address in zip(self._servers(colour), self.upstreams[colour]))


def sed_escape(text: str) -> str:
    """`text` matched literally in a sed regex (keys are names: letters, digits, - _ . :)."""
    return re.sub(r"([.^$*\[\]/\\])", r"\\\1", text)
