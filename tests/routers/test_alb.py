"""The ALB router against moto in server mode (an emulated AWS API on 127.0.0.1), through the Router API, the real
AWS CLI (its raw rollback command) and bluegreen's CLI. moto emulates the API, not the data plane."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from awsmoto import AlbLab, DataPlane, aws, aws_cli, make_alb_lab, moto_url  # noqa: F401  (fixtures)
from bluegreen.config.routers import AlbRouter as AlbConfig
from bluegreen.errors import TargetError
from bluegreen.routers import make_router
from conftest import free_port

BLUE, GREEN = ["10.0.1.10:8080", "10.0.1.11:8080"], ["10.0.2.10:8080"]
UPSTREAMS = {"blue": BLUE, "green": GREEN}


@pytest.fixture
def lab(aws) -> AlbLab:
    return make_alb_lab()


def router(lab: AlbLab, **fields):
    return make_router(AlbConfig(**lab.config(**fields)), upstreams=UPSTREAMS, state_dir=Path("/nonexistent"),
                       app="testapp")


def deadline() -> float:
    return time.monotonic() + 30


# --- the weights ------------------------------------------------------------------------------------


def test_every_percent_maps_onto_alb_weights_and_back():
    from bluegreen.routers.alb import from_alb, to_alb

    for blue in range(101):
        weights = {"blue": blue, "green": 100 - blue}
        alb = to_alb(weights)
        assert 0 <= min(alb.values()) and max(alb.values()) <= 999
        assert from_alb(alb) == weights, weights
    assert to_alb({"blue": 100, "green": 0}) == {"blue": 999, "green": 0}
    assert from_alb({"blue": 998, "green": 1}) == {"blue": 99, "green": 1}  # any share reads as at least 1 %
    assert from_alb({"blue": 0, "green": 0}) is None


def test_config_takes_one_arn_and_needs_url(tmp_path):
    groups = {"blue": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/b/1",
              "green": "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/g/2"}
    listener = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/web/1/2"
    assert AlbConfig(kind="alb", listener_arn=listener, target_groups=groups).aws_region == "eu-west-1"
    with pytest.raises(ValidationError, match="exactly one of listener_arn and rule_arn"):
        AlbConfig(kind="alb", target_groups=groups)
    with pytest.raises(ValidationError, match="two target groups"):
        AlbConfig(kind="alb", listener_arn=listener, target_groups={"blue": groups["blue"], "green": groups["blue"]})
    from bluegreen.config import load_config
    from bluegreen.errors import ConfigError

    path = tmp_path / "bluegreen.yml"
    path.write_text(f"""app: web
environments:
  prod:
    target:
      kind: local
      command: ["true"]
      ports: {{blue: 9001, green: 9002}}
      router: {{kind: alb, listener_arn: "{listener}", target_groups: {json.dumps(groups)}}}
""")
    with pytest.raises(ConfigError, match="url: router kind alb has no address of its own") as error:
        load_config(path)
    assert "\n" not in str(error.value)


# --- the Router API against moto --------------------------------------------------------------------


def test_first_deploy_switch_and_rollback(lab):
    lab.register("blue", *BLUE)
    lab.register("green", *GREEN)
    alb = router(lab)
    assert alb.read() is None  # a fixed response: nothing live yet
    assert alb.prepare() is None
    alb.switch("blue", deadline())
    assert alb.read() == {"blue": 100, "green": 0} and alb.live() == "blue"
    assert lab.weights(lab.default_actions()) == {"blue": 999, "green": 0}
    alb.check()
    alb.switch("green", deadline())
    assert alb.read() == {"blue": 0, "green": 100}
    assert lab.weights(lab.default_actions()) == {"blue": 0, "green": 999}
    alb.switch("blue", deadline())  # the rollback
    assert alb.live() == "blue" and alb.state().serving


def test_a_listener_forwarding_to_one_group_reads_as_that_colour(lab):
    lab.elb.modify_listener(ListenerArn=lab.listener_arn,
                            DefaultActions=[{"Type": "forward", "TargetGroupArn": lab.groups["green"]}])
    assert router(lab).read() == {"blue": 0, "green": 100}


def test_canary_weights_read_back(lab):
    lab.register("blue", *BLUE)
    lab.register("green", *GREEN)
    alb = router(lab, stickiness="10m")
    alb.switch("blue", deadline())
    for step in (1, 10, 25, 50, 100):
        alb.set_weights({"blue": 100 - step, "green": step}, deadline())
        assert alb.read() == {"blue": 100 - step, "green": step}
    assert lab.default_actions()[-1]["ForwardConfig"]["TargetGroupStickinessConfig"] == {
        "Enabled": True, "DurationSeconds": 600}
    lab.elb.modify_listener(ListenerArn=lab.listener_arn, DefaultActions=[{"Type": "forward", "ForwardConfig": {
        "TargetGroups": [{"TargetGroupArn": lab.groups["blue"], "Weight": 3},
                         {"TargetGroupArn": lab.groups["green"], "Weight": 1}]}}])  # by hand, relative weights
    assert alb.read() == {"blue": 75, "green": 25}


def test_an_unhealthy_new_target_group_is_refused_and_live_is_untouched(lab):
    lab.register("blue", *BLUE)
    alb = router(lab)
    alb.switch("blue", deadline())
    with pytest.raises(TargetError, match=r"no registered targets") as empty:
        alb.switch("green", deadline())
    assert "live routing is unchanged (all to blue)" in str(empty.value)
    lab.register("green", *GREEN)
    instance = lab.stopped_instance("green")  # moto: a stopped instance is `unused` (Target.InvalidState)
    with pytest.raises(TargetError) as unhealthy:
        alb.set_weights({"blue": 90, "green": 10}, deadline())
    message = str(unhealthy.value)
    assert f"{lab.name}-green (green): 1 of 2 targets not healthy: {instance}:80 unused" in message, message
    assert "\n" not in message
    assert alb.read() == {"blue": 100, "green": 0}
    assert lab.weights(lab.default_actions()) == {"blue": 999, "green": 0}
    # rollback to a colour that keeps its share (blue) is not held back by green's health
    alb.switch("blue", deadline())


def test_a_rule_of_a_shared_alb(lab):
    lab.register("blue", *BLUE)
    lab.register("green", *GREEN)
    rule = lab.host_rule("app.example.com")
    alb = router(lab, rule_arn=rule)
    assert alb.read() is None
    alb.switch("green", deadline())
    assert alb.read() == {"blue": 0, "green": 100}
    assert lab.weights(lab.rule_actions(rule)) == {"blue": 0, "green": 999}
    assert lab.default_actions()[0]["Type"] == "fixed-response"  # the listener's own default is not ours
    conditions = lab.elb.describe_rules(RuleArns=[rule])["Rules"][0]["Conditions"]
    assert conditions[0]["Values"] == ["app.example.com"] or conditions[0]["HostHeaderConfig"]["Values"] == [
        "app.example.com"]
    assert "modify-rule --rule-arn" in alb.raw_switch_command("blue")


def test_register_puts_each_colours_addresses_into_its_group_once(lab):
    alb = router(lab, register=True)
    note = alb.prepare()
    assert note and "10.0.1.10:8080, 10.0.1.11:8080 into" in note and "10.0.2.10:8080 into" in note
    assert alb.prepare() is None  # idempotent: nothing new
    ids = {t["Target"]["Id"] for t in lab.elb.describe_target_health(
        TargetGroupArn=lab.groups["blue"])["TargetHealthDescriptions"]}
    assert ids == {"10.0.1.10", "10.0.1.11"}


def test_a_garbled_forward_is_reported_not_guessed(lab):
    other = lab.elb.create_target_group(Name=f"{lab.name}-x", Protocol="HTTP", Port=80, VpcId=lab.vpc,
                                        TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
    lab.elb.modify_listener(ListenerArn=lab.listener_arn, DefaultActions=[{"Type": "forward", "TargetGroupArn": other}])
    state = router(lab).state()
    assert f"forwards to target group {lab.name}-x, neither colour's" in state.unreadable


def test_errors_are_one_line(lab, monkeypatch):
    missing = lab.listener_arn[:-4] + "dead"
    alb = make_router(AlbConfig(**{**lab.config(), "listener_arn": missing}), upstreams=UPSTREAMS,
                      state_dir=Path("/nonexistent"), app="testapp")
    with pytest.raises(TargetError, match=r"ListenerNotFound"):
        alb.read()
    assert "ListenerNotFound" in (alb.reachable() or "")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    with pytest.raises(TargetError, match=r"^no AWS credentials found: set AWS_ACCESS_KEY_ID"):
        router(lab).read()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    closed = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
    with pytest.raises(TargetError, match=rf"cannot reach http://127.0.0.1:{closed}") as unreachable:
        router(lab, timeout=2).read()
    assert "\n" not in str(unreachable.value)


# --- the real AWS CLI runs the raw rollback command --------------------------------------------------


def test_the_raw_rollback_command_switches_back_with_the_aws_cli(lab, aws):
    command_line = aws_cli()
    lab.register("blue", *BLUE)
    lab.register("green", *GREEN)
    alb = router(lab, stickiness=60)
    alb.switch("blue", deadline())
    command = alb.raw_switch_command("blue")
    assert command.startswith("aws elbv2 --region us-east-1 modify-listener --listener-arn arn:aws:")
    alb.switch("green", deadline())
    argv = shlex.split(command)
    argv[0:1] = [command_line, "--endpoint-url", aws["AWS_ENDPOINT_URL"]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", **aws})
    assert done.returncode == 0, done.stderr
    assert alb.read() == {"blue": 100, "green": 0}
    assert lab.default_actions()[-1]["ForwardConfig"]["TargetGroupStickinessConfig"]["DurationSeconds"] == 60


# --- bluegreen's CLI: the local runtime's colours behind a moto ALB ----------------------------------


@pytest.fixture
def alb_env(local_env, lab, aws):
    plane = DataPlane(lab)
    local_env.environ.update(aws)
    local_env.write(test_suite="")
    text = local_env.config.read_text()
    old = f'router: {{listen: "127.0.0.1:{local_env.proxy_port}"}}'
    assert old in text and "\n    target:\n" in text
    routed = json.dumps(lab.config(register=True))
    local_env.config.write_text(text.replace(old, f"router: {routed}").replace(
        "\n    target:\n", f"\n    url: {plane.url}\n    target:\n"))
    local_env.plane, local_env.lab = plane, lab
    yield local_env
    plane.close()


def test_the_cli_deploys_switches_and_rolls_back_the_alb(alb_env):
    first = alb_env.cli("deploy", "--version", "1")
    assert first.returncode == 0, first.stderr
    assert alb_env.plane.version() == "1" and alb_env.report()["live_colour"] == "blue"
    second = alb_env.cli("deploy", "--version", "2")
    assert second.returncode == 0, second.stderr
    assert alb_env.plane.version() == "2"
    assert alb_env.lab.weights(alb_env.lab.default_actions()) == {"blue": 0, "green": 999}
    status = alb_env.cli("status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["live"] == "green", status.stderr
    report = alb_env.report()
    assert "aws elbv2 --region us-east-1 modify-listener" in json.dumps(report)
    back = alb_env.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert alb_env.plane.version() == "1"
    # green's targets made unhealthy: the next deploy (to green) is refused, live untouched, exit 1
    alb_env.lab.elb.deregister_targets(TargetGroupArn=alb_env.lab.groups["green"], Targets=[
        t["Target"] for t in alb_env.lab.elb.describe_target_health(
            TargetGroupArn=alb_env.lab.groups["green"])["TargetHealthDescriptions"]])
    alb_env.lab.stopped_instance("green")
    config = alb_env.config.read_text().replace('"register": true', '"register": false')
    alb_env.config.write_text(config)
    refused = alb_env.cli("deploy", "--version", "3")
    assert refused.returncode == 1, refused.stderr
    assert "Traceback" not in refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("deploy failed: router alb"), refused.stderr
    assert "not healthy" in line and "unused" in line and "live routing is unchanged" in line, line
    assert alb_env.plane.version() == "1"


def test_the_servers_target_takes_an_alb(tmp_path):
    """A router that is not a proxy has no manage or listen: the servers target neither injects nor checks them."""
    from bluegreen.config import load_config

    path = tmp_path / "bluegreen.yml"
    path.write_text("""app: web
environments:
  prod:
    url: https://web.example.com
    target:
      kind: servers
      hosts: [10.0.0.1, 10.0.0.2]
      router_host: 10.0.0.9
      ports: {blue: 9001, green: 9002}
      ssh: {user: deploy, known_hosts: /dev/null}
      run: {mode: command, start: "true", stop: "true"}
      router:
        kind: alb
        listener_arn: arn:aws:elasticloadbalancing:eu-west-1:123456789012:listener/app/web/1/2
        target_groups:
          blue: arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-blue/1
          green: arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web-green/2
        register: true
""")
    router = load_config(path, "prod").target.router
    assert router.kind == "alb" and router.register_targets and not hasattr(router, "manage")


def test_credentials_from_a_profile_or_a_web_identity(lab, monkeypatch, tmp_path):
    """The ways AWS users give credentials beside the AWS_* keys: AWS_PROFILE, and the web identity (OIDC) that
    aws-actions/configure-aws-credentials leaves (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE; moto answers STS)."""
    lab.register("blue", *BLUE)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    credentials = tmp_path / "credentials"
    credentials.write_text("[deployer]\naws_access_key_id = fromprofile\naws_secret_access_key = fromprofile\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_PROFILE", "deployer")
    router(lab).switch("blue", deadline())
    monkeypatch.delenv("AWS_PROFILE")
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2lnbmF0dXJl")  # any token: moto does not verify it
    monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/deploy")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token))
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "bluegreen-ci")
    assert router(lab).read() == {"blue": 100, "green": 0}


def test_the_aws_credentials_in_the_environment_are_secrets(monkeypatch):
    """The action and the component take AWS credentials from the environment (configure-aws-credentials, masked
    CI variables): the values are on the redaction list of every run whose router reads them."""
    from bluegreen.config.routers import AlbRouter, Route53Router
    from bluegreen.config.secrets import secret_values

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "FwoGZXIvYXdzEXAMPLETOKEN")
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012"
    alb = AlbRouter(kind="alb", listener_arn=f"{arn}:listener/app/shop/1/2",
                    target_groups={"blue": f"{arn}:targetgroup/b/1", "green": f"{arn}:targetgroup/g/2"})
    route53 = Route53Router(kind="route53", hosted_zone_id="Z123EXAMPLE", record_name="shop.example.com")
    for model in (alb, route53):
        assert {"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "FwoGZXIvYXdzEXAMPLETOKEN"} <= set(secret_values(model))
