"""Faults at every phase, on the local target with the real Caddy and the example app.

Each test breaks one thing for real (kills the proxy or a colour, squats the proxy's port, corrupts a
state file, makes the state directory read-only or full) and asserts what a person would check: the
live colour through the proxy, the lock, the report's status and the exit code, and that the error is
one line naming the file or the router and what to do. Faults during a run are injected by the test
suite, which runs between the idle colour's deploy and the switch.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, assert_one_line_error, kill_and_wait, serving

# Run as the test suite (cwd: the env's folder); each mode is one fault.
FAULT_SCRIPT = textwrap.dedent(
    """\
    import os, signal, socket, subprocess, sys, time
    from pathlib import Path

    state = Path("state")

    def gone(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
        except OSError:
            return True

    def kill(pid, group=True):
        (os.killpg if group else os.kill)(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def detach(*args):
        with open("detached.log", "ab") as log:
            subprocess.Popen([sys.executable, __file__, *args], start_new_session=True,
                             stdout=log, stderr=log)

    def fill():
        with open(state / "filler", "ab", buffering=0) as f:
            try:
                while True:
                    f.write(b"x" * 4096)
            except OSError:
                pass
            try:
                while True:  # then the last bytes of the last page
                    f.write(b"x")
            except OSError:
                pass

    def wait_for(path, timeout=15):
        deadline = time.monotonic() + timeout
        while not Path(path).exists():
            assert time.monotonic() < deadline, path
            time.sleep(0.01)

    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "kill-router":
        kill(int((state / "caddy.pid").read_text().split()[0]))
    elif mode == "kill-user-proxy":
        kill(int(Path("user-proxy.pid").read_text()), group=False)
    elif mode == "squat":  # the router dies and another process takes its port before it can restart
        kill(int((state / "caddy.pid").read_text().split()[0]))
        detach("hold", args[0])
        wait_for("squatter.pid")
    elif mode == "hold":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        deadline = time.monotonic() + 10
        while True:
            try:
                s.bind(("127.0.0.1", int(args[0])))
                break
            except OSError:
                assert time.monotonic() < deadline, "the router's port never came free"
                time.sleep(0.05)
        s.listen()
        Path("squatter.pid").write_text(str(os.getpid()))
        time.sleep(120)
    elif mode == "fill":
        fill()
    elif mode == "fill-after-switch":  # the disk fills between the switch and the history write
        detach("fill-when", args[0])
        wait_for("filler.armed")
    elif mode == "fill-when":
        Path("filler.armed").touch()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if (state / "upstream").read_text().strip() == args[0]:
                    break
            except OSError:
                pass
            time.sleep(0.002)
        fill()
    """
)


def fault_suite(mode: str, *args: str) -> str:
    argv = json.dumps(["{python}", "fault.py", mode, *args])
    return f"test_suite:\n  command: {argv}\n  timeout: 30s\n"


@pytest.fixture
def env(local_env):
    (local_env.dir / "fault.py").write_text(FAULT_SCRIPT)
    local_env.write(test_suite="")
    return local_env


def status(env) -> dict:
    result = env.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def upstream(env) -> str:
    return (env.dir / "state" / "upstream").read_text().strip()


def address(env, colour: str) -> str:
    return f"127.0.0.1:{env.ports[colour]}"


def lock_file(env) -> Path:
    return env.dir / "state" / "lock.json"


def kill_colour(env, colour: str) -> int:
    pid = int((env.dir / "state" / f"{colour}.pid").read_text().split()[0])
    kill_and_wait(pid, env.ports[colour])
    return pid


def deploy_with_fault(env, version: str, mode: str, *args: str) -> subprocess.CompletedProcess:
    config = env.config.read_text()
    env.config.write_text(config + fault_suite(mode, *args))
    try:
        return env.cli("deploy", "--version", version)
    finally:
        env.config.write_text(config)


def one_line(result: subprocess.CompletedProcess) -> str:
    """The one line that says why: the CLI's error, or the run's reason (printed as `<command> failed: ...`)."""
    assert "Traceback" not in result.stderr, result.stderr
    if "bluegreen: error:" in result.stderr:
        return assert_one_line_error(result)
    failed = [line for line in result.stderr.splitlines() if re.match(r"(deploy|promote|rollback) \w+: ", line)]
    assert len(failed) == 1, result.stderr
    return failed[0]


def assert_failed_before_switch(env, result: subprocess.CompletedProcess, live: str) -> dict:
    """Exit 1, one line, live untouched on `live`, the lock released, the report says failed."""
    assert result.returncode == 1, result.stderr
    report = env.report()
    assert one_line(result).endswith(report["reason"])
    assert report["status"] == "failed" and report["switched"] is False
    assert report["live_colour"] in (live, None)  # None: it stopped before reading the router
    assert upstream(env) == address(env, live)
    assert not lock_file(env).exists()
    return report


# --- the router ---------------------------------------------------------------------------------


def test_a_router_that_died_is_restarted_before_the_switch(env):
    assert env.cli("deploy", "--version", "1").returncode == 0
    old_pid = int((env.dir / "state" / "caddy.pid").read_text().split()[0])

    result = deploy_with_fault(env, "2", "kill-router")  # Caddy is killed while the test suite runs

    assert result.returncode == 0, result.stderr
    assert f"warning: the router (caddy at 127.0.0.1:{env.proxy_port}) had stopped (pid {old_pid} is gone" in result.stderr
    assert "restarted it" in result.stderr
    assert env.report()["status"] == "succeeded"
    assert int((env.dir / "state" / "caddy.pid").read_text().split()[0]) != old_pid
    assert env.live_version() == "2"
    assert not lock_file(env).exists()


def test_a_router_found_dead_at_deploy_start_is_restarted_and_reported(env):
    assert env.cli("deploy", "--version", "1").returncode == 0
    kill_and_wait(int((env.dir / "state" / "caddy.pid").read_text().split()[0]), env.proxy_port)
    with pytest.raises(httpx.ConnectError):
        env.live_version()  # the outage the warning tells about

    result = env.cli("deploy", "--version", "2")

    assert result.returncode == 0, result.stderr
    assert "had stopped" in result.stderr and "restarted it" in result.stderr
    assert env.live_version() == "2"


def test_a_router_that_cannot_be_restarted_stops_the_run_before_the_switch(env):
    assert env.cli("deploy", "--version", "1").returncode == 0
    try:
        result = deploy_with_fault(env, "2", "squat", str(env.proxy_port))

        report = assert_failed_before_switch(env, result, live="blue")
        line = one_line(result)
        assert f"the router (caddy at 127.0.0.1:{env.proxy_port}) had stopped" in line
        assert "could not be restarted" in line and "is in use by another process" in line
        assert not any(p["name"].startswith("switch") for p in report["phases"])  # it never switched blind
    finally:
        squatter = env.dir / "squatter.pid"
        if squatter.exists():
            kill_and_wait(int(squatter.read_text()), env.proxy_port)  # the port free before the next run
    # The port is free again: the next run restarts the router and carries on.
    again = env.cli("deploy", "--version", "3")
    assert again.returncode == 0, again.stderr
    assert env.live_version() == "3"


@pytest.fixture
def user_proxy(env):
    """The user's own Caddy (router.manage: false), reading bluegreen's upstream file."""
    from bluegreen.routers.caddy import caddy_binary

    (env.dir / "state").mkdir(exist_ok=True)
    config = env.dir / "user-caddy.json"  # the README's snippet, with this test's address and state_dir
    snippet = (ROOT / "examples" / "routers" / "caddy" / "caddy.json").read_text()
    assert "127.0.0.1:8080" in snippet and "/srv/myapp/.bluegreen/production/upstream" in snippet
    config.write_text(snippet.replace("127.0.0.1:8080", f"127.0.0.1:{env.proxy_port}")
                      .replace("/srv/myapp/.bluegreen/production/upstream", str(env.dir / "state" / "upstream")))
    procs: list[subprocess.Popen] = []

    def start() -> None:
        proxy = subprocess.Popen([caddy_binary(), "run", "--config", str(config)], env={**os.environ, "HOME": str(env.dir)},
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proxy)
        (env.dir / "user-proxy.pid").write_text(str(proxy.pid))
        deadline = time.monotonic() + 10
        while not serving(env.proxy_port):
            assert time.monotonic() < deadline, "the user's caddy did not start"
            time.sleep(0.05)

    env.config.write_text(env.config.read_text().replace(
        f'router: {{listen: "127.0.0.1:{env.proxy_port}"}}',
        f'router: {{listen: "127.0.0.1:{env.proxy_port}", manage: false}}',
    ))
    assert "manage: false" in env.config.read_text()
    yield start
    for proxy in procs:
        proxy.kill()
        proxy.wait()


def test_an_unmanaged_router_that_is_down_stops_the_run(env, user_proxy):
    user_proxy()
    assert env.cli("deploy", "--version", "1").returncode == 0
    assert env.live_version() == "1"
    assert not (env.dir / "state" / "caddy.pid").exists()  # bluegreen never ran a proxy of its own

    # Down when the deploy starts: it stops before deploying anything.
    kill_and_wait(int((env.dir / "user-proxy.pid").read_text()), env.proxy_port)
    down = env.cli("deploy", "--version", "2")
    assert_failed_before_switch(env, down, live="blue")
    line = one_line(down)
    assert f"the router (caddy at 127.0.0.1:{env.proxy_port}) is not reachable" in line
    assert "Start your proxy" in line and "router.manage: true" in line
    assert not (env.dir / "state" / "caddy.pid").exists()  # and it did not start one behind the user's back

    # Dies during the test suite: the check right before the switch stops the run.
    user_proxy()
    during = deploy_with_fault(env, "2", "kill-user-proxy")
    assert_failed_before_switch(env, during, live="blue")
    assert "is not reachable" in one_line(during)
    user_proxy()
    assert env.live_version() == "1"  # restarted from its own config, it reads the live colour back
    assert env.cli("deploy", "--version", "2").returncode == 0 and env.live_version() == "2"
    assert env.cli("rollback").returncode == 0 and env.live_version() == "1"


# --- a colour's process crashed ---------------------------------------------------------------------


def test_status_names_a_crashed_live_colour_and_rollback_restarts_the_previous_one(env):
    assert env.cli("deploy", "--version", "1").returncode == 0
    assert env.cli("deploy", "--version", "2").returncode == 0
    green_pid = kill_colour(env, "green")  # the live colour crashed...
    kill_colour(env, "blue")  # ...and so did the previous one

    data = status(env)
    assert data["live"] == "green"
    green = next(c for c in data["colours"] if c["colour"] == "green")
    assert green["running"] is False and green["version"] == "2"
    assert green["detail"].startswith(f"crashed: pid {green_pid} exited without bluegreen stopping it")
    assert "example app 2 (green)" in green["detail"]  # the end of its log
    human = env.cli("status").stdout
    assert "green  live  version 2" in human and "stopped  crashed: pid" in human

    result = env.cli("rollback")
    assert result.returncode == 0, result.stderr
    report = env.report()
    assert report["status"] == "succeeded" and report["live_colour"] == "blue"
    names = [p["name"] for p in report["phases"]]
    assert names.index("start blue") < names.index("switch green -> blue")
    assert env.live_version() == "1"
    assert not lock_file(env).exists()


def test_deploy_goes_ahead_when_the_live_colour_crashed(env):
    assert env.cli("deploy", "--version", "1").returncode == 0
    kill_colour(env, "blue")
    with pytest.raises(httpx.HTTPStatusError):
        httpx.get(env.live_url + "/version", timeout=5).raise_for_status()  # live is down: 502

    result = env.cli("deploy", "--version", "2")

    assert result.returncode == 0, result.stderr
    report = env.report()
    assert report["status"] == "succeeded"
    assert (report["live_colour"], report["previous_colour"], report["previous_version"]) == ("green", "blue", "1")
    resolve = next(p for p in report["phases"] if p["name"] == "resolve live")
    assert resolve["detail"].startswith("blue (version 1), not running: crashed:")  # the summary says so
    assert "warning: the live colour blue is not running" in result.stderr
    assert env.live_version() == "2"
    blue = next(c for c in status(env)["colours"] if c["colour"] == "blue")
    assert blue["detail"].startswith("crashed:")  # still said, for whoever looks next


# --- corrupted state files --------------------------------------------------------------------------

CORRUPT = {
    "garbage": b"hello, not json",
    "truncated": b'{"holder": "x", "acquired_at": "2026-01-01T00:00:00Z", "renewed_at"',
    "wrong types": b'{"holder": 5, "acquired_at": [], "renewed_at": null, "expires_at": "soon"}',
    "binary": bytes(range(256)),
    "empty": b"",
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_lock_file_counts_as_held(env, content):
    """Ignoring it would let a second deploy in; it is held by 'an unknown run' until it expires."""
    (env.dir / "state").mkdir()
    lock_file(env).write_bytes(content)

    result = env.cli("deploy", "--version", "1")

    assert result.returncode == 3, result.stderr
    line = one_line(result)
    assert f"held by an unknown run ({lock_file(env)} is unreadable:" in line and "--force-unlock removes it" in line
    assert env.report()["status"] == "locked"
    assert lock_file(env).read_bytes() == content  # left for a person to look at
    assert "is unreadable" in status(env)["lock"]["holder"]


def test_a_corrupt_lock_file_is_removed_by_force_unlock_and_expires(env):
    assert env.cli("deploy", "--version", "1").returncode == 0
    lock_file(env).write_text("{garbage")
    refused = env.cli("deploy", "--version", "2")
    assert refused.returncode == 3 and env.live_version() == "1"

    forced = env.cli("deploy", "--version", "2", "--force-unlock")
    assert forced.returncode == 0, forced.stderr
    assert "--force-unlock removed the lock held by an unknown run" in forced.stderr
    assert env.live_version() == "2" and not lock_file(env).exists()

    # Not renewed for longer than timeouts.lock (its age is the file's): taken over like any expired lock.
    lock_file(env).write_text("{garbage")
    hour_ago = time.time() - 3600
    os.utime(lock_file(env), (hour_ago, hour_ago))
    assert env.cli("deploy", "--version", "3").returncode == 0
    assert env.live_version() == "3" and not lock_file(env).exists()


@pytest.mark.parametrize("content", [CORRUPT["truncated"], CORRUPT["binary"], b'{"not": "a list"}', b'[{"id": 1}]'],
                         ids=["truncated", "binary", "wrong type", "wrong fields"])
def test_a_corrupt_history_is_named_and_never_a_traceback(env, content):
    assert env.cli("deploy", "--version", "1").returncode == 0
    assert env.cli("deploy", "--version", "2").returncode == 0
    history = env.dir / "state" / "history.json"
    history.write_bytes(content)

    for command in ("status", "rollback"):  # rollback needs the history to know green's release went live
        result = env.cli(command)
        assert result.returncode == 1, (command, result.stderr)
        line = one_line(result)
        assert f"{history} is unreadable" in line and "move it aside" in line
    assert env.live_version() == "2" and not lock_file(env).exists()

    # A deploy does not need the history before the switch; failing to record after a good switch is a warning.
    deployed = env.cli("deploy", "--version", "3")
    assert deployed.returncode == 0, deployed.stderr
    assert "warning: could not record the release in the history" in deployed.stderr
    assert env.live_version() == "3"
    assert history.read_bytes() == content  # not overwritten: the evidence stays


def test_corrupt_router_and_colour_files_are_named(env):
    assert env.cli("deploy", "--version", "1").returncode == 0
    record = env.dir / "state" / "blue.json"
    record.write_bytes(b"[1, 2]")
    result = env.cli("status")
    assert result.returncode == 1
    assert f"{record} is unreadable" in one_line(result)
    record.write_text(json.dumps({"version": "1", "port": env.ports["blue"]}))

    (env.dir / "state" / "upstream").write_bytes(b"\xff\xfe nowhere:1\n")
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 1
    line = one_line(result)
    assert "upstream" in line and "neither blue nor green" in line and "delete it and deploy" in line
    assert not lock_file(env).exists()


# --- the state directory: not a directory, read-only, full -----------------------------------------


def test_a_state_dir_that_is_a_file(env):
    (env.dir / "state").write_text("not a directory")
    for command in (["deploy", "--version", "1"], ["status"], ["rollback"]):
        result = env.cli(*command)
        assert result.returncode == 1, (command, result.stderr)
        line = one_line(result)
        assert str(env.dir / "state") in line and "a file stands where a directory is expected" in line, line
    assert env.report()["status"] == "failed"
    assert not serving(env.proxy_port)  # nothing was started


def _mount(*args: str) -> None:
    done = subprocess.run(["mount", *args], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount {' '.join(args)} is not permitted here: {done.stderr.strip()}")


@pytest.fixture
def mounts(env):
    """Mounts over the state directory (needs root with CAP_SYS_ADMIN), undone after `down`."""
    made: list[Path] = []

    def mount(*args: str) -> None:
        _mount(*args)
        made.append(Path(args[-1]))

    yield mount
    env.cli("down", timeout=60)
    for path in reversed(made):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_a_read_only_state_dir(env, mounts):
    state = env.dir / "state"
    assert env.cli("deploy", "--version", "1").returncode == 0
    # A read-only view over the state directory; the running processes keep their open logs.
    mounts("--bind", str(state), str(state))
    mounts("-o", "remount,bind,ro", str(state))

    result = env.cli("deploy", "--version", "2")

    assert_failed_before_switch(env, result, live="blue")
    line = one_line(result)
    assert str(state) in line and "Read-only file system" in line and "set state_dir to a writable directory" in line
    assert env.live_version() == "1"
    assert status(env)["live"] == "blue"  # reading still works

    subprocess.run(["umount", str(state)], check=True)
    assert env.cli("deploy", "--version", "2").returncode == 0
    assert env.live_version() == "2"


@pytest.fixture
def small_state_dir(env, mounts):
    state = env.dir / "state"
    state.mkdir()
    mounts("-t", "tmpfs", "-o", "size=512k", "tmpfs", str(state))
    return state


def test_a_full_disk_when_taking_the_lock(env, small_state_dir):
    assert env.cli("deploy", "--version", "1").returncode == 0
    subprocess.run([sys.executable, "fault.py", "fill"], cwd=env.dir, check=True)

    result = env.cli("deploy", "--version", "2")

    assert_failed_before_switch(env, result, live="blue")
    line = one_line(result)
    assert f"cannot write {lock_file(env)}: No space left on device (free space on that file system)" in line
    assert [p for p in small_state_dir.iterdir() if p.name.startswith(".lock.json.")] == []  # no temp file left
    assert env.live_version() == "1"

    (small_state_dir / "filler").unlink()
    assert env.cli("deploy", "--version", "2").returncode == 0
    assert env.live_version() == "2"


def test_a_full_disk_at_the_switch_leaves_live_untouched(env, small_state_dir):
    assert env.cli("deploy", "--version", "1").returncode == 0

    result = deploy_with_fault(env, "2", "fill")  # the disk fills while the test suite runs

    report = assert_failed_before_switch(env, result, live="blue")
    line = one_line(result)
    assert f"cannot write the router's upstream file {small_state_dir / 'upstream'}: No space left on device" in line
    assert report["phases"][-1]["name"] == "switch blue -> green" and report["phases"][-1]["status"] == "failed"
    assert env.live_version() == "1"  # never half-switched: the old file stands whole


def test_a_full_disk_after_a_good_switch_only_loses_the_history_line(env, small_state_dir):
    assert env.cli("deploy", "--version", "1").returncode == 0
    # The filler watches for the switch; a verification window of seconds, not 0.5 s, lets it fill the disk
    # before the history is written even on a loaded machine.
    assert "window: 0.5s" in env.config.read_text()
    env.config.write_text(env.config.read_text().replace("window: 0.5s", "window: 3s"))

    result = deploy_with_fault(env, "2", "fill-after-switch", address(env, "green"))

    assert result.returncode == 0, result.stderr
    assert "warning: could not record the release in the history: cannot write" in result.stderr
    assert "No space left on device" in result.stderr
    assert env.report()["status"] == "succeeded"
    assert env.live_version() == "2"
    assert not lock_file(env).exists()  # removing a file needs no space
    assert [r["version"] for r in status(env)["history"]] == ["1"]  # the last line it could write
