"""Which config values are secrets: declared on the models, collected by one walk.

A field is secret when its annotation carries a `Secret` marker, outermost: `Annotated[SecretStr | None, SECRET]`.
Pydantic keeps the marker in the field's metadata and ignores it otherwise, so validation and the JSON schema are
unchanged. `secret_values(model)` walks a loaded model (Settings, or any part of it) through nested models, lists
and dicts, and returns what every marked field holds, and the values of the variables a model names in its
`secret_variables` ClassVar (credentials a library reads from the environment itself, such as AWS's); redaction.py's Redactor then hides those values (line by
line) in logs, reports and CI outputs. A new secret field needs only its marker: no call site guesses where
secrets live (tests/test_redaction.py fails for a field whose name looks secret and has none).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import BaseModel, SecretStr

from ..redaction import kubeconfig_credentials


def _text(value: Any) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _whole(value: Any) -> Iterable[str]:
    return [_text(value)]


@dataclass(frozen=True)
class Secret:
    """Marks a config field as secret. `reveal` turns the field's value into the strings to hide (default: the
    value itself); a value that stands for secrets elsewhere (variable names, a kubeconfig) says which."""

    reveal: Callable[[Any], Iterable[str]] = _whole


def _credential(value: Any) -> Iterable[str]:
    secret = _text(value)
    return [secret, *secret.split(":", 1)[1:]]  # user:password, and the password alone (it may be quoted alone)


# Header values are secrets by default (SmokeCheck promises they never appear); these few are content
# negotiation, and hiding "application/json" would blank it everywhere.
PLAIN_HEADERS = {"accept", "accept-encoding", "accept-language", "content-type", "user-agent", "cache-control"}


def _header_values(headers: dict[str, str]) -> Iterable[str]:
    """Each value, and the credential of `<scheme> <credential>` alone ("Bearer abc": abc may be quoted alone)."""
    values = []
    for name, value in headers.items():
        if name.lower() not in PLAIN_HEADERS:
            values += [value, *value.split(None, 1)[1:]]
    return values


def _environment_values(names: list[str]) -> Iterable[str]:
    """The values of these variables in bluegreen's environment, and the password of any that is a URL (the
    database URL is passed through from bluegreen's environment, never written in the file)."""
    values = []
    for name in names:
        value = os.environ.get(name, "")
        if not value:
            continue
        values.append(value)
        try:
            password = urlsplit(value).password
        except ValueError:
            password = None
        if password:
            values += [password, unquote(password)]
    return values


def _url(value: Any) -> Iterable[str]:
    """A webhook URL is a secret whole, and so are its path and query (Slack's token is the path, a Teams
    Workflows URL signs its query): an error or an echo may quote them without the host. Short paths ("/hook")
    are left alone: hiding them would blank common words."""
    url = _text(value)
    parts = urlsplit(url)
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    values = [url, rest] if len(rest) >= 12 else [url]
    values += [v for pair in parts.query.split("&") for v in pair.split("=", 1)[1:] if len(v) >= 8]
    return values


def _kubeconfig(value: Any) -> Iterable[str]:
    """The credentials in a kubeconfig's content, not its every line ("kind: Config" is no secret)."""
    try:
        data = yaml.safe_load(_text(value))
    except yaml.YAMLError:
        return []  # the kubernetes target refuses it, and its message never quotes the content
    return kubeconfig_credentials(data)


SECRET = Secret()  # the value itself: a key, a passphrase, known_hosts content
CREDENTIAL = Secret(_credential)  # a token or user:password
HEADER_VALUES = Secret(_header_values)  # request headers: every value but content negotiation's
ENVIRONMENT_VALUES = Secret(_environment_values)  # names of variables whose values are secrets
ENVIRONMENT_VARIABLE = Secret(lambda name: _environment_values([name]))  # the name of one such variable
KUBECONFIG = Secret(_kubeconfig)  # kubeconfig content: its users' credentials
SECRET_URL = Secret(_url)  # a URL whose path or query is a token (an incoming webhook)


def secret_values(model: BaseModel) -> list[str]:
    """The values of every field marked `Secret` in `model` and the models it holds: what must never be shown."""
    # A model whose part reads secrets from fixed variables (a cloud SDK's credentials) names them in a ClassVar.
    values: list[str] = list(_environment_values(list(getattr(type(model), "secret_variables", ()))))
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        marker = next((m for m in field.metadata if isinstance(m, Secret)), None)
        values += marker.reveal(value) if marker is not None else _nested(value)
    return [value for value in values if value]


def _nested(value: Any) -> list[str]:
    if isinstance(value, BaseModel):
        return secret_values(value)
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [secret for item in value for secret in _nested(item)]
    return []
