"""pcap files: byte layout, and tshark (Debian) reading our captures as VXLAN with the pod addresses."""

import io

from podnet.overlay.wire import ethernet, icmp, ipv4, pcap, tcp, vxlan

NODE_A, NODE_B = "127.0.0.11", "127.0.0.12"
POD_A, POD_B = "10.244.1.2", "10.244.2.3"
POD_A_MAC, POD_B_MAC = "02:00:0a:f4:01:02", "02:00:0a:f4:02:03"


def test_file_and_record_layout():
    out = io.BytesIO()
    writer = pcap.PcapWriter(out, pcap.LinkType.ETHERNET, snaplen=8)
    writer.write(1700000000.25, b"0123456789")
    writer.write(1.9999996, b"ab")  # rounds up into the next second
    assert out.getvalue() == (
        bytes.fromhex("d4c3b2a10200040000000000000000000800000001000000")
        + bytes.fromhex("00f1536590d00300080000000a000000")
        + b"01234567"
        + bytes.fromhex("02000000000000000200000002000000")
        + b"ab"
    )


def test_underlay_frame_headers():
    frame = pcap.underlay_frame(b"payload", (NODE_A, 40000), (NODE_B, vxlan.PORT), identification=0x10007)
    outer = ethernet.decode(frame)
    assert (outer.src, outer.dst) == ("02:00:7f:00:00:0b", "02:00:7f:00:00:0c")
    packet = ipv4.decode(outer.payload)
    assert (packet.src, packet.dst, packet.identification) == (NODE_A, NODE_B, 7)
    assert packet.payload[:4] == (40000).to_bytes(2, "big") + vxlan.PORT.to_bytes(2, "big")
    assert packet.payload[8:] == b"payload"


def _pod_frame(src_mac, dst_mac, packet: ipv4.IPv4Packet) -> bytes:
    return ethernet.encode(
        ethernet.EthernetFrame(dst_mac, src_mac, ethernet.EtherType.IPV4, ipv4.encode(packet))
    )


def _echo_request() -> ipv4.IPv4Packet:
    echo = icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, 0x1234, 1, b"podnet")
    return ipv4.IPv4Packet(POD_A, POD_B, ipv4.IPProtocol.ICMP, icmp.encode(echo))


def _syn_reply() -> ipv4.IPv4Packet:
    segment = tcp.TcpSegment(
        8080, 40002, 1000, 2001, tcp.TcpFlags.SYN | tcp.TcpFlags.ACK, 64240, mss=1410, window_scale=7,
        sack_permitted=True, timestamps=(1, 2),
    )  # fmt: skip
    return ipv4.IPv4Packet(POD_B, POD_A, ipv4.IPProtocol.TCP, tcp.encode(segment, POD_B, POD_A))


# tshark's checksum status values: 0 bad, 1 good, 2 unverified.
GOOD, BAD = "1", "0"
EXPERT_WARNING = 0x00600000  # PI_WARN; chat is 0x00200000, note 0x00400000, error 0x00800000


def test_tshark_reads_underlay_capture_as_vxlan(tmp_path, tshark):
    capture = tmp_path / "underlay.pcap"
    with capture.open("wb") as out:
        writer = pcap.PcapWriter(out, pcap.LinkType.ETHERNET)
        request = vxlan.encode(1, _pod_frame(POD_A_MAC, POD_B_MAC, _echo_request()))
        writer.write(1700000000.0, pcap.underlay_frame(request, (NODE_A, 51000), (NODE_B, vxlan.PORT)))
        reply = vxlan.encode(1, _pod_frame(POD_B_MAC, POD_A_MAC, _syn_reply()))
        writer.write(1700000000.5, pcap.underlay_frame(reply, (NODE_B, 52000), (NODE_A, vxlan.PORT)))

    rows = tshark(
        capture,
        "frame.protocols",
        "vxlan.vni",
        "ip.src",
        "ip.dst",
        "eth.src",
        "ip.checksum.status",
        "udp.checksum.status",
        "icmp.checksum_bad",
        "tcp.checksum.status",
        "tcp.options.mss_val",
        "_ws.expert.severity",
    )
    assert [row[:5] for row in rows] == [
        [
            "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:icmp:data",
            "1",
            f"{NODE_A},{POD_A}",
            f"{NODE_B},{POD_B}",
            f"02:00:7f:00:00:0b,{POD_A_MAC}",
        ],
        [
            "eth:ethertype:ip:udp:vxlan:eth:ethertype:ip:tcp",
            "1",
            f"{NODE_B},{POD_B}",
            f"{NODE_A},{POD_A}",
            f"02:00:7f:00:00:0c,{POD_B_MAC}",
        ],
    ]
    # Every checksum tshark checks is good, no bad-ICMP flag, MSS read from the options.
    icmp_row, tcp_row = rows
    assert icmp_row[5:8] == [f"{GOOD},{GOOD}", GOOD, ""]
    assert tcp_row[5:7] == [f"{GOOD},{GOOD}", GOOD] and tcp_row[8:10] == [GOOD, "1410"]
    # Expert info at most "chat" (TCP's handshake notes), never a warning or an error.
    assert all(int(level) < EXPERT_WARNING for row in rows for level in filter(None, row[10].split(",")))


def test_tshark_sees_a_bad_checksum(tmp_path, tshark):
    # The status checks above mean something: a corrupted header checksum is reported bad.
    raw = bytearray(ipv4.encode(_echo_request()))
    raw[10] ^= 0xFF
    capture = tmp_path / "bad.pcap"
    with capture.open("wb") as out:
        pcap.PcapWriter(out, pcap.LinkType.RAW).write(0.0, raw)
    assert tshark(capture, "ip.checksum.status") == [[BAD]]


def test_tshark_reads_raw_ipv4_capture(tmp_path, tshark):
    capture = tmp_path / "raw.pcap"
    with capture.open("wb") as out:
        pcap.PcapWriter(out, pcap.LinkType.RAW).write(1700000000.0, ipv4.encode(_echo_request()))
    assert tshark(capture, "frame.protocols", "ip.src", "ip.dst", "icmp.type", "ip.checksum.status") == [
        ["raw:ip:icmp:data", POD_A, POD_B, "8", GOOD]
    ]
