"""MSS clamping of SYNs on their way into the tunnel: the option lowered with a checksum the codecs
verify, everything else (other segments, a smaller MSS, malformed options) left as it was."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st
from podnet.overlay.pipeline.model import Tunnel
from podnet.overlay.wire import ipv4, tcp
from podnet.overlay.wire.ipv4 import IPProtocol, IPv4Packet
from podnet.overlay.wire.mss import clamp_mss
from podnet.overlay.wire.tcp import TcpFlags, TcpSegment
from support.pipelines import N1, A, B, node, only

SRC, DST = "10.244.1.5", "10.244.2.7"


def _segment(flags: TcpFlags, **options) -> bytes:
    segment = TcpSegment(40000, 80, 1000, 0, flags, 65535, **options)
    return ipv4.encode(IPv4Packet(SRC, DST, IPProtocol.TCP, tcp.encode(segment, SRC, DST)))


def _mss(packet: bytes) -> int | None:
    return tcp.decode(ipv4.decode(packet).payload, SRC, DST).mss  # verifies both checksums


def test_a_syn_announcing_more_than_the_tunnel_carries_is_lowered():
    syn = _segment(TcpFlags.SYN, mss=1410, window_scale=7, sack_permitted=True, timestamps=(1, 0))
    clamped = clamp_mss(syn, 1330)
    assert _mss(clamped) == 1330
    decoded = tcp.decode(ipv4.decode(clamped).payload, SRC, DST)
    assert (decoded.window_scale, decoded.sack_permitted, decoded.timestamps) == (7, True, (1, 0))
    syn_ack = _segment(TcpFlags.SYN | TcpFlags.ACK, mss=1460)
    assert _mss(clamp_mss(syn_ack, 1330)) == 1330


def test_what_needs_no_clamping_is_the_same_object():
    for packet in (_segment(TcpFlags.SYN, mss=1200), _segment(TcpFlags.ACK), _segment(TcpFlags.SYN)):
        assert clamp_mss(packet, 1330) is packet
    udp_like = ipv4.encode(IPv4Packet(SRC, DST, IPProtocol.UDP, b"\x00" * 8))
    assert clamp_mss(udp_like, 1330) is udp_like


@given(st.binary(min_size=0, max_size=80))
def test_any_bytes_give_a_packet_back(data):
    clamp_mss(data, 1330)
    if len(data) >= 20:
        syn = bytearray(_segment(TcpFlags.SYN, mss=1410))
        syn[40:40 + len(data[:4])] = data[:4]  # mangle the options
        clamp_mss(bytes(syn), 1330)


def test_the_pipeline_clamps_syns_entering_a_tunnel_with_a_lowered_mtu():
    encrypted = node(replace(N1, mtu=1370), A)
    syn = ipv4.encode(IPv4Packet(A.ip, B.ip, IPProtocol.TCP, tcp.encode(
        TcpSegment(40000, 80, 1, 0, TcpFlags.SYN, 65535, mss=1410), A.ip, B.ip)))
    trace: list = []
    out = only(encrypted.from_pod(A, syn, 0.0, trace), Tunnel)
    inner = out.datagram[22:]  # past VXLAN and the inner Ethernet header
    assert tcp.decode(ipv4.decode(inner).payload, A.ip, B.ip).mss == 1330
    assert encrypted.counters["mss-clamped"] == 1
    assert [s.stage for s in trace].index("mss-clamp") < [s.stage for s in trace].index("vxlan-encap")
    plain = node(N1, A)
    out = only(plain.from_pod(A, syn, 0.0), Tunnel)
    assert tcp.decode(ipv4.decode(out.datagram[22:]).payload, A.ip, B.ip).mss == 1410
