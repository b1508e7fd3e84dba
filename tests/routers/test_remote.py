"""Every router's remote code path (a proxy on another host, reached through a `remote.Shell`) against the real
proxies, without SSH: through `LocalShell`, so every file goes through POSIX sh commands, every socket through
Shell.dial_*, every reachability question through Shell.probe_tcp, exactly as over SSH. Each proxy is the
user's (manage: false), started by the test from the README's example config (the fixtures of the kind's own
test module), in front of two example apps.

Also: a forward whose far end is gone (what an SSH port forward does when nothing listens behind it on the host)
reads as an unreachable router in one line; several servers per colour (a load balancer in front of N app hosts)
with the real proxies; manage: true and Caddy with several servers are refused."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
import pytest
import yaml

from bluegreen.config import CaddyRouter as CaddyConfig
from bluegreen.config import EnvoyRouter as EnvoyConfig
from bluegreen.config import HAProxyRouter as HAProxyConfig
from bluegreen.config import NginxRouter as NginxConfig
from bluegreen.config import ProxyRouter
from bluegreen.config import TraefikRouter as TraefikConfig
from bluegreen.errors import TargetError
from bluegreen.remote import LocalShell
from bluegreen.routers import Router, make_router
from bluegreen.traffic import all_to
from bluegreen.routers.caddy import caddy_binary
from conftest import EXAMPLE_APP, ROOT, free_port, kill_and_wait, serving
from test_envoy import KEY, start_envoy, user_config
from test_envoy import stop as stop_envoy
from test_haproxy import UserHAProxy, runtime_api
from test_nginx import NGINX, UserNginx
from test_traefik import PASSWORD, UserTraefik

DEADLINE = 10.0


@dataclass
class UserProxy:
    """The user's proxy (manage: false) as a test runs it, and how an operator garbles its value."""

    kind: str
    config: ProxyRouter
    state_dir: Path
    listen: int
    start: Callable[[], None]
    stop: Callable[[], None]
    garble: Callable[[], None]  # the value set by hand to something that is neither colour
    garbled: str  # what the error quotes


def start_app(port: int, version: str) -> subprocess.Popen:
    app = subprocess.Popen([sys.executable, str(EXAMPLE_APP), "--port", str(port), "--version", version],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not serving(port):
        assert app.poll() is None and time.monotonic() < deadline, f"the example app on {port} did not start"
        time.sleep(0.05)
    return app


@pytest.fixture
def folder():
    """World-traversable (nginx's workers run as nobody and read the upstream file under it)."""
    path = Path(tempfile.mkdtemp(prefix="bg-remote-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def apps():
    """Two example apps whose version is their colour's name: what answers through the proxy says the colour."""
    ports = {"blue": free_port(), "green": free_port()}
    procs = [start_app(port, colour) for colour, port in ports.items()]
    yield ports
    for app in procs:
        app.kill()
        app.wait()


def need(binary: str) -> None:
    if not any(Path(d, binary).exists() for d in (*os.environ.get("PATH", "").split(":"), "/usr/sbin",
                                                  Path(sys.executable).parent)):
        pytest.skip(f"{binary} is not installed (.ci/setup-packages.sh)")


def haproxy_proxy(folder: Path, ports: dict[str, int], listen: int) -> tuple[UserProxy, Callable[[], None]]:
    need("haproxy")
    proxy = UserHAProxy(folder, "testapp", listen, ports)
    proxy.map.chmod(0o640)  # the user's mode: kept by every rewrite
    config = HAProxyConfig(kind="haproxy", listen=f"127.0.0.1:{listen}", manage=False, socket=str(proxy.sock),
                           map_file=str(proxy.map))
    return UserProxy("haproxy", config, folder / "state", listen, proxy.start, proxy.kill,
                     lambda: runtime_api(proxy.sock, f"set map {proxy.map} testapp testapp_bleu"), "testapp_bleu"), \
        proxy.kill


def envoy_proxy(folder: Path, ports: dict[str, int], listen: int) -> tuple[UserProxy, Callable[[], None]]:
    admin = free_port()
    envoy_config = user_config(folder, admin, listen, ports, KEY)
    link = folder / "envoy-runtime" / "current"
    running: list[subprocess.Popen] = []

    def start() -> None:
        running.append(start_envoy(envoy_config, admin, listen))

    def stop() -> None:
        while running:  # each once, the last started first: only it can hold the port
            stop_envoy(running.pop(), listen)

    def garble() -> None:  # the raw switch command run with a colour where a percent belongs
        fresh = folder / "envoy-runtime" / "by-hand"
        shutil.copytree(link.resolve(), fresh)
        (fresh / Path(*KEY.split("."))).write_text("blue")
        os.symlink(fresh.name, folder / "envoy-runtime" / ".by-hand.link")
        os.replace(folder / "envoy-runtime" / ".by-hand.link", link)

    config = EnvoyConfig(kind="envoy", listen=f"127.0.0.1:{listen}", manage=False, admin=f"127.0.0.1:{admin}",
                         runtime_dir=str(link))
    return UserProxy("envoy", config, folder / "state", listen, start, stop, garble, "'blue'"), stop


def traefik_proxy(folder: Path, ports: dict[str, int], listen: int) -> tuple[UserProxy, Callable[[], None]]:
    api = free_port()
    proxy = UserTraefik(folder / "user", listen, api)
    dynamic = folder / "user" / "dynamic" / "bluegreen.yml"

    def garble() -> None:  # someone points the weighted service at a service of their own
        text = yaml.safe_load(dynamic.read_text())
        text["http"]["services"]["demo"]["weighted"]["services"][0]["name"] = "demo-bleu"
        text["http"]["services"]["demo-bleu"] = text["http"]["services"]["demo-blue"]
        dynamic.write_text(yaml.safe_dump(text))

    config = TraefikConfig(kind="traefik", listen=f"127.0.0.1:{listen}", manage=False, api=f"http://127.0.0.1:{api}",
                           service="demo", api_auth=f"bluegreen:{PASSWORD}",  # type: ignore[arg-type]
                           dynamic_file=str(dynamic))
    return UserProxy("traefik", config, folder / "state", listen, proxy.start, proxy.stop, garble, "'demo-bleu'"), \
        proxy.stop


def nginx_proxy(folder: Path, ports: dict[str, int], listen: int) -> tuple[UserProxy, Callable[[], None]]:
    if not Path(NGINX).exists():
        pytest.skip("nginx is not installed (.ci/setup-packages.sh)")
    state = folder / "state"
    proxy = UserNginx(folder / "user-nginx", "testapp", ports, listen, state / "upstream")
    config = NginxConfig(kind="nginx", listen=f"127.0.0.1:{listen}", manage=False)
    return UserProxy("nginx", config, state, listen, proxy.start, proxy.kill,
                     lambda: (state / "upstream").write_text("bleu\n"), "'bleu'"), proxy.kill


def caddy_proxy(folder: Path, ports: dict[str, int], listen: int) -> tuple[UserProxy, Callable[[], None]]:
    upstream = folder / "state" / "upstream"
    snippet = (ROOT / "examples" / "routers" / "caddy" / "caddy.json").read_text()  # the README's
    assert "127.0.0.1:8080" in snippet and "/srv/myapp/.bluegreen/production/upstream" in snippet
    caddy_json = folder / "caddy.json"
    caddy_json.write_text(snippet.replace("127.0.0.1:8080", f"127.0.0.1:{listen}")
                          .replace("/srv/myapp/.bluegreen/production/upstream", str(upstream)))
    running: list[subprocess.Popen] = []

    def start() -> None:
        running.append(subprocess.Popen([caddy_binary(), "run", "--config", str(caddy_json)],
                                        env={**os.environ, "HOME": str(folder)}, start_new_session=True,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", listen)) != 0:
            assert running[-1].poll() is None and time.monotonic() < deadline, "the user's caddy did not start"
            time.sleep(0.05)

    def stop() -> None:
        while running:  # down for good when it returns, each once, the last started first
            kill_and_wait(running.pop(), listen)

    config = CaddyConfig(listen=f"127.0.0.1:{listen}", manage=False, upstream_file=str(upstream))
    return UserProxy("caddy", config, folder / "state", listen, start, stop,
                     lambda: upstream.write_text("127.0.0.1:1\n"), "'127.0.0.1:1'"), stop


PROXIES = {"haproxy": haproxy_proxy, "envoy": envoy_proxy, "traefik": traefik_proxy, "nginx": nginx_proxy,
           "caddy": caddy_proxy}


@pytest.fixture(params=list(PROXIES))
def user_proxy(request, folder, apps):
    proxy, stop = PROXIES[request.param](folder, apps, free_port())
    proxy.start()
    yield proxy
    stop()


def remote_router(proxy: UserProxy, ports: dict[str, int], shell=None) -> Router:
    return make_router(proxy.config, upstreams={c: [f"127.0.0.1:{p}"] for c, p in ports.items()},
                       state_dir=proxy.state_dir, app="testapp", shell=shell or LocalShell())


def answers(port: int, n: int = 1) -> Counter:
    with httpx.Client(timeout=5) as client:
        return Counter(client.get(f"http://127.0.0.1:{port}/version").text.strip() for _ in range(n))


def eventually(condition: Callable[[], object], what: str) -> None:
    """Traefik applies its file provider's changes in the background (its switch polls; a hand edit does not)."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def read_error(router: Router) -> str | None:
    try:
        router.read()
    except TargetError as exc:
        return str(exc)
    return None


def test_read_switch_split_raw_garbled_and_down_through_a_shell(user_proxy, apps):
    proxy = user_proxy
    router = remote_router(proxy, apps)
    where = f"{proxy.kind} at 127.0.0.1:{proxy.listen} on localhost"
    assert router.name == where
    assert router.check() is None
    assert router.read() is None  # nothing released yet: a missing file, an empty map, no runtime key

    for colour in ("blue", "green", "blue"):
        router.switch(colour, time.monotonic() + DEADLINE)  # type: ignore[arg-type]
        assert router.read() == all_to(colour) and router.live() == colour  # type: ignore[arg-type]
        assert answers(proxy.listen) == {colour: 1}
    if proxy.kind == "haproxy":
        assert (proxy.state_dir.parent / "haproxy" / "bluegreen.map").stat().st_mode & 0o777 == 0o640  # kept
        assert router.read() == all_to("blue")
    if proxy.kind in ("caddy", "nginx"):
        assert (proxy.state_dir / "upstream").stat().st_mode & 0o777 == 0o644  # readable by a proxy's own user
    if proxy.kind == "envoy":
        runtime = proxy.state_dir.parent / "envoy-runtime"
        (runtime / "current" / "theirs").write_text("7")  # a key of the user's: every swap keeps it
        router.switch("green", time.monotonic() + DEADLINE)
        assert (runtime / "current" / "theirs").read_text() == "7"
        assert len(list(runtime.glob("current.bluegreen-*"))) == 2  # the live tree and the previous one only

    if router.weighted:
        router.set_weights({"blue": 80, "green": 20}, time.monotonic() + DEADLINE)
        assert router.read() == {"blue": 80, "green": 20} and router.live() == "blue"
        seen = answers(proxy.listen, 100)
        assert seen["blue"] > seen["green"] > 0 and seen["blue"] + seen["green"] == 100, seen

    # The runbook's raw command names the files as the host has them, and switches as bluegreen does.
    raw = router.raw_switch_command("green")
    subprocess.run(["sh", "-c", raw], check=True, timeout=10, capture_output=True)
    eventually(lambda: router.read() == all_to("green"), f"the raw switch did not reach {proxy.kind}")
    assert answers(proxy.listen) == {"green": 1}
    assert not [p for p in proxy.state_dir.glob(".*") if p.name.startswith((".upstream.", ".haproxy"))]  # no temps

    proxy.garble()
    eventually(lambda: read_error(router), f"{proxy.kind}: the garbled value was never read")
    error = read_error(router)
    assert error and "\n" not in error and "neither blue" in error and proxy.garbled in error, error
    assert "on localhost" in error, error  # the host is named

    proxy.stop()
    with pytest.raises(TargetError) as down:
        router.check()
    line = str(down.value)
    assert "\n" not in line and f"the router ({where}) is not reachable" in line, line
    assert "live traffic was not touched" in line and "router.manage: true" not in line, line


class DeadForwards(LocalShell):
    """A host whose forwards open locally but lead nowhere: what an SSH port forward does when nothing listens
    behind it on the host (its local end accepts, then closes without a byte). Probes ask the host itself."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.listeners: list[socket.socket] = []

    def _serve(self, listener: socket.socket) -> None:
        listener.listen(16)
        self.listeners.append(listener)

        def accept_and_close() -> None:
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                conn.close()

        threading.Thread(target=accept_and_close, daemon=True).start()

    def dial_tcp(self, host: str, port: int) -> tuple[str, int]:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        self._serve(listener)
        return listener.getsockname()

    def dial_unix(self, path: str) -> str:
        local = str(self.folder / f"forward-{len(self.listeners)}.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(local)
        self._serve(listener)
        return local

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


@pytest.mark.parametrize("user_proxy", ["haproxy", "envoy", "traefik"], indirect=True)
def test_a_forward_whose_far_end_is_gone_reads_as_unreachable_in_one_line(user_proxy, apps, folder):
    shell = DeadForwards(folder)
    try:
        router = remote_router(user_proxy, apps, shell)
        with pytest.raises(TargetError) as down:
            router.check()
        line = str(down.value)
        assert "\n" not in line and f"the router ({router.name}) is not reachable" in line, line
        assert "on localhost" in line and "live traffic was not touched" in line, line
        error = read_error(router)
        assert error and "\n" not in error and router.name in error, error
    finally:
        shell.close()


def test_manage_true_on_another_host_is_refused():
    config = HAProxyConfig(kind="haproxy", listen=":80")
    with pytest.raises(TargetError) as refused:
        make_router(config, upstreams={"blue": ["10.0.0.1:8081"], "green": ["10.0.0.1:8082"]},
                    state_dir=Path("/var/lib/bluegreen/app"), app="app", shell=LocalShell())
    assert str(refused.value) == (
        "router haproxy at :80 on localhost: manage: true is refused on another host: bluegreen never runs a proxy on "
        "your load balancer; run it there yourself and set router.manage: false")


def test_caddy_with_several_servers_per_colour_is_refused():
    with pytest.raises(TargetError) as refused:
        make_router(CaddyConfig(listen=":80", manage=False),
                    upstreams={"blue": ["app1:8081", "app2:8081"], "green": ["app1:8082", "app2:8082"]},
                    state_dir=Path("/var/lib/bluegreen/app"), app="app", shell=LocalShell())
    line = str(refused.value)
    assert "blue has 2 servers, but Caddy's upstream file holds one address" in line, line
    assert "haproxy, envoy, traefik, nginx" in line and "router_host: each" in line, line


# --- several servers per colour: a load balancer in front of N app hosts -----------------------------------


@pytest.mark.parametrize("kind", ["haproxy", "envoy", "traefik", "nginx"])
def test_several_servers_per_colour_with_the_real_proxy(kind, folder):
    """manage: true writes every server into the proxy's config (Traefik: into its dynamic file); a switch and a
    split reach every server of a colour, and read() accepts the list back."""
    need({"haproxy": "haproxy", "envoy": "envoy", "traefik": "traefik", "nginx": NGINX}[kind])
    ports = {(c, n): free_port() for c in ("blue", "green") for n in (1, 2)}
    procs = [start_app(port, f"{c}-{n}") for (c, n), port in ports.items()]
    listen = free_port()
    extra = {"envoy": {"admin": f"127.0.0.1:{free_port()}"}, "traefik": {"api": f"http://127.0.0.1:{free_port()}"}}
    from pydantic import TypeAdapter

    from bluegreen.config import RouterConfig

    config = TypeAdapter(RouterConfig).validate_python(
        {"kind": kind, "listen": f"127.0.0.1:{listen}", **extra.get(kind, {})})
    upstreams = {c: [f"127.0.0.1:{ports[c, n]}" for n in (1, 2)] for c in ("blue", "green")}
    router = make_router(config, upstreams=upstreams, state_dir=folder / "state", app="testapp")
    try:
        router.check()  # starts the proxy
        router.switch("green", time.monotonic() + DEADLINE)
        assert router.read() == all_to("green")
        assert set(answers(listen, 40)) == {"green-1", "green-2"}
        router.set_weights({"blue": 50, "green": 50}, time.monotonic() + DEADLINE)
        assert router.read() == {"blue": 50, "green": 50}
        seen = answers(listen, 200)
        assert set(seen) == {"blue-1", "blue-2", "green-1", "green-2"}, seen
    finally:
        router.stop()
        for app in procs:
            app.kill()
            app.wait()


# --- the file seam on its own: what the routers above rely on ---------------------------------------------


def test_shell_files_are_atomic_keep_modes_and_fail_in_one_line(folder):
    from bluegreen.routers.files import ShellFiles

    files, target = ShellFiles(LocalShell()), folder / "deep" / "map"
    assert files.read(target, "read the map") is None  # missing: None, not an error
    files.write(target, "a b\n", "write the map")  # its folder made
    assert target.read_text() == "a b\n" and target.stat().st_mode & 0o777 == 0o644
    target.chmod(0o600)
    files.write(target, "a c\n", "write the map", keep_mode=True)
    assert target.read_text() == "a c\n" and target.stat().st_mode & 0o777 == 0o600
    assert files.read(target, "read the map") == "a c\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["map"]  # no temp file left behind
    files.remove(target, "remove the map")
    files.remove(target, "remove the map")  # already gone: fine
    assert not target.exists()

    (folder / "file").write_text("x")
    with pytest.raises(TargetError) as failed:
        files.write(folder / "file" / "map", "a b\n", "write the map")
    line = str(failed.value)
    assert line.startswith(f"cannot write the map {folder / 'file' / 'map'} on localhost: ") and "\n" not in line

    (folder / "rt" / "current").mkdir(parents=True)  # a directory where Envoy's symlink belongs
    with pytest.raises(TargetError) as refused:
        files.swap_link(folder / "rt" / "current", Path("a/b"), "10", "switch the layer")
    assert "is a directory, not a symlink" in str(refused.value) and "on localhost" in str(refused.value)
    assert not list((folder / "rt").glob("current.bluegreen-*"))  # nothing half-made
