"""The action switches an AWS ALB under act, with the credentials from the step's `env:` (as
aws-actions/configure-aws-credentials leaves them for later steps), against moto in server mode on 127.0.0.1.

The colours are local processes in the action's container (they end with the step: enough for one deploy), each
registered into its target group (`register: true`); verification goes through a loopback data plane that reads
moto's listener and targets on every request (moto emulates the API, not the data plane). act's job container and
the action's share the host's network, so the action reaches moto and the data plane at 127.0.0.1, as this
process does."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest
import yaml

from conftest import EXAMPLE_APP, free_port
from routers.awsmoto import AWS_ENV, DataPlane, make_alb_lab, moto_url  # noqa: F401  (moto_url: a fixture)

from .support import ACT_JOB_IMAGE, copy_action, need_act, remove_act_containers, unique
from .test_act_e2e import log_lines

SECRET_KEY = "act-aws-secret/5f0c2eEXAMPLEKEY"


@pytest.fixture
def repo(tmp_path, moto_url, monkeypatch):  # noqa: F811
    act = need_act()
    for name, value in {**AWS_ENV, "AWS_ENDPOINT_URL": moto_url}.items():  # this process builds the lab
        monkeypatch.setenv(name, value)
    lab = make_alb_lab()
    plane = DataPlane(lab)
    root = tmp_path / "repo"
    root.mkdir()
    copy_action(root)
    shutil.copy(EXAMPLE_APP, root / "app.py")
    config = {
        "app": unique("alb"),
        "environments": {"production": {
            "url": plane.url,
            "target": {
                "kind": "local",
                "command": ["{python}", "app.py", "--port", "{port}", "--version", "{version}", "--colour", "{colour}"],
                "ports": {"blue": free_port(), "green": free_port()},
                "state_dir": ".bluegreen",
                "router": lab.config(register=True),
            }}},
        "timeouts": {"ready": "20s"},
        "smoke": {"checks": [{"name": "version", "path": "/version", "expect": {"status": 200, "body_contains": "{version}"}}]},
        "verify": {"consecutive_successes": 2, "window": "1s", "interval": 0.2},
        "scale_down_delay": "never",
    }
    (root / ".bluegreen.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {k: v for k, v in AWS_ENV.items() if k != "AWS_SECRET_ACCESS_KEY"}
    step_env = "\n".join(f"          {k}: {json.dumps(v)}" for k, v in {**env, "AWS_ENDPOINT_URL": moto_url}.items())
    (root / ".github" / "workflows").mkdir(parents=True)
    (root / ".github" / "workflows" / "alb.yml").write_text(textwrap.dedent("""\
        on: push
        jobs:
          deploy:
            runs-on: ubuntu-latest
            steps:
              - uses: ./
                id: deploy
                env:
                  AWS_SECRET_ACCESS_KEY: ${{ secrets.AWS_SECRET_ACCESS_KEY }}
        %s
                with:
                  environment: production
                  version: "1"
              - run: 'echo "bluegreen: live ${{ steps.deploy.outputs.live-colour }} ${{ steps.deploy.outputs.status }}"'
        """) % step_env)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=root, check=True)
    yield act, root, lab, plane
    remove_act_containers(root)
    plane.close()


def test_the_action_switches_an_alb_with_credentials_from_the_steps_env(repo, monkeypatch):
    act, root, lab, plane = repo
    # moto accepts any key: the secret is the act secret's value, so the run proves it went through `env:`
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    result = subprocess.run([act, "push", "-W", ".github/workflows/alb.yml", "-P", f"ubuntu-latest={ACT_JOB_IMAGE}",
                             "--pull=false", "-b", "--rm", "--secret", "AWS_SECRET_ACCESS_KEY"],
                            cwd=root, capture_output=True, text=True, timeout=420)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert log_lines(result) == ["bluegreen: live blue succeeded"], result.stdout[-3000:]
    assert lab.weights(lab.default_actions()) == {"blue": 999, "green": 0}  # the listener, read from moto
    registered = lab.elb.describe_target_health(TargetGroupArn=lab.groups["blue"])["TargetHealthDescriptions"]
    assert len(registered) == 1  # register: true put blue's 127.0.0.1:port in its group
    assert SECRET_KEY not in result.stdout + result.stderr
