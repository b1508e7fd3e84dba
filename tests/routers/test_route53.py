"""The Route 53 router against moto in server mode: weighted records switched by one ChangeBatch, INSYNC awaited,
canary weights read back, one TTL on both records, and the raw rollback run by the real AWS CLI."""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from awsmoto import aws, aws_cli, client, moto_url  # noqa: F401  (fixtures)
from bluegreen.config.routers import Route53Router as Route53Config
from bluegreen.errors import TargetError
from bluegreen.routers import make_router

UPSTREAMS = {"blue": ["10.0.1.10:8080", "10.0.1.11:8080"], "green": ["10.0.2.10:8080"]}


@pytest.fixture
def zone(aws) -> tuple[object, str]:
    route53 = client("route53")
    name = f"z{uuid.uuid4().hex[:8]}.example.com"
    zone_id = route53.create_hosted_zone(Name=name, CallerReference=name)["HostedZone"]["Id"]
    return route53, zone_id, name


def router(zone, **fields):
    _, zone_id, name = zone
    config = Route53Config(**{"kind": "route53", "hosted_zone_id": zone_id, "record_name": f"{{app}}.{name}",
                              **fields})
    return make_router(config, upstreams=UPSTREAMS, state_dir=Path("/nonexistent"), app="web")


def records(zone) -> dict[str, dict]:
    route53, zone_id, name = zone
    found = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return {r["SetIdentifier"]: r for r in found if r["Name"] == f"web.{name}." and "SetIdentifier" in r}


def deadline() -> float:
    return time.monotonic() + 30


def test_switch_and_rollback(zone):
    dns = router(zone, ttl=30)
    assert dns.read() is None and dns.check() is None and dns.cache_ttl() == 30.0
    dns.switch("blue", deadline())
    assert dns.read() == {"blue": 100, "green": 0}
    found = records(zone)
    assert found["web-blue"]["Weight"] == 255 and found["web-green"]["Weight"] == 0
    assert [v["Value"] for v in found["web-blue"]["ResourceRecords"]] == ["10.0.1.10", "10.0.1.11"]
    dns.switch("green", deadline())
    assert dns.live() == "green" and records(zone)["web-green"]["Weight"] == 255
    dns.switch("blue", deadline())  # the rollback
    assert dns.live() == "blue" and dns.state().serving


def test_canary_weights_read_back_and_the_ttl_is_kept_equal(zone):
    route53, zone_id, name = zone
    dns = router(zone, ttl=60, values={"blue": ["192.0.2.1"], "green": ["192.0.2.2"]})
    dns.switch("blue", deadline())
    for step in (1, 5, 10, 25, 50, 100):
        dns.set_weights({"blue": 100 - step, "green": step}, deadline())
        assert dns.read() == {"blue": 100 - step, "green": step}
        assert {r["TTL"] for r in records(zone).values()} == {60}
    # someone set a different TTL on one record: noted before the switch, and the switch writes one TTL to both
    blue = records(zone)["web-blue"]
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {**blue, "TTL": 3600}}]})
    assert "TTL is 60, 3600 s; the switch sets 60 s on both" in (dns.check() or "")
    dns.switch("blue", deadline())
    assert {r["TTL"] for r in records(zone).values()} == {60}


def test_weights_are_validated_by_us_and_a_foreign_record_is_reported(zone):
    from bluegreen.routers.aws import percent, scaled

    for blue in range(101):
        weights = {"blue": blue, "green": 100 - blue}
        assert max(scaled(weights, 255).values()) <= 255 and percent(scaled(weights, 255)) == weights
    route53, zone_id, name = zone
    dns = router(zone)
    dns.switch("green", deadline())
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [
        {"Action": "UPSERT", "ResourceRecordSet": {
            "Name": f"web.{name}.", "Type": "A", "SetIdentifier": "old-lb", "Weight": 10, "TTL": 60,
            "ResourceRecords": [{"Value": "192.0.2.9"}]}}]})
    assert "the record 'old-lb' answers too, neither colour's" in dns.state().unreadable


def test_values_are_checked_against_the_record_type(zone):
    with pytest.raises(TargetError, match=r"'10.0.1.10' is not an IPv6 address for an AAAA record"):
        router(zone, record_type="AAAA")
    with pytest.raises(TargetError, match="a CNAME names one target, not 2"):
        router(zone, record_type="CNAME")
    dns = router(zone, record_type="CNAME", values={"blue": ["blue-lb.example.net"], "green": ["green-lb.example.net"]})
    dns.switch("green", deadline())
    assert dns.read() == {"blue": 0, "green": 100}


def test_a_missing_zone_is_one_line(zone):
    dns = router(zone, hosted_zone_id="NOSUCHZONE123")
    with pytest.raises(TargetError, match=r"NoSuchHostedZone") as error:
        dns.read()
    assert "\n" not in str(error.value)


def test_the_raw_rollback_command_switches_back_with_the_aws_cli(zone, aws):
    command_line = aws_cli()
    dns = router(zone)
    dns.switch("blue", deadline())
    command = dns.raw_switch_command("blue")
    assert command.startswith("aws route53 change-resource-record-sets --hosted-zone-id ")
    dns.switch("green", deadline())
    argv = shlex.split(command)
    argv[0:1] = [command_line, "--endpoint-url", aws["AWS_ENDPOINT_URL"]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **aws})
    assert done.returncode == 0, done.stderr
    assert dns.read() == {"blue": 100, "green": 0}
