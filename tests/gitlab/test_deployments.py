"""GitLab deployments after a rollback, through the CLI with the GitLab adapter (BLUEGREEN_CI=gitlab) and the local
target, against a local GitLab API that checks each request as GitLab does (fakegitlab.py).

The deploy jobs' own deployments are GitLab's (`environment: action: start`): the test adds them to the fake as
GitLab does when such a job ends; bluegreen adds one only after a rollback, of the version that is live again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from github.test_adapter import local_config

from .fakegitlab import FakeGitLab

TOKEN, REPORTER = "glcbt-64_jobtokenDEVELOPERnever-printed", "glcbt-64_jobtokenREPORTERnever-printed"
V1, V2 = "1111111aaaaaaabbbbbbbcccccccdddddddeeeee", "2222222aaaaaaabbbbbbbcccccccdddddddeeeee"


class Job:
    """The CLI as the component's jobs run it: GITLAB_CI=true and the job's CI_* variables."""

    def __init__(self, root: Path, api: FakeGitLab) -> None:
        self.root, self.api = root, api
        (root / "bluegreen.yml").write_text(local_config(root, free_port(), free_port(), free_port()))

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("CI_", "GITLAB_", "BLUEGREEN_"))}
        base.update({
            "BLUEGREEN_CI": "gitlab", "GITLAB_CI": "true", "CI_JOB_TOKEN": TOKEN, "CI_API_V4_URL": self.api.url,
            "CI_PROJECT_ID": "42", "CI_COMMIT_REF_NAME": "main", "CI_ENVIRONMENT_NAME": "production",
            "CI_JOB_URL": "https://gitlab.example.com/shop/web/-/jobs/77",
        })
        base.update(env)
        base = {k: v for k, v in base.items() if v is not None and v != "<unset>"}
        return subprocess.run([sys.executable, "-m", "bluegreen", *argv, "-c", "bluegreen.yml"], cwd=self.root,
                              env=base, capture_output=True, text=True, timeout=120)

    def deploy(self, version: str) -> None:
        """The component's deploy job: bluegreen deploys; the job passes, and GitLab records its deployment."""
        done = self.run("deploy", f"--version={version}")
        assert done.returncode == 0, done.stdout + done.stderr
        self.api.job_deployment("production", version)

    def report(self) -> dict:
        return json.loads((self.root / "bluegreen-report.json").read_text())

    def deliveries(self) -> list[dict]:
        return [d for d in self.report()["notifications"] if d["channel"] == "gitlab deployment"]

    def warnings(self, done: subprocess.CompletedProcess) -> list[str]:
        return [line for line in done.stderr.splitlines() if "warning: GitLab deployment" in line]


@pytest.fixture
def api():
    fake = FakeGitLab(tokens={TOKEN: "developer", REPORTER: "reporter"}, commits=[V1, V2])
    yield fake
    fake.close()


@pytest.fixture
def job(api):
    root = Path(tempfile.mkdtemp(prefix="gld-"))  # short: the router's socket path in it has a length limit
    yield Job(root, api)
    subprocess.run([sys.executable, "-m", "bluegreen", "down", "-c", "bluegreen.yml"], cwd=root,
                   capture_output=True, env={**os.environ, "BLUEGREEN_CI": "plain"}, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def test_after_a_rollback_the_environments_latest_deployment_is_the_version_live_again(job, api):
    job.deploy(V1)
    job.deploy(V2)
    assert api.latest("production")["sha"] == V2
    back = job.run("rollback", f"--expect-version={V2}")  # as the component's rollback job runs it
    assert back.returncode == 0, back.stdout + back.stderr
    assert api.latest("production")["sha"] == V1  # the Environments page shows v1 again
    assert api.history("production") == [(V1, "success", "job"), (V2, "success", "job"), (V1, "success", "api")]
    [request] = api.requests
    assert request["path"] == "/api/v4/projects/42/deployments" and request["status"] == 201
    assert request["headers"]["JOB-TOKEN"] == TOKEN and "Authorization" not in request["headers"]
    assert request["body"] == {"environment": "production", "sha": V1, "ref": "main", "tag": False,
                               "status": "success"}
    [delivery] = job.deliveries()
    assert delivery["delivered"] and delivery["event"] == "success" and delivery["attempts"] == 1
    assert delivery["detail"] == f"deployment {api.latest('production')['id']} of {V1} to environment production"
    assert job.warnings(back) == []
    assert f"GitLab environment production: deployment {api.latest('production')['id']} of {V1} recorded as live" \
        in back.stderr
    written = back.stdout + back.stderr + (job.root / "bluegreen-report.json").read_text()
    written += (job.root / "bluegreen.env").read_text() + (job.root / "bluegreen-junit.xml").read_text()
    assert TOKEN not in written


def test_a_tag_pipeline_records_its_tag_and_the_bluegreen_environment_when_the_job_has_none(job, api):
    api.tags.add("v1.0.0")
    job.deploy(V1)
    job.deploy(V2)
    back = job.run("rollback", CI_COMMIT_REF_NAME="v1.0.0", CI_COMMIT_TAG="v1.0.0", CI_ENVIRONMENT_NAME="<unset>")
    assert back.returncode == 0, back.stdout + back.stderr
    assert api.requests[-1]["body"] == {"environment": "prod", "sha": V1, "ref": "v1.0.0", "tag": True,
                                        "status": "success"}  # the config's environment: the job named none
    assert api.latest("prod")["sha"] == V1


def test_a_deploy_and_a_failed_rollback_record_nothing(job, api):
    job.deploy(V1)
    assert api.requests == [] and job.deliveries() == []  # the deploy job's own deployment is GitLab's
    job.deploy(V2)
    refused = job.run("rollback", f"--expect-version={V1}")  # v2 is live: this button must not undo it
    assert refused.returncode != 0
    assert api.requests == [] and api.latest("production")["sha"] == V2


def test_a_version_that_is_no_commit_sha_is_one_warning_and_no_request(job, api):
    for version in ("1.4.0", "1.5.0"):
        assert job.run("deploy", f"--version={version}").returncode == 0
    back = job.run("rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert api.requests == []
    [warning] = job.warnings(back)
    assert "version '1.4.0' is no commit SHA" in warning and "keeps showing the version rolled back from" in warning
    [delivery] = job.deliveries()
    assert not delivery["delivered"] and delivery["attempts"] == 0 and delivery["event"] == "skipped"


def test_a_job_token_that_may_not_create_deployments_is_one_warning_and_the_rollback_succeeds(job, api):
    job.deploy(V1)
    job.deploy(V2)
    back = job.run("rollback", CI_JOB_TOKEN=REPORTER)
    assert back.returncode == 0, back.stdout + back.stderr
    [warning] = job.warnings(back)
    assert "HTTP 403" in warning and "Developer role" in warning and "BLUEGREEN_GITLAB_DEPLOYMENTS=false" in warning
    [delivery] = job.deliveries()
    assert not delivery["delivered"] and delivery["attempts"] == 1 and "403 Forbidden" in delivery["detail"]
    assert job.report()["status"] == "succeeded" and api.latest("production")["sha"] == V2
    assert REPORTER not in back.stdout + back.stderr + (job.root / "bluegreen-report.json").read_text()


def test_a_5xx_is_retried_once_and_an_api_that_is_down_costs_a_bounded_time(job, api):
    job.deploy(V1)
    job.deploy(V2)
    api.fail_next = [502]
    assert job.run("rollback").returncode == 0
    assert [r["status"] for r in api.requests] == [502, 201] and api.latest("production")["sha"] == V1
    assert job.deliveries()[0]["attempts"] == 2 and job.deliveries()[0]["delivered"]

    api.fail_next = [502, 503]  # the rollback to v2, and its one retry
    done = job.run("rollback")
    assert done.returncode == 0 and len(api.requests) == 4
    assert not job.deliveries()[0]["delivered"] and "HTTP 503" in job.deliveries()[0]["detail"]
    assert api.latest("production")["sha"] == V1  # GitLab never heard of it: still the last recorded

    closed = job.run("rollback", CI_API_V4_URL=f"http://127.0.0.1:{free_port()}/api/v4")  # nothing listens
    assert closed.returncode == 0 and len(job.warnings(closed)) == 1
    [delivery] = job.deliveries()
    assert "cannot connect" in delivery["detail"] and delivery["attempts"] == 2 and delivery["duration"] < 10


def test_turned_off_or_without_a_job_token_no_request(job, api):
    job.deploy(V1)
    job.deploy(V2)
    assert job.run("rollback", BLUEGREEN_GITLAB_DEPLOYMENTS="false").returncode == 0
    assert job.run("rollback", CI_JOB_TOKEN="<unset>").returncode == 0
    assert api.requests == [] and job.deliveries() == []


def test_the_fake_answers_as_gitlab(api):
    url = f"{api.url}/projects/42/deployments"
    body = {"environment": "production", "sha": V1, "ref": "main", "tag": False, "status": "success"}

    def post(json_body: dict, token: str | None = TOKEN, where: str = url) -> httpx.Response:
        return httpx.post(where, json=json_body, headers={"JOB-TOKEN": token} if token else {}, timeout=10)

    assert post(body, token=None).json() == {"message": "401 Unauthorized"}
    missing = post({k: v for k, v in body.items() if k not in ("sha", "tag")})
    assert missing.status_code == 400 and missing.json() == {"error": "sha is missing, tag is missing"}
    assert post({**body, "status": "created"}).json() == {"error": "status does not have a valid value"}
    assert post(body, where=f"{api.url}/projects/7/deployments").status_code == 404
    assert post(body, where=f"{api.url}/projects/shop%2Fweb/deployments").status_code == 201  # the project's path
    assert post(body, token=REPORTER).status_code == 403
    unknown = post({**body, "sha": "3" * 40})
    assert unknown.status_code == 400 and unknown.json() == {"message": {"sha": ["The commit does not exist"]}}
    assert post({**body, "ref": "nowhere"}).json() == {"message": {"ref": ["The branch or tag does not exist"]}}
    again = post(body)
    assert again.status_code == 201 and len(api.deployments) == 1  # the same as the last: no second deployment
    form = httpx.post(url, data={**body, "tag": "false", "sha": V2}, headers={"JOB-TOKEN": TOKEN}, timeout=10)
    assert form.status_code == 201 and api.latest("production")["sha"] == V2


def test_the_components_rollback_job_leaves_the_version_live_again_on_top(project, gitlab_ci_local):
    """The component's jobs under gitlab-ci-local, its rollback job's bluegreen against the local GitLab API."""
    project.use_pipeline("deploy-rollback.yml")
    first = project.commit("first release")
    project.write("CHANGELOG", "second release\n")
    second = project.commit("second release")
    api = FakeGitLab(project_id=1217, tokens={TOKEN: "developer"}, commits=[first, second])  # gitlab-ci-local's id
    try:
        project.variables.update(CI_JOB_TOKEN=TOKEN, CI_API_V4_URL=api.url)
        project.git("checkout", "-q", first)
        run1 = project.gcl("bluegreen-deploy")
        assert run1.returncode == 0, run1.output
        api.job_deployment("staging", first)  # as GitLab records the deploy job's `environment: action: start`
        project.git("checkout", "-q", "main")
        run2 = project.gcl("bluegreen-deploy")
        assert run2.returncode == 0, run2.output
        api.job_deployment("staging", second)
        assert api.requests == []  # a deploy job's deployment is GitLab's own

        back = project.gcl("--manual", "bluegreen-rollback", "bluegreen-rollback")
        assert "rollback succeeded: blue is live with version " + first in back.output, back.output
        [request] = api.requests
        assert request["status"] == 201 and request["path"] == "/api/v4/projects/1217/deployments"
        assert request["body"] == {"environment": "staging", "sha": first, "ref": "main", "tag": False,
                                   "status": "success"}
        assert api.latest("staging")["sha"] == first
        assert "GitLab environment staging: deployment" in back.output
        assert TOKEN not in run1.output + run2.output + back.output
    finally:
        api.close()
