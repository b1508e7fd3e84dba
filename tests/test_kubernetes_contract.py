"""The Kubernetes target's contract: the whole bluegreen run against a cluster.

By default the cluster is kubefake (an in-process API server, see tests/kubefake);
with BLUEGREEN_TEST_KUBECONFIG set it is a real cluster (kind in
.github/workflows/e2e-kind.yml). Tests that steer the cluster's insides (fault
injection, API request logs) run on the fake only.
"""

from __future__ import annotations

import json
import re
import threading
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import pytest
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Service
from lightkube.types import PatchType

from bluegreen.errors import TargetError
from kubefake.fixtures import REAL, SECRET_TOKEN, cluster, get_live_version, image, run_cli, write_config  # noqa: F401

HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
fake_only = pytest.mark.skipif(bool(REAL), reason="steers the fake API server's insides")


def selector_colour(cluster, name="example") -> str:
    with cluster.client() as c:
        return c.get(Service, name).spec.selector["colour"]


def replicas(cluster, colour) -> int:
    with cluster.client() as c:
        return c.get(Deployment, f"example-{colour}").spec.replicas


def weights(cluster) -> dict:
    with cluster.client() as c:
        route = c.get(HTTPRoute, "example")
    return {ref["name"]: ref["weight"] for rule in route.spec["rules"] for ref in rule["backendRefs"]}


def history(cluster) -> list[dict]:
    with cluster.client() as c:
        return json.loads(c.get(ConfigMap, "example-bluegreen-history").data["history.json"])


def lease_holder(cluster):
    with cluster.client() as c:
        return c.get(Lease, "example-bluegreen-lock").spec.holderIdentity


def assert_no_secret(run) -> None:
    assert SECRET_TOKEN not in run.text


# --- deploy v1 then v2 ---------------------------------------------------------------------------


def test_deploy_v1_then_v2_by_service_selector(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    assert get_live_version(cluster.live_url) == "1"

    first = run_cli(config, "deploy", "--version", "2")
    assert first.code == 0, first.err
    assert selector_colour(cluster) == "green"
    assert get_live_version(cluster.live_url) == "2"
    assert first.report["live_colour"] == "green" and first.report["previous_colour"] == "blue"
    ns = cluster.namespace
    assert first.report["raw_rollback_command"] == (
        f"kubectl --namespace {ns} scale deployment example-blue --replicas=2 && "
        f"kubectl --namespace {ns} rollout status deployment example-blue --timeout=10m && "
        f"kubectl --namespace {ns} patch service example --type=merge "
        "-p '{\"spec\":{\"selector\":{\"colour\":\"blue\"}}}'"
    )

    second = run_cli(config, "deploy", "--version", "3")
    assert second.code == 0, second.err
    assert selector_colour(cluster) == "blue"
    assert get_live_version(cluster.live_url) == "3"
    # the preview Service reaches only the idle colour; the old colour is scaled down (delay 0)
    assert selector_colour(cluster, "example-preview") == "green"
    assert replicas(cluster, "green") == 0 and replicas(cluster, "blue") == 2
    with cluster.client() as c:
        annotations = c.get(Service, "example").metadata.annotations
    assert annotations["bluegreen.dev/live-colour"] == "blue"
    assert annotations["bluegreen.dev/live-version"] == "3"
    assert annotations["bluegreen.dev/previous-version"] == "2"
    assert annotations["bluegreen.dev/deploy-id"] == second.report["release_id"]
    assert [(h["version"], h["colour"], h["outcome"]) for h in history(cluster)] == [
        ("3", "blue", "succeeded"), ("2", "green", "succeeded")]
    assert lease_holder(cluster) is None  # released
    assert_no_secret(first)
    assert_no_secret(second)


def test_deploy_v1_then_v2_by_httproute(cluster, tmp_path):
    if REAL and not __import__("os").environ.get("BLUEGREEN_TEST_GATEWAY"):
        pytest.skip("the real cluster has no Gateway API implementation")
    cluster.create_examples("httproute")
    config = write_config(tmp_path / "bluegreen.yml", cluster)

    first = run_cli(config, "deploy", "--version", "2")
    assert first.code == 0, first.err
    assert weights(cluster) == {"example-blue": 0, "example-green": 100}
    assert get_live_version(cluster.live_url) == "2"

    second = run_cli(config, "deploy", "--version", "3")
    assert second.code == 0, second.err
    assert weights(cluster) == {"example-blue": 100, "example-green": 0}
    assert get_live_version(cluster.live_url) == "3"
    assert "patch httproute example --type=json" in second.report["raw_rollback_command"]
    assert '"path":"/spec/rules/0/backendRefs/1/weight","value":100' in second.report["raw_rollback_command"]


# --- deploying by manifests: rendered for the idle colour, server-side applied ----------------------

MANIFEST = """\
# the idle colour's Deployment; bluegreen renders the placeholders and sets the replicas
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}-{colour}
  labels:
    app: {app}
    colour: {colour}
  annotations:
    example.dev/image: "{image}"
spec:
  selector:
    matchLabels:
      app: {app}
      colour: {colour}
  template:
    metadata:
      labels:
        app: {app}
        colour: {colour}
        version: "{version}"
    spec:
      containers:
        - name: app
          image: IMAGE
          ports:
            - name: http
              containerPort: 8080
"""


def manifest_config(cluster, tmp_path, text: str | None = MANIFEST, file: str = "k8s/deployment.yaml"):
    if text is not None:
        (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / file).write_text(text.replace("IMAGE", image("{version}")))
    return write_config(tmp_path / "bluegreen.yml", cluster, target={"manifests": [file]})


def deployment(cluster, colour):
    with cluster.client() as c:
        return c.get(Deployment, f"example-{colour}")


def applied_by_bluegreen(obj) -> dict:
    """The fields bluegreen's server-side apply owns (managedFields fieldsV1), {} if none."""
    entries = [m for m in obj.metadata.managedFields or [] if m.manager == "bluegreen" and m.operation == "Apply"]
    return entries[0].fieldsV1 if entries else {}


def owned_image(fields: dict) -> bool:
    container = fields.get("f:spec", {}).get("f:template", {}).get("f:spec", {}).get("f:containers", {})
    return "f:image" in container.get('k:{"name":"app"}', {})


def assert_failed_before_the_switch(cluster, run) -> str:
    assert run.code == 1, run.err
    assert "Traceback" not in run.err
    assert run.report["status"] == "failed" and run.report["switched"] is False
    reason = run.report["reason"]
    assert reason and "\n" not in reason
    assert selector_colour(cluster) == "blue"  # live untouched, still answering the old version
    assert get_live_version(cluster.live_url) == "1"
    assert lease_holder(cluster) is None
    return reason


def test_deploy_v1_then_v2_by_server_side_applied_manifests(cluster, tmp_path):
    cluster.create_examples("service")
    config = manifest_config(cluster, tmp_path)

    first = run_cli(config, "deploy", "--version", "2")
    assert first.code == 0, first.err
    assert selector_colour(cluster) == "green"
    assert get_live_version(cluster.live_url) == "2"
    green = deployment(cluster, "green")
    container = green.spec.template.spec.containers[0]
    assert container.image == image("2")
    assert green.metadata.labels == {"app": "example", "colour": "green"}
    assert green.spec.template.metadata.labels == {"app": "example", "colour": "green", "version": "2"}
    assert green.metadata.annotations["example.dev/image"] == image("2")  # {image}: the target's image setting
    assert green.metadata.annotations["bluegreen.dev/version"] == "2"
    assert green.spec.replicas == 2  # not in the manifest: the live colour's count
    assert container.readinessProbe.httpGet.path == "/healthz"  # another manager's, not in the manifest: kept
    assert owned_image(applied_by_bluegreen(green))
    if cluster.fake:
        applies = [r for r in cluster.fake.writes(r"/deployments/example-green$")
                   if r.content_type == "application/apply-patch+yaml"]
        assert [r.status for r in applies] == [200]
        assert "fieldManager=bluegreen" in applies[0].query and "force=true" in applies[0].query

    # another manager's fields on the colour the next release is applied to
    with cluster.client() as c:
        c.patch(Deployment, "example-blue", {
            "metadata": {"annotations": {"team.example/owner": "payments"}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "FEATURE_X",
                                                                                   "value": "on"}]}]}}},
        }, patch_type=PatchType.STRATEGIC, field_manager="team-tool")

    second = run_cli(config, "deploy", "--version", "3")
    assert second.code == 0, second.err
    assert selector_colour(cluster) == "blue"
    assert get_live_version(cluster.live_url) == "3"
    blue = deployment(cluster, "blue")
    container = blue.spec.template.spec.containers[0]
    assert container.image == image("3")
    assert blue.spec.template.metadata.labels["colour"] == "blue"
    assert blue.spec.template.metadata.labels["version"] == "3"
    assert blue.metadata.annotations["team.example/owner"] == "payments"
    assert [(e.name, e.value) for e in container.env] == [("FEATURE_X", "on")]
    assert container.readinessProbe.httpGet.path == "/healthz"
    assert {m.manager for m in blue.metadata.managedFields} >= {"bluegreen", "team-tool"}
    assert owned_image(applied_by_bluegreen(blue))
    assert replicas(cluster, "green") == 0 and replicas(cluster, "blue") == 2
    assert [(h["version"], h["colour"], h["outcome"]) for h in history(cluster)] == [
        ("3", "blue", "succeeded"), ("2", "green", "succeeded")]


def test_a_second_apply_to_the_same_deployment_keeps_fields_other_managers_own(cluster, tmp_path):
    from bluegreen.config import load_config
    from bluegreen.targets import make_target

    cluster.create_examples("service")
    config = manifest_config(cluster, tmp_path)
    target = make_target(load_config(config))
    try:
        target.deploy("green", "2")
        with cluster.client() as c:  # e.g. a platform tool, between two releases on this colour
            c.patch(Deployment, "example-green", {
                "metadata": {"labels": {"team.example/tier": "web"}},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "env": [{"name": "FEATURE_X",
                                                                                       "value": "on"}]}]}}},
            }, patch_type=PatchType.STRATEGIC, field_manager="team-tool")
        target.deploy("green", "3")
        target.wait_ready("green", time.monotonic() + (180 if REAL else 10))
    finally:
        target.close()
    green = deployment(cluster, "green")
    container = green.spec.template.spec.containers[0]
    assert container.image == image("3")
    assert green.spec.template.metadata.labels["version"] == "3"
    assert green.metadata.annotations["bluegreen.dev/version"] == "3"
    assert green.metadata.labels == {"app": "example", "colour": "green", "team.example/tier": "web"}
    assert [(e.name, e.value) for e in container.env] == [("FEATURE_X", "on")]
    assert container.readinessProbe.httpGet.path == "/healthz"
    assert green.spec.replicas == 2
    assert selector_colour(cluster) == "blue"  # deploying never switches


BAD_MANIFESTS = [
    # (id, change to the manifest, what the reason says besides the object)
    ("selector-does-not-match-labels",
     ("        colour: {colour}\n        version", "        colour: blue\n        version"),
     "`selector` does not match template `labels`"),
    ("value-of-the-wrong-type", ("spec:\n  selector", "spec:\n  replicas: two\n  selector"), "spec.replicas"),
    ("unknown-field", ("          ports:", "          imagePullPolcy: Always\n          ports:"),
     "imagePullPolcy"),
]


@pytest.mark.parametrize("change,says", [b[1:] for b in BAD_MANIFESTS], ids=[b[0] for b in BAD_MANIFESTS])
def test_a_manifest_that_renders_to_an_invalid_object_fails_before_the_switch(cluster, tmp_path, change, says):
    cluster.create_examples("service")
    assert change[0] in MANIFEST
    config = manifest_config(cluster, tmp_path, MANIFEST.replace(change[0], change[1], 1))
    run = run_cli(config, "deploy", "--version", "2")
    reason = assert_failed_before_the_switch(cluster, run)
    assert "Deployment example-green" in reason and "deployment.yaml" in reason and says in reason, reason
    assert deployment(cluster, "green").spec.template.spec.containers[0].image == image("1")  # nothing applied


@pytest.mark.parametrize("text,says", [
    (None, "No such file or directory"),
    ("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {app}-{colour}\n  labels: [app\n", "line 6"),
    ("apiVersion: apps/v1\nkind: Deployment\n\tmetadata: {}\n", "line 3"),
], ids=["missing", "unclosed-flow-sequence", "tab-indent"])
def test_a_manifest_that_is_missing_or_not_yaml_is_named_in_one_line(cluster, tmp_path, text, says):
    cluster.create_examples("service")
    config = manifest_config(cluster, tmp_path, text)
    run = run_cli(config, "deploy", "--version", "2")
    reason = assert_failed_before_the_switch(cluster, run)
    assert str(tmp_path / "k8s" / "deployment.yaml") in reason and says in reason, reason
    if text is not None:
        assert "not valid YAML" in reason


# --- failures before and after the switch --------------------------------------------------------


@fake_only  # the example app's +fail-live needs the ingress header the fake's live proxy adds
def test_automatic_rollback_when_the_new_version_fails_verification(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    assert run_cli(config, "deploy", "--version", "2").code == 0

    # passes every check on the preview URL, answers 500 once it gets traffic through the ingress
    run = run_cli(config, "deploy", "--version", "3+fail-live")
    assert run.code == 4, run.err
    assert run.report["status"] == "rolled_back"
    assert "switched back to green" in run.report["reason"]
    assert selector_colour(cluster) == "green"
    assert get_live_version(cluster.live_url) == "2"
    assert history(cluster)[0]["outcome"] == "rolled_back"
    with cluster.client() as c:
        assert c.get(Service, "example").metadata.annotations["bluegreen.dev/live-colour"] == "green"


def test_manual_rollback_to_a_scaled_down_colour(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    assert run_cli(config, "deploy", "--version", "2").code == 0
    assert run_cli(config, "deploy", "--version", "3").code == 0
    assert replicas(cluster, "green") == 0  # scale_down_delay 0, idle_replicas 0

    run = run_cli(config, "rollback")
    assert run.code == 0, run.err
    assert selector_colour(cluster) == "green"
    assert replicas(cluster, "green") == 2  # scaled back up to the live colour's count, waited for
    assert get_live_version(cluster.live_url) == "2"
    assert history(cluster)[0]["action"] == "rollback"


@pytest.mark.parametrize("reason", ["CrashLoopBackOff", "ImagePullBackOff", "Unschedulable"])
def test_a_rollout_that_never_becomes_ready(cluster, tmp_path, reason):
    if REAL and reason != "ImagePullBackOff":
        pytest.skip("a real cluster shows only a missing image on demand")
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    if cluster.fake:
        cluster.fake.fail_image("*:404", reason)
    started = time.monotonic()
    run = run_cli(config, "deploy", "--version", "404")
    assert run.code == 1, run.err
    assert time.monotonic() - started < (300 if REAL else 30)
    assert run.report["status"] == "failed" and run.report["switched"] is False
    assert "Deployment example-green" in run.report["reason"]
    assert reason in run.report["reason"] or (REAL and "ErrImagePull" in run.report["reason"])
    # live untouched, still answering the old version
    assert selector_colour(cluster) == "blue"
    assert get_live_version(cluster.live_url) == "1"
    assert lease_holder(cluster) is None


@fake_only
def test_a_stuck_rollout_fails_before_its_deadline_when_progress_deadline_is_exceeded(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster, timeouts={"ready": 60, "switch": 10, "lock": 60})
    cluster.fake.controllers.auto = False

    def fail_soon():
        time.sleep(0.5)
        cluster.fake.fail_rollout(cluster.namespace, "example-green", "CrashLoopBackOff", deadline_exceeded=True)

    threading.Thread(target=fail_soon).start()
    started = time.monotonic()
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 1
    assert time.monotonic() - started < 20
    assert "progress deadline was exceeded" in run.report["reason"]
    assert "CrashLoopBackOff" in run.report["reason"]


# --- the lock ------------------------------------------------------------------------------------


def _hold_lease(cluster, holder: str, renewed: datetime, seconds: int = 600) -> None:
    from bluegreen.state.kubernetes import microtime

    with cluster.client() as c:
        c.create(Lease.from_dict({"metadata": {"name": "example-bluegreen-lock", "namespace": cluster.namespace},
                                  "spec": {"holderIdentity": holder, "leaseDurationSeconds": seconds,
                                           "acquireTime": microtime(renewed), "renewTime": microtime(renewed)}}))


def test_a_concurrent_deploy_exits_3(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    if cluster.fake:
        cluster.fake.controllers.ready_after = 2.0  # the first run waits for its rollout meanwhile
    first: dict = {}
    thread = threading.Thread(target=lambda: first.setdefault("run", run_cli(config, "deploy", "--version", "2")))
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with cluster.client() as c:
            try:
                if c.get(Lease, "example-bluegreen-lock").spec.holderIdentity:
                    break
            except Exception:
                pass
        time.sleep(0.05)
    second = run_cli(config, "deploy", "--version", "3")
    thread.join(60)
    assert second.code == 3, second.err
    assert second.report["status"] == "locked"
    assert "held by" in second.report["reason"]
    assert first["run"].code == 0
    assert get_live_version(cluster.live_url) == "2"


def test_a_live_lock_held_by_another_run_is_respected_and_force_unlock_removes_it(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    _hold_lease(cluster, "run 41 (https://ci.example/41)", datetime.now(timezone.utc))
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 3
    assert "run 41 (https://ci.example/41)" in run.report["reason"]
    assert selector_colour(cluster) == "blue"

    forced = run_cli(config, "deploy", "--version", "2", "--force-unlock")
    assert forced.code == 0, forced.err
    assert "--force-unlock removed the lock held by run 41" in forced.err


def test_an_expired_lock_is_taken_over(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    _hold_lease(cluster, "a run that died", datetime.now(timezone.utc) - timedelta(hours=1), seconds=60)
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 0, run.err
    with cluster.client() as c:
        lease = c.get(Lease, "example-bluegreen-lock")
    assert lease.spec.holderIdentity is None and lease.spec.leaseTransitions >= 1


@fake_only
def test_an_expired_lock_taken_over_by_someone_else_first_is_not_stolen(cluster, tmp_path):
    """The takeover carries the resourceVersion it read: a faster run's takeover wins, we exit 3."""
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    _hold_lease(cluster, "a run that died", datetime.now(timezone.utc) - timedelta(hours=1), seconds=60)

    def other_run_takes_it():
        from bluegreen.state.kubernetes import microtime

        with cluster.client() as c:
            lease = c.get(Lease, "example-bluegreen-lock")
            lease.spec.holderIdentity = "the faster run"
            lease.spec.renewTime = lease.spec.acquireTime = None
            body = lease.to_dict()
            body["spec"].update(acquireTime=microtime(datetime.now(timezone.utc)),
                                renewTime=microtime(datetime.now(timezone.utc)))
            c.replace(Lease.from_dict(body))

    cluster.fake.inject("PUT", r"/leases/example-bluegreen-lock$", action=other_run_takes_it)
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 3, run.err
    assert "the faster run" in run.report["reason"]
    assert [r.status for r in cluster.fake.writes(r"/leases/")][-1] == 409
    assert selector_colour(cluster) == "blue"


# --- a concurrent writer during the switch ---------------------------------------------------------


@fake_only
def test_a_conflicting_write_to_the_service_during_the_switch_is_kept(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)

    def another_writer():  # e.g. a GitOps controller adding an annotation and a port between our read and write
        with cluster.client() as c:
            svc = c.get(Service, "example")
            body = svc.to_dict()
            body["metadata"].setdefault("annotations", {})["team.example/owner"] = "payments"
            body["spec"]["ports"].append({"name": "metrics", "port": 9090, "targetPort": 9090})
            c.replace(Service.from_dict(body))

    cluster.fake.inject("PATCH", r"/services/example$", action=another_writer)
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 0, run.err
    with cluster.client() as c:
        svc = c.get(Service, "example")
    assert svc.spec.selector["colour"] == "green"
    assert svc.metadata.annotations["team.example/owner"] == "payments"
    assert [p.name for p in svc.spec.ports] == ["http", "metrics"]
    statuses = [r.status for r in cluster.fake.writes(r"/services/example$") if r.method == "PATCH"]
    assert statuses[:2] == [409, 200]  # the stale write was refused, then re-decided on a fresh read


@fake_only
def test_a_concurrent_writer_that_already_switched_is_not_switched_again(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)

    def someone_switches_first():
        with cluster.client() as c:
            c.patch(Service, "example", {"spec": {"selector": {"colour": "green"}}})

    cluster.fake.inject("PATCH", r"/services/example$", action=someone_switches_first)
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 0, run.err
    assert selector_colour(cluster) == "green"
    patches = [r for r in cluster.fake.writes(r"/services/example$") if r.method == "PATCH"]
    # our conditional switch was refused (409); on the fresh read the selector was already green,
    # so no second switch was written: only the deploy-id annotation followed
    ours = [r for r in patches if "resourceVersion" in ((r.body or {}).get("metadata") or {})]
    assert [r.status for r in ours] == [409]
    after = patches[patches.index(ours[0]) + 1:]
    assert after and all("spec" not in (r.body or {}) for r in after)


# --- API failures in each phase: retried, or aborted cleanly; never half-switched ---------------------

PHASE_FAULTS = [
    # (id, method, path, fault, expected exit code)
    ("lock-5xx-retried", "POST", r"/leases$", {"status": 503, "times": 2}, 0),
    ("lock-down-aborts", "*", r"/leases", {"status": 500, "times": 100}, 1),
    ("deploy-timeout-retried", "PATCH", r"/deployments/example-green$", {"timeout": True}, 0),
    ("deploy-forbidden", "PATCH", r"/deployments/example-green$", {"status": 403}, 1),
    ("wait-5xx-retried", "GET", r"/deployments/example-green$", {"status": 503, "times": 3}, 0),
    ("wait-timeouts-abort", "GET", r"/deployments/example-green$", {"timeout": True, "times": 1000}, 1),
    ("switch-answer-lost", "PATCH", r"/services/example$", {"timeout": True, "after": True}, 0),
    ("switch-5xx-aborts", "PATCH", r"/services/example$", {"status": 503, "times": 1000}, 1),
    ("converge-timeouts-retried", "GET", r"/endpointslices$", {"timeout": True, "times": 2}, 0),
    ("history-down-release-stands", "*", r"/configmaps", {"status": 503, "times": 1000}, 0),
]


@fake_only
@pytest.mark.parametrize("method,path,fault,code", [f[1:] for f in PHASE_FAULTS], ids=[f[0] for f in PHASE_FAULTS])
def test_api_failures_in_each_phase(cluster, tmp_path, method, path, fault, code):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    injected = cluster.fake.inject(method, path, **fault)
    run = run_cli(config, "deploy", "--version", "2")
    assert injected.hits >= 1
    assert run.code == code, run.err
    assert "Traceback" not in run.err
    with cluster.client() as c:
        svc = c.get(Service, "example")
    live = svc.spec.selector["colour"]
    # never half-switched: the selector, the state annotations and the answers agree
    assert live == ("green" if code == 0 else "blue")
    assert (svc.metadata.annotations or {}).get("bluegreen.dev/live-colour", "blue") == live
    assert get_live_version(cluster.live_url) == ("2" if code == 0 else "1")
    if code == 1:
        assert run.report["status"] == "failed" and run.report["reason"]
    if fault.get("status") == 403:
        assert "forbidden (403)" in run.report["reason"] and "RBAC" in run.report["reason"]
    if "history" in path or "configmaps" in path:
        assert "could not record the release" in run.err
    if not cluster.fake.token or code == 0:
        assert lease_holder(cluster) is None or "lease" in path


@fake_only
@pytest.mark.parametrize("fault,code", [({"status": 503, "times": 1000}, 1), ({"timeout": True, "after": True}, 0)],
                         ids=["route-5xx-aborts", "route-answer-lost"])
def test_api_failures_during_a_route_switch(cluster, tmp_path, fault, code):
    cluster.create_examples("httproute")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    cluster.fake.inject("PUT", r"/httproutes/example$", **fault)
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == code, run.err
    expected = {"example-blue": 0, "example-green": 100} if code == 0 else {"example-blue": 100, "example-green": 0}
    assert weights(cluster) == expected
    assert get_live_version(cluster.live_url) == ("2" if code == 0 else "1")


@fake_only
def test_a_route_the_gateway_does_not_accept_fails_the_switch_with_the_reason(cluster, tmp_path):
    from bluegreen.config import load_config
    from bluegreen.errors import TargetError
    from bluegreen.targets import make_target

    cluster.create_examples("httproute")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    cluster.fake.controllers.reject_routes = True
    target = make_target(load_config(config))
    try:
        target.wait_ready("green", time.monotonic() + 5)
        with pytest.raises(TargetError, match=r"Accepted=False \(NotAllowedByListeners"):
            target.switch("green", time.monotonic() + 1.5)
        assert weights(cluster) == {"example-blue": 0, "example-green": 100}  # written, but not taken
    finally:
        target.close()


# --- canary weights: the HTTPRoute splits, the Service selector only switches ----------------------------

needs_gateway = pytest.mark.skipif(bool(REAL) and not __import__("os").environ.get("BLUEGREEN_TEST_GATEWAY"),
                                   reason="the real cluster has no Gateway API implementation")


@contextmanager
def kube_target(config):
    from bluegreen.config import load_config
    from bluegreen.targets import make_target

    target = make_target(load_config(config))
    try:
        yield target
    finally:
        target.close()


def edit_route(cluster, change) -> None:
    with cluster.client() as c:
        body = c.get(HTTPRoute, "example").to_dict()
        change(body["spec"]["rules"])
        body.pop("status", None)
        c.replace(HTTPRoute.from_dict(body))


@needs_gateway
def test_a_10_90_split_is_set_in_one_update_and_read_back_from_the_httproute(cluster, tmp_path):
    cluster.create_examples("httproute")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    with kube_target(config) as target:
        target.wait_ready("green", time.monotonic() + (300 if REAL else 5))
        puts_before = len(cluster.fake.writes(r"/httproutes/example$")) if cluster.fake else 0
        target.set_weights({"blue": 90, "green": 10}, time.monotonic() + 30)
        assert weights(cluster) == {"example-blue": 90, "example-green": 10}
        if cluster.fake:
            assert len(cluster.fake.writes(r"/httproutes/example$")) == puts_before + 1  # one update, both weights
    with kube_target(config) as fresh:  # read from the route, not remembered
        assert fresh.weights() == {"blue": 90, "green": 10}
        assert fresh.live() == "blue"  # the stable colour keeps the larger share
        assert fresh.router_state().weights == {"blue": 90, "green": 10}
    shown = run_cli(config, "status")
    assert shown.code == 0, shown.err
    assert "blue 90% / green 10%" in shown.out
    with kube_target(config) as target:  # a whole step completes the canary: the live colour is recorded
        target.set_weights({"blue": 0, "green": 100}, time.monotonic() + 30)
        assert target.live() == "green" and target.weights() == {"blue": 0, "green": 100}
    with cluster.client() as c:
        assert c.get(HTTPRoute, "example").metadata.annotations["bluegreen.dev/live-colour"] == "green"
    assert get_live_version(cluster.live_url) == "1"


@needs_gateway
def test_gateway_api_weights_are_relative_and_read_as_percents(cluster, tmp_path):
    cluster.create_examples("httproute")
    config = write_config(tmp_path / "bluegreen.yml", cluster)

    def one_to_three(rules):
        for ref in rules[0]["backendRefs"]:
            ref["weight"] = 1 if ref["name"] == "example-blue" else 3

    edit_route(cluster, one_to_three)
    with kube_target(config) as target:
        assert target.weights() == {"blue": 25, "green": 75}
        assert target.live() == "green"

    def a_sliver(rules):
        for ref in rules[0]["backendRefs"]:
            ref["weight"] = 1 if ref["name"] == "example-blue" else 999

    edit_route(cluster, a_sliver)
    with kube_target(config) as target:
        assert target.weights() == {"blue": 1, "green": 99}  # a colour that gets any traffic never reads as 0%


GARBLED = [
    ("a-third-backend", lambda rules: rules[0]["backendRefs"].append({"name": "example-canary", "port": 80,
                                                                      "weight": 50}),
     r"HTTPRoute example: rule 0 sends traffic to 'example-canary', neither colour's Service "
     r"\(example-blue and example-green\)"),
    ("rules-disagree", lambda rules: rules.append({"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                                                   "backendRefs": [{"name": "example-blue", "port": 80, "weight": 0},
                                                                   {"name": "example-green", "port": 80,
                                                                    "weight": 100}]}),
     r"HTTPRoute example: its rules split traffic differently \(all to blue; all to green\)"),
    ("a-colour-missing", lambda rules: rules[0]["backendRefs"].pop(),
     r"HTTPRoute example must have backendRefs to both example-blue and example-green"),
]


@fake_only
@pytest.mark.parametrize("change,says", [g[1:] for g in GARBLED], ids=[g[0] for g in GARBLED])
def test_a_garbled_split_is_a_clear_error_and_never_overwritten(cluster, tmp_path, change, says):
    cluster.create_examples("httproute")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    edit_route(cluster, change)
    with cluster.client() as c:
        garbled = c.get(HTTPRoute, "example").spec["rules"]
    with kube_target(config) as target:
        with pytest.raises(TargetError, match=says):
            target.weights()
        with pytest.raises(TargetError, match=says):
            target.live()
        with pytest.raises(TargetError, match=says):
            target.set_weights({"blue": 50, "green": 50}, time.monotonic() + 5)
        assert re.search(says, target.router_state().unreadable)
    with cluster.client() as c:
        assert c.get(HTTPRoute, "example").spec["rules"] == garbled  # left for a person to fix
    shown = run_cli(config, "status")
    assert shown.code == 0 and "Traceback" not in shown.err
    router_line = next(line for line in shown.out.splitlines() if line.strip().startswith("router:"))
    assert router_line.startswith(f"  router: httproute example in namespace {cluster.namespace}: HTTPRoute example")
    assert re.search(says, router_line)


@fake_only
def test_a_conflicting_write_during_a_split_is_retried_on_a_fresh_read_and_kept(cluster, tmp_path):
    cluster.create_examples("httproute")
    config = write_config(tmp_path / "bluegreen.yml", cluster)

    def another_writer():  # e.g. a GitOps controller annotating the route between our read and our PUT
        with cluster.client() as c:
            body = c.get(HTTPRoute, "example").to_dict()
            body["metadata"].setdefault("annotations", {})["team.example/owner"] = "payments"
            body.pop("status", None)
            c.replace(HTTPRoute.from_dict(body))

    with kube_target(config) as target:
        target.wait_ready("green", time.monotonic() + 5)
        injected = cluster.fake.inject("PUT", r"/httproutes/example$", action=another_writer)
        target.set_weights({"blue": 10, "green": 90}, time.monotonic() + 10)
    assert injected.hits == 1
    assert weights(cluster) == {"example-blue": 10, "example-green": 90}
    with cluster.client() as c:
        assert c.get(HTTPRoute, "example").metadata.annotations["team.example/owner"] == "payments"
    ours = [r.status for r in cluster.fake.writes(r"/httproutes/example$") if r.method == "PUT"]
    assert ours[-2:] == [409, 200]  # the stale write was refused, then re-decided on a fresh read


@needs_gateway
def test_a_colour_taking_a_canary_share_is_never_scaled_down_by_an_earlier_plan(cluster, tmp_path):
    cluster.create_examples("httproute")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    with kube_target(config) as target:
        target.wait_ready("green", time.monotonic() + (300 if REAL else 5))
        target.set_weights({"blue": 95, "green": 5}, time.monotonic() + (60 if REAL else 10))
        due = (datetime.now(timezone.utc) - timedelta(minutes=1)).isoformat(timespec="seconds")
        with cluster.client() as c:  # a plan made before the canary began, now due
            c.patch(Deployment, "example-green", {"metadata": {"annotations": {"bluegreen.dev/scale-down-at": due}}})
        target.apply_scale_downs()
    assert replicas(cluster, "green") == 2
    with cluster.client() as c:
        assert "bluegreen.dev/scale-down-at" not in (c.get(Deployment, "example-green").metadata.annotations or {})


def test_the_service_selector_refuses_a_split_naming_the_router_and_still_switches(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    with kube_target(config) as target:
        target.wait_ready("green", time.monotonic() + (300 if REAL else 5))
        with pytest.raises(TargetError, match=r"^router service \(Service example\) cannot split traffic between "
                                              r"the colours, only switch it: use router.kind: httproute"):
            target.set_weights({"blue": 95, "green": 5}, time.monotonic() + 5)
        assert selector_colour(cluster) == "blue"
        assert target.weights() == {"blue": 100, "green": 0}
        target.set_weights({"blue": 0, "green": 100}, time.monotonic() + (60 if REAL else 10))
        assert selector_colour(cluster) == "green" and target.weights() == {"blue": 0, "green": 100}
        with pytest.raises(ValueError, match="adding up to 100"):
            target.set_weights({"blue": 60, "green": 60}, time.monotonic() + 5)


# --- credentials -------------------------------------------------------------------------------------


def _plugin(tmp_path, token: str, api_version: str):
    script = tmp_path / "credential-plugin.py"
    script.write_text(
        "import json\n"
        f"print(json.dumps({{'apiVersion': {api_version!r}, 'kind': 'ExecCredential', "
        f"'status': {{'token': {token!r}}}}}))\n"
    )
    user = {"exec": {"apiVersion": api_version, "command": __import__("sys").executable, "args": [str(script)]}}
    if api_version.endswith("/v1"):
        user["exec"]["interactiveMode"] = "Never"  # required by v1
    return user


@fake_only
@pytest.mark.parametrize("api_version", ["client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"])
def test_exec_plugin_kubeconfigs_authenticate(cluster, tmp_path, monkeypatch, api_version):
    import yaml

    cluster.create_examples("service")
    user = _plugin(tmp_path, SECRET_TOKEN, api_version)
    kubeconfig = yaml.safe_dump(cluster.fake.kubeconfig(user=user, namespace=cluster.namespace))
    monkeypatch.setenv("BG_TEST_KUBECONFIG", kubeconfig)
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    before = len(cluster.fake.requests)
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 0, run.err
    sent = cluster.fake.requests[before:]
    assert sent and all(r.authorization == f"Bearer {SECRET_TOKEN}" for r in sent)
    assert_no_secret(run)


@fake_only
def test_rejected_credentials_fail_in_one_line_without_the_secret(cluster, tmp_path, monkeypatch):
    import yaml

    cluster.create_examples("service")
    wrong = "wrong-" + SECRET_TOKEN[::-1]
    user = _plugin(tmp_path, wrong, "client.authentication.k8s.io/v1")
    monkeypatch.setenv("BG_TEST_KUBECONFIG", yaml.safe_dump(cluster.fake.kubeconfig(user=user)))
    config = write_config(tmp_path / "bluegreen.yml", cluster)
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 1
    assert "refused the credentials from the `kubeconfig` setting (401 Unauthorized)" in run.text
    assert wrong not in run.text and SECRET_TOKEN not in run.text
    assert "Traceback" not in run.err


def test_kubeconfig_from_the_kubeconfig_env_file(cluster, tmp_path, monkeypatch):
    cluster.create_examples("service")
    path = tmp_path / "kubeconfig"
    path.write_text(cluster.kubeconfig_text)
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{path}")
    config = write_config(tmp_path / "bluegreen.yml", cluster, target={"kubeconfig": None})
    run = run_cli(config, "status")
    assert run.code == 0, run.err
    assert "live: blue (version 1)" in run.out
    assert_no_secret(run)


# --- after the switch ------------------------------------------------------------------------------


def test_idle_replicas_keeps_a_warm_pod(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster, target={"idle_replicas": 1})
    assert run_cli(config, "deploy", "--version", "2").code == 0
    assert replicas(cluster, "blue") == 1


def test_scale_down_never_keeps_the_old_colour(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster, scale_down_delay="never")
    assert run_cli(config, "deploy", "--version", "2").code == 0
    assert replicas(cluster, "blue") == 2


def test_a_long_scale_down_delay_survives_the_cli_exiting(cluster, tmp_path):
    from bluegreen.config import load_config
    from bluegreen.targets import make_target

    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster, scale_down_delay=3600,
                          target={"scale_down_wait": 1})
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 0, run.err
    assert replicas(cluster, "blue") == 2  # still warm: the run did not wait an hour
    with cluster.client() as c:
        due = c.get(Deployment, "example-blue").metadata.annotations["bluegreen.dev/scale-down-at"]
        assert datetime.fromisoformat(due) > datetime.now(timezone.utc) + timedelta(minutes=59)
        past = (datetime.now(timezone.utc) - timedelta(seconds=1)).isoformat(timespec="seconds")
        c.patch(Deployment, "example-blue", {"metadata": {"annotations": {"bluegreen.dev/scale-down-at": past}}})

    target = make_target(load_config(config))  # a later run, in a fresh process: it takes the lock
    try:
        target.state.acquire_lock("a later run", 60)
        target.state.release_lock("a later run")
    finally:
        target.close()
    assert replicas(cluster, "blue") == 0
    assert replicas(cluster, "green") == 2


def test_a_short_scale_down_delay_is_waited_for(cluster, tmp_path):
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster, scale_down_delay=0.5)
    started = time.monotonic()
    assert run_cli(config, "deploy", "--version", "2").code == 0
    assert time.monotonic() - started >= 0.5
    assert replicas(cluster, "blue") == 0


def test_a_cancel_during_the_scale_down_wait_keeps_the_release(cluster, tmp_path):
    """SIGTERM while the run waits to scale the old colour down: the release stands (exit 0), the old
    colour stays warm, and its scale-down stays due for the next run."""
    import os
    import signal

    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster, scale_down_delay=60)
    due_key = "bluegreen.dev/scale-down-at"

    def cancel_once_due_is_recorded() -> None:
        deadline = time.monotonic() + 60
        with cluster.client() as c:
            while time.monotonic() < deadline:
                annotations = c.get(Deployment, "example-blue").metadata.annotations or {}
                if due_key in annotations:
                    time.sleep(0.3)  # inside the wait
                    os.kill(os.getpid(), signal.SIGTERM)  # the CLI runs in this process, in the main thread
                    return
                time.sleep(0.05)

    canceller = threading.Thread(target=cancel_once_due_is_recorded, daemon=True)
    canceller.start()
    started = time.monotonic()
    run = run_cli(config, "deploy", "--version", "2")
    canceller.join(5)
    assert run.code == 0, run.err
    assert time.monotonic() - started < 30  # it did not sit out the 60 s
    assert run.report["status"] == "succeeded" and run.report["switched"] is True
    due_phase = next(p for p in run.report["phases"] if p["name"] == "scale down blue (due)")
    assert due_phase["status"] == "skipped" and "cancelled by SIGTERM" in due_phase["detail"]
    assert selector_colour(cluster) == "green"
    assert replicas(cluster, "blue") == 2  # still warm, for a rollback
    with cluster.client() as c:
        assert due_key in c.get(Deployment, "example-blue").metadata.annotations  # due for the next run
    assert cluster_lock_holder(cluster) is None


def cluster_lock_holder(cluster) -> str | None:
    from lightkube.resources.coordination_v1 import Lease

    with cluster.client() as c:
        lease = c.get(Lease, "example-bluegreen-lock")
    return lease.spec.holderIdentity if lease.spec else None


# --- the runbook line ---------------------------------------------------------------------------------


@fake_only
def test_the_raw_rollback_command_works_with_kubectl(cluster, tmp_path):
    """Serve the fake over real HTTP and run the report's kubectl command as an operator would."""
    import shlex
    import shutil
    import subprocess
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    cluster.create_examples("service")
    config = write_config(tmp_path / "bluegreen.yml", cluster, scale_down_delay=0.2)
    run = run_cli(config, "deploy", "--version", "2")
    assert run.code == 0 and selector_colour(cluster) == "green"
    assert replicas(cluster, "blue") == 0  # the runbook line scales it up again first

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    cluster.fake.token = None  # kubectl sends no bearer token over plain http
    class Server(ThreadingMixIn, WSGIServer):  # a watch stream must not block the other requests
        daemon_threads = True

    server = make_server("127.0.0.1", 0, cluster.fake, server_class=Server, handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        kubectl = f"kubectl --server=http://127.0.0.1:{server.server_address[1]}"
        command = run.report["raw_rollback_command"].replace("kubectl", kubectl)
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60,
                              env={"PATH": __import__("os").environ["PATH"], "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr
    finally:
        server.shutdown()
        server.server_close()
    assert selector_colour(cluster) == "blue"
    assert get_live_version(cluster.live_url) == "1"


# --- the credential order, lazy imports, the example config -----------------------------------------


def _kubeconfig(server: str) -> str:
    import yaml

    return yaml.safe_dump({"clusters": [{"name": "c", "cluster": {"server": server}}],
                           "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                           "users": [{"name": "u", "user": {"token": "t"}}], "current-context": "x"})


def test_credentials_are_looked_up_in_a_fixed_order(tmp_path, monkeypatch):
    from lightkube import KubeConfig

    from bluegreen.errors import TargetError
    from bluegreen.kube_client import load_kubeconfig

    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(_kubeconfig("https://home"))
    env_file = tmp_path / "env-kubeconfig"
    env_file.write_text(_kubeconfig("https://env"))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KUBECONFIG", str(env_file))
    in_cluster = KubeConfig.from_server("https://in-cluster")
    monkeypatch.setattr(KubeConfig, "from_service_account", classmethod(lambda cls, *a, **k: in_cluster))

    def server(content=None):
        config, source = load_kubeconfig(content)
        return config.get().cluster.server, source

    assert server(_kubeconfig("https://setting")) == ("https://setting", "the `kubeconfig` setting")
    assert server() == ("https://env", f"KUBECONFIG ({env_file})")  # before ~/.kube/config and in-cluster
    monkeypatch.delenv("KUBECONFIG")
    assert server()[0] == "https://home"
    (home / ".kube" / "config").unlink()
    assert server() == ("https://in-cluster", "the in-cluster service account")
    monkeypatch.setattr(KubeConfig, "from_service_account",
                        classmethod(lambda cls, *a, **k: (_ for _ in ()).throw(KeyError("KUBERNETES_SERVICE_HOST"))))
    with pytest.raises(TargetError, match="no Kubernetes credentials"):
        load_kubeconfig(None)


def test_an_invalid_kubeconfig_is_named_without_its_content():
    from bluegreen.errors import TargetError
    from bluegreen.kube_client import load_kubeconfig

    secret = "token: " + SECRET_TOKEN + "\n  bad: [unclosed"
    with pytest.raises(TargetError) as excinfo:
        load_kubeconfig(secret)
    assert "the `kubeconfig` setting is not valid YAML" in str(excinfo.value)
    assert SECRET_TOKEN not in str(excinfo.value)


def test_exec_plugins_declared_v1_are_run_as_v1beta1():
    from bluegreen.kube_client import normalise_exec

    config = {"users": [{"name": "u", "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                                                         "command": "aws", "interactiveMode": "Never"}}}]}
    exec_ = normalise_exec(config)["users"][0]["user"]["exec"]
    assert exec_ == {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "aws"}


def test_lightkube_is_imported_only_when_the_kubernetes_target_is_used():
    import subprocess
    import sys

    code = ("import sys, bluegreen.cli, bluegreen.config, bluegreen.pipeline, bluegreen.targets\n"
            "bluegreen.cli.build_parser()\n"
            "assert 'lightkube' not in sys.modules and 'httpx2' not in sys.modules, 'imported too early'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_example_config_loads(monkeypatch):
    from pathlib import Path

    from bluegreen.config import KubernetesTarget, load_config

    monkeypatch.setenv("KUBECONFIG_DATA", SECRET_TOKEN)
    settings = load_config(Path(__file__).resolve().parents[1] / "examples" / "kubernetes" / "bluegreen.yml")
    assert isinstance(settings.target, KubernetesTarget)
    assert settings.target.router.service == "example" and settings.target.idle_replicas == 0
    assert settings.target.kubeconfig.get_secret_value() == SECRET_TOKEN
    assert SECRET_TOKEN not in repr(settings) and SECRET_TOKEN not in settings.model_dump_json()
