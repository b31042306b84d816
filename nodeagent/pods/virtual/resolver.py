"""The stub resolver of a virtual pod, with the resolv.conf a kubelet writes for a ClusterFirst pod; no I/O.

    nameserver 10.96.0.10
    search <namespace>.svc.cluster.local svc.cluster.local cluster.local
    options ndots:5

What it does, as glibc's resolver does with that file (resolv.conf(5)):
- a name ending in a dot is absolute and is asked as it is, alone;
- a name with at least `ndots` dots is asked as it is first, then with each search domain appended;
  a name with fewer (every Service name a pod uses: `web`, `web.other-ns`) tries the search list first;
- NXDOMAIN, or an answer without an A record (NODATA), moves on to the next candidate;
- SERVFAIL and timeouts are retried (`attempts`), then end the lookup: the name may exist, so trying
  other candidates could find a wrong one;
- any other error code (REFUSED, NOTIMP, FORMERR) ends the lookup at once;
- a truncated UDP answer is asked again over TCP;
- CNAMEs in an answer are followed to their A records; a chain the server left unfinished is continued
  by asking for its last target.

A `Lookup` is driven by its caller: `next_step()` gives the `Query` to send (or the outcome), the caller
sends it from the pod to the nameserver and feeds back `receive(reply)` or `failed(reason)`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from dnslib import CLASS, EDNS0, QTYPE, RCODE, DNSError, DNSRecord
from podnet.overlay.wire.addresses import ip_to_bytes

DEFAULT_NAMESERVER = "10.96.0.10"
DEFAULT_ZONE = "cluster.local"
MAX_CNAME_HOPS = 8  # glibc and musl give up on longer chains too
MAX_NAME_LENGTH = 253
MAX_LABEL_LENGTH = 63
EDNS_PAYLOAD = 1232


class UnresolvableError(ValueError):
    """A host name that did not resolve; the message is the whole reason, on one line."""


@dataclass(frozen=True, slots=True)
class ResolvConf:
    nameserver: str = DEFAULT_NAMESERVER
    port: int = 53
    search: tuple[str, ...] = ()
    ndots: int = 5
    timeout: float = 2.0
    """Seconds to wait for each answer (resolv.conf's `timeout:`; glibc's default is 5)."""
    attempts: int = 2

    @classmethod
    def for_pod(
        cls, namespace: str, *, zone: str = DEFAULT_ZONE, nameserver: str = DEFAULT_NAMESERVER, port: int = 53
    ) -> ResolvConf:
        """What the kubelet writes for a pod with dnsPolicy ClusterFirst in `namespace`."""
        return cls(nameserver, port, (f"{namespace}.svc.{zone}", f"svc.{zone}", zone))

    @property
    def server(self) -> str:
        return f"{self.nameserver}:{self.port}"


def is_address(host: str) -> bool:
    """True for an IPv4 literal, which needs no lookup."""
    try:
        ip_to_bytes(host)
    except ValueError:
        return False
    return True


def check_name(name: str) -> None:
    """Raises UnresolvableError for a name no DNS query can carry."""
    bare = name[:-1] if name.endswith(".") else name
    if not bare:
        raise UnresolvableError("could not resolve host: empty name")
    if len(bare) > MAX_NAME_LENGTH:
        raise UnresolvableError(f"could not resolve host {name}: name longer than {MAX_NAME_LENGTH} characters")
    for label in bare.split("."):
        if not label or len(label) > MAX_LABEL_LENGTH:
            raise UnresolvableError(f"could not resolve host {name}: invalid name")


def candidates(name: str, conf: ResolvConf) -> tuple[str, ...]:
    """The absolute names (with their trailing dot) a lookup of `name` asks, in order."""
    check_name(name)
    if name.endswith("."):
        return (name,)
    as_is = f"{name}."
    searched = tuple(f"{name}.{domain.strip('.')}." for domain in conf.search)
    if name.count(".") >= conf.ndots:
        return (as_is, *searched)
    return (*searched, as_is)


def build_query(name: str, qtype: str, query_id: int, *, edns: bool = False) -> bytes:
    """A recursive query for `name`/`qtype` with `query_id`, as a stub resolver (or dig) sends it."""
    query = DNSRecord.question(name, qtype.upper())
    query.header.id = query_id
    if edns:
        query.add_ar(EDNS0(udp_len=EDNS_PAYLOAD))
    return query.pack()


def frame_tcp(message: bytes) -> bytes:
    """A DNS message as TCP carries it: a two-byte length first (RFC 1035 4.2.2)."""
    return len(message).to_bytes(2, "big") + message


def tcp_message(buffer: bytes) -> bytes | None:
    """The first whole message in what a TCP stream has delivered, None while it is incomplete."""
    if len(buffer) < 2:
        return None
    length = int.from_bytes(buffer[:2], "big")
    return bytes(buffer[2 : 2 + length]) if len(buffer) >= 2 + length else None


def rcode_name(rcode: int) -> str:
    return RCODE.get(rcode, f"RCODE{rcode}")


# ---- one lookup ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """Send `payload` to the nameserver (over TCP, framed with `frame_tcp`, when `tcp`) and wait up to
    `timeout` seconds for the answer."""

    name: str
    query_id: int
    payload: bytes
    tcp: bool
    timeout: float


@dataclass(frozen=True, slots=True)
class Resolved:
    name: str
    """The name as it was asked."""
    canonical: str
    """The absolute name whose A records answered (after the search list and any CNAMEs)."""
    addresses: tuple[str, ...]

    @property
    def address(self) -> str:
        return self.addresses[0]


class Lookup:
    """The A lookup of one host name: candidates from the search list, retries, CNAMEs, TCP on truncation."""

    def __init__(self, name: str, conf: ResolvConf, rng: random.Random | None = None):
        self.name = name
        self.conf = conf
        self._rng = rng or random.Random()
        self._candidates = list(candidates(name, conf))
        self._outcomes: list[str] = []  # one per candidate that did not resolve, for the reason
        self._result: Resolved | UnresolvableError | None = None
        self._candidate: str = ""
        self._asking: str = ""  # the candidate, or the CNAME target it led to
        self._hops = 0
        self._tries = 0
        self._tcp = False
        self._query: Query | None = None
        self._next_candidate()

    @property
    def done(self) -> bool:
        return self._result is not None

    def next_step(self) -> Query | Resolved | UnresolvableError:
        """The query to send now, or the outcome once there is one."""
        if self._result is not None:
            return self._result
        if self._query is None:
            query_id = self._rng.getrandbits(16)
            self._tries += 1
            self._query = Query(
                self._asking, query_id, build_query(self._asking, "A", query_id), self._tcp, self.conf.timeout
            )
        return self._query

    def failed(self, reason: str) -> None:
        """The query got no answer: `reason` is a timeout, or an error sending it or reaching the server."""
        self._retry_or_stop(f"no answer from {self.conf.server} for {self._asking} ({reason})")

    def receive(self, reply: bytes) -> None:
        """The nameserver's answer to the current query."""
        query = self._query
        if query is None or self._result is not None:
            return
        try:
            message = DNSRecord.parse(reply)
        except (DNSError, ValueError, IndexError) as exc:
            self._retry_or_stop(f"malformed answer from {self.conf.server} for {self._asking} ({exc})")
            return
        question = message.questions[0] if message.questions else None
        if (
            message.header.id != query.query_id
            or not message.header.qr
            or question is None
            or str(question.qname).lower() != self._asking.lower()
            or question.qtype != QTYPE.A
        ):
            self._retry_or_stop(f"an answer from {self.conf.server} that does not match the query for {self._asking}")
            return
        if message.header.tc and not self._tcp:
            self._tcp = True  # the whole answer comes over TCP; this is no failed try
            self._tries -= 1
            self._query = None
            return
        rcode = message.header.rcode
        if rcode == RCODE.SERVFAIL:
            self._retry_or_stop(f"SERVFAIL for {self._asking}")
        elif rcode == RCODE.NXDOMAIN:
            self._candidate_failed(f"NXDOMAIN for {self._describe_asking()}")
        elif rcode != RCODE.NOERROR:
            self._stop(f"{rcode_name(rcode)} for {self._asking}")
        else:
            self._answered(message)

    # ---- what an answer means ----------------------------------------------------------------------

    def _answered(self, message: DNSRecord) -> None:
        owner = self._asking.lower()
        aliases = {}
        addresses: dict[str, list[str]] = {}
        for record in message.rr:
            if record.rclass != CLASS.IN:
                continue
            rname = str(record.rname).lower()
            if record.rtype == QTYPE.CNAME:
                aliases[rname] = str(record.rdata.label)
            elif record.rtype == QTYPE.A:
                addresses.setdefault(rname, []).append(str(record.rdata))
        while owner in aliases:
            self._hops += 1
            if self._hops > MAX_CNAME_HOPS:
                self._stop(f"more than {MAX_CNAME_HOPS} CNAMEs from {self._candidate}")
                return
            target = aliases.pop(owner)
            owner = target.lower()
            self._asking = target
        if owner in addresses:
            self._result = Resolved(self.name, self._asking, tuple(addresses[owner]))
        elif owner != self._candidate.lower():
            # The server answered a CNAME without the target's records: ask for the target.
            self._tries = 0
            self._query = None
        else:
            self._candidate_failed(f"no A record for {self._asking}")

    def _describe_asking(self) -> str:
        if self._asking == self._candidate:
            return self._asking
        return f"{self._asking} (CNAME target of {self._candidate})"

    def _retry_or_stop(self, reason: str) -> None:
        if self._tries < self.conf.attempts:
            self._query = None
            return
        tries = f" after {self._tries} tries" if self._tries > 1 else ""
        self._stop(f"{reason}{tries}")

    def _candidate_failed(self, outcome: str) -> None:
        self._outcomes.append(outcome)
        self._next_candidate()

    def _next_candidate(self) -> None:
        if not self._candidates:
            self._stop(None)
            return
        self._candidate = self._asking = self._candidates.pop(0)
        self._hops = self._tries = 0
        self._query = None

    def _stop(self, reason: str | None) -> None:
        outcomes = [*self._outcomes, reason] if reason else self._outcomes
        self._result = UnresolvableError(f"could not resolve host {self.name}: {', '.join(outcomes)}")
        self._query = None
