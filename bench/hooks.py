#!/usr/bin/env python3
"""What a hook costs a release: deploys on the local target with, at before_switch, after_switch and after_verify, an
HTTP hook to a receiver on 127.0.0.1 and a command hook (`python -c`); the median and max of each kind's duration
as the report records it.

    PATH=/usr/sbin:$PATH .venv/bin/python bench/hooks.py [--deploys 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from conftest import LocalEnv, free_port  # noqa: E402
from test_hooks import Receiver, hooks_yaml  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploys", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-hooks-"))
    env = LocalEnv(dir=root, config=root / "bluegreen.yml", proxy_port=free_port(),
                   ports={"blue": free_port(), "green": free_port()}, environ={"HOOK_TOKEN": "bench-token-1234"})
    receiver = Receiver()
    durations: dict[str, list[float]] = {"HTTP": [], "command": []}
    try:
        env.write(test_suite="")
        if env.cli("deploy", "--version", "1").returncode != 0:
            raise SystemExit("the first deploy failed")
        env.write(hooks_yaml(receiver, points=["before_switch", "after_switch", "after_verify"]), test_suite="")
        for version in range(2, 2 + args.deploys):
            done = env.cli("deploy", "--version", str(version))
            if done.returncode != 0:
                raise SystemExit(f"deploy {version} failed: {done.stderr}")
            for hook in env.report()["hooks"]:
                durations["HTTP" if hook["name"].startswith("POST") else "command"].append(hook["duration"] * 1000)
    finally:
        env.cli("down")
        receiver.close()
    for kind, values in durations.items():
        print(f"{kind} hook: median {statistics.median(values):.1f} ms, max {max(values):.1f} ms ({len(values)} hooks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
