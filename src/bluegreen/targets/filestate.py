"""Lock and history as files in a state directory beside the router (local and docker targets).

Every read-modify-write happens under an flock on `.mutex`, so two processes
never both take the lock; the lock file itself says who holds it and until when,
so an expired lock (a killed run) can be taken over.
"""

from __future__ import annotations

import fcntl
import json
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Iterator

from pydantic import TypeAdapter, ValidationError

from ..errors import LockHeldError, TargetError
from ..report import write_atomic
from .base import LockInfo, Release, StateStore, this_process, utcnow

_HISTORY = TypeAdapter(list[Release])


class FileStateStore(StateStore):
    """The files live in a directory; a subclass may keep them elsewhere by overriding the four
    storage methods (`_read`, `_write`, `_unlink`, `_mutex`), e.g. in a Docker volume."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.lock_file = directory / "lock.json"
        self.history_file = directory / "history.json"

    # --- storage ---------------------------------------------------------------------------

    def _read(self, name: str) -> str | None:
        try:
            return (self.dir / name).read_text()
        except FileNotFoundError:
            return None

    def _write(self, name: str, text: str) -> None:
        write_atomic(self.dir / name, text)

    def _unlink(self, name: str) -> None:
        (self.dir / name).unlink(missing_ok=True)

    @contextmanager
    def _mutex(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".mutex", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # --- the lock and the history --------------------------------------------------------------

    def read_lock(self) -> LockInfo | None:
        text = self._read(self.lock_file.name)
        if text is None:
            return None
        try:
            return LockInfo.model_validate_json(text)
        except ValidationError:  # a torn or foreign file must not wedge every future deploy
            return None

    def acquire_lock(self, holder: str, ttl: float) -> LockInfo:
        with self._mutex():
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

    def note_progress(self, holder: str, command: str, phase: str) -> None:
        with self._mutex():
            current = self.read_lock()
            if current is not None and current.holder == holder:
                current.command, current.phase = command, phase
                self._write(self.lock_file.name, current.model_dump_json())

    def renew_lock(self, holder: str, ttl: float) -> None:
        with self._mutex():
            current = self.read_lock()
            if current is None or current.holder != holder:
                raise TargetError(f"the deploy lock is no longer held by {holder}")
            now = utcnow()
            current.renewed_at, current.expires_at = now, now + timedelta(seconds=ttl)
            self._write(self.lock_file.name, current.model_dump_json())

    def release_lock(self, holder: str) -> None:
        with self._mutex():
            current = self.read_lock()
            if current is not None and current.holder == holder:
                self._unlink(self.lock_file.name)

    def force_unlock(self) -> LockInfo | None:
        with self._mutex():
            current = self.read_lock()
            self._unlink(self.lock_file.name)
            return current

    def history(self) -> list[Release]:
        text = self._read(self.history_file.name)
        if text is None:
            return []
        try:
            return _HISTORY.validate_json(text)
        except ValidationError as exc:
            raise TargetError(f"{self.history_file}: unreadable history ({exc.error_count()} errors)") from None

    def record(self, release: Release, limit: int) -> None:
        with self._mutex():
            entries = [release, *self.history()][:limit]
            self._write(self.history_file.name, json.dumps([json.loads(e.model_dump_json()) for e in entries], indent=2))
