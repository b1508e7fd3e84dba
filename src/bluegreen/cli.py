"""The command line: parse, run one command over the engine, print, exit with a documented code.

Exit codes: 0 done; 1 failed or cancelled before the switch (live untouched); 2 invalid
usage or config; 3 the deploy lock is held by another run; 4 failed or cancelled after
the switch and switched back automatically; 5 failed after the switch and switching back
failed too.

Only argparse is imported at start-up, so `bluegreen --help` answers at once; the
engine, pydantic and httpx load when a command runs.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .ci import Adapter
    from .config import Settings
    from .events import Subscriber
    from .pipeline import Pipeline
    from .targets import Target

EXIT_CODES_HELP = """\
exit codes:
  0  done
  1  failed or cancelled before the switch; live traffic untouched
  2  invalid usage or config
  3  the deploy lock is held by another run
  4  failed or cancelled after the switch; switched back automatically
  5  failed after the switch and switching back failed: a human must act
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bluegreen",
        description="Blue-green deployments: deploy to the idle colour, test it, switch traffic atomically, "
        "roll back in one command.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bluegreen {_package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name: str, help: str, hidden: bool = False) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name, help=None if hidden else help, description=help, epilog=EXIT_CODES_HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("-c", "--config", default=None, help="config file (default .bluegreen.yml)")
        sub.add_argument("-e", "--environment", help="environment in the config (needed when it has several)")
        sub.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
        return sub

    def changes(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--report", default="bluegreen-report.json", help="where to write the JSON report")
        sub.add_argument("--force-unlock", action="store_true", help="remove a stuck deploy lock first")

    deploy = command("deploy", "deploy a version to the idle colour, test it, switch traffic, verify")
    deploy.add_argument("--version", dest="release_version", required=True, metavar="V", help="the version to deploy")
    deploy.add_argument("--no-switch", action="store_true", help="stop after the checks (approve with `promote`)")
    deploy.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    changes(deploy)

    promote = command("promote", "resume a paused canary at its next step, or switch to the idle colour prepared by "
                      "`deploy --no-switch`, after re-checking it")
    promote.add_argument("--expect-version", metavar="V", help="refuse unless V is the prepared version")
    promote.add_argument("--full", action="store_true", help="a paused canary: go straight to 100%%")
    changes(promote)
    abort = command("abort", "send a paused canary's new colour back to 0%% in one change")
    changes(abort)

    rollback = command("rollback", "switch back to the previous colour, after checking it is healthy")
    rollback.add_argument("--force", action="store_true", help="switch without checking the previous colour")
    rollback.add_argument("--expect-version", metavar="V",
                          help="refuse unless V is live (a later release must not be undone by mistake)")
    changes(rollback)
    contract = command("contract", "run the pending contract (migrations), once nothing that needs the old schema can "
                       "come back")
    contract.add_argument("--retire-previous", action="store_true",
                          help="stop the previous colour first when it runs a version from before the expand")
    changes(contract)
    for sub in (deploy, promote):
        sub.add_argument("--no-auto-rollback", action="store_true", help="never switch back by itself (overrides the config)")

    command("status", "the live colour, the version on each colour, the lock, the last releases")
    command("validate", "check the config file")
    command("schema", "print the JSON Schema of the config file")
    down = command("down", "stop everything the local target started")
    down.add_argument("--purge", action="store_true", help="also delete its state: history, lock, logs")

    scale_down = command("_scale-down", "(internal) stop the old colour after a delay", hidden=True)
    scale_down.add_argument("--after", type=float, required=True)
    return parser


def _package_version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None, *, subscribers: Sequence[Subscriber] = ()) -> int:
    """`subscribers` hear the run's events after the CI adapter's output, which is always the first."""
    args = build_parser().parse_args(argv)
    from .ci import detect

    try:
        return run(args, detect(), subscribers=subscribers)
    except BrokenPipeError:  # `bluegreen status | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0


def run(args: argparse.Namespace, adapter: Adapter, *, subscribers: Sequence[Subscriber] = ()) -> int:
    """Run one parsed command, presented by a CI adapter (plain terminal, GitHub, GitLab)."""
    from .cancel import CANCEL, Cancelled
    from .errors import BluegreenError, one_line

    with CANCEL.handling():  # SIGINT/SIGTERM/SIGHUP -> Cancelled, handled phase by phase in the pipeline
        try:
            return _run(args, adapter, subscribers)
        except Cancelled as stop:  # before a pipeline began, or in a read-only command: nothing changed
            print(f"bluegreen: {stop}; nothing changed", file=sys.stderr)
            return 1
        except BluegreenError as exc:
            print(f"bluegreen: error: {one_line(str(exc))}", file=sys.stderr)
            _write_error_report(args, adapter, exc)
            return exc.exit_code


def _run(args: argparse.Namespace, adapter: Adapter, subscribers: Sequence[Subscriber]) -> int:
    from .errors import ExitCode, one_line

    if args.command == "schema":
        return _schema()
    check_version("--version", getattr(args, "release_version", None))
    check_version("--expect-version", getattr(args, "expect_version", None))
    settings = _settings(args)
    from .targets import check_installed, make_target

    check_installed(settings)  # `validate` says it too: the config is fine, the installation cannot run it
    if args.command == "validate":
        target = settings.target
        print(one_line(f"{settings.source}: ok (app {settings.app}, environment {settings.environment}, "
                       f"target {target.kind})"), file=sys.stderr)
        return ExitCode.OK
    from .config import secret_values
    from .events import Events
    from .pipeline import Pipeline, RunInfo

    target = make_target(settings)
    try:
        command = adapter.rollback_command(args) or default_rollback_command(args)
        run_info = RunInfo(rollback_command=command, run_url=adapter.run_url, actor=adapter.actor)
        secrets = secret_values(settings)
        adapter.protect(secrets)
        report = _report_writer(args, adapter, secrets)
        events = Events(adapter.output, *adapter.subscribers(), *subscribers)
        if settings.notifications:  # told in `finished`, before the report is written: their deliveries reach it
            from .notify import Notifier
            from .redaction import Redactor

            events.subscribe(Notifier(settings.notifications, events.warning, Redactor(secrets)))
        pipeline = Pipeline(settings, target, events, run_info, checkpoint=report)
        if args.command == "status":
            return _status(pipeline, args.json)
        if args.command == "down":
            stopped = target.stop_all(purge=args.purge)
            print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running", file=sys.stderr)
            return ExitCode.OK
        if args.command == "_scale-down":
            return _scale_down(target, args)
        return _change(pipeline, args, adapter)
    finally:
        target.close()


def _report_writer(args: argparse.Namespace, adapter: Adapter, secrets: list[str] | None = None):  # type: ignore[no-untyped-def]
    """Writes the JSON report atomically, secrets redacted; None for commands that keep no report."""
    from pathlib import Path

    from .report import Result, write_atomic

    path = getattr(args, "report", None)
    if not path or getattr(args, "dry_run", False):
        return None

    def write(result: Result) -> None:
        try:
            write_atomic(Path(path), adapter.redact(result.redacted(secrets or []).to_json()) + "\n")
        except OSError as exc:  # the report is a record: never a reason to stop a run half-way
            print(f"bluegreen: warning: cannot write the report {path}: {exc.strerror}", file=sys.stderr)

    return write


def _write_error_report(args: argparse.Namespace, adapter: Adapter, exc: Exception) -> None:
    """A run that stopped before its pipeline began (a broken config, an unreachable target) still
    replaces the report, so CI never uploads the previous run's as this one's."""
    from .errors import ConfigError
    from .report import Result

    write = _report_writer(args, adapter) if args.command in ("deploy", "promote", "rollback", "contract", "abort") else None
    if write is None:
        return
    status = "invalid" if isinstance(exc, ConfigError) else "failed"
    write(Result(command=args.command, status=status, app="", environment=args.environment or "", reason=str(exc)))


# A version becomes an image tag, a label, a manifest value, an argv element (of the app, of a test suite's
# shell) and a line in logs and CI outputs: letters, digits and . _ - + : @ (a tag, a semver with build
# metadata, a sha256:digest) are safe in all of them; anything else (spaces, quotes, $, ;, /, newlines) is
# refused rather than escaped everywhere. The first character is never '-' or '.' (an option, '..').
VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+:@-]{0,127}")


def check_version(flag: str, value: str | None) -> None:
    from .errors import ConfigError

    if value is not None and not VERSION.fullmatch(value):
        shown = repr(value) if len(value) <= 60 else repr(value[:60]) + f"... ({len(value)} characters)"
        raise ConfigError(
            f"{flag} {shown} is not a version: use 1 to 128 letters, digits and . _ - + : @, "
            "starting with a letter, a digit or _"
        )


def default_rollback_command(args: argparse.Namespace) -> str:
    argv = ["bluegreen", "rollback"]
    if args.config:
        argv += ["-c", args.config]
    if args.environment:
        argv += ["-e", args.environment]
    return shlex.join(argv)


def _settings(args: argparse.Namespace) -> Settings:
    from .config import DEFAULT_CONFIG, load_config

    settings = load_config(args.config or DEFAULT_CONFIG, args.environment)
    if getattr(args, "no_auto_rollback", False):
        settings.auto_rollback = False
    return settings


def _change(pipeline: Pipeline, args: argparse.Namespace, adapter: Adapter) -> int:
    from .cancel import CANCEL

    if getattr(args, "force_unlock", False):
        removed = pipeline.target.state.force_unlock()
        if removed:
            pipeline.events.warning(f"--force-unlock removed the lock held by {removed.holder}")
    if args.command == "deploy":
        result = pipeline.deploy(args.release_version, switch=not args.no_switch, dry_run=args.dry_run)
    elif args.command == "promote":
        result = pipeline.promote(expect_version=args.expect_version, full=args.full)
    elif args.command == "abort":
        result = pipeline.abort()
    elif args.command == "contract":
        result = pipeline.contract(retire_previous=args.retire_previous)
    else:
        result = pipeline.rollback(force=args.force, expect_version=args.expect_version)
    CANCEL.hold()  # the outcome is decided: what is left is telling it
    from .config import secret_values

    # A reason or detail may quote a secret (an app echoing a header, an internal error): never in an artifact.
    result = result.redacted(secret_values(pipeline.settings))
    pipeline.events.finished(result)
    pipeline.checkpoint(result)
    adapter.publish(result, args)
    if args.json:
        print(result.to_json())
    return result.exit_code


def _status(pipeline: Pipeline, as_json: bool) -> int:
    status = pipeline.status()
    if as_json:
        from pydantic import TypeAdapter

        from .pipeline import Status

        print(TypeAdapter(Status).dump_json(status, indent=2).decode())
        return 0
    live = next((c for c in status.colours if c.colour == status.live), None)
    head = f"live: {status.live} (version {live.version})" if live else "live: nothing yet"
    lines = [f"{status.app}/{status.environment}  {head}  {status.live_url}"]
    for c in status.colours:
        role = "live" if c.colour == status.live else "idle"
        health = "ready" if c.ready else ("running" if c.running else "stopped")
        lines.append(f"  {c.colour:<6} {role:<5} version {c.version or '-':<16} {health:<8} {c.detail}")
    if router := status.router:  # read from the router itself: down or garbled shows here
        if router.weights:
            held = " / ".join(f"{c} {w}%" for c, w in router.weights.items())
        else:
            # the message names the router itself: said once
            held = router.unreadable.removeprefix(f"router {router.name}: ").removeprefix("router: ") or "nothing live yet"
        lines.append(f"  router: {router.name}: " + (held if router.serving else f"NOT SERVING: {router.detail}; it holds {held}"))
    lock = status.lock
    if lock is None:
        lines.append("  lock: free")
    elif lock.holder_gone():
        lines.append(
            f"  lock: left by {lock.holder}, interrupted during {lock.where()} "
            f"({'its lock expired' if lock.expired() else 'its process is gone'}); the next run takes it over"
        )
    else:
        lines.append(f"  lock: held by {lock.holder} ({lock.where()}) since {lock.acquired_at:%Y-%m-%d %H:%M:%S} UTC")
    if status.schema is not None:
        lines += _schema_lines(status.schema)
    if status.history:
        lines.append("  recent releases:")
        for r in status.history[:5]:
            lines.append(
                f"    {r.at:%Y-%m-%d %H:%M:%S}  {r.action:<8} {r.version or '-':<12} -> {r.colour or '-':<5} "
                f"{r.outcome}" + (f"  {r.run_url}" if r.run_url else "") + (f"\n      {r.detail}" if r.detail else "")
            )
    print("\n".join(lines))
    return 0


def _schema_lines(schema) -> list[str]:  # type: ignore[no-untyped-def]
    """The schema state: a pending contract (which release, since when), the last expand and contract."""
    pending, expand, contract = schema.pending_contract, schema.last_expand, schema.last_contract
    return [
        f"  schema: contract pending for release {pending.version} (expanded {pending.at:%Y-%m-%d %H:%M:%S} UTC, "
        f"run {pending.id})" if pending else "  schema: no contract pending",
        f"    last expand:   {expand.version} at {expand.at:%Y-%m-%d %H:%M:%S} UTC" if expand else "    last expand:   -",
        f"    last contract: {contract.version} at {contract.at:%Y-%m-%d %H:%M:%S} UTC" if contract
        else "    last contract: -",
    ]


def _schema() -> int:
    import json

    from .config import json_schema

    print(json.dumps(json_schema(), indent=2))
    return 0


def _scale_down(target: Target, args: argparse.Namespace) -> int:
    import time

    time.sleep(args.after)
    outcome = target.scale_downs.apply_when_free(f"scale-down of pid {os.getpid()}", target.settings.timeouts.lock)
    print(outcome, file=sys.stderr)
    return 0
