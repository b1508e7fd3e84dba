"""Deploy time of the servers target for 1, 4 and 8 app hosts, behind one HAProxy reached over SSH.

The hosts are Docker containers with a real OpenSSH server (tests/servers/lab.py), the app runs in command
mode (a process per colour), and bluegreen runs as users run it: `python -m bluegreen deploy` in a fresh
process, key and known_hosts from the environment. For each size: a first deploy, then --rounds deploys that
each switch colours, timed from the command's start to its exit; the report's phases say where the time went.
The baseline is the same deploy to 1 host: hosts are worked on at once, so 8 hosts should take at most 2x
(--max-ratio) its time. Exit 1 when a size misses that, or when a deploy fails.

    python bench/servers.py [--sizes 1,4,8] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "src")]

from servers.lab import Release, get_version, start_lab  # noqa: E402  (the test hosts)

PHASES = ("deploy", "wait ready", "smoke checks", "switch", "verify live")


def phase_times(report: dict) -> dict[str, float]:
    """Seconds per phase of interest (a phase's name may carry a colour: 'wait ready green')."""
    out: dict[str, float] = {}
    for phase in report["phases"]:
        for name in PHASES:
            if phase["name"].startswith(name):
                out[name] = out.get(name, 0.0) + phase["duration"]
    return out


def bench_size(hosts: int, rounds: int) -> dict:
    lab = start_lab(apps=hosts, lb=True)
    try:
        with tempfile.TemporaryDirectory() as work:
            release = Release(lab, Path(work), "bench", lab.apps, lab.lb.ssh_address)
            lab.haproxy(lab.lb, lab.apps, release.ports, app=release.app)
            first = release.cli("deploy", "--version", "0")
            if first.returncode != 0:
                raise SystemExit(f"{hosts} hosts: the first deploy failed: {first.stderr.strip()[-400:]}")
            walls, phases = [], []
            for version in range(1, rounds + 1):
                started = time.monotonic()
                done = release.cli("deploy", "--version", str(version), "--report", "report.json")
                walls.append(time.monotonic() - started)
                if done.returncode != 0 or get_version(lab.lb) != str(version):
                    raise SystemExit(f"{hosts} hosts: deploy {version} failed: {done.stderr.strip()[-400:]}")
                phases.append(phase_times(json.loads((Path(work) / "report.json").read_text())))
    finally:
        lab.close()
    return {
        "hosts": hosts,
        "deploy_s": [round(w, 3) for w in walls],
        "median_s": round(statistics.median(walls), 3),
        "phases_median_s": {name: round(statistics.median(p.get(name, 0.0) for p in phases), 3) for name in PHASES},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,4,8", help="numbers of app hosts (the first is the baseline)")
    parser.add_argument("--rounds", type=int, default=3, help="timed deploys per size (after a first one)")
    parser.add_argument("--max-ratio", type=float, default=2.0, help="the largest size against the first, at most")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = []
    for hosts in sizes:
        print(f"... {hosts} app host(s) + 1 load balancer", file=sys.stderr, flush=True)
        results.append(bench_size(hosts, args.rounds))
    base = results[0]["median_s"]
    print(f"| app hosts | deploy (median of {args.rounds}) | ratio to {sizes[0]} host | "
          + " | ".join(PHASES) + " |")
    print("| ---: | ---: | ---: | " + " | ".join("---:" for _ in PHASES) + " |")
    for r in results:
        r["ratio"] = round(r["median_s"] / base, 2)
        print(f"| {r['hosts']} | {r['median_s']:.2f} s | {r['ratio']:.2f}x | "
              + " | ".join(f"{r['phases_median_s'][name]:.2f} s" for name in PHASES) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    worst = results[-1]
    if worst["ratio"] > args.max_ratio:
        print(f"expectation NOT met: {worst['hosts']} hosts took {worst['ratio']}x the time of {sizes[0]} "
              f"(at most {args.max_ratio}x)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
