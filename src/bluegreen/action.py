"""The GitHub Docker action's entrypoint: `python -m bluegreen.action` (the Dockerfile's ENTRYPOINT).

`main()` maps the INPUT_* variables (GitHub keeps the hyphens: INPUT_NO-SWITCH) to the CLI's arguments and runs
the same `cli.run` with the GitHub adapter (`ci/github.py`), so exit codes are the CLI's. Secrets are masked
before anything is printed: the kubeconfig input (and the credentials in it), the ssh-* inputs (which become
SSH_PRIVATE_KEY, SSH_KNOWN_HOSTS and SSH_KEY_PASSPHRASE for the servers target's config), and the config's
secret fields (the smoke checks' header values among them).

A module of its own, above `cli` and `ci`: the adapters never import the CLI or the engine.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import binascii
import difflib
import io
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .ci import SSH_SECRET_VARIABLES
from .ci.github import (ENVIRONMENT_VARIABLE, TOKEN_VARIABLE, GitHubAdapter, Secrets, command, in_action_terms,
                        workspace_relative)
from .redaction import kubeconfig_credentials

if TYPE_CHECKING:
    from .pipeline import Status

# The action's inputs, as action.yml and prebuilt/action.yml declare them (a test keeps the three equal):
# the entrypoint refuses any other INPUT_*, so a misspelt input fails instead of being ignored.
INPUTS = ("command", "config", "environment", "version", "no-switch", "dry-run", "force", "retire-previous",
          "full", "kubeconfig", "ssh-private-key", "ssh-known-hosts", "ssh-passphrase", "github-token",
          "github-environment", "github-deployments", "working-directory")
# The servers target's secrets: input -> the variable the config reads (`ssh.private_key: ${SSH_PRIVATE_KEY}`).
SSH_INPUTS = dict(zip(("ssh-private-key", "ssh-known-hosts", "ssh-passphrase"), SSH_SECRET_VARIABLES))
COMMANDS = ("deploy", "promote", "rollback", "contract", "abort", "status")
# boolean input -> its command
FLAGS = {"no-switch": "deploy", "dry-run": "deploy", "force": "rollback", "retire-previous": "contract",
         "full": "promote"}


class InputError(Exception):
    """A wrong action input: one `::error` line and exit code 2."""


def check_inputs(environ: dict[str, str] | None = None) -> None:
    """Refuse an INPUT_* that is no input of the action: GitHub passes any `with:` key on, and a misspelt
    one (`enviroment`) would otherwise be ignored, the run going on without it."""
    environ = os.environ if environ is None else environ
    given = {key[len("INPUT_"):].lower().replace("_", "-") for key in environ if key.startswith("INPUT_")}
    for name in sorted(given - set(INPUTS)):
        close = difflib.get_close_matches(name, INPUTS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InputError(f"input {name} is not an input of this action ({hint}its inputs: {', '.join(INPUTS)})")


def read_input(name: str, default: str = "") -> str:
    """INPUT_<NAME> as GitHub sets it (upper case, hyphens kept); the underscore form as a fallback."""
    key = "INPUT_" + name.upper()
    value = os.environ.get(key)
    if value is None:
        value = os.environ.get(key.replace("-", "_"))
    value = (value or "").strip()
    return value or default


def read_bool(name: str) -> bool:
    value = read_input(name, "false").lower()
    if value not in ("true", "false"):
        raise InputError(f"input {name} must be true or false, got {value!r}")
    return value == "true"


def mask_kubeconfig(content: str, secrets_: Secrets) -> str:
    """Mask a kubeconfig input (plain YAML or base64 of it) and every credential in it; returns the YAML."""
    import yaml

    text = content
    try:  # base64 of a kubeconfig, as secrets often hold it
        decoded = base64.b64decode("".join(content.split()), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if ":" in decoded:
        secrets_.add(content)
        text = decoded
    # Not every line of the YAML: "kind: Config" is no secret, and masking it would blank it in every log.
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        raise InputError("input kubeconfig is not valid YAML") from None
    if not isinstance(data, dict):
        raise InputError("input kubeconfig is not a kubeconfig (expected a mapping with clusters, users, contexts)")
    for value in kubeconfig_credentials(data):  # the same rule as a `kubeconfig` in the config (redaction.py)
        secrets_.add(value)
    return text


def load_ssh_inputs(secrets_: Secrets, environ: dict[str, str] | None = None) -> None:
    """The ssh-* inputs -> SSH_PRIVATE_KEY, SSH_KNOWN_HOSTS, SSH_KEY_PASSPHRASE, and every line of those masked.

    A non-empty input sets its variable (over a step `env:` of the same name: the input is the explicit one);
    an empty or absent input leaves the variable as the workflow set it, so `env: SSH_PRIVATE_KEY: ...` works
    too, and is masked the same way (GitHub masks a registered secret, but not a value built or read in the job,
    and a multi-line secret only line by line). The INPUT_* copies are dropped: one place holds the secret."""
    environ = os.environ if environ is None else environ
    for name, variable in SSH_INPUTS.items():
        value = None
        for key in ("INPUT_" + name.upper(), "INPUT_" + name.upper().replace("-", "_")):
            given = environ.pop(key, None)
            value = value if given is None else given
        if value and value.strip():
            secrets_.add(value)  # first: nothing is printed before the mask
            environ[variable] = value  # as given: a key file's content keeps its lines and final newline
        secrets_.add(environ.get(variable))


def load_github_inputs(secrets_: Secrets, environ: dict[str, str] | None = None) -> None:
    """github-token -> BLUEGREEN_GITHUB_TOKEN (masked first), github-environment -> BLUEGREEN_GITHUB_ENVIRONMENT;
    github-deployments: false leaves no token, so no deployment is recorded. The INPUT_* copy of the token is
    dropped: one place holds it, and the adapter takes it from there."""
    environ = os.environ if environ is None else environ
    token = ""
    for key in ("INPUT_GITHUB-TOKEN", "INPUT_GITHUB_TOKEN"):
        given = environ.pop(key, None)
        token = given.strip() if given and given.strip() else token
    secrets_.add(token or None)
    switch = read_input("github-deployments", "true").lower()
    if switch not in ("true", "false"):
        raise InputError(f"input github-deployments must be true or false, got {switch!r}")
    enabled = switch == "true"
    if token and enabled:
        environ[TOKEN_VARIABLE] = token
    elif not enabled:
        environ.pop(TOKEN_VARIABLE, None)
    name = read_input("github-environment")
    if name:
        environ[ENVIRONMENT_VARIABLE] = name


def mask_config(config: str, environment: str | None, secrets_: Secrets) -> None:
    """Load the config quietly and mask its secrets (every field the config models mark secret: smoke check
    headers, router and metrics credentials, the servers target's SSH key, passphrase and known_hosts, the
    kubeconfig's credentials, the migrations' database URL; whatever variables they came from); a ConfigError
    propagates."""
    from .config import load_config, secret_values

    for value in secret_values(load_config(config, environment or None)):
        secrets_.add(value)


def build_argv() -> list[str]:
    """The CLI arguments the inputs stand for; InputError names a wrong one."""
    name = read_input("command", "deploy").lower()
    if name not in COMMANDS:
        raise InputError(f"input command must be one of {', '.join(COMMANDS)}, got {name!r}")
    argv = [name, "-c", read_input("config", ".bluegreen.yml")]
    environment = read_input("environment")
    for input_name, value in (("config", argv[-1]), ("environment", environment)):
        if value.startswith("-"):  # argparse would take it for an option and fail with its usage text
            raise InputError(f"input {input_name} must not start with '-', got {value!r}")
    if environment:
        argv += ["-e", environment]
    version = read_input("version")
    for flag, owner in FLAGS.items():
        if read_bool(flag):
            if owner != name:
                raise InputError(f"input {flag} applies to command {owner} only, not {name}")
            argv.append(f"--{flag}")
    if name == "deploy":
        if not version:
            raise InputError("input version is required for command deploy")
        argv.append(f"--version={version}")  # `=`: a version starting with '-' stays a value
    elif name in ("promote", "rollback") and version:
        # promote/rollback check it: the prepared / the live version must still be this one.
        argv.append(f"--expect-version={version}")
    elif version:
        raise InputError(f"input version does not apply to command {name}")
    return argv


def main() -> int:
    from .cli import build_parser, run
    from .errors import BluegreenError, ConfigError

    secrets_ = Secrets()
    adapter = GitHubAdapter(secrets_)
    try:
        # 1. Masks first: nothing is printed before every secret input is masked.
        load_ssh_inputs(secrets_)
        load_github_inputs(secrets_)
        kubeconfig = os.environ.get("INPUT_KUBECONFIG", "").strip()
        if kubeconfig:
            text = mask_kubeconfig(kubeconfig, secrets_)
            # A file in the action's own container: it is gone when the step ends.
            fd, path = tempfile.mkstemp(prefix="kubeconfig-", suffix=".yaml")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            atexit.register(lambda: Path(path).unlink(missing_ok=True))
            os.environ["KUBECONFIG"] = path
        check_inputs()
        argv = build_argv()
        workdir = read_input("working-directory", ".")
        try:
            os.chdir(workdir)
        except OSError as exc:
            raise InputError(f"input working-directory {workdir!r}: {exc.strerror}") from None
        args = build_parser().parse_args(argv)
        try:
            mask_config(args.config, args.environment, secrets_)
        except ConfigError as exc:
            for message in getattr(exc, "errors", [str(exc)]):
                print(secrets_.redact(config_error_annotation(in_action_terms(message))), flush=True)
            adapter.invalid(in_action_terms(str(exc)))
            return 2
    except InputError as exc:
        print(command("error", str(exc), title="bluegreen: wrong input"), flush=True)
        adapter.invalid(str(exc))
        return 2
    errors = _ErrorLines(sys.stderr, secrets_)
    sys.stderr = errors
    try:
        code = run(args, adapter)
    finally:
        sys.stderr = errors.stream
    if code == 0 and args.command == "status":
        try:
            adapter.write_outputs(read_status_outputs(args))
        except BluegreenError as exc:  # the target changed its mind between the two reads: say so, not a traceback
            print(command("error", secrets_.redact(str(exc)), title="bluegreen status failed"), flush=True)
            adapter.write_outputs({"status": "failed", "reason": str(exc)})
            return exc.exit_code
    elif code != 0 and not adapter.published:
        # An error before the pipeline ran (the CLI printed its line on stderr): an annotation and outputs too.
        reason = in_action_terms(errors.last or f"bluegreen {args.command} failed with exit code {code}; see the log")
        print(command("error", secrets_.redact(reason), title=f"bluegreen {args.command} failed"), flush=True)
        adapter.write_outputs({"status": EXIT_STATUS.get(code, "failed"), "reason": reason})
    return code


# The status of a run that ended before the pipeline made a Result, by the CLI's exit code.
EXIT_STATUS = {1: "failed", 2: "invalid", 3: "locked", 130: "cancelled"}


class _ErrorLines(io.TextIOBase):
    """stderr, remembering the CLI's last `bluegreen: error: ...` line: an error before the pipeline ran (an
    unreachable target) has no Result, and its one line is the reason. Redacted, as everything we print."""

    PREFIX = "bluegreen: error: "

    def __init__(self, stream, secrets_: Secrets) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream
        self.secrets = secrets_
        self.last: str | None = None

    def write(self, text: str) -> int:
        text = self.secrets.redact(text)
        for line in text.splitlines():
            if line.startswith(self.PREFIX):
                self.last = line[len(self.PREFIX):]
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def status_outputs(status: Status) -> dict[str, str]:
    """`command: status` as outputs: the live colour and version, and the idle colour's version and state."""
    by_colour = {c.colour: c for c in status.colours}
    idle = "green" if status.live == "blue" else "blue"  # nothing live: blue is the one a deploy would use
    live_state, idle_state = by_colour.get(status.live) if status.live else None, by_colour.get(idle)
    state = "none" if idle_state is None or idle_state.version is None else (
        "ready" if idle_state.ready else "running" if idle_state.running else "stopped")
    return {
        "status": "succeeded",
        "live-colour": status.live or "",
        "live-version": (live_state.version if live_state else None) or "",
        "idle-colour": idle,
        "idle-version": (idle_state.version if idle_state else None) or "",
        "idle-state": state,
        "live-url": status.live_url,
        "pending-contract": (pending.version or "") if status.schema and (pending := status.schema.pending_contract) else "",
        "reason": "",
    }


def read_status_outputs(args: argparse.Namespace) -> dict[str, str]:
    from .config import DEFAULT_CONFIG, load_config
    from .events import Events
    from .pipeline import Pipeline, RunInfo
    from .targets import make_target

    settings = load_config(args.config or DEFAULT_CONFIG, args.environment)
    target = make_target(settings)
    try:
        return status_outputs(Pipeline(settings, target, Events(), RunInfo(rollback_command="")).status())
    finally:
        target.close()


_LOCATED = re.compile(r"^(?P<file>[^:\n]+?):(?P<line>\d+)(?::(?P<col>\d+))?: (?P<message>.*)$", re.S)


def config_error_annotation(message: str) -> str:
    """`path:line[:col]: message` -> an ::error annotation on that file and line (relative to the workspace)."""
    match = _LOCATED.match(message)
    if not match:
        return command("error", message, title="bluegreen config")
    return command(
        "error", match["message"], title="bluegreen config",
        file=workspace_relative(Path(match["file"])), line=match["line"], col=match["col"],
    )


if __name__ == "__main__":
    sys.exit(main())
