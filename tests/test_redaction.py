"""Secrets are declared on the config models (the `Secret` marker) and collected by one walk (`secret_values`):
whatever a field marked secret holds is hidden in reports and log lines, and a field that looks like a secret
cannot be added unmarked."""

from __future__ import annotations

import json
import re
import textwrap
import typing
from typing import Annotated, Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from bluegreen.action import mask_config
from bluegreen.ci.github import Secrets
from bluegreen.config import Config, Secret, Settings, load_config, secret_values
from bluegreen.report import CheckResult, Result


def models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """`root` and every model its fields can hold, at any depth (unions, lists, dicts, Annotated)."""
    found: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
        for arg in typing.get_args(annotation):
            visit(arg)

    visit(root)
    return found


ALL_MODELS = models(Config) + [m for m in models(Settings) if m not in models(Config)]


def is_marked(field: Any) -> bool:
    return any(isinstance(m, Secret) for m in field.metadata)


def mentions(annotation: Any, cls: type) -> bool:
    """Whether `cls`, or an instance of it (a marker), appears anywhere in `annotation`."""
    if annotation is cls or isinstance(annotation, cls):
        return True
    return any(mentions(arg, cls) for arg in typing.get_args(annotation))


MARKED = {(model.__name__, name) for model in ALL_MODELS for name, field in model.model_fields.items()
          if is_marked(field)}


# --- the walk ------------------------------------------------------------------------------------------------


def test_the_walk_finds_a_marked_field_in_nested_models_lists_and_dicts():
    class Inner(BaseModel):
        token: Annotated[SecretStr | None, Secret()] = None
        name: str = "shown"

    class Outer(BaseModel):
        one: Inner | None = None
        many: list[Inner] = []
        by_name: dict[str, Inner] = {}
        pairs: Annotated[dict[str, str], Secret(lambda d: d.values())] = {}

    outer = Outer(one=Inner(token="t-one"), many=[Inner(), Inner(token="t-list")], by_name={"x": Inner(token="t-dict")},
                  pairs={"a": "t-pair"})
    assert secret_values(outer) == ["t-one", "t-list", "t-dict", "t-pair"]


# --- every secret field of the config, redacted ---------------------------------------------------------------

KUBE_TOKEN = "kube-token-4f2a9c"
DATABASE_PASSWORD = "db-pass-7e1b"
TSIG_SECRET = "dHNpZy1zZWNyZXQtNGE4Yg=="
KUBECONFIG = yaml.safe_dump({
    "apiVersion": "v1", "kind": "Config", "users": [{"name": "u", "user": {"token": KUBE_TOKEN}}],
    "clusters": [{"name": "c", "cluster": {"server": "https://k"}}],
})
CONFIG = textwrap.dedent(f"""\
    app: shop
    smoke:
      checks:
        - name: api
          headers: {{Authorization: "Bearer smoke-header-5d3c", Accept: application/json}}
    verify:
      version_check: {{name: version, path: /version, headers: {{X-Token: verify-header-8a2f}}}}
    analysis:
      prometheus: {{url: "http://prometheus:9090", bearer_token: prom-token-1c9e, basic_auth: "prom:prom-pass-3b7d"}}
      web: {{url: "http://metrics:8080/q", headers: {{DD-API-KEY: web-header-4e2a, Accept: application/json}}}}
      queries: [{{name: errors, query: "up", min: 1}}]
    migrations:
      expand: {{command: [migrate]}}
    hooks:
      before_switch:
        - http: {{url: "https://ops.example.test/go", headers: {{Authorization: "Bearer hook-token-71c2"}}}}
    notifications:
      - {{kind: slack, url: "https://hooks.slack.test/services/T0/B0/slack-token-3e9d"}}
      - {{kind: teams, url: "https://flows.example.test/workflows/1/triggers/manual?sig=teams-sig-5a1c"}}
      - kind: webhook
        url: "https://ops.example.test/events/webhook-path-8c4e"
        secret: webhook-secret-2d7f
        headers: {{Authorization: "Bearer webhook-token-6b0a"}}
    environments:
      local:
        target:
          kind: local
          command: [app, "{{port}}"]
          router: {{kind: traefik, api_auth: "admin:traefik-pass-6f4e"}}
      kube:
        target:
          kind: kubernetes
          kubeconfig: {json.dumps(KUBECONFIG)}
      servers:
        target:
          kind: servers
          hosts: [app1]
          ssh:
            user: deploy
            private_key: "-----BEGIN OPENSSH PRIVATE KEY-----\\nssh-key-line-2c8a\\n-----END OPENSSH PRIVATE KEY-----"
            passphrase: ssh-passphrase-9d1f
            known_hosts: "app1 ssh-ed25519 known-hosts-0e5b"
          run: {{mode: command, start: start, stop: stop}}
          router_host: lb1
          router: {{kind: haproxy}}
      dns:
        url: http://app.example.test
        target:
          kind: local
          command: [app, "{{port}}"]
          addresses: {{blue: 127.0.0.2, green: 127.0.0.3}}
          router: {{kind: dns, server: "127.0.0.1:53", zone: example.test, tsig_key: k}}
    """)

# Each field marked secret -> (environment, what it holds that must never be shown). A field newly marked secret
# is added here, so this test proves it is redacted.
SECRETS = {
    ("SmokeCheck", "headers"): ("local", ["Bearer smoke-header-5d3c", "verify-header-8a2f"]),
    ("PrometheusSource", "bearer_token"): ("local", ["prom-token-1c9e"]),
    ("PrometheusSource", "basic_auth"): ("local", ["prom:prom-pass-3b7d", "prom-pass-3b7d"]),
    ("WebSource", "headers"): ("local", ["web-header-4e2a"]),
    ("Migrations", "secret_env"): ("local", [f"postgresql://app:{DATABASE_PASSWORD}@db/app", DATABASE_PASSWORD]),
    ("TraefikRouter", "api_auth"): ("local", ["admin:traefik-pass-6f4e", "traefik-pass-6f4e"]),
    ("KubernetesTarget", "kubeconfig"): ("kube", [KUBE_TOKEN]),
    ("SSHSettings", "private_key"): ("servers", ["ssh-key-line-2c8a"]),
    ("SSHSettings", "passphrase"): ("servers", ["ssh-passphrase-9d1f"]),
    ("SSHSettings", "known_hosts"): ("servers", ["app1 ssh-ed25519 known-hosts-0e5b"]),
    ("DnsRouter", "tsig_secret_env"): ("dns", [TSIG_SECRET]),
    ("HttpCall", "headers"): ("local", ["Bearer hook-token-71c2"]),
    ("SlackChannel", "url"): ("local", ["https://hooks.slack.test/services/T0/B0/slack-token-3e9d",
                                        "/services/T0/B0/slack-token-3e9d"]),
    ("TeamsChannel", "url"): ("local", ["teams-sig-5a1c", "/workflows/1/triggers/manual?sig=teams-sig-5a1c"]),
    ("WebhookChannel", "url"): ("local", ["/events/webhook-path-8c4e"]),
    ("WebhookChannel", "secret"): ("local", ["webhook-secret-2d7f"]),
    ("WebhookChannel", "headers"): ("local", ["Bearer webhook-token-6b0a"]),
}


def test_every_field_marked_secret_is_covered_here():
    assert set(SECRETS) == MARKED


@pytest.mark.parametrize("field", sorted(SECRETS), ids="{0[0]}.{0[1]}".format)
def test_a_secret_is_redacted_from_the_report_and_the_log_lines(field, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", f"postgresql://app:{DATABASE_PASSWORD}@db/app")
    monkeypatch.setenv("BLUEGREEN_TSIG_SECRET", TSIG_SECRET)
    path = tmp_path / "bluegreen.yml"
    path.write_text(CONFIG)
    environment, shown = SECRETS[field]
    settings = load_config(path, environment)

    # The report, as the CLI writes it: every text a run produced, redacted by the config's secrets.
    quoting = "; ".join(f"got {value!r}" for value in shown)
    result = Result(command="deploy", status="failed", app="shop", environment=environment, reason=quoting,
                    checks=[CheckResult(name="api", kind="smoke", target="blue", passed=False, attempts=1,
                                        duration=0.1, detail=quoting)])
    report = result.redacted(secret_values(settings)).to_json()
    # A log line, as the GitHub action masks it: the config's secrets registered before anything is printed.
    secrets = Secrets()
    mask_config(str(path), environment, secrets)
    line = secrets.redact(f"smoke check api failed: {quoting}")

    for value in shown:
        assert value not in report and value not in line
    assert "***" in report and line.startswith("smoke check api failed: got '***'")
    assert "application/json" not in secret_values(settings)  # content negotiation is no secret
    capsys.readouterr()  # the ::add-mask:: lines


# --- a guard for future models ---------------------------------------------------------------------------------

# A field whose name says "secret": it must be marked, or listed below with why it is not.
LOOKS_SECRET = re.compile(
    r"token|passw|passphrase|secret|auth|credential|private|(^|_)key$|known_hosts|kubeconfig|cookie|headers|dsn"
    r"|(database|db)_?url|connection_string"
)
NOT_SECRET = {
    ("HAProxyRouter", "key"): "the map key bluegreen owns ({app}), in HAProxy's config too",
    ("EnvoyRouter", "key"): "the runtime key (bluegreen.{app}.green), in Envoy's config too",
    ("DnsRouter", "tsig_key"): "the TSIG key's name, in the server's config and update-policy (its secret: tsig_secret_env)",
    ("Expect", "headers"): "response headers a check expects from the app; a failure shows what differed",
}


def test_every_field_that_looks_secret_is_marked_secret():
    unmarked = []
    for model in ALL_MODELS:
        for name, field in model.model_fields.items():
            looks = LOOKS_SECRET.search(name) or LOOKS_SECRET.search(field.alias or "")
            if mentions(field.annotation, SecretStr):
                assert (model.__name__, name) not in NOT_SECRET, "a SecretStr is a secret: mark it"
                looks = True
            if looks and not is_marked(field) and (model.__name__, name) not in NOT_SECRET:
                unmarked.append(f"{model.__name__}.{name}")
    assert unmarked == [], "mark these fields `Annotated[..., SECRET]` (config/secrets.py), or list them in NOT_SECRET"
    fields = {(model.__name__, name) for model in ALL_MODELS for name in model.model_fields}
    assert set(NOT_SECRET) <= fields, "NOT_SECRET names a field that is gone"


def test_a_secret_marker_is_where_the_walk_sees_it():
    # Annotated[...] inside a union or a list is not the field's metadata: secret_values would never see it.
    hidden = [f"{model.__name__}.{name}" for model in ALL_MODELS for name, field in model.model_fields.items()
              if mentions(field.annotation, Secret)]
    assert hidden == [], "put the Secret marker outermost: Annotated[X | None, SECRET]"


def test_a_model_names_the_variables_a_library_reads_its_secrets_from(monkeypatch):
    from typing import Annotated, ClassVar

    from bluegreen.config.base import Model
    from bluegreen.config.secrets import ENVIRONMENT_VARIABLE, secret_values

    class CloudRouter(Model):  # as a router whose SDK reads its credentials from the environment itself
        secret_variables: ClassVar[tuple[str, ...]] = ("CLOUD_SECRET", "CLOUD_TOKEN")
        key_variable: Annotated[str, ENVIRONMENT_VARIABLE] = "SIGNING_KEY"
        region: str = "eu-west-1"

    monkeypatch.setenv("CLOUD_SECRET", "s3cr3t-value")
    monkeypatch.delenv("CLOUD_TOKEN", raising=False)
    monkeypatch.setenv("SIGNING_KEY", "hmac-key-value")
    assert sorted(secret_values(CloudRouter())) == ["hmac-key-value", "s3cr3t-value"]
