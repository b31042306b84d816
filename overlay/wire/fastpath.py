"""The per-frame hot path: `struct.unpack_from` on the buffer as it came, no dataclasses.

Addresses are 32-bit ints here (what route lookups and conntrack keys want); `addresses.int_to_ip`
turns one into text for people. A flow key is `(protocol, src_ip, src_port, dst_ip, dst_port)`; an ICMP
echo's key carries its identifier as both ports, so a request and its reply share a connection.
Everything here agrees with the dataclass codecs (tests/test_wire_fastpath.py checks it).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from podnet.codec import DecodeError

from .checksum import (
    NATIVE_WORD_WEIGHT,
    apply_change,
    change_sum,
    internet_checksum,
    segment_sums,
    update_checksum,
    wide_sum,
)

FlowKey = tuple[int, int, int, int, int]

TCP, UDP, ICMP = 6, 17, 1
ETHERTYPE_IPV4 = 0x0800
ETHERNET_HEADER = 14
VXLAN_HEADER = 8
# VXLAN header, inner Ethernet header: where the inner IPv4 packet starts in a VXLAN UDP payload.
INNER_IPV4_OFFSET = VXLAN_HEADER + ETHERNET_HEADER

_VXLAN = struct.Struct("!II")
_VXLAN_FLAGS_WORD = 0x08 << 24
_ETHERTYPE = struct.Struct("!H")
_IPV4_FIXED = struct.Struct("!BxH5xB2xII")  # version/IHL, total length, protocol, src, dst
_PORTS = struct.Struct("!HH")
# The common case in one read: a header without options (version/IHL, total length, flags/fragment
# offset, protocol, source, destination) and the two ports after it.
_IPV4_PLAIN_PORTS = struct.Struct("!BxH2xHxB2xIIHH")
_ICMP_ECHO = struct.Struct("!B3xH")  # type, identifier
_U16 = struct.Struct("!H")
_ICMP_ECHO_TYPES = (0, 8)
_ICMP_ERROR_TYPES = (3, 11, 12)  # destination unreachable, time exceeded, parameter problem
# An IPv4 header without options followed by a UDP header: version/IHL, total length, flags/fragment
# offset, protocol, source, destination; source port, destination port, UDP length, UDP checksum.
_IPV4_UDP = struct.Struct("!BxH2xH xB2xII HHHH")
# The same 28 bytes with every field, for building: checksums are filled in afterwards.
_IPV4_UDP_BUILD = struct.Struct("!BBHHHBBHIIHHHH")
UDP_PAYLOAD_OFFSET = 28  # 20-byte IPv4 header + 8-byte UDP header
_IPV4_DONT_FRAGMENT = 0x4000
_IPV4_FLAGS_NOT_DF = 0xBFFF  # reserved flag, MF and fragment offset: any of them set is not plain
_DEFAULT_TTL = 64
# Bound once and called with its default byte order (big-endian since Python 3.11): per packet, the
# attribute lookup and keyword parsing cost as much as the conversion of a small header.
_from_bytes = int.from_bytes
# How many transport bytes a key needs: ports for TCP/UDP, the whole echo header for ICMP.
_L4_NEEDED = {TCP: 4, UDP: 4, ICMP: 8}
# Where each transport keeps its checksum, from the start of its header.
_L4_CHECKSUM_AT = {TCP: 16, UDP: 6}
# Batches of UDP packets: from this many on, their checksums are summed together (numpy's fixed cost per
# call is that of about three MTU-sized packets summed one by one), at most this many to a call, so that
# the joined buffer stays in the processor's cache.
BATCH_MIN = 8
_BATCH_CHUNK = 64
_HEADER_WORDS = 10


def vxlan_vni(datagram: bytes | bytearray | memoryview) -> int:
    """The VNI of a VXLAN UDP payload; DecodeError for a short header, no I flag or reserved bits set."""
    if len(datagram) < VXLAN_HEADER:
        raise DecodeError("VXLAN datagram shorter than its header")
    flags_word, vni_word = _VXLAN.unpack_from(datagram)
    if flags_word != _VXLAN_FLAGS_WORD or vni_word & 0xFF:
        raise DecodeError("VXLAN flags or reserved bits wrong")
    return vni_word >> 8


def ipv4_flow(packet: bytes | bytearray | memoryview, offset: int = 0) -> FlowKey | None:
    """The flow key of the IPv4 packet at `offset`, or None when it has none: not IPv4 version 4, header
    or total length out of bounds, a fragment, a protocol other than TCP/UDP/ICMP echo, or a transport
    header too short to read. Does not verify checksums (the dataclass codecs do)."""
    available = len(packet) - offset
    if available >= 24:  # TCP or UDP behind a header without options: one unpack decides
        version_ihl, total_length, fragment, protocol, src, dst, src_port, dst_port = (
            _IPV4_PLAIN_PORTS.unpack_from(packet, offset)
        )
        if (
            version_ihl == 0x45
            and (protocol == UDP or protocol == TCP)
            and 24 <= total_length <= available
            and not fragment & 0x3FFF
        ):
            return (protocol, src, src_port, dst, dst_port)
    if available < 20:
        return None
    version_ihl, total_length, protocol, src, dst = _IPV4_FIXED.unpack_from(packet, offset)
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or ihl < 20 or not ihl <= total_length <= len(packet) - offset:
        return None
    if _U16.unpack_from(packet, offset + 6)[0] & 0x3FFF:  # MF or fragment offset
        return None
    needed = _L4_NEEDED.get(protocol)
    if needed is None or total_length - ihl < needed:
        return None
    l4 = offset + ihl
    if protocol == ICMP:
        icmp_type, identifier = _ICMP_ECHO.unpack_from(packet, l4)
        if icmp_type not in _ICMP_ECHO_TYPES:
            return None
        return (ICMP, src, identifier, dst, identifier)
    src_port, dst_port = _PORTS.unpack_from(packet, l4)
    return (protocol, src, src_port, dst, dst_port)


def frame_flow(frame: bytes | bytearray | memoryview, offset: int = 0) -> FlowKey | None:
    """The flow key of the Ethernet frame at `offset` (None if it carries no IPv4 flow)."""
    if (
        len(frame) - offset < ETHERNET_HEADER
        or _ETHERTYPE.unpack_from(frame, offset + 12)[0] != ETHERTYPE_IPV4
    ):
        return None
    return ipv4_flow(frame, offset + ETHERNET_HEADER)


def datagram_flow(datagram: bytes | bytearray | memoryview) -> tuple[int, FlowKey | None]:
    """(VNI, flow key of the inner frame) of a VXLAN UDP payload, in one pass over the buffer."""
    return vxlan_vni(datagram), frame_flow(datagram, VXLAN_HEADER)


def rewrite_ipv4(
    buf: bytearray,
    offset: int = 0,
    *,
    src: tuple[int, int] | None = None,
    dst: tuple[int, int] | None = None,
) -> None:
    """Rewrites in place the source and/or destination (address, port) of the IPv4 packet at `offset`,
    updating the IPv4 and TCP/UDP checksums incrementally (RFC 1624). A UDP datagram sent without a
    checksum stays without one. ICMP has no ports and no pseudo-header: only the addresses change.
    The packet must be one `ipv4_flow` gives a key for; its transport checksum is left alone when the
    buffer ends before it (what an ICMP error quotes of a TCP segment)."""
    ihl = (buf[offset] & 0x0F) * 4
    protocol = buf[offset + 9]
    l4 = offset + ihl
    checksum_at = _L4_CHECKSUM_AT.get(protocol)
    if checksum_at is not None:
        checksum_at += l4
        if checksum_at + 2 > len(buf):  # the start of a packet an ICMP error quotes
            checksum_at = None
        elif protocol == UDP and buf[checksum_at] == 0 and buf[checksum_at + 1] == 0:
            checksum_at = None
    for replacement, address_at, port_at in ((src, offset + 12, l4), (dst, offset + 16, l4 + 2)):
        if replacement is None:
            continue
        address, port = replacement
        old_address = bytes(buf[address_at : address_at + 4])
        new_address = address.to_bytes(4, "big")
        buf[address_at : address_at + 4] = new_address
        header_sum = _U16.unpack_from(buf, offset + 10)[0]
        _U16.pack_into(buf, offset + 10, update_checksum(header_sum, old_address, new_address))
        if protocol == ICMP:
            continue
        old_port = bytes(buf[port_at : port_at + 2])
        new_port = port.to_bytes(2, "big")
        buf[port_at : port_at + 2] = new_port
        if checksum_at is not None:
            l4_sum = update_checksum(
                _U16.unpack_from(buf, checksum_at)[0], old_address + old_port, new_address + new_port
            )
            # A UDP checksum that computes to zero is sent as 0xffff (zero means "none").
            _U16.pack_into(buf, checksum_at, l4_sum or (0xFFFF if protocol == UDP else 0))


class NatRewrite(NamedTuple):
    """A connection's NAT in one direction, worked out once for all its packets. In a packet with a plain
    20-byte header, each side (the source, then the destination) gets its address at `address_at` and
    its port at `port_at` replaced, and the header and transport checksums move by that side's RFC 1624
    change sums (`change_sum`), which `update_checksum` would work out from the bytes every time."""

    sides: tuple[tuple[int, bytes, int, bytes, int, int], ...]
    """(address_at, address, port_at, port, header change, transport change) for each side that changes."""
    checksum_at: int
    udp: bool


def nat_rewrite(
    key: FlowKey, *, src: tuple[int, int] | None = None, dst: tuple[int, int] | None = None
) -> NatRewrite:
    """What `rewrite_ipv4(buf, src=src, dst=dst)` does to every TCP or UDP packet of flow `key`, for
    `apply_nat`."""
    protocol, src_ip, src_port, dst_ip, dst_port = key
    sides = []
    changes = ((src, (src_ip, src_port), 12, 20), (dst, (dst_ip, dst_port), 16, 22))
    for replacement, old, address_at, port_at in changes:
        if replacement is None:
            continue
        old_address, old_port = old[0].to_bytes(4, "big"), old[1].to_bytes(2, "big")
        address, port = replacement[0].to_bytes(4, "big"), replacement[1].to_bytes(2, "big")
        sides.append((
            address_at, address, port_at, port,
            change_sum(old_address, address), change_sum(old_address + old_port, address + port),
        ))  # fmt: skip
    return NatRewrite(tuple(sides), 20 + _L4_CHECKSUM_AT[protocol], protocol == UDP)


def apply_nat(buf: bytearray, nat: NatRewrite) -> None:
    """Rewrites in place, byte for byte as `rewrite_ipv4` would, a packet of the flow `nat` was made for:
    a 20-byte header and the whole transport header after it."""
    checksum_at = nat.checksum_at
    (header,) = _U16.unpack_from(buf, 10)
    (transport,) = _U16.unpack_from(buf, checksum_at)
    udp = nat.udp
    summed = transport or not udp  # a datagram sent without a checksum stays without one
    for address_at, address, port_at, port, header_change, transport_change in nat.sides:
        buf[address_at : address_at + 4] = address
        buf[port_at : port_at + 2] = port
        header = apply_change(header, header_change)
        if summed:
            transport = apply_change(transport, transport_change) or (0xFFFF if udp else 0)
    _U16.pack_into(buf, 10, header)
    _U16.pack_into(buf, checksum_at, transport)


# A header without options and the two ports after it, in one read: version/IHL, total length,
# flags/fragment offset, TTL, protocol, header checksum, source, destination, source port, destination port.
_PLAIN_HEADER_PORTS = struct.Struct("!BxH2xHBBHIIHH")
SHORTCUT_MIN = 28  # that header and a UDP header: what a packet must hold for `shortcut_candidate`
_TCP_FLAGS_AT = 33
_TCP_MIN = 40  # that header and a TCP header: all of it, checksum included, is there for NAT to rewrite
_TCP_STATE_FLAGS = 0x07  # FIN, SYN, RST: a segment with one may move its conntrack entry's state


def shortcut_candidate(buf: bytes | bytearray, offset: int = 0) -> tuple[FlowKey, int, int] | None:
    """The IPv4 packet from `offset` to the end of `buf` (at least SHORTCUT_MIN long), when its flow's
    shortcut may carry it: a 20-byte header that states the packet's whole length and a right checksum,
    not a fragment, a TTL that survives one more hop, and a UDP datagram or a TCP segment with its whole
    header and no SYN, FIN or RST: (its flow key, its TTL, its header checksum), what the shortcut looks
    up and what one hop rewrites. None: the packet takes the pipeline's stages. (A plain tuple: building
    a named one costs a tenth of what the pipeline spends on a shortcut packet.)

    The one guard of the pipeline's fast path, for packets from pods and from the tunnel alike."""
    version_ihl, total, fragment, ttl, protocol, checksum, src, dst, src_port, dst_port = (
        _PLAIN_HEADER_PORTS.unpack_from(buf, offset)
    )
    if (
        version_ihl == 0x45
        and total == len(buf) - offset
        and not fragment & 0x3FFF
        and ttl > 1
        and (protocol == UDP or (protocol == TCP and total >= _TCP_MIN and not buf[offset + _TCP_FLAGS_AT] & _TCP_STATE_FLAGS))
        and not _from_bytes(buf[offset : offset + 20]) % 0xFFFF
    ):
        return (protocol, src, src_port, dst, dst_port), ttl, checksum
    return None


def icmp_error_quote(packet: bytes | bytearray | memoryview) -> FlowKey | None:
    """The flow key (as `ipv4_flow` gives it) of the TCP, UDP or ICMP echo packet that the ICMP error
    `packet` (an IPv4 packet) quotes, or None: not an ICMP error (destination unreachable, time
    exceeded, parameter problem), a quote shorter than an IPv4 header and the 8 transport bytes RFC 792
    asks for, or of another protocol."""
    if len(packet) < 56 or packet[9] != ICMP:  # two IPv4 headers, the ICMP header, 8 quoted bytes
        return None
    ihl = (packet[0] & 0x0F) * 4
    quoted = ihl + 8
    if len(packet) < quoted + 28 or packet[ihl] not in _ICMP_ERROR_TYPES:
        return None
    version_ihl, _, protocol, src, dst = _IPV4_FIXED.unpack_from(packet, quoted)
    quoted_ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or quoted_ihl < 20 or len(packet) < quoted + quoted_ihl + 8:
        return None
    l4 = quoted + quoted_ihl
    if protocol == ICMP:  # an echo: its key carries the identifier as both ports
        icmp_type, identifier = _ICMP_ECHO.unpack_from(packet, l4)
        return (ICMP, src, identifier, dst, identifier) if icmp_type in _ICMP_ECHO_TYPES else None
    if protocol != TCP and protocol != UDP:
        return None
    src_port, dst_port = _PORTS.unpack_from(packet, l4)
    return (protocol, src, src_port, dst, dst_port)


def rewrite_icmp_error(
    buf: bytearray, *, src: tuple[int, int] | None = None, dst: tuple[int, int] | None = None
) -> None:
    """NATs in place an ICMP error that `icmp_error_quote` reads, as a connection's packets going its
    way are NATed: the error's source address becomes `src`'s (its destination, `dst`'s), and the
    quoted packet, which went the other way, gets `src` as its destination (`dst` as its source). Every
    checksum stays right: the error's IPv4 header, the quoted IPv4 header and UDP checksum (incrementally,
    as Linux does for a quote that holds only the start of the datagram), and the ICMP message's."""
    ihl = (buf[0] & 0x0F) * 4
    rewrite_ipv4(buf, src=src, dst=dst)
    rewrite_ipv4(buf, ihl + 8, src=dst, dst=src)
    buf[ihl + 2 : ihl + 4] = b"\0\0"
    _U16.pack_into(buf, ihl + 2, internet_checksum(buf[ihl:]))


def _plain_udp_header(packet: bytes | bytearray | memoryview) -> tuple[int, int, int, int, int, int] | None:
    """`(src, dst, src_port, dst_port, UDP length, UDP checksum)` of a packet whose framing `ipv4_udp`
    takes (a 20-byte header, no fragment, lengths in bounds, UDP), checksums not looked at; else None."""
    if len(packet) < UDP_PAYLOAD_OFFSET:
        return None
    version_ihl, total, flags, protocol, src, dst, src_port, dst_port, length, checksum = (
        _IPV4_UDP.unpack_from(packet)
    )
    if (
        version_ihl != 0x45
        or protocol != UDP
        or flags & _IPV4_FLAGS_NOT_DF
        or not UDP_PAYLOAD_OFFSET <= total <= len(packet)
        or not 8 <= length <= total - 20
    ):
        return None
    return src, dst, src_port, dst_port, length, checksum


def ipv4_udp(
    packet: bytes | bytearray | memoryview, *, datagram_sum: bool = True
) -> tuple[int, int, int, int, int] | None:
    """`(src, dst, src_port, dst_port, payload_end)` of a plain IPv4 packet carrying UDP, its payload
    being `packet[UDP_PAYLOAD_OFFSET:payload_end]`; None for anything else: options, a fragment or the
    reserved flag, lengths out of bounds, a wrong IPv4 or UDP checksum, another protocol. What this
    accepts `ipv4.decode` and `udp.decode` accept with the same fields; the rest is theirs to judge.

    Both checksums are verified as the codecs do it: the ones' complement sum of data that holds its
    checksum is 0xffff, which is the data read as one integer being 0 modulo 0xffff (and not all zero).
    Without `datagram_sum` the UDP checksum is taken as right, as Linux takes it for a packet marked
    CHECKSUM_UNNECESSARY; the IPv4 header's is verified all the same, as ip_rcv does."""
    header = _plain_udp_header(packet)
    if header is None or _from_bytes(packet[:20]) % 0xFFFF:  # the version byte makes it non-zero
        return None
    src, dst, src_port, dst_port, length, checksum = header
    end = 20 + length
    if checksum and datagram_sum:
        # The header read as one integer is 0 modulo 0xffff (checked above) and its weight in the packet
        # is a power of 2**16 or 2**8 times one, so a datagram that runs to the packet's end sums as the
        # whole packet does, read without copying the payload out.
        value = wide_sum(packet) if end == len(packet) else wide_sum(packet, 20, end)
        # The pseudo-header's words (addresses, protocol, length) add up, modulo 0xffff, to the
        # addresses taken whole (2**16 is 1 modulo 0xffff); protocol and length keep the sum non-zero.
        if (value + src + dst + UDP + length) % 0xFFFF:
            return None
    return src, dst, src_port, dst_port, end


def ipv4_udp_batch(
    packets: list[bytes], *, datagram_sums: bool = True
) -> list[tuple[int, int, int, int, int] | None]:
    """What `ipv4_udp` gives for each of `packets`, with the checksums verified for many at once: the
    header and the datagram of every packet are summed in one numpy call per chunk. A datagram that does
    not run to the end of its packet (padding after it) is checked on its own, as are the candidates of
    a chunk too small for the call to pay. Without `datagram_sums`, only the headers' are verified (see
    `ipv4_udp`)."""
    if not datagram_sums:
        return [ipv4_udp(packet, datagram_sum=False) for packet in packets]
    results: list[tuple[int, int, int, int, int] | None] = [None] * len(packets)
    if len(packets) < BATCH_MIN:
        for index, packet in enumerate(packets):
            results[index] = ipv4_udp(packet)
        return results
    for first in range(0, len(packets), _BATCH_CHUNK):
        _check_chunk(packets, first, min(first + _BATCH_CHUNK, len(packets)), results)
    return results


def _check_chunk(
    packets: list[bytes], first: int, end: int, results: list[tuple[int, int, int, int, int] | None]
) -> None:
    parts: list[bytes] = []
    starts: list[int] = []
    # (index, fields, pseudo-header sum weighed as the words are, or None for a datagram without checksum)
    pending: list[tuple[int, tuple[int, int, int, int, int], int | None]] = []
    words = 0
    for index in range(first, end):
        packet = packets[index]
        header = _plain_udp_header(packet)
        if header is None:
            continue
        src, dst, src_port, dst_port, length, checksum = header
        size = len(packet)
        if 20 + length != size:
            results[index] = ipv4_udp(packet)
            continue
        parts.append(packet)
        starts.append(words)
        starts.append(words + _HEADER_WORDS)
        words += (size + 1) >> 1
        if size & 1:
            parts.append(b"\0")  # the padding byte the checksum counts, keeping the next packet aligned
        pseudo = (src + dst + UDP + length) * NATIVE_WORD_WEIGHT if checksum else None
        pending.append((index, (src, dst, src_port, dst_port, size), pseudo))
    if len(pending) < BATCH_MIN:
        for index, _, _ in pending:
            results[index] = ipv4_udp(packets[index])
        return
    sums = segment_sums(b"".join(parts), starts)
    for position, (index, fields, pseudo) in enumerate(pending):
        # A header holding its checksum sums to 0 modulo 0xffff in either byte order, and so does a
        # datagram with its pseudo-header (see ipv4_udp).
        if sums[2 * position] % 0xFFFF:
            continue
        if pseudo is not None and (sums[2 * position + 1] + pseudo) % 0xFFFF:
            continue
        results[index] = fields


def udp_packet(
    src: int, dst: int, src_port: int, dst_port: int, payload: bytes, identification: int
) -> bytes:
    """The IPv4 packet (20-byte header, DF, TTL 64) carrying one UDP datagram, both checksums filled
    in: byte for byte what `ipv4.encode(IPv4Packet(..., udp.encode(...), identification=...))` gives."""
    length = 8 + len(payload)
    if UDP_PAYLOAD_OFFSET + len(payload) > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} bytes does not fit an IPv4 packet")
    buf = bytearray(UDP_PAYLOAD_OFFSET + len(payload))
    _IPV4_UDP_BUILD.pack_into(
        buf,
        0,
        0x45,
        0,
        20 + length,
        identification,
        _IPV4_DONT_FRAGMENT,
        _DEFAULT_TTL,
        UDP,
        0,
        src,
        dst,
        src_port,
        dst_port,
        length,
        0,
    )
    buf[UDP_PAYLOAD_OFFSET:] = payload
    view = memoryview(buf)
    pseudo = src + dst + UDP + length  # congruent to the pseudo-header's word sum, as in ipv4_udp
    _U16.pack_into(buf, 26, internet_checksum(view[20:], pseudo) or 0xFFFF)  # zero means "none" (RFC 768)
    _U16.pack_into(buf, 10, internet_checksum(view[:20]))
    view.release()
    return bytes(buf)
