"""Database changes in two halves, and the guards around them.

Both colours share one database, so a schema change must suit the version that is live and the one that
replaces it. The expand (add a column, backfill, a trigger that keeps old and new columns in step) runs
inside `deploy`, before the idle colour is deployed; the contract (drop what only older versions read) runs
a release later, once no colour that runs an older version can be switched to. The history remembers both,
so a rollback never goes back to a version whose schema a contract removed.

Users keep their own migration tool: bluegreen decides when each half runs, checks that it did no harm,
and remembers what it did. The database URL reaches the command through the environment, and its value
(and a URL's password) is replaced by *** in everything the command prints.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel

from .checks.suite import exit_detail, run_process
from .config import MigrationLint, Migrations, render, secret_values
from .errors import TargetError
from .history import served_live, verified_live
from .redaction import Redactor
from .report import CheckResult
from .runtimes.base import ColourState
from .state.base import Release

Half = Literal["expand", "contract"]


class SchemaState(BaseModel):
    """What `status` shows of the schema: the oldest expand still waiting for its contract, the last of each."""

    pending_contract: Release | None = None  # its id is the release whose expand it is; `at`: since when
    last_expand: Release | None = None
    last_contract: Release | None = None


# --- running one half ------------------------------------------------------------------------


def run_half(
    half: Half, migrations: Migrations, *, base_dir: Path, values: dict[str, str], env: dict[str, str],
    log: Callable[[str], None],
) -> CheckResult:
    """Run the expand or the contract command with the test suite's runner (own process group, timeout,
    cancellation); its output goes to `log`, redacted."""
    step = migrations.expand if half == "expand" else migrations.contract
    assert step is not None
    command = [step.command] if isinstance(step.command, str) else step.command
    command = [render(part, **values) for part in command]
    argv = ["/bin/sh", "-c", command[0]] if step.shell else command
    cwd = base_dir / migrations.working_directory if migrations.working_directory else base_dir
    secrets = Redactor(secret_values(migrations))  # the values of secret_env, e.g. the database URL
    ran = run_process(argv, cwd, {**os.environ, **migrations.env, **env}, migrations.timeout,
                      lambda line: log(secrets.redact(line)))
    if isinstance(ran, str):
        passed, detail, duration = False, ran, 0.0
    else:
        code, timed_out, tail, duration = ran
        passed, detail = exit_detail(code, timed_out, tail, migrations.timeout)
        last = next((line.strip() for line in reversed(tail) if line.strip()), "")
        if passed and last:  # what the tool said it did, e.g. "Running upgrade a1b2 -> c3d4"
            detail += f": {last[:200]}"
    return CheckResult(name=half, kind="migration", target="database", passed=passed, attempts=1,
                       duration=duration, detail=secrets.redact(detail))


# --- lint ----------------------------------------------------------------------------------


@dataclass
class Finding:
    file: str
    line: int  # 1-based
    rule: str
    message: str
    blocking: bool

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


def lint_expand(lint: MigrationLint, *, base_dir: Path, values: dict[str, str]) -> tuple[list[Finding], int]:
    """squawk's findings in the expand's SQL files (blocking ones first), and how many files it checked.
    Raises TargetError when squawk is missing or fails without findings."""
    # os.path.join: a pattern may be absolute (Path.glob takes relative ones only)
    files = sorted({f for pattern in lint.expand for f in glob.glob(os.path.join(base_dir, render(pattern, **values)))})
    if not files:
        return [], 0
    beside = Path(sys.executable).parent / lint.squawk
    binary = str(beside) if "/" not in lint.squawk and beside.exists() else shutil.which(lint.squawk)
    if binary is None:
        raise TargetError(f"migrations.lint: {lint.squawk!r} is not installed (pip install squawk-cli)")
    argv = [binary, "--reporter", "json", *(["--pg-version", lint.pg_version] if lint.pg_version else []), *files]
    try:
        done = subprocess.run(argv, cwd=base_dir, capture_output=True, text=True, timeout=120)
        found = json.loads(done.stdout or "[]")
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        raise TargetError(f"migrations.lint: squawk failed: {exc}") from None
    if done.returncode not in (0, 1) or not isinstance(found, list):
        raise TargetError(f"migrations.lint: squawk exited with code {done.returncode}: {done.stderr.strip()[:200]}")
    findings = [
        Finding(file=os.path.relpath(f["file"], base_dir), line=int(f["line"]) + 1, rule=f["rule_name"],
                message=f["message"], blocking=f["rule_name"] in lint.rules)
        for f in found
    ]
    return sorted(findings, key=lambda f: (not f.blocking, f.file, f.line)), len(files)


# --- what the history says -------------------------------------------------------------------


def _succeeded(history: list[Release], action: str) -> list[Release]:
    return [r for r in history if r.action == action and r.outcome == "succeeded"]


def schema_state(history: list[Release]) -> SchemaState:
    expands, contracts = _succeeded(history, "expand"), _succeeded(history, "contract")
    return SchemaState(
        pending_contract=pending_contract(history),
        last_expand=expands[0] if expands else None,
        last_contract=contracts[0] if contracts else None,
    )


def pending_contracts(history: list[Release]) -> list[Release]:
    """The expands that no later contract of their version completed, oldest first (history is newest first).
    An expand of a first release (nothing was live) needs no contract: no older version uses the schema."""
    contracts = _succeeded(history, "contract")
    return [
        e for e in reversed(_succeeded(history, "expand"))
        if e.previous_version is not None and not any(c.version == e.version and c.at > e.at for c in contracts)
    ]


def pending_contract(history: list[Release]) -> Release | None:
    """The oldest expand still waiting for its contract."""
    return next(iter(pending_contracts(history)), None)


def old_versions(expand: Release, history: list[Release], before: datetime | None = None) -> set[str]:
    """The versions that served live traffic before `expand` ran: they need the schema its contract removes."""
    return {version for _, version in served_live(history, before or expand.at)} - {expand.version}


def contract_refusal(
    expand: Release, history: list[Release], live: str | None, live_version: str | None, idle: ColourState | None,
) -> str | None:
    """Why the contract of `expand` must not run now, or None. The idle colour counts only while it runs
    (None: it will be stopped first): a stopped one cannot be switched to without a rollback, and a rollback
    refuses to go past a contract."""
    old = old_versions(expand, history)
    if live is None or live_version in old or not verified_live(history, live, live_version):
        return (
            f"the release {expand.version} whose expand this contract completes is not live and verified "
            f"({live or 'nothing'} is live" + (f" with version {live_version}" if live else "") + ")"
        )
    if idle is not None and idle.running and idle.version in old:
        return (
            f"{idle.colour} still runs version {idle.version}, which depends on the old schema and can be switched "
            f"back to: stop it first (wait for its scale-down, or run contract with --retire-previous)"
        )
    return None


def rollback_refusal(history: list[Release], version: str) -> str | None:
    """Why a rollback to `version` would go past a completed contract, or None."""
    for contract in _succeeded(history, "contract"):
        expand = next((r for r in history if r.action == "expand" and r.id == contract.completes), None)
        old = old_versions(expand, history) if expand else old_versions(contract, history, before=contract.at)
        if version in old:
            return (
                f"version {version} predates the contract of release {contract.version} "
                f"(run {contract.id} at {contract.at:%Y-%m-%d %H:%M:%S} UTC), which removed the schema it needs; "
                f"a rollback never goes past a contract, forced or not"
            )
    return None
