"""tshark (Debian) as a fixture: `tshark(capture, *fields)` reads a pcap file and returns, per packet, the
values of `fields` (several occurrences of a field, as the outer and inner IPv4 of a tunnelled packet,
joined by commas), with the IPv4, UDP and TCP checksums checked."""

import os
import shutil
import subprocess

import pytest


@pytest.fixture
def tshark():
    path = shutil.which("tshark")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("tshark is missing (Debian package tshark)")
        pytest.skip("tshark is not installed (Debian package tshark)")

    def read(capture, *fields, decode_as: tuple[str, ...] = ()):
        args = [path, "-r", str(capture), "-T", "fields", "-E", "separator=|", "-E", "aggregator=,"]
        for protocol in ("ip", "udp", "tcp"):  # ICMP checksums are always checked
            args += ["-o", f"{protocol}.check_checksum:TRUE"]
        for rule in decode_as:
            args += ["-d", rule]
        for field in fields:
            args += ["-e", field]
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=True)
        return [line.split("|") for line in result.stdout.splitlines()]

    return read
