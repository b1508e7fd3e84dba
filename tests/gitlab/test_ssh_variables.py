"""The component's SSH secrets, run by gitlab-ci-local: the key from a File-type variable, known_hosts as base64
in a variable an input names, the passphrase as a plain variable. The deploy and rollback jobs put the content
in SSH_PRIVATE_KEY, SSH_KNOWN_HOSTS and SSH_KEY_PASSPHRASE, and none of it reaches a job log, the dotenv, the
JUnit report or the JSON report, although the test suite prints all three."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import GitLabProject

PASSPHRASE = "correct-horse-battery-staple-42"
NAMES = ("SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS", "SSH_KEY_PASSPHRASE")

# The test suite: proves what bluegreen's environment holds (hashes, in the state dir), then prints all of it.
LEAKY_SUITE = """\
import hashlib, json, os, sys
names = {names!r}
seen = {{n: hashlib.sha256(os.environ.get(n, "<unset>").encode()).hexdigest() for n in names}}
with open(sys.argv[1], "w") as f:
    json.dump(seen, f)
for name in names:
    print(os.environ.get(name, ""))
"""


def keys(scratch: Path) -> dict[str, str]:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (openssh-client)")
    scratch.mkdir()
    keygen = lambda path, passphrase: subprocess.run(  # noqa: E731
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "deploy@ci", "-f", str(scratch / path)], check=True)
    keygen("id_deploy", PASSPHRASE)
    keygen("host", "")
    kind, blob, _ = (scratch / "host.pub").read_text().split()
    return {
        "SSH_PRIVATE_KEY": (scratch / "id_deploy").read_text(),
        "SSH_KNOWN_HOSTS": f"app1.example.com {kind} {blob}\napp2.example.com {kind} {blob}\n",
        "SSH_KEY_PASSPHRASE": PASSPHRASE,
    }


def never_shown(project: GitLabProject, values: list[str], *runs) -> None:
    for run in runs:
        for value in values:
            assert value not in run.output, f"{value[:12]}... in a job log"
    ci = project.dir / ".gitlab-ci-local"
    written = [*(ci / "artifacts").rglob("*"), *(ci / "output").rglob("*"), *project.dir.glob("bluegreen*"),
               *project.state_dir.rglob("*")]  # every artifact, the saved job logs, the reports, the app's logs
    for path in written:
        if path.is_file():
            text = path.read_text(errors="replace")
            for value in values:
                assert value not in text, f"{value[:12]}... in {path}"


def test_ssh_secrets_from_a_file_variable_and_base64_reach_bluegreen_unprinted(project: GitLabProject, tmp_path):
    secrets = keys(tmp_path / "keys")
    seen_file = project.state_dir.parent / "seen.json"
    project.write("suite.py", LEAKY_SUITE.format(names=NAMES))
    # Every job loads them: the config refers to one, so a job without it would fail on a missing variable.
    config = (project.dir / "bluegreen.yml").read_text()
    project.write("bluegreen.yml", config.replace("Bearer ${BG_TEST_TOKEN}", "Bearer ${SSH_KEY_PASSPHRASE}"))
    with open(project.dir / "bluegreen.yml", "a") as config:
        config.write(f'test_suite:\n  command: ["{{python}}", "suite.py", "{seen_file}"]\n')
    # A File-type variable, as gitlab-ci-local makes one: a value that is an existing path, in the user's variables
    # file (outside the repository). The job gets a path to a copy; GitLab does the same.
    home_variables = Path(project.env["HOME"]) / ".gitlab-ci-local" / "variables.yml"
    home_variables.parent.mkdir(parents=True)
    home_variables.write_text(f"global:\n  SSH_PRIVATE_KEY: {tmp_path / 'keys' / 'id_deploy'}\n")
    known_hosts_b64 = base64.b64encode(secrets["SSH_KNOWN_HOSTS"].encode()).decode()
    project.variables.update(STAGING_KNOWN_HOSTS_B64=known_hosts_b64, SSH_KEY_PASSPHRASE=PASSPHRASE)
    project.use_pipeline("servers-secrets.yml")
    project.commit("release with ssh secrets")

    deploy = project.gcl("bluegreen-deploy")
    assert deploy.returncode == 0, deploy.output
    seen = json.loads(seen_file.read_text())
    assert seen["SSH_PRIVATE_KEY"] == hashlib.sha256(secrets["SSH_PRIVATE_KEY"].encode()).hexdigest()
    assert seen["SSH_KNOWN_HOSTS"] == hashlib.sha256(secrets["SSH_KNOWN_HOSTS"].encode()).hexdigest()
    assert seen["SSH_KEY_PASSPHRASE"] == hashlib.sha256(PASSPHRASE.encode()).hexdigest()
    assert "       ***" in deploy.output  # the suite did print them: redacted by the adapter

    project.write("CHANGELOG", "second release\n")
    project.commit("second release")
    second = project.gcl("bluegreen-deploy")
    assert second.returncode == 0, second.output
    # The rollback job (a manual job, as days later) loads them the same way.
    back = project.gcl("--manual", "bluegreen-rollback", "bluegreen-rollback")
    assert back.returncode == 0 and "rollback succeeded: blue is live" in back.output, back.output
    never_shown(project, [line for value in secrets.values() for line in value.splitlines()
                          if line and not line.startswith("-----")] + [known_hosts_b64], deploy, second, back)


def test_a_variable_that_is_no_key_nor_base64_fails_in_one_line(project: GitLabProject):
    project.variables.update(STAGING_KNOWN_HOSTS_B64="bm90LWJhc2U2NA=x")  # base64 characters, not valid base64
    project.use_pipeline("servers-secrets.yml")
    project.commit("a broken variable")
    run = project.gcl("bluegreen-deploy")
    assert run.returncode != 0
    assert ("bluegreen: error: CI/CD variable STAGING_KNOWN_HOSTS_B64 is neither a key, known_hosts lines, "
            "a File-type variable nor valid base64") in run.output, run.output
    assert "bm90LWJhc2U2NA=x" not in run.output
    assert "deploy 1" not in run.output and not (project.dir / "bluegreen-report.json").exists()  # nothing ran
