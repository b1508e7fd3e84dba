#!/usr/bin/env python3
"""The DNS router's data plane: a deploy and a rollback through a real BIND9, with clients that cache the answer.

    python bench/dns.py [--ttl 2] [--clients 20] [--json out.json]

(bluegreen must be importable: the venv `make` installs, or PYTHONPATH=src; Debian bind9 installed.)

1. A BIND9 (`named -g`, its own named.conf, zone and TSIG key in a temp dir) on 127.0.0.1 and a free port,
   its update-policy granting the key the one name app.example.test A (tests/routers/dnslab.py).
2. The example app, blue on 127.0.0.2 and green on 127.0.0.3 (the local target's `addresses`), the router
   `kind: dns` with the given TTL, `scale_down_delay: 0s` (which bluegreen raises to TTL + a margin).
3. `bluegreen deploy` v1, then --clients client threads: each resolves the name by asking that BIND (no
   resolver in between) and keeps the answer for its TTL (a TTL-honouring cache), holds one kept-alive
   HTTP/1.1 connection to the address it resolved (a new one when the answer changes) and sends GET /version
   back to back, recording which version answered. They start spread over one TTL, so their caches expire
   at different moments.
4. `bluegreen deploy` v2 (blue -> green), then `bluegreen rollback` (green -> blue). A watcher polls the
   authoritative record every 5 ms: the switch time is when it changed.

Per switch: failed requests (errors, non-2xx), the time from the switch until the LAST client got the new
colour (bound: TTL + 1 s), and the old colour's last answer after the switch (it must keep serving until
every client moved: 0 failed requests says it did).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# this file's folder first on sys.path would make `import dns` this file, not dnspython
sys.path = [str(ROOT / "tests" / "routers"), str(ROOT / "src"),
            *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench")]

import dns.message  # noqa: E402
import dns.query  # noqa: E402

from dnslab import KEY, NAME, SECRET, ZONE, start_bind  # noqa: E402

RECORD = f"{NAME}.{ZONE}."


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def resolve(port: int) -> tuple[str | None, int]:
    """(address, ttl) from the authoritative server, as a stub resolver with a cache would get it."""
    response = dns.query.udp(dns.message.make_query(RECORD, "A"), "127.0.0.1", port=port, timeout=2)
    for rrset in response.answer:
        return next(iter(rrset)).to_text(), rrset.ttl
    return None, 1


class Client(threading.Thread):
    def __init__(self, dns_port: int, app_port: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.dns_port, self.app_port, self.stop = dns_port, app_port, stop
        self.log: list[tuple[float, str | None]] = []  # (time, version answered; None: failed)

    def run(self) -> None:
        address, expires, conn = None, 0.0, None
        while not self.stop.is_set():
            now = time.monotonic()
            if now >= expires:  # the cached answer expired: ask again
                new, ttl = resolve(self.dns_port)
                expires = now + ttl
                if new != address and conn is not None:
                    conn.close()
                    conn = None
                address = new
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(address, self.app_port, timeout=2)
                conn.request("GET", "/version")
                response = conn.getresponse()
                body = response.read().decode().strip()
                self.log.append((time.monotonic(), body if response.status == 200 else None))
            except (OSError, http.client.HTTPException):
                self.log.append((time.monotonic(), None))
                conn = None
            time.sleep(0.01)


def watch(port: int, stop: threading.Event, changes: list[tuple[float, str | None]]) -> None:
    last = object()
    while not stop.is_set():
        value, _ = resolve(port)
        if value != last:
            changes.append((time.monotonic(), value))
            last = value
        time.sleep(0.005)


def measure(clients: list[Client], switched_at: float, new: str, old: str, until: float) -> dict:
    failed = sum(1 for c in clients for t, v in c.log if switched_at <= t < until and v is None)
    moved = []
    for c in clients:
        first_new = next((t for t, v in c.log if t >= switched_at and v == new), None)
        moved.append(None if first_new is None else first_new - switched_at)
    last_old = max((t for c in clients for t, v in c.log if switched_at <= t < until and v == old), default=None)
    return {
        "failed_requests": failed,
        "requests": sum(1 for c in clients for t, _ in c.log if switched_at <= t < until),
        "last_client_on_new_s": None if None in moved else round(max(moved), 3),
        "old_colour_last_answer_s": None if last_old is None else round(last_old - switched_at, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ttl", type=int, default=2)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bind = start_bind(folder / "bind", free_port())
        app_port = free_port()
        config = folder / "bluegreen.yml"
        config.write_text(f"""\
app: dnsbench
environments:
  bench:
    url: http://{RECORD.rstrip('.')}:{app_port}
    target:
      kind: local
      command: ["{{python}}", "{ROOT / 'examples' / 'app' / 'app.py'}", "--host", "{{host}}", "--port", "{{port}}",
                "--version", "{{version}}", "--colour", "{{colour}}"]
      addresses: {{blue: 127.0.0.2, green: 127.0.0.3}}
      ports: {{blue: {app_port}, green: {app_port}}}
      state_dir: state
      router: {{kind: dns, server: "{bind.server}", zone: {ZONE}, name: {NAME}, tsig_key: {KEY}, ttl: {args.ttl}}}
scale_down_delay: 0s
smoke:
  checks: [{{name: version, path: /version, expect: {{status: 200, body_contains: "{{version}}"}}}}]
""")
        env = {**os.environ, "BLUEGREEN_TSIG_SECRET": SECRET, "PYTHONPATH": str(ROOT / "src")}

        def cli(*argv: str) -> None:
            done = subprocess.run([sys.executable, "-m", "bluegreen", *argv, "-c", str(config)], cwd=folder, env=env,
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                raise SystemExit(f"bluegreen {' '.join(argv)} failed: {done.stderr[-2000:]}")

        stop, watching = threading.Event(), threading.Event()
        changes: list[tuple[float, str | None]] = []
        clients: list[Client] = []
        rows = []
        try:
            cli("deploy", "--version", "1")
            watcher = threading.Thread(target=watch, args=(bind.port, watching, changes), daemon=True)
            watcher.start()
            clients = [Client(bind.port, app_port, stop) for _ in range(args.clients)]
            for c in clients:  # spread over one TTL: their cached answers expire at different times, as real ones do
                c.start()
                time.sleep(args.ttl / args.clients)
            time.sleep(args.ttl + 1)
            for argv, new, old, label in ((("deploy", "--version", "2"), "2", "1", "deploy blue -> green"),
                                          (("rollback",), "1", "2", "rollback green -> blue")):
                before = len(changes)
                cli(*argv)
                switched_at = next(t for t, _ in changes[before:])
                time.sleep(args.ttl + 2)
                rows.append({"switch": label, "ttl_s": args.ttl, "clients": args.clients,
                             **measure(clients, switched_at, new, old, time.monotonic())})
        finally:
            stop.set()
            watching.set()
            for c in clients:
                c.join(5)
            subprocess.run([sys.executable, "-m", "bluegreen", "down", "-c", str(config)], cwd=folder, env=env,
                           capture_output=True, timeout=120)
            bind.process.terminate()
            bind.process.wait(20)

    print(f"{'switch':26} {'TTL':>4} {'requests':>9} {'failed':>7} {'last client on new':>19} {'bound':>6} "
          f"{'old colour last answer':>23}")
    for r in rows:
        print(f"{r['switch']:26} {r['ttl_s']:>3}s {r['requests']:>9} {r['failed_requests']:>7} "
              f"{r['last_client_on_new_s']:>18}s {r['ttl_s'] + 1:>5}s {r['old_colour_last_answer_s']:>22}s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    ok = all(r["failed_requests"] == 0 and r["last_client_on_new_s"] is not None
             and r["last_client_on_new_s"] <= r["ttl_s"] + 1 for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
