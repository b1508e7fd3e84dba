"""Metric analysis: queries evaluated against their source, each value held within bounds. A PromQL query
(`query`) goes to Prometheus's HTTP API; a JSON path (`json_path`) reads the answer of any HTTP endpoint that
speaks JSON (`analysis.web`: Datadog, New Relic, a team's own service), as Argo Rollouts' web metric provider.

Before the switch, `preflight` runs every query once: an unreachable source, a rejected query, bad
credentials or an answer that is not JSON stop the run while live traffic is untouched (a broken query
is a config mistake, not a reason to switch back a good release). After the switch, `analyse` evaluates
them every interval; a query out of bounds for its `for` is a failure, and `failure_limit` failures end
the analysis as failed (the pipeline switches back). An empty result (no traffic yet: no series, no match
at the JSON path) is shown and, by default, not counted: an error-rate query over a colour that has had no
requests has no value.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from ..cancel import CANCEL
from ..config import AnalysisQuery, AnalysisSettings, PrometheusSource, json_path, render, shorten, shown_url
from ..config import WebSource as WebConfig
from ..errors import CheckFailed
from ..report import CheckResult


class QueryError(Exception):
    """A source could not answer (unreachable, the query rejected, bad credentials, not a number): one line."""


class Prometheus:
    def __init__(self, source: PrometheusSource) -> None:
        headers = {}
        if source.bearer_token is not None:
            headers["Authorization"] = f"Bearer {source.bearer_token.get_secret_value()}"
        auth = None
        if source.basic_auth is not None:
            user, _, password = source.basic_auth.get_secret_value().partition(":")
            auth = httpx.BasicAuth(user, password)
        self.url = source.url.rstrip("/") + "/api/v1/query"
        self.client = httpx.Client(headers=headers, auth=auth, timeout=source.timeout)

    def query(self, query: AnalysisQuery, values: dict[str, str]) -> list[float]:
        """The values of an instant query (one per series; a scalar is one value); NaN is dropped (no data)."""
        assert query.query is not None
        promql = render(query.query, **values)
        try:
            response = self.client.get(self.url, params={"query": promql})
        except httpx.HTTPError as exc:
            raise QueryError(f"Prometheus at {self.url} is unreachable: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code in (401, 403):
            raise QueryError(f"Prometheus at {self.url} refused the credentials (HTTP {response.status_code})")
        if body.get("status") != "success":
            error = body.get("error") or f"HTTP {response.status_code}"
            raise QueryError(f"Prometheus rejected the query: {str(error)[:300]}")
        data = body.get("data") or {}
        if data.get("resultType") == "scalar":
            samples = [data["result"]]
        elif data.get("resultType") == "vector":
            samples = [series["value"] for series in data.get("result", [])]
        else:
            raise QueryError(f"the query returns a {data.get('resultType')}, not a vector or a scalar: "
                             "use an instant vector (e.g. rate(...[1m]), not ...[1m])")
        values = [float(sample[1]) for sample in samples]
        return [v for v in values if not math.isnan(v)]

    def close(self) -> None:
        self.client.close()


class WebSource:
    """An HTTP endpoint answering JSON (analysis.web): one request per evaluation, the values at the query's
    JSON path. `{now}` and `{start}` (Unix seconds: this request, the analysis's start) join the placeholders."""

    def __init__(self, source: WebConfig) -> None:
        self.source, self.start = source, int(time.time())
        # Header values are secrets: never in an error (httpx's own errors name the URL only).
        self.client = httpx.Client(headers=source.headers, timeout=source.timeout)

    def query(self, query: AnalysisQuery, values: dict[str, str]) -> list[float]:
        assert query.json_path is not None
        values = {**values, "now": str(int(time.time())), "start": str(self.start)}
        url = render(query.url or self.source.url or "", **values)
        where = shorten(shown_url(url), 120)
        body = _render_json(self.source.body, values)
        try:
            response = self.client.request(self.source.method, url, json=body)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise QueryError(f"the web endpoint {where} is unreachable: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise QueryError(f"the web endpoint {where} refused the credentials (HTTP {response.status_code})")
        if not 200 <= response.status_code < 300:
            raise QueryError(f"the web endpoint {where} answered HTTP {response.status_code}: "
                             f"{shorten(' '.join(response.text.split()), 200)}")
        try:
            document = response.json()
        except ValueError:
            kind = response.headers.get("content-type", "no content type")
            raise QueryError(f"the web endpoint {where} did not answer JSON ({kind}): "
                             f"{shorten(' '.join(response.text.split()), 80)}") from None
        found = [match.value for match in json_path(query.json_path).find(document)]
        numbers = [n for value in found for n in _numbers(value, query.json_path)]
        return [n for n in numbers if not math.isnan(n)]

    def close(self) -> None:
        self.client.close()


def _render_json(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return render(value, **values)
    if isinstance(value, dict):
        return {k: _render_json(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_json(v, values) for v in value]
    return value


def _numbers(value: Any, path: str, nested: bool = False) -> list[float]:
    """The numbers a JSON value stands for: a number, a numeric string, a bool (true: 1), null (no data), or a
    list of those (each one a value, as the series of a Prometheus vector)."""
    if value is None:
        return []
    if isinstance(value, (bool, int, float)):
        return [float(value)]
    if isinstance(value, str):
        try:
            return [float(value)]
        except ValueError:
            pass
    elif isinstance(value, list) and not nested:
        return [n for item in value for n in _numbers(item, path, nested=True)]
    raise QueryError(f"json_path {path} gives {shorten(repr(value), 80)}, not a number or a list of numbers")


def out_of_bounds(query: AnalysisQuery, values: list[float]) -> str | None:
    """Why `values` break the query's bounds; None when every value is within them."""
    for value in values:
        if query.min is not None and value < query.min:
            return f"{value:g} < min {query.min:g}"
        if query.max is not None and value > query.max:
            return f"{value:g} > max {query.max:g}"
    return None


@dataclass
class _Tracked:
    query: AnalysisQuery
    source: Prometheus | WebSource
    evaluations: int = 0
    failures: int = 0
    bad_since: float | None = None  # when the current run of out-of-bounds evaluations began
    last: str = "not evaluated"
    notes: list[str] = field(default_factory=list)


class _Sources:
    """The configured sources, open for one preflight or analysis: each query's own, by its kind."""

    def __init__(self, settings: AnalysisSettings) -> None:
        self.prometheus = Prometheus(settings.prometheus) if settings.prometheus is not None else None
        self.web = WebSource(settings.web) if settings.web is not None else None

    def of(self, query: AnalysisQuery) -> Prometheus | WebSource:
        source = self.prometheus if query.query is not None else self.web
        assert source is not None  # the config refuses a query whose source is not configured
        return source

    def __enter__(self) -> "_Sources":
        return self

    def __exit__(self, *exc: object) -> None:
        for source in (self.prometheus, self.web):
            if source is not None:
                source.close()


def preflight(settings: AnalysisSettings, values: dict[str, str]) -> None:
    """Every query once, before the switch: CheckFailed naming the query when its source cannot answer it."""
    with _Sources(settings) as sources:
        for query in settings.queries:
            try:
                sources.of(query).query(query, values)
            except QueryError as exc:
                raise CheckFailed(f"analysis: query {query.name!r}: {exc}") from None


def analyse(settings: AnalysisSettings, values: dict[str, str], duration: float, log=print) -> list[CheckResult]:
    """Evaluate every query each `interval` for `duration` seconds (at least once); stop early at
    `failure_limit` failures. One CheckResult per query; a failed one names the value and the bound."""
    started = time.monotonic()
    failures = 0
    with _Sources(settings) as sources:
        tracked = [_Tracked(q, sources.of(q)) for q in settings.queries]
        while True:
            now = time.monotonic()
            for t in tracked:
                failures += _evaluate(t, values, now)
            if failures >= settings.failure_limit:
                break
            if time.monotonic() + settings.interval > started + duration:
                break
            log(f"analysis: {'; '.join(f'{t.query.name} {t.last}' for t in tracked)}")
            CANCEL.wait(settings.interval)
    elapsed = time.monotonic() - started
    return [
        CheckResult(
            name=t.query.name, kind="verify", target="analysis", passed=t.failures == 0, attempts=t.evaluations,
            duration=elapsed,
            detail=(f"{t.failures} failure(s), last: {t.last}" if t.failures
                    else f"{t.evaluations} evaluation(s) over {elapsed:.0f}s, last: {t.last}")
            + (f" ({'; '.join(t.notes[-2:])})" if t.notes else ""),
        )
        for t in tracked
    ]


def _evaluate(t: _Tracked, placeholders: dict[str, str], now: float) -> int:
    """One evaluation of one query: 1 when it counts as a failure, else 0."""
    t.evaluations += 1
    try:
        values = t.source.query(t.query, placeholders)
    except QueryError as exc:  # after the switch an unanswerable query is a failed gate, not a pass
        t.last, t.bad_since = str(exc), t.bad_since or now
        t.failures += 1
        return 1
    if not values:
        t.last = "no data"
        if t.query.no_data == "ignore":
            t.notes.append("no data: ignored")
            return 0
        why = "no data (no_data: fail)"
    else:
        t.last = ", ".join(f"{v:g}" for v in values[:3]) + ("..." if len(values) > 3 else "")
        why = out_of_bounds(t.query, values)
    if why is None:
        t.bad_since = None
        return 0
    t.bad_since = t.bad_since if t.bad_since is not None else now
    if now - t.bad_since < t.query.for_:
        t.notes.append(f"{why} for {now - t.bad_since:.0f}s of {t.query.for_:g}s")
        return 0
    t.last = why
    t.failures += 1
    return 1
