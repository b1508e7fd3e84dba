"""The DNS router (RFC 2136 dynamic update, dnspython) against a real BIND9 (Debian bind9) started here with a
TSIG key and an update-policy for the one name; the raw command run by the real nsupdate (bind9-dnsutils)."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from conftest import KeptAliveLoad, LocalEnv, assert_one_line_error, free_port, kill_and_wait
from dnslab import KEY, NAME, SECRET, ZONE, Bind, named_binary, nsupdate_binary, start_bind

from bluegreen.config.routers import DnsRouter as DnsConfig
from bluegreen.errors import ConfigError, TargetError
from bluegreen.routers import make_router
from bluegreen.traffic import all_to

ADDRESSES = {"blue": ["127.0.0.2:8080"], "green": ["127.0.0.3:8080"]}
OUTSIDE = "other"  # a name the key may not update


@pytest.fixture(autouse=True)
def bind_installed():
    """Skip on a developer's machine without BIND; fail where CI promised it (BLUEGREEN_REQUIRE_TOOLS=1)."""
    if not named_binary() or not nsupdate_binary():
        reason = "BIND9 is not installed (.ci/setup-packages.sh installs bind9 bind9-dnsutils)"
        if os.environ.get("BLUEGREEN_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{reason} (BLUEGREEN_REQUIRE_TOOLS=1: not skipping)")
        pytest.skip(reason)


@pytest.fixture
def bind(tmp_path: Path):
    server = start_bind(tmp_path / "bind", free_port())
    yield server
    kill_and_wait(server.process, sig=15, timeout=20)


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("BLUEGREEN_TSIG_SECRET", SECRET)


def router(bind: Bind, tmp_path: Path, **fields):
    config = DnsConfig(**{"kind": "dns", "server": bind.server, "zone": ZONE, "name": NAME, "tsig_key": KEY,
                          "ttl": 1, "timeout": 5, **fields})
    return make_router(config, upstreams=ADDRESSES, state_dir=tmp_path, app="app")


def test_first_deploy_creates_the_record_then_switches_by_cas(bind, tmp_path):
    r = router(bind, tmp_path)
    assert r.reachable() is None
    assert r.read() is None  # no record yet: nothing is live
    r.switch("blue", time.monotonic() + 10)
    assert bind.query() == ["127.0.0.2"] and bind.ttl() == 1
    assert r.live() == "blue"
    r.switch("green", time.monotonic() + 10)
    assert bind.query() == ["127.0.0.3"]
    r.switch("blue", time.monotonic() + 10)  # a rollback is the same compare-and-swap
    assert bind.query() == ["127.0.0.2"] and r.live() == "blue"
    assert r.cache_ttl() == 1.0


def test_the_old_answer_s_own_ttl_is_planned_for(bind, tmp_path):
    bind.nsupdate(f"update add {NAME}.{ZONE}. 600 A 127.0.0.2")  # blue, by hand, with a long TTL
    r = router(bind, tmp_path)
    assert r.live() == "blue"
    r.switch("green", time.monotonic() + 10)
    assert bind.ttl() == 1 and r.cache_ttl() == 600.0  # clients may keep the replaced answer 600 s


def test_a_record_per_server(bind, tmp_path):
    config = DnsConfig(kind="dns", server=bind.server, zone=ZONE, name=NAME, tsig_key=KEY)
    r = make_router(config, upstreams={"blue": ["127.0.0.2:1", "127.0.0.4:1"], "green": ["127.0.0.3:1"]},
                    state_dir=tmp_path, app="app")
    r.switch("blue", time.monotonic() + 10)
    assert bind.query() == ["127.0.0.2", "127.0.0.4"] and r.live() == "blue"
    r.switch("green", time.monotonic() + 10)
    assert bind.query() == ["127.0.0.3"] and r.live() == "green"


@pytest.mark.parametrize("hand", ["127.0.0.9", "127.0.0.3"])
def test_a_hand_change_between_read_and_write_is_refused(bind, tmp_path, hand):
    r = router(bind, tmp_path)
    r.switch("blue", time.monotonic() + 10)
    assert r.live() == "blue"  # the run reads live...
    done = bind.nsupdate(f"update delete {NAME}.{ZONE}. A", f"update add {NAME}.{ZONE}. 60 A {hand}")
    assert done.returncode == 0, done.stderr  # ...someone changes it by hand...
    with pytest.raises(TargetError) as err:
        r.write(all_to("green"))  # ...and the compare-and-swap is refused
    line = str(err.value)
    assert "\n" not in line and "changed since bluegreen read it" in line and "NXRRSET" in line, line
    assert "127.0.0.2" in line and "hand edit or another run" in line
    assert bind.query() == [hand]  # the hand change stands


def test_a_hand_change_through_switch_leaves_live_untouched(bind, tmp_path):
    r = router(bind, tmp_path)
    r.switch("blue", time.monotonic() + 10)
    r.read()
    bind.nsupdate(f"update delete {NAME}.{ZONE}. A", f"update add {NAME}.{ZONE}. 60 A 127.0.0.9")
    with pytest.raises(TargetError) as err:
        r.switch("green", time.monotonic() + 10)
    assert "the switch failed" in str(err.value) and "NXRRSET" in str(err.value)
    assert bind.query() == ["127.0.0.9"]


def test_two_routers_cannot_both_switch(bind, tmp_path):
    first, second = router(bind, tmp_path), router(bind, tmp_path)
    first.switch("blue", time.monotonic() + 10)
    assert first.live() == "blue" and second.live() == "blue"  # two runs read the same value
    first.write(all_to("green"))
    with pytest.raises(TargetError, match="NXRRSET"):
        second.write(all_to("green"))


def test_wrong_secret_is_badsig(bind, tmp_path, monkeypatch):
    r = router(bind, tmp_path)
    r.switch("blue", time.monotonic() + 10)
    monkeypatch.setenv("BLUEGREEN_TSIG_SECRET", base64.b64encode(b"not the secret").decode())
    with pytest.raises(TargetError) as err:
        r.check()  # right before a switch: refused before anything changes
    assert "BADSIG" in str(err.value) and "BLUEGREEN_TSIG_SECRET" in str(err.value)
    with pytest.raises(TargetError, match="BADSIG"):
        r.switch("green", time.monotonic() + 10)
    assert "BADSIG" in (r.reachable() or "")
    assert bind.query() == ["127.0.0.2"]
    assert SECRET not in str(err.value)


def test_unknown_key_is_badkey(bind, tmp_path):
    r = router(bind, tmp_path, tsig_key="no-such-key")
    with pytest.raises(TargetError, match="BADKEY.*tsig_key"):
        r.switch("blue", time.monotonic() + 10)
    assert bind.query() == []


def test_missing_secret_names_the_variable(bind, tmp_path, monkeypatch):
    monkeypatch.delenv("BLUEGREEN_TSIG_SECRET")
    r = router(bind, tmp_path, tsig_secret_env="MY_TSIG")
    with pytest.raises(TargetError, match="environment variable MY_TSIG is not set"):
        r.prepare()


def test_name_outside_the_policy_is_refused(bind, tmp_path):
    r = router(bind, tmp_path, name=OUTSIDE)
    with pytest.raises(TargetError) as err:
        r.switch("blue", time.monotonic() + 10)
    line = str(err.value)
    assert "REFUSED" in line and f"grant {KEY} name {OUTSIDE}.{ZONE}. A;" in line, line
    assert bind.query(OUTSIDE) == []


def test_a_value_of_neither_colour_says_what_it_found(bind, tmp_path):
    bind.nsupdate(f"update add {NAME}.{ZONE}. 60 A 127.0.0.9")
    r = router(bind, tmp_path)
    with pytest.raises(TargetError, match=r"holds 127\.0\.0\.9, which is neither blue \(127\.0\.0\.2\) nor green"):
        r.read()
    assert r.state().unreadable


def test_timeout_is_one_line(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # takes queries, never answers
        silent.bind(("127.0.0.1", 0))
        config = DnsConfig(kind="dns", server=f"127.0.0.1:{silent.getsockname()[1]}", zone=ZONE, tsig_key=KEY,
                           timeout=0.3)
        r = make_router(config, upstreams=ADDRESSES, state_dir=tmp_path, app="app")
        with pytest.raises(TargetError, match=r"no answer from 127\.0\.0\.1:\d+ within 0\.3 s"):
            r.read()


def test_the_raw_command_run_by_nsupdate_switches_back(bind, tmp_path):
    r = router(bind, tmp_path)
    r.switch("green", time.monotonic() + 10)
    command = r.raw_switch_command("blue")
    assert SECRET not in command and "$" + "{BLUEGREEN_TSIG_SECRET}" in command
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30,
                          env={**os.environ, "BLUEGREEN_TSIG_SECRET": SECRET})
    assert done.returncode == 0, done.stderr
    assert bind.query() == ["127.0.0.2"] and r.live() == "blue"


def test_colours_must_have_their_own_addresses(tmp_path):
    config = DnsConfig(kind="dns", server="127.0.0.1:53", zone=ZONE, tsig_key=KEY)
    with pytest.raises(ConfigError, match="blue and green share the address 127.0.0.1.*own address"):
        make_router(config, upstreams={"blue": ["127.0.0.1:8081"], "green": ["127.0.0.1:8082"]},
                    state_dir=tmp_path, app="app")
    with pytest.raises(ConfigError, match="type A needs IPv4 addresses.*use type CNAME"):
        make_router(config, upstreams={"blue": ["blue.internal:80"], "green": ["green.internal:80"]},
                    state_dir=tmp_path, app="app")
    cname = DnsConfig(kind="dns", server="127.0.0.1:53", zone=ZONE, tsig_key=KEY, type="CNAME")
    r = make_router(cname, upstreams={"blue": ["blue.internal:80"], "green": ["green.internal:80"]},
                    state_dir=tmp_path, app="app")
    assert "update add app.example.test. 60 CNAME green.internal." in r.raw_switch_command("green")


# --- end to end: the local runtime with each colour on its own loopback address, through the CLI ----------------


def use_dns(env: LocalEnv, bind: Bind, ttl: int = 1, extra: str = "", **router: object) -> None:
    """The env's config with each colour on its own address and router.kind dns at `bind`."""
    env.write(test_suite="", extra=extra)
    fields = {"kind": "dns", "server": bind.server, "zone": ZONE, "name": NAME, "tsig_key": KEY, "ttl": ttl, **router}
    text = env.config.read_text()
    old = f'router: {{listen: "127.0.0.1:{env.proxy_port}"}}'
    assert old in text
    text = text.replace(old, "addresses: {blue: 127.0.0.2, green: 127.0.0.3}\n"
                        "      router: " + json.dumps(fields))
    text = text.replace('"--colour", "{colour}"]', '"--colour", "{colour}", "--host", "{host}"]')
    text = text.replace("  test:\n", f"  test:\n    url: http://{NAME}.{ZONE}:{env.ports['blue']}\n", 1)
    env.config.write_text(text)
    env.environ["BLUEGREEN_TSIG_SECRET"] = SECRET


def served(host: str, port: int) -> str:
    return httpx.get(f"http://{host}:{port}/version", timeout=5).text.strip()


def test_deploy_switch_and_rollback_through_the_cli(local_env, bind):
    env = local_env
    env.ports["green"] = env.ports["blue"]  # one port: each colour is told apart by its address alone
    use_dns(env, bind)
    first = env.cli("deploy", "--version", "1")
    assert first.returncode == 0, first.stderr
    assert bind.query() == ["127.0.0.2"] and served("127.0.0.2", env.ports["blue"]) == "1"
    report = env.report()
    assert report["live_colour"] == "blue" and report["caches_expire"] is None  # no old answer to keep

    second = env.cli("deploy", "--version", "2")
    assert second.returncode == 0, second.stderr
    assert bind.query() == ["127.0.0.3"] and served("127.0.0.3", env.ports["green"]) == "2"
    assert f"checked through its own address, http://127.0.0.3:{env.ports['green']} (Host: {NAME}.{ZONE}:" \
        in second.stderr
    report = env.report()
    assert report["caches_expire"] and report["raw_rollback_command"].endswith('nsupdate -y "hmac-sha256:'
                                                                               f'{KEY}:${{BLUEGREEN_TSIG_SECRET}}"')
    assert SECRET not in second.stderr and SECRET not in json.dumps(report)
    assert "resolver caches expire" in (env.dir / "bluegreen-report.json").read_text() or report["caches_expire"]
    assert served("127.0.0.2", env.ports["blue"]) == "1"  # the old colour still serves clients with the old answer

    back = env.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert bind.query() == ["127.0.0.2"]
    assert env.report()["caches_expire"]  # a rollback's switch has its TTL too
    status = json.loads(env.cli("status", "--json").stdout)
    assert status["live"] == "blue"


def test_scale_down_waits_for_resolver_caches(local_env, bind):
    env = local_env
    use_dns(env, bind, ttl=2)
    text = env.config.read_text().replace("scale_down_delay: never", "scale_down_delay: 0s")
    env.config.write_text(text)
    assert env.cli("deploy", "--version", "1").returncode == 0
    second = env.cli("deploy", "--version", "2")
    assert second.returncode == 0, second.stderr
    assert "scale_down_delay 0s raised to 12s: clients may keep the old DNS answer for its TTL (2s)" in second.stderr
    assert served("127.0.0.2", env.ports["blue"]) == "1"  # blue still serves right after the switch


def test_a_hand_change_during_a_deploy_exits_1_live_untouched(local_env, bind):
    env = local_env
    use_dns(env, bind)
    assert env.cli("deploy", "--version", "1").returncode == 0
    hand = env.dir / "hand.txt"  # the test suite of the next deploy edits the record by hand, after the run read it
    hand.write_text(f"server 127.0.0.1 {bind.port}\nzone {ZONE}.\nupdate delete {NAME}.{ZONE}. A\n"
                    f"update add {NAME}.{ZONE}. 60 A 127.0.0.9\nsend\n")
    use_dns(env, bind, extra=textwrap.dedent(f"""\
        test_suite:
          command: [nsupdate, -y, "hmac-sha256:{KEY}:{SECRET}", {json.dumps(str(hand))}]
          timeout: 30s
        """))
    second = env.cli("deploy", "--version", "2")
    assert second.returncode == 1, second.stderr
    line = next(x for x in second.stderr.splitlines() if x.startswith("deploy failed: "))
    assert "changed since bluegreen read it (127.0.0.2)" in line and "(NXRRSET)" in line, line
    assert "live routing is unchanged" in line
    assert bind.query() == ["127.0.0.9"]  # the hand edit stands
    assert SECRET not in second.stderr


def test_config_load_refusals(tmp_path, bind):
    env = LocalEnv(dir=tmp_path, config=tmp_path / "bluegreen.yml", proxy_port=free_port(),
                   ports={"blue": free_port(), "green": free_port()})
    use_dns(env, bind)
    assert env.cli("validate").returncode == 0
    no_url = env.config.read_text().replace(f"    url: http://{NAME}.{ZONE}:{env.ports['blue']}\n", "")
    env.config.write_text(no_url)
    line = assert_one_line_error(env.cli("validate"))
    assert "environments.test.url: router kind dns has no address of its own" in line
    use_dns(env, bind)
    env.config.write_text(env.config.read_text() + "strategy: canary\ncanary: {steps: [{weight: 10}, {weight: 100}]}\n")
    result = env.cli("validate")
    assert result.returncode == 2 and "strategy: canary needs a router that can split traffic; router kind dns" \
        in result.stderr
    use_dns(env, bind)
    env.config.write_text(env.config.read_text().replace("addresses: {blue: 127.0.0.2, green: 127.0.0.3}\n      ", ""))
    result = env.cli("status")
    assert result.returncode == 2, result.stderr
    assert "blue and green share the address 127.0.0.1" in assert_one_line_error(result)


def test_a_long_ttl_is_a_warning_naming_the_cost(tmp_path, bind):
    env = LocalEnv(dir=tmp_path, config=tmp_path / "bluegreen.yml", proxy_port=free_port(),
                   ports={"blue": free_port(), "green": free_port()})
    use_dns(env, bind, ttl=3600)
    result = env.cli("deploy", "--version", "1", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "TTL 3600s is above 300s: after a switch clients keep the old answer up to 3600s, so the old colour keeps " \
           "running that long" in result.stderr
    assert bind.query() == []  # a dry run changes nothing


def test_all_over_haproxy_and_the_record_one_refuses_the_other_goes_back(local_env, bind):
    """router.kind all over bluegreen's HAProxy and the BIND record: both switched as one; then the record is
    changed by hand during a deploy, so it refuses, and HAProxy, which had moved, is switched back: exit 1, and no
    request through HAProxy fails under load."""
    env = local_env
    use_dns(env, bind)
    text = env.config.read_text()
    dns_router = text.split("      router: ", 1)[1].split("\n", 1)[0]
    haproxy = json.dumps({"kind": "haproxy", "listen": f"127.0.0.1:{env.proxy_port}"})
    env.config.write_text(text.replace("      router: " + dns_router,
                                       f'      router: {{kind: all, routers: [{haproxy}, {dns_router}]}}'))
    for version in ("1", "2"):
        done = env.cli("deploy", "--version", version)
        assert done.returncode == 0, done.stderr
    assert "2 routers switched; skew" in done.stderr
    assert bind.query() == ["127.0.0.3"] and env.live_version() == "2"

    hand = env.dir / "hand.txt"  # the next deploy's test suite edits the record by hand, after the run read it
    hand.write_text(f"server 127.0.0.1 {bind.port}\nzone {ZONE}.\nupdate delete {NAME}.{ZONE}. A\n"
                    f"update add {NAME}.{ZONE}. 60 A 127.0.0.9\nsend\n")
    text = env.config.read_text() + textwrap.dedent(f"""\
        test_suite:
          command: [nsupdate, -y, "hmac-sha256:{KEY}:{SECRET}", {json.dumps(str(hand))}]
          timeout: 30s
        """)
    env.config.write_text(text)

    with KeptAliveLoad(env.proxy_port) as load:  # through HAProxy, which moves and must come back
        third = env.cli("deploy", "--version", "3")
    assert third.returncode == 1, third.stderr
    line = next(x for x in third.stderr.splitlines() if x.startswith("deploy failed: "))
    assert "the switch failed on dns" in line and "switched haproxy at" in line and "back" in line, line
    assert env.live_version() == "2" and bind.query() == ["127.0.0.9"]  # HAProxy back on green; the hand edit stands
    assert load.failures == [] and sum(load.served.values()) > 50, (load.failures[:5], load.served)
    assert SECRET not in third.stderr
    print(f"{line}\nthrough HAProxy during the refused switch: {dict(load.served)}, {len(load.failures)} failed")
