"""End to end on the local target: the real CLI, the real example app, a real Caddy proxy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from conftest import kill_and_wait


def test_first_release_then_switch_then_rollback(local_env):
    first = local_env.cli("deploy", "--version", "1.0.0", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["status"] == "succeeded" and result["switched"] is True
    assert result["live_colour"] == "blue" and result["previous_colour"] is None
    assert local_env.live_version() == "1.0.0"

    second = local_env.cli("deploy", "--version", "2.0.0")
    assert second.returncode == 0, second.stderr
    report = local_env.report()
    assert (report["live_colour"], report["previous_colour"], report["idle_colour"]) == ("green", "blue", "blue")
    assert (report["version"], report["previous_version"]) == ("2.0.0", "1.0.0")
    assert report["preview_url"] == f"http://127.0.0.1:{local_env.ports['green']}"
    assert report["live_url"] == local_env.live_url
    names = [p["name"] for p in report["phases"]]
    assert names[:4] == ["lock", "resolve live", "deploy green", "wait ready green"]
    assert "test suite" in names and "smoke checks" in names and "switch blue -> green" in names
    assert all(p["status"] == "succeeded" for p in report["phases"][:-1]), report["phases"]
    assert report["phases"][-1]["name"] == "scale down blue" and report["phases"][-1]["status"] == "skipped"
    assert {c["kind"] for c in report["checks"]} == {"test_suite", "smoke", "verify"}
    assert local_env.live_version() == "2.0.0"

    # The rollback command in the result is the exact command that undoes this release.
    rollback = local_env.run(*report["rollback_command"].split()[1:])
    assert rollback.returncode == 0, rollback.stderr
    assert local_env.live_version() == "1.0.0"
    assert local_env.report()["live_colour"] == "blue"


def test_raw_rollback_command_switches_back_without_bluegreen(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    assert local_env.cli("deploy", "--version", "2").returncode == 0
    raw = local_env.report()["raw_rollback_command"]
    assert "bluegreen" not in raw.replace(str(local_env.dir), "")  # for when bluegreen itself is the problem
    subprocess.run(["/bin/sh", "-c", raw], check=True, timeout=10)
    assert local_env.live_version() == "1"
    assert json.loads(local_env.cli("status", "--json").stdout)["live"] == "blue"


def test_failing_test_suite_fails_before_switch(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    local_env.write(test_suite='test_suite:\n  command: ["{python}", "-c", "print(\'2 failed\'); raise SystemExit(3)"]\n')
    result = local_env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    report = local_env.report()
    assert report["status"] == "failed" and report["switched"] is False
    assert report["live_colour"] == "blue"
    assert "test suite exited with code 3: 2 failed" in report["reason"]
    assert "2 failed" in result.stderr  # the suite's output is streamed
    assert local_env.live_version() == "1"


def test_test_suite_timeout_fails_before_switch(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    local_env.write(test_suite='test_suite:\n  command: "sleep 30"\n  shell: true\n  timeout: 1s\n')
    started = time.monotonic()
    result = local_env.cli("deploy", "--version", "2")
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    assert "timed out after 1s" in local_env.report()["reason"]
    assert local_env.live_version() == "1"


def test_failing_smoke_check_fails_before_switch(local_env):
    local_env.write(test_suite="")
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    result = local_env.cli("deploy", "--version", "2+fail-smoke")
    assert result.returncode == 1
    report = local_env.report()
    assert report["switched"] is False and report["live_colour"] == "blue"
    assert report["reason"].startswith("smoke check 'version' failed on green")
    assert "status 500" in report["reason"]
    assert local_env.live_version() == "1"


def test_version_that_breaks_after_switch_is_rolled_back(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    result = local_env.cli("deploy", "--version", "2+fail-live")
    assert result.returncode == 4, result.stderr
    report = local_env.report()
    assert report["status"] == "rolled_back" and report["switched"] is False
    assert report["live_colour"] == "blue" and report["idle_colour"] == "green"
    assert "switched back to blue" in report["reason"]
    assert local_env.live_version() == "1"
    history = json.loads(local_env.cli("status", "--json").stdout)["history"]
    assert history[0]["outcome"] == "rolled_back" and history[0]["version"] == "2+fail-live"


def test_without_auto_rollback_a_broken_release_stays_and_exits_5(local_env):
    local_env.write(extra="auto_rollback: false\n")
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    result = local_env.cli("deploy", "--version", "2+fail-live")
    assert result.returncode == 5
    assert "a human must act" in local_env.report()["reason"]
    assert local_env.cli("rollback").returncode == 0
    assert local_env.live_version() == "1"


def test_unhealthy_release_hits_the_ready_deadline(local_env):
    local_env.write(extra="timeouts: {ready: 1s}\n")
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    result = local_env.cli("deploy", "--version", "2+fail-health")
    assert result.returncode == 1
    reason = local_env.report()["reason"]
    assert reason.startswith("green not ready before the deadline") and "status 503" in reason
    assert local_env.live_version() == "1"


def test_release_that_crashes_names_its_log(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    # An argument the app refuses: the process exits at once, and the reason quotes its log.
    local_env.write(extra="")
    config = local_env.config.read_text().replace('"--colour", "{colour}"', '"--colour", "{colour}", "--bogus"')
    local_env.config.write_text(config)
    result = local_env.cli("deploy", "--version", "2")
    assert result.returncode == 1
    reason = local_env.report()["reason"]
    assert "green exited with code 2 before it was ready" in reason and "unrecognized arguments: --bogus" in reason


def test_concurrent_deploy_exits_3_naming_the_holder(local_env):
    # The first deploy holds the lock in its test suite until the test opens the gate (was: a 4 s sleep, which a
    # second run slow to start on a busy machine could outlast).
    gate = local_env.dir / "gate"
    local_env.write(test_suite='test_suite:\n  command: ["{python}", "-c", "import os, time\\nwhile not '
                               'os.path.exists(\'gate\'): time.sleep(0.05)"]\n  timeout: 120s\n')
    gate.touch()
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    gate.unlink()
    slow = subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", str(local_env.config), "--version", "2",
         "--report", "slow.json"],
        cwd=local_env.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lock = local_env.dir / "state" / "lock.json"
        deadline = time.monotonic() + 15
        while not lock.exists():
            assert time.monotonic() < deadline, "the first deploy never took the lock"
            time.sleep(0.05)
        started = time.monotonic()
        second = local_env.cli("deploy", "--version", "3")
        assert second.returncode == 3
        assert time.monotonic() - started < 30  # at once, not after waiting (the gate is shut: it would wait on)
        holder = json.loads(lock.read_text())["holder"]
        assert "Traceback" not in second.stderr
        assert f"deploy locked: the deploy lock is held by {holder} since" in second.stderr
    finally:
        gate.touch()
        _, err = slow.communicate(timeout=60)
    assert slow.returncode == 0, err
    assert local_env.live_version() == "2"


def test_expired_lock_is_taken_over_and_force_unlock_removes_a_live_one(local_env):
    state = local_env.dir / "state"
    state.mkdir()
    now = datetime.now(timezone.utc)

    def lock(expires):
        (state / "lock.json").write_text(json.dumps({
            "holder": "crashed-run", "acquired_at": (now - timedelta(hours=1)).isoformat(),
            "renewed_at": (now - timedelta(hours=1)).isoformat(), "expires_at": expires.isoformat(),
        }))

    lock(now - timedelta(minutes=1))
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    lock(now + timedelta(hours=1))
    held = local_env.cli("deploy", "--version", "2")
    assert held.returncode == 3 and "crashed-run" in held.stderr
    forced = local_env.cli("deploy", "--version", "2", "--force-unlock")
    assert forced.returncode == 0, forced.stderr
    assert "--force-unlock removed the lock held by crashed-run" in forced.stderr
    assert not (state / "lock.json").exists()


def test_no_switch_then_promote(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    prepared = local_env.cli("deploy", "--version", "2", "--no-switch", "--json")
    assert prepared.returncode == 0
    result = json.loads(prepared.stdout)
    assert result["status"] == "prepared" and result["switched"] is False and result["idle_colour"] == "green"
    assert local_env.live_version() == "1"
    assert httpx.get(result["preview_url"] + "/version").text.strip() == "2"

    promoted = local_env.cli("promote", "--json")
    assert promoted.returncode == 0, promoted.stderr
    result = json.loads(promoted.stdout)
    assert (result["status"], result["live_colour"], result["version"]) == ("succeeded", "green", "2")
    assert local_env.live_version() == "2"
    again = local_env.cli("promote")
    assert again.returncode == 1 and "nothing is prepared on blue" in again.stderr


def test_rollback_restarts_a_scaled_down_colour(local_env):
    local_env.write(extra="scale_down_delay: 0\n".replace("0", "0s"))
    local_env.config.write_text(local_env.config.read_text().replace("scale_down_delay: never\n", ""))
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    assert local_env.cli("deploy", "--version", "2").returncode == 0
    status = json.loads(local_env.cli("status", "--json").stdout)
    blue = next(c for c in status["colours"] if c["colour"] == "blue")
    assert blue["running"] is False and blue["version"] == "1"  # scaled down at once

    result = local_env.cli("rollback")
    assert result.returncode == 0, result.stderr
    assert "start blue" in result.stderr
    assert local_env.live_version() == "1"


def test_old_colour_is_scaled_down_after_the_delay(local_env):
    local_env.config.write_text(local_env.config.read_text().replace("scale_down_delay: never", "scale_down_delay: 1s"))
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    assert local_env.cli("deploy", "--version", "2").returncode == 0
    blue_port = local_env.ports["blue"]
    assert httpx.get(f"http://127.0.0.1:{blue_port}/healthz").status_code == 200  # kept warm for rollback
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{blue_port}/healthz", timeout=1)
        except httpx.ConnectError:  # nothing listens any more: stopped
            break
        except (httpx.ReadError, httpx.RemoteProtocolError):
            pass  # caught mid-shutdown; the next attempt finds it gone
        assert time.monotonic() < deadline, "the old colour was never scaled down"
        time.sleep(0.2)
    assert local_env.live_version() == "2"


def test_scale_down_skips_a_colour_that_is_live_again(local_env):
    # 6 s: the rollback must come within the delay even on a loaded machine (a CLI start is ~0.3-1 s there).
    local_env.config.write_text(local_env.config.read_text().replace("scale_down_delay: never", "scale_down_delay: 6s"))
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    assert local_env.cli("deploy", "--version", "2").returncode == 0
    assert local_env.cli("rollback").returncode == 0  # blue live again within the delay
    time.sleep(7)
    assert local_env.live_version() == "1"
    assert httpx.get(f"http://127.0.0.1:{local_env.ports['blue']}/healthz").status_code == 200


def test_status_from_a_fresh_process(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    assert local_env.cli("deploy", "--version", "2").returncode == 0
    status = local_env.cli("status", "--json")
    assert status.returncode == 0
    data = json.loads(status.stdout)
    assert data["live"] == "green" and data["lock"] is None
    assert [(r["action"], r["version"], r["colour"]) for r in data["history"]] == [
        ("deploy", "2", "green"), ("deploy", "1", "blue")
    ]
    human = local_env.cli("status")
    assert "live: green (version 2)" in human.stdout and "lock: free" in human.stdout
    # The router line is read from the router: its split, then that it is down, then what garbage it holds.
    assert data["router"] == {"name": f"caddy at 127.0.0.1:{local_env.proxy_port}", "serving": True,
                              "weights": {"blue": 0, "green": 100}, "detail": "", "unreadable": ""}
    assert f"router: caddy at 127.0.0.1:{local_env.proxy_port}: blue 0% / green 100%" in human.stdout
    pid = int((local_env.dir / "state" / "caddy.pid").read_text().split()[0])
    kill_and_wait(pid, local_env.proxy_port)  # down for good before status looks
    down = local_env.cli("status")
    assert down.returncode == 0
    assert f"NOT SERVING: nothing listens on 127.0.0.1:{local_env.proxy_port}; it holds blue 0% / green 100%" in down.stdout
    (local_env.dir / "state" / "upstream").write_text("10.0.0.9:80\n")
    garbled = local_env.cli("status", "--json")
    assert garbled.returncode == 0, garbled.stderr
    router = json.loads(garbled.stdout)["router"]
    assert router["weights"] is None and "'10.0.0.9:80', which is neither blue nor green" in router["unreadable"]


def test_dry_run_changes_nothing(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    plan = local_env.cli("deploy", "--version", "2", "--dry-run", "--json")
    assert plan.returncode == 0
    result = json.loads(plan.stdout)
    assert result["status"] == "planned" and "switch blue -> green" in result["plan"] and result["reason"] is None
    assert local_env.live_version() == "1"
    green = next(c for c in json.loads(local_env.cli("status", "--json").stdout)["colours"] if c["colour"] == "green")
    assert green["version"] is None


def test_rollback_refuses_a_previous_colour_that_fails_its_checks_unless_forced(local_env):
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    assert local_env.cli("deploy", "--version", "2").returncode == 0
    # A check that only version 2 passes: blue (version 1) now fails it.
    config = local_env.config.read_text().replace(
        "  checks:\n", "  checks:\n    - {name: needs-v2, path: /version, expect: {body_contains: '2'}}\n", 1
    )
    local_env.config.write_text(config)
    refused = local_env.cli("rollback")
    assert refused.returncode == 1
    assert local_env.report()["reason"].startswith("smoke check 'needs-v2' failed on blue")
    assert local_env.live_version() == "2"

    forced = local_env.cli("rollback", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "--force: switching without checking the previous colour" in forced.stderr
    assert local_env.live_version() == "1"


def test_rollback_refuses_a_colour_whose_release_never_went_live(local_env):
    local_env.write(test_suite="")
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    assert local_env.cli("deploy", "--version", "2").returncode == 0
    assert local_env.cli("deploy", "--version", "3+fail-smoke").returncode == 1  # now on blue, never live
    refused = local_env.cli("rollback")
    assert refused.returncode == 1
    assert "blue runs version 3+fail-smoke, which never went live" in refused.stderr
    assert local_env.live_version() == "2"


def test_rollback_goes_back_to_a_first_release_left_live_unverified(local_env):
    """A first release whose verification failed stays live (nothing to switch back to) and serves users, so
    once a later release is live, a rollback goes back to it. A release switched back never served: refused."""
    local_env.write(test_suite="", extra="verify: {version_check: {name: v, path: /version, "
                    "expect: {body_contains: never}}, timeout: 1s, interval: 0.1}\n")
    first = local_env.cli("deploy", "--version", "1")
    assert first.returncode == 5 and local_env.report()["status"] == "rollback_failed"
    assert local_env.live_version() == "1"  # blue serves live traffic, unverified

    local_env.write(test_suite="")
    assert local_env.cli("deploy", "--version", "2").returncode == 0  # green
    back = local_env.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert local_env.live_version() == "1"

    assert local_env.cli("deploy", "--version", "3+fail-live").returncode == 4  # green, switched back
    refused = local_env.cli("rollback")
    assert refused.returncode == 1
    assert "green runs version 3+fail-live, which never went live (its release stopped before the switch, was " \
           "switched back or was only prepared)" in refused.stderr
    assert "To go back to version 2, the last other one that served live traffic" in refused.stderr
    assert local_env.live_version() == "1"


def test_a_steady_smoke_failure_fails_after_failure_limit_not_the_timeout(local_env):
    local_env.write(test_suite="")
    text = local_env.config.read_text()
    assert "smoke:\n  timeout: 5s\n" in text
    local_env.config.write_text(text.replace("smoke:\n  timeout: 5s\n", "smoke:\n  timeout: 120s\n  failure_limit: 3\n"))
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    started = time.monotonic()
    result = local_env.cli("deploy", "--version", "2+fail-smoke")  # every answer is 500, for ever
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    reason = local_env.report()["reason"]
    assert reason.startswith("smoke check") and "status 500" in reason and "(3 times in a row)" in reason, reason
    assert took < 60, f"{took:.1f}s: the run waited for smoke.timeout (120s) instead of failure_limit"
    assert local_env.live_version() == "1"


def test_rollback_with_nothing_to_roll_back_to(local_env):
    nothing_live = local_env.cli("rollback")
    assert nothing_live.returncode == 1 and "nothing is live yet" in nothing_live.stderr
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    never = local_env.cli("rollback")
    assert never.returncode == 1 and "green has never been deployed" in never.stderr


def test_port_taken_by_another_process(local_env):
    import socket

    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", local_env.proxy_port))
        squatter.listen()
        result = local_env.cli("deploy", "--version", "1")
    assert result.returncode == 1
    assert "is in use by another process, not the bluegreen caddy" in local_env.report()["reason"]


@pytest.mark.skipif(not os.access("/bin/sh", os.X_OK), reason="needs /bin/sh")
def test_test_suite_sees_the_preview_url_and_version(local_env):
    local_env.write(test_suite=(
        'test_suite:\n  command: "echo url=$BLUEGREEN_PREVIEW_URL colour=$BLUEGREEN_COLOUR v=$BLUEGREEN_VERSION"\n'
        "  shell: true\n"
    ))
    result = local_env.cli("deploy", "--version", "7")
    assert result.returncode == 0
    assert f"url=http://127.0.0.1:{local_env.ports['blue']} colour=blue v=7" in result.stderr


def test_a_colours_log_is_rotated_when_it_grows(local_env):
    """The soak found the colours' logs the one thing in the state dir that only grew."""
    from bluegreen.runtimes.local import MAX_LOG_BYTES

    log = local_env.dir / "state" / "blue.log"
    log.parent.mkdir(parents=True)
    log.write_text("x" * (MAX_LOG_BYTES + 1))
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    assert (local_env.dir / "state" / "blue.log.1").stat().st_size == MAX_LOG_BYTES + 1
    assert log.stat().st_size < 10_000 and "starting blue version 1" in log.read_text()
