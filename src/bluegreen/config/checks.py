"""The checks of a release: the test suite, smoke checks, verification through the live URL, metric analysis."""

from __future__ import annotations

import functools
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from jsonpath_ng.exceptions import JSONPathError
from jsonpath_ng.ext import parse as parse_json_path
from pydantic import AfterValidator, Field, SecretStr, ValidationInfo, WithJsonSchema, field_validator, model_validator

from .base import Duration, HttpUrl, Model
from .secrets import CREDENTIAL, HEADER_VALUES


class Expect(Model):
    """What a response must look like. Strings may use `{version}` and `{colour}`."""

    status: int | list[int] = Field(200, description="Expected status code, or a list of accepted codes.")
    body_contains: str | None = Field(None, description="The body must contain this text.")
    body_regex: str | None = Field(None, description="The body must match this regular expression (search).")
    json_fields: dict[str, Any] = Field(
        default_factory=dict,
        alias="json",
        description="Dotted paths into a JSON body and the value each must have, e.g. {'version': '{version}'}.",
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="Response headers that must contain these values (names are case-insensitive)."
    )
    max_latency: Duration | None = Field(None, description="Slowest acceptable response time.")

    @field_validator("body_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


def _sendable(headers: dict[str, str]) -> dict[str, str]:
    # Checked here, not left to the HTTP client: its error quotes the value, and header values are secrets
    # (a token read from a CI variable often ends in a newline). The message never shows the value.
    for name, value in headers.items():
        if not (value.isascii() and value.isprintable() and value == value.strip()):
            raise ValueError(
                f"the value of header {name!r} must be printable ASCII without leading or trailing spaces or "
                "line breaks (the value is not shown: header values are secrets)"
            )
    return headers


# Request headers (a check's, a hook's, a channel's): every value but content negotiation's is a secret, typically
# '${TOKEN}' from the environment, and refused at load when it could not be sent.
RequestHeaders = Annotated[dict[str, str], HEADER_VALUES, AfterValidator(_sendable)]


class SmokeCheck(Model):
    name: str = Field(description="Shown in logs and reports.")
    path: str = Field("/", description="Request path, appended to the preview or live URL.")
    method: str = Field("GET", pattern=r"^[A-Z]+$")
    headers: RequestHeaders = Field(
        default_factory=dict, description="Request headers. Their values never appear in logs or reports."
    )
    body: str | None = Field(None, description="Request body.")
    expect: Expect = Field(default_factory=Expect)


class SmokeSettings(Model):
    checks: list[SmokeCheck] = Field(default_factory=list, description="Run concurrently against the idle colour.")
    timeout: Duration = Field(60, description="Deadline for all checks to pass, retries included.")
    interval: Duration = Field(0.5, description="First delay between retries; doubles up to 5 s.")
    consecutive_successes: int = Field(2, ge=1, description="A check passes after this many successes in a row.")
    failure_limit: int | None = Field(
        5, ge=1, description="A check that fails the same way this many times in a row fails at once, without waiting "
        "out `timeout` (a steady failure does not heal); null: retry until the timeout."
    )
    request_timeout: Duration = Field(5, description="Timeout of one request.")


def _default_version_check() -> SmokeCheck:
    return SmokeCheck(name="version", path="/version", expect=Expect(body_contains="{version}"))


class VerifySettings(Model):
    """After the switch, through the live URL: the new version must answer, and keep passing."""

    version_check: SmokeCheck | None = Field(
        default_factory=_default_version_check,
        description="Proves the new version answers through the live URL; null skips it.",
    )
    consecutive_successes: int = Field(3, ge=1, description="The version check must pass this many times in a row.")
    failure_limit: int = Field(
        3, ge=1, description="Switch back after this many failed version checks (live users see the failures)."
    )
    window: Duration = Field(5, description="How long the smoke checks must keep passing through the live URL.")
    url: HttpUrl | None = Field(
        None, description="Where to verify, if not where users go (the environment's `url`, else the router's "
        "address): e.g. the router itself, bypassing a CDN."
    )
    interval: Duration = Field(0.25, description="Delay between verification rounds.")
    timeout: Duration = Field(30, description="Deadline for the version check to pass.")


class PrometheusSource(Model):
    """Where analysis queries go: Prometheus's HTTP API (or anything that speaks it: Thanos, Mimir...)."""

    url: str = Field(description="e.g. http://prometheus:9090; /api/v1/query is appended.")
    bearer_token: Annotated[SecretStr | None, CREDENTIAL] = Field(
        None, description="e.g. '${PROMETHEUS_TOKEN}'; never logged."
    )
    basic_auth: Annotated[SecretStr | None, CREDENTIAL] = Field(
        None, description="user:password, e.g. '${PROMETHEUS_AUTH}'; never logged."
    )
    timeout: Duration = Field(5, description="Timeout of one query.")


def _endpoint(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("expected an http:// or https:// URL with a host")  # not quoted: it may hold a key
    return value


# An endpoint a web query asks, as written (a trailing slash or a query string may matter to it).
Endpoint = Annotated[str, AfterValidator(_endpoint), WithJsonSchema({"type": "string", "pattern": "^https?://"})]


class WebSource(Model):
    """Where `json_path` queries go: any HTTP endpoint that answers JSON (Datadog, New Relic, your own service),
    as Argo Rollouts' web metric provider."""

    url: Endpoint | None = Field(
        None, description="The endpoint; a query's own `url` replaces it. {colour}, {version}, {app}, {environment}, "
        "{now} and {start} (Unix seconds: now, and when the analysis began) are filled in."
    )
    method: Literal["GET", "POST"] = "GET"
    headers: RequestHeaders = Field(
        default_factory=dict, description="Request headers, e.g. {DD-API-KEY: '${DD_API_KEY}'}. Their values never "
        "appear in logs or reports."
    )
    body: dict[str, Any] | list[Any] | None = Field(
        None, description="With POST: a JSON body (a mapping or a list); placeholders are filled in its strings."
    )
    timeout: Duration = Field(10, description="Timeout of one request.")

    @model_validator(mode="after")
    def _body_with_post(self) -> "WebSource":
        if self.body is not None and self.method != "POST":
            raise ValueError("a body is sent with method: POST only")
        return self


@functools.lru_cache(maxsize=256)
def json_path(text: str) -> Any:
    """The compiled JSON path (jsonpath-ng's extended syntax: filters too); Argo's `{$.a.b}` is read as `$.a.b`."""
    text = text.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    return parse_json_path(text)


class AnalysisQuery(Model):
    """One query and the bounds its value must stay within: PromQL (`query`, to `analysis.prometheus`) or a JSON
    path into what `analysis.web` answers (`json_path`)."""

    name: str = Field(min_length=1)
    query: str | None = Field(
        None, min_length=1, description="PromQL; {colour}, {version}, {app}, {environment} are filled in. Every "
        "series of the result must be within the bounds. Needs `analysis.prometheus`."
    )
    json_path: str | None = Field(
        None, min_length=1, description="A JSONPath into the web endpoint's answer, e.g. $.series[0].pointlist[-1][1] "
        "(filters too: $.data[?(@.name == 'errors')].value). The value there is a number, a numeric string, a bool "
        "(true: 1) or a list of them (each within the bounds); no match is no data. Needs `analysis.web`."
    )
    url: Endpoint | None = Field(
        None, description="With json_path: this query's own URL, in place of analysis.web.url (same placeholders)."
    )
    min: float | None = Field(None, description="The value must be at least this.")
    max: float | None = Field(None, description="The value must be at most this.")
    for_: Duration = Field(
        0, alias="for", description="Out of bounds this long (as Prometheus alerts' `for`) before it counts as a "
        "failure; 0: each evaluation out of bounds counts."
    )
    no_data: Literal["ignore", "fail"] = Field(
        "ignore", description="An empty result (no traffic yet, a new label): ignore (shown, not counted) or fail."
    )

    @field_validator("json_path")
    @classmethod
    def _parses(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                json_path(value)
            except JSONPathError as exc:
                raise ValueError(f"not a valid JSON path: {' '.join(str(exc).split())}") from None
        return value

    @model_validator(mode="after")
    def _bounded(self) -> "AnalysisQuery":
        if (self.query is None) == (self.json_path is None):
            raise ValueError("give either query (PromQL, to analysis.prometheus) or json_path (to analysis.web)")
        if self.url is not None and self.json_path is None:
            raise ValueError("url is for json_path queries (a PromQL query goes to analysis.prometheus)")
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both: a query without bounds cannot fail")
        return self


class AnalysisSettings(Model):
    """Metric analysis: queries evaluated every `interval`; `failure_limit` failures switch back. Blue-green runs
    it in `verify`, after the switch (as Argo Rollouts' postPromotionAnalysis). Each query goes to its source:
    PromQL to `prometheus`, a JSON path to `web`; one analysis may mix them."""

    prometheus: PrometheusSource | None = Field(None, description="The source of PromQL queries (`query`).")
    web: WebSource | None = Field(None, description="The source of JSON-path queries (`json_path`).")
    queries: list[AnalysisQuery] = Field(min_length=1)
    interval: Duration = Field(10, description="Delay between evaluations of every query.")
    duration: Duration = Field(
        60, description="Blue-green: how long `verify` analyses after the switch (the old colour keeps running)."
    )
    failure_limit: int = Field(1, ge=1, description="Failed evaluations (over all queries) that switch back.")

    @field_validator("queries")
    @classmethod
    def _have_sources(cls, queries: list[AnalysisQuery], info: ValidationInfo) -> list[AnalysisQuery]:
        # A source that failed its own validation is missing from info.data: its own error says why.
        if "prometheus" not in info.data or "web" not in info.data:
            return queries
        prometheus, web = info.data["prometheus"], info.data["web"]
        if prometheus is None and web is None:
            raise ValueError("no source: configure analysis.prometheus (for query) or analysis.web (for json_path)")
        for q in queries:
            if q.query is not None and prometheus is None:
                raise ValueError(f"query {q.name!r} is PromQL (query), which needs analysis.prometheus: not configured")
            if q.json_path is not None and web is None:
                raise ValueError(f"query {q.name!r} has a json_path, which needs analysis.web: not configured")
            if q.json_path is not None and q.url is None and web is not None and web.url is None:
                raise ValueError(f"query {q.name!r} has no URL: give analysis.web.url or the query's own url")
        return queries


class TestSuite(Model):
    __test__ = False  # not a pytest test class, despite the name
    command: list[str] | str = Field(
        description="argv list; a single string is run by /bin/sh -c and needs `shell: true`. With `image`, the "
        "container's command (its entrypoint's arguments)."
    )
    image: str | None = Field(
        None, description="Run the suite as a container of this image ({version} filled in) on the Docker engine "
        "($DOCKER_HOST, else /var/run/docker.sock), the working directory mounted at the same path.",
    )
    pull: Literal["missing", "always", "never"] = Field("missing", description="With `image`: when to pull it.")
    docker_host: str | None = Field(
        None, description="With `image`: unix:///path/docker.sock or tcp://host:port; default $DOCKER_HOST."
    )
    shell: bool = False
    timeout: Duration = 600
    env: dict[str, str] = Field(default_factory=dict)
    working_directory: str | None = Field(None, description="Relative to the config file; default its folder.")
    junit: str | None = Field(None, description="A JUnit XML file the suite writes; its results join the report.")

    @model_validator(mode="after")
    def _shell_string(self) -> TestSuite:
        if isinstance(self.command, str) and not self.shell:
            raise ValueError("a string command runs through /bin/sh only with `shell: true`; or give an argv list")
        if isinstance(self.command, list) and not self.command:
            raise ValueError("command must not be empty")
        return self
