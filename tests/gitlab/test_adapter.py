"""The GitLab adapter alone: log sections, the dotenv and JUnit files, the facts it reads."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from bluegreen.ci import detect
from bluegreen.ci.gitlab import GitLabAdapter, GitLabSections
from bluegreen.report import CheckResult, Phase, Result


def result(**changes: object) -> Result:
    values = dict(
        command="deploy", status="succeeded", app="shop", environment="production", live_colour="green",
        previous_colour="blue", idle_colour="blue", version="2", previous_version="1",
        preview_url="http://127.0.0.1:8102", live_url="https://shop.example.com", switched=True,
        rollback_command="bluegreen rollback -c .bluegreen.yml -e production",
        checks=[CheckResult(name="version", kind="smoke", target="preview", passed=True, attempts=2, duration=0.2),
                CheckResult(name="home", kind="smoke", target="preview", passed=False, detail="status 500\nbody x")],
    )
    values.update(changes)
    return Result(**values)


def test_each_phase_is_a_collapsed_section_with_its_outcome_after_it() -> None:
    out = io.StringIO()
    sections = GitLabSections()
    sections.stream = out
    sections.phase_started("deploy blue")
    sections.log("started pid 42")
    sections.phase_finished(Phase(name="deploy blue", status="succeeded", started_at=datetime.now(timezone.utc),
                                  duration=0.5, detail="version 2"))
    sections.phase_started("switch none -> blue")
    sections.phase_finished(Phase(name="switch none -> blue", status="failed", started_at=datetime.now(timezone.utc),
                                  detail="router refused"))
    lines = out.getvalue().split("\n")  # not splitlines(): \r is part of a section marker
    start = re.fullmatch(r"\x1b\[0Ksection_start:(\d+):bluegreen_1_deploy_blue\[collapsed=true\]\r\x1b\[0Kdeploy blue",
                         lines[0])
    assert start and abs(int(start[1]) - datetime.now().timestamp()) < 60
    assert lines[1] == "       started pid 42"
    assert re.fullmatch(r"\x1b\[0Ksection_end:\d+:bluegreen_1_deploy_blue\r\x1b\[0K", lines[2])
    assert "ok   deploy blue" in lines[3] and "version 2" in lines[3]
    # Section names allow only [A-Za-z0-9_.-]; the outcome of a failed phase shows outside it, in red.
    assert ":bluegreen_2_switch_none_-_blue[collapsed=true]" in lines[4]
    assert lines[5].endswith(":bluegreen_2_switch_none_-_blue\r\x1b[0K")
    assert lines[6].startswith("\x1b[31;1m  FAIL switch none -> blue") and "router refused" in lines[6]


def test_gitlab_is_detected_and_its_facts_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITLAB_CI", "true")
    monkeypatch.delenv("BLUEGREEN_CI", raising=False)
    monkeypatch.setenv("CI_JOB_URL", "https://gitlab.example.com/shop/-/jobs/77")
    monkeypatch.setenv("GITLAB_USER_LOGIN", "ada")
    adapter = detect()
    assert isinstance(adapter, GitLabAdapter)
    assert (adapter.run_url, adapter.actor) == ("https://gitlab.example.com/shop/-/jobs/77", "ada")


def test_publish_writes_the_dotenv_and_junit_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BLUEGREEN_ROLLBACK_JOB", "shop-rollback")
    monkeypatch.setenv("CI_PIPELINE_URL", "https://gitlab.example.com/shop/-/pipelines/9")
    adapter = GitLabAdapter()
    adapter.output.stream = out = io.StringIO()
    adapter.publish(result(reason="line one\nline two"), None)  # type: ignore[arg-type]

    lines = (tmp_path / "bluegreen.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines)
    assert env["BLUEGREEN_LIVE_COLOUR"] == "green" and env["BLUEGREEN_PREVIOUS_VERSION"] == "1"
    assert env["BLUEGREEN_ROLLBACK_COMMAND"] == "bluegreen rollback -c .bluegreen.yml -e production"
    assert env["BLUEGREEN_REASON"] == "line one line two"  # dotenv values are one line each
    assert all(re.fullmatch(r"BLUEGREEN_[A-Z_]+=[^\n]*", line) for line in lines)

    suite = ET.parse(tmp_path / "bluegreen-junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    assert suite.find("testcase[@name='home (preview)']/failure").get("message") == "status 500\nbody x"
    assert out.getvalue() == "or run the manual job shop-rollback of pipeline https://gitlab.example.com/shop/-/pipelines/9\n"


def test_no_rollback_hint_when_nothing_switched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BLUEGREEN_ROLLBACK_JOB", "shop-rollback")
    adapter = GitLabAdapter()
    adapter.output.stream = out = io.StringIO()
    adapter.publish(result(status="failed", switched=False, live_colour="blue", reason="smoke check failed"), None)  # type: ignore[arg-type]
    assert out.getvalue() == ""
    assert "BLUEGREEN_STATUS=failed" in (tmp_path / "bluegreen.env").read_text()


def test_a_bad_config_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bluegreen.yml").write_text("app: shop\nenvironments:\n  production:\n    target: {kind: nowhere}\n")
    env = {"GITLAB_CI": "true", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "bluegreen", "deploy", "-c", "bluegreen.yml", "--version", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert "bluegreen.yml:4" in done.stderr


def test_the_ssh_secrets_lines_are_redacted_from_everything_the_adapter_writes(monkeypatch, tmp_path) -> None:
    """GitLab cannot mask a multi-line variable: the adapter replaces the lines of the SSH secrets the component's
    jobs put in SSH_PRIVATE_KEY, SSH_KNOWN_HOSTS and SSH_KEY_PASSPHRASE, in the log, the dotenv and the JUnit."""
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\nAAAAMwAAAAtzc2gtZW\n-----END OPENSSH PRIVATE KEY-----\n"
    monkeypatch.setenv("SSH_PRIVATE_KEY", key)
    monkeypatch.setenv("SSH_KNOWN_HOSTS", "lb1.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost\n")
    monkeypatch.setenv("SSH_KEY_PASSPHRASE", "pass phrase 42")
    monkeypatch.chdir(tmp_path)
    adapter = GitLabAdapter()
    out = io.StringIO()
    adapter.output.stream = out
    adapter.output.log(f"a careless suite prints {key}")
    leaky = result(status="failed", switched=False, reason="denied with pass phrase 42 for AAAAMwAAAAtzc2gtZW",
                   checks=[CheckResult(name="home", kind="smoke", target="preview", passed=False,
                                       detail="lb1.example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHost")])
    adapter.publish(leaky, None)  # type: ignore[arg-type]
    written = {"log": out.getvalue(), "dotenv": Path("bluegreen.env").read_text(),
               "junit": Path("bluegreen-junit.xml").read_text(), "report": adapter.redact(leaky.to_json())}
    for where, text in written.items():
        for secret in ("b3BlbnNzaC1rZXktdjEAAAAABG5vbmU", "AAAAMwAAAAtzc2gtZW", "pass phrase 42", "AAAAIHost"):
            assert secret not in text, f"{secret} in the {where}"
    assert "***" in written["log"] and "denied with *** for ***" in written["dotenv"]


def test_the_configs_secrets_are_redacted_from_the_log_once_protected(monkeypatch, tmp_path) -> None:
    """A TSIG secret or an AWS secret key reaches the job as a CI/CD variable that a router's config names: once
    the config is loaded, the CLI hands its secret values to the adapter, which hides them in the log too."""
    monkeypatch.chdir(tmp_path)
    adapter = GitLabAdapter()
    out = io.StringIO()
    adapter.output.stream = out
    adapter.output.log("before: dGhlIHRzaWcgc2VjcmV0IQ==")
    adapter.protect(["dGhlIHRzaWcgc2VjcmV0IQ==", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"])
    adapter.output.log("a careless suite prints dGhlIHRzaWcgc2VjcmV0IQ== and wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    before, after = out.getvalue().splitlines()
    assert "dGhlIHRzaWcgc2VjcmV0IQ==" in before  # not a secret until the config said so
    assert "dGhlIHRzaWcgc2VjcmV0IQ==" not in after and "EXAMPLEKEY" not in after and after.count("***") == 2
