"""What an encrypted node puts inside WireGuard: the tunnel datagram as it travels unencrypted.

WireGuard carries IP packets only (a peer checks each decrypted packet's source against the sender's
allowed IPs), so a VXLAN datagram travels as the IPv4/UDP packet the node's kernel would have built
around it — node address to node address, to the VXLAN port — which is also how Cilium's tunnel mode
hands VXLAN to its WireGuard device; the peer's allowed IPs therefore hold its node address. The `bgp`
backend's foo-over-UDP datagram is already the bare pod packet, and is carried as it is.

`NodePair` keeps the outer header of one direction precomputed: per packet only the two lengths and the
header checksum change, the latter from the header's sum without them.
"""

from __future__ import annotations

import struct

from podnet.overlay.wire.addresses import ip_to_bytes

IPV4_UDP_HEADER = 28  # IPv4 (20, no options) + UDP (8)
_VERSION_IHL = 0x45
_DONT_FRAGMENT = 0x4000
_TTL = 64
_UDP = 17
# what `unwrap` checks: version/IHL, protocol, source and destination address, destination port, UDP length
_ARRIVING = struct.Struct("!B8xB2x8s2xHH")
# version/IHL and TOS, total length, id/flags/TTL/protocol, header checksum, addresses and ports, UDP
# length, a zero UDP checksum
_HEADER = struct.Struct("!2sH6sH12sH2x")


def _fold(value: int) -> int:
    while value > 0xFFFF:
        value = (value & 0xFFFF) + (value >> 16)
    return value


class NodePair:
    """The IPv4/UDP header from one node's tunnel port to another's, and the check of one arriving."""

    __slots__ = ("_head", "_middle", "_addresses", "_partial_sum", "_src", "_dst", "_port", "_arriving_addresses")

    def __init__(self, src: str, dst: str, port: int):
        self._src, self._dst, self._port = ip_to_bytes(src), ip_to_bytes(dst), port
        header = struct.pack("!BBHHHBBH4s4s", _VERSION_IHL, 0, 0, 0, _DONT_FRAGMENT, _TTL, _UDP, 0, self._src, self._dst)
        self._partial_sum = sum(struct.unpack("!10H", header))
        # The header's constant runs around the three fields set per packet (total length, header
        # checksum, UDP length). UDP: both ports the tunnel's (every node sends from and to it), and no
        # checksum, as RFC 7348 asks of VXLAN over IPv4.
        self._head, self._middle, self._addresses = header[:2], header[4:10], header[12:20] + struct.pack("!HH", port, port)
        self._arriving_addresses = self._dst + self._src

    def wrap(self, datagram: bytes) -> bytes:
        """The IPv4 packet carrying `datagram` from src's tunnel port to dst's."""
        total = IPV4_UDP_HEADER + len(datagram)
        checksum = ~_fold(self._partial_sum + total) & 0xFFFF
        return _HEADER.pack(self._head, total, self._middle, checksum, self._addresses, total - 20) + datagram

    def unwrap(self, packet: bytes | memoryview) -> bytes | None:
        """The datagram a packet built by the reverse pair's `wrap` carries (src and dst as given here,
        reversed); None for any other packet, which is then not a tunnel datagram between these nodes."""
        if len(packet) < IPV4_UDP_HEADER:
            return None
        version_ihl, protocol, addresses, port, udp_length = _ARRIVING.unpack_from(packet)
        if (
            version_ihl != _VERSION_IHL or protocol != _UDP or addresses != self._arriving_addresses
            or port != self._port or not 8 <= udp_length <= len(packet) - 20
        ):
            return None
        return bytes(packet[IPV4_UDP_HEADER : 20 + udp_length])
