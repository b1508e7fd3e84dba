"""GitHub deployments, through the CLI with the GitHub adapter (BLUEGREEN_CI=github) and the local target, against
a local GitHub API that checks every request and answer against GitHub's OpenAPI description (fakegithub.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from .fakegithub import FakeGitHub
from .support import free_port
from .test_adapter import local_config

WRITE, READ = "ghs_write0123456789abcdefWRITEtoken", "ghs_read0123456789abcdefREADtoken"
RUN_SHA = "8f2e1c0d9b8a7f6e5d4c3b2a190817263544a3b2"  # the workflow run's commit (GITHUB_SHA)
V1_SHA, V2_SHA = "1111111aaaaaaabbbbbbbcccccccdddddddeeeee", "2222222aaaaaaabbbbbbbcccccccdddddddeeeee"
RUN_URL = "https://github.com/octo/shop/actions/runs/4242"


class Workspace:
    def __init__(self, root: Path, api: FakeGitHub) -> None:
        self.root, self.api = root, api
        proxy, blue, green = free_port(), free_port(), free_port()
        self.live_url = f"http://127.0.0.1:{proxy}"
        (root / "bluegreen.yml").write_text(local_config(root, proxy, blue, green))

    def run(self, *argv: str, token: str | None = WRITE, **env: str) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "BLUEGREEN_CI", "INPUT_"))}
        base.update({
            "BLUEGREEN_CI": "github", "GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "octo/shop", "GITHUB_RUN_ID": "4242", "GITHUB_SHA": RUN_SHA,
            "GITHUB_API_URL": self.api.url, "GITHUB_WORKSPACE": str(self.root),
        })
        if token:
            base["BLUEGREEN_GITHUB_TOKEN"] = token
        base.update(env)
        return subprocess.run([sys.executable, "-m", "bluegreen", *argv, "-c", "bluegreen.yml"], cwd=self.root,
                              env=base, capture_output=True, text=True, timeout=120)

    def deploy(self, version: str, *extra: str, **env: str) -> subprocess.CompletedProcess:
        return self.run("deploy", f"--version={version}", *extra, **env)

    def report(self) -> dict:
        return json.loads((self.root / "bluegreen-report.json").read_text())

    def delivery(self) -> dict:
        [delivery] = [d for d in self.report()["notifications"] if d["channel"] == "github deployment"]
        return delivery


@pytest.fixture
def api():
    fake = FakeGitHub("octo/shop", tokens={WRITE: "write", READ: "read"}, refs=[RUN_SHA, V1_SHA, V2_SHA])
    yield fake
    fake.close()
    assert fake.invalid == []  # every request and every answer was GitHub's, by its own description


@pytest.fixture
def ws(api):
    root = Path(tempfile.mkdtemp(prefix="ghd-"))  # short: HAProxy's socket path in it has a length limit
    workspace = Workspace(root, api)
    yield workspace
    subprocess.run([sys.executable, "-m", "bluegreen", "down", "-c", "bluegreen.yml"], cwd=root,
                   capture_output=True, env={**os.environ, "BLUEGREEN_CI": "plain"}, timeout=60)
    shutil.rmtree(root, ignore_errors=True)


def test_a_deploy_is_a_deployment_of_its_commit_that_succeeds_with_the_live_url(ws, api):
    done = ws.deploy(V1_SHA[:12])
    assert done.returncode == 0, done.stdout + done.stderr
    [deployment] = api.deployments
    assert deployment["sha"] == V1_SHA and deployment["ref"] == V1_SHA[:12]  # the version is a commit: its own
    assert deployment["environment"] == "prod" and deployment["payload"]["colour"] == "blue"
    assert deployment["payload"]["version"] == V1_SHA[:12] and deployment["payload"]["app"] == "ghtest"
    assert deployment["payload"]["release_id"] == ws.report()["release_id"]
    posted = [(m, p.rsplit("/", 1)[-1], body) for m, p, body, status in api.requests if m == "POST"]
    create = posted[0][2]
    assert create["auto_merge"] is False and create["required_contexts"] == []
    states = [s["state"] for s in api.statuses[deployment["id"]]]
    assert states == ["in_progress", "success"]
    success = api.statuses[deployment["id"]][-1]
    assert success["environment_url"] == ws.live_url and success["log_url"] == RUN_URL
    assert [body.get("auto_inactive") for _, _, body in posted[1:]] == [None, True]
    delivery = ws.delivery()
    assert delivery["delivered"] and delivery["event"] == "success" and delivery["attempts"] == 4  # + the sweep's list
    assert done.stdout.splitlines()[0] == f"::add-mask::{WRITE}"  # masked before anything could print it
    logged = done.stdout.replace(f"::add-mask::{WRITE}", "") + done.stderr
    assert WRITE not in logged + (ws.root / "bluegreen-report.json").read_text()


def test_a_version_that_is_no_commit_deploys_the_runs_commit(ws, api):
    assert ws.deploy("1.4.0").returncode == 0
    [deployment] = api.deployments
    assert deployment["ref"] == RUN_SHA and deployment["payload"]["version"] == "1.4.0"


def test_a_failed_deploy_that_switched_back_is_a_failure_and_the_previous_stays_active(ws, api):
    assert ws.deploy("1").returncode == 0
    failed = ws.deploy("2+fail-live")
    assert failed.returncode == 4, failed.stdout + failed.stderr  # verification failed: switched back
    assert api.history("prod") == [("1", "success"), ("2+fail-live", "failure")]
    assert api.active("prod")["payload"]["version"] == "1"
    failure = api.statuses[api.deployments[1]["id"]][-1]
    assert failure["description"].startswith("rolled back: ") and len(failure["description"]) <= 140
    assert ws.delivery()["event"] == "failure" and ws.delivery()["delivered"]


def test_a_deploy_that_fails_before_the_switch_creates_no_deployment(ws, api):
    assert ws.deploy("1").returncode == 0
    assert ws.deploy("2+fail-smoke").returncode == 1
    assert api.history("prod") == [("1", "success")]  # nothing went live: nothing to record
    assert ws.report()["notifications"] == []


def test_history_after_deploy_deploy_rollback_shows_the_first_version_active(ws, api):
    for version in ("1", "2"):
        assert ws.deploy(version).returncode == 0
    back = ws.run("rollback")
    assert back.returncode == 0, back.stdout + back.stderr
    # three deployments, the rollback's of version 1: it is the active one, the others inactive
    assert api.history("prod") == [("1", "inactive"), ("2", "inactive"), ("1", "success")]
    active = api.active("prod")
    assert active["payload"] == {"version": "1", "colour": "blue", "app": "ghtest", "release_id": ws.report()["release_id"]}
    assert api.statuses[active["id"]][-1]["description"] == "rolled back to 1 on blue"
    assert api.statuses[active["id"]][-1]["environment_url"] == ws.live_url


def test_deploy_without_switching_then_promote_is_one_deployment(ws, api):
    assert ws.deploy("1").returncode == 0
    prepared = ws.deploy("2", "--no-switch")
    assert prepared.returncode == 0, prepared.stdout + prepared.stderr
    assert len(api.deployments) == 1  # prepared: nothing went live yet
    promoted = ws.run("promote")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert api.history("prod") == [("1", "inactive"), ("2", "success")]
    assert api.deployments[1]["payload"]["colour"] == "green"


def test_a_token_without_deployments_write_is_one_warning_and_the_run_succeeds(ws, api):
    done = ws.deploy("1", token=READ)
    assert done.returncode == 0, done.stdout + done.stderr
    warnings = [line for line in done.stdout.splitlines() if line.startswith("::warning")]
    assert len(warnings) == 1 and "the token lacks deployments: write" in warnings[0], warnings
    assert api.deployments == []
    delivery = ws.delivery()
    assert not delivery["delivered"] and "HTTP 403" in delivery["detail"] and delivery["attempts"] == 1
    assert ws.report()["status"] == "succeeded"


def test_a_5xx_is_retried_once_and_an_api_that_is_down_costs_a_bounded_time(ws, api):
    api.fail_next = [502]
    assert ws.deploy("1").returncode == 0
    assert api.history("prod") == [("1", "success")] and ws.delivery()["attempts"] == 5  # 4 + the retry
    api.fail_next = [502, 503]  # the create and its one retry
    done = ws.deploy("2")
    assert done.returncode == 0
    assert len(api.deployments) == 1 and not ws.delivery()["delivered"] and "HTTP 503" in ws.delivery()["detail"]
    closed = ws.deploy("3", GITHUB_API_URL=f"http://127.0.0.1:{free_port()}/api/v3")  # nothing listens
    assert closed.returncode == 0 and "cannot connect" in ws.delivery()["detail"]


def test_no_token_no_deployment_and_the_token_never_reaches_the_suite(ws, api):
    (ws.root / "suite.py").write_text("import os\nprint('token seen:', 'BLUEGREEN_GITHUB_TOKEN' in os.environ)\n")
    with open(ws.root / "bluegreen.yml", "a") as config:
        config.write('test_suite:\n  command: ["{python}", "suite.py"]\n')
    done = ws.deploy("1")
    assert "token seen: False" in done.stdout and len(api.deployments) == 1
    assert ws.deploy("2", token=None).returncode == 0
    assert len(api.deployments) == 1 and ws.report()["notifications"] == []


def test_the_action_input_names_the_environment_and_can_turn_it_off(ws, api):
    def action(**inputs: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "BLUEGREEN_CI", "INPUT_"))}
        env.update({"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "octo/shop", "GITHUB_RUN_ID": "4242",
                    "GITHUB_SHA": RUN_SHA, "GITHUB_API_URL": api.url, "GITHUB_WORKSPACE": str(ws.root),
                    "INPUT_CONFIG": "bluegreen.yml"})
        env.update({f"INPUT_{k.upper().replace('_', '-')}": v for k, v in inputs.items()})
        return subprocess.run([sys.executable, "-m", "bluegreen.action"], cwd=ws.root, env=env,
                              capture_output=True, text=True, timeout=120)

    done = action(version="1", github_token=WRITE, github_environment="production-eu")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [d["environment"] for d in api.deployments] == ["production-eu"]
    assert api.deployments[0]["production_environment"] is False
    assert WRITE not in done.stdout.replace(f"::add-mask::{WRITE}", "") + done.stderr
    off = action(version="2", github_token=WRITE, github_deployments="false")
    assert off.returncode == 0 and len(api.deployments) == 1


def canary(ws: Workspace) -> None:
    """HAProxy splits the traffic; the first step waits for `promote`."""
    config = ws.root / "bluegreen.yml"
    text = config.read_text()
    old = f'router: {{listen: "{ws.live_url.removeprefix("http://")}"}}'
    assert old in text
    config.write_text(text.replace(old, old.replace("{listen", "{kind: haproxy, listen"))
                      + "strategy: canary\ncanary:\n  steps: [{weight: 25, pause: until promoted}]\n")


needs_haproxy = pytest.mark.skipif(
    not any(Path(p, "haproxy").exists() for p in [*os.environ.get("PATH", "").split(":"), "/usr/sbin"]),
    reason="HAProxy is not installed (run .ci/setup-packages.sh)")


@needs_haproxy
def test_a_paused_canary_stays_in_progress_and_its_promote_leaves_nothing_in_progress(ws, api):
    canary(ws)
    first = ws.deploy("1")
    assert first.returncode == 0, first.stdout + first.stderr
    paused = ws.deploy("2")
    assert paused.returncode == 0 and ws.report()["status"] == "paused", paused.stdout + paused.stderr
    assert api.history("prod") == [("1", "success"), ("2", "in_progress")]
    held = api.statuses[api.deployments[1]["id"]][-1]["description"]
    assert held == "canary paused at step 1/2 (25% on green): promote or abort"
    assert ws.delivery()["event"] == "in_progress"
    promoted = ws.run("promote")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    assert api.history("prod") == [("1", "inactive"), ("2", "inactive"), ("2", "success")]
    assert api.statuses[api.deployments[1]["id"]][-1]["description"] == "superseded by promote 2; green is live"


@needs_haproxy
def test_an_aborted_canary_leaves_the_stable_version_active(ws, api):
    canary(ws)
    first = ws.deploy("1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert ws.deploy("2").returncode == 0
    aborted = ws.run("abort")
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert api.history("prod") == [("1", "success"), ("2", "inactive")]
    assert api.active("prod")["payload"]["version"] == "1"
    assert ws.delivery()["event"] == "inactive"


def test_the_fake_refuses_what_githubs_description_refuses(api):
    import httpx

    headers = {"Authorization": f"Bearer {WRITE}", "Accept": "application/vnd.github+json"}
    wrong = httpx.post(f"{api.url}/repos/octo/shop/deployments", json={"ref": 42}, headers=headers, timeout=10)
    assert wrong.status_code == 400 and "42 is not of type 'string'" in api.invalid[0]
    api.invalid.clear()
    created = httpx.post(f"{api.url}/repos/octo/shop/deployments", headers=headers, timeout=10,
                         json={"ref": RUN_SHA, "auto_merge": False, "required_contexts": []})
    assert created.status_code == 201
    bad_state = httpx.post(f"{created.json()['statuses_url'].replace('https://api.github.com', api.url)}",
                           json={"state": "done"}, headers=headers, timeout=10)
    assert bad_state.status_code == 400 and "'done' is not one of" in api.invalid[0]
    api.invalid.clear()
    merged = httpx.post(f"{api.url}/repos/octo/shop/deployments", json={"ref": RUN_SHA}, headers=headers, timeout=10)
    assert merged.status_code == 202  # GitHub's default auto_merge, on a branch behind the default one
    assert api.invalid == []
