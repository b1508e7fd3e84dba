"""The hook points of a run: where the team's own steps run (hooks.py runs them) and subscribers hear of it.

Each point is reached at most once per run, while the deploy lock is held. `before_switch` is a gate: a hook
that fails there stops the run before traffic moves (a cancellation there is one before the switch). After the
switch and before verification (`after_switch`), a cancellation switches back, as anywhere in that stretch. A
hook anywhere else is told, not asked: its failure is reported and changes nothing that is live, and a
cancellation stops it and the hooks after it, leaving the outcome as it was decided.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..cancel import CANCEL, Cancelled
from ..config import Hook, secret_values
from ..errors import BluegreenError
from ..hooks import run_hook
from ..payload import payload
from ..redaction import Redactor
from ..report import HookRun
from .run import RunContext

GATE = "before_switch"
CANCELLED_HOOK_TIMEOUT = 5.0  # seconds each hook gets once the run is cancelled (on_cancel, on_switch_back)


class HookPoints(RunContext):
    _points_reached: set[str]  # the points this run reached: each once (set by `Pipeline.__init__`)

    @contextmanager
    def _outcome_hooks_after(self) -> Iterator[None]:
        """Inside `_locked`: the run's errors become its outcome while the lock is still held, so the outcome's
        hooks run under it too (a hook must never race the next run: kamal#1517)."""
        with self._guarded():
            yield
        self._outcome_hooks()

    def _outcome_hooks(self) -> None:
        r = self.result
        if r.switched_back:
            self._hook("on_switch_back")
        if r.status == "succeeded" and r.command == "rollback":
            self._hook("on_rollback")
        elif r.status in ("failed", "rolled_back", "rollback_failed"):
            self._hook("on_failure")
        elif r.status == "cancelled":
            self._hook("on_cancel")

    def _hook(self, point: str) -> None:
        """Reach `point` once per run: tell the subscribers, then run its hooks in order."""
        if point in self._points_reached:
            return  # a canary's 100% step is a release too: its gate ran before the first step
        self._points_reached.add(point)
        self.events.reached(point, self.result)
        hooks = getattr(self.settings.hooks, point, None) or []
        if not hooks:
            return
        if CANCEL.requested:  # GitHub kills the job 10 s after its first signal: what runs now must be quick
            hooks = [h.model_copy(update={"timeout": min(h.timeout, CANCELLED_HOOK_TIMEOUT)}) for h in hooks]
        redactor = Redactor(secret_values(self.settings))
        data = redactor.redact_data(payload(self.result, point))  # the run stands still while its hooks run
        for hook in hooks:
            try:
                with self._phase(f"hook {point}: {hook.label}") as phase:
                    run = self._run_hook(hook, point, data, redactor)
                    phase.detail = run.detail
                    if run.status != "succeeded":
                        phase.status = "failed"
            except Cancelled as stop:
                self.result.hooks.append(HookRun(point=point, name=hook.label, status="cancelled", detail=str(stop)))
                if point in (GATE, "after_switch"):
                    raise  # the cancellation rule of that stretch: live untouched, or switched back
                self.events.warning(f"{stop} during the {point} hook {hook.label!r}: it was stopped, and the hooks "
                                    f"after it skipped; the outcome stands ({self.result.status})")
                return
            if run.status == "succeeded":
                continue
            if point == GATE:
                where = "traffic stays as it was" if self.result.switched else "live untouched"  # a resumed canary moved some
                raise BluegreenError(f"before_switch hook {hook.label!r} {run.detail}: the gate said no; {where}")
            self.events.warning(f"{point} hook {hook.label!r} {run.detail}; what is live is unchanged")

    def _run_hook(self, hook: Hook, point: str, data: dict, redactor: Redactor) -> HookRun:
        """Its output and detail redacted (a hook may echo a token); a bug in running it is its failure, never a
        change of the outcome."""
        try:
            run = run_hook(hook, point, data, base_dir=self.settings.base_dir,
                           log=lambda line: self.events.log(redactor.redact(line)))
        except Exception as exc:  # noqa: BLE001 - a cancellation is no Exception: it propagates
            run = HookRun(point=point, name=hook.label, status="failed",
                          detail=f"internal error: {type(exc).__name__}: {exc}")
        run.detail = redactor.redact(run.detail)
        self.result.hooks.append(run)
        return run
