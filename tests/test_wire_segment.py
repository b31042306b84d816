"""TCP segmentation and coalescing (overlay/wire/segment.py), without sockets: what one cuts the other
joins back byte for byte, every segment decodes with its checksums verified, and nothing is joined
across flows, gaps, differing options or bad checksums."""

import os
import random

import pytest
from podnet.overlay.wire import ipv4, segment, tcp
from podnet.overlay.wire.checksum import internet_checksum
from podnet.overlay.wire.segment import (
    ACK,
    CWR,
    FIN,
    PSH,
    Coalesced,
    DatagramRun,
    VnetHeader,
    coalesce,
    laid_apart,
    laid_tcp_segments,
    tcp_segments,
)
from podnet.overlay.wire.tcp import TcpFlags, TcpSegment
from support.pipelines import with_partial_checksum

from podnet.codec import DecodeError

SRC, DST = "10.244.1.2", "10.244.2.3"
MSS = 1398


def super_packet(payload: bytes, *, seq: int = 1_000_000, flags: int = ACK | PSH, ip_id: int = 7,
                 timestamps: tuple[int, int] | None = (5000, 4000), sport: int = 40000, ack: int = 77,
                 window: int = 502, src: str = SRC) -> bytes:
    body = tcp.encode(TcpSegment(sport, 5201, seq, ack, TcpFlags(flags), window, payload, timestamps=timestamps),
                      src, DST)
    return ipv4.encode(ipv4.IPv4Packet(src, DST, ipv4.IPProtocol.TCP, body, identification=ip_id))


def decoded(packet: bytes) -> tuple[ipv4.IPv4Packet, TcpSegment]:
    ip = ipv4.decode(packet)  # verifies the header checksum
    return ip, tcp.decode(ip.payload, ip.src, ip.dst)  # verifies the TCP checksum


def payload_of(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def test_segments_carry_sequence_ids_flags_and_valid_checksums():
    payload = payload_of(10 * MSS + 123)
    packet = super_packet(payload, flags=ACK | PSH | FIN | CWR, seq=0xFFFFF000, ip_id=0xFFFE)
    segments = tcp_segments(packet, MSS)
    assert len(segments) == 11
    joined = b""
    for index, raw in enumerate(segments):
        ip, seg = decoded(raw)
        assert ip.identification == (0xFFFE + index) & 0xFFFF
        assert ip.dont_fragment and ip.ttl == 64
        assert seg.seq == (0xFFFFF000 + index * MSS) & 0xFFFFFFFF  # wraps as TCP's sequence space does
        assert seg.ack == 77 and seg.window == 502 and seg.timestamps == (5000, 4000)
        last, first = index == len(segments) - 1, index == 0
        assert bool(seg.flags & TcpFlags.PSH) is last and bool(seg.flags & TcpFlags.FIN) is last
        assert bool(seg.flags & TcpFlags.CWR) is first
        assert seg.flags & TcpFlags.ACK
        assert len(seg.payload) == (123 if last else MSS)
        joined += seg.payload
    assert joined == payload


def test_segments_go_behind_a_tunnel_prefix_and_ignore_the_partial_checksum():
    packet = with_partial_checksum(super_packet(payload_of(3000)))  # as a pod's kernel hands it over
    prefix = b"\x08\0\0\0\0\0\x01\0" + bytes(14)
    segments = tcp_segments(packet, 1000, prefix)
    assert [len(s) for s in segments] == [len(prefix) + 20 + 32 + 1000] * 3
    for raw in segments:
        assert raw.startswith(prefix)
        decoded(raw[len(prefix):])


def test_a_packet_that_fits_comes_back_alone_with_its_checksums_complete():
    packet = with_partial_checksum(super_packet(b"hello"))
    (only,) = tcp_segments(packet, MSS)
    assert only == super_packet(b"hello")


@pytest.mark.parametrize("prefix_size", [0, 1, 2, 3, 22])
@pytest.mark.parametrize("mss", [MSS, 999, 1000, 1001])
def test_laid_segments_are_the_segments_back_to_back_with_valid_checksums(prefix_size, mss):
    """Rows of every width modulo 4 (their payload sums taken in 32- or 16-bit words) and of odd
    prefixes and segments (laid apart from padded rows)."""
    packet = with_partial_checksum(super_packet(payload_of(7 * mss + 5, mss)))
    prefix = bytes(range(1, prefix_size + 1))
    laid, sizes = laid_tcp_segments(packet, mss, prefix)
    segments = tcp_segments(packet, mss, prefix)
    assert bytes(laid) == b"".join(segments) and sizes == [len(s) for s in segments]
    assert laid_apart(laid, sizes) == segments
    for raw in segments:
        decoded(raw[prefix_size:])


@pytest.mark.parametrize("size", [1, MSS - 1, MSS, MSS + 1, 45 * MSS, 46 * MSS + 17])
@pytest.mark.parametrize("mss", [MSS, 1000, 999])
def test_segmenting_and_coalescing_round_trip(size, mss):
    packet = super_packet(payload_of(size, size), flags=ACK | PSH)
    segments = tcp_segments(packet, mss)
    out = coalesce(segments)
    if len(segments) == 1:
        assert out == [Coalesced(packet, 0)]
    else:
        assert out == [Coalesced(packet, mss)]  # the same header, length, ids, flags and checksum


def test_flows_are_never_joined_together_however_they_interleave():
    one = tcp_segments(super_packet(payload_of(5 * MSS, 1), flags=ACK), MSS)
    two = tcp_segments(super_packet(payload_of(5 * MSS, 2), flags=ACK, sport=40001), MSS)
    other_host = tcp_segments(super_packet(payload_of(5 * MSS, 3), flags=ACK, src="10.244.1.9"), MSS)
    interleaved = [p for trio in zip(one, two, other_host, strict=True) for p in trio]
    out = coalesce(interleaved)
    assert sorted(out) == sorted(Coalesced(super_packet(payload_of(5 * MSS, n), flags=ACK, **kw), MSS)
                                 for n, kw in ((1, {}), (2, {"sport": 40001}), (3, {"src": "10.244.1.9"})))


def test_a_gap_ends_the_run_and_order_is_kept():
    segments = tcp_segments(super_packet(payload_of(6 * MSS), flags=ACK), MSS)
    out = coalesce(segments[:2] + segments[3:])
    assert len(out) == 2
    first, second = (decoded(item.packet)[1] for item in out)
    assert (first.seq, len(first.payload)) == (1_000_000, 2 * MSS)
    assert (second.seq, len(second.payload)) == (1_000_000 + 3 * MSS, 3 * MSS)
    assert segments[2] not in [item.packet for item in out]


def test_reordered_segments_are_not_joined_out_of_order():
    segments = tcp_segments(super_packet(payload_of(3 * MSS), flags=ACK), MSS)
    out = coalesce([segments[1], segments[0], segments[2]])
    # 1 does not continue 0 backwards, and 2 does not continue 0: each stands alone, in arrival order
    assert out == [Coalesced(segments[1], 0), Coalesced(segments[0], 0), Coalesced(segments[2], 0)]


def differing(field: str) -> list[bytes]:
    """Two segments that continue each other in sequence but differ in `field`."""
    first = super_packet(payload_of(MSS, 1), flags=ACK, ip_id=10)
    changes = {"timestamps": {"timestamps": (5001, 4000)}, "ack": {"ack": 78}, "window": {"window": 503}}
    second = super_packet(payload_of(MSS, 2), flags=ACK, ip_id=11, seq=1_000_000 + MSS, **changes.get(field, {}))
    if field == "ip-id":
        second = super_packet(payload_of(MSS, 2), flags=ACK, ip_id=13, seq=1_000_000 + MSS)
    if field == "ttl":
        buf = bytearray(second)
        buf[8] -= 1
        buf[10:12] = b"\0\0"
        buf[10:12] = internet_checksum(buf[:20]).to_bytes(2, "big")
        second = bytes(buf)
    return [first, second]


@pytest.mark.parametrize("field", ["timestamps", "ack", "window", "ip-id", "ttl"])
def test_segments_that_differ_are_not_joined(field):
    packets = differing(field)
    assert coalesce(packets) == [Coalesced(packets[0], 0), Coalesced(packets[1], 0)]


def test_the_same_two_segments_are_joined_when_nothing_differs():
    packets = differing("nothing")
    (joined,) = coalesce(packets)
    assert joined.mss == MSS and len(decoded(joined.packet)[1].payload) == 2 * MSS


def test_a_segment_with_a_bad_checksum_never_makes_a_valid_super_packet():
    segments = tcp_segments(super_packet(payload_of(4 * MSS), flags=ACK), MSS)
    broken = bytearray(segments[2])
    broken[-1] ^= 0xFF
    (joined,) = coalesce([segments[0], segments[1], bytes(broken), segments[3]])
    assert joined.mss == MSS
    with pytest.raises(DecodeError, match="TCP checksum"):  # what the receiving kernel drops
        decoded(joined.packet)
    ip_broken = bytearray(segments[1])
    ip_broken[8] ^= 1  # TTL changed, header checksum not: the segment goes alone, ending its flow's run
    out = coalesce([segments[0], bytes(ip_broken), segments[2]])
    assert out == [Coalesced(segments[0], 0), Coalesced(bytes(ip_broken), 0), Coalesced(segments[2], 0)]


@pytest.mark.parametrize("flags", [ACK | FIN, 0x02 | ACK, 0x04 | ACK, ACK | 0x20, ACK | CWR])
def test_control_segments_are_never_joined(flags):
    before = tcp_segments(super_packet(payload_of(2 * MSS), flags=ACK), MSS)
    control = super_packet(payload_of(100, 9), flags=flags, seq=1_000_000 + 2 * MSS, ip_id=9)
    out = coalesce([*before, control])
    assert out == [Coalesced(super_packet(payload_of(2 * MSS), flags=ACK), MSS), Coalesced(control, 0)]


def test_pure_acks_pass_alone_and_psh_ends_a_run():
    ack_only = super_packet(b"", flags=ACK, sport=5201)
    segments = tcp_segments(super_packet(payload_of(3 * MSS), flags=ACK | PSH), MSS)
    out = coalesce([ack_only, *segments, *tcp_segments(super_packet(payload_of(MSS), seq=1_000_000 + 3 * MSS,
                                                                   ip_id=10, flags=ACK), MSS)])
    assert out[0] == Coalesced(ack_only, 0)
    assert out[1] == Coalesced(super_packet(payload_of(3 * MSS), flags=ACK | PSH), MSS)
    assert out[2].mss == 0  # a new run, ended by the flush with one segment in it


def test_runs_stop_below_the_largest_ip_packet():
    segments = [*tcp_segments(super_packet(payload_of(40 * MSS), flags=ACK), MSS),
                *tcp_segments(super_packet(payload_of(20 * MSS), flags=ACK, seq=1_000_000 + 40 * MSS, ip_id=47), MSS)]
    out = coalesce(segments)
    assert all(len(item.packet) <= segment.MAX_SUPER_PACKET for item in out)
    assert sum(len(decoded(item.packet)[1].payload) for item in out) == 60 * MSS
    assert [item.mss for item in out] == [MSS, MSS]
    assert len(decoded(out[0].packet)[1].payload) == (segment.MAX_SUPER_PACKET - 52) // MSS * MSS


@pytest.mark.parametrize("size", [5000, 50_000])
def test_a_partial_checksum_is_completed_as_a_nic_would(size):
    packet = super_packet(payload_of(size))
    frame = bytearray(bytes(14) + with_partial_checksum(packet))
    segment.complete_checksum(frame, 14 + 20, 16)
    assert bytes(frame[14:]) == packet
    header = VnetHeader.decode(segment.super_vnet_header(packet, MSS))
    assert header == VnetHeader(segment.F_NEEDS_CSUM, segment.GSO_TCPV4, 14 + 20 + 32, MSS, 34, 16)
    assert segment.partial_checksum_field(packet) == with_partial_checksum(packet)[36:38]


def test_a_super_packets_checksum_is_verified_in_one_pass():
    packet = super_packet(payload_of(45 * MSS))
    assert segment.tcp_checksum_ok(packet)
    damaged = bytearray(packet)
    damaged[30_000] ^= 0x40
    assert not segment.tcp_checksum_ok(damaged)


def test_bad_input_is_a_decode_error():
    with pytest.raises(DecodeError):
        VnetHeader.decode(b"\0" * 9)
    with pytest.raises(DecodeError):
        tcp_segments(b"\x45" + bytes(30), MSS)
    with pytest.raises(DecodeError):
        segment.complete_checksum(bytearray(20), 19, 16)
    for _ in range(200):
        junk = os.urandom(random.randrange(0, 80))
        coalesce([junk])  # anything but a crash: passed on alone


def test_a_long_run_is_cut_where_a_header_goes_bad_and_joined_again_after_it():
    segments = tcp_segments(super_packet(payload_of(30 * MSS), flags=ACK), MSS)
    bad = bytearray(segments[12])
    bad[11] ^= 1  # its IP header checksum: it goes alone, its neighbours are joined on either side
    out = coalesce([*segments[:12], bytes(bad), *segments[13:]])
    assert [item.mss for item in out] == [MSS, 0, MSS]
    assert out[1].packet == bytes(bad)
    first, second = (decoded(item.packet)[1] for item in (out[0], out[2]))
    assert (first.seq, first.payload) == (1_000_000, payload_of(30 * MSS)[: 12 * MSS])
    assert (second.seq, second.payload) == (1_000_000 + 13 * MSS, payload_of(30 * MSS)[13 * MSS :])


def _reads(datagrams: list[bytes], per_read: int) -> list[bytes | DatagramRun]:
    """The datagrams as UDP_GRO reads bring them: runs of up to `per_read` of one size (the last of a
    run may be shorter), a datagram alone where no run forms."""
    reads: list[bytes | DatagramRun] = []
    index = 0
    while index < len(datagrams):
        end = index + 1
        while (end < len(datagrams) and end - index < per_read and len(datagrams[end]) <= len(datagrams[index])
               and len(datagrams[end - 1]) == len(datagrams[index])):
            end += 1
        run = datagrams[index:end]
        reads.append(DatagramRun(b"".join(run), len(run[0])) if len(run) > 1 else run[0])
        index = end
    return reads


@pytest.mark.parametrize("per_read", [2, 5, 44, 64])
def test_runs_read_joined_coalesce_as_their_datagrams_do(per_read):
    """Two flows' super-packets (one with a gap, one ending in PSH), tunnelled, read as runs."""
    prefix = b"\x08\0\0\0\0\0\x01\0" + bytes(14)
    first = tcp_segments(super_packet(payload_of(45 * MSS + 100), flags=ACK | PSH), MSS, prefix)
    other = tcp_segments(super_packet(payload_of(20 * MSS, 2), sport=40001, flags=ACK), MSS, prefix)
    datagrams = [*first, *other[:9], *other[10:]]
    out = coalesce(_reads(datagrams, per_read), offset=len(prefix))
    assert out == coalesce(datagrams, offset=len(prefix))
    assert [item.mss for item in out] == [MSS, MSS, MSS]


def test_a_runs_datagram_that_is_not_joinable_stands_alone():
    """A datagram in the middle of a run that its receiver would not join (here: another VXLAN network)
    is handed on alone and splits the flow's run, though its headers continue it."""
    prefix = b"\x08\0\0\0\0\0\x01\0" + bytes(14)
    datagrams = tcp_segments(super_packet(payload_of(10 * MSS), flags=ACK), MSS, prefix)
    stranger = bytearray(datagrams[5])
    stranger[6] = 2  # its VNI
    datagrams[5] = bytes(stranger)
    run = DatagramRun(b"".join(datagrams), len(datagrams[0]))
    out = coalesce([run], offset=len(prefix), joinable=lambda datagram: datagram[:8] == prefix[:8])
    assert Coalesced(datagrams[5], 0) in out
    first, second = (decoded(item.packet)[1] for item in out if item.packet != datagrams[5])
    assert (first.seq, first.payload) == (1_000_000, payload_of(10 * MSS)[: 5 * MSS])
    assert (second.seq, second.payload) == (1_000_000 + 6 * MSS, payload_of(10 * MSS)[6 * MSS :])
