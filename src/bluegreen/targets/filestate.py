"""Lock and history as files in a state directory beside the router (local and docker targets).

Every read-modify-write happens under an flock on `.mutex`, so two processes
never both take the lock; the lock file itself says who holds it and until when,
so an expired lock (a killed run) can be taken over.

A state file that cannot be read or written is a one-line TargetError (exit 1 before the
switch) naming the file and what to do, never a traceback. A lock file that is there but
unreadable counts as held, by an unknown run, until its expiry: files are only ever
replaced atomically, so a corrupt one was not torn by a killed run but written by someone
else or damaged, and ignoring it would let a second deploy in. It expires like any lock
that is not renewed (its age from the file's mtime), and --force-unlock removes it at once.
"""

from __future__ import annotations

import errno
import fcntl
import json
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from pydantic import TypeAdapter, ValidationError

from ..errors import LockHeldError, TargetError
from ..report import write_atomic
from .base import LockInfo, Release, StateStore, utcnow

_HISTORY = TypeAdapter(list[Release])

_FIXES = {
    errno.ENOSPC: "free space on that file system",
    errno.EDQUOT: "free space on that file system",
    errno.EROFS: "set state_dir to a writable directory",
    errno.EACCES: "make it writable for this user, or set state_dir elsewhere",
    errno.EPERM: "make it writable for this user (is it immutable? lsattr), or set state_dir elsewhere",
    errno.ENOTDIR: "a file stands where a directory is expected: move it away, or set state_dir elsewhere",
    errno.EEXIST: "a file stands where a directory is expected: move it away, or set state_dir elsewhere",
    errno.EISDIR: "a directory stands where a file is expected: move it away",
}


@contextmanager
def state_io(path: Path, doing: str) -> Iterator[None]:
    """Turn an OSError on a state file into one line naming the file, the cause and the fix."""
    try:
        yield
    except OSError as exc:
        fix = _FIXES.get(exc.errno or 0)
        raise TargetError(
            f"cannot {doing} {path}: {exc.strerror or exc}" + (f" ({fix})" if fix else "")
        ) from None


def parse_error(exc: ValueError) -> str:
    """The first problem of a file that is not what we wrote, in a few words."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where + ': ' if where else ''}{first['msg']}"
    return str(exc).split("\n")[0]


class FileStateStore(StateStore):
    def __init__(self, directory: Path, lock_ttl: float = 900) -> None:
        self.dir = directory
        self.lock_file = directory / "lock.json"
        self.history_file = directory / "history.json"
        self.lock_ttl = lock_ttl  # how long an unreadable lock file counts as held (timeouts.lock)

    @contextmanager
    def _mutex(self) -> Iterator[None]:
        mutex = self.dir / ".mutex"
        with state_io(mutex, "open the state lock"):
            self.dir.mkdir(parents=True, exist_ok=True)
            handle = open(mutex, "a")
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_lock(self) -> LockInfo | None:
        with state_io(self.lock_file, "read"):
            try:
                raw = self.lock_file.read_bytes()
            except FileNotFoundError:
                return None
            try:
                return LockInfo.model_validate_json(raw)
            except ValueError as exc:
                mtime = datetime.fromtimestamp(self.lock_file.stat().st_mtime, timezone.utc)
                return LockInfo(
                    holder=f"an unknown run ({self.lock_file} is unreadable: {parse_error(exc)})",
                    acquired_at=mtime, renewed_at=mtime, expires_at=mtime + timedelta(seconds=self.lock_ttl),
                )

    def acquire_lock(self, holder: str, ttl: float) -> LockInfo:
        with self._mutex():
            current = self.read_lock()
            if current is not None and not current.expired() and current.holder != holder:
                raise LockHeldError(
                    f"the deploy lock is held by {current.holder} since {current.acquired_at:%Y-%m-%d %H:%M:%S} UTC "
                    f"(expires {current.expires_at:%H:%M:%S} UTC; --force-unlock removes it)"
                )
            now = utcnow()
            info = LockInfo(holder=holder, acquired_at=now, renewed_at=now, expires_at=now + timedelta(seconds=ttl))
            with state_io(self.lock_file, "write"):
                write_atomic(self.lock_file, info.model_dump_json())
            return info

    def renew_lock(self, holder: str, ttl: float) -> None:
        with self._mutex():
            current = self.read_lock()
            if current is None or current.holder != holder:
                raise TargetError(f"the deploy lock is no longer held by {holder}")
            now = utcnow()
            current.renewed_at, current.expires_at = now, now + timedelta(seconds=ttl)
            with state_io(self.lock_file, "write"):
                write_atomic(self.lock_file, current.model_dump_json())

    def release_lock(self, holder: str) -> None:
        with self._mutex():
            current = self.read_lock()
            if current is not None and current.holder == holder:
                with state_io(self.lock_file, "remove"):
                    self.lock_file.unlink(missing_ok=True)

    def force_unlock(self) -> LockInfo | None:
        with self._mutex():
            current = self.read_lock()
            with state_io(self.lock_file, "remove"):
                self.lock_file.unlink(missing_ok=True)
            return current

    def history(self) -> list[Release]:
        with state_io(self.history_file, "read"):
            try:
                raw = self.history_file.read_bytes()
            except FileNotFoundError:
                return []
        try:
            return _HISTORY.validate_json(raw)
        except ValueError as exc:
            raise TargetError(
                f"{self.history_file} is unreadable ({parse_error(exc)}): restore it, or move it aside to start "
                "an empty history (rollback then needs a new release first)"
            ) from None

    def record(self, release: Release, limit: int) -> None:
        with self._mutex():
            entries = [release, *self.history()][:limit]
            with state_io(self.history_file, "write"):
                write_atomic(self.history_file, json.dumps([json.loads(e.model_dump_json()) for e in entries], indent=2))
