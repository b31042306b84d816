"""The PROXY protocol version 2 header (HAProxy's proxy-protocol.txt, section 2.2), pure.

A load balancer that relays a connection puts this binary header in front of the client's bytes so the
receiver learns the client's address: 12 bytes of signature, version and command, address family and
transport, a length, the addresses, then optional TLVs. On a datagram transport every datagram carries
its own header.

A receiver does not know in advance whether a header comes (podnet's NodePorts accept both): `detect`
tells from the first bytes, `header_length` from the first 16 how many bytes to wait for, and `decode`
reads exactly one header.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from podnet.codec import DecodeError

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED_LENGTH = 16  # signature, version/command, family/transport, length
VERSION = 2
MAX_LENGTH = FIXED_LENGTH + 0xFFFF
_FIXED = struct.Struct("!12sBBH")
_INET = struct.Struct("!4s4sHH")
_INET6 = struct.Struct("!16s16sHH")
_UNIX_PATH = 108
_TLV = struct.Struct("!BH")


class Command(IntEnum):
    LOCAL = 0  # the balancer's own connection (a health check): use the real peer address
    PROXY = 1  # relayed: the addresses in the header are the client's and the one it reached


class Family(IntEnum):
    UNSPEC = 0
    INET = 1
    INET6 = 2
    UNIX = 3


class Transport(IntEnum):
    UNSPEC = 0
    STREAM = 1
    DGRAM = 2


_ADDRESS_LENGTH = {
    Family.UNSPEC: 0,
    Family.INET: _INET.size,
    Family.INET6: _INET6.size,
    Family.UNIX: 2 * _UNIX_PATH,
}


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    command: Command
    family: Family = Family.UNSPEC
    transport: Transport = Transport.UNSPEC
    src_address: str = ""  # dotted quad, IPv6 text or a UNIX path
    dst_address: str = ""
    src_port: int = 0
    dst_port: int = 0
    tlvs: tuple[tuple[int, bytes], ...] = ()


def detect(data: bytes | bytearray | memoryview) -> bool | None:
    """True when `data` starts with the signature, False when it cannot be a v2 header, None when it is
    a proper prefix of the signature (wait for more bytes)."""
    head = bytes(data[: len(SIGNATURE)])
    if not SIGNATURE.startswith(head):
        return False
    return True if len(head) == len(SIGNATURE) else None


def header_length(data: bytes | bytearray | memoryview) -> int:
    """The whole header's length, from its first 16 bytes."""
    if len(data) < FIXED_LENGTH:
        raise DecodeError(f"PROXY v2 header: need {FIXED_LENGTH} bytes to know its length, have {len(data)}")
    if bytes(data[:12]) != SIGNATURE:
        raise DecodeError("PROXY v2 header: wrong signature")
    return FIXED_LENGTH + struct.unpack_from("!H", data, 14)[0]


def decode(data: bytes | bytearray | memoryview) -> ProxyHeader:
    """Exactly one header: `data` must be `header_length(data)` bytes long."""
    total = header_length(data)
    if len(data) != total:
        raise DecodeError(f"PROXY v2 header: {len(data)} bytes given, the header says {total}")
    _, version_command, family_transport, _ = _FIXED.unpack_from(data)
    if version_command >> 4 != VERSION:
        raise DecodeError(f"PROXY v2 header: version {version_command >> 4}")
    try:
        command = Command(version_command & 0x0F)
        family = Family(family_transport >> 4)
        transport = Transport(family_transport & 0x0F)
    except ValueError as exc:
        raise DecodeError(f"PROXY v2 header: {exc}") from None
    body = bytes(data[FIXED_LENGTH:])
    need = _ADDRESS_LENGTH[family]
    if len(body) < need:
        raise DecodeError(f"PROXY v2 header: {family.name} addresses need {need} bytes, have {len(body)}")
    src = dst = ""
    sport = dport = 0
    if family is Family.INET:
        raw_src, raw_dst, sport, dport = _INET.unpack_from(body)
        src, dst = str(ipaddress.IPv4Address(raw_src)), str(ipaddress.IPv4Address(raw_dst))
    elif family is Family.INET6:
        raw_src, raw_dst, sport, dport = _INET6.unpack_from(body)
        src, dst = str(ipaddress.IPv6Address(raw_src)), str(ipaddress.IPv6Address(raw_dst))
    elif family is Family.UNIX:
        src = body[:_UNIX_PATH].split(b"\0", 1)[0].decode("utf-8", "replace")
        dst = body[_UNIX_PATH:need].split(b"\0", 1)[0].decode("utf-8", "replace")
    tlvs = []
    position = need
    while position < len(body):
        if position + _TLV.size > len(body):
            raise DecodeError("PROXY v2 header: truncated TLV")
        kind, length = _TLV.unpack_from(body, position)
        start = position + _TLV.size
        if start + length > len(body):
            raise DecodeError(f"PROXY v2 header: TLV {kind:#x} of {length} bytes overruns the header")
        tlvs.append((kind, body[start : start + length]))
        position = start + length
    return ProxyHeader(command, family, transport, src, dst, sport, dport, tuple(tlvs))


def encode(header: ProxyHeader) -> bytes:
    family = header.family
    if family is Family.INET:
        body = _INET.pack(
            ipaddress.IPv4Address(header.src_address).packed,
            ipaddress.IPv4Address(header.dst_address).packed,
            header.src_port,
            header.dst_port,
        )
    elif family is Family.INET6:
        body = _INET6.pack(
            ipaddress.IPv6Address(header.src_address).packed,
            ipaddress.IPv6Address(header.dst_address).packed,
            header.src_port,
            header.dst_port,
        )
    elif family is Family.UNIX:
        body = b"".join(
            p.encode().ljust(_UNIX_PATH, b"\0")[:_UNIX_PATH] for p in (header.src_address, header.dst_address)
        )
    else:
        body = b""
    body += b"".join(_TLV.pack(kind, len(value)) + value for kind, value in header.tlvs)
    if len(body) > 0xFFFF:
        raise ValueError("PROXY v2 header longer than 65535 bytes")
    return (
        _FIXED.pack(SIGNATURE, VERSION << 4 | header.command, family << 4 | header.transport, len(body))
        + body
    )


def proxy_inet(transport: Transport, src: tuple[str, int], dst: tuple[str, int]) -> bytes:
    """The header a balancer sends for an IPv4 client `src` that reached `dst`."""
    return encode(ProxyHeader(Command.PROXY, Family.INET, transport, src[0], dst[0], src[1], dst[1]))
