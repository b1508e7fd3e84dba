"""A local GitLab REST API (v4) for `POST /projects/:id/deployments`, checking each request as GitLab does.

As GitLab's lib/api/deployments.rb, app/services/deployments/create_service.rb and app/models/deployment.rb and
environment.rb answer: a CI/CD job token in the JOB-TOKEN header (none or an unknown one: 401 "401 Unauthorized",
before anything else), the five required parameters (Grape: 400 {"error": "sha is missing"}), `tag` a Boolean and
`status` one of running, success, failed, canceled (400 "... is invalid" / "... does not have a valid value"), the
project by ID or URL-encoded path (404 "404 Project Not Found"), the job's user allowed to create deployments (a
Reporter: 403 "403 Forbidden"), `ref` a branch, tag or commit of the project and `sha` a commit of it (400 with the validation
errors), the environment created by name when missing, the environment's latest successful deployment returned
instead of a new one when it has the same sha, ref, tag and status, 201 with the deployment. It keeps each
environment's deployments (those of the deploy jobs too, added by `job_deployment` as GitLab adds them when a job
with `environment: action: start` ends) and answers `latest(environment)` as the Environments page shows it:
the successful deployment that finished last. Injected 5xx answers in `fail_next`.
"""

from __future__ import annotations

import itertools
import json
import threading
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from conftest import LocalHTTPServer, QuietHandler

PREFIX = "/api/v4"
REQUIRED = ("environment", "sha", "ref", "tag", "status")
STATUSES = ("running", "success", "failed", "canceled")
FINISHED = ("success", "failed", "canceled")


class FakeGitLab(LocalHTTPServer):
    def __init__(self, *, project_id: int = 42, path: str = "shop/web", tokens: dict[str, str] | None = None,
                 commits: list[str] | None = None, branches: tuple[str, ...] = ("main",),
                 tags: tuple[str, ...] = ()) -> None:
        self.project_id, self.path = project_id, path
        self.tokens = tokens if tokens is not None else {}  # job token -> the job user's role: developer | reporter
        self.commits = list(commits or [])
        self.branches, self.tags = set(branches), set(tags)
        self.deployments: list[dict] = []
        self.requests: list[dict] = []  # method, path, headers, body, status answered
        self.fail_next: list[int] = []
        self._ids = itertools.count(101)
        self._clock = itertools.count(1)  # finished_at ticks: one deployment after another, never a tie
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def url(self) -> str:
        return f"{self.base_url}{PREFIX}"

    # --- what a test reads or does as GitLab ---------------------------------------------------

    def job_deployment(self, environment: str, sha: str, ref: str = "main", status: str = "success") -> dict:
        """The deployment GitLab itself records for a job with `environment: action: start`, as the job ends."""
        with self._lock:
            return self._create(environment, sha, ref, False, status, deployable="job")

    def latest(self, environment: str) -> dict | None:
        """Environment#last_deployment: its successful deployments, the one that finished last."""
        done = [d for d in self.deployments if d["environment"]["name"] == environment and d["status"] == "success"]
        return max(done, key=lambda d: d["_finished"]) if done else None

    def history(self, environment: str) -> list[tuple[str, str, str]]:
        return [(d["sha"], d["status"], "job" if d["deployable"] else "api") for d in self.deployments
                if d["environment"]["name"] == environment]

    # --- the API -------------------------------------------------------------------------------

    def _commit(self, ref: str) -> str | None:
        """project.commit(ref): a branch or tag (their head: the last commit here) or a commit SHA or its prefix."""
        if ref in self.branches or ref in self.tags:
            return self.commits[-1] if self.commits else None
        if len(ref) >= 7:
            return next((c for c in self.commits if c.startswith(ref)), None)
        return None

    def _create(self, environment: str, sha: str, ref: str, tag: bool, status: str, deployable: str | None) -> dict:
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        deployment = {
            "id": next(self._ids), "iid": len(self.deployments) + 1, "ref": ref, "sha": sha, "tag": tag,
            "status": status, "created_at": now, "updated_at": now,
            "finished_at": now if status in FINISHED else None,
            "environment": {"id": 9, "name": environment, "external_url": None},
            "deployable": {"id": 600 + len(self.deployments), "name": "deploy"} if deployable else None,
            "user": {"id": 1, "username": "ada"},
            "_finished": next(self._clock) if status in FINISHED else 0,
        }
        self.deployments.append(deployment)
        return deployment

    def _post_deployment(self, token: str | None, project: str, params: dict[str, Any]) -> tuple[int, Any]:
        if not token or token not in self.tokens:
            return 401, {"message": "401 Unauthorized"}
        missing = [name for name in REQUIRED if name not in params]
        if missing:
            return 400, {"error": ", ".join(f"{name} is missing" for name in missing)}
        errors = []
        for name in ("environment", "sha", "ref"):
            if not isinstance(params[name], str):
                errors.append(f"{name} is invalid")
        tag = params["tag"]
        if isinstance(tag, str) and tag.lower() in ("true", "false"):  # Grape coerces a form's strings
            tag = tag.lower() == "true"
        if not isinstance(tag, bool):
            errors.append("tag is invalid")
        if params["status"] not in STATUSES:
            errors.append("status does not have a valid value")
        if errors:
            return 400, {"error": ", ".join(errors)}
        if project not in (str(self.project_id), self.path):  # user_project, in the endpoint after the params
            return 404, {"message": "404 Project Not Found"}
        if self.tokens[token] != "developer":  # authorize!(:create_deployment) and (:create_environment)
            return 403, {"message": "403 Forbidden"}
        if self._commit(params["ref"]) is None:
            return 400, {"message": {"ref": ["The branch or tag does not exist"]}}
        environment, sha = params["environment"], params["sha"]
        if not environment.strip():
            return 400, {"message": {"name": ["can't be blank"]}}
        if self._commit(sha) is None:
            return 400, {"message": {"sha": ["The commit does not exist"]}}
        last = self.latest(environment)
        if last and (last["ref"], last["tag"], last["sha"], last["status"]) == (params["ref"], tag, sha,
                                                                               params["status"]):
            return 201, last  # CreateService: the same deployment again is the last one, not a new one
        return 201, self._create(environment, sha, params["ref"], tag, params["status"], deployable=None)

    def _handler(self):  # type: ignore[no-untyped-def]
        fake = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self, status: int, data: Any) -> None:
                body = json.dumps({k: v for k, v in data.items() if not k.startswith("_")}
                                  if isinstance(data, dict) else data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode() if length else ""
                kind = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                if kind == "application/json":
                    try:
                        params = json.loads(raw) if raw else {}
                    except ValueError:
                        params = None
                else:  # a form, as curl --data sends it
                    params = {k: v[-1] for k, v in parse_qs(raw).items()}
                parts = urlsplit(self.path).path.split("/")  # "", "api", "v4", "projects", ":id", "deployments"
                with fake._lock:
                    record = {"method": "POST", "path": self.path, "headers": dict(self.headers), "body": params}
                    fake.requests.append(record)
                    if fake.fail_next:
                        status, data = fake.fail_next.pop(0), {"message": "502 Bad Gateway"}
                    elif len(parts) != 6 or parts[1:4] != ["api", "v4", "projects"] or parts[5] != "deployments":
                        status, data = 404, {"error": "404 Not Found"}
                    elif not isinstance(params, dict):
                        status, data = 400, {"error": "The provided content-type 'application/json' is not valid"}
                    else:
                        status, data = fake._post_deployment(self.headers.get("JOB-TOKEN"), unquote(parts[4]), params)
                    record["status"] = status
                self._answer(status, data)

        return Handler
