"""Classic libpcap files, and the synthetic outer headers that make a node's underlay datagrams readable.

A node agent sees its VXLAN traffic as UDP payloads on a socket, without the outer Ethernet/IPv4/UDP
headers the kernel adds. `underlay_frame` rebuilds those headers from the real outer addresses and
ports, so a capture opens in Wireshark/tshark as Ethernet → IPv4 → UDP 4789 → VXLAN → the pod frame.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import BinaryIO

from . import ethernet, ipv4, udp
from .addresses import bytes_to_mac, ip_to_bytes

MAGIC_MICROSECONDS = 0xA1B2C3D4
VERSION = (2, 4)
DEFAULT_SNAPLEN = 0xFFFF

_FILE_HEADER = struct.Struct("<IHHiIII")
_RECORD_HEADER = struct.Struct("<IIII")


class LinkType(IntEnum):
    ETHERNET = 1
    RAW = 101  # raw IPv4 or IPv6, told apart by the version nibble
    IPV4 = 228


class PcapWriter:
    """Writes the file header at once, then one record per `write`; little-endian, microseconds."""

    def __init__(
        self, fileobj: BinaryIO, linktype: LinkType = LinkType.ETHERNET, snaplen: int = DEFAULT_SNAPLEN
    ):
        self._file = fileobj
        self._snaplen = snaplen
        fileobj.write(_FILE_HEADER.pack(MAGIC_MICROSECONDS, *VERSION, 0, 0, snaplen, linktype))

    def write(self, timestamp: float, data: bytes | bytearray | memoryview) -> None:
        """Records `data` as seen at `timestamp` (seconds since the epoch), cut to the snap length."""
        seconds, microseconds = divmod(round(timestamp * 1_000_000), 1_000_000)
        captured = data[: self._snaplen]
        self._file.write(_RECORD_HEADER.pack(seconds, microseconds, len(captured), len(data)))
        self._file.write(captured)


def node_mac(ip: str) -> str:
    """A stable, locally administered MAC for a node address in synthetic frames: 02:00 + its 4 bytes."""
    return bytes_to_mac(b"\x02\x00" + ip_to_bytes(ip))


def underlay_packet(
    payload: bytes | bytearray | memoryview,
    src: tuple[str, int],
    dst: tuple[str, int],
    *,
    identification: int = 0,
) -> bytes:
    """The IPv4 packet that carried UDP `payload` from `src` to `dst` ((address, port) pairs), as the
    sender's kernel builds it around a datagram written to a UDP socket, checksums filled in.
    `identification` wraps at 16 bits, as a sender's IP ID counter does, so a running count can be given."""
    (src_ip, src_port), (dst_ip, dst_port) = src, dst
    datagram = udp.encode(udp.UdpDatagram(src_port, dst_port, bytes(payload)), src_ip, dst_ip)
    return ipv4.encode(
        ipv4.IPv4Packet(src_ip, dst_ip, ipv4.IPProtocol.UDP, datagram, identification=identification & 0xFFFF)
    )


def underlay_frame(
    payload: bytes | bytearray | memoryview,
    src: tuple[str, int],
    dst: tuple[str, int],
    *,
    identification: int = 0,
) -> bytes:
    """The Ethernet frame that carried UDP `payload` from `src` to `dst`: `underlay_packet` with
    synthetic node MACs, so that Wireshark finds nothing wrong with the headers it did not see."""
    packet = underlay_packet(payload, src, dst, identification=identification)
    return ethernet.encode(
        ethernet.EthernetFrame(node_mac(dst[0]), node_mac(src[0]), ethernet.EtherType.IPV4, packet)
    )
