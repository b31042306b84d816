"""Per-packet helpers of the pipeline's stages, pure: a packet's flow key and header soundness, a
connection's NAT in one direction and its rewrite, the TTL of one hop.
"""

from __future__ import annotations

import struct

from podnet.overlay.pipeline.conntrack import Direction, Entry, FlowKey, reverse
from podnet.overlay.pipeline.model import PROTOCOL_NAMES
from podnet.overlay.pipeline.policyhook import Flow
from podnet.overlay.wire import fastpath
from podnet.overlay.wire.addresses import int_to_ip

_ADDRS = struct.Struct("!II")
_HEADER_START = struct.Struct("!BxH2xH")  # version/IHL, total length, flags/fragment offset
_TOTAL_LENGTH = struct.Struct("!H")
# Bound once and called with its default byte order (big-endian since Python 3.11): per packet, the
# keyword argument costs about as much as converting a 20-byte header.
_from_bytes = int.from_bytes
_TCP, _UDP = 6, 17
# Conntrack and NAT read and rewrite the whole transport header; a packet too short to hold it is invalid
# to conntrack, and kube-proxy drops what conntrack finds invalid.
_TRANSPORT_HEADER = {_TCP: 20, _UDP: 8}
TTL_AT = 8
TTL_WORD = struct.Struct("!BBH")  # TTL, protocol, header checksum


def flow_key(packet: bytes | memoryview) -> tuple[FlowKey | None, int]:
    """(the conntrack key, TCP flags) of an IPv4 packet; the key is None for what conntrack does not
    track (ICMP errors, other protocols, truncated transport headers)."""
    key = fastpath.ipv4_flow(packet)
    if key is None or key[0] != _TCP:
        return key, 0
    flags_at = (packet[0] & 0x0F) * 4 + 13
    return key, packet[flags_at] if len(packet) > flags_at else 0


def header_problem(packet: bytes | memoryview) -> str | None:
    """Why `packet` is not an IPv4 packet podnet forwards, or None. Checks what forwarding relies on."""
    if len(packet) < 20:
        return "short-ip-packet"
    version_ihl, total, flags_offset = _HEADER_START.unpack_from(packet)
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or ihl < 20:
        return "not-ipv4"
    if total < ihl or total > len(packet):
        return "bad-ip-length"
    # Per packet, so the checksum test is inlined: a header holding its checksum sums to 0xffff, that
    # is, read as one integer it is 0 modulo 0xffff (internet_checksum's arithmetic; never all zero,
    # its version being 4).
    if _from_bytes(packet[:ihl]) % 0xFFFF:
        return "bad-ip-checksum"
    if flags_offset & 0x3FFF:
        return "ip-fragment"
    needed = _TRANSPORT_HEADER.get(packet[9])
    if needed is not None and total - ihl < needed:
        return "truncated-transport-header"
    return None


Nat = tuple[tuple[int, int] | None, tuple[int, int] | None]


def nat_of(entry: Entry, direction: Direction) -> Nat | None:
    """The (source, destination) replacement a connection's packets in `direction` get, each None when
    that end stays, or None for a connection without NAT: a packet going one way is made to look like
    the other way's tuple turned round. For a Service's DNAT, towards the endpoint its address, and on
    a reply the service address as the source; a hairpin (a pod reaching itself through a Service) is
    SNATed to the node as well."""
    if not entry.natted:
        return None
    have, want = (
        (entry.original, reverse(entry.reply)) if direction is Direction.ORIGINAL else (entry.reply, reverse(entry.original))
    )
    source = (want[1], want[2]) if (want[1], want[2]) != (have[1], have[2]) else None
    destination = (want[3], want[4]) if (want[3], want[4]) != (have[3], have[4]) else None
    return source, destination


def describe_nat(direction: Direction, nat: Nat) -> str:
    """What a connection's NAT does to its packets going `direction`, for a trace."""
    source, destination = nat
    if direction is Direction.ORIGINAL:
        what = [f"DNAT to {int_to_ip(destination[0])}:{destination[1]}"] if destination else []
        what += [f"SNAT to {int_to_ip(source[0])}:{source[1]}"] if source else []
    else:
        what = [f"un-DNAT source to {int_to_ip(source[0])}:{source[1]}"] if source else []
        what += [f"un-SNAT destination to {int_to_ip(destination[0])}:{destination[1]}"] if destination else []
    return ", ".join(what)


def untracked_flow(packet: bytes) -> Flow:
    """What the policy hooks judge of a packet conntrack does not track (another protocol, an ICMP
    message other than an echo): its protocol and addresses, no ports, for each packet on its own."""
    protocol = packet[9]
    src, dst = _ADDRS.unpack_from(packet, 12)
    return Flow(PROTOCOL_NAMES.get(protocol, str(protocol)), int_to_ip(src), 0, int_to_ip(dst), 0)


def shortcut_nat(key: FlowKey, nat: Nat | None) -> fastpath.NatRewrite | None:
    """A connection's NAT in one direction as its shortcut applies it: worked out once."""
    return None if nat is None else fastpath.nat_rewrite(key, src=nat[0], dst=nat[1])


def decremented_ttl_word(ttl: int, protocol: int, checksum: int) -> bytes:
    """TTL, protocol and header checksum of an IPv4 header after one hop: the TTL is the high byte of its
    16-bit word, so one less there is 0x0100 more in the complemented sum (RFC 1141, with Linux's care
    never to give 0xffff)."""
    checksum += 0x0100
    return TTL_WORD.pack(ttl - 1, protocol, (checksum + (checksum >= 0xFFFF)) & 0xFFFF)


def rewrite(
    packet: bytes, *, src: tuple[int, int] | None = None, dst: tuple[int, int] | None = None
) -> bytes:
    """The packet with its source and/or destination (address, port) replaced, checksums updated."""
    buf = bytearray(packet)
    fastpath.rewrite_ipv4(buf, src=src, dst=dst)
    return bytes(buf)


def checked(packet: bytes) -> tuple[bytes, str | None]:
    """(the packet cut to the length its header states, None), or (the packet, why podnet does not
    forward it: `header_problem`). What follows an IPv4 packet's stated length is not part of it."""
    problem = header_problem(packet)
    if problem:
        return packet, problem
    (total,) = _TOTAL_LENGTH.unpack_from(packet, 2)
    return (packet if total == len(packet) else packet[:total]), None
