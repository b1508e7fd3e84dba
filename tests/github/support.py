"""Helpers for the GitHub Action tests: the real Docker engine, act, the tools, free ports.

Tests that need Docker or act skip with the reason when it is missing, and fail instead when
BLUEGREEN_REQUIRE_DOCKER=1 (CI sets it: a run must never pass by skipping).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from conftest import free_port  # noqa: F401  (one port allocator: each xdist worker its own range)

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's tools (actionlint, hadolint, check-jsonschema, caddy)
EXAMPLE_IMAGE = "bluegreen-example"
ACTION_IMAGE = os.environ.get("BLUEGREEN_ACTION_IMAGE", "bluegreen-action:test")  # a tag of your own: builds in parallel
ACT_JOB_IMAGE = os.environ.get("BLUEGREEN_ACT_IMAGE", "bluegreen-runner:bookworm")
SOCKET = "/var/run/docker.sock"


def require(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("BLUEGREEN_REQUIRE_DOCKER") == "1":
        pytest.fail(f"{reason} (BLUEGREEN_REQUIRE_DOCKER=1: not skipping)")
    pytest.skip(reason)


def docker_client() -> httpx.Client:
    """The Engine API over the socket, as the docker target talks to it."""
    return httpx.Client(transport=httpx.HTTPTransport(uds=SOCKET), base_url="http://docker", timeout=30)


def docker_up() -> bool:
    try:
        with docker_client() as client:
            return client.get("/_ping").status_code == 200
    except httpx.HTTPError:
        return False


def need_docker() -> None:
    require(docker_up(), f"no Docker engine answers on {SOCKET} (run .ci/setup-docker.sh)")
    require(shutil.which("docker") is not None, "the docker CLI is not installed (tests build images with it)")
    with docker_client() as client:
        have_base = client.get("/images/python:3.12-slim/json").status_code == 200
    require(have_base, "image python:3.12-slim is missing (run .ci/setup-docker.sh)")


def find_act() -> str | None:
    for candidate in (os.environ.get("ACT"), shutil.which("act"), "/tmp/offline-docker/venv/bin/act"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def need_act() -> str:
    need_docker()
    act = find_act()
    require(act is not None, "act is not installed (run .ci/setup-docker.sh)")
    with docker_client() as client:
        have_job_image = client.get(f"/images/{ACT_JOB_IMAGE}/json").status_code == 200
    require(have_job_image, f"act's job image {ACT_JOB_IMAGE} is missing (run .ci/setup-docker.sh)")
    return act  # type: ignore[return-value]




def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def remove_containers(app: str) -> None:
    """Remove every container the docker target started for `app` (found by its label)."""
    with docker_client() as client:
        found = client.get("/containers/json", params={"all": 1, "filters": f'{{"label":["dev.bluegreen.app={app}"]}}'})
        for container in found.json():
            client.delete(f"/containers/{container['Id']}", params={"force": "true"})


def remove_act_containers(workspace: Path) -> None:
    """Remove the containers act ran for `workspace` (each binds it: act -b) and their env volumes. act's --rm
    removes them only when it ends the job itself: a run cancelled (SIGINT) or killed by a timeout leaves its
    job container running. Found by the bind, not by the name: act-<workflow>-<job>-<hash> is the same in every
    checkout, and another test session may be running its own."""
    with docker_client() as client:
        for container in client.get("/containers/json", params={"all": 1}).json():
            if any(mount.get("Source") == str(workspace) for mount in container.get("Mounts", [])):
                client.delete(f"/containers/{container['Id']}", params={"force": "true"})
                client.delete(f"/volumes/{container['Names'][0].lstrip('/')}-env")  # a job container's; 404 else


@pytest.fixture(scope="session")
def example_image() -> str:
    """The example app's image, built here FROM python:3.12-slim; tag it per version with `tag_example`."""
    need_docker()
    docker("build", "-q", "-t", f"{EXAMPLE_IMAGE}:base", str(ROOT / "examples" / "app"))
    return f"{EXAMPLE_IMAGE}:base"


def tag_example(repository: str, version: str, source: str = f"{EXAMPLE_IMAGE}:base") -> str:
    docker("tag", source, f"{repository}:{version}")
    return f"{repository}:{version}"


def parse_github_output(text: str) -> dict[str, str]:
    """Read a $GITHUB_OUTPUT file the way the runner does (name=value and name<<DELIMITER blocks)."""
    outputs: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value: list[str] = []
            i += 1
            while lines[i] != delimiter:
                value.append(lines[i])
                i += 1
            outputs[name] = "\n".join(value)
        elif "=" in line:
            name, value_text = line.split("=", 1)
            outputs[name] = value_text
        i += 1
    return outputs


@pytest.fixture(scope="session")
def action_image() -> str:
    """The action's image, built from the repository's Dockerfile as the runner builds it."""
    need_docker()
    docker("build", "-q", "-t", ACTION_IMAGE, str(ROOT))
    return ACTION_IMAGE


def caddy_as_nobody(listen_port: int, upstream: Path, scratch: Path) -> subprocess.Popen:
    """A host's Caddy run by its own user, not root (as under systemd), dialling what `upstream` says per
    request; `scratch` is a world-readable folder for its config and data. Returns once it listens."""
    from bluegreen.routers.caddy import caddy_binary

    data = scratch / "caddy-data"
    data.mkdir()
    data.chmod(0o777)
    config = scratch / "caddy.json"
    config.write_text(json.dumps({
        "admin": {"disabled": True},
        "storage": {"module": "file_system", "root": str(data)},
        "apps": {"http": {"servers": {"s": {
            "listen": [f"127.0.0.1:{listen_port}"], "automatic_https": {"disable": True},
            "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "{file.%s}" % upstream}]}]}],
        }}}},
    }))
    config.chmod(0o644)
    caddy = subprocess.Popen(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", caddy_binary(), "run", "--config", str(config)],
        env={"HOME": str(data), "XDG_DATA_HOME": str(data), "XDG_CONFIG_HOME": str(data), "PATH": "/usr/bin:/bin",
             **{k: v for k, v in os.environ.items() if k == "BLUEGREEN_TEST_SESSION"}},  # the leak check finds it
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while socket.socket().connect_ex(("127.0.0.1", listen_port)) != 0:
        assert caddy.poll() is None and time.monotonic() < deadline, "caddy as nobody did not start"
        time.sleep(0.05)
    return caddy


def for_act(workflow: str) -> str:
    """An example workflow as act runs it: the action from the workspace (`uses: ./`), and without the job
    environment's `deployment: false`, which act's workflow schema (0.2.89) does not know yet (GitHub's does, and
    actionlint checks the examples as they are: tests/github/test_lint.py)."""
    assert "uses: bluegreen-dev/bluegreen@v1" in workflow
    workflow = workflow.replace("uses: bluegreen-dev/bluegreen@v1", "uses: ./")
    return re.sub(r"(?m)^ +deployment: false\n", "", workflow)


def copy_action(root: Path) -> None:
    """The action as `uses: ./` sees it in a workflow's repository: action.yml, its Dockerfile and sources."""
    for name in ("action.yml", "Dockerfile", ".dockerignore", "pyproject.toml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "requirements", root / "requirements")
    shutil.copytree(ROOT / "src", root / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
