"""The action records a GitHub deployment under act, from a workflow: `github-token` defaults to the job's token
(act's GITHUB_TOKEN secret), and GITHUB_API_URL (act's --env: a workflow cannot override it) points at the fake GitHub API (fakegithub.py), which checks every
request and answer against GitHub's OpenAPI description. act's job container and the action's share the host's
network, so the action reaches the fake at 127.0.0.1, as this process does."""

from __future__ import annotations

import shutil
import subprocess
import textwrap

import pytest
import yaml

from conftest import EXAMPLE_APP, free_port

from .fakegithub import FakeGitHub
from .support import ACT_JOB_IMAGE, copy_action, need_act, remove_act_containers, unique
from .test_act_e2e import log_lines

TOKEN = "ghs_actJobToken0123456789abcdefDEPLOY"


@pytest.fixture
def repo(tmp_path):
    act = need_act()
    api = FakeGitHub("octo/shop", tokens={TOKEN: "write"})
    root = tmp_path / "repo"
    root.mkdir()
    copy_action(root)
    shutil.copy(EXAMPLE_APP, root / "app.py")
    proxy = free_port()
    config = {
        "app": unique("ghdeploy"),
        "environments": {"production": {"target": {
            "kind": "local",
            "command": ["{python}", "app.py", "--port", "{port}", "--version", "{version}", "--colour", "{colour}"],
            "ports": {"blue": free_port(), "green": free_port()},
            "state_dir": ".bluegreen",
            "router": {"listen": f"127.0.0.1:{proxy}"},
        }}},
        "timeouts": {"ready": "20s"},
        "smoke": {"checks": [{"name": "version", "path": "/version", "expect": {"status": 200, "body_contains": "{version}"}}]},
        "verify": {"consecutive_successes": 2, "window": "1s", "interval": 0.2},
        "scale_down_delay": "never",
    }
    (root / ".bluegreen.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "deploy.yml").write_text(textwrap.dedent("""\
        on: push
        permissions:
          contents: read
          deployments: write
        jobs:
          deploy:
            runs-on: ubuntu-latest
            steps:
              - uses: ./
                id: deploy
                with:
                  environment: production
                  version: "1"
              - run: 'echo "bluegreen: ${{ steps.deploy.outputs.status }} ${{ steps.deploy.outputs.live-url }}"'
        """))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    subprocess.run(["git", "remote", "add", "origin", "https://github.com/octo/shop.git"], cwd=root, check=True)
    subprocess.run([*git, "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "deploy"], cwd=root, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True, text=True)
    api.refs.append(head.stdout.strip())
    yield act, root, api, f"http://127.0.0.1:{proxy}"
    remove_act_containers(root)
    api.close()


def test_the_action_records_a_deployment_with_the_jobs_token(repo):
    act, root, api, live_url = repo
    result = subprocess.run([act, "push", "-W", ".github/workflows/deploy.yml", "-P", f"ubuntu-latest={ACT_JOB_IMAGE}",
                             "--pull=false", "-b", "--rm", "-s", f"GITHUB_TOKEN={TOKEN}", "--env", f"GITHUB_API_URL={api.url}"],
                            cwd=root, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert log_lines(result) == [f"bluegreen: succeeded {live_url}"], result.stdout[-3000:]
    assert api.invalid == []  # every request and answer was GitHub's, by its own description
    assert len(api.deployments) == 1, [line for line in result.stdout.splitlines() if "::warning" in line][-5:]
    [deployment] = api.deployments
    assert deployment["sha"] == api.refs[0] and deployment["environment"] == "production"
    assert deployment["payload"]["version"] == "1" and deployment["production_environment"] is True
    statuses = api.statuses[deployment["id"]]
    assert [s["state"] for s in statuses] == ["in_progress", "success"]
    assert statuses[-1]["environment_url"] == live_url
    assert statuses[-1]["log_url"].startswith("https://github.com/octo/shop/actions/runs/")
    assert TOKEN not in result.stdout.replace(f"::add-mask::{TOKEN}", "") + result.stderr
