"""Where a router's files live: this machine, or a host reached through a `remote.Shell`.

Every file a router owns (Caddy's and nginx's upstream file, HAProxy's map file, Traefik's dynamic file, Envoy's
runtime tree behind a symlink) is read, written and swapped through one of these, so a router's code is the same
on this machine and on a load balancer. `LocalFiles` is plain Python file I/O (no subprocess: a local switch costs
what it did); `ShellFiles` runs POSIX sh commands on the host, one `Shell.run` per operation, and never asks this
machine about a remote path. Both make every change atomic (a temp file in the same folder, then a rename), so
a proxy reading the file per request never sees half of it.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shlex
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Protocol

from ..errors import TargetError
from ..remote import CommandResult, Shell
from ..report import write_atomic
from ..state.files import state_io

SHELL_TIMEOUT = 15.0  # seconds for one file operation on a host: a switch's writes are tiny
_MISSING = 7  # the exit status our read script gives a missing file (cat never exits 7)


class Files(Protocol):
    def show(self, path: Path) -> str:
        """`path` for a message or a runbook command: absolute on this machine, as configured on a host."""
        ...

    def read(self, path: Path, doing: str) -> str | None:
        """The file's text (undecodable bytes replaced); None when it does not exist."""
        ...

    def write(self, path: Path, text: str, doing: str, *, mode: int = 0o644, keep_mode: bool = False) -> None:
        """Replace the file atomically (its folder made if missing). `mode` for a new file, or for every write
        unless `keep_mode` (then an existing file keeps its mode)."""
        ...

    def remove(self, path: Path, doing: str) -> None:
        """Delete the file; a missing one is fine."""
        ...

    def swap_link(self, link: Path, key: Path, value: str | None, doing: str) -> None:
        """A copy of the tree `link` (a symlink) points to, with the file `key` (relative) set to `value` (None:
        removed), becomes the new target of `link` by one rename. Under an flock of `.<link name>.lock`, so two
        apps sharing the folder never lose each other's change; older trees of ours are removed, the previous
        one kept (the proxy may still be loading it)."""
        ...


NOT_A_LINK = ("runtime_dir {link} is a directory, not a symlink: Envoy reloads a disk layer only when its symlink_root "
              "is swapped (move it away)")


class LocalFiles:
    """This machine: Python file I/O."""

    def show(self, path: Path) -> str:
        return str(path.resolve())

    def read(self, path: Path, doing: str) -> str | None:
        with state_io(path, doing):
            try:
                return path.read_bytes().decode(errors="replace")
            except FileNotFoundError:
                return None

    def write(self, path: Path, text: str, doing: str, *, mode: int = 0o644, keep_mode: bool = False) -> None:
        with state_io(path, doing):
            if keep_mode and path.exists():
                mode = stat.S_IMODE(path.stat().st_mode)
            write_atomic(path, text, mode=mode)

    def remove(self, path: Path, doing: str) -> None:
        with state_io(path, doing):
            path.unlink(missing_ok=True)

    def swap_link(self, link: Path, key: Path, value: str | None, doing: str) -> None:
        folder, name = link.parent, link.name
        with state_io(link, doing):
            if link.exists() and not link.is_symlink():
                raise TargetError(NOT_A_LINK.format(link=link))
            folder.mkdir(parents=True, exist_ok=True)
            with open(folder / f".{name}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                previous = os.readlink(link) if link.is_symlink() else None
                tree = Path(tempfile.mkdtemp(dir=folder, prefix=f"{name}.bluegreen-"))
                os.chmod(tree, 0o755)  # a proxy not run as our user reads it
                if link.is_dir():
                    shutil.copytree(link, tree, symlinks=True, dirs_exist_ok=True)
                key_file = tree / key
                if value is None:
                    key_file.unlink(missing_ok=True)
                else:
                    key_file.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    write_atomic(key_file, value, mode=0o644)
                new_link = folder / f".{tree.name}.link"
                os.symlink(tree.name, new_link)
                os.replace(new_link, link)
                keep = {tree.name, Path(previous).name if previous else ""}  # only ours go: the folder may hold
                for old in folder.glob(f"{glob.escape(name)}.bluegreen-*"):  # the user's own trees
                    if old.name not in keep and old.is_dir() and not old.is_symlink():
                        shutil.rmtree(old, ignore_errors=True)


class ShellFiles:
    """A host reached through a Shell: each operation is one POSIX sh script run there."""

    def __init__(self, shell: Shell) -> None:
        self.shell = shell

    def show(self, path: Path) -> str:
        return str(path)  # as the host sees it: never resolved against this machine

    def _run(self, script: str, path: Path, doing: str, *, input: str | None = None,
             missing_ok: bool = False) -> CommandResult:
        try:
            result = self.shell.run(script, input=input, timeout=SHELL_TIMEOUT)
        except UnicodeDecodeError:  # the shell decodes its output as UTF-8: a file of other bytes is not ours
            raise TargetError(f"cannot {doing} {path} on {self.shell.name}: it is not UTF-8 text") from None
        if not result.ok and not (missing_ok and result.exit_status == _MISSING):
            raise TargetError(f"cannot {doing} {path} on {self.shell.name}: {result.last_error_line()}")
        return result

    def read(self, path: Path, doing: str) -> str | None:
        p = shlex.quote(str(path))
        result = self._run(f"[ -e {p} ] || exit {_MISSING}; exec cat -- {p}", path, doing, missing_ok=True)
        return None if result.exit_status == _MISSING else result.stdout

    def write(self, path: Path, text: str, doing: str, *, mode: int = 0o644, keep_mode: bool = False) -> None:
        p, d = shlex.quote(str(path)), shlex.quote(str(path.parent))
        template = shlex.quote(f"{path.parent}/.{path.name}.XXXXXX")
        # cp -p onto the temp file keeps an existing file's mode (and owner, as root); cat > then replaces its text
        keep = f"if [ -f {p} ]; then cp -p -- {p} \"$t\"; else chmod {mode:o} \"$t\"; fi" if keep_mode else \
            f"chmod {mode:o} \"$t\""
        script = (f"set -e; mkdir -p -- {d}; t=$(mktemp {template}); trap 'rm -f \"$t\"' EXIT; {keep}; "
                  f"cat > \"$t\"; mv -f -- \"$t\" {p}")
        self._run(script, path, doing, input=text)

    def remove(self, path: Path, doing: str) -> None:
        self._run(f"rm -f -- {shlex.quote(str(path))}", path, doing)

    def swap_link(self, link: Path, key: Path, value: str | None, doing: str) -> None:
        q = shlex.quote
        folder, name, key_file = q(str(link.parent)), q(link.name), q(str(key))
        refuse = q(NOT_A_LINK.format(link=link))
        if value is None:
            change = f'rm -f "$tree"/{key_file}'
        else:
            change = f'mkdir -p "$(dirname "$tree"/{key_file})" && printf %s {q(value)} > "$tree"/{key_file}'
        script = (
            "set -e; umask 022\n"  # the new tree readable by a proxy not run as our user
            f"mkdir -p -- {folder}; cd {folder}\n"
            f"if [ -e {name} ] && [ ! -L {name} ]; then echo {refuse} >&2; exit 3; fi\n"
            f"exec 9>>.{name}.lock\n"
            "if command -v flock >/dev/null 2>&1; then flock 9; fi\n"
            f"prev=$(readlink {name} 2>/dev/null || true); prev=${{prev##*/}}\n"
            f"tree=$(mktemp -d {name}.bluegreen-XXXXXX); chmod 755 \"$tree\"\n"
            "trap 'rm -rf \"$tree\" \".$tree.link\"' EXIT\n"
            f"if [ -d {name} ]; then cp -pRP {name}/. \"$tree\"/; fi\n"
            f"{change}\n"
            f"ln -s \"$tree\" \".$tree.link\"; mv -Tf \".$tree.link\" {name}\n"  # rename(2): atomic
            "trap - EXIT\n"
            f"for old in {name}.bluegreen-*; do\n"  # only ours go: the folder may hold the user's own trees
            "  [ -d \"$old\" ] && [ ! -L \"$old\" ] || continue\n"
            "  [ \"$old\" = \"$tree\" ] || [ \"$old\" = \"$prev\" ] || rm -rf \"$old\" || true\n"
            "done\n"
        )
        self._run(script, link, doing)
