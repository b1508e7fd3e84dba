"""The docker target against the real Docker engine: containers per colour, a real Caddy, the real CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .support import docker_client, free_port, remove_containers, tag_example, unique


@dataclass
class DockerEnv:
    dir: Path
    app: str
    repository: str  # the image repository; tag_example() tags a version
    proxy: int
    ports: dict[str, int]

    @property
    def config(self) -> Path:
        return self.dir / "bluegreen.yml"

    def write(self, extra: str = "", target_extra: str = "",
              command: str = '["--version", "{version}", "--colour", "{colour}"]') -> None:
        self.config.write_text(textwrap.dedent(f"""\
            app: {self.app}
            environments:
              test:
                target:
                  kind: docker
                  image: "{self.repository}:{{version}}"
                  command: {command}
                  ports: {{blue: {self.ports['blue']}, green: {self.ports['green']}}}
                  router: {{listen: "127.0.0.1:{self.proxy}"}}
                  pull: never
                  stop_timeout: 2
            """) + textwrap.indent(textwrap.dedent(target_extra), " " * 6) + textwrap.dedent("""\
            timeouts: {ready: 20s}
            smoke:
              timeout: 5s
              interval: 0.1
              checks:
                - name: version
                  path: /version
                  expect: {body_contains: "{version}"}
            verify: {consecutive_successes: 2, window: 0.3s, interval: 0.1}
            scale_down_delay: 1s
            """) + textwrap.dedent(extra))

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "bluegreen", args[0], "-c", str(self.config), *args[1:]], cwd=self.dir,
            capture_output=True, text=True, timeout=timeout,
            env={**os.environ, "BLUEGREEN_CI": "plain", **(env or {})},
        )

    def report(self) -> dict:
        return json.loads((self.dir / "bluegreen-report.json").read_text())

    def live_version(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.proxy}/version", timeout=5).text.strip()

    def container(self, colour: str) -> dict | None:
        with docker_client() as client:
            response = client.get(f"/containers/{self.app}-test-{colour}/json")
        return response.json() if response.status_code == 200 else None


@pytest.fixture
def denv(tmp_path, example_image):
    env = DockerEnv(dir=tmp_path, app=unique("dt"), repository=unique("bluegreen-example-"),
                    proxy=free_port(), ports={"blue": free_port(), "green": free_port()})
    for version in ("1", "2"):
        tag_example(env.repository, version)
    env.write()
    yield env
    env.cli("down", "--purge", timeout=60)
    remove_containers(env.app)
    subprocess.run(["docker", "rmi", f"{env.repository}:1", f"{env.repository}:2"], capture_output=True, timeout=60)


def test_containers_per_colour_switch_scale_down_and_rollback(denv):
    first = denv.cli("deploy", "--version", "1")
    assert first.returncode == 0, first.stderr
    blue = denv.container("blue")
    assert blue["State"]["Running"]
    assert blue["Config"]["Image"] == f"{denv.repository}:1"
    labels = blue["Config"]["Labels"]
    assert {k: labels[k] for k in labels if k != "dev.bluegreen.deployed-at"} == {
        "dev.bluegreen.app": denv.app, "dev.bluegreen.environment": "test",
        "dev.bluegreen.colour": "blue", "dev.bluegreen.version": "1",
    }
    assert blue["HostConfig"]["PortBindings"] == {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(denv.ports["blue"])}]}
    assert denv.live_version() == "1"

    second = denv.cli("deploy", "--version", "2")
    assert second.returncode == 0, second.stderr
    report = denv.report()
    assert (report["live_colour"], report["previous_colour"], report["version"]) == ("green", "blue", "2")
    assert denv.live_version() == "2"
    # scale_down_delay 1s <= scale_down_wait: waited for in the run, then the old colour is stopped (kept).
    assert [(p["name"], p["status"]) for p in report["phases"][-2:]] == [
        ("scale down blue", "succeeded"), ("scale down blue (due)", "succeeded")]
    assert denv.container("blue")["State"]["Running"] is False

    status = denv.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    colours = {c["colour"]: c for c in json.loads(status.stdout)["colours"]}
    assert colours["green"]["ready"] and colours["green"]["version"] == "2"
    assert not colours["blue"]["running"] and colours["blue"]["version"] == "1"

    rollback = denv.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    names = [p["name"] for p in denv.report()["phases"]]
    assert "start blue" in names  # the stopped container was started again, checked, then switched to
    assert denv.live_version() == "1"

    down = denv.cli("down")
    assert down.returncode == 0 and "blue (container" in down.stderr and "green (container" in down.stderr
    assert denv.container("blue") is None and denv.container("green") is None



def test_rollback_is_not_blocked_while_a_deploy_waits_to_scale_down(denv):
    """The deploy waits out scale_down_delay with the lock released: a rollback in that window runs at once,
    and the waiting deploy then leaves the colour that is live again alone."""
    denv.config.write_text(denv.config.read_text().replace("scale_down_delay: 1s", "scale_down_delay: 6s"))
    assert denv.cli("deploy", "--version", "1").returncode == 0
    deploy = subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", str(denv.config), "--version", "2", "--report", "d.json"],
        cwd=denv.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BLUEGREEN_CI": "plain"},
    )
    try:
        deadline = time.monotonic() + 60
        lock = denv.dir / ".bluegreen" / "test" / "lock.json"
        while not (denv.live_version() == "2" and not lock.exists()):  # switched, verified, lock released
            assert time.monotonic() < deadline, "the deploy never switched and released the lock"
            time.sleep(0.1)
        rollback = denv.cli("rollback")
        assert rollback.returncode == 0, rollback.stderr
        assert denv.live_version() == "1"
    finally:
        _, err = deploy.communicate(timeout=120)
    assert deploy.returncode == 0, err
    phases = {p["name"]: p for p in json.loads((denv.dir / "d.json").read_text())["phases"]}
    rollback_phases = {p["name"]: p for p in denv.report()["phases"]}
    # The rollback switched while the deploy was still waiting to scale down, not after it
    assert rollback_phases["switch green -> blue"]["started_at"] < phases["scale down blue (due)"]["started_at"]
    assert phases["scale down blue (due)"]["status"] == "succeeded"
    assert denv.container("blue")["State"]["Running"] is True  # live again: not scaled down
    assert denv.live_version() == "1"


def test_long_scale_down_delay_is_applied_by_the_next_run(denv):
    denv.write(extra="scale_down_delay: 1s\n", target_extra="scale_down_wait: 0\n")
    assert denv.cli("deploy", "--version", "1").returncode == 0
    started = time.monotonic()
    assert denv.cli("deploy", "--version", "2").returncode == 0
    assert time.monotonic() - started < 15
    assert denv.container("blue")["State"]["Running"]  # nothing waited, nothing lingers: kept warm
    due = json.loads((denv.dir / ".bluegreen" / "test" / "scale-down.json").read_text())
    assert set(due) == {"blue"}
    time.sleep(1.2)
    # The next run that takes the lock applies the due scale-down (then this rollback starts blue again).
    rollback = denv.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert "start blue" in [p["name"] for p in denv.report()["phases"]]
    assert denv.live_version() == "1"


def test_missing_image_fails_before_the_switch(denv):
    assert denv.cli("deploy", "--version", "1").returncode == 0
    result = denv.cli("deploy", "--version", "9")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert denv.report()["reason"] == f"docker: image {denv.repository}:9 is not on the engine (pull: never)"
    assert denv.live_version() == "1"


def test_crashing_container_is_reported_with_its_log(denv):
    assert denv.cli("deploy", "--version", "1").returncode == 0
    denv.write(command='["--version", "{version}", "--fail", "nonsense"]')
    result = denv.cli("deploy", "--version", "2")
    assert result.returncode == 1
    reason = denv.report()["reason"]
    # Caught exited, or between a crash and the restart policy's restart: either way, before it was ready.
    assert re.match(rf"green: container {denv.app}-test-green (exited with code 2|crashed \(restarted \d+ time\(s\)\)) "
                    "before it was ready; its log ends: ", reason), reason
    assert "invalid choice: 'nonsense'" in reason  # the tail of its log
    assert denv.live_version() == "1"


def test_unreachable_engine_is_one_line(denv):
    result = denv.cli("deploy", "--version", "1", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "docker: cannot reach the engine at /nonexistent/docker.sock" in denv.report()["reason"]
