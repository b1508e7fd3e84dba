"""One redaction policy for every secret bluegreen knows (SSH keys, API credentials, database URLs, header values).

Which config values are secrets is declared on the config models (config/secrets.py: the `Secret` marker, and
`secret_values(settings)` that collects them); this module says how a secret is hidden.

A secret is hidden line by line (a CI masks its log line by line, and a key is many lines), each line stripped, of at
least MIN_SECRET characters (shorter ones would blank common words), longest first (a URL holds its password: the
URL goes whole). The PEM armour lines ("-----BEGIN ... KEY-----") are the same in every key: not secrets.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Any

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

    def redact_data(self, data: Any) -> Any:
        """A JSON-able value (a payload) with every secret replaced, wherever it stands in it."""
        return json.loads(self.redact_json(json.dumps(data)))

    def redact_json(self, text: str) -> str:
        """`text` is JSON: each secret as it stands inside a JSON string (quotes and backslashes escaped)."""
        for value in self.values:
            text = text.replace(json.dumps(value)[1:-1], MASK)
        return text


# Fields of a kubeconfig user that are no secret (an exec plugin's command, file paths); every other
# string in it (token, password, client-key-data, auth-provider tokens, exec env values) is a secret.
_PLAIN_KUBE_FIELDS = {
    "apiVersion", "command", "args", "installHint", "interactiveMode", "provideClusterInfo", "name",
    "client-certificate", "client-key", "tokenFile", "as", "as-uid", "as-groups", "username",
}


def kubeconfig_credentials(config: object) -> list[str]:
    """The credentials of a parsed kubeconfig: every string under `users`, whatever its shape (a malformed
    kubeconfig still has its secrets found), and the decoded form of a base64 one (client-key-data and friends).
    Not every line of the file: "kind: Config" is no secret, and hiding it would blank it in every log."""
    values = []
    for value in _credentials(config.get("users") if isinstance(config, dict) else None):
        values.append(value)
        try:
            values.append(base64.b64decode(value, validate=True).decode())
        except (binascii.Error, UnicodeDecodeError, ValueError):
            pass
    return values


def _credentials(node: object, key: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for k, value in node.items():
            yield from _credentials(value, str(k))
    elif isinstance(node, list):
        for value in node:
            yield from _credentials(value, key)
    elif isinstance(node, str) and key not in _PLAIN_KUBE_FIELDS:
        yield node
