"""GitHub Actions: the adapter, and the Docker action's entrypoint (`python -m bluegreen.ci.github`).

The adapter is chosen by `detect()` whenever GITHUB_ACTIONS=true (the action, or the
CLI in a `run:` step): a log group per phase, `::error`/`::warning` annotations,
step outputs in $GITHUB_OUTPUT, the Markdown result in $GITHUB_STEP_SUMMARY, and the
run's URL in the release history.

`main()` is the action: it maps the INPUT_* variables (GitHub keeps the hyphens:
INPUT_NO-SWITCH) to the CLI's arguments and runs the same `cli.run`, so exit codes are
the CLI's. Secrets are masked before anything is printed: the kubeconfig input (and
the credentials in it), the ssh-* inputs (which become SSH_PRIVATE_KEY, SSH_KNOWN_HOSTS and
SSH_KEY_PASSPHRASE for the servers target's config), and the smoke checks' header values. Masking is the runner's
job, so every text we write ourselves (log lines, summary, outputs, the JSON report)
is also redacted here: a secret never depends on the runner to stay hidden.
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
import secrets
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..events import Events, outcome
from ..report import Phase, Result
from ..redaction import kubeconfig_credentials
from . import SSH_SECRET_VARIABLES, Adapter, Redactor

if TYPE_CHECKING:
    from ..pipeline import Status

# The action's inputs, as action.yml and prebuilt/action.yml declare them (a test keeps the three equal):
# the entrypoint refuses any other INPUT_*, so a misspelt input fails instead of being ignored.
INPUTS = ("command", "config", "environment", "version", "no-switch", "dry-run", "force", "retire-previous",
          "full", "kubeconfig", "ssh-private-key", "ssh-known-hosts", "ssh-passphrase", "working-directory")
# The servers target's secrets: input -> the variable the config reads (`ssh.private_key: ${SSH_PRIVATE_KEY}`).
SSH_INPUTS = dict(zip(("ssh-private-key", "ssh-known-hosts", "ssh-passphrase"), SSH_SECRET_VARIABLES))
COMMANDS = ("deploy", "promote", "rollback", "contract", "abort", "status")
# boolean input -> its command
FLAGS = {"no-switch": "deploy", "dry-run": "deploy", "force": "rollback", "retire-previous": "contract",
         "full": "promote"}


class InputError(Exception):
    """A wrong action input: one `::error` line and exit code 2."""


# The engine's messages name the CLI's options; in the action the user sets inputs instead.
CLI_TERMS = (
    (re.compile(r"choose one with -e\b"), "set the input environment"),
    (re.compile(r"\(choose one with -c\)"), "(set the inputs config and working-directory)"),
    (re.compile(r"run `deploy --no-switch` first"), "run a deploy with no-switch: true first"),
    (re.compile(r"deploy it again: bluegreen deploy .*?--version=(\S+)"),
     r"deploy it again: command: deploy, version: \1"),
    (re.compile(r"^--force: "), "force: "),
    (re.compile(r"run contract with --retire-previous"), "run command contract with retire-previous: true"),
)


def in_action_terms(text: str) -> str:
    for pattern, replacement in CLI_TERMS:
        text = pattern.sub(replacement, text)
    return text


def check_inputs(environ: dict[str, str] | None = None) -> None:
    """Refuse an INPUT_* that is no input of the action: GitHub passes any `with:` key on, and a misspelt
    one (`enviroment`) would otherwise be ignored, the run going on without it."""
    environ = os.environ if environ is None else environ
    given = {key[len("INPUT_"):].lower().replace("_", "-") for key in environ if key.startswith("INPUT_")}
    for name in sorted(given - set(INPUTS)):
        close = difflib.get_close_matches(name, INPUTS, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}? " if close else ""
        raise InputError(f"input {name} is not an input of this action ({hint}its inputs: {', '.join(INPUTS)})")


# --- workflow commands -------------------------------------------------------------------------


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: object) -> str:
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties.items() if v is not None)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


class Secrets(Redactor):
    """The values to mask, and redaction of the texts we write ourselves."""

    def add(self, value: str | None, out=None) -> list[str]:  # type: ignore[override]
        """Mask `value` (each line of it: the runner masks line by line) before anything could print it."""
        added = super().add(value)
        for part in added:
            print(f"::add-mask::{escape_data(part)}", file=out or sys.stdout, flush=True)
        return added


# --- the adapter -------------------------------------------------------------------------------


class GitHubEvents(Events):
    """A phase's progress lines (retries, the test suite's output) in a log group named after it; its
    outcome line after the group, so it shows when collapsed. A phase without progress gets no group.

    Everything goes to stdout: the runner reads workflow commands there, and one stream keeps
    the groups and the lines in order."""

    def __init__(self, secrets_: Secrets) -> None:
        super().__init__(sys.stdout)
        self.secrets = secrets_
        self._phase: str | None = None  # the running phase, whose group opens with its first progress line
        self._open = False

    def write(self, line: str) -> None:
        super().write(self.secrets.redact(line))

    def phase_started(self, name: str) -> None:
        self._close()
        self._phase = name

    def log(self, message: str) -> None:
        if self._phase and not self._open:
            self.write(f"::group::{escape_data(self._phase)}")
            self._open = True
        if message.lstrip().startswith("::"):
            # The test suite's output is not ours: a line it prints must not act as a workflow command.
            token = secrets.token_hex(16)
            self.write(f"::stop-commands::{token}")
            super().log(message)
            self.write(f"::{token}::")
            return
        super().log(message)

    def phase_finished(self, phase: Phase) -> None:
        self._close()
        self._phase = None
        super().phase_finished(phase)

    def warning(self, message: str) -> None:
        self.write(command("warning", in_action_terms(message), title="bluegreen"))

    def finished(self, result: Result) -> None:
        self._close()
        if result.reason:  # once, here: the log, the annotation, the outputs, the summary and the report all say it so
            result.reason = in_action_terms(result.reason)
        super().finished(result)
        if result.exit_code != 0:
            self.write(command("error", result.reason or result.status, title=f"bluegreen {outcome(result)}"))

    def _close(self) -> None:
        if self._open:
            self.write("::endgroup::")
            self._open = False


class GitHubAdapter(Adapter):
    name = "github"

    def __init__(self, secrets_: Secrets | None = None) -> None:
        self.secrets = secrets_ or Secrets()
        self.events = GitHubEvents(self.secrets)
        self.published = False

    def redact(self, text: str) -> str:
        return self.secrets.redact(text)

    @property
    def run_url(self) -> str | None:
        env = os.environ
        if env.get("GITHUB_REPOSITORY") and env.get("GITHUB_RUN_ID"):
            server = env.get("GITHUB_SERVER_URL", "https://github.com")
            return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
        return None

    @property
    def actor(self) -> str | None:
        return os.environ.get("GITHUB_ACTOR") or None

    def publish(self, result: Result, args: argparse.Namespace) -> None:
        self.published = True
        outputs = result.outputs()
        report = getattr(args, "report", None)
        if report and not getattr(args, "dry_run", False):
            outputs["report"] = _workspace_relative(Path(report))  # written already, redacted (self.redact)
        else:
            outputs["report"] = ""
        self.write_outputs(outputs)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(self.secrets.redact(result.to_markdown()) + "\n")

    def invalid(self, reason: str) -> None:
        """A wrong input or config, found before anything ran: status invalid and the reason, as outputs and summary."""
        self.write_outputs({"status": "invalid", "reason": reason})
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(self.secrets.redact(f"### bluegreen: invalid input or config\n\n> **{reason}**\n"))

    def write_outputs(self, outputs: dict[str, str]) -> None:
        """Append `name<<DELIMITER` blocks: multiline-safe, with a delimiter no value contains."""
        path = os.environ.get("GITHUB_OUTPUT")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as handle:
            for name, value in outputs.items():
                value = self.secrets.redact(value)
                delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
                while delimiter in value:
                    delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
                handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def _workspace_relative(path: Path) -> str:
    """A path later steps can use: relative to the workspace (the runner and the action mount it differently)."""
    workspace = os.environ.get("GITHUB_WORKSPACE")
    absolute = path.resolve()
    if workspace:
        try:
            return str(absolute.relative_to(Path(workspace).resolve()))
        except ValueError:
            pass
    return str(absolute)


# --- the action's entrypoint -------------------------------------------------------------------


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


def mask_config(config: str, environment: str | None, secrets_: Secrets) -> None:
    """Load the config quietly and mask its secrets (every field the config models mark secret: smoke check
    headers, router and metrics credentials, the servers target's SSH key, passphrase and known_hosts, the
    kubeconfig's credentials, the migrations' database URL; whatever variables they came from); a ConfigError
    propagates."""
    from ..config import load_config, secret_values

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
    from ..cli import build_parser, run
    from ..errors import BluegreenError, ConfigError

    secrets_ = Secrets()
    adapter = GitHubAdapter(secrets_)
    try:
        # 1. Masks first: nothing is printed before every secret input is masked.
        load_ssh_inputs(secrets_)
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
    from ..config import DEFAULT_CONFIG, load_config
    from ..pipeline import Pipeline, RunInfo
    from ..targets import make_target

    settings = load_config(args.config or DEFAULT_CONFIG, args.environment)
    target = make_target(settings)
    try:
        return status_outputs(Pipeline(settings, target, Events(io.StringIO()), RunInfo(rollback_command="")).status())
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
        file=_workspace_relative(Path(match["file"])), line=match["line"], col=match["col"],
    )


if __name__ == "__main__":
    sys.exit(main())
