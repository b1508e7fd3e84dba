"""Test hosts for the servers target: Docker containers with a real OpenSSH server, on a network of their own.

`start_lab(apps=2, lb=True, dind=False)` builds the host image (once: tagged by a hash of its files), makes a
user-defined network with a subnet of its own, a client key pair for the run, and starts the hosts in
parallel; each container makes its own host key at start, read back out of band (`docker exec`) into
known_hosts content. Hosts are reached from this machine at their address on that network (nothing is
published). `Lab.close()` removes the containers, the network and the volumes.

Every container, network and volume carries the label dev.bluegreen.lab=1: after a killed test run,
`docker rm -f $(docker ps -aq --filter label=dev.bluegreen.lab=1)` (and `docker network prune --filter ...`)
removes what it left (only when no other run uses labs).

`dind=True` gives every app host its own Docker engine (run.mode docker), under the only flags that work here
(plain --privileged does not); `Lab.load_image` copies an image from this machine's engine into theirs.
"""

from __future__ import annotations

import hashlib
import http.client
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
APP = ROOT / "examples" / "app" / "app.py"
HAPROXY_TEMPLATE = ROOT / "examples" / "servers" / "haproxy.cfg"
IMAGE_REPOSITORY = "bluegreen-testhost"
USER = "deploy"
STATE_DIR = "/var/lib/bluegreen"
HAPROXY_SOCKET = "/run/haproxy/admin.sock"
HAPROXY_MAP = "/etc/haproxy/bluegreen.map"
# Docker-in-Docker: what works on this machine (checked by the lead); --privileged alone does not.
DIND_FLAGS = [
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE", "--security-opt", "seccomp=unconfined",
    "--security-opt", "apparmor=unconfined", "--security-opt", "systempaths=unconfined",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
]


def docker(*args: str, input: str | None = None, timeout: float = 300, check: bool = True
           ) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], input=input, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed: {result.stderr!s:.2000}")
    return result


def image() -> str:
    """The host image, built when its inputs changed (a hash of the Dockerfile, the entrypoint and the app)."""
    files = [HERE / "Dockerfile", HERE / "entrypoint.sh", APP]
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:12]
    tag = f"{IMAGE_REPOSITORY}:{digest}"
    if docker("image", "inspect", tag, check=False).returncode != 0:
        with tempfile.TemporaryDirectory() as context:
            for f in files:
                (Path(context) / f.name).write_bytes(f.read_bytes())
            docker("build", "--network", "host", "-q", "-t", tag, context, timeout=900)
    return tag


@dataclass
class Host:
    """One test host. `address` is its IP on the lab's network, reachable from this machine."""

    name: str  # app1, app2, lb
    container: str
    address: str
    ssh_port: int
    host_key: str = ""  # its public host key, "ssh-ed25519 AAAA..."

    @property
    def ssh_address(self) -> str:
        """How a config's `hosts:` names it: the address, with :port when not 22."""
        return self.address if self.ssh_port == 22 else f"{self.address}:{self.ssh_port}"

    def exec(self, command: str, *, input: str | None = None, user: str = "root", check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess:
        """`sh -c command` in the container (out of band: setup and assertions, not the code under test)."""
        args = ["exec", "-i", "-u", user, self.container, "sh", "-c", command]
        result = docker(*args, input=input or "", timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name}: `{command}` exited {result.returncode}: {result.stderr.strip()}")
        return result

    def stop(self) -> None:
        docker("stop", "-t", "1", self.container)

    def start(self) -> None:
        docker("start", self.container)
        wait_for_ssh(self)

    def pause(self) -> None:
        docker("pause", self.container)

    def unpause(self) -> None:
        docker("unpause", self.container)

    def known_hosts_line(self, key: str | None = None) -> str:
        pattern = self.address if self.ssh_port == 22 else f"[{self.address}]:{self.ssh_port}"
        return f"{pattern} {key or self.host_key}"


def wait_for_ssh(host: Host, timeout: float = 30) -> None:
    """Until sshd answers with its banner (its host key exists by then: the entrypoint makes it first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.address, host.ssh_port), timeout=1) as conn:
                conn.settimeout(2)
                if conn.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            logs = docker("logs", "--tail", "20", host.container, check=False)
            raise RuntimeError(f"{host.name}: sshd did not answer within {timeout:g}s: {logs.stderr[-800:]}")
        time.sleep(0.1)


@dataclass
class Lab:
    prefix: str
    network: str
    image: str
    private_key: str = field(repr=False)  # OpenSSH content of the run's client key
    public_key: str
    hosts: list[Host] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    @property
    def apps(self) -> list[Host]:
        return [h for h in self.hosts if h.name.startswith("app")]

    @property
    def lb(self) -> Host:
        return next(h for h in self.hosts if h.name == "lb")

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    @property
    def known_hosts(self) -> str:
        return "".join(h.known_hosts_line() + "\n" for h in self.hosts)

    def login(self, **changes):  # -> bluegreen.ssh.Login
        """A Login for these hosts as deploy (the run's key, the real known_hosts); `changes` override fields."""
        from bluegreen.ssh import Login

        fields = {"user": USER, "known_hosts": self.known_hosts, "private_key": self.private_key,
                  "connect_timeout": 5.0, **changes}
        return Login(**fields)

    def parallel(self, fn, hosts: list[Host]) -> list:
        with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
            return list(pool.map(fn, hosts))

    # --- HAProxy ---------------------------------------------------------------------------------

    def haproxy(self, lb: Host, app_hosts: list[Host], ports: dict[str, int], *, app: str = "testapp",
                listen: int = 80) -> str:
        """A real HAProxy on `lb` in front of every app host's colour ports, from examples/servers/haproxy.cfg;
        returns the config it runs. The map starts empty (nothing live: 503)."""
        config = render_haproxy(app, listen, ports, [(h.name, h.address) for h in app_hosts])
        start_haproxy(lb, config)
        return config

    def haproxy_each(self, app_hosts: list[Host], ports: dict[str, int], *, app: str = "testapp",
                     listen: int = 80) -> str:
        """router_host: each: HAProxy on every app host in front of its own 127.0.0.1 colour ports."""
        config = render_haproxy(app, listen, ports, [("local", "127.0.0.1")])
        self.parallel(lambda h: start_haproxy(h, config), app_hosts)
        return config

    # --- Docker-in-Docker ------------------------------------------------------------------------

    def load_image(self, image: str, hosts: list[Host] | None = None) -> None:
        """Copy `image` from this machine's engine into every (dind) host's engine (`docker save | docker load`)."""
        with tempfile.NamedTemporaryFile(suffix=".tar") as tar:
            docker("save", "-o", tar.name, image, timeout=300)

            def load(host: Host) -> None:
                with open(tar.name, "rb") as data:
                    done = subprocess.run(["docker", "exec", "-i", host.container, "docker", "load", "-q"],
                                          stdin=data, capture_output=True, timeout=300)
                if done.returncode != 0:
                    raise RuntimeError(f"{host.name}: docker load failed: {done.stderr.decode()[-500:]}")

            self.parallel(load, hosts or self.apps)

    def close(self) -> None:
        if self.hosts:
            docker("rm", "-f", "-v", *[h.container for h in self.hosts], check=False, timeout=120)
        if self.volumes:
            docker("volume", "rm", "-f", *self.volumes, check=False)
        docker("network", "rm", self.network, check=False)


def render_haproxy(app: str, listen: int, ports: dict[str, int], hosts: list[tuple[str, str]]) -> str:
    """examples/servers/haproxy.cfg filled in: a line naming {host_name}/{host_address} once per host."""
    values = {"app": app, "listen": str(listen), "blue_port": str(ports["blue"]), "green_port": str(ports["green"])}
    lines = []
    for line in HAPROXY_TEMPLATE.read_text().splitlines():
        if line.lstrip().startswith("#"):
            continue
        copies = ([{"host_name": name, "host_address": address} for name, address in hosts]
                  if "{host_" in line else [{}])
        for extra in copies:
            text = line
            for key, value in {**values, **extra}.items():
                text = text.replace("{" + key + "}", value)
            lines.append(text)
    return "\n".join(lines) + "\n"


def start_haproxy(host: Host, config: str) -> None:
    """(Re)start HAProxy on `host` with `config`, as root, daemonised; returns once its admin socket answers."""
    host.exec("cat > /etc/haproxy/haproxy.cfg", input=config)
    host.exec("if [ -s /run/haproxy.pid ]; then kill $(cat /run/haproxy.pid) 2>/dev/null; sleep 0.2; fi; "
              "haproxy -c -q -f /etc/haproxy/haproxy.cfg && haproxy -D -p /run/haproxy.pid -f /etc/haproxy/haproxy.cfg")
    for _ in range(100):
        if host.exec(f"echo 'show info' | socat stdio unix-connect:{HAPROXY_SOCKET}", check=False).returncode == 0:
            return
        time.sleep(0.05)
    raise RuntimeError(f"{host.name}: HAProxy's admin socket does not answer")


def new_subnet_network(name: str) -> str:
    """A network with a /24 of its own (static addresses survive a stop/start); retries a taken subnet."""
    for _ in range(20):
        subnet = f"10.213.{random.randint(0, 255)}"
        done = docker("network", "create", "--driver", "bridge", "--subnet", f"{subnet}.0/24",
                      "--label", "dev.bluegreen.lab=1", name, check=False)
        if done.returncode == 0:
            return subnet
        if "overlap" not in done.stderr:
            raise RuntimeError(f"docker network create failed: {done.stderr.strip()}")
    raise RuntimeError("no free 10.213.x.0/24 subnet for the lab network")


def start_lab(apps: int = 2, lb: bool = True, dind: bool = False, ssh_port: int = 22) -> Lab:
    """`apps` app hosts (app1..appN) and, with `lb`, a load-balancer host `lb`, all up and answering SSH."""
    tag = image()
    key = asyncssh.generate_private_key("ssh-ed25519", comment="bluegreen-lab")
    prefix = f"bgl-{uuid.uuid4().hex[:8]}"
    lab = Lab(prefix=prefix, network=prefix, image=tag, private_key=key.export_private_key().decode(),
              public_key=key.export_public_key().decode().strip())
    subnet = new_subnet_network(lab.network)
    names = [f"app{i}" for i in range(1, apps + 1)] + (["lb"] if lb else [])
    lab.hosts = [Host(name, f"{prefix}-{name}", f"{subnet}.{10 + i}", ssh_port) for i, name in enumerate(names)]

    def run(host: Host) -> None:
        flags = ["--network", lab.network, "--ip", host.address, "--hostname", host.name,
                 "--label", "dev.bluegreen.lab=1", "-e", f"AUTHORIZED_KEY={lab.public_key}",
                 "-e", f"SSH_PORT={ssh_port}"]
        if dind and host.name != "lb":
            volume = f"{host.container}-docker"
            lab.volumes.append(volume)
            docker("volume", "create", "--label", "dev.bluegreen.lab=1", volume)
            flags += [*DIND_FLAGS, "-v", f"{volume}:/var/lib/docker", "-e", "DIND=1"]
        docker("run", "-d", "--name", host.container, *flags, tag)
        wait_for_ssh(host)
        host.host_key = " ".join(host.exec("cat /etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[:2])
        if dind and host.name != "lb":
            wait_for_docker(host)

    try:
        lab.parallel(run, lab.hosts)
    except BaseException:
        lab.close()
        raise
    return lab


def wait_for_docker(host: Host, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while host.exec("docker info >/dev/null 2>&1", check=False).returncode != 0:
        if time.monotonic() > deadline:
            log = host.exec("tail -20 /var/log/dockerd.log", check=False).stdout
            raise RuntimeError(f"{host.name}: dockerd did not start within {timeout:g}s: {log}")
        time.sleep(0.2)


# --- an app on the lab, deployed by bluegreen as a user runs it (the e2e tests and bench/servers.py) ---

_ports = itertools.count(21000, 10)  # inside the hosts' own network namespaces: no clash with this machine

# command mode, as a user would write it for hosts without systemd: the app's files per colour in the deploy
# user's home, a pid file, and a marker that says a deploy ran on this host (the wrong-key test looks for it).
COMMAND_RUN = """\
      run:
        mode: command
        deploy: "mkdir -p ~/{app}/{colour} && cp /opt/example/app.py ~/{app}/{colour}/app.py && touch /tmp/deployed-{app}-{version}"
        start: >-
          cd ~/{app}/{colour} && { [ -s pid ] && kill $(cat pid) 2>/dev/null; sleep 0.2;
          setsid python3 app.py --host 0.0.0.0 --port {port} --version {version} --colour {colour}
          </dev/null >app.log 2>&1 & echo $! > pid; }
        stop: "[ -s ~/{app}/{colour}/pid ] && kill $(cat ~/{app}/{colour}/pid) 2>/dev/null; rm -f ~/{app}/{colour}/pid; true"
"""

DOCKER_RUN = """\
      run:
        mode: docker
        image: "{app}:{version}"
        command: ["--version", "{version}", "--colour", "{colour}"]
        pull: never
"""


@dataclass
class Release:
    """One app on the lab: its config file, and bluegreen run on it as a user would."""

    lab: Lab
    dir: Path
    app: str
    hosts: list[Host]
    router_host: str
    run: str = COMMAND_RUN
    extra: str = ""
    scale_down_delay: str = "never"
    known_hosts: str | None = None
    listen: str = ":80"  # router.listen
    ports: dict[str, int] = field(default_factory=lambda: {"blue": next(_ports), "green": next(_ports) + 1})

    def __post_init__(self) -> None:
        self.write()

    @property
    def state_dir(self) -> str:
        return f"{STATE_DIR}/{self.app}-production"

    def write(self) -> None:
        hosts = ", ".join(h.ssh_address for h in self.hosts)
        (self.dir / "bluegreen.yml").write_text(f"""\
app: {self.app}
scale_down_delay: {self.scale_down_delay}
timeouts: {{ready: 15}}
smoke:
  checks:
    - {{name: version, path: /version, expect: {{status: 200, body_regex: "^{{version}}$"}}}}
verify: {{window: 1}}
environments:
  production:
    target:
      kind: servers
      hosts: [{hosts}]
      ssh: {{user: deploy, private_key: "${{SSH_PRIVATE_KEY}}", known_hosts: "${{SSH_KNOWN_HOSTS}}", connect_timeout: 3s}}
{self.run.replace("{app}", self.app)}\
      ports: {{blue: {self.ports["blue"]}, green: {self.ports["green"]}}}
      router_host: {self.router_host}
      router: {{kind: haproxy, listen: "{self.listen}", socket: /run/haproxy/admin.sock, map_file: {HAPROXY_MAP}}}
      state_dir: {STATE_DIR}/{{app}}-{{environment}}
{self.extra}""")

    def env(self) -> dict[str, str]:
        return {**os.environ, "SSH_PRIVATE_KEY": self.lab.private_key,
                "SSH_KNOWN_HOSTS": self.known_hosts if self.known_hosts is not None else self.lab.known_hosts}

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bluegreen", *args, "-c", "bluegreen.yml", "-e", "production"],
                              cwd=self.dir, env=self.env(), capture_output=True, text=True, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "bluegreen", *args, "-c", "bluegreen.yml", "-e", "production"],
                                cwd=self.dir, env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def status(self) -> dict:
        done = self.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def map_entry(self, host: Host) -> str:
        """What the HAProxy map file on `host` says for this app (the value a restart would come back with)."""
        lines = host.exec(f"cat {HAPROXY_MAP}").stdout.splitlines()
        return next((line.split()[1] for line in lines if line.split()[:1] == [self.app]), "")


def get_version(host: Host, port: int = 80) -> str:
    conn = http.client.HTTPConnection(host.address, port, timeout=5)
    try:
        conn.request("GET", "/version")
        return conn.getresponse().read().decode().strip()
    finally:
        conn.close()
