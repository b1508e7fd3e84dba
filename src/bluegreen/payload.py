"""What a run tells the team's own steps and channels: one JSON-able description of the run as it stands.

Hooks get it as their HTTP body and as `BLUEGREEN_*` variables; the webhook channel sends it as the data of a
CloudEvent; Slack, Teams and GitHub deployments build their messages from it. It is made from the Result at
the moment it is sent, so a hook point sees the run as it is then (`before_switch`: the old colour still live)
and an outcome sees the final state: never a state cached earlier.
"""

from __future__ import annotations

import json
from typing import Any, get_args

from .config import Hooks
from .config.notifications import Outcome
from .report import Result

# The points of a release where hooks run, in the order a run can reach them (the fields of `hooks:`).
HOOK_POINTS = tuple(Hooks.model_fields)

# What a finished run amounts to for the people told about it: one outcome per run (None: nothing to tell).
OUTCOMES: tuple[str, ...] = get_args(Outcome)


def outcome_of(result: Result) -> str | None:
    """succeeded: a deploy or promote went live and verified (or an abort ended a canary); rolled_back: a `rollback`
    made the previous version live again; switched_back: a release failed after the switch and traffic went back
    by itself; failed: before the switch, or switching back failed; cancelled; paused: a canary holds at a step.
    A prepared (--no-switch), planned, locked or invalid run changed no live traffic: nothing to tell."""
    status = result.status
    if status == "succeeded":
        return "rolled_back" if result.command == "rollback" else "succeeded"
    if status == "rolled_back":
        return "switched_back"
    if status in ("failed", "rollback_failed"):
        return "failed"
    if status in ("cancelled", "paused"):
        return status
    return None


def payload(result: Result, event: str) -> dict[str, Any]:
    """The run now: `event` is the hook point or the outcome this is sent for."""
    return {
        "event": event,
        "outcome": outcome_of(result) if result.status != "running" else None,
        "command": result.command,
        "status": result.status,
        "app": result.app,
        "environment": result.environment,
        "version": result.version,
        "previous_version": result.previous_version,
        "live_version": result.live_version,
        "live_colour": result.live_colour,
        "previous_colour": result.previous_colour,
        "idle_colour": result.idle_colour,
        "live_url": result.live_url,
        "preview_url": result.preview_url,
        "switched": result.switched,
        "switched_back": result.switched_back,
        "reason": result.reason,
        "rollback_command": result.rollback_command if result.can_roll_back() else None,
        "release_id": result.release_id,
        "run_url": result.run_url,
        "actor": result.actor,
        "started_at": result.started_at.isoformat(timespec="seconds") if result.started_at else None,
        "duration": round(result.duration, 3) if result.duration is not None else None,
    }


def environment(data: dict[str, Any]) -> dict[str, str]:
    """The payload as `BLUEGREEN_*` variables for a command (`BLUEGREEN_LIVE_COLOUR=green`), and the whole of it as
    JSON in `BLUEGREEN_PAYLOAD`. None is the empty string, a bool `true`/`false`."""
    env = {"BLUEGREEN_PAYLOAD": json.dumps(data)}
    for key, value in data.items():
        text = "" if value is None else ("true" if value is True else "false" if value is False else str(value))
        env[f"BLUEGREEN_{key.upper()}"] = text
    return env
