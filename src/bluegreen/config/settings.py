"""The file (Config: an app, its environments and their defaults) and the merged view one run works with (Settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, field_validator

from ..errors import ConfigError
from .base import ENVIRONMENT_NAME, Duration, HttpUrl, Model
from .canary import CanarySettings
from .checks import AnalysisSettings, SmokeSettings, TestSuite, VerifySettings
from .database import Migrations
from .hooks import Hooks
from .notifications import NotificationChannel
from .targets import TargetConfig


class Timeouts(Model):
    ready: Duration = Field(120, description="Deadline for the idle colour to become ready.")
    switch: Duration = Field(30, description="Deadline for the router to send new requests to the new colour.")
    lock: Duration = Field(
        120,
        description="A running deploy renews its lock every quarter of this; a lock not renewed for this long (its run "
        "was killed) expires and the next run takes it over. On the machine that holds it, a killed run's lock is "
        "taken over at once.",
    )


class Overridable(Model):
    """Settings an environment may override."""

    test_suite: TestSuite | None = None
    smoke: SmokeSettings | None = None
    verify: VerifySettings | None = None
    analysis: AnalysisSettings | None = None
    timeouts: Timeouts | None = None
    auto_rollback: bool | None = Field(None, description="Switch back by itself when verification fails.")
    scale_down_delay: Duration | Literal["never"] | None = Field(
        None, description="Seconds the old colour keeps running after a switch; 'never' keeps it."
    )
    history_limit: int | None = Field(None, ge=1)
    migrations: Migrations | None = Field(None, description="Database changes in two halves: expand, then contract.")
    strategy: Literal["blue-green", "canary"] | None = Field(
        None, description="blue-green (default): one switch. canary: the steps of `canary`, gated at each step."
    )
    canary: CanarySettings | None = None
    hooks: Hooks | None = Field(None, description="The team's own steps at the points of a release (a gate before the switch).")
    notifications: list[NotificationChannel] | None = Field(
        None, description="Channels told how a run ended (Slack, Teams, a signed CloudEvent webhook); an environment's "
        "list replaces the top level's."
    )


class Environment(Overridable):
    target: TargetConfig
    url: HttpUrl | None = Field(
        None, description="The public URL users reach (a CDN, a DNS name, a load balancer in front of the router); "
        "verification and the canary gates go through it. Default: the router's address."
    )


class Config(Overridable):
    app: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,40}[a-z0-9])?$", description="Lower-case name, DNS-label style.")
    environments: dict[str, Environment] = Field(
        min_length=1, json_schema_extra={"propertyNames": {"pattern": "^" + ENVIRONMENT_NAME.pattern + "$"}}
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "bluegreen.yml"},
    )

    @field_validator("environments")
    @classmethod
    def _environment_names(cls, value: dict[str, Environment]) -> dict[str, Environment]:
        # A name goes into paths ({environment} in state_dir), container names and CI outputs.
        for name in value:
            if not ENVIRONMENT_NAME.fullmatch(name):
                raise ValueError(
                    f"environment name {name[:40]!r} must be 1 to 63 letters, digits, '.', '_' or '-', "
                    "starting with a letter or a digit"
                )
        return value

    def settings_for(self, environment: str | None, source: Path) -> Settings:
        if environment is None:
            if len(self.environments) > 1:
                names = ", ".join(self.environments)
                raise ConfigError(f"{source}: several environments ({names}); choose one with -e")
            environment = next(iter(self.environments))
        if environment not in self.environments:
            names = ", ".join(self.environments)
            raise ConfigError(f"{source}: no environment {environment!r} (have: {names})")
        env = self.environments[environment]
        merged = {
            name: getattr(env, name) if getattr(env, name) is not None else getattr(self, name)
            for name in Overridable.model_fields
        }
        return Settings(
            app=self.app,
            environment=environment,
            source=source,
            target=env.target,
            url=env.url,
            **{k: v for k, v in merged.items() if v is not None},
        )


class Settings(Overridable):
    """Everything one run needs: the merged view of one environment (`Config.settings_for`).

    Overridable's fields are inherited, not repeated. Those a run can do without (test_suite, analysis,
    migrations, canary) stay None when neither the environment nor the top level sets them; the others are
    narrowed below to the value a run gets then. That value cannot be Overridable's default: there None means
    "not set here" (an environment's None takes the top level's value), and the schema shows that default.
    """

    app: str
    environment: str
    source: Path
    target: TargetConfig  # the environment's model: its kind says which, no attribute needs guessing
    url: str | None = None
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    auto_rollback: bool = True
    scale_down_delay: float | Literal["never"] = 30.0
    history_limit: int = 50
    strategy: Literal["blue-green", "canary"] = "blue-green"
    notifications: list[NotificationChannel] = Field(default_factory=list)

    @property
    def base_dir(self) -> Path:
        return self.source.resolve().parent

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(value.replace("{environment}", self.environment))
        return path if path.is_absolute() else self.base_dir / path
