"""A local GitHub REST API for the deployments endpoints that checks every request it gets and every answer it
gives against GitHub's own OpenAPI description of its REST API (npm @octokit/openapi, api.github.com.json,
installed by .ci/setup-github-api.sh; its path in BLUEGREEN_GITHUB_OPENAPI or the tools directory).

It serves under /api/v3, as GitHub Enterprise Server does, so the client's GITHUB_API_URL joining is tested too.
What it implements, as GitHub answers: tokens (401 bad credentials, 403 for a read-only token's writes), the
repository (404), refs that must exist (422 "No ref found"), commit statuses that are not green (409 unless
`required_contexts: []`), auto-merge (202 unless `auto_merge: false`), a status description of 140 characters at
most (422), `auto_inactive` (a success marks the earlier successful deployments of that environment inactive),
lists newest first with `per_page`, and injected 5xx answers. A request or answer that the description refuses is
recorded in `invalid` (a test asserts it stays empty) and answered 400.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from conftest import LocalHTTPServer, QuietHandler

PACKAGE = "@octokit/openapi"
SPEC_VARIABLE = "BLUEGREEN_GITHUB_OPENAPI"
TOOLS = Path(os.environ.get("BLUEGREEN_TOOLS_DIR") or Path.home() / ".cache" / "bluegreen" / "tools")
PREFIX = "/api/v3"
SERVER = "https://api.github.com"  # the description's server: requests are matched against it, path and all
DOCS = "https://docs.github.com/rest/deployments"


def spec_path() -> Path | None:
    given = os.environ.get(SPEC_VARIABLE)
    candidates = [Path(given)] if given else []
    candidates.append(TOOLS / "github-api" / "node_modules" / PACKAGE / "generated" / "api.github.com.json")
    return next((path for path in candidates if path.is_file()), None)


def need_spec() -> Path:
    path = spec_path()
    if path is None:
        reason = f"GitHub's OpenAPI description ({PACKAGE}) is not installed (run .ci/setup-github-api.sh)"
        if os.environ.get("BLUEGREEN_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{reason} (BLUEGREEN_REQUIRE_TOOLS=1: not skipping)")
        pytest.skip(reason)
    return path


@functools.cache
def openapi(path: Path) -> tuple[Any, dict]:
    """Loaded once per process (13 MB of JSON): the openapi-core validator and the raw description."""
    from openapi_core import Config, OpenAPI

    spec = json.loads(path.read_text())
    # The description itself is GitHub's: not re-validated here (slow, and not what is tested).
    return OpenAPI.from_dict(spec, config=Config(spec_validator_cls=None)), spec


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeGitHub(LocalHTTPServer):
    def __init__(self, repository: str = "octo/shop", *, tokens: dict[str, str] | None = None,
                 refs: list[str] | None = None) -> None:
        self.validator, self.spec = openapi(need_spec())
        self.repository = repository
        self.tokens = tokens if tokens is not None else {}  # token -> "write" | "read"
        self.refs = list(refs or [])  # full commit SHAs that exist; a ref is one of them or a prefix (>= 7)
        self.deployments: list[dict] = []
        self.statuses: dict[int, list[dict]] = {}  # deployment id -> its statuses, oldest first
        self.requests: list[tuple[str, str, Any, int]] = []  # method, path, body, status answered
        self.invalid: list[str] = []
        self.fail_next: list[int] = []  # statuses to answer the next requests with (e.g. 502)
        self._ids = iter(range(101, 10**9))
        self._lock = threading.Lock()
        super().__init__(self._handler())

    @property
    def url(self) -> str:
        return f"{self.base_url}{PREFIX}"

    # --- what a test reads ---------------------------------------------------------------------

    def state(self, deployment_id: int) -> str | None:
        statuses = self.statuses.get(deployment_id) or []
        return statuses[-1]["state"] if statuses else None

    def history(self, environment: str) -> list[tuple[str, str]]:
        """(version, latest state) of each deployment of `environment`, oldest first."""
        return [(d["payload"].get("version"), self.state(d["id"])) for d in self.deployments
                if d["environment"] == environment]

    def active(self, environment: str) -> dict | None:
        """What the Environments page shows as live: the latest deployment whose state is success."""
        live = [d for d in self.deployments if d["environment"] == environment and self.state(d["id"]) == "success"]
        return live[-1] if live else None

    # --- the API -------------------------------------------------------------------------------

    def _handler(self):  # type: ignore[no-untyped-def]
        fake = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = fake.handle(self.command, self.path, dict(self.headers), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        from openapi_core.testing import MockRequest, MockResponse

        parts = urlsplit(target)
        path = parts.path.removeprefix(PREFIX)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        content_type = (headers.get("Content-Type") or headers.get("content-type") or "").split(";")[0]
        request = MockRequest(SERVER, method.lower(), path, args=query, data=raw or None,
                              content_type=content_type or "application/json",
                              headers={k.lower(): v for k, v in headers.items()})
        try:
            self.validator.validate_request(request)
        except Exception as exc:  # noqa: BLE001 - whatever openapi-core says is wrong with it
            self.invalid.append(f"request {method} {path}: {_why(exc)}")
            return self._record(method, path, raw, 400, _error("Problems parsing JSON", 400))
        with self._lock:
            status, body = self._answer(method, path, query, headers, json.loads(raw) if raw else None)
        response = MockResponse(json.dumps(body).encode(), status_code=status, content_type="application/json")
        try:
            self.validator.validate_response(request, response)
        except Exception as exc:  # noqa: BLE001
            if status < 400 or type(exc).__name__ != "ResponseNotFound":
                self.invalid.append(f"response {status} to {method} {path}: {_why(exc)}")
            else:  # an error the operation does not list (401, 403, 404): GitHub's basic-error shape
                self._check_schema(body, "basic-error", f"response {status} to {method} {path}")
        return self._record(method, path, raw, status, body)

    def _record(self, method: str, path: str, raw: bytes, status: int, body: Any) -> tuple[int, Any]:
        self.requests.append((method, path, json.loads(raw) if raw else None, status))
        return status, body

    def _check_schema(self, body: Any, name: str, what: str) -> None:
        from openapi_schema_validator import OAS30Validator

        errors = list(OAS30Validator(self.spec["components"]["schemas"][name]).iter_errors(body))
        self.invalid += [f"{what}: {error.message}" for error in errors]

    def _answer(self, method: str, path: str, query: dict, headers: dict, body: Any) -> tuple[int, Any]:
        if self.fail_next:
            return self.fail_next.pop(0), _error("Server Error", 502)
        auth = headers.get("Authorization") or headers.get("authorization") or ""
        scheme, _, token = auth.partition(" ")
        access = self.tokens.get(token) if scheme.lower() in ("bearer", "token") else None
        if access is None:
            return 401, _error("Bad credentials", 401)
        version = headers.get("X-GitHub-Api-Version") or headers.get("x-github-api-version")
        if version and version not in ("2022-11-28", "2026-03-10"):
            return 400, _error(f"API version {version} is not supported.", 400)
        segments = path.strip("/").split("/")
        if segments[:3] != ["repos", *self.repository.split("/")]:
            return 404, _error("Not Found", 404)
        rest = segments[3:]
        if method == "POST" and access != "write":
            return 403, _error("Resource not accessible by integration", 403)
        if rest == ["deployments"]:
            return self._create(body) if method == "POST" else (200, self._list(query))
        if len(rest) == 3 and rest[0] == "deployments" and rest[2] == "statuses":
            deployment = next((d for d in self.deployments if str(d["id"]) == rest[1]), None)
            if deployment is None:
                return 404, _error("Not Found", 404)
            if method == "POST":
                return self._status(deployment, body)
            listed = list(reversed(self.statuses[deployment["id"]]))
            return 200, listed[: int(query.get("per_page", 30))]
        return 404, _error("Not Found", 404)

    def _create(self, body: dict) -> tuple[int, Any]:
        ref = body["ref"]
        matches = [sha for sha in self.refs if sha == ref or (len(ref) >= 7 and sha.startswith(ref))]
        if len(matches) != 1:
            return 422, {"message": f"No ref found for: {ref}", "documentation_url": DOCS, "status": "422"}
        if body.get("auto_merge", True):  # the topic branch is behind the default branch in this repository
            return 202, {"message": f"Auto-merged main into {ref} on deployment."}
        if "required_contexts" not in body or body["required_contexts"]:  # its commit statuses are not green
            return 409, {"message": "Conflict: Commit status checks failed for main.", "documentation_url": DOCS}
        environment = body.get("environment", "production")
        ident = next(self._ids)
        deployment = {
            "url": self._repo_url(f"deployments/{ident}"), "id": ident, "node_id": f"DE_{ident}", "sha": matches[0],
            "ref": ref, "task": body.get("task", "deploy"), "payload": body.get("payload", {}),
            "original_environment": environment, "environment": environment, "description": body.get("description"),
            "creator": _user(), "created_at": _now(), "updated_at": _now(),
            "statuses_url": self._repo_url(f"deployments/{ident}/statuses"), "repository_url": self._repo_url(""),
            "transient_environment": body.get("transient_environment", False),
            "production_environment": body.get("production_environment", environment == "production"),
            "performed_via_github_app": None,
        }
        if isinstance(deployment["payload"], str):
            deployment["payload"] = json.loads(deployment["payload"] or "{}")
        self.deployments.append(deployment)
        self.statuses[ident] = []
        return 201, deployment

    def _list(self, query: dict) -> list[dict]:
        found = [d for d in reversed(self.deployments)
                 if all(d.get(key) == query[key] for key in ("environment", "ref", "sha", "task") if key in query)]
        return found[: int(query.get("per_page", 30))]

    def _status(self, deployment: dict, body: dict) -> tuple[int, Any]:
        if len(body.get("description", "")) > 140:
            return 422, {"message": "Validation Failed", "documentation_url": DOCS, "status": "422",
                         "errors": [{"resource": "DeploymentStatus", "code": "custom", "field": "description",
                                     "message": "description is too long (maximum is 140 characters)"}]}
        status = self._add_status(deployment, body["state"], body)
        if body["state"] == "success" and body.get("auto_inactive", True):
            for other in self.deployments:  # earlier successful deployments of the environment: no longer live
                if (other["id"] != deployment["id"] and other["environment"] == status["environment"]
                        and not other["transient_environment"] and self.state(other["id"]) == "success"):
                    self._add_status(other, "inactive", {})
        return 201, status

    def _add_status(self, deployment: dict, state: str, body: dict) -> dict:
        ident = next(self._ids)
        log_url = body.get("log_url", body.get("target_url", ""))
        status = {
            "url": self._repo_url(f"deployments/{deployment['id']}/statuses/{ident}"), "id": ident,
            "node_id": f"DES_{ident}", "state": state, "creator": _user(), "description": body.get("description", ""),
            "environment": body.get("environment", deployment["environment"]), "target_url": log_url,
            "created_at": _now(), "updated_at": _now(), "deployment_url": deployment["url"],
            "repository_url": self._repo_url(""), "environment_url": body.get("environment_url", ""),
            "log_url": log_url, "performed_via_github_app": None,
        }
        self.statuses[deployment["id"]].append(status)
        return status

    def _repo_url(self, rest: str) -> str:
        return f"{SERVER}/repos/{self.repository}" + (f"/{rest}" if rest else "")


def _error(message: str, status: int) -> dict:
    return {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)}


def _user() -> dict:
    login = "github-actions[bot]"
    base = f"{SERVER}/users/{login}"
    return {
        "login": login, "id": 41898282, "node_id": "MDM6Qm90NDE4OTgyODI=",
        "avatar_url": "https://avatars.githubusercontent.com/in/15368?v=4", "gravatar_id": "", "url": base,
        "html_url": "https://github.com/apps/github-actions", "followers_url": f"{base}/followers",
        "following_url": f"{base}/following{{/other_user}}", "gists_url": f"{base}/gists{{/gist_id}}",
        "starred_url": f"{base}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{base}/subscriptions",
        "organizations_url": f"{base}/orgs", "repos_url": f"{base}/repos", "events_url": f"{base}/events{{/privacy}}",
        "received_events_url": f"{base}/received_events", "type": "Bot", "site_admin": False,
    }


def _why(exc: Exception) -> str:
    causes = [exc, *([exc.__cause__] if exc.__cause__ else [])]
    details = getattr(exc.__cause__, "schema_errors", None) or getattr(exc, "schema_errors", None) or []
    return "; ".join([f"{type(c).__name__}: {c}" for c in causes] + [getattr(e, "message", str(e)) for e in details])
