"""Scaling the old colour down later: the plan is kept with the target's state, not in a process.

Nothing may outlive a CI step, so the due time is written to `scale-down.json` beside the lock and
the history; a delay up to `scale_down_wait` is waited for in the run itself and applied, a longer
one is applied by the next bluegreen run that takes the lock. A colour that became live again in
the meantime (a rollback) is never stopped. Used by the docker and servers targets.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from ..config import COLOURS, Colour
from ..errors import TargetError
from .base import utcnow
from .filestate import FileStateStore

DUE = "scale-down.json"


class PlannedScaleDowns:
    """A mixin for a Target whose `state` is a FileStateStore and that sets `scale_down_wait`."""

    state: FileStateStore
    scale_down_wait: float

    def schedule_scale_down(self, colour: Colour, delay: float, release_id: str) -> float | None:
        due = utcnow() + timedelta(seconds=delay)
        self._change_due(lambda entries: entries.update(
            {colour: {"at": due.isoformat(timespec="seconds"), "release": release_id}}))
        # A short delay is waited out by this run (outside the lock); a longer one is applied by
        # the next bluegreen run that takes the lock.
        return delay if delay <= self.scale_down_wait else None

    def apply_scale_downs(self) -> None:  # also run each time the target's lock is taken
        for colour in COLOURS:
            try:
                self._scale_down_if_due(colour)
            except TargetError:
                pass  # the next run tries again; never a reason to fail this one

    def _due(self) -> dict[str, dict]:
        try:
            data = json.loads(self.state._read(DUE) or "{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _change_due(self, change) -> None:
        def update() -> None:
            entries = self._due()
            change(entries)
            self.state._write(DUE, json.dumps(entries, indent=2))

        self.state._transaction(update)

    def _drop_due(self, colour: Colour) -> None:
        if colour in self._due():
            self._change_due(lambda entries: entries.pop(colour, None))

    def _scale_down_if_due(self, colour: Colour) -> bool:
        entry = self._due().get(colour)
        if entry is None or datetime.fromisoformat(entry["at"]) > datetime.now(timezone.utc):
            return False
        if self.live() != colour:  # type: ignore[attr-defined]
            self.scale(colour, 0)  # type: ignore[attr-defined]
            return True
        self._drop_due(colour)  # live again (a rollback) since the scale-down was planned
        return False
