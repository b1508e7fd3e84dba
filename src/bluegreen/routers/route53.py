"""The Route 53 router: weighted records, one per colour (same name and type, a SetIdentifier each).

A switch or a canary step is ONE ChangeBatch that UPSERTs both records with their new weights (Route 53 applies
a batch atomically), then the run waits until GetChange reports it INSYNC on every authoritative server (the
base class polls `applied` until timeouts.switch). Both records carry the same TTL: Route 53 rewrites every
record of a group to the TTL written last, so a lone edit cannot leave them apart.

Weights are percent per colour here and 0-255 on Route 53 (relative): 100 % is 255, 1 % is 3 (reads back as 1);
a split by hand reads back as the nearest percent. Resolvers cache an answer for the TTL: `cache_ttl` says how
long clients may still reach the old colour after a switch.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from pathlib import Path
from typing import Any, ClassVar

from ..config import COLOURS, Colour, render
from ..config.routers import Route53Router as Route53Config
from ..errors import TargetError
from ..remote import Shell, split_host
from ..traffic import Weights, all_to, describe
from .aws import AwsApi, percent, scaled
from .base import Router

MAX_WEIGHT = 255  # Route 53's largest weight; the service itself is not trusted to refuse more


def fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


class Route53Router(Router):
    kind: ClassVar[str] = "route53"
    weighted: ClassVar[bool] = True

    def __init__(self, config: Route53Config, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        # `shell`: ignored; Route 53 is changed through the AWS API from here
        self.config = config
        self.api = AwsApi("route53", None, config.timeout)
        self.zone = config.hosted_zone_id.removeprefix("/hostedzone/")
        self.record = fqdn(render(config.record_name, app=app))
        self.ids: dict[Colour, str] = {c: render(getattr(config.set_identifiers, c), app=app) for c in COLOURS}
        if self.ids["blue"] == self.ids["green"]:
            raise TargetError("router.set_identifiers: blue and green must differ")
        self.values = {c: self._values(c, getattr(config.values, c) if config.values else
                                       [split_host(u, 0)[0] for u in upstreams.get(c, [])])
                       for c in COLOURS}
        self._change: str | None = None  # the last ChangeBatch's id, until it is INSYNC

    @property
    def name(self) -> str:
        return f"route53 {self.record.rstrip('.')} {self.config.record_type}"

    def cache_ttl(self) -> float | None:
        """How long resolvers may keep serving the old answer after a switch: the records' TTL."""
        return float(self.config.ttl)

    # --- the value ------------------------------------------------------------------------------

    def read(self) -> Weights | None:
        raw: dict[Colour, int] = {}
        colour_of = {sid: c for c, sid in self.ids.items()}
        for record in self._records():
            sid = record.get("SetIdentifier")
            if sid in colour_of:
                raw[colour_of[sid]] = int(record.get("Weight", 0))
            elif record.get("Weight", 0) > 0 or "Weight" not in record:
                raise TargetError(f"{self.name}: the record {sid or '(not weighted)'!r} answers too, neither "
                                  f"colour's ({self.ids['blue']}, {self.ids['green']}): fix the records by hand")
        return percent(raw) if raw else None

    def write(self, weights: Weights) -> None:
        changed = self.api.call("change_resource_record_sets", f"hosted zone {self.zone}", HostedZoneId=self.zone,
                                ChangeBatch=self._batch(weights))
        self._change = changed["ChangeInfo"]["Id"]

    def applied(self, weights: Weights) -> bool:
        """The records hold the weights, and the change reached every Route 53 authoritative server."""
        if self._change is not None:
            status = self.api.call("get_change", f"change {self._change}", Id=self._change)["ChangeInfo"]["Status"]
            if status != "INSYNC":
                return False
            self._change = None
        return self.read() == weights

    def raw_switch_command(self, to: Colour) -> str:
        batch = json.dumps(self._batch(all_to(to)), separators=(",", ":"))
        return (f"aws route53 change-resource-record-sets --hosted-zone-id {shlex.quote(self.zone)} "
                f"--change-batch {shlex.quote(batch)}")

    # --- around the switch -----------------------------------------------------------------------

    def prepare(self) -> str | None:
        """At deploy start: the credentials and the hosted zone answer (before the test suite runs)."""
        self._records()
        return None

    def check(self) -> str | None:
        """Right before the switch: the zone answers; a note when the records' TTL is not the configured one (the
        switch writes it to both)."""
        ttls = {r.get("TTL") for r in self._records() if r.get("SetIdentifier") in self.ids.values()}
        if ttls and ttls != {self.config.ttl}:
            found = ", ".join(str(t) for t in sorted(t for t in ttls if t is not None))
            return f"{self.name}: the records' TTL is {found} s; the switch sets {self.config.ttl} s on both"
        return None

    def reachable(self) -> str | None:
        try:
            self._records()
        except TargetError as exc:
            return str(exc)
        return None

    # --- the records -------------------------------------------------------------------------------

    def _records(self) -> list[dict[str, Any]]:
        """Every record of the group: the name and type, whatever their SetIdentifier."""
        found = self.api.call("list_resource_record_sets", f"hosted zone {self.zone}", HostedZoneId=self.zone,
                              StartRecordName=self.record, StartRecordType=self.config.record_type, MaxItems="100")
        return [r for r in found["ResourceRecordSets"]
                if fqdn(r["Name"].replace("\\052", "*")) == self.record and r["Type"] == self.config.record_type]

    def _batch(self, weights: Weights) -> dict[str, Any]:
        route53 = scaled(weights, MAX_WEIGHT)
        if not all(0 <= w <= MAX_WEIGHT for w in route53.values()) or not any(route53.values()):
            raise TargetError(f"{self.name}: weights {route53} are outside 0-{MAX_WEIGHT} or all 0")
        return {"Comment": f"bluegreen: {describe(weights)}", "Changes": [
            {"Action": "UPSERT", "ResourceRecordSet": {
                "Name": self.record, "Type": self.config.record_type, "SetIdentifier": self.ids[c],
                "Weight": route53[c], "TTL": self.config.ttl,
                "ResourceRecords": [{"Value": v} for v in self.values[c]]}} for c in COLOURS]}

    def _values(self, colour: Colour, values: list[str]) -> list[str]:
        kind, values = self.config.record_type, list(dict.fromkeys(values))
        where = f"router.values.{colour}" if self.config.values else f"{colour}'s servers' hosts (or router.values)"
        if not values:
            raise TargetError(f"{where}: no value for the {kind} record")
        if kind == "CNAME":
            if len(values) != 1:
                raise TargetError(f"{where}: a CNAME names one target, not {len(values)}")
            return values
        version = 4 if kind == "A" else 6
        for value in values:
            try:
                ok = ipaddress.ip_address(value).version == version
            except ValueError:
                ok = False
            if not ok:
                raise TargetError(f"{where}: {value!r} is not an IPv{version} address for an {kind} record")
        return values
