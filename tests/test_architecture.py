"""The shape of the code (docs/architecture.md): small modules, no import cycles between packages, and one
place that knows which runtimes and routers exist. Measured on the source itself, with the ast module."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import ROOT

SRC = ROOT / "src"
PACKAGE = SRC / "bluegreen"
MAX_MODULE_LINES = 500
MAX_CLASS_LINES = 400
# Where kinds may be named: the factory that pairs them, and the config models users write them in.
KNOWS_KINDS = ("bluegreen/targets/__init__.py", "bluegreen/config/")
KINDS = {"local", "docker", "servers", "kubernetes", "caddy", "haproxy", "envoy", "traefik", "nginx", "service",
         "httproute", "each", "all"}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def unit(module: str) -> str:
    """The package a module belongs to (bluegreen.routers), or the top-level module itself (bluegreen.report)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else module


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The bluegreen modules `module` imports, wherever the import is (top level, in a function, TYPE_CHECKING)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found |= {base, *(f"{base}.{alias.name}" for alias in node.names)}
    return {name for name in found if name in known}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_module_and_no_class_is_too_long():
    known = modules()
    assert len(known) > 40, "the scan finds too few modules: it would pass whatever the tree holds"
    long_modules, long_classes = [], []
    for path in known.values():
        text = path.read_text()
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(SRC)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
                long_classes.append(f"{path.relative_to(SRC)}: class {node.name}, {node.end_lineno - node.lineno + 1}")
    assert long_modules == [] and long_classes == [], (long_modules, long_classes)


def test_no_import_cycle_between_packages():
    known = modules()
    edges: dict[str, set[str]] = defaultdict(set)
    for module, path in known.items():
        edges[unit(module)] |= {unit(other) for other in imports(module, path, known)} - {unit(module)}
    assert edges["bluegreen.targets"] >= {"bluegreen.routers", "bluegreen.runtimes", "bluegreen.state"}, edges
    assert cycles(edges) == []


def test_a_cycle_is_found_when_there_is_one():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def names_a_kind(node: ast.AST) -> bool:
    """`x.kind == "caddy"`, `kind in ("local", ...)`, `router_host == "each"`: a branch on which kind it is."""
    if not isinstance(node, ast.Compare):
        return False
    sides = [node.left, *node.comparators]
    strings = {s.value for side in sides for s in ast.walk(side) if isinstance(s, ast.Constant)
               and isinstance(s.value, str)}
    kind_attribute = any(isinstance(s, ast.Attribute) and s.attr == "kind" for side in sides for s in ast.walk(side))
    return bool(strings & KINDS) or kind_attribute


def test_only_the_factory_and_the_config_models_name_runtime_or_router_kinds():
    offenders = []
    for path in modules().values():
        where = path.relative_to(SRC).as_posix()
        if where.startswith(KNOWS_KINDS) or where == "bluegreen/config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if names_a_kind(node):
                offenders.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


def test_the_kind_scan_sees_a_branch_on_a_kind():
    assert names_a_kind(ast.parse('settings.target.router.kind == "caddy"', mode="eval").body)
    assert names_a_kind(ast.parse('cfg.router_host == "each"', mode="eval").body)
    assert not names_a_kind(ast.parse('phase.status == "failed"', mode="eval").body)
