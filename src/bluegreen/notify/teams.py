"""A Microsoft Teams Workflows webhook's message: one Adaptive Card (1.4, which Teams renders) in a message
attachment, as the "Post to a channel when a webhook request is received" workflow expects:
{"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}.
The card: a headline coloured by the outcome, the facts as a FactSet, why it failed, the rollback command, and an
Action.OpenUrl to the CI run."""

from __future__ import annotations

import json
from typing import Any

from ..config import TeamsChannel
from .delivery import Message
from .summary import facts, headline, look, shorten

CARD_VERSION = "1.4"


def message(channel: TeamsChannel, data: dict[str, Any]) -> Message:
    body = {
        "type": "message",
        "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                         "content": card(data)}],
    }
    return Message(json.dumps(body).encode(), {"Content-Type": "application/json; charset=utf-8"})


def card(data: dict[str, Any]) -> dict[str, Any]:
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": shorten(headline(data, unicode=True), 300), "size": "Medium",
         "weight": "Bolder", "color": look(data)[3], "wrap": True},
        {"type": "FactSet", "facts": [{"title": title, "value": shorten(value, 500)}
                                      for title, value in facts(data, unicode=True)]},
    ]
    if data.get("reason"):
        body.append({"type": "TextBlock", "text": shorten(data["reason"], 2000), "wrap": True})
    if data.get("rollback_command"):
        body += [
            {"type": "TextBlock", "text": "Roll back with:", "weight": "Bolder", "wrap": True, "spacing": "Medium"},
            {"type": "TextBlock", "text": data["rollback_command"], "fontType": "Monospace", "wrap": True},
        ]
    content: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "fallbackText": headline(data, unicode=True),
        "body": body,
    }
    if data.get("run_url"):
        content["actions"] = [{"type": "Action.OpenUrl", "title": "Open the CI run", "url": data["run_url"]}]
    return content
