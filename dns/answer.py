"""Answering one DNS query from the cluster's records: wire bytes in, wire bytes out.

The hot path reads the header and the question with plain indexing, finds a response that was rendered
when the records changed (keyed by the lower-cased question name, type and class), and glues together the
query's ID, a precomputed header, the query's own question bytes (so a client that randomises the case of
its names gets them back as sent) and the precomputed sections. Everything else (errors, negative
answers, truncation) is built here per query, still without dnslib.

No sockets and no clocks: `resolve` is a function of the query bytes, the records and whether the records
have synced.
"""

from __future__ import annotations

import bisect
import functools
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from dnslib import DNSHeader, DNSQuestion, DNSRecord

if TYPE_CHECKING:
    from dnslib import RR
    from podnet.dns.records import Records


class Rcode(IntEnum):
    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5


class RType(IntEnum):
    A = 1
    NS = 2
    CNAME = 5
    SOA = 6
    PTR = 12
    TXT = 16
    AAAA = 28
    SRV = 33
    OPT = 41
    ANY = 255


CLASS_IN = 1

# Header flag bits (RFC 1035 4.1.1, RFC 4035 3.2.2).
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010
OPCODE_MASK = 0x7800

# The smallest UDP payload every resolver must accept, and the most we ever say we accept.
CLASSIC_UDP_SIZE = 512
OUR_UDP_SIZE = 1232
MAX_MESSAGE = 65535
EDNS_BADVERS = 16

_OPT_RR = struct.pack("!BHHIH", 0, RType.OPT, OUR_UDP_SIZE, 0, 0)
_CLASS_IN_BYTES = CLASS_IN.to_bytes(2, "big")
_CNAME_TYPE_BYTES = RType.CNAME.to_bytes(2, "big")


@dataclass(frozen=True, slots=True)
class Forward:
    """The question is outside the cluster's zones: send it upstream, then fit the reply into `udp_limit`
    bytes when the client asked over UDP. With `cname_reply`, the question was ours and its answer is a
    CNAME to `target` outside the zones: ask upstream for `target` and add those records to the reply,
    as CoreDNS does for ExternalName Services."""

    udp_limit: int
    cname_reply: bytes | None = None
    target: str | None = None


@dataclass(frozen=True, slots=True)
class Template:
    """A rendered response without its ID and question. `heads` holds header bytes 2..12 for each
    combination of the query's RD and CD bits and whether an OPT record is appended (index
    rd | cd << 1 | edns << 2); `answer_ends` are offsets in `body` where each answer record ends, so a
    truncated response can keep whole records. `rotations`, when set, are the same answer with its
    addresses rotated, served in turn as CoreDNS's loadbalance plugin does, so that clients taking the
    first address spread over all of them."""

    flags: int
    body: bytes
    answer_ends: tuple[int, ...]
    heads: tuple[bytes, ...]
    rotations: tuple[Template, ...] = ()

    @classmethod
    def build(
        cls, flags: int, counts: tuple[int, int, int], body: bytes, answer_ends: tuple[int, ...] = ()
    ) -> Template:
        """`counts` are the answer, authority and additional record counts of `body`."""
        an, ns, ar = counts
        heads = tuple(
            struct.pack(
                "!HHHHH",
                flags | (RD if index & 1 else 0) | (CD if index & 2 else 0),
                1, an, ns, ar + (1 if index & 4 else 0),
            )
            for index in range(8)
        )
        return cls(flags, body, answer_ends, heads)


@functools.lru_cache(maxsize=1 << 16)
def name_to_wire(name: str) -> bytes:
    """`web.default.svc.cluster.local` as DNS labels, lower-cased. Raises ValueError on an empty or
    over-long label or name."""
    out = bytearray()
    for label in name.rstrip(".").lower().split(".") if name.strip(".") else ():
        encoded = label.encode("ascii")
        if not 0 < len(encoded) <= 63:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out.append(len(encoded))
        out += encoded
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"DNS name too long: {name!r}")
    return bytes(out)


def _skip_name(message: bytes, offset: int) -> int:
    """Returns the offset after a (possibly compressed) name; IndexError or ValueError when malformed."""
    while True:
        length = message[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            message[offset + 1]  # noqa: B018 - the pointer's second byte must exist
            return offset + 2
        if length & 0xC0:
            raise ValueError("reserved label type")
        offset += length + 1


def _record_ends(message: bytes, offset: int, count: int) -> list[int]:
    ends = []
    for _ in range(count):
        offset = _skip_name(message, offset)
        (rdlength,) = struct.unpack_from("!H", message, offset + 8)
        offset += 10 + rdlength
        if offset > len(message):
            raise ValueError("record runs past the end")
        ends.append(offset)
    return ends


def render(name: str, qtype: int, answers: list[RR], additional: list[RR]) -> Template:
    """Renders a positive response with dnslib, compressing names against the question at offset 12,
    and cuts it into a template."""
    record = DNSRecord(DNSHeader(id=0, qr=1, aa=1), q=DNSQuestion(name, qtype))
    for rr in answers:
        record.add_answer(rr)
    for rr in additional:
        record.add_ar(rr)
    packed = record.pack()
    body_start = 12 + len(name_to_wire(name)) + 4
    ends = _record_ends(packed, body_start, len(answers))
    return Template.build(
        QR | AA, (len(answers), 0, len(additional)), packed[body_start:], tuple(e - body_start for e in ends)
    )


def negative(rcode: Rcode, soa_rr: bytes) -> Template:
    """NXDOMAIN or NODATA: no answers, the zone's SOA (written without compression, so it fits after
    any question) in the authority section."""
    return Template.build(QR | AA | rcode, (0, 1, 0), soa_rr)


def soa_record(zone: str, ttl: int, serial: int) -> bytes:
    """The zone's SOA as CoreDNS writes it (`ns.dns.<zone>`, `hostmaster.<zone>`), uncompressed."""
    rdata = (
        name_to_wire(f"ns.dns.{zone}")
        + name_to_wire(f"hostmaster.{zone}")
        + struct.pack("!IIIII", serial & 0xFFFFFFFF, 7200, 1800, 86400, ttl)
    )
    return name_to_wire(zone) + struct.pack("!HHIH", RType.SOA, CLASS_IN, ttl, len(rdata)) + rdata


def error_response(query: bytes, rcode: int, question_end: int = 0, *, opt: bytes = b"") -> bytes:
    """A response carrying only an rcode. The question is echoed when it was readable (`question_end`
    is where it ends), as resolvers match replies to questions."""
    flags = struct.unpack_from("!H", query, 2)[0]
    out_flags = QR | (flags & (OPCODE_MASK | RD | CD)) | (rcode & 0xF)
    qdcount = 1 if question_end else 0
    header = struct.pack("!HHHHHH", struct.unpack_from("!H", query)[0], out_flags, qdcount, 0, 0, 1 if opt else 0)
    return header + query[12:question_end] + opt


@dataclass(frozen=True, slots=True)
class _Edns:
    udp_size: int
    version: int


def _read_additional(query: bytes, offset: int, count: int) -> _Edns | None:
    """Finds the OPT record among the additional records. Raises ValueError/IndexError/struct.error when
    the section is malformed or has more than one OPT."""
    edns = None
    for _ in range(count):
        name_start = offset
        offset = _skip_name(query, offset)
        rtype, rclass, ttl, rdlength = struct.unpack_from("!HHIH", query, offset)
        offset += 10 + rdlength
        if offset > len(query):
            raise ValueError("additional record runs past the end")
        if rtype == RType.OPT:
            if edns is not None or query[name_start] != 0:
                raise ValueError("more than one OPT, or an OPT not at the root")
            edns = _Edns(rclass, (ttl >> 16) & 0xFF)
    return edns


_PLAIN_QUERY_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_EDNS_QUERY_COUNTS = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_OPT_HEAD = b"\x00\x00\x29"


def resolve(query: bytes, records: Records, *, synced: bool, udp: bool = True) -> bytes | Forward | None:
    """The response to `query`, `Forward` when the name lies outside every zone of `records`, or None
    when the datagram should be dropped (shorter than a header, or itself a response)."""
    query = bytes(query)  # no copy when it already is bytes
    if udp and synced:
        # Resolvers repeat the same questions: the answer to identical bytes after the ID is known.
        known = records.replies.get(query[2:])
        if known is not None:
            return query[:2] + known
    if len(query) < 12:
        return None
    flags_high = query[2]
    if flags_high & 0x80:
        return None
    if flags_high & 0x78:
        return error_response(query, Rcode.NOTIMP)
    counts = query[4:12]
    # Parse the question name: plain labels only (a pointer cannot point anywhere useful in a question).
    end = 12
    try:
        length = query[12]
        while length:
            if length > 63:
                return error_response(query, Rcode.FORMERR)
            end += length + 1
            length = query[end]
    except IndexError:
        return error_response(query, Rcode.FORMERR)
    question_end = end + 5
    if question_end > len(query) or end - 12 > 254:
        return error_response(query, Rcode.FORMERR)

    edns = None
    if counts == _EDNS_QUERY_COUNTS and query[question_end:question_end + 3] == _OPT_HEAD \
            and len(query) >= question_end + 11:
        # The common EDNS query: one OPT right after the question.
        edns = _Edns(query[question_end + 3] << 8 | query[question_end + 4], query[question_end + 6])
    elif counts != _PLAIN_QUERY_COUNTS:
        qdcount, ancount, nscount, arcount = struct.unpack("!HHHH", counts)
        if qdcount != 1 or ancount or nscount:
            return error_response(query, Rcode.FORMERR)
        try:
            edns = _read_additional(query, question_end, arcount)
        except (ValueError, IndexError, struct.error):
            return error_response(query, Rcode.FORMERR)

    if edns is not None:
        if edns.version:
            opt = struct.pack("!BHHIH", 0, RType.OPT, OUR_UDP_SIZE, (EDNS_BADVERS >> 4) << 24, 0)
            return error_response(query, EDNS_BADVERS & 0xF, question_end, opt=opt)
        # The smaller of the client's size and ours, as CoreDNS and BIND answer: a reply larger than the
        # size we advertise risks IP fragmentation (DNS Flag Day 2020), and larger than the client's, loss.
        limit = max(CLASSIC_UDP_SIZE, min(edns.udp_size, OUR_UDP_SIZE)) if udp else MAX_MESSAGE
        opt = _OPT_RR
    else:
        limit = CLASSIC_UDP_SIZE if udp else MAX_MESSAGE
        opt = b""
    if not synced:
        return error_response(query, Rcode.SERVFAIL, question_end, opt=opt)

    lname = query[12:end + 1].lower()
    template = records.templates.get(lname + query[end + 1:question_end])
    if template is None:
        if not records.owns(lname):
            return Forward(limit)
        if query[end + 3:question_end] != _CLASS_IN_BYTES:
            return error_response(query, Rcode.REFUSED, question_end, opt=opt)
        template = records.cname_only.get(lname)
        if template is None:
            template = records.nodata if lname in records.existing else records.nxdomain
        elif (target := records.external_targets.get(lname)) is not None and \
                query[end + 1:end + 3] != _CNAME_TYPE_BYTES:
            return Forward(limit, _reply(query, question_end, template, MAX_MESSAGE, opt), target)

    if template.rotations:
        return _reply(query, question_end, template.rotations[records.next_rotation(len(template.rotations))],
                      limit, opt)
    reply = _reply(query, question_end, template, limit, opt)
    if udp:
        records.remember(query, reply)
    return reply


def _reply(query: bytes, question_end: int, template: Template, limit: int, opt: bytes) -> bytes:
    head = template.heads[(query[2] & 1) | ((query[3] >> 3) & 2) | (4 if opt else 0)]
    if question_end + len(template.body) + len(opt) <= limit:
        return query[:2] + head + query[12:question_end] + template.body + opt
    return _truncated(query, question_end, template, limit, opt)


def _truncated(query: bytes, question_end: int, template: Template, limit: int, opt: bytes) -> bytes:
    """As many whole answer records as fit, with TC set (RFC 2181 9); authority and additional dropped."""
    room = limit - question_end - len(opt)
    kept = bisect.bisect_right(template.answer_ends, room)
    body = template.body[:template.answer_ends[kept - 1]] if kept else b""
    flags = template.flags | TC | (struct.unpack_from("!H", query, 2)[0] & (RD | CD))
    header = query[:2] + struct.pack("!HHHHH", flags, 1, kept, 0, 1 if opt else 0)
    return header + query[12:question_end] + body + opt


def answer(query: bytes, records: Records, *, synced: bool, udp: bool = True) -> bytes | None:
    """`resolve` for a server without upstreams: names outside the zones are REFUSED, and a CNAME to
    a name outside them is answered alone."""
    result = resolve(query, records, synced=synced, udp=udp)
    if isinstance(result, Forward):
        return unforwarded(query, result, udp=udp)
    return result


def unforwarded(query: bytes, decision: Forward, *, udp: bool) -> bytes:
    """What to answer without upstreams: REFUSED, or our CNAME answer alone."""
    if decision.cname_reply is None:
        return refused(query)
    return fit_udp(query, decision.cname_reply, decision.udp_limit) if udp else decision.cname_reply


def end_of_question(query: bytes) -> int:
    """Where the (already validated) question of `query` ends."""
    return _skip_name(query, 12) + 4


def refused(query: bytes) -> bytes:
    return error_response(query, Rcode.REFUSED, end_of_question(query), opt=_echo_opt(query))


def servfail(query: bytes) -> bytes:
    return error_response(query, Rcode.SERVFAIL, end_of_question(query), opt=_echo_opt(query))


def _echo_opt(query: bytes) -> bytes:
    return _OPT_RR if query[10:12] != b"\x00\x00" else b""


def fit_udp(query: bytes, reply: bytes, limit: int) -> bytes:
    """An upstream's reply cut down to `limit` bytes for a UDP client: header with TC and the question."""
    if len(reply) <= limit:
        return reply
    end = end_of_question(query)
    flags = struct.unpack_from("!H", reply, 2)[0] | TC
    return query[:2] + struct.pack("!HHHHH", flags, 1, 0, 0, 0) + query[12:end]
