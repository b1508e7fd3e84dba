"""Detached local processes that outlive the CLI call: spawn, find again by pid file, stop.

A pid file holds the pid and the process's start time (from /proc), so a pid
reused by the system after a reboot is never mistaken for ours.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot; None when it is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; it only waits to be reaped
        return None
    return fields[19]  # field 22 of stat: start time in clock ticks since boot


def alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        child.poll()  # reap our own exited child, else it lingers as a zombie
    return start_time(pid) is not None


def spawn(argv: list[str], *, log_file: Path, env: dict[str, str], cwd: Path | None = None) -> int:
    """Start `argv` in its own session (so it survives us and can be stopped as a group)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        child = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    _children[child.pid] = child  # reaped by `alive` checks through poll(), so no zombies while we run
    return child.pid


_children: dict[int, subprocess.Popen] = {}


def exit_code(pid: int) -> int | None:
    """The exit code of a child we spawned in this process, if it has exited."""
    child = _children.get(pid)
    return child.poll() if child else None


def write_pid(path: Path, pid: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{pid} {start_time(pid) or ''}\n")


def read_pid(path: Path, *, running: bool = True) -> int | None:
    """The pid in `path` if that very process still runs (`running=False`: whether or not it does)."""
    try:
        pid_text, _, started = path.read_text().strip().partition(" ")
        pid = int(pid_text)
    except (OSError, ValueError):
        return None
    if not running:
        return pid
    now = start_time(pid) if alive(pid) else None
    return pid if now is not None and (not started or started == now) else None


def stop(pid: int, grace: float = 5.0) -> bool:
    """SIGTERM the process group, SIGKILL it after `grace` seconds; True if it was running."""
    if not alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if pid in _children:
        _children.pop(pid).wait(timeout=5)
    return True


def tail(path: Path, lines: int = 3) -> str:
    try:
        content = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in content[-lines:]) or "(empty log)"
