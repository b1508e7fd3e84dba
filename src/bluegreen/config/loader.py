"""Loading bluegreen.yml: `${VAR}` expansion, validation, and errors that name file, line and field."""

from __future__ import annotations

import difflib
import os
import re
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .base import SCHEMA_URL, shorten
from .routers import WEIGHTED_ROUTERS, RouterModel
from .settings import Config, Settings

# --- ${VAR} expansion ----------------------------------------------------------------------------

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
        if isinstance(part, str) and " " in part:
            continue  # a union's tag that names a shape ('by colour'): no key has a space
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
    _check_url(settings, node, path)
    return settings


def _check_url(settings: Settings, node: yaml.Node | None, path: Path) -> None:
    """A router with no address of its own (a DNS record, a cloud load balancer) cannot say where users reach the
    app: verification needs the environment's `url`."""
    router = getattr(settings.target, "router", None)
    if settings.url or not isinstance(router, RouterModel) or router.listen_address() is not None:
        return
    where = ("environments", settings.environment, "url")
    line = _line_of(node, where[:2])
    raise ConfigError(f"{path}:{line}: {_dotted(where)}: router kind {router.kind} has no address of its own: set "
                      "the environment's url, where users reach the app (e.g. http://app.example.com:8080)")


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
    if not (router.splits() if isinstance(router, RouterModel) else router.kind in WEIGHTED_ROUTERS):
        what = {"service": "the Kubernetes Service selector", "all": "one of the routers of kind all"}.get(
            router.kind, f"router kind {router.kind}")
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
