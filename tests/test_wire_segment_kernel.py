"""Segmentation and coalescing against the kernel (root): a bulk TCP transfer as Linux's own GSO cuts it
(tests/data/wire/capture_tcp_run.py, captured with tshark) is joined by `coalesce` into super-packets, and
`tcp_segments` cuts those back into exactly the kernel's segments, byte for byte: sequence numbers, IP
ids, flags, checksums. tshark then checks the checksums of what we cut."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from podnet.overlay.wire.pcap import LinkType, PcapWriter
from podnet.overlay.wire.segment import coalesce, tcp_segments

CAPTURE_SCRIPT = Path(__file__).parent / "data" / "wire" / "capture_tcp_run.py"
SENDER = bytes([192, 168, 78, 1])

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def kernel_segments() -> list[bytes]:
    """The IPv4 packets the sender's kernel put on its veth that carry data."""
    reason = "needs root" if os.geteuid() != 0 else "needs tshark" if shutil.which("tshark") is None else None
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    result = subprocess.run([sys.executable, str(CAPTURE_SCRIPT)], capture_output=True, text=True, timeout=120,
                            check=True)
    packets = [bytes.fromhex(frame)[14:] for frame in json.loads(result.stdout)]
    return [p for p in packets if p[9] == 6 and p[12:16] == SENDER and len(p) > 20 + (p[32] >> 4) * 4]


def test_the_kernels_segments_join_and_cut_back_to_themselves(kernel_segments):
    assert sum(len(p) - 20 - (p[32] >> 4) * 4 for p in kernel_segments) == 256 * 1024
    joined = coalesce(kernel_segments)
    assert len(joined) < len(kernel_segments) // 4  # runs of segments, not a packet at a time
    assert max(len(item.packet) for item in joined) > 40_000
    again = [segment for item in joined for segment in (tcp_segments(item.packet, item.mss) if item.mss else
                                                         [item.packet])]
    assert again == kernel_segments


def test_tshark_finds_the_checksums_of_what_we_cut_good(kernel_segments, tshark, tmp_path):
    joined = coalesce(kernel_segments)
    capture = tmp_path / "cut.pcap"
    with capture.open("wb") as out:
        writer = PcapWriter(out, LinkType.RAW)
        for item in joined:
            for segment in tcp_segments(item.packet, item.mss or 1398):
                writer.write(0.0, segment)
    rows = tshark(capture, "ip.checksum.status", "tcp.checksum.status", "tcp.len")
    assert len(rows) == len(kernel_segments)
    assert {(ip, tcp) for ip, tcp, _ in rows} == {("1", "1")}  # 1: good
    assert sum(int(length) for _, _, length in rows) == 256 * 1024
