"""GitLab deployments after a rollback: the environment's page shows the version that is live again.

GitLab records a deployment for each job with `environment: action: start` (the component's deploy and promote
jobs) and shows, as the environment's latest deployment, its most recently finished successful one
(Environment#last_deployment: `success`, ordered by `finished_at`). So a deploy or promote needs nothing from us:
its job's own deployment is the right one, and a deploy that fails or switches back fails its job, whose deployment
is then `failed` and the earlier success stays on top. A rollback is the one case GitLab cannot know: the
component's rollback job uses `action: access` (no deployment; `action: start` would record the pipeline's commit,
the version rolled back FROM). So after a `rollback` that succeeded, this subscriber (the GitLab adapter adds it
when the job has a CI_JOB_TOKEN) creates a deployment of the version the rollback made live:

    POST $CI_API_V4_URL/projects/$CI_PROJECT_ID/deployments   (header JOB-TOKEN; GitLab 16.2 and later)
    {environment: CI_ENVIRONMENT_NAME or the bluegreen environment, sha: the version, ref: CI_COMMIT_REF_NAME,
     tag: CI_COMMIT_TAG is set, status: success}

Only when the version is a commit SHA (the component's default version, $CI_COMMIT_SHA): GitLab's deployment
records a commit, and an image tag or a release name is none; then no request, one warning saying so.

Bounded: a timeout, one retry on a 5xx or a refused connection (GitLab's create service returns the environment's
latest deployment instead of a second one when it has the same sha, ref, tag and status, so a retried POST that had
landed adds nothing), never a retry after a request that was sent and got no answer. Never fails the run: the
outcome is one Delivery in the report (channel "gitlab deployment"), and one warning when it failed. The job token
is hidden in every text bluegreen writes (GitLab masks it in the job log too). BLUEGREEN_GITLAB_DEPLOYMENTS=false
turns this off.
"""

from __future__ import annotations

from typing import Any, Callable
from urllib.parse import quote

import httpx

from ..events import Subscriber
from ..payload import outcome_of
from ..report import Delivery, Result
from . import commit_sha
from .api import ApiError, BoundedApi, user_agent

CHANNEL = "gitlab deployment"
SWITCH_VARIABLE = "BLUEGREEN_GITLAB_DEPLOYMENTS"  # false: no deployment after a rollback


def explain(response: httpx.Response) -> str:
    """GitLab's error as one line, with what it most likely means and what to do."""
    try:
        data = response.json()
        message = data.get("message", data.get("error", "")) if isinstance(data, dict) else data
    except ValueError:
        message = response.text[:200]
    if isinstance(message, dict):  # a validation error: {"sha": ["The commit does not exist"]}
        message = "; ".join(f"{field}: {', '.join(map(str, errors))}" for field, errors in message.items())
    hint = {
        400: "GitLab refused the request",
        401: "the job token was refused (the Deployments API takes a job token from GitLab 16.2 on)",
        403: (
            "the job token is not allowed to create deployments: the person who runs the rollback job needs the "
            "Developer role or higher and, on a protected environment, the right to deploy to it; or set "
            f"{SWITCH_VARIABLE}=false to not record rollbacks"
        ),
        404: "the project CI_PROJECT_ID is not found or the job token cannot see it",
    }.get(response.status_code, "")
    return "; ".join(part for part in (f"HTTP {response.status_code}", hint, str(message)) if part)


class GitLabDeployments(Subscriber):
    def __init__(
        self, *, api_url: str, project_id: str, token: str, warn: Callable[[str], None],
        say: Callable[[str], None] | None = None, environment: str | None = None, ref: str | None = None,
        tag: bool = False,
        timeout: float = 10.0, budget: float = 30.0,
    ) -> None:
        self.api_url, self.project_id, self.warn, self.say = api_url.rstrip("/"), project_id, warn, say
        self.environment_name, self.ref, self.tag = environment, ref, tag
        self.timeout, self.budget = timeout, budget
        self._token = token
        self.api: BoundedApi | None = None
        self.deployment_id: int | None = None

    def finished(self, result: Result) -> None:
        if result.command != "rollback" or outcome_of(result) != "rolled_back":
            return  # a deploy's or promote's own job records its deployment; a failed rollback changed nothing
        environment = self.environment_name or result.environment
        sha = commit_sha(result.version)
        if sha is None:
            why = (f"version {result.version!r} is no commit SHA, so GitLab cannot record it as a deployment: the "
                   f"environment {environment} keeps showing the version rolled back from until the next deploy (the "
                   f"component's default version, $CI_COMMIT_SHA, is a commit SHA)")
            self.warn(f"GitLab deployment: {why}")
            result.notifications.append(Delivery(channel=CHANNEL, event="skipped", delivered=False, detail=why))
            return
        body = {"environment": environment, "sha": sha, "ref": self.ref or sha, "tag": self.tag, "status": "success"}
        error = None
        try:
            created = self._post(body)
            self.deployment_id = int(created["id"])
        except (ApiError, KeyError, TypeError, ValueError) as exc:
            error = f"GitLab deployment: {exc}"
            self.warn(error + "; the rollback itself is not affected")
        if error is None and self.say:
            self.say(f"GitLab environment {environment}: deployment {self.deployment_id} of {sha} recorded as live")
        result.notifications.append(Delivery(
            channel=CHANNEL, event="success", delivered=error is None, attempts=self.api.attempts if self.api else 0,
            duration=round(self.api.elapsed, 3) if self.api else 0.0,
            detail=error or f"deployment {self.deployment_id} of {sha} to environment {environment}",
        ))

    def _post(self, body: dict[str, Any]) -> Any:
        url = f"{self.api_url}/projects/{quote(self.project_id, safe='')}/deployments"
        headers = {"JOB-TOKEN": self._token, "User-Agent": user_agent()}
        self.api = BoundedApi(httpx.Client(timeout=self.timeout, follow_redirects=False, headers=headers),
                              self.budget, "GitLab", explain)
        try:
            return self.api.request("POST", url, body, expect=201)
        finally:
            self.api.close()
