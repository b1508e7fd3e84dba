"""A GitLab deploy job cancelled mid-run, under gitlab-ci-local.

GitLab cancels a job by stopping its process (SIGTERM, SIGKILL after the grace period);
gitlab-ci-local has no cancel of its own (an interrupted gitlab-ci-local leaves its jobs
running), so the test does what the runner does: it sends SIGTERM to the job's bluegreen
process, found through the deploy lock, which names the process that holds it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from .conftest import GitLabProject
from .test_component_e2e import live_version, seed

SLOW_SUITE = """\
test_suite:
  command: ["{python}", "-c", "import os, time; open('suite.pid', 'w').write(str(os.getpid())); time.sleep(60)"]
"""


def test_cancelled_deploy_job_leaves_live_untouched_and_reports_cancelled(project: GitLabProject) -> None:
    project.use_pipeline("deploy-rollback.yml")
    project.commit("first release")
    seed(project, "v1")
    project.write("bluegreen.yml", (project.dir / "bluegreen.yml").read_text() + SLOW_SUITE)
    project.commit("a release whose test suite is slow")

    argv = [project.tool, "--force-shell-executor", "--variable", "GITLAB_CI=true", "--ignore-predefined-vars",
            "GITLAB_CI", "--no-json-schema-validation", "bluegreen-deploy"]
    for name, value in project.variables.items():
        argv[1:1] = ["--variable", f"{name}={value}"]
    job = subprocess.Popen(argv, cwd=project.dir, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        lock_file = project.state_dir / "lock.json"
        deadline = time.monotonic() + 120
        while True:
            lock = json.loads(lock_file.read_text()) if lock_file.exists() else {}
            suite_started = list(project.dir.rglob("suite.pid"))
            if lock.get("phase") == "test suite" and suite_started:
                break
            assert job.poll() is None, job.communicate()[0]
            assert time.monotonic() < deadline, "the job never reached its test suite"
            time.sleep(0.1)
        sent = time.monotonic()
        os.kill(lock["pid"], signal.SIGTERM)  # what the runner sends to a cancelled job
        output, _ = job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    assert "cancelled by SIGTERM during test suite; live untouched" in output, output[-3000:]
    assert "Traceback" not in output

    assert live_version(project) == "v1"
    assert not (project.state_dir / "lock.json").exists()
    dotenv = project.dotenv("bluegreen-deploy")
    assert dotenv["BLUEGREEN_STATUS"] == "cancelled" and dotenv["BLUEGREEN_SWITCHED"] == "false"
    suite_pid = int(suite_started[0].read_text())
    assert not os.path.exists(f"/proc/{suite_pid}") or "Z" in open(f"/proc/{suite_pid}/stat").read().split()[2]
    history = json.loads(project.cli("status", "-c", "bluegreen.yml", "--json").stdout)["history"]
    assert history[0]["version"] == "v1" and history[0]["outcome"] == "succeeded"  # nothing recorded as live
    print(f"\nthe job stopped {time.monotonic() - sent:.1f}s after SIGTERM (gitlab-ci-local included)")
