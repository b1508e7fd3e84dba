"""The values of a loaded config that must never be shown (redaction.py says how they are hidden)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import Settings


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
