"""The user's manifests, rendered for the idle colour and server-side applied with field manager bluegreen
(instead of setting the image): each problem is one line naming the file and the object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError

from ..config import Colour, Settings, render
from ..errors import TargetError
from ..kube_client import KubeObjects


def apply_manifests(objects: KubeObjects, settings: Settings, colour: Colour, version: str, image: str) -> None:
    for file in settings.target.manifests:
        path = settings.path(file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise TargetError(f"manifest {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise TargetError(f"manifest {path} is not valid YAML: not UTF-8 text") from None
        text = render(text, app=settings.app, colour=colour, version=version, image=image,
                      namespace=objects.namespace)
        try:
            docs = [d for d in yaml.safe_load_all(text) if d]
        except yaml.YAMLError as exc:
            # the problem and where, not the parser's first line ("while parsing a block mapping")
            mark = getattr(exc, "problem_mark", None)
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise TargetError(f"manifest {path} is not valid YAML: {problem}{where}") from None
        for doc in docs:
            _apply(objects, doc, path)


def _apply(objects: KubeObjects, doc: Any, path: Path) -> None:
    from lightkube.codecs import from_dict
    from lightkube.core.exceptions import LoadResourceError

    meta = doc.get("metadata") if isinstance(doc, dict) else None
    name = (meta.get("name") if isinstance(meta, dict) else None) or "?"
    kind = doc.get("kind") if isinstance(doc, dict) else None
    try:
        obj = from_dict(doc)
    except (LoadResourceError, AttributeError, TypeError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TargetError(f"manifest {path}: {kind} {name}: {reason}") from None
    # lightkube's models drop fields they do not know (a typo such as `contianers`): the object would be
    # applied without them, so refuse, as kubectl's strict field validation does
    unknown = _dropped_field(doc, obj.to_dict())
    if unknown:
        raise TargetError(f"manifest {path}: {kind} {name}: unknown field {unknown!r}")
    what = f"apply {kind} {name} from {path.name}"
    kube = objects.kube
    try:
        kube.call(what, lambda: kube.client.apply(obj, namespace=objects.namespace, field_manager="bluegreen",
                                                  force=True))
    except ApiError as exc:
        raise kube.error(what, exc) from None


def _dropped_field(given: Any, kept: Any, path: str = "") -> str | None:
    """The first field of `given` (a manifest document) missing from `kept` (what will be sent)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            here = f"{path}.{key}" if path else str(key)
            if value is not None and key not in kept:
                return here
            found = _dropped_field(value, kept.get(key), here)
            if found:
                return found
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (item, kept_item) in enumerate(zip(given, kept)):
            found = _dropped_field(item, kept_item, f"{path}[{i}]")
            if found:
                return found
    return None
