"""What every config model shares: the colours, the strict base model, value types (durations, URLs) and the
`{placeholder}` rendering."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

Colour = Literal["blue", "green"]
COLOURS: tuple[Colour, Colour] = ("blue", "green")
DEFAULT_CONFIG = ".bluegreen.yml"
ENVIRONMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SCHEMA_URL = "https://raw.githubusercontent.com/bluegreen-dev/bluegreen/main/schema/bluegreen.schema.json"


def other_colour(colour: Colour) -> Colour:
    return "green" if colour == "blue" else "blue"


# --- value types ---------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}


def parse_duration(value: Any) -> Any:
    """`30`, `2.5`, `"30s"`, `"500ms"`, `"5m"`, `"1h"` -> seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '30s' or '5m'")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"expected a duration such as 30, '30s' or '5m', got {shorten(repr(value))}")


def shorten(text: str, limit: int = 80) -> str:
    """A value quoted in an error message: whole if short, else its start (a file can hold megabytes)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
            ],
            "description": "Seconds, or a string such as '500ms', '30s', '5m', '1h'.",
        }
    ),
]


def shown_url(url: str) -> str:
    """A URL as a message or a label shows it: no query string, no user:password (either may hold a key)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {shorten(repr(value))}")
    return value.rstrip("/")  # paths are appended to it


# A URL that checks are sent to: refused at load rather than after the switch, where a bad one means switching back.
HttpUrl = Annotated[str, AfterValidator(_http_url), WithJsonSchema({"type": "string", "pattern": "^https?://"})]


class Model(BaseModel):
    """Every config model refuses unknown keys: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- placeholders ----------------------------------------------------------------------------


def render(template: str, **values: object) -> str:
    """Fill `{name}` placeholders; other braces (JSON, regexes) are left alone."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template
