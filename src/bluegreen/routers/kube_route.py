"""The Gateway API HTTPRoute router: the weights of the backendRefs to each colour's Service.

It switches (100/0 to 0/100) and splits (canary steps: any percent per colour), both weights in one update
(a PUT carrying the resourceVersion that was read), and returns once every parent gateway accepted the
route's generation and the Service of each colour given a share has ready endpoints.
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

from lightkube import ApiError
from lightkube.generic_resource import create_namespaced_resource

from ..config import COLOURS, Colour
from ..errors import TargetError
from ..kube_client import KubeObjects, is_conflict
from ..traffic import Weights, describe
from .kube_base import ATTEMPTS, POLL, KubeRouter

HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")


class KubeRouteRouter(KubeRouter):
    """`colour_services`: each colour's backend Service, as the route's backendRefs name them."""

    kind: ClassVar[str] = "httproute"
    weighted: ClassVar[bool] = True
    resource: ClassVar[Any] = HTTPRoute

    def __init__(self, objects: KubeObjects, route: str, colour_services: dict[Colour, str],
                 **from_runtime: Any) -> None:
        super().__init__(objects, route, **from_runtime)
        self.colour_services = colour_services

    @property
    def live_url(self) -> str:
        raise TargetError("an HTTPRoute's address is the gateway's: set the target's live_url (or url)")

    def read(self) -> Weights | None:
        return self._split(self.objects.get(HTTPRoute, self.object_name))

    def _split(self, route: Any) -> Weights | None:
        """The percent of new requests each colour gets from the route's backendRefs (Gateway API weights are
        relative: 1/3 is 25/75); None when neither colour gets any. Every rule that names a colour's Service
        must name both, send nothing elsewhere, and agree with the others; anything else is a TargetError
        saying what was found (someone edited the route)."""
        names = {self.colour_services[c]: c for c in COLOURS}
        both = f"{self.colour_services['blue']} and {self.colour_services['green']}"
        where = f"HTTPRoute {route.metadata.name}"
        splits: list[Weights | None] = []
        for i, rule in enumerate(route.spec.get("rules") or []):
            refs = rule.get("backendRefs") or []
            if not any(ref.get("name") in names for ref in refs):
                continue  # a rule for another backend (e.g. /static): not ours
            raw: dict[Colour, int] = {}
            for ref in refs:
                weight = int(ref.get("weight", 1))  # the Gateway API default is 1
                if ref.get("name") in names:
                    colour = names[ref["name"]]
                    raw[colour] = raw.get(colour, 0) + weight
                elif weight > 0:
                    raise TargetError(f"{where}: rule {i} sends traffic to {ref.get('name')!r}, neither colour's "
                                      f"Service ({both}): fix the route by hand")
            if set(raw) != set(COLOURS):
                raise TargetError(f"{where} must have backendRefs to both {both} (weight 0 for the idle one)")
            total = sum(raw.values())
            if total == 0:
                splits.append(None)
                continue
            blue = round(100 * raw["blue"] / total)
            if 0 < raw["blue"] < total:
                blue = min(max(blue, 1), 99)  # a colour that gets any traffic never reads as 0%
            splits.append({"blue": blue, "green": 100 - blue})
        if not splits:
            raise TargetError(f"{where} has no backendRefs to {both}")
        if any(split != splits[0] for split in splits):
            found = "; ".join(describe(s) if s else "none" for s in splits)
            raise TargetError(f"{where}: its rules split traffic differently ({found}): fix the route by hand")
        return splits[0]

    def write(self, weights: Weights, deadline: float | None = None) -> None:
        name = self.object_name
        versions = {c: self.available_version(c, deadline) for c in COLOURS if weights[c] > 0}
        whole = [c for c in COLOURS if weights[c] == 100]
        kube = self.objects.kube
        for _ in range(ATTEMPTS):
            route = self.objects.get(HTTPRoute, name, deadline=deadline)
            if self._split(route) == weights:
                return
            body = route.to_dict()
            for rule in body["spec"].get("rules") or []:
                for ref in rule.get("backendRefs") or []:
                    for colour in COLOURS:
                        if ref.get("name") == self.colour_services[colour]:
                            ref["weight"] = weights[colour]
            if whole:  # the live colour changes only with a whole switch; a canary step keeps it
                meta = body["metadata"]
                meta["annotations"] = {**(meta.get("annotations") or {}), **self.live_annotations(
                    meta.get("annotations") or {}, whole[0], versions[whole[0]])}
            body.pop("status", None)
            try:  # one PUT carrying the resourceVersion we read: both weights change together or not at all
                kube.call(f"update HTTPRoute {name}",
                          lambda: kube.client.replace(HTTPRoute.from_dict(body), namespace=self.objects.namespace),
                          deadline=deadline)
                return
            except ApiError as exc:
                if not is_conflict(exc):
                    raise kube.error(f"update HTTPRoute {name}", exc) from None
                # a concurrent writer: re-read and re-decide on what they wrote
        raise TargetError(f"HTTPRoute {name}: every switch attempt met a concurrent change ({ATTEMPTS} conflicts)")

    def wait_applied(self, weights: Weights, deadline: float) -> None:
        """Returns once every parent gateway reports Accepted and ResolvedRefs for the current generation,
        and the Service of each colour given a share has ready endpoints."""
        name = self.object_name
        last = "no status from the gateway yet"
        while True:
            route = self.objects.get(HTTPRoute, name, deadline=deadline)
            generation = route.metadata.generation or 0
            parents = (route.status or {}).get("parents") or []
            problems = []
            for parent in parents:
                conditions = {c["type"]: c for c in parent.get("conditions") or []}
                for wanted in ("Accepted", "ResolvedRefs"):
                    c = conditions.get(wanted)
                    if c is None or c.get("observedGeneration", generation) < generation:
                        problems.append(f"{wanted} not reported for generation {generation}")
                    elif c.get("status") != "True":
                        problems.append(f"{wanted}={c.get('status')} ({c.get('reason')}: {c.get('message')})")
            if parents and not problems:
                try:
                    for colour in (c for c in COLOURS if weights[c] > 0):
                        self.wait_endpoints(self.colour_services[colour], colour,
                                            min(deadline, time.monotonic() + POLL))
                    return
                except TargetError as exc:
                    problems.append(str(exc))
            last = "; ".join(problems) or last
            if time.monotonic() + POLL >= deadline:
                raise TargetError(f"HTTPRoute {name} set to {describe(weights)}, but the gateway did not take it: "
                                  f"{last}")
            time.sleep(POLL)

    def kubectl_patch(self, to: Colour) -> list[str] | None:
        try:
            route = self.objects.get(HTTPRoute, self.object_name)
        except TargetError:
            return None
        ops = []
        for i, rule in enumerate(route.spec.get("rules") or []):
            for j, ref in enumerate(rule.get("backendRefs") or []):
                for colour in COLOURS:
                    if ref.get("name") == self.colour_services[colour]:
                        ops.append({"op": "replace", "path": f"/spec/rules/{i}/backendRefs/{j}/weight",
                                    "value": 100 if colour == to else 0})
        return ["httproute", self.object_name, "--type=json", "-p", json.dumps(ops, separators=(",", ":"))]
