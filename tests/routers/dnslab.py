"""A real BIND9 (Debian bind9) for the DNS router's tests and bench: its own named.conf, zone and TSIG key in a
folder, on 127.0.0.1 and a free port, run in the foreground (-g) and stopped with its process group."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rdatatype

ZONE = "example.test"
NAME = "app"  # the one name the key may update (A records)
KEY = "bluegreen-key"
SECRET = base64.b64encode(b"bluegreen test secret, 32 bytes!").decode()


def named_binary() -> str | None:
    return shutil.which("named") or next((p for p in ("/usr/sbin/named",) if Path(p).exists()), None)


def nsupdate_binary() -> str | None:
    return shutil.which("nsupdate")


@dataclass
class Bind:
    dir: Path
    port: int
    process: subprocess.Popen

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def query(self, name: str = NAME, rdtype: str = "A") -> list[str]:
        """What the server holds for `name` (relative to the zone): the values, sorted; [] for none."""
        q = dns.message.make_query(f"{name}.{ZONE}.", rdtype)
        response = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5)
        return sorted(r.to_text() for rrset in response.answer for r in rrset)

    def ttl(self, name: str = NAME, rdtype: str = "A") -> int | None:
        q = dns.message.make_query(f"{name}.{ZONE}.", rdtype)
        response = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=5)
        return response.answer[0].ttl if response.answer else None

    def nsupdate(self, *commands: str, secret: str = SECRET) -> subprocess.CompletedProcess:
        """The real nsupdate, as a person would change the record by hand."""
        script = "\n".join([f"server 127.0.0.1 {self.port}", f"zone {ZONE}.", *commands, "send", ""])
        return subprocess.run([nsupdate_binary() or "nsupdate", "-y", f"hmac-sha256:{KEY}:{secret}"], input=script,
                              capture_output=True, text=True, timeout=30)


def start_bind(folder: Path, port: int, extra_names: tuple[str, ...] = ()) -> Bind:
    """named -g with a zone example.test whose update-policy lets KEY change only app.example.test A
    (and `extra_names`' A records)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zone.db").write_text(
        f"$TTL 60\n@ IN SOA ns.{ZONE}. admin.{ZONE}. 1 3600 600 86400 1\n@ IN NS ns.{ZONE}.\nns IN A 127.0.0.1\n")
    grants = "".join(f"    grant {KEY} name {n}.{ZONE}. A;\n" for n in (NAME, *extra_names))
    (folder / "named.conf").write_text(f"""\
key "{KEY}" {{ algorithm hmac-sha256; secret "{SECRET}"; }};
options {{
  directory "{folder}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  pid-file "{folder}/named.pid";
  session-keyfile "{folder}/session.key";
  recursion no;
  dnssec-validation no;
  notify no;
}};
controls {{ }};
zone "{ZONE}" {{
  type primary;
  file "{folder}/zone.db";
  update-policy {{
{grants}  }};
}};
""")
    log = open(folder / "named.log", "w")
    process = subprocess.Popen([named_binary() or "named", "-g", "-n", "1", "-c", str(folder / "named.conf")],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    bind = Bind(folder, port, process)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"named exited with {process.returncode}: {(folder / 'named.log').read_text()[-2000:]}")
        try:
            q = dns.message.make_query(f"{ZONE}.", dns.rdatatype.SOA)
            if dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5).flags & dns.flags.AA:
                return bind
        except (OSError, dns.exception.DNSException):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"named did not answer on {port}: {(folder / 'named.log').read_text()[-2000:]}")
        time.sleep(0.05)


def environ() -> dict[str, str]:
    return {**os.environ, "BLUEGREEN_TSIG_SECRET": SECRET}
