"""The action's ssh-* inputs: they reach the config as SSH_PRIVATE_KEY, SSH_KNOWN_HOSTS and SSH_KEY_PASSPHRASE,
every line of them is masked before anything else is printed, and nothing of them reaches stdout (past its
`::add-mask::` line), stderr, the outputs, the job summary or the report.

The run tries to leak: the test suite prints all three and fails, so the run's log, reason and report get a
chance to carry them. The entrypoint runs twice: as a process here, and in the action's image as the runner
starts it (`docker run -e INPUT_...`, the workspace and the file commands mounted)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bluegreen.action import load_ssh_inputs, mask_config
from bluegreen.ci.github import Secrets

from .support import ROOT, free_port, parse_github_output
from .test_adapter import Step

PASSPHRASE = "correct horse battery staple 42"
VARIABLES = ("SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS", "SSH_KEY_PASSPHRASE")

# The suite: proves what it got (hashes only, in a file), then prints every secret and fails.
LEAKY_SUITE = textwrap.dedent("""\
    import hashlib, json, os, sys
    names = ("SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS", "SSH_KEY_PASSPHRASE")
    seen = {n: hashlib.sha256(os.environ.get(n, "<unset>").encode()).hexdigest() for n in names}
    seen["inputs left"] = sorted(k for k in os.environ if k.startswith("INPUT_SSH"))
    with open("seen.json", "w") as f:
        json.dump(seen, f)
    for name in names:
        print(os.environ.get(name, ""))
    print(os.environ.get("SSH_PRIVATE_KEY", ""), file=sys.stderr)
    sys.exit(1)
    """)


@pytest.fixture(scope="module")
def ssh_secrets(tmp_path_factory) -> dict[str, str]:
    """A real OpenSSH key with a passphrase, and a known_hosts of two hosts, made for this run."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (openssh-client)")
    scratch = tmp_path_factory.mktemp("keys")
    keygen = lambda path, passphrase: subprocess.run(  # noqa: E731
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "deploy@ci", "-f", str(scratch / path)], check=True)
    keygen("id_deploy", PASSPHRASE)
    host_keys = []
    for host in ("app1.example.com", "app2.example.com"):
        keygen(host, "")
        kind, blob, _ = (scratch / f"{host}.pub").read_text().split()
        host_keys.append(f"{host} {kind} {blob}")
    return {
        "SSH_PRIVATE_KEY": (scratch / "id_deploy").read_text(),
        "SSH_KNOWN_HOSTS": "\n".join(host_keys) + "\n",
        "SSH_KEY_PASSPHRASE": PASSPHRASE,
    }


def secret_lines(secrets: dict[str, str]) -> list[str]:
    """Every line that must be masked: all but the PEM armour, which is the same in every key."""
    lines = [line for value in secrets.values() for line in value.splitlines() if line]
    lines = [line for line in lines if not line.startswith("-----")]
    assert all(len(line) >= 4 for line in lines)  # else the mask rule (4+ characters) would skip one
    return lines


def test_a_non_empty_input_sets_the_variable_an_empty_one_keeps_the_steps_env(capsys):
    environ = {"INPUT_SSH-PRIVATE-KEY": "-----BEGIN K-----\nkeyline-one\nkeyline-two\n-----END K-----\n",
               "INPUT_SSH-KNOWN-HOSTS": "", "SSH_KNOWN_HOSTS": "lb1 ssh-ed25519 AAAAfromenv",
               "SSH_PRIVATE_KEY": "overridden", "INPUT_SSH_PASSPHRASE": "pass-from-underscore-form"}
    load_ssh_inputs(Secrets(), environ)
    assert environ == {
        "SSH_PRIVATE_KEY": "-----BEGIN K-----\nkeyline-one\nkeyline-two\n-----END K-----\n",  # exactly as given
        "SSH_KNOWN_HOSTS": "lb1 ssh-ed25519 AAAAfromenv",  # the empty input left the step's env alone
        "SSH_KEY_PASSPHRASE": "pass-from-underscore-form",
    }  # and no INPUT_SSH* copy is left behind
    assert capsys.readouterr().out.splitlines() == [
        "::add-mask::keyline-one", "::add-mask::keyline-two", "::add-mask::lb1 ssh-ed25519 AAAAfromenv",
        "::add-mask::pass-from-underscore-form",
    ]


def workspace_with_leaky_suite(workspace: Path) -> None:
    deploy = workspace / "deploy"
    deploy.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "app" / "app.py", deploy / "app.py")
    (deploy / "leaky_suite.py").write_text(LEAKY_SUITE)
    proxy, blue, green = free_port(), free_port(), free_port()
    (deploy / "bluegreen.yml").write_text(textwrap.dedent(f"""\
        app: sshinputs
        environments:
          prod:
            target:
              kind: local
              command: ["{{python}}", "app.py", "--port", "{{port}}", "--version", "{{version}}"]
              ports: {{blue: {blue}, green: {green}}}
              router: {{listen: "127.0.0.1:{proxy}"}}
        timeouts: {{ready: 15s}}
        test_suite:
          command: ["{{python}}", "leaky_suite.py"]
        """))


def assert_masked_and_never_leaked(stdout: str, stderr: str, workspace: Path, summary: str, output: str,
                                   secrets: dict[str, str]) -> None:
    lines = stdout.splitlines()
    masks = [line for line in lines if line.startswith("::add-mask::")]
    assert masks and lines[: len(masks)] == masks, "every mask comes before any other line"
    for line in secret_lines(secrets):
        assert f"::add-mask::{line}" in masks, f"{line[:12]}... was not masked"

    seen = json.loads((workspace / "deploy" / "seen.json").read_text())
    for name in VARIABLES:
        assert seen[name] == hashlib.sha256(secrets[name].encode()).hexdigest(), f"{name} differs from the input"
    assert seen["inputs left"] == []

    report = (workspace / "deploy" / "bluegreen-report.json").read_text()
    texts = {"stdout after the masks": "\n".join(lines[len(masks):]), "stderr": stderr, "job summary": summary,
             "outputs": output, "report": report}
    for where, text in texts.items():
        for line in secret_lines(secrets):
            assert line not in text, f"{line[:12]}... leaked into the {where}"
    # The leak was a real attempt, redacted: the suite printed the key's lines.
    assert texts["stdout after the masks"].count("***") >= len(secret_lines(secrets))
    assert json.loads(report)["status"] == "failed"
    assert parse_github_output(output)["status"] == "failed"


def test_ssh_inputs_are_masked_and_reach_the_config_through_the_entrypoint(tmp_path, ssh_secrets):
    workspace = tmp_path / "workspace"
    workspace_with_leaky_suite(workspace)
    step = Step(workspace)
    try:
        result = step.run(config="bluegreen.yml", working_directory="deploy", version="1",
                          ssh_private_key=ssh_secrets["SSH_PRIVATE_KEY"], ssh_known_hosts=ssh_secrets["SSH_KNOWN_HOSTS"],
                          ssh_passphrase=ssh_secrets["SSH_KEY_PASSPHRASE"])
    finally:
        subprocess.run([sys.executable, "-m", "bluegreen", "down", "-c", "deploy/bluegreen.yml"], cwd=workspace,
                       capture_output=True, env={**os.environ, "BLUEGREEN_CI": "plain"}, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr  # the suite failed: no switch
    assert_masked_and_never_leaked(result.stdout, result.stderr, workspace, step.summary.read_text(),
                                   step.output.read_text(), ssh_secrets)


def test_ssh_inputs_in_the_actions_image(tmp_path, ssh_secrets, action_image):
    """As the runner starts a Docker action: `-e NAME` for each variable, the workspace at /github/workspace."""
    workspace, files = tmp_path / "workspace", tmp_path / "file_commands"
    workspace_with_leaky_suite(workspace)
    files.mkdir()
    (files / "output").write_text("")
    (files / "summary").write_text("")
    env = {
        "GITHUB_ACTIONS": "true", "GITHUB_WORKSPACE": "/github/workspace", "GITHUB_OUTPUT": "/github/file_commands/output",
        "GITHUB_STEP_SUMMARY": "/github/file_commands/summary", "INPUT_CONFIG": "bluegreen.yml",
        "INPUT_WORKING-DIRECTORY": "deploy", "INPUT_VERSION": "1", "INPUT_COMMAND": "deploy",
        "INPUT_SSH-PRIVATE-KEY": ssh_secrets["SSH_PRIVATE_KEY"], "INPUT_SSH-KNOWN-HOSTS": "",  # from the step's env:
        "SSH_KNOWN_HOSTS": ssh_secrets["SSH_KNOWN_HOSTS"], "INPUT_SSH-PASSPHRASE": ssh_secrets["SSH_KEY_PASSPHRASE"],
    }
    argv = ["docker", "run", "--rm", "-v", f"{workspace}:/github/workspace", "-v", f"{files}:/github/file_commands",
            "-w", "/github/workspace"]
    for name in env:
        argv += ["-e", name]  # the value from this process's environment: never on a command line
    result = subprocess.run([*argv, action_image], env={**os.environ, **env}, capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_masked_and_never_leaked(result.stdout, result.stderr, workspace, (files / "summary").read_text(),
                                   (files / "output").read_text(), ssh_secrets)


def test_the_configs_ssh_secrets_are_masked_whatever_variables_they_came_from(tmp_path, monkeypatch):
    """The config may read the key from another variable (`private_key: ${PROD_KEY}`): the entrypoint masks the
    values the loaded config holds, found where the servers target keeps them (target.ssh)."""
    monkeypatch.setenv("PROD_KEY", "key-content\nkey-second-line")
    monkeypatch.setenv("PROD_HOSTS", "kh-content")
    config = tmp_path / "bluegreen.yml"
    config.write_text(textwrap.dedent("""\
        app: shop
        environments:
          prod:
            target:
              kind: servers
              hosts: [app1]
              ssh: {user: deploy, private_key: "${PROD_KEY}", known_hosts: "${PROD_HOSTS}"}
              run: {mode: command, start: "true", stop: "true"}
              router_host: lb1
              router: {kind: haproxy, listen: ":80"}
        """))
    secrets_ = Secrets()
    mask_config(str(config), "prod", secrets_)
    assert {"key-content", "key-second-line", "kh-content"} <= set(secrets_.values)
    assert "deploy" not in secrets_.values  # the user is not a secret


def test_an_error_before_the_pipeline_is_redacted_on_stderr_and_in_the_outputs(tmp_path):
    """The CLI's own `bluegreen: error:` line (no Result yet) goes through the same redaction: here the error
    names a path built from the passphrase."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    (workspace / ".bluegreen.yml").write_text(
        "app: ghtest\nenvironments:\n  prod:\n    target: {kind: docker, image: 'x:{version}', "
        "docker_host: 'unix:///nonexistent/${SSH_KEY_PASSPHRASE}.sock'}\n")
    step = Step(workspace)
    result = step.run(command="status", ssh_passphrase="pass-in-a-path-7c1e")
    assert result.returncode != 0
    assert "::add-mask::pass-in-a-path-7c1e" in result.stdout.splitlines()[0]
    assert "/nonexistent/***.sock" in result.stderr, result.stderr  # the error was printed, redacted
    for where, text in {"stdout after the mask": "\n".join(result.stdout.splitlines()[1:]), "stderr": result.stderr,
                        "outputs": step.output.read_text()}.items():
        assert "pass-in-a-path-7c1e" not in text, where
    assert "/nonexistent/***.sock" in step.outputs()["reason"]
