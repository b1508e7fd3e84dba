"""Metric analysis from any HTTP JSON endpoint (`analysis.web`), beside Prometheus, as Argo Rollouts' web metric.

A real HTTP server on 127.0.0.1 stands for Datadog / New Relic / a team's own metrics service: it answers JSON
the test changes between releases (an error rate per version, in Datadog's `series[].pointlist` shape), and
records every request (the headers, the body). End to end through the local target: a good metric passes, a
bad one after the switch switches back (exit 4), an endpoint that cannot answer stops the run before the switch
(exit 1, live untouched), and the header secret appears in no output.
"""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest

from bluegreen.checks import analysis
from bluegreen.config import AnalysisSettings
from bluegreen.errors import CheckFailed
from conftest import LocalHTTPServer, QuietHandler, assert_one_line_error, free_port
from test_analysis import prometheus  # noqa: F401  (a fixture: a real Prometheus)

KEY = "dd-api-key-s3cret-9f2c"
VALUES = {"colour": "green", "version": "2", "app": "testapp", "environment": "test"}


class MetricServer(LocalHTTPServer):
    """JSON metrics on 127.0.0.1. `error_rate[version]` is what GET /api/v1/query?version=V answers, as Datadog's
    query API does: `{"series": [{"pointlist": [[ts, value]]}]}`; `answer`, when set, replaces every answer with
    (status, content type, body). `requests` records (method, path, headers, body) of each request."""

    def __init__(self) -> None:
        self.error_rate: dict[str, float] = {}
        self.answer: tuple[int, str, bytes] | None = None
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        server = self

        class Handler(QuietHandler):
            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append((self.command, self.path, dict(self.headers), body))
                if server.answer is not None:
                    status, kind, payload = server.answer
                else:
                    version = parse_qs(urlsplit(self.path).query).get("version", ["?"])[0]
                    rate = server.error_rate.get(version)
                    points = [] if rate is None else [[time.time() * 1000, rate]]
                    status, kind, payload = 200, "application/json", json.dumps(
                        {"status": "ok", "series": [{"metric": "errors", "pointlist": points}] if points else []}
                    ).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve  # noqa: N815 (the stdlib's names)

        super().__init__(Handler)

    def serve(self, status: int, body: object, kind: str = "application/json") -> None:
        self.answer = (status, kind, body.encode() if isinstance(body, str) else json.dumps(body).encode())


@pytest.fixture
def metrics():
    server = MetricServer()
    yield server
    server.close()


def _configure(env, url: str, duration: str = "3s", extra_source: str = "", extra_query: str = "") -> None:
    env.environ["DD_API_KEY"] = KEY  # the config names it: every CLI call needs it, `down` at teardown too
    env.write(extra=f"""\
        analysis:
          web:
            url: "{url}/api/v1/query?from={{start}}&to={{now}}&query=errors{{app:{{app}}}}&version={{version}}"
            headers: {{DD-API-KEY: "${{DD_API_KEY}}", Accept: application/json}}
            timeout: 2s
          {extra_source}
          interval: 1s
          duration: {duration}
          failure_limit: 2
          queries:
            - name: error-rate
              json_path: $.series[0].pointlist[-1][1]
              max: 0.05
            {extra_query}
        """)


def _analysis_check(report: dict, name: str = "error-rate") -> dict:
    return next(c for c in report["checks"] if c["target"] == "analysis" and c["name"] == name)


def _assert_no_secret(env, *results) -> None:
    texts = [r.stdout + r.stderr for r in results] + [(env.dir / "bluegreen-report.json").read_text()]
    texts += [p.read_text() for p in (env.dir / "state").rglob("*") if p.is_file() and p.suffix in (".json", ".log")]
    for text in texts:
        assert KEY not in text


def test_a_good_metric_passes_and_a_bad_one_after_the_switch_switches_back(local_env, metrics):
    _configure(local_env, metrics.url)
    metrics.error_rate.update({"1": 0.0, "2": 0.01, "3": 0.5})  # what each version's live traffic would show
    assert local_env.cli("deploy", "--version", "1").returncode == 0

    good = local_env.cli("deploy", "--version", "2")
    assert good.returncode == 0, good.stderr
    report = local_env.report()
    assert next(p for p in report["phases"] if p["name"] == "analysis")["status"] == "succeeded"
    check = _analysis_check(report)
    assert check["passed"] and check["attempts"] >= 3 and "last: 0.01" in check["detail"], check
    # The endpoint got the key from the environment, the placeholders filled in (colour, app, version, times).
    method, path, headers, _ = metrics.requests[-1]
    query = parse_qs(urlsplit(path).query)
    assert method == "GET" and headers["DD-API-KEY"] == KEY and headers["Accept"] == "application/json"
    assert query["version"] == ["2"] and query["query"] == ["errors{app:testapp}"], query
    assert int(query["from"][0]) <= int(query["to"][0]) <= time.time() + 1, query

    bad = local_env.cli("deploy", "--version", "3")
    assert bad.returncode == 4, bad.stderr
    report = local_env.report()
    assert report["switched_back"] is True and local_env.live_version() == "2"
    assert report["reason"].startswith("analysis: query 'error-rate': 2 failure(s), last: 0.5 > max 0.05"), \
        report["reason"]
    _assert_no_secret(local_env, good, bad)


def test_an_endpoint_down_at_preflight_stops_the_run_before_the_switch(local_env, metrics):
    _configure(local_env, metrics.url)
    metrics.error_rate["1"] = 0.0
    assert local_env.cli("deploy", "--version", "1").returncode == 0
    down = f"http://127.0.0.1:{free_port()}"
    _configure(local_env, down)
    result = local_env.cli("deploy", "--version", "2")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = local_env.report()
    assert report["switched"] is False and local_env.live_version() == "1"
    assert report["reason"] == f"analysis: query 'error-rate': the web endpoint {down}/api/v1/query is unreachable: " \
                               "ConnectError", report["reason"]
    assert next(p for p in report["phases"] if p["name"] == "analysis preflight")["status"] == "failed"
    _assert_no_secret(local_env, result)


def test_an_endpoint_that_echoes_the_key_in_its_error_has_it_redacted(local_env, metrics):
    _configure(local_env, metrics.url)
    metrics.serve(400, {"errors": [f"invalid API key {KEY} for this query"]})  # some services quote what they got
    result = local_env.cli("deploy", "--version", "1")
    assert result.returncode == 1, result.stderr
    report = local_env.report()
    assert report["switched"] is False
    assert report["reason"].startswith("analysis: query 'error-rate': the web endpoint ") and \
        'answered HTTP 400: {"errors": ["invalid API key *** for this query"]}' in report["reason"], report["reason"]
    assert metrics.requests[0][2]["DD-API-KEY"] == KEY  # the key was sent, so it could be echoed
    _assert_no_secret(local_env, result)


def test_one_analysis_mixes_prometheus_and_web_queries(local_env, metrics, prometheus):  # noqa: F811
    metrics.error_rate.update({"1": 0.0})
    _configure(local_env, metrics.url, duration="2s",
               extra_source=f'prometheus: {{url: "{prometheus}"}}',
               extra_query="- {name: prometheus-says-one, query: 'vector(1)', min: 1}")
    result = local_env.cli("deploy", "--version", "1")
    assert result.returncode == 0, result.stderr
    report = local_env.report()
    web, promql = _analysis_check(report), _analysis_check(report, "prometheus-says-one")
    assert web["passed"] and "last: 0" in web["detail"] and promql["passed"] and "last: 1" in promql["detail"], report


WEB, PROMETHEUS = "web: {url: 'http://127.0.0.1:9/m'}", "prometheus: {url: 'http://127.0.0.1:9'}"


@pytest.mark.parametrize("case, analysis_yaml, expected", [
    ("PromQL without prometheus", f"{WEB}\n  queries: [{{name: up, query: up, min: 1}}]",
     "analysis.queries: query 'up' is PromQL (query), which needs analysis.prometheus: not configured"),
    ("json_path without web", f"{PROMETHEUS}\n  queries: [{{name: errors, json_path: $.e, max: 1}}]",
     "analysis.queries: query 'errors' has a json_path, which needs analysis.web: not configured"),
    ("no source", "queries: [{name: errors, json_path: $.e, max: 1}]",
     "analysis.queries: no source: configure analysis.prometheus (for query) or analysis.web (for json_path)"),
    ("both kinds in one query", f"{WEB}\n  queries: [{{name: e, query: up, json_path: $.e, max: 1}}]",
     "analysis.queries[0]: give either query (PromQL, to analysis.prometheus) or json_path (to analysis.web)"),
    ("a JSON path that does not parse", f"{WEB}\n  queries: [{{name: e, json_path: '$.a[', max: 1}}]",
     "analysis.queries[0].json_path: not a valid JSON path: Parse error near the end of string!"),
    ("a body with GET", "web: {url: 'http://127.0.0.1:9/m', body: {a: 1}}\n  queries: [{name: e, json_path: $.e, max: 1}]",
     "analysis.web: a body is sent with method: POST only"),
    ("no URL", "web: {}\n  queries: [{name: e, json_path: $.e, max: 1}]",
     "analysis.queries: query 'e' has no URL: give analysis.web.url or the query's own url"),
])
def test_a_query_whose_source_is_not_configured_is_a_one_line_config_error(local_env, case, analysis_yaml, expected):
    local_env.write(extra="analysis:\n  " + analysis_yaml + "\n")
    for command in (("validate",), ("deploy", "--version", "1")):
        result = local_env.cli(*command)
        assert result.returncode == 2, (case, result.stderr)
        line = assert_one_line_error(result)
        assert line.endswith(expected) and "bluegreen.yml:" in line, line


# --- the source itself, against the real server ----------------------------------------------------------------

def _settings(url: str, json_path: str, **query) -> AnalysisSettings:
    return AnalysisSettings.model_validate({
        "web": {"url": url, "headers": {"Authorization": f"Bearer {KEY}"}, "timeout": 2},
        "interval": 0.05, "failure_limit": 1,
        "queries": [{"name": "q", "json_path": json_path, "max": 10, **query}],
    })


def _values(metrics: MetricServer, document: object, json_path: str) -> list[float]:
    metrics.serve(200, document)
    settings = _settings(metrics.url + "/m", json_path)
    source = analysis.WebSource(settings.web)
    try:
        return source.query(settings.queries[0], VALUES)
    finally:
        source.close()


def test_the_value_at_the_path_is_a_number_a_numeric_string_a_bool_or_a_list(metrics):
    assert _values(metrics, {"data": {"errors": 3}}, "$.data.errors") == [3.0]
    assert _values(metrics, {"data": {"errors": "0.25"}}, "$.data.errors") == [0.25]
    assert _values(metrics, {"data": {"ok": True}}, "{$.data.ok}") == [1.0]  # Argo's braces are accepted
    assert _values(metrics, {"hosts": [{"e": 1}, {"e": 2.5}]}, "$.hosts[*].e") == [1.0, 2.5]
    assert _values(metrics, {"values": [1, "2", False, None]}, "$.values") == [1.0, 2.0, 0.0]
    assert _values(metrics, [{"name": "a", "v": 1}, {"name": "b", "v": 7}], "$[?(@.name == 'b')].v") == [7.0]
    assert _values(metrics, {"series": [{"pointlist": [[1, 0.1], [2, 0.2]]}]}, "$.series[0].pointlist[-1][1]") == [0.2]
    assert _values(metrics, 4, "$") == [4.0]  # the whole body
    # No data: no match, null, NaN.
    assert _values(metrics, {"series": []}, "$.series[0].pointlist[-1][1]") == []
    assert _values(metrics, {"v": None}, "$.v") == []
    assert _values(metrics, {"v": "NaN"}, "$.v") == []


@pytest.mark.parametrize("document, path, expected", [
    ({"v": "high"}, "$.v", "json_path $.v gives 'high', not a number or a list of numbers"),
    ({"v": {"a": 1}}, "$.v", "json_path $.v gives {'a': 1}, not a number or a list of numbers"),
    ({"v": [[1, 2]]}, "$.v", "json_path $.v gives [1, 2], not a number or a list of numbers"),
])
def test_a_value_that_is_not_a_number_is_a_one_line_error_naming_the_query_and_path(metrics, document, path, expected):
    metrics.serve(200, document)
    with pytest.raises(CheckFailed) as error:
        analysis.preflight(_settings(metrics.url + "/m", path), VALUES)
    assert str(error.value) == f"analysis: query 'q': {expected}"


@pytest.mark.parametrize("status, kind, body, expected", [
    (401, "application/json", "{}", "refused the credentials (HTTP 401)"),
    (403, "application/json", "{}", "refused the credentials (HTTP 403)"),
    (500, "text/plain", "upstream\ntimed out", "answered HTTP 500: upstream timed out"),
    (200, "text/html", "<html>login</html>", "did not answer JSON (text/html): <html>login</html>"),
])
def test_an_endpoint_that_cannot_answer_fails_the_preflight_in_one_line(metrics, status, kind, body, expected):
    metrics.serve(status, body, kind)
    with pytest.raises(CheckFailed) as error:
        analysis.preflight(_settings(metrics.url + "/m?api_key=in-the-query", "$.v"), VALUES)
    assert str(error.value) == f"analysis: query 'q': the web endpoint {metrics.url}/m {expected}"
    assert KEY not in str(error.value) and "in-the-query" not in str(error.value)  # the URL's query is not shown


def test_a_post_sends_the_json_body_with_placeholders_and_a_query_may_have_its_own_url(metrics):
    metrics.serve(200, {"v": 1})
    settings = AnalysisSettings.model_validate({
        "web": {"url": metrics.url + "/default", "method": "POST",
                "body": {"query": "errors{colour:{colour}}", "from": "{start}", "to": "{now}", "n": [1, "{app}"]}},
        "queries": [{"name": "own", "json_path": "$.v", "max": 2, "url": metrics.url + "/own/{environment}"},
                    {"name": "shared", "json_path": "$.v", "max": 2}],
    })
    analysis.preflight(settings, VALUES)
    (m1, p1, h1, b1), (m2, p2, _, _) = metrics.requests
    assert (m1, p1, m2, p2) == ("POST", "/own/test", "POST", "/default")
    sent = json.loads(b1)
    assert h1["Content-Type"] == "application/json" and sent["query"] == "errors{colour:green}"
    assert sent["n"] == [1, "testapp"] and 0 <= int(sent["to"]) - int(sent["from"]) <= 5, sent


def test_no_data_is_ignored_or_fails_as_the_query_says(metrics):
    metrics.serve(200, {"series": []})
    for no_data, passed in (("ignore", True), ("fail", False)):
        settings = _settings(metrics.url + "/m", "$.series[0].v", no_data=no_data)
        [result] = analysis.analyse(settings, VALUES, duration=0.2, log=lambda line: None)
        assert result.passed is passed, result
        assert ("no data (no_data: fail)" in result.detail) is not passed, result.detail


def test_a_bad_value_counts_only_after_its_for(metrics):
    metrics.serve(200, {"v": 50})
    settings = _settings(metrics.url + "/m", "$.v", **{"for": "10s"})
    [result] = analysis.analyse(settings, VALUES, duration=0.3, log=lambda line: None)
    assert result.passed and result.attempts >= 3 and "50 > max 10 for 0s of 10s" in result.detail, result
    settings = _settings(metrics.url + "/m", "$.v")
    [result] = analysis.analyse(settings, VALUES, duration=5, log=lambda line: None)
    assert not result.passed and result.attempts == 1 and "last: 50 > max 10" in result.detail, result


def test_the_readme_example_is_a_valid_config(tmp_path, monkeypatch):
    from bluegreen.config import load_config
    from conftest import ROOT

    section = (ROOT / "README.md").read_text().split("#### From any JSON endpoint: `analysis.web`", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("DD_API_KEY", KEY)
    monkeypatch.setenv("DD_APP_KEY", "dd-app-key-1b7e")
    (tmp_path / "bluegreen.yml").write_text(
        example + "app: shop\nenvironments: {production: {target: {kind: local, command: [app, '{port}']}}}\n"
    )
    settings = load_config(tmp_path / "bluegreen.yml").analysis
    assert settings is not None and settings.web is not None and settings.web.headers["DD-API-KEY"] == KEY
    assert [q.json_path for q in settings.queries] == ["$.series[0].pointlist[-1][1]"] * 2
    assert settings.queries[1].url and "p99:trace.http.request{service:{app},colour:{colour}}" in settings.queries[1].url
