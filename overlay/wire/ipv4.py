"""IPv4 (RFC 791) without fragmentation: podnet never fragments, and drops fragments it is given.

A packet too big for the next hop with DF set is answered by `icmp.frag_needed`; one without DF is
dropped too, since there is nothing to reassemble it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from podnet.codec import DecodeError

from .addresses import bytes_to_ip, ip_to_bytes
from .checksum import internet_checksum

HEADER_LENGTH = 20
MAX_LENGTH = 0xFFFF

FLAG_RESERVED = 0x8000
FLAG_DONT_FRAGMENT = 0x4000
FLAG_MORE_FRAGMENTS = 0x2000
FRAGMENT_OFFSET_MASK = 0x1FFF

# version/IHL, DSCP/ECN, total length, identification, flags/fragment offset, TTL, protocol, checksum
_HEADER = struct.Struct("!BBHHHBBH4s4s")


class IPProtocol(IntEnum):
    ICMP = 1
    TCP = 6
    UDP = 17


def ip_protocol(value: int) -> IPProtocol | int:
    """The IPProtocol member for `value`, or the plain int when it names none we know."""
    try:
        return IPProtocol(value)
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class IPv4Packet:
    src: str
    dst: str
    protocol: IPProtocol | int
    payload: bytes
    ttl: int = 64
    identification: int = 0
    dont_fragment: bool = True
    dscp: int = 0
    ecn: int = 0


def header_length(buf: bytes | bytearray | memoryview) -> int:
    """The length of the header at the start of `buf` (options included), checked against `buf`."""
    if len(buf) < HEADER_LENGTH:
        raise DecodeError(f"IPv4 packet of {len(buf)} bytes is shorter than its 20-byte header")
    version_ihl = buf[0]
    if version_ihl >> 4 != 4:
        raise DecodeError(f"IP version {version_ihl >> 4}, not 4")
    length = (version_ihl & 0x0F) * 4
    if length < HEADER_LENGTH:
        raise DecodeError(f"IPv4 header length {length} is below 20")
    if length > len(buf):
        raise DecodeError(f"IPv4 header length {length} exceeds the {len(buf)} bytes given")
    return length


def decode(buf: bytes | bytearray | memoryview, *, verify_checksum: bool = True) -> IPv4Packet:
    """Decodes one unfragmented packet; bytes past its total length (Ethernet padding) are ignored.
    `verify_checksum=False` reads a header whose checksum is wrong, as a packet analyser must."""
    ihl = header_length(buf)
    (_, tos, total_length, identification, flags_offset, ttl, protocol, _, src, dst) = _HEADER.unpack_from(
        buf
    )
    if total_length < ihl or total_length > len(buf):
        raise DecodeError(f"IPv4 total length {total_length} outside {ihl}..{len(buf)}")
    if verify_checksum and internet_checksum(buf[:ihl]) != 0:
        raise DecodeError("IPv4 header checksum mismatch")
    if flags_offset & FLAG_RESERVED:
        raise DecodeError("IPv4 reserved flag set")
    if flags_offset & (FLAG_MORE_FRAGMENTS | FRAGMENT_OFFSET_MASK):
        raise DecodeError("IPv4 fragment (podnet neither fragments nor reassembles)")
    return IPv4Packet(
        src=bytes_to_ip(src),
        dst=bytes_to_ip(dst),
        protocol=ip_protocol(protocol),
        payload=bytes(buf[ihl:total_length]),
        ttl=ttl,
        identification=identification,
        dont_fragment=bool(flags_offset & FLAG_DONT_FRAGMENT),
        dscp=tos >> 2,
        ecn=tos & 0x03,
    )


def encode(packet: IPv4Packet) -> bytes:
    """The packet with a 20-byte header (no options), its total length and header checksum filled in."""
    total_length = HEADER_LENGTH + len(packet.payload)
    if total_length > MAX_LENGTH:
        raise ValueError(f"IPv4 packet of {total_length} bytes exceeds {MAX_LENGTH}")
    if not (0 <= packet.dscp < 64 and 0 <= packet.ecn < 4):
        raise ValueError(f"DSCP {packet.dscp} / ECN {packet.ecn} out of range")
    header = bytearray(
        _HEADER.pack(
            0x45,
            (packet.dscp << 2) | packet.ecn,
            total_length,
            packet.identification,
            FLAG_DONT_FRAGMENT if packet.dont_fragment else 0,
            packet.ttl,
            packet.protocol,
            0,
            ip_to_bytes(packet.src),
            ip_to_bytes(packet.dst),
        )
    )
    header[10:12] = internet_checksum(header).to_bytes(2, "big")
    return bytes(header) + packet.payload
