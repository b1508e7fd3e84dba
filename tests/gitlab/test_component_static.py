"""The component's YAML without running it: schema validity, and every `inputs:` used anywhere
checked against the `spec` (real GitLab refuses an unknown input; gitlab-ci-local does not)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import COMPONENT, PIPELINES, ROOT, missing_tool

TEMPLATES = sorted((COMPONENT / "templates").glob("*.yml"))
# Every pipeline that includes the component: examples, the component's own CI, the test pipelines.
PIPELINE_FILES = [ROOT / "examples/workflows/gitlab-ci.yml", ROOT / "examples/workflows/servers.gitlab-ci.yml",
                  COMPONENT / ".gitlab-ci.yml", *sorted(PIPELINES.glob("*.yml"))]
DOCS = [COMPONENT / "README.md", ROOT / "README.md"]
COMPONENT_PATHS = {"bluegreen/bluegreen", "$CI_PROJECT_PATH"}
GLOBAL_KEYWORDS = {"default", "include", "stages", "variables", "workflow", "image", "services", "cache",
                   "before_script", "after_script"}


def load_template(path: Path) -> tuple[dict, dict]:
    header, jobs = yaml.safe_load_all(path.read_text())
    return header["spec"], jobs


def spec_inputs(name: str) -> dict:
    return load_template(COMPONENT / "templates" / f"{name}.yml")[0]["inputs"]


def component_includes(doc: object) -> list[dict]:
    include = doc.get("include", []) if isinstance(doc, dict) else []
    items = include if isinstance(include, list) else [include]
    return [item for item in items if isinstance(item, dict) and "component" in item]


def input_errors(include: dict) -> list[str]:
    """What real GitLab would refuse in one `include: component:` item."""
    match = re.fullmatch(r"\$CI_SERVER_FQDN/(?P<project>.+)/(?P<name>[^/@]+)@(?P<ref>.+)", include["component"])
    if not match or match["project"] not in COMPONENT_PATHS:
        return [f"{include['component']}: not this component project"]
    template = COMPONENT / "templates" / f"{match['name']}.yml"
    if not template.exists():
        return [f"{include['component']}: no template {template.name}"]
    spec = spec_inputs(match["name"])
    given = include.get("inputs") or {}
    errors = [f"unknown input {name!r}" for name in given if name not in spec]
    errors += [f"missing required input {name!r}" for name, s in spec.items() if "default" not in s and name not in given]
    for name, value in given.items():
        s = spec.get(name)
        if s is None:
            continue
        kind = s.get("type", "string")
        python_type = {"string": str, "boolean": bool, "number": (int, float), "array": list}[kind]
        if not isinstance(value, python_type) or (kind == "number" and isinstance(value, bool)):
            errors.append(f"input {name!r}: {value!r} is not a {kind}")  # a $VARIABLE is a string, too
        elif "options" in s and value not in s["options"]:
            errors.append(f"input {name!r}: {value!r} is not one of {s['options']}")
        elif "regex" in s and not re.search(s["regex"], value):
            errors.append(f"input {name!r}: {value!r} does not match {s['regex']}")
    return errors


def yaml_blocks(markdown: Path) -> list[object]:
    return [yaml.safe_load(block) for block in re.findall(r"```yaml\n(.*?)```", markdown.read_text(), re.S)]


def all_uses() -> list[tuple[str, dict]]:
    uses = [(str(p.relative_to(ROOT)), inc) for p in PIPELINE_FILES for inc in component_includes(yaml.safe_load(p.read_text()))]
    for doc in DOCS:
        uses += [(str(doc.relative_to(ROOT)), inc) for block in yaml_blocks(doc) for inc in component_includes(block)]
    return uses


# --- inputs used in examples, tests and docs -----------------------------------------------


def test_every_pipeline_and_doc_example_includes_the_component() -> None:
    used_in = {where for where, _ in all_uses()}
    expected = {str(p.relative_to(ROOT)) for p in [*PIPELINE_FILES, *DOCS]}
    assert used_in == expected  # so the next test checks every one of them


@pytest.mark.parametrize("where,include", all_uses(), ids=lambda v: v if isinstance(v, str) else "")
def test_inputs_used_exist_in_the_spec_and_fit_it(where: str, include: dict) -> None:
    assert input_errors(include) == [], f"{where}: {include}"


def test_the_input_check_catches_what_gitlab_refuses() -> None:
    ref = "$CI_SERVER_FQDN/bluegreen/bluegreen/deploy@1.0.0"
    assert input_errors({"component": ref, "inputs": {"environment": "prod", "enviroment": "x"}}) == [
        "unknown input 'enviroment'"]
    assert input_errors({"component": ref}) == ["missing required input 'environment'"]
    assert input_errors({"component": ref, "inputs": {"environment": "p", "when": "later"}}) == [
        "input 'when': 'later' is not one of ['on_success', 'manual']"]
    assert input_errors({"component": ref, "inputs": {"environment": "p", "no-switch": "$NO_SWITCH"}}) == [
        "input 'no-switch': '$NO_SWITCH' is not a boolean"]
    assert input_errors({"component": ref, "inputs": {"environment": "p", "promote-needs": "e2e"}}) == [
        "input 'promote-needs': 'e2e' is not a array"]
    assert input_errors({"component": ref, "inputs": {"environment": "p", "job-prefix": "Web App"}}) == [
        "input 'job-prefix': 'Web App' does not match ^[a-z0-9][a-z0-9_-]{0,62}$"]
    assert input_errors({"component": "$CI_SERVER_FQDN/bluegreen/bluegreen/deploy-all@1.0.0"}) == [
        "$CI_SERVER_FQDN/bluegreen/bluegreen/deploy-all@1.0.0: no template deploy-all.yml"]


# --- the templates themselves ----------------------------------------------------------------


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_inputs_are_described_used_and_declared(template: Path) -> None:
    spec, _ = load_template(template)
    body = template.read_text().split("\n---\n", 1)[1]
    used = set(re.findall(r"\$\[\[\s*inputs\.([\w-]+)\s*\]\]", body))
    declared = set(spec["inputs"])
    assert used == declared, f"used but not declared: {used - declared}; declared but unused: {declared - used}"
    for name, s in spec["inputs"].items():
        assert s.get("description", "").strip(), f"input {name!r} has no description"
        if "default" in s and "options" in s:
            assert s["default"] in s["options"], name
        if "default" in s and "regex" in s:
            assert re.search(s["regex"], str(s["default"])), name


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_adds_only_prefixed_jobs_and_no_global_keywords(template: Path) -> None:
    _, jobs = load_template(template)
    assert not GLOBAL_KEYWORDS & set(jobs)
    assert set(jobs) == {f"$[[ inputs.job-prefix ]]-{j}" for j in ("deploy", "promote", "rollback", "contract", "abort")}
    for name, job in jobs.items():
        assert job["stage"] == "$[[ inputs.stage ]]", name
        assert job["resource_group"] == "bluegreen-$[[ inputs.environment ]]", name
        assert job["artifacts"]["reports"] == {"dotenv": "bluegreen.env", "junit": "bluegreen-junit.xml"}, name
        assert job["artifacts"]["when"] == "always", name


def test_readme_documents_every_input_with_its_default() -> None:
    readme = (COMPONENT / "README.md").read_text()
    for name, s in spec_inputs("deploy").items():
        default = "(required)" if "default" not in s else f"`{str(s['default']).lower() if isinstance(s['default'], bool) else s['default']}`"
        assert f"| `{name}` | {default} |" in readme, name
        assert f"| `{name}` |" in (ROOT / "README.md").read_text(), name


# --- JSON Schema (check-jsonschema's builtin vendor.gitlab-ci) -------------------------------


@pytest.fixture(scope="module")
def check_jsonschema() -> str:
    beside = Path(sys.executable).parent / "check-jsonschema"
    tool = str(beside) if beside.exists() else shutil.which("check-jsonschema")
    if tool is None:
        missing_tool("check-jsonschema is not installed (pip install -e '.[test]')")
    return tool


def validate(tool: str, docs: dict[str, object], tmp_path: Path) -> subprocess.CompletedProcess:
    files = []
    for name, doc in docs.items():
        path = tmp_path / f"{name}.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(str(path))
    return subprocess.run([tool, "--builtin-schema", "vendor.gitlab-ci", *files], capture_output=True, text=True,
                          timeout=120)


def test_each_document_of_each_template_and_pipeline_validates(check_jsonschema: str, tmp_path: Path) -> None:
    docs = {}
    for template in TEMPLATES:
        header, jobs = yaml.safe_load_all(template.read_text())  # a component is two documents: validate each
        docs[f"{template.stem}-spec"], docs[f"{template.stem}-jobs"] = header, jobs
    for i, pipeline in enumerate(PIPELINE_FILES):
        docs[f"pipeline{i}-{pipeline.stem}"] = yaml.safe_load(pipeline.read_text())
    done = validate(check_jsonschema, docs, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_schema_check_can_fail(check_jsonschema: str, tmp_path: Path) -> None:
    _, jobs = load_template(COMPONENT / "templates" / "deploy.yml")
    broken = {name: {**job, "when": "sometimes"} for name, job in jobs.items()}
    done = validate(check_jsonschema, {"broken": broken}, tmp_path)
    assert done.returncode != 0 and "sometimes" in done.stdout, done.stdout
