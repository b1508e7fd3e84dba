"""The generic webhook's message: a CloudEvents 1.0 event in structured mode (the JSON event format as the body,
Content-Type application/cloudevents+json) whose `data` is the run's payload.

`id` is the release id and the outcome, the same on every attempt, so a receiver de-duplicates on it (with
`source`). With a `secret`, the exact body is signed with HMAC-SHA256 and the signature sent as
`X-Bluegreen-Signature-256: sha256=<hex>` (GitHub's webhook convention): a receiver recomputes it over the raw
body and compares in constant time; the event's `time` inside the signed body bounds a replay."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import datetime, timezone
from typing import Any

from ..config import WebhookChannel
from .delivery import Message

SIGNATURE_HEADER = "X-Bluegreen-Signature-256"
TYPE_PREFIX = "dev.bluegreen.release."
CONTENT_TYPE = "application/cloudevents+json; charset=utf-8"


def event(data: dict[str, Any]) -> dict[str, Any]:
    release = data.get("release_id") or uuid.uuid4().hex
    return {
        "specversion": "1.0",
        "id": f"{release}/{data['event']}",
        "source": f"/bluegreen/{data['app']}/{data['environment']}",
        "type": TYPE_PREFIX + data["event"],
        "subject": data.get("version") or data["command"],
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def message(channel: WebhookChannel, data: dict[str, Any]) -> Message:
    body = json.dumps(event(data), separators=(",", ":")).encode()
    ours = {"content-type", SIGNATURE_HEADER.lower()}  # the event's own headers are not the config's to replace
    headers = {name: value for name, value in channel.headers.items() if name.lower() not in ours}
    headers["Content-Type"] = CONTENT_TYPE
    if channel.secret is not None:
        headers[SIGNATURE_HEADER] = sign(channel.secret.get_secret_value().encode(), body)
    return Message(body, headers)
