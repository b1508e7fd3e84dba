"""The AWS routers' test support: moto in server mode on 127.0.0.1 (PyPI moto[server]), the environment an AWS
user gives (dummy credentials, AWS_ENDPOINT_URL at moto, no config files, no instance metadata), and an ALB lab
(VPC, subnets, load balancer, listener, one target group per colour) built with boto3 against it.

moto emulates the AWS API, not the data plane: nothing forwards requests to the targets.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from conftest import Forwarder, free_port


def require(module: str) -> None:
    """Skip on a developer's machine without the aws/test extras; fail where CI promised them."""
    try:
        __import__(module)
    except ImportError:
        reason = f"{module} is not installed (pip install -e '.[aws,test]')"
        if os.environ.get("BLUEGREEN_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{reason} (BLUEGREEN_REQUIRE_TOOLS=1)")
        pytest.skip(reason)


def aws_cli() -> str:
    """The real AWS CLI (PyPI awscli, in the test extra) beside this Python, else on PATH."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).with_name("aws")
    found = str(beside) if beside.exists() else shutil.which("aws")
    if not found:
        reason = "the AWS CLI is not installed (pip install -e '.[test]': PyPI awscli)"
        if os.environ.get("BLUEGREEN_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{reason} (BLUEGREEN_REQUIRE_TOOLS=1)")
        pytest.skip(reason)
    return found


REGION = "us-east-1"
# What an AWS user's environment holds, with nothing of this machine's own (no ~/.aws, no instance metadata).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
}


@pytest.fixture(scope="module")
def moto_url():
    """moto's server in a thread of this process, on a loopback port; stopped after the module."""
    require("boto3")
    require("moto.server")
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_url, monkeypatch) -> dict[str, str]:
    """This process's AWS environment pointed at moto; returned for the subprocesses (CLI, aws) to use too."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": moto_url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def client(service: str, endpoint: str | None = None) -> Any:
    import boto3

    return boto3.session.Session().client(service, region_name=REGION, endpoint_url=endpoint)


@dataclass
class AlbLab:
    """One ALB with a listener (a fixed response until the first release) and the colours' target groups."""

    elb: Any
    ec2: Any
    vpc: str
    subnets: list[str]
    listener_arn: str
    groups: dict[str, str]
    name: str
    rules: list[str] = field(default_factory=list)

    def register(self, colour: str, *targets: str) -> None:
        """host:port targets (an IP target group's)."""
        self.elb.register_targets(TargetGroupArn=self.groups[colour], Targets=[
            {"Id": t.rpartition(":")[0], "Port": int(t.rpartition(":")[2])} for t in targets])

    def stopped_instance(self, colour: str) -> str:
        """An EC2 instance registered into the colour's group and then stopped: moto reports it `unused`."""
        image = self.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        instance = self.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, SubnetId=self.subnets[0])
        instance_id = instance["Instances"][0]["InstanceId"]
        self.elb.register_targets(TargetGroupArn=self.groups[colour], Targets=[{"Id": instance_id, "Port": 80}])
        self.ec2.stop_instances(InstanceIds=[instance_id])
        return instance_id

    def default_actions(self) -> list[dict]:
        return self.elb.describe_listeners(ListenerArns=[self.listener_arn])["Listeners"][0]["DefaultActions"]

    def rule_actions(self, rule_arn: str) -> list[dict]:
        return self.elb.describe_rules(RuleArns=[rule_arn])["Rules"][0]["Actions"]

    def weights(self, actions: list[dict]) -> dict[str, int]:
        """The raw ALB weights per colour."""
        colour = {arn: c for c, arn in self.groups.items()}
        return {colour[g["TargetGroupArn"]]: g["Weight"] for g in actions[-1]["ForwardConfig"]["TargetGroups"]}

    def host_rule(self, host: str, priority: int = 10) -> str:
        """A rule of the shared listener for one host name, forwarding to an unrelated target group at first."""
        other = self.elb.create_target_group(Name=f"{self.name}-other{priority}", Protocol="HTTP", Port=80,
                                             VpcId=self.vpc, TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
        rule = self.elb.create_rule(ListenerArn=self.listener_arn, Priority=priority,
                                    Conditions=[{"Field": "host-header", "Values": [host]}],
                                    Actions=[{"Type": "fixed-response", "FixedResponseConfig": {
                                        "StatusCode": "503", "ContentType": "text/plain"}}])["Rules"][0]
        self.rules.append(other)
        return rule["RuleArn"]

    def config(self, **fields: Any) -> dict[str, Any]:
        arn = {"rule_arn": fields.pop("rule_arn")} if "rule_arn" in fields else {"listener_arn": self.listener_arn}
        return {"kind": "alb", **arn, "target_groups": dict(self.groups), **fields}


def make_alb_lab() -> AlbLab:
    elb, ec2 = client("elbv2"), client("ec2")
    name = "a" + uuid.uuid4().hex[:8]
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")
               ["Subnet"]["SubnetId"] for i, zone in ((1, "a"), (2, "b"))]
    lb = elb.create_load_balancer(Name=name, Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
    groups = {c: elb.create_target_group(Name=f"{name}-{c}", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="ip")
              ["TargetGroups"][0]["TargetGroupArn"] for c in ("blue", "green")}
    listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[
        {"Type": "fixed-response", "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain",
                                                           "MessageBody": "no release yet"}}])
    return AlbLab(elb, ec2, vpc, subnets, listener["Listeners"][0]["ListenerArn"], groups, name)


class DataPlane(Forwarder):
    """What moto lacks: the ALB's data plane, on a loopback port. Each request reads the listener's forward action
    and the target group's registered targets from moto (the API bluegreen wrote), and is proxied to one of them."""

    def __init__(self, lab: AlbLab) -> None:
        import random

        def route() -> str | None:
            action = lab.elb.describe_listeners(ListenerArns=[lab.listener_arn])["Listeners"][0]["DefaultActions"][-1]
            groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
            if not groups or not sum(g["Weight"] for g in groups):
                return None
            group = random.choices(groups, weights=[g["Weight"] for g in groups])[0]["TargetGroupArn"]
            targets = [t["Target"] for t in lab.elb.describe_target_health(TargetGroupArn=group)[
                "TargetHealthDescriptions"] if t["TargetHealth"]["State"] == "healthy"]
            target = random.choice(targets)
            return f"http://{target['Id']}:{target['Port']}"

        super().__init__(route, unavailable=b"no release yet\n")

    def version(self) -> str:
        import httpx

        return httpx.get(self.url + "/version", timeout=10).text.strip()
