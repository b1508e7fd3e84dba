"""The test hosts themselves: a host's own Docker engine (run.mode docker) driven over SSH, and the HAProxy of
examples/servers/haproxy.cfg on the load balancer, switched and split through its Runtime API."""

from __future__ import annotations

import time

import httpx

from bluegreen.ssh import SSHPool
from github.support import example_image  # noqa: F401  (the session fixture: bluegreen-example:base)

from .lab import HAPROXY_MAP, HAPROXY_SOCKET, Lab
from .test_ssh import haproxy_api, wait_listening


def wait_for(url: str, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_docker_host_runs_the_example_image_published_on_its_address(lab_factory, example_image: str) -> None:
    lab: Lab = lab_factory(apps=2, lb=False, dind=True)
    started = time.monotonic()
    lab.load_image(example_image)
    loaded = time.monotonic() - started
    with SSHPool(lab.login()) as pool:
        def run_blue(host):
            return host.run(f"docker run -d --name blue -p 8081:8000 {example_image} --version v7 --colour blue")

        results = pool.each([h.ssh_address for h in lab.apps], run_blue)
        assert all(r.ok for r in results.values()), results
        for app in lab.apps:  # inner containers publish on the host container's address
            assert wait_for(f"http://{app.address}:8081/version").text.strip() == "v7"
        host = pool.host(lab.apps[0].ssh_address)
        assert host.run("docker inspect -f '{{.State.Running}}' blue").stdout.strip() == "true"
        wait_listening(host, "127.0.0.1", 8081)  # and on the host's own 127.0.0.1 (router_host: each)
    assert loaded < 60, loaded


def test_the_example_haproxy_config_switches_and_splits_over_every_app_host(lab: Lab) -> None:
    ports = {"blue": 8091, "green": 8092}
    lab.haproxy(lab.lb, lab.apps, ports, app="shop")
    for app in lab.apps:
        for colour, version in (("blue", "v1"), ("green", "v2")):
            app.exec(f"nohup python3 /opt/example/app.py --host 0.0.0.0 --port {ports[colour]} --version {version} "
                     f"--colour {colour} >/dev/null 2>&1 &", user="deploy")
    with SSHPool(lab.login()) as pool:
        lb = pool.host(lab.lb.ssh_address)
        for app in lab.apps:
            for port in ports.values():
                wait_listening(lb, app.address, port)
        admin = lb.dial_unix(HAPROXY_SOCKET)
        url = "http://%s:%d/version" % lb.dial_tcp("127.0.0.1", 80)

        def versions(n: int = 40) -> dict[str, int]:
            seen: dict[str, int] = {}
            with httpx.Client() as client:
                for _ in range(n):
                    version = client.get(url, timeout=5).text.strip()
                    seen[version] = seen.get(version, 0) + 1
            return seen

        assert httpx.get(url, timeout=5).status_code == 503
        assert haproxy_api(admin, f"add map {HAPROXY_MAP} shop shop_blue").strip() == ""
        assert versions() == {"v1": 40}
        assert haproxy_api(admin, f"set map {HAPROXY_MAP} shop shop_green").strip() == ""
        assert versions() == {"v2": 40}
        for colour, weight in (("blue", 50), ("green", 50)):
            assert haproxy_api(admin, f"set server shop_split/{colour} weight {weight}").strip() == ""
        assert haproxy_api(admin, f"set map {HAPROXY_MAP} shop shop_split").strip() == ""
        split = versions()
        assert set(split) == {"v1", "v2"} and min(split.values()) >= 10, split
        # every app host serves its colour: the blue backend lists both
        stat = haproxy_api(admin, "show stat")
        assert {f"shop_blue,{app.name}" for app in lab.apps} <= {",".join(line.split(",")[:2])
                                                                  for line in stat.splitlines()}


def test_deploy_can_write_the_map_file_and_its_folder_and_the_state_dir(lab: Lab) -> None:
    lb, user = lab.lb, "deploy"
    lb.exec(f"echo 'x y' > {HAPROXY_MAP}.tmp && mv {HAPROXY_MAP}.tmp {HAPROXY_MAP}", user=user)
    lb.exec(f"printf '' > {HAPROXY_MAP}", user=user)
    lb.exec("touch /var/lib/bluegreen/probe && flock /var/lib/bluegreen/probe true", user=user)
    assert lb.exec("stat -c %U /var/lib/bluegreen", user=user).stdout.strip() == "deploy"
