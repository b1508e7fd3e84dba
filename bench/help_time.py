#!/usr/bin/env python3
"""Wall time of `bluegreen --help` through the venv's console script, against the 0.3 s target.

    .venv/bin/python bench/help_time.py [--runs 20] [--json]

One untimed run first warms the page cache; then the median of --runs runs. Each run is
a fresh process, as a user or a CI step sees it. Exit code 1 when the median misses the target.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 0.3


def console_script() -> str:
    beside_python = Path(sys.executable).parent / "bluegreen"  # the venv's entry point, not a system one
    found = str(beside_python) if beside_python.exists() else shutil.which("bluegreen")
    if not found:
        sys.exit("help_time: the bluegreen console script is not installed (pip install -e .)")
    return found


def time_once(argv: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"help_time: {' '.join(argv)} exited {done.returncode}: {done.stderr.decode(errors='replace')[-300:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, choices=range(1, 201), metavar="N", help="timed runs (default 20)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    argv = [console_script(), "--help"]
    time_once(argv)  # warm-up, not counted
    times = [time_once(argv) for _ in range(args.runs)]
    median = statistics.median(times)
    met = median < TARGET_S
    if args.json:
        print(json.dumps({"command": "bluegreen --help", "runs": args.runs, "median_s": median, "min_s": min(times),
                          "max_s": max(times), "target_s": TARGET_S, "met": met}, indent=2))
    else:
        print(f"bluegreen --help: median {median:.3f} s over {args.runs} runs (min {min(times):.3f} s, "
              f"max {max(times):.3f} s); target < {TARGET_S} s: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
