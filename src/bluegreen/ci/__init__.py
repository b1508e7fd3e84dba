"""CI adapters: thin layers that present one engine run in the CI it runs in.

An adapter supplies the output (log groups, sections: one subscriber of the engine's
events), the facts of the run (job URL, actor), the rollback command a later job or
person runs, and writes the result where that CI reads it (step outputs, dotenv, job
summary). The engine never knows which CI it runs in.
"""

from __future__ import annotations

import argparse
import os
import re
from importlib import import_module

from ..events import Output, Subscriber
from ..redaction import Redactor
from ..report import Result

# The variables the servers target's config reads its SSH secrets from (`ssh.private_key: ${SSH_PRIVATE_KEY}`):
# the GitHub action's ssh-* inputs and the GitLab component's jobs put the secrets there.
SSH_SECRET_VARIABLES = ("SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS", "SSH_KEY_PASSPHRASE")

# A version that names a commit (the component's default version is $CI_COMMIT_SHA; a workflow's is often github.sha):
# a CI's deployment records it as the commit that is live. Lowercase hex, abbreviated (7) up to a full SHA-1.
COMMIT_SHA = re.compile(r"[0-9a-f]{7,40}")

__all__ = ["COMMIT_SHA", "SSH_SECRET_VARIABLES", "Adapter", "Redactor", "commit_sha", "detect"]


def commit_sha(version: str | None) -> str | None:
    """The version itself when it is a commit SHA, else None."""
    return version if version and COMMIT_SHA.fullmatch(version) else None


class RedactedOutput(Output):
    """The default output with the config's secrets hidden in every line (a check's detail may quote what an app
    or a metrics endpoint echoed: a header value)."""

    def __init__(self, secrets: Redactor) -> None:
        super().__init__()
        self.secrets = secrets

    def write(self, line: str) -> None:
        super().write(self.secrets.redact(line))


class Adapter:
    """Plain terminal: human lines on stderr, secrets hidden; nothing else to write."""

    name = "plain"

    def __init__(self) -> None:
        self.secrets = Redactor()
        self.output: Output = RedactedOutput(self.secrets)

    @property
    def run_url(self) -> str | None:
        return None

    @property
    def actor(self) -> str | None:
        return os.environ.get("USER")

    def rollback_command(self, args: argparse.Namespace) -> str | None:
        """None: the CLI's own `bluegreen rollback -c ... -e ...`."""
        return None

    def subscribers(self) -> list[Subscriber]:
        """What this CI adds beside its output (GitHub: its deployments), heard after the output."""
        return []

    def publish(self, result: Result, args: argparse.Namespace) -> None:
        """Write the result where this CI reads it."""

    def redact(self, text: str) -> str:
        """Text written to files (the report), with the secrets this CI masks replaced."""
        return self.secrets.redact(text)

    def protect(self, secrets: list[str]) -> None:
        """The config's secrets (secret_values: marked fields, and the variables a router's library reads), once
        loaded: hidden in every line written from then on (a CI that redacts its log itself adds them there too)."""
        for value in secrets:
            self.secrets.add(value)


# env var that says "you run in this CI" -> "module:Adapter class"
_DETECT = {
    "GITLAB_CI": "bluegreen.ci.gitlab:GitLabAdapter",
    "GITHUB_ACTIONS": "bluegreen.ci.github:GitHubAdapter",
}


def detect() -> Adapter:
    """The adapter for the CI this process runs in; BLUEGREEN_CI=plain|gitlab|github overrides."""
    forced = os.environ.get("BLUEGREEN_CI")
    for variable, spec in _DETECT.items():
        module, _, name = spec.partition(":")
        wanted = forced == module.rsplit(".", 1)[1] if forced else os.environ.get(variable) == "true"
        if wanted:
            return getattr(import_module(module), name)()
    return Adapter()
