"""Captures a TCP bulk transfer as the Linux kernel segments it (run as root: `python capture_tcp_run.py`),
for the segmentation and coalescing tests.

Two network namespaces joined by a veth pair (192.168.78.1 <-> .2, MTU 1450 as a pod's eth0, IPv6 off).
Transmit checksum offload is off on A's end, which also turns TSO off: the kernel's TCP builds super-packets
and its own GSO cuts them into segments with complete checksums before the device, where tshark sees them.
A sends 256 KB to a listener in B in one write; every frame on A's end is printed as one JSON list of hex
strings. Everything created is deleted at the end, also on failure.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from capture_golden import pcap_records, record, sh

SUFFIX = str(__import__("os").getpid())
NS_A, NS_B = f"tcprun-a-{SUFFIX}", f"tcprun-b-{SUFFIX}"
SIZE = 256 * 1024

LISTENER_B = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.168.78.2", 8080)); s.listen(); print("listening", flush=True); s.settimeout(10)
c, _ = s.accept(); c.settimeout(5)
while c.recv(1 << 16): pass
c.close()
"""

SENDER_A = r"""
import random, socket, time
c = socket.create_connection(("192.168.78.2", 8080), timeout=5)
c.sendall(random.Random(7).randbytes(%d))
time.sleep(0.3)
c.close()
""" % SIZE  # noqa: UP031 - the program's own text has braces


def setup() -> None:
    sh("ip", "netns", "add", NS_A)
    sh("ip", "netns", "add", NS_B)
    sh("ip", "link", "add", "tr-a", "netns", NS_A, "type", "veth", "peer", "name", "tr-b", "netns", NS_B)
    for ns, dev, me in ((NS_A, "tr-a", "192.168.78.1"), (NS_B, "tr-b", "192.168.78.2")):
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "addr", "add", f"{me}/24", "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "mtu", "1450", "up", ns=ns)
    sh(sys.executable, str(Path(__file__).with_name("capture_golden.py")), "--tx-off", "tr-a", ns=NS_A)


def teardown() -> None:
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "del", ns, check=False)


def capture() -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "run.pcap"
        record(pcap, NS_A, "tr-a", (NS_B, LISTENER_B), (NS_A, SENDER_A))
        return pcap_records(pcap.read_bytes())


def main() -> None:
    try:
        setup()
        frames = capture()
    finally:
        teardown()
    print(json.dumps([frame.hex() for frame in frames]))


if __name__ == "__main__":
    main()
