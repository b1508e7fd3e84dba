"""A CI platform's REST API, called within a budget (GitHub's and GitLab's deployments).

One retry when the request was never sent (a refused connection) or got a 5xx; never after a request that was
sent and got no answer: it may have landed, and a second POST could create a second deployment. The attempts and
the time spent are counted for the report's Delivery."""

from __future__ import annotations

import time
from typing import Any, Callable

import httpx


class ApiError(Exception):
    """A request that did not get the answer it needed: one line saying why."""


class BoundedApi:
    def __init__(self, client: httpx.Client, budget: float, name: str, explain: Callable[[httpx.Response], str]) -> None:
        self.client, self.budget, self.name, self.explain = client, budget, name, explain
        self.attempts, self.elapsed = 0, 0.0
        self.deadline = time.monotonic() + budget

    def restart(self) -> None:
        """A new budget (for the next event of the run)."""
        self.deadline = time.monotonic() + self.budget

    def request(self, method: str, url: str, body: dict | None = None, *, params: dict | None = None,
                expect: int = 200) -> Any:
        """The JSON of an answer with status `expect`; else ApiError."""
        for attempt in (1, 2):
            if time.monotonic() > self.deadline:
                raise ApiError(f"gave up: the requests to {self.name} took over {self.budget:.0f} s in all")
            self.attempts += 1
            started = time.monotonic()
            try:
                response = self.client.request(method, url, json=body, params=params)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # never sent: safe to send again
                if attempt == 1:
                    continue
                raise ApiError(f"{method} {url}: cannot connect: {exc}") from None
            except httpx.HTTPError as exc:  # sent, no answer: it may have landed
                raise ApiError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
            finally:
                self.elapsed += time.monotonic() - started
            if response.status_code >= 500 and attempt == 1:
                time.sleep(min(1.0, max(0.0, self.deadline - time.monotonic())))
                continue
            if response.status_code != expect:
                raise ApiError(f"{method} {url}: {self.explain(response)}")
            try:
                return response.json()
            except ValueError:
                raise ApiError(f"{method} {url}: the answer is not JSON") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()


def user_agent() -> str:
    from .. import __version__

    return f"bluegreen/{__version__}"
