"""The targets: where the colours run (local processes, Docker, servers over SSH, Kubernetes), one model per kind."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, SecretStr, Tag, field_validator, model_validator

from .base import Duration, Model
from .routers import (
    CaddyRouter,
    DockerCaddyRouter,
    DockerRouterConfig,
    KubernetesRouterConfig,
    KubernetesServiceRouter,
    PROXY_KINDS,
    RouterConfig,
)
from .secrets import KUBECONFIG, SECRET


class ColourPorts(Model):
    blue: int = Field(ge=1, le=65535)
    green: int = Field(ge=1, le=65535)


class ColourAddresses(Model):
    blue: str = Field(pattern=r"^[^\s/:]+$|^[0-9A-Fa-f:]+$")
    green: str = Field(pattern=r"^[^\s/:]+$|^[0-9A-Fa-f:]+$")


class LocalTarget(Model):
    """Each colour is a local process; a real proxy switches between them (the embedded default)."""

    kind: Literal["local"]
    command: list[str] = Field(
        description="argv that starts one colour; {port}, {host}, {version} and {colour} are filled in.", min_length=1
    )
    ports: ColourPorts = Field(default_factory=lambda: ColourPorts(blue=8081, green=8082))
    host: str = Field("127.0.0.1", description="Where the colours listen and are reached (both, unless addresses).")
    addresses: ColourAddresses | None = Field(
        None, description="Each colour on its own address, e.g. {blue: 127.0.0.2, green: 127.0.0.3}: the app binds "
        "it ({host} in command), bluegreen and the router reach it there. A DNS router needs it (a record names a "
        "host, not a port). Default: host for both."
    )
    health_path: str = Field("/healthz", description="Readiness: this path answers 2xx.")
    env: dict[str, str] = Field(default_factory=dict)
    working_directory: str | None = Field(None, description="Relative to the config file; default its folder.")
    state_dir: str = Field(
        ".bluegreen/{environment}",
        description="pids, logs, lock and history; relative to the config file. {environment} is filled in.",
    )
    router: RouterConfig = Field(default_factory=CaddyRouter, description="What switches live traffic.")


class KubernetesTarget(Model):
    """Two Deployments `<app>-blue` / `<app>-green` behind a switched Service selector or HTTPRoute."""

    kind: Literal["kubernetes"]
    namespace: str | None = Field(None, description="Default: the kubeconfig context's namespace.")
    context: str | None = Field(None, description="Kubeconfig context; default its current-context.")
    kubeconfig: Annotated[SecretStr | None, KUBECONFIG] = Field(
        None,
        description="Kubeconfig file content, e.g. '${KUBECONFIG_DATA}' from a CI secret; never logged. "
        "Default: the KUBECONFIG file, ~/.kube/config, then the in-cluster service account.",
    )
    deployment: str = Field("{app}-{colour}", description="Each colour's Deployment; {app}, {colour} filled in.")
    colour_label: str = Field("colour", description="The pod label whose value is blue or green.")
    image: str | None = Field(
        None, description="Image of a new version, e.g. 'registry.example.com/app:{version}'; "
        "default the container's current image with its tag set to the version."
    )
    containers: list[str] = Field(default_factory=list, description="Containers that get the image; default the first.")
    manifests: list[str] = Field(
        default_factory=list,
        description="Instead of setting the image: manifest files (relative to the config file) rendered for the "
        "idle colour ({app}, {colour}, {version}, {image}) and server-side applied with field manager bluegreen.",
    )
    replicas: int | None = Field(None, ge=1, description="Replicas of a new release; default the live colour's count.")
    idle_replicas: int = Field(
        0, ge=0, description="Replicas the old colour keeps after scale_down_delay (0: scaled to zero; "
        "a rollback then waits for pods)."
    )
    scale_down_wait: Duration = Field(
        300, description="A scale_down_delay up to this long is waited for in the run; a longer one is recorded "
        "on the Deployment and applied by the next bluegreen run."
    )
    router: KubernetesRouterConfig = Field(default_factory=KubernetesServiceRouter)
    live_url: str | None = Field(None, description="Where live traffic is served; default the live Service's cluster DNS name.")
    preview_url: str | None = Field(
        None, description="Where the preview Service is reached ({colour} allowed); default its cluster DNS name."
    )
    request_timeout: Duration = Field(10, description="Timeout of one API request (retried when transient).")


class DockerTarget(Model):
    """Each colour is a container on a Docker engine (Engine API over its socket), published on a host port;
    a Caddy switches between them through its upstream file: by default a router container beside them."""

    kind: Literal["docker"]
    image: str = Field(description="Image of one colour; {version} is filled in, e.g. 'ghcr.io/org/app:{version}'.")
    command: list[str] | None = Field(
        None, description="Arguments given to the image's entrypoint (its CMD); {port}, {version}, {colour} filled in."
    )
    container_port: int = Field(8000, ge=1, le=65535, description="The port the app listens on inside its container.")
    ports: ColourPorts = Field(
        default_factory=lambda: ColourPorts(blue=8081, green=8082), description="The host port each colour is published on."
    )
    bind: str = Field("127.0.0.1", description="The host address the colours' ports are published on.")
    host: str = Field("127.0.0.1", description="Where bluegreen and the router reach the published ports.")
    health_path: str = Field("/healthz", description="Readiness: this path answers 2xx.")
    env: dict[str, str] = Field(default_factory=dict, description="Container environment; {version}, {colour} filled in.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels.")
    network: str | None = Field(
        None, description="A Docker network to attach the containers to. router.mode container: a user-defined "
        "network the router shares with them (default bluegreen-<app>-<environment>); host mode: default the bridge."
    )
    pull: Literal["missing", "always", "never"] = Field("missing", description="When to pull the image.")
    docker_host: str | None = Field(
        None, description="unix:///path/docker.sock or tcp://host:port; default $DOCKER_HOST, else /var/run/docker.sock."
    )
    stop_timeout: Duration = Field(10, description="Grace between SIGTERM and SIGKILL when a colour is stopped.")
    scale_down_wait: Duration | None = Field(
        None, description="A scale_down_delay up to this long is waited for in the run; a longer one is recorded "
        "with the router's state and applied by the next bluegreen run that takes the lock (nothing outlives a CI "
        "step). Default 60s, but 0 in GitHub Actions and GitLab CI, so later steps are not held up."
    )
    state_dir: str = Field(
        ".bluegreen/{environment}",
        description="router.mode host only: the upstream file, lock and history; relative to the config file. "
        "Must be readable by the host's router (in a container action: inside the workspace).",
    )
    router: DockerRouterConfig = Field(
        default_factory=DockerCaddyRouter, description="What switches live traffic; every kind but caddy runs on the host."
    )


class SSHSettings(Model):
    """How bluegreen logs in to every host (the app hosts and the router host) over SSH."""

    user: str = Field(min_length=1, description="The login user on every host.")
    port: int = Field(22, ge=1, le=65535, description="The SSH port; a host written address:port overrides it.")
    private_key: Annotated[SecretStr | None, SECRET] = Field(
        None, description="Private key CONTENT (OpenSSH or PEM), e.g. '${SSH_PRIVATE_KEY}' from a CI secret; never "
        "logged. Default: the keys of the ssh-agent at SSH_AUTH_SOCK."
    )
    passphrase: Annotated[SecretStr | None, SECRET] = Field(
        None, description="The private key's passphrase, e.g. '${SSH_KEY_PASSPHRASE}'."
    )
    known_hosts: Annotated[SecretStr, SECRET] = Field(
        description="known_hosts CONTENT listing every host's key (and the jump host's), e.g. '${SSH_KNOWN_HOSTS}'. "
        "Host keys are always verified: an unknown or changed key stops the run, naming the host and the "
        "fingerprint it offered."
    )
    jump_host: str | None = Field(None, description="Optional bastion, [user@]host[:port], verified like the hosts.")
    connect_timeout: Duration = Field(10, description="Deadline of one SSH connection.")


class DockerRun(Model):
    """Each colour is a container on the Docker engine of each host, reached through SSH (its unix socket)."""

    mode: Literal["docker"]
    image: str = Field(description="Image of one colour; {version} is filled in, e.g. 'registry.example.com/app:{version}'.")
    command: list[str] | None = Field(
        None, description="Arguments given to the image's entrypoint (its CMD); {port}, {version}, {colour} filled in."
    )
    container_port: int = Field(8000, ge=1, le=65535, description="The port the app listens on inside its container.")
    bind: str = Field("0.0.0.0", description="The host address each colour's port is published on (the router dials it).")
    env: dict[str, str] = Field(default_factory=dict, description="Container environment; {version}, {colour} filled in.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra container labels.")
    pull: Literal["missing", "always", "never"] = Field("missing", description="When each host pulls the image.")
    docker_socket: str = Field("/var/run/docker.sock", description="The Docker engine's socket on each host.")


class CommandRun(Model):
    """Each colour is whatever the user's commands run on each host (a systemd unit, a process, a compose
    project); {colour}, {version} and {port} are filled in. The version on a colour is recorded on the host."""

    mode: Literal["command"]
    deploy: str | None = Field(
        None, description="Puts {version} in place for {colour} (fetch and unpack a release, pull an image); it must "
        "not touch the other colour."
    )
    start: str = Field(min_length=1, description="Starts (or restarts) {colour}, e.g. 'sudo systemctl restart app@{colour}'.")
    stop: str = Field(min_length=1, description="Stops {colour}, e.g. 'sudo systemctl stop app@{colour}'.")
    status: str | None = Field(
        None, description="Exits 0 while {colour} runs, e.g. 'systemctl is-active -q app@{colour}'; default: its "
        "health path answers."
    )
    timeout: Duration = Field(300, description="Deadline of one command on one host.")


class ColourHosts(Model):
    """Each colour on hosts of its own (so each has its own addresses: a DNS record can name one colour)."""

    blue: list[str] = Field(min_length=1, description="The hosts blue runs on.")
    green: list[str] = Field(min_length=1, description="The hosts green runs on.")


class ServersTarget(Model):
    """The colours run on servers reached over SSH, behind a load balancer (or a proxy on each host) that
    bluegreen switches over SSH too; the lock and the history live on the router host."""

    kind: Literal["servers"]
    hosts: Annotated[
        Union[Annotated[list[str], Tag("one list"), Field(min_length=1)], Annotated[ColourHosts, Tag("by colour")]],
        Discriminator(lambda v: "by colour" if isinstance(v, (dict, ColourHosts)) else "one list"),
    ] = Field(
        description="The app hosts: address or address:ssh-port. Both colours run on every host "
        "(each on its own port), or, as {blue: [...], green: [...]}, each colour on hosts of its own."
    )
    ssh: SSHSettings
    run: Annotated[Union[DockerRun, CommandRun], Field(discriminator="mode")] = Field(
        description="How a colour runs on each host: mode docker or command."
    )
    ports: ColourPorts = Field(
        default_factory=lambda: ColourPorts(blue=8081, green=8082), description="Each colour's port on every app host."
    )
    health_path: str = Field("/healthz", description="Readiness: this path answers 2xx on every host.")
    checks_via: Literal["ssh", "direct"] = Field(
        "ssh", description="How bluegreen reaches each host's colour port for readiness, smoke checks and the test "
        "suite. ssh: through an SSH port forward (only SSH needs to be open to the runner). direct: http://host:port."
    )
    router_host: str = Field(
        description="Where the router runs: the address of ONE load balancer in front of every app host (one "
        "atomic switch), reached over SSH like the hosts; or 'each': a proxy on every app host, behind DNS or a "
        "cloud load balancer (switched on every host at once; the report gives the skew)."
    )
    router: RouterConfig = Field(description="What switches live traffic; manage must be false (your proxy).")
    state_dir: str = Field(
        "/var/lib/bluegreen/{app}-{environment}", description="On the router host (the first app host for 'each'): "
        "the lock, the history and planned scale-downs; on each app host, the version of each colour (command mode)."
    )
    stop_timeout: Duration = Field(10, description="Grace between SIGTERM and SIGKILL when a container is stopped.")
    scale_down_wait: Duration | None = Field(
        None, description="A scale_down_delay up to this long is waited for in the run; a longer one is applied by "
        "the next bluegreen run that takes the lock. Default 60s, but 0 in GitHub Actions and GitLab CI."
    )

    @field_validator("router", mode="before")
    @classmethod
    def _unmanaged_by_default(cls, router: Any) -> Any:
        if isinstance(router, dict) and isinstance(router.get("routers"), list):  # kind all: each of its routers
            return {**router, "routers": [cls._unmanaged_by_default(r) for r in router["routers"]]}
        if isinstance(router, dict) and "manage" not in router and router.get("kind", "caddy") in PROXY_KINDS:
            return {**router, "manage": False}  # on servers the proxy is always the user's
        return router

    @field_validator("hosts")
    @classmethod
    def _unique(cls, hosts: list[str] | ColourHosts) -> list[str] | ColourHosts:
        for listed in ([hosts.blue, hosts.green] if isinstance(hosts, ColourHosts) else [hosts]):
            seen = [h for i, h in enumerate(listed) if h in listed[:i]]
            if seen:
                raise ValueError(f"{seen[0]!r} is listed twice")
        return hosts

    def hosts_of(self, colour: str) -> list[str]:
        """The hosts `colour` runs on."""
        return list(getattr(self.hosts, colour)) if isinstance(self.hosts, ColourHosts) else list(self.hosts)

    @property
    def all_hosts(self) -> list[str]:
        """Every app host, once, in the order given."""
        return list(dict.fromkeys([*self.hosts_of("blue"), *self.hosts_of("green")]))

    @property
    def router_hosts(self) -> list[str]:
        """Where the router runs: every app host (`router_host: each`, a proxy on each), or the one load balancer."""
        return self.all_hosts if self.router_host == "each" else [self.router_host]

    @property
    def proxy_on_each_host(self) -> bool:
        return self.router_host == "each"

    @model_validator(mode="after")
    def _router_fits(self) -> "ServersTarget":
        if any(proxy.manage for proxy in self.router.proxies()):
            raise ValueError("router.manage must be false on servers: bluegreen switches your proxy, it does not run it")
        if isinstance(self.hosts, ColourHosts) and self.router_host == "each":
            raise ValueError("router_host each puts a proxy in front of both colours on every host: with hosts per "
                             "colour, name the load balancer in router_host")
        if self.router.kind == "caddy" and self.router_host != "each" and max(
                len(self.hosts_of("blue")), len(self.hosts_of("green"))) > 1:
            raise ValueError("router.kind caddy reads one upstream address from its file: in front of several hosts "
                             "use haproxy, envoy, traefik or nginx, or a Caddy on each host (router_host: each)")
        return self


# Each target kind adds its model here and to the union below.
TargetConfig = Annotated[Union[LocalTarget, KubernetesTarget, DockerTarget, ServersTarget], Field(discriminator="kind")]
