"""GitHub Actions: the adapter, and the Docker action's entrypoint (`python -m bluegreen.ci.github`).

The adapter is chosen by `detect()` whenever GITHUB_ACTIONS=true (the action, or the
CLI in a `run:` step): a log group per phase, `::error`/`::warning` annotations,
step outputs in $GITHUB_OUTPUT, the Markdown result in $GITHUB_STEP_SUMMARY, and the
run's URL in the release history.

`main()` is the action: it maps the INPUT_* variables (GitHub keeps the hyphens:
INPUT_NO-SWITCH) to the CLI's arguments and runs the same `cli.run`, so exit codes are
the CLI's. Secrets are masked before anything is printed: the kubeconfig input (and
the credentials in it) and the smoke checks' header values. Masking is the runner's
job, so every text we write ourselves (log lines, summary, outputs, the JSON report)
is also redacted here: a secret never depends on the runner to stay hidden.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import binascii
import os
import re
import secrets
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from ..events import Events
from ..report import Phase, Result, write_atomic
from . import Adapter

COMMANDS = ("deploy", "promote", "rollback", "status")
FLAGS = {"no-switch": "deploy", "dry-run": "deploy", "force": "rollback"}  # boolean input -> its command
MIN_SECRET = 4  # GitHub masks any string; a 1-3 character "secret" would blank common words


class InputError(Exception):
    """A wrong action input: one `::error` line and exit code 2."""


# --- workflow commands -------------------------------------------------------------------------


def escape_data(value: str) -> str:
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def command(name: str, message: str, **properties: object) -> str:
    props = ",".join(f"{k}={escape_property(str(v))}" for k, v in properties.items() if v is not None)
    return f"::{name}{' ' + props if props else ''}::{escape_data(message)}"


class Secrets:
    """The values to mask, and redaction of the texts we write ourselves."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def add(self, value: str | None, out=None) -> None:
        """Mask `value` (each line of it: the runner masks line by line) before anything could print it."""
        for part in (value or "").splitlines():
            part = part.strip()
            if part.startswith("-----") and part.endswith("-----"):
                continue  # PEM armour ("-----BEGIN ... KEY-----"): the same in every key
            if len(part) >= MIN_SECRET and part not in self.values:
                self.values.append(part)
                # Longest first, so a secret containing another is redacted whole.
                self.values.sort(key=len, reverse=True)
                print(f"::add-mask::{escape_data(part)}", file=out or sys.stdout, flush=True)

    def redact(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "***")
        return text


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
        self.write(command("warning", message, title="bluegreen"))

    def finished(self, result: Result) -> None:
        self._close()
        super().finished(result)
        if result.exit_code != 0:
            self.write(command("error", result.reason or result.status, title=f"bluegreen {result.command} {result.status}"))

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
            path = Path(report)
            if path.exists() and self.secrets.values:
                # The report was written before we saw it: redact it in place.
                write_atomic(path, self.secrets.redact(path.read_text(encoding="utf-8")))
            outputs["report"] = _workspace_relative(path)
        else:
            outputs["report"] = ""
        self.write_outputs(outputs)
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(self.secrets.redact(result.to_markdown()) + "\n")

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
    # Every string under users, whatever its shape: a malformed kubeconfig still has its secrets masked.
    for value in _credentials(data.get("users")):
        secrets_.add(value)
        try:  # client-key-data and friends: the decoded form is a secret too
            secrets_.add(base64.b64decode(value, validate=True).decode())
        except (binascii.Error, UnicodeDecodeError, ValueError):
            pass
    return text


# Fields of a kubeconfig user that are no secret (an exec plugin's command, file paths); every other
# string in it (token, password, client-key-data, auth-provider tokens, exec env values) is masked.
_PLAIN_KUBE_FIELDS = {
    "apiVersion", "command", "args", "installHint", "interactiveMode", "provideClusterInfo", "name",
    "client-certificate", "client-key", "tokenFile", "as", "as-uid", "as-groups", "username",
}


def _credentials(node: object, key: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for k, value in node.items():
            yield from _credentials(value, str(k))
    elif isinstance(node, list):
        for value in node:
            yield from _credentials(value, key)
    elif isinstance(node, str) and key not in _PLAIN_KUBE_FIELDS:
        yield node


def mask_config(config: str, environment: str | None, secrets_: Secrets) -> None:
    """Load the config quietly and mask its smoke checks' header values; a ConfigError propagates."""
    from ..config import load_config, secret_header_values

    for value in secret_header_values(load_config(config, environment or None)):
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
    from ..errors import ConfigError

    secrets_ = Secrets()
    try:
        # 1. Masks first: nothing is printed before every secret input is masked.
        kubeconfig = os.environ.get("INPUT_KUBECONFIG", "").strip()
        if kubeconfig:
            text = mask_kubeconfig(kubeconfig, secrets_)
            # A file in the action's own container: it is gone when the step ends.
            fd, path = tempfile.mkstemp(prefix="kubeconfig-", suffix=".yaml")
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            atexit.register(lambda: Path(path).unlink(missing_ok=True))
            os.environ["KUBECONFIG"] = path
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
            print(config_error_annotation(str(exc)), flush=True)
            return 2
    except InputError as exc:
        print(command("error", str(exc), title="bluegreen: wrong input"), flush=True)
        return 2
    adapter = GitHubAdapter(secrets_)
    code = run(args, adapter)
    if code != 0 and not adapter.published:
        # An error before the pipeline ran (the CLI printed its line on stderr): make it an annotation too.
        print(command("error", f"bluegreen {args.command} failed with exit code {code}; see the log",
                      title="bluegreen"), flush=True)
    return code


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
