"""HTTP smoke checks (httpx): one request, judged against `expect`; retried until a deadline.

Request header values are never logged or reported: they often carry tokens.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

import httpx

from ..cancel import CANCEL
from ..config import SmokeCheck, render
from ..report import CheckResult

MAX_BACKOFF = 5.0
T = TypeVar("T")


def probe(
    client: httpx.Client, check: SmokeCheck, base_url: str, values: dict[str, str], also: dict[str, str] | None = None,
) -> str | None:
    """Send the check's request once; None when it passes, else why not (one line). `also`: an answer that
    passes with these values passes too (a canary step: the stable version answers most requests)."""
    url = base_url.rstrip("/") + "/" + render(check.path, **values).lstrip("/")
    started = time.monotonic()
    try:
        response = client.request(
            check.method,
            url,
            headers={k: render(v, **values) for k, v in check.headers.items()},
            content=render(check.body, **values) if check.body is not None else None,
        )
    except httpx.HTTPError as exc:
        return f"{check.method} {url}: {type(exc).__name__}: {exc or 'no response'}"
    latency = time.monotonic() - started
    failure = judge(check, response, latency, values)
    return failure if failure is None or also is None or judge(check, response, latency, also) else None


def judge(check: SmokeCheck, response: httpx.Response, latency: float, values: dict[str, str]) -> str | None:
    expect = check.expect
    where = f"{check.method} {response.request.url.path}"
    wanted = expect.status if isinstance(expect.status, list) else [expect.status]
    if response.status_code not in wanted:
        return f"{where}: status {response.status_code}, expected {_one_or_list(wanted)}{_snippet(response)}"
    body = response.text
    if expect.body_contains is not None:
        needle = render(expect.body_contains, **values)
        if needle not in body:
            return f"{where}: body does not contain {needle!r}{_snippet(response)}"
    if expect.body_regex is not None and not re.search(render(expect.body_regex, **values), body):
        return f"{where}: body does not match /{expect.body_regex}/{_snippet(response)}"
    if expect.json_fields:
        try:
            document = response.json()
        except ValueError:
            return f"{where}: body is not JSON{_snippet(response)}"
        for path, expected in expect.json_fields.items():
            if isinstance(expected, str):
                expected = render(expected, **values)
            found, actual = _dig(document, path)
            if not found:
                return f"{where}: JSON field {path!r} is missing"
            if actual != expected:
                return f"{where}: JSON field {path!r} is {actual!r}, expected {expected!r}"
    for name, expected in expect.headers.items():
        expected = render(expected, **values)
        actual = response.headers.get(name)
        if actual is None or expected not in actual:
            return f"{where}: header {name} is {actual!r}, expected it to contain {expected!r}"
    if expect.max_latency is not None and latency > expect.max_latency:
        return f"{where}: answered in {latency * 1000:.0f} ms, limit {expect.max_latency * 1000:.0f} ms"
    return None


def _dig(document: Any, path: str) -> tuple[bool, Any]:
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def _one_or_list(values: list[int]) -> str:
    return str(values[0]) if len(values) == 1 else " or ".join(map(str, values))


def _snippet(response: httpx.Response) -> str:
    text = " ".join(response.text.split())[:120]
    return f" (body: {text!r})" if text else ""


def run_until_passing(
    check: SmokeCheck,
    base_url: str,
    values: dict[str, str],
    *,
    consecutive: int,
    interval: float,
    deadline: float,
    request_timeout: float,
    kind: str = "smoke",
    label: str = "preview",
    failure_limit: int | None = None,
    same_failure_limit: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> CheckResult:
    """Retry with backoff until `consecutive` passes in a row; fail at `deadline`, after `failure_limit`
    failures (through the live URL every failure is seen by users, so it must not retry for long), or after
    `same_failure_limit` identical failures in a row (a steady failure does not heal: do not wait out the deadline)."""
    started = time.monotonic()
    attempts, streak, delay, last_failure = 0, 0, interval, "no attempt before the deadline"
    failures = same = 0

    def failed(detail: str) -> CheckResult:
        return CheckResult(name=check.name, kind=kind, target=label, passed=False, attempts=attempts,
                           duration=time.monotonic() - started, detail=detail)

    with httpx.Client(timeout=request_timeout, follow_redirects=False) as client:
        while True:
            attempts += 1
            failure = probe(client, check, base_url, values)
            if failure is None:
                streak, same = streak + 1, 0
                if streak >= consecutive:
                    return CheckResult(
                        name=check.name, kind=kind, target=label, passed=True, attempts=attempts,
                        duration=time.monotonic() - started, detail=f"passed {streak}x in a row",
                    )
                pause = min(interval, 0.2)
            else:
                same = same + 1 if failure == last_failure else 1
                if same == 1:
                    log(f"{check.name}: {failure} (retrying)")
                streak, last_failure = 0, failure
                pause, delay = delay, min(delay * 2, MAX_BACKOFF)
                failures += 1
                if same_failure_limit is not None and same >= same_failure_limit:
                    return failed(f"{failure} ({same} times in a row)")
                if failure_limit is not None and failures >= failure_limit:
                    return failed(f"{failure} ({failures} failures)")
            if CANCEL.requested:  # in a worker thread (concurrent checks): stop; the main thread raises
                return failed("cancelled")
            if time.monotonic() >= deadline:
                return failed(last_failure if failure is not None
                              else f"only {streak} of {consecutive} successes in a row before the deadline")
            CANCEL.wait(min(pause, max(0.0, deadline - time.monotonic())))


def run_all(checks: list[T], run_one: Callable[[T], CheckResult]) -> list[CheckResult]:
    """Run checks concurrently; results in the configured order."""
    if not checks:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(checks))) as pool:
        # A cancellation interrupts the wait here; the workers see it too and end after their request.
        return list(pool.map(run_one, checks))


def hold(
    checks: list[SmokeCheck],
    base_url: str,
    values: dict[str, str],
    *,
    window: float,
    interval: float,
    request_timeout: float,
    label: str = "live",
    also: dict[str, str] | None = None,
) -> list[CheckResult]:
    """Every check must pass on every round for `window` seconds; the first failure ends it."""
    started = time.monotonic()
    end = started + window
    rounds = 0
    clients = {c.name: httpx.Client(timeout=request_timeout) for c in checks}
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(checks)))) as pool:
            while True:
                rounds += 1
                failures = list(pool.map(lambda c: probe(clients[c.name], c, base_url, values, also), checks))
                if any(failures) or time.monotonic() + interval >= end:
                    break
                CANCEL.wait(interval)
    finally:
        for client in clients.values():
            client.close()
    duration = time.monotonic() - started
    return [
        CheckResult(
            name=c.name, kind="verify", target=label, passed=failure is None, attempts=rounds, duration=duration,
            detail=failure or f"passed {rounds} rounds over {duration:.1f}s",
        )
        for c, failure in zip(checks, failures)
    ]
