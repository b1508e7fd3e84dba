"""Running one hook: a command (as the test suite is run: its own process group, a timeout, stopped with the run)
or an HTTP call whose JSON body is the payload. Either way the outcome is a HookRun, one line of detail; only a
cancellation propagates (the engine decides what it means at that point)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import httpx

from .checks.suite import exit_detail, run_process
from .config import Hook, render, shown_url
from .payload import environment
from .report import HookRun


def run_hook(hook: Hook, point: str, data: dict[str, Any], *, base_dir: Path, log: Callable[[str], None]) -> HookRun:
    started = time.monotonic()
    if hook.http is not None:
        status, detail = _call(hook, data)
    else:
        status, detail = _command(hook, data, base_dir, log)
    return HookRun(point=point, name=hook.label, status=status, detail=detail, duration=time.monotonic() - started)


def _command(hook: Hook, data: dict[str, Any], base_dir: Path, log: Callable[[str], None]) -> tuple[Any, str]:
    values = {"version": data.get("version") or "", "app": data["app"], "environment": data["environment"]}
    command = [hook.command] if isinstance(hook.command, str) else list(hook.command or [])
    command = [render(part, **values) for part in command]
    argv = ["/bin/sh", "-c", command[0]] if hook.shell else command
    cwd = base_dir / hook.working_directory if hook.working_directory else base_dir
    ran = run_process(argv, cwd, {**os.environ, **hook.env, **environment(data)}, hook.timeout, log)
    if isinstance(ran, str):  # could not start
        return "failed", ran
    code, timed_out, tail, _ = ran
    passed, detail = exit_detail(code, timed_out, tail, hook.timeout)
    return ("succeeded" if passed else "timed_out" if timed_out else "failed"), detail


def _call(hook: Hook, data: dict[str, Any]) -> tuple[Any, str]:
    http = hook.http
    assert http is not None
    body = None if http.method == "GET" else data
    try:
        with httpx.Client(timeout=hook.timeout) as client:
            response = client.request(http.method, http.url, headers=http.headers, json=body)
    except httpx.TimeoutException:
        return "timed_out", f"no answer from {shown_url(http.url)} within {hook.timeout:g}s"
    except httpx.HTTPError as exc:
        return "failed", f"{shown_url(http.url)} is unreachable: {type(exc).__name__}"
    detail = f"HTTP {response.status_code} from {shown_url(http.url)}"
    if response.is_success:
        return "succeeded", detail
    text = " ".join(response.text.split())[:200]
    return "failed", detail + (f": {text}" if text else "")
