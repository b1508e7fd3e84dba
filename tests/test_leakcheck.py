"""The session-end leak check (tests/leakcheck.py), on inner pytest runs in a subprocess: a test that leaves a
process or a container fails the run, which names it and kills it; a test that cleans up passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from bluegreen.proc import start_time
from github.support import docker_client, need_docker

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Runs `source` as a test file in a fresh pytest process with only the leak check loaded."""
    monkeypatch.setenv("PYTHONPATH", str(TESTS))  # where `-p leakcheck` is found

    def run(source: str) -> pytest.RunResult:
        pytester.makepyfile(test_inner=source)
        return pytester.runpytest_subprocess("-p", "leakcheck", "-p", "no:cacheprovider", timeout=120)

    return run


def test_a_process_a_test_leaves_fails_the_run_and_is_killed(inner, pytester: pytest.Pytester):
    result = inner("""
        import subprocess
        from pathlib import Path

        def test_leaves_a_process():
            sleep = subprocess.Popen(["sleep", "60"], start_new_session=True)  # its own group, as a daemon
            Path("sleep.pid").write_text(str(sleep.pid))
        """)
    pid = int((pytester.path / "sleep.pid").read_text())
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*started by a test must be gone when the session ends*",
                                 f"*process {pid}: sleep 60 (in {pytester.path})*", "*1 passed*"])
    assert start_time(pid) is None  # killed, not merely named


def test_a_run_that_stops_what_it_started_passes(inner):
    result = inner("""
        import subprocess

        def test_stops_its_process():
            sleep = subprocess.Popen(["sleep", "60"], start_new_session=True)
            sleep.kill()
            sleep.wait()
        """)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "leaks" not in result.stdout.str()


def test_a_container_a_test_leaves_fails_the_run_and_is_removed(inner, pytester: pytest.Pytester):
    need_docker()
    result = inner("""
        import os
        import subprocess
        from pathlib import Path

        def test_leaves_a_container():
            # Labelled with the inner session's marker: the only containers a session nested in another one counts.
            label = "dev.bluegreen.test-session=" + os.environ["BLUEGREEN_TEST_SESSION"]
            run = subprocess.run(["docker", "run", "-d", "--label", label, "python:3.12-slim", "sleep", "60"],
                                 capture_output=True, text=True, check=True)
            Path("container.id").write_text(run.stdout.strip())
        """)
    container = (pytester.path / "container.id").read_text()
    with docker_client() as client:
        left = client.get(f"/containers/{container}/json").status_code != 404
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*started by a test must be gone when the session ends*",
                                 "*container * (image python:3.12-slim, running)*"])
    assert not left
