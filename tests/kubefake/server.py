"""An in-process Kubernetes API server for tests: a WSGI app lightkube talks to through its transport.

What is faithful (because bluegreen's correctness depends on it):
- every write gets a new resourceVersion; a no-op write keeps the old one;
- PUT with a stale resourceVersion, or a patch/apply whose result carries a stale
  one, answers 409 Conflict; create of an existing name 409 AlreadyExists; 404 and
  422 answer real `Status` bodies (reason, details.causes);
- `metadata.generation` counts spec changes only; the /status subresource and the
  main resource each keep the other's half;
- label and field selectors on list; merge, strategic-merge, JSON patch and an
  approximation of server-side apply (see patching.py);
- every stored object passes the kind's schema (kubernetes-validate --strict for
  core kinds, the Gateway API CRD fields for HTTPRoute) or the write answers 422;
- controllers (controllers.py) move Deployments, Pods, EndpointSlices and
  HTTPRoute status the way the real ones do, driven by the test or by time.

Watch is served by polling (for kubectl over a real socket). Not served: pagination (`limit` returns everything), deletion grace, RBAC
beyond an injected 403, admission webhooks.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qs

import httpx2
import yaml

from . import patching
from .controllers import Controllers
from .store import (
    BY_KIND,
    BY_PATH,
    DNS_LABEL_1035,
    DNS_SUBDOMAIN,
    KINDS,
    ApiStatus,
    Kind,
    already_exists,
    bad_request,
    conflict,
    invalid,
    not_found,
    parse_selector,
    selector_matches,
)
from .validation import SchemaError, validate

SERVER = "https://kubefake.invalid:6443"
_REASONS = {401: "Unauthorized", 403: "Forbidden", 429: "TooManyRequests", 500: "InternalError",
            502: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Fault:
    """Answer the next `times` requests matching (method, path regex) with a failure."""

    method: str
    path: re.Pattern
    times: int = 1
    status: int | None = None  # 5xx, 403, 429...
    timeout: bool = False  # raise a transport timeout instead of answering
    after: bool = False  # with timeout: the server applied the request, only the answer is lost
    action: Callable[[], None] | None = None  # run before handling (e.g. a concurrent writer), then serve normally
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and self.method in (method, "*") and bool(self.path.search(path))


@dataclass
class Request:
    method: str
    path: str
    query: str
    status: int
    content_type: str = ""
    body: Any = None
    authorization: str | None = field(default=None, repr=False)


class FakeKube:
    def __init__(
        self,
        *,
        auto: bool = True,
        ready_after: float = 0.05,
        token: str | None = None,
        endpoint_lag: float = 0.0,
        route_lag: float = 0.0,
    ) -> None:
        self.lock = threading.RLock()
        self.objects: dict[tuple[str, str, str, str], dict] = {}
        self.token = token  # when set, every request must carry `Authorization: Bearer <token>`
        self.faults: list[Fault] = []
        self.requests: list[Request] = []
        self._rv = itertools.count(1001)
        self._ips = itertools.count(10)
        # field ownership for server-side apply: object key -> manager -> (operation, leaf paths)
        self.owners: dict[tuple, dict[str, tuple[str, set]]] = {}
        self.controllers = Controllers(self, auto=auto, ready_after=ready_after,
                                       endpoint_lag=endpoint_lag, route_lag=route_lag)
        self.create_internal({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})

    # --- test-facing helpers -------------------------------------------------------------------

    def inject(self, method: str, path: str, *, times: int = 1, status: int | None = None,
               timeout: bool = False, after: bool = False, action: Callable[[], None] | None = None) -> Fault:
        """Make the next `times` requests matching METHOD and the path regex fail (or run `action` first)."""
        fault = Fault(method.upper(), re.compile(path), times, status, timeout, after, action)
        with self.lock:
            self.faults.append(fault)
        return fault

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        """The stored object (a copy), after controllers caught up with the clock."""
        with self.lock:
            self.controllers.settle()
            obj = self.objects.get(self._key(BY_KIND[kind], namespace, name))
            return copy.deepcopy(obj)

    def list(self, kind: str, namespace: str | None = None, selector: str = "") -> list[dict]:
        with self.lock:
            self.controllers.settle()
            return [copy.deepcopy(o) for o in self._list(BY_KIND[kind], namespace, parse_selector(selector))]

    def writes(self, path_regex: str = "") -> list[Request]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method in ("POST", "PUT", "PATCH", "DELETE") and pattern.search(r.path)]

    # controller steering, see controllers.py
    def rollout(self, namespace: str, name: str, *, ready: bool = True) -> None:
        self.controllers.rollout(namespace, name, ready=ready)

    def fail_rollout(self, namespace: str, name: str, reason: str = "CrashLoopBackOff", message: str = "",
                     deadline_exceeded: bool = False) -> None:
        self.controllers.fail_rollout(namespace, name, reason, message, deadline_exceeded)

    def fail_image(self, pattern: str, reason: str = "ImagePullBackOff", message: str = "") -> None:
        """In auto mode, rollouts of images matching this glob fail with `reason` instead of becoming ready."""
        self.controllers.image_failures.append((pattern, reason, message))

    # --- transport --------------------------------------------------------------------------

    def transport(self) -> httpx2.BaseTransport:
        return FakeTransport(self)

    def kubeconfig(self, *, token: str | None = None, user: dict | None = None, namespace: str = "default",
                   context: str = "kubefake") -> dict:
        """A kubeconfig for this server (for `KubeConfig.from_dict`, or dumped to YAML)."""
        if user is None:
            user = {"token": token or self.token or "kubefake-token"}
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": context,
            "clusters": [{"name": "kubefake", "cluster": {"server": SERVER, "insecure-skip-tls-verify": True}}],
            "users": [{"name": "kubefake-user", "user": user}],
            "contexts": [{"name": context, "context": {"cluster": "kubefake", "user": "kubefake-user",
                                                       "namespace": namespace}}],
        }

    def client(self, namespace: str = "default", **kwargs):
        from lightkube import Client, KubeConfig

        config = KubeConfig.from_dict(self.kubeconfig(namespace=namespace))
        return Client(config, transport=self.transport(), **kwargs)

    # --- WSGI --------------------------------------------------------------------------------

    def __call__(self, environ: dict, start_response: Callable) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        status, payload = self.handle(
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
            environ.get("CONTENT_TYPE", ""),
            environ.get("HTTP_AUTHORIZATION"),
            environ.get("HTTP_USER_AGENT", ""),
            body,
        )
        if not isinstance(payload, dict):  # a watch stream
            start_response(f"{status} X", [("Content-Type", "application/json")])
            return payload
        data = json.dumps(payload).encode()
        start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path):
                    fault.times -= 1
                    fault.hits += 1
                    return fault
        return None

    # --- request handling ----------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, content_type: str, authorization: str | None,
               user_agent: str, body: bytes) -> tuple[int, dict]:
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        record = Request(method, path, query, 0, content_type.split(";")[0].strip(), authorization=authorization)
        try:
            with self.lock:
                if self.token is not None and authorization != f"Bearer {self.token}":
                    raise ApiStatus(401, "Unauthorized", "Unauthorized")
                self.controllers.settle()
                status, payload = self._route(method, path, params, record.content_type, user_agent, body, record)
        except ApiStatus as exc:
            status, payload = exc.code, exc.body()
        record.status = status
        self.requests.append(record)
        return status, payload

    def status_response(self, code: int, method: str, path: str) -> tuple[int, dict]:
        reason = _REASONS.get(code, "InternalError")
        if code == 403:
            message = f"{path} is forbidden: User \"system:serviceaccount:ci:bluegreen\" cannot {method.lower()} it"
        else:
            message = f"injected failure: {reason}"
        return code, ApiStatus(code, reason, message).body()

    def _route(self, method, path, params, content_type, user_agent, body, record) -> tuple[int, dict]:
        parts = [p for p in path.split("/") if p]
        discovery = self._discovery(parts)
        if discovery is not None:
            return 200, discovery
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3:
            namespace, rest = rest[1], rest[2:]
        plural, name, sub = rest[0], (rest[1] if len(rest) > 1 else None), (rest[2] if len(rest) > 2 else "")
        kind = BY_PATH.get((group, version, plural))
        if kind is None or sub not in ("", "status", "scale") or (sub == "status" and not kind.status) \
                or (sub == "scale" and kind.kind != "Deployment"):
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
        if kind.namespaced and namespace is None and (name is not None or method != "GET"):
            raise ApiStatus(404, "NotFound", "the server could not find the requested resource")
        if namespace is not None and kind.namespaced and not self.objects.get(("", "namespaces", "", namespace)):
            if method in ("POST",) or (method == "PATCH" and content_type == "application/apply-patch+yaml"):
                raise not_found(BY_KIND["Namespace"], namespace)
        manager = params.get("fieldManager") or (user_agent.split("/")[0] or "unknown")
        if len(manager) > 128:
            raise invalid(kind, name or "", [("metadata.managedFields.manager", "FieldValueTooLong",
                                              "Too long: may not be more than 128 bytes")])
        dry_run = params.get("dryRun") == "All"

        if params.get("watch") in ("true", "1"):
            return 200, self._watch(kind, namespace, name, params)
        if sub == "scale":
            return self._scale(kind, namespace, name, method, body, content_type, manager, record)
        if method == "GET" and name is None:
            items = self._list(kind, namespace, parse_selector(params.get("labelSelector", "")),
                               params.get("fieldSelector", ""))
            return 200, {"kind": f"{kind.kind}List", "apiVersion": kind.api_version,
                         "metadata": {"resourceVersion": str(self._current_rv())},
                         "items": [self._strip_type(o) for o in items]}
        if method == "GET":
            return 200, self._get(kind, namespace, name)
        if method == "DELETE":
            if name is None:
                raise ApiStatus(405, "MethodNotAllowed", "deletecollection is not served by kubefake")
            self._get(kind, namespace, name)
            if not dry_run:
                self._delete(kind, namespace, name)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": name, "kind": kind.plural, **({"group": kind.group} if kind.group else {})}}

        obj = self._decode(body, content_type)
        record.body = obj
        if method == "POST":
            if name is not None:
                raise ApiStatus(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
            return 201, self._create(kind, namespace, obj, manager, dry_run)
        if method == "PUT":
            return 200, self._replace(kind, namespace, name, obj, manager, sub, dry_run)
        if method == "PATCH":
            return self._patch(kind, namespace, name, obj, content_type, manager, sub, params, dry_run)
        raise ApiStatus(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _scale(self, kind: Kind, namespace: str, name: str, method: str, body: bytes, content_type: str,
               manager: str, record: Request) -> tuple[int, dict]:
        """The autoscaling/v1 Scale subresource (`kubectl scale`): spec.replicas of the Deployment."""
        deployment = self._get(kind, namespace, name)

        def as_scale(d: dict) -> dict:
            labels = (d["spec"].get("selector") or {}).get("matchLabels") or {}
            meta = {k: d["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")}
            return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": meta,
                    "spec": {"replicas": d["spec"].get("replicas", 1)},
                    "status": {"replicas": (d.get("status") or {}).get("replicas", 0),
                               "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items()))}}

        scale = as_scale(deployment)
        if method == "GET":
            return 200, scale
        change = self._decode(body, content_type)
        record.body = change
        if method == "PUT":
            new = change
        elif content_type == "application/json-patch+json":
            new = patching.json_patch(scale, change)
        else:
            new = patching.json_merge(scale, change)
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv and rv != deployment["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        updated = copy.deepcopy(deployment)
        updated["spec"]["replicas"] = (new.get("spec") or {}).get("replicas", 0)
        result = self._commit(kind, namespace, name, updated, deployment, manager=manager, operation="Update")
        return 200, as_scale(result)

    def _watch(self, kind: Kind, namespace: str | None, name: str | None, params: dict):
        """A watch stream (what `kubectl rollout status` uses): events by polling the store, for a WSGI server.

        Returned as a generator of JSON lines; the lock is taken per poll, never while the client reads."""
        fields = params.get("fieldSelector", "")
        if name:
            fields = ",".join(filter(None, [fields, f"metadata.name={name}"]))
        requirements = parse_selector(params.get("labelSelector", ""))
        since = int(params.get("resourceVersion") or 0)
        stop_at = time.monotonic() + min(float(params.get("timeoutSeconds") or 60), 60)

        def events():
            yield b""  # makes a WSGI server send the headers now: the client knows the watch is open
            seen: dict[str, str] = {}
            first = True
            while time.monotonic() < stop_at:
                with self.lock:
                    self.controllers.settle()
                    current = {o["metadata"]["name"]: copy.deepcopy(o)
                               for o in self._list(kind, namespace, requirements, fields)}
                for obj_name, obj in current.items():
                    rv = obj["metadata"]["resourceVersion"]
                    if seen.get(obj_name) != rv and (not first or int(rv) > since or since == 0):
                        kind_of_event = "ADDED" if obj_name not in seen and first else "MODIFIED"
                        yield (json.dumps({"type": kind_of_event, "object": obj}) + "\n").encode()
                    seen[obj_name] = rv
                for obj_name in [n for n in seen if n not in current]:
                    del seen[obj_name]
                    yield (json.dumps({"type": "DELETED", "object": {"metadata": {"name": obj_name}}}) + "\n").encode()
                first = False
                time.sleep(0.05)

        return events()

    def _discovery(self, parts: list[str]) -> dict | None:
        """Enough discovery for kubectl to map `service`, `deployment`, `httproute` to their paths."""
        if parts == ["version"]:
            return {"major": "1", "minor": "37", "gitVersion": "v1.37.0-kubefake", "platform": "linux/amd64"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}
        if parts == ["apis"]:
            groups = sorted({k.group for k in KINDS if k.group})
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in groups]}
        if (len(parts) == 2 and parts[0] == "api") or (len(parts) == 3 and parts[0] == "apis"):
            group = "" if parts[0] == "api" else parts[1]
            kinds = [k for k in KINDS if k.group == group and k.version == parts[-1]]
            if not kinds:
                return None
            resources = []
            for k in kinds:
                resources.append({"name": k.plural, "singularName": k.kind.lower(), "namespaced": k.namespaced,
                                  "kind": k.kind, "verbs": ["create", "delete", "get", "list", "patch", "update"]})
                if k.status:
                    resources.append({"name": f"{k.plural}/status", "singularName": "", "namespaced": k.namespaced,
                                      "kind": k.kind, "verbs": ["get", "patch", "update"]})
                if k.kind == "Deployment":
                    resources.append({"name": "deployments/scale", "singularName": "", "namespaced": True,
                                      "group": "autoscaling", "version": "v1", "kind": "Scale",
                                      "verbs": ["get", "patch", "update"]})
            return {"kind": "APIResourceList", "apiVersion": "v1",
                    "groupVersion": f"{group}/{parts[-1]}" if group else parts[-1], "resources": resources}
        return None

    # --- the verbs ---------------------------------------------------------------------------------

    @staticmethod
    def _key(kind: Kind, namespace: str | None, name: str) -> tuple[str, str, str, str]:
        return (kind.group, kind.plural, namespace if kind.namespaced else "", name)

    def _current_rv(self) -> int:
        return max((int(o["metadata"]["resourceVersion"]) for o in self.objects.values()), default=1000)

    @staticmethod
    def _strip_type(obj: dict) -> dict:
        # list items carry no apiVersion/kind on a real server
        return {k: v for k, v in obj.items() if k not in ("apiVersion", "kind")}

    def _get(self, kind: Kind, namespace: str | None, name: str) -> dict:
        obj = self.objects.get(self._key(kind, namespace, name))
        if obj is None:
            raise not_found(kind, name)
        return copy.deepcopy(obj)

    def _list(self, kind: Kind, namespace: str | None, requirements: list, field_selector: str = "") -> list[dict]:
        fields = dict(p.split("=", 1) for p in field_selector.replace("==", "=").split(",") if "=" in p)
        out = []
        for (group, plural, ns, _), obj in sorted(self.objects.items()):
            if (group, plural) != (kind.group, kind.plural):
                continue
            if kind.namespaced and namespace is not None and ns != namespace:
                continue
            meta = obj["metadata"]
            if not selector_matches(requirements, meta.get("labels") or {}):
                continue
            if any(meta.get(f.split(".", 1)[1]) != v for f, v in fields.items() if f.startswith("metadata.")):
                continue
            out.append(obj)
        return out

    @staticmethod
    def _decode(body: bytes, content_type: str) -> Any:
        try:
            if content_type == "application/apply-patch+yaml":
                return yaml.safe_load(body.decode() or "null")
            return json.loads(body or b"null")
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from None

    def _check_type(self, kind: Kind, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise bad_request("the body of the request is not an object")
        if obj.get("apiVersion") not in (None, kind.api_version):
            raise bad_request(f"the API version in the data ({obj.get('apiVersion')}) does not match the expected "
                              f"API version ({kind.api_version})")
        if obj.get("kind") not in (None, kind.kind):
            raise bad_request(f"the kind in the data ({obj.get('kind')}) does not match the expected kind ({kind.kind})")

    def _create(self, kind: Kind, namespace: str | None, obj: Any, manager: str, dry_run: bool,
                operation: str = "Update") -> dict:
        self._check_type(kind, obj)
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        if kind.namespaced and meta.get("namespace") not in (None, namespace):
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        if meta.get("resourceVersion"):
            raise bad_request("resourceVersion should not be set on objects to be created")
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name") or ""
        if not name:
            raise invalid(kind, "", [("metadata.name", "FieldValueRequired",
                                      "Required value: name or generateName is required")])
        if self._key(kind, namespace, name) in self.objects:
            raise already_exists(kind, name)
        return self._commit(kind, namespace, name, obj, None, manager=manager, operation=operation, dry_run=dry_run)

    def _replace(self, kind: Kind, namespace: str | None, name: str, obj: Any, manager: str, sub: str,
                 dry_run: bool) -> dict:
        self._check_type(kind, obj)
        old = self._get(kind, namespace, name)
        meta = obj.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise bad_request(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
        rv = meta.get("resourceVersion")
        if not rv and kind.crd:
            raise invalid(kind, name, [("metadata.resourceVersion", "FieldValueInvalid",
                                        "Invalid value: 0x0: must be specified for an update")])
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        return self._commit(kind, namespace, name, obj, old, manager=manager, operation="Update", sub=sub,
                            dry_run=dry_run)

    def _patch(self, kind: Kind, namespace: str | None, name: str, patch: Any, content_type: str, manager: str,
               sub: str, params: dict, dry_run: bool) -> tuple[int, dict]:
        key = self._key(kind, namespace, name)
        if content_type == "application/apply-patch+yaml":
            if not params.get("fieldManager"):
                raise bad_request("PATCH /: fieldManager is required for apply requests")
            self._check_type(kind, patch)
            if (patch.get("metadata") or {}).get("name") not in (None, name):
                raise bad_request("the name of the object does not match the name on the URL")
            if key not in self.objects:
                patch.setdefault("metadata", {})["name"] = name
                created = self._create(kind, namespace, patch, manager, dry_run, operation="Apply")
                return 201, created
            return 200, self._apply(kind, namespace, name, patch, manager, params.get("force") == "true", sub, dry_run)
        old = self._get(kind, namespace, name)
        try:
            if content_type == "application/merge-patch+json":
                if not isinstance(patch, dict):
                    raise bad_request("a merge patch must be an object")
                new = patching.json_merge(old, patch)
            elif content_type == "application/strategic-merge-patch+json":
                if kind.crd:
                    raise ApiStatus(415, "UnsupportedMediaType",
                                    f"the body of the request was in an unknown format - accepted media types "
                                    f"include: application/json-patch+json, application/merge-patch+json, "
                                    f"application/apply-patch+yaml")
                if not isinstance(patch, dict):
                    raise bad_request("a strategic merge patch must be an object")
                new = patching.strategic_merge(old, patch)
            elif content_type == "application/json-patch+json":
                new = patching.json_patch(old, patch)
            else:
                raise ApiStatus(415, "UnsupportedMediaType", f"the body of the request was in an unknown format - "
                                f"accepted media types include: application/json-patch+json, "
                                f"application/merge-patch+json, application/apply-patch+yaml")
        except patching.PatchError as exc:
            raise invalid(kind, name, [("", "FieldValueInvalid", str(exc))]) from None
        rv = (new.get("metadata") or {}).get("resourceVersion")
        if rv != old["metadata"]["resourceVersion"]:  # the patch carried a precondition, and it is stale
            raise conflict(kind, name)
        return 200, self._commit(kind, namespace, name, new, old, manager=manager, operation="Update", sub=sub,
                                 dry_run=dry_run)

    def _apply(self, kind: Kind, namespace: str | None, name: str, config: dict, manager: str, force: bool,
               sub: str, dry_run: bool) -> dict:
        old = self._get(kind, namespace, name)
        rv = (config.get("metadata") or {}).get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        strategic = not kind.crd
        applied = patching.leaf_paths(config, strategic)
        owners = self.owners.get(self._key(kind, namespace, name), {})
        conflicts = []
        for path in sorted(applied, key=str):
            for other, (_, paths) in owners.items():
                if other != manager and path in paths and \
                        patching.get_path(old, path) != patching.get_path(config, path):
                    conflicts.append((other, path))
        if conflicts and not force:
            text = "; ".join(f'conflict with "{m}" using {kind.api_version}: {patching.path_text(p)}'
                             for m, p in conflicts)
            raise ApiStatus(409, "Conflict", f"Apply failed with {len(conflicts)} conflict"
                            f"{'s' if len(conflicts) > 1 else ''}: {text}",
                            {"name": name, "kind": kind.plural, "causes": [
                                {"reason": "FieldManagerConflict", "message": f'conflict with "{m}"',
                                 "field": patching.path_text(p)} for m, p in conflicts]})
        merge = patching.strategic_merge if strategic else patching.json_merge
        new = merge(old, config)
        previous = owners.get(manager, ("Apply", set()))[1] if owners.get(manager, ("",))[0] == "Apply" else set()
        for path in previous - applied:
            if not any(path in paths for m, (_, paths) in owners.items() if m != manager):
                patching.delete_path(new, path)
        return self._commit(kind, namespace, name, new, old, manager=manager, operation="Apply", sub=sub,
                            dry_run=dry_run, applied=applied, force=force)

    def _delete(self, kind: Kind, namespace: str | None, name: str) -> None:
        key = self._key(kind, namespace, name)
        old = self.objects.pop(key)
        self.owners.pop(key, None)
        self.controllers.changed(kind, namespace, name, old, None)

    # --- the write path every verb shares ----------------------------------------------------------

    def _commit(self, kind: Kind, namespace: str | None, name: str, new: dict, old: dict | None, *, manager: str,
                operation: str, sub: str = "", dry_run: bool = False, applied: set | None = None,
                force: bool = False, internal: bool = False) -> dict:
        new = copy.deepcopy(new)
        new["apiVersion"], new["kind"] = kind.api_version, kind.kind
        meta = new.setdefault("metadata", {})
        if old is None:
            meta.update(name=name, uid=str(uuid.uuid4()), creationTimestamp=now_iso())
            if kind.namespaced:
                meta["namespace"] = namespace
            else:
                meta.pop("namespace", None)
            if kind.generation:
                meta["generation"] = 1
            if kind.status and not internal:
                new.pop("status", None)  # create ignores status, like the real registry strategies
        else:
            old_meta = old["metadata"]
            for immutable in ("name", "namespace", "uid", "creationTimestamp", "generation", "managedFields"):
                if immutable in old_meta:
                    meta[immutable] = old_meta[immutable]
                else:
                    meta.pop(immutable, None)
            if sub == "status":  # only status changes through the status subresource
                new = {**copy.deepcopy(old), "status": new.get("status")}
                if new["status"] is None:
                    new.pop("status")
                meta = new["metadata"]
            elif kind.status and not internal:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
        meta.pop("resourceVersion", None)
        self.controllers.default(kind, new)
        if old is not None and kind.generation and new.get("spec") != old.get("spec"):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        self._check_semantics(kind, name, new, old)
        if old is not None and self._same(new, old):
            return copy.deepcopy(old)  # a no-op write keeps its resourceVersion, as etcd is not written
        if not internal:
            self._own(kind, namespace, name, new, old, manager, operation, applied, force, sub)
        meta["resourceVersion"] = str(next(self._rv))
        try:
            validate(new)
        except SchemaError as exc:
            raise invalid(kind, name, [(exc.field, "FieldValueInvalid", exc.message)]) from None
        if dry_run:
            return new
        self.objects[self._key(kind, namespace, name)] = new
        self.controllers.changed(kind, namespace, name, old, new)
        return copy.deepcopy(new)

    def create_internal(self, obj: dict) -> dict:
        """A controller's (or the test's setup) create: no field ownership, status kept."""
        kind = BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        return self._commit(kind, meta.get("namespace"), meta["name"], obj, None, manager="kube-controller-manager",
                            operation="Update", internal=True)

    def update_internal(self, obj: dict) -> dict:
        kind = BY_KIND[obj["kind"]]
        meta = obj["metadata"]
        old = self.objects[self._key(kind, meta.get("namespace"), meta["name"])]
        return self._commit(kind, meta.get("namespace"), meta["name"], obj, old, manager="kube-controller-manager",
                            operation="Update", internal=True)

    def delete_internal(self, kind_name: str, namespace: str | None, name: str) -> None:
        self._delete(BY_KIND[kind_name], namespace, name)

    @staticmethod
    def _same(a: dict, b: dict) -> bool:
        def strip(o: dict) -> dict:
            o = copy.deepcopy(o)
            o["metadata"].pop("resourceVersion", None)
            o["metadata"].pop("managedFields", None)
            return o

        return strip(a) == strip(b)

    def _own(self, kind: Kind, namespace: str | None, name: str, new: dict, old: dict | None, manager: str,
             operation: str, applied: set | None, force: bool, sub: str) -> None:
        """Track which manager owns which leaf field, and show it as metadata.managedFields."""
        key = self._key(kind, namespace, name)
        owners = self.owners.setdefault(key, {})
        strategic = not kind.crd
        if operation == "Apply":
            paths = applied if applied is not None else patching.leaf_paths(new, strategic)
            if force:
                for other, (op, other_paths) in owners.items():
                    if other != manager:
                        owners[other] = (op, other_paths - paths)
            owners[manager] = ("Apply", set(paths))
        else:
            before = patching.leaf_paths(old, strategic) if old else set()
            after = patching.leaf_paths(new, strategic)
            changed = {p for p in after if old is None or patching.get_path(old, p) != patching.get_path(new, p)}
            removed = before - after
            for other, (op, other_paths) in list(owners.items()):
                owners[other] = (op, other_paths - changed - removed)
            op, mine = owners.get(manager, ("Update", set()))
            owners[manager] = ("Update" if op != "Apply" else op, mine | changed)
        for m in [m for m, (_, paths) in owners.items() if not paths]:
            del owners[m]
        new["metadata"]["managedFields"] = [
            {"manager": m, "operation": op, "apiVersion": kind.api_version, "time": now_iso(),
             "fieldsType": "FieldsV1", "fieldsV1": patching.fields_v1(paths)}
            for m, (op, paths) in sorted(owners.items())
        ]

    def _check_semantics(self, kind: Kind, name: str, new: dict, old: dict | None) -> None:
        """Validation a real API server does beyond the schema, for the kinds bluegreen writes."""
        causes: list[tuple[str, str, str]] = []
        name_re = DNS_LABEL_1035 if kind.kind == "Service" else DNS_SUBDOMAIN
        if not name_re.match(name) or len(name) > (63 if kind.kind == "Service" else 253):
            causes.append(("metadata.name", "FieldValueInvalid", f'Invalid value: "{name}": a lowercase RFC 1123 '
                           "subdomain must consist of lower case alphanumeric characters, '-' or '.'"))
        for key, value in ((new["metadata"].get("labels")) or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", value):
                causes.append((f"metadata.labels", "FieldValueInvalid", f'Invalid value: "{value}": a valid label '
                               "must be an empty string or consist of alphanumeric characters, '-', '_' or '.'"))
        causes += self.controllers.semantic_errors(kind, new, old)
        if causes:
            raise invalid(kind, name, causes)


class FakeTransport(httpx2.WSGITransport):
    """Serves the fake to lightkube in-process, and plays faults the network would: 5xx, 403, timeouts."""

    def __init__(self, app: FakeKube) -> None:
        super().__init__(app=app)
        self.fake = app

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        fault = self.fake.take_fault(request.method, request.url.path)
        if fault is not None and fault.action is not None:
            fault.action()
            fault = None
        if fault is not None and fault.timeout and not fault.after:
            self._record(request, 0)
            raise httpx2.ReadTimeout("timed out (injected)", request=request)
        if fault is not None and fault.status is not None:
            status, body = self.fake.status_response(fault.status, request.method, request.url.path)
            self._record(request, status)
            return httpx2.Response(status, json=body, request=request)
        response = super().handle_request(request)
        if fault is not None and fault.timeout and fault.after:
            response.read()
            raise httpx2.ReadTimeout("timed out after the server applied it (injected)", request=request)
        return response

    def _record(self, request: httpx2.Request, status: int) -> None:
        self.fake.requests.append(Request(request.method, request.url.path, request.url.query.decode(), status,
                                          request.headers.get("content-type", "")))
