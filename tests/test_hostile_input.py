"""Hostile input, property-tested: configs from our own JSON Schema and then broken, versions and CI inputs as
arbitrary text. Whatever comes in: no traceback, a documented exit code, a failure is one line, and nothing a
version or an input contains is ever executed or becomes a path.

Hypothesis runs derandomized with modest example counts, so CI is deterministic and this file stays fast.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from bluegreen import cli
from bluegreen.action import InputError, build_argv, mask_kubeconfig
from bluegreen.ci.github import GitHubAdapter, Secrets
from bluegreen.config import MAX_DEPTH, MAX_VALUES, json_schema
from bluegreen.report import Result
from conftest import ROOT, LocalEnv
from github.support import parse_github_output

FAST = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
# hypothesis-jsonschema takes ~0.2 s per config of our schema on this machine: few examples, and a failure is
# reported as found (shrinking one takes minutes)
SLOW = settings(FAST, max_examples=20, phases=[Phase.explicit, Phase.generate])
HOSTILE_TEXTS = [
    "$(touch {canary})", "`touch {canary}`", "1;touch {canary}", "1 && touch {canary}", "1 | touch {canary}",
    "1\ntouch {canary}", "1\r\ninjected=yes", "../../../{canary}", "..", "a/../../b", "-rf", "--help",
    "x" * 10_000, "'\"", "${HOME}", "%(x)s {version} {{", "\x1b[31mred", "é\u2028ü", "\x00",
]


# --- what every validate must look like -------------------------------------------------------------


def is_one_line(text: str) -> bool:
    """One line: a final newline and no other line break or control character (a tab is fine)."""
    body = text[:-1] if text.endswith("\n") else None
    return body is not None and not any(
        ch != "\t" and unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in body
    )


def validate_in_process(capsys: pytest.CaptureFixture, config: Path) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = cli.main(["validate", "-c", str(config)])
    except SystemExit as exc:  # argparse; never expected here
        code = exc.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert_validate_contract(code, out, err)
    return code, err


def assert_validate_contract(code: int, out: str, err: str) -> None:
    assert "Traceback" not in err, err
    assert code in (0, 2), f"exit {code}: {err[:2000]}"
    assert out == "", out[:2000]
    assert is_one_line(err), repr(err[:2000])
    if code == 2:
        assert err.startswith("bluegreen: error: "), err[:2000]
        assert len(err) < 2000, f"an error line of {len(err)} characters: {err[:300]!r}..."
    else:
        assert ": ok (" in err, err


# --- configs from the schema, then mutated ----------------------------------------------------------


def resolved_schema() -> dict:
    """Our schema with every $ref inlined (hypothesis-jsonschema wants no $defs), one environment per file
    (several need -e, which validate does not pass: each would stop at that one error)."""
    schema = json_schema()
    defs = schema["$defs"]

    def inline(node):
        if isinstance(node, dict):
            if "$ref" in node:
                target = defs[node["$ref"].rsplit("/", 1)[1]]
                return inline({**target, **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: inline(v) for k, v in node.items() if k not in ("$defs", "$schema", "$id")}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    resolved = inline(schema)
    resolved["properties"]["environments"]["maxProperties"] = 1
    assert "$ref" not in json.dumps(resolved)
    return resolved


SCHEMA_CONFIGS = from_schema(resolved_schema())
ANY_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(node, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _get(root, path):
    for part in path:
        root = root[part]
    return root


@st.composite
def mutated(draw, base: st.SearchStrategy) -> object:
    """A config, then one to three of: a key dropped, a value of the wrong type, an unknown key, deep
    nesting, a huge string."""
    config = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["drop", "retype", "unknown", "nest", "huge"]))
        if kind == "unknown":
            dicts = [p for p in _paths(config) if isinstance(_get(config, p), dict)]
            if dicts:
                _get(config, draw(st.sampled_from(dicts)))[draw(st.text(min_size=1, max_size=12))] = draw(ANY_VALUE)
            continue
        paths = [p for p in _paths(config) if p]
        if not paths:
            continue
        path = draw(st.sampled_from(paths))
        parent = _get(config, path[:-1])
        if kind == "drop":
            del parent[path[-1]]
        elif kind == "retype":
            parent[path[-1]] = draw(ANY_VALUE)
        elif kind == "nest":
            value = parent[path[-1]]
            for _ in range(draw(st.sampled_from([2, MAX_DEPTH, MAX_DEPTH + 5, 400]))):
                value = [value] if draw(st.booleans()) else {"k": value}
            parent[path[-1]] = value
        else:
            parent[path[-1]] = draw(st.text(min_size=1, max_size=5)) * draw(st.sampled_from([1000, 50_000]))
    return config


def dump(config: object) -> str:
    try:
        return yaml.safe_dump(config, allow_unicode=True, sort_keys=False)
    except RecursionError:  # PyYAML's dumper recurses as its composer does: write the deep value as flow JSON
        return json.dumps(config)


@SLOW
@given(config=SCHEMA_CONFIGS)
def test_configs_from_the_schema_validate_or_fail_in_one_line(capsys, tmp_path, config):
    path = tmp_path / "bluegreen.yml"
    path.write_text(dump(config), encoding="utf-8")
    event(f"exit {validate_in_process(capsys, path)[0]}")


@SLOW
@given(config=mutated(SCHEMA_CONFIGS))
def test_mutated_schema_configs_fail_in_one_line(capsys, tmp_path, config):
    path = tmp_path / "bluegreen.yml"
    path.write_text(dump(config), encoding="utf-8")
    event(f"exit {validate_in_process(capsys, path)[0]}")


VALID = [yaml.safe_load(p.read_text()) for p in sorted(ROOT.glob("examples/*/bluegreen.yml"))]


@pytest.fixture(autouse=True, scope="module")
def ci_secrets_of_the_examples():
    """The servers example reads its key and known_hosts from CI secrets: set for this module, as CI would."""
    with mock.patch.dict(os.environ, {"SSH_PRIVATE_KEY": "from a CI secret", "SSH_KNOWN_HOSTS": "from a CI secret"}):
        yield


def test_the_examples_are_valid_bases(capsys, tmp_path):
    assert VALID
    for config in VALID:
        (tmp_path / "c.yml").write_text(dump(config))
        assert validate_in_process(capsys, tmp_path / "c.yml")[0] == 0


@FAST
@given(config=mutated(st.sampled_from(VALID)))
def test_mutated_valid_configs_fail_in_one_line(capsys, tmp_path, config):
    path = tmp_path / "bluegreen.yml"
    path.write_text(dump(config), encoding="utf-8")
    event(f"exit {validate_in_process(capsys, path)[0]}")


@st.composite
def broken_text(draw) -> bytes:
    """A valid config's YAML, then broken as text: tabs, a line twice, bytes that are not UTF-8, a cut."""
    data = dump(draw(st.sampled_from(VALID))).encode()
    lines = data.split(b"\n")
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["tab", "twice", "bytes", "cut", "control"]))
        if kind == "tab":
            lines[i] = b"\t" + lines[i].lstrip(b" ")
        elif kind == "twice":
            lines.insert(i, lines[i])
        elif kind == "bytes":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(st.binary(min_size=1, max_size=4)) + lines[i][at:]
        elif kind == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        else:
            lines[i] += draw(st.sampled_from(["\r", "\x1b[2K", "\u2028", "\x0b", "\x85"])).encode()
    return b"\n".join(lines)


@FAST
@given(data=broken_text())
def test_broken_yaml_text_fails_in_one_line(capsys, tmp_path, data):
    path = tmp_path / "bluegreen.yml"
    path.write_bytes(data)
    event(f"exit {validate_in_process(capsys, path)[0]}")


def _alias_bomb(levels: int) -> str:
    lines = ["x0: &x0 [a, a, a, a, a, a, a, a, a, a]"]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\napp: demo\nenvironments: {{prod: {{target: {{kind: local, command: *x{levels - 1}}}}}}}\n"


BASE = "app: demo\nenvironments:\n  prod:\n    target: {kind: local, command: [python, app.py]}\n"
HOSTILE_FILES: dict[str, tuple[bytes, str]] = {
    "not UTF-8": (BASE.encode() + b"    url: \xff\xfe\n", "bluegreen.yml:5: not UTF-8 text (byte 0xff)"),
    "deep flow nesting": (b"app: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    "deep block nesting": (("app: demo\nenvironments:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80))).encode(),
                           f"nested more than {MAX_DEPTH} levels deep"),
    "alias bomb": (_alias_bomb(6).encode(), f"more than {MAX_VALUES} values once YAML aliases are expanded"),
    "tab indentation": (BASE.replace("  prod", "\tprod").encode(), "invalid YAML"),
    "a key with a line break": ((BASE + '    "ur\\nl\\r\\u2028": x\n').encode(), r"environments.prod.ur\nl\r\u2028: unknown key"),
    "an escape sequence": ((BASE + '    "\\e[2J\\e]0;title\\a": x\n').encode(), r"\x1b[2J\x1b]0;title\x07: unknown key"),
    "a huge value": ((BASE + "    url: [" + "1, " * 50_000 + "]\n").encode(), "url: Input should be a valid string (got [1,"),
}


@pytest.mark.parametrize("case", HOSTILE_FILES)
def test_hostile_files_fail_in_one_line_in_a_real_process(tmp_path, case):
    data, expected = HOSTILE_FILES[case]
    path = tmp_path / "bluegreen.yml"
    path.write_bytes(data)
    result = subprocess.run([sys.executable, "-m", "bluegreen", "validate", "-c", str(path)], capture_output=True,
                            text=True, timeout=30, env={**os.environ, "BLUEGREEN_CI": "plain"})
    assert_validate_contract(result.returncode, result.stdout, result.stderr)
    assert result.returncode == 2 and expected in result.stderr, result.stderr[:2000]


def test_a_small_alias_tree_is_fine(capsys, tmp_path):
    """Anchors and aliases are YAML a config may use: only an expansion past the limit is refused."""
    path = tmp_path / "bluegreen.yml"
    path.write_text(_alias_bomb(3))  # 1,000 values
    code, err = validate_in_process(capsys, path)
    assert code == 2 and "command[0]: Input should be a valid string" in err


# --- versions: arbitrary text ------------------------------------------------------------------------

ANY_TEXT = (st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(HOSTILE_TEXTS)
            | st.from_regex(cli.VERSION, fullmatch=True))


@FAST
@given(version=ANY_TEXT)
def test_any_version_text_is_a_dry_run_or_one_line_error(capsys, local_env: LocalEnv, version):
    """In process, `deploy --dry-run`: a version is either planned (exit 0, nothing written) or refused (exit 2)."""
    before = sorted(local_env.dir.rglob("*"))
    capsys.readouterr()
    code = cli.main(["deploy", "-c", str(local_env.config), f"--version={version}", "--dry-run"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert sorted(local_env.dir.rglob("*")) == before  # a dry run, valid or not, writes nothing
    event("a version" if cli.VERSION.fullmatch(version) else "not a version")
    if cli.VERSION.fullmatch(version):
        assert code == 0, err
    else:
        assert code == 2 and out == "" and is_one_line(err) and err.startswith("bluegreen: error: --version "), err


def test_hostile_versions_are_refused_and_never_run(local_env: LocalEnv):
    """Real deploys on the local target whose test suite runs through a shell with {version} in it (the one
    place a version meets a shell): each hostile version is refused before anything runs or is written."""
    canary = local_env.dir / "canary"
    local_env.write(test_suite='test_suite:\n  command: "echo {version} > suite-saw.txt"\n  shell: true\n')
    for text in HOSTILE_TEXTS:
        if "\x00" in text:
            continue  # not an argv: the OS refuses it before we could
        version = text.format(canary=canary, version="{version}") if "{canary}" in text else text
        result = local_env.cli("deploy", f"--version={version}", timeout=30)
        assert result.returncode == 2, (version[:80], result.stderr[-2000:])
        assert is_one_line(result.stderr) and result.stderr.startswith("bluegreen: error: --version "), result.stderr
        assert len(result.stderr) < 300, result.stderr  # a 10,000-character version is cut in the message
        assert not canary.exists(), f"{version!r} ran a command"
        assert not (local_env.dir / "state").exists() and not (local_env.dir / "suite-saw.txt").exists()
        # The report is replaced (CI must never upload the previous run's), saying why, and nothing more.
        report = json.loads((local_env.dir / "bluegreen-report.json").read_text())
        assert report["status"] == "invalid" and report["reason"].startswith("--version ") and not report["phases"]
    assert not list(local_env.dir.parent.glob("canary*")), "a version escaped the environment's folder"


def test_the_widest_version_deploys_end_to_end(local_env: LocalEnv):
    """Every character a version may hold, 128 of them, through the app's argv, a shell, the router and the report."""
    version = "1.0.0-rc.1+build_7:sha256@" + "0123456789abcdef" * 6 + "abcdef"
    assert len(version) == 128 and cli.VERSION.fullmatch(version)
    local_env.write(test_suite='test_suite:\n  command: "echo {version} > suite-saw.txt"\n  shell: true\n')
    result = local_env.cli("deploy", f"--version={version}")
    assert result.returncode == 0, result.stderr
    assert local_env.live_version() == version
    assert (local_env.dir / "suite-saw.txt").read_text() == version + "\n"
    assert local_env.report()["version"] == version
    too_long = local_env.cli("deploy", f"--version={version}x")
    assert too_long.returncode == 2 and "(129 characters)" in too_long.stderr, too_long.stderr


# --- what a version or a reason becomes: dotenv, GitHub outputs, the Markdown summary --------------------


@FAST
@given(version=ANY_TEXT, reason=ANY_TEXT, url=ANY_TEXT)
def test_renderings_keep_one_value_per_line(version, reason, url):
    """A line break in any value must not start a second dotenv variable, GitHub output or table row."""
    result = Result(command="deploy", status="failed", app="a", environment="e", version=version, reason=reason,
                    live_url=url, rollback_command="bluegreen rollback")
    dotenv = result.to_dotenv().splitlines()
    assert len(dotenv) == len(result.outputs()), dotenv
    assert all(line.split("=", 1)[0].startswith("BLUEGREEN_") for line in dotenv)

    table = [line for line in result.to_markdown().splitlines() if line.startswith("| ")]
    assert sum(line.startswith("| version |") for line in table) == 1
    assert all(line.endswith(" |") for line in table), table

    outputs = result.outputs()
    assert _github_outputs(outputs) == outputs


def _github_outputs(outputs: dict[str, str]) -> dict[str, str]:
    """Write outputs as the action does, read them back as the runner does."""
    from github.support import parse_github_output

    with tempfile.NamedTemporaryFile("r", encoding="utf-8", newline="", suffix=".out") as handle:
        with mock.patch.dict(os.environ, {"GITHUB_OUTPUT": handle.name}):
            GitHubAdapter(Secrets()).write_outputs(outputs)
        return parse_github_output(handle.read())


# --- the GitHub action's inputs: arbitrary text -------------------------------------------------------

INPUT_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30) | st.sampled_from(
    [t for t in HOSTILE_TEXTS if "\x00" not in t] + ["true", "TRUE", "deploy", "rollback", "status", "promote"]
)
INPUT_NAMES = ["command", "config", "environment", "version", "no-switch", "dry-run", "force"]


@FAST
@given(given_inputs=st.fixed_dictionaries(
    {"version": INPUT_TEXT},
    optional={
        "command": st.sampled_from(["deploy", "rollback", "status", "promote"]) | INPUT_TEXT,
        "config": INPUT_TEXT, "environment": INPUT_TEXT,
        **{flag: st.sampled_from(["false", "true", "", "FALSE"]) | INPUT_TEXT for flag in ("no-switch", "dry-run", "force")},
    },
))
def test_any_inputs_become_whole_arguments_or_a_named_input_error(given_inputs):
    """build_argv() maps inputs to arguments one to one: a value is never split, never becomes an option of its
    own, never runs; a wrong one is an InputError naming the input."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INPUT_")}
    env.update({"INPUT_" + name.upper(): value for name, value in given_inputs.items()})
    with mock.patch.dict(os.environ, env, clear=True):
        try:
            argv = build_argv()
        except InputError as exc:
            assert str(exc).startswith("input "), exc
            event("input error")
            return
    args = cli.build_parser().parse_args(argv)  # never an argparse error: a value starting with '-' is refused above
    event(f"{args.command} arguments")
    given_stripped = {k: v.strip() for k, v in given_inputs.items()}
    assert args.config == (given_stripped.get("config") or ".bluegreen.yml")
    assert args.environment == (given_stripped.get("environment") or None)
    version = given_stripped.get("version") or None
    assert (getattr(args, "release_version", None) or getattr(args, "expect_version", None)) == version
    for flag in ("no-switch", "dry-run", "force"):  # set by its own input only
        assert getattr(args, flag.replace("-", "_"), False) == (given_stripped.get(flag, "").lower() == "true")


KUBE_YAML = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["users", "user", "token", "name", "exec", "env", "value", "clusters"]) | st.text(max_size=5),
        inner, max_size=3),
    max_leaves=10,
)


@FAST
@given(kubeconfig=KUBE_YAML.map(lambda v: yaml.safe_dump(v)) | INPUT_TEXT)
def test_any_kubeconfig_input_is_masked_or_a_named_input_error(kubeconfig):
    secrets = Secrets()
    try:
        with open(os.devnull, "w") as out, mock.patch("sys.stdout", out):
            mask_kubeconfig(kubeconfig, secrets)
    except InputError as exc:
        assert str(exc).startswith("input kubeconfig "), exc


def test_hostile_action_inputs_never_run(tmp_path):
    """The action's entrypoint, as the runner starts it, with inputs that would run a command in a shell or
    write outside the workspace: each ends in exit 2 and an error, nothing runs, no output is injected."""
    from github.test_adapter import Step, local_config

    from conftest import free_port

    workspace = tmp_path / "workspace"
    workspace.mkdir()
    canary = tmp_path / "canary"
    (workspace / ".bluegreen.yml").write_text(local_config(workspace, free_port(), free_port(), free_port()))
    step = Step(workspace)
    hostile = [
        {"version": f"$(touch {canary})"}, {"version": f"`touch {canary}`"}, {"version": f"1;touch {canary}"},
        {"version": f"1 && touch {canary}"}, {"version": "1\ninjected=yes"}, {"version": f"../../{canary.name}"},
        {"version": "x" * 10_000}, {"command": "rollback", "version": f"$(touch {canary})"},
        {"version": "1", "config": f"$(touch {canary}).yml"}, {"version": "1", "environment": f"`touch {canary}`"},
        {"version": "1", "environment": "--force"}, {"command": f"deploy;touch {canary}", "version": "1"},
        {"version": "1", "no_switch": f"$(touch {canary})"},
    ]
    for given_inputs in hostile:
        result = step.run(**given_inputs)
        assert result.returncode == 2, (given_inputs, result.stdout[-1000:], result.stderr[-1000:])
        assert "Traceback" not in result.stdout + result.stderr
        assert "::error" in result.stdout, result.stdout
        assert not canary.exists(), f"{given_inputs} ran a command"
        # The step still says what happened (status invalid, the reason), and nothing else: a line break in
        # an input never starts an output of its own.
        outputs = parse_github_output(step.output.read_text())
        assert set(outputs) == {"status", "reason"} and outputs["status"] == "invalid", outputs
        assert not (workspace / ".bluegreen").exists(), f"{given_inputs} started a deploy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["github_output", "step_summary.md", "workspace"]


# --- secrets: a header value the HTTP client refuses, and a run that crashes ---------------------------

SECRET = "hdr-secret-9b8a7c6d5e4f"
KUBE_TOKEN = "kube-token-5f1c0a9e7d3b4e2a8c6f"
SECRET_CONFIG = """\
app: secrets
environments:
  prod:
    target:
      kind: local
      command: ["{python}", "%s", "--port", "{port}", "--version", "{version}"]
      ports: {blue: %d, green: %d}
      router: {listen: "127.0.0.1:%d"}
timeouts: {ready: 10s}
smoke:
  timeout: 5s
  interval: 0.1
  checks:
    - name: api
      path: /version
      headers: {Authorization: "${API_TOKEN}"}
verify: {consecutive_successes: 1, window: 0.2s, interval: 0.1}
scale_down_delay: never
"""
KUBECONFIG = f"apiVersion: v1\nkind: Config\nusers:\n  - name: deployer\n    user: {{token: {KUBE_TOKEN}}}\n"


def _secret_config(dir: Path) -> Path:
    from conftest import EXAMPLE_APP, free_port

    path = dir / "bluegreen.yml"
    path.write_text(SECRET_CONFIG % (EXAMPLE_APP, free_port(), free_port(), free_port()))
    return path


@pytest.mark.parametrize("token", [f"Bearer {SECRET}\n", f" Bearer {SECRET}", f"Bearer {SECRET}\r\nX-Evil: 1",
                                   f"Bearer {SECRET}é"])
def test_a_header_value_the_client_would_refuse_is_named_never_shown(capsys, monkeypatch, tmp_path, token):
    """A CI variable with a trailing newline (or a space, a CR, a non-ASCII letter): the HTTP client would fail with
    the value in its message, and that message would reach the report. It is a config error that never shows it."""
    monkeypatch.setenv("API_TOKEN", token)
    code, err = validate_in_process(capsys, _secret_config(tmp_path))
    assert code == 2 and "smoke.checks[0].headers: the value of header 'Authorization' must be" in err, err
    assert SECRET not in err


@pytest.mark.parametrize("ci", ["github", "gitlab"])
@pytest.mark.parametrize("crash_in", ["deploy", "switch"])
def test_secrets_stay_out_of_everything_when_a_run_crashes(capsys, monkeypatch, tmp_path, crash_in, ci):
    """An internal error (a bug: an exception no one expected) whose message holds the header value (and, in the
    GitHub action, the kubeconfig token), run in process as the action or the GitLab job runs it: the report, the
    outputs or dotenv, the summary and our log lines hold neither; in GitHub the only place they appear is the
    `::add-mask::` line that registers them."""
    from bluegreen import action
    from bluegreen.config import load_config
    from bluegreen.targets import Target, make_target

    class CrashingTarget(Target):  # a real local target with a bug in one method
        def deploy(self, colour, version):
            if crash_in == "deploy":
                raise RuntimeError(f"unexpected: token {KUBE_TOKEN}, header Bearer {SECRET}")
            super().deploy(colour, version)

        def switch(self, to, deadline):
            raise RuntimeError(f"unexpected: token {KUBE_TOKEN}, header Bearer {SECRET}")

    config = _secret_config(tmp_path)
    output, summary = tmp_path / "output", tmp_path / "summary.md"
    for key in [k for k in os.environ if k.startswith(("INPUT_", "GITHUB_", "GITLAB_", "CI_", "BLUEGREEN_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("API_TOKEN", f"Bearer {SECRET}")
    if ci == "github":
        env = {"GITHUB_ACTIONS": "true", "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
               "GITHUB_WORKSPACE": str(tmp_path), "INPUT_VERSION": "1", "INPUT_CONFIG": config.name,
               "INPUT_KUBECONFIG": KUBECONFIG}
    else:
        env = {"GITLAB_CI": "true", "CI_JOB_URL": "https://gitlab.example/job/1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    def crashing_target(settings):
        target = make_target(settings)
        target.__class__ = CrashingTarget
        return target

    monkeypatch.setattr("bluegreen.targets.make_target", crashing_target)
    try:
        code = action.main() if ci == "github" else cli.main(["deploy", "-c", config.name, "--version", "1"])
    finally:
        make_target(load_config(config)).stop_all()  # the app and proxy a crash at the switch leaves
    out, err = capsys.readouterr()
    report = json.loads((tmp_path / "bluegreen-report.json").read_text())
    assert report["reason"].startswith("internal error: RuntimeError: unexpected: token "), report
    assert "header ***" in report["reason"], report["reason"]
    assert (code, report["status"], report["switched"]) == (1, "failed", False)
    assert report["phases"][-1]["name"].startswith(crash_in) and report["phases"][-1]["status"] == "failed"
    texts = {"report": json.dumps(report)}
    if ci == "github":
        masks = [line for line in out.splitlines() if line.startswith("::add-mask::")]
        assert any(KUBE_TOKEN in m for m in masks) and any(SECRET in m for m in masks), masks
        texts["log"] = "\n".join(line for line in out.splitlines() if not line.startswith("::add-mask::")) + err
        texts.update(outputs=output.read_text(), summary=summary.read_text())
        assert "internal error" in texts["outputs"] and "internal error" in texts["summary"]
        secrets = [KUBE_TOKEN, SECRET]
    else:
        # Our own lines in the job log are the runner's to mask (a masked CI/CD variable); the artifacts are ours.
        texts.update(dotenv=(tmp_path / "bluegreen.env").read_text(), junit=(tmp_path / "bluegreen-junit.xml").read_text())
        assert "internal error" in texts["dotenv"]
        secrets = [SECRET]
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} leaked into the {where}"


def test_a_junit_count_that_is_not_a_number_is_unreadable_not_a_crash(tmp_path):
    """The suite's JUnit file is its own text: a count holding anything (here, a token) is reported as unreadable,
    without quoting it, instead of ending the run in an internal error that quotes it."""
    from bluegreen.checks.suite import run_test_suite
    from bluegreen.config import TestSuite

    script = f"open('out.xml', 'w').write('<testsuite tests=\"Bearer {SECRET}\" failures=\"0\"/>')"
    suite = TestSuite(command=["{python}", "-c", script], junit="out.xml")
    result = run_test_suite(suite, base_dir=tmp_path, env={}, values={"python": sys.executable}, log=lambda _: None)
    assert result.passed and (result.tests, result.failures) == (None, None)
    assert result.detail == "exited with code 0; unreadable JUnit file: a tests, failures or errors count is not a number"


# --- the GitLab component's inputs: interpolated into a shell script -----------------------------------

def _component() -> tuple[dict, str]:
    spec_text, jobs = (ROOT / "gitlab" / "templates" / "deploy.yml").read_text().split("\n---\n", 1)
    return yaml.safe_load(spec_text)["spec"]["inputs"], jobs


def _script_line(jobs: str) -> str:
    return next(line.strip()[2:] for line in jobs.splitlines() if line.strip().startswith("- set -- deploy"))


@FAST
@given(data=st.data())
def test_component_inputs_that_pass_their_regex_never_run_in_the_job_script(tmp_path, data):
    """GitLab interpolates an input into the job's script as text: whatever passes the spec's regex, run by the
    shell as the job runs it, stays one argument and runs nothing. (The old regex let `$(touch${IFS}x)` through.)"""
    import re

    inputs, jobs = _component()
    canary = tmp_path / "canary"
    canary.unlink(missing_ok=True)  # tmp_path is shared by the examples
    values = {}
    for name in ("config", "version"):
        regex = re.compile(inputs[name]["regex"])
        value = data.draw(st.sampled_from([t.format(canary=canary) if "{canary}" in t else t
                                           for t in HOSTILE_TEXTS if "\x00" not in t]
                                          + [f"$(touch${{IFS}}{canary})", f"${{X:-$(touch {canary})}}", "$((1+1))"])
                          | st.from_regex(regex, fullmatch=True), label=name)
        if not regex.fullmatch(value):
            return  # GitLab refuses the pipeline
        values[name] = value
    assert re.fullmatch(inputs["version"]["regex"], "$CI_COMMIT_SHA") and inputs["version"]["default"] == "$CI_COMMIT_SHA"
    script = _script_line(jobs)
    for name in ("config", "environment", "version"):
        script = script.replace(f"$[[ inputs.{name} ]]", values.get(name, "prod"))
    shown = subprocess.run(["sh", "-c", script + '; printf "%s\\0" "$@"'], capture_output=True, timeout=10,
                           env={"PATH": os.environ["PATH"], "CI_COMMIT_SHA": "abc123"}, cwd=tmp_path)
    assert not canary.exists(), f"{values} ran a command"
    argv = shown.stdout.decode().split("\0")[:-1]
    assert argv[:2] == ["deploy", "--config"] and len(argv) == 7, argv  # each input stayed one argument
