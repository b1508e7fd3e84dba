"""What the history says served live traffic: what a rollback may go back to, what a contract must wait for."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from bluegreen.history import served_live, was_live
from bluegreen.state.base import Release

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def release(minute: int, action: str, outcome: str, colour: str | None, version: str | None,
            previous: tuple[str, str] | None = None, went_live: bool | None = None) -> Release:
    return Release(id=f"r{minute}", action=action, outcome=outcome, at=T0 + timedelta(minutes=minute),  # type: ignore[arg-type]
                   colour=colour, version=version, previous_colour=previous[0] if previous else None,
                   previous_version=previous[1] if previous else None, went_live=went_live)


def test_a_switch_that_stood_served_whatever_its_verification_said():
    history = [  # newest first
        release(3, "deploy", "rolled_back", "blue", "3", ("green", "2"), went_live=False),
        release(2, "deploy", "succeeded", "green", "2", ("blue", "1"), went_live=True),
        release(1, "deploy", "rollback_failed", "blue", "1", None, went_live=True),
    ]
    assert list(served_live(history)) == [("green", "2"), ("green", "2"), ("blue", "1"), ("blue", "1")]
    assert was_live(history, "blue", "1") and was_live(history, "green", "2")
    assert not was_live(history, "blue", "3")  # switched back: never served
    assert {v for _, v in served_live(history, before=T0 + timedelta(minutes=2))} == {"1"}


def test_a_colour_a_later_run_found_live_served_even_without_its_own_record():
    """The history keeps `history_limit` entries: the release that made blue live may be gone, but the next run
    read blue live on the router."""
    history = [release(9, "prepare", "prepared", "green", "5", ("blue", "4"), went_live=False)]
    assert was_live(history, "blue", "4") and not was_live(history, "green", "5")


def test_an_aborted_canary_never_served_and_old_records_count_only_when_verified():
    history = [
        release(5, "abort", "succeeded", "blue", "1", ("green", "2"), went_live=True),  # "previous": the canary
        release(4, "deploy", "paused", "green", "2", ("blue", "1"), went_live=False),
        release(2, "deploy", "rollback_failed", "green", "0", None),  # written before went_live was kept
        release(1, "deploy", "succeeded", "blue", "1", None),
    ]
    assert not was_live(history, "green", "2")
    assert not was_live(history, "green", "0")
    assert was_live(history, "blue", "1")
