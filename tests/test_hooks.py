"""Hooks at every point of a release, end to end: the real CLI on the local target, real commands, and a real HTTP
receiver on 127.0.0.1 that records what each hook point sent (and answers as a test tells it to)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import LocalHTTPServer, QuietHandler, assert_one_line_error

POINTS = ["before_switch", "after_switch", "after_verify", "on_switch_back", "on_rollback", "on_failure", "on_cancel"]
TOKEN = "hook-token-5e9a1c"


class Receiver(LocalHTTPServer):
    """Records each request (path, headers, JSON body); answers `status[path]` (default 200), or never (`hang`)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.status: dict[str, int] = {}
        self.hang: set[str] = set()
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802 (the stdlib's name)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null")
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                if self.path in receiver.hang:
                    receiver.released.wait(30)  # bounded: the test's teardown releases it at once
                    return
                self.send_response(receiver.status.get(self.path, 200))
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        super().__init__(Handler)

    def points(self) -> list[str]:
        return [r["path"].strip("/") for r in self.requests]

    def body(self, point: str) -> dict:
        (only,) = [r["body"] for r in self.requests if r["path"] == f"/{point}"]
        return only


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# A command hook: one JSON line per call in hooks.log, with the BLUEGREEN_* variables it was given.
RECORD = (
    "import json, os, sys; open('hooks.log', 'a').write(json.dumps({'point': sys.argv[1], 'version': sys.argv[2], "
    "'env': {k: v for k, v in os.environ.items() if k.startswith('BLUEGREEN_')}}) + '\\n')"
)


def hooks_yaml(receiver: Receiver, points=POINTS, command: bool = True, extra: dict[str, str] | None = None,
               timeout: str = "10s") -> str:
    """`hooks:` with, at each point, a command hook (unless `command` is False) and an HTTP hook to /<point>;
    `extra[point]` replaces that point's hooks with the given YAML list items."""
    lines = ["hooks:"]
    for point in points:
        lines.append(f"  {point}:")
        if extra and point in extra:
            lines += ["    " + line for line in textwrap.dedent(extra[point]).strip().splitlines()]
            continue
        if command:
            lines.append(f'    - {{name: record {point}, command: ["{sys.executable}", "-c", "{_yaml(RECORD)}", '
                         f'"{point}", "{{version}}"]}}')
        lines.append(f'    - {{http: {{url: "{receiver.url}/{point}", headers: {{Authorization: "Bearer ${{HOOK_TOKEN}}"}}}}, '
                     f'timeout: {timeout}}}')
    return "\n".join(lines) + "\n"


def _yaml(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def recorded(env) -> list[dict]:
    path = env.dir / "hooks.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def env(local_env):
    local_env.environ["HOOK_TOKEN"] = TOKEN
    return local_env


def test_each_point_once_in_order_with_the_run_as_it_stands_there(env, receiver):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    env.write(hooks_yaml(receiver), test_suite="")

    deploy = env.cli("deploy", "--version", "2")
    assert deploy.returncode == 0, deploy.stderr
    assert receiver.points() == ["before_switch", "after_switch", "after_verify"]
    assert [r["point"] for r in recorded(env)] == ["before_switch", "after_switch", "after_verify"]
    gate = receiver.body("before_switch")  # nothing has moved yet: blue with 1 is live
    assert gate["event"] == "before_switch" and gate["status"] == "running" and gate["switched"] is False
    assert (gate["live_colour"], gate["live_version"], gate["version"]) == ("blue", "1", "2")
    after = receiver.body("after_switch")  # moved, not verified yet
    assert (after["live_colour"], after["live_version"], after["switched"], after["status"]) == ("green", "2", True, "running")
    verified = receiver.body("after_verify")  # the final state: the release stands
    assert (verified["status"], verified["outcome"], verified["previous_version"]) == ("succeeded", "succeeded", "1")
    assert verified["rollback_command"] and verified["app"] == env.app and verified["environment"] == "test"
    # A command gets the same facts as variables (and its placeholders filled in), the whole payload as JSON.
    gate_env = recorded(env)[0]
    assert gate_env["version"] == "2" and gate_env["env"]["BLUEGREEN_LIVE_COLOUR"] == "blue"
    assert json.loads(gate_env["env"]["BLUEGREEN_PAYLOAD"])["event"] == "before_switch"
    assert receiver.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    report = env.report()
    assert [(h["point"], h["status"]) for h in report["hooks"]] == [
        (p, "succeeded") for p in ("before_switch", "before_switch", "after_switch", "after_switch", "after_verify",
                                   "after_verify")]

    receiver.requests.clear()
    rollback = env.cli("rollback")
    assert rollback.returncode == 0, rollback.stderr
    assert receiver.points() == ["before_switch", "after_switch", "after_verify", "on_rollback"]
    back = receiver.body("on_rollback")
    assert (back["outcome"], back["live_colour"], back["live_version"], back["command"]) == ("rolled_back", "blue", "1", "rollback")
    assert env.live_version() == "1"


def test_a_failing_gate_stops_the_run_before_traffic_moves(env, receiver):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    gate = '- {name: change ticket, command: ["sh", "-c", "echo ticket CHG-1 is not approved; exit 3"]}'
    env.write(hooks_yaml(receiver, command=False, extra={"before_switch": gate}), test_suite="")

    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 1
    line = result.stderr.strip().splitlines()[-1]
    assert "before_switch hook 'change ticket' exited with code 3: ticket CHG-1 is not approved" in line
    assert "live untouched" in line and "Traceback" not in result.stderr
    assert env.live_version() == "1"
    assert receiver.points() == ["on_failure"]  # nothing after the gate; the failure told once
    assert receiver.body("on_failure")["outcome"] == "failed" and receiver.body("on_failure")["live_version"] == "1"
    report = env.report()
    assert report["status"] == "failed" and report["switched"] is False
    assert [(h["point"], h["status"]) for h in report["hooks"]] == [("before_switch", "failed"), ("on_failure", "succeeded")]


def test_an_http_gate_answering_non_2xx_says_no(env, receiver):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    receiver.status["/before_switch"] = 403
    env.write(hooks_yaml(receiver, points=["before_switch"], command=False), test_suite="")
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 1
    assert f"HTTP 403 from {receiver.url}/before_switch" in result.stderr and "live untouched" in result.stderr
    assert env.live_version() == "1"


def test_a_failing_hook_after_the_switch_is_reported_and_the_release_stands(env, receiver):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    receiver.status["/after_switch"] = 500
    env.write(hooks_yaml(receiver, command=False), test_suite="")
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 0, result.stderr
    assert env.live_version() == "2"
    assert f"after_switch hook 'POST {receiver.url}/after_switch' HTTP 500" in result.stderr
    assert "what is live is unchanged" in result.stderr
    assert receiver.points() == ["before_switch", "after_switch", "after_verify"]
    report = env.report()
    assert report["status"] == "succeeded"
    assert [h["status"] for h in report["hooks"] if h["point"] == "after_switch"] == ["failed"]


def test_a_release_switched_back_tells_on_switch_back_then_on_failure(env, receiver):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    env.write(hooks_yaml(receiver), test_suite="")
    result = env.cli("deploy", "--version", "2+fail-live")
    assert result.returncode == 4, result.stderr
    assert receiver.points() == ["before_switch", "after_switch", "on_switch_back", "on_failure"]
    back = receiver.body("on_switch_back")
    assert (back["status"], back["outcome"], back["switched_back"], back["live_colour"], back["live_version"]) == (
        "rolled_back", "switched_back", True, "blue", "1")
    assert [r["point"] for r in recorded(env)] == ["before_switch", "after_switch", "on_switch_back", "on_failure"]
    assert env.live_version() == "1"


def test_a_hook_that_hangs_is_timed_out(env, receiver):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    receiver.hang.add("/before_switch")
    sleeper = '- {name: slow purge, command: ["sleep", "60"], timeout: 1s}'
    env.write(hooks_yaml(receiver, points=["before_switch", "after_verify"], command=False,
                         extra={"after_verify": sleeper}, timeout="1s"), test_suite="")
    started = time.monotonic()
    gate = env.cli("deploy", "--version", "2")
    assert gate.returncode == 1 and f"no answer from {receiver.url}/before_switch within 1s" in gate.stderr
    assert env.live_version() == "1"

    receiver.hang.clear()
    told = env.cli("deploy", "--version", "3")
    assert told.returncode == 0, told.stderr
    assert "after_verify hook 'slow purge' timed out after 1s" in told.stderr
    assert [h["status"] for h in env.report()["hooks"] if h["point"] == "after_verify"] == ["timed_out"]
    assert time.monotonic() - started < 90  # a wide guard: two runs, each with a 1 s hook timeout


def test_a_broken_hook_is_one_line_naming_the_field(env):
    """Hook fields are checked at load: a typo is one line naming the field, exit 2."""
    env.write(textwrap.dedent("""\
        hooks:
          before_switch:
            - {command: ["true"], htpp: {url: "http://x"}}
        """), test_suite="")
    result = env.cli("validate")
    assert result.returncode == 2
    assert "hooks.before_switch[0].htpp: unknown key (did you mean 'http'?)" in assert_one_line_error(result)
    env.write("hooks:\n  after_verify:\n    - {name: both, command: ['true'], http: {url: 'http://127.0.0.1:1'}}\n", test_suite="")
    result = env.cli("validate")
    assert result.returncode == 2 and "give either command or http" in assert_one_line_error(result)


# --- cancellation during a hook --------------------------------------------------------------------------------

WAIT = '- {name: wait, command: ["%s", "-c", "import os, time; open(\'hook.pid\', \'w\').write(str(os.getpid())); time.sleep(60)"]}'


def _deploy_in_background(env, version: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", str(env.config), "--version", version],
        cwd=env.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BLUEGREEN_CI": "plain", **env.environ},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(path: Path, run: subprocess.Popen) -> int:
    deadline = time.monotonic() + 60
    while not (path.exists() and path.read_text()):
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the hook never started"
        time.sleep(0.05)
    return int(path.read_text())


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(("point", "sig", "code", "live"), [
    ("before_switch", "SIGINT", 1, "1"),  # before the switch: live untouched
    ("after_switch", "SIGTERM", 4, "1"),  # after it, before verification: switched back
    ("after_verify", "SIGTERM", 0, "2"),  # verified: the release stands
])
def test_a_signal_during_a_hook_obeys_the_cancellation_rule(env, receiver, point, sig, code, live):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    others = [p for p in ("on_switch_back", "on_failure", "on_cancel")]
    env.write(hooks_yaml(receiver, points=[point, *others], command=False, extra={point: WAIT % sys.executable}),
              test_suite="")
    run = _deploy_in_background(env, "2")
    try:
        hook_pid = _wait_for(env.dir / "hook.pid", run)
        run.send_signal(getattr(signal, sig))
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == code, stderr
    assert "Traceback" not in stderr
    assert env.live_version() == live
    deadline = time.monotonic() + 10
    while not _gone(hook_pid):  # the hook's process group went with the run
        assert time.monotonic() < deadline, "the hook outlived the run"
        time.sleep(0.05)
    report = env.report()
    assert [h["status"] for h in report["hooks"] if h["point"] == point] == ["cancelled"]
    assert "lock: free" in env.cli("status").stdout
    if point == "after_verify":
        assert report["status"] == "succeeded" and receiver.points() == []  # the outcome stands: nothing more to tell
    else:
        assert report["status"] == "cancelled"
        expected = ["on_switch_back", "on_cancel"] if point == "after_switch" else ["on_cancel"]
        assert receiver.points() == expected
        assert receiver.body("on_cancel")["outcome"] == "cancelled"


def test_secrets_never_reach_the_log_or_the_report(env, receiver):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    echo = '- {name: leaky, command: ["sh", "-c", "echo token is $HOOK_TOKEN; exit 1"]}'
    receiver.status["/after_verify"] = 500
    env.write(hooks_yaml(receiver, points=["after_switch", "after_verify"], command=False,
                         extra={"after_switch": echo}), test_suite="")
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 0, result.stderr
    assert receiver.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"  # sent, as it must be
    report = (env.dir / "bluegreen-report.json").read_text()
    assert TOKEN not in result.stderr and TOKEN not in result.stdout and TOKEN not in report
    assert "token is ***" in result.stderr and "token is ***" in report


def test_hooks_are_in_the_schema_and_a_header_secret_is_marked():
    from bluegreen.config import Settings, secret_values
    from bluegreen.config.hooks import Hooks

    assert list(Hooks.model_fields) == POINTS
    hooks = Hooks.model_validate({"after_verify": [{"http": {"url": "http://x.test/y", "headers": {"X-Key": "k-123456"}}}]})
    assert "k-123456" in secret_values(hooks)
    assert "hooks" in Settings.model_fields


def test_a_canary_reaches_the_gate_before_its_first_step_and_after_switch_at_100(env, receiver):
    """One point, once per run: the gate before any weight moves, after_switch when the 100% step switched; a
    paused canary runs no more hooks, and its promote is a run with hooks of its own."""
    from test_canary import canary_env, split

    canary_env(env, "[{weight: 20, pause: until promoted}, {weight: 100}]")
    assert env.cli("deploy", "--version", "1").returncode == 0
    canary_env(env, "[{weight: 20, pause: until promoted}, {weight: 100}]",
               extra=hooks_yaml(receiver, command=False))
    paused = env.cli("deploy", "--version", "2")
    assert paused.returncode == 0, paused.stderr
    assert env.report()["status"] == "paused" and split(env) == {"blue": 80, "green": 20}
    assert receiver.points() == ["before_switch"]
    assert receiver.body("before_switch")["switched"] is False  # nothing had moved when the gate ran

    receiver.requests.clear()
    promoted = env.cli("promote")
    assert promoted.returncode == 0, promoted.stderr
    # A run of its own: its gate before the traffic it moves (the 100% step), then the switch and verification.
    assert receiver.points() == ["before_switch", "after_switch", "after_verify"]
    assert receiver.body("before_switch")["command"] == "promote"
    assert receiver.body("after_verify")["live_version"] == "2"


def test_once_cancelled_a_hook_gets_at_most_5_seconds(env, receiver):
    env.write(test_suite="")
    assert env.cli("deploy", "--version", "1").returncode == 0
    slow = '- {name: slow page, command: ["sleep", "60"], timeout: 60s}'
    env.write(hooks_yaml(receiver, points=["before_switch", "on_cancel"], command=False,
                         extra={"before_switch": WAIT % sys.executable, "on_cancel": slow}), test_suite="")
    run = _deploy_in_background(env, "2")
    try:
        _wait_for(env.dir / "hook.pid", run)
        run.send_signal(signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 1, stderr
    (slow_page,) = [h for h in env.report()["hooks"] if h["point"] == "on_cancel"]
    assert (slow_page["status"], slow_page["detail"]) == ("timed_out", "timed out after 5s")


def test_the_job_summary_lists_each_hook_and_what_each_channel_was_told():
    from bluegreen.report import Delivery, HookRun, Result

    result = Result(command="deploy", status="succeeded", app="shop", environment="prod", hooks=[
        HookRun(point="after_verify", name="purge | cdn", status="failed", detail="HTTP 500 from https://cdn/purge")],
        notifications=[Delivery(channel="slack", event="succeeded", delivered=True, attempts=2, detail="HTTP 200")])
    summary = result.to_markdown()
    assert "| purge \\| cdn | after_verify | ❌ failed | HTTP 500 from https://cdn/purge |" in summary
    assert "| slack | succeeded | ✅ | 2 | HTTP 200 |" in summary
