"""Lock, history and planned scale-downs as files in a state directory (local and docker runtimes; a
subclass keeps them in a Docker volume or on a host over SSH).

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
import shutil
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from pydantic import TypeAdapter, ValidationError

from ..errors import LockHeldError, TargetError
from ..report import write_atomic
from ..config import Colour
from .base import LockInfo, Release, ScaleDownPlan, StateStore, this_process, utcnow

_HISTORY = TypeAdapter(list[Release])
_PLANS = TypeAdapter(dict[Colour, ScaleDownPlan])
SCALE_DOWNS = "scale-down.json"
T = TypeVar("T")

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
    """The files live in a directory; a subclass may keep them elsewhere by overriding the storage
    methods (`_read`, `_write`, `_unlink`, `_modified`, `_mutex`), e.g. in a Docker volume."""

    def __init__(self, directory: Path, lock_ttl: float = 120) -> None:
        self.dir = directory
        self.lock_file = directory / "lock.json"
        self.history_file = directory / "history.json"
        self.lock_ttl = lock_ttl  # how long an unreadable lock file counts as held (timeouts.lock)
        super().__init__()

    # --- storage ---------------------------------------------------------------------------

    def _read(self, name: str) -> str | None:
        with state_io(self.dir / name, "read"):
            try:
                return (self.dir / name).read_bytes().decode("utf-8")
            except FileNotFoundError:
                return None
            except UnicodeDecodeError as exc:
                raise ValueError(f"not UTF-8 text at byte {exc.start}") from None

    def _write(self, name: str, text: str) -> None:
        with state_io(self.dir / name, "write"):
            write_atomic(self.dir / name, text)

    def _unlink(self, name: str) -> None:
        with state_io(self.dir / name, "remove"):
            (self.dir / name).unlink(missing_ok=True)

    def _modified(self, name: str) -> datetime | None:
        try:
            return datetime.fromtimestamp((self.dir / name).stat().st_mtime, timezone.utc)
        except OSError:
            return None

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

    def _transaction(self, body: Callable[[], T]) -> T:
        """Run `body` (reads, then writes) as one step no other process interleaves with: under the mutex here;
        a store without one (on another host) may instead retry `body` when a write finds the file changed."""
        with self._mutex():
            return body()

    # --- the lock and the history --------------------------------------------------------------

    def read_lock(self) -> LockInfo | None:
        try:
            text = self._read(self.lock_file.name)
            return LockInfo.model_validate_json(text) if text is not None else None
        except ValueError as exc:
            # Held by someone we cannot name, until it expires like any lock that is not renewed.
            since = self._modified(self.lock_file.name) or utcnow() - timedelta(seconds=self.lock_ttl)
            return LockInfo(
                holder=f"an unknown run ({self.lock_file} is unreadable: {parse_error(exc)})",
                acquired_at=since, renewed_at=since, expires_at=since + timedelta(seconds=self.lock_ttl),
            )

    def acquire_lock(self, holder: str, ttl: float) -> LockInfo:
        def take() -> LockInfo:
            current = self.read_lock()
            if current is not None and current.holder != holder:
                if not current.holder_gone():
                    raise LockHeldError(
                        f"the deploy lock is held by {current.holder} since {current.acquired_at:%Y-%m-%d %H:%M:%S} "
                        f"UTC ({current.where()}; expires {current.expires_at:%H:%M:%S} UTC unless renewed; "
                        "--force-unlock removes it)"
                    )
                self.taken_over = current
            now = utcnow()
            info = LockInfo(
                holder=holder, acquired_at=now, renewed_at=now, expires_at=now + timedelta(seconds=ttl), **this_process()
            )
            self._write(self.lock_file.name, info.model_dump_json())
            return info

        info = self._transaction(take)
        self.locked()
        return info

    def note_progress(self, holder: str, command: str, phase: str) -> None:
        def note() -> None:
            current = self.read_lock()
            if current is not None and current.holder == holder:
                current.command, current.phase = command, phase
                self._write(self.lock_file.name, current.model_dump_json())

        self._transaction(note)

    def renew_lock(self, holder: str, ttl: float) -> None:
        def renew() -> None:
            current = self.read_lock()
            if current is None or current.holder != holder:
                raise TargetError(f"the deploy lock is no longer held by {holder}")
            now = utcnow()
            current.renewed_at, current.expires_at = now, now + timedelta(seconds=ttl)
            self._write(self.lock_file.name, current.model_dump_json())

        self._transaction(renew)

    def release_lock(self, holder: str) -> None:
        def release() -> None:
            current = self.read_lock()
            if current is not None and current.holder == holder:
                self._unlink(self.lock_file.name)

        self._transaction(release)

    def force_unlock(self) -> LockInfo | None:
        def remove() -> LockInfo | None:
            current = self.read_lock()
            self._unlink(self.lock_file.name)
            return current

        return self._transaction(remove)

    def history(self) -> list[Release]:
        text = self._read_or_explain(self.history_file.name)
        if text is None:
            return []
        try:
            return _HISTORY.validate_json(text)
        except ValueError as exc:
            raise TargetError(
                f"{self.history_file} is unreadable ({parse_error(exc)}): restore it, or move it aside to start "
                "an empty history (rollback then needs a new release first)"
            ) from None

    def _read_or_explain(self, name: str) -> str | None:
        try:
            return self._read(name)
        except ValueError as exc:  # not text at all
            raise TargetError(f"{self.dir / name} is unreadable ({exc}): restore it, or move it aside") from None

    def record(self, release: Release, limit: int) -> None:
        def add() -> None:
            entries = [release, *self.history()][:limit]
            self._write(self.history_file.name, json.dumps([json.loads(e.model_dump_json()) for e in entries], indent=2))

        self._transaction(add)
        self.recorded(release)

    # --- planned scale-downs -----------------------------------------------------------------

    def scale_downs(self) -> dict[Colour, ScaleDownPlan]:
        try:
            return _PLANS.validate_json(self._read(SCALE_DOWNS) or "{}")
        except ValueError:
            return {}  # not what we wrote: the worst case is an idle colour left running

    def plan_scale_down(self, colour: Colour, plan: ScaleDownPlan) -> None:
        self._change_plans(lambda plans: plans.update({colour: plan}))

    def drop_scale_down(self, colour: Colour) -> None:
        if colour in self.scale_downs():
            self._change_plans(lambda plans: plans.pop(colour, None))

    def _change_plans(self, change: Callable[[dict[Colour, ScaleDownPlan]], object]) -> None:
        def update() -> None:
            plans = self.scale_downs()
            change(plans)
            self._write(SCALE_DOWNS, _PLANS.dump_json(plans, indent=2).decode())

        self._transaction(update)

    def purge(self, keep: Path) -> None:
        if keep.resolve().is_relative_to(self.dir.resolve()):
            raise TargetError(f"down --purge: state_dir {self.dir} holds the config file; delete it by hand")
        shutil.rmtree(self.dir, ignore_errors=True)
