"""The rule: processes and containers started by a test must be gone when the session ends.

At the start the controlling pytest puts a marker of its own, BLUEGREEN_TEST_SESSION=<uuid>, in its environment:
every process a test starts inherits it (the CLI, the apps and proxies the CLI daemonizes, act, xdist workers),
and keeps it when reparented, so /proc/<pid>/environ finds them all at the end. Containers have no such mark:
those created during the session (absent from the start's list) that are not exited or removed are the leaks.
After every fixture is torn down, whatever is left is listed, killed (process groups: SIGKILL; containers:
removed with force) and the run fails.

The Docker engine may be shared with another pytest session (another checkout on the machine): a container is
then not known to be ours, so with such a session running the new containers are listed, not removed, and do
not fail the run. The processes are always ours: they carry our marker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from github.support import SOCKET, docker_client

MARKER = "BLUEGREEN_TEST_SESSION"
GRACE = 5.0  # seconds a process or container may take to go after the last teardown (a SIGTERM'd app, `--rm`)
GONE = {"exited", "dead", "removing"}  # container states that run nothing
LABEL = "dev.bluegreen.test-session"


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # xdist: the controller alone marks and checks; workers inherit the mark
        config.pluginmanager.register(LeakCheck(), "bluegreen-leakcheck")


class LeakCheck:
    def __init__(self) -> None:
        self.previous = os.environ.get(MARKER)  # restored at the end: a pytest run in-process by a test
        self.marker = f"{MARKER}={uuid.uuid4().hex}"
        os.environ[MARKER] = self.marker.split("=", 1)[1]
        self.containers_before = _container_ids()
        # A session run inside another one (pytester, in an xdist worker) cannot tell its containers from those the
        # outer session's other workers start meanwhile: it counts only the containers labelled with its marker.
        self.label = f"{LABEL}={self.marker.split('=', 1)[1]}" if self.previous else None

    @pytest.hookimpl(trylast=True)  # after the runner's own sessionfinish, which tears down what is still set up
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        deadline = time.monotonic() + GRACE
        while True:
            processes, containers = self._processes(), self._containers()
            if not (processes or containers) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        lines: list[str] = []
        # Sessions of ours: this one, and the one that runs it (pytester in an xdist worker: its sibling workers).
        ours = {self.marker} | ({f"{MARKER}={self.previous}"} if self.previous else set())
        if containers and self.label is None and (shared := _other_pytest_sessions(ours)):
            lines += [f"containers created during the session, not removed: another pytest session (pid "
                      f"{', '.join(map(str, shared))}) shares the Docker engine and may own them",
                      *(f"  container {c}" for c in containers.values())]
            containers = {}
        if processes or containers:
            lines += ["processes and containers started by a test must be gone when the session ends; left, now "
                      "killed:", *(f"  process {pid}: {command}" for pid, command in processes.items()),
                      *(f"  container {c}" for c in containers.values())]
            _kill(processes)
            _remove(containers)
            if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        _report(session, lines)

    def pytest_unconfigure(self) -> None:
        if self.previous is None:
            os.environ.pop(MARKER, None)
        else:
            os.environ[MARKER] = self.previous

    def _processes(self) -> dict[int, str]:
        """pid: command line of every live process carrying our marker, but pytest itself and its ancestors."""
        mine, marker = _ancestors(), self.marker.encode()
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in mine:
                continue
            try:  # a zombie's environ reads empty: it has exited
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    found[int(entry.name)] = _describe(int(entry.name))
            except OSError:  # gone meanwhile, or not ours to read
                continue
        return found

    def _containers(self) -> dict[str, str]:
        """id: 'name (image, state)' of every container created since the start that is not exited."""
        if self.containers_before is None:
            return {}
        try:
            with docker_client() as client:
                filters = {"filters": json.dumps({"label": [self.label]})} if self.label else {}
                listed = client.get("/containers/json", params={"all": 1, **filters}).json()
        except httpx.HTTPError:  # the engine went away: nothing to check, nothing to remove
            return {}
        return {c["Id"]: f"{c['Names'][0].lstrip('/')} (image {c['Image']}, {c['State']})" for c in listed
                if c["Id"] not in self.containers_before and c["State"] not in GONE}


def _container_ids() -> set[str] | None:
    """The containers that exist now; None without a Docker engine (no container check then)."""
    if not os.path.exists(SOCKET):
        return None
    try:
        with docker_client() as client:
            return {c["Id"] for c in client.get("/containers/json", params={"all": 1}).json()}
    except httpx.HTTPError:
        return None


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _ancestors() -> set[int]:
    pids: set[int] = set()
    pid = os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            pid = int(_stat(pid)[1])
        except OSError:
            break
    return pids


def _describe(pid: int, width: int = 160) -> str:
    """The command line, shortened, and the folder it runs in: a test's tmp_path names the test."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        folder = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "?"
    command = command if len(command) <= width else command[:width - 3] + "..."
    return f"{command} (in {folder})"


def _other_pytest_sessions(markers: set[str]) -> list[int]:
    """Running pytest processes outside our own tree (another checkout's tests): they may own new containers.
    Only in our pid namespace: a pytest in a container (a workflow's test step) is no session of the machine."""
    mine, namespace = _ancestors(), os.readlink("/proc/self/ns/pid")
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            if os.readlink(entry / "ns" / "pid") != namespace:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if {m.encode() for m in markers} & set((entry / "environ").read_bytes().split(b"\0")):
                continue  # started by us: an xdist worker, a pytester run
        except OSError:
            continue
        if any(re.fullmatch(r"(-m)?py\.?test", Path(arg).name) for arg in argv[:3]):
            found.append(int(entry.name))
    return found


def _kill(processes: dict[int, str]) -> None:
    """SIGKILL each leaked process's group (what it started too), or the process alone if the group is pytest's."""
    ours = {int(_stat(pid)[2]) for pid in _ancestors()}  # pytest's group and its callers': never killed
    for pid in processes:
        try:
            group = os.getpgid(pid)
            if group in ours:
                os.kill(pid, signal.SIGKILL)
            else:
                os.killpg(group, signal.SIGKILL)
        except OSError:  # gone meanwhile
            continue
        try:
            os.waitpid(pid, 0)  # our own child: reap it, no zombie
        except ChildProcessError:
            pass


def _remove(containers: dict[str, str]) -> None:
    if not containers:
        return
    with docker_client() as client:
        for container_id in containers:
            client.delete(f"/containers/{container_id}", params={"force": "true"})


def _report(session: pytest.Session, lines: list[str]) -> None:
    if not lines:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print("\n".join(lines), file=sys.stderr)
        return
    reporter.ensure_newline()
    reporter.section("leaks", red=True)
    for line in lines:
        reporter.write_line(line, red=line.startswith(" "))
