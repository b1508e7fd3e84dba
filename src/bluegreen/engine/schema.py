"""The database changes around a release (migrations.py): before the idle colour is deployed, the lint
and this release's expand, checked against the live version; a release later, the contract, run only
when nothing that needs the old schema can come back."""

from __future__ import annotations

import sys

from ..cancel import CANCEL
from ..config import Colour, MigrationLint, other_colour
from ..errors import BluegreenError, CheckFailed
from ..migrations import Half, contract_refusal, lint_expand, old_versions, pending_contracts, run_half
from ..report import CheckResult
from .checks import CheckPhases


class SchemaChanges(CheckPhases):
    """Built on the checks: after the expand, the smoke checks through the live URL."""

    def _schema_changes(self, version: str, live: Colour | None, live_version: str | None, idle: Colour) -> None:
        """Before the idle colour is deployed: the previous release's contract (run_contract: on_next_release),
        this release's expand, then the smoke checks through the live URL: the live version must still work."""
        migrations = self.settings.migrations
        if migrations is None:
            return
        if migrations.lint is not None and migrations.expand is not None:
            self._lint(migrations.lint, version, idle)
        if migrations.contract and migrations.run_contract == "on_next_release":
            self._contract(live, live_version, retire_previous=True, required=False)
        if migrations.expand is None:
            return
        with self._phase("expand") as p:
            check = self._run_half("expand", version, idle, live, live_version)
            p.detail = check.detail
            if not check.passed:
                raise CheckFailed(f"expand {check.detail}; nothing deployed, live untouched (see its output in the log)")
        if live is not None and live_version is not None:
            try:
                self._smoke_checks(live, live_version, live=True)
            except CheckFailed as exc:
                raise CheckFailed(
                    f"after the expand, the live version {live_version} on {live} fails: {exc}; the expand is not "
                    "backwards compatible: nothing deployed, traffic untouched"
                ) from None

    def _lint(self, lint: MigrationLint, version: str, idle: Colour) -> None:
        """squawk on the expand's SQL, before anything changes: a dangerous statement stops the run."""
        with self._phase("lint expand") as p:
            values = {"version": version, "colour": idle}
            findings, checked = lint_expand(lint, base_dir=self.settings.base_dir, values=values)
            for finding in findings:
                self.events.log(f"squawk: {finding}")
            blocking = [f for f in findings if f.blocking]
            p.detail = f"{checked} file(s), {len(blocking)} blocking and {len(findings) - len(blocking)} other finding(s)"
            if blocking:
                more = f" (and {len(blocking) - 1} more, in the log)" if len(blocking) > 1 else ""
                raise CheckFailed(f"lint: {blocking[0]}{more}; nothing ran, live untouched")

    def _contract(
        self, live: Colour | None, live_version: str | None, *, retire_previous: bool, required: bool,
    ) -> None:
        """The contracts of the pending expands, oldest first, if nothing that needs an old schema can come back.
        `required` (the contract command): a refusal fails the run; else (on_next_release) they wait."""
        history = self.target.state.history()
        pending = pending_contracts(history)
        if not pending:
            if required:
                with self._phase("contract") as p:
                    p.status, p.detail = "skipped", "no expand is waiting for its contract"
            return
        idle = self.target.colour_state(other_colour(live)) if live else None
        old = set().union(*(old_versions(expand, history) for expand in pending))
        for expand in pending:  # all are checked before any runs: either all may run, or none
            refusal = contract_refusal(expand, history, live, live_version, None if retire_previous else idle)
            if refusal is not None:
                if required:
                    raise BluegreenError(f"contract refused: {refusal}; nothing changed")
                with self._phase("contract") as p:
                    p.status, p.detail = "skipped", f"not now: {refusal}"
                self.events.warning(f"the contract of release {expand.version} stays pending: {refusal}")
                return
        if idle is not None and idle.running and idle.version in old:
            with self._phase(f"retire {idle.colour}") as p:
                self.target.scale(idle.colour, 0)
                p.detail = f"stopped version {idle.version}, which needs the schema the contract removes"
        for expand in pending:
            assert expand.version is not None
            self.result.version = expand.version
            with self._phase("contract") as p:
                check = self._run_half("contract", expand.version, live or "blue", completes=expand.id)
                p.detail = f"of release {expand.version}: {check.detail}"
                if not check.passed:
                    raise CheckFailed(f"contract of release {expand.version} {check.detail}; it stays pending "
                                      "(see its output in the log)")

    def _run_half(
        self, half: Half, version: str, colour: Colour, live: Colour | None = None, live_version: str | None = None,
        completes: str | None = None,
    ) -> CheckResult:
        """Run the expand or the contract command and record it in the history, whatever its outcome."""
        assert self.settings.migrations is not None
        env = {
            "BLUEGREEN_MIGRATION": half,
            "BLUEGREEN_VERSION": version,
            "BLUEGREEN_APP": self.settings.app,
            "BLUEGREEN_ENVIRONMENT": self.settings.environment,
        }
        values = {"version": version, "colour": colour, "python": sys.executable}
        outcome, detail = "cancelled", "cancelled: the command was stopped; the schema may be half changed"
        try:
            check = run_half(half, self.settings.migrations, base_dir=self.settings.base_dir, values=values, env=env,
                             log=self.events.log)
            outcome, detail = ("succeeded" if check.passed else "failed"), check.detail
        finally:
            with CANCEL.held():
                self._record(half, outcome, None, version, live, live_version, detail=detail, completes=completes)
        self.result.checks.append(check)
        return check
