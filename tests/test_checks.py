"""Smoke checks and the test-suite runner, against the real example app."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import httpx
import pytest

from bluegreen.checks import smoke
from bluegreen.checks.suite import run_test_suite
from bluegreen.config import SmokeCheck, TestSuite
from conftest import EXAMPLE_APP, free_port


@pytest.fixture(scope="module")
def app_url():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(EXAMPLE_APP), "--port", str(port), "--version", "1.2.3",
                             "--colour", "green"], stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(url + "/healthz")
            break
        except httpx.ConnectError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait()


def probe(url: str, **check) -> str | None:
    with httpx.Client() as client:
        return smoke.probe(client, SmokeCheck.model_validate({"name": "t", **check}), url,
                           {"version": "1.2.3", "colour": "green"})


def test_expectations_pass_on_a_matching_response(app_url):
    assert probe(app_url, path="/", expect={
        "status": [200, 204], "body_contains": '"app"', "body_regex": r'"version":\s*"1\.2\.\d"',
        "json": {"version": "{version}", "colour": "{colour}"}, "headers": {"Content-Type": "json"},
        "max_latency": "2s",
    }) is None


@pytest.mark.parametrize("expect, reason", [
    ({"status": 201}, "GET /: status 200, expected 201"),
    ({"body_contains": "9.9.9"}, "GET /: body does not contain '9.9.9'"),
    ({"body_regex": "^nope"}, "GET /: body does not match /^nope/"),
    ({"json": {"version": "2"}}, "GET /: JSON field 'version' is '1.2.3', expected '2'"),
    ({"json": {"build.sha": "x"}}, "GET /: JSON field 'build.sha' is missing"),
    ({"headers": {"x-app-version": "9"}}, "GET /: header x-app-version is '1.2.3', expected it to contain '9'"),
    ({"max_latency": "0ms"}, "GET /: answered in"),
])
def test_each_expectation_names_what_differs(app_url, expect, reason):
    failure = probe(app_url, path="/", expect=expect)
    assert failure is not None and failure.startswith(reason), failure


def test_non_json_body_and_connection_refused(app_url):
    assert probe(app_url, path="/version", expect={"json": {"a": 1}}).startswith("GET /version: body is not JSON")
    refused = probe(f"http://127.0.0.1:{free_port()}", path="/healthz")
    assert refused.startswith("GET http://127.0.0.1:") and "ConnectError" in refused


def test_retries_until_the_deadline_then_reports_the_last_failure(app_url):
    check = SmokeCheck(name="missing", path="/nope")
    started = time.monotonic()
    result = smoke.run_until_passing(check, app_url, {}, consecutive=1, interval=0.1,
                                     deadline=time.monotonic() + 1, request_timeout=1)
    # Wide for a busy machine: one that ignored the deadline would retry until the test's timeout.
    assert not result.passed and 1 <= time.monotonic() - started < 10
    assert result.attempts >= 3 and result.detail.startswith("GET /nope: status 404, expected 200")


def test_consecutive_successes_are_required(app_url):
    check = SmokeCheck(name="health", path="/healthz")
    result = smoke.run_until_passing(check, app_url, {}, consecutive=3, interval=0.05,
                                     deadline=time.monotonic() + 5, request_timeout=1)
    assert result.passed and result.attempts == 3


def test_failure_limit_ends_retries_early(app_url):
    check = SmokeCheck(name="missing", path="/nope")
    started = time.monotonic()
    result = smoke.run_until_passing(check, app_url, {}, consecutive=1, interval=0.05,
                                     deadline=time.monotonic() + 30, request_timeout=1, failure_limit=2)
    assert not result.passed and result.attempts == 2 and time.monotonic() - started < 10  # not the 30 s deadline
    assert "(2 failures)" in result.detail


def test_the_same_failure_in_a_row_ends_retries_early(app_url):
    """smoke.failure_limit: a steady failure fails at once instead of waiting out the deadline."""
    check = SmokeCheck(name="missing", path="/nope")
    result = smoke.run_until_passing(check, app_url, {}, consecutive=1, interval=0.05,
                                     deadline=time.monotonic() + 60, request_timeout=1, same_failure_limit=3)
    assert not result.passed and result.attempts == 3 and result.duration < 30
    assert result.detail.startswith("GET /nope: status 404, expected 200") and result.detail.endswith("(3 times in a row)")


def test_failures_that_change_are_retried_until_the_deadline():
    """Answers that keep changing (a colour still warming up: 502, then 503...) are not a steady failure."""
    import http.server
    import itertools

    statuses = itertools.cycle([502, 503])

    class Flapping(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(next(statuses))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flapping)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        check = SmokeCheck(name="flapping", path="/")
        result = smoke.run_until_passing(check, f"http://127.0.0.1:{server.server_address[1]}", {}, consecutive=1,
                                         interval=0.05, deadline=time.monotonic() + 1, request_timeout=1,
                                         same_failure_limit=2)
    finally:
        server.shutdown()
        server.server_close()
    assert not result.passed and result.attempts > 2  # ended by the deadline, not by the limit
    assert "times in a row" not in result.detail


def test_checks_run_concurrently(app_url):
    checks = [SmokeCheck(name=f"c{i}", path="/healthz") for i in range(4)]
    all_started = threading.Barrier(len(checks), timeout=10)  # breaks unless all four run at the same time

    def together(check):
        all_started.wait()
        return smoke.run_until_passing(check, app_url, {}, consecutive=1, interval=0.1,
                                       deadline=time.monotonic() + 5, request_timeout=1)

    results = smoke.run_all(checks, together)
    assert [r.name for r in results] == ["c0", "c1", "c2", "c3"] and all(r.passed for r in results)


def test_request_header_values_never_appear_in_results(app_url):
    check = SmokeCheck(name="auth", path="/nope", headers={"Authorization": "Bearer top-secret-token"})
    result = smoke.run_until_passing(check, app_url, {}, consecutive=1, interval=0.05,
                                     deadline=time.monotonic() + 0.3, request_timeout=1)
    assert "top-secret-token" not in result.model_dump_json()


def test_suite_gets_env_and_junit_results(tmp_path):
    junit = tmp_path / "out.xml"
    script = tmp_path / "suite.py"
    script.write_text(
        "import os, pathlib\n"
        "print('testing', os.environ['BLUEGREEN_PREVIEW_URL'], os.environ['EXTRA'])\n"
        "pathlib.Path('out.xml').write_text('<testsuites><testsuite tests=\"3\" failures=\"1\" errors=\"0\"/>"
        "</testsuites>')\n"
        "raise SystemExit(1)\n"
    )
    lines = []
    suite = TestSuite(command=["{python}", "suite.py"], env={"EXTRA": "x"}, junit="out.xml")
    junit.write_text("stale")
    result = run_test_suite(suite, base_dir=tmp_path, env={"BLUEGREEN_PREVIEW_URL": "http://p"},
                            values={"python": sys.executable}, log=lines.append)
    assert lines == ["testing http://p x"]
    assert not result.passed and result.detail.startswith("exited with code 1: testing http://p x")
    assert (result.tests, result.failures) == (3, 1) and "3 tests, 1 failed" in result.detail


def test_suite_that_cannot_start(tmp_path):
    suite = TestSuite(command=["/no/such/binary"])
    result = run_test_suite(suite, base_dir=tmp_path, env={}, values={}, log=lambda _: None)
    assert not result.passed and result.detail == "cannot start '/no/such/binary': No such file or directory"
