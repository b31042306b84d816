"""TCP segmentation and coalescing (what a NIC's TSO and the kernel's GRO do), and the `virtio_net_hdr`
that a TAP with IFF_VNET_HDR puts before each frame. Pure: bytes in, bytes out.

A super-packet is one IPv4 packet (no IP options) carrying a TCP header and up to 64 KB of payload that
stands for a run of segments of `mss` payload bytes each (the last may be shorter). Its TCP checksum field
is not read: a pod's kernel hands it over holding only the pseudo-header's partial sum (the TAP's checksum
offload), so every segment's checksum is computed here from its own bytes.

- `tcp_segments(packet, mss)` (and `laid_tcp_segments`, back to back in one buffer) cuts a super-packet as Linux's tcp_gso_segment does: sequence numbers
  advance by the payload, IP ids by one per segment (from the super-packet's), CWR only on the first
  segment, PSH and FIN only on the last, every header and TCP checksum complete.
- `coalesce` is the other way (tcp_gro_receive), over one read batch: segments of one flow that continue each other (the
  next sequence number, the same ack, window, IP TOS/TTL/DF, byte-identical options, IP ids counting
  up by one, only ACK, with PSH allowed on the last) are joined into one super-packet whose TCP
  checksum is valid exactly when theirs were. A pure ACK, a segment with SYN, FIN, RST, URG or CWR, a
  fragment, a header with IP options or a bad header checksum is never joined: it ends its flow's run
  and goes on alone, for the receiving kernel to judge as it arrived. Packets leave in their order
  within a flow; different flows are held apart, however they interleave.

Checksums are summed as `checksum.wide_sum` does: a run of bytes that starts an odd number of bytes into
a checksummed range weighs 256 times its value modulo 0xffff, so payload sums taken once combine into
the super-packet's checksum without reading the payload again.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy

from podnet.codec import DecodeError

from .checksum import NATIVE_WORD_WEIGHT, internet_checksum, wide_sum

_WORD = numpy.dtype(numpy.uint16)
_SUM = numpy.dtype(numpy.uint64)
_BE16 = numpy.dtype(">u2")
_BE32 = numpy.dtype(">u4")

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
_HEADERS = struct.Struct("!BBHHHBBH4s4sHHIIBBHHH")  # that, and a TCP header without its options
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
    header) to a TAP or a packet socket: segments of `mss` payload bytes, the checksum left partial
    (`partial_checksum_field`) for the kernel to finish, as it does its own super-packets'."""
    ihl = (packet[0] & 0x0F) * 4
    header = ETHERNET_HEADER + ihl + (packet[ihl + 12] >> 4) * 4
    return VNET_HDR.pack(F_NEEDS_CSUM, GSO_TCPV4, header, mss, ETHERNET_HEADER + ihl, TCP_CHECKSUM_AT)


def partial_checksum_field(packet: bytes | bytearray | memoryview) -> bytes:
    """The TCP checksum field that `packet` (IPv4 + TCP) needs for F_NEEDS_CSUM: the pseudo-header's sum,
    folded and not complemented, for the kernel to finish over the TCP bytes (CHECKSUM_PARTIAL)."""
    ihl = (packet[0] & 0x0F) * 4
    return _U16.pack(_pseudo_sum(packet, len(packet) - ihl) % 0xFFFF or 0xFFFF)


def tcp_checksum_ok(packet: bytes | bytearray) -> bool:
    """Whether the TCP checksum of `packet` (IPv4 + TCP) holds, summed in one numpy pass: what a kernel
    verifies, for a super-packet the kernel will take as verified."""
    ihl = (packet[0] & 0x0F) * 4
    value = wide_sum(packet, ihl)
    return not (_pseudo_sum(packet, len(packet) - ihl) + value) % 0xFFFF


def with_tcp_checksum(packet: bytes | bytearray) -> bytes:
    """`packet` (IPv4 + TCP) with its TCP checksum computed afresh over its bytes, whatever its field
    held: a pod's super-packet, whose field the pod's kernel left partial, made whole for a local pod."""
    buf = bytearray(packet)
    ihl = (buf[0] & 0x0F) * 4
    at = ihl + TCP_CHECKSUM_AT
    buf[at : at + 2] = b"\0\0"
    value = wide_sum(buf, ihl)
    _U16.pack_into(buf, at, _fold(_pseudo_sum(buf, len(buf) - ihl) + value))
    return bytes(buf)


def complete_checksum(frame: bytearray, csum_start: int, csum_offset: int) -> None:
    """Finishes a partial checksum in place, as a NIC does for a frame marked F_NEEDS_CSUM: the sum of
    `frame[csum_start:]`, which includes the partial sum already in the field, complemented into it."""
    at = csum_start + csum_offset
    if csum_start >= len(frame) or at + 2 > len(frame):
        raise DecodeError("checksum offsets beyond the frame")
    _U16.pack_into(frame, at, _fold(wide_sum(frame, csum_start)))


def _pseudo_sum(packet: bytes | bytearray | memoryview, tcp_length: int) -> int:
    return wide_sum(packet, 12, 20) + TCP + tcp_length


def _fold(value: int) -> int:
    """The complemented checksum of a congruent sum (a sum of nonzero data is never 0 here)."""
    return ~(value % 0xFFFF or 0xFFFF) & 0xFFFF


def tcp_segments(packet: bytes | bytearray | memoryview, mss: int, prefix: bytes = b"") -> list[bytes]:
    """The segments of a super-packet, each of at most `mss` payload bytes, each behind `prefix` (a
    tunnel's headers). A packet whose payload fits in one segment comes back as that one segment, with its
    checksums made complete."""
    return _rows_apart(*_segment_rows(packet, mss, prefix))


def laid_tcp_segments(packet: bytes | bytearray | memoryview, mss: int,
                      prefix: bytes = b"") -> tuple[bytes | memoryview, list[int]]:
    """`tcp_segments`, laid back to back in one buffer, and their sizes: what one sendmsg with UDP_SEGMENT
    takes. Where the segments' rows are the segments exactly (no pad byte before an odd prefix or after
    an odd row) the buffer is the rows' own memory, with no copy made."""
    rows, pad, ends = _segment_rows(packet, mss, prefix)
    stride = rows.shape[1]
    # all of one size but the last
    sizes = [ends[0] - pad] * (len(ends) - 1) + [ends[-1] - (len(ends) - 1) * stride - pad]
    if pad or sizes[0] != stride:
        return b"".join(_rows_apart(rows, pad, ends)), sizes
    return memoryview(rows).cast("B")[: ends[-1]], sizes


def _rows_apart(rows: numpy.ndarray, pad: int, ends: list[int]) -> list[bytes]:
    """The segments `_segment_rows` laid out, each on its own."""
    laid = rows.tobytes()
    stride = rows.shape[1]
    return [laid[row * stride + pad : end] for row, end in enumerate(ends)]


def laid_apart(laid: bytes | memoryview, sizes: list[int]) -> list[bytes]:
    """The datagrams laid back to back in `laid`, `sizes` bytes each, each on its own."""
    datagrams, at = [], 0
    for size in sizes:
        datagrams.append(bytes(laid[at : at + size]))
        at += size
    return datagrams


def _segment_rows(packet: bytes | bytearray | memoryview, mss: int, prefix: bytes) -> tuple[numpy.ndarray, int, list[int]]:
    """The segments of a super-packet as the rows of one numpy array (the super-packet's headers
    repeated, its payload cut across the rows), with the pad bytes before each (0 or 1) and where each
    ends in the rows' bytes. Their changing fields are written column by column: the segments' headers
    differ from the super-packet's only in a few words, so their checksums are the super-packet's header
    sums moved by those words and by each row's payload sum, summed in one pass."""
    if mss <= 0:
        raise ValueError("segment size must be positive")
    if len(packet) < IPV4_HEADER or packet[0] != 0x45 or packet[9] != TCP:
        raise DecodeError("not an IPv4 TCP packet without IP options")
    (total,) = _U16.unpack_from(packet, 2)
    thl = (packet[IPV4_HEADER + 12] >> 4) * 4 if len(packet) > IPV4_HEADER + 12 else 0
    header_end = IPV4_HEADER + thl
    if total > len(packet) or thl < 20 or header_end > total:
        raise DecodeError("super-packet's lengths do not hold")
    (_, tos, _, ip_id, fragment, ttl, _, _, _, _, sport, dport, seq, ack, offset, flags, window, _,
     urgent) = _HEADERS.unpack_from(packet)
    count = max(1, -(-(total - header_end) // mss))
    # A row: a pad byte when the prefix is odd (so the IPv4 packet and its payload start on a word),
    # the prefix, the headers, the payload, and a zero byte to make it whole words when that is odd.
    pad = len(prefix) & 1
    ip_at = pad + len(prefix)
    payload_at = ip_at + header_end
    stride = payload_at + mss + ((payload_at + mss) & 1)
    rows = numpy.zeros((count, stride), numpy.uint8)
    rows[:, pad:ip_at] = numpy.frombuffer(prefix, numpy.uint8)
    rows[:, ip_at:payload_at] = numpy.frombuffer(packet, numpy.uint8, header_end)
    payload = numpy.frombuffer(packet, numpy.uint8, total - header_end, header_end)
    full = len(payload) // mss
    rows[:full, payload_at : payload_at + mss] = payload[: full * mss].reshape(full, mss)
    sizes = numpy.full(count, mss, numpy.int64)
    if full < count:  # the last segment's shorter payload (or none at all)
        sizes[-1] = len(payload) - full * mss
        rows[-1, payload_at : payload_at + sizes[-1]] = payload[full * mss :]
    payload_sums = _row_sums(rows, payload_at) * NATIVE_WORD_WEIGHT
    index = numpy.arange(count, dtype=numpy.int64)
    segment_flags = numpy.full(count, flags & ~CWR, numpy.int64)
    segment_flags[0] = flags
    segment_flags[:-1] &= ~(PSH | FIN)
    segment_seqs = (seq + index * mss) & 0xFFFFFFFF
    segment_ids = (ip_id + index) & 0xFFFF
    tcp_lengths = thl + sizes
    addresses = wide_sum(packet, 12, 20)
    # What every segment's headers sum to, less the words that change from one segment to the next.
    ip_fixed = (0x45 << 8 | tos) + fragment + (ttl << 8 | TCP) + addresses + IPV4_HEADER
    tcp_fixed = (addresses + TCP + sport + dport + (ack >> 16) + (ack & 0xFFFF) + window + urgent
                 + wide_sum(packet, IPV4_HEADER + 20, header_end) + (offset << 8)) % 0xFFFF
    tcp_sums = _folded(tcp_fixed + tcp_lengths + (segment_seqs >> 16) + (segment_seqs & 0xFFFF) + segment_flags
                       + payload_sums % 0xFFFF)
    _put(rows, ip_at + 2, _BE16, IPV4_HEADER + tcp_lengths)
    _put(rows, ip_at + 4, _BE16, segment_ids)
    _put(rows, ip_at + 10, _BE16, _folded(ip_fixed % 0xFFFF + tcp_lengths + segment_ids))
    _put(rows, ip_at + IPV4_HEADER + 4, _BE32, segment_seqs)
    rows[:, ip_at + IPV4_HEADER + 13] = segment_flags
    _put(rows, ip_at + IPV4_HEADER + TCP_CHECKSUM_AT, _BE16, tcp_sums)
    return rows, pad, (index * stride + payload_at + sizes).tolist()


def _row_sums(rows: numpy.ndarray, start: int) -> numpy.ndarray:
    """For each row, an integer congruent modulo 0xffff to the sum of its 16-bit words (machine order)
    from byte `start` (even) on. Rows of whole 32-bit words are summed as those, half as many additions:
    a 32-bit word is its two 16-bit words' sum modulo 0xffff, since 2**16 is 1 there; a 16-bit word
    before `start` that the first 32-bit word takes in is taken out again."""
    if rows.shape[1] & 3:
        return rows.view(_WORD)[:, start >> 1 :].sum(axis=1, dtype=numpy.int64)
    sums = rows.view(numpy.uint32)[:, start >> 2 :].sum(axis=1, dtype=numpy.uint64).astype(numpy.int64)
    if start & 2:
        sums -= rows.view(_WORD)[:, (start >> 1) - 1]
    return sums


def _folded(values: numpy.ndarray) -> numpy.ndarray:
    """`_fold` of every value."""
    values = values % 0xFFFF
    values[values == 0] = 0xFFFF
    return 0xFFFF - values


def _put(rows: numpy.ndarray, at: int, kind: numpy.dtype, values: numpy.ndarray) -> None:
    """Writes `values` as the big-endian words at byte `at` of the rows, one each."""
    rows[:, at : at + kind.itemsize].view(kind)[:, 0] = values


class DatagramRun:
    """Datagrams of one sender that one read brought joined (UDP_GRO): `size` bytes each, the last may be
    shorter, back to back in `data`. Kept whole, its full-sized datagrams are the rows of one array with no
    copy made, which is how `coalesce` compares a run of segments; `apart` cuts it for everything else."""

    __slots__ = ("data", "size", "count")

    def __init__(self, data: bytes, size: int):
        self.data = data
        self.size = size
        self.count = -(-len(data) // size)

    def datagram(self, index: int) -> bytes:
        return self.data[index * self.size : (index + 1) * self.size]

    def rows(self, start: int, most: int) -> numpy.ndarray:
        """Up to `most` of the full-sized datagrams from the `start`th on, as the rows of an array."""
        full = len(self.data) // self.size
        end = min(full, start + most)
        return numpy.frombuffer(self.data, numpy.uint8, (end - start) * self.size,
                                start * self.size).reshape(end - start, self.size)

    def apart(self) -> list[bytes]:
        size = self.size
        return [self.data[at : at + size] for at in range(0, len(self.data), size)]


def datagrams_apart(datagrams: list[tuple[bytes | DatagramRun, str]]) -> list[tuple[bytes, str]]:
    """A batch of (datagram, sender), its runs cut into their datagrams."""
    if not any(type(datagram) is DatagramRun for datagram, _ in datagrams):
        return datagrams  # type: ignore[return-value]
    apart: list[tuple[bytes, str]] = []
    for datagram, sender in datagrams:
        if type(datagram) is DatagramRun:
            apart += [(part, sender) for part in datagram.apart()]
        else:
            apart.append((datagram, sender))
    return apart


class _Pending:
    """What `coalesce` has yet to take, in order: buffers, and runs whose datagrams it takes one by one or,
    where they continue a run of segments, as many rows at once."""

    __slots__ = ("items", "item", "run", "row", "from_run")

    def __init__(self, items: list[bytes | DatagramRun]):
        self.items = items
        self.item = 0
        self.run: DatagramRun | None = None  # the run being taken, from its `row`th datagram
        self.row = 0
        self.from_run = False  # whether the buffer `next` gave last is one of a run's

    def next(self) -> bytes | None:
        run = self.run
        if run is not None:
            buffer = run.datagram(self.row)
            self.from_run = True
            self.row += 1
            if self.row == run.count:
                self.run = None
            return buffer
        if self.item == len(self.items):
            return None
        item = self.items[self.item]
        self.item += 1
        self.from_run = type(item) is DatagramRun
        if self.from_run:
            if item.count > 1:
                self.run, self.row = item, 1
            return item.datagram(0)
        return item

    def alike(self, length: int, most: int) -> numpy.ndarray | None:
        """Up to `most` of the next buffers, as long as they are `length` bytes each, as the rows of one
        array, not taken yet; None when fewer than two are."""
        run = self.run
        if run is not None:
            rows = run.rows(self.row, most) if run.size == length else None
            return rows if rows is not None and len(rows) >= 2 else None
        items, start = self.items, self.item
        end, stop = start, min(len(items), start + most)
        while end < stop and type(items[end]) is not DatagramRun and len(items[end]) == length:
            end += 1
        if end - start < 2:  # one alone is cheaper the usual way
            return None
        return numpy.frombuffer(b"".join(items[start:end]), numpy.uint8).reshape(end - start, length)

    def skip(self, count: int) -> None:
        """Takes `count` of the buffers `alike` gave."""
        if self.run is None:
            self.item += count
            return
        self.row += count
        if self.row == self.run.count:
            self.run = None


class Coalesced(NamedTuple):
    """A packet as the coalescer hands it on: `mss` is 0 for one that stands alone (as it came), else
    the payload size of the segments it joined (the super-packet's GSO size). A super-packet is a
    bytearray of its own, which whoever takes it may change in place (a hop, NAT) without copying 64 KB."""

    packet: bytes | bytearray
    mss: int


# A plain IPv4 header and a TCP header without its options, in the fields a run compares: version/IHL,
# TOS, total length, id, flags/fragment, TTL, protocol, checksum, addresses (8 bytes), ports (4 bytes),
# seq, ack, data offset, flags, window, checksum, urgent pointer.
_SEGMENT_FIELDS = struct.Struct("!BBHHHBBH8s4sIIBBHHH")
# Bound once: the big-endian conversion of a few header bytes is how their words are summed (modulo 0xffff).
_from_bytes = int.from_bytes


class _Run:
    """The segments of one flow gathered so far (their IPv4 packets start `at` bytes into each buffer)."""

    __slots__ = ("first", "at", "parts", "thl", "fields", "next_seq", "next_id", "mss", "size", "payload_sum",
                 "odd", "flags", "count")

    def __init__(self, buffer: bytes, at: int, thl: int, payload_sum: int, flags: int, fields: tuple, seq: int,
                 ip_id: int):
        header_end = at + IPV4_HEADER + thl
        self.first = buffer
        self.at = at
        self.thl = thl
        self.fields = fields  # what every segment of the run must have alike
        self.parts = [memoryview(buffer)[header_end:]]
        self.mss = len(buffer) - header_end
        self.size = len(buffer) - at
        self.next_seq = (seq + self.mss) & 0xFFFFFFFF
        self.next_id = (ip_id + 1) & 0xFFFF
        self.payload_sum = payload_sum
        self.odd = self.mss & 1  # the next payload starts an odd number of bytes into the range
        self.flags = flags
        self.count = 1


def coalesce(buffers: list[bytes | DatagramRun], limit: int = MAX_SUPER_PACKET, offset: int = 0,
             joinable: Callable[[bytes], bool] | None = None) -> list[Coalesced]:
    """Userspace GRO over one batch of IPv4 packets (see the module text), each `offset` bytes into its
    buffer (a tunnel's headers before it, which must be the same bytes for buffers to be joined), a
    `DatagramRun` standing for its datagrams: what is handed on, in order within each flow. A buffer that
    stands alone comes back as it came, headers and all; a run of them comes back as its IPv4 super-packet
    of at most `limit` bytes. The caller vouches for the buffers; of a `DatagramRun`'s datagrams, those
    taken one by one stand alone unless `joinable` says otherwise (those taken at once continue one that
    was, header byte for header byte).

    No payload byte is read: a segment's payload sum follows from its checksum field, its pseudo-header
    and its header words, and the super-packet's checksum is made from those sums. So a segment whose
    checksum is wrong makes the super-packet's checksum wrong by as much, and the receiving kernel, which
    verifies it, drops the super-packet as it would have dropped the segment; a valid run gives a valid
    super-packet."""
    runs: dict[tuple[bytes, bytes, bytes], _Run] = {}
    out: list[Coalesced] = []
    emit = out.append
    unpack = _SEGMENT_FIELDS.unpack_from
    minimum = offset + 40
    at = offset + IPV4_HEADER
    pending = _Pending(buffers)
    while (buffer := pending.next()) is not None:
        if not (len(buffer) > minimum and buffer[offset] == 0x45 and buffer[offset + 9] == TCP) or (
                pending.from_run and joinable is not None and not joinable(buffer)):
            emit(Coalesced(buffer, 0))
            continue
        (_, tos, total, ip_id, fragment, ttl, _, _, addresses, ports, seq, ack, data_offset, flags, window, checksum,
         urgent) = unpack(buffer, offset)
        flow = (addresses, ports, buffer[:offset])
        thl = (data_offset >> 4) * 4
        header_end = at + thl
        payload = total - IPV4_HEADER - thl
        if (thl < 20 or total != len(buffer) - offset or payload <= 0 or flags & _NEVER_JOINED or not flags & ACK
                or fragment & _FRAGMENT_BITS or _from_bytes(buffer[offset:at]) % 0xFFFF):
            run = runs.pop(flow, None)  # alone, after what its flow had gathered
            if run is not None:
                emit(_finish(run))
            emit(Coalesced(buffer, 0))
            continue
        options = buffer[at + 20 : header_end]
        # ~checksum is the sum of pseudo-header, header (checksum field zero) and payload: the payload's
        # is what is left when the others are taken out
        payload_sum = ((~checksum & 0xFFFF) - _from_bytes(addresses) - TCP - total + IPV4_HEADER - (seq >> 16)
                       - (seq & 0xFFFF) - (data_offset << 8 | flags) - ack - window - urgent - _from_bytes(ports)
                       - _from_bytes(options)) % 0xFFFF
        fields = (tos, fragment, ttl, ack, data_offset, flags & ~PSH, window, urgent, options)
        run = runs.get(flow)
        if run is not None:
            if (fields == run.fields and seq == run.next_seq and ip_id == run.next_id and payload <= run.mss
                    and run.size + payload <= limit):
                run.parts.append(memoryview(buffer)[header_end:])
                run.payload_sum += payload_sum << 8 if run.odd else payload_sum
                run.odd ^= payload & 1
                run.size += payload
                run.next_seq = (seq + payload) & 0xFFFFFFFF
                run.next_id = (ip_id + 1) & 0xFFFF
                run.flags |= flags & PSH
                run.count += 1
                if flags & PSH or payload < run.mss:
                    del runs[flow]
                    emit(_finish(run))
                else:
                    _take_alike(run, buffer, pending, payload_sum, limit)
                continue
            del runs[flow]
            emit(_finish(run))
        if flags & PSH:
            emit(Coalesced(buffer, 0))
            continue
        run = runs[flow] = _Run(buffer, offset, thl, payload_sum, flags, fields, seq, ip_id)
        _take_alike(run, buffer, pending, payload_sum, limit)
    out += [_finish(run) for run in runs.values()]
    return out


@lru_cache(maxsize=64)
def _unchanged_columns(at: int, header_end: int) -> numpy.ndarray:
    """The header bytes that segments continuing one another have alike: every one but the IP id (+4) and
    checksum (+10), the sequence number (+24) and the TCP checksum (+36), the IPv4 packet `at` bytes in."""
    return numpy.r_[0 : at + 4, at + 6 : at + 10, at + 12 : at + 24, at + 28 : at + 36, at + 38 : header_end]


def _column(rows: numpy.ndarray, at: int, kind: numpy.dtype) -> numpy.ndarray:
    """The big-endian word at byte `at` of every row, widened so that sums do not overflow."""
    return rows[:, at : at + kind.itemsize].view(kind)[:, 0].astype(numpy.int64)


def _take_alike(run: _Run, last: bytes, pending: _Pending, last_payload_sum: int, limit: int) -> None:
    """Appends to `run`, whose last segment is `last`, as many of the `pending` buffers as continue it, as
    `coalesce` would have appended them one by one, all checked in one numpy pass. Only buffers of the last
    one's length are looked at: those continue it when they differ from it only in their IP id and
    checksum, sequence number and TCP checksum, so every other header byte is compared at once, and each
    payload's sum follows from how far its checksum field and sequence number moved from the last one's
    (which had `last_payload_sum`)."""
    payload = run.mss
    if run.odd or payload & 1 or run.size + payload > limit or len(last) - run.at - IPV4_HEADER - run.thl != payload:
        return
    rows = pending.alike(len(last), (limit - run.size) // payload)
    if rows is None:
        return
    at = run.at
    seq_at = at + IPV4_HEADER + 4
    header_end = len(last) - payload
    head = numpy.frombuffer(last, numpy.uint8, header_end)
    unchanged = _unchanged_columns(at, header_end)
    step = numpy.arange(1, len(rows) + 1)
    ids, seqs = _column(rows, at + 4, _BE16), _column(rows, seq_at, _BE32)
    (last_id,), (last_ip_checksum,) = _U16.unpack_from(last, at + 4), _U16.unpack_from(last, at + 10)
    (last_seq,), (last_checksum,) = _U32.unpack_from(last, seq_at), _U16.unpack_from(last, seq_at + 12)
    continuing = ((rows[:, unchanged] == head[unchanged]).all(axis=1)
                  & (ids == (last_id + step) & 0xFFFF) & (seqs == (last_seq + step * payload) & 0xFFFFFFFF)
                  # a sound header with only its id changed stays sound when its checksum moved back as much
                  & ((ids + _column(rows, at + 10, _BE16)) % 0xFFFF == (last_id + last_ip_checksum) % 0xFFFF))
    taken = len(rows) if continuing.all() else int(numpy.argmin(continuing))
    if not taken:
        return
    pending.skip(taken)
    seqs = seqs[:taken]
    moved = (int((0xFFFF - _column(rows[:taken], seq_at + 12, _BE16)).sum()) - int((seqs >> 16).sum())
             - int((seqs & 0xFFFF).sum()))
    run.payload_sum += moved + taken * (last_payload_sum - (0xFFFF - last_checksum) + (last_seq >> 16)
                                        + (last_seq & 0xFFFF))
    run.parts.append(rows[:taken, header_end:].tobytes())  # their payloads, in one copy
    run.size += taken * payload
    run.next_seq = (last_seq + (taken + 1) * payload) & 0xFFFFFFFF
    run.next_id = (last_id + taken + 1) & 0xFFFF
    run.count += taken


def _finish(run: _Run) -> Coalesced:
    if run.count == 1:
        return Coalesced(run.first, 0)
    first, at = run.first, run.at
    ip_header = bytearray(first[at : at + IPV4_HEADER])
    _U16.pack_into(ip_header, 2, run.size)
    ip_header[10:12] = b"\0\0"
    _U16.pack_into(ip_header, 10, internet_checksum(ip_header))
    tcp_header = bytearray(first[at + IPV4_HEADER : at + IPV4_HEADER + run.thl])
    tcp_header[13] = run.flags
    tcp_header[16:18] = b"\0\0"
    value = _pseudo_sum(ip_header, run.size - IPV4_HEADER) + wide_sum(tcp_header) + run.payload_sum
    _U16.pack_into(tcp_header, 16, _fold(value))
    return Coalesced(bytearray().join((ip_header, tcp_header, *run.parts)), run.mss)
