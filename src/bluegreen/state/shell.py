"""Lock, history and planned scale-downs as files on a host reached through a Shell (the servers runtime:
the router host, or the first app host for `router_host: each`), so a rollback dispatched days later from
another runner needs nothing from this one.

No process holds anything on the host between commands: each write is a compare-and-swap under `flock`
there, and a transaction that lost the race starts again.
"""

from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Callable, TypeVar

from ..errors import TargetError
from ..remote import CommandResult, Shell
from .files import FileStateStore

T = TypeVar("T")
CAS_RETRIES = 20  # a write that found the file changed by another run starts its read-modify-write again


class _Changed(Exception):
    """A state file changed between our read and our write: another run got there first."""


class ShellStateStore(FileStateStore):
    """Lock and history as files on a host, changed by compare-and-swap: a write goes through only if the file
    still holds what this transaction read (its sha256), checked and renamed under `flock` on that host. Two runs
    can never both take the lock, and nothing is held on the host between commands (a runner that vanishes
    leaves no stale mutex, only a lock that expires)."""

    def __init__(self, shell: Callable[[], Shell], directory: PurePosixPath, lock_ttl: float) -> None:
        super().__init__(directory, lock_ttl)  # type: ignore[arg-type]  # a path on the host, never opened here
        self._shell = shell
        self._seen: dict[str, str] = {}  # file -> the sha256 this transaction read ("none": missing)

    def _where(self, name: str) -> str:
        return f"{self._shell().name}:{self.dir / name}"

    def _sh(self, name: str, doing: str, script: str, input: str | None = None) -> CommandResult:
        done = self._shell().run(script, input=input, timeout=30)
        if done.exit_status == 75:
            raise _Changed()
        if not done.ok:
            raise TargetError(f"cannot {doing} {self._where(name)}: {done.last_error_line()} (the SSH user needs "
                              f"write access to state_dir {self.dir} and the flock command on that host)")
        return done

    def _read(self, name: str) -> str | None:
        path = shlex.quote(str(self.dir / name))
        done = self._sh(name, "read", f'f={path}; if [ -e "$f" ]; then sha256sum < "$f" | cut -c1-64 && cat -- "$f"; '
                                      "else echo none; fi")
        digest, _, text = done.stdout.partition("\n")
        self._seen[name] = digest.strip()
        return None if digest.strip() == "none" else text

    def _swap(self, name: str, doing: str, change: str, input: str | None = None) -> None:
        """`change` (a shell snippet on "$f") under the host's flock, if the file is as this transaction read it."""
        expected = self._seen.get(name)
        check = "" if expected is None else (
            'if [ -e "$f" ]; then cur=$(sha256sum < "$f" | cut -c1-64); else cur=none; fi; '
            f'[ "$cur" = {shlex.quote(expected)} ] || exit 75; ')
        script = (f"d={shlex.quote(str(self.dir))}; f=\"$d\"/{shlex.quote(name)}; mkdir -p \"$d\" && "
                  'exec 9>>"$d/.mutex" && flock -w 10 9 || exit 71; ' + check + change)
        self._sh(name, doing, script, input=input)
        self._seen.pop(name, None)

    def _write(self, name: str, text: str) -> None:
        self._swap(name, "write", 't="$f.tmp.$$"; cat > "$t" && mv -f "$t" "$f"', input=text)

    def _unlink(self, name: str) -> None:
        self._swap(name, "remove", 'rm -f "$f"')

    def _modified(self, name: str) -> datetime | None:
        done = self._shell().run(f"stat -c %Y {shlex.quote(str(self.dir / name))}", timeout=30)
        try:
            return datetime.fromtimestamp(int(done.stdout.strip()), timezone.utc) if done.ok else None
        except ValueError:
            return None

    def _transaction(self, body: Callable[[], T]) -> T:
        for attempt in range(CAS_RETRIES):
            self._seen = {}
            try:
                return body()
            except _Changed:
                time.sleep(0.02 * (attempt + 1))
        raise TargetError(f"{self._where('')}: the state kept changing under this run ({CAS_RETRIES} tries); "
                          "is another run writing it in a loop?")

    def purge(self, keep: Path) -> None:
        # `keep` (the config file) is on the runner, never in a directory on the host.
        self._shell().run(f"rm -rf {shlex.quote(str(self.dir))}", timeout=30)
