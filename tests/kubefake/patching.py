"""The patch formats the API server accepts, for the fields bluegreen and its users touch.

- JSON merge patch (RFC 7386): maps merge, `null` deletes, lists are replaced.
- Strategic merge patch: like merge, but lists with a patch merge key (containers by
  name, env by name, Service ports by port, conditions by type...) merge item by
  item; `$patch: delete|replace` and kubectl's `$setElementOrder`/`$retainKeys`
  directives are understood. CRDs refuse it (415), like a real API server.
- JSON patch (RFC 6902): add, remove, replace, test, move, copy.
- Server-side apply, approximated: the applied configuration is merged like a
  strategic patch (keyed lists for core kinds, atomic lists for CRDs); each field
  manager owns the leaf fields it set; a field owned by another manager with a
  different value is a conflict unless `force=true`; fields a manager applied
  before and omits now are removed when nobody else owns them. Not modelled:
  ownership of whole list items, defaulted fields, `x-kubernetes-list-map-keys`
  beyond the table below.
"""

from __future__ import annotations

import copy
import json
from typing import Any

# field name -> patch merge key (from the Kubernetes API types' patchMergeKey tags)
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "ownerReferences": "uid",
    "hostAliases": "ip",
    "topologySpreadConstraints": "topologyKey",
}


class PatchError(Exception):
    """The patch cannot be applied; the server answers 422 (or 400 for a malformed one)."""


def merge_key(path: tuple, strategic: bool) -> str | None:
    if not strategic or not path:
        return None
    name = path[-1]
    if name == "ports":  # container ports merge by containerPort, Service ports by port
        return "containerPort" if any(p in ("containers", "initContainers") for p in path) else "port"
    return MERGE_KEYS.get(name) if isinstance(name, str) else None


def json_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any, path: tuple = ()) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key in ("$retainKeys", "$patch"):
            continue  # ordering/retain hints from kubectl: the result here is the same without them
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            result[field] = [v for v in result.get(field, []) if v not in value]
            continue
        if value is None:
            result.pop(key, None)
            continue
        child = (*path, key)
        mkey = merge_key(child, True)
        if isinstance(value, list) and mkey is not None:
            result[key] = _merge_keyed_list(result.get(key) or [], value, mkey, child)
        else:
            merged = strategic_merge(result.get(key), value, child)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_keyed_list(live: list, patch: list, key: str, path: tuple) -> list:
    result = copy.deepcopy(live)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(f"{'.'.join(map(str, path))}: map does not contain declared merge key: {key}")
        index = next((i for i, x in enumerate(result) if isinstance(x, dict) and x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append({k: v for k, v in item.items() if k != "$patch"})
        else:
            result[index] = strategic_merge(result[index], item, path)
    return result


# --- JSON patch ------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            doc = doc[int(part)]
        elif isinstance(doc, dict):
            doc = doc[part]
        else:
            raise KeyError(part)
    return doc


def json_patch(doc: Any, ops: list) -> Any:
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    for op in ops:
        name, parts = op.get("op"), _pointer(op.get("path", ""))
        try:
            if name == "test":
                if _walk(doc, parts) != op.get("value"):
                    raise PatchError(f"testing value {op['path']} failed: test failed")
                continue
            if name in ("move", "copy"):
                value = copy.deepcopy(_walk(doc, _pointer(op["from"])))
                if name == "move":
                    doc = _remove(doc, _pointer(op["from"]))
                doc = _add(doc, parts, value)
            elif name == "add":
                doc = _add(doc, parts, copy.deepcopy(op["value"]))
            elif name == "remove":
                doc = _remove(doc, parts)
            elif name == "replace":
                _walk(doc, parts)  # must exist
                doc = _add(_remove(doc, parts), parts, copy.deepcopy(op["value"]))
            else:
                raise PatchError(f"unexpected JSON patch operation {name!r}")
        except (KeyError, IndexError, ValueError, TypeError):
            raise PatchError(f"doc is missing path: {op.get('path')!r}") from None
    return doc


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        parent.insert(len(parent) if last == "-" else int(last), value)
    else:
        parent[last] = value
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        parent.pop(int(last))
    else:
        del parent[last]
    return doc


# --- server-side apply -----------------------------------------------------------------------

_UNOWNED = {("apiVersion",), ("kind",), ("metadata", "name"), ("metadata", "namespace"),
            ("metadata", "resourceVersion"), ("metadata", "uid"), ("metadata", "generation"),
            ("metadata", "creationTimestamp"), ("metadata", "managedFields")}


def leaf_paths(obj: Any, strategic: bool, path: tuple = ()) -> set[tuple]:
    """Field paths of an object's leaves; keyed list items appear as ('k', key, value)."""
    if path in _UNOWNED or path[:1] == ("status",):
        return set()
    if isinstance(obj, dict) and obj:
        out: set[tuple] = set()
        for key, value in obj.items():
            out |= leaf_paths(value, strategic, (*path, key))
        return out
    mkey = merge_key(path, strategic)
    if isinstance(obj, list) and obj and mkey is not None and all(isinstance(i, dict) and mkey in i for i in obj):
        out = set()
        for item in obj:
            out |= leaf_paths(item, strategic, (*path, ("k", mkey, json.dumps(item[mkey]))))
        return out
    return {path}


def get_path(obj: Any, path: tuple) -> Any:
    for part in path:
        if isinstance(part, tuple):
            _, key, raw = part
            want = json.loads(raw)
            obj = next((i for i in (obj or []) if isinstance(i, dict) and i.get(key) == want), None)
        elif isinstance(obj, dict):
            obj = obj.get(part)
        else:
            return None
        if obj is None:
            return None
    return obj


def delete_path(obj: Any, path: tuple) -> None:
    parent = get_path(obj, path[:-1])
    last = path[-1]
    if isinstance(last, tuple) and isinstance(parent, list):
        _, key, raw = last
        parent[:] = [i for i in parent if not (isinstance(i, dict) and i.get(key) == json.loads(raw))]
    elif isinstance(parent, dict):
        parent.pop(last, None)
    # prune maps and keyed items left empty by the removal
    if len(path) > 1:
        container = get_path(obj, path[:-1])
        if container in ({}, []):
            delete_path(obj, path[:-1])


def fields_v1(paths: set[tuple]) -> dict:
    """The `fieldsV1` shape of managedFields (f:name / k:{...} keys, '.' for a list item)."""
    root: dict = {}
    for path in sorted(paths, key=str):
        node = root
        for part in path:
            key = f"k:{json.dumps({part[1]: json.loads(part[2])}, separators=(',', ':'))}" if isinstance(part, tuple) else f"f:{part}"
            node = node.setdefault(key, {})
            if isinstance(part, tuple):
                node.setdefault(".", {})
    return root


def path_text(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part[1]}={json.loads(part[2])}]" if isinstance(part, tuple) else f".{part}"
    return out
