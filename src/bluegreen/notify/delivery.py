"""Delivering one message to one channel: a POST, retried within the channel's bounds. It never raises and never
waits past `total_timeout`; what became of it is a Delivery (report.py) whose detail names the HTTP status or the
error, never the URL (a secret).

Retried: 5xx, 429 (after its Retry-After, when that fits in the bound) and transport errors (timeouts, refused or
reset connections), with exponential backoff. Not retried: any other 4xx (the request is wrong; sending it again
changes nothing). The body is the same bytes on every attempt, so a signature and an event id stay the same and a
receiver that got it twice can tell.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import httpx

from ..report import Delivery

MAX_ATTEMPTS = 6
FIRST_BACKOFF = 0.5  # seconds, doubled after each attempt up to MAX_BACKOFF
MAX_BACKOFF = 5.0


@dataclass(frozen=True)
class Message:
    """What is POSTed: the exact body (signed as it is) and its headers."""

    body: bytes
    headers: dict[str, str]


@dataclass
class Progress:
    """Where a delivery stands, readable while it runs (the caller's bound may be reached first)."""

    attempts: int = 0
    detail: str = "not sent"
    history: list[str] = field(default_factory=list)


def deliver(url: str, message: Message, *, timeout: float, total_timeout: float,
            progress: Progress | None = None) -> tuple[bool, Progress]:
    """POST `message` until a 2xx, a final answer, MAX_ATTEMPTS or the bound. Returns (delivered, progress)."""
    progress = progress or Progress()
    deadline = time.monotonic() + total_timeout
    backoff = FIRST_BACKOFF
    with httpx.Client(follow_redirects=False) as client:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0.05:
                break
            progress.attempts = attempt
            wait, final = backoff, False
            try:
                response = client.post(url, content=message.body, headers=message.headers,
                                       timeout=min(timeout, remaining))
            except httpx.TimeoutException:
                progress.detail = f"no answer within {min(timeout, remaining):.3g}s"
            except httpx.TransportError as exc:
                progress.detail = f"cannot reach it: {type(exc).__name__}{_errno(exc)}"
            except httpx.HTTPError as exc:  # a request that cannot be made (an invalid URL): never retried
                progress.detail, final = f"cannot send: {type(exc).__name__}", True
            else:
                progress.detail = f"HTTP {response.status_code}" + _excerpt(response)
                if response.is_success:
                    progress.history.append(progress.detail)
                    return True, progress
                final = response.status_code != 429 and response.status_code < 500
                asked = _retry_after(response)
                if asked is not None:
                    wait = asked
            progress.history.append(progress.detail)
            if final or attempt == MAX_ATTEMPTS:
                break
            if time.monotonic() + wait >= deadline:
                progress.detail += f"; no time for another attempt within {total_timeout:g}s" + (
                    f" (Retry-After {wait:g}s)" if wait > backoff else "")
                break
            time.sleep(wait)
            backoff = min(backoff * 2, MAX_BACKOFF)
    return False, progress


def record(channel: str, event: str, delivered: bool, progress: Progress, duration: float) -> Delivery:
    """The report's line: the last answer or error; a success after retries names what came before it."""
    detail = progress.detail
    if delivered and len(progress.history) > 1:
        earlier = list(dict.fromkeys(progress.history[:-1]))  # each different answer once, in order
        detail += f" after {', '.join(earlier)}"
    return Delivery(channel=channel, event=event, delivered=delivered, attempts=progress.attempts,
                    detail=" ".join(detail.split())[:300], duration=round(duration, 3))


def _excerpt(response: httpx.Response) -> str:
    """The start of an error's body (Slack says `invalid_payload`, `no_service`); none for a success."""
    if response.is_success:
        return ""
    try:
        text = " ".join(response.text.split())[:120]
    except Exception:  # noqa: BLE001 - an undecodable body: the status says enough
        return ""
    return f": {text}" if text else ""


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (RFC 9110: delay-seconds or an HTTP-date); None when absent or unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _errno(exc: Exception) -> str:
    """`: [Errno 111] Connection refused` from the OS error underneath, never the exception's text (it may name
    the URL)."""
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    return f": {cause.strerror}" if isinstance(cause, OSError) and cause.strerror else ""
