#!/usr/bin/env python3
"""The example's test suite: run by bluegreen against the idle colour before it gets traffic.

bluegreen sets BLUEGREEN_PREVIEW_URL (the idle colour only) and BLUEGREEN_VERSION.
A real project runs its own suite here (pytest, playwright, k6...); a non-zero exit
stops the release before the switch.
"""

import json
import os
import sys
import urllib.request

base = os.environ["BLUEGREEN_PREVIEW_URL"]
expected_version = os.environ["BLUEGREEN_VERSION"]
failures = 0


def check(name: str, ok: bool, detail: str = "") -> None:
    global failures
    print(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail and not ok else ''}")
    failures += not ok


def get(path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


status, body = get("/version")
check("GET /version answers 200", status == 200, f"status {status}")
check("the idle colour runs the new version", body.strip() == expected_version, f"got {body.strip()!r}")
status, body = get("/")
check("GET / answers JSON with the version", status == 200 and json.loads(body or "{}").get("version") == expected_version,
      f"status {status}, body {body[:80]!r}")
status, _ = get("/no-such-page")
check("unknown paths answer 404", status == 404, f"status {status}")
print(f"{4 - failures} passed, {failures} failed")
sys.exit(1 if failures else 0)
