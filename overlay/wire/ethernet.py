"""Ethernet II frames (no FCS: neither sockets nor VXLAN carry it)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from podnet.codec import DecodeError

from .addresses import bytes_to_mac, mac_to_bytes

HEADER_LENGTH = 14
# Below this an EtherType field is an IEEE 802.3 length, which podnet does not carry.
MIN_ETHERTYPE = 0x0600

_ETHERTYPE = struct.Struct("!H")


class EtherType(IntEnum):
    IPV4 = 0x0800
    ARP = 0x0806
    VLAN = 0x8100
    IPV6 = 0x86DD


def ethertype(value: int) -> EtherType | int:
    """The EtherType member for `value`, or the plain int when it names none we know."""
    try:
        return EtherType(value)
    except ValueError:
        return value


@dataclass(frozen=True, slots=True)
class EthernetFrame:
    dst: str
    src: str
    ethertype: EtherType | int
    payload: bytes


def decode(buf: bytes | bytearray | memoryview) -> EthernetFrame:
    if len(buf) < HEADER_LENGTH:
        raise DecodeError(f"Ethernet frame of {len(buf)} bytes is shorter than its 14-byte header")
    (value,) = _ETHERTYPE.unpack_from(buf, 12)
    if value < MIN_ETHERTYPE:
        raise DecodeError(f"802.3 length field {value}, not an Ethernet II EtherType")
    return EthernetFrame(
        dst=bytes_to_mac(buf[0:6]),
        src=bytes_to_mac(buf[6:12]),
        ethertype=ethertype(value),
        payload=bytes(buf[HEADER_LENGTH:]),
    )


def encode(frame: EthernetFrame) -> bytes:
    if not MIN_ETHERTYPE <= frame.ethertype <= 0xFFFF:
        raise ValueError(f"EtherType {frame.ethertype:#x} out of range")
    return (
        mac_to_bytes(frame.dst) + mac_to_bytes(frame.src) + _ETHERTYPE.pack(frame.ethertype) + frame.payload
    )
