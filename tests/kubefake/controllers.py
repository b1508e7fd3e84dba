"""What the cluster's controllers do, for the objects bluegreen reads back.

- Deployment controller + kubelet: a spec change starts a rollout of the pod template
  (identified by its pod-template-hash). Pods of the new template start Pending; the
  rollout then completes (old pods removed, new pods Ready) or fails (pods stay not
  ready with a reason: CrashLoopBackOff, ImagePullBackOff, Unschedulable...).
  `auto=True`: it completes `ready_after` seconds after the change unless the image
  matches a `fail_image` rule. `auto=False`: the test steps it (`rollout`, `fail_rollout`).
  Status follows: observedGeneration, replicas, updated/ready/available/unavailable
  counts (zero counts omitted, as the real API does) and Available/Progressing conditions.
- EndpointSlice controller: one slice per Service with a selector, listing the pods
  it selects with their readiness, published `endpoint_lag` seconds after a change.
- A gateway controller: HTTPRoute status.parents with Accepted and ResolvedRefs,
  published `route_lag` seconds after a change.
- API defaulting and the semantic validation the registry strategies do.

Time-driven work happens lazily in `settle()`, which the server calls before every request.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .store import Kind, bad_request

_MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")

if TYPE_CHECKING:
    from .server import FakeKube

WAITING_MESSAGES = {
    "CrashLoopBackOff": "back-off 5m0s restarting failed container={container} pod={pod}",
    "ImagePullBackOff": 'Back-off pulling image "{image}"',
    "ErrImagePull": 'failed to pull and unpack image "{image}": not found',
    "CreateContainerConfigError": 'configmap "missing" not found',
    "ContainerCreating": "",
}


def _now() -> str:
    from .server import now_iso

    return now_iso()


def template_hash(template: dict) -> str:
    digest = hashlib.sha1(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return "".join("bcdfghjklmnpqrstvwxz2456789"[int(c, 16)] for c in digest[:10])


@dataclass
class Rollout:
    hash: str
    started: float
    outcome: str | None = None  # "ready" | "failed"; None: waits for the test
    reason: str = ""
    message: str = ""
    deadline_exceeded: bool = False
    phase: str = "stale"  # what is materialised: stale | progressing | ready | failed


class Controllers:
    def __init__(self, fake: FakeKube, *, auto: bool, ready_after: float, endpoint_lag: float,
                 route_lag: float, observe_lag: float = 0.0) -> None:
        self.fake = fake
        self.auto = auto
        self.ready_after = ready_after
        self.endpoint_lag = endpoint_lag
        self.route_lag = route_lag
        self.observe_lag = observe_lag
        self.reject_routes = False  # the gateway answers Accepted=False (NotAllowedByListeners)
        self.image_failures: list[tuple[str, str, str]] = []
        self.rollouts: dict[tuple[str, str], Rollout] = {}
        self._endpoints_dirty: float | None = None
        self._routes_dirty: float | None = None
        self._busy = False

    # --- steering ------------------------------------------------------------------------------

    def rollout(self, namespace: str, name: str, *, ready: bool = True) -> None:
        with self.fake.lock:
            state = self._rollout_of(namespace, name)
            state.outcome = "ready" if ready else None
            state.started = min(state.started, time.monotonic() - self.ready_after)
            self.settle()

    def fail_rollout(self, namespace: str, name: str, reason: str, message: str, deadline_exceeded: bool) -> None:
        with self.fake.lock:
            state = self._rollout_of(namespace, name)
            state.outcome, state.reason, state.message = "failed", reason, message
            state.deadline_exceeded = deadline_exceeded
            state.started = min(state.started, time.monotonic() - self.ready_after)
            state.phase = "stale"  # re-materialise even if it already failed another way
            self.settle()

    def _rollout_of(self, namespace: str, name: str) -> Rollout:
        if (namespace, name) not in self.rollouts:
            raise KeyError(f"no Deployment {namespace}/{name}")
        return self.rollouts[(namespace, name)]

    # --- reacting to writes ----------------------------------------------------------------------

    def changed(self, kind: Kind, namespace: str | None, name: str, old: dict | None, new: dict | None) -> None:
        if kind.kind == "Deployment":
            if new is None:
                self.rollouts.pop((namespace, name), None)
                for pod in self._pods_of(namespace, name):
                    self.fake.delete_internal("Pod", namespace, pod["metadata"]["name"])
            elif old is None or old["metadata"].get("generation") != new["metadata"].get("generation"):
                self._start_rollout(namespace, name, new)
        if kind.kind in ("Pod", "Service"):
            self._endpoints_dirty = self._endpoints_dirty or time.monotonic()
        if kind.kind in ("HTTPRoute", "Service"):
            if kind.kind == "Service" or old is None or old.get("spec") != (new or {}).get("spec"):
                self._routes_dirty = self._routes_dirty or time.monotonic()
        if kind.kind == "Service" and new is None:
            self._endpoints_dirty = self._endpoints_dirty or time.monotonic()

    def _start_rollout(self, namespace: str, name: str, deployment: dict) -> None:
        template = deployment["spec"]["template"]
        state = Rollout(template_hash(template), time.monotonic())
        if self.auto:
            state.outcome = "ready"
            for container in template["spec"]["containers"]:
                for pattern, reason, message in self.image_failures:
                    if fnmatch.fnmatch(container.get("image", ""), pattern):
                        state.outcome, state.reason, state.message = "failed", reason, message
        self.rollouts[(namespace, name)] = state

    def settle(self) -> None:
        """Advance everything whose time has come; called before every request."""
        if self._busy:
            return
        self._busy = True
        try:
            now = time.monotonic()
            for (namespace, name), state in list(self.rollouts.items()):
                want = "stale"
                if now >= state.started + self.observe_lag:
                    want = "progressing"
                if state.outcome is not None and now >= state.started + self.ready_after:
                    want = state.outcome
                if want != state.phase and want != "stale":
                    self._materialise(namespace, name, state, want)
                    state.phase = want
            if self._endpoints_dirty is not None and now >= self._endpoints_dirty + self.endpoint_lag:
                self._endpoints_dirty = None
                self._reconcile_endpoints()
            if self._routes_dirty is not None and now >= self._routes_dirty + self.route_lag:
                self._routes_dirty = None
                self._reconcile_routes()
        finally:
            self._busy = False

    # --- deployments and pods ------------------------------------------------------------------

    def _pods_of(self, namespace: str, deployment: str) -> list[dict]:
        return [o for (g, plural, ns, _), o in sorted(self.fake.objects.items())
                if plural == "pods" and ns == namespace
                and (o["metadata"].get("annotations") or {}).get("kubefake/deployment") == deployment]

    def _materialise(self, namespace: str, name: str, state: Rollout, phase: str) -> None:
        deployment = self.fake.objects[("apps", "deployments", namespace, name)]
        replicas = deployment["spec"].get("replicas", 1)
        pods = self._pods_of(namespace, name)
        new = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == state.hash]
        old = [p for p in pods if p not in new]
        for pod in [p for p in old if not _ready(p)]:  # unhealthy older ReplicaSets are scaled down first
            self.fake.delete_internal("Pod", namespace, pod["metadata"]["name"])
        old = [p for p in old if _ready(p)]
        new.sort(key=lambda p: not _ready(p))
        for pod in new[replicas:]:
            self.fake.delete_internal("Pod", namespace, pod["metadata"]["name"])
        new = new[:replicas]
        while len(new) < replicas:
            new.append(self._new_pod(namespace, deployment, state.hash))
        for pod in new:
            if phase == "ready":
                self._set_pod(pod, ready=True)
            elif not _ready(pod):
                reason = state.reason if phase == "failed" else "ContainerCreating"
                self._set_pod(pod, ready=False, reason=reason, message=state.message)
        if phase == "ready":
            for pod in old:
                self.fake.delete_internal("Pod", namespace, pod["metadata"]["name"])
            old = []
        self._set_status(deployment, state, phase, new, old, replicas)

    def _new_pod(self, namespace: str, deployment: dict, pod_hash: str) -> dict:
        template = copy.deepcopy(deployment["spec"]["template"])
        name = deployment["metadata"]["name"]
        suffix = hashlib.sha1(f"{name}{pod_hash}{time.monotonic_ns()}".encode()).hexdigest()[:5]
        meta = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{name}-{pod_hash}-{suffix}",
                "namespace": namespace,
                "labels": {**(meta.get("labels") or {}), "pod-template-hash": pod_hash},
                "annotations": {**(meta.get("annotations") or {}), "kubefake/deployment": name},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": f"{name}-{pod_hash}",
                                     "uid": deployment["metadata"]["uid"], "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": {**template["spec"], "nodeName": "kubefake-node"},
            "status": {"phase": "Pending"},
        }
        return self.fake.create_internal(pod)

    def _set_pod(self, pod: dict, *, ready: bool, reason: str = "", message: str = "") -> None:
        pod = copy.deepcopy(pod)
        now = _now()
        spec, status = pod["spec"], pod.setdefault("status", {})
        unschedulable = reason == "Unschedulable"
        if unschedulable:
            spec.pop("nodeName", None)
            pod["status"] = {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": now,
                 "message": message or "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are "
                                       "available: 3 No preemption victims found for incoming pod."}]}
            self.fake.update_internal(pod)
            return
        if "podIP" not in status:
            ip = f"10.244.{next(self.fake._ips) // 250}.{next(self.fake._ips) % 250 + 2}"
            status.update(podIP=ip, podIPs=[{"ip": ip}], hostIP="172.18.0.2", hostIPs=[{"ip": "172.18.0.2"}],
                          startTime=now)
        flag = "True" if ready else "False"
        not_ready = {} if ready else {"reason": "ContainersNotReady",
                                      "message": "containers with unready status: [" +
                                                 " ".join(c["name"] for c in spec["containers"]) + "]"}
        status["conditions"] = [
            {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": now},
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": flag, "lastTransitionTime": now, **not_ready},
            {"type": "ContainersReady", "status": flag, "lastTransitionTime": now, **not_ready},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        ]
        statuses = []
        for c in spec["containers"]:
            entry = {"name": c["name"], "image": c["image"], "ready": ready, "restartCount": 0,
                     "started": ready, "imageID": "", "containerID": ""}
            if ready:
                entry.update(state={"running": {"startedAt": now}},
                             imageID=f"{c['image']}@sha256:{hashlib.sha256(c['image'].encode()).hexdigest()}",
                             containerID=f"containerd://{hashlib.sha1(pod['metadata']['name'].encode()).hexdigest()}")
            else:
                text = WAITING_MESSAGES.get(reason, "{reason}").format(container=c["name"], pod=pod["metadata"]["name"],
                                                                       image=c["image"], reason=reason)
                waiting = {"reason": reason}
                if message or text:
                    waiting["message"] = message or text
                entry["state"] = {"waiting": waiting}
                if reason == "CrashLoopBackOff":
                    entry.update(restartCount=5, lastState={"terminated": {
                        "exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}})
            statuses.append(entry)
        status["containerStatuses"] = statuses
        status["phase"] = "Running" if ready or reason == "CrashLoopBackOff" else "Pending"
        self.fake.update_internal(pod)

    def _set_status(self, deployment: dict, state: Rollout, phase: str, new: list, old: list, replicas: int) -> None:
        dep = copy.deepcopy(deployment)
        name = dep["metadata"]["name"]
        pods = [self.fake.objects.get(("", "pods", dep["metadata"]["namespace"], p["metadata"]["name"]))
                for p in new + old]
        pods = [p for p in pods if p is not None]
        ready = sum(_ready(p) for p in pods)
        now = _now()
        max_unavailable = replicas * 25 // 100
        available = "True" if ready >= replicas - max_unavailable else "False"
        rs = f'ReplicaSet "{name}-{state.hash}"'
        if phase == "ready":
            progressing = ("True", "NewReplicaSetAvailable", f"{rs} has successfully progressed.")
        elif phase == "failed" and state.deadline_exceeded:
            progressing = ("False", "ProgressDeadlineExceeded", f"{rs} has timed out progressing.")
        else:
            progressing = ("True", "ReplicaSetUpdated", f"{rs} is progressing.")
        status = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": len(pods),
            "updatedReplicas": len(new),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "unavailableReplicas": max(0, replicas - ready) if pods or replicas else 0,
            "conditions": [
                {"type": "Available", "status": available, "lastUpdateTime": now, "lastTransitionTime": now,
                 "reason": "MinimumReplicasAvailable" if available == "True" else "MinimumReplicasUnavailable",
                 "message": "Deployment has minimum availability." if available == "True"
                 else "Deployment does not have minimum availability."},
                {"type": "Progressing", "status": progressing[0], "lastUpdateTime": now, "lastTransitionTime": now,
                 "reason": progressing[1], "message": progressing[2]},
            ],
        }
        dep["status"] = {k: v for k, v in status.items() if v != 0}  # int32 omitempty, as on the wire
        self.fake.update_internal(dep)

    # --- endpoint slices --------------------------------------------------------------------------

    def _reconcile_endpoints(self) -> None:
        objects = self.fake.objects
        services = {(ns, n): o for (g, p, ns, n), o in objects.items() if p == "services"}
        slices = {(ns, n): o for (g, p, ns, n), o in objects.items() if p == "endpointslices"
                  and (o["metadata"].get("labels") or {}).get("endpointslice.kubernetes.io/managed-by")
                  == "endpointslice-controller.k8s.io"}
        wanted = {}
        for (ns, svc_name), svc in services.items():
            selector = svc["spec"].get("selector")
            if not selector:
                continue
            pods = [o for (g, p, pns, _), o in sorted(objects.items()) if p == "pods" and pns == ns
                    and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in selector.items())
                    and o.get("status", {}).get("podIP")]
            slice_name = f"{svc_name}-{hashlib.sha1(svc_name.encode()).hexdigest()[:5]}"
            wanted[(ns, slice_name)] = self._slice(ns, slice_name, svc, pods)
        for key, body in wanted.items():
            current = slices.get(key)
            if current is None:
                self.fake.create_internal(body)
            elif (current.get("endpoints"), current.get("ports")) != (body.get("endpoints"), body.get("ports")):
                body["metadata"] = {**current["metadata"], **{"labels": body["metadata"]["labels"]}}
                self.fake.update_internal(body)
        for key in set(slices) - set(wanted):
            self.fake.delete_internal("EndpointSlice", *key)

    @staticmethod
    def _slice(namespace: str, name: str, svc: dict, pods: list[dict]) -> dict:
        ports = []
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port["port"])
            if isinstance(target, str):  # a named port: resolve it on the pods' containers
                target = next((cp["containerPort"] for p in pods for c in p["spec"]["containers"]
                               for cp in c.get("ports", []) if cp.get("name") == target), None)
            if target is not None:
                ports.append({"name": port.get("name", ""), "port": target, "protocol": port.get("protocol", "TCP")})
        endpoints = []
        for pod in pods:
            ready = _ready(pod)
            endpoints.append({
                "addresses": [pod["status"]["podIP"]],
                "conditions": {"ready": ready, "serving": ready, "terminating": False},
                "nodeName": "kubefake-node",
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": pod["metadata"]["name"],
                              "uid": pod["metadata"]["uid"]},
            })
        body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": svc["metadata"]["name"],
                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc["metadata"]["name"],
                                     "uid": svc["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": ports,
        }
        return body

    # --- the gateway ------------------------------------------------------------------------------

    def _reconcile_routes(self) -> None:
        objects = self.fake.objects
        for (g, plural, ns, name), route in list(objects.items()):
            if plural != "httproutes":
                continue
            missing = [ref["name"] for rule in route["spec"].get("rules", []) for ref in rule.get("backendRefs", [])
                       if ref.get("kind", "Service") == "Service" and ("", "services", ns, ref["name"]) not in objects]
            generation = route["metadata"]["generation"]
            now = _now()
            accepted = ("False", "NotAllowedByListeners", "No listener allows this route") if self.reject_routes \
                else ("True", "Accepted", "Accepted by the gateway")
            resolved = ("False", "BackendNotFound", f'backend Service "{missing[0]}" not found') if missing \
                else ("True", "ResolvedRefs", "All references resolved")
            parents = []
            for ref in route["spec"].get("parentRefs", []):
                conditions = [
                    {"type": t, "status": s, "reason": r, "message": m, "lastTransitionTime": now,
                     "observedGeneration": generation}
                    for t, (s, r, m) in (("Accepted", accepted), ("ResolvedRefs", resolved))
                ]
                parents.append({"parentRef": ref, "controllerName": "kubefake.local/gateway-controller",
                                "conditions": conditions})
            if [p["conditions"] for p in route.get("status", {}).get("parents", [])] != \
                    [p["conditions"] for p in parents] or route.get("status") is None:
                body = copy.deepcopy(route)
                body["status"] = {"parents": parents}
                self.fake.update_internal(body)

    # --- defaulting and validation ----------------------------------------------------------------

    def default(self, kind: Kind, obj: dict) -> None:
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        if kind.kind == "Deployment":
            spec.setdefault("replicas", 1)
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault("strategy", {"type": "RollingUpdate",
                                         "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
            pod = (spec.get("template") or {}).get("spec")
            if isinstance(pod, dict):
                pod.setdefault("restartPolicy", "Always")
                pod.setdefault("terminationGracePeriodSeconds", 30)
                pod.setdefault("dnsPolicy", "ClusterFirst")
                pod.setdefault("securityContext", {})
                pod.setdefault("schedulerName", "default-scheduler")
                for c in pod.get("containers") or []:
                    if isinstance(c, dict):
                        image = str(c.get("image", ""))
                        latest = ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                        c.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
                        c.setdefault("terminationMessagePath", "/dev/termination-log")
                        c.setdefault("terminationMessagePolicy", "File")
                        c.setdefault("resources", {})
                        for p in c.get("ports") or []:
                            if isinstance(p, dict):
                                p.setdefault("protocol", "TCP")
        elif kind.kind == "Service":
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            if "clusterIP" not in spec:
                ip = f"10.96.{next(self.fake._ips) % 250}.{next(self.fake._ips) % 250 + 2}"
                spec["clusterIP"], spec["clusterIPs"] = ip, [ip]
            for p in spec.get("ports") or []:
                if isinstance(p, dict):
                    p.setdefault("protocol", "TCP")
                    p.setdefault("targetPort", p.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        elif kind.kind == "HTTPRoute":
            for ref in spec.get("parentRefs") or []:
                if isinstance(ref, dict):
                    ref.setdefault("group", "gateway.networking.k8s.io")
                    ref.setdefault("kind", "Gateway")
            for rule in spec.get("rules") or []:
                if isinstance(rule, dict):
                    rule.setdefault("matches", [{"path": {"type": "PathPrefix", "value": "/"}}])
                    for ref in rule.get("backendRefs") or []:
                        if isinstance(ref, dict):
                            ref.setdefault("group", "")
                            ref.setdefault("kind", "Service")
                            ref.setdefault("weight", 1)

    def semantic_errors(self, kind: Kind, new: dict, old: dict | None) -> list[tuple[str, str, str]]:
        causes: list[tuple[str, str, str]] = []
        spec = new.get("spec") if isinstance(new.get("spec"), dict) else {}
        if kind.kind == "Deployment":
            selector = (spec.get("selector") or {}).get("matchLabels") or {}
            labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not selector:
                causes.append(("spec.selector", "FieldValueRequired", "Required value"))
            elif any(labels.get(k) != v for k, v in selector.items()):
                causes.append(("spec.template.metadata.labels", "FieldValueInvalid",
                               f"Invalid value: {labels}: `selector` does not match template `labels`"))
            if old is not None and spec.get("selector") != old["spec"].get("selector"):
                causes.append(("spec.selector", "FieldValueInvalid",
                               f"Invalid value: {spec.get('selector')}: field is immutable"))
            if isinstance(spec.get("replicas"), int) and spec["replicas"] < 0:
                causes.append(("spec.replicas", "FieldValueInvalid",
                               f"Invalid value: {spec['replicas']}: must be greater than or equal to 0"))
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            if not containers:
                causes.append(("spec.template.spec.containers", "FieldValueRequired", "Required value"))
            for i, c in enumerate(containers):
                if isinstance(c, dict) and not c.get("image"):
                    causes.append((f"spec.template.spec.containers[{i}].image", "FieldValueRequired",
                                   "Required value"))
        elif kind.kind == "Service":
            if spec.get("type", "ClusterIP") != "ExternalName" and not spec.get("ports"):
                causes.append(("spec.ports", "FieldValueRequired", "Required value"))
            if old is not None and old["spec"].get("clusterIP") != spec.get("clusterIP"):
                causes.append(("spec.clusterIPs[0]", "FieldValueInvalid",
                               f"Invalid value: {spec.get('clusterIP')!r}: may not change once set"))
        elif kind.kind == "ConfigMap":
            size = sum(len(k) + len(str(v)) for k, v in (new.get("data") or {}).items())
            if size > 1048576:
                causes.append(("", "FieldValueTooLong", "Too long: must have at most 1048576 bytes"))
        elif kind.kind == "Lease":
            for field in ("acquireTime", "renewTime"):  # MicroTime: RFC 3339 with exactly 6 fraction digits
                value = spec.get(field)
                if value is not None and not _MICROTIME.match(str(value)):
                    raise bad_request(f'Lease in version "v1" cannot be handled as a Lease: parsing time '
                                      f'"{value}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse')
            duration = spec.get("leaseDurationSeconds")
            if isinstance(duration, int) and duration <= 0:
                causes.append(("spec.leaseDurationSeconds", "FieldValueInvalid",
                               f"Invalid value: {duration}: must be greater than 0"))
        return causes


def _ready(pod: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])
