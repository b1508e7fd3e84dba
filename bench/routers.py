#!/usr/bin/env python3
"""Every router under the same load: bluegreen's switch against the router's own raw switch by hand.

    python bench/routers.py [--routers caddy,haproxy] [--switches 20] [--connections 50] [--json out.json] [--shell local]

(bluegreen must be importable: the venv `make` installs, or PYTHONPATH=src.)

Per router kind (default all five), in a temp dir and on free ports of 127.0.0.1 only:
1. two colour backends (an asyncio server each, in its own process: every response says its colour in
   the body), fast enough that the proxy, not the backend, limits the throughput;
2. the router built by `make_router` from a config of `kind` and `listen` only (plus free ports for the
   admin/API addresses whose defaults are fixed ports), `manage: true`; `check()` starts the real proxy;
3. one switch to blue, then, under load, --switches switches by bluegreen (`router.switch(to, deadline)`,
   in process, as a deploy or a rollback makes them), then --switches raw switches by hand
   (`router.raw_switch_command(to)`, the runbook's command, run by a shell), --pause seconds apart;
4. `stop()`. A kind whose module is not in this tree is shown as "not built"; one that fails is an error
   row and the bench goes on with the next kind.

Load: a separate process with an asyncio client on --connections kept-alive HTTP/1.1 connections through
the live URL, sending GET / back to back; it records, per response, when the request was sent, when the
answer came and which colour answered. Failed requests: connection errors, timeouts, non-2xx and answers
from neither colour. wrk is not used: it cannot say which colour answered, and the client here is
the load.

Switch latency: from the switch call to the LAST response from the old colour (0 when none came after
the call). It includes the time in flight of requests the proxy had already routed to the old colour,
so it cannot be lower than one request's latency under this load: on a fast router that, not the
switch, dominates. "Stale": responses from the old colour to requests SENT after the switch call
returned; a switch that returns before new requests reach the new colour breaks its promise, so
bluegreen's stale must be 0. (A raw switch of an asynchronous router, e.g. Traefik's file provider,
returns before the proxy applied it: its stale count is in the JSON, for information.)

Fair comparison: the raw command runs in a shell that is already open (started before the load, as the
on-call person's terminal is); its clock starts when the command line is written to that shell's stdin
and stops when the shell reports the command's end (`shell_roundtrip_ms`, the open shell's round trip
for `:`, is ~0.01 ms). A fresh `sh -c` per switch would add its start-up (~1.7 ms here, idle: as much
as bluegreen's whole switch call) to the raw side only. What the command itself starts (mv, socat,
curl) is counted, because that is the raw switch: for Caddy (and nginx) both sides do the same atomic
rename, bluegreen in process (~1 ms with its read-back) and the runbook's `printf > tmp && mv` with a
fork+exec of mv (~2-4 ms on these two loaded cores). Both latencies are then dominated by the requests
already in flight to the old colour (`request_latency_median_ms`, ~5-7 ms for Caddy at ~6-8k req/s here),
so on a busy two-core machine the medians move by a few ms from run to run, and a ratio below 1 means
bluegreen's in-process switch beats the same switch by hand. Each live colour is also read back from the
router before the next switch (read() under load, for every kind): a mismatch ends that router's run.

Exit code 0 when every built router met the issue's expectation (0 failed requests, 0 stale, at least
20 switches, bluegreen's median within 1.5x of the raw median, or within 1 ms of it); 1 otherwise;
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bluegreen.config import ProxyRouter
    from bluegreen.routers import Router

HOST = "127.0.0.1"
KINDS = ("caddy", "haproxy", "envoy", "traefik", "nginx")
COLOURS = ("blue", "green")
MIN_SWITCHES = 20
MAX_RATIO = 1.5
RATIO_SLACK_MS = 1.0  # medians within this of each other are equal: the clock and the load's jitter
SWITCH_DEADLINE = 10.0  # seconds for one switch (bluegreen's timeouts.switch is 30 s)
SETTLE = 1.0  # load runs this long before the first measured switch and after the last
# Response codes of a sample (see Load); a colour is its index in COLOURS.
FAILED, NEITHER, NON_2XX = 2, 3, 4


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection((HOST, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{process.args[-1] if isinstance(process.args, list) else process.args} did not listen on "
                       f"{HOST}:{port}")


# --- the colour backends (a child process each: `--serve PORT COLOUR`) ----------------------------------


class Backend(asyncio.Protocol):
    """HTTP/1.1 keep-alive that answers every request (GET, no body) with its colour; pipelining-safe."""

    response = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.rfind(b"\r\n\r\n")
        if end < 0:
            return
        heads, self.buffer = self.buffer[: end + 4], self.buffer[end + 4 :]
        self.transport.write(self.response * heads.count(b"\r\n\r\n"))  # type: ignore[attr-defined]
        lower = heads.lower()
        if b"connection: close" in lower or (b"http/1.0" in lower and b"keep-alive" not in lower):
            self.transport.close()


async def serve(port: int, colour: str) -> None:
    body = colour.encode()
    Backend.response = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Colour: " + body
                        + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    server = await asyncio.get_running_loop().create_server(Backend, HOST, port, backlog=1024)
    parent = os.getppid()
    async with server:
        while os.getppid() == parent:  # ends with the bench, even when the bench was killed
            await asyncio.sleep(0.5)


# --- the load (a child process: `--load URL`), writing its samples to files at the end --------------------


class Load:
    """Kept-alive connections sending GET / back to back; per response: sent, received (monotonic, which
    is one clock for every process of the machine), and a code: 0 blue, 1 green, FAILED, NEITHER, NON_2XX."""

    def __init__(self, url: str, connections: int) -> None:
        host_port = url.removeprefix("http://").rstrip("/")
        self.host, _, port = host_port.rpartition(":")
        self.port = int(port)
        self.connections = connections
        self.request = f"GET / HTTP/1.1\r\nHost: {host_port}\r\nUser-Agent: bluegreen-bench\r\n\r\n".encode()
        self.sent, self.received, self.codes = array("d"), array("d"), bytearray()
        self.errors: dict[str, int] = {}
        self.stopping = asyncio.Event()

    async def run(self, max_seconds: float) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stopping.set)
        loop.call_later(max_seconds, self.stopping.set)
        await asyncio.gather(*(self.worker() for _ in range(self.connections)))

    def note(self, sent: float, code: int, error: str | None = None) -> None:
        self.sent.append(sent)
        self.received.append(time.monotonic())
        self.codes.append(code)
        if error:
            self.errors[error] = self.errors.get(error, 0) + 1

    async def worker(self) -> None:
        reader = writer = None
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                async with asyncio.timeout(5):
                    if writer is None:
                        reader, writer = await asyncio.open_connection(self.host, self.port)
                        sent = time.monotonic()
                    writer.write(self.request)
                    status, body, close = await read_response(reader)  # type: ignore[arg-type]
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError) as exc:
                self.note(sent, FAILED, type(exc).__name__)
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)  # a refused connection fails at once: do not spin
                continue
            if not 200 <= status < 300:
                self.note(sent, NON_2XX, f"HTTP {status}")
            elif body in (b"blue", b"green"):
                self.note(sent, 0 if body == b"blue" else 1)
            else:
                self.note(sent, NEITHER, "neither colour")
            if close:  # the proxy closes this connection after the answer: not a failure, reconnect
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    def save(self, out: Path) -> None:
        with open(out.with_suffix(".sent"), "wb") as f:
            self.sent.tofile(f)
        with open(out.with_suffix(".received"), "wb") as f:
            self.received.tofile(f)
        out.with_suffix(".codes").write_bytes(bytes(self.codes))
        out.with_suffix(".errors").write_text(json.dumps(self.errors))


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server closes the connection); Content-Length or chunked bodies."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
    status = int(head.split(" ", 2)[1])
    headers = dict(line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)
    close = headers.get("connection", "").strip() == "close"
    if "chunked" in headers.get("transfer-encoding", ""):
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            body += (await reader.readexactly(size + 2))[:-2]
        await reader.readuntil(b"\r\n")
        return status, body, close
    return status, await reader.readexactly(int(headers.get("content-length", "0"))), close


def read_samples(out: Path) -> tuple[array, array, bytes, dict[str, int]]:
    sent, received = array("d"), array("d")
    sent.frombytes(out.with_suffix(".sent").read_bytes())
    received.frombytes(out.with_suffix(".received").read_bytes())
    return sent, received, out.with_suffix(".codes").read_bytes(), json.loads(out.with_suffix(".errors").read_text())


# --- the raw switch, by hand, in a shell that is already open --------------------------------------------


class Shell:
    """/bin/sh reading commands from a pipe, as an on-call person's open terminal; run() times one command
    from the moment its line is written to the shell until the shell reports it done."""

    MARK = "__bench_done"

    def __init__(self, cwd: Path) -> None:
        self.process = subprocess.Popen(["/bin/sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, cwd=cwd, text=True, bufsize=1)

    def run(self, command: str, timeout: float = SWITCH_DEADLINE) -> tuple[float, float, int, str]:
        """(started, ended, exit status, output); raises RuntimeError when the shell does not answer."""
        assert self.process.stdin and self.process.stdout
        started = time.monotonic()
        self.process.stdin.write(f"{command}\necho {self.MARK} $?\n")
        self.process.stdin.flush()
        output: list[str] = []
        timer = time.monotonic() + timeout
        while time.monotonic() < timer:  # bounded: a line per iteration, and the shell ends when stdin closes
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"the shell ended while running: {command}")
            if line.startswith(self.MARK):
                return started, time.monotonic(), int(line.split()[1]), "".join(output)
            output.append(line)
        raise RuntimeError(f"the raw command did not end within {timeout:g}s: {command}")

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- one router ---------------------------------------------------------------------------------------


@dataclass
class Switch:
    how: str  # "bluegreen" or "raw"
    old: str
    new: str
    start: float  # monotonic: the switch call began / the raw command line was written
    end: float  # ... returned / the shell said it was done


@dataclass
class Result:
    router: str
    status: str = "ok"  # ok | not built | error: <reason>
    requests: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    requests_per_second: float = 0.0
    request_latency_median_ms: float | None = None  # the floor of any switch latency (time in flight)
    stale: int = 0  # bluegreen's switches: old-colour answers to requests sent after the call returned
    stale_raw: int = 0
    switches: int = 0
    raw_switches: int = 0
    new_not_seen: int = 0  # switches after which the new colour never answered before the next one
    bluegreen_ms: dict[str, float] = field(default_factory=dict)  # min / median / max switch latency
    raw_ms: dict[str, float] = field(default_factory=dict)
    bluegreen_call_median_ms: float | None = None  # how long router.switch() itself took
    raw_call_median_ms: float | None = None  # how long the raw command took in the open shell
    shell_roundtrip_ms: float | None = None  # the open shell's round trip for `:`
    ratio: float | None = None  # bluegreen median / raw median
    met: bool | None = None
    reasons: list[str] = field(default_factory=list)


def router_config(kind: str, listen: str) -> ProxyRouter:
    """The kind's config model, from `kind` and `listen` only; address fields that default to a fixed port
    (Envoy's admin, Traefik's API) get a free one, so the bench never collides with a proxy running here."""
    from pydantic import TypeAdapter

    from bluegreen.config import RouterConfig

    config = TypeAdapter(RouterConfig).validate_python({"kind": kind, "listen": listen, "manage": True})
    fixed_ports = {"admin": f"{HOST}:{free_port()}", "api": f"http://{HOST}:{free_port()}"}
    updates = {name: value for name, value in fixed_ports.items() if name in type(config).model_fields}
    return config.model_copy(update=updates) if updates else config


def build_router(kind: str, listen: str, upstreams: dict[str, list[str]], state_dir: Path) -> Router | None:
    """The router, or None when this tree has no module for the kind yet."""
    from bluegreen.routers import make_router

    try:
        return make_router(router_config(kind, listen), upstreams=upstreams, state_dir=state_dir, app="bench")
    except ModuleNotFoundError as exc:
        if exc.name == f"bluegreen.routers.{kind}":
            return None
        raise


def through_local_shell(router: Router) -> None:
    """--shell local: the proxy bluegreen started, from now on reached as a router on another host is (files by sh
    commands, sockets by Shell.dial_*, probes by Shell.probe_tcp), through remote.LocalShell: the cost of a remote
    switch minus the network. (A router made with a shell refuses manage: true, so the started one is switched.)"""
    from bluegreen.remote import LocalShell
    from bluegreen.routers.files import ShellFiles

    router.shell = LocalShell()
    router.files = ShellFiles(router.shell)


def bench_router(kind: str, args: argparse.Namespace, work: Path) -> Result:
    result = Result(kind)
    work.mkdir(parents=True)
    children: list[subprocess.Popen] = []
    router: Router | None = None
    shell: Shell | None = None
    try:
        ports = {c: free_port() for c in COLOURS}
        for colour, port in ports.items():
            children.append(subprocess.Popen([sys.executable, __file__, "--serve", str(port), colour],
                                             start_new_session=True))
            wait_listening(port, children[-1])
        router = build_router(kind, f"{HOST}:{free_port()}", {c: [f"{HOST}:{p}"] for c, p in ports.items()},
                              work / "state")
        if router is None:
            result.status = "not built"
            return result
        router.check()  # manage: true: writes the proxy's config and starts it
        if args.shell == "local":
            through_local_shell(router)
        router.switch("blue", time.monotonic() + SWITCH_DEADLINE)
        shell = Shell(work)
        result.shell_roundtrip_ms = statistics.median(ms(e - s) for s, e, _, _ in (shell.run(":") for _ in range(20)))
        samples = work / "samples"
        load = subprocess.Popen([sys.executable, __file__, "--load", router.live_url, "--connections",
                                 str(args.connections), "--out", str(samples), "--max-seconds",
                                 str(args.switches * 2 * (args.pause + 2) + 60)], start_new_session=True)
        children.append(load)
        switches = run_switches(router, shell, args, load)
        load.send_signal(signal.SIGINT)
        if load.wait(30) != 0:
            raise RuntimeError(f"the load process exited {load.returncode}")
        summarize(result, switches, *read_samples(samples))
    except Exception as exc:  # one router's failure is a row of the table, and the bench goes on
        result.status = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")[:300]
    finally:
        if shell:
            shell.close()
        if router is not None:
            try:
                router.stop()
            except Exception as exc:  # noqa: BLE001 - reported, the other children still need stopping
                log(f"{kind}: stop failed: {exc}")
        for child in children:
            stop_child(child)
    return result


def run_switches(router: Router, shell: Shell, args: argparse.Namespace, load: subprocess.Popen) -> list[Switch]:
    """bluegreen's switches, then the raw ones, alternating colours; the live colour is read back from the
    router before each switch (so every kind's read() is exercised under load too)."""
    switches: list[Switch] = []
    old = "blue"  # bench_router switched to blue before the load began
    time.sleep(SETTLE)
    for how in ("bluegreen", "raw"):
        for _ in range(args.switches):
            if load.poll() is not None:
                raise RuntimeError(f"the load process ended early (exit {load.returncode})")
            if (live := router.live()) != old:
                raise RuntimeError(f"{router.name} reads back {live!r} {args.pause:g} s after a switch to {old}")
            new = "green" if old == "blue" else "blue"
            if how == "bluegreen":
                start = time.monotonic()
                router.switch(new, start + SWITCH_DEADLINE)
                end = time.monotonic()
            else:
                command = router.raw_switch_command(new)
                start, end, status, output = shell.run(command)
                if status:
                    raise RuntimeError(f"the raw switch exited {status}: {command}: {output.strip()[-200:]}")
            switches.append(Switch(how, old, new, start, end))
            old = new
            time.sleep(args.pause)
    time.sleep(SETTLE - args.pause if SETTLE > args.pause else 0)
    return switches


def stop_child(child: subprocess.Popen) -> None:
    if child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(5)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    except ProcessLookupError:
        pass


# --- figures --------------------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    return seconds * 1000


def spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)} if values else {}


def summarize(result: Result, switches: list[Switch], sent: array, received: array, codes: bytes,
              errors: dict[str, int]) -> None:
    order = sorted(range(len(received)), key=received.__getitem__)
    times = [received[i] for i in order]
    result.requests = len(codes)
    result.failed = sum(1 for c in codes if c >= FAILED)
    result.errors = errors
    if times:
        result.requests_per_second = round(result.requests / max(times[-1] - min(sent), 1e-9))
        answered = [received[i] - sent[i] for i in range(0, len(codes), 10) if codes[i] < FAILED]  # every 10th
        result.request_latency_median_ms = ms(statistics.median(answered)) if answered else None
    latency: dict[str, list[float]] = {"bluegreen": [], "raw": []}
    calls: dict[str, list[float]] = {"bluegreen": [], "raw": []}
    for i, sw in enumerate(switches):
        window_end = switches[i + 1].start if i + 1 < len(switches) else times[-1]
        window = [order[j] for j in range(bisect.bisect_left(times, sw.start), bisect.bisect_left(times, window_end))]
        old, new = COLOURS.index(sw.old), COLOURS.index(sw.new)
        last_old = max((received[j] for j in window if codes[j] == old), default=sw.start)
        latency[sw.how].append(ms(last_old - sw.start))
        calls[sw.how].append(ms(sw.end - sw.start))
        stale = sum(1 for j in window if codes[j] == old and sent[j] > sw.end)
        if sw.how == "bluegreen":
            result.stale += stale
        else:
            result.stale_raw += stale
        result.new_not_seen += not any(codes[j] == new for j in window)
    result.switches, result.raw_switches = len(latency["bluegreen"]), len(latency["raw"])
    result.bluegreen_ms, result.raw_ms = spread(latency["bluegreen"]), spread(latency["raw"])
    result.bluegreen_call_median_ms = statistics.median(calls["bluegreen"]) if calls["bluegreen"] else None
    result.raw_call_median_ms = statistics.median(calls["raw"]) if calls["raw"] else None
    ours, raw = result.bluegreen_ms.get("median"), result.raw_ms.get("median")
    if ours is not None and raw is not None:
        result.ratio = ours / raw if raw > 0 else None
    reasons = []
    if result.switches < MIN_SWITCHES:
        reasons.append(f"{result.switches} switches (need >= {MIN_SWITCHES})")
    if result.failed:
        reasons.append(f"{result.failed} failed requests")
    if result.stale:
        reasons.append(f"{result.stale} stale answers after bluegreen's switch returned")
    if result.new_not_seen:
        reasons.append(f"the new colour never answered after {result.new_not_seen} switch(es)")
    if ours is not None and raw is not None and ours > raw * MAX_RATIO and ours - raw > RATIO_SLACK_MS:
        reasons.append(f"median {ours:.1f} ms > {MAX_RATIO}x the raw {raw:.1f} ms")
    result.met, result.reasons = not reasons, reasons


def table(results: list[Result]) -> str:
    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = ["| router | requests | failed | stale | bluegreen switch min / median / max ms | raw switch median ms "
             "| ratio |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        if r.status != "ok":
            lines.append(f"| {r.router} | {r.status} | | | | | |")
            continue
        b = r.bluegreen_ms
        lines.append(f"| {r.router} | {r.requests:,} | {r.failed} | {r.stale} | {f(b.get('min'))} / "
                     f"{f(b.get('median'))} / {f(b.get('max'))} | {f(r.raw_ms.get('median'))} | "
                     f"{'-' if r.ratio is None else f'{r.ratio:.2f}x'} |")
    return "\n".join(lines)


# --- main -----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", default=",".join(KINDS), help=f"comma-separated kinds (default {','.join(KINDS)})")
    parser.add_argument("--switches", type=int, default=MIN_SWITCHES,
                        help=f"switches by bluegreen, and as many raw ones, per router (default {MIN_SWITCHES})")
    parser.add_argument("--connections", type=int, default=50, help="kept-alive connections of the load (default 50)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between switches (default 0.5)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (proxy configs and logs)")
    parser.add_argument("--shell", choices=("none", "local"), default="none",
                        help="local: the router's I/O through remote.LocalShell, as for a proxy on another host "
                             "(the cost of a remote switch minus the network); default none: in process")
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "COLOUR"), help=argparse.SUPPRESS)  # a backend
    parser.add_argument("--load", metavar="URL", help=argparse.SUPPRESS)  # the load process
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, default=600, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    if args.serve:
        asyncio.run(serve(int(args.serve[0]), args.serve[1]))
        return 0
    if args.load:
        load = Load(args.load, args.connections)
        asyncio.run(load.run(args.max_seconds))
        load.save(Path(args.out))
        return 0
    kinds = [k.strip() for k in args.routers.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        print(f"bench: --routers: unknown kind(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(KINDS)}",
              file=sys.stderr)
        return 2
    if not 1 <= args.switches <= 500 or not 1 <= args.connections <= 1000 or not 0.05 <= args.pause <= 10:
        print("bench: --switches must be 1..500, --connections 1..1000, --pause 0.05..10", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through the finally blocks, which stop the proxies
    work = Path(tempfile.mkdtemp(prefix="bluegreen-bench-routers-"))
    results = []
    try:
        for kind in kinds:
            log(f"{kind}: {args.switches} + {args.switches} switches under {args.connections} connections")
            started = time.monotonic()
            results.append(bench_router(kind, args, work / kind))
            log(f"{kind}: {results[-1].status} ({time.monotonic() - started:.0f} s)")
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(f"{args.switches} switches by bluegreen and {args.switches} raw switches per router, {args.pause:g} s "
          f"apart, under {args.connections} kept-alive connections (127.0.0.1)"
          + (", the router's I/O through remote.LocalShell" if args.shell == "local" else "") + "\n")
    print(table(results))
    print("\nswitch latency: from the switch call to the last response from the old colour; stale: old-colour answers "
          "to requests sent after bluegreen's switch returned; ratio: bluegreen median / raw median")
    floors = ", ".join(f"{r.router} {r.request_latency_median_ms:.1f} ms" for r in results
                       if r.request_latency_median_ms is not None)
    if floors:
        print(f"median request latency under this load (the floor of any switch latency): {floors}")
    return verdict(results, args.json)


def verdict(results: list, json_path: str | None, *, need_one: bool = False) -> int:
    """Name each router that missed the expectation, write the JSON, and give the exit code: 1 when one missed
    (or, with `need_one`, when no router was built at all)."""
    built = [r for r in results if r.status != "not built"]
    for r in built:
        if not r.met:
            print(f"{r.router}: expectation NOT met: {'; '.join(r.reasons) or r.status}")
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 0 if (built or not need_one) and all(r.met for r in built) else 1


if __name__ == "__main__":
    sys.exit(main())
