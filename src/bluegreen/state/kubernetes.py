"""Lock and history kept on the cluster: a Lease `<app>-bluegreen-lock` and a ConfigMap `<app>-bluegreen-history`;
a planned scale-down is kept on the colour's Deployment (annotations bluegreen.dev/scale-down-at and
scale-down-release), where `kubectl describe` shows it.

Every read-modify-write carries the resourceVersion it read, so two runs never
both take the lock and no history entry is lost: a 409 Conflict means someone
else wrote in between, and the decision is taken again on a fresh read.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

from lightkube import ApiError
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap
from pydantic import TypeAdapter, ValidationError

from ..config import Colour
from ..errors import LockHeldError, TargetError
from ..kube_client import KubeObjects, annotation, is_conflict
from .base import LockInfo, Release, ScaleDownPlan, StateStore, utcnow

HISTORY_KEY = "history.json"
MAX_HISTORY_BYTES = 512 * 1024  # well under a ConfigMap's 1 MiB, whatever the limit says
_HISTORY = TypeAdapter(list[Release])
_ATTEMPTS = 5


def microtime(moment: datetime) -> str:
    """A Lease's MicroTime: the API server requires exactly six fraction digits.

    lightkube's encoder drops a zero fraction ("...:05Z"), which the API server refuses
    for a MicroTime: a whole second is nudged by one microsecond so that never happens."""
    moment = moment.astimezone(timezone.utc)
    if moment.microsecond == 0:
        moment = moment.replace(microsecond=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class KubeStateStore(StateStore):
    """`deployments`: each colour's Deployment, where its planned scale-down is kept."""

    def __init__(self, objects: KubeObjects, app: str, deployments: dict[Colour, str]) -> None:
        super().__init__()
        self.objects = objects
        self.kube = objects.kube
        self.namespace = objects.namespace
        self.lease_name = f"{app}-bluegreen-lock"
        self.history_name = f"{app}-bluegreen-history"
        self.deployments = deployments

    # --- the lease ---------------------------------------------------------------------------

    def _get_lease(self) -> Lease | None:
        return self.kube.get(Lease, self.lease_name, self.namespace)

    @staticmethod
    def _info(lease: Lease | None) -> LockInfo | None:
        spec = lease.spec if lease is not None else None
        if spec is None or not spec.holderIdentity:
            return None  # released (a released Lease keeps existing, without a holder)
        renewed = _parse_time(spec.renewTime) or _parse_time(spec.acquireTime) or utcnow()
        return LockInfo(
            holder=spec.holderIdentity,
            acquired_at=_parse_time(spec.acquireTime) or renewed,
            renewed_at=renewed,
            expires_at=renewed + timedelta(seconds=spec.leaseDurationSeconds or 0),
        )

    def _lease_body(self, holder: str | None, ttl: float, acquired: datetime | None, transitions: int,
                    resource_version: str | None) -> dict:
        now = utcnow()
        spec: dict[str, Any] = {"leaseTransitions": transitions}
        if holder is not None:
            spec.update(holderIdentity=holder[:4096], leaseDurationSeconds=max(1, int(round(ttl))),
                        acquireTime=microtime(acquired or now), renewTime=microtime(now))
        meta: dict[str, Any] = {"name": self.lease_name, "namespace": self.namespace,
                                "labels": {"app.kubernetes.io/managed-by": "bluegreen"}}
        if resource_version:
            meta["resourceVersion"] = resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}

    def _held_error(self, info: LockInfo) -> LockHeldError:
        return LockHeldError(
            f"the deploy lock (Lease {self.namespace}/{self.lease_name}) is held by {info.holder} since "
            f"{info.acquired_at:%Y-%m-%d %H:%M:%S} UTC (expires {info.expires_at:%H:%M:%S} UTC; "
            "--force-unlock removes it)"
        )

    def acquire_lock(self, holder: str, ttl: float) -> LockInfo:
        for _ in range(_ATTEMPTS):
            lease = self._get_lease()
            current = self._info(lease)
            if current is not None and current.holder != holder and not current.expired():
                raise self._held_error(current)
            try:
                if lease is None:
                    body = self._lease_body(holder, ttl, None, 0, None)
                    self.kube.call(f"create Lease {self.lease_name}",
                                   lambda: self.kube.client.create(Lease.from_dict(body)))
                else:
                    # take over a free or expired lease only if nobody wrote it since we read it
                    same = current is not None and current.holder == holder
                    body = self._lease_body(
                        holder, ttl, current.acquired_at if same else None,
                        (lease.spec.leaseTransitions or 0) + (0 if same else 1), lease.metadata.resourceVersion,
                    )
                    self.kube.call(f"take Lease {self.lease_name}",
                                   lambda: self.kube.client.replace(Lease.from_dict(body)))
            except ApiError as exc:
                if is_conflict(exc):  # AlreadyExists or a stale resourceVersion: someone else moved first
                    continue
                raise self.kube.error(f"write Lease {self.lease_name}", exc) from None
            info = self._info(self._get_lease())
            if info is None or info.holder != holder:
                continue  # a write answered by a timeout and retried may have lost to another run
            if current is not None and current.holder != holder:
                self.taken_over = current  # an expired holder: its run was killed or vanished
            self.locked()
            return info
        current = self._info(self._get_lease())
        if current is not None and current.holder != holder:
            raise self._held_error(current)
        raise TargetError(f"could not take Lease {self.namespace}/{self.lease_name}: it kept changing under us")

    def renew_lock(self, holder: str, ttl: float) -> None:
        for _ in range(_ATTEMPTS):
            lease = self._get_lease()
            current = self._info(lease)
            if current is None or current.holder != holder:
                raise TargetError(f"the deploy lock (Lease {self.lease_name}) is no longer held by {holder}")
            body = self._lease_body(holder, ttl, current.acquired_at, lease.spec.leaseTransitions or 0,
                                    lease.metadata.resourceVersion)
            try:
                self.kube.call(f"renew Lease {self.lease_name}", lambda: self.kube.client.replace(Lease.from_dict(body)))
                return
            except ApiError as exc:
                if not is_conflict(exc):
                    raise self.kube.error(f"renew Lease {self.lease_name}", exc) from None
        raise TargetError(f"could not renew Lease {self.lease_name}: it kept changing under us")

    def release_lock(self, holder: str) -> None:
        for _ in range(_ATTEMPTS):
            lease = self._get_lease()
            current = self._info(lease)
            if current is None or current.holder != holder:
                return
            body = self._lease_body(None, 0, None, lease.spec.leaseTransitions or 0, lease.metadata.resourceVersion)
            try:
                self.kube.call(f"release Lease {self.lease_name}",
                               lambda: self.kube.client.replace(Lease.from_dict(body)))
                return
            except ApiError as exc:
                if not is_conflict(exc):
                    raise self.kube.error(f"release Lease {self.lease_name}", exc) from None

    def read_lock(self) -> LockInfo | None:
        return self._info(self._get_lease())

    def force_unlock(self) -> LockInfo | None:
        lease = self._get_lease()
        current = self._info(lease)
        if current is None:
            return None
        body = self._lease_body(None, 0, None, (lease.spec.leaseTransitions or 0) + 1, None)
        try:  # unconditional on purpose: --force-unlock removes whoever holds it
            self.kube.call(f"release Lease {self.lease_name}", lambda: self.kube.client.replace(Lease.from_dict(body)))
        except ApiError as exc:
            raise self.kube.error(f"release Lease {self.lease_name}", exc) from None
        return current

    # --- the history -------------------------------------------------------------------------

    def _get_history(self) -> ConfigMap | None:
        return self.kube.get(ConfigMap, self.history_name, self.namespace)

    def _parse(self, cm: ConfigMap | None) -> list[Release]:
        raw = ((cm.data or {}) if cm is not None else {}).get(HISTORY_KEY)
        if not raw:
            return []
        try:
            return _HISTORY.validate_json(raw)
        except ValidationError as exc:
            raise TargetError(f"ConfigMap {self.history_name}: unreadable history ({exc.error_count()} errors)") from None

    def history(self) -> list[Release]:
        return self._parse(self._get_history())

    def record(self, release: Release, limit: int) -> None:
        for _ in range(_ATTEMPTS):
            cm = self._get_history()
            entries = [release, *[r for r in self._parse(cm) if r.id != release.id or r.action != release.action]]
            entries = entries[:limit]
            text = json.dumps([json.loads(e.model_dump_json()) for e in entries], indent=1)
            while len(text) > MAX_HISTORY_BYTES and len(entries) > 1:
                entries = entries[:-1]
                text = json.dumps([json.loads(e.model_dump_json()) for e in entries], indent=1)
            meta: dict[str, Any] = {"name": self.history_name, "namespace": self.namespace,
                                    "labels": {"app.kubernetes.io/managed-by": "bluegreen"}}
            if cm is not None:
                meta["resourceVersion"] = cm.metadata.resourceVersion
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {HISTORY_KEY: text}}
            try:
                if cm is None:
                    self.kube.call(f"create ConfigMap {self.history_name}",
                                   lambda: self.kube.client.create(ConfigMap.from_dict(body)))
                else:
                    self.kube.call(f"update ConfigMap {self.history_name}",
                                   lambda: self.kube.client.replace(ConfigMap.from_dict(body)))
            except ApiError as exc:
                if not is_conflict(exc):
                    raise self.kube.error(f"write ConfigMap {self.history_name}", exc) from None
                continue
            self.recorded(release)
            return
        raise TargetError(f"could not record the release in ConfigMap {self.history_name}: it kept changing")

    # --- planned scale-downs: annotations on the colour's Deployment ----------------------------

    def scale_downs(self) -> dict[Colour, ScaleDownPlan]:
        plans = {}
        for colour, name in self.deployments.items():
            deployment = self.objects.get(Deployment, name, missing_ok=True)
            annotations = (deployment.metadata.annotations or {}) if deployment is not None else {}
            try:
                at = datetime.fromisoformat(annotations[annotation("scale-down-at")])
            except (KeyError, TypeError, ValueError):
                continue  # none, or not what we wrote: the worst case is an idle colour left running
            plans[colour] = ScaleDownPlan(at=at if at.tzinfo else at.replace(tzinfo=timezone.utc),
                                          release=annotations.get(annotation("scale-down-release")) or "")
        return plans

    def plan_scale_down(self, colour: Colour, plan: ScaleDownPlan) -> None:
        self.objects.patch(Deployment, self.deployments[colour], {"metadata": {"annotations": {
            annotation("scale-down-at"): plan.at.isoformat(timespec="seconds"),
            annotation("scale-down-release"): plan.release}}})

    def drop_scale_down(self, colour: Colour) -> None:
        deployment = self.objects.get(Deployment, self.deployments[colour], missing_ok=True)
        if deployment is not None and annotation("scale-down-at") in (deployment.metadata.annotations or {}):
            self.objects.patch(Deployment, self.deployments[colour],
                               {"metadata": {"annotations": {annotation("scale-down-at"): None}}})
