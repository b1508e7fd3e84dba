"""Kinds the fake serves, its API errors as real `Status` bodies, label selectors."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    status: bool = False  # has a /status subresource: the main resource's writes keep status
    generation: bool = False  # metadata.generation counts spec changes
    crd: bool = False  # no strategic merge patch; PUT needs a resourceVersion

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:  # "deployments.apps", as API messages name a resource
        return f"{self.plural}.{self.group}" if self.group else self.plural


KINDS = [
    Kind("", "v1", "namespaces", "Namespace", namespaced=False, status=True),
    Kind("", "v1", "services", "Service", status=True),
    Kind("", "v1", "configmaps", "ConfigMap"),
    Kind("", "v1", "pods", "Pod", status=True),
    Kind("apps", "v1", "deployments", "Deployment", status=True, generation=True),
    Kind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    Kind("coordination.k8s.io", "v1", "leases", "Lease"),
    Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute", status=True, generation=True, crd=True),
]
BY_PATH = {(k.group, k.version, k.plural): k for k in KINDS}
BY_KIND = {k.kind: k for k in KINDS}

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class ApiStatus(Exception):
    """An API error; `body()` is the `Status` object a real API server sends."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict:
        out = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            out["details"] = self.details
        return out


def _details(kind: Kind, name: str | None, **extra) -> dict:
    out = {"kind": kind.plural, **extra}
    if name:
        out["name"] = name
    if kind.group:
        out["group"] = kind.group
    return out


def not_found(kind: Kind, name: str) -> ApiStatus:
    return ApiStatus(404, "NotFound", f'{kind.qualified} "{name}" not found', _details(kind, name))


def already_exists(kind: Kind, name: str) -> ApiStatus:
    return ApiStatus(409, "AlreadyExists", f'{kind.qualified} "{name}" already exists', _details(kind, name))


def conflict(kind: Kind, name: str) -> ApiStatus:
    return ApiStatus(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {kind.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        _details(kind, name),
    )


def invalid(kind: Kind, name: str, causes: list[tuple[str, str, str]]) -> ApiStatus:
    """causes: (field, reason such as FieldValueInvalid, text)"""
    text = "; ".join(f"{field}: {msg}" if field else msg for field, _, msg in causes)
    return ApiStatus(
        422,
        "Invalid",
        f'{kind.kind} "{name}" is invalid: {text}' if len(causes) == 1 else f'{kind.kind} "{name}" is invalid: [{text}]',
        _details(kind, name, causes=[{"reason": r, "message": m, "field": f} for f, r, m in causes]),
    )


def bad_request(message: str) -> ApiStatus:
    return ApiStatus(400, "BadRequest", message)


# --- label selectors ---------------------------------------------------------------------------

_REQ = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=|\s+in\s+|\s+notin\s+)\s*(?P<val>\([^)]*\)|[A-Za-z0-9_.-]*))?\s*$"
)


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def parse_selector(selector: str) -> list[tuple[str, str, set[str]]]:
    """`a=b,c!=d,e in (f,g),!h,i` -> [(key, op, values)]; raises ApiStatus 400 when malformed."""
    out = []
    for part in _split(selector or ""):
        match = _REQ.match(part)
        if not match:
            raise bad_request(f"unable to parse requirement: {part.strip()!r}")
        key, op, val = match.group("key"), (match.group("op") or "").strip(), match.group("val")
        if match.group("neg"):
            if op:
                raise bad_request(f"unable to parse requirement: {part.strip()!r}")
            out.append((key, "!", set()))
        elif not op:
            out.append((key, "exists", set()))
        elif op in ("in", "notin"):
            if not (val or "").startswith("("):
                raise bad_request(f"unable to parse requirement: {part.strip()!r}")
            out.append((key, op, {v.strip() for v in val[1:-1].split(",") if v.strip()}))
        else:
            out.append((key, "!=" if op == "!=" else "=", {val or ""}))
    return out


def selector_matches(requirements: list[tuple[str, str, set[str]]], labels: dict) -> bool:
    for key, op, values in requirements:
        present, value = key in labels, labels.get(key)
        ok = {
            "=": present and value in values,
            "!=": not present or value not in values,
            "in": present and value in values,
            "notin": not present or value not in values,
            "exists": present,
            "!": not present,
        }[op]
        if not ok:
            return False
    return True
