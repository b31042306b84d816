"""A virtual pod's stack against the Linux kernel's own TCP, UDP and ICMP, over a TUN device (root)."""

from __future__ import annotations

import sys
import textwrap

import pytest
from podnet.nodeagent.pods.virtual.client import Completed, Failed, PingResult, UdpReply
from support.kernel_peer import KERNEL_IP, POD_IP

pytestmark = pytest.mark.root


def python(peer, script: str):
    return peer.spawn(sys.executable, "-c", textwrap.dedent(script))


def test_kernel_curl_reads_hostname_and_clientip(kernel_peer):
    code, out, err = kernel_peer.wait(
        kernel_peer.spawn("curl", "-sS", "-m", "10", f"http://{POD_IP}/hostname")
    )
    assert (code, out) == (0, b"virtual"), err
    code, out, err = kernel_peer.wait(
        kernel_peer.spawn("curl", "-sS", "-m", "10", f"http://{POD_IP}/clientip")
    )
    assert code == 0 and out.decode().startswith(f"{KERNEL_IP}:"), err
    code, out, _ = kernel_peer.wait(
        kernel_peer.spawn("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{POD_IP}/missing")
    )
    assert out == b"404"


def test_kernel_sees_rst_and_port_unreachable_from_closed_ports(kernel_peer):
    process = python(
        kernel_peer,
        f"""
        import socket
        tcp = socket.socket()
        tcp.settimeout(5)
        try:
            tcp.connect(("{POD_IP}", 9))
        except ConnectionRefusedError:
            print("tcp refused")
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.settimeout(5)
        udp.connect(("{POD_IP}", 5000))
        udp.send(b"hello")
        try:
            udp.recv(100)
        except ConnectionRefusedError:
            print("udp refused")
        """,
    )
    code, out, err = kernel_peer.wait(process)
    assert (code, out.split()) == (0, [b"tcp", b"refused", b"udp", b"refused"]), err


def test_kernel_echo_of_a_megabyte_with_loss_both_ways(kernel_peer):
    kernel_peer.drop_rate = 0.05
    process = python(
        kernel_peer,
        f"""
        import random, socket, threading
        data = b"~" + random.Random(1).randbytes(1_000_000)
        s = socket.create_connection(("{POD_IP}", 80), timeout=60)
        received = bytearray()
        def read():
            while chunk := s.recv(65536):
                received.extend(chunk)
        reader = threading.Thread(target=read)
        reader.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        reader.join()
        print(len(received), bytes(received) == data)
        """,
    )
    code, out, err = kernel_peer.wait(process, timeout=90)
    assert (code, out.split()) == (0, [b"1000001", b"True"]), err
    assert kernel_peer.dropped > 0


def test_pod_fetches_from_a_kernel_http_server(kernel_peer, tmp_path):
    (tmp_path / "hello.txt").write_text("from the kernel side\n")
    kernel_peer.spawn(
        sys.executable, "-m", "http.server", "8000", "--bind", KERNEL_IP, "--directory", str(tmp_path)
    )
    for _ in range(50):  # until the server listens: before that the kernel refuses, as it should
        outcome = kernel_peer.finish(
            kernel_peer.pod.http_get(f"http://{KERNEL_IP}:8000/hello.txt", kernel_peer.now())
        )
        if isinstance(outcome, Completed):
            break
        assert outcome.reason == "connection refused"
        kernel_peer.pump_for(0.1)
    assert outcome.result.status == 200 and outcome.result.body == b"from the kernel side\n"


def test_pod_connect_to_a_closed_kernel_port_is_refused(kernel_peer):
    outcome = kernel_peer.finish(kernel_peer.pod.connect(KERNEL_IP, 9, kernel_peer.now()))
    assert outcome == Failed(outcome.op, "connection refused")


def test_pings_both_ways(kernel_peer):
    outcome = kernel_peer.finish(kernel_peer.pod.ping(KERNEL_IP, kernel_peer.now(), count=2, interval=0.2))
    assert isinstance(outcome.result, PingResult) and outcome.result.received == 2
    process = python(
        kernel_peer,
        f"""
        import socket, struct
        def checksum(data):
            total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
            total = (total >> 16) + (total & 0xFFFF)
            return ~(total + (total >> 16)) & 0xFFFF
        body = b"kernel ping!"
        header = struct.pack("!BBHHH", 8, 0, 0, 0x4242, 1)
        header = struct.pack("!BBHHH", 8, 0, checksum(header + body), 0x4242, 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.settimeout(5)
        s.sendto(header + body, ("{POD_IP}", 0))
        while True:
            packet, source = s.recvfrom(2048)
            icmp = packet[(packet[0] & 0x0F) * 4:]
            if icmp[0] == 0:
                print(source[0], struct.unpack("!H", icmp[4:6])[0] == 0x4242, icmp[8:] == body)
                break
        """,
    )
    code, out, err = kernel_peer.wait(process)
    assert (code, out.split()) == (0, [POD_IP.encode(), b"True", b"True"]), err


def test_udp_both_ways(kernel_peer):
    python(
        kernel_peer,
        f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("{KERNEL_IP}", 7000))
        data, peer = s.recvfrom(2048)
        s.sendto(data.upper(), peer)
        """,
    )
    for _ in range(50):
        outcome = kernel_peer.finish(
            kernel_peer.pod.udp_exchange(KERNEL_IP, 7000, b"shout", kernel_peer.now(), timeout=0.5)
        )
        if isinstance(outcome, Completed):
            break
        kernel_peer.pump_for(0.1)
    assert outcome.result == UdpReply(b"SHOUT", f"{KERNEL_IP}:7000")
    process = python(
        kernel_peer,
        f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(5)
        s.sendto(b"hostname", ("{POD_IP}", 81))
        print(s.recvfrom(2048)[0].decode())
        """,
    )
    code, out, err = kernel_peer.wait(process)
    assert (code, out.strip()) == (0, b"virtual"), err
