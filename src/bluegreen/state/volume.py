"""The lock, the history and the planned scale-downs as files in a volume bluegreen reaches only through a
container (the docker runtime's Caddy container router, routers/caddy_container.py): they survive a cleaned
checkout, a new job and a new runner on the same engine.

The store knows the volume only as the few file operations below, so it imports nothing of routers.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import ContextManager, Iterator, Protocol

from .files import FileStateStore


class VolumeFiles(Protocol):
    """Files in a volume, read and written through the container that mounts it."""

    mount: PurePosixPath

    def ensure_running(self) -> None: ...
    def read(self, name: str) -> str | None: ...
    def write(self, name: str, text: str) -> None: ...
    def unlink(self, name: str) -> None: ...
    def mutex(self) -> ContextManager[None]: ...


class VolumeStateStore(FileStateStore):
    def __init__(self, volume: VolumeFiles, lock_ttl: float = 120) -> None:
        super().__init__(Path(volume.mount), lock_ttl=lock_ttl)
        self.volume = volume

    def _read(self, name: str) -> str | None:
        return self.volume.read(name)

    def _write(self, name: str, text: str) -> None:
        self.volume.write(name, text)

    def _unlink(self, name: str) -> None:
        self.volume.unlink(name)

    @contextmanager
    def _mutex(self) -> Iterator[None]:
        self.volume.ensure_running()  # the first run takes the lock before anything else exists
        with self.volume.mutex():
            yield

    def note_progress(self, holder: str, command: str, phase: str) -> None:
        """Not kept here: each write is a few exec round trips (~0.5 s), too dear for every phase; a killed
        run is still found by its lock's expiry."""

    def purge(self, keep: Path) -> None:
        """The volume goes with the router container (`down --purge` removes both)."""
