"""The events bus (events.py): the engine emits, every subscriber hears each event in order, and a subscriber
that fails is dropped with one warning and never fails the run. The CI adapter's output is one subscriber."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from bluegreen import cli
from bluegreen.cancel import Cancelled
from bluegreen.events import Events, Output, Subscriber
from bluegreen.report import Phase, Result
from conftest import LocalEnv


class Recorder(Subscriber):
    """Writes down every event it hears, with the name it was given."""

    def __init__(self, name: str, heard: list[tuple[str, str, object]]) -> None:
        self.name, self.heard = name, heard

    def phase_started(self, name: str) -> None:
        self.heard.append((self.name, "phase_started", name))

    def phase_finished(self, phase: Phase) -> None:
        self.heard.append((self.name, "phase_finished", (phase.name, phase.status)))

    def log(self, message: str) -> None:
        self.heard.append((self.name, "log", message))

    def warning(self, message: str) -> None:
        self.heard.append((self.name, "warning", message))

    def started(self, title: str) -> None:
        self.heard.append((self.name, "started", title))

    def finished(self, result: Result) -> None:
        self.heard.append((self.name, "finished", result.status))


class Broken(Subscriber):
    """Fails on its first phase; counts what it was still given."""

    def __init__(self, error: BaseException) -> None:
        self.error, self.calls = error, 0

    def phase_started(self, name: str) -> None:
        self.calls += 1
        raise self.error


def phase(name: str, status: str = "succeeded") -> Phase:
    return Phase(name=name, status=status, started_at=datetime.now(timezone.utc), duration=0.002)


def test_every_subscriber_hears_every_event_in_the_order_they_subscribed():
    heard: list[tuple[str, str, object]] = []
    events = Events(Recorder("a", heard))
    events.subscribe(Recorder("b", heard))
    events.started("deploy 2")
    events.phase_started("switch")
    events.log("retrying")
    events.warning("careful")
    events.phase_finished(phase("switch"))
    assert heard == [
        ("a", "started", "deploy 2"), ("b", "started", "deploy 2"),
        ("a", "phase_started", "switch"), ("b", "phase_started", "switch"),
        ("a", "log", "retrying"), ("b", "log", "retrying"),
        ("a", "warning", "careful"), ("b", "warning", "careful"),
        ("a", "phase_finished", ("switch", "succeeded")), ("b", "phase_finished", ("switch", "succeeded")),
    ]


def test_a_bus_without_subscribers_is_silent_and_a_subscriber_hears_only_what_it_overrides():
    Events().warning("nobody hears this")
    events = Events(Subscriber())  # the base class: every event is a no-op
    events.phase_started("x")
    events.phase_finished(phase("x"))
    events.log("x")
    events.warning("x")
    events.started("x")


def test_the_output_writes_the_lines_it_always_wrote():
    out = io.StringIO()
    events = Events(Output(out))
    events.started("deploy 2 to testapp/test")
    events.phase_started("switch")  # no line: the phase's line comes when it finished
    events.log("attempt 1 failed")
    events.warning("the lock expired")
    events.phase_finished(phase("switch"))
    assert out.getvalue().splitlines() == [
        "deploy 2 to testapp/test",
        "       attempt 1 failed",
        "  warning: the lock expired",
        f"  ok   {'switch':<28}   2.0 ms",
    ]


def test_a_failing_subscriber_is_dropped_with_one_warning_and_the_others_go_on():
    out, heard = io.StringIO(), []
    broken = Broken(RuntimeError("the webhook\nis down"))
    events = Events(Output(out), broken, Recorder("after", heard))
    events.phase_started("deploy")
    events.phase_started("wait ready")
    events.phase_finished(phase("wait ready"))
    assert broken.calls == 1  # dropped: no second call
    warning = "subscriber Broken failed: RuntimeError: the webhook is down; it gets no more events"
    assert out.getvalue().splitlines() == [f"  warning: {warning}", f"  ok   {'wait ready':<28}   2.0 ms"]
    assert heard == [
        ("after", "phase_started", "deploy"),  # the event the broken one failed on reaches the rest, then the warning
        ("after", "warning", warning),
        ("after", "phase_started", "wait ready"),
        ("after", "phase_finished", ("wait ready", "succeeded")),
    ]
    assert broken not in events.subscribers


def test_a_subscriber_failing_on_the_warning_about_another_is_dropped_too():
    class FailsOnWarnings(Subscriber):
        def warning(self, message: str) -> None:
            raise OSError(5, "Input/output error")

    out = io.StringIO()
    events = Events(FailsOnWarnings(), Broken(ValueError("bad")), Output(out))
    events.phase_started("deploy")
    assert out.getvalue().splitlines() == [
        "  warning: subscriber Broken failed: ValueError: bad; it gets no more events",
        "  warning: subscriber FailsOnWarnings failed: OSError: [Errno 5] Input/output error; it gets no more events",
    ]
    assert [type(s) for s in events.subscribers] == [Output]


@pytest.mark.parametrize("stop", [Cancelled("SIGTERM"), KeyboardInterrupt()], ids=["Cancelled", "KeyboardInterrupt"])
def test_a_cancellation_in_a_subscriber_goes_through(stop):
    heard: list[tuple[str, str, object]] = []
    broken = Broken(stop)
    events = Events(broken, Recorder("after", heard))
    with pytest.raises(type(stop)):
        events.phase_started("switch")
    assert broken in events.subscribers and heard == []  # not dropped, not turned into a warning


def test_an_output_whose_stream_is_broken_is_dropped_and_the_rest_hear_why():
    read, write = os.pipe()
    os.close(read)  # the reader left: every write is EPIPE
    stream = os.fdopen(write, "w")
    heard: list[tuple[str, str, object]] = []
    events = Events(Output(stream), Recorder("after", heard))
    try:
        events.phase_finished(phase("switch"))
        events.phase_finished(phase("verify"))
    finally:
        try:
            stream.close()
        except BrokenPipeError:  # the buffered line fails once more
            pass
    assert [h[1] for h in heard] == ["phase_finished", "warning", "phase_finished"]
    assert heard[1][2].startswith("subscriber Output failed: BrokenPipeError: ")


# --- through the real CLI: a deploy on the local target ----------------------------------------


def test_a_deploy_through_the_cli_tells_an_extra_subscriber_every_phase(local_env: LocalEnv, monkeypatch, capsys):
    monkeypatch.setenv("BLUEGREEN_CI", "plain")
    monkeypatch.chdir(local_env.dir)
    heard: list[tuple[str, str, object]] = []
    code = cli.main(["deploy", "-c", str(local_env.config), "--version", "7"], subscribers=[Recorder("extra", heard)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert heard[0][1] == "started" and heard[-1] == ("extra", "finished", "succeeded")
    started = [h[2] for h in heard if h[1] == "phase_started"]
    finished = [h[2] for h in heard if h[1] == "phase_finished"]
    assert [name for name, _ in finished] == started and {status for _, status in finished} == {"succeeded"}
    assert any(name.startswith("switch") for name in started), started
    # The adapter's output heard the same phases, first, and printed them as it always did.
    printed = [line.split()[1] for line in err.splitlines() if line.startswith("  ok   ")]
    assert printed == [name.split()[0] for name in started]
    assert err.splitlines()[-1].startswith("deploy succeeded: ")
    assert local_env.live_version() == "7"


def test_a_failing_subscriber_never_fails_a_deploy(local_env: LocalEnv, monkeypatch, capsys):
    monkeypatch.setenv("BLUEGREEN_CI", "plain")
    monkeypatch.chdir(local_env.dir)
    broken = Broken(RuntimeError("no route to the chat server"))
    code = cli.main(["deploy", "-c", str(local_env.config), "--version", "8"], subscribers=[broken])
    err = capsys.readouterr().err
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "subscriber" in line]
    assert warnings == ["  warning: subscriber Broken failed: RuntimeError: no route to the chat server; "
                        "it gets no more events"], err
    assert broken.calls == 1 and local_env.report()["status"] == "succeeded"
    assert local_env.live_version() == "8"


def test_a_deploy_whose_stderr_reader_left_still_deploys(local_env: LocalEnv):
    """`bluegreen deploy ... 2>&1 | head -1`: writing the log fails (EPIPE); the output is dropped, the run goes on."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", str(local_env.config), "--version", "9"],
        cwd=local_env.dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "BLUEGREEN_CI": "plain", **local_env.environ},
    )
    process.stderr.close()
    assert process.wait(timeout=120) == 0
    assert local_env.report()["status"] == "succeeded"
    assert local_env.live_version() == "9"
