"""The GitHub adapter and the action's entrypoint, run as the runner runs it: INPUT_* in the environment,
$GITHUB_OUTPUT and $GITHUB_STEP_SUMMARY files, the workspace as the working directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bluegreen.action import InputError, build_argv, config_error_annotation, mask_kubeconfig
from bluegreen.ci.github import Secrets, command

from .support import ROOT, free_port, parse_github_output

EXAMPLE_APP = ROOT / "examples" / "app" / "app.py"


def clear_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("INPUT_"):
            monkeypatch.delenv(key)


def inputs(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    clear_inputs(monkeypatch)
    for name, value in values.items():
        monkeypatch.setenv("INPUT_" + name.upper().replace("_", "-"), value)


@pytest.mark.parametrize(
    "given, argv",
    [
        ({"version": "1.2"}, ["deploy", "-c", ".bluegreen.yml", "--version=1.2"]),
        (
            {"command": "deploy", "config": "deploy/bg.yml", "environment": "prod", "version": "-rc1",
             "no_switch": "true", "dry_run": "false", "force": "false"},
            ["deploy", "-c", "deploy/bg.yml", "-e", "prod", "--no-switch", "--version=-rc1"],
        ),
        ({"command": "rollback", "force": "TRUE", "environment": "prod"}, ["rollback", "-c", ".bluegreen.yml", "-e", "prod", "--force"]),
        ({"command": "promote", "version": "abc"}, ["promote", "-c", ".bluegreen.yml", "--expect-version=abc"]),
        ({"command": "status"}, ["status", "-c", ".bluegreen.yml"]),
        ({"command": "contract", "retire_previous": "true"}, ["contract", "-c", ".bluegreen.yml", "--retire-previous"]),
        ({"command": "promote", "full": "true"}, ["promote", "-c", ".bluegreen.yml", "--full"]),
        ({"command": "abort"}, ["abort", "-c", ".bluegreen.yml"]),
    ],
)
def test_inputs_map_to_cli_arguments(monkeypatch, given, argv):
    inputs(monkeypatch, **given)
    assert build_argv() == argv


def test_github_keeps_hyphens_in_input_names(monkeypatch):
    clear_inputs(monkeypatch)
    monkeypatch.setenv("INPUT_VERSION", "3")
    monkeypatch.setenv("INPUT_DRY-RUN", "true")
    assert build_argv() == ["deploy", "-c", ".bluegreen.yml", "--dry-run", "--version=3"]


@pytest.mark.parametrize(
    "given, message",
    [
        ({"command": "deploi"}, "input command must be one of deploy, promote, rollback, contract, abort, status, got 'deploi'"),
        ({"version": "1", "no_switch": "yes"}, "input no-switch must be true or false, got 'yes'"),
        ({}, "input version is required for command deploy"),
        ({"command": "rollback", "no_switch": "true"}, "input no-switch applies to command deploy only, not rollback"),
        ({"version": "1", "retire_previous": "true"}, "input retire-previous applies to command contract only, not deploy"),
        ({"command": "contract", "version": "1"}, "input version does not apply to command contract"),
        ({"command": "status", "version": "1"}, "input version does not apply to command status"),
        ({"version": "1", "full": "true"}, "input full applies to command promote only, not deploy"),
    ],
)
def test_wrong_inputs_are_named(monkeypatch, given, message):
    inputs(monkeypatch, **given)
    with pytest.raises(InputError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        build_argv()


def test_workflow_command_escaping():
    assert command("error", "50% done\nnext", file="a,b:c.yml", line=3) == "::error file=a%2Cb%3Ac.yml,line=3::50%25 done%0Anext"
    secrets = Secrets()
    secrets.add("tok", out=open(os.devnull, "w"))  # too short to mask: it would blank common words
    secrets.add("s3cr3t-value\nsecond-line", out=open(os.devnull, "w"))
    assert secrets.redact("a s3cr3t-value and second-line, tok") == "a *** and ***, tok"


def test_kubeconfig_credentials_are_masked_and_the_rest_is_not(capsys):
    kubeconfig = textwrap.dedent("""\
        apiVersion: v1
        kind: Config
        users:
          - name: eks
            user:
              exec:
                apiVersion: client.authentication.k8s.io/v1beta1
                command: aws-iam-authenticator
                args: [token, -i, my-cluster]
                env: [{name: AWS_SECRET_ACCESS_KEY, value: wJalrXUtnFEMI-secret}]
          - name: oidc
            user:
              auth-provider: {name: oidc, config: {id-token: eyJhbGciOi.id, refresh-token: rt-0123456789}}
              password: hunter2hunter2
        """)
    secrets = Secrets()
    assert mask_kubeconfig(kubeconfig, secrets) == kubeconfig
    assert sorted(secrets.values) == sorted(["wJalrXUtnFEMI-secret", "eyJhbGciOi.id", "rt-0123456789", "hunter2hunter2"])
    assert capsys.readouterr().out.count("::add-mask::") == 4
    with pytest.raises(InputError, match="input kubeconfig is not a kubeconfig"):
        mask_kubeconfig("- just\n- a list\n", Secrets())


def test_outputs_are_multiline_safe(tmp_path, monkeypatch):
    from bluegreen.ci.github import GitHubAdapter

    path = tmp_path / "out"
    path.write_text("earlier=1\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(path))
    tricky = "line one\nghadelimiter_x\nEOF\nname=value"
    GitHubAdapter().write_outputs({"reason": tricky, "status": "failed"})
    assert parse_github_output(path.read_text()) == {"earlier": "1", "reason": tricky, "status": "failed"}


def test_config_error_annotation_is_on_the_file_and_line(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "deploy").mkdir()
    line = config_error_annotation("deploy/bg.yml:12: environments.prod.target.ports.blue: unknown key")
    assert line == "::error title=bluegreen config,file=deploy/bg.yml,line=12::environments.prod.target.ports.blue: unknown key"


# --- the entrypoint in a subprocess, as the action runs it --------------------------------------


class Step:
    """One run of `python -m bluegreen.action` in a fake runner environment."""

    def __init__(self, workspace: Path) -> None:
        self.workspace = workspace
        self.output = workspace.parent / "github_output"
        self.summary = workspace.parent / "step_summary.md"

    def run(self, env: dict[str, str] | None = None, timeout: float = 120, **given: str) -> subprocess.CompletedProcess:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("INPUT_", "GITHUB_", "BLUEGREEN_CI"))}
        base.update({
            "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": str(self.workspace), "GITHUB_OUTPUT": str(self.output),
            "GITHUB_STEP_SUMMARY": str(self.summary), "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_REPOSITORY": "octo/shop", "GITHUB_RUN_ID": "4242", "GITHUB_ACTOR": "octocat",
        })
        base.update({"INPUT_" + k.upper().replace("_", "-"): v for k, v in given.items()})
        base.update(env or {})
        self.output.write_text("")
        self.summary.write_text("")
        return subprocess.run([sys.executable, "-m", "bluegreen.action"], cwd=self.workspace, env=base,
                              capture_output=True, text=True, timeout=timeout)

    def outputs(self) -> dict[str, str]:
        return parse_github_output(self.output.read_text())


def local_config(dir: Path, proxy: int, blue: int, green: int, extra: str = "") -> str:
    return textwrap.dedent(f"""\
        app: ghtest
        environments:
          prod:
            target:
              kind: local
              command: ["{{python}}", "{EXAMPLE_APP}", "--port", "{{port}}", "--version", "{{version}}"]
              ports: {{blue: {blue}, green: {green}}}
              router: {{listen: "127.0.0.1:{proxy}"}}
        timeouts: {{ready: 10s}}
        smoke:
          timeout: 5s
          interval: 0.1
          checks:
            - name: version
              path: /version
              expect: {{body_contains: "{{version}}"}}
        verify: {{consecutive_successes: 2, window: 0.3s, interval: 0.1}}
        scale_down_delay: never
        """) + extra


@pytest.fixture
def step(tmp_path):
    workspace = tmp_path / "workspace"
    (workspace / "deploy").mkdir(parents=True)
    step = Step(workspace)
    yield step
    subprocess.run([sys.executable, "-m", "bluegreen", "down", "-c", "deploy/bluegreen.yml"], cwd=workspace,
                   capture_output=True, env={**os.environ, "BLUEGREEN_CI": "plain"}, timeout=60)


def test_deploy_writes_outputs_summary_groups_and_history(step):
    proxy, blue, green = free_port(), free_port(), free_port()
    (step.workspace / "deploy" / "bluegreen.yml").write_text(local_config(step.workspace, proxy, blue, green))
    (step.workspace / "deploy" / "acceptance.py").write_text("print('suite: 3 passed')\nprint('::set-output name=x::y')\n")
    with open(step.workspace / "deploy" / "bluegreen.yml", "a") as f:
        f.write('test_suite:\n  command: ["{python}", "acceptance.py"]\n')

    first = step.run(config="bluegreen.yml", working_directory="deploy", version="1")
    assert first.returncode == 0, first.stdout + first.stderr
    second = step.run(config="bluegreen.yml", working_directory="deploy", version="2.0")
    assert second.returncode == 0, second.stdout + second.stderr

    out = step.outputs()
    assert out["status"] == "succeeded" and out["switched"] == "true"
    assert (out["live-colour"], out["previous-colour"], out["idle-colour"]) == ("green", "blue", "blue")
    assert out["version"] == "2.0"
    assert out["previous-version"] == "1"
    assert out["rollback-command"] == "bluegreen rollback -c bluegreen.yml"
    assert out["live-url"] == f"http://127.0.0.1:{proxy}" and out["preview-url"] == f"http://127.0.0.1:{green}"
    assert out["report"] == "deploy/bluegreen-report.json"  # relative to the workspace, for later steps
    assert json.loads((step.workspace / out["report"]).read_text())["live_colour"] == "green"

    # A log group only where a phase has progress lines; the outcome line after it.
    lines = second.stdout.splitlines()
    start = lines.index("::group::test suite")
    assert lines[start + 1] == "       suite: 3 passed"
    # The suite's output cannot issue workflow commands.
    stop = lines[start + 2]
    assert stop.startswith("::stop-commands::")
    assert lines[start + 3].strip() == "::set-output name=x::y"
    assert lines[start + 4] == f"::{stop.split('::')[2]}::"
    assert lines[start + 5] == "::endgroup::"
    assert lines[start + 6].startswith("  ok   test suite")
    assert "::group::lock" not in lines
    assert second.stderr == ""

    summary = step.summary.read_text()
    assert "### bluegreen deploy: ghtest (prod)" in summary and "```mermaid\ngantt" in summary

    history = json.loads((step.workspace / "deploy" / ".bluegreen" / "prod" / "history.json").read_text())
    assert history[0]["run_url"] == "https://github.com/octo/shop/actions/runs/4242"
    assert history[0]["actor"] == "octocat"


def test_failure_is_an_error_annotation_with_the_reason(step):
    proxy, blue, green = free_port(), free_port(), free_port()
    (step.workspace / "deploy" / "bluegreen.yml").write_text(local_config(step.workspace, proxy, blue, green))
    assert step.run(config="bluegreen.yml", working_directory="deploy", version="1").returncode == 0
    failed = step.run(config="bluegreen.yml", working_directory="deploy", version="2+fail-smoke")
    assert failed.returncode == 1
    errors = [line for line in failed.stdout.splitlines() if line.startswith("::error")]
    assert len(errors) == 1 and errors[0].startswith("::error title=bluegreen deploy failed::smoke check 'version' failed on green")
    out = step.outputs()
    assert out["status"] == "failed" and out["switched"] == "false" and out["live-colour"] == "blue"
    assert out["reason"].startswith("smoke check 'version' failed")
    assert "❌ failed" in step.summary.read_text()


def test_wrong_input_is_one_error_line_and_exit_2(step):
    result = step.run(command="deploy", version="1", no_switch="maybe")
    assert result.returncode == 2
    assert result.stdout == "::error title=bluegreen%3A wrong input::input no-switch must be true or false, got 'maybe'\n"
    assert result.stderr == ""
    assert step.outputs() == {"status": "invalid", "reason": "input no-switch must be true or false, got 'maybe'"}
    assert "input no-switch must be true or false" in step.summary.read_text()

    result = step.run(version="1", working_directory="missing")
    assert result.returncode == 2 and "input working-directory 'missing': No such file or directory" in result.stdout
    assert step.outputs()["status"] == "invalid"


def test_a_misspelt_input_fails_with_a_suggestion(step):
    """GitHub passes any `with:` key on as INPUT_*: one the action does not have is refused, not ignored."""
    result = step.run(version="1", enviroment="production")
    assert result.returncode == 2
    expected = ("input enviroment is not an input of this action (did you mean environment? its inputs: command, config, "
                "environment, version, no-switch, dry-run, force, retire-previous, full, kubeconfig, ssh-private-key, "
                "ssh-known-hosts, ssh-passphrase, github-token, github-environment, github-deployments, "
                "working-directory)")
    assert result.stdout == f"::error title=bluegreen%3A wrong input::{expected}\n"
    assert step.outputs() == {"status": "invalid", "reason": expected}
    # The underscore spelling of a declared input is that input; an unrelated name gets no guess.
    assert step.run(version="1", working_directory=".", no_switch="false").stdout.count("not an input") == 0
    assert "input zzz is not an input of this action (its inputs:" in step.run(version="1", zzz="1").stdout


def test_messages_name_the_actions_inputs_not_cli_flags(step):
    (step.workspace / ".bluegreen.yml").write_text(
        "app: ghtest\nenvironments:\n  staging:\n    target: {kind: local, command: [x]}\n"
        "  production:\n    target: {kind: local, command: [x]}\n"
    )
    result = step.run(version="1")
    assert result.returncode == 2
    assert result.stdout.strip() == (
        "::error title=bluegreen config::.bluegreen.yml: several environments (staging, production); "
        "set the input environment"
    )
    assert step.outputs()["reason"].endswith("set the input environment")
    missing = step.run(version="1", config="nope.yml")
    assert missing.stdout.strip().endswith("nope.yml: config file not found (set the inputs config and working-directory)")


def test_config_error_is_annotated_on_its_line(step):
    (step.workspace / "deploy" / "bluegreen.yml").write_text(
        "app: ghtest\nenvironments:\n  prod:\n    target:\n      kind: local\n      command: [x]\n      colour: red\n"
    )
    result = step.run(config="deploy/bluegreen.yml", version="1")
    assert result.returncode == 2
    assert result.stdout.strip() == (
        "::error title=bluegreen config,file=deploy/bluegreen.yml,line=7::environments.prod.target.colour: unknown key "
        "(allowed here: kind, command, ports, host, addresses, health_path, env, working_directory, state_dir, router)"
    )
    assert "Traceback" not in result.stderr
    assert step.outputs()["status"] == "invalid"
    assert step.outputs()["reason"].startswith("deploy/bluegreen.yml:7: environments.prod.target.colour: unknown key")


def test_every_config_error_is_annotated_on_its_own_line(step):
    (step.workspace / ".bluegreen.yml").write_text(
        "app: ghtest\nverfy: {window: 1}\nenvironments:\n  prod:\n    target:\n      kind: local\n"
        "      command: [x]\n      prots: {blue: 1, green: 2}\n"
    )
    result = step.run(version="1")
    assert result.returncode == 2
    assert result.stdout.splitlines() == [
        "::error title=bluegreen config,file=.bluegreen.yml,line=2::verfy: unknown key (did you mean 'verify'?)",
        "::error title=bluegreen config,file=.bluegreen.yml,line=8::environments.prod.target.prots: unknown key "
        "(did you mean 'ports'?)",
    ]
    assert step.outputs()["reason"] == (
        ".bluegreen.yml:2: verfy: unknown key (did you mean 'verify'?); "
        ".bluegreen.yml:8: environments.prod.target.prots: unknown key (did you mean 'ports'?)"
    )


def test_forced_rollback_refuses_a_release_that_never_went_live(step):
    """`force: true` skips the previous release's checks, never the rule that it went live: a failed release
    on the other colour is no rollback target. The refusal names the last other version that served live traffic, in the action's terms."""
    proxy, blue, green = free_port(), free_port(), free_port()
    (step.workspace / "deploy" / "bluegreen.yml").write_text(local_config(step.workspace, proxy, blue, green))
    run = lambda **given: step.run(config="bluegreen.yml", working_directory="deploy", **given)  # noqa: E731
    first = run(version="1")
    assert first.returncode == 0, first.stdout
    first_out = step.outputs()
    assert first_out["rollback-command"] == "" and first_out["live-version"] == "1"  # a first release: nowhere to go back
    assert "Roll back" not in step.summary.read_text()
    assert run(version="2").returncode == 0
    assert step.outputs()["rollback-command"] == "bluegreen rollback -c bluegreen.yml"
    assert run(version="3+fail-smoke").returncode == 1  # on blue, never live
    assert step.outputs()["rollback-command"] == ""  # nothing switched

    refused = run(command="rollback", force="true")
    assert refused.returncode == 1
    out = step.outputs()
    assert out["status"] == "failed" and out["switched"] == "false" and out["live-colour"] == "green"
    assert out["version"] == "" and out["live-version"] == "2"  # not the never-live 3+fail-smoke
    assert out["reason"] == (
        "blue runs version 3+fail-smoke, which never went live (its release stopped before the switch, was switched "
        "back or was only prepared), so it is no rollback target, forced or not; green stays live with version 2. To "
        "go back to version 1, the last other one that served live traffic, deploy it again: command: deploy, version: 1"
    )
    assert "::error title=bluegreen rollback failed::blue runs version 3+fail-smoke" in refused.stdout
    assert "Roll back" not in step.summary.read_text()


def test_status_and_dry_run_outputs(step):
    proxy, blue, green = free_port(), free_port(), free_port()
    (step.workspace / "deploy" / "bluegreen.yml").write_text(local_config(step.workspace, proxy, blue, green))
    run = lambda **given: step.run(config="bluegreen.yml", working_directory="deploy", **given)  # noqa: E731
    assert run(command="status").returncode == 0
    assert step.outputs() == {
        "status": "succeeded", "live-colour": "", "live-version": "", "idle-colour": "blue", "idle-version": "",
        "idle-state": "none", "live-url": f"http://127.0.0.1:{proxy}", "pending-contract": "", "reason": "",
    }
    assert run(version="1").returncode == 0 and run(version="2").returncode == 0
    assert run(command="status").returncode == 0
    out = step.outputs()
    assert (out["live-colour"], out["live-version"], out["idle-colour"], out["idle-version"], out["idle-state"]) == (
        "green", "2", "blue", "1", "ready")  # scale_down_delay: never keeps blue running

    plan = run(version="3", dry_run="true")
    assert plan.returncode == 0
    out = step.outputs()
    assert out["status"] == "planned" and out["reason"] == ""
    assert out["plan"].startswith("would deploy 3 to blue") and "switch green -> blue" in out["plan"]


def test_an_error_before_the_pipeline_sets_the_outputs(step):
    """An unreachable target fails before any Result exists: the CLI's one line is still the reason."""
    (step.workspace / ".bluegreen.yml").write_text(
        "app: ghtest\nenvironments:\n  prod:\n    target: {kind: docker, image: 'x:{version}', "
        "docker_host: 'unix:///nonexistent/docker.sock'}\n"
    )
    result = step.run(command="status")
    assert result.returncode != 0
    out = step.outputs()
    assert out["status"] == "failed" and "/nonexistent/docker.sock" in out["reason"], (out, result.stderr)
    assert "::error title=bluegreen status failed::" in result.stdout
