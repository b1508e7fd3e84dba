"""Errors that end a run, each carrying the documented exit code.

The CLI turns any of these into one line on stderr and the exit code; nothing
here should ever surface as a traceback.
"""

from __future__ import annotations

import unicodedata
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED_BEFORE_SWITCH = 1  # live traffic untouched
    USAGE = 2  # invalid usage or config
    LOCKED = 3  # the deploy lock is held by another run
    ROLLED_BACK = 4  # failed after the switch, switched back automatically
    ROLLBACK_FAILED = 5  # failed after the switch and the switch back failed: a human must act


class BluegreenError(Exception):
    """Base class: a one-line, user-facing reason and an exit code."""

    exit_code: ExitCode = ExitCode.FAILED_BEFORE_SWITCH


class ConfigError(BluegreenError):
    """The config file or a command-line value is wrong; names file, line and field."""

    exit_code = ExitCode.USAGE


class LockHeldError(BluegreenError):
    exit_code = ExitCode.LOCKED


class TargetError(BluegreenError):
    """The target (processes, containers, cluster, router) refused or failed an operation."""


class NotReadyError(TargetError):
    """A colour did not become ready before its deadline."""


class CheckFailed(BluegreenError):
    """A smoke check, the test suite or the post-switch verification failed."""


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters escaped (`\\n`, `\\x1b`): a message that quotes
    user input (a YAML key, a version) stays one line and cannot move the cursor or open a CI log section."""
    return "".join(
        ch.encode("unicode_escape").decode() if ch != "\t" and unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch
        for ch in text
    )
