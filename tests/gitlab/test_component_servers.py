"""The component deploys to real servers over SSH, run by gitlab-ci-local: examples/workflows/servers.gitlab-ci.yml
(the component included by commit SHA, as gitlab-ci-local resolves it locally) with examples/servers/bluegreen.yml as
.bluegreen.yml (tests/servers/example.py), against a lab: two app hosts and a load balancer running HAProxy, each a
container with a real sshd. The jobs run on this machine's shell, so they reach the lab's hosts at their addresses.

The secrets are set as the example says: the key (with a passphrase) and known_hosts as File-type variables, the
passphrase as a plain (masked) one, all in gitlab-ci-local's variables file, never on a command line. The deploy job
runs twice (deploy, deploy with switch), then the manual rollback job; traffic is checked through the load balancer."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import asyncssh
import pytest
import yaml

from github.support import need_docker
from servers.example import ENVIRONMENT, LEAKY_SUITE, example_config, example_ports
from servers.lab import Lab, get_version, start_lab

from .conftest import COMPONENT, ROOT, GitLabProject, new_project

PASSPHRASE = "gitlab-secret passphrase 9d41b7"
EXAMPLE_PIPELINE = ROOT / "examples" / "workflows" / "servers.gitlab-ci.yml"


@pytest.fixture(scope="module")
def lab(gitlab_ci_local: str):
    need_docker()
    lab = start_lab(apps=2, lb=True)
    yield lab
    lab.close()


def project_for(lab: Lab, tool: str, scratch: Path) -> tuple[GitLabProject, str, dict[str, str]]:
    """The example's pipeline and config in a project whose origin is the component project; the secrets in
    gitlab-ci-local's variables file of the project's HOME (a value that is a path makes a File-type variable)."""
    repo = scratch / "project"
    repo.mkdir()
    shutil.copytree(COMPONENT / "templates", repo / "templates")
    project = new_project(tool, repo, scratch, f"http://{lab.lb.address}", {})
    pipeline = EXAMPLE_PIPELINE.read_text()
    assert "/bluegreen/bluegreen/deploy@1.0.0" in pipeline
    project.write(".gitlab-ci.yml", pipeline.replace("deploy@1.0.0", "deploy@$CI_COMMIT_SHA"))
    app = f"gl{time.monotonic_ns() % 10**8}"
    project.write(".bluegreen.yml", yaml.safe_dump({**example_config(lab, app), "test_suite": LEAKY_SUITE}, sort_keys=False))
    project.write(".gitignore", ".gitlab-ci-local/\nbluegreen.env\nbluegreen-junit.xml\nbluegreen-report.json\n")
    lab.haproxy(lab.lb, lab.apps, example_ports(), app=app)

    key = asyncssh.import_private_key(lab.private_key).export_private_key(passphrase=PASSPHRASE).decode()
    secrets = {"SSH_PRIVATE_KEY": key, "SSH_KNOWN_HOSTS": lab.known_hosts, "SSH_KEY_PASSPHRASE": PASSPHRASE}
    files = scratch / "secrets"
    files.mkdir(mode=0o700)
    (files / "id_deploy").write_text(key)
    (files / "known_hosts").write_text(lab.known_hosts)
    variables = Path(project.env["HOME"]) / ".gitlab-ci-local" / "variables.yml"
    variables.parent.mkdir(parents=True)
    variables.write_text(yaml.safe_dump({"global": {
        "SSH_PRIVATE_KEY": str(files / "id_deploy"), "SSH_KNOWN_HOSTS": str(files / "known_hosts"),
        "SSH_KEY_PASSPHRASE": PASSPHRASE}}))
    return project, app, secrets


def never_shown(project: GitLabProject, secrets: dict[str, str], *runs) -> None:
    lines = {line.strip() for value in secrets.values() for line in value.splitlines()
             if line.strip() and not line.startswith("-----")}  # the PEM armour is the same in every key
    assert len(lines) >= 5  # the key's lines, a known_hosts line per host, the passphrase
    for run in runs:
        for line in lines:
            assert line not in run.output, f"{line[:16]}... in a job log"
    ci = project.dir / ".gitlab-ci-local"
    for path in [*(ci / "artifacts").rglob("*"), *(ci / "output").rglob("*"), *project.dir.glob("bluegreen*")]:
        if path.is_file():  # every artifact (dotenv, JUnit, the JSON report) and the saved job logs
            text = path.read_text(errors="replace")
            assert not any(line in text for line in lines), path


def test_deploy_jobs_switch_the_load_balancer_and_the_manual_rollback_job_switches_back(
        lab: Lab, gitlab_ci_local: str, tmp_path: Path):
    project, app, secrets = project_for(lab, gitlab_ci_local, tmp_path)
    first = project.commit("first release")
    listed = project.gcl("--list")
    assert listed.returncode == 0 and "production-rollback" in listed.output, listed.output

    started = time.monotonic()
    run1 = project.gcl("production-deploy")
    assert run1.returncode == 0, run1.output
    assert get_version(lab.lb) == first
    env = project.dotenv("production-deploy")
    assert (env["BLUEGREEN_STATUS"], env["BLUEGREEN_LIVE_COLOUR"], env["BLUEGREEN_PREVIOUS_COLOUR"]) == (
        "succeeded", "blue", "")

    project.write("CHANGELOG", "second release\n")
    second = project.commit("second release")
    run2 = project.gcl("production-deploy")
    assert run2.returncode == 0, run2.output
    assert get_version(lab.lb) == second
    env = project.dotenv("production-deploy")
    assert env["BLUEGREEN_STATUS"] == "succeeded" and env["BLUEGREEN_SWITCHED"] == "true"
    assert (env["BLUEGREEN_LIVE_COLOUR"], env["BLUEGREEN_PREVIOUS_COLOUR"], env["BLUEGREEN_IDLE_COLOUR"]) == (
        "green", "blue", "blue")
    assert (env["BLUEGREEN_VERSION"], env["BLUEGREEN_PREVIOUS_VERSION"]) == (second, first)
    assert env["BLUEGREEN_LIVE_URL"] == project.live_url
    green = example_ports()["green"]  # the preview URL outlives the job: the first host's address, no port forward
    assert env["BLUEGREEN_PREVIEW_URL"] == f"http://{lab.apps[0].address}:{green}"
    assert get_version(lab.apps[0], green) == second
    assert env["BLUEGREEN_ROLLBACK_COMMAND"] == f"bluegreen rollback -c .bluegreen.yml -e {ENVIRONMENT}"
    assert "or run the manual job production-rollback of pipeline" in run2.output, run2.output
    report = json.loads((project.dir / ".gitlab-ci-local/artifacts/production-deploy/bluegreen-report.json").read_text())
    assert report["raw_rollback_command"].startswith("ssh "), report["raw_rollback_command"]  # the runbook's, no bluegreen
    assert f"{app} {app}_green" in lab.lb.exec("cat /etc/haproxy/bluegreen.map").stdout  # the switch, on the LB

    # The manual rollback job (days later: nothing but the deploy job's dotenv and the state on the load balancer).
    back = project.gcl("--manual", "production-rollback", "production-rollback")
    assert back.returncode == 0, back.output
    assert f"rollback succeeded: blue is live with version {first}" in back.output, back.output
    assert get_version(lab.lb) == first
    env = project.dotenv("production-rollback")
    assert (env["BLUEGREEN_STATUS"], env["BLUEGREEN_LIVE_COLOUR"], env["BLUEGREEN_PREVIOUS_COLOUR"]) == (
        "succeeded", "blue", "green")
    print(f"\ngitlab-ci-local: deploy, deploy, rollback in {time.monotonic() - started:.1f}s")

    # The test suite printed every line of them (it ran with them, once per host): masked by bluegreen itself.
    assert "<unset>" not in run1.output + run2.output and "***" in run1.output and "***" in run2.output, run2.output
    never_shown(project, secrets, listed, run1, run2, back)
