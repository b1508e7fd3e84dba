"""kubefake's semantics, proven with lightkube as the client: what the contract suite relies on."""

from __future__ import annotations

import time
from pathlib import Path

import httpx2
import pytest
import yaml
from lightkube import ApiError, Client
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import ConfigMap, Pod, Service
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from kubefake import FakeKube, validate_manifest

HTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "kubernetes"


def deployment(name: str = "web", image: str = "web:1", replicas: int = 2, colour: str = "blue") -> Deployment:
    labels = {"app": "web", "colour": colour}
    return Deployment.from_dict({
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "app", "image": image, "ports": [{"name": "http", "containerPort": 8080}]},
                     {"name": "sidecar", "image": "proxy:1"}]}}},
    })


def service(name: str = "web", colour: str = "blue") -> Service:
    return Service.from_dict({"metadata": {"name": name},
                              "spec": {"selector": {"app": "web", "colour": colour},
                                       "ports": [{"port": 80, "targetPort": "http"}]}})


@pytest.fixture
def fake() -> FakeKube:
    return FakeKube(auto=True, ready_after=0.05)


@pytest.fixture
def client(fake) -> Client:
    with fake.client() as c:
        yield c


def status_of(excinfo) -> tuple[int, str]:
    return excinfo.value.status.code, excinfo.value.status.reason


# --- resourceVersion, conflicts, Status bodies ----------------------------------------------------------


def test_every_write_gets_a_new_resource_version_and_a_no_op_keeps_it(client):
    cm = client.create(ConfigMap.from_dict({"metadata": {"name": "c"}, "data": {"a": "1"}}))
    changed = client.patch(ConfigMap, "c", {"data": {"a": "2"}}, patch_type=PatchType.MERGE)
    assert int(changed.metadata.resourceVersion) > int(cm.metadata.resourceVersion)
    same = client.patch(ConfigMap, "c", {"data": {"a": "2"}}, patch_type=PatchType.MERGE)
    assert same.metadata.resourceVersion == changed.metadata.resourceVersion


def test_a_stale_put_is_a_conflict_with_a_real_status_body(client, fake):
    cm = client.create(ConfigMap.from_dict({"metadata": {"name": "c"}, "data": {"a": "1"}}))
    client.patch(ConfigMap, "c", {"data": {"a": "2"}}, patch_type=PatchType.MERGE)
    cm.data = {"a": "3"}
    with pytest.raises(ApiError) as excinfo:
        client.replace(cm)
    assert status_of(excinfo) == (409, "Conflict")
    assert excinfo.value.status.message == (
        'Operation cannot be fulfilled on configmaps "c": the object has been modified; '
        "please apply your changes to the latest version and try again")
    assert excinfo.value.status.details.name == "c" and excinfo.value.status.details.kind == "configmaps"
    assert fake.get("ConfigMap", "default", "c")["data"] == {"a": "2"}


@pytest.mark.parametrize("patch_type", [PatchType.MERGE, PatchType.STRATEGIC])
def test_a_patch_carrying_a_stale_resource_version_is_a_conflict(client, patch_type):
    svc = client.create(service())
    client.patch(Service, "web", {"metadata": {"labels": {"x": "y"}}})
    with pytest.raises(ApiError) as excinfo:
        client.patch(Service, "web", {"metadata": {"resourceVersion": svc.metadata.resourceVersion},
                                      "spec": {"selector": {"colour": "green"}}}, patch_type=patch_type)
    assert status_of(excinfo) == (409, "Conflict")
    fresh = client.get(Service, "web")
    ok = client.patch(Service, "web", {"metadata": {"resourceVersion": fresh.metadata.resourceVersion},
                                       "spec": {"selector": {"colour": "green"}}}, patch_type=patch_type)
    assert ok.spec.selector == {"app": "web", "colour": "green"}  # the selector map merged, not replaced


def test_a_json_patch_test_op_is_a_precondition(client):
    client.create(ConfigMap.from_dict({"metadata": {"name": "c"}, "data": {"a": "1"}}))
    with pytest.raises(ApiError) as excinfo:
        client.patch(ConfigMap, "c", [{"op": "test", "path": "/data/a", "value": "0"},
                                      {"op": "replace", "path": "/data/a", "value": "2"}], patch_type=PatchType.JSON)
    assert status_of(excinfo) == (422, "Invalid")
    done = client.patch(ConfigMap, "c", [{"op": "test", "path": "/data/a", "value": "1"},
                                         {"op": "add", "path": "/data/b", "value": "2"}], patch_type=PatchType.JSON)
    assert done.data == {"a": "1", "b": "2"}


def test_already_exists_and_not_found(client):
    client.create(service())
    with pytest.raises(ApiError) as excinfo:
        client.create(service())
    assert status_of(excinfo) == (409, "AlreadyExists")
    assert excinfo.value.status.message == 'services "web" already exists'
    with pytest.raises(ApiError) as excinfo:
        client.get(Deployment, "nope")
    assert status_of(excinfo) == (404, "NotFound")
    assert excinfo.value.status.message == 'deployments.apps "nope" not found'
    with pytest.raises(ApiError) as excinfo:
        client.create(ConfigMap.from_dict({"metadata": {"name": "c", "namespace": "missing"}}))
    assert excinfo.value.status.message == 'namespaces "missing" not found'


def raw(fake, method: str, path: str, body=None) -> httpx2.Response:
    """A request lightkube's typed models cannot make (they drop unknown fields)."""
    from kubefake import SERVER

    with httpx2.Client(transport=fake.transport(), base_url=SERVER) as http:
        return http.request(method, path, json=body)


def test_invalid_objects_are_refused_with_422_naming_the_field(client, fake):
    bad = deployment().to_dict()
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"  # schema (strict)
    response = raw(fake, "POST", "/apis/apps/v1/namespaces/default/deployments", bad)
    assert response.status_code == 422
    status = response.json()
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Invalid", 422)
    assert "imagePullPolicyy" in status["message"]
    assert status["details"]["causes"][0]["field"] == "spec.template.spec.containers[0]"

    mismatched = deployment().to_dict()
    mismatched["spec"]["template"]["metadata"]["labels"] = {"app": "other"}  # semantic
    with pytest.raises(ApiError) as excinfo:
        client.create(Deployment.from_dict(mismatched))
    assert "`selector` does not match template `labels`" in excinfo.value.status.message

    with pytest.raises(ApiError) as excinfo:
        client.create(Service.from_dict({"metadata": {"name": "9web"}, "spec": {"ports": [{"port": 80}]}}))
    assert status_of(excinfo) == (422, "Invalid")  # a Service name must be a DNS-1035 label


def test_a_deployment_selector_is_immutable(client):
    client.create(deployment())
    with pytest.raises(ApiError) as excinfo:
        client.patch(Deployment, "web", {"spec": {"selector": {"matchLabels": {"colour": None}}}},
                     patch_type=PatchType.MERGE)
    assert "field is immutable" in excinfo.value.status.message


def test_generation_counts_spec_changes_only_and_status_is_a_subresource(client):
    d = client.create(deployment())
    assert d.metadata.generation == 1 and d.status is None
    d = client.patch(Deployment, "web", {"metadata": {"annotations": {"a": "b"}}})
    assert d.metadata.generation == 1
    d = client.patch(Deployment, "web", {"spec": {"replicas": 3}})
    assert d.metadata.generation == 2
    # a status written through the main resource is ignored; through /status it is kept
    body = client.get(Deployment, "web").to_dict()
    body["status"] = {"replicas": 99}
    kept = client.replace(Deployment.from_dict(body))
    assert (kept.status.replicas or 0) != 99


def test_server_defaults_are_applied(client):
    d = client.create(deployment(image="web:latest"))
    assert d.spec.strategy.type == "RollingUpdate" and d.spec.progressDeadlineSeconds == 600
    assert d.spec.template.spec.containers[0].imagePullPolicy == "Always"
    svc = client.create(service())
    assert svc.spec.type == "ClusterIP" and svc.spec.clusterIP and svc.spec.ports[0].protocol == "TCP"


# --- selectors and patch flavours ------------------------------------------------------------------


def test_label_selectors_on_list(client):
    for name, labels in {"a": {"tier": "web", "colour": "blue"}, "b": {"tier": "web", "colour": "green"},
                         "c": {"tier": "db"}}.items():
        client.create(ConfigMap.from_dict({"metadata": {"name": name, "labels": labels}}))

    def names(**labels):
        return sorted(o.metadata.name for o in client.list(ConfigMap, labels=labels))

    from lightkube import operators as op

    assert names(tier="web") == ["a", "b"]
    assert names(tier="web", colour=op.not_equal("blue")) == ["b"]
    assert names(colour=op.in_(["blue", "green"])) == ["a", "b"]
    assert names(colour=op.not_in(["blue"])) == ["b", "c"]
    assert names(colour=op.exists()) == ["a", "b"]
    assert names(colour=op.not_exists()) == ["c"]


def test_strategic_merge_merges_containers_by_name_and_merge_patch_replaces_lists(client):
    client.create(deployment())
    patched = client.patch(Deployment, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "web:2"}]}}}}, patch_type=PatchType.STRATEGIC)
    containers = {c.name: c for c in patched.spec.template.spec.containers}
    assert containers["app"].image == "web:2" and containers["app"].ports[0].containerPort == 8080
    assert containers["sidecar"].image == "proxy:1"
    replaced = client.patch(Deployment, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "web:3"}]}}}}, patch_type=PatchType.MERGE)
    assert [c.name for c in replaced.spec.template.spec.containers] == ["app"]


def test_a_crd_refuses_strategic_merge_and_an_unconditional_put(client):
    client.create(HTTPRoute.from_dict({"metadata": {"name": "r"}, "spec": {"rules": [{"backendRefs": [
        {"name": "web", "port": 80}]}]}}))
    with pytest.raises(ApiError) as excinfo:
        client.patch(HTTPRoute, "r", {"spec": {}}, patch_type=PatchType.STRATEGIC)
    assert excinfo.value.status.code == 415
    body = client.get(HTTPRoute, "r").to_dict()
    del body["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as excinfo:
        client.replace(HTTPRoute.from_dict(body))
    assert status_of(excinfo) == (422, "Invalid")
    assert "must be specified for an update" in excinfo.value.status.message


def test_an_httproute_is_validated_against_the_gateway_api_schema(client):
    with pytest.raises(ApiError) as excinfo:  # a Service backendRef needs a port (the CRD's CEL rule)
        client.create(HTTPRoute.from_dict({"metadata": {"name": "r"}, "spec": {"rules": [{"backendRefs": [
            {"name": "web"}]}]}}))
    assert status_of(excinfo) == (422, "Invalid") and "port" in excinfo.value.status.message
    with pytest.raises(ApiError):
        client.create(HTTPRoute.from_dict({"metadata": {"name": "r"}, "spec": {"rules": [{"backendRefs": [
            {"name": "web", "port": 80, "weight": -1}]}]}}))


def test_server_side_apply_creates_owns_conflicts_forces_and_prunes(client):
    def apply(data, manager="bluegreen", force=False):
        return client.apply(ConfigMap.from_dict({"metadata": {"name": "c"}, "data": data}),
                            field_manager=manager, force=force)

    assert apply({"a": "1", "b": "2"}).data == {"a": "1", "b": "2"}
    assert apply({"a": "1"}).data == {"a": "1"}  # b was ours and is no longer applied: pruned
    client.patch(ConfigMap, "c", {"data": {"a": "9", "c": "3"}}, patch_type=PatchType.MERGE, field_manager="ops")
    with pytest.raises(ApiError) as excinfo:
        apply({"a": "1"})
    assert status_of(excinfo) == (409, "Conflict")
    assert 'conflict with "ops"' in excinfo.value.status.message and ".data.a" in excinfo.value.status.message
    forced = apply({"a": "1"}, force=True)
    assert forced.data == {"a": "1", "c": "3"}  # ops' own field c stays
    owners = {m.manager: m.fieldsV1 for m in forced.metadata.managedFields}
    assert owners["bluegreen"] == {"f:data": {"f:a": {}}} and owners["ops"] == {"f:data": {"f:c": {}}}


def test_apply_of_a_deployment_merges_containers_by_name(client):
    client.create(deployment())
    applied = client.apply(Deployment.from_dict({"metadata": {"name": "web"}, "spec": {"template": {"spec": {
        "containers": [{"name": "app", "image": "web:5"}]}}, "selector": {"matchLabels": {"app": "web",
                                                                                           "colour": "blue"}}}}),
        field_manager="bluegreen", force=True)
    assert {c.name: c.image for c in applied.spec.template.spec.containers} == {"app": "web:5", "sidecar": "proxy:1"}


# --- controllers -----------------------------------------------------------------------------------------


def test_a_deployment_rolls_out_and_its_status_follows(client):
    client.create(deployment())
    time.sleep(0.06)
    d = client.get(Deployment, "web")
    assert (d.status.observedGeneration, d.status.updatedReplicas, d.status.availableReplicas) == (1, 2, 2)
    d = client.patch(Deployment, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "web:2"}]}}}})
    assert d.metadata.generation == 2 and d.status.observedGeneration == 1  # the controller has not seen it
    d = client.get(Deployment, "web")
    assert d.status.observedGeneration == 2 and d.status.updatedReplicas == 2 and d.status.availableReplicas == 2
    assert d.status.replicas == 4  # new pods are starting, the old ones still serve
    time.sleep(0.06)
    d = client.get(Deployment, "web")
    assert (d.status.replicas, d.status.updatedReplicas, d.status.availableReplicas) == (2, 2, 2)
    images = {p.spec.containers[0].image for p in client.list(Pod, labels={"app": "web"})}
    assert images == {"web:2"}


def test_scaled_to_zero_the_status_omits_zero_counts(client):
    client.create(deployment(replicas=0))
    time.sleep(0.06)
    d = client.get(Deployment, "web")
    assert d.status.observedGeneration == 1 and d.status.replicas is None and d.status.availableReplicas is None


@pytest.mark.parametrize("reason", ["CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "Unschedulable"])
def test_failing_images_leave_pods_with_the_reason(client, fake, reason):
    fake.fail_image("web:bad*", reason)
    client.create(deployment(image="web:bad1"))
    time.sleep(0.06)
    pods = list(client.list(Pod, labels={"app": "web"}))
    assert len(pods) == 2
    for pod in pods:
        if reason == "Unschedulable":
            assert pod.status.conditions[0].reason == "Unschedulable" and pod.status.podIP is None
        else:
            assert pod.status.containerStatuses[0].state.waiting.reason == reason
    d = client.get(Deployment, "web")
    assert d.status.availableReplicas is None and d.status.unavailableReplicas == 2


def test_manual_mode_is_stepped_by_the_test(client, fake):
    fake.controllers.auto = False
    client.create(deployment())
    time.sleep(0.06)
    assert client.get(Deployment, "web").status.availableReplicas is None
    fake.rollout("default", "web")
    assert client.get(Deployment, "web").status.availableReplicas == 2
    client.patch(Deployment, "web", {"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "web:2"}]}}}})
    fake.fail_rollout("default", "web", "CrashLoopBackOff", deadline_exceeded=True)
    d = client.get(Deployment, "web")
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")
    assert d.status.availableReplicas == 2  # the old pods keep serving


def test_endpoint_slices_follow_the_selector_and_pod_readiness(client, fake):
    client.create(deployment(colour="blue"))
    client.create(deployment("web-green", colour="green", image="web:2"))
    client.create(service())
    time.sleep(0.06)

    def endpoints():
        return [(e.targetRef.name.rsplit("-", 2)[0], e.conditions.ready) for s in
                client.list(EndpointSlice, labels={"kubernetes.io/service-name": "web"}) for e in s.endpoints or []]

    assert endpoints() == [("web", True), ("web", True)]
    slices = list(client.list(EndpointSlice, labels={"kubernetes.io/service-name": "web"}))
    assert slices[0].ports[0].port == 8080  # the named targetPort, resolved
    client.patch(Service, "web", {"spec": {"selector": {"colour": "green"}}})
    assert endpoints() == [("web-green", True), ("web-green", True)]


def test_endpoint_slices_can_lag_like_the_real_controller(client):
    fake = FakeKube(ready_after=0.0, endpoint_lag=0.3)
    with fake.client() as c:
        c.create(deployment())
        c.create(deployment("web-green", colour="green"))
        c.create(service())
        time.sleep(0.35)
        c.patch(Service, "web", {"spec": {"selector": {"colour": "green"}}})
        owners = {e.targetRef.name.rsplit("-", 2)[0] for s in c.list(EndpointSlice) for e in s.endpoints}
        assert owners == {"web"}  # still the old pods
        time.sleep(0.35)
        owners = {e.targetRef.name.rsplit("-", 2)[0] for s in c.list(EndpointSlice) for e in s.endpoints}
        assert owners == {"web-green"}


def test_httproute_status_reports_accepted_and_resolved_refs(client, fake):
    route = {"metadata": {"name": "r"}, "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
        {"name": "web", "port": 80, "weight": 100}]}]}}
    client.create(HTTPRoute.from_dict(route))
    conditions = {c["type"]: c for c in client.get(HTTPRoute, "r").status["parents"][0]["conditions"]}
    assert conditions["ResolvedRefs"]["reason"] == "BackendNotFound"
    client.create(service())
    conditions = {c["type"]: c for c in client.get(HTTPRoute, "r").status["parents"][0]["conditions"]}
    assert conditions["Accepted"]["status"] == "True" and conditions["ResolvedRefs"]["status"] == "True"


def test_lease_times_must_be_microtime(client):
    from datetime import datetime, timezone

    from bluegreen.state.kubernetes import microtime

    # lightkube encodes a whole second without a fraction, which a MicroTime refuses
    with pytest.raises(ApiError) as excinfo:
        client.create(Lease.from_dict({"metadata": {"name": "l"}, "spec": {
            "holderIdentity": "me", "renewTime": "2024-01-01T00:00:00.000000Z"}}))
    assert excinfo.value.status.code == 400
    whole_second = datetime(2024, 1, 1, tzinfo=timezone.utc)
    lease = client.create(Lease.from_dict({"metadata": {"name": "l"}, "spec": {
        "holderIdentity": "me", "renewTime": microtime(whole_second)}}))
    assert abs((lease.spec.renewTime - whole_second).total_seconds()) < 0.001


def test_a_configmap_over_one_mib_is_refused(client):
    with pytest.raises(ApiError) as excinfo:
        client.create(ConfigMap.from_dict({"metadata": {"name": "big"}, "data": {"x": "y" * (1 << 20)}}))
    assert status_of(excinfo) == (422, "Invalid")


# --- faults and auth ------------------------------------------------------------------------------------


def test_injected_5xx_403_and_timeouts(client, fake):
    client.create(service())
    fake.inject("GET", r"/services/web$", status=503, times=2)
    for _ in range(2):
        with pytest.raises(ApiError) as excinfo:
            client.get(Service, "web")
        assert status_of(excinfo) == (503, "ServiceUnavailable")
    assert client.get(Service, "web").metadata.name == "web"

    fake.inject("PATCH", r"/services/web$", status=403)
    with pytest.raises(ApiError) as excinfo:
        client.patch(Service, "web", {"metadata": {"labels": {"a": "b"}}})
    assert status_of(excinfo) == (403, "Forbidden")

    fake.inject("PATCH", r"/services/web$", timeout=True)
    with pytest.raises(httpx2.ReadTimeout):
        client.patch(Service, "web", {"metadata": {"labels": {"a": "1"}}})
    assert "a" not in (client.get(Service, "web").metadata.labels or {})

    fake.inject("PATCH", r"/services/web$", timeout=True, after=True)  # applied; the answer is lost
    with pytest.raises(httpx2.ReadTimeout):
        client.patch(Service, "web", {"metadata": {"labels": {"a": "2"}}})
    assert client.get(Service, "web").metadata.labels["a"] == "2"


def test_bearer_token_auth(fake):
    fake.token = "right"
    from lightkube import KubeConfig

    wrong = Client(KubeConfig.from_dict(fake.kubeconfig(token="wrong")), transport=fake.transport())
    with pytest.raises(ApiError) as excinfo:
        wrong.get(Service, "x")
    assert status_of(excinfo) == (401, "Unauthorized")
    right = Client(KubeConfig.from_dict(fake.kubeconfig(token="right")), transport=fake.transport())
    with pytest.raises(ApiError) as excinfo:
        right.get(Service, "x")
    assert excinfo.value.status.code == 404


# --- the example manifests --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_manifests_validate_strictly(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        validate_manifest(doc)


def test_example_manifests_are_accepted_by_the_fake(client):
    from lightkube.codecs import from_dict

    for name in ("deployments.yaml", "httproute.yaml"):
        for doc in yaml.safe_load_all((EXAMPLES / name).read_text()):
            client.create(from_dict(doc))


def test_the_strict_validator_refuses_a_typo():
    import kubernetes_validate

    doc = yaml.safe_load((EXAMPLES / "services.yaml").read_text().split("---")[0])
    doc["spec"]["selectr"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(doc)
