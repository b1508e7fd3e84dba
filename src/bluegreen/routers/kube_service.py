"""The Kubernetes Service selector router: the live Service's colour label names the live colour.

The selector names one colour, so it only switches (no canary steps); the switch is one merge patch of that
label, conditional on the resourceVersion that was read, and returns once the Service's EndpointSlices list
the new colour's ready pods and only those.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from lightkube import ApiError
from lightkube.resources.core_v1 import Service

from ..config import COLOURS, Colour
from ..errors import TargetError
from ..kube_client import KubeObjects, is_conflict
from ..traffic import Weights, all_to, larger_share
from .kube_base import ATTEMPTS, KubeRouter


class KubeServiceRouter(KubeRouter):
    kind: ClassVar[str] = "service"
    resource: ClassVar[Any] = Service

    def __init__(self, objects: KubeObjects, service: str, **from_runtime: Any) -> None:
        super().__init__(objects, service, **from_runtime)

    @property
    def live_url(self) -> str:
        return self.objects.service_url(self.object_name)

    def read(self) -> Weights | None:
        """All to the colour the selector names; None when it names neither (nothing live yet)."""
        service = self.objects.get(Service, self.object_name)
        value = (service.spec.selector or {}).get(self.colour_label)
        return all_to(value) if value in COLOURS else None

    def write(self, weights: Weights, deadline: float | None = None) -> None:
        name = self.object_name
        if 100 not in weights.values():
            raise TargetError(f"router service (Service {name}) cannot split traffic between the colours, only "
                              "switch it: use router.kind: httproute for canary steps")
        to = larger_share(weights)
        version = self.available_version(to, deadline)
        for _ in range(ATTEMPTS):
            service = self.objects.get(Service, name, deadline=deadline)
            if (service.spec.selector or {}).get(self.colour_label) == to:
                return
            # Merge patch of one selector key, conditional on the version we read: a concurrent
            # writer's change makes this a 409, and we decide again on what they wrote.
            annotations = self.live_annotations(service.metadata.annotations or {}, to, version)
            body = {"metadata": {"resourceVersion": service.metadata.resourceVersion, "annotations": annotations},
                    "spec": {"selector": {self.colour_label: to}}}
            try:
                self.objects.patch(Service, name, body, deadline=deadline)
                return
            except ApiError as exc:  # 409: re-read and re-decide
                if not is_conflict(exc):
                    raise
        raise TargetError(f"Service {name}: every switch attempt met a concurrent change ({ATTEMPTS} conflicts)")

    def wait_applied(self, weights: Weights, deadline: float) -> None:
        self.wait_endpoints(self.object_name, larger_share(weights), deadline)

    def kubectl_patch(self, to: Colour) -> list[str]:
        patch = {"spec": {"selector": {self.colour_label: to}}}
        return ["service", self.object_name, "--type=merge", "-p", json.dumps(patch, separators=(",", ":"))]
