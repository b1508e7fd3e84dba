"""Notifications: telling channels (Slack, Teams, a signed CloudEvent webhook) how a run ended.

`Notifier` is a subscriber (events.py). It acts on `finished(result)` only, once per outcome: the run's outcome
(payload.outcome_of; none for a run that changed nothing live), the channels whose `on:` has it, one message each
built from payload(result, outcome) by the channel's format module (slack.py, teams.py, cloudevent.py), delivered
by delivery.py. Channels are delivered at once, each in a thread, so N channels cost one bound, not N. Each
channel's outcome becomes a Delivery in `result.notifications` (the report is written after `finished`), and an
undelivered one a warning line. Nothing here raises or changes the run's outcome.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..config.notifications import Channel
from ..events import Subscriber
from ..payload import outcome_of, payload
from ..redaction import Redactor
from ..report import Delivery, Result
from .delivery import Message, Progress, deliver, record

GRACE = 1.0  # seconds past a channel's total_timeout before its thread is given up (it never waits past it itself)


class Notifier(Subscriber):
    def __init__(self, channels: Sequence[Channel], warn: Callable[[str], None], redactor: Redactor | None = None) -> None:
        self.channels = _labelled(channels)
        self.warn = warn
        self.redactor = redactor or Redactor()
        self._told: set[str] = set()

    def finished(self, result: Result) -> None:
        outcome = outcome_of(result)
        if outcome is None or outcome in self._told:
            return  # nothing live changed; or told already: one message per outcome per run
        self._told.add(outcome)
        chosen = [(label, channel) for label, channel in self.channels if outcome in channel.on]
        if not chosen:
            return
        data = self.redactor.redact_data(payload(result, outcome))
        deliveries = notify_all(chosen, outcome, data)
        for delivery in deliveries:
            delivery.detail = self.redactor.redact(delivery.detail)
        result.notifications.extend(deliveries)
        for d in deliveries:
            if not d.delivered:
                tries = f"{d.attempts} attempt{'s' if d.attempts != 1 else ''}"
                self.warn(f"notification {d.channel!r} ({outcome}) not delivered after {tries}: {d.detail}")


def notify_all(chosen: Sequence[tuple[str, Channel]], event: str, data: dict[str, Any]) -> list[Delivery]:
    """Every channel at once; returns when each is delivered, has given up, or has reached its bound."""
    started = time.monotonic()
    progress = [Progress() for _ in chosen]
    outcomes: list[Delivery | None] = [None] * len(chosen)

    def one(index: int, label: str, channel: Channel) -> None:
        try:
            message = build(channel, data)
            delivered, _ = deliver(channel.url, message, timeout=channel.timeout,
                                   total_timeout=channel.total_timeout, progress=progress[index])
            outcomes[index] = record(label, event, delivered, progress[index], time.monotonic() - started)
        except Exception as exc:  # noqa: BLE001 - a notification never fails the run
            outcomes[index] = Delivery(channel=label, event=event, delivered=False, attempts=progress[index].attempts,
                                       detail=f"internal error: {type(exc).__name__}", duration=time.monotonic() - started)

    threads = [threading.Thread(target=one, args=(i, label, channel), name=f"notify {label}", daemon=True)
               for i, (label, channel) in enumerate(chosen)]
    for thread in threads:
        thread.start()
    for thread, (_, channel) in zip(threads, chosen):
        thread.join(max(0.0, started + channel.total_timeout + GRACE - time.monotonic()))
    deliveries = []
    for index, (label, channel) in enumerate(chosen):
        done = outcomes[index]
        if done is None:  # still in an attempt past the bound (a body trickling in): given up, the thread a daemon
            seen = progress[index]
            done = Delivery(channel=label, event=event, delivered=False, attempts=seen.attempts,
                            detail=f"no answer within {channel.total_timeout:g}s", duration=time.monotonic() - started)
        deliveries.append(done)
    return deliveries


def build(channel: Channel, data: dict[str, Any]) -> Message:
    """The channel's message, by the format its config model names (config/notifications.py)."""
    module, _, name = channel.message.partition(":")
    make: Callable[[Any, dict[str, Any]], Message] = getattr(importlib.import_module(module), name)
    return make(channel, data)


def _labelled(channels: Sequence[Channel]) -> list[tuple[str, Channel]]:
    """Each channel with the name the report shows: its own, else its kind; `slack 2` for a second unnamed one."""
    seen: dict[str, int] = {}
    out = []
    for channel in channels:
        label = channel.label
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label} {seen[label]}", channel))
    return out
