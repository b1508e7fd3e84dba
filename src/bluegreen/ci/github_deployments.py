"""GitHub deployments that tell the truth: the repository's Environments page shows the version that is live.

A subscriber the GitHub adapter adds when it has a token (the action's `github-token` input, or
BLUEGREEN_GITHUB_TOKEN in a `run:` step). Against GITHUB_API_URL (GitHub Enterprise: https://HOST/api/v3):

- before the switch (a canary: before its first step; a rollback: before its switch), a deployment of the version
  that goes live (`ref`: the version when it is a commit SHA, else the run's GITHUB_SHA; no auto-merge, no required
  contexts; a payload with version, colour, app and release id), then the status `in_progress` with the run's URL;
- when the run's outcome is decided: `success` with the live URL and `auto_inactive` (a rollback's deployment is
  the rolled-back-to version: it becomes the active one), `failure` when the run failed or switched back (the
  previous deployment stays active), `error` when it was cancelled, `in_progress` again when a canary pauses;
- when traffic moved (or a canary was aborted), any earlier deployment of this app left `in_progress` (a paused
  canary's) is marked `inactive`: nothing stays stuck.

Every request is bounded (a timeout, one retry on a 5xx or a refused connection) and none fails the run: the
outcome is one Delivery in the report (channel "github deployment") and one warning when it failed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

import httpx

from ..config import other_colour
from ..events import Subscriber
from ..payload import outcome_of
from ..report import Delivery, Result
from .api import ApiError, BoundedApi, user_agent
from . import commit_sha

CHANNEL = "github deployment"
PENDING = ("in_progress", "queued", "pending")  # a deployment in one of these has not ended
DESCRIPTION_MAX = 140  # GitHub refuses a longer status description (422)
SWEEP = 10  # the most recent deployments of the environment looked at for one left in progress
API_VERSION = "2022-11-28"


def describe(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 3] + "..."


def explain(response: httpx.Response) -> str:
    """GitHub's error as one line, with what it most likely means."""
    try:
        message = str(response.json().get("message", ""))
    except ValueError:
        message = response.text[:200]
    hint = {
        401: "the token is not valid",
        403: "the token lacks deployments: write (add `permissions: deployments: write` to the job)",
        404: "the repository is not found or the token cannot see it",
        422: "GitHub refused the request",
    }.get(response.status_code, "")
    return "; ".join(part for part in (f"HTTP {response.status_code}", hint, message) if part)


class GitHubDeployments(Subscriber):
    def __init__(
        self, *, api_url: str, repository: str, token: str, sha: str | None, log_url: str | None,
        warn: Callable[[str], None], environment: str | None = None, timeout: float = 10.0,
        budget: float = 60.0,
    ) -> None:
        self.api_url, self.repository, self.sha, self.log_url = api_url.rstrip("/"), repository, sha, log_url
        self.environment_name, self.warn, self.timeout, self.budget = environment, warn, timeout, budget
        self._token = token
        self._api: BoundedApi | None = None
        self.deployment_id: int | None = None
        self.error: str | None = None  # the first failure: once in the report, once as a warning
        self.told: list[str] = []  # the states told, in order

    # --- the events -----------------------------------------------------------------------------

    def reached(self, point: str, result: Result) -> None:
        if point != "before_switch" or self.deployment_id is not None or self.error:
            return
        self.api.restart()
        self._call(self._create, result)

    def finished(self, result: Result) -> None:
        try:
            self.api.restart()
            outcome = outcome_of(result)
            if self.deployment_id is not None and not self.error:
                self._call(self._conclude, result, outcome)
            if not self.error and (result.switched or result.switched_back or (result.command == "abort" and outcome)):
                self._call(self._sweep, result)
            if self.deployment_id is None and not self.error and not self.told:
                return  # nothing went live, nothing was in progress: nothing to tell
            result.notifications.append(Delivery(
                channel=CHANNEL, event=self.told[-1] if self.told else "created", delivered=self.error is None,
                attempts=self.api.attempts, duration=round(self.api.elapsed, 3),
                detail=self.error or self._detail(result),
            ))
        finally:
            self.close()

    # --- what is told ---------------------------------------------------------------------------

    def _create(self, result: Result) -> None:
        environment = self.environment_name or result.environment
        version = result.version or ""
        ref = commit_sha(version) or self.sha
        if not ref:
            raise ApiError(f"version {version!r} is no commit SHA and GITHUB_SHA is not set: no ref to deploy")
        colour = result.idle_colour or (other_colour(result.live_colour) if result.live_colour else "blue")
        created = self._request("POST", "deployments", {
            "ref": ref,
            "task": "deploy",
            "auto_merge": False,
            "required_contexts": [],
            "environment": environment,
            "payload": {"version": version, "colour": colour, "app": result.app, "release_id": result.release_id},
            "description": describe(f"bluegreen {result.command}: {result.app} {version} to {colour}"),
            "transient_environment": False,
            "production_environment": environment.lower() in ("production", "prod", "live"),
        }, expect=201)
        self.deployment_id = int(created["id"])
        self._status("in_progress", f"{result.command}: switching {result.app} to {version} on {colour}")

    def _conclude(self, result: Result, outcome: str | None) -> None:
        version, colour = result.version, result.live_colour
        if outcome in ("succeeded", "rolled_back"):
            what = "rolled back to" if outcome == "rolled_back" else "live:"
            self._status("success", f"{what} {version} on {colour}", environment_url=result.live_url,
                         auto_inactive=True)
        elif outcome == "paused":
            self._status("in_progress", f"canary paused at step {result.canary_step} ({result.canary_weight}% on "
                         f"{result.idle_colour}): promote or abort")
        elif outcome == "cancelled":
            self._status("error", f"cancelled: {result.reason or 'stopped by a signal'}")
        else:  # failed, switched back, or a run that ended without an outcome: the previous deployment stands
            self._status("failure", f"{result.status.replace('_', ' ')}: {result.reason or 'see the run'}")

    def _sweep(self, result: Result) -> None:
        """Deployments of this app left in progress by an earlier run (a paused canary), made inactive."""
        environment = self.environment_name or result.environment
        found = self._request("GET", "deployments", params={"environment": environment, "per_page": SWEEP})
        started = result.started_at
        for deployment in found:
            data = deployment.get("payload")
            if deployment["id"] == self.deployment_id or not isinstance(data, dict) or data.get("app") != result.app:
                continue
            if started is not None and _when(deployment["created_at"]) >= started:
                continue  # a later run's (the lock is free by now): not ours to end
            statuses = self._request("GET", f"deployments/{deployment['id']}/statuses", params={"per_page": 1})
            if statuses and statuses[0]["state"] in PENDING:
                why = "canary aborted" if result.command == "abort" else f"superseded by {result.command} {result.version}"
                self._request("POST", f"deployments/{deployment['id']}/statuses", {
                    "state": "inactive", "description": describe(f"{why}; {result.live_colour} is live"),
                    **({"log_url": self.log_url} if self.log_url else {}),
                }, expect=201)
                self.told.append("inactive")

    def _status(self, state: str, description: str, **extra: Any) -> None:
        body: dict[str, Any] = {"state": state, "description": describe(description)}
        if self.log_url:
            body["log_url"] = self.log_url
        body.update({k: v for k, v in extra.items() if v is not None})
        self._request("POST", f"deployments/{self.deployment_id}/statuses", body, expect=201)
        self.told.append(state)

    def _detail(self, result: Result) -> str:
        states = " -> ".join(self.told)
        where = f"deployment {self.deployment_id}" if self.deployment_id is not None else "earlier deployments"
        return f"{where} of {self.repository}: {states}"

    # --- HTTP -----------------------------------------------------------------------------------

    def _call(self, step: Callable[..., None], *args: Any) -> None:
        try:
            step(*args)
        except ApiError as exc:
            self.error = f"GitHub deployment: {exc}"
            self.warn(self.error + "; the release itself is not affected")

    def _request(self, method: str, path: str, body: dict | None = None, *, params: dict | None = None,
                 expect: int = 200) -> Any:
        return self.api.request(method, f"repos/{self.repository}/{path}", body, params=params, expect=expect)

    @property
    def api(self) -> BoundedApi:
        if self._api is None:
            self._api = BoundedApi(httpx.Client(
                base_url=self.api_url + "/", timeout=self.timeout, follow_redirects=False,
                headers={
                    "Accept": "application/vnd.github+json",
                    "Authorization": f"Bearer {self._token}",
                    "X-GitHub-Api-Version": API_VERSION,
                    "User-Agent": user_agent(),
                },
            ), self.budget, "GitHub", explain)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
