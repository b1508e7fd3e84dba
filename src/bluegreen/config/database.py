"""migrations: the database's expand / contract, and the linting of the expand's SQL."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .base import Duration, Model
from .secrets import ENVIRONMENT_VALUES


class MigrationStep(Model):
    """One half of a schema change: your migration tool's command (alembic, Flyway, sqitch, psql -f...)."""

    command: list[str] | str = Field(
        description="argv list ({version}, {colour}, {python} filled in); a single string is run by /bin/sh -c "
        "and needs `shell: true`."
    )
    shell: bool = False

    @model_validator(mode="after")
    def _shell_string(self) -> MigrationStep:
        if isinstance(self.command, str) and not self.shell:
            raise ValueError("a string command runs through /bin/sh only with `shell: true`; or give an argv list")
        if isinstance(self.command, list) and not self.command:
            raise ValueError("command must not be empty")
        return self


# squawk's rules for what breaks the live version, or blocks its queries, during an expand.
DANGEROUS_SQL_RULES = [
    "ban-drop-column", "ban-drop-table", "renaming-column", "renaming-table", "changing-column-type",
    "adding-required-field", "adding-not-nullable-field", "require-concurrent-index-creation",
    "adding-foreign-key-constraint", "disallowed-unique-constraint", "syntax-error",
]


class MigrationLint(Model):
    """SQL files checked with squawk (PyPI squawk-cli) before anything runs."""

    expand: list[str] = Field(
        description="The expand's SQL files (globs, relative to the config file; {version} filled in). A "
        "finding of a rule in `rules` stops the run before anything changes, naming file, line and rule."
    )
    rules: list[str] = Field(
        default_factory=lambda: list(DANGEROUS_SQL_RULES),
        description="The squawk rules that stop the run; other findings are warnings.",
    )
    squawk: str = Field("squawk", description="The squawk executable; default the one beside Python, else on PATH.")
    pg_version: str | None = Field(None, description="Your PostgreSQL version for squawk, e.g. '15'.")


class Migrations(Model):
    """Expand / contract: the expand runs inside `deploy` (after the lock, before the idle colour is deployed),
    the contract a release later (`bluegreen contract`, or at the start of the next deploy)."""

    expand: MigrationStep | None = Field(None, description="Backwards-compatible change (add a column, backfill).")
    contract: MigrationStep | None = Field(None, description="Removes what only older versions needed.")
    lint: MigrationLint | None = Field(None, description="Check the expand's SQL with squawk first.")
    run_contract: Literal["manual", "on_next_release"] = Field(
        "manual", description="manual: only `bluegreen contract` runs it. on_next_release: the next deploy runs the "
        "pending contract first (stopping the previous colour) when the release it completes is live and verified."
    )
    timeout: Duration = Field(600, description="Deadline of one migration command.")
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment. The database URL is not set here: it is passed "
        "through from bluegreen's own environment (a CI secret)."
    )
    secret_env: Annotated[list[str], ENVIRONMENT_VALUES] = Field(
        default_factory=lambda: ["DATABASE_URL"], description="Environment variables whose values (and a URL's "
        "password) are replaced by *** in the commands' output, logs and reports."
    )
    working_directory: str | None = Field(None, description="Relative to the config file; default its folder.")
