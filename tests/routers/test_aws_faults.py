"""The AWS routers meet faults moto does not produce by itself, injected by a proxy in front of it (awsfaults.py):
throttling retried, a persistent 5xx, access denied, an answer lost after the change was applied (read back before
deciding), a call that hangs until the client's timeout."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from awsfaults import FaultProxy
from awsmoto import aws, client, make_alb_lab, moto_url  # noqa: F401  (fixtures)
from bluegreen.config.routers import AlbRouter as AlbConfig
from bluegreen.config.routers import Route53Router as Route53Config
from bluegreen.errors import TargetError
from bluegreen.routers import make_router

UPSTREAMS = {"blue": ["10.0.1.10:8080"], "green": ["10.0.2.10:8080"]}


@pytest.fixture
def faults(aws, moto_url, monkeypatch):
    proxy = FaultProxy(moto_url)
    yield proxy
    proxy.close()


@pytest.fixture
def alb(faults, monkeypatch):
    """An ALB built on moto directly, live on blue; the router's calls go through the fault proxy."""
    lab = make_alb_lab()
    lab.register("blue", *UPSTREAMS["blue"])
    lab.register("green", *UPSTREAMS["green"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", faults.url)

    def make(**fields):
        return make_router(AlbConfig(**lab.config(**fields)), upstreams=UPSTREAMS, state_dir=Path("/nonexistent"),
                           app="testapp")

    router = make(timeout=2)
    router.switch("blue", deadline())
    router.make, router.lab = make, lab
    faults.seen.clear()
    return router


def deadline() -> float:
    return time.monotonic() + 30


def test_throttling_is_retried_then_succeeds(alb, faults):
    faults.plan("Action=ModifyListener", "throttle", times=2)
    alb.switch("green", deadline())
    assert alb.read() == {"blue": 0, "green": 100}
    assert faults.count("Action=ModifyListener") == 3 and len(faults.injected) == 2


def test_throttling_that_persists_is_one_line_and_live_is_untouched(alb, faults):
    faults.plan("Action=ModifyListener", "throttle")
    with pytest.raises(TargetError) as error:
        alb.switch("green", deadline())
    message = str(error.value)
    assert "AWS throttled elbv2:ModifyListener" in message and "3 times in a row" in message, message
    assert message.endswith("live routing is unchanged (all to blue)") and "\n" not in message


def test_a_persistent_5xx_fails_with_one_line_and_live_untouched(alb, faults):
    faults.plan("Action=ModifyListener", "error", status=503)
    with pytest.raises(TargetError) as error:
        alb.switch("green", deadline())
    message = str(error.value)
    assert "failed on AWS's side (InternalFailure, HTTP 503) 3 times in a row" in message, message
    assert "live routing is unchanged (all to blue)" in message and "\n" not in message
    assert faults.count("Action=ModifyListener") == 3
    faults.clear()
    assert alb.read() == {"blue": 100, "green": 0}


def test_access_denied_names_the_action(alb, faults):
    faults.plan("Action=DescribeListeners", "deny")
    with pytest.raises(TargetError, match=r"^AWS denied elbv2:DescribeListeners on .* \(AccessDenied: User: "):
        alb.read()
    assert faults.count("Action=DescribeListeners") == 1  # not retried


def test_a_lost_answer_after_the_change_is_read_back_and_counted_as_switched(alb, faults):
    faults.plan("Action=ModifyListener", "lose")  # every attempt applied by moto, every answer lost
    alb.switch("green", deadline())  # no error: the read-back shows the change went through
    assert alb.read() == {"blue": 0, "green": 100}
    assert faults.count("Action=ModifyListener") == 3
    assert faults.count("Action=DescribeListeners") >= 2  # the write's own read, then the read-back


def test_a_timeout_is_a_clear_line(alb, faults):
    faults.plan("Action=DescribeListeners", "hang")
    started = time.monotonic()
    with pytest.raises(TargetError) as error:
        alb.read()
    message = str(error.value)
    assert f"no answer from {faults.url} within 2 s, 3 times in a row" in message, message
    assert time.monotonic() - started < 20  # 3 attempts of 2 s and the backoff: a wide guard
    assert "\n" not in message


def test_route53_lost_answer_and_throttling(faults, monkeypatch):
    route53 = client("route53")
    name = f"z{uuid.uuid4().hex[:8]}.example.com"
    zone = route53.create_hosted_zone(Name=name, CallerReference=name)["HostedZone"]["Id"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", faults.url)
    dns = make_router(Route53Config(kind="route53", hosted_zone_id=zone, record_name=f"app.{name}", timeout=2),
                      upstreams=UPSTREAMS, state_dir=Path("/nonexistent"), app="web")
    faults.plan("/rrset", "throttle", times=1)
    dns.switch("blue", deadline())
    assert dns.read() == {"blue": 100, "green": 0}
    faults.clear()
    faults.plan("POST /2013-04-01/hostedzone", "lose")
    dns.switch("green", deadline())
    assert dns.read() == {"blue": 0, "green": 100}
    faults.clear()
    faults.plan("POST /2013-04-01/hostedzone", "error")
    with pytest.raises(TargetError, match=r"live routing is unchanged \(all to green\)$"):
        dns.switch("blue", deadline())


INITIAL = """<DescribeTargetHealthResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/">
<DescribeTargetHealthResult><TargetHealthDescriptions><member><HealthCheckPort>8080</HealthCheckPort>
<TargetHealth><State>initial</State><Reason>Elb.RegistrationInProgress</Reason>
<Description>Target registration is in progress</Description></TargetHealth>
<Target><Id>10.0.2.10</Id><Port>8080</Port></Target></member></TargetHealthDescriptions></DescribeTargetHealthResult>
<ResponseMetadata><RequestId>1</RequestId></ResponseMetadata></DescribeTargetHealthResponse>"""


def test_targets_in_their_first_health_checks_are_waited_for_until_the_deadline(alb, faults):
    """What moto never reports: a target just registered is `initial` until its health checks pass (AWS)."""
    faults.plan("Action=DescribeTargetHealth", "answer", times=2, body=INITIAL)
    alb.switch("green", deadline())
    assert alb.read() == {"blue": 0, "green": 100}
    assert faults.count("Action=DescribeTargetHealth") == 3
    faults.plan("Action=DescribeTargetHealth", "answer", body=INITIAL)  # never healthy: refused at the deadline
    started = time.monotonic()
    with pytest.raises(TargetError, match=r"1 of 1 targets not healthy: 10.0.2.10:8080 initial "
                                          r"\(Elb.RegistrationInProgress\); live routing is unchanged \(all to green\)"):
        alb.switch("blue", time.monotonic() + 3)
    assert 1.5 < time.monotonic() - started < 15
