"""Schema validation of every object the fake stores.

Core kinds use the OpenAPI-derived strict schemas shipped by `kubernetes-validate`
(the same files its `--strict` CLI uses); the validator is built once per kind
because rebuilding it (a 1.8 MB definitions file) costs ~13 ms per object.

HTTPRoute is a CRD that `kubernetes-validate` does not know (it only warns), so
it gets a compact JSON schema written from the Gateway API v1 CRD
(gateway.networking.k8s.io_httproutes.yaml, standard channel): the fields and
limits a blue-green switch touches, with unknown keys refused where the CRD
refuses them (structural schemas prune/refuse unknown fields).
"""

from __future__ import annotations

import functools

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils as kv_utils
from referencing import Registry, Resource

K8S_VERSION = kubernetes_validate.latest_version()


class SchemaError(Exception):
    """An object does not match its schema: `field` is a dotted path, `message` the reason."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


@functools.lru_cache(maxsize=None)
def _core_validator(kind: str, api_version: str) -> jsonschema.protocols.Validator:
    group_version = api_version.split("/")
    # kubernetes-validate names files <kind>-<group's first label>-<version>.json
    suffix = group_version[0] if len(group_version) == 1 else f"{group_version[0].split('.')[0]}-{group_version[1]}"
    schema_dir = f"kubernetes-json-schema/v{K8S_VERSION}-local-strict"
    schema = kv_utils.schema_contents(f"{schema_dir}/{kind.lower()}-{suffix}.json", K8S_VERSION)
    definitions = kv_utils.schema_contents(f"{schema_dir}/_definitions.json", K8S_VERSION)
    registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
    return jsonschema.Draft202012Validator(schema, registry=registry)


_NAME = {"type": "string", "minLength": 1, "maxLength": 253}
_LABEL = {"type": "string", "maxLength": 63, "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
_CONDITION = {
    "type": "object",
    "required": ["type", "status", "reason", "message", "lastTransitionTime"],
    "additionalProperties": False,
    "properties": {
        "type": {"type": "string", "maxLength": 316},
        "status": {"enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string", "minLength": 1, "maxLength": 1024},
        "message": {"type": "string", "maxLength": 32768},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer", "minimum": 0},
    },
}
_PARENT_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "group": {"type": "string", "maxLength": 253},
        "kind": {"type": "string", "minLength": 1, "maxLength": 63},
        "name": _NAME,
        "namespace": _LABEL,
        "sectionName": {"type": "string", "minLength": 1, "maxLength": 253},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    },
}
_BACKEND_REF = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "group": {"type": "string", "maxLength": 253},
        "kind": {"type": "string", "minLength": 1, "maxLength": 63},
        "name": _NAME,
        "namespace": _LABEL,
        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "weight": {"type": "integer", "minimum": 0, "maximum": 1000000},
        "filters": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
    },
    # CEL rule of the CRD: "Must have port for Service reference"
    "if": {"properties": {"kind": {"const": "Service"}, "group": {"const": ""}}},
    "then": {"required": ["port"]},
}
_MATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "path": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["Exact", "PathPrefix", "RegularExpression"]},
                "value": {"type": "string", "maxLength": 1024},
            },
        },
        "headers": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
        "queryParams": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
        "method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"]},
    },
}
HTTPROUTE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {"type": "object"},  # checked by the API machinery, not the CRD schema
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "parentRefs": {"type": "array", "maxItems": 32, "items": _PARENT_REF},
                "hostnames": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 253,
                        "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                    },
                },
                "rules": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "name": _LABEL,
                            "matches": {"type": "array", "maxItems": 64, "items": _MATCH},
                            "filters": {"type": "array", "maxItems": 16, "items": {"type": "object"}},
                            "backendRefs": {"type": "array", "maxItems": 16, "items": _BACKEND_REF},
                            "timeouts": {"type": "object"},
                        },
                    },
                },
            },
        },
        "status": {
            "type": "object",
            "additionalProperties": False,
            "required": ["parents"],
            "properties": {
                "parents": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "required": ["parentRef", "controllerName"],
                        "additionalProperties": False,
                        "properties": {
                            "parentRef": _PARENT_REF,
                            "controllerName": {"type": "string", "minLength": 1, "maxLength": 253},
                            "conditions": {"type": "array", "maxItems": 8, "items": _CONDITION},
                        },
                    },
                }
            },
        },
    },
}

_HTTPROUTE_VALIDATOR = jsonschema.Draft202012Validator(
    HTTPROUTE_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def validate(obj: dict) -> None:
    """Raise SchemaError naming the first field that does not match the kind's schema."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    if (api_version, kind) == ("gateway.networking.k8s.io/v1", "HTTPRoute"):
        validator = _HTTPROUTE_VALIDATOR
    else:
        try:
            validator = _core_validator(kind, api_version)
        except FileNotFoundError:
            raise SchemaError("", f"no schema for {kind} {api_version}") from None
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is not None:
        field = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in error.absolute_path).replace(".[", "[")
        raise SchemaError(field, error.message)


def validate_manifest(obj: dict) -> None:
    """What `kubernetes-validate --strict` does for a file's document (used on the example manifests)."""
    if obj.get("kind") == "HTTPRoute":
        validate(obj)
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
