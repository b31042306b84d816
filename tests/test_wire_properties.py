"""Round-trip properties of every wire codec, and fuzzing: any bytes give a value or DecodeError."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from podnet.overlay.wire import addresses, arp, checksum, ethernet, icmp, ipv4, tcp, udp, vxlan

from podnet.codec import DecodeError

# A shared 2-core machine can stall any one example; only the fuzz tests bound their total work.
NO_DEADLINE = settings(deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ips = u32.map(addresses.int_to_ip)
macs = st.binary(min_size=6, max_size=6).map(addresses.bytes_to_mac)
payloads = st.binary(max_size=1500)

ethernet_frames = st.builds(
    ethernet.EthernetFrame,
    macs,
    macs,
    st.integers(ethernet.MIN_ETHERTYPE, 0xFFFF).map(ethernet.ethertype),
    payloads,
)
arp_packets = st.builds(arp.ArpPacket, st.sampled_from(arp.ArpOp), macs, ips, macs, ips)
ipv4_packets = st.builds(
    ipv4.IPv4Packet,
    ips,
    ips,
    u8.map(ipv4.ip_protocol),
    payloads,
    ttl=u8,
    identification=u16,
    dont_fragment=st.booleans(),
    dscp=st.integers(0, 63),
    ecn=st.integers(0, 3),
)
icmp_messages = st.one_of(
    st.builds(
        icmp.IcmpEcho,
        st.sampled_from([icmp.ICMPType.ECHO_REQUEST, icmp.ICMPType.ECHO_REPLY]),
        u8,
        u16,
        u16,
        payloads,
    ),
    st.builds(
        icmp.IcmpUnreachable,
        u8.filter(lambda c: c != icmp.UnreachableCode.FRAGMENTATION_NEEDED).map(icmp._unreachable_code),
        payloads,
    ),
    st.builds(icmp.IcmpUnreachable, st.just(icmp.UnreachableCode.FRAGMENTATION_NEEDED), payloads, u16),
    st.builds(
        icmp.IcmpMessage,
        u8.filter(lambda t: t not in (0, 3, 8)),
        u8,
        st.binary(min_size=4, max_size=4),
        payloads,
    ),
)
udp_datagrams = st.builds(udp.UdpDatagram, u16, u16, payloads)
tcp_segments = st.builds(
    tcp.TcpSegment,
    u16,
    u16,
    u32,
    u32,
    u8.map(tcp.TcpFlags),
    u16,
    payloads,
    mss=st.none() | u16,
    window_scale=st.none() | u8,
    sack_permitted=st.booleans(),
    timestamps=st.none() | st.tuples(u32, u32),
)


@NO_DEADLINE
@given(ethernet_frames)
def test_ethernet_round_trip(frame):
    assert ethernet.decode(ethernet.encode(frame)) == frame


@NO_DEADLINE
@given(arp_packets)
def test_arp_round_trip(packet):
    assert arp.decode(arp.encode(packet)) == packet


@NO_DEADLINE
@given(ipv4_packets)
def test_ipv4_round_trip(packet):
    raw = ipv4.encode(packet)
    assert ipv4.decode(raw) == packet
    assert ipv4.decode(raw + bytes(46)) == packet  # Ethernet padding


@NO_DEADLINE
@given(icmp_messages)
def test_icmp_round_trip(message):
    assert icmp.decode(icmp.encode(message)) == message


@NO_DEADLINE
@given(udp_datagrams, ips, ips)
def test_udp_round_trip(datagram, src, dst):
    raw = udp.encode(datagram, src, dst)
    assert raw[6:8] != b"\x00\x00"
    assert udp.decode(raw, src, dst) == datagram


@NO_DEADLINE
@given(tcp_segments, ips, ips)
def test_tcp_round_trip(segment, src, dst):
    raw = tcp.encode(segment, src, dst)
    assert len(raw) % 4 == len(segment.payload) % 4
    assert tcp.decode(raw, src, dst) == segment


@NO_DEADLINE
@given(st.integers(0, vxlan.MAX_VNI), payloads)
def test_vxlan_round_trip(vni, inner):
    assert vxlan.decode(vxlan.encode(vni, inner)) == (vni, inner)


@NO_DEADLINE
@given(st.binary(max_size=200), st.binary(min_size=2, max_size=2), st.binary(min_size=2, max_size=2))
def test_incremental_checksum_matches_recompute(data, old_word, new_word):
    # Words start 16-bit aligned; the leading 0x4500 (as in every IPv4 header) keeps the data from being all
    # zero, the one case where RFC 1624 gives -0 and a recompute +0.
    data = b"\x45\x00" + data + b"\x00" * (len(data) & 1)
    before = data + old_word
    after = data + new_word
    assert checksum.update_checksum(
        checksum.internet_checksum(before), old_word, new_word
    ) == checksum.internet_checksum(after)


@NO_DEADLINE
@given(st.binary(max_size=3000))
def test_checksum_matches_word_loop(data):
    padded = data + b"\0" * (len(data) & 1)
    total = sum(int.from_bytes(padded[i : i + 2], "big") for i in range(0, len(padded), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert checksum.internet_checksum(data) == ~total & 0xFFFF


# Fuzzing: every decoder, fed anything, returns a value or raises DecodeError and nothing else.

SRC, DST = "10.244.1.2", "10.244.2.3"
DECODERS = {
    "ethernet": ethernet.decode,
    "arp": arp.decode,
    "ipv4": ipv4.decode,
    "icmp": icmp.decode,
    "udp": lambda b: udp.decode(b, SRC, DST),
    "tcp": lambda b: tcp.decode(b, SRC, DST),
    "vxlan": vxlan.decode,
}


def _value_or_decode_error(decoder, data):
    try:
        decoder(data)
    except DecodeError:
        pass


def _fix_checksums(name: str, data: bytearray) -> bytes:
    """Recompute the checksum a mutation broke, so that fuzzing reaches the fields behind it."""
    if name == "ipv4" and len(data) >= 20 and 20 <= (data[0] & 0x0F) * 4 <= len(data):
        ihl = (data[0] & 0x0F) * 4
        data[10:12] = b"\0\0"
        data[10:12] = checksum.internet_checksum(data[:ihl]).to_bytes(2, "big")
    elif name == "icmp" and len(data) >= 8:
        data[2:4] = b"\0\0"
        data[2:4] = checksum.internet_checksum(data).to_bytes(2, "big")
    elif name == "tcp" and len(data) >= 20:
        data[16:18] = b"\0\0"
        initial = checksum.pseudo_header_sum(SRC, DST, 6, len(data))
        data[16:18] = checksum.internet_checksum(data, initial).to_bytes(2, "big")
    return bytes(data)


VALID = {
    "ethernet": ethernet_frames.map(ethernet.encode),
    "arp": arp_packets.map(arp.encode),
    "ipv4": ipv4_packets.map(ipv4.encode),
    "icmp": icmp_messages.map(icmp.encode),
    "udp": udp_datagrams.map(lambda d: udp.encode(d, SRC, DST)),
    "tcp": tcp_segments.map(lambda s: tcp.encode(s, SRC, DST)),
    "vxlan": st.builds(vxlan.encode, st.integers(0, vxlan.MAX_VNI), payloads),
}


@st.composite
def mutated(draw, name):
    data = bytearray(draw(VALID[name]))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "extend", "insert"]))
        if kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "extend":
            data += draw(st.binary(max_size=16))
        elif kind == "insert":
            at = draw(st.integers(0, len(data)))
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
    if draw(st.booleans()):
        return _fix_checksums(name, data)
    return bytes(data)


FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=128))
def test_fuzz_arbitrary_bytes(data):
    for decoder in DECODERS.values():
        _value_or_decode_error(decoder, data)


@pytest.mark.parametrize("name", list(DECODERS))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_mutated_encodings(name, data):
    _value_or_decode_error(DECODERS[name], data.draw(mutated(name)))
