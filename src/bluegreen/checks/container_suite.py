"""The user's test suite as a container of their own image (`test_suite.image`), on the Docker engine.

The suite's dependencies (pytest plugins, browsers, node) live in the team's image, not in
bluegreen's. The container gets the BLUEGREEN_* variables and `test_suite.env`, the working
directory bind-mounted at the same path (so `junit:` is read where the suite wrote it), and
runs in bluegreen's own network namespace, so it reaches the preview URL exactly as bluegreen
does. It is removed afterwards, on failure, on timeout and on cancellation too.

The engine needs HOST paths for a bind mount. In a GitHub container action the workspace is
/github/workspace inside the action but /home/runner/work/<repo>/<repo> on the host; so when
bluegreen runs in a container (its hostname is its container id), it inspects itself through
the Engine API and maps the working directory through its own mounts to the host source.
Outside a container (or under act with -b, which mounts the workspace at its host path) the
path is already the host's.
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Callable
from urllib.parse import quote

import httpx

from ..cancel import CANCEL
from ..config import TestSuite
from ..errors import TargetError
from ..docker_api import DockerAPI

Log = Callable[[str], None]


def run_container_suite(
    suite: TestSuite, *, cwd: Path, command: list[str], env: dict[str, str], image: str, log: Log,
) -> tuple[int | None, bool, list[str], float]:
    """Run the suite's container; returns (exit code, timed out, last output lines, duration)."""
    api = DockerAPI(suite.docker_host)
    try:
        _ping(api)
        _ensure_image(api, image, suite.pull)
        me = _own_container(api)
        body = {
            "Image": image,
            "Cmd": command,
            "Env": [f"{k}={v}" for k, v in {**suite.env, **env}.items()],
            "WorkingDir": str(cwd),
            "Tty": True,  # one raw stream, stdout and stderr in order, line by line
            "Labels": {"dev.bluegreen.test-suite": env.get("BLUEGREEN_APP", "")},
            "HostConfig": {
                "Binds": [f"{_host_path(cwd, me)}:{cwd}"],
                # Our own network namespace (or the host's): the preview URL means the same there.
                "NetworkMode": f"container:{me['Id']}" if me else "host",
            },
        }
        name = "bluegreen-suite-" + re.sub(r"[^a-zA-Z0-9_.-]", "-", env.get("BLUEGREEN_APP", "app")) + "-" + secrets.token_hex(4)
        started = time.monotonic()
        with CANCEL.held():  # created and started whole: a cancel meanwhile is raised at the wait below
            api.call("POST", "/containers/create", params={"name": name}, json=body)
            try:
                api.call("POST", f"/containers/{name}/start", ok=(204, 304))
            except TargetError:
                _remove(api, name)
                raise
        tail: list[str] = []
        reader = threading.Thread(target=_stream, args=(api, name, log, tail), daemon=True)
        reader.start()
        try:
            CANCEL.check()
            code, timed_out = _wait(api, name, suite.timeout)
        except BaseException:  # cancelled (or the engine went away): the container ends with the run
            with CANCEL.held():
                _remove(api, name)
            raise
        if timed_out:
            _remove(api, name)  # first: that also ends the log stream the reader follows
        reader.join(timeout=5)
        _remove(api, name)
        return code, timed_out, tail, time.monotonic() - started
    finally:
        api.close()


def _ping(api: DockerAPI) -> None:
    try:
        api.call("GET", "/_ping", timeout=5)
    except TargetError as exc:
        why = str(exc).split(": ", 2)[-1]
        raise TargetError(f"test suite: no Docker engine at {api.where}: {why}; test_suite.image needs one") from None


def _ensure_image(api: DockerAPI, image: str, pull: str) -> None:
    if pull == "always" or (pull == "missing" and not api.image_exists(image)):
        try:
            api.pull(image)
        except TargetError as exc:
            raise TargetError(f"test suite: image {image} is not on the engine and {str(exc)[len('docker: '):]}") from None
    elif not api.image_exists(image):
        raise TargetError(f"test suite: image {image} is not on the engine (test_suite.pull: never)")


def _own_container(api: DockerAPI) -> dict | None:
    """Our own container, when bluegreen runs in one on this engine (a container action, a CI job)."""
    try:
        return api.inspect(socket.gethostname())
    except TargetError:
        return None


def _host_path(path: Path, me: dict | None) -> str:
    """The host path of `path`: through the deepest of our own mounts that holds it."""
    if me is None:
        return str(path)
    best = None
    for mount in me.get("Mounts") or []:
        dest = Path(mount.get("Destination", "/"))
        if (path == dest or dest in path.parents) and mount.get("Source"):
            if best is None or len(dest.parts) > len(Path(best["Destination"]).parts):
                best = mount
    if best is None:
        raise TargetError(f"test suite: {path} is not on a mount of bluegreen's container {me['Id'][:12]}; "
                          "the suite's container cannot see it (set test_suite.working_directory inside the workspace)")
    return str(Path(best["Source"]) / path.relative_to(best["Destination"]))


def _stream(api: DockerAPI, name: str, log: Log, tail: list[str]) -> None:
    """Follow the container's output until it ends; each line to the log, the last ones kept."""
    try:
        with api.client.stream("GET", f"/containers/{quote(name)}/logs", timeout=None,
                               params={"follow": 1, "stdout": 1, "stderr": 1}) as response:
            for line in response.iter_lines():
                line = line.rstrip("\r")
                log(line)
                tail.append(line)
                del tail[:-20]
    except httpx.HTTPError:
        pass  # the container was removed under us (timeout, cancel): what was read is logged


def _wait(api: DockerAPI, name: str, timeout: float) -> tuple[int | None, bool]:
    try:
        response = api.client.post(f"/containers/{quote(name)}/wait", timeout=httpx.Timeout(10, read=timeout))
    except httpx.ReadTimeout:
        return None, True
    except httpx.TransportError as exc:
        raise TargetError(f"test suite: lost the Docker engine at {api.where} while waiting: {exc}") from None
    if response.status_code != 200:
        raise TargetError(f"test suite: waiting for container {name}: {response.status_code} {response.text[:200]}")
    return int(response.json().get("StatusCode", -1)), False


def _remove(api: DockerAPI, name: str) -> None:
    try:  # force: SIGKILL and remove at once, so a cancelled run is not held up
        api.call("DELETE", f"/containers/{quote(name)}", params={"force": "true"}, ok=(204, 404), timeout=30)
    except TargetError:
        pass
