"""The servers target's lock and history: files on a host changed by compare-and-swap under flock.

Run here through LocalShell (the same shell commands the SSH hosts run, on this machine), so the race
tests can start many contenders at once; tests/servers/test_servers_e2e.py runs the store over SSH."""

from __future__ import annotations

import json
import os
import threading
from datetime import timedelta
from pathlib import Path, PurePosixPath

import pytest

from bluegreen.errors import LockHeldError, TargetError
from bluegreen.remote import LocalShell
from bluegreen.state.base import LockInfo, Release, utcnow
from bluegreen.state.shell import ShellStateStore


def store(directory: Path) -> ShellStateStore:
    shell = LocalShell()
    return ShellStateStore(lambda: shell, PurePosixPath(directory), lock_ttl=120)


def race(contenders: int, attempt) -> list:
    """Start `contenders` threads at one barrier; each returns what `attempt()` returned or raised."""
    barrier = threading.Barrier(contenders)
    results: list = [None] * contenders

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except (LockHeldError, TargetError) as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(contenders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_lock_and_history_round_trip(tmp_path):
    s = store(tmp_path / "state")
    info = s.acquire_lock("run-1", ttl=60)
    assert s.read_lock().holder == "run-1" and info.pid == os.getpid()
    s.note_progress("run-1", "deploy", "wait ready green")
    assert s.read_lock().phase == "wait ready green"
    s.record(Release(id="r1", action="deploy", outcome="succeeded", version="1", colour="blue"), limit=2)
    s.record(Release(id="r2", action="deploy", outcome="succeeded", version="2", colour="green"), limit=2)
    s.record(Release(id="r3", action="rollback", outcome="succeeded", version="1", colour="blue"), limit=2)
    assert [r.id for r in s.history()] == ["r3", "r2"]  # newest first, at most `limit`
    with pytest.raises(LockHeldError, match="held by run-1"):
        store(tmp_path / "state").acquire_lock("run-2", ttl=60)
    s.release_lock("run-1")
    assert s.read_lock() is None
    assert not list((tmp_path / "state").glob("*.tmp.*"))  # no temp file left behind


@pytest.mark.parametrize("contenders", [8])
def test_exactly_one_of_many_simultaneous_runs_takes_the_lock(tmp_path, contenders):
    results = race(contenders, lambda i: store(tmp_path / "state").acquire_lock(f"run-{i}", ttl=60))
    winners = [r for r in results if isinstance(r, LockInfo)]
    assert len(winners) == 1, results
    assert all(isinstance(r, LockHeldError) for r in results if r is not winners[0]), results
    assert store(tmp_path / "state").read_lock().holder == winners[0].holder


def test_exactly_one_run_takes_over_an_expired_lock(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    past = utcnow() - timedelta(minutes=10)
    dead = LockInfo(holder="killed-run", acquired_at=past, renewed_at=past, expires_at=past + timedelta(minutes=2),
                    host="another-runner", pid=1)
    (state / "lock.json").write_text(dead.model_dump_json())
    stores = [store(state) for _ in range(8)]
    results = race(8, lambda i: stores[i].acquire_lock(f"run-{i}", ttl=60))
    winners = [i for i, r in enumerate(results) if isinstance(r, LockInfo)]
    assert len(winners) == 1, results
    assert stores[winners[0]].taken_over.holder == "killed-run"  # the pipeline records the killed run
    assert json.loads((state / "lock.json").read_text())["holder"] == f"run-{winners[0]}"


def test_concurrent_history_writes_lose_nothing(tmp_path):
    race(6, lambda i: store(tmp_path / "state").record(
        Release(id=f"r{i}", action="deploy", outcome="succeeded"), limit=50))
    assert sorted(r.id for r in store(tmp_path / "state").history()) == [f"r{i}" for i in range(6)]


def test_a_state_dir_that_cannot_be_written_is_one_line_naming_host_and_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(TargetError) as caught:
        store(blocker / "state").acquire_lock("run-1", ttl=60)
    message = str(caught.value)
    assert "\n" not in message and f"localhost:{blocker / 'state'}" in message and "state_dir" in message
