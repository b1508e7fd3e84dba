"""Shared fixtures: a local-target environment with real processes (the example app, a real Caddy)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

# The session fails when a process or container a test started outlives it (tests/leakcheck.py).
pytest_plugins = ["leakcheck"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_APP = ROOT / "examples" / "app" / "app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port: int) -> bool:
    """Something answers HTTP on 127.0.0.1:`port` (any status)."""
    try:
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
        return True
    except httpx.HTTPError:
        return False


@dataclass
class LocalEnv:
    """One app environment on the local target, in a temp dir, on free ports."""

    dir: Path
    config: Path
    proxy_port: int
    ports: dict[str, int]
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
                app: testapp
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
