"""Config files: what a user gets for a mistake (one line: file, line, field; exit 2), and the schema."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import jsonschema
import pytest
import yaml

from bluegreen.config import ConfigErrors, json_schema, load_config
from bluegreen.errors import ConfigError
from conftest import ROOT, assert_one_line_error

VALID = """\
app: shop
environments:
  production:
    target:
      kind: local
      command: ["./server", "--port", "{port}"]
"""

SERVERS = """\
app: shop
environments:
  production:
    target:
      kind: servers
      hosts: [app1, app2]
      ssh: {user: deploy, known_hosts: x, private_key: y}
      run: {mode: command, start: "systemctl start app@{colour}", stop: "systemctl stop app@{colour}"}
      router_host: lb1
      router: {kind: haproxy, listen: ":80", socket: /run/haproxy/admin.sock, map_file: /etc/haproxy/bluegreen.map}
"""

BROKEN = {
    "wrong type": (
        VALID + "      ports: {blue: abc, green: 2}\n",
        "bad.yml:7: environments.production.target.ports.blue: Input should be a valid integer",
    ),
    "unknown key": (VALID + "      colour: blue\n", "bad.yml:7: environments.production.target.colour: unknown key (allowed "
                    "here: kind, command, ports, host, addresses, health_path, env, working_directory, state_dir, router)"),
    "unknown top-level key": ("verfy: {window: 3}\n" + VALID, "bad.yml:1: verfy: unknown key (did you mean 'verify'?)"),
    "two typos, both named in file order": (
        "smoke:\n  checks:\n    - name: a\n      paht: /\n    - name: b\n      expect: {stauts: 200}\n" + VALID,
        "bad.yml:4: smoke.checks[0].paht: unknown key (did you mean 'path'?); "
        "bad.yml:6: smoke.checks[1].expect.stauts: unknown key (did you mean 'status'?)",
    ),
    "a typo and a wrong value": (
        VALID.replace("kind: local", "kind: docker\n      image: x\n      routr: {}\n      stop_timeout: forever"),
        "bad.yml:7: environments.production.target.routr: unknown key (did you mean 'router'?); "
        "bad.yml:8: environments.production.target.stop_timeout: expected a duration",
    ),
    "missing field": (
        "app: shop\nenvironments:\n  production:\n    target:\n      kind: local\n",
        "bad.yml:4: environments.production.target.command: required field is missing",
    ),
    "missing app": (VALID.replace("app: shop\n", ""), "bad.yml:1: app: required field is missing"),
    "unknown target kind": (
        VALID.replace("kind: local", "kind: nomad"),
        "bad.yml:5: environments.production.target.kind: unknown kind 'nomad'",
    ),
    "bad duration": ("smoke: {timeout: forever}\n" + VALID, "bad.yml:1: smoke.timeout: expected a duration"),
    "bad regex": (
        "smoke:\n  checks:\n    - name: x\n      expect: {body_regex: '('}\n" + VALID,
        "bad.yml:4: smoke.checks[0].expect.body_regex: not a valid regular expression",
    ),
    "string command without shell": (
        "test_suite: {command: 'pytest -q'}\n" + VALID, "bad.yml:1: test_suite: a string command runs through /bin/sh"
    ),
    "bad YAML": ("app: shop\nenvironments: [\n", "bad.yml:3:1: invalid YAML:"),
    "tab indentation": ("app: shop\n\tenvironments: {}\n", "bad.yml:2:1: invalid YAML:"),
    "empty file": ("", "bad.yml: the file is empty"),
    "a list, not a mapping": ("- app\n", "bad.yml:1: expected a mapping with 'app' and 'environments', got a list"),
    "app name not a DNS label": (VALID.replace("app: shop", "app: My Shop"), "bad.yml:1: app: String should match"),
    "servers: a proxy bluegreen would run on the load balancer": (
        SERVERS.replace("kind: haproxy", "kind: haproxy, manage: true"),
        "bad.yml:4: environments.production.target: router.manage must be false on servers",
    ),
    "servers: one Caddy in front of two hosts": (
        SERVERS.replace("kind: haproxy, listen", "kind: caddy, listen").replace(
            ", socket: /run/haproxy/admin.sock, map_file: /etc/haproxy/bluegreen.map", ""),
        "bad.yml:4: environments.production.target: router.kind caddy reads one upstream address",
    ),
    "servers: known_hosts missing": (
        SERVERS.replace("known_hosts: x, ", ""),
        "bad.yml:7: environments.production.target.ssh.known_hosts: required field is missing",
    ),
    "servers: unknown run mode": (
        SERVERS.replace("mode: command", "mode: systemd"),
        "bad.yml:8: environments.production.target.run.mode: unknown mode 'systemd' (expected one of: 'docker', 'command')",
    ),
    "servers: a host listed twice": (
        SERVERS.replace("[app1, app2]", "[app1, app1]"),
        "bad.yml:6: environments.production.target.hosts: 'app1' is listed twice",
    ),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_config_is_one_line_naming_file_line_and_field(tmp_path, case):
    text, expected = BROKEN[case]
    (tmp_path / "bad.yml").write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", "bad.yml", "--version", "1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2, result.stderr
    line = assert_one_line_error(result)
    assert line.startswith(f"bluegreen: error: {expected}"), line
    assert result.stderr.strip() == line  # nothing else was printed


def test_every_error_at_once_each_with_its_line(tmp_path):
    """A file with many mistakes names each (one location once, even when a union tried several types), in
    file order, as one line; the exception keeps them apart for CI annotations. Past 10 it counts the rest."""
    path = tmp_path / "c.yml"
    checks = "".join(f"    - {{name: c{i}, pahts: /}}\n" for i in range(12))
    path.write_text("smoke:\n  checks:\n" + checks + "  timeout: forever\n" + VALID.replace("app: shop", "app: ${NO_SUCH_VAR}"))
    with pytest.raises(ConfigErrors) as caught:
        load_config(path)
    errors = caught.value.errors
    assert len(errors) == 14  # 12 typos, the duration, the variable (its empty value is not named again)
    assert errors[0] == f"{path}:3: smoke.checks[0].pahts: unknown key (did you mean 'path'?)"
    assert errors[12].startswith(f"{path}:15: smoke.timeout: expected a duration")
    assert errors[13] == f"{path}:16: app: environment variable NO_SUCH_VAR is not set"
    assert str(caught.value).endswith("(and 4 more)") and "\n" not in str(caught.value)


def test_missing_config_file_and_wrong_environment(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "bluegreen", *a], cwd=tmp_path, capture_output=True,
                                    text=True, timeout=60)
    missing = run("status")
    assert missing.returncode == 2
    assert assert_one_line_error(missing) == "bluegreen: error: .bluegreen.yml: config file not found (choose one with -c)"
    (tmp_path / ".bluegreen.yml").write_text(VALID.replace("  production:", "  staging:\n    target: {kind: local, command: [x]}\n  production:"))
    several = run("status")
    assert several.returncode == 2 and "several environments (staging, production); choose one with -e" in several.stderr
    wrong = run("status", "-e", "prod")
    assert wrong.returncode == 2 and "no environment 'prod' (have: staging, production)" in wrong.stderr


def test_unknown_option_is_a_usage_error(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bluegreen", "deploy", "--versoin", "1"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unrecognized arguments: --versoin" in result.stderr or "required: --version" in result.stderr


def test_environment_overrides_defaults_key_by_key(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text(textwrap.dedent("""\
        app: shop
        scale_down_delay: 5m
        timeouts: {ready: 10s}
        environments:
          staging:
            target: {kind: local, command: [x]}
            scale_down_delay: never
          production:
            target: {kind: local, command: [x], ports: {blue: 9001, green: 9002}}
    """))
    staging, production = load_config(path, "staging"), load_config(path, "production")
    assert staging.scale_down_delay == "never" and production.scale_down_delay == 300
    assert staging.timeouts.ready == production.timeouts.ready == 10
    assert production.target.ports.green == 9002


def test_env_var_references(tmp_path, monkeypatch):
    path = tmp_path / "c.yml"
    path.write_text(VALID + "      env: {TOKEN: '${APP_TOKEN}', MODE: '${APP_MODE:-safe}', LITERAL: '$${NOT_A_VAR}'}\n"
                    "  other:\n    target: {kind: local, command: ['${ONLY_FOR_OTHER}']}\n")
    monkeypatch.setenv("APP_TOKEN", "s3cret")
    env = load_config(path, "production").target.env
    assert env == {"TOKEN": "s3cret", "MODE": "safe", "LITERAL": "${NOT_A_VAR}"}
    monkeypatch.delenv("APP_TOKEN")
    with pytest.raises(ConfigError, match=r"c.yml:7: environments.production.target.env.TOKEN: environment variable "
                                          r"APP_TOKEN is not set"):
        load_config(path, "production")


def test_committed_schema_matches_the_models():
    committed = json.loads((ROOT / "schema" / "bluegreen.schema.json").read_text())
    assert committed == json_schema(), "schema/bluegreen.schema.json is stale: run `make schema`"


def example_configs() -> list[Path]:
    return sorted(p for p in (ROOT / "examples").rglob("bluegreen.yml"))


@pytest.mark.parametrize("path", example_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_example_configs_are_valid_and_point_editors_at_the_schema(path, monkeypatch):
    for name in ("SSH_PRIVATE_KEY", "SSH_KNOWN_HOSTS"):  # the servers example's CI secrets
        monkeypatch.setenv(name, "from a CI secret")
    text = path.read_text()
    assert text.startswith("# yaml-language-server: $schema=")
    schema_ref = text.splitlines()[0].split("$schema=")[1]
    assert (path.parent / schema_ref).resolve() == (ROOT / "schema" / "bluegreen.schema.json")
    jsonschema.validate(yaml.safe_load(text), json_schema())  # editors see what bluegreen sees
    for environment in yaml.safe_load(text)["environments"]:
        load_config(path, environment)


def test_schema_rejects_what_the_models_reject():
    bad = yaml.safe_load(VALID.replace("kind: local", "kind: local\n      colour: blue"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())


@pytest.mark.parametrize("name", ["..", "a/b", ".hidden", "x" * 64])
def test_environment_names_that_would_escape_a_path_are_refused(tmp_path, name):
    """{environment} goes into state_dir: `..` would point it at the config's own folder (and `down --purge`
    would delete that folder)."""
    (tmp_path / "bad.yml").write_text(VALID.replace("  production:", f"  {json.dumps(name)}:"))
    result = subprocess.run([sys.executable, "-m", "bluegreen", "validate", "-c", "bad.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "environments: environment name" in assert_one_line_error(result)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(yaml.safe_load((tmp_path / "bad.yml").read_text()), json_schema())
