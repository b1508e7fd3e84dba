"""One redaction policy for every secret bluegreen knows (SSH keys, API credentials, database URLs, header values).

A secret is hidden line by line (a CI masks its log line by line, and a key is many lines), each line stripped, of at
least MIN_SECRET characters (shorter ones would blank common words), longest first (a URL holds its password: the
URL goes whole). The PEM armour lines ("-----BEGIN ... KEY-----") are the same in every key: not secrets.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

MIN_SECRET = 4
MASK = "***"


class Redactor:
    """Secret values, and their redaction in the texts bluegreen writes (logs, reports, outputs)."""

    def __init__(self, values: Iterable[str | None] = ()) -> None:
        self.values: list[str] = []
        for value in values:
            self.add(value)

    def add(self, value: str | None) -> list[str]:
        """Remember each line of `value` worth hiding; returns the lines not known before."""
        added = []
        for part in (value or "").splitlines():
            part = part.strip()
            if part.startswith("-----") and part.endswith("-----"):
                continue
            if len(part) >= MIN_SECRET and part not in self.values:
                self.values.append(part)
                added.append(part)
        self.values.sort(key=len, reverse=True)
        return added

    def redact(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, MASK)
        return text

    def redact_json(self, text: str) -> str:
        """`text` is JSON: each secret as it stands inside a JSON string (quotes and backslashes escaped)."""
        for value in self.values:
            text = text.replace(json.dumps(value)[1:-1], MASK)
        return text
