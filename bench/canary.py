#!/usr/bin/env python3
"""Canary steps under load: does each weighted router send the configured share of requests to green?

    python bench/canary.py [--routers haproxy,envoy] [--requests-per-step 5000] [--connections 50] [--json out.json]

(bluegreen must be importable: the venv `make` installs, or PYTHONPATH=src.)

Per weighted router kind (default haproxy, envoy, traefik, nginx), in a temp dir and on free ports of
127.0.0.1 only, with bench/routers.py's parts (imported, not copied): its two colour backends (every answer
says its colour), the router built by `make_router` in manage: true (the real proxy), and its load client:
--connections kept-alive HTTP/1.1 connections through the live URL sending GET / back to back, recording
per response when it was sent and which colour answered. Here the load reports its count as it goes, so
each step lasts until it has --requests-per-step answers.

All to blue first, then, under the one load (the same kept-alive connections all along, as real clients
keep theirs across a canary step), `router.set_weights({blue: 100 - w, green: w}, deadline)` for each step
w in --steps (default 1, 5, 25, 50, 100: green's share). A request counts for a step when it was sent after
set_weights returned and before the next step began; requests in flight during a change are left out of
the split (they may fairly go either way) but not out of the failures: a failed request (connection error,
timeout, non-2xx, an answer from neither colour) counts against the step being set.

Expectation (issue 13): at each step the observed percent of green answers is within +-2 percentage points
of the step's weight, and 0 requests failed; exit 0 when every built router meets it, 1 otherwise, 2 for
bad arguments. Over 5,000 requests a step a per-request random choice at p = 0.5 has a standard deviation
of 0.7 pp, so +-2 pp is about 3 sigma for a random splitter and easy for a deterministic one.

Per connection or per request? A proxy that chose the backend once per client connection (TCP mode,
sticky sessions) would pin each of the 50 kept-alive connections to one colour: 1% could then only be 0%
or 2%, and a step would not move connections opened before it. What each router does, read from its
configuration and confirmed by this bench (see the table: every step lands on its weight on connections
opened before the first step):
- haproxy: `mode http`, the split backend balances `roundrobin` with runtime weights (`set server ...
  weight`): the server is chosen per request, so kept-alive client connections follow every step;
  roundrobin is deterministic (smooth weighted), so the observed share is close to exact.
- envoy: `runtime_fraction` on the route is drawn per request (random): kept-alive connections follow;
  the share is binomial around the weight.
- traefik: the weighted service is a deterministic weighted round robin (earliest deadline first), per
  request: close to exact.
- nginx: `js_set` computes the upstream per request with Math.random: binomial around the weight.
None pins by connection, so no step needs to close client connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import routers as rb  # noqa: E402  bench/routers.py: backends, load client, router construction

KINDS = ("haproxy", "envoy", "traefik", "nginx")  # the routers that split traffic (Router.weighted)
STEPS = (1, 5, 25, 50, 100)
MAX_DEVIATION = 2.0  # percentage points
MIN_REQUESTS = 5000
STEP_TIMEOUT = 120.0  # seconds a step may take to gather its requests
REPORT_INTERVAL = 0.05  # seconds between the load's count reports


class CountingLoad(rb.Load):
    """bench/routers.py's load, also writing how many answers it has (to `<out>.count`) as it goes."""

    def __init__(self, url: str, connections: int, out: Path) -> None:
        super().__init__(url, connections)
        self.count_file = out.with_suffix(".count")

    async def run(self, max_seconds: float) -> None:
        reporter = asyncio.create_task(self.report())
        await super().run(max_seconds)
        reporter.cancel()

    async def report(self) -> None:
        tmp = self.count_file.with_suffix(".count.tmp")
        while True:
            tmp.write_text(str(len(self.codes)))
            os.replace(tmp, self.count_file)  # the bench never reads half a number
            await asyncio.sleep(REPORT_INTERVAL)


def answers_so_far(out: Path) -> int:
    try:
        return int(out.with_suffix(".count").read_text())
    except (OSError, ValueError):
        return 0


@dataclass
class Step:
    weight: int  # green's share
    start: float  # monotonic: set_weights was called
    set_at: float  # ... returned
    end: float = 0.0  # the next step began
    requests: int = 0
    green: int = 0
    failed: int = 0

    @property
    def observed(self) -> float | None:
        return 100 * self.green / self.requests if self.requests else None

    @property
    def deviation(self) -> float | None:
        observed = self.observed
        return None if observed is None else observed - self.weight


@dataclass
class Result:
    router: str
    status: str = "ok"  # ok | not built | error: <reason>
    steps: list[Step] = field(default_factory=list)
    set_weights_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    met: bool | None = None
    reasons: list[str] = field(default_factory=list)


def bench_router(kind: str, args: argparse.Namespace, work: Path) -> Result:
    result = Result(kind)
    work.mkdir(parents=True)
    children: list[subprocess.Popen] = []
    router = None
    try:
        ports = {c: rb.free_port() for c in rb.COLOURS}
        for colour, port in ports.items():
            children.append(subprocess.Popen([sys.executable, rb.__file__, "--serve", str(port), colour],
                                             start_new_session=True))
            rb.wait_listening(port, children[-1])
        router = rb.build_router(kind, f"{rb.HOST}:{rb.free_port()}", {c: [f"{rb.HOST}:{p}"] for c, p in ports.items()},
                                 work / "state")
        if router is None:
            result.status = "not built"
            return result
        router.check()  # manage: true: writes the proxy's config and starts it
        router.switch("blue", time.monotonic() + rb.SWITCH_DEADLINE)
        samples = work / "samples"
        load = subprocess.Popen([sys.executable, __file__, "--load", router.live_url, "--connections",
                                 str(args.connections), "--out", str(samples), "--max-seconds",
                                 str(len(args.steps) * STEP_TIMEOUT + 60)], start_new_session=True)
        children.append(load)
        time.sleep(rb.SETTLE)  # every connection open and serving blue before the first step
        for weight in args.steps:
            if load.poll() is not None:
                raise RuntimeError(f"the load process ended early (exit {load.returncode})")
            start = time.monotonic()
            router.set_weights({"blue": 100 - weight, "green": weight}, start + rb.SWITCH_DEADLINE)
            step = Step(weight, start, time.monotonic())
            result.steps.append(step)
            result.set_weights_ms.append(rb.ms(step.set_at - start))
            # The count file lags by up to one report interval: a baseline read two intervals later already
            # holds every answer sent before set_weights returned, and the requests in flight then (one per
            # connection, which may fairly go either way) are made up for by the margin.
            time.sleep(2 * REPORT_INTERVAL)
            wanted = answers_so_far(samples) + args.requests_per_step + 2 * args.connections
            timer = time.monotonic() + STEP_TIMEOUT
            while answers_so_far(samples) < wanted:
                if time.monotonic() > timer:
                    raise RuntimeError(f"step {weight}%: fewer than {args.requests_per_step} answers in "
                                       f"{STEP_TIMEOUT:g} s")
                time.sleep(0.05)
            if (read := router.weights()) != {"blue": 100 - weight, "green": weight}:
                raise RuntimeError(f"{router.name} reads back {read} during the step to green {weight}%")
        last = time.monotonic()
        load.send_signal(signal.SIGINT)
        if load.wait(30) != 0:
            raise RuntimeError(f"the load process exited {load.returncode}")
        sent, _received, codes, result.errors = rb.read_samples(samples)
        count(result, sent, codes, last)
        judge(result, args.requests_per_step)
    except Exception as exc:  # one router's failure is a row of the table, and the bench goes on
        result.status = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        result.met = False
    finally:
        if router is not None:
            try:
                router.stop()
            except Exception as exc:  # noqa: BLE001 - reported, the other children still need stopping
                rb.log(f"{kind}: stop failed: {exc}")
        for child in children:
            rb.stop_child(child)
    return result


def count(result: Result, sent: array, codes: bytes, last: float) -> None:
    """Each answer to the step it was sent in: the split from those sent after set_weights returned, the
    failures from all of them (a change that breaks requests fails its step)."""
    steps = result.steps
    for i, step in enumerate(steps):
        step.end = steps[i + 1].start if i + 1 < len(steps) else last
    for t, code in zip(sent, codes):
        step = next((s for s in reversed(steps) if s.start <= t), None)
        if step is None or t >= step.end:
            continue  # before the first step (all blue) or after the last
        if code >= rb.FAILED:
            step.failed += 1
        elif t >= step.set_at:
            step.requests += 1
            step.green += code == 1


def judge(result: Result, requests_per_step: int) -> None:
    reasons = []
    for step in result.steps:
        if step.requests < requests_per_step:
            reasons.append(f"step {step.weight}%: {step.requests} requests (need >= {requests_per_step})")
        if step.deviation is not None and abs(step.deviation) > MAX_DEVIATION:
            reasons.append(f"step {step.weight}%: observed {step.observed:.2f}% green")
        if step.failed:
            reasons.append(f"step {step.weight}%: {step.failed} failed requests")
    result.met, result.reasons = not reasons, reasons


def table(results: list[Result]) -> str:
    lines = ["| router | step weight | requests | observed % green | deviation (pp) | failed |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.router} | {r.status} | | | | |")
            continue
        for s in r.steps:
            observed = "-" if s.observed is None else f"{s.observed:.2f}"
            deviation = "-" if s.deviation is None else f"{s.deviation:+.2f}"
            lines.append(f"| {r.router} | {s.weight} | {s.requests:,} | {observed} | {deviation} | {s.failed} |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", default=",".join(KINDS), help=f"comma-separated kinds (default {','.join(KINDS)})")
    parser.add_argument("--steps", default=",".join(map(str, STEPS)),
                        help=f"green's share at each step, percent (default {','.join(map(str, STEPS))})")
    parser.add_argument("--requests-per-step", type=int, default=MIN_REQUESTS,
                        help=f"answers counted per step, at least (default {MIN_REQUESTS})")
    parser.add_argument("--connections", type=int, default=50, help="kept-alive connections of the load (default 50)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (proxy configs and logs)")
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # the load process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600, help=argparse.SUPPRESS)
    return parser.parse_args()


def bad_arguments(args: argparse.Namespace) -> str | None:
    kinds = [k.strip() for k in args.routers.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        return (f"--routers: unknown or unweighted kind(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(KINDS)}")
    args.routers = kinds
    try:
        args.steps = [int(w) for w in args.steps.split(",") if w.strip()]
    except ValueError:
        return f"--steps: {args.steps!r} is not a comma-separated list of percents"
    if not args.steps or any(not 0 <= w <= 100 for w in args.steps):
        return "--steps: each step is a percent, 0..100"
    if not 100 <= args.requests_per_step <= 1_000_000 or not 1 <= args.connections <= 1000:
        return "--requests-per-step must be 100..1000000, --connections 1..1000"
    return None


def main() -> int:
    args = parse_args()
    if args.load:
        load = CountingLoad(args.load, args.connections, Path(args.out))
        asyncio.run(load.run(args.max_seconds))
        load.save(Path(args.out))
        return 0
    if why := bad_arguments(args):
        print(f"bench: {why}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally blocks, which stop the proxies
    work = Path(tempfile.mkdtemp(prefix="bluegreen-bench-canary-"))
    results = []
    try:
        for kind in args.routers:
            rb.log(f"{kind}: steps {args.steps} under {args.connections} connections")
            started = time.monotonic()
            results.append(bench_router(kind, args, work / kind))
            rb.log(f"{kind}: {results[-1].status} ({time.monotonic() - started:.0f} s)")
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            rb.log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"canary steps {', '.join(map(str, args.steps))} (green's %), >= {args.requests_per_step:,} requests a step, "
          f"under {args.connections} kept-alive connections (127.0.0.1)\n")
    print(table(results))
    print(f"\nobserved: green answers among requests sent after set_weights returned; expectation: within "
          f"+-{MAX_DEVIATION:g} pp of the weight, 0 failed")
    medians = ", ".join(f"{r.router} {sorted(r.set_weights_ms)[len(r.set_weights_ms) // 2]:.1f} ms"
                        for r in results if r.set_weights_ms)
    if medians:
        print(f"set_weights median (until the router reports the split applied): {medians}")
    return rb.verdict(results, args.json, need_one=True)


if __name__ == "__main__":
    sys.exit(main())
