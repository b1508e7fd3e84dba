"""What the two Kubernetes routers share (routers/kube_service.py, the Service selector; routers/kube_route.py,
the Gateway API HTTPRoute): one update of one object, written with the resourceVersion that was read so a
concurrent writer is never overwritten, then a wait until the cluster carries it.

The live colour, its version and the one before are annotations on that object (bluegreen.dev/live-colour...),
as are the deploy id and the CI run of the last release. What a router needs from the Deployments (the
runtime's) is handed to it by the factory as callables: it never reads them itself.
"""

from __future__ import annotations

import shlex
import time
from abc import abstractmethod
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from lightkube.resources.core_v1 import Pod
from lightkube.resources.discovery_v1 import EndpointSlice

from ..config import Colour, other_colour
from ..errors import TargetError
from ..kube_client import KubeObjects, annotation
from ..traffic import Weights, check_weights, larger_share
from .base import Router

if TYPE_CHECKING:
    from ..state.base import Release

POLL = 0.25  # seconds between reads while waiting; API reads are cheap
ATTEMPTS = 5  # conditional writes met by a concurrent change before giving up


class KubeRouter(Router):
    """`object_name`: the Service or HTTPRoute that holds the value. From the runtime: `available_version`
    (colour, deadline) the version a colour runs, TargetError unless it is fully available; `pod_labels`
    (colour, deadline) the labels of its pods; `point_preview` (colour or None) the preview Service;
    `warm_up` (colour) the runbook's commands that scale the colour up first; `kubectl` the runbook's prefix."""

    resource: ClassVar[Any]  # the lightkube resource of the object

    def __init__(self, objects: KubeObjects, object_name: str, *, colour_label: str, kubectl: list[str],
                 available_version: Callable[[Colour, float | None], str | None],
                 pod_labels: Callable[[Colour, float | None], dict[str, str]],
                 point_preview: Callable[[Colour | None], None],
                 warm_up: Callable[[Colour], str]) -> None:
        self.objects = objects
        self.object_name = object_name
        self.colour_label = colour_label
        self.kubectl = kubectl
        self.available_version = available_version
        self.pod_labels = pod_labels
        self.point_preview = point_preview
        self.warm_up = warm_up

    @property
    def name(self) -> str:
        return f"{self.kind} {self.object_name} {self.objects.where}"

    @abstractmethod
    def write(self, weights: Weights, deadline: float | None = None) -> None:
        """One conditional update (none when the object already says so); a colour given any share must be fully
        available; a 409 is re-read and decided again, ATTEMPTS times."""

    @abstractmethod
    def wait_applied(self, weights: Weights, deadline: float) -> None:
        """Returns once the cluster routes by `weights`; TargetError saying what did not converge at `deadline`."""

    @abstractmethod
    def kubectl_patch(self, to: Colour) -> list[str] | None:
        """The arguments of `kubectl patch` that send all traffic to `to`; None when the object cannot be read."""

    def set_weights(self, weights: Weights, deadline: float) -> None:
        """Overrides the base's write and read-back: a refused colour, a conflict and a cluster that does not
        converge each fail with their own reason, and the preview follows a whole switch."""
        check_weights(weights)
        self.write(weights, deadline)
        self.wait_applied(weights, deadline)
        if 100 in weights.values():  # the preview reaches only the idle colour, now the old one
            self.point_preview(other_colour(larger_share(weights)))

    def raw_switch_command(self, to: Colour) -> str | None:
        warm_up = self.warm_up(to)
        patch = self.kubectl_patch(to)
        return warm_up + shlex.join([*self.kubectl, "patch", *patch]) if patch else None

    def wait_endpoints(self, service: str, to: Colour, deadline: float) -> None:
        """Returns once the Service's EndpointSlices list ready pods of `to`, and only those."""
        want_labels = self.pod_labels(to, deadline)
        last = "no EndpointSlice yet"
        while True:
            pods = {p.metadata.name for p in self.objects.list(Pod, want_labels, deadline=deadline)}
            endpoints = [e for s in self.objects.list(EndpointSlice, {"kubernetes.io/service-name": service},
                                                      deadline=deadline)
                         for e in (s.endpoints or [])]
            ready = [e for e in endpoints if e.conditions is None or e.conditions.ready is not False]
            foreign = [e for e in endpoints if not e.targetRef or e.targetRef.name not in pods]
            if ready and not foreign and all(e.targetRef.name in pods for e in ready):
                return
            last = (f"{len(foreign)} endpoint(s) of other pods still listed" if foreign
                    else "no ready endpoint yet")
            if time.monotonic() + POLL >= deadline:
                raise TargetError(f"Service {service} switched to {to}, but its EndpointSlices did not converge: "
                                  f"{last}")
            time.sleep(POLL)

    @staticmethod
    def live_annotations(current: dict, to: Colour, version: str | None) -> dict:
        """The annotations of a whole switch to `to`, given the object's `current` ones."""
        previous = current.get(annotation("live-colour"))
        out = {
            annotation("live-colour"): to,
            annotation("live-version"): version,
            annotation("switched-at"): datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if previous and previous != to:
            out[annotation("previous-colour")] = previous
            out[annotation("previous-version")] = current.get(annotation("live-version"))
        return out

    def annotate_release(self, release: Release) -> None:
        """The state store's on_recorded hook: deploy id and CI run on the object, beside the live colour the
        switch wrote there."""
        if release.outcome != "succeeded" or release.action == "prepare":
            return
        annotations = {annotation("deploy-id"): release.id, annotation("run-url"): release.run_url}
        self.objects.patch(self.resource, self.object_name, {"metadata": {"annotations": annotations}})
