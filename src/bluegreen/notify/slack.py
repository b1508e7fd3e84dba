"""A Slack incoming webhook's message: Block Kit (a header, the facts as section fields, why it failed, the rollback
command in a code block, a link to the CI run) and a plain `text` fallback for notifications and old clients.

Slack's limits (a header's text 150 characters, a field 2000, a section's text 3000) are kept by shortening; the
control characters &, <, > are escaped in mrkdwn, as Slack asks."""

from __future__ import annotations

import json
from typing import Any

from ..config import SlackChannel
from .delivery import Message
from .summary import facts, headline, shorten


def message(channel: SlackChannel, data: dict[str, Any]) -> Message:
    body = {"text": _fallback(data), "blocks": blocks(data)}
    return Message(json.dumps(body).encode(), {"Content-Type": "application/json; charset=utf-8"})


def blocks(data: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": shorten(headline(data), 150), "emoji": True}},
        {"type": "section", "fields": [_mrkdwn(f"*{title}*\n{shorten(escape(value), 1900)}")
                                       for title, value in facts(data)]},
    ]
    if data.get("reason"):
        out.append({"type": "section", "text": _mrkdwn(f"*Why*\n{shorten(escape(data['reason']), 2900)}")})
    if data.get("rollback_command"):
        command = shorten(escape(data["rollback_command"]), 2800)
        out.append({"type": "section", "text": _mrkdwn(f"*Roll back with*\n```{command}```")})
    links = []
    if data.get("run_url"):
        links.append(f"<{_link(data['run_url'])}|CI run>")
    if data.get("release_id"):
        links.append(f"release `{escape(data['release_id'])}`")
    if links:
        out.append({"type": "context", "elements": [_mrkdwn(" \u00b7 ".join(links))]})
    return out


def _fallback(data: dict[str, Any]) -> str:
    text = headline(data)
    if data.get("reason"):
        text += f": {data['reason']}"
    if data.get("run_url"):
        text += f" ({data['run_url']})"
    return shorten(escape(text), 3000)


def _mrkdwn(text: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": text}


def escape(text: str) -> str:
    """Slack's three control characters in mrkdwn text."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str) -> str:
    return escape(url).replace("|", "%7C")
