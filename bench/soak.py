#!/usr/bin/env python3
"""Soak: many deploy/rollback cycles of the local target under keep-alive load, then look for leaks.

    .venv/bin/python bench/soak.py [--cycles 200] [--connections 20] [--sample-every 20] [--history-limit 10]

A copy of examples/local/bluegreen.yml in a temp dir (free ports, `scale_down_delay: never`, no test
suite, one smoke check, a short verify window: a cycle is a few CLI calls and a process start). The
example app runs as both colours behind the real Caddy from the venv. `bluegreen deploy --version N`
(a new version on the idle colour, then the switch) and `bluegreen rollback` (the switch back) run
--cycles times while load goes through the live URL: wrk over keep-alive connections (or the httpx
fallback of switch_under_load.py) plus a recorder that notes each failed request with its time.

The soak passes when:
  - no request failed (wrk's non-2xx and socket errors, the recorder's errors);
  - no process leaked: during the run exactly one Caddy and one process per colour exist, no
    `bluegreen` CLI lingers, and after `bluegreen down` nothing of this run is left;
  - Caddy (same pid throughout) did not grow: open file descriptors (/proc/PID/fd) by at most
    --max-fd-growth, resident memory (VmRSS) by at most --max-rss-growth percent, from the end of
    cycle 1 (the first cycle starts green and fills Caddy's pool to it: set-up, not growth) to the end;
    sampled then, every --sample-every cycles and at the end, under load;
  - the state directory is bounded: history.json has at most history_limit entries and its file
    count does not grow. Its size is printed; the colours' logs are append-only (one line per start)
    and shown apart.
Exit code 0 when all hold, 1 when one does not (or on an error), 2 on bad arguments, 130 on Ctrl-C.

Only 127.0.0.1. Every loop is bounded in count and time (--max-seconds); every process the soak
starts is stopped at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from switch_under_load import (
    HOST, BenchError, Cli, LoadGenerator, Processes, Recorder, Sample, find_wrk, free_listen_ports, log, write_config,
)

ENVIRONMENT = "production"  # the example config's one environment
WARM_UP = 3.0  # load runs this long before the first sample, so Caddy's pools are filled


# --- what we look at: processes, Caddy's fds and memory, the state directory ----------------------


def our_processes(work: Path, app_ports: set[int]) -> dict[str, list[int]]:
    """Live processes of this run by kind: Caddy and `bluegreen` name a path in `work`; an app its port."""
    found: dict[str, list[int]] = {"caddy": [], "app": [], "bluegreen": []}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # gone meanwhile, or a kernel thread
        if state == "Z":
            continue
        ours = any(str(work) in arg for arg in argv)
        if ours and Path(argv[0]).name == "caddy":
            found["caddy"].append(int(entry.name))
        elif ours and any("bluegreen" in arg for arg in argv):
            found["bluegreen"].append(int(entry.name))
        elif any(arg.endswith("app.py") for arg in argv) and "--port" in argv:
            port = argv[argv.index("--port") + 1] if argv.index("--port") + 1 < len(argv) else ""
            if port.isdigit() and int(port) in app_ports:
                found["app"].append(int(entry.name))
    return found


def counts(processes: dict[str, list[int]]) -> dict[str, int]:
    return {kind: len(pids) for kind, pids in processes.items()}


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS in /proc/{pid}/status")


@dataclass
class ResourceSample:
    cycle: int
    caddy_pid: int
    fds: int
    rss_kib: int
    state_files: int
    state_bytes: int
    log_bytes: int  # the colours' and Caddy's logs, inside state_bytes
    history_entries: int


def sample(cycle: int, caddy_pid: int, state_dir: Path) -> ResourceSample:
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    try:
        history = len(json.loads((state_dir / "history.json").read_text()))
    except FileNotFoundError:
        history = 0
    return ResourceSample(
        cycle=cycle, caddy_pid=caddy_pid, fds=fd_count(caddy_pid), rss_kib=rss_kib(caddy_pid),
        state_files=len(files), state_bytes=sum(p.stat().st_size for p in files),
        log_bytes=sum(p.stat().st_size for p in files if p.suffix == ".log"), history_entries=history,
    )


# --- failed requests, each with its time ---------------------------------------------------------


@dataclass
class Failure:
    at: float  # wall clock
    error: str
    during: str  # the CLI command in flight, e.g. "cycle 17 rollback"


class FailureRecorder(Recorder):
    """The switch bench's recorder, keeping only a count of requests and every failure with its time."""

    def __init__(self, url: str, connections: int) -> None:
        super().__init__(url, connections)
        self.requests = 0
        self.failures: list[Failure] = []
        self.during = "warm-up"

    def note(self, sample: Sample, error: str | None) -> None:
        self.requests += 1
        if error:
            self.errors[error] += 1
            if len(self.failures) < 10_000:  # bounded, even if everything fails
                self.failures.append(Failure(sample.t, error, self.during))


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Soak:
    cycles_done: int = 0
    cycle_seconds: list[float] = field(default_factory=list)
    processes_before: dict[str, int] = field(default_factory=dict)
    processes_during: dict[str, int] = field(default_factory=dict)  # after the last cycle, before `down`
    processes_after: dict[str, int] = field(default_factory=dict)
    samples: list[ResourceSample] = field(default_factory=list)
    load_requests: int = 0
    load_failed: int = 0
    load_detail: str = ""
    recorder: FailureRecorder | None = None
    duration: float = 0.0


def soak_config(work: Path, history_limit: int) -> tuple[Path, set[int], str]:
    """switch_under_load's config, made fast: no test suite, one smoke check, a short verify."""
    proxy, blue, green = free_listen_ports(3)  # green restarts on its port every cycle
    path = write_config(work, proxy, blue, green)
    config = yaml.safe_load(path.read_text())
    config.pop("test_suite", None)
    config["smoke"] = {"timeout": "30s", "interval": "0.1s", "consecutive_successes": 1,
                       "checks": [{"name": "version", "path": "/version", "expect": {"body_contains": "{version}"}}]}
    config["verify"] = {"consecutive_successes": 1, "window": "0.2s", "interval": "0.1s"}
    config["history_limit"] = history_limit
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, {blue, green}, f"http://{HOST}:{proxy}/"


async def soak(args: argparse.Namespace, work: Path, procs: Processes, cleanups: list, result: Soak) -> None:
    config, app_ports, url = soak_config(work, args.history_limit)
    state_dir = work / ".bluegreen" / ENVIRONMENT
    cli = Cli(config, procs)
    cleanups.append(cli.down)
    result.processes_before = counts(our_processes(work, app_ports))
    log(f"soak: deploy version 1 ({url}, {args.cycles} cycles, history_limit {args.history_limit})")
    await cli.run("deploy", "--version", "1")

    started = time.monotonic()
    load = LoadGenerator(url, args.connections, args.wrk, args.max_seconds)
    result.recorder = recorder = FailureRecorder(url, args.recorder_connections)
    await load.start(procs)
    recorder.start()
    try:
        await asyncio.sleep(WARM_UP)
        caddy = our_processes(work, app_ports)["caddy"]
        if len(caddy) != 1:
            raise BenchError(f"expected one Caddy of this run, found {len(caddy)}")
        result.samples.append(sample(0, caddy[0], state_dir))
        for cycle in range(1, args.cycles + 1):
            began = time.monotonic()
            for command in (("deploy", "--version", str(cycle + 1)), ("rollback",)):
                recorder.during = f"cycle {cycle} {command[0]}"
                await cli.run(*command)
            result.cycle_seconds.append(time.monotonic() - began)
            result.cycles_done = cycle
            if cycle == 1 or cycle % args.sample_every == 0 or cycle == args.cycles:
                now = our_processes(work, app_ports)["caddy"]
                result.samples.append(sample(cycle, now[0] if now else -1, state_dir))
                s = result.samples[-1]
                log(f"soak: {cycle}/{args.cycles} cycles, {time.monotonic() - started:.0f}s; Caddy {s.fds} fds, "
                    f"{s.rss_kib / 1024:.1f} MiB; state {s.state_files} files, {s.state_bytes:,} B")
        recorder.during = "cool-down"
        await asyncio.sleep(1.0)  # the last switch's tail
    finally:  # the figures so far also when a cycle failed
        await recorder.stop()
        figures = await load.stop(procs)
        result.duration = time.monotonic() - started
        result.load_requests = figures.requests + sum(figures.socket_errors.values())
        result.load_failed = figures.failed
        result.load_detail = ", ".join(
            [f"non-2xx {figures.non_2xx}"] + [f"{k} {v}" for k, v in figures.socket_errors.items() if v]
        )
    result.processes_during = counts(our_processes(work, app_ports))
    cleanups.remove(cli.down)
    cli.down()
    deadline = time.monotonic() + 10  # `down` waits for each stop; this only covers a slow /proc
    while any(counts(our_processes(work, app_ports)).values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    result.processes_after = counts(our_processes(work, app_ports))


# --- figures -------------------------------------------------------------------------------------


def baseline(result: Soak) -> ResourceSample:
    """The sample after cycle 1: the first cycle creates green's files and Caddy's pool to green,
    which is set-up, not growth (cycle 0, before any switch, is printed for reference)."""
    return next(s for s in result.samples if s.cycle == 1)


def verdict(result: Soak, args: argparse.Namespace) -> list[str]:
    """What failed; empty when the soak passed."""
    reasons = []
    if result.cycles_done < args.cycles:
        reasons.append(f"only {result.cycles_done} of {args.cycles} cycles ran")
    failed = result.load_failed + sum(result.recorder.errors.values() if result.recorder else [])
    if failed:
        reasons.append(f"{failed} failed requests")
    if result.processes_during != {"caddy": 1, "app": 2, "bluegreen": 0}:
        reasons.append(f"processes after the cycles: {result.processes_during} (expected caddy 1, app 2, bluegreen 0)")
    if any(result.processes_after.values()):
        reasons.append(f"processes left after `bluegreen down`: {result.processes_after}")
    if len(result.samples) >= 2:
        first, last = baseline(result), result.samples[-1]
        if {s.caddy_pid for s in result.samples} != {first.caddy_pid}:
            reasons.append("Caddy was restarted during the soak (its pid changed)")
        if last.fds - first.fds > args.max_fd_growth:
            reasons.append(f"Caddy's open fds grew by {last.fds - first.fds} (> {args.max_fd_growth})")
        growth = (last.rss_kib - first.rss_kib) / first.rss_kib * 100
        if growth > args.max_rss_growth:
            reasons.append(f"Caddy's RSS grew by {growth:.1f}% (> {args.max_rss_growth:g}%)")
        if last.state_files > first.state_files:
            reasons.append(f"the state directory's files grew from {first.state_files} to {last.state_files}")
        if max(s.history_entries for s in result.samples) > args.history_limit:
            reasons.append(f"history.json exceeded history_limit {args.history_limit}")
    return reasons


def print_figures(result: Soak, args: argparse.Namespace, reasons: list[str]) -> None:
    recorder = result.recorder
    recorder_failed = sum(recorder.errors.values()) if recorder else 0
    tool = "wrk" if args.wrk else "httpx"
    print(f"soak: {result.cycles_done} deploy/rollback cycles of the local target; load: {tool}, "
          f"{args.connections} keep-alive connections, plus a recorder on {args.recorder_connections}; 127.0.0.1 only")
    print("\nseries (cycle: Caddy fds, Caddy RSS, state dir files / bytes (logs), history entries; "
          "growth is from cycle 1)")
    for s in result.samples:
        print(f"  {s.cycle:>5}: {s.fds:>4} fds  {s.rss_kib / 1024:>6.1f} MiB  {s.state_files:>3} files  "
              f"{s.state_bytes:>9,} B ({s.log_bytes:,} B logs)  history {s.history_entries}")
    rows: list[tuple[str, str]] = []
    if result.cycle_seconds:
        c = result.cycle_seconds
        rows.append(("cycle time (median / max)", f"{statistics.median(c):.2f} s / {max(c):.2f} s"))
    requests = result.load_requests + (recorder.requests if recorder else 0)
    rows += [
        ("duration", f"{result.duration:.0f} s"),
        ("requests", f"{requests:,} ({requests / result.duration:,.0f}/s)" if result.duration else f"{requests:,}"),
        ("failed requests", f"{result.load_failed + recorder_failed} (load: {result.load_detail or '-'}; recorder: "
                            f"{recorder_failed})"),
        ("processes before / after cycles / after down",
         " / ".join(", ".join(f"{k} {v}" for k, v in p.items()) or "-"
                    for p in (result.processes_before, result.processes_during, result.processes_after))),
    ]
    if len(result.samples) >= 2:
        first, last = baseline(result), result.samples[-1]
        fds = [s.fds for s in result.samples if s.cycle]
        rss = [s.rss_kib / 1024 for s in result.samples if s.cycle]
        log_per_cycle = (last.log_bytes - first.log_bytes) / max(1, last.cycle - 1)
        rows += [
            ("Caddy fds start / end (min-max)", f"{first.fds} / {last.fds} ({min(fds)}-{max(fds)}), "
                                                f"growth {last.fds - first.fds:+d}"),
            ("Caddy RSS start / end (min-max)", f"{rss[0]:.1f} / {rss[-1]:.1f} MiB ({min(rss):.1f}-{max(rss):.1f}), "
                                                f"growth {(rss[-1] - rss[0]) / rss[0] * 100:+.1f}%"),
            ("state dir files start / end", f"{first.state_files} / {last.state_files}"),
            ("state dir bytes start / end, without logs", f"{first.state_bytes - first.log_bytes:,} / "
                                                          f"{last.state_bytes - last.log_bytes:,}"),
            ("logs (append-only) start / end, per cycle",
             f"{first.log_bytes:,} / {last.log_bytes:,} B, {log_per_cycle:.0f} B"),
            ("history entries (max) / limit", f"{max(s.history_entries for s in result.samples)} / {args.history_limit}"),
        ]
    print()
    for name, value in rows:
        print(f"  {name:<46} {value}")
    if recorder and recorder.failures:
        print(f"\nfailed requests seen by the recorder ({len(recorder.failures)} kept):")
        for f in recorder.failures[:50]:
            print(f"  {datetime.fromtimestamp(f.at).isoformat(timespec='milliseconds')}  {f.error}  during {f.during}")
    criteria = (f"0 failed requests, no leaked processes, Caddy fds +<= {args.max_fd_growth}, RSS +<= "
                f"{args.max_rss_growth:g}%, state files not growing, history <= {args.history_limit}")
    print(f"\ncriteria ({criteria}): {'met' if not reasons else 'NOT met: ' + '; '.join(reasons)}")


# --- entry point ---------------------------------------------------------------------------------


async def soak_and_clean(args: argparse.Namespace, work: Path, procs: Processes, cleanups: list, result: Soak) -> None:
    try:
        await soak(args, work, procs, cleanups, result)
    finally:
        await procs.stop()
        while cleanups:
            cleanups.pop()()


def main() -> int:
    args = parse_args()
    if not 1 <= args.cycles <= 10_000 or not 1 <= args.connections <= 1000 or args.sample_every < 1:
        print("soak: --cycles must be 1..10000, --connections 1..1000, --sample-every >= 1", file=sys.stderr)
        return 2
    args.wrk = None if args.no_wrk else find_wrk(allow_install=True)
    if not args.wrk:
        log("wrk is not available: load by an async httpx client in a separate process")
    procs, cleanups, result = Processes(), [], Soak()
    work = Path(tempfile.mkdtemp(prefix="bluegreen-soak-"))
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    code = 0
    try:
        asyncio.run(asyncio.wait_for(soak_and_clean(args, work, procs, cleanups, result), args.max_seconds))
    except BenchError as exc:
        print(f"soak: error: {exc}", file=sys.stderr)
        code = 1
    except TimeoutError:
        print(f"soak: error: not done within --max-seconds {args.max_seconds:g}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 130
    finally:  # the backstop, when the loop could not clean up (a second Ctrl-C)
        procs.stop_all()
        while cleanups:
            cleanups.pop()()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    reasons = verdict(result, args)
    print_figures(result, args, reasons)
    return 1 if code or reasons else 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200, help="deploy/rollback cycles (default 200)")
    parser.add_argument("--connections", type=int, default=20, help="keep-alive connections of the load (default 20)")
    parser.add_argument("--recorder-connections", type=int, default=4, help="connections of the recorder (default 4)")
    parser.add_argument("--sample-every", type=int, default=20, help="sample Caddy and the state dir every N cycles")
    parser.add_argument("--history-limit", type=int, default=10, help="history_limit of the config (default 10)")
    parser.add_argument("--max-fd-growth", type=int, default=10, help="allowed growth of Caddy's fds (default 10)")
    parser.add_argument("--max-rss-growth", type=float, default=20, help="allowed growth of Caddy's RSS, %% (default 20)")
    parser.add_argument("--no-wrk", action="store_true", help="load with the async httpx client even if wrk exists")
    parser.add_argument("--max-seconds", type=float, default=3600, help="give up after this long (default 3600)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs) for a post-mortem")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(main())
