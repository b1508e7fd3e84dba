"""Static checks of the action and the workflows: actionlint, the GitHub JSON schemas, hadolint, and the
files that must agree with action.yml (the prebuilt variant, the README table, the requirements lock)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from .support import BIN, ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def _is_github_workflow(path: Path) -> bool:
    """examples/workflows also holds the GitLab example: a GitHub workflow has `on:` (YAML 1.1: True) and `jobs:`."""
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and "jobs" in data and (True in data or "on" in data)


EXAMPLES = sorted(p for p in (ROOT / "examples" / "workflows").glob("*.yml") if _is_github_workflow(p))
REMOTE = "uses: bluegreen-dev/bluegreen@v1"


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
        return found
    return str(path)


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "release.yml"}
    assert {p.name for p in EXAMPLES} >= {"deploy.yml", "rollback.yml", "promote.yml", "deploy-with-tests.yml"}


def test_actionlint_passes_on_every_workflow():
    result = run(tool("actionlint"), "-no-color", *map(str, WORKFLOWS + EXAMPLES))
    assert result.returncode == 0, result.stdout + result.stderr


def git_project(tmp_path: Path, workflows: dict[str, str]) -> Path:
    """A repository with this action.yml at its root: actionlint checks `uses: ./` against it."""
    shutil.copy(ROOT / "action.yml", tmp_path / "action.yml")
    shutil.copy(ROOT / "Dockerfile", tmp_path / "Dockerfile")  # actionlint checks that runs.image exists
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    for name, text in workflows.items():
        (tmp_path / ".github" / "workflows" / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def test_examples_use_only_inputs_and_outputs_that_action_yml_declares(tmp_path):
    """The examples name the published action; as `uses: ./` actionlint checks every input and output."""
    workflows = {p.name: p.read_text().replace(REMOTE, "uses: ./") for p in EXAMPLES}
    assert all("uses: ./" in text for text in workflows.values())
    project = git_project(tmp_path, workflows)
    result = run(tool("actionlint"), "-no-color", cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_shows_deploy_with_tests_as_it_is():
    """README's "Running your test suite" quotes the example's steps: they must be the file's own lines, the
    ones act runs (tests/github/test_act_e2e.py), not a copy drifting away from them."""
    name = "examples/workflows/deploy-with-tests.yml"
    after = (ROOT / "README.md").read_text().split(f"`{name}`", 1)[1]
    block = re.search(r"^( *)```yaml\n(.*?)^\1```$", after, re.M | re.S)
    assert block, f"no YAML block after the README's mention of {name}"
    snippet = "".join(line.removeprefix(block.group(1)) for line in block.group(2).splitlines(keepends=True))
    assert "command: promote" in snippet and "no-switch: true" in snippet
    assert snippet in (ROOT / name).read_text(), f"README's snippet differs from {name}"


def test_actionlint_would_catch_a_wrong_input_or_output(tmp_path):
    """The check above is real: an unknown input or output of `./` fails actionlint."""
    project = git_project(tmp_path, {"bad.yml": (
        "on: push\njobs:\n  d:\n    runs-on: ubuntu-latest\n    steps:\n"
        "      - id: bg\n        uses: ./\n        with:\n          versoin: '1'\n"
        "      - run: echo ${{ steps.bg.outputs.live-color }}\n"
    )})
    result = run(tool("actionlint"), "-no-color", cwd=project)
    assert result.returncode != 0
    assert 'input "versoin" is not defined in action "bluegreen deploy"' in result.stdout
    assert 'property "live-color" is not defined in object type {canary-step: string; canary-weight: string; idle-colour: string;' in result.stdout


def test_action_metadata_matches_the_github_schema():
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-actions", "action.yml", "prebuilt/action.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_match_the_github_schema():
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS + EXAMPLES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "examples/app/Dockerfile"])
def test_hadolint_passes(dockerfile):
    result = run(tool("hadolint"), dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_prebuilt_variant_has_the_same_interface():
    action, prebuilt = load(ROOT / "action.yml"), load(ROOT / "prebuilt" / "action.yml")
    assert prebuilt["runs"] == {"using": "docker", "image": "docker://ghcr.io/bluegreen-dev/bluegreen:v1"}
    assert action["runs"] == {"using": "docker", "image": "Dockerfile"}
    for key in ("name", "description", "branding", "inputs", "outputs"):
        assert prebuilt[key] == action[key], key


def test_action_outputs_are_the_results_outputs():
    """Every output is set by some path: a change command's Result, `command: status`, or the adapter (report)."""
    from bluegreen.action import status_outputs
    from bluegreen.pipeline import Status
    from bluegreen.report import Result

    outputs = set(Result(command="deploy", status="succeeded", app="a", environment="e").outputs())
    status = set(status_outputs(Status(app="a", environment="e", live=None, live_url="", colours=[], lock=None, history=[])))
    assert set(load(ROOT / "action.yml")["outputs"]) == outputs | status | {"report"}


def test_the_entrypoint_knows_the_inputs_action_yml_declares():
    """The entrypoint refuses INPUT_* it does not know (a misspelt input): its list must be action.yml's."""
    from bluegreen.action import INPUTS

    for path in (ROOT / "action.yml", ROOT / "prebuilt" / "action.yml"):
        assert list(load(path)["inputs"]) == list(INPUTS), path


# --- the README's "GitHub Actions" section --------------------------------------------------------


def github_actions_section() -> tuple[Path, str]:
    """The "GitHub Actions" section of README.md."""
    for path in (ROOT / "README.md",):
        section: list[str] | None = None
        level, fenced = 0, False
        for line in path.read_text().splitlines():
            if line.startswith("```"):
                fenced = not fenced  # a `# comment` in a code block is no heading
            heading = None if fenced else re.match(r"^(#+) (.*?)\s*$", line)
            if section is None:
                if heading and heading.group(2) == "GitHub Actions":
                    section, level = [], len(heading.group(1))
            elif heading and len(heading.group(1)) <= level:
                break
            else:
                section.append(line)
        if section is not None:
            return path, "\n".join(section)
    pytest.fail("no 'GitHub Actions' section in README.md")


def table(section: str, header: str) -> dict[str, list[str]]:
    """Rows of the Markdown table whose first header cell is `header`: name -> the other cells."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^\|\s*{header}\s*\|", line))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1:]
    return rows


def test_readme_table_matches_action_yml():
    path, section = github_actions_section()
    action = load(ROOT / "action.yml")
    inputs = table(section, "Input")
    assert list(inputs) == list(action["inputs"]), f"{path}: inputs differ from action.yml"
    for name, spec in action["inputs"].items():
        default = str(spec.get("default", "")).lower() if isinstance(spec.get("default"), bool) else str(spec.get("default", ""))
        assert inputs[name][0].strip("`") == default, f"{path}: input {name}: default {inputs[name][0]!r}, action.yml {default!r}"
    outputs = table(section, "Output")
    assert list(outputs) == list(action["outputs"]), f"{path}: outputs differ from action.yml"
    assert "uses: bluegreen-dev/bluegreen@v1" in section  # the copy-paste example


# --- the image's requirements lock -----------------------------------------------------------------


def test_requirements_lock_pins_every_dependency_with_hashes():
    """requirements/action.txt was generated from pyproject.toml: every dependency (and the kubernetes and servers extras)
    is pinned at a version its specifier allows, with hashes. Regenerate: see the Dockerfile."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [Requirement(r) for r in project["dependencies"] + extras["kubernetes"] + extras["servers"]]
    lock = (ROOT / "requirements" / "action.txt").read_text()
    pins = {m[0].lower().replace("_", "-"): m[1] for m in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, re.M)}
    for requirement in wanted:
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements/action.txt: regenerate it (see the Dockerfile)"
        assert requirement.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks {requirement}"
    blocks = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock.split("\n", 2)[2])
    assert all("--hash=sha256:" in block for block in blocks if "==" in block)
