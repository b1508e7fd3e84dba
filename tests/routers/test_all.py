"""`router.kind: all`: two real routers of different kinds switched as one (bluegreen's Caddy and the user's
HAProxy), all or nothing: when one refuses, the other is switched back, the run fails, and no request through the
one that moved and came back fails."""

from __future__ import annotations

import json

import pytest

from conftest import KeptAliveLoad, free_port
from test_haproxy import UserHAProxy, pytestmark, runtime_api  # noqa: F401  (skipped without HAProxy, as there)


def use_all(env, haproxy: UserHAProxy) -> None:
    """Caddy (bluegreen's, the live URL) and the user's HAProxy, one `all` router."""
    env.write(test_suite="")
    routers = {"kind": "all", "routers": [
        {"kind": "caddy", "listen": f"127.0.0.1:{env.proxy_port}"},
        {"kind": "haproxy", "listen": haproxy.address, **haproxy.router_fields()}]}
    text = env.config.read_text()
    old = f'router: {{listen: "127.0.0.1:{env.proxy_port}"}}'
    assert old in text
    env.config.write_text(text.replace(old, "router: " + json.dumps(routers)))


@pytest.fixture
def both(local_env):
    haproxy = UserHAProxy(local_env.dir, "testapp", free_port(), local_env.ports)
    use_all(local_env, haproxy)
    haproxy.start()
    yield local_env, haproxy
    haproxy.kill()


def haproxy_live(haproxy: UserHAProxy) -> str:
    return runtime_api(haproxy.sock, f"show map {haproxy.map}").rsplit("_", 1)[-1]


def test_both_switched_then_one_refuses_and_the_other_goes_back(both):
    env, haproxy = both
    for version in ("1", "2"):
        result = env.cli("deploy", "--version", version)
        assert result.returncode == 0, result.stderr
    assert "2 routers switched; skew" in result.stderr  # the report's switch detail
    assert env.live_version() == "2" and haproxy_live(haproxy) == "green"
    status = json.loads(env.cli("status", "--json").stdout)
    assert status["live"] == "green" and status["router"]["serving"], status

    # The user's HAProxy now refuses the change: its map file (which bluegreen writes first, so HAProxy restarts
    # with what it routes by) cannot be written. It still serves and answers reads, so the run reaches the switch.
    haproxy.map.unlink()
    haproxy.map.mkdir()

    with KeptAliveLoad(env.proxy_port) as load:  # through the router that moves and must come back
        result = env.cli("deploy", "--version", "3")
    assert result.returncode == 1, result.stderr
    assert "the switch failed on haproxy at" in result.stderr and "switched caddy at" in result.stderr, result.stderr
    assert "live routing is unchanged" in result.stderr
    assert env.live_version() == "2" and haproxy_live(haproxy) == "green"  # both on the old colour again
    assert load.failures == [] and sum(load.served.values()) > 50, (load.failures[:5], load.served)
    assert set(load.served) <= {"2", "3"}  # the new colour may have answered while it was switched, then no more


def test_canary_needs_every_router_of_all_to_split(local_env, tmp_path):
    haproxy = UserHAProxy(local_env.dir, "testapp", free_port(), local_env.ports)
    use_all(local_env, haproxy)  # caddy cannot split, haproxy can
    text = local_env.config.read_text() + "strategy: canary\ncanary:\n  steps: [{weight: 10}, {weight: 100}]\n"
    local_env.config.write_text(text)
    result = local_env.cli("validate")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "canary needs a router that can split traffic; one of the routers of kind all cannot" in result.stderr


def test_all_needs_two_routers(local_env):
    local_env.write(test_suite="")
    text = local_env.config.read_text()
    old = f'router: {{listen: "127.0.0.1:{local_env.proxy_port}"}}'
    local_env.config.write_text(text.replace(old, 'router: {kind: all, routers: [{kind: caddy}]}'))
    result = local_env.cli("validate")
    assert result.returncode == 2 and "routers" in result.stderr and "Traceback" not in result.stderr, result.stderr
