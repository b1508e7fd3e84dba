"""The component end to end: gitlab-ci-local runs its jobs on this host against the local target
(the example app behind a real Caddy), and traffic is checked from outside, through the proxy."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import threading
from pathlib import Path
from xml.etree import ElementTree as ET

import httpx
import pytest

from .conftest import COMPONENT, ORIGIN, SECRET, GitLabProject, free_port, new_project

OUTPUTS = ["STATUS", "LIVE_COLOUR", "PREVIOUS_COLOUR", "IDLE_COLOUR", "VERSION", "PREVIOUS_VERSION",
           "PREVIEW_URL", "LIVE_URL", "ROLLBACK_COMMAND"]


def live(project: GitLabProject, path: str = "/version") -> httpx.Response:
    return httpx.get(project.live_url + path, timeout=5)


def live_version(project: GitLabProject) -> str:
    response = live(project)
    assert response.status_code == 200, response.text
    return response.text.strip()


def seed(project: GitLabProject, version: str) -> None:
    """A release already live before the pipeline runs, deployed with the plain CLI."""
    done = project.cli("deploy", "-c", "bluegreen.yml", "--version", version)
    assert done.returncode == 0, done.stderr
    assert live_version(project) == version


def assert_secret_never_shown(project: GitLabProject, *runs) -> None:
    for run in runs:
        assert SECRET not in run.output
    state = list(project.state_dir.rglob("*")) if project.state_dir else []  # history, app and proxy logs
    for path in [*(project.dir / ".gitlab-ci-local").rglob("*"), *project.dir.glob("bluegreen*"), *state]:
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path


class Sampler:
    """Asks the live URL for its version every 20 ms while a job runs."""

    def __init__(self, url: str) -> None:
        self.url, self.seen, self._stop = url, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._stop.wait(0.02):
                try:
                    r = client.get(self.url)
                    self.seen.append(f"{r.status_code} {r.text.strip()}")
                except httpx.HTTPError as exc:
                    self.seen.append(type(exc).__name__)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def test_deploy_switches_and_the_manual_rollback_job_switches_back(project: GitLabProject) -> None:
    project.use_pipeline("deploy-rollback.yml")
    first = project.commit("first release")
    listed = project.gcl("--list")  # gitlab-ci-local validates the expanded pipeline against GitLab's schema
    assert listed.returncode == 0 and "bluegreen-rollback" in listed.output, listed.output
    run1 = project.gcl("bluegreen-deploy")
    assert run1.returncode == 0, run1.output
    assert live_version(project) == first  # the version input defaults to the commit SHA

    project.write("CHANGELOG", "second release\n")
    second = project.commit("second release")
    run2 = project.gcl("bluegreen-deploy")
    assert run2.returncode == 0, run2.output
    assert live_version(project) == second

    # The dotenv report, as the jobs that need the deploy job receive it.
    env = project.dotenv("bluegreen-deploy")
    assert set(OUTPUTS) <= {k.removeprefix("BLUEGREEN_") for k in env}
    assert env["BLUEGREEN_STATUS"] == "succeeded"
    assert (env["BLUEGREEN_LIVE_COLOUR"], env["BLUEGREEN_PREVIOUS_COLOUR"], env["BLUEGREEN_IDLE_COLOUR"]) == (
        "green", "blue", "blue")
    assert (env["BLUEGREEN_VERSION"], env["BLUEGREEN_PREVIOUS_VERSION"]) == (second, first)
    assert env["BLUEGREEN_LIVE_URL"] == project.live_url
    assert httpx.get(env["BLUEGREEN_PREVIEW_URL"] + "/version", timeout=5).text.strip() == second
    assert env["BLUEGREEN_ROLLBACK_COMMAND"] == "bluegreen rollback -c bluegreen.yml -e staging"
    assert "or run the manual job bluegreen-rollback of pipeline" in run2.output

    # The JSON report is an artifact; the JUnit report holds the smoke checks and the verification.
    report = json.loads((project.dir / ".gitlab-ci-local/artifacts/bluegreen-deploy/bluegreen-report.json").read_text())
    assert (report["status"], report["version"]) == ("succeeded", second)
    suite = ET.parse(project.dir / "bluegreen-junit.xml").getroot()
    names = [case.get("name") for case in suite.iter("testcase")]
    assert {"version (preview)", "home (preview)", "version (live)"} <= set(names)
    assert suite.get("failures") == "0"

    # The release history on the target names the GitLab job that made each release.
    status = json.loads(project.cli("status", "-c", "bluegreen.yml", "--json").stdout)
    assert status["history"][0]["version"] == second
    assert status["history"][0]["run_url"].startswith(ORIGIN.removesuffix(".git") + "/-/jobs/")

    # The manual rollback job reads the deploy job's dotenv and switches back.
    back = project.gcl("--manual", "bluegreen-rollback", "bluegreen-rollback")
    assert "rollback succeeded: blue is live with version " + first in back.output, back.output
    assert live_version(project) == first
    assert project.dotenv("bluegreen-rollback")["BLUEGREEN_LIVE_COLOUR"] == "blue"

    # Pressed again, the button refuses: the version its dotenv names is no longer live.
    again = project.gcl("--manual", "bluegreen-rollback", "bluegreen-rollback")
    assert f"version {first} is live, not {second}" in again.output, again.output
    assert live_version(project) == first

    assert_secret_never_shown(project, run1, run2, back, again)


def test_failing_smoke_check_fails_the_deploy_job_and_leaves_live_traffic_alone(project: GitLabProject) -> None:
    seed(project, "1")
    project.use_pipeline("smoke-fail.yml")
    sha = project.commit("a broken release")
    assert project.gcl("--list").returncode == 0
    with Sampler(project.live_url + "/version") as sampler:
        run = project.gcl("bluegreen-deploy")

    assert run.returncode != 0, run.output
    assert "deploy failed: smoke check 'version' failed on green" in run.output, run.output
    assert "status 500" in run.output
    assert len(sampler.seen) > 20 and set(sampler.seen) == {"200 1"}, set(sampler.seen)
    assert live_version(project) == "1"

    env = project.dotenv("bluegreen-deploy")  # reported even though the job failed
    assert (env["BLUEGREEN_STATUS"], env["BLUEGREEN_SWITCHED"], env["BLUEGREEN_LIVE_COLOUR"]) == ("failed", "false", "blue")
    assert env["BLUEGREEN_VERSION"] == f"{sha}+fail-smoke"
    failures = ET.parse(project.dir / "bluegreen-junit.xml").getroot().findall("testcase/failure")
    assert failures and "status 500" in failures[0].get("message")
    assert_secret_never_shown(project, run)


def test_no_switch_waits_for_the_manual_promote_job(project: GitLabProject) -> None:
    seed(project, "1")
    project.use_pipeline("approval.yml")
    sha = project.commit("a release to approve")

    listed = project.gcl("--list")
    jobs = {line.split()[0]: line.split() for line in listed.output.splitlines() if line.startswith("web-")}
    assert set(jobs) == {"web-deploy", "web-promote", "web-rollback"}, listed.output
    assert jobs["web-deploy"][1] == "release" and jobs["web-promote"][2] == "manual"

    run = project.gcl("web-deploy")
    assert run.returncode == 0, run.output
    env = project.dotenv("web-deploy")
    version = env["BLUEGREEN_VERSION"]
    assert sha.startswith(version) and env["BLUEGREEN_STATUS"] == "prepared"
    assert live_version(project) == "1"  # nothing switched yet
    assert httpx.get(env["BLUEGREEN_PREVIEW_URL"] + "/version", timeout=5).text.strip() == version

    promoted = project.gcl("--manual", "web-promote", "web-promote")
    assert promoted.returncode == 0, promoted.output
    assert live_version(project) == version
    assert project.dotenv("web-promote")["BLUEGREEN_STATUS"] == "succeeded"

    # Another run prepares a later version: this pipeline's promote button must not switch to it.
    later = project.cli("deploy", "-c", "bluegreen.yml", "--version", "later", "--no-switch")
    assert later.returncode == 0, later.stderr
    again = project.gcl("--manual", "web-promote", "web-promote")
    assert again.returncode != 0
    assert f"the prepared version is later, not {version}" in again.output, again.output
    assert live_version(project) == version


def test_auto_rollback_false_leaves_the_switch_back_to_a_person(project: GitLabProject) -> None:
    seed(project, "1")
    project.use_pipeline("broken-live.yml")
    project.commit("breaks once live")
    assert project.gcl("--list").returncode == 0
    run = project.gcl("bluegreen-deploy")

    assert run.returncode != 0, run.output
    assert "auto_rollback is off" in run.output, run.output
    env = project.dotenv("bluegreen-deploy")
    assert (env["BLUEGREEN_STATUS"], env["BLUEGREEN_LIVE_COLOUR"]) == ("rollback_failed", "green")
    assert live(project).status_code == 500  # the broken release stays live: the input reached the engine

    # The person runs the rollback command from the dotenv, as printed.
    done = subprocess.run(shlex.split(env["BLUEGREEN_ROLLBACK_COMMAND"]), cwd=project.dir,
                          env={**project.env, **project.variables}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert live_version(project) == "1"


def test_the_component_projects_own_pipeline(gitlab_ci_local: str, tmp_path: Path) -> None:
    """gitlab/.gitlab-ci.yml includes the component at its commit, and a later job reads the outputs."""
    repo = tmp_path / "component"
    shutil.copytree(COMPONENT, repo)
    proxy = free_port()
    p = new_project(gitlab_ci_local, repo, tmp_path, f"http://127.0.0.1:{proxy}", {
        "SELFTEST_STATE_DIR": str(tmp_path / "state"), "SELFTEST_PROXY_PORT": str(proxy),
        "SELFTEST_BLUE_PORT": str(free_port()), "SELFTEST_GREEN_PORT": str(free_port()),
    })
    sha = p.commit("component")
    try:
        run = p.gcl("--needs", "selftest-outputs")
        assert run.returncode == 0, run.output
        assert "outputs ok" in run.output
        assert live_version(p) == sha
    finally:
        p.cli("down", "-c", "tests/bluegreen.yml")

    def jobs(tag: str | None) -> set[str]:
        extra = ["--variable", f"CI_COMMIT_TAG={tag}"] if tag else []
        listed = p.gcl("--list", *extra)
        assert listed.returncode == 0, listed.output
        return {line.split()[0] for line in listed.output.splitlines()[1:] if line and not line.startswith(" ")}

    assert "release" in jobs("1.2.0")
    assert "release" not in jobs(None)
    assert "release" not in jobs("v1.2.0")  # the catalog wants 1.2.0, not v1.2.0


E2E_SUITE = """\
import os, sys, urllib.request
url = os.environ["BLUEGREEN_PREVIEW_URL"]
got = urllib.request.urlopen(url + "/version", timeout=5).read().decode().strip()
print(f"preview {url} answers {got}")
sys.exit(1 if os.environ.get("E2E_MUST_FAIL") == "1" or got != os.environ["BLUEGREEN_VERSION"] else 0)
"""


def test_the_teams_test_job_gates_an_automatic_promote(project: GitLabProject) -> None:
    seed(project, "1")
    project.use_pipeline("tested-promote.yml")
    project.write("tests_e2e.py", E2E_SUITE)
    sha = project.commit("a release its tests let through")
    listed = project.gcl("--list")
    assert listed.returncode == 0, listed.output
    jobs = {line.split()[0]: line.split() for line in listed.output.splitlines() if line.startswith(("bluegreen-", "e2e"))}
    assert jobs["bluegreen-promote"][2] == "on_success", listed.output

    run = project.gcl("--needs", "bluegreen-promote")  # deploy -> e2e-tests -> promote, no person involved
    assert run.returncode == 0, run.output
    assert f"answers {sha}" in run.output, run.output
    assert live_version(project) == sha
    assert project.dotenv("bluegreen-promote")["BLUEGREEN_STATUS"] == "succeeded"


def test_a_failing_test_job_means_no_switch(project: GitLabProject) -> None:
    seed(project, "1")
    project.use_pipeline("tested-promote.yml")
    project.write("tests_e2e.py", E2E_SUITE)
    project.variables["E2E_MUST_FAIL"] = "1"
    project.commit("a release its tests stop")
    with Sampler(project.live_url + "/version") as sampler:
        run = project.gcl("--needs", "bluegreen-promote")
    assert run.returncode != 0, run.output
    assert project.dotenv("bluegreen-deploy")["BLUEGREEN_STATUS"] == "prepared"
    assert " FAIL  e2e-tests" in run.output, run.output
    assert "bluegreen-promote " not in run.output, run.output  # never started
    assert live_version(project) == "1"
    assert sampler.seen and set(sampler.seen) == {"200 1"}, set(sampler.seen)


def test_the_contract_job_runs_a_release_after_the_expand(project: GitLabProject) -> None:
    """migrations in the config: the deploy job expands; the manual contract job is refused while the previous
    colour runs, and with `contract: retire-previous` stops it first, then contracts."""
    config = (project.dir / "bluegreen.yml").read_text()
    log = project.dir / "migrations.log"
    project.write("bluegreen.yml", config + (
        "migrations:\n"
        f'  expand: {{command: "echo expand {{version}} >> {log}", shell: true}}\n'
        f'  contract: {{command: "echo contract {{version}} >> {log}", shell: true}}\n'
    ))
    seed(project, "1")
    pipeline = (Path(__file__).parent / "pipelines" / "contract.yml").read_text()
    project.write(".gitlab-ci.yml", pipeline)
    sha = project.commit("expands the schema")
    listed = project.gcl("--list")
    assert "web-contract" in listed.output, listed.output
    deployed = project.gcl("web-deploy")
    assert deployed.returncode == 0, deployed.output
    assert project.dotenv("web-deploy")["BLUEGREEN_PENDING_CONTRACT"] == sha

    refused = project.gcl("--manual", "web-contract", "web-contract")  # allow_failure: the pipeline goes on
    assert project.dotenv("web-contract")["BLUEGREEN_STATUS"] == "failed", refused.output
    assert "blue still runs version 1, which depends on the old schema" in refused.output, refused.output
    assert log.read_text().split("\n")[-2] == f"expand {sha}"  # the contract did not run

    project.write(".gitlab-ci.yml", pipeline.replace("contract: manual", "contract: retire-previous"))
    project.commit("contract with retire-previous")
    done = project.gcl("--manual", "web-contract", "web-contract")
    assert done.returncode == 0, done.output
    env = project.dotenv("web-contract")
    assert (env["BLUEGREEN_STATUS"], env["BLUEGREEN_PENDING_CONTRACT"]) == ("succeeded", "")
    assert log.read_text().split("\n")[-2] == f"contract {sha}"
    assert live_version(project) == sha
    status = json.loads(project.cli("status", "-c", "bluegreen.yml", "--json").stdout)
    assert {c["colour"]: c["running"] for c in status["colours"]} == {"blue": False, "green": True}


def test_a_paused_canary_is_promoted_and_aborted_by_its_manual_jobs(project: GitLabProject) -> None:
    """strategy: canary behind HAProxy, paused at 25% until promoted: the deploy job ends paused, the manual
    promote job resumes it to 100%; the next release's manual abort job sends it back to 0%."""
    if not shutil.which("haproxy", path="/usr/sbin:/usr/bin:/usr/local/sbin"):
        pytest.fail("haproxy is not installed (.ci/setup-packages.sh installs it)")
    config = (project.dir / "bluegreen.yml").read_text()
    assert 'router: {listen: "127.0.0.1:' in config
    project.write("bluegreen.yml", config.replace("router: {listen:", "router: {kind: haproxy, listen:") + (
        "strategy: canary\ncanary: {steps: [{weight: 25, pause: until promoted}]}\n"))
    seed(project, "1")  # the first release goes out whole
    project.write(".gitlab-ci.yml", (Path(__file__).parent / "pipelines" / "canary.yml").read_text())
    sha = project.commit("a canary release")
    listed = project.gcl("--list")
    assert "web-promote" in listed.output and "web-abort" in listed.output, listed.output

    paused = project.gcl("web-deploy")
    assert paused.returncode == 0, paused.output
    env = project.dotenv("web-deploy")
    assert (env["BLUEGREEN_STATUS"], env["BLUEGREEN_CANARY_WEIGHT"]) == ("paused", "25"), env
    answers = {live_version(project) for _ in range(40)}
    assert answers == {"1", sha}, answers  # both versions serve while paused

    promoted = project.gcl("--manual", "web-promote", "web-promote")
    assert promoted.returncode == 0, promoted.output
    assert project.dotenv("web-promote")["BLUEGREEN_STATUS"] == "succeeded"
    assert {live_version(project) for _ in range(20)} == {sha}

    project.write("README.txt", "the next release\n")
    second = project.commit("the next canary")
    assert project.gcl("web-deploy").returncode == 0
    assert project.dotenv("web-deploy")["BLUEGREEN_STATUS"] == "paused"
    aborted = project.gcl("--manual", "web-abort", "web-abort")
    assert aborted.returncode == 0, aborted.output
    assert {live_version(project) for _ in range(20)} == {sha}, second  # the stable version only
