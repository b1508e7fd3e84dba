"""strategy: canary with a real HAProxy (its split backend), the real CLI in fresh processes and the example app.

Each test deploys version 1 (the first release is whole: there is no stable colour to split with), then
a canary of the next version on green; the split is read from HAProxy itself (`status --json`) and
counted through the live URL by the colour that answered."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from importlib import import_module
from pathlib import Path

import httpx
import pytest

from conftest import LocalEnv, assert_one_line_error
from test_analysis import ERROR_RATE, Traffic, prometheus  # noqa: F401  (prometheus: a fixture)

from bluegreen.config import WEIGHTED_ROUTERS
from bluegreen.report import load_result

pytestmark = pytest.mark.skipif(
    not any(Path(p, "haproxy").exists() for p in [*os.environ.get("PATH", "").split(":"), "/usr/sbin"]),
    reason="HAProxy is not installed (run .ci/setup-packages.sh)",
)


def canary_env(env: LocalEnv, steps: str, extra: str = "") -> LocalEnv:
    """The env's config (no test suite: faster) with HAProxy and `strategy: canary` over `steps` (YAML)."""
    env.write(test_suite="", extra=f"strategy: canary\ncanary:\n  steps: {steps}\n{extra}")
    text = env.config.read_text()
    old = f'router: {{listen: "127.0.0.1:{env.proxy_port}"}}'
    assert old in text
    env.config.write_text(text.replace(old, f'router: {{kind: haproxy, listen: "127.0.0.1:{env.proxy_port}"}}'))
    return env


def split(env: LocalEnv) -> dict[str, int] | None:
    """The weights as bluegreen reads them from HAProxy."""
    result = env.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["router"]["weights"]


def history(env: LocalEnv) -> list[dict]:
    result = env.cli("status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["history"]


def phases(env: LocalEnv) -> list[str]:
    return [p["name"] for p in env.report()["phases"]]


def counted(env: LocalEnv, requests: int) -> Counter:
    """Requests through the live URL, counted by the colour that answered."""
    with httpx.Client(timeout=5) as client:
        return Counter(client.get(env.live_url + "/").json()["colour"] for _ in range(requests))


@pytest.fixture
def first_release(local_env: LocalEnv) -> LocalEnv:
    """Version 1 live on blue, whole."""
    canary_env(local_env, "[{weight: 10, pause: 0.5s}, {weight: 50, pause: 0.5s}]")
    result = local_env.cli("deploy", "--version", "1")
    assert result.returncode == 0, result.stderr
    assert split(local_env) == {"blue": 100, "green": 0}
    return local_env


def test_a_good_canary_walks_every_step_to_100(first_release: LocalEnv) -> None:
    env = first_release
    plan = env.cli("deploy", "--version", "2", "--dry-run", "--json")
    assert "send green 10% -> 50% -> 100% of the requests, with gates at each step" in json.loads(plan.stdout)["plan"]
    started = time.monotonic()
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 0, result.stderr
    report = env.report()
    assert report["status"] == "succeeded" and report["canary_weight"] == 100 and report["canary_step"] == "3/3"
    names = phases(env)
    steps = [n for n in names if n.startswith("canary step")]
    assert steps == ["canary step 1/3: green 10%", "canary step 2/3: green 50%"], names
    assert names.index(steps[-1]) < names.index("switch blue -> green") < names.index("verify live")
    step_phases = [p for p in report["phases"] if p["name"] in steps]
    assert all(p["status"] == "succeeded" and p["duration"] >= 0.5 for p in step_phases), step_phases
    assert "2 smoke check(s) held" in step_phases[0]["detail"]
    assert split(env) == {"blue": 0, "green": 100}
    assert env.live_version() == "2"
    assert history(env)[0]["outcome"] == "succeeded"
    assert time.monotonic() - started < 30
    assert "| canary | 100% on the new colour, step 3/3 |" in result_markdown(env)
    assert {k: v for k, v in load_result(env.dir / "bluegreen-report.json").outputs().items() if "canary" in k} == {
        "canary-weight": "100", "canary-step": "3/3"}


def result_markdown(env: LocalEnv) -> str:
    return load_result(env.dir / "bluegreen-report.json").to_markdown()


def test_a_failing_gate_aborts_to_zero_with_exit_4(first_release: LocalEnv) -> None:
    env = first_release
    # Passes every check on its preview URL; answers 500 to requests that came through HAProxy.
    result = env.cli("deploy", "--version", "2+fail-live")
    assert result.returncode == 4, result.stderr
    report = env.report()
    assert report["status"] == "rolled_back" and report["switched_back"] and report["canary_weight"] == 0
    failed = next(p for p in report["phases"] if p["status"] == "failed")
    # The gate that sees a green answer first: at 10% its half-second window may hold no green request on a busy
    # machine (HAProxy sends every tenth), at 50% it cannot miss. Never the 100% switch.
    assert failed["name"].startswith(("canary step 1/3: green 10%", "canary step 2/3: green 50%")), failed
    assert "canary gate: smoke check" in report["reason"] and "through http://127.0.0.1" in report["reason"]
    assert "roll back green -> blue" in phases(env)
    assert split(env) == {"blue": 100, "green": 0}
    assert set(counted(env, 50)) == {"blue"}
    assert history(env)[0]["outcome"] == "rolled_back"


def test_a_paused_canary_resumes_at_the_next_step_in_a_fresh_process(local_env: LocalEnv) -> None:
    env = canary_env(local_env, "[{weight: 25, pause: until promoted}, {weight: 60, pause: 0.5s}]")
    assert env.cli("deploy", "--version", "1").returncode == 0
    result = env.cli("deploy", "--version", "2")
    assert result.returncode == 0, result.stderr
    report = env.report()
    assert report["status"] == "paused" and report["canary_weight"] == 25 and report["canary_step"] == "1/3"
    outputs = load_result(env.dir / "bluegreen-report.json").outputs()
    assert (outputs["live-colour"], outputs["live-version"], outputs["canary-weight"], outputs["canary-step"]) == (
        "blue", "1", "25", "1/3")
    assert outputs["rollback-command"] == ""  # `abort` is the way back from a paused canary
    assert split(env) == {"blue": 75, "green": 25}
    seen = counted(env, 400)  # HAProxy's weighted round robin: the configured share, request by request
    assert abs(seen["green"] / 400 * 100 - 25) <= 2, seen
    status = json.loads(env.cli("status", "--json").stdout)
    assert status["lock"] is None  # released: a person decides later, no CI job waits
    assert status["history"][0]["outcome"] == "paused" and status["history"][0]["weight"] == 25

    refused = env.cli("deploy", "--version", "3")  # a new deploy must not overwrite the stable colour
    assert refused.returncode == 1 and "a canary of version 2 on green is paused (blue 75% / green 25%): `bluegreen promote` or `bluegreen abort` it first" in refused.stderr
    assert split(env) == {"blue": 75, "green": 25}

    result = env.cli("promote")
    assert result.returncode == 0, result.stderr
    names = phases(env)
    assert "canary step 1/3: green 25%" not in names and "canary step 2/3: green 60%" in names, names
    assert env.report()["status"] == "succeeded" and env.report()["canary_weight"] == 100
    assert split(env) == {"blue": 0, "green": 100} and env.live_version() == "2"
    assert [h["outcome"] for h in history(env)[:2]] == ["succeeded", "paused"]


def test_promote_full_jumps_to_100_and_abort_sends_the_canary_to_zero(local_env: LocalEnv) -> None:
    env = canary_env(local_env, "[{weight: 5, pause: until promoted}, {weight: 50, pause: 0.5s}]")
    assert env.cli("deploy", "--version", "1").returncode == 0
    assert env.cli("deploy", "--version", "2").returncode == 0
    assert split(env) == {"blue": 95, "green": 5}
    result = env.cli("abort")
    assert result.returncode == 0, result.stderr
    assert split(env) == {"blue": 100, "green": 0} and env.live_version() == "1"
    assert history(env)[0]["action"] == "abort"
    nothing = env.cli("abort")
    assert nothing.returncode == 1 and "abort failed: no canary is paused" in nothing.stderr

    assert env.cli("deploy", "--version", "3").returncode == 0  # green again, paused at 5%
    result = env.cli("promote", "--full")
    assert result.returncode == 0, result.stderr
    assert not [n for n in phases(env) if n.startswith("canary step")]
    assert split(env) == {"blue": 0, "green": 100} and env.live_version() == "3"

    # A release prepared with --no-switch goes live by the strategy too: promote starts its canary.
    assert env.cli("deploy", "--version", "4", "--no-switch").returncode == 0
    result = env.cli("promote", "--expect-version", "4")
    assert result.returncode == 0, result.stderr
    assert env.report()["status"] == "paused" and "canary step 1/3: blue 5%" in phases(env)
    assert split(env) == {"blue": 5, "green": 95}


def test_a_cancelled_canary_ends_at_zero_on_the_new_colour(first_release: LocalEnv) -> None:
    env = canary_env(first_release, "[{weight: 20, pause: 60s}]")
    run = subprocess.Popen(
        [sys.executable, "-m", "bluegreen", "deploy", "-c", str(env.config), "--version", "2"],
        cwd=env.dir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "BLUEGREEN_CI": "plain"},
    )
    deadline = time.monotonic() + 30
    while split(env) != {"blue": 80, "green": 20}:
        assert run.poll() is None, run.communicate()
        assert time.monotonic() < deadline, "the canary never reached its first step"
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 4, stderr
    report = env.report()
    assert report["status"] == "cancelled" and report["cancelled_in"] == "canary step 1/2: green 20%", report
    assert split(env) == {"blue": 100, "green": 0}
    assert history(env)[0]["outcome"] == "cancelled"


@pytest.mark.parametrize(
    ("target", "named"),
    [
        ("{kind: local, command: [app]}", "router kind caddy"),
        ("{kind: docker, image: 'app:{version}'}", "the docker target's caddy router"),
        ("{kind: kubernetes}", "the Kubernetes Service selector"),
    ],
)
def test_canary_on_a_router_that_cannot_split_is_refused_at_validation(tmp_path: Path, target: str, named: str) -> None:
    config = tmp_path / "bluegreen.yml"
    config.write_text(textwrap.dedent(f"""\
        app: testapp
        environments:
          prod:
            target: {target}
            strategy: canary
            canary: {{steps: [{{weight: 10, pause: 1m}}]}}
        """))
    result = subprocess.run([sys.executable, "-m", "bluegreen", "validate", "-c", str(config)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    error = assert_one_line_error(result)
    assert f"bluegreen.yml:5: environments.prod.strategy: canary needs a router that can split traffic; {named}" in error


def test_canary_steps_are_checked_at_validation(tmp_path: Path) -> None:
    config = tmp_path / "bluegreen.yml"
    for canary, message in [
        ("canary: {steps: [{weight: 50}, {weight: 10}]}", "canary.steps: weights must increase step by step"),
        ("canary: {steps: [{weight: 100, pause: 1m}]}", "the 100% step takes no pause"),
        ("canary: {steps: [{weight: 10, pause: someday}]}", "canary.steps[0].pause"),
        ("", "strategy: canary needs canary.steps"),
    ]:
        config.write_text(f"app: testapp\nstrategy: canary\n{canary}\nenvironments:\n  prod:\n"
                          "    target: {kind: local, command: [app], router: {kind: haproxy}}\n")
        result = subprocess.run([sys.executable, "-m", "bluegreen", "validate", "-c", str(config)],
                                capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, canary
        assert message in assert_one_line_error(result), (canary, result.stderr)


def test_the_config_knows_which_routers_can_split() -> None:
    """WEIGHTED_ROUTERS decides at validation without importing a router: it must agree with the routers."""
    from bluegreen.config.routers import KUBERNETES_ROUTERS, ADDRESS_ROUTERS, kind_of

    for model in (*ADDRESS_ROUTERS, *KUBERNETES_ROUTERS):
        module, _, name = model.implementation.partition(":")
        assert getattr(import_module(module), name).weighted == (kind_of(model) in WEIGHTED_ROUTERS), model


def test_the_analysis_gate_aborts_a_canary_whose_error_rate_rises(local_env: LocalEnv, prometheus: str) -> None:
    """A real Prometheus scraping both colours: the error rate of the canary's colour is the gate."""
    # 20%: on a busy machine (the suites run in parallel) 5% of the traffic gave the analysis too few requests to
    # see the canary's error rate within the step's pause.
    env = canary_env(local_env, "[{weight: 20, pause: 8s}]", extra=(
        f'analysis:\n  prometheus: {{url: "{prometheus}"}}\n  interval: 1s\n  duration: 2s\n  failure_limit: 2\n'
        f"  queries: [{{name: error-rate, query: '{ERROR_RATE}', max: 0.05}}]\n"))
    text = env.config.read_text()  # only /version is checked before: the home page is the users' traffic
    env.config.write_text(text.replace(text[text.index("    - name: home"):text.index("verify:")], ""))
    assert env.cli("deploy", "--version", "1").returncode == 0
    with Traffic(env.live_url, clients=6):  # 20% of it must give the canary's error rate a value
        good = env.cli("deploy", "--version", "2")
        assert good.returncode == 0, good.stderr
        step = next(p for p in env.report()["phases"] if p["name"] == "canary step 1/2: green 20%")
        assert step["status"] == "succeeded" and "queries within bounds for 8s" in step["detail"], step

        bad = env.cli("deploy", "--version", "3+errors-50")  # onto blue; green (2) is the stable colour
    assert bad.returncode == 4, bad.stderr
    report = env.report()
    assert report["status"] == "rolled_back" and report["canary_weight"] == 0
    assert "analysis: query 'error-rate'" in report["reason"] and "> max 0.05" in report["reason"], report["reason"]
    step = next(p for p in report["phases"] if p["name"] == "canary step 1/2: blue 20%")
    assert step["status"] == "failed" and step["duration"] < 8, step  # aborted inside the step's pause
    back = next(p for p in report["phases"] if p["name"].startswith("roll back"))
    assert back["status"] == "succeeded" and back["duration"] < 1.0, back  # 0% within one analysis interval (1s)
    assert split(env) == {"blue": 0, "green": 100} and env.live_version() == "2"
