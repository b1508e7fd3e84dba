"""What the engine tells the outside world while it runs.

The pipeline emits events and never prints; a CI adapter (plain terminal,
GitHub, GitLab) decides how they look: lines, log groups, sections.
"""

from __future__ import annotations

import sys
from typing import TextIO

from .report import Phase, Result


class Events:
    """The default sink: human lines on stderr, one per phase with its duration."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)

    def phase_started(self, name: str) -> None:
        pass

    def phase_finished(self, phase: Phase) -> None:
        self.write(phase_line(phase))

    def log(self, message: str) -> None:
        """Progress inside a phase (a check's retry, the test suite's output)."""
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
