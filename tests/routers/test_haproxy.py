"""The HAProxy router against the real HAProxy (Debian haproxy 2.6), the real CLI and the example app.

manage: true (bluegreen writes the config and starts HAProxy) and manage: false (the user's HAProxy,
configured with the very snippet the README shows: examples/routers/haproxy/haproxy.cfg)."""

from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, KeptAliveLoad, LocalEnv, accepts, assert_one_line_error, kill_and_wait

from bluegreen.config import load_config
from bluegreen.errors import TargetError
from bluegreen.routers.proxy import find_binary
from bluegreen.targets import make_target
from github.support import example_image  # noqa: F401  (the session fixture denv needs)
from github.test_docker_target import denv  # noqa: F401  (a docker-target env: colours as containers)

SNIPPET = ROOT / "examples" / "routers" / "haproxy" / "haproxy.cfg"

pytestmark = pytest.mark.skipif(
    not any(Path(p, "haproxy").exists() for p in [*os.environ.get("PATH", "").split(":"), "/usr/sbin"]),
    reason="HAProxy is not installed (run .ci/setup-packages.sh)",
)


def use_haproxy(env: LocalEnv, **fields: object) -> None:
    """Rewrite the env's config (no test suite: faster) with router.kind haproxy and `fields`."""
    env.write(test_suite="")
    router = {"kind": "haproxy", "listen": f"127.0.0.1:{env.proxy_port}", **fields}
    text = env.config.read_text()
    old = f'router: {{listen: "127.0.0.1:{env.proxy_port}"}}'
    assert old in text
    env.config.write_text(text.replace(old, "router: " + json.dumps(router)))


def deploy(env: LocalEnv, version: str) -> None:
    result = env.cli("deploy", "--version", version)
    assert result.returncode == 0, result.stderr
    assert env.live_version() == version


def live(env: LocalEnv) -> str | None:
    """The live colour as bluegreen reads it from the router."""
    result = env.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["live"]


def runtime_api(sock: Path, command: str) -> str:
    """What an operator types into socat: one Runtime API command."""
    return subprocess.run(["socat", "stdio", f"unix-connect:{sock}"], input=command + "\n", capture_output=True,
                          text=True, timeout=10, check=True).stdout.strip()


def failure_line(result: subprocess.CompletedProcess) -> str:
    """The one line that says why a deploy failed."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("deploy failed: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def router_of(env: LocalEnv):
    return make_target(load_config(env.config, "test")).router


@pytest.mark.parametrize("field, value, says", [
    ("backends", {"blue": "my blue", "green": "g"}, "router.backends: 'my blue' is not an HAProxy backend name"),
    ("key", "my app", "router.key: String should match pattern"),
    ("map_file", "/etc/haproxy/blue green.map", "router.map_file: String should match pattern"),
])
def test_names_haproxy_cannot_take_are_refused_naming_the_field(local_env, field, value, says):
    use_haproxy(local_env, **{field: value})
    result = local_env.cli("validate")
    assert result.returncode == 2
    assert says in assert_one_line_error(result)


# --- manage: true -----------------------------------------------------------------------------------


@pytest.fixture
def managed(local_env):
    use_haproxy(local_env)
    return local_env


def test_first_deploy_switch_rollback_raw_rollback_and_a_split(managed):
    env, state = managed, managed.dir / "state"
    deploy(env, "1")
    assert live(env) == "blue"
    assert runtime_api(state / "haproxy.sock", f"show map {state / 'haproxy.map'}").endswith(" testapp testapp_blue")

    deploy(env, "2")
    assert live(env) == "green"
    assert (state / "haproxy.map").read_text() == "testapp testapp_green\n"  # a restart keeps the live colour

    rollback = env.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert env.live_version() == "1" and live(env) == "blue"

    deploy(env, "3")
    raw = env.report()["raw_rollback_command"]
    assert "bluegreen" not in raw.replace(str(env.dir), "") and "socat" in raw
    subprocess.run(["/bin/sh", "-c", raw], check=True, timeout=10)
    assert env.live_version() == "1" and live(env) == "blue"
    assert (state / "haproxy.map").read_text() == "testapp testapp_blue\n"

    # A canary split: 20% green. Round robin over weights 20/80 gives exactly 1 in 5; allow for noise.
    router = router_of(env)
    router.set_weights({"blue": 80, "green": 20}, time.monotonic() + 5)
    assert router.read() == {"blue": 80, "green": 20}
    with httpx.Client() as client:
        seen = Counter(client.get(env.live_url + "/version").text.strip() for _ in range(200))
    assert 25 <= seen["3"] <= 55 and seen["1"] + seen["3"] == 200, seen
    assert (state / "haproxy.map").read_text() == "testapp testapp_blue\n"  # a restart mid-canary: all to stable
    assert live(env) == "blue"


def test_zero_failed_requests_under_load_during_five_switches(managed):
    env = managed
    deploy(env, "1")
    deploy(env, "2")
    router = router_of(env)
    with KeptAliveLoad(env.proxy_port) as load:
        time.sleep(0.3)
        for to, version in [("blue", "1"), ("green", "2"), ("blue", "1"), ("green", "2"), ("blue", "1")]:
            router.switch(to, time.monotonic() + 5)
            assert httpx.get(env.live_url + "/version", timeout=5).text.strip() == version  # at once, no settling
            time.sleep(0.3)
    assert load.failures == []
    assert load.served["1"] > 50 and load.served["2"] > 50, load.served  # both colours served the kept-alive clients
    assert live(env) == "blue"


# --- manage: false: the user's HAProxy, configured as the README says --------------------------------


class UserHAProxy:
    """The user's own HAProxy, from the README's snippet with this test's ports and paths; started and killed
    by the test (systemd's part), never by bluegreen."""

    def __init__(self, folder: Path, app: str, listen: int, ports: dict[str, int]) -> None:
        self.dir = folder / "haproxy"
        self.dir.mkdir()
        self.sock, self.map = self.dir / "admin.sock", self.dir / "bluegreen.map"
        self.config = self.dir / "haproxy.cfg"
        text = SNIPPET.read_text()
        for old, new in [("/run/haproxy/bluegreen.sock", str(self.sock)), ("/etc/haproxy/bluegreen.map", str(self.map)),
                         ("bind 127.0.0.1:80\n", f"bind 127.0.0.1:{listen}\n"), ("myapp", app),
                         ("127.0.0.1:8081", f"127.0.0.1:{ports['blue']}"),
                         ("127.0.0.1:8082", f"127.0.0.1:{ports['green']}")]:
            assert old in text, f"{SNIPPET} no longer has {old!r}: update this test with it"
            text = text.replace(old, new)
        self.config.write_text(text)
        self.map.touch()  # as the snippet's comment says
        self.process: subprocess.Popen | None = None
        self.address, self.port = f"127.0.0.1:{listen}", listen

    def router_fields(self) -> dict[str, object]:
        return {"manage": False, "socket": str(self.sock), "map_file": str(self.map)}

    def start(self) -> None:
        self.process = subprocess.Popen([find_binary("haproxy", "apt-get install haproxy"), "-db", "-f", str(self.config)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 10
        while not accepts(self.port):
            assert self.process.poll() is None, self.process.stderr.read().decode()
            assert time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        """Down for good when it returns: its port closed."""
        if self.process:
            kill_and_wait(self.process, self.port)
            self.process = None


@pytest.fixture
def user_haproxy(local_env):
    proxy = UserHAProxy(local_env.dir, "testapp", local_env.proxy_port, local_env.ports)
    use_haproxy(local_env, **proxy.router_fields())
    proxy.start()
    yield proxy
    proxy.kill()


def test_manage_false_with_the_readme_snippet(local_env, user_haproxy):
    deploy(local_env, "1")
    deploy(local_env, "2")
    assert live(local_env) == "green"
    assert runtime_api(user_haproxy.sock, f"show map {user_haproxy.map}").endswith(" testapp testapp_green")
    assert user_haproxy.map.read_text() == "testapp testapp_green\n"
    rollback = local_env.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert local_env.live_version() == "1" and live(local_env) == "blue"
    assert user_haproxy.process.poll() is None  # switched at runtime: the same process, never reloaded


def test_the_live_colour_is_read_back_after_haproxy_restarts_from_its_own_config(local_env, user_haproxy):
    deploy(local_env, "1")
    deploy(local_env, "2")
    user_haproxy.kill()
    user_haproxy.start()  # as systemd would: the same config, which reads the map file bluegreen rewrote
    assert live(local_env) == "green"
    assert local_env.live_version() == "2"
    rollback = local_env.cli("rollback")  # the restarted HAProxy is switched like the first one
    assert rollback.returncode == 0, rollback.stderr
    assert local_env.live_version() == "1"


def test_a_router_that_is_down_stops_the_run_with_live_untouched(local_env, user_haproxy):
    deploy(local_env, "1")
    user_haproxy.kill()
    result = local_env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    line = failure_line(result)
    assert f"haproxy at {user_haproxy.address}" in line and str(user_haproxy.sock) in line, line
    report = local_env.report()
    assert report["status"] == "failed" and report["switched"] is False
    assert user_haproxy.map.read_text() == "testapp testapp_blue\n"  # untouched
    user_haproxy.start()
    assert local_env.live_version() == "1" and live(local_env) == "blue"


def test_a_garbled_router_value_is_a_clear_error(local_env, user_haproxy):
    deploy(local_env, "1")
    runtime_api(user_haproxy.sock, f"set map {user_haproxy.map} testapp testapp_bleu")  # a typo at 3 a.m.
    result = local_env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr  # README, exit codes: failed before the switch
    line = failure_line(result)
    assert ("sends 'testapp' to 'testapp_bleu', which is neither blue (testapp_blue) nor green (testapp_green)"
            in line), line
    assert local_env.report()["switched"] is False
    assert runtime_api(user_haproxy.sock, f"show map {user_haproxy.map}").endswith(" testapp testapp_bleu")


# --- the docker runtime: colours as containers, HAProxy on the host dialling their published ports ----


def test_docker_runtime_with_haproxy_on_the_host(denv):
    """The user's HAProxy on the host (manage: false: this test itself runs in a container, where bluegreen
    refuses to start a proxy that would die with it), switching between the containers' published ports."""
    proxy = UserHAProxy(denv.dir, denv.app, denv.proxy, denv.ports)
    router = {"kind": "haproxy", "listen": f"127.0.0.1:{denv.proxy}", **proxy.router_fields()}
    denv.write(target_extra=f"router: {json.dumps(router)}\n")
    proxy.start()
    try:
        for version, colour in [("1", "blue"), ("2", "green")]:
            result = denv.cli("deploy", "--version", version)
            assert result.returncode == 0, result.stderr
            assert denv.live_version() == version
            assert denv.report()["live_colour"] == colour
        assert proxy.map.read_text() == f"{denv.app} {denv.app}_green\n"
        assert str(proxy.sock) in denv.report()["raw_rollback_command"]
        rollback = denv.cli("rollback")
        assert rollback.returncode == 0, rollback.stderr
        assert denv.live_version() == "1"
        status = denv.cli("status", "--json")
        assert status.returncode == 0 and json.loads(status.stdout)["live"] == "blue", status.stderr
    finally:
        proxy.kill()


# --- a switch whose answer was lost is read back before deciding ---------------------------------------


class LossyRuntimeAPI:
    """HAProxy's Runtime API reached over TCP through a relay that, for `set map`, loses HAProxy's answer
    (`answer`: the command went through) or the command itself (`command`); other commands pass."""

    def __init__(self, unix_socket: Path) -> None:
        self.unix_socket, self.lose = unix_socket, "answer"
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            with client:
                command = client.makefile("rb").readline()
                if command.startswith(b"set map") and self.lose == "command":
                    continue
                with socket.socket(socket.AF_UNIX) as haproxy:
                    haproxy.connect(str(self.unix_socket))
                    haproxy.sendall(command)
                    answer = b"".join(iter(lambda: haproxy.recv(65536), b""))
                if not (command.startswith(b"set map") and self.lose == "answer"):
                    client.sendall(answer)


def test_a_switch_whose_answer_was_lost_is_read_back_before_deciding(managed):
    env, state = managed, managed.dir / "state"
    deploy(env, "1")
    deploy(env, "2")
    relay = LossyRuntimeAPI(state / "haproxy.sock")
    router = router_of(env)
    router.socket = relay.address  # the same HAProxy, through the relay (a TCP Runtime API)
    try:
        router.switch("blue", time.monotonic() + 5)  # no answer, but HAProxy did it: read back, done
        assert env.live_version() == "1"
        assert (state / "haproxy.map").read_text() == "testapp testapp_blue\n"

        relay.lose = "command"
        with pytest.raises(TargetError, match=r"the switch failed: .*no answer from its Runtime API at "
                           + re.escape(relay.address) + r".*; live routing is unchanged \(all to blue\)"):
            router.switch("green", time.monotonic() + 5)
        assert env.live_version() == "1"
        assert (state / "haproxy.map").read_text() == "testapp testapp_blue\n"  # put back: a restart stays on blue
    finally:
        relay.server.close()
