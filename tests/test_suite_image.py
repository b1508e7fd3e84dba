"""`test_suite.image`: the suite runs as a container of the team's own image on the real Docker engine,
against the local target's idle colour (the real app behind the real Caddy)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from github.support import docker_client, need_docker

# The suite needs a module only its image has (`appcheck`), like a team's pytest plugins or browsers.
APPCHECK = '''\
import json, os, sys, urllib.request
def check():
    url = os.environ["BLUEGREEN_PREVIEW_URL"] + "/version"
    got = urllib.request.urlopen(url, timeout=5).read().decode().strip()
    ok = got == os.environ["BLUEGREEN_VERSION"] and os.environ.get("SUITE_MUST_FAIL") != "1"
    failure = "" if ok else "<failure message='wrong'/>"
    with open("suite-junit.xml", "w") as f:
        f.write(f"<testsuite name='image' tests='1' failures='{0 if ok else 1}'><testcase name='version'>{failure}</testcase></testsuite>")
    print(f"checked {url}: {got}", flush=True)
    sys.exit(0 if ok else 3)
'''


@pytest.fixture(scope="module")
def suite_image(tmp_path_factory) -> str:
    need_docker()
    ctx = tmp_path_factory.mktemp("suite-image")
    (ctx / "appcheck.py").write_text(APPCHECK)
    (ctx / "Dockerfile").write_text("FROM python:3.12-slim\nCOPY appcheck.py /opt/deps/appcheck.py\n"
                                    "ENV PYTHONPATH=/opt/deps\n")
    tag = f"bluegreen-suite-test-{uuid.uuid4().hex[:8]}:1"
    subprocess.run(["docker", "build", "-q", "--network", "host", "-t", tag, str(ctx)], check=True,
                   capture_output=True, timeout=300)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=60)


def _suite(image: str, command: str = '["python", "-c", "import appcheck; appcheck.check()"]', extra: str = "") -> str:
    return textwrap.dedent(f"""\
        test_suite:
          image: "{image}"
          command: {command}
          junit: suite-junit.xml
          timeout: 60s
        """) + extra


APP = "suite" + uuid.uuid4().hex[:8]  # this module's app: other modules on other workers run suites in containers too


@pytest.fixture(autouse=True)
def _own_app(request) -> None:
    if "local_env" in request.fixturenames:
        request.getfixturevalue("local_env").app = APP


def _suite_containers() -> list[str]:
    with docker_client() as client:
        found = client.get("/containers/json", params={"all": 1, "filters": json.dumps({"label": [f"dev.bluegreen.test-suite={APP}"]})})
    return [c["Names"][0] for c in found.json()]


def test_image_suite_passes(local_env, suite_image: str) -> None:
    local_env.write(test_suite=_suite(suite_image))
    done = local_env.cli("deploy", "--version", "7")
    assert done.returncode == 0, done.stderr
    assert "checked http://127.0.0.1:" in done.stdout + done.stderr  # streamed to the log
    check = next(c for c in local_env.report()["checks"] if c["kind"] == "test_suite")
    assert check["passed"] and check["tests"] == 1 and check["failures"] == 0, check
    assert local_env.live_version() == "7"
    assert _suite_containers() == []


def test_image_suite_fails_exit_code_and_junit(local_env, suite_image: str) -> None:
    local_env.write(test_suite=_suite(suite_image, extra="  env: {SUITE_MUST_FAIL: '1'}\n"))
    done = local_env.cli("deploy", "--version", "8")
    assert done.returncode == 1, done.stderr
    report = local_env.report()
    check = next(c for c in report["checks"] if c["kind"] == "test_suite")
    assert not check["passed"] and check["failures"] == 1, check
    assert "exited with code 3" in check["detail"], check
    assert not report["switched"]
    assert _suite_containers() == []


def test_missing_image_fails_cleanly(local_env) -> None:
    need_docker()
    missing = f"bluegreen-no-such-image-{uuid.uuid4().hex[:8]}:1"
    local_env.write(test_suite=_suite(missing, extra="  pull: never\n"))
    done = local_env.cli("deploy", "--version", "9")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"test suite: image {missing} is not on the engine (test_suite.pull: never)" in local_env.report()["reason"]


def test_no_engine_fails_cleanly(local_env) -> None:
    local_env.write(test_suite=_suite("anything:1", extra="  docker_host: unix:///nonexistent\n"))
    done = local_env.cli("deploy", "--version", "9")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    reason = local_env.report()["reason"]
    assert reason.startswith("test suite: no Docker engine at /nonexistent: ") and "test_suite.image needs one" in reason


def test_cancel_removes_the_container(local_env, suite_image: str) -> None:
    local_env.write(test_suite=_suite(suite_image, command='["sleep", "300"]'))
    run = subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", str(local_env.config), "--version", "5"],
        cwd=local_env.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BLUEGREEN_CI": "plain"},
    )
    try:
        deadline = time.monotonic() + 60
        while not _suite_containers():
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the suite's container never started"
            time.sleep(0.1)
        time.sleep(0.5)
        sent = time.monotonic()
        run.send_signal(signal.SIGTERM)
        _, stderr = run.communicate(timeout=15)
        took = time.monotonic() - sent
    finally:
        if run.poll() is None:
            run.kill()
    print(f"\ncancelled in the image suite: exit {run.returncode} {took:.2f}s after SIGTERM")
    assert "Traceback" not in stderr, stderr
    assert run.returncode == 1, stderr
    assert _suite_containers() == []
    assert took < 8, took  # removed at once (SIGKILL), not stopped with Docker's 10 s grace; wide for a busy machine
    report = local_env.report()
    assert report["status"] == "cancelled" and report["cancelled_in"] == "test suite", report


def test_from_a_container_action_the_workspace_reaches_the_suite(suite_image: str, tmp_path: Path) -> None:
    """As on GitHub: bluegreen in the action's container, the workspace a host folder mounted at
    /github/workspace. The suite's container gets the HOST folder (found by inspecting bluegreen's
    own container), so the JUnit file it writes is read back; it shares bluegreen's network."""
    ROOT = Path(__file__).resolve().parent.parent
    action = f"bluegreen-action-suitetest:{uuid.uuid4().hex[:8]}"  # this checkout's action image, its own tag
    subprocess.run(["docker", "build", "-q", "-t", action, str(ROOT)], check=True, capture_output=True, timeout=600)
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    workspace.chmod(0o777)
    (workspace / "probe.py").write_text(textwrap.dedent(f"""\
        from pathlib import Path
        from bluegreen.checks.suite import run_test_suite
        from bluegreen.config import TestSuite
        suite = TestSuite(image="{suite_image}", pull="never", junit="out/junit.xml", command=[
            "sh", "-c", "mkdir -p out; echo \\"<testsuite tests='2' failures='0'/>\\" > out/junit.xml; echo host=$(hostname)"])
        check = run_test_suite(suite, base_dir=Path("/github/workspace"), env={{"BLUEGREEN_APP": "{APP}"}},
                               values={{}}, log=print)
        print("RESULT", check.passed, check.tests, check.detail)
        """))
    try:
        done = subprocess.run(
            ["docker", "run", "--rm", "-v", "/var/run/docker.sock:/var/run/docker.sock",
             "-v", f"{workspace}:/github/workspace", "-w", "/github/workspace",
             "--entrypoint", "/opt/bluegreen/bin/python", action, "/github/workspace/probe.py"],
            capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["docker", "rmi", "-f", action], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "RESULT True 2 exited with code 0; 2 tests, 0 failed" in done.stdout, done.stdout
    assert (workspace / "out" / "junit.xml").exists()  # written through the host path
    # The suite ran in the action container's network (and so UTS) namespace: its hostname is that container's id.
    host = next(line for line in done.stdout.splitlines() if line.startswith("host="))
    assert len(host) == len("host=") + 12, host
    assert _suite_containers() == []


def test_a_suite_past_its_timeout_fails_and_is_removed(local_env, suite_image: str) -> None:
    local_env.write(test_suite=_suite(suite_image, command='["sleep", "300"]').replace("timeout: 60s", "timeout: 2s"))
    started = time.monotonic()
    done = local_env.cli("deploy", "--version", "6")
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 30
    check = next(c for c in local_env.report()["checks"] if c["kind"] == "test_suite")
    assert not check["passed"] and check["detail"].startswith("timed out after 2s"), check
    assert _suite_containers() == []
