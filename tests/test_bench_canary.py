"""bench/canary.py runs end to end: a real HAProxy under real load, the split counted per answer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "canary.py"


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=180,
                          env=os.environ.copy())


def test_the_canary_bench_measures_each_step_of_a_weighted_router(tmp_path):
    out = tmp_path / "canary.json"
    run = run_bench("--routers", "haproxy", "--steps", "10,100", "--requests-per-step", "1000", "--json", str(out))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "| haproxy | 10 |" in run.stdout and "| haproxy | 100 |" in run.stdout
    [result] = json.loads(out.read_text())
    assert result["met"] is True and [s["weight"] for s in result["steps"]] == [10, 100]
    for step in result["steps"]:
        assert step["requests"] >= 1000 and step["failed"] == 0
        assert abs(100 * step["green"] / step["requests"] - step["weight"]) <= 2


def test_bad_arguments_exit_2_in_one_line():
    for args, says in ((["--routers", "caddy"], "--routers: unknown or unweighted kind(s) caddy"),
                       (["--steps", "1,x"], "--steps: '1,x' is not"), (["--steps", "150"], "0..100")):
        run = run_bench(*args)
        assert run.returncode == 2 and says in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
