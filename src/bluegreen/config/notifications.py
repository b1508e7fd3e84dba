"""Telling people how a run ended: a list of channels, each a Slack or Teams (Workflows) incoming webhook or a generic
webhook receiving a signed CloudEvent. The URL and the signing secret come from the environment (`${VAR}`) and are
secrets: redacted everywhere, never in a delivery's detail. What each outcome means: payload.outcome_of."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import Field, SecretStr, model_validator

from .base import Duration, HttpUrl, Model
from .checks import RequestHeaders
from .secrets import SECRET, SECRET_URL

# The outcomes a run can be told as (payload.outcome_of says which; payload.OUTCOMES is this list).
Outcome = Literal["succeeded", "failed", "rolled_back", "switched_back", "cancelled", "paused"]
ALL_OUTCOMES: list[Any] = list(Outcome.__args__)  # type: ignore[attr-defined]


class Channel(Model):
    """What every channel has: where (a secret URL), on which outcomes, and how long delivery may take."""

    message: ClassVar[str]  # "module:function" in bluegreen.notify building this channel's request (config/routers'
    # `implementation`, for messages): the format is named here, so no code branches on the kind.

    name: str | None = Field(None, description="Shown in the report and warnings; default the kind.")
    url: Annotated[HttpUrl, SECRET_URL] = Field(
        description="The webhook URL, from the environment: url: ${SLACK_WEBHOOK_URL}. A secret: never shown."
    )
    on: list[Outcome] = Field(
        default_factory=lambda: list(ALL_OUTCOMES), min_length=1,
        description="The outcomes this channel is told: succeeded, failed, rolled_back, switched_back, cancelled, "
        "paused. Default all.",
    )
    timeout: Duration = Field(5, gt=0, description="Deadline of one attempt (connect and answer).")
    total_timeout: Duration = Field(
        20, gt=0, description="Deadline of the delivery, retries included: never waited past. Channels are told at "
        "once, so N channels cost one total_timeout.",
    )

    @model_validator(mode="before")
    @classmethod
    def _on_key(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare `on:` key as the boolean true (GitHub workflows have the same quirk).
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if key is True else key): value for key, value in data.items()}
        return data

    @model_validator(mode="after")
    def _bounds(self) -> Channel:
        if self.timeout > self.total_timeout:
            raise ValueError(f"timeout ({self.timeout:g}s) must not exceed total_timeout ({self.total_timeout:g}s)")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind  # type: ignore[attr-defined, no-any-return]


class SlackChannel(Channel):
    """A Slack incoming webhook: a Block Kit message with a plain-text fallback."""

    message: ClassVar[str] = "bluegreen.notify.slack:message"
    kind: Literal["slack"]


class TeamsChannel(Channel):
    """A Microsoft Teams Workflows webhook ("Post to a channel when a webhook request is received"): an Adaptive Card."""

    message: ClassVar[str] = "bluegreen.notify.teams:message"
    kind: Literal["teams"]


class WebhookChannel(Channel):
    """Any HTTP endpoint: a CloudEvents 1.0 JSON event (structured mode) whose data is the run's payload, signed with
    HMAC-SHA256 over the exact body when `secret` is set (header X-Bluegreen-Signature-256: sha256=<hex>)."""

    message: ClassVar[str] = "bluegreen.notify.cloudevent:message"
    kind: Literal["webhook"]
    secret: Annotated[SecretStr | None, SECRET] = Field(
        None, description="The HMAC-SHA256 signing key, from the environment: secret: ${WEBHOOK_SECRET}."
    )
    headers: RequestHeaders = Field(
        default_factory=dict, description="More request headers, e.g. Authorization: 'Bearer ${TOKEN}'. Their values "
        "never appear in logs or reports."
    )


NotificationChannel = Annotated[Union[SlackChannel, TeamsChannel, WebhookChannel], Field(discriminator="kind")]
