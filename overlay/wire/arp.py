"""ARP (RFC 826) for Ethernet and IPv4 only."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from podnet.codec import DecodeError

from .addresses import ZERO_MAC, bytes_to_ip, bytes_to_mac, ip_to_bytes, mac_to_bytes

LENGTH = 28
HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800

_FIXED = struct.Struct("!HHBBH")


class ArpOp(IntEnum):
    REQUEST = 1
    REPLY = 2


@dataclass(frozen=True, slots=True)
class ArpPacket:
    op: ArpOp
    sender_mac: str
    sender_ip: str
    target_mac: str
    target_ip: str


def decode(buf: bytes | bytearray | memoryview) -> ArpPacket:
    """Decodes the 28-byte packet; bytes after it (Ethernet padding) are ignored."""
    if len(buf) < LENGTH:
        raise DecodeError(f"ARP packet of {len(buf)} bytes is shorter than 28")
    htype, ptype, hlen, plen, op = _FIXED.unpack_from(buf, 0)
    if (htype, ptype, hlen, plen) != (HTYPE_ETHERNET, PTYPE_IPV4, 6, 4):
        raise DecodeError(f"ARP for hardware {htype}/{hlen} protocol {ptype:#x}/{plen}, not Ethernet/IPv4")
    try:
        op = ArpOp(op)
    except ValueError:
        raise DecodeError(f"unknown ARP operation {op}") from None
    return ArpPacket(
        op=op,
        sender_mac=bytes_to_mac(buf[8:14]),
        sender_ip=bytes_to_ip(buf[14:18]),
        target_mac=bytes_to_mac(buf[18:24]),
        target_ip=bytes_to_ip(buf[24:28]),
    )


def encode(packet: ArpPacket) -> bytes:
    return (
        _FIXED.pack(HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, packet.op)
        + mac_to_bytes(packet.sender_mac)
        + ip_to_bytes(packet.sender_ip)
        + mac_to_bytes(packet.target_mac)
        + ip_to_bytes(packet.target_ip)
    )


def request(sender_mac: str, sender_ip: str, target_ip: str) -> ArpPacket:
    """Who has `target_ip`? Tell `sender_ip` (the target MAC is zero, as Linux sends it)."""
    return ArpPacket(ArpOp.REQUEST, sender_mac, sender_ip, ZERO_MAC, target_ip)


def reply(to: ArpPacket, mac: str) -> ArpPacket:
    """The answer to the request `to`: `to.target_ip` is at `mac`."""
    return ArpPacket(ArpOp.REPLY, mac, to.target_ip, to.sender_mac, to.sender_ip)
