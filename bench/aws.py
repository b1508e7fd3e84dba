#!/usr/bin/env python3
"""The AWS routers' switch against moto in server mode: how long bluegreen's switch takes through the API.

    .venv/bin/python bench/aws.py [--switches 40]

moto (PyPI moto[server]) on a loopback port, an ALB (VPC, two subnets, listener, a target group per colour with
one registered target each) and a hosted zone built with boto3; then --switches switches back and forth through
the Router API. An ALB switch is: read the listener, check the new colour's target health, one modify_listener,
read back; a Route 53 switch: one ChangeBatch, GetChange until INSYNC, read back. moto emulates the API, not the
data plane: this times the API round trips and bluegreen's own work, not AWS's propagation.

Only 127.0.0.1, dummy credentials; moto runs in a thread of this process and stops with it.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=40)
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    import boto3
    from moto.server import ThreadedMotoServer

    from bluegreen.config.routers import AlbRouter, Route53Router
    from bluegreen.routers import make_router

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                      AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE="/nonexistent",
                      AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}")
    try:
        elb, ec2, route53 = (boto3.client(s) for s in ("elbv2", "ec2", "route53"))
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"us-east-1{z}")
                   ["Subnet"]["SubnetId"] for i, z in ((1, "a"), (2, "b"))]
        lb = elb.create_load_balancer(Name="bench", Subnets=subnets)["LoadBalancers"][0]["LoadBalancerArn"]
        groups = {c: elb.create_target_group(Name=f"bench-{c}", Protocol="HTTP", Port=80, VpcId=vpc,
                                             TargetType="ip")["TargetGroups"][0]["TargetGroupArn"] for c in ("blue", "green")}
        listener = elb.create_listener(LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[
            {"Type": "forward", "TargetGroupArn": groups["blue"]}])["Listeners"][0]["ListenerArn"]
        upstreams = {"blue": ["10.0.1.10:8080"], "green": ["10.0.2.10:8080"]}
        for colour, (target,) in upstreams.items():
            host, _, tport = target.rpartition(":")
            elb.register_targets(TargetGroupArn=groups[colour], Targets=[{"Id": host, "Port": int(tport)}])
        zone = route53.create_hosted_zone(Name="bench.example.com", CallerReference="bench")["HostedZone"]["Id"]
        routers = {
            "alb": AlbRouter(kind="alb", listener_arn=listener, target_groups=groups),
            "route53": Route53Router(kind="route53", hosted_zone_id=zone, record_name="app.bench.example.com"),
        }
        for name, config in routers.items():
            router = make_router(config, upstreams=upstreams, state_dir=Path("/nonexistent"), app="bench")
            router.switch("blue", time.monotonic() + 30)
            times = []
            for i in range(args.switches):
                started = time.perf_counter()
                router.switch("green" if i % 2 == 0 else "blue", time.monotonic() + 30)
                times.append((time.perf_counter() - started) * 1000)
            print(f"{name}: {args.switches} switches against moto: median {statistics.median(times):.1f} ms, "
                  f"max {max(times):.1f} ms")
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
