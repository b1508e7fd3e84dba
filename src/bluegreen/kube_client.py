"""The Kubernetes API client: credentials in a fixed order, retries of transient failures, one-line errors.

Imported only by the kubernetes runtime, routers and state store, so lightkube loads only when a config uses it.

Credentials, first found wins (lightkube's own `from_env` prefers the in-cluster
account over KUBECONFIG, which surprises CI runners inside a cluster):
  1. the `kubeconfig` setting: file content (a CI secret), parsed in memory, never written or logged;
  2. the file named by KUBECONFIG (the first existing one of a `:`-separated list);
  3. ~/.kube/config;
  4. the in-cluster service account.
Exec credential plugins (aws eks get-token, gke-gcloud-auth-plugin...) that declare
`client.authentication.k8s.io/v1` are run as v1beta1: lightkube implements only
v1beta1 and the plugin's answer (status.token) is the same in both.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import httpx2
import yaml
from lightkube import ApiError, Client, KubeConfig
from lightkube.core.exceptions import ConfigError as LightkubeConfigError
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from .errors import TargetError

T = TypeVar("T")

EXEC_V1 = "client.authentication.k8s.io/v1"
EXEC_V1BETA1 = "client.authentication.k8s.io/v1beta1"
TRANSIENT_CODES = {429, 500, 502, 503, 504}
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)  # ~3.7 s in all: long enough for an API server hiccup, short against a deadline
ANNOTATION = "bluegreen.dev/"  # the prefix of every annotation bluegreen writes

# Tests serve an in-process fake API server through this httpx2 transport factory.
transport_override: Callable[[], httpx2.BaseTransport] | None = None


def normalise_exec(config: dict) -> dict:
    """Rewrite exec plugins declared as client.authentication.k8s.io/v1 to v1beta1 (what lightkube runs)."""
    for user in config.get("users") or []:
        exec_ = (user.get("user") or {}).get("exec")
        if isinstance(exec_, dict) and exec_.get("apiVersion") == EXEC_V1:
            exec_["apiVersion"] = EXEC_V1BETA1
            exec_.pop("interactiveMode", None)  # v1-only field; the CLI never runs interactively anyway
            exec_.pop("provideClusterInfo", None)
    return config


def load_kubeconfig(content: str | None) -> tuple[KubeConfig, str]:
    """The kubeconfig to use and where it came from (for messages; never its content)."""
    if content:
        return _from_text(content, "the `kubeconfig` setting", None), "the `kubeconfig` setting"
    env = os.environ.get("KUBECONFIG")
    if env:
        for name in env.split(os.pathsep):
            path = Path(name).expanduser()
            if name and path.is_file():
                return _from_file(path, f"KUBECONFIG ({path})"), f"KUBECONFIG ({path})"
    default = Path("~/.kube/config").expanduser()
    if default.is_file():
        return _from_file(default, str(default)), str(default)
    try:
        return KubeConfig.from_service_account(), "the in-cluster service account"
    except (LightkubeConfigError, KeyError):
        pass
    raise TargetError(
        "no Kubernetes credentials: set the target's `kubeconfig` (e.g. from a CI secret) or KUBECONFIG, "
        "or run in a cluster with a service account"
    )


def _from_file(path: Path, source: str) -> KubeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TargetError(f"cannot read the kubeconfig from {source}: {exc.strerror}") from None
    return _from_text(text, source, path)


def _from_text(text: str, source: str, path: Path | None) -> KubeConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        # the parser's message quotes the offending line, which may hold a token: say only where
        raise TargetError(f"the kubeconfig from {source} is not valid YAML") from None
    if not isinstance(data, dict) or not isinstance(data.get("clusters"), list):
        raise TargetError(f"the kubeconfig from {source} has no clusters")
    try:
        return KubeConfig.from_dict(normalise_exec(data), fname=path)
    except (KeyError, TypeError, ValueError, LightkubeConfigError) as exc:
        raise TargetError(f"the kubeconfig from {source} is invalid ({type(exc).__name__} {exc})") from None


def make_client(content: str | None, context: str | None, namespace: str | None, timeout: float) -> "Kube":
    config, source = load_kubeconfig(content)
    try:
        single = config.get(context_name=context)
    except LightkubeConfigError as exc:
        raise TargetError(f"kubeconfig from {source}: {exc}") from None
    except KeyError as exc:  # a context naming a missing cluster or user
        raise TargetError(f"kubeconfig from {source}: context {context or single.context_name!r} refers to "
                          f"a missing entry {exc}") from None
    transport = transport_override() if transport_override is not None else None
    try:
        client = Client(single, namespace=namespace, timeout=httpx2.Timeout(timeout), field_manager="bluegreen",
                        transport=transport)
    except (LightkubeConfigError, OSError, ValueError) as exc:
        raise TargetError(f"cannot use the kubeconfig from {source}: {exc}") from None
    return Kube(client, source, client.namespace)


class Kube:
    """A lightkube Client whose calls retry transient failures and fail with one line naming the object."""

    def __init__(self, client: Client, source: str, namespace: str) -> None:
        self.client = client
        self.source = source
        self.namespace = namespace

    def call(self, what: str, fn: Callable[[], T], *, retry: bool = True, deadline: float | None = None) -> T:
        """Run `fn`; retry timeouts, connection errors, 429 and 5xx; ApiError 404/409 reach the caller."""
        delays = list(RETRY_DELAYS) if retry else []
        while True:
            try:
                return fn()
            except ApiError as exc:
                if exc.status.code in TRANSIENT_CODES and delays and _time_left(deadline, delays[0]):
                    time.sleep(delays.pop(0))
                    continue
                if exc.status.code in (404, 409):
                    raise
                raise self.error(what, exc) from None
            except (httpx2.TransportError, httpx2.DecodingError) as exc:
                if delays and _time_left(deadline, delays[0]):
                    time.sleep(delays.pop(0))
                    continue
                raise TargetError(f"{what}: the Kubernetes API did not answer ({_describe(exc)})") from None
            except LightkubeConfigError as exc:  # e.g. an exec plugin failing
                raise TargetError(f"{what}: credentials from {self.source} failed: {_first_line(str(exc))}") from None

    def get(self, res: Any, name: str, namespace: str, *, deadline: float | None = None) -> Any:
        """Read one object; None when it does not exist."""
        what = f"read {res.__name__} {name}"
        try:
            return self.call(what, lambda: self.client.get(res, name, namespace=namespace), deadline=deadline)
        except ApiError as exc:
            if is_not_found(exc):
                return None
            raise self.error(what, exc) from None

    def error(self, what: str, exc: ApiError) -> TargetError:
        code, reason = exc.status.code, exc.status.reason or ""
        message = _first_line(exc.status.message or reason)
        if code == 401:
            return TargetError(f"{what}: the cluster refused the credentials from {self.source} (401 Unauthorized)")
        if code == 403:
            return TargetError(f"{what}: forbidden (403): {message}; grant it in the RBAC Role "
                               "(see examples/kubernetes/rbac.yaml)")
        return TargetError(f"{what}: {message} ({code} {reason})".rstrip())

    def close(self) -> None:
        self.client.close()


class KubeObjects:
    """One namespace's objects, read and written through a Kube: failures are one line naming the object."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    @property
    def where(self) -> str:
        return f"in namespace {self.namespace}"

    def get(self, res: Any, name: str, *, missing_ok: bool = False, deadline: float | None = None) -> Any:
        found = self.kube.get(res, name, self.namespace, deadline=deadline)
        if found is None and not missing_ok:
            raise TargetError(f"{res.__name__} {name} not found {self.where}: create it first "
                              "(see examples/kubernetes)")
        return found

    def list(self, res: Any, labels: dict, *, deadline: float | None = None) -> list:
        what = f"list {res.__name__} {labels}"
        try:
            return self.kube.call(what, lambda: list(self.kube.client.list(res, namespace=self.namespace,
                                                                           labels=labels)), deadline=deadline)
        except ApiError as exc:
            raise self.kube.error(what, exc) from None

    def patch(self, res: Any, name: str, body: dict, *, patch_type: PatchType = PatchType.MERGE,
              deadline: float | None = None) -> Any:
        """A 409 (a body carrying a stale resourceVersion) reaches the caller, which decides again."""
        what = f"patch {res.__name__} {name}"
        try:
            return self.kube.call(what, lambda: self.kube.client.patch(res, name, body, namespace=self.namespace,
                                                                       patch_type=patch_type), deadline=deadline)
        except ApiError as exc:
            if is_conflict(exc):
                raise
            if is_not_found(exc):
                raise TargetError(f"{res.__name__} {name} not found {self.where}") from None
            raise self.kube.error(what, exc) from None

    def service_url(self, name: str) -> str:
        """The Service's cluster DNS name, with its first port unless that is 80."""
        service = self.get(Service, name, missing_ok=True)
        port = service.spec.ports[0].port if service is not None and service.spec.ports else 80
        return f"http://{name}.{self.namespace}.svc.cluster.local" + ("" if port == 80 else f":{port}")


def annotation(name: str) -> str:
    return ANNOTATION + name


def kubectl_prefix(context: str | None, namespace: str) -> list[str]:
    """The start of a runbook's kubectl command: the same cluster and namespace as bluegreen used."""
    return ["kubectl", *(["--context", context] if context else []), "--namespace", namespace]


def _time_left(deadline: float | None, delay: float) -> bool:
    return deadline is None or time.monotonic() + delay < deadline


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def _describe(exc: Exception) -> str:
    text = _first_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_conflict(exc: Any) -> bool:
    return isinstance(exc, ApiError) and exc.status.code == 409


def is_not_found(exc: Any) -> bool:
    return isinstance(exc, ApiError) and exc.status.code == 404
