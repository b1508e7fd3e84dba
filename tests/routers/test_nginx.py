"""The nginx router against the real nginx + njs (Debian nginx, libnginx-mod-http-js), the real CLI and the
example app: managed, unmanaged (configured with the README's very snippet), restarted by hand, down, garbled,
under the docker runtime, and switched under load."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bluegreen.config import NginxRouter as NginxConfig
from bluegreen.routers.nginx import NginxRouter, js_module_so
from conftest import ROOT, LocalEnv, free_port, kill_and_wait, serving
from github.support import docker, example_image, need_docker, remove_containers, tag_example, unique  # noqa: F401

SNIPPET = ROOT / "examples" / "routers" / "nginx" / "bluegreen.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

pytestmark = pytest.mark.skipif(not Path(NGINX).exists(), reason="nginx is not installed (.ci/setup-packages.sh)")


@pytest.fixture
def folder():
    """A world-traversable temp folder, as a real state_dir's path must be for nginx's workers (nobody here)
    to read the upstream file."""
    path = Path(tempfile.mkdtemp(prefix="bg-nginx-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(folder):
    """A local-target environment with router kind nginx."""
    env = LocalEnv(dir=folder, config=folder / "bluegreen.yml", proxy_port=free_port(),
                   ports={"blue": free_port(), "green": free_port()})
    configure(env)
    yield env
    env.cli("down", timeout=60)


def configure(env: LocalEnv, router: str = "") -> None:
    env.write()
    default = f'router: {{listen: "127.0.0.1:{env.proxy_port}"}}'
    assert default in env.config.read_text()
    env.config.write_text(env.config.read_text().replace(
        default, f'router: {{kind: nginx, listen: "127.0.0.1:{env.proxy_port}"{router}}}'))


def upstream_file(env: LocalEnv) -> Path:
    return env.dir / "state" / "upstream"


def live(env: LocalEnv) -> str | None:
    result = env.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["live"]


def deploy(env: LocalEnv, version: str) -> None:
    result = env.cli("deploy", "--version", version)
    assert result.returncode == 0, result.stderr


def workers(master: int) -> set[int]:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def router_for(env: LocalEnv) -> NginxRouter:
    """The router as the local target builds it, for switches and splits without a whole run."""
    upstreams = {c: [f"127.0.0.1:{p}"] for c, p in env.ports.items()}
    config = NginxConfig(kind="nginx", listen=f"127.0.0.1:{env.proxy_port}")
    return NginxRouter(config, upstreams, env.dir / "state", "testapp")


# --- 1. managed: first deploy, switch, rollback; a split --------------------------------------------------


def test_first_deploy_switch_rollback_and_a_split_without_a_reload(env):
    deploy(env, "1")
    assert upstream_file(env).read_text() == "blue\n"
    assert live(env) == "blue" and env.live_version() == "1"
    master = int((env.dir / "state" / "nginx.pid").read_text().split()[0])
    before = workers(master)
    assert before

    deploy(env, "2")
    assert live(env) == "green" and env.live_version() == "2"
    assert env.report()["raw_rollback_command"].startswith("printf '%s\\n' blue > ")

    rollback = env.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert live(env) == "blue" and env.live_version() == "1"
    # Switched by the file njs reads, never by a reload: a reload would have replaced the worker processes.
    assert workers(master) == before

    router_for(env).set_weights({"blue": 80, "green": 20}, time.monotonic() + 5)
    assert upstream_file(env).read_text() == "blue 80 green 20\n"
    with httpx.Client(timeout=5) as client:
        answers = Counter(client.get(env.live_url + "/version").text.strip() for _ in range(300))
    assert set(answers) == {"1", "2"} and 20 <= answers["2"] <= 100, answers  # ~60 expected
    assert live(env) == "blue"  # the larger share is the live colour


# --- 2. manage: false, configured exactly as the README says ---------------------------------------------


class UserNginx:
    """The user's own nginx: a main config around examples/routers/nginx/bluegreen.conf, rendered by replacing
    its example values only, run as root with its workers as nobody (nginx's default), as a system nginx is."""

    def __init__(self, prefix: Path, app: str, ports: dict[str, int], listen_port: int, upstream: Path) -> None:
        self.prefix, self.port = prefix, listen_port
        (self.prefix / "temp").mkdir(parents=True)
        copied = subprocess.run([sys.executable, "-m", "bluegreen.routers.nginx", str(self.prefix / "njs")],
                                capture_output=True, text=True, timeout=30, check=True)
        snippet = SNIPPET.read_text()
        for example, value in {
            "/etc/nginx/njs/bluegreen.js": copied.stdout.strip(),
            "/srv/myapp/.bluegreen/production/upstream": str(upstream),
            "myapp": app,
            "127.0.0.1:8081": f"127.0.0.1:{ports['blue']}",
            "127.0.0.1:8082": f"127.0.0.1:{ports['green']}",
            "127.0.0.1:8080": f"127.0.0.1:{listen_port}",
        }.items():
            assert example in snippet, f"the README snippet no longer has {example}"
            snippet = snippet.replace(example, value)
        (self.prefix / "bluegreen.conf").write_text(snippet)
        (self.prefix / "nginx.conf").write_text(textwrap.dedent(f"""\
            load_module {js_module_so()};
            pid nginx.pid;
            error_log stderr warn;
            events {{}}
            http {{
                client_body_temp_path temp/body; proxy_temp_path temp/proxy;
                include bluegreen.conf;
            }}
            """))
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [NGINX, "-p", f"{self.prefix}/", "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 10
        while not serving(self.port):
            assert self.process.poll() is None, self.process.stderr.read().decode()
            assert time.monotonic() < deadline, "the user's nginx did not start"
            time.sleep(0.05)

    def kill(self) -> None:
        """Down for good when it returns: its workers too, and its port closed."""
        if self.process:
            kill_and_wait(self.process, self.port)
            self.process = None


@pytest.fixture
def user_nginx(env):
    configure(env, ", manage: false")
    proxy = UserNginx(env.dir / "user-nginx", "testapp", env.ports, env.proxy_port, upstream_file(env))
    proxy.start()
    yield proxy
    proxy.kill()


def test_unmanaged_nginx_configured_as_the_readme_says(env, user_nginx):
    readme = (SNIPPET.parents[3] / "README.md").read_text()  # the main README, section Routers
    shown = readme.split("```nginx\n", 1)[1].split("```", 1)[0]
    assert shown == SNIPPET.read_text().split("\n", 2)[2]  # the README shows the file this test runs, minus its header
    with httpx.Client(timeout=5) as client:
        before = client.get(env.live_url + "/")
    assert before.status_code == 502 and "bluegreen: no live colour" in before.text  # nothing released yet
    deploy(env, "1")
    assert live(env) == "blue" and env.live_version() == "1"
    deploy(env, "2")
    assert live(env) == "green" and env.live_version() == "2"
    assert env.cli("rollback").returncode == 0
    assert live(env) == "blue" and env.live_version() == "1"
    assert not (env.dir / "state" / "nginx.pid").exists()  # bluegreen never ran an nginx of its own
    assert upstream_file(env).stat().st_mode & 0o777 == 0o644


# --- 3. the live colour after nginx restarts from its own config ----------------------------------------


def test_live_colour_read_back_after_nginx_is_killed_and_restarted_by_hand(env):
    deploy(env, "1")
    deploy(env, "2")
    master = int((env.dir / "state" / "nginx.pid").read_text().split()[0])
    kill_and_wait(master, env.proxy_port)  # its workers too: one holding the port would stop the nginx by hand
    prefix = env.dir / "state" / "nginx"
    # What an on-call person runs: nginx from the config bluegreen wrote, without bluegreen.
    by_hand = subprocess.Popen([NGINX, "-p", f"{prefix}/", "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not serving(env.proxy_port):
            assert by_hand.poll() is None and time.monotonic() < deadline, "nginx did not start by hand"
            time.sleep(0.05)
        assert live(env) == "green" and env.live_version() == "2"
    finally:
        kill_and_wait(by_hand, env.proxy_port, signal.SIGTERM)
    # Gone again: the next run starts bluegreen's own nginx and rolls back through it.
    rollback = env.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert "had stopped" in rollback.stderr
    assert env.live_version() == "1"


# --- 4. a router that is down ------------------------------------------------------------------------------


def test_an_unmanaged_nginx_that_is_down_stops_the_run_before_the_switch(env, user_nginx):
    deploy(env, "1")
    user_nginx.kill()
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    report = env.report()
    assert report["status"] == "failed" and report["switched"] is False
    assert f"the router (nginx at 127.0.0.1:{env.proxy_port}) is not reachable" in report["reason"]
    assert str(upstream_file(env)) in report["reason"]  # where the user's nginx must read the live colour
    assert upstream_file(env).read_text() == "blue\n"  # live untouched
    user_nginx.start()
    assert env.live_version() == "1"

    # manage: true with an nginx that cannot start: the same, naming the executable.
    user_nginx.kill()
    configure(env, ", binary: /nonexistent/nginx")
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    assert "the nginx binary '/nonexistent/nginx' is not installed" in env.report()["reason"]
    assert env.report()["switched"] is False and upstream_file(env).read_text() == "blue\n"


# --- 5. a garbled value --------------------------------------------------------------------------------------


def test_a_garbled_upstream_file_is_an_error_that_says_what_it_found(env):
    deploy(env, "1")
    upstream_file(env).write_text("gren\n")  # a person switching by hand, with a typo
    with httpx.Client(timeout=5) as client:
        answer = client.get(env.live_url + "/version")
    assert answer.status_code == 502 and "bluegreen: no live colour" in answer.text  # never a guessed colour

    status = env.cli("status")  # status shows what the router holds instead of failing
    assert status.returncode == 0, status.stderr
    assert f"{upstream_file(env)} holds 'gren', which is neither blue nor green" in status.stdout, status.stdout
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr  # errors.py: TargetError, exit 1
    line = result.stderr.splitlines()[-1]
    assert f"{upstream_file(env)} holds 'gren', which is neither blue nor green" in line, line
    assert "holds \"gren\\n\"" in (env.dir / "state" / "nginx.log").read_text()  # njs's error log says it too
    assert upstream_file(env).read_text() == "gren\n"  # bluegreen did not overwrite the evidence

    upstream_file(env).write_text("blue 50 green 60\n")  # a split that does not add up
    assert "holds 'blue 50 green 60'" in env.cli("status").stdout


# --- 6. the docker runtime ------------------------------------------------------------------------------------


def test_docker_runtime_behind_nginx_on_the_host(folder, example_image):  # noqa: F811 (the fixture)
    """The colours are containers published on host ports; the user's nginx on the host dials them (this
    machine is itself a container, where bluegreen refuses to start a proxy that would die with it)."""
    need_docker()
    tmp_path = folder
    app, repository = unique("ngx"), unique("bluegreen-example-")
    for version in ("1", "2"):
        tag_example(repository, version)
    proxy, ports = free_port(), {"blue": free_port(), "green": free_port()}
    config = tmp_path / "bluegreen.yml"
    config.write_text(textwrap.dedent(f"""\
        app: {app}
        environments:
          test:
            target:
              kind: docker
              image: "{repository}:{{version}}"
              command: ["--version", "{{version}}", "--colour", "{{colour}}"]
              ports: {{blue: {ports['blue']}, green: {ports['green']}}}
              router: {{kind: nginx, manage: false, listen: "127.0.0.1:{proxy}"}}
              pull: never
              stop_timeout: 2
        timeouts: {{ready: 20s}}
        smoke: {{timeout: 5s, interval: 0.1, checks: [{{name: version, path: /version, expect: {{body_contains: "{{version}}"}}}}]}}
        verify: {{consecutive_successes: 2, window: 0.3s, interval: 0.1}}
        scale_down_delay: never
        """))

    def cli(*args: str) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "GITLAB_CI")}
        return subprocess.run([sys.executable, "-m", "bluegreen", args[0], "-c", str(config), *args[1:]],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              env={**environ, "BLUEGREEN_CI": "plain"})

    def version() -> str:
        return httpx.get(f"http://127.0.0.1:{proxy}/version", timeout=5).text.strip()

    user_nginx = UserNginx(folder / "user-nginx", app, ports, proxy, folder / ".bluegreen" / "test" / "upstream")
    user_nginx.start()
    try:
        for command, expected, colour in ((("deploy", "--version", "1"), "1", "blue"),
                                          (("deploy", "--version", "2"), "2", "green"), (("rollback",), "1", "blue")):
            result = cli(*command)
            assert result.returncode == 0, result.stderr
            assert version() == expected
            assert json.loads(cli("status", "--json").stdout)["live"] == colour
        assert (tmp_path / ".bluegreen" / "test" / "upstream").read_text() == "blue\n"
    finally:
        user_nginx.kill()
        cli("down")
        remove_containers(app)
        docker("rmi", f"{repository}:1", f"{repository}:2", check=False)


# --- 7. no failed request while switching under load -----------------------------------------------------


def test_zero_failed_requests_while_switching_under_load(env):
    deploy(env, "1")
    deploy(env, "2")  # both colours run (scale_down_delay: never); green is live
    router = router_for(env)
    version = {"blue": "1", "green": "2"}
    stop = threading.Event()
    answers: list[tuple[float, float, str]] = []  # (sent, answered, version) of every request
    failures: list[str] = []

    def hammer() -> None:
        with httpx.Client(timeout=5) as client:  # one kept-alive connection per client
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    response = client.get(env.live_url + "/version")
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text[:80]}")
                answers.append((sent, time.monotonic(), response.text.strip()))

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for client in clients:
        client.start()
    switches: list[tuple[float, float, str]] = []  # when each switch began and returned, to which colour
    try:
        time.sleep(0.3)
        for to in ("blue", "green", "blue", "green", "blue"):
            began = time.monotonic()
            router.switch(to, began + 5)
            switches.append((began, time.monotonic(), to))
            with httpx.Client(timeout=5) as fresh:
                assert fresh.get(env.live_url + "/version").text.strip() == version[to]
            time.sleep(0.4)
    finally:
        stop.set()
        for client in clients:
            client.join(10)
    assert not failures, failures[:5]
    assert len(answers) > 100
    # Every request sent after a switch returned, and answered before the next switch began, came from the new
    # colour.
    for i, (_, returned, to) in enumerate(switches):
        until = switches[i + 1][0] if i + 1 < len(switches) else float("inf")
        wrong = [a for a in answers if returned < a[0] and a[1] < until and a[2] != version[to]]
        assert not wrong, (to, wrong[:3])
