"""Captures real Linux frames for the wire golden-bytes tests (run as root: `python capture_golden.py`).

Two network namespaces joined by a veth pair (underlay 192.168.77.1 <-> .2), each with a kernel VXLAN
device (VNI 1, UDP 4789, MTU 1450) holding a pod-like address (10.244.1.2 and 10.244.2.3, one /16 L2
segment). IPv6 is off so that only the traffic below is captured. Transmit checksum offload is switched
off on every device (ETHTOOL_STXCSUM) so that captured TCP/UDP checksums are complete rather than left
for hardware. From namespace A the kernel then sends: an ARP request (answered by B), an ICMP echo
request on a ping socket (answered by B), a UDP datagram to a closed port (B answers ICMP port
unreachable), a TCP connect to a listener (SYN, SYN-ACK, ACK, then the FIN exchange). tshark captures the
underlay on B's veth; the script prints each captured frame as hex under tshark's one-line summary of
it. Everything created is deleted at the end, also on failure. `--json` prints the same as one JSON list
of {"summary", "hex"} (what tests/test_wire_kernel.py reads).
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUFFIX = str(os.getpid())
NS_A, NS_B = f"wiregold-a-{SUFFIX}", f"wiregold-b-{SUFFIX}"
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def sh(*args: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    return subprocess.run([*prefix, *args], check=check, capture_output=True, text=True, timeout=30)


def tx_checksum_off(ifname: str) -> None:
    """`ethtool -K IF tx off` through the ioctl, in the current namespace."""
    value = (ctypes.c_uint32 * 2)(ETHTOOL_STXCSUM, 0)
    ifreq = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), SIOCETHTOOL, ifreq)


def setup() -> None:
    sh("ip", "netns", "add", NS_A)
    sh("ip", "netns", "add", NS_B)
    for ns in (NS_A, NS_B):
        sh("sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1", ns=ns)
    sh("ip", "link", "add", "wg-a", "netns", NS_A, "type", "veth", "peer", "name", "wg-b", "netns", NS_B)
    for ns, dev, me, peer, pod, mac in [
        (NS_A, "wg-a", "192.168.77.1", "192.168.77.2", "10.244.1.2", "02:00:0a:f4:01:02"),
        (NS_B, "wg-b", "192.168.77.2", "192.168.77.1", "10.244.2.3", "02:00:0a:f4:02:03"),
    ]:
        sh("ip", "link", "set", "lo", "up", ns=ns)
        sh("ip", "addr", "add", f"{me}/24", "dev", dev, ns=ns)
        sh("ip", "link", "set", dev, "up", ns=ns)
        sh(
            "ip", "link", "add", "vx0", "address", mac, "mtu", "1450", "type", "vxlan", "id", "1",
            "dstport", "4789", "remote", peer, "local", me, "dev", dev, ns=ns,
        )  # fmt: skip
        sh("ip", "addr", "add", f"{pod}/16", "dev", "vx0", ns=ns)
        sh("ip", "link", "set", "vx0", "up", ns=ns)
        sh("sysctl", "-qw", "net.ipv4.ping_group_range=0 0", ns=ns)
        sh(sys.executable, __file__, "--tx-off", dev, "vx0", ns=ns)


def teardown() -> None:
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "del", ns, check=False)


TRAFFIC_A = r"""
import socket, time
ping = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
ping.sendto(bytes.fromhex("0800000000000001") + b"podnet-echo", ("10.244.2.3", 0))
ping.settimeout(3); ping.recvfrom(2048)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("10.244.1.2", 40001))
udp.sendto(b"hello podnet", ("10.244.2.3", 9))
time.sleep(0.2)
tcp = socket.create_connection(("10.244.2.3", 8080), timeout=3, source_address=("10.244.1.2", 40002))
time.sleep(0.2)
tcp.close()
time.sleep(0.2)
"""

LISTENER_B = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.244.2.3", 8080)); s.listen(); print("listening", flush=True); s.settimeout(10)
c, _ = s.accept(); c.settimeout(5); c.recv(10); c.close()
"""


def _wait_for_line(stream, expected: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            raise RuntimeError(f"process ended before printing {expected!r}")
        if expected in line:
            return
    raise RuntimeError(f"no {expected!r} within {timeout}s")


def _wait_for_file(path: Path, size: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} did not reach {size} bytes within {timeout}s")
        time.sleep(0.02)


def record(pcap: Path, capture_ns: str, interface: str, listener: tuple[str, str], traffic: tuple[str, str]) -> None:
    """Captures `interface` of namespace `capture_ns` into `pcap` with tshark while the program
    `listener` = (namespace, code) waits (it prints "listening" when ready) and `traffic` runs to its end."""
    tshark = subprocess.Popen(
        ["ip", "netns", "exec", capture_ns, "tshark", "-i", interface, "-F", "pcap", "-w", str(pcap)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    waiting = subprocess.Popen(
        ["ip", "netns", "exec", listener[0], sys.executable, "-c", listener[1]], stdout=subprocess.PIPE, text=True
    )
    try:
        _wait_for_line(tshark.stderr, "Capturing on", 20)
        _wait_for_file(pcap, 24, 10)  # the pcap file header: dumpcap has opened the interface
        # dumpcap says "Capturing on" a moment before its socket sees every frame: traffic sent at
        # once can lose its first ARP and ping
        time.sleep(0.3)
        _wait_for_line(waiting.stdout, "listening", 10)
        sh(sys.executable, "-c", traffic[1], ns=traffic[0])
        time.sleep(0.5)  # let tshark write what it has seen before it is told to stop
        tshark.send_signal(signal.SIGINT)  # tshark writes out what it has and exits
        tshark.wait(timeout=20)
    finally:
        for proc in (tshark, waiting):
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def capture() -> list[tuple[str, bytes]]:
    """(tshark summary, frame) for every frame captured on B's underlay during the traffic."""
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "underlay.pcap"
        record(pcap, NS_B, "wg-b", (NS_B, LISTENER_B), (NS_A, TRAFFIC_A))
        summary = subprocess.run(
            ["tshark", "-r", str(pcap), "-T", "fields", "-e", "_ws.col.Protocol", "-e", "_ws.col.Info"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        lines = [line.replace("\t", ": ", 1) for line in summary.splitlines()]
        return list(zip(lines, pcap_records(pcap.read_bytes()), strict=True))


def pcap_records(data: bytes) -> list[bytes]:
    """The packets of a classic little-endian microsecond pcap file (what tshark -F pcap writes)."""
    if data[:4] != bytes.fromhex("d4c3b2a1"):
        raise ValueError("not a little-endian pcap file")
    records, offset = [], 24
    while offset < len(data):
        captured_length = struct.unpack_from("<I", data, offset + 8)[0]
        records.append(data[offset + 16 : offset + 16 + captured_length])
        offset += 16 + captured_length
    return records


def main() -> None:
    if sys.argv[1:2] == ["--tx-off"]:
        for ifname in sys.argv[2:]:
            tx_checksum_off(ifname)
        return
    try:
        setup()
        frames = capture()
    finally:
        teardown()
    if sys.argv[1:2] == ["--json"]:
        print(json.dumps([{"summary": summary, "hex": frame.hex()} for summary, frame in frames]))
    else:
        for summary, frame in frames:
            print(f"# {summary}\n{frame.hex()}\n")


if __name__ == "__main__":
    main()
