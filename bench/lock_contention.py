#!/usr/bin/env python3
"""Lock contention: how long a deploy that meets a held deploy lock takes to exit 3.

    .venv/bin/python bench/lock_contention.py [--runs 6] [--rounds 5] [--json]

The figure tests/test_concurrency.py printed and bounded at 3 s, until a busy machine took 3.36 s (issue 22,
item 6): the test now only fails a locked-out run that waited for the lock; the figure is measured here.

soak.py's config (a copy of examples/local/bluegreen.yml in a temp dir, free ports, the example app behind
the real Caddy, one smoke check, a short verify), with a test suite that waits for a gate file. Each round
starts --runs deploys at the same moment (a barrier across threads, as the test does): one takes the lock and
waits at the gate, the others exit 3 naming it. Each run is timed from its process start to its exit. Once
the others have exited, the gate opens, the winner finishes, and the next round starts.

Prints the locked-out runs' exit times (median and max, over all rounds and per round). Exit code 0 when every
round had one winner and every other run exited 3 while the winner held the lock, 1 otherwise.

Only 127.0.0.1. Every process the bench starts is stopped at the end (`bluegreen down`), on error too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from soak import soak_config
from switch_under_load import VENV_BIN, BenchError, log

LOCKED = 3  # the CLI's exit code for a held lock (README, exit codes)
WAIT_FOR_LOSERS = 60.0  # the gate opens after this at the latest: a run still going then waited for the lock
CLI_TIMEOUT = 180.0


@dataclass
class Run:
    argv: list[str]
    code: int | None = None
    stderr: str = ""
    took: float = 0.0


def gated_config(work: Path, gate: Path) -> Path:
    path, _, _ = soak_config(work, history_limit=50)
    config = yaml.safe_load(path.read_text())
    wait = f"import os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.05)"
    config["test_suite"] = {"command": ["{python}", "-c", wait], "timeout": f"{WAIT_FOR_LOSERS + 60:g}s"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_together(binary: str, config: Path, runs: list[Run]) -> list[threading.Thread]:
    """Every run at the same moment; each thread times its own process, from start to exit."""
    barrier = threading.Barrier(len(runs))

    def go(run: Run) -> None:
        barrier.wait()
        started = time.monotonic()
        process = subprocess.Popen([binary, *run.argv, "-c", str(config)], cwd=config.parent, text=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _, run.stderr = process.communicate(timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            _, run.stderr = process.communicate()
        run.code, run.took = process.returncode, time.monotonic() - started

    threads = [threading.Thread(target=go, args=(run,), daemon=True) for run in runs]
    for thread in threads:
        thread.start()
    return threads


def one_round(binary: str, config: Path, gate: Path, n: int, round_no: int) -> list[float]:
    """The locked-out runs' exit times of one round; BenchError unless exactly one run held the lock."""
    gate.unlink(missing_ok=True)
    reports = config.parent / "reports"
    reports.mkdir(exist_ok=True)
    runs = [Run(["deploy", "--version", f"r{round_no}-{i}", "--report", str(reports / f"{round_no}-{i}.json")])
            for i in range(n)]
    threads = start_together(binary, config, runs)
    deadline = time.monotonic() + WAIT_FOR_LOSERS
    try:
        while sum(not t.is_alive() for t in threads) < n - 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        losers = [r for r, t in zip(runs, threads) if not t.is_alive()]  # exited while the winner held the lock
    finally:
        gate.touch()  # the winner may finish
        for thread in threads:
            thread.join(CLI_TIMEOUT)
    if len(losers) != n - 1:
        raise BenchError(f"round {round_no}: {n - len(losers)} runs kept going while one held the lock")
    for run in losers:
        if run.code != LOCKED:
            raise BenchError(f"round {round_no}: a run exited {run.code}, not {LOCKED} (locked):\n{run.stderr[-600:]}")
    (winner,) = [r for r in runs if r not in losers]
    if winner.code != 0:
        raise BenchError(f"round {round_no}: the run that held the lock exited {winner.code}:\n{winner.stderr[-600:]}")
    return [r.took for r in losers]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=6, choices=range(2, 33), metavar="N",
                        help="deploys started together per round (default 6, as the test)")
    parser.add_argument("--rounds", type=int, default=5, choices=range(1, 51), metavar="N", help="rounds (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    binary = str(VENV_BIN / "bluegreen") if (VENV_BIN / "bluegreen").exists() else shutil.which("bluegreen")
    if not binary:
        sys.exit("lock_contention: the bluegreen console script is not installed (pip install -e .)")
    work = Path(tempfile.mkdtemp(prefix="bluegreen-lock-"))
    gate = work / "gate"
    config = gated_config(work, gate)
    rounds: list[list[float]] = []
    try:
        for round_no in range(1, args.rounds + 1):
            rounds.append(one_round(binary, config, gate, args.runs, round_no))
            log(f"round {round_no}: {args.runs - 1} locked-out deploys exited {LOCKED} after "
                f"{min(rounds[-1]):.2f}-{max(rounds[-1]):.2f} s")
    except BenchError as exc:
        print(f"lock_contention: {exc}", file=sys.stderr)
        return 1
    finally:
        gate.touch()
        subprocess.run([binary, "down", "-c", str(config)], cwd=work, timeout=60, check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(work, ignore_errors=True)

    times = [t for r in rounds for t in r]
    figures = {"runs_per_round": args.runs, "rounds": args.rounds, "locked_out_runs": len(times),
               "median_s": statistics.median(times), "max_s": max(times), "min_s": min(times),
               "per_round": [{"median_s": statistics.median(r), "max_s": max(r)} for r in rounds]}
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{len(times)} locked-out deploys ({args.runs} started together, {args.rounds} rounds): exit {LOCKED} "
              f"after median {figures['median_s']:.2f} s, max {figures['max_s']:.2f} s (min {figures['min_s']:.2f} s)")
        for i, r in enumerate(figures["per_round"], 1):
            print(f"  round {i}: median {r['median_s']:.2f} s, max {r['max_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
