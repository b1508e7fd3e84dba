"""The servers target: the colours run on hosts reached over SSH, behind a router switched over SSH too.

Every host gets one SSH connection for the whole run (ssh.py), and every step that touches the hosts runs on
all of them at once. A colour runs on each host in one of two ways (`run.mode`):

- docker: a container `<app>-<environment>-<colour>` on the host's own Docker engine, whose socket is
  reached through the SSH connection; labelled with its version, published on the colour's port;
- command: the user's `deploy` / `start` / `stop` templates (e.g. a systemd unit `app@{colour}`); the
  version on a colour is recorded on the host, in `<state_dir>/<colour>.version`.

The router is one of routers/, with its I/O going through the router host's SSH connection: one load
balancer in front of every host (`router_host: lb1`: one atomic switch), or a proxy on every app host
(`router_host: each`: switched on all of them at once; a failure on any switches the others back, and the
switch reports the skew between the first and the last). The lock, the history and the planned scale-downs
are files on the router host (the first app host for `each`), changed by compare-and-swap under `flock`
there, so a rollback dispatched days later from another runner needs nothing from this one.
"""

from __future__ import annotations

import os
import shlex
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Callable, TypeVar

import httpx

from ..cancel import CANCEL
from ..config import COLOURS, Colour, Settings, render
from ..config import ServersTarget as ServersConfig
from ..errors import NotReadyError, TargetError
from ..remote import CommandResult, Shell, split_host
from ..routers import make_router
from .base import ColourState, RouterState, Target, Weights, all_to, larger_share
from .docker import LABEL, DockerAPI, colour_container, crashed, ensure_image
from .docker_router import safe_name
from .filestate import FileStateStore
from .hostports import read_router_state
from .scaledown import PlannedScaleDowns

T = TypeVar("T")
CAS_RETRIES = 20  # a write that found the file changed by another run starts its read-modify-write again


class _Changed(Exception):
    """A state file changed between our read and our write: another run got there first."""


class ShellStateStore(FileStateStore):
    """Lock and history as files on a host, changed by compare-and-swap: a write goes through only if the file
    still holds what this transaction read (its sha256), checked and renamed under `flock` on that host. Two runs
    can never both take the lock, and nothing is held on the host between commands (a runner that vanishes
    leaves no stale mutex, only a lock that expires)."""

    def __init__(self, shell: Callable[[], Shell], directory: PurePosixPath, lock_ttl: float) -> None:
        super().__init__(directory, lock_ttl)  # type: ignore[arg-type]  # a path on the host, never opened here
        self._shell = shell
        self._seen: dict[str, str] = {}  # file -> the sha256 this transaction read ("none": missing)

    def _where(self, name: str) -> str:
        return f"{self._shell().name}:{self.dir / name}"

    def _sh(self, name: str, doing: str, script: str, input: str | None = None) -> CommandResult:
        done = self._shell().run(script, input=input, timeout=30)
        if done.exit_status == 75:
            raise _Changed()
        if not done.ok:
            raise TargetError(f"cannot {doing} {self._where(name)}: {done.last_error_line()} (the SSH user needs "
                              f"write access to state_dir {self.dir} and the flock command on that host)")
        return done

    def _read(self, name: str) -> str | None:
        path = shlex.quote(str(self.dir / name))
        done = self._sh(name, "read", f'f={path}; if [ -e "$f" ]; then sha256sum < "$f" | cut -c1-64 && cat -- "$f"; '
                                      "else echo none; fi")
        digest, _, text = done.stdout.partition("\n")
        self._seen[name] = digest.strip()
        return None if digest.strip() == "none" else text

    def _swap(self, name: str, doing: str, change: str, input: str | None = None) -> None:
        """`change` (a shell snippet on "$f") under the host's flock, if the file is as this transaction read it."""
        expected = self._seen.get(name)
        check = "" if expected is None else (
            'if [ -e "$f" ]; then cur=$(sha256sum < "$f" | cut -c1-64); else cur=none; fi; '
            f'[ "$cur" = {shlex.quote(expected)} ] || exit 75; ')
        script = (f"d={shlex.quote(str(self.dir))}; f=\"$d\"/{shlex.quote(name)}; mkdir -p \"$d\" && "
                  'exec 9>>"$d/.mutex" && flock -w 10 9 || exit 71; ' + check + change)
        self._sh(name, doing, script, input=input)
        self._seen.pop(name, None)

    def _write(self, name: str, text: str) -> None:
        self._swap(name, "write", 't="$f.tmp.$$"; cat > "$t" && mv -f "$t" "$f"', input=text)

    def _unlink(self, name: str) -> None:
        self._swap(name, "remove", 'rm -f "$f"')

    def _modified(self, name: str) -> datetime | None:
        done = self._shell().run(f"stat -c %Y {shlex.quote(str(self.dir / name))}", timeout=30)
        try:
            return datetime.fromtimestamp(int(done.stdout.strip()), timezone.utc) if done.ok else None
        except ValueError:
            return None

    def _transaction(self, body: Callable[[], T]) -> T:
        for attempt in range(CAS_RETRIES):
            self._seen = {}
            try:
                return body()
            except _Changed:
                time.sleep(0.02 * (attempt + 1))
        raise TargetError(f"{self._where('')}: the state kept changing under this run ({CAS_RETRIES} tries); "
                          "is another run writing it in a loop?")

    def purge(self) -> None:
        self._shell().run(f"rm -rf {shlex.quote(str(self.dir))}", timeout=30)


def _address(host: str) -> str:
    """'app2:2222' -> 'app2' (the SSH port is not where the colours listen)."""
    return split_host(host, 0)[0]


class ServersTarget(PlannedScaleDowns, Target):
    config: ServersConfig

    def __init__(self, settings: Settings) -> None:
        from ..ssh import Login, SSHPool  # asyncssh is imported only by a config that uses servers

        self.settings = settings
        self.config = cfg = settings.target
        ssh = cfg.ssh
        self.pool = SSHPool(Login(
            user=ssh.user, port=ssh.port, known_hosts=ssh.known_hosts.get_secret_value(), jump_host=ssh.jump_host,
            # An empty value (`${SSH_KEY_PASSPHRASE:-}` unset) means none: the agent's keys, no passphrase.
            private_key=(ssh.private_key.get_secret_value() if ssh.private_key else "") or None,
            passphrase=(ssh.passphrase.get_secret_value() if ssh.passphrase else "") or None,
            connect_timeout=ssh.connect_timeout,
        ))
        self.hosts = list(cfg.hosts)
        self.each = cfg.router_host == "each"
        self.router_hosts = self.hosts if self.each else [cfg.router_host]
        self.ports: dict[Colour, int] = {"blue": cfg.ports.blue, "green": cfg.ports.green}
        self.dir = PurePosixPath(render(cfg.state_dir, app=settings.app, environment=settings.environment))
        self._connected = False
        self.state = ShellStateStore(lambda: self._shell(self.router_hosts[0]), self.dir, settings.timeouts.lock)
        self.state.on_locked.append(self.apply_scale_downs)
        self.runtime: DockerRuntime | CommandRuntime = (
            DockerRuntime(self) if cfg.run.mode == "docker" else CommandRuntime(self))
        self.routers = {h: make_router(cfg.router, upstreams=self._upstreams(), state_dir=self.dir,  # type: ignore
                                       app=settings.app, shell=self.pool.host(h)) for h in self.router_hosts}
        self._switch_detail: str | None = None
        if cfg.scale_down_wait is not None:
            self.scale_down_wait = cfg.scale_down_wait
        else:  # in CI a wait would hold up the job's later steps: the next run applies it
            ci = os.environ.get("GITHUB_ACTIONS") == "true" or os.environ.get("GITLAB_CI") == "true"
            self.scale_down_wait = 0.0 if ci else 60.0

    def _upstreams(self) -> dict[Colour, list[str]]:
        """What the router dials for each colour: every app host's colour port, or the local one on each host."""
        if self.each:
            return {c: [f"127.0.0.1:{p}"] for c, p in self.ports.items()}
        return {c: [f"{_address(h)}:{p}" for h in self.hosts] for c, p in self.ports.items()}

    # --- the hosts -----------------------------------------------------------------------------

    def _connect(self) -> None:
        """Every host at once, the first time anything is asked: an unreachable host or a wrong host key stops
        the run before anything changed, naming the host."""
        if not self._connected:
            self.pool.connect(list(dict.fromkeys([*self.hosts, *self.router_hosts])))
            self._connected = True

    def _shell(self, host: str) -> Shell:
        self._connect()
        return self.pool.host(host)

    def _on_hosts(self, hosts: list[str], fn: Callable[[Shell], T]) -> dict[str, T]:
        self._connect()
        return self.pool.each(hosts, fn)

    def _colour_url(self, host: str, colour: Colour) -> str:
        port = self.ports[colour]
        if self.config.checks_via == "direct":
            return f"http://{_address(host)}:{port}"
        bind = getattr(self.config.run, "bind", "0.0.0.0")
        local_host, local_port = self._shell(host).dial_tcp("127.0.0.1" if bind == "0.0.0.0" else bind, port)
        return f"http://{local_host}:{local_port}"

    def health(self, host: str, colour: Colour, timeout: float) -> str | None:
        """None when the health path answers 2xx on `host`, else why not."""
        url = self._colour_url(host, colour) + self.config.health_path
        try:
            response = httpx.get(url, timeout=timeout)
        except httpx.HTTPError as exc:
            return f"GET {self.config.health_path} on port {self.ports[colour]}: {type(exc).__name__}"
        return None if response.is_success else f"GET {self.config.health_path}: status {response.status_code}"

    # --- questions -----------------------------------------------------------------------------

    def live(self) -> Colour | None:
        weights = self.weights()
        return larger_share(weights) if weights else None

    def weights(self) -> Weights | None:
        splits = self._on_hosts(self.router_hosts, lambda sh: self.routers[sh.name].weights())
        # Proxies on every host normally agree; if a past failure left them apart, the most common split is
        # taken as live (status shows each host) and the next switch sets them all.
        counts = Counter(tuple(sorted(w.items())) if w else None for w in splits.values())
        most = counts.most_common(1)[0][0]
        return dict(most) if most else None  # type: ignore[arg-type]

    def colour_state(self, colour: Colour) -> ColourState:
        states = self._on_hosts(self.hosts, lambda sh: self.runtime.state(sh, colour))
        versions = Counter(s.version for s in states.values() if s.version)
        running = [h for h, s in states.items() if s.running]
        ready = all(s.ready for s in states.values())
        detail = "; ".join(f"{h}: {s.detail}" for h, s in states.items())
        if len(versions) > 1:
            detail = "versions differ: " + ", ".join(f"{h} {s.version}" for h, s in states.items()) + "; " + detail
        return ColourState(colour=colour, version=versions.most_common(1)[0][0] if versions else None,
                           running=len(running) == len(self.hosts), ready=ready, replicas=len(running),
                           detail=f"{len(running)}/{len(self.hosts)} hosts running; {detail}")

    def preview_urls(self, colour: Colour) -> dict[str, str]:
        return {h: self._colour_url(h, colour) for h in self.hosts}

    def preview_url(self, colour: Colour) -> str:
        # The output outlives the run: the first host's own address, never this run's port forward (with
        # checks_via: ssh a 127.0.0.1 port on the runner, gone when the step ends).
        return f"http://{_address(self.hosts[0])}:{self.ports[colour]}"

    def live_url(self) -> str:
        # The listen address when it names one (`10.0.0.5:80`), else the router host's (`:80`, `0.0.0.0:80`).
        host, _, port = self.config.router.listen.rpartition(":")
        host = host.strip("[]")
        if host in ("", "0.0.0.0", "::", "*"):
            host = _address(self.router_hosts[0])
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def router_state(self) -> RouterState:
        states = self._on_hosts(self.router_hosts, lambda sh: read_router_state(self.routers[sh.name]))
        if not self.each:
            return states[self.router_hosts[0]]
        weights = self.weights()
        apart = [f"{h}: {s.detail or s.unreadable or s.weights}" for h, s in states.items()
                 if not s.serving or s.unreadable or s.weights != weights]
        return RouterState(name=f"{self.config.router.kind} on {len(states)} hosts",
                           serving=all(s.serving for s in states.values()), weights=weights,
                           detail=("; ".join(apart) if apart else ""))

    def raw_rollback_command(self, to: Colour) -> str | None:
        ssh = self.config.ssh
        commands = []
        for host in self.router_hosts:
            address, port = split_host(host, ssh.port)
            remote = self.routers[host].raw_switch_command(to)
            commands.append(f"ssh -p {port} {ssh.user}@{address} {shlex.quote(remote)}")
        return " && ".join(commands)

    # --- actions -------------------------------------------------------------------------------

    def deploy(self, colour: Colour, version: str) -> None:
        self._drop_due(colour)
        self._on_hosts(self.hosts, lambda sh: self.runtime.deploy(sh, colour, version))

    def wait_ready(self, colour: Colour, deadline: float) -> None:
        def ready(sh: Shell) -> str | None:
            while True:
                crash = self.runtime.crashed(sh, colour)  # a crash ends the wait at once, not at the deadline
                if crash:
                    return crash
                failure = self.health(sh.name, colour, timeout=1.0)
                if failure is None:
                    return None
                if time.monotonic() >= deadline:
                    return f"not ready before the deadline: {failure}"
                CANCEL.wait(0.1)
                if CANCEL.requested:  # in a worker thread: the main thread raises the cancellation
                    return "cancelled"

        failures = {h: why for h, why in self._on_hosts(self.hosts, ready).items() if why}
        if failures:
            raise NotReadyError(f"{colour} not ready on {len(failures)} of {len(self.hosts)} hosts: "
                                + "; ".join(f"{h}: {why}" for h, why in failures.items()))

    def scale(self, colour: Colour, replicas: int) -> None:
        self._on_hosts(self.hosts, lambda sh: self.runtime.scale(sh, colour, replicas))
        self._drop_due(colour)

    def check_router(self) -> str | None:
        if self.each:  # every host's proxy; an error names each host that failed
            self._on_hosts(self.router_hosts, lambda sh: self.routers[sh.name].check())
        else:  # the one load balancer: its message names it already
            self._connect()
            self.routers[self.router_hosts[0]].check()
        return None

    def switch(self, to: Colour, deadline: float) -> None:
        self.set_weights(all_to(to), deadline)
        self._drop_due(to)  # live again: a scale-down planned for it no longer applies

    def switch_detail(self) -> str | None:
        return self._switch_detail

    def set_weights(self, weights: Weights, deadline: float) -> None:
        """One change on the load balancer; or on every host's proxy at once, and if any fails, the hosts that
        changed go back, so live traffic is never left half-switched."""
        self._switch_detail = None
        if not self.each:  # the router's own errors name its host
            self._connect()
            self.routers[self.router_hosts[0]].set_weights(weights, deadline)
            return

        def change(sh: Shell) -> tuple[Weights | None, float | None, str | None]:
            router = self.routers[sh.name]
            was = router.weights()
            try:
                router.set_weights(weights, deadline)
            except TargetError as exc:
                return was, None, str(exc)
            return was, time.monotonic(), None

        outcomes = self._on_hosts(self.router_hosts, change)
        failed = {h: why for h, (_, _, why) in outcomes.items() if why}
        if failed:
            moved = [h for h, (was, done, _) in outcomes.items() if done is not None and was and was != weights]
            self._on_hosts(moved, lambda sh: self.routers[sh.name].set_weights(outcomes[sh.name][0], deadline + 5))
            raise TargetError("the switch failed on " + "; ".join(f"{h}: {why}" for h, why in failed.items())
                              + (f"; switched {', '.join(moved)} back" if moved else "") + "; live routing is unchanged")
        times = [done for _, done, _ in outcomes.values() if done is not None]
        self._switch_detail = (f"{len(times)} proxies switched; skew {1000 * (max(times) - min(times)):.1f} ms "
                               "between the first and the last")

    def stop_all(self, purge: bool = False) -> list[str]:
        stopped = []
        for colour in COLOURS:
            removed = self._on_hosts(self.hosts, lambda sh: self.runtime.remove(sh, colour))
            hosts = [h for h, done in removed.items() if done]
            if hosts:
                stopped.append(f"{colour} on {', '.join(hosts)}")
        self._on_hosts(self.router_hosts, lambda sh: self.routers[sh.name].reset())
        self.state._transaction(lambda: self.state._unlink("scale-down.json"))
        if purge:
            self.state.purge()
        return stopped

    def close(self) -> None:
        self.runtime.close()
        self.pool.close()


class DockerRuntime:
    """run.mode docker: the colour's container on each host's Docker engine, through the SSH connection."""

    def __init__(self, target: ServersTarget) -> None:
        self.target = target
        self.run = target.config.run
        self._apis: dict[str, DockerAPI] = {}

    def api(self, sh: Shell) -> DockerAPI:
        if sh.name not in self._apis:
            api = DockerAPI("unix://" + sh.dial_unix(self.run.docker_socket), retry_for=2.0)
            api.where = f"{sh.name}:{self.run.docker_socket}"  # messages name the host's socket, not our forward
            self._apis[sh.name] = api
        return self._apis[sh.name]

    def name(self, colour: Colour) -> str:
        return safe_name(f"{self.target.settings.app}-{self.target.settings.environment}-{colour}")

    def deploy(self, sh: Shell, colour: Colour, version: str) -> None:
        api, name = self.api(sh), self.name(colour)
        image = render(self.run.image, version=version)
        ensure_image(api, image, self.run.pull)
        api.remove(name)
        body = colour_container(self.run, self.target.settings, colour, version, image=image,
                                host_port=self.target.ports[colour], bind=self.run.bind, network=None)
        api.call("POST", "/containers/create", params={"name": name}, json=body)
        api.start(name)

    def crashed(self, sh: Shell, colour: Colour) -> str | None:
        return crashed(self.api(sh), self.name(colour))

    def state(self, sh: Shell, colour: Colour) -> ColourState:
        info = self.api(sh).inspect(self.name(colour))
        if info is None:
            return ColourState(colour=colour, detail="no container")
        running = bool(info["State"].get("Running"))
        ready = running and self.target.health(sh.name, colour, timeout=1.0) is None
        version = (info["Config"].get("Labels") or {}).get(LABEL + "version")
        how = "running" if running else f"{info['State'].get('Status', 'stopped')}"
        return ColourState(colour=colour, version=version, running=running, ready=ready, replicas=int(running),
                           detail=f"container {info['Id'][:12]} {how}")

    def scale(self, sh: Shell, colour: Colour, replicas: int) -> None:
        api, name = self.api(sh), self.name(colour)
        if replicas <= 0:
            api.stop(name, self.target.config.stop_timeout, missing_ok=True)
        elif api.inspect(name) is None:
            raise TargetError(f"{colour} has never been deployed on {sh.name} (no container {name}); nothing to start")
        else:
            api.start(name)

    def remove(self, sh: Shell, colour: Colour) -> bool:
        return self.api(sh).remove(self.name(colour))

    def close(self) -> None:
        for api in self._apis.values():
            api.close()


class CommandRuntime:
    """run.mode command: the user's templates on each host; the version of each colour in a file there."""

    def __init__(self, target: ServersTarget) -> None:
        self.target = target
        self.run = target.config.run

    def _version_file(self, colour: Colour) -> str:
        return shlex.quote(str(self.target.dir / f"{colour}.version"))

    def _version(self, sh: Shell, colour: Colour) -> str:
        """The version recorded for `colour` on the host; '' when none is."""
        done = sh.run(f"cat {self._version_file(colour)} 2>/dev/null", timeout=30)
        return done.stdout.strip() if done.ok else ""

    def _command(self, sh: Shell, step: str, colour: Colour, version: str = "") -> CommandResult:
        """Run `run.<step>`; the error names the step and the host, never the command (it may hold a secret)."""
        template = getattr(self.run, step)
        command = render(template, colour=colour, version=version, port=self.target.ports[colour],
                         app=self.target.settings.app, environment=self.target.settings.environment)
        done = sh.run(command, timeout=self.run.timeout)
        if not done.ok and step != "status":
            raise TargetError(f"run.{step} for {colour} on {sh.name} exited {done.exit_status}: "
                              f"{done.last_error_line()}")
        return done

    def deploy(self, sh: Shell, colour: Colour, version: str) -> None:
        if self.run.deploy:
            self._command(sh, "deploy", colour, version)
        record = sh.run(f"mkdir -p {shlex.quote(str(self.target.dir))} && printf '%s\\n' {shlex.quote(version)} > "
                        f"{self._version_file(colour)}", timeout=30)
        if not record.ok:
            raise TargetError(f"cannot record the version of {colour} on {sh.name} in {self.target.dir}: "
                              f"{record.last_error_line()}")
        self._command(sh, "start", colour, version)

    def crashed(self, sh: Shell, colour: Colour) -> str | None:
        if self.run.status is None:
            return None  # the health path decides
        done = self._command(sh, "status", colour)
        return None if done.ok else f"run.status says {colour} is not running: {done.last_error_line()}"

    def state(self, sh: Shell, colour: Colour) -> ColourState:
        version = self._version(sh, colour) or None
        ready = self.target.health(sh.name, colour, timeout=1.0) is None
        running = ready if self.run.status is None else self._command(sh, "status", colour).ok
        return ColourState(colour=colour, version=version, running=running, ready=ready, replicas=int(running),
                           detail="running" if running else "stopped")

    def scale(self, sh: Shell, colour: Colour, replicas: int) -> None:
        self._command(sh, "stop" if replicas <= 0 else "start", colour, self._version(sh, colour))

    def remove(self, sh: Shell, colour: Colour) -> bool:
        had = sh.run(f"test -e {self._version_file(colour)}", timeout=30).ok
        self._command(sh, "stop", colour)
        sh.run(f"rm -f {self._version_file(colour)}", timeout=30)
        return had

    def close(self) -> None:
        pass
