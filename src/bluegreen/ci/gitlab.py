"""GitLab CI: collapsible log sections per phase, a dotenv report and a JUnit report.

The component's jobs (gitlab/templates/deploy.yml) run the plain CLI; this adapter is
chosen because GitLab sets GITLAB_CI=true. It reads only CI_* facts and never prints
a variable's value: job logs are often public and variables often secret. GitLab cannot
mask a multi-line variable (an SSH key, known_hosts), so every text this adapter writes
(log lines, dotenv, JUnit, the report) has the lines of SSH_PRIVATE_KEY, SSH_KNOWN_HOSTS
and SSH_KEY_PASSPHRASE (where the component's jobs put them) replaced by `***`.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from pathlib import Path

from ..events import Output, Subscriber, phase_line
from ..report import Phase, Result, write_atomic
from . import SSH_SECRET_VARIABLES, Adapter, Redactor

# The files the component's `artifacts: reports:` collect, in the job's working directory.
DOTENV_FILE = "bluegreen.env"
JUNIT_FILE = "bluegreen-junit.xml"

_ESC = "\x1b"
_COLOURS = {"succeeded": "32", "failed": "31;1", "skipped": "33"}


class GitLabSections(Output):
    """Each phase is a collapsed section; its outcome line follows the section, so it shows when collapsed."""

    def __init__(self, secrets: Redactor | None = None) -> None:
        super().__init__()
        self.secrets = secrets or Redactor()
        self._count = 0
        self._open: str | None = None

    def write(self, line: str) -> None:
        super().write(self.secrets.redact(line))

    def phase_started(self, name: str) -> None:
        self._close()
        self._count += 1
        # Section names allow [A-Za-z0-9_.-] only; the index keeps two phases of one name apart.
        self._open = f"bluegreen_{self._count}_" + re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_")
        self.write(f"{_ESC}[0Ksection_start:{int(time.time())}:{self._open}[collapsed=true]\r{_ESC}[0K{name}")

    def phase_finished(self, phase: Phase) -> None:
        self._close()
        colour = _COLOURS.get(phase.status)
        line = phase_line(phase)
        self.write(f"{_ESC}[{colour}m{line}{_ESC}[0m" if colour else line)

    def _close(self) -> None:
        if self._open:
            self.write(f"{_ESC}[0Ksection_end:{int(time.time())}:{self._open}\r{_ESC}[0K")
            self._open = None


class GitLabAdapter(Adapter):
    name = "gitlab"

    def __init__(self) -> None:
        super().__init__()
        self.secrets = Redactor()
        for variable in SSH_SECRET_VARIABLES:
            self.secrets.add(os.environ.get(variable))
        self.secrets.add(os.environ.get("CI_JOB_TOKEN"))  # GitLab masks it in the log; our report too
        self.output = GitLabSections(self.secrets)

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    def protect(self, secrets: list[str]) -> None:
        for value in secrets:
            self.secrets.add(value)

    @property
    def run_url(self) -> str | None:
        return os.environ.get("CI_JOB_URL") or None

    @property
    def actor(self) -> str | None:
        return os.environ.get("GITLAB_USER_LOGIN") or None

    def rollback_command(self, args: argparse.Namespace) -> str | None:
        return None  # the CLI line, copy-pasteable; the manual job is named in the log (publish)

    def subscribers(self) -> list[Subscriber]:
        """After a rollback, a deployment of the version that is live again (gitlab_deployments.py), with the job's
        CI_JOB_TOKEN, hidden from then on in every text we write. BLUEGREEN_GITLAB_DEPLOYMENTS=false: none."""
        from .gitlab_deployments import SWITCH_VARIABLE, GitLabDeployments

        env = os.environ
        token = env.get("CI_JOB_TOKEN", "").strip()  # hidden since __init__
        api_url, project = env.get("CI_API_V4_URL", "").strip(), env.get("CI_PROJECT_ID", "").strip()
        if not (token and api_url and project) or env.get(SWITCH_VARIABLE, "").strip().lower() in ("false", "0", "no"):
            return []
        return [GitLabDeployments(
            api_url=api_url, project_id=project, token=token, warn=self.output.warning, say=self.output.write,
            environment=env.get("CI_ENVIRONMENT_NAME", "").strip() or None,
            ref=env.get("CI_COMMIT_REF_NAME", "").strip() or None, tag=bool(env.get("CI_COMMIT_TAG", "").strip()),
        )]

    def publish(self, result: Result, args: argparse.Namespace) -> None:
        write_atomic(Path(DOTENV_FILE), self.redact(result.to_dotenv()))
        write_atomic(Path(JUNIT_FILE), self.redact(result.to_junit()))
        job = os.environ.get("BLUEGREEN_ROLLBACK_JOB")  # set by the component's deploy and promote jobs
        pipeline = os.environ.get("CI_PIPELINE_URL")
        if job and result.switched and result.status == "succeeded":
            where = f" of pipeline {pipeline}" if pipeline else ""
            self.output.write(f"or run the manual job {job}{where}")
