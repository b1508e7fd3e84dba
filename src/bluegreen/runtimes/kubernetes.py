"""The Kubernetes runtime: the colours are two Deployments, `<app>-blue` and `<app>-green`.

Both Deployments are permanent; their pods carry a colour label. Deploying sets the new image on the idle
colour's Deployment (or server-side applies the user's manifests rendered for it, runtimes/kube_manifests.py)
and waits for the rollout. A preview Service, when there is one, is pointed at the idle colour once it is
ready, so the checks reach it and only it.

What moves live traffic (the Service selector or the HTTPRoute, routers/kube_*.py) is paired with it by the
factory, which hands those routers what they need from here: the version a fully available colour runs, its
pods' labels, the preview pointing and the runbook's warm-up. The lock, the history and the planned
scale-downs are kept on the cluster by state/kubernetes.py.
"""

from __future__ import annotations

import shlex
import time
from datetime import datetime, timezone
from typing import Any

from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Service
from lightkube.types import PatchType

from ..config import Colour, Settings, other_colour, render
from ..errors import NotReadyError, TargetError
from ..kube_client import KubeObjects, annotation, kubectl_prefix, make_client
from .base import ColourState, Runtime
from .kube_manifests import apply_manifests

POLL = 0.25  # seconds between reads while waiting; API reads are cheap


class KubernetesRuntime(Runtime):
    """`preview_service`: the Service pointed at the idle colour (None: none); `colour_services`: a Service per
    colour (an HTTPRoute's backends), the preview when there is no preview Service."""

    def __init__(self, settings: Settings, *, preview_service: str | None,
                 colour_services: dict[Colour, str] | None = None) -> None:
        self.settings = settings
        self.config = settings.target
        self.app = settings.app
        secret = self.config.kubeconfig.get_secret_value() if self.config.kubeconfig else None
        kube = make_client(secret, self.config.context, self.config.namespace, self.config.request_timeout)
        self.namespace: str = self.config.namespace or kube.namespace
        self.objects = KubeObjects(kube, self.namespace)
        self.kubectl = kubectl_prefix(self.config.context, self.namespace)
        self.preview_service = preview_service
        self.colour_services = colour_services

    def deployment_name(self, colour: Colour) -> str:
        return render(self.config.deployment, app=self.app, colour=colour)

    # --- what runs on a colour -----------------------------------------------------------------

    def colour_state(self, colour: Colour) -> ColourState:
        name = self.deployment_name(colour)
        deployment = self.objects.get(Deployment, name, missing_ok=True)
        if deployment is None:
            return ColourState(colour=colour, detail=f"Deployment {name} not found")
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        status = deployment.status
        available = (status.availableReplicas or 0) if status else 0
        ready, _ = rollout_done(deployment)
        return ColourState(
            colour=colour, version=self._version(deployment), running=replicas > 0, ready=ready and replicas > 0,
            replicas=available, detail=f"{available}/{replicas} replicas available ({self._images(deployment)})",
        )

    def _version(self, deployment: Any) -> str | None:
        return (deployment.metadata.annotations or {}).get(annotation("version")) or self._image_tag(deployment)

    def _containers(self, deployment: Any) -> list[Any]:
        containers = deployment.spec.template.spec.containers
        if not self.config.containers:
            return containers[:1]
        named = [c for c in containers if c.name in self.config.containers]
        missing = set(self.config.containers) - {c.name for c in named}
        if missing:
            raise TargetError(f"Deployment {deployment.metadata.name} has no container {sorted(missing)[0]!r} "
                              f"(it has: {', '.join(c.name for c in containers)})")
        return named

    def _images(self, deployment: Any) -> str:
        return ", ".join(c.image for c in self._containers(deployment))

    def _image_tag(self, deployment: Any) -> str | None:
        image = self._containers(deployment)[0].image or ""
        last = image.rsplit("/", 1)[-1].split("@")[0]
        return last.split(":", 1)[1] if ":" in last else None

    def preview_url(self, colour: Colour) -> str:
        if self.config.preview_url:
            return render(self.config.preview_url, colour=colour, app=self.app, namespace=self.namespace)
        service = self.preview_service or (self.colour_services[colour] if self.colour_services else None)
        if service is None:
            raise TargetError("no preview: set router.preview_service or preview_url")
        return self.objects.service_url(service)

    def live_url(self) -> str | None:
        """As configured; else the router's (the live Service's address)."""
        if self.config.live_url:
            return render(self.config.live_url, app=self.app, namespace=self.namespace)
        return self.settings.url or None

    # --- deploy --------------------------------------------------------------------------------

    def deploy(self, colour: Colour, version: str) -> None:
        name = self.deployment_name(colour)
        self.point_preview(None)  # preview reaches nothing while the idle colour rolls out
        replicas = self._release_replicas(colour)
        annotations = {annotation("version"): version,
                       annotation("deployed-at"): datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.config.manifests:
            image = render(self.config.image, version=version, app=self.app) if self.config.image else ""
            apply_manifests(self.objects, self.settings, colour, version, image)
            self.objects.patch(Deployment, name, {"metadata": {"annotations": annotations},
                                                  "spec": {"replicas": replicas}})
            return
        deployment = self.objects.get(Deployment, name)
        containers = [{"name": c.name, "image": self._image_for(c.image, version)}
                      for c in self._containers(deployment)]
        self.objects.patch(Deployment, name, {
            "metadata": {"annotations": annotations},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": containers}}},
        }, patch_type=PatchType.STRATEGIC)  # containers merge by name: other containers and fields stay

    def _image_for(self, current: str, version: str) -> str:
        if self.config.image:
            return render(self.config.image, version=version, app=self.app)
        # keep the repository, set the tag: registry:5000/team/app:1.2 -> registry:5000/team/app:<version>
        repo = current.split("@")[0]
        if ":" in repo.rsplit("/", 1)[-1]:
            repo = repo.rsplit(":", 1)[0]
        return f"{repo}:{version}"

    def _release_replicas(self, colour: Colour) -> int:
        """A release runs as many replicas as the live colour (it will take all its traffic)."""
        if self.config.replicas:
            return self.config.replicas
        counts = []
        for c in (other_colour(colour), colour):
            deployment = self.objects.get(Deployment, self.deployment_name(c), missing_ok=True)
            if deployment is not None and deployment.spec.replicas:
                counts.append(deployment.spec.replicas)
        return max(counts) if counts else 1

    def wait_ready(self, colour: Colour, deadline: float) -> None:
        name = self.deployment_name(colour)
        started = time.monotonic()
        while True:
            deployment = self.objects.get(Deployment, name, deadline=deadline)
            done, counts = rollout_done(deployment)
            if done and (deployment.spec.replicas or 0) > 0:
                self.point_preview(colour)
                return
            stuck = _progress_deadline_exceeded(deployment)
            if stuck or time.monotonic() + POLL >= deadline:
                why = "its progress deadline was exceeded" if stuck else \
                    f"not ready after {time.monotonic() - started:.0f}s"
                pods = self._pod_problems(deployment)
                raise NotReadyError(f"Deployment {name} ({self._images(deployment)}): {why}: {counts}"
                                    + (f"; pods: {pods}" if pods else ""))
            time.sleep(POLL)

    def _pod_problems(self, deployment: Any) -> str:
        """Why pods are not ready, grouped by reason:
        'CrashLoopBackOff on 2 pods (example-green-7d9-x2x: back-off 5m0s restarting failed container...)'."""
        labels = dict(deployment.spec.selector.matchLabels or {})
        try:
            pods = self.objects.list(Pod, labels)
        except TargetError:
            return ""
        groups: dict[str, list[tuple[str, str]]] = {}
        for pod in pods:
            reason, message = _pod_reason(pod)
            if reason:
                groups.setdefault(reason, []).append((pod.metadata.name, message))
        parts = []
        for reason, entries in sorted(groups.items(), key=lambda g: -len(g[1])):
            name, message = entries[0]
            count = f"{len(entries)} pods" if len(entries) > 1 else "1 pod"
            parts.append(f"{reason} on {count} ({name}{': ' + message if message else ''})")
        return "; ".join(parts)

    # --- scale ---------------------------------------------------------------------------------

    def scale(self, colour: Colour, replicas: int) -> None:
        self.objects.patch(Deployment, self.deployment_name(colour), {"spec": {"replicas": replicas}})

    def scale_down(self, colour: Colour) -> None:
        """To `idle_replicas` (a warm pod, when set), not always zero."""
        self.scale(colour, self.config.idle_replicas)

    def stop_colours(self) -> list[str]:
        # One word that scales production to zero is a footgun; the Deployments are the user's.
        raise TargetError(f"`down` is not offered for Kubernetes: scale the Deployments yourself "
                          f"(kubectl --namespace {self.namespace} scale deployment {self.deployment_name('blue')} "
                          f"{self.deployment_name('green')} --replicas=0)")

    # --- what the routers are given, by the factory ---------------------------------------------

    def point_preview(self, colour: Colour | None) -> None:
        """The preview Service reaches only `colour`; None: nothing (a selector value no pod has)."""
        if not self.preview_service:
            return
        value = colour or "none"
        label = self.config.colour_label
        service = self.objects.get(Service, self.preview_service, missing_ok=True)
        if service is None:
            raise TargetError(f"preview Service {self.preview_service} not found {self.objects.where}: "
                              "create it or set router.preview_service: null")
        if (service.spec.selector or {}).get(label) != value:
            self.objects.patch(Service, self.preview_service, {"spec": {"selector": {label: value}}})

    def available_version(self, colour: Colour, deadline: float | None) -> str | None:
        """The version `colour` runs; TargetError unless its Deployment is fully available."""
        deployment = self.objects.get(Deployment, self.deployment_name(colour), deadline=deadline)
        done, counts = rollout_done(deployment)
        if not done or not deployment.spec.replicas:
            # never point live traffic at a colour that is not fully available (argo-rollouts #4750)
            raise TargetError(f"refusing to switch to {colour}: Deployment {deployment.metadata.name} is not ready "
                              f"({counts})")
        return self._version(deployment)

    def pod_labels(self, colour: Colour, deadline: float | None) -> dict[str, str]:
        """The labels that select `colour`'s pods (its Deployment's selector)."""
        deployment = self.objects.get(Deployment, self.deployment_name(colour), deadline=deadline)
        return dict(deployment.spec.selector.matchLabels or {})

    def warm_up_command(self, colour: Colour) -> str:
        """The runbook's first steps: `colour` may be scaled down by then, so scale it up (a no-op if it runs)
        and wait for it; ends with ' && ', before the router's switch."""
        deployment = self.deployment_name(colour)
        count = self._release_replicas(colour)
        return (f"{shlex.join([*self.kubectl, 'scale', 'deployment', deployment, f'--replicas={count}'])} && "
                f"{shlex.join([*self.kubectl, 'rollout', 'status', 'deployment', deployment, '--timeout=10m'])} && ")

    def close(self) -> None:
        self.objects.kube.close()


def rollout_done(deployment: Any) -> tuple[bool, str]:
    """The Deployment controller saw the latest spec and every replica runs it and is available."""
    spec_replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    if status is None:
        return False, "no status yet"
    generation = deployment.metadata.generation or 0
    if (status.observedGeneration or 0) < generation:
        return False, f"the controller has not seen generation {generation} yet"
    updated, available, total = status.updatedReplicas or 0, status.availableReplicas or 0, status.replicas or 0
    counts = f"{updated} updated, {available} available, {total} total of {spec_replicas}"
    return updated == available == total == spec_replicas, counts


def _progress_deadline_exceeded(deployment: Any) -> bool:
    for condition in (deployment.status.conditions if deployment.status else None) or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            return True
    return False


def _pod_reason(pod: Any) -> tuple[str, str]:
    """(reason, message) of a pod that is not ready; ('', '') for a ready one."""
    status = pod.status
    if status is None:
        return "NoStatus", ""
    for condition in status.conditions or []:
        if condition.type == "PodScheduled" and condition.status == "False":
            return condition.reason or "Unschedulable", (condition.message or "").strip()[:160]
    for cs in status.containerStatuses or []:
        if cs.ready:
            continue
        waiting = cs.state.waiting if cs.state else None
        if waiting and waiting.reason:
            return waiting.reason, (waiting.message or "").strip()[:160]
        terminated = cs.state.terminated if cs.state else None
        if terminated:
            return terminated.reason or "Terminated", f"exit code {terminated.exitCode}"
        return "NotReady", f"container {cs.name} is not ready"
    if any(c.type == "Ready" and c.status != "True" for c in status.conditions or []):
        return "NotReady", ""
    return "", ""
