"""ICMP for IPv4 (RFC 792): echo, destination unreachable (incl. fragmentation needed, RFC 1191).

`decode` gives an `IcmpEcho`, an `IcmpUnreachable`, or for any other type an `IcmpMessage` that keeps
the 4 type-specific header bytes as they came.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from podnet.codec import DecodeError

from . import ipv4
from .addresses import bytes_to_ip
from .checksum import internet_checksum

HEADER_LENGTH = 8
# An error quotes the offending packet's IP header and the first 8 bytes of its payload (RFC 792).
QUOTED_PAYLOAD_LENGTH = 8

_HEADER = struct.Struct("!BBHHH")


class ICMPType(IntEnum):
    ECHO_REPLY = 0
    DESTINATION_UNREACHABLE = 3
    ECHO_REQUEST = 8
    TIME_EXCEEDED = 11


class UnreachableCode(IntEnum):
    NETWORK = 0
    HOST = 1
    PROTOCOL = 2
    PORT = 3
    FRAGMENTATION_NEEDED = 4
    ADMINISTRATIVELY_PROHIBITED = 13


@dataclass(frozen=True, slots=True)
class IcmpEcho:
    type: ICMPType
    code: int
    identifier: int
    sequence: int
    data: bytes


@dataclass(frozen=True, slots=True)
class IcmpUnreachable:
    code: UnreachableCode | int
    original: bytes
    """The quoted start of the packet that could not be delivered: its IP header and 8 bytes more."""
    next_hop_mtu: int = 0
    """Only meaningful with FRAGMENTATION_NEEDED; zero otherwise."""


@dataclass(frozen=True, slots=True)
class IcmpMessage:
    type: int
    code: int
    rest_of_header: bytes
    data: bytes


Icmp = IcmpEcho | IcmpUnreachable | IcmpMessage


def decode(buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True) -> Icmp:
    if len(buf) < HEADER_LENGTH:
        raise DecodeError(f"ICMP message of {len(buf)} bytes is shorter than its 8-byte header")
    if verify_checksum and internet_checksum(buf) != 0:
        raise DecodeError("ICMP checksum mismatch")
    icmp_type, code, _, word1, word2 = _HEADER.unpack_from(buf)
    body = bytes(buf[HEADER_LENGTH:])
    if icmp_type in (ICMPType.ECHO_REQUEST, ICMPType.ECHO_REPLY):
        return IcmpEcho(ICMPType(icmp_type), code, word1, word2, body)
    # Unused fields that are not zero (RFC 4884 extensions, say) stay raw in an IcmpMessage.
    if icmp_type == ICMPType.DESTINATION_UNREACHABLE and word1 == 0:
        if code == UnreachableCode.FRAGMENTATION_NEEDED or word2 == 0:
            return IcmpUnreachable(_unreachable_code(code), body, word2)
    return IcmpMessage(icmp_type, code, bytes(buf[4:8]), body)


def _unreachable_code(code: int) -> UnreachableCode | int:
    try:
        return UnreachableCode(code)
    except ValueError:
        return code


def encode(message: Icmp) -> bytes:
    if isinstance(message, IcmpEcho):
        head = (message.type, message.code, 0, message.identifier, message.sequence)
        body = message.data
    elif isinstance(message, IcmpUnreachable):
        if message.next_hop_mtu and message.code != UnreachableCode.FRAGMENTATION_NEEDED:
            raise ValueError("only fragmentation-needed carries a next-hop MTU")
        head = (ICMPType.DESTINATION_UNREACHABLE, message.code, 0, 0, message.next_hop_mtu)
        body = message.original
    else:
        if len(message.rest_of_header) != 4:
            raise ValueError("ICMP rest of header is 4 bytes")
        head = (message.type, message.code, 0) + struct.unpack("!HH", message.rest_of_header)
        body = message.data
    packed = bytearray(_HEADER.pack(*head) + body)
    packed[2:4] = internet_checksum(packed).to_bytes(2, "big")
    return bytes(packed)


def echo_reply(request: IcmpEcho) -> IcmpEcho:
    return IcmpEcho(ICMPType.ECHO_REPLY, 0, request.identifier, request.sequence, request.data)


def quote(original_packet: bytes | bytearray | memoryview) -> bytes:
    """What an ICMP error carries of `original_packet` (an encoded IPv4 packet)."""
    return bytes(original_packet[: ipv4.header_length(original_packet) + QUOTED_PAYLOAD_LENGTH])


def port_unreachable(original_packet: bytes | bytearray | memoryview) -> IcmpUnreachable:
    return IcmpUnreachable(UnreachableCode.PORT, quote(original_packet))


def frag_needed(original_packet: bytes | bytearray | memoryview, next_hop_mtu: int) -> IcmpUnreachable:
    """The answer to a packet with DF set that is bigger than `next_hop_mtu`."""
    return IcmpUnreachable(UnreachableCode.FRAGMENTATION_NEEDED, quote(original_packet), next_hop_mtu)


def time_exceeded(original_packet: bytes | bytearray | memoryview) -> IcmpMessage:
    """The answer of a router to a packet whose TTL ran out in transit (type 11, code 0)."""
    return IcmpMessage(ICMPType.TIME_EXCEEDED, 0, bytes(4), quote(original_packet))


def error_packet(
    message: IcmpUnreachable | IcmpMessage, src: str, original_packet: bytes | bytearray | memoryview
) -> ipv4.IPv4Packet:
    """The IPv4 packet from `src` (the router or host reporting) back to the original sender."""
    ipv4.header_length(original_packet)
    original_src = bytes_to_ip(original_packet[12:16])
    return ipv4.IPv4Packet(src=src, dst=original_src, protocol=ipv4.IPProtocol.ICMP, payload=encode(message))
