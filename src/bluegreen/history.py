"""What the release history says about live traffic.

A release history is newest first (`StateStore.history()`). What *served live traffic* is what a rollback may
go back to and what needs the schema a contract removes: a switch that stood when its run ended, whatever its
verification said (a first release left live by `rollback_failed` serves users until the next one), and
every colour a later run found live on the router. A release switched back, only prepared, or aborted never did.
"""

from __future__ import annotations

from datetime import datetime
from typing import Iterator

from .state.base import Release

LIVE_ACTIONS = ("deploy", "promote", "rollback")


def served_live(history: list[Release], before: datetime | None = None) -> Iterator[tuple[str, str]]:
    """(colour, version) pairs that served all live traffic, newest first; `before`: only before that time."""
    for r in history:
        if before is not None and r.at >= before:
            continue
        # Records from before `went_live` was kept: only a verified release is known to have stayed.
        stood = r.went_live or (r.went_live is None and r.outcome == "succeeded")
        if r.action in LIVE_ACTIONS and r.colour and r.version and stood:
            yield r.colour, r.version
        # The run found this colour live on the router when it began (an abort's "previous" is the canary).
        if r.action != "abort" and r.previous_colour and r.previous_version:
            yield r.previous_colour, r.previous_version


def was_live(history: list[Release], colour: str, version: str) -> bool:
    """Did `version` on `colour` ever serve live traffic (so switching to it again is going back)?"""
    return (colour, version) in set(served_live(history))


def verified_live(history: list[Release], colour: str | None, version: str | None) -> bool:
    """Did `version` go live on `colour` and pass verification there?"""
    return any(
        r.colour == colour and r.version == version and r.action in LIVE_ACTIONS and r.outcome == "succeeded"
        for r in history
    )
