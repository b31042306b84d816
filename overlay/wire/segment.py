"""TCP segmentation and coalescing (what a NIC's TSO and the kernel's GRO do), and the `virtio_net_hdr`
that a TAP with IFF_VNET_HDR puts before each frame. Pure: bytes in, bytes out.

A super-packet is one IPv4 packet (no IP options) carrying a TCP header and up to 64 KB of payload that
stands for a run of segments of `mss` payload bytes each (the last may be shorter). Its TCP checksum field
is not read: a pod's kernel hands it over holding only the pseudo-header's partial sum (the TAP's checksum
offload), so every segment's checksum is computed here from its own bytes.

- `tcp_segments(packet, mss)` cuts a super-packet as Linux's tcp_gso_segment does: sequence numbers
  advance by the payload, IP ids by one per segment (from the super-packet's), CWR only on the first
  segment, PSH and FIN only on the last, every header and TCP checksum complete.
- `Coalescer` is the other way (tcp_gro_receive): segments of one flow that continue each other (the
  next sequence number, the same ack, window, IP TOS/TTL/DF, byte-identical options, IP ids counting
  up by one, only ACK, with PSH allowed on the last) are joined into one super-packet with a valid
  checksum. A segment whose checksums fail, a pure ACK, one with SYN, FIN, RST, URG or CWR, a
  fragment, or a header with IP options is never joined: it flushes its flow and goes on alone, so that
  the receiving kernel judges it as it arrived. Packets leave in their order within a flow; different
  flows are held apart, however they interleave.

Checksums are summed as `checksum.wide_sum` does: a run of bytes that starts an odd number of bytes into
a checksummed range weighs 256 times its value modulo 0xffff, so payload sums taken once combine into
the super-packet's checksum without reading the payload again.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from podnet.codec import DecodeError

from .checksum import internet_checksum, wide_sum

TCP = 6
ETHERNET_HEADER = 14
IPV4_HEADER = 20
TCP_CHECKSUM_AT = 16
# Largest IPv4 packet: what a super-packet may grow to.
MAX_SUPER_PACKET = 65535

# struct virtio_net_hdr (linux/virtio_net.h), in the host's byte order as a legacy TAP uses it.
VNET_HDR = struct.Struct("=BBHHHH")
VNET_HDR_LEN = VNET_HDR.size
F_NEEDS_CSUM = 1  # the checksum at csum_start + csum_offset holds only the pseudo-header's sum
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP_L4 = 5
GSO_ECN = 0x80

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
_NEVER_JOINED = SYN | FIN | RST | URG | CWR

_IP_FIXED = struct.Struct("!BBHHHBBH4s4s")  # version/IHL .. destination
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_DF = 0x4000
_FRAGMENT_BITS = 0x3FFF


@dataclass(frozen=True, slots=True)
class VnetHeader:
    """What the kernel tells about the frame after it (and what we tell it about ours)."""

    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0  # Ethernet + IP + TCP header bytes of a GSO frame
    gso_size: int = 0  # payload bytes per segment
    csum_start: int = 0  # from the start of the frame
    csum_offset: int = 0  # from csum_start

    def encode(self) -> bytes:
        return VNET_HDR.pack(self.flags, self.gso_type, self.hdr_len, self.gso_size, self.csum_start, self.csum_offset)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> VnetHeader:
        if len(data) < VNET_HDR_LEN:
            raise DecodeError("virtio_net_hdr shorter than 10 bytes")
        return cls(*VNET_HDR.unpack_from(data))


# What precedes a frame that needs nothing done: no checksum to finish, no segmentation.
PLAIN_VNET_HDR = VnetHeader().encode()


def super_vnet_header(packet: bytes | bytearray | memoryview, mss: int) -> bytes:
    """The virtio_net_hdr for writing the super-packet `packet` (IPv4 + TCP, behind a 14-byte Ethernet
    header) to a TAP: segments of `mss`, checksum left partial (see `partial_checksum`)."""
    ihl = (packet[0] & 0x0F) * 4
    header = ihl + (packet[ihl + 12] >> 4) * 4
    return VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, ETHERNET_HEADER + header, mss, ETHERNET_HEADER + ihl, TCP_CHECKSUM_AT)


def partial_checksum(packet: bytearray) -> None:
    """Puts in the TCP checksum field of `packet` (IPv4 + TCP) the pseudo-header's sum, folded and not
    complemented: what CHECKSUM_PARTIAL expects there, for the kernel to finish over the TCP bytes."""
    ihl = (packet[0] & 0x0F) * 4
    value = _pseudo_sum(packet, len(packet) - ihl) % 0xFFFF or 0xFFFF
    _U16.pack_into(packet, ihl + TCP_CHECKSUM_AT, value)


def complete_checksum(frame: bytearray, csum_start: int, csum_offset: int) -> None:
    """Finishes a partial checksum in place, as a NIC does for a frame marked F_NEEDS_CSUM: the sum of
    `frame[csum_start:]`, which includes the partial sum already in the field, complemented into it."""
    at = csum_start + csum_offset
    if csum_start >= len(frame) or at + 2 > len(frame):
        raise DecodeError("checksum offsets beyond the frame")
    value = wide_sum(frame, csum_start) % 0xFFFF
    _U16.pack_into(frame, at, ~value & 0xFFFF)


def _pseudo_sum(packet: bytes | bytearray | memoryview, tcp_length: int) -> int:
    return wide_sum(packet, 12, 20) + TCP + tcp_length


def _fold(value: int) -> int:
    """The complemented checksum of a congruent sum (a sum of nonzero data is never 0 here)."""
    return ~(value % 0xFFFF or 0xFFFF) & 0xFFFF


def tcp_segments(packet: bytes | bytearray | memoryview, mss: int, prefix: bytes = b"") -> list[bytes]:
    """The segments of a super-packet, each of at most `mss` payload bytes, each behind `prefix` (a
    tunnel's headers). A packet whose payload fits in one segment comes back as that one segment, with its
    checksums made complete."""
    if mss <= 0:
        raise ValueError("segment size must be positive")
    if len(packet) < IPV4_HEADER or packet[0] != 0x45 or packet[9] != TCP:
        raise DecodeError("not an IPv4 TCP packet without IP options")
    (total,) = _U16.unpack_from(packet, 2)
    thl = (packet[IPV4_HEADER + 12] >> 4) * 4 if len(packet) > IPV4_HEADER + 12 else 0
    header_end = IPV4_HEADER + thl
    if total > len(packet) or thl < 20 or header_end > total:
        raise DecodeError("super-packet's lengths do not hold")
    _, tos, _, ip_id, fragment, ttl, _, _, src, dst = _IP_FIXED.unpack_from(packet)
    (seq,) = _U32.unpack_from(packet, IPV4_HEADER + 4)
    flags = packet[IPV4_HEADER + 13]
    tcp_header = bytearray(packet[IPV4_HEADER:header_end])
    tcp_header[16:18] = b"\0\0"
    addresses = wide_sum(src + dst)
    segments = []
    count = max(1, -(-(total - header_end) // mss))
    for index in range(count):
        start = header_end + index * mss
        end = min(start + mss, total)
        segment_flags = flags
        if index:
            segment_flags &= ~CWR
        if index != count - 1:
            segment_flags &= ~(PSH | FIN)
        _U32.pack_into(tcp_header, 4, (seq + index * mss) & 0xFFFFFFFF)
        tcp_header[13] = segment_flags
        tcp_length = thl + end - start
        tcp_sum = _fold(addresses + TCP + tcp_length + wide_sum(tcp_header) + wide_sum(packet, start, end))
        _U16.pack_into(tcp_header, 16, tcp_sum)
        ip_header = bytearray(_IP_FIXED.pack(0x45, tos, IPV4_HEADER + tcp_length, (ip_id + index) & 0xFFFF,
                                             fragment, ttl, TCP, 0, src, dst))
        _U16.pack_into(ip_header, 10, internet_checksum(ip_header))
        segments.append(b"".join((prefix, ip_header, tcp_header, packet[start:end])))
        tcp_header[16:18] = b"\0\0"
    return segments


class Coalesced(NamedTuple):
    """A packet as the coalescer hands it on: `mss` is 0 for one that stands alone (as it came), else
    the payload size of the segments it joined (the super-packet's GSO size)."""

    packet: bytes
    mss: int


_FlowId = tuple[bytes, bytes]  # addresses, ports: the packet bytes 12..20 and the TCP ports


class _Run:
    """The segments of one flow gathered so far."""

    __slots__ = ("first", "parts", "ip_header", "tcp_header", "next_seq", "next_id", "mss", "size", "payload_sum",
                 "odd", "flags", "count")

    def __init__(self, packet: bytes, thl: int, payload_sum: int, flags: int):
        header_end = IPV4_HEADER + thl
        self.first = packet
        self.ip_header = packet[:IPV4_HEADER]
        self.tcp_header = packet[IPV4_HEADER:header_end]
        self.parts = [packet[header_end:]]
        self.mss = len(packet) - header_end
        self.size = len(packet)
        self.next_seq = (_U32.unpack_from(packet, IPV4_HEADER + 4)[0] + self.mss) & 0xFFFFFFFF
        self.next_id = (_U16.unpack_from(packet, 4)[0] + 1) & 0xFFFF
        self.payload_sum = payload_sum
        self.odd = self.mss & 1  # the next payload starts an odd number of bytes into the range
        self.flags = flags
        self.count = 1


class Coalescer:
    """Userspace GRO over the packets of one read batch: `add` each, `flush` at the end of the batch.
    What `add` and `flush` return is ready to hand on, in order within each flow."""

    def __init__(self, limit: int = MAX_SUPER_PACKET):
        self.limit = limit
        self._runs: dict[_FlowId, _Run] = {}

    def add(self, packet: bytes) -> list[Coalesced]:
        """Takes one IPv4 packet; returns what it pushed out (a run it ended, and itself if it cannot be
        joined)."""
        if len(packet) < IPV4_HEADER + 20 or packet[0] != 0x45 or packet[9] != TCP:
            return [Coalesced(packet, 0)]
        flow = (packet[12:20], packet[20:24])
        thl = (packet[IPV4_HEADER + 12] >> 4) * 4
        header_end = IPV4_HEADER + thl
        flags = packet[IPV4_HEADER + 13]
        (total,) = _U16.unpack_from(packet, 2)
        (fragment,) = _U16.unpack_from(packet, 6)
        if (thl < 20 or total != len(packet) or header_end >= total or flags & _NEVER_JOINED or not flags & ACK
                or fragment & _FRAGMENT_BITS or internet_checksum(packet[:IPV4_HEADER])):
            return self._alone(flow, packet)
        payload_sum = wide_sum(packet, header_end)  # the TCP header's length is a multiple of 4: even
        tcp_sum = _pseudo_sum(packet, total - IPV4_HEADER) + wide_sum(packet, IPV4_HEADER, header_end) + payload_sum
        if tcp_sum % 0xFFFF:  # a sum over a valid checksum is all ones
            return self._alone(flow, packet)
        run = self._runs.get(flow)
        out: list[Coalesced] = []
        if run is not None:
            if self._continues(run, packet, thl, header_end):
                run.parts.append(packet[header_end:])
                run.payload_sum += payload_sum << 8 if run.odd else payload_sum
                run.odd ^= (total - header_end) & 1
                run.size += total - header_end
                run.next_seq = (run.next_seq + total - header_end) & 0xFFFFFFFF
                run.next_id = (run.next_id + 1) & 0xFFFF
                run.flags |= flags & PSH
                run.count += 1
                if flags & PSH or total - header_end < run.mss:
                    del self._runs[flow]
                    out.append(self._finish(run))
                return out
            del self._runs[flow]
            out.append(self._finish(run))
        if flags & PSH:
            out.append(Coalesced(packet, 0))
        else:
            self._runs[flow] = _Run(packet, thl, payload_sum, flags)
        return out

    def flush(self) -> list[Coalesced]:
        """Every run still held, ended."""
        out = [self._finish(run) for run in self._runs.values()]
        self._runs.clear()
        return out

    def _alone(self, flow: _FlowId, packet: bytes) -> list[Coalesced]:
        run = self._runs.pop(flow, None)
        return [Coalesced(packet, 0)] if run is None else [self._finish(run), Coalesced(packet, 0)]

    def _continues(self, run: _Run, packet: bytes, thl: int, header_end: int) -> bool:
        first = run.first
        payload = len(packet) - header_end
        return (
            payload <= run.mss
            and run.size + payload <= self.limit
            and _U32.unpack_from(packet, IPV4_HEADER + 4)[0] == run.next_seq
            and _U16.unpack_from(packet, 4)[0] == run.next_id
            # TOS, then DF, TTL and protocol (and the addresses, which are the flow's)
            and packet[1] == first[1] and packet[6] == first[6] and packet[8:10] == first[8:10]
            # ack number, data offset, flags (PSH may differ), window, urgent pointer and every option
            and header_end == IPV4_HEADER + len(run.tcp_header)
            and packet[IPV4_HEADER + 8 : IPV4_HEADER + 13] == first[IPV4_HEADER + 8 : IPV4_HEADER + 13]
            and packet[IPV4_HEADER + 13] & ~PSH == run.flags & ~PSH
            and packet[IPV4_HEADER + 14 : IPV4_HEADER + 16] == first[IPV4_HEADER + 14 : IPV4_HEADER + 16]
            and packet[IPV4_HEADER + 18 : header_end] == first[IPV4_HEADER + 18 : header_end]
        )

    @staticmethod
    def _finish(run: _Run) -> Coalesced:
        if run.count == 1:
            return Coalesced(run.first, 0)
        ip_header = bytearray(run.ip_header)
        _U16.pack_into(ip_header, 2, run.size)
        ip_header[10:12] = b"\0\0"
        _U16.pack_into(ip_header, 10, internet_checksum(ip_header))
        tcp_header = bytearray(run.tcp_header)
        tcp_header[13] = run.flags
        tcp_header[16:18] = b"\0\0"
        tcp_length = run.size - IPV4_HEADER
        value = _pseudo_sum(ip_header, tcp_length) + wide_sum(tcp_header) + run.payload_sum
        _U16.pack_into(tcp_header, 16, _fold(value))
        return Coalesced(b"".join((ip_header, tcp_header, *run.parts)), run.mss)
