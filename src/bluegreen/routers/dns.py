"""A DNS record switched by RFC 2136 dynamic update (dnspython), on any authoritative server that takes updates
signed with TSIG: BIND, PowerDNS, Knot, Windows DNS.

The record (A, AAAA or CNAME) names one colour's address: the host of each of its servers (several A/AAAA
values: round robin over them). The live value is read from the authoritative server itself, never from a
resolver. A switch is ONE update whose prerequisite is the value read (compare-and-swap): if the record changed
since (a hand edit, another run), the server refuses with NXRRSET and nothing changes. DNS cannot split
traffic, and clients keep the old answer up to the TTL (`cache_ttl`), which the engine plans for.
"""

from __future__ import annotations

import binascii
import ipaddress
import os
import shlex
import socket
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.tsig
import dns.update

from ..config import COLOURS, Colour
from ..config.routers import DnsRouter as DnsConfig
from ..errors import ConfigError, TargetError
from ..remote import Shell, split_host
from ..traffic import Weights, all_to, larger_share
from .base import Router

# The update's answers that mean "the prerequisite failed": the record is not what bluegreen read.
CHANGED = {dns.rcode.NXRRSET, dns.rcode.YXRRSET, dns.rcode.NXDOMAIN, dns.rcode.YXDOMAIN}


class DnsRouter(Router):
    kind = "dns"
    config: DnsConfig

    def __init__(self, config: DnsConfig, upstreams: dict[Colour, list[str]], state_dir: Path, app: str,
                 shell: Shell | None = None) -> None:
        self.config = config
        self.zone = dns.name.from_text(config.zone)
        self.record = dns.name.from_text(config.name.replace("{app}", app), origin=self.zone)
        self.rdtype = dns.rdatatype.from_text(config.type)
        self.server, self.port = config.host_port
        self.values: dict[Colour, frozenset[str]] = {c: self._values(c, upstreams[c]) for c in COLOURS}
        if self.values["blue"] & self.values["green"]:
            shared = ", ".join(sorted(self.values["blue"] & self.values["green"]))
            raise ConfigError(
                f"router dns: blue and green share the address {shared}, and a DNS record names a host, not a port: "
                "give each colour its own address (local target: addresses; servers: hosts per colour)")
        self._seen: dns.rdataset.Rdataset | None = None  # the value last read: the switch's prerequisite
        self._read_once = False
        self._replaced_ttl = 0  # the TTL of the answer the last switch replaced: how long clients may keep it

    @property
    def name(self) -> str:
        return f"dns {self.record.to_text()} {self.config.type} at {self.config.server}"

    def _values(self, colour: Colour, addresses: list[str]) -> frozenset[str]:
        """What the record holds when `colour` is live: its servers' hosts, in the record type's form."""
        hosts = [split_host(a, 0)[0] for a in addresses]  # host:port -> host
        if not hosts:
            raise ConfigError(f"router dns: {colour} has no address")
        if self.config.type == "CNAME":
            if len(set(hosts)) != 1:
                raise ConfigError(f"router dns: a CNAME names one host, but {colour} has {len(set(hosts))} "
                                  "(use type A or AAAA for several servers)")
            if _ip(hosts[0]):
                raise ConfigError(f"router dns: type CNAME needs a host name, but {colour} is at {hosts[0]} "
                                  "(use type A or AAAA for addresses)")
            return frozenset({dns.name.from_text(hosts[0]).to_text().lower()})
        version = 4 if self.config.type == "A" else 6
        wrong = [h for h in hosts if getattr(_ip(h), "version", None) != version]
        if wrong:
            fits = "CNAME" if _ip(wrong[0]) is None else ("AAAA" if version == 4 else "A")
            raise ConfigError(f"router dns: type {self.config.type} needs IPv{version} addresses, but {colour} is at "
                              f"{wrong[0]!r} (use type {fits})")
        return frozenset(str(_ip(h)) for h in hosts)

    # --- the one value ---------------------------------------------------------------------------

    def read(self) -> Weights | None:
        """The record as the authoritative server holds it now (an unsigned query straight to it)."""
        query = dns.message.make_query(self.record, self.rdtype)
        query.flags &= ~dns.flags.RD  # an authoritative answer, not a recursion
        response = self._ask(query, "read the record")
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN) or not response.flags & dns.flags.AA:
            raise TargetError(
                f"router {self.name}: the server does not answer authoritatively for {self.record.to_text()} "
                f"({dns.rcode.to_text(response.rcode())}): router.server must be a primary of zone {self.zone.to_text()}")
        found = next((r for r in response.answer if r.name == self.record), None)
        self._read_once = True
        if found is None:  # no such record yet: the first deploy creates it
            self._seen = None
            return None
        if found.rdtype != self.rdtype:
            raise TargetError(f"router {self.name}: {self.record.to_text()} is a {dns.rdatatype.to_text(found.rdtype)} "
                              f"record ({_show(found)}), not {self.config.type}: remove it, or set router.type")
        self._seen = dns.rdataset.from_rdata_list(found.ttl, list(found))
        held = frozenset(_text(r) for r in found)
        for colour in COLOURS:
            if held == self.values[colour]:
                return all_to(colour)
        raise TargetError(
            f"router {self.name}: the record holds {_show(found)}, which is neither blue "
            f"({', '.join(sorted(self.values['blue']))}) nor green ({', '.join(sorted(self.values['green']))}): "
            "set it to the live colour's address by hand (the raw rollback command), then run again")

    def write(self, weights: Weights) -> None:
        """One signed update: the prerequisite is the value read (or no record at all), then the record replaced.
        Two runs can never both switch, and a hand edit since the read is refused by the server (NXRRSET)."""
        if not self._read_once:
            self.read()
        to = larger_share(weights)  # set_weights lets only a whole switch through
        update = dns.update.UpdateMessage(self.zone, keyring=self._key())
        if self._seen is None:
            update.absent(self.record, self.rdtype)
        else:
            update.present(self.record, dns.rdataset.from_rdata_list(0, list(self._seen)))  # RFC 2136: TTL 0
        update.replace(self.record, self._rdataset(to))
        response = self._ask(update, "update the record", tcp=True)
        rcode = response.rcode()
        if rcode == dns.rcode.NOERROR:
            self._replaced_ttl = self._seen.ttl if self._seen is not None else 0
            return
        record = f"{self.record.to_text()} {self.config.type}"
        if rcode in CHANGED:
            was = _show(self._seen) if self._seen is not None else "no record"
            raise TargetError(
                f"{record} changed since bluegreen read it ({was}) and the server refused the compare-and-swap "
                f"({dns.rcode.to_text(rcode)}): a hand edit or another run; run again to read it anew")
        if rcode == dns.rcode.REFUSED:
            raise TargetError(
                f"the server refused the update (REFUSED): key {self.config.tsig_key} may not change {record}; "
                f"grant it in zone {self.zone.to_text()}'s update-policy: grant {self.config.tsig_key} name "
                f"{self.record.to_text()} {self.config.type};")
        if rcode == dns.rcode.NOTZONE:
            raise TargetError(f"{record} is not in zone {self.zone.to_text()} (NOTZONE): check router.name and zone")
        if rcode == dns.rcode.NOTAUTH:
            raise TargetError(f"the server is not authoritative for zone {self.zone.to_text()} (NOTAUTH): "
                              "router.server must be the zone's primary")
        raise TargetError(f"the server answered the update with {dns.rcode.to_text(rcode)}")

    def raw_switch_command(self, to: Colour) -> str:
        """nsupdate a person runs: the secret is read from the variable, never written out."""
        owner = self.record.to_text()
        lines = [f"server {self.server} {self.port}", f"zone {self.zone.to_text()}",
                 f"update delete {owner} {self.config.type}",
                 *(f"update add {owner} {self.config.ttl} {self.config.type} {v}" for v in sorted(self.values[to])),
                 "send"]
        key = f"{self.config.tsig_algorithm}:{self.config.tsig_key}:"
        return (f"printf '%s\\n' {' '.join(shlex.quote(line) for line in lines)} | "
                f"nsupdate -y \"{key}${{{self.config.tsig_secret_env}}}\"")

    # --- around it ---------------------------------------------------------------------------

    def reachable(self) -> str | None:
        """A signed SOA query for the zone: the server answers, authoritatively, and takes the key."""
        try:
            self._soa()
        except TargetError as exc:
            return str(exc).removeprefix(f"router {self.name}: ")
        return None

    def prepare(self) -> str | None:
        self._soa()  # a missing secret or a wrong key fails the run before the test suite
        return None

    def check(self) -> str | None:
        self._soa()
        return None

    def cache_ttl(self) -> float | None:
        """Clients keep the old answer up to its own TTL (a hand edit may have set another) or the configured one."""
        return float(max(self.config.ttl, self._replaced_ttl, self._seen.ttl if self._seen is not None else 0))

    def _soa(self) -> None:
        query = dns.message.make_query(self.zone, dns.rdatatype.SOA)
        query.flags &= ~dns.flags.RD
        query.use_tsig(self._key())
        response = self._ask(query, "query the zone's SOA")
        if response.rcode() != dns.rcode.NOERROR or not response.flags & dns.flags.AA:
            raise TargetError(f"router {self.name}: the server is not authoritative for zone {self.zone.to_text()} "
                              f"({dns.rcode.to_text(response.rcode())}): router.server must be the zone's primary")

    # --- talking to the server ------------------------------------------------------------------------

    def _key(self) -> dns.tsig.Key:
        variable = self.config.tsig_secret_env
        secret = os.environ.get(variable, "")
        if not secret:
            raise TargetError(f"router {self.name}: environment variable {variable} is not set: it holds the "
                              f"secret of TSIG key {self.config.tsig_key} (router.tsig_secret_env)")
        try:
            return dns.tsig.Key(self.config.tsig_key, secret.strip(), self.config.tsig_algorithm)
        except (binascii.Error, ValueError):
            raise TargetError(f"router {self.name}: {variable} is not a base64 TSIG secret (as tsig-keygen "
                              "prints it); its value is not shown") from None

    def _ask(self, message: dns.message.Message, what: str, tcp: bool = False) -> dns.message.Message:
        """One exchange with the server; every failure is a TargetError naming what to fix."""
        where = f"router {self.name}: cannot {what}"
        key = self.config.tsig_key
        try:
            host = self.server if _ip(self.server) else socket.getaddrinfo(self.server, self.port)[0][4][0]
            if tcp:
                return dns.query.tcp(message, host, timeout=self.config.timeout, port=self.port)
            return dns.query.udp_with_fallback(message, host, timeout=self.config.timeout, port=self.port)[0]
        except dns.tsig.PeerBadKey:
            raise TargetError(f"{where}: the server does not know TSIG key {key} with {self.config.tsig_algorithm} "
                              "(BADKEY): router.tsig_key and tsig_algorithm must match its key statement") from None
        except dns.tsig.PeerBadSignature:
            raise TargetError(f"{where}: the server rejected the signature of TSIG key {key} (BADSIG): "
                              f"{self.config.tsig_secret_env} does not hold that key's secret") from None
        except dns.tsig.PeerBadTime:
            raise TargetError(f"{where}: the server rejected the signature's time (BADTIME): this machine's clock "
                              "and the server's differ by more than 5 minutes") from None
        except dns.exception.Timeout:
            raise TargetError(f"{where}: no answer from {self.config.server} within {self.config.timeout:g} s "
                              "(router.server, or a firewall)") from None
        except (OSError, socket.gaierror) as exc:
            raise TargetError(f"{where}: {self.config.server}: {exc.strerror or exc}") from None
        except dns.exception.DNSException as exc:
            raise TargetError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}") from None

    def _rdataset(self, colour: Colour) -> dns.rdataset.Rdataset:
        return dns.rdataset.from_text_list(dns.rdataclass.IN, self.rdtype, self.config.ttl, sorted(self.values[colour]))


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _text(rdata: object) -> str:
    """An A/AAAA/CNAME value in the form the colours' values are in."""
    target = getattr(rdata, "target", None)
    if target is not None:
        return target.to_text().lower()
    return str(ipaddress.ip_address(rdata.address))  # type: ignore[attr-defined]


def _show(rdataset: dns.rdataset.Rdataset) -> str:
    values = sorted(r.to_text() for r in rdataset)
    return ", ".join(values[:4]) + (f" and {len(values) - 4} more" if len(values) > 4 else "")
