"""What the engine tells the outside world while it runs.

The pipeline emits events and never prints. `Events` is the bus the engine holds: it hands
each event to its subscribers in the order they subscribed. One subscriber is the CI
adapter's `Output` (plain terminal, GitHub, GitLab), which decides how a run looks: lines,
log groups, sections. Others (hooks, notifications) subscribe beside it, and the engine
and the adapters know nothing of them.

A subscriber that fails never fails the run: it is dropped, with one warning through the
others. Only a cancellation (`Cancelled`, KeyboardInterrupt: no `Exception`) goes through.
"""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from .report import Phase, Result


class Subscriber:
    """What a subscriber can hear; each method does nothing unless overridden."""

    def phase_started(self, name: str) -> None:
        pass

    def phase_finished(self, phase: Phase) -> None:
        pass

    def log(self, message: str) -> None:
        """Progress inside a phase (a check's retry, the test suite's output)."""

    def warning(self, message: str) -> None:
        pass

    def started(self, title: str) -> None:
        pass

    def reached(self, point: str, result: Result) -> None:
        """The run reached a hook point (payload.HOOK_POINTS), with the result as it stands there."""

    def finished(self, result: Result) -> None:
        """Once per changing command, when its outcome is decided, before the report is written: what a
        subscriber adds to the result (its deliveries) reaches the report."""


class Events:
    """The bus the engine emits on: every event goes to every subscriber, in the order they subscribed."""

    def __init__(self, *subscribers: Subscriber) -> None:
        self._subscribers: list[Subscriber] = list(subscribers)
        self._lock = threading.Lock()  # smoke checks log from worker threads

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        return tuple(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> Subscriber:
        with self._lock:
            self._subscribers.append(subscriber)
        return subscriber

    def _emit(self, event: str, *args: object) -> None:
        failed = []
        for subscriber in self.subscribers:
            try:
                getattr(subscriber, event)(*args)
            except Exception as exc:  # noqa: BLE001 - a cancellation is no Exception: it propagates
                failed.append((subscriber, exc))
        for subscriber, exc in failed:  # once the event reached the others: their warning comes after it
            self._drop(subscriber, exc)

    def _drop(self, subscriber: Subscriber, exc: Exception) -> None:
        with self._lock:
            if subscriber not in self._subscribers:
                return  # dropped already (another thread): one warning each
            self._subscribers.remove(subscriber)
        detail = " ".join(str(exc).split()) or "no message"
        self.warning(f"subscriber {type(subscriber).__name__} failed: {type(exc).__name__}: {detail}; "
                     "it gets no more events")

    def phase_started(self, name: str) -> None:
        self._emit("phase_started", name)

    def phase_finished(self, phase: Phase) -> None:
        self._emit("phase_finished", phase)

    def log(self, message: str) -> None:
        """Progress inside a phase (a check's retry, the test suite's output)."""
        self._emit("log", message)

    def warning(self, message: str) -> None:
        self._emit("warning", message)

    def started(self, title: str) -> None:
        self._emit("started", title)

    def reached(self, point: str, result: Result) -> None:
        self._emit("reached", point, result)

    def finished(self, result: Result) -> None:
        self._emit("finished", result)


class Output(Subscriber):
    """The default output: human lines on a stream (stderr), one per phase with its duration."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def phase_finished(self, phase: Phase) -> None:
        self.write(phase_line(phase))

    def log(self, message: str) -> None:
        self.write(f"       {message}")

    def warning(self, message: str) -> None:
        self.write(f"  warning: {message}")

    def started(self, title: str) -> None:
        self.write(title)

    def finished(self, result: Result) -> None:
        self.write(summary_line(result))


def phase_line(phase: Phase) -> str:
    """`  ok   switch blue -> green   1.8 ms`: one line per finished phase."""
    mark = {"succeeded": "ok  ", "failed": "FAIL", "skipped": "skip", "cancelled": "STOP"}.get(phase.status, "    ")
    detail = f"  {phase.detail}" if phase.detail else ""
    return f"  {mark} {phase.name:<28} {format_duration(phase.duration):>8}{detail}"


def format_duration(seconds: float) -> str:
    """A switch takes milliseconds, verification seconds: show each in its unit."""
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


# How a status reads after the command's name: "rollback failed after the switch", not "rollback rollback failed".
OUTCOMES = {"rollback_failed": "failed after the switch"}


def outcome(result: Result) -> str:
    """`deploy failed`, `rollback failed after the switch`: the command and what became of it."""
    return f"{result.command} {OUTCOMES.get(result.status, result.status.replace('_', ' '))}"


def summary_line(result: Result) -> str:
    r = result
    if r.status == "succeeded" and r.switched:
        was = f" (was {r.previous_colour} with {r.previous_version})" if r.previous_colour else ""
        line = f"{r.command} succeeded: {r.live_colour} is live with version {r.version}{was}"
    elif r.status == "prepared":
        line = f"prepared: version {r.version} is ready on {r.idle_colour} at {r.preview_url}; live stays {r.live_colour}"
    elif r.status == "planned":
        line = f"dry run: nothing changed; {r.plan or ''}".rstrip("; ")
    elif r.status == "succeeded":
        line = f"{r.command}: {r.reason or 'done'}"
    else:
        line = f"{outcome(r)}: {r.reason}"
    if r.rollback_command and r.switched and r.previous_colour:
        line += f"\nroll back with: {r.rollback_command}"
    return line
