"""The Docker Engine API over its unix socket (or `DOCKER_HOST`), with httpx: no docker CLI is needed.

Used by the docker and servers runtimes (the colours' containers), the Caddy container router and the
container test suite.
"""

from __future__ import annotations

import json
import os
import re
import struct
import time
from typing import Any
from urllib.parse import quote

import httpx

from .errors import TargetError

DEFAULT_SOCKET = "/var/run/docker.sock"
RETRY_FOR = 30.0  # seconds a call keeps retrying while the engine is unreachable (e.g. dockerd restarting)


class DockerAPI:
    """The few Engine API calls we need; every failure is a TargetError of one line."""

    def __init__(self, docker_host: str | None, timeout: float = 30.0, retry_for: float = RETRY_FOR) -> None:
        self.retry_for = retry_for
        url = docker_host or os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
        if url.startswith("unix://"):
            self.where = url[len("unix://"):]
            transport = httpx.HTTPTransport(uds=self.where)
            base = "http://docker"
        elif url.startswith("tcp://"):
            self.where = url[len("tcp://"):]
            transport, base = httpx.HTTPTransport(), "http://" + self.where
        else:
            raise TargetError(f"docker: unsupported docker host {url!r} (use unix:///path/docker.sock or tcp://host:port)")
        self.client = httpx.Client(transport=transport, base_url=base, timeout=timeout)
        if url.startswith("unix://") and not os.path.exists(self.where):
            self.retry_for = 0  # no socket at all is a wrong setting, not a restart: say so at once

    def call(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), timeout: float | None = None,
             **kwargs: Any) -> httpx.Response:
        extra = {"timeout": timeout} if timeout is not None else {}
        deadline = time.monotonic() + self.retry_for
        while True:
            try:
                response = self.client.request(method, path, **kwargs, **extra)
                break
            except httpx.TransportError as exc:
                # A refused or dropped connection: the engine restarting. Retried briefly; a request it may have
                # received and acted on is retried only if it is a read (a repeated POST could act twice).
                transient = isinstance(exc, httpx.ConnectError) or method == "GET"
                if not transient or time.monotonic() >= deadline:
                    raise TargetError(
                        f"docker: cannot reach the engine at {self.where}: {exc or type(exc).__name__}") from None
                time.sleep(0.25)
        if response.status_code not in ok:
            raise TargetError(f"docker: {method} {path.split('?')[0]}: {response.status_code} {_message(response)}")
        return response

    def inspect(self, name: str) -> dict | None:
        response = self.call("GET", f"/containers/{quote(name)}/json", ok=(200, 404))
        return response.json() if response.status_code == 200 else None

    def start(self, name: str) -> None:
        self.call("POST", f"/containers/{quote(name)}/start", ok=(204, 304))

    def stop(self, name: str, grace: float, *, missing_ok: bool = False) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; the container is kept, so it can start again."""
        self.call("POST", f"/containers/{quote(name)}/stop", params={"t": int(grace)},
                  ok=(204, 304, 404) if missing_ok else (204, 304), timeout=grace + 30)

    def remove(self, name: str, timeout: float | None = 60) -> bool:
        """Remove the container, running or not; False when there was none."""
        response = self.call("DELETE", f"/containers/{quote(name)}", params={"force": "true"}, ok=(204, 404),
                             timeout=timeout)
        return response.status_code == 204

    def image_exists(self, image: str) -> bool:
        return self.call("GET", f"/images/{quote(image, safe='/:@')}/json", ok=(200, 404)).status_code == 200

    def pull(self, image: str) -> None:
        name, tag = _split_image(image)
        # The engine streams JSON progress lines and reports a failure in the stream (or as a 404/500).
        response = self.call("POST", "/images/create", params={"fromImage": name, "tag": tag}, timeout=600,
                             ok=(200, 404, 500))
        if response.status_code != 200:
            raise TargetError(f"docker: cannot pull {image}: {_message(response)}")
        for line in response.text.splitlines():
            try:
                error = json.loads(line).get("error")
            except ValueError:
                continue
            if error:
                raise TargetError(f"docker: cannot pull {image}: {error}")

    def logs_tail(self, name: str, lines: int = 5) -> str:
        try:
            response = self.call("GET", f"/containers/{quote(name)}/logs",
                                 params={"stdout": 1, "stderr": 1, "tail": lines})
        except TargetError:
            return "(no logs)"
        text = " | ".join(line.strip() for line in demux(response.content).splitlines() if line.strip())
        return text or "(empty log)"

    def close(self) -> None:
        self.client.close()


def safe_name(text: str) -> str:
    """Docker names allow [a-zA-Z0-9][a-zA-Z0-9_.-]; an app or environment name may hold anything else."""
    return re.sub(r"[^a-zA-Z0-9_.-]", "-", text)


def _split_image(image: str) -> tuple[str, str]:
    """'registry:5000/app:1.2' -> ('registry:5000/app', '1.2'); a digest stays in the name."""
    if "@" in image:
        return image, ""
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, "latest"
    return name, tag


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", "")).strip() or response.reason_phrase
    except ValueError:
        return " ".join(response.text.split())[:200] or response.reason_phrase


def demux(data: bytes) -> str:
    """Docker's multiplexed log stream (8-byte frame headers) -> text; a TTY's raw stream passes through."""
    out, i = [], 0
    while i + 8 <= len(data) and data[i] in (0, 1, 2) and data[i + 1:i + 4] == b"\0\0\0":
        (size,) = struct.unpack(">I", data[i + 4:i + 8])
        out.append(data[i + 8:i + 8 + size])
        i += 8 + size
    if i == 0:
        return data.decode(errors="replace")
    return b"".join(out).decode(errors="replace")
