"""One Result model for every command, rendered as JSON, a Markdown summary, dotenv and JUnit XML."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

from pydantic import BaseModel, Field

from .config import Colour
from .errors import ExitCode
from .redaction import Redactor

Status = Literal[
    "running",  # the run has not finished (the report is written before anything changes)
    "succeeded",  # switched and verified (deploy, promote, rollback)
    "prepared",  # deployed and checked on the idle colour, not switched (--no-switch)
    "paused",  # a canary holds at a step `until promoted`: `promote` resumes it, `abort` ends it
    "planned",  # --dry-run
    "failed",  # failed before the switch: live untouched
    "locked",  # another run holds the lock
    "rolled_back",  # failed after the switch, switched back automatically
    "rollback_failed",  # failed after the switch, and switching back failed
    "invalid",  # bad usage or config
    "cancelled",  # stopped by a signal (a cancelled pipeline): live left as it was before the run
]

EXIT_CODES: dict[str, ExitCode] = {
    "succeeded": ExitCode.OK,
    "prepared": ExitCode.OK,
    "paused": ExitCode.OK,
    "planned": ExitCode.OK,
    "failed": ExitCode.FAILED_BEFORE_SWITCH,
    "invalid": ExitCode.USAGE,
    "locked": ExitCode.LOCKED,
    "rolled_back": ExitCode.ROLLED_BACK,
    "rollback_failed": ExitCode.ROLLBACK_FAILED,
    "running": ExitCode.ROLLBACK_FAILED,  # a run that never finished: nobody knows where traffic is
}


class Phase(BaseModel):
    name: str
    status: Literal["running", "succeeded", "failed", "skipped", "cancelled"] = "running"
    started_at: datetime
    duration: float = 0.0  # seconds
    detail: str = ""


class CheckResult(BaseModel):
    name: str
    kind: Literal["smoke", "test_suite", "verify", "migration"]
    target: str = ""  # "preview" or "live"
    passed: bool
    detail: str = ""
    attempts: int = 0
    duration: float = 0.0
    tests: int | None = None  # from a test suite's JUnit XML
    failures: int | None = None


class HookRun(BaseModel):
    """One hook at one point of the run: what it did (a gate that failed stopped the run)."""

    point: str  # before_switch, after_switch... (payload.HOOK_POINTS)
    name: str
    status: Literal["succeeded", "failed", "timed_out", "cancelled"]
    detail: str = ""  # one line: the exit code or HTTP status, or why it could not run
    duration: float = 0.0


class Delivery(BaseModel):
    """One message to one channel (Slack, Teams, a webhook, a GitHub deployment): whether it got there."""

    channel: str  # its name in the config, e.g. "slack" or "github deployment"
    event: str  # the outcome or state it told
    delivered: bool
    attempts: int = 0
    detail: str = ""  # the last answer or error, one line
    duration: float = 0.0


class Result(BaseModel):
    command: str
    status: Status
    app: str
    environment: str
    live_colour: Colour | None = None
    previous_colour: Colour | None = None
    idle_colour: Colour | None = None
    version: str | None = None
    previous_version: str | None = None
    preview_url: str | None = None
    live_url: str | None = None
    switched: bool = False  # live traffic moved in this run, and stayed moved
    switched_back: bool = False  # live traffic moved in this run, then went back (rolled back, cancelled)
    cancelled_in: str | None = None  # the phase a cancellation stopped
    rollback_command: str | None = None
    raw_rollback_command: str | None = None
    release_id: str | None = None
    reason: str | None = None  # why it failed, one line
    plan: str | None = None  # what a dry run would do
    canary_weight: int | None = None  # a canary: percent of requests on the new colour when the run ended
    canary_step: str | None = None  # a canary: the step reached, e.g. "2/4"
    pending_contract: str | None = None  # the release whose expand still waits for its contract, after this run
    caches_expire: str | None = None  # a DNS switch: when resolvers' caches of the old answer expire (switch + TTL)
    run_url: str | None = None  # the CI job that ran this
    actor: str | None = None
    started_at: datetime | None = None
    duration: float | None = None  # seconds from the start to the outcome
    phases: list[Phase] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    hooks: list[HookRun] = Field(default_factory=list)
    notifications: list[Delivery] = Field(default_factory=list)  # and GitHub deployments: what each channel was told

    @property
    def exit_code(self) -> ExitCode:
        if self.status == "cancelled":  # by where traffic ended up
            if self.switched:
                return ExitCode.ROLLBACK_FAILED  # the new colour stays live, unverified
            return ExitCode.ROLLED_BACK if self.switched_back else ExitCode.FAILED_BEFORE_SWITCH
        return EXIT_CODES[self.status]

    def redacted(self, secrets: list[str]) -> Result:
        """A copy with every secret replaced by ***: what an error message quoted must not reach an artifact."""
        return Result.model_validate_json(Redactor(secrets).redact_json(self.model_dump_json()))

    # --- renderings ----------------------------------------------------------------------

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    def outputs(self) -> dict[str, str]:
        """The facts a later CI step needs, as flat strings (GitHub outputs, GitLab dotenv)."""
        return {
            "status": self.status,
            "live-colour": self.live_colour or "",
            "live-version": self.live_version or "",
            "previous-colour": self.previous_colour or "",
            "idle-colour": self.idle_colour or "",
            "version": self.version or "",
            "previous-version": self.previous_version or "",
            "preview-url": self.preview_url or "",
            "live-url": self.live_url or "",
            "switched": "true" if self.switched else "false",
            "rollback-command": (self.rollback_command or "") if self.can_roll_back() else "",
            "reason": self.reason or "",
            "plan": self.plan or "",
            "pending-contract": self.pending_contract or "",
            "canary-weight": "" if self.canary_weight is None else str(self.canary_weight),
            "canary-step": self.canary_step or "",
        }

    @property
    def live_version(self) -> str | None:
        """The version live when the run ended: the new one if the switch stands, else the one before."""
        return self.version if self.switched else self.previous_version

    def can_roll_back(self) -> bool:
        """Traffic moved in this run and stayed moved, and a colour was live before it: a rollback has somewhere
        to go. Not on a first release, not when nothing switched."""
        return self.switched and self.previous_colour is not None

    def to_dotenv(self, prefix: str = "BLUEGREEN_") -> str:
        # GitLab's dotenv report takes one line per variable: line breaks (\r, \u2028... too) are flattened,
        # so no value can start a variable of its own.
        lines = []
        for key, value in self.outputs().items():
            value = " ".join(value.splitlines())
            lines.append(f"{prefix}{key.upper().replace('-', '_')}={value}")
        return "\n".join(lines) + "\n"

    def to_markdown(self) -> str:
        icon = {"succeeded": "✅", "prepared": "⏸️", "paused": "⏸️", "planned": "📝"}.get(self.status, "❌")
        rows = [
            ("status", f"{icon} {self.status}"),
            ("app / environment", f"{self.app} / {self.environment}"),
            ("live colour", self.live_colour),
            ("previous colour", self.previous_colour),
            ("version", self.version),
            ("previous version", self.previous_version),
            ("live URL", self.live_url),
            ("preview URL", self.preview_url),
            ("switched", "yes" if self.switched else "no"),
            ("resolver caches expire", self.caches_expire and f"{self.caches_expire} (switch time + the record's TTL; "
             "until then some clients still reach the old colour)"),
            ("pending contract", self.pending_contract and f"of release {self.pending_contract}"),
            ("canary", None if self.canary_weight is None else
             f"{self.canary_weight}% on {self.idle_colour if self.status == 'paused' else 'the new colour'}, "
             f"step {self.canary_step or '-'}"),
        ]
        out = [f"### bluegreen {self.command}: {self.app} ({self.environment})", ""]
        if self.plan:
            out += [f"> Plan: {_md_cell(self.plan)}", ""]
        if self.reason:
            out += [f"> **{self.reason}**", ""]
        out += ["| | |", "| --- | --- |"]
        out += [f"| {k} | {_md_cell(v)} |" for k, v in rows if v is not None]
        if self.rollback_command and self.can_roll_back():
            out += ["", "Roll back:", "", "```sh", self.rollback_command, "```"]
        if self.checks:
            out += ["", "| check | on | result | attempts | detail |", "| --- | --- | --- | --- | --- |"]
            for c in self.checks:
                out.append(
                    f"| {_md_cell(c.name)} | {c.kind} {c.target} | {'✅' if c.passed else '❌'} | {c.attempts} "
                    f"| {_md_cell(c.detail)} |"
                )
        if self.hooks:
            out += ["", "| hook | at | result | detail |", "| --- | --- | --- | --- |"]
            out += [f"| {_md_cell(h.name)} | {h.point} | {'✅' if h.status == 'succeeded' else '❌'} {h.status} "
                    f"| {_md_cell(h.detail)} |" for h in self.hooks]
        if self.notifications:
            out += ["", "| told | what | delivered | attempts | detail |", "| --- | --- | --- | --- | --- |"]
            out += [f"| {_md_cell(n.channel)} | {n.event} | {'✅' if n.delivered else '❌'} | {n.attempts} "
                    f"| {_md_cell(n.detail)} |" for n in self.notifications]
        if self.phases:
            out += ["", "```mermaid", "gantt", "  dateFormat x", "  axisFormat %M:%S", f"  title {self.command} phases"]
            for p in self.phases:
                start = int(p.started_at.timestamp() * 1000)
                end = start + max(1, int(p.duration * 1000))
                tag = "crit, " if p.status == "failed" else ""
                name = p.name.replace(":", " ")
                out.append(f"  {name} ({p.duration:.2f}s) :{tag}{start}, {end}")
            out.append("```")
        return "\n".join(out) + "\n"

    def to_junit(self) -> str:
        suite = ET.Element(
            "testsuite",
            name=f"bluegreen {self.command} {self.app}/{self.environment}",
            tests=str(len(self.checks)),
            failures=str(sum(not c.passed for c in self.checks)),
            time=f"{sum(c.duration for c in self.checks):.3f}",
        )
        for c in self.checks:
            case = ET.SubElement(
                suite, "testcase", classname=f"bluegreen.{c.kind}", name=f"{c.name} ({c.target or c.kind})",
                time=f"{c.duration:.3f}",
            )
            if not c.passed:
                ET.SubElement(case, "failure", message=c.detail[:500]).text = c.detail
        return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def _md_cell(value: object) -> str:
    return " ".join(str(value).replace("|", "\\|").splitlines())


def write_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write a file so that readers never see half of it. `mode`: its permissions (mkstemp's are 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_result(path: Path) -> Result:
    return Result.model_validate(json.loads(path.read_text(encoding="utf-8")))
