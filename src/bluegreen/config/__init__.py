"""The models of bluegreen.yml, and loading them with errors that name file, line and field.

A file holds an app and one or more environments. Settings at the top level
(test suite, smoke checks, verification, timeouts...) are defaults that an
environment may override key by key; `Config.settings_for(name)` merges them
into the `Settings` one run works with.

Strings may use `${VAR}` / `${VAR:-default}` (expanded at load time, for the
selected environment only) and the run-time placeholders `{colour}`,
`{version}`, `{port}` (expanded by `render`).

One module per area: base (colours, the strict base model, value types), checks, canary, database (migrations),
routers, targets, settings (the file and the merged view), secrets (which values are secret) and loader. Every
name is re-exported here: the rest of bluegreen imports from `bluegreen.config`, never from a module of it.
"""

from __future__ import annotations

from ..errors import ConfigError
from .base import (
    COLOURS,
    DEFAULT_CONFIG,
    ENVIRONMENT_NAME,
    SCHEMA_URL,
    Colour,
    Duration,
    HttpUrl,
    Model,
    other_colour,
    parse_duration,
    render,
    shorten,
    shown_url,
)
from .canary import UNTIL_PROMOTED, CanarySettings, CanaryStep
from .checks import (
    AnalysisQuery,
    AnalysisSettings,
    Expect,
    PrometheusSource,
    RequestHeaders,
    SmokeCheck,
    SmokeSettings,
    TestSuite,
    VerifySettings,
    WebSource,
    json_path,
)
from .database import DANGEROUS_SQL_RULES, MigrationLint, Migrations, MigrationStep
from .hooks import Hook, Hooks, HttpCall
from .notifications import NotificationChannel, SlackChannel, TeamsChannel, WebhookChannel
from .loader import MAX_DEPTH, MAX_LINE, MAX_SHOWN, MAX_VALUES, ConfigErrors, json_schema, load_config
from .routers import (
    HAPROXY_NAME,
    ROUTER_KINDS,
    WEIGHTED_ROUTERS,
    AllRouters,
    CaddyRouter,
    ColourNames,
    DockerCaddyRouter,
    DockerRouterConfig,
    EnvoyRouter,
    HAProxyRouter,
    KubernetesRouteRouter,
    KubernetesRouterConfig,
    KubernetesServiceRouter,
    NginxRouter,
    OtherRouters,
    ProxyRouter,
    RouterModel,
    RouterConfig,
    TraefikRouter,
)
from .secrets import PLAIN_HEADERS, Secret, secret_values
from .settings import Config, Environment, Overridable, Settings, Timeouts
from .targets import (
    ColourPorts,
    CommandRun,
    DockerRun,
    DockerTarget,
    KubernetesTarget,
    LocalTarget,
    ServersTarget,
    SSHSettings,
    TargetConfig,
)

# The name before the secret fields were declared on the models; kept for code written against it.
secret_header_values = secret_values

__all__ = [
    "COLOURS", "DANGEROUS_SQL_RULES", "DEFAULT_CONFIG", "ENVIRONMENT_NAME", "HAPROXY_NAME", "MAX_DEPTH", "MAX_LINE",
    "MAX_SHOWN", "MAX_VALUES", "PLAIN_HEADERS", "ROUTER_KINDS", "SCHEMA_URL", "UNTIL_PROMOTED", "WEIGHTED_ROUTERS",
    "AllRouters", "AnalysisQuery", "AnalysisSettings", "CaddyRouter", "CanarySettings", "CanaryStep", "Colour", "ColourNames",
    "ColourPorts", "CommandRun", "Config", "ConfigError", "ConfigErrors", "DockerCaddyRouter", "DockerRouterConfig", "DockerRun",
    "DockerTarget", "Duration", "EnvoyRouter", "Environment", "Expect", "HAProxyRouter", "Hook", "Hooks", "HttpCall", "HttpUrl",
    "KubernetesRouteRouter", "KubernetesRouterConfig", "KubernetesServiceRouter", "KubernetesTarget", "LocalTarget", "MigrationLint",
    "MigrationStep", "Migrations", "Model", "NginxRouter", "NotificationChannel", "OtherRouters", "Overridable",
    "PrometheusSource", "RequestHeaders", "SlackChannel", "TeamsChannel", "WebSource", "WebhookChannel", "json_path",
    "ProxyRouter", "RouterConfig", "RouterModel", "SSHSettings", "Secret", "ServersTarget", "Settings", "SmokeCheck",
    "SmokeSettings", "TargetConfig", "TestSuite", "Timeouts", "TraefikRouter", "VerifySettings", "json_schema",
    "load_config", "other_colour", "parse_duration", "render", "secret_header_values", "secret_values", "shorten", "shown_url",
]
