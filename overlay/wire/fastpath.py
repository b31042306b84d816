"""The per-frame hot path: `struct.unpack_from` on the buffer as it came, no dataclasses.

Addresses are 32-bit ints here (what route lookups and conntrack keys want); `addresses.int_to_ip`
turns one into text for people. A flow key is `(protocol, src_ip, src_port, dst_ip, dst_port)`; an ICMP
echo's key carries its identifier as both ports, so a request and its reply share a connection.
Everything here agrees with the dataclass codecs (tests/test_wire_fastpath.py checks it).
"""

from __future__ import annotations

import struct

from .checksum import update_checksum
from .errors import DecodeError

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
_ICMP_ECHO = struct.Struct("!B3xH")  # type, identifier
_U16 = struct.Struct("!H")
_ICMP_ECHO_TYPES = (0, 8)
# How many transport bytes a key needs: ports for TCP/UDP, the whole echo header for ICMP.
_L4_NEEDED = {TCP: 4, UDP: 4, ICMP: 8}
# Where each transport keeps its checksum, from the start of its header.
_L4_CHECKSUM_AT = {TCP: 16, UDP: 6}


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
    if len(packet) - offset < 20:
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
    The packet must be one `ipv4_flow` gives a key for."""
    ihl = (buf[offset] & 0x0F) * 4
    protocol = buf[offset + 9]
    l4 = offset + ihl
    checksum_at = _L4_CHECKSUM_AT.get(protocol)
    if checksum_at is not None:
        checksum_at += l4
        if protocol == UDP and buf[checksum_at] == 0 and buf[checksum_at + 1] == 0:
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
