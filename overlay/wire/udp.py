"""UDP (RFC 768) over IPv4, with the pseudo-header checksum."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from podnet.codec import DecodeError

from .checksum import internet_checksum, pseudo_header_sum
from .ipv4 import IPProtocol

HEADER_LENGTH = 8

_HEADER = struct.Struct("!HHHH")


@dataclass(frozen=True, slots=True)
class UdpDatagram:
    src_port: int
    dst_port: int
    payload: bytes


def decode(
    buf: bytes | bytearray | memoryview, src_ip: str, dst_ip: str, *, verify_checksum: bool = True
) -> UdpDatagram:
    """Decodes the datagram that `src_ip` sent `dst_ip`; a zero checksum means none was sent."""
    if len(buf) < HEADER_LENGTH:
        raise DecodeError(f"UDP datagram of {len(buf)} bytes is shorter than its 8-byte header")
    src_port, dst_port, length, checksum = _HEADER.unpack_from(buf)
    if length < HEADER_LENGTH or length > len(buf):
        raise DecodeError(f"UDP length {length} outside 8..{len(buf)}")
    datagram = buf[:length]
    if verify_checksum and checksum and internet_checksum(datagram, pseudo_header_sum(src_ip, dst_ip, IPProtocol.UDP, length)):
        raise DecodeError("UDP checksum mismatch")
    return UdpDatagram(src_port, dst_port, bytes(buf[HEADER_LENGTH:length]))


def encode(datagram: UdpDatagram, src_ip: str, dst_ip: str) -> bytes:
    """The datagram with its length and checksum (computed 0 is sent as 0xffff, RFC 768)."""
    length = HEADER_LENGTH + len(datagram.payload)
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} bytes exceeds 65535")
    packed = bytearray(_HEADER.pack(datagram.src_port, datagram.dst_port, length, 0) + datagram.payload)
    checksum = internet_checksum(packed, pseudo_header_sum(src_ip, dst_ip, IPProtocol.UDP, length)) or 0xFFFF
    packed[6:8] = checksum.to_bytes(2, "big")
    return bytes(packed)
