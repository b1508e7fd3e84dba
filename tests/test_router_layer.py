"""The router layer: router modules load only when a config uses them, and the Router base class's contract
(a lost answer is read back before deciding, asynchronous routers are polled until applied, every wait has a
deadline, only weighted routers split), shown with a tiny in-memory router."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from importlib.util import find_spec
from pathlib import Path
from typing import ClassVar

import pytest

from bluegreen.config import CaddyRouter, load_config
from bluegreen.errors import TargetError
from bluegreen.routers.base import Router
from bluegreen.traffic import Weights, all_to
from conftest import EXAMPLE_APP, assert_one_line_error

KINDS = ("caddy", "haproxy", "envoy", "traefik", "nginx")


def run_python(code: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    return result, elapsed


def test_help_imports_no_router_and_no_engine_module() -> None:
    result, elapsed = run_python(
        """
        import sys
        from bluegreen.cli import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        heavy = ("bluegreen.routers", "bluegreen.targets", "bluegreen.config", "bluegreen.pipeline", "pydantic",
                 "httpx", "yaml")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m.startswith(heavy)))
        """
    )
    assert "usage: bluegreen" in result.stdout  # --help really ran
    assert result.stdout.rstrip().endswith("[]"), result.stdout
    print(f"bluegreen --help in a fresh interpreter: {elapsed:.3f} s")  # the 0.3 s target is bench/help_time.py's
    assert elapsed < 2.0  # a backstop to the import check above, wide for a busy machine (0.4 s with two CPU hogs)


def router_modules_after_building(tmp_path: Path, router: str) -> list[str]:
    """The bluegreen.routers.* modules a fresh process has after building a local target with `router`."""
    config = tmp_path / "bluegreen.yml"
    config.write_text(textwrap.dedent(f"""\
        app: layer
        environments:
          test:
            target:
              kind: local
              command: ["{sys.executable}", "{EXAMPLE_APP}", "--port", "{{port}}"]
              state_dir: state
              router: {router}
        """))
    result, _ = run_python(
        f"""
        import sys
        from bluegreen.config import load_config
        from bluegreen.targets import make_target
        target = make_target(load_config({str(config)!r}))
        print(type(target.router).__name__, sorted(m for m in sys.modules if m.startswith("bluegreen.routers.")))
        """
    )
    return result.stdout.split(maxsplit=1)


def test_a_router_module_is_imported_only_when_the_config_uses_it(tmp_path: Path) -> None:
    built = [kind for kind in KINDS if find_spec(f"bluegreen.routers.{kind}")]
    assert "caddy" in built
    for kind in built:  # every kind in this tree; after the merge, all five
        name, modules = router_modules_after_building(tmp_path, f"{{kind: {kind}, listen: '127.0.0.1:1'}}")
        assert name.lower().startswith(kind), name
        expected = sorted(["bluegreen.routers.base", "bluegreen.routers.files", "bluegreen.routers.proxy",
                           f"bluegreen.routers.{kind}"])
        assert modules.strip() == str(expected), (kind, modules)  # files: the I/O seam every router shares


def test_a_router_without_kind_is_caddy(tmp_path: Path) -> None:
    name, modules = router_modules_after_building(tmp_path, "{listen: '127.0.0.1:1'}")
    assert name == "CaddyRouter"
    config = tmp_path / "bluegreen.yml"
    config.write_text(config.read_text().replace("      router: {listen: '127.0.0.1:1'}\n", ""))
    settings = load_config(config)
    assert isinstance(settings.target.router, CaddyRouter) and settings.target.router.kind == "caddy"


def test_an_unknown_router_kind_is_one_line_naming_router_kind(tmp_path: Path) -> None:
    config = tmp_path / "bluegreen.yml"
    config.write_text(textwrap.dedent("""\
        app: layer
        environments:
          test:
            target:
              kind: local
              command: ["./server"]
              router:
                kind: squid
        """))
    result = subprocess.run([sys.executable, "-m", "bluegreen", "validate", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    error = assert_one_line_error(result)
    assert f"{config}:8: environments.test.target.router.kind: unknown kind 'squid'" in error, error
    assert all(repr(kind) in error for kind in KINDS), error


# --- the base class's contract, on an in-memory router ------------------------------------------------------


class MemoryRouter(Router):
    """The one value is a dict in memory: a router that is no proxy (nothing listens, nothing runs). `fail`: write raises after ('lost') or instead of ('refused')
    changing it; `apply_after`: polls of applied() before the value takes effect (an asynchronous router);
    None means it never takes effect."""

    kind: ClassVar[str] = "memory"

    def __init__(self, tmp_path: Path, *, weighted: bool = False) -> None:
        self.weighted = weighted  # type: ignore[misc]  # per instance, for the split tests
        self.value: Weights | None = None
        self.pending: Weights | None = None
        self.fail: str | None = None
        self.apply_after: int | None = 0
        self.polls = 0

    def read(self) -> Weights | None:
        return self.value

    def write(self, weights: Weights) -> None:
        if self.fail == "refused":
            raise OSError(111, "Connection refused")
        if self.apply_after == 0:
            self.value = dict(weights)
        else:
            self.pending = dict(weights)
        if self.fail == "lost":
            raise TargetError("the answer was lost (connection reset)")

    def applied(self, weights: Weights) -> bool:
        self.polls += 1
        if self.pending is not None and self.apply_after is not None and self.polls >= self.apply_after:
            self.value, self.pending = self.pending, None
        return super().applied(weights)

    def raw_switch_command(self, to: str) -> str:
        return f"echo {to}"


def test_a_switch_whose_answer_was_lost_is_read_back(tmp_path: Path) -> None:
    router = MemoryRouter(tmp_path)
    router.fail = "lost"
    router.switch("green", time.monotonic() + 5)  # the value changed: no error
    assert router.live() == "green" and router.read() == all_to("green")


def test_a_switch_that_did_not_happen_names_the_router(tmp_path: Path) -> None:
    router = MemoryRouter(tmp_path)
    router.value = all_to("blue")
    router.fail = "refused"
    with pytest.raises(TargetError) as error:
        router.switch("green", time.monotonic() + 5)
    message = str(error.value)
    assert "router memory: " in message and "Connection refused" in message, message
    assert "live routing is unchanged (all to blue)" in message, message
    assert router.live() == "blue"


def test_an_asynchronous_router_is_polled_until_applied(tmp_path: Path) -> None:
    router = MemoryRouter(tmp_path)
    router.apply_after = 3
    router.switch("green", time.monotonic() + 5)
    assert router.polls == 3  # returned at the first poll that saw it applied, not before
    assert router.live() == "green"


def test_a_change_never_applied_fails_at_the_deadline(tmp_path: Path) -> None:
    router = MemoryRouter(tmp_path)
    router.value = all_to("blue")
    router.apply_after = None
    started = time.monotonic()
    with pytest.raises(TargetError, match=r"router memory: the change to all to green was not "
                                          r"applied before timeouts\.switch"):
        router.switch("green", started + 0.3)
    assert 0.3 <= time.monotonic() - started < 10  # wide for a busy machine: one that missed the deadline never ends
    assert router.polls > 1


def test_only_a_weighted_router_splits(tmp_path: Path) -> None:
    split = {"blue": 90, "green": 10}
    router = MemoryRouter(tmp_path)
    router.value = all_to("blue")
    with pytest.raises(TargetError, match="router memory cannot split traffic"):
        router.set_weights(split, time.monotonic() + 5)
    assert router.read() == all_to("blue")  # refused before anything was written

    weighted = MemoryRouter(tmp_path, weighted=True)
    weighted.set_weights(split, time.monotonic() + 5)
    assert weighted.weights() == split and weighted.live() == "blue"  # the larger share is the live colour
    with pytest.raises(ValueError, match="adding up to 100"):
        weighted.set_weights({"blue": 90, "green": 20}, time.monotonic() + 5)
