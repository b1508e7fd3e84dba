"""GitHub Actions: the adapter, chosen by `detect()` whenever GITHUB_ACTIONS=true (the Docker action, whose
entrypoint is `bluegreen/action.py`, or the CLI in a `run:` step).

A log group per phase, `::error`/`::warning` annotations, step outputs in $GITHUB_OUTPUT, the Markdown result
in $GITHUB_STEP_SUMMARY, and the run's URL in the release history. Masking is the runner's job, so every text
we write ourselves (log lines, summary, outputs, the JSON report) is also redacted here: a secret never depends
on the runner to stay hidden.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import sys
from pathlib import Path

from ..events import Output, Subscriber, outcome
from ..report import Phase, Result
from . import Adapter, Redactor


# GitHub deployments: the token (the action's github-token input, or set in a `run:` step's env) and the name
# of the GitHub environment (default: the bluegreen environment's).
TOKEN_VARIABLE = "BLUEGREEN_GITHUB_TOKEN"
ENVIRONMENT_VARIABLE = "BLUEGREEN_GITHUB_ENVIRONMENT"

# The engine's messages name the CLI's options; in the action the user sets inputs instead.
CLI_TERMS = (
    (re.compile(r"choose one with -e\b"), "set the input environment"),
    (re.compile(r"\(choose one with -c\)"), "(set the inputs config and working-directory)"),
    (re.compile(r"run `deploy --no-switch` first"), "run a deploy with no-switch: true first"),
    (re.compile(r"deploy it again: bluegreen deploy .*?--version=(\S+)"),
     r"deploy it again: command: deploy, version: \1"),
    (re.compile(r"^--force: "), "force: "),
    (re.compile(r"run contract with --retire-previous"), "run command contract with retire-previous: true"),
)


def in_action_terms(text: str) -> str:
    for pattern, replacement in CLI_TERMS:
        text = pattern.sub(replacement, text)
    return text


# --- workflow commands -------------------------------------------------------------------------


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: object) -> str:
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties.items() if v is not None)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


class Secrets(Redactor):
    """The values to mask, and redaction of the texts we write ourselves."""

    def add(self, value: str | None, out=None) -> list[str]:  # type: ignore[override]
        """Mask `value` (each line of it: the runner masks line by line) before anything could print it."""
        added = super().add(value)
        for part in added:
            print(f"::add-mask::{escape_data(part)}", file=out or sys.stdout, flush=True)
        return added


# --- the adapter -------------------------------------------------------------------------------


class GitHubOutput(Output):
    """A phase's progress lines (retries, the test suite's output) in a log group named after it; its
    outcome line after the group, so it shows when collapsed. A phase without progress gets no group.

    Everything goes to stdout: the runner reads workflow commands there, and one stream keeps
    the groups and the lines in order."""

    def __init__(self, secrets_: Secrets) -> None:
        super().__init__(sys.stdout)
        self.secrets = secrets_
        self._phase: str | None = None  # the running phase, whose group opens with its first progress line
        self._open = False

    def write(self, line: str) -> None:
        super().write(self.secrets.redact(line))

    def phase_started(self, name: str) -> None:
        self._close()
        self._phase = name

    def log(self, message: str) -> None:
        if self._phase and not self._open:
            self.write(f"::group::{escape_data(self._phase)}")
            self._open = True
        if message.lstrip().startswith("::"):
            # The test suite's output is not ours: a line it prints must not act as a workflow command.
            token = secrets.token_hex(16)
            self.write(f"::stop-commands::{token}")
            super().log(message)
            self.write(f"::{token}::")
            return
        super().log(message)

    def phase_finished(self, phase: Phase) -> None:
        self._close()
        self._phase = None
        super().phase_finished(phase)

    def warning(self, message: str) -> None:
        self.write(command("warning", in_action_terms(message), title="bluegreen"))

    def finished(self, result: Result) -> None:
        self._close()
        if result.reason:  # once, here: the log, the annotation, the outputs, the summary and the report all say it so
            result.reason = in_action_terms(result.reason)
        super().finished(result)
        if result.exit_code != 0:
            self.write(command("error", result.reason or result.status, title=f"bluegreen {outcome(result)}"))

    def _close(self) -> None:
        if self._open:
            self.write("::endgroup::")
            self._open = False


class GitHubAdapter(Adapter):
    name = "github"

    def __init__(self, secrets_: Secrets | None = None) -> None:
        self.secrets = secrets_ or Secrets()
        self.output = GitHubOutput(self.secrets)
        self.published = False

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    @property
    def run_url(self) -> str | None:
        env = os.environ
        if env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
            server = env.get("GITHUB_SERVER_URL", "https://github.com")
            return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return None

    @property
    def actor(self) -> str | None:
        return os.environ.get("GITHUB_ACTOR") or None

    def subscribers(self) -> list[Subscriber]:
        """GitHub deployments (github_deployments.py) when a token is given: BLUEGREEN_GITHUB_TOKEN (the action's
        github-token input sets it). Taken out of the environment and masked: the test suite and the hooks, which
        inherit the environment, never get it."""
        token = os.environ.pop(TOKEN_VARIABLE, "").strip()
        repository = os.environ.get("GITHUB_REPOSITORY", "")
        if not token:
            return []
        self.secrets.add(token)
        if not repository:
            self.output.warning(f"{TOKEN_VARIABLE} is set but GITHUB_REPOSITORY is not: no GitHub deployment")
            return []
        from .github_deployments import GitHubDeployments

        return [GitHubDeployments(
            api_url=os.environ.get("GITHUB_API_URL") or "https://api.github.com", repository=repository,
            token=token, sha=os.environ.get("GITHUB_SHA") or None, log_url=self.run_url, warn=self.output.warning,
            environment=os.environ.get(ENVIRONMENT_VARIABLE, "").strip() or None,
        )]

    def publish(self, result: Result, args: argparse.Namespace) -> None:
        self.published = True
        outputs = result.outputs()
        report = getattr(args, "report", None)
        if report and not getattr(args, "dry_run", False):
            outputs["report"] = workspace_relative(Path(report))  # written already, redacted (self.redact)
        else:
            outputs["report"] = ""
        self.write_outputs(outputs)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(self.secrets.redact(result.to_markdown()) + "\n")

    def invalid(self, reason: str) -> None:
        """A wrong input or config, found before anything ran: status invalid and the reason, as outputs and summary."""
        self.write_outputs({"status": "invalid", "reason": reason})
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(self.secrets.redact(f"### bluegreen: invalid input or config\n\n> **{reason}**\n"))

    def write_outputs(self, outputs: dict[str, str]) -> None:
        """Append `name<<DELIMITER` blocks: multiline-safe, with a delimiter no value contains."""
        path = os.environ.get("GITHUB_OUTPUT")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as handle:
            for name, value in outputs.items():
                value = self.secrets.redact(value)
                delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
                while delimiter in value:
                    delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
                handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def workspace_relative(path: Path) -> str:
    """A path later steps can use: relative to the workspace (the runner and the action mount it differently)."""
    workspace = os.environ.get("GITHUB_WORKSPACE")
    absolute = path.resolve()
    if workspace:
        try:
            return str(absolute.relative_to(Path(workspace).resolve()))
        except ValueError:
            pass
    return str(absolute)
