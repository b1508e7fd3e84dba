#!/usr/bin/env python3
"""`make demo`: a real blue-green release on this machine, step by step.

Deploys v1, then v2 to the idle colour (tested, smoke-checked, switched, verified),
shows `status`, rolls back, shows `status` again, and stops everything. Each step is
the CLI a user would type; between steps a request through the live URL shows which
version answers.
"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BLUEGREEN = str(Path(sys.executable).parent / "bluegreen")


def step(title: str, *args: str, expect: int = 0) -> None:
    print(f"\n\033[1m==> {title}\033[0m\n$ bluegreen {' '.join(args)}", flush=True)
    started = time.monotonic()
    code = subprocess.call([BLUEGREEN, *args])
    print(f"    ({time.monotonic() - started:.2f}s, exit {code})", flush=True)
    if code != expect:
        raise SystemExit(f"demo: `bluegreen {args[0]}` exited {code}, expected {expect}")


def live_answer(url: str) -> None:
    with urllib.request.urlopen(url + "/", timeout=5) as response:
        print(f"    GET {url}/ -> {response.read().decode().strip()}", flush=True)


def main() -> None:
    config = sys.argv[1] if len(sys.argv) > 1 else "examples/local/bluegreen.yml"
    live_url = "http://127.0.0.1:8100"
    c = ["-c", config]
    try:
        step("validate the config", "validate", *c)
        step("deploy v1 (the first release goes live on blue)", "deploy", *c, "--version", "1.0.0")
        live_answer(live_url)
        step("deploy v2 to the idle colour: test suite, smoke checks, switch, verify", "deploy", *c, "--version", "2.0.0")
        live_answer(live_url)
        step("status", "status", *c)
        step("roll back: one switch to the still-running v1", "rollback", *c)
        live_answer(live_url)
        step("status", "status", *c)
    finally:
        step("stop everything (and forget this demo's history)", "down", *c, "--purge")
    print("\ndemo done: v1 live, v2 deployed, tested and switched, then rolled back.")


if __name__ == "__main__":
    main()
