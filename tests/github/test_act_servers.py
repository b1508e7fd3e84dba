"""The action deploys to real servers over SSH, under act: examples/workflows/servers.yml (deploy on push, rollback by
workflow_dispatch) with `uses: ./`, and examples/servers/bluegreen.yml as .bluegreen.yml (tests/servers/example.py),
against a lab: two app hosts and a load balancer running HAProxy, each a container with a real sshd.

The key (with a passphrase), the passphrase and known_hosts are act secrets (`--secret NAME`, the value read from
act's environment, never on its command line), as the repository's secrets reach the workflow on GitHub. act's job
container runs on the host's network (act's default `--network host`) and the action's container shares it, so the
action reaches the lab's hosts at their addresses on the lab's network, as this machine does: nothing is published
and no traffic goes anywhere else. Traffic is checked from outside, through the load balancer.

The tests run in order and share the workspace and the lab: deploy, deploy with switch, the rollback dispatch, and
the secrets in nothing act printed nor in the workspace.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
import pytest
import yaml

from servers.example import ENVIRONMENT, LEAKY_SUITE, example_config, example_ports
from servers.lab import Lab, get_version, start_lab

from .support import ACT_JOB_IMAGE, ROOT, copy_action, for_act, need_act, remove_act_containers, unique
from .test_act_e2e import log_lines

PASSPHRASE = "act-secret passphrase 5f0c2e"
ROLLBACK_COMMAND = f"bluegreen rollback -c .bluegreen.yml -e {ENVIRONMENT}"


@dataclass
class Repo:
    root: Path
    act_bin: str
    lab: Lab
    app: str
    secrets: dict[str, str] = field(repr=False)
    printed: list[str] = field(default_factory=list, repr=False)  # everything act printed, for the secrets check
    durations: list[str] = field(default_factory=list)

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                              cwd=self.root, check=True, capture_output=True, text=True).stdout.strip()

    def commit(self, message: str) -> str:
        self.git("commit", "-q", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")

    def act(self, event: str, *inputs: str) -> subprocess.CompletedProcess:
        argv = [self.act_bin, event, "-W", ".github/workflows/servers.yml", "-P", f"ubuntu-latest={ACT_JOB_IMAGE}",
                "--pull=false", "-b", "--rm"]
        for name in self.secrets:
            argv += ["--secret", name]  # the value from the environment below: never on a command line
        for item in inputs:
            argv += ["--input", item]
        started = time.monotonic()
        try:
            result = subprocess.run(argv, cwd=self.root, env={**_environ(), **self.secrets}, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=300)
        finally:
            remove_act_containers(self.root)  # a run killed by the timeout leaves its job container
        self.durations.append(f"{event} {time.monotonic() - started:.1f}s")
        self.printed.append(result.stdout + result.stderr)
        return result

    def lines(self, result: subprocess.CompletedProcess) -> list[str]:
        """The example's "Show the release" step's lines."""
        return log_lines(result, "bluegreen: ")


def _environ() -> dict[str, str]:
    """act's environment without this shell's own CI or SSH variables (the secrets are added explicitly)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "INPUT_", "SSH_"))}


def _failed(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-5000:] + result.stderr[-2000:]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    act = need_act()
    lab = start_lab(apps=2, lb=True)
    try:
        root = tmp_path_factory.mktemp("act-servers") / "repo"
        root.mkdir()
        copy_action(root)
        workflows = root / ".github" / "workflows"
        workflows.mkdir(parents=True)
        text = (ROOT / "examples" / "workflows" / "servers.yml").read_text()
        assert "uses: bluegreen-dev/bluegreen@v1" in text
        (workflows / "servers.yml").write_text(for_act(text))

        app = unique("act")
        (root / ".bluegreen.yml").write_text(yaml.safe_dump({**example_config(lab, app), "test_suite": LEAKY_SUITE}, sort_keys=False))
        (root / ".gitignore").write_text("bluegreen-report.json\n")
        lab.haproxy(lab.lb, lab.apps, example_ports(), app=app)
        # The lab's key, as a deploy key is kept: encrypted, its passphrase a secret of its own.
        key = asyncssh.import_private_key(lab.private_key).export_private_key(passphrase=PASSPHRASE).decode()
        secrets = {"SSH_PRIVATE_KEY": key, "SSH_KNOWN_HOSTS": lab.known_hosts, "SSH_KEY_PASSPHRASE": PASSPHRASE}
        repo = Repo(root, act, lab, app, secrets)
        repo.git("init", "-q", "-b", "main")
        repo.git("add", "-A")
        repo.git("commit", "-q", "-m", "the action, the servers workflow and config")
        yield repo
        print(f"\nact runs: {', '.join(repo.durations)}")
    finally:
        lab.close()


def test_push_deploys_to_the_servers_then_switches(repo: Repo):
    lab = repo.lab
    first = repo.commit("first release")
    result = repo.act("push")
    assert result.returncode == 0, _failed(result)
    assert "Success - Main Blue-green deploy" in result.stdout
    assert get_version(lab.lb) == first  # from outside, through the load balancer
    assert repo.lines(result) == [f"bluegreen: status=succeeded live-colour=blue previous-colour= live-version={first}"]

    second = repo.commit("second release")
    result = repo.act("push")
    assert result.returncode == 0, _failed(result)
    assert get_version(lab.lb) == second
    assert repo.lines(result) == [
        f"bluegreen: status=succeeded live-colour=green previous-colour=blue live-version={second}",
        f"bluegreen: rollback-command={ROLLBACK_COMMAND}",
    ]
    # The preview URL outlives the step: the first host's address (not the run's port forward), the new version there.
    green = example_ports()["green"]
    assert f"::set-output:: preview-url=http://{lab.apps[0].address}:{green}\n" in result.stdout, _failed(result)
    assert get_version(lab.apps[0], green) == second
    # Switched on the load balancer itself (its map file), the history kept there.
    assert f"{repo.app} {repo.app}_green" in lab.lb.exec("cat /etc/haproxy/bluegreen.map").stdout
    history = json.loads(lab.lb.exec(f"cat /var/lib/bluegreen/{repo.app}-{ENVIRONMENT}/history.json").stdout)
    assert [r["version"] for r in history][:2] == [second, first], history


def test_rollback_dispatch_switches_back(repo: Repo):
    lab = repo.lab
    history = json.loads(lab.lb.exec(f"cat /var/lib/bluegreen/{repo.app}-{ENVIRONMENT}/history.json").stdout)
    first, second = history[1]["version"], history[0]["version"]
    result = repo.act("workflow_dispatch", "command=rollback", "reason=act rollback test")
    assert result.returncode == 0, _failed(result)
    assert "Success - Main Blue-green rollback" in result.stdout, _failed(result)
    assert get_version(lab.lb) == first
    assert repo.lines(result) == [
        f"bluegreen: status=succeeded live-colour=blue previous-colour=green live-version={first}",
        f"bluegreen: rollback-command={ROLLBACK_COMMAND}",
    ]
    history = json.loads(lab.lb.exec(f"cat /var/lib/bluegreen/{repo.app}-{ENVIRONMENT}/history.json").stdout)
    assert (history[0]["action"], history[0]["version"], history[0]["previous_version"]) == ("rollback", first, second)


def test_no_line_of_the_secrets_in_anything_act_printed_or_the_workspace(repo: Repo):
    assert len(repo.printed) == 3, "runs after the deploys and the rollback"
    lines = {line.strip() for value in repo.secrets.values() for line in value.splitlines()
             if line.strip() and not line.startswith("-----")}  # the PEM armour is the same in every key
    assert len(lines) >= 5  # the key's lines, a known_hosts line per host, the passphrase
    for text in repo.printed:
        for line in lines:
            assert line not in text, f"{line[:16]}... in act's output"
    # The test suite printed every line of them (it ran with them, once per host): each line came out as ***.
    deploys = "".join(repo.printed[:2])
    assert "<unset>" not in deploys and len(re.findall(r"\|\s+\*\*\*$", deploys, re.M)) >= 2 * 2 * len(lines), deploys[-3000:]
    for path in repo.root.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            text = path.read_text(errors="replace")
            assert not any(line in text for line in lines), path
