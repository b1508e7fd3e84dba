"""The servers target end to end: real OpenSSH hosts (containers from lab.py), a real HAProxy on the load
balancer host, bluegreen run as users run it (`python -m bluegreen`, key and known_hosts from the environment).

Every test of the module shares one lab (two app hosts and a load balancer, command mode); each uses its own
app name and ports, so it has its own HAProxy config, state directory and processes. The docker mode gets a lab
of its own, whose app hosts each run a Docker engine."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import KeptAliveLoad
from github.support import example_image  # noqa: F401  (a fixture: the example app's image)

from .lab import DOCKER_RUN, Host, Lab, Release, get_version, render_haproxy, start_haproxy


def secrets_absent(lab: Lab, *texts: str) -> None:
    key_lines = [line for line in lab.private_key.splitlines() if len(line) > 8 and "PRIVATE KEY" not in line]
    for text in texts:
        for line in key_lines:
            assert line not in text


def fingerprint(host: Host) -> str:
    """SHA256:... of the host's key, as `ssh-keygen -lf` prints it."""
    return host.exec("ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]


def end_to_end_under_load(release: Release) -> None:
    lab = release.lab
    first = release.cli("deploy", "--version", "1")
    assert first.returncode == 0, first.stderr
    assert get_version(lab.lb) == "1" and release.map_entry(lab.lb) == f"{release.app}_blue"
    with KeptAliveLoad(80, host=lab.lb.address) as load:  # clients through the load balancer
        time.sleep(0.5)
        second = release.cli("deploy", "--version", "2", "--report", "report.json")
        assert second.returncode == 0, second.stderr
        assert get_version(lab.lb) == "2"
        time.sleep(0.5)
        back = release.cli("rollback", "--report", "rollback.json")
        assert back.returncode == 0, back.stderr
        assert get_version(lab.lb) == "1"
        time.sleep(0.5)
    print(f"through the load balancer during switch and rollback: {dict(load.served)}, failed {len(load.failures)}")
    assert load.failures == [], load.failures[:5]
    assert load.served["1"] > 20 and load.served["2"] > 20, load.served  # both versions served through the LB
    assert release.map_entry(lab.lb) == f"{release.app}_blue"  # a restart of HAProxy keeps the live colour

    report = json.loads((release.dir / "report.json").read_text())
    checks = [c for c in report["checks"] if c["kind"] == "smoke" and c["target"].startswith("preview")]
    assert sorted(c["target"] for c in checks) == sorted(f"preview {h.ssh_address}" for h in release.hosts)

    status = release.status()  # a fresh process, on another day: everything is read from the servers
    colours = {c["colour"]: c for c in status["colours"]}
    assert status["live"] == "blue" and colours["blue"]["version"] == "1" and colours["green"]["version"] == "2"
    assert colours["blue"]["ready"] and colours["blue"]["replicas"] == len(release.hosts)
    assert status["lock"] is None and [r["action"] for r in status["history"]][:3] == ["rollback", "deploy", "deploy"]
    assert "on " + lab.lb.ssh_address in status["router"]["name"]
    history = json.loads(lab.lb.exec(f"cat {release.state_dir}/history.json").stdout)  # kept on the router host
    assert len(history) == 3
    assert not (release.dir / ".bluegreen").exists()  # nothing on the runner
    secrets_absent(lab, first.stdout + first.stderr, second.stdout + second.stderr, back.stderr,
                   (release.dir / "report.json").read_text(), json.dumps(status))

    # The runbook's command, without bluegreen: OpenSSH's client and the router's own switch on the load balancer.
    raw = json.loads((release.dir / "rollback.json").read_text())["raw_rollback_command"]
    (release.dir / "key").write_text(lab.private_key)
    (release.dir / "key").chmod(0o600)
    (release.dir / "known_hosts").write_text(lab.known_hosts)
    options = f"ssh -i {release.dir / 'key'} -o UserKnownHostsFile={release.dir / 'known_hosts'} -o BatchMode=yes "
    done = subprocess.run(raw.replace("ssh ", options, 1), shell=True, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert get_version(lab.lb) == "2" and release.status()["live"] == "green"


def deploy_held_in_the_test_suite(release: Release, *args: str) -> subprocess.Popen:
    """`deploy --version 2` started with a test suite that sleeps; returns once the lock on the router host says
    the run is in its test suite."""
    release.extra = 'test_suite: {command: ["sleep", "60"], timeout: 90}\n'
    release.write()
    run = release.popen("deploy", "--version", "2", *args)
    deadline = time.monotonic() + 60
    while '"test suite"' not in release.lab.lb.exec(f"cat {release.state_dir}/lock.json 2>/dev/null",
                                                    check=False).stdout:
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.2)
    return run


@pytest.fixture
def release(lab: Lab, tmp_path: Path, request) -> Release:
    name = "t" + request.node.name.split("[")[0].replace("test_", "").replace("_", "")[:20]
    release = Release(lab, tmp_path, name, lab.apps, lab.lb.ssh_address)
    lab.haproxy(lab.lb, lab.apps, release.ports, app=name)
    return release


def test_command_mode_end_to_end_under_load(release: Release):
    end_to_end_under_load(release)


def test_one_host_never_ready_switches_no_host(release: Release):
    lab, app2 = release.lab, release.lab.apps[1]
    assert release.cli("deploy", "--version", "1").returncode == 0
    # Something else holds green's port on app2: the app cannot start there, the health path answers 404.
    app2.exec(f"setsid python3 -m http.server {release.ports['green']} </dev/null >/dev/null 2>&1 &", user="deploy")
    try:
        failed = release.cli("deploy", "--version", "2")
    finally:
        app2.exec(f"pkill -f 'http.server {release.ports['green']}'", check=False)
    assert failed.returncode == 1, failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert "not ready on 1 of 2 hosts" in line and app2.ssh_address in line and lab.apps[0].ssh_address not in line
    assert get_version(lab.lb) == "1" and release.map_entry(lab.lb) == f"{release.app}_blue"
    assert release.status()["live"] == "blue"


def test_wrong_host_key_is_refused_with_its_fingerprint_and_nothing_runs(release: Release):
    lab, app2 = release.lab, release.lab.apps[1]
    stranger = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH4kYbIutrKzlnBUkTBu4p1kqOz8R8ZCVkEV3iMbTk8K"
    release.known_hosts = "".join(
        (h.known_hosts_line(stranger) if h is app2 else h.known_hosts_line()) + "\n" for h in lab.hosts)
    failed = release.cli("deploy", "--version", "1")
    assert failed.returncode == 1, failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert app2.ssh_address in line and fingerprint(app2) in line, line
    for host in lab.apps:  # every host is connected before anything runs
        assert host.exec(f"test -e /tmp/deployed-{release.app}-1", check=False).returncode != 0
    release.known_hosts = "".join(h.known_hosts_line() + "\n" for h in lab.hosts if h is not app2)  # unknown host
    unknown = release.cli("deploy", "--version", "1")
    assert unknown.returncode == 1 and fingerprint(app2) in unknown.stderr, unknown.stderr


def test_the_load_balancer_unreachable_at_switch_time_leaves_live_untouched(release: Release):
    lab = release.lab
    assert release.cli("deploy", "--version", "1").returncode == 0
    # The test suite runs right before the switch: the load balancer vanishes from the network meanwhile.
    # (It runs once per app host: the second finds the load balancer paused already.)
    release.extra = f'test_suite: {{command: "docker pause {lab.lb.container} || true", shell: true, timeout: 30}}\n'
    release.write()
    started = time.monotonic()
    try:
        failed = release.cli("deploy", "--version", "2")
    finally:
        lab.lb.unpause()
    took = time.monotonic() - started
    assert failed.returncode == 1, failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert lab.lb.ssh_address in line and "live" in line, line
    assert get_version(lab.lb) == "1" and release.map_entry(lab.lb) == f"{release.app}_blue"
    assert took < 120, took
    release.extra = ""
    release.write()
    assert release.cli("deploy", "--version", "3").returncode == 0  # the lock of the failed run is not in the way


def test_a_host_unreachable_stops_the_run_naming_it(release: Release):
    lab, app2 = release.lab, release.lab.apps[1]
    assert release.cli("deploy", "--version", "1").returncode == 0
    app2.stop()
    try:
        started = time.monotonic()
        failed = release.cli("deploy", "--version", "2")
        took = time.monotonic() - started
    finally:
        app2.start()
    assert failed.returncode == 1, failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert app2.ssh_address in line and lab.apps[0].ssh_address not in line, line
    assert took < 30, took  # connect_timeout 3s, not a hang
    assert lab.apps[0].exec(f"test -e /tmp/deployed-{release.app}-2", check=False).returncode != 0  # nothing ran
    assert release.map_entry(lab.lb) == f"{release.app}_blue" and get_version(lab.lb) == "1"


def test_a_run_killed_mid_deploy_leaves_a_lock_the_next_run_takes_over(release: Release):
    lab = release.lab
    assert release.cli("deploy", "--version", "1").returncode == 0
    killed = deploy_held_in_the_test_suite(release)
    killed.send_signal(signal.SIGKILL)  # no cleanup at all: the lock stays on the load balancer
    killed.wait(10)
    assert json.loads(lab.lb.exec(f"cat {release.state_dir}/lock.json").stdout)["pid"] == killed.pid
    release.extra = ""
    release.write()
    after = release.cli("deploy", "--version", "3")
    assert after.returncode == 0, after.stderr
    assert "took over the deploy lock" in after.stderr, after.stderr
    assert get_version(lab.lb) == "3"
    history = release.status()["history"]
    assert any(r["detail"] and "interrupted" in r["detail"] for r in history), history


def test_a_proxy_on_every_host_switched_together_with_the_skew_reported(lab: Lab, tmp_path: Path):
    release = Release(lab, tmp_path, "teach", lab.apps, "each",
                      extra=f"    url: http://{lab.apps[0].address}:80\n")
    lab.haproxy_each(lab.apps, release.ports, app=release.app)
    assert release.cli("deploy", "--version", "1").returncode == 0
    done = release.cli("deploy", "--version", "2", "--report", "report.json")
    assert done.returncode == 0, done.stderr
    assert [get_version(h) for h in lab.apps] == ["2", "2"]
    assert [release.map_entry(h) for h in lab.apps] == ["teach_green", "teach_green"]
    switch = next(p for p in json.loads((tmp_path / "report.json").read_text())["phases"] if p["name"].startswith("switch"))
    assert "2 proxies switched; skew" in switch["detail"], switch
    status = release.status()
    assert status["live"] == "green" and status["router"]["serving"]
    assert (lab.apps[0].exec(f"test -d {release.state_dir}", check=False).returncode == 0)  # state on the first host


def test_docker_mode_end_to_end_under_load(lab_factory, example_image: str, tmp_path: Path):
    dlab = lab_factory(apps=2, lb=True, dind=True)
    dlab.load_image(example_image)  # as a registry would have put it there
    release = Release(dlab, tmp_path, "tdocker", dlab.apps, dlab.lb.ssh_address, run=DOCKER_RUN)
    for host in dlab.apps:
        for version in ("1", "2"):
            host.exec(f"docker tag {example_image} tdocker:{version}")
    dlab.haproxy(dlab.lb, dlab.apps, release.ports, app=release.app)
    end_to_end_under_load(release)
    for host in dlab.apps:  # the container of each colour, labelled with its version, on every host's engine
        labels = json.loads(host.exec("docker inspect -f '{{json .Config.Labels}}' tdocker-production-green").stdout)
        assert labels["dev.bluegreen.version"] == "2" and labels["dev.bluegreen.colour"] == "green"


def test_a_cancelled_run_leaves_live_untouched_and_the_lock_free(release: Release):
    lab = release.lab
    assert release.cli("deploy", "--version", "1").returncode == 0
    run = deploy_held_in_the_test_suite(release, "--report", "report.json")
    run.send_signal(signal.SIGTERM)  # GitLab's cancel; GitHub's SIGINT takes the same path
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 1, stderr
    report = json.loads((release.dir / "report.json").read_text())
    assert report["status"] == "cancelled" and report["cancelled_in"] == "test suite", report
    assert lab.lb.exec(f"test -e {release.state_dir}/lock.json", check=False).returncode != 0  # released
    assert get_version(lab.lb) == "1" and release.map_entry(lab.lb) == f"{release.app}_blue"


def test_the_old_colour_is_stopped_on_every_host_and_started_again_by_a_rollback(release: Release):
    lab = release.lab
    release.scale_down_delay = "0.5s"  # waited for in the run (scale_down_wait)
    release.write()
    assert release.cli("deploy", "--version", "1").returncode == 0
    done = release.cli("deploy", "--version", "2")
    assert done.returncode == 0, done.stderr
    blue = next(c for c in release.status()["colours"] if c["colour"] == "blue")
    assert not blue["running"] and blue["replicas"] == 0 and blue["version"] == "1", blue
    for host in lab.apps:  # stopped on every host, its version kept for a rollback
        assert host.exec(f"pgrep -f 'app.py .*[-]-port {release.ports['blue']}'", check=False).returncode != 0
    back = release.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert get_version(lab.lb) == "1"
    assert all(host.exec(f"pgrep -f 'app.py .*[-]-port {release.ports['blue']}'", check=False).returncode == 0 for host in lab.apps)


def test_a_canary_split_on_the_load_balancer_then_promoted(release: Release):
    lab = release.lab
    release.extra = "strategy: canary\ncanary: {steps: [{weight: 50, pause: until promoted}]}\n"
    release.write()
    assert release.cli("deploy", "--version", "1").returncode == 0  # a first release goes out whole
    paused = release.cli("deploy", "--version", "2", "--report", "report.json")
    assert paused.returncode == 0, paused.stderr
    assert json.loads((release.dir / "report.json").read_text())["status"] == "paused"
    answers = Counter(get_version(lab.lb) for _ in range(200))
    assert set(answers) == {"1", "2"} and 60 <= answers["2"] <= 140, answers  # about half, through both hosts
    promoted = release.cli("promote")
    assert promoted.returncode == 0, promoted.stderr
    assert {get_version(lab.lb) for _ in range(20)} == {"2"}
    assert release.status()["live"] == "green"


def test_a_proxy_that_refuses_the_switch_sends_the_others_back(lab: Lab, tmp_path: Path):
    release = Release(lab, tmp_path, "trefuse", lab.apps, "each", extra=f"    url: http://{lab.apps[0].address}:80\n")
    lab.haproxy_each(lab.apps, release.ports, app=release.app)
    assert release.cli("deploy", "--version", "1").returncode == 0
    app2 = lab.apps[1]
    app2.exec("chmod g-w /etc/haproxy /etc/haproxy/bluegreen.map")  # app2's map file cannot be written
    try:
        failed = release.cli("deploy", "--version", "2")
    finally:
        app2.exec("chmod g+w /etc/haproxy /etc/haproxy/bluegreen.map")
    assert failed.returncode == 1, failed.stderr
    line = failed.stderr.strip().splitlines()[-1]
    assert f"the switch failed on {app2.ssh_address}" in line and f"switched {lab.apps[0].ssh_address} back" in line
    assert [get_version(h) for h in lab.apps] == ["1", "1"]  # never left half-switched
    assert [release.map_entry(h) for h in lab.apps] == ["trefuse_blue", "trefuse_blue"]


MAINTENANCE_PAGE = ("import http.server as h\n"
                    "class H(h.BaseHTTPRequestHandler):\n"
                    "    def do_GET(self): self.send_response(503); self.send_header('Content-Length', '0'); self.end_headers()\n"
                    "h.HTTPServer(('', 8300), H).serve_forever()\n")


def test_verification_goes_through_url_not_the_load_balancers_own_address(release: Release):
    """The router's address on the load balancer (router.listen :8300) answers 503 to everything; users reach the
    app at `url` (HAProxy's :80 there). Verification believes `url`; `verify.url` sends it back to :8300."""
    lab = release.lab
    lab.lb.exec(f"nohup python3 -c \"{MAINTENANCE_PAGE}\" >/dev/null 2>&1 &")
    try:
        deadline = time.monotonic() + 10
        while lab.lb.exec("python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8300), 1)\"",
                          check=False).returncode != 0:
            assert time.monotonic() < deadline, "the maintenance page on the load balancer did not start"
            time.sleep(0.2)
        release.listen = ":8300"
        release.extra = f"    url: http://{lab.lb.address}\n"
        release.write()
        for version in ("1", "2"):
            done = release.cli("deploy", "--version", version, "--report", "report.json")
            assert done.returncode == 0, done.stderr
            assert get_version(lab.lb) == version
        report = json.loads((release.dir / "report.json").read_text())
        assert report["live_url"] == f"http://{lab.lb.address}"

        release.extra += f"    verify: {{window: 1, url: 'http://{lab.lb.address}:8300'}}\n"
        release.write()
        done = release.cli("deploy", "--version", "3", "--report", "report.json")
        assert done.returncode == 4, done.stderr  # verify.url answers 503: switched back
        reason = json.loads((release.dir / "report.json").read_text())["reason"]
        assert f"through http://{lab.lb.address}:8300" in reason and "status 503" in reason, reason
        assert get_version(lab.lb) == "2"
    finally:
        lab.lb.exec("pkill -f 'serve_forever' || true", check=False)


def test_each_colour_on_hosts_of_its_own(lab: Lab, tmp_path: Path):
    """hosts: {blue: [app1], green: [app2]}: each colour runs only on its hosts (its own addresses, as a DNS
    record needs), the load balancer's backends name them, and a rollback goes back to the other host."""
    app1, app2 = lab.apps
    release = Release(lab, tmp_path, "tpercolour", lab.apps, lab.lb.ssh_address)
    text = (tmp_path / "bluegreen.yml").read_text()
    shared = f"hosts: [{app1.ssh_address}, {app2.ssh_address}]"
    assert shared in text
    (tmp_path / "bluegreen.yml").write_text(
        text.replace(shared, f"hosts: {{blue: [{app1.ssh_address}], green: [{app2.ssh_address}]}}"))
    config = render_haproxy(release.app, 80, release.ports, [(h.name, h.address) for h in lab.apps])
    ports = release.ports
    for host, port in ((app2, ports["blue"]), (app1, ports["green"])):  # each backend: only its colour's host
        line = f"    server {host.name} {host.address}:{port}\n"
        assert line in config, config
        config = config.replace(line, "")
    start_haproxy(lab.lb, config)

    for version in ("1", "2"):
        done = release.cli("deploy", "--version", version)
        assert done.returncode == 0, done.stderr
        assert get_version(lab.lb) == version
    status = release.status()
    colours = {c["colour"]: c for c in status["colours"]}
    assert colours["blue"]["replicas"] == 1 and app1.ssh_address in colours["blue"]["detail"]
    assert app2.ssh_address not in colours["blue"]["detail"]
    assert colours["green"]["replicas"] == 1 and app2.ssh_address in colours["green"]["detail"]
    assert app1.ssh_address not in colours["green"]["detail"]
    assert status["live"] == "green"
    back = release.cli("rollback")
    assert back.returncode == 0, back.stderr
    assert get_version(lab.lb) == "1" and release.status()["live"] == "blue"
