"""Conversions between the text forms used in dataclasses and wire bytes.

IPv4 addresses are dotted-quad strings ("10.244.1.2"), MAC addresses lower-case colon-separated
("02:00:0a:f4:01:02"). The integer form of an IPv4 address is what the fast path and route lookups use.
"""

from __future__ import annotations

import struct
from functools import lru_cache

_IP = struct.Struct("!I")

BROADCAST_MAC = "ff:ff:ff:ff:ff:ff"
ZERO_MAC = "00:00:00:00:00:00"


@lru_cache(maxsize=65536)
def ip_to_bytes(ip: str) -> bytes:
    """'10.0.0.1' -> b'\\n\\x00\\x00\\x01'; ValueError unless four canonical decimal octets 0..255.

    Cached: a node sees the same few pod and node addresses over and over.
    """
    try:
        a, b, c, d = ip.split(".")
        octets = bytes((int(a), int(b), int(c), int(d)))
    except (ValueError, TypeError, AttributeError):
        raise ValueError(f"not an IPv4 address: {ip!r}") from None
    # int() also takes " 1", "+1", "1_0" and "01": only the form bytes_to_ip prints is an address.
    if bytes_to_ip(octets) != ip:
        raise ValueError(f"not an IPv4 address: {ip!r}")
    return octets


def bytes_to_ip(data: bytes | bytearray | memoryview) -> str:
    if len(data) != 4:
        raise ValueError(f"an IPv4 address is 4 bytes, got {len(data)}")
    return f"{data[0]}.{data[1]}.{data[2]}.{data[3]}"


def ip_to_int(ip: str) -> int:
    return _IP.unpack(ip_to_bytes(ip))[0]


def int_to_ip(value: int) -> str:
    return bytes_to_ip(_IP.pack(value))


def mac_to_bytes(mac: str) -> bytes:
    """'02:00:0a:f4:01:02' -> 6 bytes; ValueError unless six colon-separated hex pairs."""
    parts = mac.split(":")
    if len(parts) != 6 or any(len(p) != 2 for p in parts):
        raise ValueError(f"not a MAC address: {mac!r}")
    try:
        return bytes.fromhex("".join(parts))
    except ValueError:
        raise ValueError(f"not a MAC address: {mac!r}") from None


def bytes_to_mac(data: bytes | bytearray | memoryview) -> str:
    if len(data) != 6:
        raise ValueError(f"a MAC address is 6 bytes, got {len(data)}")
    return bytes(data).hex(":")
