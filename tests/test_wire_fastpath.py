"""The hot-path parser and rewriter agree with the dataclass codecs."""

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.overlay.wire import addresses, ethernet, fastpath, icmp, ipv4, tcp, udp, vxlan
from test_wire_golden import CASES
from test_wire_properties import NO_DEADLINE, ips, ipv4_packets, payloads, tcp_segments, u16, udp_datagrams

from podnet.codec import DecodeError

echoes = st.builds(
    icmp.IcmpEcho,
    st.sampled_from([icmp.ICMPType.ECHO_REQUEST, icmp.ICMPType.ECHO_REPLY]),
    st.just(0),
    u16,
    u16,
    payloads,
)
transports = st.one_of(tcp_segments, udp_datagrams, echoes)
addresses_and_ports = st.tuples(ips.map(addresses.ip_to_int), u16)


def _packet(transport, src: str, dst: str, ip_fields: ipv4.IPv4Packet) -> bytes:
    if isinstance(transport, tcp.TcpSegment):
        protocol, payload = ipv4.IPProtocol.TCP, tcp.encode(transport, src, dst)
    elif isinstance(transport, udp.UdpDatagram):
        protocol, payload = ipv4.IPProtocol.UDP, udp.encode(transport, src, dst)
    else:
        protocol, payload = ipv4.IPProtocol.ICMP, icmp.encode(transport)
    return ipv4.encode(dataclasses.replace(ip_fields, src=src, dst=dst, protocol=protocol, payload=payload))


def _expected_key(transport, src: str, dst: str) -> fastpath.FlowKey:
    src_int, dst_int = addresses.ip_to_int(src), addresses.ip_to_int(dst)
    if isinstance(transport, icmp.IcmpEcho):
        return (fastpath.ICMP, src_int, transport.identifier, dst_int, transport.identifier)
    protocol = fastpath.TCP if isinstance(transport, tcp.TcpSegment) else fastpath.UDP
    return (protocol, src_int, transport.src_port, dst_int, transport.dst_port)


def _decode_transport(packet: bytes):
    decoded = ipv4.decode(packet)
    if decoded.protocol == ipv4.IPProtocol.TCP:
        return decoded, tcp.decode(decoded.payload, decoded.src, decoded.dst)
    if decoded.protocol == ipv4.IPProtocol.UDP:
        return decoded, udp.decode(decoded.payload, decoded.src, decoded.dst)
    return decoded, icmp.decode(decoded.payload)


@NO_DEADLINE
@given(transports, ips, ips, ipv4_packets, st.integers(0, vxlan.MAX_VNI), st.binary(max_size=20))
def test_datagram_flow_agrees_with_codecs(transport, src, dst, ip_fields, vni, padding):
    packet = _packet(transport, src, dst, ip_fields)
    frame = ethernet.encode(
        ethernet.EthernetFrame(
            "02:00:0a:f4:02:03", "02:00:0a:f4:01:02", ethernet.EtherType.IPV4, packet + padding
        )
    )
    datagram = vxlan.encode(vni, frame)
    expected = _expected_key(transport, src, dst)
    assert fastpath.datagram_flow(datagram) == (vni, expected)
    assert fastpath.frame_flow(memoryview(frame)) == expected
    assert fastpath.ipv4_flow(datagram, fastpath.INNER_IPV4_OFFSET) == expected


def test_datagram_flow_of_kernel_frames():
    outer_payload_at = 14 + 20 + 8  # outer Ethernet, IPv4, UDP
    keys = {
        name: fastpath.datagram_flow(bytes.fromhex(case[0])[outer_payload_at:])
        for name, case in CASES.items()
    }
    a, b = addresses.ip_to_int("10.244.1.2"), addresses.ip_to_int("10.244.2.3")
    assert keys == {
        "arp-request": (1, None),
        "arp-reply": (1, None),
        "echo-request": (1, (fastpath.ICMP, a, 0xA279, b, 0xA279)),
        "echo-reply": (1, (fastpath.ICMP, b, 0xA279, a, 0xA279)),
        "udp": (1, (fastpath.UDP, a, 40001, b, 9)),
        "port-unreachable": (1, None),  # ICMP errors belong to the flow they quote, not a flow of their own
        "tcp-syn": (1, (fastpath.TCP, a, 40002, b, 8080)),
        "tcp-syn-ack": (1, (fastpath.TCP, b, 8080, a, 40002)),
        "tcp-ack": (1, (fastpath.TCP, a, 40002, b, 8080)),
    }


def test_fragments_and_short_packets_have_no_flow():
    packet = bytearray(
        _packet(udp.UdpDatagram(1, 2, b"x"), "10.0.0.1", "10.0.0.2", ipv4.IPv4Packet("", "", 0, b""))
    )
    assert fastpath.ipv4_flow(packet) is not None
    assert fastpath.ipv4_flow(packet[:23]) is None
    more_fragments = packet[:6] + b"\x20\x00" + packet[8:]
    assert fastpath.ipv4_flow(more_fragments) is None
    assert fastpath.frame_flow(b"\x00" * 12 + b"\x08\x06" + bytes(packet)) is None  # not IPv4 EtherType


@NO_DEADLINE
@given(
    transports,
    ips,
    ips,
    ipv4_packets,
    st.none() | addresses_and_ports,
    st.none() | addresses_and_ports,
    st.integers(0, 30),
)
def test_rewrite_matches_reencoding(transport, src, dst, ip_fields, new_src, new_dst, offset):
    original = _packet(transport, src, dst, ip_fields)
    buf = bytearray(b"\xee" * offset + original)
    fastpath.rewrite_ipv4(buf, offset, src=new_src, dst=new_dst)
    assert buf[:offset] == b"\xee" * offset

    expected_src, expected_dst = src, dst
    expected = transport
    if new_src is not None:
        expected_src = addresses.int_to_ip(new_src[0])
        if not isinstance(transport, icmp.IcmpEcho):
            expected = dataclasses.replace(expected, src_port=new_src[1])
    if new_dst is not None:
        expected_dst = addresses.int_to_ip(new_dst[0])
        if not isinstance(transport, icmp.IcmpEcho):
            expected = dataclasses.replace(expected, dst_port=new_dst[1])
    # Incremental update gives exactly the checksums a full re-encode computes, so the bytes match.
    assert bytes(buf[offset:]) == _packet(expected, expected_src, expected_dst, ip_fields)
    decoded_ip, decoded_transport = _decode_transport(bytes(buf[offset:]))
    assert (decoded_ip.src, decoded_ip.dst, decoded_transport) == (expected_src, expected_dst, expected)


@NO_DEADLINE
@given(
    st.one_of(tcp_segments, udp_datagrams),
    ips,
    ips,
    ipv4_packets,
    addresses_and_ports,
    addresses_and_ports,
    st.sampled_from([("src",), ("dst",), ("src", "dst")]),
    st.booleans(),
)
def test_a_precomputed_nat_rewrites_as_rewrite_ipv4_does(
    transport, src, dst, ip_fields, new_src, new_dst, sides, without_udp_checksum
):
    packet = bytearray(_packet(transport, src, dst, ip_fields))
    if without_udp_checksum and isinstance(transport, udp.UdpDatagram):
        packet[26:28] = b"\x00\x00"
    change = {side: {"src": new_src, "dst": new_dst}[side] for side in sides}
    expected = bytearray(packet)
    fastpath.rewrite_ipv4(expected, **change)
    nat = fastpath.nat_rewrite(fastpath.ipv4_flow(packet), **change)
    for _ in range(2):  # the same rewrite serves every packet of the flow
        rewritten = bytearray(packet)
        fastpath.apply_nat(rewritten, nat)
        assert rewritten == expected


@NO_DEADLINE
@given(udp_datagrams, ips, ips, addresses_and_ports)
def test_rewrite_keeps_udp_without_checksum(datagram, src, dst, new_dst):
    raw = bytearray(udp.encode(datagram, src, dst))
    raw[6:8] = b"\x00\x00"
    buf = bytearray(ipv4.encode(ipv4.IPv4Packet(src, dst, ipv4.IPProtocol.UDP, bytes(raw))))
    fastpath.rewrite_ipv4(buf, dst=new_dst)
    decoded = ipv4.decode(bytes(buf))
    assert decoded.payload[6:8] == b"\x00\x00"
    assert udp.decode(decoded.payload, decoded.src, decoded.dst) == dataclasses.replace(
        datagram, dst_port=new_dst[1]
    )


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=96), st.integers(0, 40))
def test_fuzz_fast_path(data, offset):
    assert fastpath.ipv4_flow(data, offset) is None or len(fastpath.ipv4_flow(data, offset)) == 5
    fastpath.frame_flow(data, offset)
    try:
        fastpath.datagram_flow(data)
    except DecodeError:
        pass


def _udp_fields(packet: bytes):
    """What the codecs make of an IPv4 packet as UDP: (src, dst, src_port, dst_port, payload), or None
    when they refuse it or it is not plain UDP."""
    try:
        decoded = ipv4.decode(packet)
        if decoded.protocol != ipv4.IPProtocol.UDP:
            return None
        datagram = udp.decode(decoded.payload, decoded.src, decoded.dst)
    except DecodeError:
        return None
    src, dst = addresses.ip_to_int(decoded.src), addresses.ip_to_int(decoded.dst)
    return src, dst, datagram.src_port, datagram.dst_port, datagram.payload


def _fast_udp_fields(packet: bytes | memoryview):
    fields = fastpath.ipv4_udp(packet)
    if fields is None:
        return None
    *head, end = fields
    return (*head, bytes(packet[fastpath.UDP_PAYLOAD_OFFSET : end]))


@NO_DEADLINE
@given(udp_datagrams, ips, ips, ipv4_packets, st.binary(max_size=20), st.booleans())
def test_ipv4_udp_agrees_with_codecs(datagram, src, dst, ip_fields, padding, without_checksum):
    raw = bytearray(udp.encode(datagram, src, dst))
    if without_checksum:
        raw[6:8] = b"\x00\x00"
    packet = ipv4.encode(
        dataclasses.replace(ip_fields, src=src, dst=dst, protocol=ipv4.IPProtocol.UDP, payload=bytes(raw))
    )
    expected = (
        addresses.ip_to_int(src),
        addresses.ip_to_int(dst),
        datagram.src_port,
        datagram.dst_port,
        datagram.payload,
    )
    assert _udp_fields(packet + padding) == expected
    assert _fast_udp_fields(packet + padding) == expected
    assert _fast_udp_fields(memoryview(packet + padding)) == expected


@NO_DEADLINE
@given(udp_datagrams, ips, ips, st.data())
def test_ipv4_udp_takes_only_what_the_codecs_take_alike(datagram, src, dst, data):
    """A damaged packet (any byte changed, or cut short) is either refused by the fast parser, left to
    the codecs, or read exactly as the codecs read it: never accepted with other fields."""
    packet = bytearray(
        ipv4.encode(ipv4.IPv4Packet(src, dst, ipv4.IPProtocol.UDP, udp.encode(datagram, src, dst)))
    )
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(packet) - 1))
        packet[at] = data.draw(st.integers(0, 255))
    packet = bytes(packet[: data.draw(st.integers(0, len(packet)))])
    fast = _fast_udp_fields(packet)
    assert fast is None or fast == _udp_fields(packet)


def test_ipv4_udp_leaves_options_fragments_and_other_protocols_to_the_codecs():
    packet = ipv4.encode(
        ipv4.IPv4Packet(
            "10.0.0.1",
            "10.0.0.2",
            ipv4.IPProtocol.UDP,
            udp.encode(udp.UdpDatagram(1, 2, b"x"), "10.0.0.1", "10.0.0.2"),
        )
    )
    assert fastpath.ipv4_udp(packet) is not None
    fragment = ipv4.encode(ipv4.IPv4Packet("10.0.0.1", "10.0.0.2", ipv4.IPProtocol.UDP, packet[20:]))
    fragment = fragment[:6] + b"\x20\x00" + fragment[8:]  # MF set (and the checksum now wrong)
    assert fastpath.ipv4_udp(fragment) is None
    tcp_packet = ipv4.encode(ipv4.IPv4Packet("10.0.0.1", "10.0.0.2", ipv4.IPProtocol.TCP, packet[20:]))
    assert fastpath.ipv4_udp(tcp_packet) is None
    assert fastpath.ipv4_udp(packet[:27]) is None


@NO_DEADLINE
@given(u16, u16, ips, ips, st.binary(max_size=1472), u16)
def test_udp_packet_is_what_the_codecs_encode(src_port, dst_port, src, dst, payload, identification):
    expected = ipv4.encode(
        ipv4.IPv4Packet(
            src,
            dst,
            ipv4.IPProtocol.UDP,
            udp.encode(udp.UdpDatagram(src_port, dst_port, payload), src, dst),
            identification=identification,
        )
    )
    built = fastpath.udp_packet(
        addresses.ip_to_int(src), addresses.ip_to_int(dst), src_port, dst_port, payload, identification
    )
    assert built == expected


@NO_DEADLINE
@given(st.binary(min_size=997, max_size=1508), st.data())
def test_ipv4_udp_of_an_mtu_sized_datagram_refuses_any_flipped_byte(payload, data):
    # these are read whole and folded rather than in two halves; padding past the datagram is not summed
    source, destination = addresses.ip_to_int("10.244.1.2"), addresses.ip_to_int("10.244.2.2")
    packet = fastpath.udp_packet(source, destination, 40000, 9, payload, 7)
    assert fastpath.ipv4_udp(packet) is not None and fastpath.ipv4_udp(packet + b"\xff\x01") is not None
    damaged = bytearray(packet)
    at = data.draw(st.integers(20, len(packet) - 1))
    damaged[at] ^= data.draw(st.integers(1, 255))
    # a changed UDP length may still frame a valid datagram, and a checksum of zero means none
    if at not in (24, 25) and damaged[26:28] != b"\x00\x00":
        assert fastpath.ipv4_udp(bytes(damaged)) is None


@st.composite
def batch_packets(draw):
    """What a node hands a pod in one wake-up: mostly good UDP, some damaged, without checksum, with
    padding after the datagram, or not UDP at all."""
    payload = draw(
        st.sampled_from([b"", b"x", bytes(64), bytes(1400), bytes(1401)]) | st.binary(max_size=1472)
    )
    packet = bytearray(
        fastpath.udp_packet(
            draw(st.integers(0, 0xFFFFFFFF)),
            draw(st.integers(0, 0xFFFFFFFF)),
            draw(u16),
            draw(u16),
            payload,
            draw(u16),
        )
    )
    kind = draw(st.sampled_from(["good", "good", "good", "damaged", "no-checksum", "padded", "garbage"]))
    if kind == "damaged":
        packet[draw(st.integers(0, len(packet) - 1))] ^= draw(st.integers(1, 255))
    elif kind == "no-checksum":
        packet[26:28] = b"\0\0"
    elif kind == "padded":
        packet += draw(st.binary(min_size=1, max_size=20))
    elif kind == "garbage":
        return draw(st.binary(max_size=64))
    return bytes(packet)


@NO_DEADLINE
@given(st.lists(batch_packets(), min_size=12, max_size=140))
def test_ipv4_udp_batch_gives_what_ipv4_udp_gives(packets):
    assert fastpath.ipv4_udp_batch(packets) == [fastpath.ipv4_udp(packet) for packet in packets]


def test_ipv4_udp_batch_refuses_each_damaged_datagram_of_a_flood():
    source, destination = addresses.ip_to_int("10.244.1.2"), addresses.ip_to_int("10.244.2.2")
    flood = [fastpath.udp_packet(source, destination, 40000, 9, bytes(1400), n) for n in range(100)]
    accepted = fastpath.ipv4_udp_batch(flood)
    assert accepted == [(source, destination, 40000, 9, 1428)] * 100
    for at in (0, 10, 11, 19, 20, 27, 28, 700, 1427):
        damaged = list(flood)
        broken = bytearray(damaged[at % 100])
        broken[at] ^= 0x40
        damaged[at % 100] = bytes(broken)
        results = fastpath.ipv4_udp_batch(damaged)
        assert results[at % 100] is None
        assert results[: at % 100] + results[at % 100 + 1 :] == accepted[:99]


def test_without_datagram_sums_a_damaged_payload_passes_and_a_damaged_header_does_not():
    """What an authenticated carrier delivers (CHECKSUM_UNNECESSARY in Linux): the UDP checksum is taken as
    right, the IPv4 header's is still verified, as ip_rcv verifies it whatever the mark."""
    source, destination = addresses.ip_to_int("10.244.1.2"), addresses.ip_to_int("10.244.2.2")
    flood = [fastpath.udp_packet(source, destination, 40000, 9, bytes(1400), n) for n in range(100)]
    payload_damaged, header_damaged = bytearray(flood[3]), bytearray(flood[5])
    payload_damaged[700] ^= 0x40
    header_damaged[11] ^= 0x40  # the header checksum itself
    flood[3], flood[5] = bytes(payload_damaged), bytes(header_damaged)
    fields = (source, destination, 40000, 9, 1428)
    trusting = fastpath.ipv4_udp_batch(flood, datagram_sums=False)
    assert trusting[3] == fields and trusting[5] is None
    assert trusting == [fastpath.ipv4_udp(packet, datagram_sum=False) for packet in flood]
    verifying = fastpath.ipv4_udp_batch(flood)
    assert verifying[3] is None and verifying[5] is None
    assert [result for n, result in enumerate(verifying) if n not in (3, 5)] == [fields] * 98


@NO_DEADLINE
@given(st.binary(max_size=120), st.sampled_from([3, 11, 12]), u16, u16, st.sampled_from([6, 17]))
def test_any_icmp_error_quote_reads_as_a_key_or_none_and_rewrites_keeping_its_checksums(
    data, kind, port1, port2, protocol
):
    key = fastpath.icmp_error_quote(data)  # any bytes: a key or None
    assert key is None or len(key) == 5
    quoted = bytearray(
        _packet(
            udp.UdpDatagram(port1, port2, data[:8]),
            "10.244.1.2",
            "10.244.2.3",
            ipv4.IPv4Packet("", "", 0, b""),
        )
    )[:28]
    quoted[9] = protocol
    error = icmp.IcmpMessage(kind, 3, bytes(4), bytes(quoted))
    packet = bytearray(
        ipv4.encode(ipv4.IPv4Packet("10.244.2.3", "10.244.1.2", ipv4.IPProtocol.ICMP, icmp.encode(error)))
    )
    a, b = addresses.ip_to_int("10.244.1.2"), addresses.ip_to_int("10.244.2.3")
    assert fastpath.icmp_error_quote(packet) == (protocol, a, port1, b, port2)
    fastpath.rewrite_icmp_error(packet, src=(addresses.ip_to_int("10.96.0.10"), 53))
    decoded = ipv4.decode(packet)  # the header checksum holds
    icmp.decode(decoded.payload)  # and the ICMP one
    assert decoded.src == "10.96.0.10"
    assert fastpath.icmp_error_quote(packet) == (protocol, a, port1, addresses.ip_to_int("10.96.0.10"), 53)
