"""VXLAN (RFC 7348): an 8-byte header before an inner Ethernet frame, carried in UDP to port 4789.

Header: flags (8 bits, only I = 0x08 set), 24 reserved bits, the 24-bit VNI, 8 reserved bits. Reserved
bits must be zero here: a receiver may ignore them, but podnet talks only to VXLAN peers that send zero,
so anything else is a malformed or foreign datagram and is dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from podnet.codec import DecodeError

PORT = 4789
HEADER_LENGTH = 8
FLAG_VNI_VALID = 0x08
MAX_VNI = 0xFFFFFF

_HEADER = struct.Struct("!II")
_FLAGS_WORD = FLAG_VNI_VALID << 24


@dataclass(frozen=True, slots=True)
class VxlanHeader:
    vni: int


def decode_header(datagram: bytes | bytearray | memoryview) -> VxlanHeader:
    if len(datagram) < HEADER_LENGTH:
        raise DecodeError(f"VXLAN datagram of {len(datagram)} bytes is shorter than its 8-byte header")
    flags_word, vni_word = _HEADER.unpack_from(datagram)
    if flags_word != _FLAGS_WORD:
        if not flags_word >> 24 & FLAG_VNI_VALID:
            raise DecodeError("VXLAN I flag not set")
        raise DecodeError(f"VXLAN reserved bits set in the first word {flags_word:#010x}")
    if vni_word & 0xFF:
        raise DecodeError(f"VXLAN reserved bits set after the VNI: {vni_word & 0xFF:#04x}")
    return VxlanHeader(vni_word >> 8)


def decode(datagram: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """(VNI, inner Ethernet frame) of a VXLAN UDP payload."""
    return decode_header(datagram).vni, bytes(datagram[HEADER_LENGTH:])


def encode_header(vni: int) -> bytes:
    if not 0 <= vni <= MAX_VNI:
        raise ValueError(f"VNI {vni} outside 0..{MAX_VNI}")
    return _HEADER.pack(_FLAGS_WORD, vni << 8)


def encode(vni: int, inner_frame: bytes | bytearray | memoryview) -> bytes:
    return encode_header(vni) + inner_frame
