"""Verification and the canary gates go where users go: the environment's `url` when it is set (a CDN, a DNS name,
a load balancer in front of the router), else the router's own address; `verify.url` overrides both.

Real parts: the local target (example app behind Caddy, or HAProxy for the canary), the real CLI, and in front
of it a real HTTP server standing for the public address: one that forwards to the router (what users reach)
and one that answers 503 to everything (the address the run must not trust when `url` says otherwise)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Forwarder, LocalEnv

HAVE_HAPROXY = any(Path(p, "haproxy").exists() for p in [*os.environ.get("PATH", "").split(":"), "/usr/sbin"])


def Front(upstream: str | None = None) -> Forwarder:  # noqa: N802 (reads as the class it stands for)
    """Forwards GETs to `upstream` (what users reach), or answers 503 to everything when there is none."""
    return Forwarder(lambda: upstream, unavailable=b"down for maintenance\n")


@pytest.fixture
def fronts() -> Iterator[list[Forwarder]]:
    made: list[Forwarder] = []
    yield made
    for front in made:
        front.close()


def with_url(env: LocalEnv, url: str, verify_url: str | None = None) -> None:
    """Set the environment's `url` (and `verify.url`) in the env's config, as a user writes it."""
    text = "".join(line for line in env.config.read_text().splitlines(keepends=True)
                   if not line.startswith(("    url:", "    verify:")))  # a previous with_url's
    lines = f"    url: {url}\n" + (f"    verify: {{url: {verify_url}, window: 0.5s, interval: 0.1}}\n" if verify_url else "")
    assert "  test:\n    target:" in text
    env.config.write_text(text.replace("  test:\n    target:", "  test:\n" + lines + "    target:", 1))


def deploy(env: LocalEnv, version: str) -> tuple[int, dict]:
    result = env.cli("deploy", "--version", version)
    return result.returncode, env.report()


def test_verification_goes_through_url_not_the_routers_address(local_env: LocalEnv, fronts: list[Front]):
    env = local_env
    env.write(test_suite="")
    assert deploy(env, "1")[0] == 0

    # The public address forwards to the router: verification goes through it, and the outputs name it.
    public = Front(upstream=env.live_url)
    fronts.append(public)
    with_url(env, public.url)
    code, report = deploy(env, "2")
    assert code == 0, report["reason"]
    assert report["live_url"] == public.url
    assert public.paths["/version"] >= 2, public.paths  # verify.consecutive_successes, through the public address
    assert env.live_version() == "2"

    # The public address fails while the router's own address serves: the run believes the public address.
    down = Front()
    fronts.append(down)
    with_url(env, down.url)
    code, report = deploy(env, "3")
    assert code == 4, report  # switched back: users would have seen 503s
    assert report["status"] == "rolled_back" and report["switched_back"] is True
    assert f"through {down.url}" in report["reason"], report["reason"]
    assert down.paths["/version"] >= 1
    assert env.live_version() == "2"


def test_verify_url_looks_at_the_router_itself(local_env: LocalEnv, fronts: list[Front]):
    """`verify.url` bypasses the public address (a CDN that caches /version, say): verification goes there,
    while the outputs still name the public URL."""
    env = local_env
    env.write(test_suite="")
    assert deploy(env, "1")[0] == 0
    down = Front()
    fronts.append(down)
    with_url(env, down.url, verify_url=env.live_url)
    code, report = deploy(env, "2")
    assert code == 0, report["reason"]
    assert report["live_url"] == down.url
    assert down.paths["/version"] == 0, down.paths
    assert env.live_version() == "2"


def test_a_url_that_is_not_http_is_refused_at_load(local_env: LocalEnv):
    with_url(local_env, "shop.example.com")
    result = local_env.cli("validate")
    assert result.returncode == 2
    assert "environments.test.url" in result.stderr and "http:// or https://" in result.stderr, result.stderr


@pytest.mark.skipif(not HAVE_HAPROXY, reason="HAProxy is not installed (run .ci/setup-packages.sh)")
def test_canary_gates_go_through_url(local_env: LocalEnv, fronts: list[Front]):
    from test_canary import canary_env, split

    env = canary_env(local_env, "[{weight: 20, pause: 0.5s}]")
    assert deploy(env, "1")[0] == 0
    down = Front()
    fronts.append(down)
    with_url(env, down.url)
    code, report = deploy(env, "2")
    assert code == 4, report
    assert report["reason"].startswith("canary gate: smoke check"), report["reason"]
    assert f"through {down.url}" in report["reason"]
    assert split(env) == {"blue": 100, "green": 0}  # the new colour back to 0% in one change


@pytest.mark.parametrize("listen, live_url", [
    (":80", "http://lb1.example.com:80"),
    ("0.0.0.0:8300", "http://lb1.example.com:8300"),
    ("10.0.0.5:8300", "http://10.0.0.5:8300"),  # the address the proxy listens on, not the SSH address
    ("[::]:80", "http://lb1.example.com:80"),
    ("[fd00::5]:80", "http://[fd00::5]:80"),
])
def test_a_servers_router_address_is_its_listen_address_when_it_names_one(tmp_path: Path, listen: str, live_url: str):
    from bluegreen.config import load_config
    from bluegreen.targets import make_target

    config = tmp_path / "bluegreen.yml"
    config.write_text(f"""\
app: shop
environments:
  production:
    target:
      kind: servers
      hosts: [app1.example.com]
      ssh: {{user: deploy, known_hosts: "app1.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"}}
      run: {{mode: command, deploy: "true", start: "true", stop: "true"}}
      ports: {{blue: 8081, green: 8082}}
      router_host: lb1.example.com:2222
      router: {{kind: haproxy, listen: "{listen}", socket: /run/haproxy/admin.sock, map_file: /etc/haproxy/bg.map}}
""")
    target = make_target(load_config(str(config), None))
    try:
        assert target.live_url() == live_url
    finally:
        target.close()
