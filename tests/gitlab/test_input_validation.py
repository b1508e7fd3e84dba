"""gitlab-ci-local (like GitLab) refuses a pipeline whose inputs break the component's spec."""

from __future__ import annotations

import textwrap

import pytest

from .conftest import GitLabProject

VALID = {"config": "bluegreen.yml", "environment": "staging"}


def pipeline(inputs: dict[str, object]) -> str:
    lines = "".join(f"      {k}: {v}\n" for k, v in inputs.items())
    return textwrap.dedent(
        """\
        stages: [deploy]
        include:
          - component: $CI_SERVER_FQDN/bluegreen/bluegreen/deploy@$CI_COMMIT_SHA
            inputs:
        """
    ) + lines


@pytest.mark.parametrize(
    "inputs,refusal",
    [
        ({**VALID, "when": "sometimes"},
         "`when` input: `sometimes` cannot be used because it is not in the list of allowed options"),
        ({**VALID, "deploy-on": "fridays"}, "`deploy-on` input: `fridays` cannot be used"),
        ({"config": "bluegreen.yml"}, "`environment` input: required value has not been provided"),
        ({**VALID, "job-prefix": "'Web App'"}, "`job-prefix` input: `Web App` does not match required regex"),
        ({**VALID, "no-switch": "'yes please'"}, "`no-switch` input: provided value is not a boolean"),
        ({**VALID, "promote": "always"}, "`promote` input: `always` cannot be used"),
        ({**VALID, "promote-needs": "e2e-tests"}, "`promote-needs` input: provided value is not a"),
    ],
    ids=["value outside options", "another option input", "missing required input", "regex", "type", "promote",
         "array"],
)
def test_gitlab_ci_local_refuses(project: GitLabProject, inputs: dict, refusal: str) -> None:
    project.write(".gitlab-ci.yml", pipeline(inputs))
    project.commit()
    run = project.gcl("--list")
    assert run.returncode != 0, run.output
    assert refusal in run.output, run.output


def test_valid_inputs_are_accepted(project: GitLabProject) -> None:
    """The control: the same pipeline with valid inputs lists the jobs."""
    project.write(".gitlab-ci.yml", pipeline({**VALID, "when": "manual", "no-switch": "true"}))
    project.commit()
    run = project.gcl("--list")
    assert run.returncode == 0, run.output
    listed = {line.split()[0]: line.split()[2] for line in run.output.splitlines() if line.startswith("bluegreen-")}
    assert listed == {"bluegreen-deploy": "manual", "bluegreen-promote": "manual", "bluegreen-rollback": "manual"}


def test_promote_on_success_with_its_needs_is_accepted(project: GitLabProject) -> None:
    inputs = {**VALID, "no-switch": "true", "promote": "on_success", "promote-needs": "[e2e-tests]"}
    project.write(".gitlab-ci.yml", pipeline(inputs) + "e2e-tests:\n  stage: deploy\n  script: [\"true\"]\n")
    project.commit()
    run = project.gcl("--list")
    assert run.returncode == 0, run.output
    listed = {line.split()[0]: line.split()[2] for line in run.output.splitlines() if line.startswith("bluegreen-")}
    assert listed["bluegreen-promote"] == "on_success", run.output
