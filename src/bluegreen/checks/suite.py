"""The user's test suite, run against the idle colour before any traffic reaches it."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable
from xml.etree import ElementTree as ET

from ..cancel import CANCEL
from ..config import TestSuite, render
from ..report import CheckResult
from .container_suite import run_container_suite


def run_test_suite(
    suite: TestSuite,
    *,
    base_dir: Path,
    env: dict[str, str],
    values: dict[str, str],
    log: Callable[[str], None],
) -> CheckResult:
    """Run the suite with a timeout, streaming its output; a non-zero exit or a timeout fails it.
    A process here, or a container of `test_suite.image` on the Docker engine."""
    cwd = base_dir / suite.working_directory if suite.working_directory else base_dir
    command = [suite.command] if isinstance(suite.command, str) else suite.command
    command = [render(part, **values) for part in command]
    argv = ["/bin/sh", "-c", command[0]] if suite.shell else command
    junit = (cwd / suite.junit) if suite.junit else None
    if junit is not None:
        junit.unlink(missing_ok=True)  # a stale file from an earlier run must not pass for this one
    if suite.image:
        image = render(suite.image, **values)
        code, timed_out, tail, duration = run_container_suite(
            suite, cwd=cwd.resolve(), command=argv, env=env, image=image, log=log)
    else:
        ran = run_process(argv, cwd, {**os.environ, **suite.env, **env}, suite.timeout, log)
        if isinstance(ran, str):
            return CheckResult(name="test suite", kind="test_suite", target="preview", passed=False, detail=ran)
        code, timed_out, tail, duration = ran

    tests = failures = None
    junit_note = ""
    if junit is not None:
        if junit.exists():
            tests, failures, junit_note = _read_junit(junit)
        else:
            junit_note = f"; no JUnit file at {suite.junit}"
    passed, detail = exit_detail(code, timed_out, tail, suite.timeout)
    return CheckResult(
        name="test suite", kind="test_suite", target="preview", passed=passed, attempts=1, duration=duration,
        detail=detail + junit_note, tests=tests, failures=failures,
    )


def exit_detail(code: int | None, timed_out: bool, tail: list[str], timeout: float) -> tuple[bool, str]:
    """(passed, one line): a timeout, or the exit code with the last line of output when it failed."""
    if timed_out:
        return False, f"timed out after {timeout:g}s"
    if code != 0:
        last = next((line for line in reversed(tail) if line.strip()), "")
        return False, f"exited with code {code}" + (f": {last.strip()[:200]}" if last else "")
    return True, "exited with code 0"


def run_process(
    argv: list[str], cwd: Path, env: dict[str, str], timeout: float, log: Callable[[str], None],
) -> tuple[int | None, bool, list[str], float] | str:
    """Run a command in its own process group, streaming its output to `log`: (exit code, timed out, the last
    20 lines, duration), or why it could not start. A cancellation stops the whole group and propagates."""
    started = time.monotonic()
    try:
        with CANCEL.held():  # started and then stopped on cancellation, never left behind half-known
            proc = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace",
                start_new_session=True,  # its own process group: a timeout or a cancel stops its children too
                preexec_fn=_die_with_parent,
            )
    except OSError as exc:
        return f"cannot start {argv[0]!r}: {exc.strerror}"
    tail: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            log(line)
            tail.append(line)
            del tail[:-20]

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        CANCEL.check()
        code = proc.wait(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        stop_group(proc, grace=0)
        code, timed_out = proc.wait(), True
    except BaseException:  # cancelled: the suite's whole process group ends with the run
        with CANCEL.held():
            stop_group(proc, grace=STOP_GRACE)
        raise
    reader.join(timeout=5)
    return code, timed_out, tail, time.monotonic() - started


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it when bluegreen dies, so a run killed outright (SIGKILL,
    a vanished runner) leaves no test suite running against the idle colour (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


STOP_GRACE = 2.0  # SIGTERM, then SIGKILL: well inside GitHub's 7.5 s between its cancel signals


def stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the process group, SIGKILL what is left of it after `grace` seconds."""
    if grace > 0:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # children that outlived the leader, or ignored SIGTERM
    except ProcessLookupError:
        pass
    proc.wait()


def _read_junit(path: Path) -> tuple[int | None, int | None, str]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return None, None, f"; unreadable JUnit file: {exc}"
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    try:
        tests = sum(int(s.get("tests", 0)) for s in suites)
        failures = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    except ValueError:  # a count that is not a number: the file is the suite's, its text is not ours to quote
        return None, None, "; unreadable JUnit file: a tests, failures or errors count is not a number"
    return tests, failures, f"; {tests} tests, {failures} failed"
