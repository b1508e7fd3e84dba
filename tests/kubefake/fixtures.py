"""Fixtures for the Kubernetes contract suite: a cluster (the fake, or a real one), the example app, routers.

Against the fake, live and preview traffic goes through real local HTTP proxies that
route the way the cluster would: the proxy reads the Service's EndpointSlices (or the
HTTPRoute's weights, then the backend Service's slices) from the fake, picks a ready
pod, and forwards to a real `examples/app/app.py` process running that pod's image
version. So a switch that did not happen, or a colour that is not ready, shows in the
HTTP answers exactly as it would on a cluster. The live proxy adds X-Forwarded-For,
like an ingress, which the example app's `+fail-live` versions fail on.

Against a real cluster (BLUEGREEN_TEST_KUBECONFIG=path), the example manifests are
created in a fresh namespace with NodePort Services, and BLUEGREEN_TEST_LIVE_URL /
BLUEGREEN_TEST_PREVIEW_URL reach them (see .github/workflows/e2e-kind.yml).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest
import yaml

from .server import FakeKube
from conftest import free_port  # noqa: F401  (one port allocator: each xdist worker its own range)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "kubernetes"
APP = ROOT / "examples" / "app" / "app.py"
REAL = os.environ.get("BLUEGREEN_TEST_KUBECONFIG")
SECRET_TOKEN = "kubefake-s3cr3t-" + uuid.uuid4().hex  # must never appear in any output




# --- the example app, one process per (version, colour) ----------------------------------------


class Apps:
    """Real HTTP servers standing in for the pods' containers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.procs: dict[tuple[str, str], tuple[subprocess.Popen, int]] = {}

    def address(self, version: str, colour: str) -> int:
        with self.lock:
            if (version, colour) not in self.procs:
                port = free_port()
                proc = subprocess.Popen(
                    [sys.executable, str(APP), "--port", str(port), "--version", version, "--colour", colour],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
                self.procs[(version, colour)] = (proc, port)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                            break
                    except OSError:
                        time.sleep(0.02)
            return self.procs[(version, colour)][1]

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            proc.terminate()
        for proc, _ in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


class Proxy:
    """A real HTTP front (an ingress / kube-proxy) whose backend is resolved on every request."""

    def __init__(self, resolve: Callable[[], int | None], forwarded: bool) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                port = resolve()
                if port is None:
                    return self._reply(503, b"no ready endpoints\n")
                headers = {"X-Forwarded-For": "203.0.113.7"} if forwarded else {}
                try:
                    r = httpx.get(f"http://127.0.0.1:{port}{self.path}", headers=headers, timeout=5)
                except httpx.HTTPError:
                    return self._reply(502, b"bad gateway\n")
                self._reply(r.status_code, r.content, r.headers.get("content-type", "text/plain"))

            def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        proxy.resolve = resolve

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _version_of(image: str) -> str:
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else "latest"


# --- the cluster ---------------------------------------------------------------------------------


@dataclass
class Cluster:
    namespace: str
    kubeconfig_text: str
    fake: FakeKube | None
    live_url: str = ""
    preview_url: str = ""
    router: str = "service"
    apps: Apps = field(default_factory=Apps)
    proxies: list[Proxy] = field(default_factory=list)

    @property
    def real(self) -> bool:
        return self.fake is None

    def client(self):
        from lightkube import Client, KubeConfig

        from bluegreen.kube_client import normalise_exec

        config = KubeConfig.from_dict(normalise_exec(yaml.safe_load(self.kubeconfig_text)))
        transport = self.fake.transport() if self.fake else None
        return Client(config, namespace=self.namespace, transport=transport, field_manager="contract-test")

    # routing as the cluster does it, for the fake
    def _pod_port(self, service: str) -> int | None:
        assert self.fake is not None
        ready = []
        for s in self.fake.list("EndpointSlice", self.namespace, f"kubernetes.io/service-name={service}"):
            for e in s.get("endpoints") or []:
                if (e.get("conditions") or {}).get("ready") and e.get("targetRef"):
                    ready.append(e["targetRef"]["name"])
        random.shuffle(ready)
        for name in ready:
            pod = self.fake.get("Pod", self.namespace, name)
            if pod is not None:
                image = pod["spec"]["containers"][0]["image"]
                colour = pod["metadata"]["labels"].get("colour", "")
                return self.apps.address(_version_of(image), colour)
        return None

    def _route_port(self, route: str) -> int | None:
        assert self.fake is not None
        obj = self.fake.get("HTTPRoute", self.namespace, route)
        refs = [r for rule in (obj or {}).get("spec", {}).get("rules", []) for r in rule.get("backendRefs", [])
                if r.get("weight", 1) > 0]
        if not refs:
            return None
        ref = random.choices(refs, weights=[r.get("weight", 1) for r in refs])[0]
        return self._pod_port(ref["name"])

    def start_proxies(self) -> None:
        if self.real:
            self.live_url = os.environ["BLUEGREEN_TEST_LIVE_URL"]
            self.preview_url = os.environ["BLUEGREEN_TEST_PREVIEW_URL"]
            return
        live = (lambda: self._route_port("example")) if self.router == "httproute" else \
            (lambda: self._pod_port("example"))
        self.proxies = [Proxy(live, forwarded=True), Proxy(lambda: self._pod_port("example-preview"), forwarded=False)]
        self.live_url, self.preview_url = self.proxies[0].url, self.proxies[1].url

    def create_examples(self, router: str = "service", version: str = "1") -> None:
        """Create the example manifests: both Deployments on `version`, blue live."""
        from lightkube.codecs import from_dict

        self.router = router
        client = self.client()
        files = ["deployments.yaml", "services.yaml" if router == "service" else "httproute.yaml"]
        for file in files:
            for doc in yaml.safe_load_all((EXAMPLES / file).read_text()):
                doc["metadata"]["namespace"] = self.namespace
                if doc["kind"] == "Deployment":
                    doc["spec"]["template"]["spec"]["containers"][0]["image"] = image(version)
                if self.real and doc["kind"] == "Service" and doc["metadata"]["name"] in ("example", "example-preview"):
                    doc["spec"]["type"] = "NodePort"
                    doc["spec"]["ports"][0]["nodePort"] = 30080 if doc["metadata"]["name"] == "example" else 30081
                client.create(from_dict(doc))
        client.close()
        self.start_proxies()
        deadline = time.monotonic() + (300 if self.real else 10)
        while get_live_version(self.live_url) != version:  # a cluster that already serves, like production
            if time.monotonic() > deadline:
                raise TimeoutError(f"the example app never answered version {version} at {self.live_url}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        self.apps.stop()


def image(version: str) -> str:
    return f"{os.environ.get('BLUEGREEN_TEST_IMAGE', 'bluegreen-example')}:{version}"


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    from lightkube import Client, KubeConfig
    from lightkube.resources.core_v1 import Namespace

    from bluegreen import kube_client

    namespace = f"bg-{uuid.uuid4().hex[:8]}"
    if REAL:
        text = Path(REAL).read_text()
        c = Cluster(namespace, text, None)
    else:
        fake = FakeKube(auto=True, ready_after=0.15, token=SECRET_TOKEN)
        monkeypatch.setattr(kube_client, "transport_override", fake.transport)
        text = yaml.safe_dump(fake.kubeconfig(token=SECRET_TOKEN, namespace=namespace))
        c = Cluster(namespace, text, fake)
    client = c.client()
    client.create(Namespace.from_dict({"metadata": {"name": namespace}}))
    monkeypatch.setenv("BG_TEST_KUBECONFIG", text)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    try:
        yield c
    finally:
        c.stop()
        if REAL:
            client.delete(Namespace, namespace)
        client.close()


# --- running bluegreen ---------------------------------------------------------------------------


@dataclass
class Run:
    code: int
    out: str
    err: str
    report: dict

    @property
    def text(self) -> str:
        return self.out + self.err + json.dumps(self.report)


def write_config(path: Path, cluster: Cluster, **overrides) -> Path:
    target = {
        "kind": "kubernetes",
        "namespace": cluster.namespace,
        "kubeconfig": "${BG_TEST_KUBECONFIG}",
        "image": image("{version}"),
        "live_url": cluster.live_url,
        "preview_url": cluster.preview_url,
        "router": {"kind": "service", "service": "example", "preview_service": "example-preview"}
        if cluster.router == "service" else
        {"kind": "httproute", "route": "example", "services": "example-{colour}", "preview_service": "example-preview"},
    }
    target.update(overrides.pop("target", {}))
    config = {
        "app": "example",
        "environments": {"test": {"target": target}},
        "smoke": {"checks": [{"name": "root", "path": "/", "expect": {"json": {"version": "{version}"}}}],
                  "timeout": 10, "interval": 0.1, "consecutive_successes": 1},
        "verify": {"window": 0.6, "interval": 0.1, "timeout": 5, "consecutive_successes": 2},
        "timeouts": {"ready": 180 if cluster.real else 4, "switch": 60 if cluster.real else 10, "lock": 60},
        "scale_down_delay": 0,
    }
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(config: Path, *args: str) -> Run:
    from bluegreen import cli

    report = config.parent / f"report-{uuid.uuid4().hex[:6]}.json"
    out, err = io.StringIO(), io.StringIO()
    argv = [args[0], "-c", str(config), *args[1:]]
    if args[0] in ("deploy", "rollback", "promote"):
        argv += ["--report", str(report)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    data = json.loads(report.read_text()) if report.exists() else {}
    return Run(int(code), out.getvalue(), err.getvalue(), data)


def get_live_version(url: str) -> str | None:
    try:
        r = httpx.get(url + "/version", timeout=3)
    except httpx.HTTPError:
        return None
    return r.text.strip() if r.status_code == 200 else f"HTTP {r.status_code}"
