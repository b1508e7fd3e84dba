"""The action's image as GitHub builds and runs it: from ./Dockerfile, as root, entrypoint the GitHub mode."""

from __future__ import annotations

import subprocess

from .support import ACTION_IMAGE, docker, docker_client


def run_in_image(*argv: str, env: dict[str, str] | None = None, entrypoint: str | None = None) -> subprocess.CompletedProcess:
    args = ["run", "--rm"]
    for key, value in (env or {}).items():
        args += ["-e", f"{key}={value}"]
    if entrypoint:
        args += ["--entrypoint", entrypoint]
    return docker(*args, ACTION_IMAGE, *argv, check=False, timeout=120)


def test_image_follows_githubs_rules_for_docker_actions(action_image):
    with docker_client() as client:
        config = client.get(f"/images/{action_image}/json").json()["Config"]
    assert config["Entrypoint"] == ["/opt/bluegreen/bin/python", "-m", "bluegreen.action"]
    assert config["User"] == ""  # GitHub runs container actions as root; no USER
    assert config["WorkingDir"] == ""  # the runner sets the workspace as the working directory
    assert "PYTHONUNBUFFERED=1" in config["Env"]


def test_image_holds_the_package_its_extras_and_caddy_but_no_build_tools(action_image):
    script = (
        "import importlib.util as u, bluegreen, lightkube, asyncssh, boto3, dns.update;"
        "from bluegreen.routers.caddy import caddy_binary;"
        "print(bluegreen.__version__, caddy_binary());"
        "print([m for m in ('pip', 'setuptools', 'wheel') if u.find_spec(m)])"
    )
    result = run_in_image("-c", script, entrypoint="/opt/bluegreen/bin/python")
    assert result.returncode == 0, result.stderr
    version_line, leftovers = result.stdout.splitlines()
    assert version_line.endswith(" /opt/bluegreen/bin/caddy")
    assert leftovers == "[]"
    caddy = run_in_image("version", entrypoint="/opt/bluegreen/bin/caddy")
    assert caddy.returncode == 0 and caddy.stdout.startswith("v2."), caddy.stdout + caddy.stderr
    compilers = run_in_image("-c", "command -v gcc cc make || echo none", entrypoint="sh")
    assert compilers.stdout.strip() == "none"


def test_wrong_input_in_the_image_is_one_line_and_exit_2(action_image):
    result = run_in_image(env={"GITHUB_ACTIONS": "true", "INPUT_COMMAND": "deploy", "INPUT_VERSION": "",
                               "INPUT_NO-SWITCH": "false"})
    assert result.returncode == 2
    assert result.stdout == "::error title=bluegreen%3A wrong input::input version is required for command deploy\n"
    assert result.stderr == ""


def test_image_size_over_the_base(action_image):
    with docker_client() as client:
        size = client.get(f"/images/{action_image}/json").json()["Size"]
        base = client.get("/images/python:3.12-slim/json").json()["Size"]
    added = (size - base) / 1e6
    # About 130 MB: Caddy (50 MB, the docker target's router), botocore (30 MB, the alb and route53 routers),
    # cryptography (asyncssh's, for the servers target), pydantic-core, lightkube, dnspython, the rest.
    assert added < 150, f"the image adds {added:.0f} MB to python:3.12-slim"
