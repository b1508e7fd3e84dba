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
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.lock_file = directory / "lock.json"
        self.history_file = directory / "history.json"

    @contextmanager
    def _mutex(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".mutex", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read_lock(self) -> LockInfo | None:
        try:
            return LockInfo.model_validate_json(self.lock_file.read_text())
        except FileNotFoundError:
            return None
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
            write_atomic(self.lock_file, info.model_dump_json())
            return info

    def note_progress(self, holder: str, command: str, phase: str) -> None:
        with self._mutex():
            current = self.read_lock()
            if current is not None and current.holder == holder:
                current.command, current.phase = command, phase
                write_atomic(self.lock_file, current.model_dump_json())

    def renew_lock(self, holder: str, ttl: float) -> None:
        with self._mutex():
            current = self.read_lock()
            if current is None or current.holder != holder:
                raise TargetError(f"the deploy lock is no longer held by {holder}")
            now = utcnow()
            current.renewed_at, current.expires_at = now, now + timedelta(seconds=ttl)
            write_atomic(self.lock_file, current.model_dump_json())

    def release_lock(self, holder: str) -> None:
        with self._mutex():
            current = self.read_lock()
            if current is not None and current.holder == holder:
                self.lock_file.unlink(missing_ok=True)

    def force_unlock(self) -> LockInfo | None:
        with self._mutex():
            current = self.read_lock()
            self.lock_file.unlink(missing_ok=True)
            return current

    def history(self) -> list[Release]:
        try:
            return _HISTORY.validate_json(self.history_file.read_text())
        except FileNotFoundError:
            return []
        except ValidationError as exc:
            raise TargetError(f"{self.history_file}: unreadable history ({exc.error_count()} errors)") from None

    def record(self, release: Release, limit: int) -> None:
        with self._mutex():
            entries = [release, *self.history()][:limit]
            write_atomic(self.history_file, json.dumps([json.loads(e.model_dump_json()) for e in entries], indent=2))
