"""A cancelled pipeline, cell by cell: phase x signal, on the local target with the real Caddy and app.

Each test deploys version 1, starts `deploy --version 2` as its own process, waits until the run
says (in its lock) that it is in the phase under test, sends the signal(s) as a CI platform does,
and then checks what a person would: where live traffic is (through the proxy), the lock, the
report's status, the history, and leftover processes. SIGKILL cannot be handled: there the next
run must recover by itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bluegreen.config import CaddyRouter
from bluegreen.routers.caddy import CaddyRouter as CaddyFileRouter

GITHUB_BUDGET = 7.5 + 2.5  # SIGINT, SIGTERM 7.5 s later, SIGKILL 2.5 s after that

SUITE = (
    'test_suite:\n  command: ["{python}", "-c", "import os, sys, time; '
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(60)\", \"suite.pid\"]\n"
)


def _phase_config(env, phase: str) -> tuple[str, str]:
    """A config whose run stays in `phase` long enough to be cancelled there, and the version to deploy."""
    env.write(test_suite=SUITE if phase == "test suite" else "")
    text = env.config.read_text()
    env.write()  # version 1 goes live with the ordinary config
    if phase == "wait ready green":
        text = text.replace("timeouts: {ready: 10s}", "timeouts: {ready: 60s}")
        return text, "2+fail-health"
    if phase == "smoke checks":
        text = text.replace("smoke:\n  timeout: 5s", "smoke:\n  timeout: 60s")
        text = text.replace("expect: {status: 200, body_contains", "expect: {status: 299, body_contains")
    if phase == "verify live":
        text = text.replace("window: 0.5s", "window: 60s")
    return text, "2"


def _start_deploy(env, version: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", str(env.config), "--version", version],
        cwd=env.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BLUEGREEN_CI": "plain"},
        # A background job of a non-interactive shell starts with SIGINT ignored; a CI runner's step does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _lock(env) -> dict | None:
    try:
        return json.loads((env.dir / "state" / "lock.json").read_text())
    except (OSError, ValueError):
        return None


def _wait_for_phase(env, run: subprocess.Popen, phase: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        lock = _lock(env)
        if lock and lock.get("phase") == phase and (phase != "test suite" or (env.dir / "suite.pid").exists()):
            time.sleep(0.3)  # well inside the phase
            return
        if run.poll() is not None:
            raise AssertionError(f"the run ended before phase {phase!r}: {run.communicate()[1]}")
        assert time.monotonic() < deadline, f"the run never reached phase {phase!r} (lock: {lock})"
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _live_colour(env) -> str | None:
    """Read from the router's own upstream file: exactly one colour, never something in between."""
    router = CaddyFileRouter(
        CaddyRouter(listen=f"127.0.0.1:{env.proxy_port}", manage=False),
        {c: [f"127.0.0.1:{p}"] for c, p in env.ports.items()}, env.dir / "state", "app",
    )
    return router.live()


def _history(env) -> list[dict]:
    status = env.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)["history"]


PHASES = ["wait ready green", "test suite", "smoke checks", "verify live"]
SIGNALS = ["SIGINT", "SIGTERM", "SIGINT+SIGTERM"]


@pytest.mark.parametrize("signals", SIGNALS)
@pytest.mark.parametrize("phase", PHASES)
def test_cancel(local_env, phase: str, signals: str) -> None:
    text, version = _phase_config(local_env, phase)
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    before = _history(local_env)
    local_env.config.write_text(text)
    run = _start_deploy(local_env, version)
    try:
        _wait_for_phase(local_env, run, phase)
        # The report on disk is this run's from its start, never the previous run's "succeeded".
        assert local_env.report()["status"] == "running"
        sent = time.monotonic()
        first, _, second = signals.partition("+")
        run.send_signal(getattr(signal, first))
        if second:
            time.sleep(0.3)  # GitHub's second signal arrives while the first is being handled
            run.send_signal(getattr(signal, second))
        _, stderr = run.communicate(timeout=GITHUB_BUDGET + 5)
        took = time.monotonic() - sent
    finally:
        if run.poll() is None:
            run.kill()
    assert "Traceback" not in stderr, stderr
    assert took < GITHUB_BUDGET, f"took {took:.1f}s to stop"
    print(f"\n{phase} / {signals}: exit {run.returncode} {took:.2f}s after the first signal")
    after_switch = phase == "verify live"
    assert run.returncode == (4 if after_switch else 1), stderr

    report = local_env.report()
    assert report["status"] == "cancelled"
    assert report["cancelled_in"] == phase
    assert f"cancelled by {first}" in report["reason"]
    assert report["switched"] is False and report["switched_back"] is after_switch
    assert local_env.live_version() == "1"
    assert _live_colour(local_env) == "blue"
    assert _lock(local_env) is None, "the lock was left behind"

    history = _history(local_env)
    if after_switch:  # the switch and the switch back are on record
        assert history[0]["outcome"] == "cancelled" and history[0]["version"] == version
        assert "switched back to blue" in history[0]["detail"]
        assert history[1:] == before
    else:
        assert history == before
    if phase == "test suite":
        pid = int((local_env.dir / "suite.pid").read_text())
        assert not _pid_alive(pid), "the test suite's process outlived the run"

    # Nothing is stuck: the next deploy goes through at once.
    local_env.write()
    again = local_env.cli("deploy", "--version", "3")
    assert again.returncode == 0, again.stderr
    assert local_env.live_version() == "3"


@pytest.mark.parametrize("phase", PHASES)
def test_killed_outright_the_next_run_recovers(local_env, phase: str) -> None:
    text, version = _phase_config(local_env, phase)
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    local_env.config.write_text(text)
    run = _start_deploy(local_env, version)
    try:
        _wait_for_phase(local_env, run, phase)
    finally:
        run.kill()
        run.communicate(timeout=10)

    # The router is on exactly one colour: blue before the switch, green (unverified) after it.
    expected = "green" if phase == "verify live" else "blue"
    assert _live_colour(local_env) == expected
    assert local_env.report()["status"] == "running"  # an unfinished run, never a stale "succeeded"
    if phase == "test suite":
        pid = int((local_env.dir / "suite.pid").read_text())
        deadline = time.monotonic() + 5
        while _pid_alive(pid):
            assert time.monotonic() < deadline, "the test suite outlived the killed run"
            time.sleep(0.05)

    status = local_env.cli("status")
    assert status.returncode == 0, status.stderr
    assert f"interrupted during deploy, in phase '{phase}'" in status.stdout, status.stdout
    assert "its process is gone" in status.stdout

    # The next run takes the lock over at once (no waiting for its expiry), redeploys the idle colour.
    started = time.monotonic()
    local_env.write()  # the ordinary config again
    again = local_env.cli("deploy", "--version", "3")
    assert again.returncode == 0, again.stderr
    assert time.monotonic() - started < 30
    assert "took over the deploy lock" in again.stderr
    assert local_env.live_version() == "3"
    history = _history(local_env)
    assert history[0]["outcome"] == "succeeded" and history[0]["version"] == "3"
    assert history[1]["outcome"] == "interrupted"
    assert f"interrupted during deploy, in phase '{phase}'" in history[1]["detail"]
    assert _lock(local_env) is None
