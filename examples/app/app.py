#!/usr/bin/env python3
"""A tiny versioned HTTP app for the bluegreen demo and tests (standard library only).

    python app.py --port 8081 --version 2 [--colour green] [--fail health|smoke|live] [--fail-after SECONDS]

GET /healthz -> 200 "ok" once started; GET /version -> the version; GET / -> a JSON greeting
with version and colour. Switches make a version fail, for the failure paths:
  --fail health      /healthz answers 503 for ever (never becomes ready)
  --fail smoke       every path but /healthz answers 500 (fails the smoke checks)
  --fail live        answers 500 to requests that came through a proxy (X-Forwarded-For):
                     passes every check on the preview URL, breaks once live
  --fail-after N     every path but /healthz answers 500 once N seconds have passed
  --error-rate P     GET / answers 500 to P percent of the requests that came through a proxy: a release
                     that passes its checks and degrades under real traffic (for metric analysis)
A version ending in "+fail-health", "+fail-smoke" or "+fail-live" turns the same switch on, and one
ending in "+errors-P" the error rate, so one config can deploy a broken release:
`bluegreen deploy --version 3+fail-live`.

GET /metrics: Prometheus text format, `http_requests_total{path, code, version, colour}`, for the
metric-analysis tests (written by hand: the app stays standard library only, so it runs in any image).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import signal
import threading
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--version", required=True)
    parser.add_argument("--colour", default="")
    parser.add_argument("--fail", choices=["health", "smoke", "live"])
    parser.add_argument("--fail-after", type=float)
    parser.add_argument("--error-rate", type=float, default=0.0)
    args = parser.parse_args()
    fail = args.fail
    for mode in ("health", "smoke", "live"):
        if args.version.endswith(f"+fail-{mode}"):
            fail = mode
    error_rate = args.error_rate
    if match := re.search(r"\+errors-(\d+(?:\.\d+)?)$", args.version):
        error_rate = float(match.group(1))
    started = time.monotonic()
    counts: dict[tuple[str, int], int] = {}  # (path, status) -> requests answered
    counting = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, like a real app server
        # Headers and body go out as two small writes: without TCP_NODELAY, Nagle + delayed ACK
        # stall each response ~40 ms.
        disable_nagle_algorithm = True
        server_version = "bluegreen-example-app"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                return self.reply(200, metrics(), "text/plain; version=0.0.4")
            if self.path == "/healthz":
                return self.reply(503, "starting failed\n") if fail == "health" else self.reply(200, "ok\n")
            broken = (
                fail == "smoke"
                or (fail == "live" and "X-Forwarded-For" in self.headers)
                or (args.fail_after is not None and time.monotonic() - started > args.fail_after)
            )
            if broken:
                return self.reply(500, "internal error\n")
            if self.path == "/version":
                return self.reply(200, args.version + "\n")
            if self.path == "/":
                if error_rate and "X-Forwarded-For" in self.headers and random.uniform(0, 100) < error_rate:
                    return self.reply(500, "internal error (--error-rate)\n")
                body = json.dumps({"app": "example", "version": args.version, "colour": args.colour})
                return self.reply(200, body + "\n", "application/json")
            self.reply(404, "not found\n")

        def reply(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            if self.path != "/metrics":
                with counting:
                    key = (self.path if self.path in ("/", "/healthz", "/version") else "other", status)
                    counts[key] = counts.get(key, 0) + 1
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-App-Version", args.version)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *values: object) -> None:
            pass  # quiet: the load benchmark sends thousands of requests

    def metrics() -> str:
        labels = f'version="{args.version}",colour="{args.colour}"'
        with counting:
            lines = [f'http_requests_total{{path="{path}",code="{code}",{labels}}} {n}' for (path, code), n in counts.items()]
        return "# TYPE http_requests_total counter\n" + "".join(line + "\n" for line in sorted(lines))

    # The default backlog (5) drops connections when a proxy opens many at once after a switch.
    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    # SIGTERM (scale-down, long after traffic left this colour): exit 0 like a well-behaved server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"example app {args.version} ({args.colour or 'no colour'}) on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
