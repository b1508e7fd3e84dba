"""The docker target against the real Docker engine: containers per colour, a real Caddy, the real CLI.

By default the router is a Caddy container beside the colours with its state in a named volume; the
host mode (a Caddy on the host reading the upstream file) is tested too."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
import threading
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bluegreen.errors import TargetError
from bluegreen.docker_api import DockerAPI

from .support import (SOCKET, caddy_as_nobody, docker, docker_client, free_port, need_docker, remove_containers,
                      tag_example, unique)


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
            env={**_without_ci(os.environ), "BLUEGREEN_CI": "plain", **(env or {})},
        )

    @property
    def router(self) -> str:
        return f"{self.app}-test-router"

    def state(self, name: str) -> str | None:
        """A file in the router's state volume, read as bluegreen reads it (the engine's archive endpoint)."""
        with docker_client() as client:
            response = client.get(f"/containers/{self.router}/archive", params={"path": f"/state/{name}"})
        if response.status_code == 404:
            return None
        import io
        import tarfile
        with tarfile.open(fileobj=io.BytesIO(response.content)) as tar:
            member = tar.next()  # None: the file was removed between the engine's stat and its archive
            return tar.extractfile(member).read().decode() if member else None

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
    docker("volume", "rm", f"bluegreen-{env.app}-test", check=False)
    docker("network", "rm", f"bluegreen-{env.app}-test", check=False)
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
        while not (denv.live_version() == "2" and denv.state("lock.json") is None):  # switched, verified, lock released
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


def test_in_ci_the_scale_down_delay_is_not_waited_for_but_applied_by_the_next_run(denv):
    """In the action (GITHUB_ACTIONS=true) the step does not wait for scale_down_delay: later steps go on."""
    ci = {"GITHUB_ACTIONS": "true"}
    assert denv.cli("deploy", "--version", "1", env=ci).returncode == 0
    started = time.monotonic()
    assert denv.cli("deploy", "--version", "2", env=ci).returncode == 0
    assert time.monotonic() - started < 15
    assert "scale down blue (due)" not in [p["name"] for p in denv.report()["phases"]]
    assert denv.container("blue")["State"]["Running"]  # nothing waited, nothing lingers: kept warm
    due = json.loads(denv.state("scale-down.json"))
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


def _without_ci(environ) -> dict[str, str]:
    """The tests decide whether bluegreen believes it runs in CI (it changes the scale-down wait)."""
    return {k: v for k, v in environ.items() if k not in ("GITHUB_ACTIONS", "GITLAB_CI")}


def test_state_lives_with_the_router_not_in_the_workspace(denv):
    """A cleaned checkout (everything but the config deleted) loses nothing: live keeps serving, and the next
    deploy and a rollback both know what was live."""
    assert denv.cli("deploy", "--version", "1").returncode == 0
    assert denv.cli("deploy", "--version", "2").returncode == 0
    for path in denv.dir.iterdir():  # like `git clean -ffdx`
        if path != denv.config:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert not (denv.dir / ".bluegreen").exists()
    assert denv.live_version() == "2"
    with docker_client() as client:
        router = client.get(f"/containers/{denv.router}/json").json()
    assert router["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert router["Mounts"][0]["Name"] == f"bluegreen-{denv.app}-test"
    network = f"bluegreen-{denv.app}-test"
    assert set(denv.container("green")["NetworkSettings"]["Networks"]) == {network}  # dialled by name
    assert denv.state("upstream").strip() == f"{denv.app}-test-green:8000"

    rollback = denv.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert denv.live_version() == "1"
    deploy = denv.cli("deploy", "--version", "2")
    assert deploy.returncode == 0, deploy.stderr
    assert (denv.report()["previous_colour"], denv.report()["live_colour"]) == ("blue", "green")
    assert [r["version"] for r in json.loads(denv.state("history.json"))][:3] == ["2", "1", "2"]

    # A removed router container (not its volume) is started again by the next run, with its state.
    docker("rm", "-f", denv.router)
    assert denv.cli("deploy", "--version", "1").returncode == 0
    assert (denv.report()["previous_colour"], denv.report()["live_colour"]) == ("green", "blue")
    # The runbook's switch without bluegreen works as printed.
    raw = denv.report()["raw_rollback_command"]
    assert raw.startswith(f"docker exec {denv.router} sh -c ")
    docker("start", f"{denv.app}-test-green")  # scaled down after its 1 s delay: an incident starts it first
    subprocess.run(raw, shell=True, check=True, timeout=30)
    deadline = time.monotonic() + 10
    while denv.live_version() != "2":
        assert time.monotonic() < deadline, "the raw rollback command did not switch to green"
        time.sleep(0.1)


def test_host_router_not_running_fails_before_anything_changes(denv):
    denv.write(target_extra="router: {mode: host, manage: false, listen: \"127.0.0.1:%d\"}\n" % denv.proxy)
    result = denv.cli("deploy", "--version", "1")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    reason = denv.report()["reason"]
    assert reason.startswith(f"the router (caddy at 127.0.0.1:{denv.proxy}) is not reachable"), reason
    assert "live traffic was not touched" in reason
    assert "Start your proxy" in reason
    assert denv.container("blue") is None  # stopped before it deployed anything


def test_host_mode_switch_file_is_read_by_a_proxy_not_running_as_root(denv):
    """router.mode host: the switch file is world-readable, so a Caddy running as nobody serves it."""
    shared = Path(tempfile.mkdtemp(prefix="bg-nobody-"))
    try:
        shared.chmod(0o755)
        upstream = shared / "state" / "upstream"
        denv.write(target_extra=f"state_dir: {shared / 'state'}\n"
                   f"router: {{mode: host, manage: false, listen: \"127.0.0.1:{denv.proxy}\"}}\n")
        caddy = caddy_as_nobody(denv.proxy, upstream, shared)
        try:
            result = denv.cli("deploy", "--version", "1")
            assert result.returncode == 0, result.stderr
            assert oct(upstream.stat().st_mode & 0o777) == "0o644"
            assert denv.live_version() == "1"  # read by nobody, per request
        finally:
            caddy.terminate()
            caddy.wait(timeout=10)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


class SocketProxy:
    """A unix socket in front of the engine's, to be stopped and started: the engine restarting, as the client
    sees it, without touching the real dockerd."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.server: socket.socket | None = None
        self.open: list[socket.socket] = []

    def start(self) -> None:
        server = socket.socket(socket.AF_UNIX)
        server.bind(self.path)
        server.listen(16)
        self.server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        os.unlink(self.path)
        self.server = None
        for conn in self.open:  # kept-alive connections die with the engine too
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.open.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(SOCKET)
            self.open += [client, engine]
            for a, b in ((client, engine), (engine, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while chunk := a.recv(65536):
                b.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def test_engine_calls_survive_the_engine_restarting(tmp_path):
    need_docker()
    proxy = SocketProxy(str(tmp_path / "docker.sock"))
    proxy.start()
    api = DockerAPI(f"unix://{proxy.path}", retry_for=10)
    network = unique("bg-restart-")
    try:
        assert api.inspect(unique("no-such-")) is None
        proxy.stop()  # the engine goes away...
        threading.Timer(1.5, proxy.start).start()  # ...and is back 1.5 s later
        started = time.monotonic()
        api.call("POST", "/networks/create", json={"Name": network}, ok=(201,))  # refused, retried, then done
        assert 1.4 < time.monotonic() - started < 10
        assert api.call("GET", f"/networks/{network}").json()["Name"] == network
        proxy.stop()  # gone for longer than the deadline: one line, no traceback
        api.retry_for = 0.5
        with pytest.raises(TargetError, match=r"^docker: cannot reach the engine at .*docker.sock"):
            api.inspect("x")
    finally:
        api.close()
        docker("network", "rm", network, check=False)


def test_a_router_inside_the_actions_container_is_refused(denv, action_image):
    """router.mode host with manage left on, run in the action's image: starting Caddy there would die with the
    step, so bluegreen refuses before it deploys anything."""
    denv.write(target_extra='router: {mode: host, listen: "127.0.0.1:%d"}\n' % denv.proxy)
    result = docker(
        "run", "--rm", "--network", "host", "-v", f"{SOCKET}:{SOCKET}", "-v", f"{denv.dir}:{denv.dir}", "-w", str(denv.dir),
        "-e", "BLUEGREEN_CI=plain", "--entrypoint", "/opt/bluegreen/bin/python", action_image,
        "-m", "bluegreen", "deploy", "-c", str(denv.config), "--version", "1", check=False, timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "router: refusing to start caddy inside this container" in result.stderr
    assert "Traceback" not in result.stderr
    assert denv.container("blue") is None
    assert socket.socket().connect_ex(("127.0.0.1", denv.proxy)) != 0  # no proxy that would vanish with the step
