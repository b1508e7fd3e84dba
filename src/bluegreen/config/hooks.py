"""The team's own steps at the points of a release: a command or an HTTP call per hook.

`before_switch` is a gate: it runs after the checks, and a failure (non-zero exit, non-2xx answer, a timeout)
stops the run before any traffic moves. Every other point is told, not asked: a failure there is reported and
changes nothing that is live. What each point means: payload.HOOK_POINTS and the README.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Duration, HttpUrl, Model, shown_url
from .checks import RequestHeaders


class HttpCall(Model):
    """An HTTP request whose JSON body is the run's payload (see the README's example)."""

    url: HttpUrl = Field(description="Where the request goes, e.g. https://ops.example.com/hooks/deploy.")
    method: Literal["POST", "PUT", "PATCH", "GET"] = Field("POST", description="GET sends no body.")
    headers: RequestHeaders = Field(
        default_factory=dict, description="Request headers, e.g. Authorization: 'Bearer ${OPS_TOKEN}'. Their values never "
        "appear in logs or reports."
    )


class Hook(Model):
    """One step: `command` (argv, run like the test suite: its own process group, a timeout, stopped with the run,
    `BLUEGREEN_*` variables with the run so far) or `http`."""

    name: str | None = Field(None, description="Shown in logs and the report; default the command or the URL's host.")
    command: list[str] | str | None = Field(
        None, description="argv list; a single string is run by /bin/sh -c and needs `shell: true`. {version}, "
        "{colour}, {app}, {environment} are filled in."
    )
    shell: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    working_directory: str | None = Field(None, description="Relative to the config file; default its folder.")
    http: HttpCall | None = None
    timeout: Duration = Field(60, description="A hook still running then is stopped and counts as failed.")

    @model_validator(mode="after")
    def _one_kind(self) -> Hook:
        if (self.command is None) == (self.http is None):
            raise ValueError("give either command or http")
        if isinstance(self.command, str) and not self.shell:
            raise ValueError("a string command runs through /bin/sh only with `shell: true`; or give an argv list")
        if isinstance(self.command, list) and not self.command:
            raise ValueError("command must not be empty")
        return self

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.http is not None:  # without a query string or user:password: a token there stays out of the log
            return f"{self.http.method} {shown_url(self.http.url)}"
        return self.command if isinstance(self.command, str) else " ".join(self.command or [])


class Hooks(Model):
    """The steps at each point of a release, run in order, each once per run, while the deploy lock is held."""

    before_switch: list[Hook] = Field(
        default_factory=list, description="A gate, after the checks and before any traffic moves: a failure stops the "
        "run (exit 1, live untouched). Also before a rollback's switch."
    )
    after_switch: list[Hook] = Field(
        default_factory=list, description="Traffic moved (a canary: its 100% step), before verification through the "
        "live URL. A failure is reported."
    )
    after_verify: list[Hook] = Field(
        default_factory=list, description="Live and verified: the release stands. A failure is reported."
    )
    on_switch_back: list[Hook] = Field(
        default_factory=list, description="A release failed (or was cancelled) after the switch and traffic went back."
    )
    on_rollback: list[Hook] = Field(
        default_factory=list, description="`rollback` made the previous version live again, verified."
    )
    on_failure: list[Hook] = Field(
        default_factory=list, description="The run failed: before the switch, after it (switched back), or switching "
        "back failed."
    )
    on_cancel: list[Hook] = Field(
        default_factory=list, description="The run was cancelled (SIGINT, SIGTERM): after the cancellation rule has "
        "left live as it should be. Once a run is cancelled each hook gets at most 5 s: CI kills the job seconds later."
    )
