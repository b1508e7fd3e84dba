"""The local runtime (the embedded default): each colour is a process on this machine, on its own port.

Processes are detached, with pid and log files in the state directory, so a
`rollback` or `status` from a new process days later finds them. The state
directory also holds the router's files, the lock and the history.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from ..cancel import CANCEL
from ..config import COLOURS, Colour, LocalTarget, render
from .. import proc
from ..errors import NotReadyError, TargetError
from ..report import write_atomic
from ..state.files import state_io
from .base import ColourState
from .hostports import HostPortRuntime

MAX_LOG_BYTES = 1024 * 1024  # a colour's log is rotated when a deploy starts it past this size


class LocalRuntime(HostPortRuntime):
    config: LocalTarget

    # --- questions ---------------------------------------------------------------------------

    def colour_state(self, colour: Colour) -> ColourState:
        record = self._record(colour)
        pid = proc.read_pid(self._pid_file(colour))
        ready = pid is not None and self.health(colour, timeout=1.0) is None
        if pid:
            detail = f"pid {pid}, port {self.ports[colour]}"
        elif (gone := proc.read_pid(self._pid_file(colour), running=False)) is not None:
            # bluegreen removes the pid file before it stops a colour: one left behind means it was not us
            detail = (f"crashed: pid {gone} exited without bluegreen stopping it (port {self.ports[colour]}); "
                      f"its log ({self._log_file(colour)}) ends: {proc.tail(self._log_file(colour))}")
        else:
            detail = f"stopped (port {self.ports[colour]})"
        return ColourState(
            colour=colour, version=record.get("version"), running=pid is not None, ready=ready,
            replicas=1 if pid else 0, detail=detail,
        )

    # --- actions -----------------------------------------------------------------------------

    def deploy(self, colour: Colour, version: str) -> None:
        self._stop(colour)
        self._start(colour, version)

    def check_running(self, colour: Colour) -> None:
        if proc.read_pid(self._pid_file(colour)) is None:
            pid = proc.read_pid(self._pid_file(colour), running=False)
            code = proc.exit_code(pid) if pid else None
            how = f" with code {code}" if code is not None else ""
            raise NotReadyError(
                f"{colour} exited{how} before it was ready; its log ({self._log_file(colour)}) ends: "
                f"{proc.tail(self._log_file(colour))}"
            )

    def scale(self, colour: Colour, replicas: int) -> None:
        running = proc.read_pid(self._pid_file(colour)) is not None
        if replicas <= 0:
            self._stop(colour)
        elif not running:
            version = self._record(colour).get("version")
            if version is None:
                raise TargetError(f"{colour} has never been deployed; nothing to start")
            self._start(colour, version)

    def follow_up_scale_down(self, delay: float) -> None:
        """No later run may come on a developer's machine: a detached `bluegreen _scale-down` waits `delay`,
        takes the lock (which applies what is due, by the one rule) and releases it."""
        argv = [
            sys.executable, "-m", "bluegreen", "_scale-down", "-c", str(self.settings.source.resolve()),
            "-e", self.settings.environment, "--after", str(delay),
        ]
        pid = proc.spawn(argv, log_file=self.state_dir / "scale-down.log", env=dict(os.environ))
        proc.write_pid(self.state_dir / f"scale-down-{pid}.pid", pid)

    def stop_colours(self) -> list[str]:
        stopped = []
        for pid_file in self.state_dir.glob("scale-down-*.pid"):
            pid = proc.read_pid(pid_file)
            if pid:
                proc.stop(pid, grace=1)
            pid_file.unlink(missing_ok=True)
        for colour in COLOURS:
            if self._stop(colour):
                stopped.append(f"{colour} (port {self.ports[colour]})")
        return stopped

    # --- processes ---------------------------------------------------------------------------

    def _start(self, colour: Colour, version: str) -> None:
        values = {"port": self.ports[colour], "host": self.hosts[colour], "version": version, "colour": colour,
                  "python": sys.executable}
        argv = [render(arg, **values) for arg in self.config.command]
        cwd = self.settings.path(self.config.working_directory) if self.config.working_directory else self.settings.base_dir
        env = {**os.environ, **{k: render(v, **values) for k, v in self.config.env.items()}}
        log = self._log_file(colour)
        with state_io(log, "write"):
            log.parent.mkdir(parents=True, exist_ok=True)
            if log.exists() and log.stat().st_size > MAX_LOG_BYTES:  # one older generation is kept
                log.replace(log.with_name(log.name + ".1"))
            with open(log, "a") as handle:
                handle.write(f"--- bluegreen: starting {colour} version {version} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        with CANCEL.shielded():  # a process started is a process recorded, or the next run cannot stop it
            try:
                pid = proc.spawn(argv, log_file=log, env=env, cwd=cwd)
            except OSError as exc:
                raise TargetError(f"cannot start {colour}: {argv[0]}: {exc.strerror}") from None
            try:
                with state_io(self._pid_file(colour), "write"):
                    proc.write_pid(self._pid_file(colour), pid)
                with state_io(self._record_file(colour), "write"):
                    write_atomic(self._record_file(colour), json.dumps({"version": version, "port": self.ports[colour]}))
            except TargetError:
                proc.stop(pid)  # a process no state file names could never be found, stopped or rolled back to
                self._pid_file(colour).unlink(missing_ok=True)
                raise

    def _stop(self, colour: Colour) -> bool:
        pid = proc.read_pid(self._pid_file(colour))
        self._pid_file(colour).unlink(missing_ok=True)
        return proc.stop(pid) if pid else False

    def _record(self, colour: Colour) -> dict:
        path = self._record_file(colour)
        with state_io(path, "read"):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return {}
        try:
            record = json.loads(raw)
        except ValueError as exc:
            record = exc
        if not isinstance(record, dict) or not isinstance(record.get("version"), (str, type(None))):
            raise TargetError(
                f"{path} is unreadable (not what bluegreen wrote): delete it, then deploy {colour} again "
                f"(bluegreen cannot tell which version {colour} runs without it)"
            )
        return record

    def _record_file(self, colour: Colour) -> Path:
        return self.state_dir / f"{colour}.json"

    def _pid_file(self, colour: Colour) -> Path:
        return self.state_dir / f"{colour}.pid"

    def _log_file(self, colour: Colour) -> Path:
        return self.state_dir / f"{colour}.log"
