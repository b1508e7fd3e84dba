"""Metric analysis against a real Prometheus (Debian `prometheus`) scraping the example app's /metrics.

Blue-green runs the analysis after the switch, as Argo Rollouts' postPromotionAnalysis: a release whose
error rate rises under live traffic is switched back (exit 4) though it passed every check before the
switch; a query Prometheus cannot answer stops the run before the switch (exit 1, live untouched).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port

PROMETHEUS = shutil.which("prometheus")
TOKEN = "s3cret-prometheus-token-4711"
ERROR_RATE = (
    'sum(rate(http_requests_total{colour="{colour}",path="/",code=~"5.."}[5s]) or vector(0))'
    ' / sum(rate(http_requests_total{colour="{colour}",path="/"}[5s]))'
)


@pytest.fixture
def prometheus(local_env, tmp_path: Path):
    if PROMETHEUS is None:
        if os.environ.get("BLUEGREEN_REQUIRE_TOOLS") == "1":
            pytest.fail("prometheus is not installed (BLUEGREEN_REQUIRE_TOOLS=1; .ci/setup-packages.sh installs it)")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    port = free_port()
    targets = ", ".join(f"'127.0.0.1:{p}'" for p in local_env.ports.values())
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs: [{{job_name: app, static_configs: [{{targets: [{targets}]}}]}}]\n"
    )
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:  # a Prometheus that never got ready is stopped too
        while True:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def _configure(env, url: str, query: str = ERROR_RATE, duration: str = "8s") -> None:
    env.environ["PROMETHEUS_TOKEN"] = TOKEN  # the config names it: every CLI call needs it, `down` at teardown too
    env.write(extra=f"""\
        analysis:
          prometheus: {{url: "{url}", bearer_token: "${{PROMETHEUS_TOKEN}}"}}
          interval: 1s
          duration: {duration}
          failure_limit: 2
          queries:
            - name: error-rate
              query: '{query}'
              max: 0.05
        """)
    # Only the version is checked before the switch: the home page is what the live traffic below uses.
    text = env.config.read_text()
    home = text[text.index("    - name: home"):text.index("verify:")]
    env.config.write_text(text.replace(home, ""))


class Traffic:
    """Users: requests to the home page through the live URL, ~50 a second per client, until stopped."""

    def __init__(self, url: str, clients: int = 1) -> None:
        self.url, self.stop, self.answers = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=2) as client:
            while not self.stop.is_set():
                try:
                    self.answers.append(client.get(self.url + "/").status_code)
                except httpx.HTTPError:
                    self.answers.append(0)
                self.stop.wait(0.02)

    def __enter__(self) -> "Traffic":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)


def _run(env, command: str, *args: str):
    return env.cli(command, *args, timeout=180)


def test_a_release_whose_error_rate_rises_is_switched_back_by_the_analysis(local_env, prometheus):
    _configure(local_env, prometheus)
    assert _run(local_env, "deploy", "--version", "1").returncode == 0
    with Traffic(local_env.live_url):
        good = _run(local_env, "deploy", "--version", "2")
        assert good.returncode == 0, good.stderr
        report = local_env.report()
        analysis = next(p for p in report["phases"] if p["name"] == "analysis")
        assert analysis["status"] == "succeeded", analysis
        check = next(c for c in report["checks"] if c["target"] == "analysis")
        assert check["passed"] and check["attempts"] >= 5, check

        bad = _run(local_env, "deploy", "--version", "3+errors-50")
    assert bad.returncode == 4, bad.stderr
    report = local_env.report()
    assert report["switched_back"] is True and local_env.live_version() == "2"
    assert "analysis: query 'error-rate'" in report["reason"] and "> max 0.05" in report["reason"], report["reason"]
    for text in (good.stdout, good.stderr, bad.stdout, bad.stderr, (local_env.dir / "bluegreen-report.json").read_text()):
        assert TOKEN not in text


def test_a_query_prometheus_rejects_stops_the_run_before_the_switch(local_env, prometheus):
    _configure(local_env, prometheus)
    assert _run(local_env, "deploy", "--version", "1").returncode == 0
    _configure(local_env, prometheus, query="sum(rate(http_requests_total{colour=")
    result = _run(local_env, "deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = local_env.report()
    assert report["switched"] is False and local_env.live_version() == "1"
    assert report["reason"].startswith("analysis: query 'error-rate': Prometheus rejected the query: "), report["reason"]
    assert next(p for p in report["phases"] if p["name"] == "analysis preflight")["status"] == "failed"


def test_an_unreachable_prometheus_stops_the_run_before_the_switch(local_env):
    _configure(local_env, f"http://127.0.0.1:{free_port()}")
    assert _run(local_env, "deploy", "--version", "1").returncode == 1  # the first release is analysed too
    report = local_env.report()
    assert report["switched"] is False
    assert "analysis: query 'error-rate': Prometheus at http://127.0.0.1:" in report["reason"]
    assert "is unreachable: ConnectError" in report["reason"]
