"""Virtual pods' userspace stacks, joined in memory under a fake clock, packets through the real codecs."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.nodeagent.pods.virtual.agnhost import AgnhostTcp, udp_answer
from podnet.nodeagent.pods.virtual.client import (
    Completed,
    ConnectResult,
    Failed,
    Opened,
    PeerClosed,
    PingResult,
    Received,
    UdpReply,
    parse_http_url,
)
from podnet.nodeagent.pods.virtual.stack import ContainerPort, PodStack, parse_container_ports
from podnet.nodeagent.pods.virtual.tcp import MSS
from podnet.overlay.wire import arp, ethernet, icmp, ipv4, tcp, udp
from podnet.overlay.wire.ipv4 import IPProtocol
from podnet.overlay.wire.tcp import TcpFlags, TcpSegment
from support.virtual_link import POD_A_IP, POD_B_IP, Link, make_pod

from podnet.http1 import HttpResponse, parse_http_response


@pytest.fixture
def link() -> Link:
    return Link(make_pod("pod-a", POD_A_IP, seed=1), make_pod("pod-b", POD_B_IP, seed=2))


def http(link: Link, url: str) -> HttpResponse:
    outcome = link.finish(link.a, link.a.http_get(url, link.now))
    assert isinstance(outcome, Completed), outcome
    return outcome.result


def packet_to_b(protocol: IPProtocol, payload: bytes) -> bytes:
    return ipv4.encode(ipv4.IPv4Packet(POD_A_IP, POD_B_IP, protocol, payload))


# ---- agnhost over HTTP ---------------------------------------------------------------------------------


def test_http_hostname_clientip_echo_and_404(link):
    assert http(link, f"http://{POD_B_IP}/hostname").body == b"pod-b"
    clientip = http(link, f"http://{POD_B_IP}:8080/clientip").body.decode()
    ip, port = clientip.split(":")
    assert ip == POD_A_IP and 32768 <= int(port) <= 60999  # the client's own address: no NAT in between
    assert http(link, f"http://{POD_B_IP}/echo?msg=hello%20world").body == b"hello world"
    missing = http(link, f"http://{POD_B_IP}/nope")
    assert (missing.status, missing.body) == (404, b"404 page not found\n")


def test_http_env_lists_the_environment_of_the_ports_container(link):
    link.b.environments = {80: (("GREETING", "hello"), ("DB_PASSWORD", "s3cret"))}
    answer = http(link, f"http://{POD_B_IP}/env")
    assert (answer.status, answer.body) == (200, b"GREETING=hello\nDB_PASSWORD=s3cret\n")
    assert http(link, f"http://{POD_B_IP}:8080/env").body == b""  # a container with no variables


def test_connections_close_and_leave_no_socket_behind(link):
    http(link, f"http://{POD_B_IP}/hostname")
    link.run()  # past TIME_WAIT
    assert link.a.next_deadline() is None and link.b.next_deadline() is None
    assert link.a.poll(link.now) == [] and link.b.poll(link.now) == []


def test_non_http_bytes_are_echoed_100kb(link):
    data = random.Random(5).randbytes(100_000)
    op = link.a.open_tcp(POD_B_IP, 80, link.now)
    link.run(lambda: any(isinstance(e, Opened) for e in link.op_events(link.a, op)))
    opened = link.op_events(link.a, op)[0]
    assert opened.remote == f"{POD_B_IP}:80" and opened.local.startswith(f"{POD_A_IP}:")
    link.a.send(op, data, link.now)
    echoed = lambda: b"".join(e.data for e in link.op_events(link.a, op) if isinstance(e, Received))  # noqa: E731
    link.run(lambda: len(echoed()) >= len(data))
    assert echoed() == data
    link.a.close(op, link.now)
    assert link.finish(link.a, op) == Completed(op, None)
    assert isinstance(link.op_events(link.a, op)[-2], PeerClosed)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lossy_link_carries_http_and_a_100kb_echo(seed):
    link = Link(
        make_pod("pod-a", POD_A_IP, seed),
        make_pod("pod-b", POD_B_IP, seed + 100),
        loss=0.1,
        duplicate=0.05,
        reorder=0.2,
        seed=seed,
    )
    assert http(link, f"http://{POD_B_IP}/hostname").body == b"pod-b"
    data = random.Random(seed).randbytes(100_000)
    op = link.a.open_tcp(POD_B_IP, 80, link.now)
    link.run(lambda: bool(link.op_events(link.a, op)))
    link.a.send(op, data, link.now)
    link.a.close(op, link.now)
    assert link.finish(link.a, op) == Completed(op, None)
    echoed = b"".join(e.data for e in link.op_events(link.a, op) if isinstance(e, Received))
    assert echoed == data
    assert link.dropped > 0


def test_segments_respect_the_pod_mtu(link):
    sizes = []
    link.drop = lambda sender, packet: sizes.append(len(packet)) and False
    op = link.a.open_tcp(POD_B_IP, 80, link.now)
    link.run(lambda: bool(link.op_events(link.a, op)))
    link.a.send(op, bytes(50_000), link.now)
    link.run()
    assert max(sizes) == 1450 == 20 + 20 + MSS


# ---- TCP refusals, retransmission, timeouts ---------------------------------------------------------


def test_rst_for_a_closed_port(link):
    outcome = link.finish(link.a, link.a.connect(POD_B_IP, 9999, link.now))
    assert outcome == Failed(outcome.op, "connection refused")
    syn = TcpSegment(40000, 9999, 123, 0, TcpFlags.SYN, 65535, mss=1410)
    [answer] = link.b.receive(packet_to_b(IPProtocol.TCP, tcp.encode(syn, POD_A_IP, POD_B_IP)), 0.0)
    header = ipv4.decode(answer)
    reset = tcp.decode(header.payload, header.src, header.dst)
    assert (header.src, header.dst) == (POD_B_IP, POD_A_IP)
    assert reset.flags == TcpFlags.RST | TcpFlags.ACK and reset.ack == 124 and reset.dst_port == 40000


def test_connect_succeeds_and_reports_both_ends(link):
    outcome = link.finish(link.a, link.a.connect(POD_B_IP, 8080, link.now))
    assert isinstance(outcome.result, ConnectResult) and outcome.result.remote == f"{POD_B_IP}:8080"


def test_lost_request_is_retransmitted(link):
    lost = []

    def drop(sender, packet):
        header = ipv4.decode(packet)
        if sender is link.a and header.protocol == IPProtocol.TCP and b"GET /hostname" in header.payload:
            if not lost:
                lost.append(link.now)
                return True
        return False

    link.drop = drop
    assert http(link, f"http://{POD_B_IP}/hostname").body == b"pod-b"
    assert lost and link.now > lost[0] + 0.2  # waited at least the minimum RTO


def test_http_to_a_black_hole_fails_at_its_timeout(link):
    link.drop = lambda sender, packet: True
    op = link.a.http_get(f"http://{POD_B_IP}/hostname", link.now, timeout=3.0)
    assert link.finish(link.a, op) == Failed(op, "timed out after 3s")
    assert link.now == pytest.approx(3.0)


# ---- ICMP and UDP -------------------------------------------------------------------------------------


def test_ping(link):
    outcome = link.finish(link.a, link.a.ping(POD_B_IP, link.now, count=3, interval=0.5))
    assert isinstance(outcome.result, PingResult)
    assert (outcome.result.transmitted, outcome.result.received) == (3, 3)
    assert all(rtt == pytest.approx(2 * link.delay) for rtt in outcome.result.rtts)


def test_echo_request_bytes_get_a_reply():
    pod = make_pod("pod-b", POD_B_IP)
    request = icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, 0x1234, 7, b"abcdefgh")
    [reply] = pod.receive(packet_to_b(IPProtocol.ICMP, icmp.encode(request)), 0.0)
    header = ipv4.decode(reply)
    assert (header.src, header.dst, header.ttl) == (POD_B_IP, POD_A_IP, 64)
    assert icmp.decode(header.payload) == icmp.echo_reply(request)


def test_ping_without_answer_fails(link):
    link.drop = lambda sender, packet: True
    op = link.a.ping(POD_B_IP, link.now, count=2)
    assert link.finish(link.a, op) == Failed(op, f"no reply from {POD_B_IP}")


@pytest.mark.parametrize(
    "payload, answer",
    [(b"hostname", b"pod-b"), (b"echo hi there", b"hi there"), (b"\x00\x01binary", b"\x00\x01binary")],
)
def test_udp_agnhost_answers(link, payload, answer):
    outcome = link.finish(link.a, link.a.udp_exchange(POD_B_IP, 81, payload, link.now))
    assert outcome.result == UdpReply(answer, f"{POD_B_IP}:81")


def test_udp_clientip(link):
    outcome = link.finish(link.a, link.a.udp_exchange(POD_B_IP, 81, b"clientip", link.now))
    ip, port = outcome.result.payload.decode().split(":")
    assert ip == POD_A_IP and 32768 <= int(port) <= 60999


def test_udp_to_a_closed_port_gets_icmp_port_unreachable(link):
    outcome = link.finish(link.a, link.a.udp_exchange(POD_B_IP, 5353, b"hostname", link.now))
    assert outcome == Failed(outcome.op, "connection refused (port unreachable)")
    datagram = udp.encode(udp.UdpDatagram(40001, 5353, b"x"), POD_A_IP, POD_B_IP)
    original = packet_to_b(IPProtocol.UDP, datagram)
    [answer] = link.b.receive(original, 0.0)
    header = ipv4.decode(answer)
    assert header.protocol == IPProtocol.ICMP and header.dst == POD_A_IP
    message = icmp.decode(header.payload)
    assert message == icmp.IcmpUnreachable(icmp.UnreachableCode.PORT, original[:28])


def test_udp_without_answer_times_out(link):
    link.drop = lambda sender, packet: True
    op = link.a.udp_exchange(POD_B_IP, 81, b"hostname", link.now, timeout=1.5)
    assert link.finish(link.a, op) == Failed(op, "timed out waiting for a reply")
    assert link.now == pytest.approx(1.5)


# ---- localhost inside the pod -------------------------------------------------------------------------


def test_localhost_between_container_ports_never_leaves_the_pod(link):
    link.drop = lambda sender, packet: pytest.fail(f"a localhost packet left the pod: {packet.hex()}")
    assert http(link, "http://127.0.0.1:8080/clientip").body.decode().startswith("127.0.0.1:")
    assert http(link, f"http://{POD_A_IP}:80/hostname").body == b"pod-a"
    assert link.finish(
        link.a, link.a.udp_exchange("127.0.0.1", 81, b"echo local", link.now)
    ).result.payload == (b"local")
    assert isinstance(link.finish(link.a, link.a.ping("127.0.0.1", link.now)), Completed)
    refused = link.finish(link.a, link.a.connect("127.0.0.1", 9, link.now))
    assert refused == Failed(refused.op, "connection refused")
    assert link.carried == 0


def test_loopback_destinations_from_the_link_are_dropped_and_host_sources_answered_over_it():
    pod = make_pod("pod-b", POD_B_IP)
    request = icmp.encode(icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, 1, 1, b""))
    to_loopback = ipv4.encode(ipv4.IPv4Packet(POD_A_IP, "127.0.0.1", IPProtocol.ICMP, request))
    assert pod.receive(to_loopback, 0.0) == [] and pod.counters["ip_martian"] == 1
    from_host = ipv4.encode(ipv4.IPv4Packet("127.0.0.1", POD_B_IP, IPProtocol.ICMP, request))
    [answer] = pod.receive(from_host, 0.0)  # a client on a 127.0.0.x host (NodePort): answered to the node
    assert (ipv4.decode(answer).src, ipv4.decode(answer).dst) == (POD_B_IP, "127.0.0.1")


def test_packets_for_another_address_or_malformed_are_counted_not_answered():
    pod = make_pod("pod-b", POD_B_IP)
    request = icmp.encode(icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, 1, 1, b""))
    elsewhere = ipv4.encode(ipv4.IPv4Packet(POD_A_IP, "10.244.2.99", IPProtocol.ICMP, request))
    bad_tcp = packet_to_b(IPProtocol.TCP, b"\x00" * 25)
    assert pod.receive(elsewhere, 0.0) == [] and pod.receive(b"\x45junk", 0.0) == []
    assert pod.receive(bad_tcp, 0.0) == []
    assert (pod.counters["ip_not_for_pod"], pod.counters["ip_malformed"], pod.counters["tcp_malformed"]) == (
        1,
        1,
        1,
    )


# ---- ARP, framing, ports --------------------------------------------------------------------------------


def test_pod_answers_arp_for_its_own_ip_only():
    pod = make_pod("pod-b", POD_B_IP)
    asked = arp.request("02:00:0a:f4:00:01", "10.244.2.1", POD_B_IP)
    reply = arp.decode(pod.answer_arp(arp.encode(asked)))
    assert (reply.op, reply.sender_ip, reply.sender_mac, reply.target_ip) == (
        arp.ArpOp.REPLY,
        POD_B_IP,
        pod.mac,
        "10.244.2.1",
    )
    assert pod.answer_arp(arp.encode(arp.request("02:00:0a:f4:00:01", "10.244.2.1", "10.244.2.1"))) is None
    assert pod.answer_arp(b"short") is None


def test_frames_go_to_the_gateway_mac():
    pod = make_pod("pod-a", POD_A_IP)
    frame = ethernet.decode(pod.to_frame(b"packet"))
    assert (frame.dst, frame.src, frame.ethertype, frame.payload) == (
        "02:00:0a:f4:00:01",
        pod.mac,
        ethernet.EtherType.IPV4,
        b"packet",
    )


def test_container_ports_accept_kubernetes_entries_pairs_and_ints():
    assert parse_container_ports(
        [
            {"containerPort": 80},
            {"containerPort": 53, "protocol": "UDP"},
            (9, "TCP"),
            8080,
            {"containerPort": 5, "protocol": "SCTP"},
        ]
    ) == {
        ContainerPort(80, IPProtocol.TCP),
        ContainerPort(53, IPProtocol.UDP),
        ContainerPort(9, IPProtocol.TCP),
        ContainerPort(8080, IPProtocol.TCP),
    }
    with pytest.raises(ValueError):
        parse_container_ports([0])


def test_pod_without_udp_port_refuses_udp():
    pod = PodStack("d/p", "d", POD_B_IP, "02:00:00:00:00:09", "02:00:0a:f4:00:01", [80], "p")
    datagram = udp.encode(udp.UdpDatagram(40001, 80, b"hostname"), POD_A_IP, POD_B_IP)
    [answer] = pod.receive(packet_to_b(IPProtocol.UDP, datagram), 0.0)
    assert isinstance(icmp.decode(ipv4.decode(answer).payload), icmp.IcmpUnreachable)


# ---- the pure pieces ------------------------------------------------------------------------------------


def test_agnhost_http_keeps_the_connection_alive_for_several_requests():
    server = AgnhostTcp("web-0", "10.0.0.1:5000")
    assert server.feed(b"GE").data == b""  # could still become a request line
    reply = server.feed(
        b"T /hostname HTTP/1.1\r\nHost: x\r\n\r\nGET /clientip HTTP/1.1\r\nConnection: close\r\n\r\n"
    )
    assert reply.close
    first, second = reply.data.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(b"\r\n\r\nweb-0") and second.endswith(b"\r\n\r\n10.0.0.1:5000")


def test_agnhost_udp_commands():
    assert udp_answer(b"hostname\n", "p", "c") == b"p"
    assert udp_answer(b"clientip", "p", "1.2.3.4:5") == b"1.2.3.4:5"
    assert udp_answer(b"echo x y", "p", "c") == b"x y"
    assert udp_answer(b"anything", "p", "c") == b"anything"


def test_http_url_and_response_parsing():
    assert parse_http_url("http://10.0.0.1:8080/echo?msg=a") == ("10.0.0.1", 8080, "/echo?msg=a")
    assert parse_http_url("10.0.0.1") == ("10.0.0.1", 80, "/")
    with pytest.raises(ValueError):
        parse_http_url("https://10.0.0.1/")
    with pytest.raises(ValueError):
        parse_http_url("http://my-service/")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert parse_http_response(chunked, at_eof=False).body == b"abcde"
    assert parse_http_response(b"HTTP/1.0 200 OK\r\n\r\nbody", at_eof=False) is None
    assert parse_http_response(b"HTTP/1.0 200 OK\r\n\r\nbody", at_eof=True).body == b"body"
    with pytest.raises(ValueError):
        parse_http_response(b"SSH-2.0-OpenSSH\r\n\r\n", at_eof=True)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.4),
    duplicate=st.floats(0.0, 0.2),
    reorder=st.floats(0.0, 0.4),
    size=st.integers(1, 20_000),
)
def test_random_loss_through_both_stacks_is_intact_or_a_reported_failure(
    seed, loss, duplicate, reorder, size
):
    link = Link(
        make_pod("pod-a", POD_A_IP, seed),
        make_pod("pod-b", POD_B_IP, seed + 1),
        loss=loss,
        duplicate=duplicate,
        reorder=reorder,
        seed=seed,
    )
    data = bytes([0x7E]) + random.Random(seed).randbytes(size - 1)  # "~" cannot start an HTTP method
    op = link.a.open_tcp(POD_B_IP, 80, link.now, timeout=30.0)
    link.run(lambda: bool(link.op_events(link.a, op)))
    first = link.op_events(link.a, op)[0]
    if isinstance(first, Failed):
        return
    link.a.send(op, data, link.now)
    link.a.close(op, link.now)
    outcome = link.finish(link.a, op)
    echoed = b"".join(e.data for e in link.op_events(link.a, op) if isinstance(e, Received))
    assert data.startswith(echoed)
    if isinstance(outcome, Completed):
        assert echoed == data
    else:
        assert outcome.reason in ("connection timed out", "connection reset by peer")


def test_agnhost_http_drops_bodies_unbuffered_and_refuses_huge_ones():
    server = AgnhostTcp("web-0", "10.0.0.1:5000")
    reply = server.feed(b"POST /hostname HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345")
    assert reply.data == b"" and not server._buffer  # the body's first half is read and dropped
    reply = server.feed(b"67890GET /clientip HTTP/1.1\r\n\r\n")
    assert reply.served == ("POST /hostname", "GET /clientip") and not reply.close
    huge = server.feed(b"POST / HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\nxx")
    assert huge.data.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n") and huge.close
    assert huge.refused == "http_body_too_large"
    negative = AgnhostTcp("web-0", "c").feed(b"POST / HTTP/1.1\r\nContent-Length: -5\r\n\r\n")
    assert negative.data.startswith(b"HTTP/1.1 400 Bad Request") and negative.close
    assert server.feed(b"more of the body").data == b""
