"""The Kubernetes target: Deployments `<app>-blue` and `<app>-green` behind a switched Service or HTTPRoute.

Both Deployments are permanent; their pods carry a colour label. Deploying sets the
new image on the idle colour's Deployment (or server-side applies the user's
manifests rendered for it) and waits for the rollout; the live Service's selector
(or the HTTPRoute's weights) is the one switch, written with the resourceVersion
that was read so a concurrent writer is never overwritten. The HTTPRoute also
splits traffic (canary steps: any percent per colour, in the same one update);
the selector names one colour, so it only switches. The router is the
source of truth for which colour is live; state about releases is kept on the
cluster (annotations, a Lease, a ConfigMap), never in the CI runner.

Scaling the old colour down after `scale_down_delay`: the due time is first written
on its Deployment (annotation bluegreen.dev/scale-down-at), then, if the delay is
at most `scale_down_wait`, the run waits and applies it; otherwise (or if the run is
killed while waiting) the next bluegreen run that takes the lock applies it. A
colour that became live again in the meantime is never scaled down.
"""

from __future__ import annotations

import json
import shlex
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from ..config import COLOURS, Colour, KubernetesRouteRouter, KubernetesTarget as Config, Settings, other_colour, render
from ..errors import NotReadyError, TargetError
from ..routers.base import describe
from .base import (
    ColourState, Release, RouterState, Target, Weights, all_to, check_weights, larger_share, utcnow,
)
from .kube_client import Kube, is_conflict, is_not_found, make_client
from .kube_state import KubeStateStore

HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")

ANNOTATION = "bluegreen.dev/"
POLL = 0.25  # seconds between reads while waiting; API reads are cheap
_SWITCH_ATTEMPTS = 5


def _ann(name: str) -> str:
    return ANNOTATION + name


def _dropped_field(given: Any, kept: Any, path: str = "") -> str | None:
    """The first field of `given` (a manifest document) missing from `kept` (what will be sent)."""
    if isinstance(given, dict) and isinstance(kept, dict):
        for key, value in given.items():
            here = f"{path}.{key}" if path else str(key)
            if value is not None and key not in kept:
                return here
            found = _dropped_field(value, kept.get(key), here)
            if found:
                return found
    elif isinstance(given, list) and isinstance(kept, list):
        for i, (item, kept_item) in enumerate(zip(given, kept)):
            found = _dropped_field(item, kept_item, f"{path}[{i}]")
            if found:
                return found
    return None


class KubernetesTarget(Target):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config: Config = settings.target
        secret = self.config.kubeconfig.get_secret_value() if self.config.kubeconfig else None
        self.kube: Kube = make_client(secret, self.config.context, self.config.namespace,
                                      self.config.request_timeout)
        self.namespace = self.config.namespace or self.kube.namespace
        self.client = self.kube.client
        self.app = settings.app
        self.state = KubeStateStore(self.kube, self.namespace, self.app)
        self.state.on_locked.append(self.apply_scale_downs)
        self.state.on_recorded.append(self.record_release)
        router = self.config.router
        self.route_router = router if isinstance(router, KubernetesRouteRouter) else None
        self.service_name = None if self.route_router else render(router.service, app=self.app)
        self.preview_service = render(router.preview_service, app=self.app) if router.preview_service else None

    # --- names -------------------------------------------------------------------------------

    def deployment_name(self, colour: Colour) -> str:
        return render(self.config.deployment, app=self.app, colour=colour)

    def _backend(self, colour: Colour) -> str:
        assert self.route_router is not None
        return render(self.route_router.services, app=self.app, colour=colour)

    def _where(self) -> str:
        return f"in namespace {self.namespace}"

    # --- reads -------------------------------------------------------------------------------

    def _get(self, res: Any, name: str, *, missing_ok: bool = False, deadline: float | None = None) -> Any:
        found = self.kube.get(res, name, self.namespace, deadline=deadline)
        if found is None and not missing_ok:
            raise TargetError(f"{res.__name__} {name} not found {self._where()}: create it first "
                              "(see examples/kubernetes)")
        return found

    def _list(self, res: Any, labels: dict, *, deadline: float | None = None) -> list:
        what = f"list {res.__name__} {labels}"
        try:
            return self.kube.call(what, lambda: list(self.client.list(res, namespace=self.namespace, labels=labels)),
                                  deadline=deadline)
        except ApiError as exc:
            raise self.kube.error(what, exc) from None

    def _patch(self, res: Any, name: str, body: dict, *, patch_type: PatchType = PatchType.MERGE,
               deadline: float | None = None) -> Any:
        what = f"patch {res.__name__} {name}"
        try:
            return self.kube.call(what, lambda: self.client.patch(res, name, body, namespace=self.namespace,
                                                                  patch_type=patch_type), deadline=deadline)
        except ApiError as exc:
            if is_conflict(exc):
                raise
            if is_not_found(exc):
                raise TargetError(f"{res.__name__} {name} not found {self._where()}") from None
            raise self.kube.error(what, exc) from None

    def live(self) -> Colour | None:
        """The colour with the larger share (the stable one during a canary); None when neither gets any."""
        if self.route_router is not None:
            weights = self._route_split(self._get(HTTPRoute, self._route_name()))
            return larger_share(weights) if weights else None
        service = self._get(Service, self.service_name)
        value = (service.spec.selector or {}).get(self.config.colour_label)
        return value if value in COLOURS else None

    def weights(self) -> Weights | None:
        if self.route_router is None:
            return super().weights()  # a selector names one colour: all or nothing
        return self._route_split(self._get(HTTPRoute, self._route_name()))

    def router_state(self) -> RouterState:
        name = (f"httproute {self._route_name()}" if self.route_router else f"service {self.service_name}") \
            + f" {self._where()}"
        try:
            return RouterState(name=name, serving=True, weights=self.weights())
        except TargetError as exc:  # garbled: status says what it found instead of failing
            return RouterState(name=name, serving=True, unreadable=str(exc))

    def _route_name(self) -> str:
        assert self.route_router is not None
        return render(self.route_router.route, app=self.app)

    def _route_split(self, route: Any) -> Weights | None:
        """The percent of new requests each colour gets from the route's backendRefs (Gateway API weights are
        relative: 1/3 is 25/75); None when neither colour gets any. Every rule that names a colour's Service
        must name both, send nothing elsewhere, and agree with the others; anything else is a TargetError
        saying what was found (someone edited the route)."""
        names = {self._backend(c): c for c in COLOURS}
        both = f"{self._backend('blue')} and {self._backend('green')}"
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

    def colour_state(self, colour: Colour) -> ColourState:
        name = self.deployment_name(colour)
        deployment = self._get(Deployment, name, missing_ok=True)
        if deployment is None:
            return ColourState(colour=colour, detail=f"Deployment {name} not found")
        version = (deployment.metadata.annotations or {}).get(_ann("version")) or self._image_tag(deployment)
        replicas = deployment.spec.replicas if deployment.spec.replicas is not None else 1
        status = deployment.status
        available = (status.availableReplicas or 0) if status else 0
        ready, _ = self._rollout_done(deployment)
        return ColourState(
            colour=colour, version=version, running=replicas > 0, ready=ready and replicas > 0,
            replicas=available, detail=f"{available}/{replicas} replicas available ({self._images(deployment)})",
        )

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

    @staticmethod
    def _rollout_done(deployment: Any) -> tuple[bool, str]:
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

    def preview_url(self, colour: Colour) -> str:
        if self.config.preview_url:
            return render(self.config.preview_url, colour=colour, app=self.app, namespace=self.namespace)
        service = self.preview_service or (self._backend(colour) if self.route_router else None)
        if service is None:
            raise TargetError("no preview: set router.preview_service or preview_url")
        return self._service_url(service)

    def live_url(self) -> str:
        if self.config.live_url:
            return render(self.config.live_url, app=self.app, namespace=self.namespace)
        if self.settings.url:
            return self.settings.url
        if self.route_router is not None:
            raise TargetError("an HTTPRoute's address is the gateway's: set the target's live_url (or url)")
        return self._service_url(self.service_name)

    def _service_url(self, name: str) -> str:
        service = self._get(Service, name, missing_ok=True)
        port = service.spec.ports[0].port if service is not None and service.spec.ports else 80
        return f"http://{name}.{self.namespace}.svc.cluster.local" + ("" if port == 80 else f":{port}")

    # --- deploy ------------------------------------------------------------------------------

    def deploy(self, colour: Colour, version: str) -> None:
        name = self.deployment_name(colour)
        self._point_preview(None)  # preview reaches nothing while the idle colour rolls out
        replicas = self._release_replicas(colour)
        annotations = {_ann("version"): version, _ann("deployed-at"): utcnow().isoformat(timespec="seconds"),
                       _ann("scale-down-at"): None}
        if self.config.manifests:
            self._apply_manifests(colour, version)
            self._patch(Deployment, name, {"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}})
            return
        deployment = self._get(Deployment, name)
        containers = [{"name": c.name, "image": self._image_for(c.image, version)}
                      for c in self._containers(deployment)]
        self._patch(Deployment, name, {
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
            deployment = self._get(Deployment, self.deployment_name(c), missing_ok=True)
            if deployment is not None and deployment.spec.replicas:
                counts.append(deployment.spec.replicas)
        return max(counts) if counts else 1

    def _apply_manifests(self, colour: Colour, version: str) -> None:
        image = render(self.config.image, version=version, app=self.app) if self.config.image else ""
        for file in self.config.manifests:
            path = self.settings.path(file)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise TargetError(f"manifest {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise TargetError(f"manifest {path} is not valid YAML: not UTF-8 text") from None
            text = render(text, app=self.app, colour=colour, version=version, image=image, namespace=self.namespace)
            try:
                docs = [d for d in yaml.safe_load_all(text) if d]
            except yaml.YAMLError as exc:
                # the problem and where, not the parser's first line ("while parsing a block mapping")
                mark = getattr(exc, "problem_mark", None)
                problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
                raise TargetError(f"manifest {path} is not valid YAML: {problem}{where}") from None
            for doc in docs:
                self._apply(doc, path)

    def _apply(self, doc: Any, path: Path) -> None:
        from lightkube.codecs import from_dict
        from lightkube.core.exceptions import LoadResourceError

        meta = doc.get("metadata") if isinstance(doc, dict) else None
        name = (meta.get("name") if isinstance(meta, dict) else None) or "?"
        kind = doc.get("kind") if isinstance(doc, dict) else None
        try:
            obj = from_dict(doc)
        except (LoadResourceError, AttributeError, TypeError, ValueError) as exc:
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise TargetError(f"manifest {path}: {kind} {name}: {reason}") from None
        # lightkube's models drop fields they do not know (a typo such as `contianers`): the object would be
        # applied without them, so refuse, as kubectl's strict field validation does
        unknown = _dropped_field(doc, obj.to_dict())
        if unknown:
            raise TargetError(f"manifest {path}: {kind} {name}: unknown field {unknown!r}")
        what = f"apply {kind} {name} from {path.name}"
        try:
            self.kube.call(what, lambda: self.client.apply(obj, namespace=self.namespace, field_manager="bluegreen",
                                                           force=True))
        except ApiError as exc:
            raise self.kube.error(what, exc) from None

    def wait_ready(self, colour: Colour, deadline: float) -> None:
        name = self.deployment_name(colour)
        started = time.monotonic()
        while True:
            deployment = self._get(Deployment, name, deadline=deadline)
            done, counts = self._rollout_done(deployment)
            if done and (deployment.spec.replicas or 0) > 0:
                self._point_preview(colour)
                return
            stuck = self._progress_deadline_exceeded(deployment)
            if stuck or time.monotonic() + POLL >= deadline:
                why = "its progress deadline was exceeded" if stuck else \
                    f"not ready after {time.monotonic() - started:.0f}s"
                pods = self._pod_problems(deployment)
                raise NotReadyError(f"Deployment {name} ({self._images(deployment)}): {why}: {counts}"
                                    + (f"; pods: {pods}" if pods else ""))
            time.sleep(POLL)

    @staticmethod
    def _progress_deadline_exceeded(deployment: Any) -> bool:
        for condition in (deployment.status.conditions if deployment.status else None) or []:
            if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
                return True
        return False

    def _pod_problems(self, deployment: Any) -> str:
        """Why pods are not ready, grouped by reason:
        'CrashLoopBackOff on 2 pods (example-green-7d9-x2x: back-off 5m0s restarting failed container...)'."""
        labels = dict(deployment.spec.selector.matchLabels or {})
        try:
            pods = self._list(Pod, labels)
        except TargetError:
            return ""
        groups: dict[str, list[tuple[str, str]]] = {}
        for pod in pods:
            reason, message = self._pod_reason(pod)
            if reason:
                groups.setdefault(reason, []).append((pod.metadata.name, message))
        parts = []
        for reason, entries in sorted(groups.items(), key=lambda g: -len(g[1])):
            name, message = entries[0]
            count = f"{len(entries)} pods" if len(entries) > 1 else "1 pod"
            parts.append(f"{reason} on {count} ({name}{': ' + message if message else ''})")
        return "; ".join(parts)

    @staticmethod
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

    def scale(self, colour: Colour, replicas: int) -> None:
        annotations = {_ann("scale-down-at"): None}
        self._patch(Deployment, self.deployment_name(colour),
                    {"metadata": {"annotations": annotations}, "spec": {"replicas": replicas}})

    def _point_preview(self, colour: Colour | None) -> None:
        """The preview Service reaches only `colour`; None: nothing (a selector value no pod has)."""
        if not self.preview_service:
            return
        value = colour or "none"
        service = self._get(Service, self.preview_service, missing_ok=True)
        if service is None:
            raise TargetError(f"preview Service {self.preview_service} not found {self._where()}: "
                              "create it or set router.preview_service: null")
        if (service.spec.selector or {}).get(self.config.colour_label) != value:
            self._patch(Service, self.preview_service, {"spec": {"selector": {self.config.colour_label: value}}})

    # --- switch ------------------------------------------------------------------------------

    def switch(self, to: Colour, deadline: float) -> None:
        self.set_weights(all_to(to), deadline)

    def set_weights(self, weights: Weights, deadline: float) -> None:
        """One update of the router (the HTTPRoute's weights, or the Service's selector for a whole switch);
        returns once the gateway / the endpoints carry it. A colour given any share must be fully available."""
        check_weights(weights)
        serving = [c for c in COLOURS if weights[c] > 0]
        if self.route_router is None and len(serving) > 1:
            raise TargetError(f"router service (Service {self.service_name}) cannot split traffic between the "
                              "colours, only switch it: use router.kind: httproute for canary steps")
        versions = {c: self._available_version(c, deadline) for c in serving}
        if self.route_router is not None:
            self._set_route(weights, versions, deadline)
        else:
            self._switch_service(serving[0], versions[serving[0]], deadline)
        for colour in serving:  # a colour that takes traffic is never scaled down by an earlier plan
            self._patch(Deployment, self.deployment_name(colour),
                        {"metadata": {"annotations": {_ann("scale-down-at"): None}}}, deadline=deadline)
        if len(serving) == 1:
            self._point_preview(other_colour(serving[0]))  # the preview reaches only the idle colour, now the old one

    def _available_version(self, colour: Colour, deadline: float) -> str | None:
        """The version `colour` runs; TargetError unless its Deployment is fully available."""
        deployment = self._get(Deployment, self.deployment_name(colour), deadline=deadline)
        done, counts = self._rollout_done(deployment)
        if not done or not deployment.spec.replicas:
            # never point live traffic at a colour that is not fully available (argo-rollouts #4750)
            raise TargetError(f"refusing to switch to {colour}: Deployment {deployment.metadata.name} is not ready "
                              f"({counts})")
        return (deployment.metadata.annotations or {}).get(_ann("version")) or self._image_tag(deployment)

    def _state_annotations(self, current: dict, to: Colour, version: str | None) -> dict:
        previous = current.get(_ann("live-colour"))
        out = {
            _ann("live-colour"): to,
            _ann("live-version"): version,
            _ann("switched-at"): utcnow().isoformat(timespec="seconds"),
        }
        if previous and previous != to:
            out[_ann("previous-colour")] = previous
            out[_ann("previous-version")] = current.get(_ann("live-version"))
        return out

    def _switch_service(self, to: Colour, version: str | None, deadline: float) -> None:
        name = self.service_name
        for _ in range(_SWITCH_ATTEMPTS):
            service = self._get(Service, name, deadline=deadline)
            selector = service.spec.selector or {}
            if selector.get(self.config.colour_label) != to:
                # Merge patch of one selector key, conditional on the version we read: a concurrent
                # writer's change makes this a 409, and we decide again on what they wrote.
                annotations = self._state_annotations(service.metadata.annotations or {}, to, version)
                body = {"metadata": {"resourceVersion": service.metadata.resourceVersion, "annotations": annotations},
                        "spec": {"selector": {self.config.colour_label: to}}}
                try:
                    self._patch(Service, name, body, deadline=deadline)
                except ApiError as exc:  # 409: re-read and re-decide
                    if is_conflict(exc):
                        continue
                    raise
            self._wait_endpoints(name, to, deadline)
            return
        raise TargetError(f"Service {name}: every switch attempt met a concurrent change ({_SWITCH_ATTEMPTS} conflicts)")

    def _wait_endpoints(self, service: str, to: Colour, deadline: float) -> None:
        """Returns once the Service's EndpointSlices list ready pods of `to`, and only those."""
        deployment = self._get(Deployment, self.deployment_name(to), deadline=deadline)
        want_labels = dict(deployment.spec.selector.matchLabels or {})
        last = "no EndpointSlice yet"
        while True:
            pods = {p.metadata.name for p in self._list(Pod, want_labels, deadline=deadline)}
            endpoints = [e for s in self._list(EndpointSlice, {"kubernetes.io/service-name": service},
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

    def _set_route(self, weights: Weights, versions: dict[Colour, str | None], deadline: float) -> None:
        name = self._route_name()
        whole = [c for c in COLOURS if weights[c] == 100]
        for _ in range(_SWITCH_ATTEMPTS):
            route = self._get(HTTPRoute, name, deadline=deadline)
            if self._route_split(route) != weights:
                body = route.to_dict()
                for rule in body["spec"].get("rules") or []:
                    for ref in rule.get("backendRefs") or []:
                        for colour in COLOURS:
                            if ref.get("name") == self._backend(colour):
                                ref["weight"] = weights[colour]
                if whole:  # the live colour changes only with a whole switch; a canary step keeps it
                    meta = body["metadata"]
                    meta["annotations"] = {**(meta.get("annotations") or {}), **self._state_annotations(
                        meta.get("annotations") or {}, whole[0], versions[whole[0]])}
                body.pop("status", None)
                try:  # one PUT carrying the resourceVersion we read: both weights change together or not at all
                    self.kube.call(f"update HTTPRoute {name}",
                                   lambda: self.client.replace(HTTPRoute.from_dict(body), namespace=self.namespace),
                                   deadline=deadline)
                except ApiError as exc:
                    if is_conflict(exc):
                        continue  # a concurrent writer: re-read and re-decide on what they wrote
                    raise self.kube.error(f"update HTTPRoute {name}", exc) from None
            self._wait_route(name, weights, deadline)
            return
        raise TargetError(f"HTTPRoute {name}: every switch attempt met a concurrent change ({_SWITCH_ATTEMPTS} conflicts)")

    def _wait_route(self, name: str, weights: Weights, deadline: float) -> None:
        """Returns once every parent gateway reports Accepted and ResolvedRefs for the current generation,
        and the Service of each colour given a share has ready endpoints."""
        last = "no status from the gateway yet"
        while True:
            route = self._get(HTTPRoute, name, deadline=deadline)
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
                        self._wait_endpoints(self._backend(colour), colour, min(deadline, time.monotonic() + POLL))
                    return
                except TargetError as exc:
                    problems.append(str(exc))
            last = "; ".join(problems) or last
            if time.monotonic() + POLL >= deadline:
                raise TargetError(f"HTTPRoute {name} set to {describe(weights)}, but the gateway did not take it: "
                                  f"{last}")
            time.sleep(POLL)

    # --- after the switch ----------------------------------------------------------------------

    def schedule_scale_down(self, colour: Colour, delay: float, release_id: str) -> float | None:
        name = self.deployment_name(colour)
        due = utcnow() + timedelta(seconds=delay)
        self._patch(Deployment, name, {"metadata": {"annotations": {
            _ann("scale-down-at"): due.isoformat(timespec="seconds"), _ann("scale-down-release"): release_id}}})
        # A short delay is waited out by this run (outside the lock); a longer one is applied by
        # the next bluegreen run that takes the lock.
        return delay if delay <= self.config.scale_down_wait else None

    def _scale_down_if_due(self, colour: Colour) -> bool:
        name = self.deployment_name(colour)
        deployment = self._get(Deployment, name, missing_ok=True)
        if deployment is None:
            return False
        due = (deployment.metadata.annotations or {}).get(_ann("scale-down-at"))
        if not due or datetime.fromisoformat(due) > datetime.now(timezone.utc):
            return False
        if (self.weights() or {}).get(colour, 0) > 0:  # takes traffic again (a rollback, a canary) since planned
            self._patch(Deployment, name, {"metadata": {"annotations": {_ann("scale-down-at"): None}}})
            return False
        self._patch(Deployment, name, {
            "metadata": {"resourceVersion": deployment.metadata.resourceVersion,
                         "annotations": {_ann("scale-down-at"): None}},
            "spec": {"replicas": self.config.idle_replicas},
        })
        return True

    def apply_scale_downs(self) -> None:  # also run each time this target's lock is taken
        for colour in COLOURS:
            try:
                self._scale_down_if_due(colour)
            except (TargetError, ApiError):
                pass  # a conflict or a hiccup: the next run tries again; never a reason to fail this one

    def raw_rollback_command(self, to: Colour) -> str | None:
        prefix = ["kubectl"]
        if self.config.context:
            prefix += ["--context", self.config.context]
        prefix += ["--namespace", self.namespace]
        # the previous colour may be scaled down by then: scale it up (a no-op if it runs) and wait for it
        deployment = self.deployment_name(to)
        count = self._release_replicas(to)
        warm_up = (f"{shlex.join([*prefix, 'scale', 'deployment', deployment, f'--replicas={count}'])} && "
                   f"{shlex.join([*prefix, 'rollout', 'status', 'deployment', deployment, '--timeout=10m'])} && ")
        if self.route_router is None:
            patch = {"spec": {"selector": {self.config.colour_label: to}}}
            return warm_up + shlex.join([*prefix, "patch", "service", self.service_name, "--type=merge",
                                         "-p", json.dumps(patch, separators=(",", ":"))])
        name = self._route_name()
        try:
            route = self._get(HTTPRoute, name)
        except TargetError:
            return None
        ops = []
        for i, rule in enumerate(route.spec.get("rules") or []):
            for j, ref in enumerate(rule.get("backendRefs") or []):
                for colour in COLOURS:
                    if ref.get("name") == self._backend(colour):
                        ops.append({"op": "replace", "path": f"/spec/rules/{i}/backendRefs/{j}/weight",
                                    "value": 100 if colour == to else 0})
        return warm_up + shlex.join([*prefix, "patch", "httproute", name, "--type=json",
                                     "-p", json.dumps(ops, separators=(",", ":"))])

    def record_release(self, release: Release) -> None:
        """Deploy id and CI run on the router object, beside the live colour the switch wrote there."""
        if release.outcome != "succeeded" or release.action == "prepare":
            return
        annotations = {_ann("deploy-id"): release.id, _ann("run-url"): release.run_url}
        if self.route_router is not None:
            self._patch(HTTPRoute, self._route_name(), {"metadata": {"annotations": annotations}})
        else:
            self._patch(Service, self.service_name, {"metadata": {"annotations": annotations}})

    def stop_all(self, purge: bool = False) -> list[str]:
        # One word that scales production to zero is a footgun; the Deployments are the user's.
        ns = self.namespace
        raise TargetError(f"`down` is not offered for Kubernetes: scale the Deployments yourself "
                          f"(kubectl --namespace {ns} scale deployment {self.deployment_name('blue')} "
                          f"{self.deployment_name('green')} --replicas=0)")

    def close(self) -> None:
        self.kube.close()
