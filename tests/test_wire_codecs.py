"""Table-driven checks of each wire codec: encoding layout, decoding, and the DecodeError cases."""

import pytest
from podnet.overlay.wire import addresses, arp, checksum, ethernet, icmp, ipv4, tcp, udp, vxlan

from podnet.codec import DecodeError

SRC, DST = "10.244.1.2", "10.244.2.3"


def test_addresses_round_trip_and_reject_garbage():
    assert addresses.ip_to_bytes("10.244.1.2") == bytes([10, 244, 1, 2])
    assert addresses.bytes_to_ip(bytes([192, 168, 0, 255])) == "192.168.0.255"
    assert addresses.int_to_ip(addresses.ip_to_int("10.96.0.10")) == "10.96.0.10"
    assert addresses.mac_to_bytes("02:00:0A:f4:01:02") == bytes.fromhex("02000af40102")
    assert addresses.bytes_to_mac(bytes.fromhex("02000af40102")) == "02:00:0a:f4:01:02"
    for bad in ("10.0.0", "10.0.0.256", "a.b.c.d", "1.2.3.-4", "1.2.3.4.5", "1..2.3", " 1.2.3.4"):
        with pytest.raises(ValueError):
            addresses.ip_to_bytes(bad)
    for bad in ("02:00:0a:f4:01", "0200:0a:f4:01:02:03", "zz:00:0a:f4:01:02"):
        with pytest.raises(ValueError):
            addresses.mac_to_bytes(bad)


@pytest.mark.parametrize(
    "data, expected",
    [
        # RFC 1071 section 3 example: sum 0xddf2, checksum its complement.
        (bytes.fromhex("0001f203f4f5f6f7"), 0x220D),
        (b"", 0xFFFF),
        (b"\x00\x00", 0xFFFF),
        (b"\xff\xff", 0x0000),
        (b"\x01", 0xFEFF),
    ],
)
def test_internet_checksum(data, expected):
    assert checksum.internet_checksum(data) == expected


def test_incremental_update_matches_recompute():
    header = bytearray(ipv4.encode(ipv4.IPv4Packet(SRC, DST, ipv4.IPProtocol.UDP, b"")))
    old_checksum = int.from_bytes(header[10:12], "big")
    new_src = addresses.ip_to_bytes("10.96.0.1")
    updated = checksum.update_checksum(old_checksum, header[12:16], new_src)
    header[12:16] = new_src
    header[10:12] = b"\x00\x00"
    assert updated == checksum.internet_checksum(header)


def test_ethernet_layout_and_errors():
    frame = ethernet.EthernetFrame("ff:ff:ff:ff:ff:ff", "02:00:0a:f4:01:02", ethernet.EtherType.ARP, b"x")
    raw = ethernet.encode(frame)
    assert raw == bytes.fromhex("ffffffffffff02000af401020806") + b"x"
    assert ethernet.decode(raw) == frame
    assert ethernet.decode(raw[:12] + b"\x88\xcc").ethertype == 0x88CC  # LLDP: kept as a plain int
    with pytest.raises(DecodeError, match="shorter"):
        ethernet.decode(raw[:13])
    with pytest.raises(DecodeError, match="802.3"):
        ethernet.decode(raw[:12] + b"\x00\x2e")


def test_arp_request_reply_and_errors():
    req = arp.request("02:00:0a:f4:01:02", SRC, "10.244.1.1")
    raw = arp.encode(req)
    assert len(raw) == 28 and raw[6:8] == b"\x00\x01"
    assert arp.decode(raw + bytes(18)) == req  # Ethernet padding ignored
    answer = arp.reply(req, "02:00:00:00:00:01")
    assert (answer.op, answer.sender_ip, answer.target_mac) == (arp.ArpOp.REPLY, "10.244.1.1", req.sender_mac)
    with pytest.raises(DecodeError, match="Ethernet/IPv4"):
        arp.decode(raw[:4] + b"\x08\x04" + raw[6:])
    with pytest.raises(DecodeError, match="operation"):
        arp.decode(raw[:6] + b"\x00\x03" + raw[8:])
    with pytest.raises(DecodeError):
        arp.decode(raw[:27])


def _ipv4_raw(**changes):
    packet = ipv4.IPv4Packet(SRC, DST, ipv4.IPProtocol.UDP, b"payload", **changes)
    return packet, ipv4.encode(packet)


def _with_header(raw: bytes, offset: int, value: bytes) -> bytes:
    """`raw` with header bytes replaced and the header checksum recomputed, so only that change counts."""
    header_length = (value[0] if offset == 0 else raw[0]) % 16 * 4
    header = bytearray(raw[: max(header_length, 20)])
    header[offset : offset + len(value)] = value
    header[10:12] = b"\x00\x00"
    header[10:12] = checksum.internet_checksum(header).to_bytes(2, "big")
    return bytes(header) + raw[len(header) :]


def test_ipv4_layout_and_padding():
    packet, raw = _ipv4_raw(ttl=7, identification=0x1234, dscp=46, ecn=1)
    assert raw[:12] == bytes.fromhex("45b9001b1234400007110000")[:10] + raw[10:12]
    assert checksum.internet_checksum(raw[:20]) == 0
    assert ipv4.decode(raw + bytes(20)) == packet


@pytest.mark.parametrize(
    "offset, value, message",
    [
        (0, b"\x65", "version"),
        (0, b"\x44", "below 20"),
        (0, b"\x4f", "exceeds"),
        (2, b"\x00\x13", "total length"),
        (2, b"\x00\xff", "total length"),
        (6, b"\x20\x00", "fragment"),
        (6, b"\x00\x01", "fragment"),
        (6, b"\x80\x00", "reserved"),
    ],
)
def test_ipv4_rejects(offset, value, message):
    _, raw = _ipv4_raw()
    with pytest.raises(DecodeError, match=message):
        ipv4.decode(_with_header(raw, offset, value))


def test_ipv4_checksum_and_options():
    _, raw = _ipv4_raw()
    with pytest.raises(DecodeError, match="checksum"):
        ipv4.decode(raw[:8] + b"\x01" + raw[9:])
    # One NOP-padded option word: skipped, payload starts after it.
    with_option = bytearray(raw[:20] + b"\x01\x01\x01\x00" + raw[20:])
    with_option[0] = 0x46
    with_option[2:4] = len(with_option).to_bytes(2, "big")
    assert ipv4.decode(_with_header(bytes(with_option), 0, b"\x46")).payload == b"payload"


def test_icmp_echo_and_errors():
    request = icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, 0x1234, 7, b"ping")
    raw = icmp.encode(request)
    assert checksum.internet_checksum(raw) == 0
    assert icmp.decode(raw) == request
    assert icmp.decode(icmp.encode(icmp.echo_reply(request))).type is icmp.ICMPType.ECHO_REPLY
    with pytest.raises(DecodeError, match="checksum"):
        icmp.decode(raw[:-1] + b"q")
    with pytest.raises(DecodeError):
        icmp.decode(raw[:7])


def test_icmp_unreachable_quotes_header_and_eight_bytes():
    big = ipv4.encode(ipv4.IPv4Packet(SRC, DST, ipv4.IPProtocol.UDP, bytes(1500)))
    message = icmp.frag_needed(big, 1450)
    assert message.original == big[:28]
    raw = icmp.encode(message)
    assert raw[:2] == b"\x03\x04" and raw[4:8] == (1450).to_bytes(4, "big")
    assert icmp.decode(raw) == message
    packet = icmp.error_packet(icmp.port_unreachable(big), "10.244.2.1", big)
    assert (packet.src, packet.dst, packet.protocol) == ("10.244.2.1", SRC, ipv4.IPProtocol.ICMP)
    assert icmp.decode(packet.payload).code is icmp.UnreachableCode.PORT
    with pytest.raises(ValueError):
        icmp.encode(icmp.IcmpUnreachable(icmp.UnreachableCode.PORT, b"", next_hop_mtu=1))


def test_icmp_other_types_kept_raw():
    time_exceeded = icmp.IcmpMessage(icmp.ICMPType.TIME_EXCEEDED, 0, bytes(4), b"quoted")
    assert icmp.decode(icmp.encode(time_exceeded)) == time_exceeded


def test_udp_checksum_and_length():
    datagram = udp.UdpDatagram(5353, 53, b"query")
    raw = udp.encode(datagram, SRC, DST)
    assert raw[4:6] == b"\x00\x0d"
    assert udp.decode(raw, SRC, DST) == datagram
    assert udp.decode(raw[:6] + b"\x00\x00" + raw[8:], SRC, DST) == datagram  # no checksum: accepted
    with pytest.raises(DecodeError, match="checksum"):
        udp.decode(raw, SRC, "10.244.2.4")  # the pseudo-header is covered
    with pytest.raises(DecodeError, match="length"):
        udp.decode(raw[:4] + b"\x00\x07" + raw[6:], SRC, DST)
    with pytest.raises(DecodeError, match="length"):
        udp.decode(raw[:-1], SRC, DST)


def test_udp_computed_zero_checksum_is_sent_as_ffff():
    # Find a payload whose checksum computes to zero; it must go out as 0xffff and still verify.
    for filler in range(0x10000):
        datagram = udp.UdpDatagram(1, 2, filler.to_bytes(2, "big"))
        raw = udp.encode(datagram, SRC, DST)
        if raw[6:8] == b"\xff\xff":
            assert udp.decode(raw, SRC, DST) == datagram
            return
    pytest.fail("no payload with a zero checksum found")


def test_tcp_options_layout_like_linux():
    syn = tcp.TcpSegment(
        40000,
        80,
        1,
        0,
        tcp.TcpFlags.SYN,
        64240,
        mss=1410,
        window_scale=7,
        sack_permitted=True,
        timestamps=(5, 0),
    )
    raw = tcp.encode(syn, SRC, DST)
    assert raw[12] >> 4 == 10
    assert raw[20:] == bytes.fromhex("020405820402080a000000050000000001030307")
    assert tcp.decode(raw, SRC, DST) == syn
    plain = tcp.TcpSegment(80, 40000, 9, 2, tcp.TcpFlags.ACK | tcp.TcpFlags.PSH, 502, b"hello")
    assert tcp.decode(tcp.encode(plain, SRC, DST), SRC, DST) == plain


def _tcp_with_options(options: bytes) -> bytes:
    seg = bytearray(tcp.encode(tcp.TcpSegment(1, 2, 3, 4, tcp.TcpFlags.ACK, 5), SRC, DST))
    seg[12] = ((20 + len(options)) // 4) << 4
    seg[16:18] = b"\x00\x00"
    seg += options
    seg[16:18] = checksum.internet_checksum(seg, checksum.pseudo_header_sum(SRC, DST, 6, len(seg))).to_bytes(
        2, "big"
    )
    return bytes(seg)


def test_tcp_option_parsing():
    # SACK blocks and an unknown option are skipped; EOL ends the list.
    raw = _tcp_with_options(bytes.fromhex("0101050a0000000100000002fe0400000002040582000000"))
    seg = tcp.decode(raw, SRC, DST)
    assert seg.mss is None and seg.timestamps is None
    assert tcp.decode(_tcp_with_options(bytes.fromhex("01010402")), SRC, DST).sack_permitted
    with pytest.raises(DecodeError, match="MSS"):
        tcp.decode(_tcp_with_options(bytes.fromhex("02030582")), SRC, DST)
    with pytest.raises(DecodeError, match="length 1"):
        tcp.decode(_tcp_with_options(bytes.fromhex("01010801")), SRC, DST)
    with pytest.raises(DecodeError, match="truncated"):
        tcp.decode(_tcp_with_options(bytes.fromhex("0101080a")), SRC, DST)
    with pytest.raises(DecodeError, match="checksum"):
        tcp.decode(raw, SRC, "10.0.0.1")


def test_vxlan_header_rules():
    raw = vxlan.encode(1, b"frame")
    assert raw[:8] == bytes.fromhex("0800000000000100")
    assert vxlan.decode(raw) == (1, b"frame")
    assert vxlan.decode(vxlan.encode(vxlan.MAX_VNI, b"")) == (0xFFFFFF, b"")
    for bad, message in [
        ("0000000000000100", "I flag"),
        ("0c00000000000100", "reserved"),
        ("0800010000000100", "reserved"),
        ("0800000000000101", "reserved"),
        ("08000000000001", "shorter"),
    ]:
        with pytest.raises(DecodeError, match=message):
            vxlan.decode(bytes.fromhex(bad))
    with pytest.raises(ValueError):
        vxlan.encode(1 << 24, b"")
