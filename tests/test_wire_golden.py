"""Golden bytes: real frames from the Linux kernel decode to the expected objects and re-encode exactly.

Captured with tests/data/wire/capture_golden.py (kernel 6.18, tshark 4.0): two network namespaces joined
by a veth pair (underlay 192.168.77.1 <-> 192.168.77.2), each with a kernel `vxlan` device (VNI 1, UDP
4789) holding 10.244.1.2 (A, MAC 02:00:0a:f4:01:02) or 10.244.2.3 (B, MAC 02:00:0a:f4:02:03); transmit
checksum offload off so checksums are complete. A's kernel sent ARP, a ping-socket echo request, UDP to
a closed port and a TCP connect; B's kernel answered. `tshark -i wg-b -F pcap -w` captured the underlay;
each constant is one whole underlay frame (outer Ethernet/IPv4/UDP/VXLAN, then the pod frame), with
tshark's summary line above it.
"""

import pytest
from podnet.overlay.wire import arp, ethernet, icmp, ipv4, tcp, udp, vxlan
from podnet.overlay.wire.arp import ArpOp, ArpPacket
from podnet.overlay.wire.ethernet import EtherType
from podnet.overlay.wire.icmp import IcmpEcho, ICMPType, IcmpUnreachable, UnreachableCode
from podnet.overlay.wire.ipv4 import IPProtocol
from podnet.overlay.wire.tcp import TcpFlags, TcpSegment
from podnet.overlay.wire.udp import UdpDatagram

NODE_A, NODE_B = "192.168.77.1", "192.168.77.2"
NODE_A_MAC, NODE_B_MAC = "66:d2:6a:13:b5:8f", "3a:da:05:a9:af:08"
POD_A, POD_B = "10.244.1.2", "10.244.2.3"
POD_A_MAC, POD_B_MAC = "02:00:0a:f4:01:02", "02:00:0a:f4:02:03"

# ARP: Who has 10.244.2.3? Tell 10.244.1.2
ARP_REQUEST = (
    "3ada05a9af0866d26a13b58f08004500004e652000004011fa2ac0a84d01c0a84d02e15112b5003a9c390800000000000100ff"
    "ffffffffff02000af401020806000108000604000102000af401020af401020000000000000af40203"
)
# ARP: 10.244.2.3 is at 02:00:0a:f4:02:03
ARP_REPLY = (
    "66d26a13b58f3ada05a9af0808004500004e1bdc00004011436fc0a84d02c0a84d01e15112b5003a7e4a08000000000001000"
    "2000af4010202000af402030806000108000604000202000af402030af4020302000af401020af40102"
)
# ICMP: Echo (ping) request  id=0xa279, seq=1/256, ttl=64
ECHO_REQUEST = (
    "3ada05a9af0866d26a13b58f080045000059652100004011fa1ec0a84d01c0a84d02e3f912b50045bf7308000000000001000"
    "2000af4020302000af40102080045000027c39a400040015e4f0af401020af4020308001b65a2790001706f646e65742d6563"
    "686f"
)
# ICMP: Echo (ping) reply    id=0xa279, seq=1/256, ttl=64 (request in 10)
ECHO_REPLY = (
    "66d26a13b58f3ada05a9af080800450000591bdd000040114363c0a84d02c0a84d01e3f912b50045bf7308000000000001000"
    "2000af4010202000af40203080045000027e29c000040017f4d0af402030af4010200002365a2790001706f646e65742d6563"
    "686f"
)
# UDP: 40001 → 9 Len=12
UDP_TO_CLOSED_PORT = (
    "3ada05a9af0866d26a13b58f08004500005a652200004011fa1cc0a84d01c0a84d02bc0b12b50046007208000000000001000"
    "2000af4020302000af40102080045000028a244400040117f940af401020af402039c4100090014cc4a68656c6c6f20706f64"
    "6e6574"
)
# ICMP: Destination unreachable (Port unreachable)
PORT_UNREACHABLE = (
    "66d26a13b58f3ada05a9af080800450000761bde000040114345c0a84d02c0a84d01e3f912b50062bf3908000000000001000"
    "2000af4010202000af40203080045c00044e29d000040017e6f0af402030af401020303160f0000000045000028a244400040"
    "117f940af401020af402039c4100090014cc4a68656c6c6f20706f646e6574"
)
# TCP: 40002 → 8080 [SYN] Seq=0 Win=64860 Len=0 MSS=1410 SACK_PERM TSval=2137904778 TSecr=0 WS=1024
TCP_SYN = (
    "3ada05a9af0866d26a13b58f08004500006e654000004011f9eac0a84d01c0a84d02b2f112b5005a096d08000000000001000"
    "2000af4020302000af4010208004500003c9616400040068bb90af401020af402039c421f909d180b3500000000a002fd5c77"
    "cd0000020405820402080a7f6dd68a000000000103030a"
)
# TCP: 8080 → 40002 [SYN, ACK] Seq=0 Ack=1 Win=64308 Len=0 MSS=1410 SACK_PERM TSval=2917060665
#      TSecr=2137904778 WS=1024
TCP_SYN_ACK = (
    "66d26a13b58f3ada05a9af0808004500006e1c2100004011430ac0a84d02c0a84d018b6112b5005a30fd08000000000001000"
    "2000af4010202000af4020308004500003c00004000400621d00af402030af401021f909c42c180a7279d180b36a012fb3493"
    "230000020405820402080aadded0397f6dd68a0103030a"
)
# TCP: 40002 → 8080 [ACK] Seq=1 Ack=1 Win=65536 Len=0 TSval=2137904778 TSecr=2917060665
TCP_ACK = (
    "3ada05a9af0866d26a13b58f080045000066654100004011f9f1c0a84d01c0a84d02b2f112b50052097508000000000001000"
    "2000af4020302000af401020800450000349617400040068bc00af401020af402039c421f909d180b36c180a7288010004"
    "0bcb500000101080a7f6dd68aadded039"
)

A_TO_B = (POD_B_MAC, POD_A_MAC, NODE_A, NODE_B, NODE_B_MAC, NODE_A_MAC)
B_TO_A = (POD_A_MAC, POD_B_MAC, NODE_B, NODE_A, NODE_A_MAC, NODE_B_MAC)

SYN_SEQ, SYN_ACK_SEQ = 2635598645, 3246434087

# (frame, direction, outer IPv4 identification, outer UDP source port, inner frame dst override, inner
#  payload: the ARP packet, or (inner IPv4 fields, transport object))
CASES = {
    "arp-request": (
        ARP_REQUEST,
        A_TO_B,
        0x6520,
        57681,
        "ff:ff:ff:ff:ff:ff",
        ArpPacket(ArpOp.REQUEST, POD_A_MAC, POD_A, "00:00:00:00:00:00", POD_B),
    ),
    "arp-reply": (
        ARP_REPLY,
        B_TO_A,
        0x1BDC,
        57681,
        None,
        ArpPacket(ArpOp.REPLY, POD_B_MAC, POD_B, POD_A_MAC, POD_A),
    ),
    "echo-request": (
        ECHO_REQUEST,
        A_TO_B,
        0x6521,
        58361,
        None,
        (
            dict(identification=0xC39A),
            IcmpEcho(ICMPType.ECHO_REQUEST, 0, 0xA279, 1, b"podnet-echo"),
        ),
    ),
    "echo-reply": (
        ECHO_REPLY,
        B_TO_A,
        0x1BDD,
        58361,
        None,
        (
            # Linux answers echo without DF.
            dict(identification=0xE29C, dont_fragment=False),
            IcmpEcho(ICMPType.ECHO_REPLY, 0, 0xA279, 1, b"podnet-echo"),
        ),
    ),
    "udp": (
        UDP_TO_CLOSED_PORT,
        A_TO_B,
        0x6522,
        48139,
        None,
        (dict(identification=0xA244), UdpDatagram(40001, 9, b"hello podnet")),
    ),
    "port-unreachable": (
        PORT_UNREACHABLE,
        B_TO_A,
        0x1BDE,
        58361,
        None,
        (
            # Linux sends errors as internetwork control (DSCP CS6) and quotes the whole short datagram.
            dict(identification=0xE29D, dont_fragment=False, dscp=48),
            IcmpUnreachable(
                UnreachableCode.PORT,
                bytes.fromhex(UDP_TO_CLOSED_PORT)[64:],
            ),
        ),
    ),
    "tcp-syn": (
        TCP_SYN,
        A_TO_B,
        0x6540,
        45809,
        None,
        (
            dict(identification=0x9616),
            TcpSegment(
                40002,
                8080,
                SYN_SEQ,
                0,
                TcpFlags.SYN,
                64860,
                mss=1410,
                window_scale=10,
                sack_permitted=True,
                timestamps=(2137904778, 0),
            ),
        ),
    ),
    "tcp-syn-ack": (
        TCP_SYN_ACK,
        B_TO_A,
        0x1C21,
        35681,
        None,
        (
            dict(identification=0),
            TcpSegment(
                8080,
                40002,
                SYN_ACK_SEQ,
                SYN_SEQ + 1,
                TcpFlags.SYN | TcpFlags.ACK,
                64308,
                mss=1410,
                window_scale=10,
                sack_permitted=True,
                timestamps=(2917060665, 2137904778),
            ),
        ),
    ),
    "tcp-ack": (
        TCP_ACK,
        A_TO_B,
        0x6541,
        45809,
        None,
        (
            dict(identification=0x9617),
            TcpSegment(
                40002,
                8080,
                SYN_SEQ + 1,
                SYN_ACK_SEQ + 1,
                TcpFlags.ACK,
                64,
                timestamps=(2137904778, 2917060665),
            ),
        ),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_kernel_frame_decodes_and_reencodes(name):
    frame_hex, direction, outer_id, outer_sport, inner_dst, expected = CASES[name]
    raw = bytes.fromhex(frame_hex)
    pod_dst_mac, pod_src_mac, node_src, node_dst, node_dst_mac, node_src_mac = direction

    outer = ethernet.decode(raw)
    assert (outer.dst, outer.src, outer.ethertype) == (node_dst_mac, node_src_mac, EtherType.IPV4)
    outer_ip = ipv4.decode(outer.payload)
    # The kernel's VXLAN sends the outer header without DF, TTL 64.
    assert outer_ip == ipv4.IPv4Packet(
        node_src, node_dst, IPProtocol.UDP, outer_ip.payload, identification=outer_id, dont_fragment=False
    )
    datagram = udp.decode(outer_ip.payload, node_src, node_dst)
    assert (datagram.src_port, datagram.dst_port) == (outer_sport, vxlan.PORT)
    vni, inner_raw = vxlan.decode(datagram.payload)
    assert vni == 1

    inner = ethernet.decode(inner_raw)
    assert (inner.dst, inner.src) == (inner_dst or pod_dst_mac, pod_src_mac)
    if isinstance(expected, ArpPacket):
        assert inner.ethertype is EtherType.ARP
        assert arp.decode(inner.payload) == expected
        assert arp.encode(expected) == inner.payload
    else:
        ip_fields, transport = expected
        assert inner.ethertype is EtherType.IPV4
        inner_ip = ipv4.decode(inner.payload)
        pod_src, pod_dst = (POD_A, POD_B) if direction is A_TO_B else (POD_B, POD_A)
        assert inner_ip == ipv4.IPv4Packet(pod_src, pod_dst, inner_ip.protocol, inner_ip.payload, **ip_fields)
        assert ipv4.encode(inner_ip) == inner.payload
        if isinstance(transport, TcpSegment):
            assert inner_ip.protocol is IPProtocol.TCP
            assert tcp.decode(inner_ip.payload, pod_src, pod_dst) == transport
            assert tcp.encode(transport, pod_src, pod_dst) == inner_ip.payload
        elif isinstance(transport, UdpDatagram):
            assert inner_ip.protocol is IPProtocol.UDP
            assert udp.decode(inner_ip.payload, pod_src, pod_dst) == transport
            assert udp.encode(transport, pod_src, pod_dst) == inner_ip.payload
        else:
            assert inner_ip.protocol is IPProtocol.ICMP
            assert icmp.decode(inner_ip.payload) == transport
            assert icmp.encode(transport) == inner_ip.payload

    # Every layer re-encodes to exactly the bytes the kernel sent.
    assert ethernet.encode(inner) == inner_raw
    assert vxlan.encode(vni, inner_raw) == datagram.payload
    assert udp.encode(datagram, node_src, node_dst) == outer_ip.payload
    assert ipv4.encode(outer_ip) == outer.payload
    assert ethernet.encode(outer) == raw


def test_port_unreachable_quotes_the_udp_datagram():
    # The quoted packet is A's UDP datagram itself, as the kernel received it.
    udp_packet = ipv4.decode(ethernet.decode(bytes.fromhex(UDP_TO_CLOSED_PORT)[50:]).payload)
    message = icmp.decode(ipv4.decode(ethernet.decode(bytes.fromhex(PORT_UNREACHABLE)[50:]).payload).payload)
    assert ipv4.decode(message.original) == udp_packet
    # podnet quotes only header + 8 bytes, which is a prefix of what Linux quoted.
    assert icmp.port_unreachable(message.original).original == message.original[:28]
