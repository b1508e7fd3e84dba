"""The dry run (`deploy --dry-run`): what deploy would do, in order, read from the config and the live
colour; nothing changes and no lock is taken."""

from __future__ import annotations

from ..config import other_colour
from ..report import Result
from .canary import CanarySteps


class DryRunPlan(CanarySteps):
    """Built on the canary: the plan names its steps."""

    def _plan(self, version: str, switch: bool) -> Result:
        with self._guarded():
            live, _ = self._resolve_live()
            idle = other_colour(live) if live else "blue"
            self.result.idle_colour = idle
            self.result.preview_url = self.target.preview_url(idle)
            steps = [f"deploy {version} to {idle}", f"wait until ready ({self.settings.timeouts.ready:g}s)"]
            migrations = self.settings.migrations
            if migrations and migrations.expand:
                steps[:0] = ["run the expand migration"] + ([f"smoke checks on live {live}"] if live else [])
            if migrations and migrations.contract and migrations.run_contract == "on_next_release":
                steps.insert(0, "run the pending contract, if any")
            if self.settings.test_suite:
                steps.append("run the test suite")
            if self.settings.smoke.checks:
                steps.append(f"run {len(self.settings.smoke.checks)} smoke check(s) on {idle}")
            if switch and self.settings.strategy == "canary" and live is not None:
                weights = " -> ".join(f"{step.weight}%" for step in self._steps())
                steps += [f"send {idle} {weights} of the requests, with gates at each step", "verify through the live URL"]
            elif switch:
                steps += [f"switch {live or 'none'} -> {idle}", "verify through the live URL"]
            self.result.plan = "would " + ", ".join(steps)
            return self._finish("planned")
