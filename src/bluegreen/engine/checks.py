"""What is checked before live traffic moves and right after it: where live is, the idle colour ready,
the test suite and smoke checks on its preview URL, then, through the live URL, verification and the
metric analysis. A failure before the switch leaves live untouched; one after it (`_AfterSwitchFailure`)
sends traffic back (release.py, canary.py)."""

from __future__ import annotations

import sys
import time
from urllib.parse import urlsplit

from ..checks import analysis, smoke
from ..checks.suite import run_test_suite
from ..config import Colour, SmokeCheck
from ..errors import CheckFailed
from .run import RunContext, _AfterSwitchFailure


class CheckPhases(RunContext):
    """The checks as phases of the run, each adding its results to the report."""

    def _resolve_live(self) -> tuple[Colour | None, str | None]:
        with self._phase("resolve live") as p:
            live = self.target.live()
            state = self.target.colour_state(live) if live else None
            live_version = state.version if state else None
            p.detail = f"{live} (version {live_version})" if live else "nothing live yet"
            if state is not None and not state.running:  # users get errors now: say so, and go on
                p.detail += f", not running: {state.detail}"
                self.events.warning(f"the live colour {live} is not running: {state.detail}")
        self.result.live_colour = self.result.previous_colour = live
        self.result.previous_version = live_version
        self.result.live_url = self._public_url()
        return live, live_version

    def _wait_ready(self, colour: Colour) -> None:
        with self._phase(f"wait ready {colour}"):
            self.target.wait_ready(colour, time.monotonic() + self.settings.timeouts.ready)

    def _test_suite(self, colour: Colour, version: str) -> None:
        suite = self.settings.test_suite
        if suite is None:
            return
        with self._phase("test suite") as p:
            urls = self.target.preview_urls(colour)
            for where, url in urls.items():  # each host in turn: a user's suite need not be safe to run twice at once
                env = {
                    "BLUEGREEN_PREVIEW_URL": url,
                    "BLUEGREEN_HOST": where,
                    "BLUEGREEN_COLOUR": colour,
                    "BLUEGREEN_VERSION": version,
                    "BLUEGREEN_APP": self.settings.app,
                    "BLUEGREEN_ENVIRONMENT": self.settings.environment,
                }
                values = {"version": version, "colour": colour, "python": sys.executable}
                check = run_test_suite(suite, base_dir=self.settings.base_dir, env=env, values=values,
                                       log=self.events.log)
                on = f" on {where}" if len(urls) > 1 else ""
                check.detail += on
                self.result.checks.append(check)
                p.detail = check.detail
                if not check.passed:
                    raise CheckFailed(f"test suite {check.detail}")
            if len(urls) > 1:
                p.detail = f"passed on each of {len(urls)} hosts"

    def _smoke_checks(self, colour: Colour, version: str, live: bool = False) -> None:
        """On the preview URL of `colour`; `live`: through the live URL (the live colour after an expand)."""
        cfg = self.settings.smoke
        if not cfg.checks:
            return
        with self._phase("smoke checks live" if live else "smoke checks") as p:
            # Every place the colour runs (each host of a servers target), all checks at once.
            urls = {"live": self._verify_url()} if live else self.target.preview_urls(colour)
            jobs = [(check, where, url) for where, url in urls.items() for check in cfg.checks]
            deadline = time.monotonic() + cfg.timeout
            values = {"version": version, "colour": colour}
            results = smoke.run_all(
                jobs,
                lambda job: smoke.run_until_passing(
                    job[0], job[2], values, consecutive=cfg.consecutive_successes, interval=cfg.interval,
                    deadline=deadline, request_timeout=cfg.request_timeout, same_failure_limit=cfg.failure_limit,
                    log=self.events.log,
                    label="live" if live else ("preview" if len(urls) == 1 else f"preview {job[1]}"),
                ),
            )
            self.result.checks.extend(results)
            passed = sum(r.passed for r in results)
            p.detail = f"{passed}/{len(results)} passed on {colour}" + (f" ({len(urls)} hosts)" if len(urls) > 1 else "")
            failed = next(((r, job) for r, job in zip(results, jobs) if not r.passed), None)
            if failed:
                result, (_, where, url) = failed
                on = f"{colour} on {where}" if len(urls) > 1 else colour
                raise CheckFailed(f"smoke check {result.name!r} failed on {on} ({url}): {result.detail}")

    def _preflight(self, to: Colour, version: str, analysed: bool) -> None:
        """Before live traffic moves (a switch, a canary's first step): with `analysed`, the analysis's queries
        answer; the router serves."""
        if analysed:
            assert self.settings.analysis is not None
            with self._phase("analysis preflight") as p:  # a query its source cannot answer: live untouched
                analysis.preflight(self.settings.analysis, self._query_values(to, version))
                p.detail = f"{len(self.settings.analysis.queries)} queries answered"
        if note := self.target.check_router():  # raises when the router is down for good: live untouched
            self.events.warning(note)

    def _verify(self, colour: Colour, version: str, smoke_window: bool = True) -> None:
        verify = self.settings.verify
        live_url = self._verify_url()
        version_check, checks = verify.version_check, self.settings.smoke.checks
        if not verify.url and self.target.cache_ttl() is not None:
            # Behind DNS, resolvers may keep the old answer: the switch read the authoritative record back, and
            # the colour is checked through its own address, so a stale cache neither passes nor fails it.
            host = urlsplit(live_url).netloc  # the public name, sent as Host
            live_url = self.target.preview_url(colour)
            self.events.log(f"verify: the authoritative record names {colour}; resolvers may still hold the old answer, "
                            f"so {colour} is checked through its own address, {live_url} (Host: {host})")
            version_check = version_check and _with_host(version_check, host)
            checks = [_with_host(c, host) for c in checks]
        values = {"version": version, "colour": colour}
        if version_check is not None:
            check = smoke.run_until_passing(
                version_check, live_url, values, consecutive=verify.consecutive_successes,
                interval=verify.interval, deadline=time.monotonic() + verify.timeout,
                request_timeout=self.settings.smoke.request_timeout, kind="verify", label="live",
                failure_limit=verify.failure_limit, log=self.events.log,
            )
            self.result.checks.append(check)
            if not check.passed:
                raise _AfterSwitchFailure(f"verify: the new version does not answer through {live_url}: {check.detail}")
        if not smoke_window:
            return
        results = smoke.hold(
            checks, live_url, values, window=verify.window, interval=verify.interval,
            request_timeout=self.settings.smoke.request_timeout,
        )
        self.result.checks.extend(results)
        failed = next((c for c in results if not c.passed), None)
        if failed:
            raise _AfterSwitchFailure(f"verify: smoke check {failed.name!r} failed through {live_url}: {failed.detail}")

    def _analyse(self, colour: Colour, version: str, duration: float | None = None) -> str:
        """Post-switch metric analysis (the old colour still runs): a failure switches back like a failed verify.
        `duration`: a canary step's pause; default analysis.duration."""
        settings = self.settings.analysis
        assert settings is not None
        duration = settings.duration if duration is None else duration
        results = analysis.analyse(settings, self._query_values(colour, version), duration, self.events.log)
        self.result.checks.extend(results)
        failed = [r for r in results if not r.passed]
        if failed:
            raise _AfterSwitchFailure("analysis: " + "; ".join(f"query {r.name!r}: {r.detail}" for r in failed))
        return f"{len(results)} queries within bounds for {duration:g}s"

    def _query_values(self, colour: Colour, version: str) -> dict[str, str]:
        return {"colour": colour, "version": version, "app": self.settings.app, "environment": self.settings.environment}

    def _public_url(self) -> str:
        """Where users reach the app: the environment's `url`, else the router's own address."""
        return self.settings.url or self.target.live_url()

    def _verify_url(self) -> str:
        """Where verification and the canary gates look: what users reach (a CDN, DNS name or load balancer in
        front of the router), unless `verify.url` asks for another address (the router itself, bypassing a CDN)."""
        return self.settings.verify.url or self._public_url()


def _with_host(check: SmokeCheck, host: str) -> SmokeCheck:
    """The check sent to a colour's own address as if through the public name (the user's Host header wins)."""
    if any(name.lower() == "host" for name in check.headers):
        return check
    return check.model_copy(update={"headers": {"Host": host, **check.headers}})
