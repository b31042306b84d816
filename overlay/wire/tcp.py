"""TCP segments (RFC 9293) over IPv4, with the options podnet's stack speaks.

Options decoded: MSS, window scale, SACK permitted, timestamps; NOP and EOL are padding; any other
option (SACK blocks, MD5, ...) is skipped by its length. Encoding lays options out as Linux does
(`tcp_options_write`), so a segment decoded from the kernel re-encodes to the same bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum, IntFlag

from podnet.codec import DecodeError, Reader

from .checksum import internet_checksum, pseudo_header_sum
from .ipv4 import IPProtocol

HEADER_LENGTH = 20

# ports, seq, ack, data offset/reserved, flags, window, checksum, urgent pointer
_HEADER = struct.Struct("!HHIIBBHHH")
_U16 = struct.Struct("!H")
_TIMESTAMPS = struct.Struct("!II")


class TcpFlags(IntFlag):
    FIN = 0x01
    SYN = 0x02
    RST = 0x04
    PSH = 0x08
    ACK = 0x10
    URG = 0x20
    ECE = 0x40
    CWR = 0x80


class TcpOption(IntEnum):
    EOL = 0
    NOP = 1
    MSS = 2
    WINDOW_SCALE = 3
    SACK_PERMITTED = 4
    SACK = 5
    TIMESTAMPS = 8


_OPTION_LENGTHS = {
    TcpOption.MSS: 4,
    TcpOption.WINDOW_SCALE: 3,
    TcpOption.SACK_PERMITTED: 2,
    TcpOption.TIMESTAMPS: 10,
}


@dataclass(frozen=True, slots=True)
class TcpSegment:
    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: TcpFlags
    window: int
    payload: bytes = b""
    mss: int | None = None
    window_scale: int | None = None
    sack_permitted: bool = False
    timestamps: tuple[int, int] | None = None
    """(TSval, TSecr)."""


def decode(
    buf: bytes | bytearray | memoryview, src_ip: str, dst_ip: str, *, verify_checksum: bool = True
) -> TcpSegment:
    """Decodes the segment `src_ip` sent `dst_ip`, verifying its checksum; the urgent pointer is ignored."""
    if len(buf) < HEADER_LENGTH:
        raise DecodeError(f"TCP segment of {len(buf)} bytes is shorter than its 20-byte header")
    src_port, dst_port, seq, ack, offset_byte, flags, window, _, _ = _HEADER.unpack_from(buf)
    data_offset = (offset_byte >> 4) * 4
    if data_offset < HEADER_LENGTH or data_offset > len(buf):
        raise DecodeError(f"TCP data offset {data_offset} outside 20..{len(buf)}")
    if verify_checksum and internet_checksum(buf, pseudo_header_sum(src_ip, dst_ip, IPProtocol.TCP, len(buf))):
        raise DecodeError("TCP checksum mismatch")
    options = _decode_options(Reader(buf, HEADER_LENGTH, data_offset))
    return TcpSegment(
        src_port, dst_port, seq, ack, TcpFlags(flags), window, bytes(buf[data_offset:]), **options
    )


def _decode_options(reader: Reader) -> dict:
    options: dict = {}
    while reader.remaining:
        kind = reader.uint8("TCP option kind")
        if kind == TcpOption.EOL:
            break
        if kind == TcpOption.NOP:
            continue
        length = reader.uint8("TCP option length")
        if length < 2:
            raise DecodeError(f"TCP option {kind} with length {length}")
        body = reader.sub(length - 2, f"TCP option {kind}")
        expected = _OPTION_LENGTHS.get(kind)
        if expected is None:
            continue
        if length != expected:
            raise DecodeError(f"TCP option {TcpOption(kind).name} with length {length}, not {expected}")
        if kind == TcpOption.MSS:
            options["mss"] = body.uint16()
        elif kind == TcpOption.WINDOW_SCALE:
            options["window_scale"] = body.uint8()
        elif kind == TcpOption.SACK_PERMITTED:
            options["sack_permitted"] = True
        else:
            options["timestamps"] = (body.uint32(), body.uint32())
    return options


def _encode_options(segment: TcpSegment) -> bytes:
    parts = []
    if segment.mss is not None:
        parts.append(bytes((TcpOption.MSS, 4)) + _U16.pack(segment.mss))
    if segment.timestamps is not None:
        # Linux puts SACK-permitted in the two bytes that would otherwise pad the timestamps.
        lead = (TcpOption.SACK_PERMITTED, 2) if segment.sack_permitted else (TcpOption.NOP, TcpOption.NOP)
        parts.append(bytes((*lead, TcpOption.TIMESTAMPS, 10)) + _TIMESTAMPS.pack(*segment.timestamps))
    elif segment.sack_permitted:
        parts.append(bytes((TcpOption.NOP, TcpOption.NOP, TcpOption.SACK_PERMITTED, 2)))
    if segment.window_scale is not None:
        if not 0 <= segment.window_scale <= 0xFF:
            raise ValueError(f"window scale {segment.window_scale} out of range")
        parts.append(bytes((TcpOption.NOP, TcpOption.WINDOW_SCALE, 3, segment.window_scale)))
    return b"".join(parts)


def encode(segment: TcpSegment, src_ip: str, dst_ip: str, *, partial_checksum: bool = False) -> bytes:
    """The segment's bytes with its checksum; `partial_checksum`: with the pseudo-header's sum only
    (folded, not complemented), as a kernel leaves it for checksum offload, for a super-packet whose
    segments get their own checksums where it is cut."""
    options = _encode_options(segment)
    data_offset = HEADER_LENGTH + len(options)
    header = _HEADER.pack(
        segment.src_port,
        segment.dst_port,
        segment.seq,
        segment.ack,
        (data_offset // 4) << 4,
        segment.flags,
        segment.window,
        0,
        0,
    )
    packed = bytearray(header + options + segment.payload)
    length = len(packed)
    if length > 0xFFFF:
        raise ValueError(f"TCP segment of {length} bytes exceeds 65535")
    pseudo = pseudo_header_sum(src_ip, dst_ip, IPProtocol.TCP, length)
    if partial_checksum:
        packed[16:18] = (pseudo % 0xFFFF or 0xFFFF).to_bytes(2, "big")
    else:
        packed[16:18] = internet_checksum(packed, pseudo).to_bytes(2, "big")
    return bytes(packed)
