"""The AWS Application Load Balancer router: blue and green are two target groups, weighted by the forward
action of one listener (its default actions) or of one rule (a host or path rule of a shared ALB).

A switch or a canary step is ONE modify_listener / modify_rule carrying both weights (ForwardConfig), read
back with describe_listeners / describe_rules. Every other action of the listener or rule (an authenticate
step, the rule's conditions) is kept as it is. Before a colour is given more traffic than it has, every target
of its target group must be `healthy`, with at least one registered; otherwise the switch is refused, naming
the targets, and live routing is untouched.

Weights are percent per colour here and 0-999 on the ALB (relative): 100 % is 999, 1 % is 10; any weights a
person set by hand read back as the nearest percent, a colour that gets any traffic never as 0 %.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any, ClassVar

from ..config import COLOURS, Colour
from ..config.routers import AlbRouter as AlbConfig
from ..errors import TargetError
from ..remote import Shell
from ..traffic import Weights, all_to
from .aws import AwsApi, one_line, percent, scaled
from .base import Router

MAX_WEIGHT = 999  # the ALB's largest weight per target group
TERMINAL = ("forward", "redirect", "fixed-response")  # the one action that ends a listener's or rule's actions
SHOWN = 5  # unhealthy targets named in a message
HEALTH_POLL = 1.0  # seconds between target health reads while targets are still `initial`


def to_alb(weights: Weights) -> dict[Colour, int]:
    return scaled(weights, MAX_WEIGHT)


from_alb = percent  # ALB weights (relative, 0-999) as percent


def short_name(arn: str) -> str:
    """`targetgroup/app-green/73e2d6bc24d8a067` -> `app-green`; a listener or rule: `my-alb listener 1a2b`."""
    resource = arn.split(":", 5)[-1]
    parts = resource.split("/")
    if parts[0] == "targetgroup":
        return parts[1] if len(parts) > 1 else resource
    if parts[0] in ("listener", "listener-rule") and len(parts) >= 5:
        what = "listener" if parts[0] == "listener" else "rule"
        return f"{parts[2]} {what} {parts[-1]}"
    return resource


class AlbRouter(Router):
    kind: ClassVar[str] = "alb"
    weighted: ClassVar[bool] = True

    def __init__(self, config: AlbConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        # `shell`: ignored; the ALB is switched through the AWS API from here, whatever host runs the colours
        self.config, self.upstreams = config, upstreams
        self.api = AwsApi("elbv2", config.aws_region, config.timeout)
        self.groups: dict[Colour, str] = {"blue": config.target_groups.blue, "green": config.target_groups.green}
        self.is_rule = config.rule_arn is not None
        self.where = short_name(config.arn)
        self._deadline = 0.0  # the running switch's: targets still in their first health checks are waited for

    @property
    def name(self) -> str:
        return f"alb {self.where}"

    def set_weights(self, weights: Weights, deadline: float) -> None:
        self._deadline = deadline
        super().set_weights(weights, deadline)

    # --- the value ------------------------------------------------------------------------------

    def read(self) -> Weights | None:
        return self._split(self._actions())

    def write(self, weights: Weights) -> None:
        actions = self._actions()
        try:
            now = self._split(actions)
        except TargetError:
            now = None  # edited by hand: overwritten, every colour given a share is checked
        for colour in COLOURS:
            if weights[colour] > (now or {}).get(colour, 0):
                self._require_healthy(colour)
        new = self._with_forward(actions, weights)
        if self.is_rule:
            self.api.call("modify_rule", self.where, RuleArn=self.config.rule_arn, Actions=new)
        else:
            self.api.call("modify_listener", self.where, ListenerArn=self.config.listener_arn, DefaultActions=new)

    def raw_switch_command(self, to: Colour) -> str:
        try:
            actions = self._actions()
        except TargetError:
            actions = []  # unreadable now: the forward action alone
        new = json.dumps(self._with_forward(actions, all_to(to)), separators=(",", ":"))
        if self.is_rule:
            target = f"modify-rule --rule-arn {shlex.quote(self.config.arn)} --actions"
        else:
            target = f"modify-listener --listener-arn {shlex.quote(self.config.arn)} --default-actions"
        return f"aws elbv2 --region {self.config.aws_region} {target} {shlex.quote(new)}"

    # --- around the switch -----------------------------------------------------------------------

    def prepare(self) -> str | None:
        """At deploy start: the credentials, the listener (or rule) and both target groups answer; with
        `register: true` each colour's addresses are registered into its target group."""
        self._actions()
        found = self.api.call("describe_target_groups", "the target groups",
                              TargetGroupArns=list(self.groups.values()))["TargetGroups"]
        missing = set(self.groups.values()) - {g["TargetGroupArn"] for g in found}
        if missing:
            raise TargetError(f"target group {', '.join(sorted(missing))} not found")
        return self._register() if self.config.register_targets else None

    def check(self) -> str | None:
        """Right before the switch: the listener (or rule) answers. The target health is checked in the write,
        where the new split is known."""
        self._actions()
        return None

    def reachable(self) -> str | None:
        try:
            self._actions()
        except TargetError as exc:
            return str(exc)
        return None

    # --- the ALB's objects ------------------------------------------------------------------------

    def _actions(self) -> list[dict[str, Any]]:
        if self.is_rule:
            rules = self.api.call("describe_rules", self.where, RuleArns=[self.config.rule_arn])["Rules"]
            return rules[0].get("Actions", []) if rules else []
        listeners = self.api.call("describe_listeners", self.where, ListenerArns=[self.config.listener_arn])
        return listeners["Listeners"][0].get("DefaultActions", []) if listeners["Listeners"] else []

    def _split(self, actions: list[dict[str, Any]]) -> Weights | None:
        """The colours' shares from the forward action; None when there is none yet (a fixed response before the
        first release). A share to a target group that is neither colour's is a TargetError (edited by hand)."""
        forward = [a for a in actions if a.get("Type") == "forward"]
        if not forward:
            return None
        config = forward[0].get("ForwardConfig")
        pairs = ([(g["TargetGroupArn"], int(g.get("Weight", 1))) for g in config.get("TargetGroups", [])] if config
                 else [(forward[0]["TargetGroupArn"], 1)])
        colour_of = {arn: c for c, arn in self.groups.items()}
        raw: dict[Colour, int] = {}
        for arn, weight in pairs:
            if arn in colour_of:
                raw[colour_of[arn]] = raw.get(colour_of[arn], 0) + weight
            elif weight > 0:
                raise TargetError(f"{self.name} forwards to target group {short_name(arn)}, neither colour's "
                                  f"({short_name(self.groups['blue'])}, {short_name(self.groups['green'])}): "
                                  "fix its forward action by hand")
        return from_alb(raw)

    def _with_forward(self, actions: list[dict[str, Any]], weights: Weights) -> list[dict[str, Any]]:
        """The actions with their terminal one replaced by the forward to both target groups; the others kept."""
        alb = to_alb(weights)
        forward: dict[str, Any] = {"Type": "forward", "ForwardConfig": {
            "TargetGroups": [{"TargetGroupArn": self.groups[c], "Weight": alb[c]} for c in COLOURS]}}
        kept: list[dict[str, Any]] = []
        for action in actions:
            if action.get("Type") in TERMINAL:
                if "Order" in action:
                    forward["Order"] = action["Order"]
                sticky = (action.get("ForwardConfig") or {}).get("TargetGroupStickinessConfig")
                if sticky and sticky.get("Enabled"):
                    forward["ForwardConfig"]["TargetGroupStickinessConfig"] = sticky
                continue
            if action.get("Type") == "authenticate-oidc":  # its client secret is never returned: keep the one set
                action = {**action, "AuthenticateOidcConfig": {**action.get("AuthenticateOidcConfig", {}),
                                                               "UseExistingClientSecret": True}}
            kept.append(action)
        if self.config.stickiness:
            forward["ForwardConfig"]["TargetGroupStickinessConfig"] = {
                "Enabled": True, "DurationSeconds": int(self.config.stickiness)}
        return [*kept, forward]

    def _require_healthy(self, colour: Colour) -> None:
        group = short_name(self.groups[colour])
        targets = self.api.call("describe_target_health", f"target group {group}",
                                TargetGroupArn=self.groups[colour])["TargetHealthDescriptions"]
        if not targets:
            raise TargetError(f"target group {group} ({colour}) has no registered targets: register {colour}'s "
                              "targets (or set router.register: true) before sending it traffic")
        bad = [t for t in targets if t.get("TargetHealth", {}).get("State") != "healthy"]
        if bad and all(t["TargetHealth"]["State"] == "initial" for t in bad) and \
                time.monotonic() + HEALTH_POLL < self._deadline:
            time.sleep(HEALTH_POLL)  # registered, first health checks running: waited for until timeouts.switch
            return self._require_healthy(colour)
        if bad:
            named = ", ".join(_target(t) for t in bad[:SHOWN]) + (f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN
                                                                    else "")
            raise TargetError(f"target group {group} ({colour}): {len(bad)} of {len(targets)} targets not healthy: "
                              f"{named}")

    def _register(self) -> str | None:
        added = []
        for colour in COLOURS:
            group = short_name(self.groups[colour])
            wanted = [_address(a) for a in self.upstreams.get(colour, [])]
            have = self.api.call("describe_target_health", f"target group {group}",
                                 TargetGroupArn=self.groups[colour])["TargetHealthDescriptions"]
            known = {(t["Target"]["Id"], t["Target"].get("Port")) for t in have}
            new = [t for t in wanted if (t["Id"], t["Port"]) not in known]
            if new:
                self.api.call("register_targets", f"target group {group}", TargetGroupArn=self.groups[colour],
                              Targets=new)
                names = ", ".join(f"{t['Id']}:{t['Port']}" for t in new)
                added.append(f"{names} into {group} ({colour})")
        return f"{self.name}: registered {'; '.join(added)}" if added else None


def _target(description: dict[str, Any]) -> str:
    target, health = description.get("Target", {}), description.get("TargetHealth", {})
    where = f"{target.get('Id')}" + (f":{target['Port']}" if target.get("Port") else "")
    reason = health.get("Reason") or health.get("Description") or ""
    return f"{where} {health.get('State', 'unknown')}" + (f" ({one_line(reason, 80)})" if reason else "")


def _address(upstream: str) -> dict[str, Any]:
    host, _, port = upstream.rpartition(":")
    if not host or not port.isdigit():
        raise TargetError(f"router.register: {upstream!r} is not host:port")
    return {"Id": host.strip("[]"), "Port": int(port)}
