"""Shared fixtures: a local-target environment with real processes (the example app, a real Caddy)."""

from __future__ import annotations

import http.client
import http.server
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

# The session fails when a process or container a test started outlives it (tests/leakcheck.py).
pytest_plugins = ["leakcheck"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_APP = ROOT / "examples" / "app" / "app.py"


# Each xdist worker takes ports from its own range, below Linux's ephemeral range (32768-60999): a port the kernel
# hands out (port 0) could be handed to another worker too before the first one's app binds it, or taken as the
# source port of an outgoing connection while a colour restarts.
_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_PORTS = range(12000 + 2500 * _WORKER, 12000 + 2500 * (_WORKER + 1))
# From a random start: two sessions on one machine (a developer's and a helper's) rarely try the same ports.
_start = random.randrange(len(_PORTS))
_next_port = itertools.cycle([*_PORTS[_start:], *_PORTS[:_start]])


def free_port() -> int:
    """A port nothing listens on or is bound to now, from this worker's range."""
    for port in itertools.islice(_next_port, len(_PORTS)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORTS}")


def serving(port: int) -> bool:
    """Something answers HTTP on 127.0.0.1:`port` (any status)."""
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except httpx.HTTPError:
        return False


def accepts(port: int) -> bool:
    """Something accepts TCP connections on 127.0.0.1:`port` (a listening socket, answering or not)."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group_left(pgid: int) -> list[int]:
    """The processes of group `pgid` still running; a zombie not reaped yet (by us or by init) has closed its
    sockets and counts as gone."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone while we looked
        if int(group) == pgid and state != "Z":
            left.append(int(stat.parent.name))
    return left


def kill_and_wait(leader: subprocess.Popen | int, port: int | None = None, sig: int = signal.SIGKILL,
                  timeout: float = 10) -> None:
    """Signal the process group `leader` leads (started with start_new_session=True, or the pid of such a
    process, e.g. from a pid file) and return only once the stop is complete: every process of the group gone,
    and `port`, if given, refusing connections. Why not wait for the leader alone: nginx's workers, killed with
    their master, can hold its listening socket a moment longer, and a test that then asserts the proxy is down
    failed now and then on a busy machine (issue 22)."""
    pgid = leader if isinstance(leader, int) else leader.pid
    reaped = isinstance(leader, subprocess.Popen) and leader.returncode is not None
    if not reaped:  # (a reaped leader's pid may be another process's by now: never signalled)
        if isinstance(leader, subprocess.Popen) and leader.poll() is None:
            assert os.getpgid(pgid) == pgid, f"pid {pgid} leads no process group: start it with start_new_session=True"
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass  # gone already: still make sure of its port
    if isinstance(leader, subprocess.Popen):
        leader.wait(timeout)  # ours: reaped here
    deadline = time.monotonic() + timeout
    while left := _group_left(pgid):
        assert time.monotonic() < deadline, f"process group {pgid}: {left} still run {timeout:g} s after signal {sig}"
        time.sleep(0.02)
    while port is not None and accepts(port):
        assert time.monotonic() < deadline, f"127.0.0.1:{port} still accepts connections after its process group " \
                                            f"{pgid} is gone"
        time.sleep(0.02)


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A test server's request handler: no access log on stderr."""

    def log_message(self, *args: object) -> None:
        pass


class LocalHTTPServer:
    """A real HTTP server on 127.0.0.1 in a thread, serving a test's own handler; `close` stops it (and
    `released`, set first, ends any request a handler holds open)."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.released = threading.Event()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return self.base_url

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


class Forwarder(LocalHTTPServer):
    """A real HTTP server on 127.0.0.1 standing for what users reach (a CDN, a load balancer's data plane): each GET
    goes to the base URL `route()` names for it, or is answered 503 with `unavailable` when it names none.
    `paths` counts what it was asked."""

    def __init__(self, route: Callable[[], str | None], unavailable: bytes = b"no upstream\n") -> None:
        self.paths: Counter[str] = Counter()
        forwarder = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                forwarder.paths[self.path] += 1
                upstream = route()
                if upstream is None:
                    status, body, kind = 503, unavailable, "text/plain"
                else:
                    try:
                        answer = httpx.get(upstream + self.path, timeout=5)
                    except httpx.HTTPError:
                        self.send_error(502)
                        return
                    status, body = answer.status_code, answer.content
                    kind = answer.headers.get("Content-Type", "text/plain")
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(Handler)


class KeptAliveLoad:
    """`clients` kept-alive connections to `host`:`port` asking GET /version until the block ends (bounded):
    `served` counts the versions that answered, `failures` lists every error or non-200 answer."""

    def __init__(self, port: int, clients: int = 4, limit: int = 1_000_000, host: str = "127.0.0.1") -> None:
        self.host, self.port, self.limit = host, port, limit
        self.served: Counter[str] = Counter()
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:  # one kept-alive connection, as a browser or an upstream proxy holds one
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        for _ in range(self.limit):
            if self.stop.is_set():
                break
            try:
                conn.request("GET", "/version")
                response = conn.getresponse()
                body = response.read().decode().strip()
                if response.status != 200:
                    self.failures.append(f"{response.status} {body}")
                else:
                    self.served[body] += 1
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        conn.close()

    def __enter__(self) -> "KeptAliveLoad":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


@dataclass
class LocalEnv:
    """One app environment on the local target, in a temp dir, on free ports."""

    dir: Path
    config: Path
    proxy_port: int
    ports: dict[str, int]
    app: str = "testapp"
    # Variables every CLI call gets: the secrets the config names as ${VAR}, which `down` at teardown needs too
    # (without them it cannot load the config, and the apps and the proxy outlive the test).
    environ: dict[str, str] = field(default_factory=dict)

    @property
    def live_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def write(self, extra: str = "", test_suite: str | None = None, top: str = "") -> Path:
        """(Re)write the config; `extra` is YAML added at the top level."""
        suite = test_suite if test_suite is not None else textwrap.dedent(
            """\
            test_suite:
              command: ["{python}", "%s"]
              timeout: 30s
            """ % (ROOT / "examples" / "local" / "acceptance_test.py")
        )
        self.config.write_text(
            textwrap.dedent(
                f"""\
                app: {self.app}
                {top}
                environments:
                  test:
                    target:
                      kind: local
                      command: ["{{python}}", "{EXAMPLE_APP}", "--port", "{{port}}", "--version", "{{version}}", "--colour", "{{colour}}"]
                      ports: {{blue: {self.ports['blue']}, green: {self.ports['green']}}}
                      state_dir: state
                      router: {{listen: "127.0.0.1:{self.proxy_port}"}}
                timeouts: {{ready: 10s}}
                smoke:
                  timeout: 5s
                  interval: 0.1
                  checks:
                    - name: version
                      path: /version
                      expect: {{status: 200, body_contains: "{{version}}"}}
                    - name: home
                      path: /
                      expect: {{json: {{version: "{{version}}"}}}}
                verify:
                  consecutive_successes: 2
                  window: 0.5s
                  interval: 0.1
                  timeout: 5s
                scale_down_delay: never
                """
            )
            + suite
            + textwrap.dedent(extra)
        )
        return self.config

    def run(self, *args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """The real CLI in a fresh process, from the env's folder; `env` adds to `environ` for this call."""
        return subprocess.run(
            [sys.executable, "-m", "bluegreen", *args], cwd=self.dir, capture_output=True, text=True,
            timeout=timeout, env={**os.environ, "BLUEGREEN_CI": "plain", **self.environ, **(env or {})},
        )

    def cli(self, command: str, *args: str, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return self.run(command, "-c", str(self.config), *args, timeout=timeout, env=env)

    def report(self) -> dict:
        return json.loads((self.dir / "bluegreen-report.json").read_text())

    def live_version(self) -> str:
        return httpx.get(self.live_url + "/version", timeout=5).text.strip()


@pytest.fixture
def local_env(tmp_path: Path):
    env = LocalEnv(
        dir=tmp_path, config=tmp_path / "bluegreen.yml", proxy_port=free_port(),
        ports={"blue": free_port(), "green": free_port()},
    )
    env.write()
    yield env
    env.cli("down", timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    """A failure the user caused is one line on stderr, never a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("bluegreen: error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


# Files whose tests must not run at the same time as each other's: act names its job containers after the workflow
# and the job (act-deploy-deploy-...), so two act runs of the same workflow at once would take each other's.
SERIAL_GROUPS = {"act": ("tests/github/test_act_",)}


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs `-n 4 --dist loadfile`: a module runs whole on one worker, so its module-scoped labs, images
    and clusters are built once; here the files of a SERIAL_GROUPS entry also share one worker, one after another.
    (A scheduler, not xdist_group marks: pytest 9 ignores the test ids xdist 3.8's loadgroup rewrites.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return next((name for name, prefixes in SERIAL_GROUPS.items() if module.startswith(prefixes)), module)

    return ModuleScheduling(config, log)


def pytest_unconfigure(config) -> None:
    """End `make test` (after pytest's own summary: the last lines) saying what it skipped and why,
    and the one command that runs everything."""
    terminalreporter = config.pluginmanager.get_plugin("terminalreporter")
    skipped = terminalreporter.stats.get("skipped", []) if terminalreporter else []
    if not skipped:
        return
    reasons: dict[str, int] = {}
    for report in skipped:
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    terminalreporter.section("skipped")
    for reason, count in sorted(reasons.items(), key=lambda item: -item[1]):
        terminalreporter.write_line(f"{count:4d} skipped: {reason}")
    terminalreporter.write_line(
        "To run everything (installs the Docker engine, act and gitlab-ci-local; a skip then fails): "
        "`make test-all` (= `bash .ci/run`)"
    )
