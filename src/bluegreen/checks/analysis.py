"""Metric analysis: PromQL queries evaluated against Prometheus's HTTP API, each value held within bounds.

Before the switch, `preflight` runs every query once: an unreachable Prometheus, a rejected query or
bad credentials stop the run while live traffic is untouched (a broken query is a config mistake, not
a reason to switch back a good release). After the switch, `analyse` evaluates them every interval;
a query out of bounds for its `for` is a failure, and `failure_limit` failures end the analysis as
failed (the pipeline switches back). An empty result (no traffic yet) is shown and, by default, not
counted: an error-rate query over a colour that has had no requests has no value.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import httpx

from ..cancel import CANCEL
from ..config import AnalysisQuery, AnalysisSettings, PrometheusSource, render
from ..errors import CheckFailed
from ..report import CheckResult


class QueryError(Exception):
    """Prometheus could not answer (unreachable, the query rejected, bad credentials): one line."""


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

    def query(self, promql: str) -> list[float]:
        """The values of an instant query (one per series; a scalar is one value); NaN is dropped (no data)."""
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
    promql: str
    evaluations: int = 0
    failures: int = 0
    bad_since: float | None = None  # when the current run of out-of-bounds evaluations began
    last: str = "not evaluated"
    notes: list[str] = field(default_factory=list)


def preflight(settings: AnalysisSettings, values: dict[str, str]) -> None:
    """Every query once, before the switch: CheckFailed naming the query when Prometheus cannot answer it."""
    prometheus = Prometheus(settings.prometheus)
    try:
        for query in settings.queries:
            try:
                prometheus.query(render(query.query, **values))
            except QueryError as exc:
                raise CheckFailed(f"analysis: query {query.name!r}: {exc}") from None
    finally:
        prometheus.close()


def analyse(settings: AnalysisSettings, values: dict[str, str], duration: float, log=print) -> list[CheckResult]:
    """Evaluate every query each `interval` for `duration` seconds (at least once); stop early at
    `failure_limit` failures. One CheckResult per query; a failed one names the value and the bound."""
    prometheus = Prometheus(settings.prometheus)
    tracked = [_Tracked(q, render(q.query, **values)) for q in settings.queries]
    started = time.monotonic()
    failures = 0
    try:
        while True:
            now = time.monotonic()
            for t in tracked:
                failures += _evaluate(prometheus, t, now)
            if failures >= settings.failure_limit:
                break
            if time.monotonic() + settings.interval > started + duration:
                break
            log(f"analysis: {'; '.join(f'{t.query.name} {t.last}' for t in tracked)}")
            CANCEL.wait(settings.interval)
    finally:
        prometheus.close()
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


def _evaluate(prometheus: Prometheus, t: _Tracked, now: float) -> int:
    """One evaluation of one query: 1 when it counts as a failure, else 0."""
    t.evaluations += 1
    try:
        values = prometheus.query(t.promql)
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
