"""Real cluster DNS processes (`python -m podnet.dns`) and real `dig` against them.

`dns_process` is a factory: `dns_process(*args)` starts one with `--address 127.0.0.1 --port 0
--metrics-port 0` plus `args`, waits for its "serving DNS" log line and returns a `DnsProcess` (`.port`,
`.metrics_port`, `.process`, `.kill()`). Every process it started is killed at teardown.
`run_dig(port, name, qtype, *options)` runs Debian's dig and returns a `DigResult`.
"""

from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

_START_TIMEOUT = 15.0


@dataclass
class DnsProcess:
    process: subprocess.Popen
    port: int
    metrics_port: int | None
    log_path: Path

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_dns(args: list[str], log_path: Path) -> DnsProcess:
    command = [sys.executable, "-m", "podnet.dns", "--address", "127.0.0.1", "--port", "0",
               "--metrics-port", "0", *args]
    log = open(log_path, "wb")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + _START_TIMEOUT
    selector = selectors.DefaultSelector()
    selector.register(process.stderr, selectors.EVENT_READ)
    buffered = b""
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(process.stderr.fileno(), 65536)
            if not chunk:
                break
            log.write(chunk)
            log.flush()
            buffered += chunk
            for line in buffered.split(b"\n"):
                if b'"serving DNS"' in line:
                    fields = json.loads(line)
                    _drain_in_background(process, log)
                    return DnsProcess(process, fields["port"], fields.get("metrics_port"), log_path)
        process.kill()
        process.wait(5)
        log.close()
        raise RuntimeError(f"podnet dns did not start: {buffered.decode(errors='replace')[-2000:]}")
    finally:
        selector.close()


def _drain_in_background(process: subprocess.Popen, log) -> None:
    """Keeps copying the process's stderr to its log file so that it never blocks on a full pipe."""
    import threading

    def copy() -> None:
        with log:
            for chunk in iter(lambda: process.stderr.read1(65536), b""):
                log.write(chunk)
                log.flush()

    threading.Thread(target=copy, daemon=True).start()


@pytest.fixture
def dns_process(tmp_path: Path) -> Iterator:
    started: list[DnsProcess] = []

    def start(*args: str) -> DnsProcess:
        dns = start_dns(list(args), tmp_path / f"dns-{len(started)}.log")
        started.append(dns)
        return dns

    try:
        yield start
    finally:
        for dns in started:
            dns.kill()


@dataclass
class DigResult:
    output: str
    status: str
    flags: set[str]
    answer: list[list[str]] = field(default_factory=list)
    authority: list[list[str]] = field(default_factory=list)
    additional: list[list[str]] = field(default_factory=list)
    transport: str = ""
    size: int = 0

    def values(self, rtype: str | None = None) -> list[str]:
        """The rdata of each answer record (of one type), as dig prints it."""
        return [" ".join(rr[4:]) for rr in self.answer if rtype is None or rr[3] == rtype]


def run_dig(port: int, name: str, qtype: str = "A", *options: str, server: str = "127.0.0.1") -> DigResult:
    if shutil.which("dig") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("dig (bind9-dnsutils) is not installed")
        pytest.skip("dig (bind9-dnsutils) is not installed")
    command = ["dig", f"@{server}", "-p", str(port), "+tries=1", "+time=2", "+nocookie", *options, name, qtype]
    output = subprocess.run(command, capture_output=True, text=True, timeout=20).stdout
    status = re.search(r"status: (\w+)", output)
    flags = re.search(r";; flags: ([\w ]*);", output)
    sections: dict[str, list[list[str]]] = {"ANSWER": [], "AUTHORITY": [], "ADDITIONAL": []}
    current = None
    for line in output.splitlines():
        heading = re.match(r";; (\w+) SECTION:", line)
        if heading:
            current = heading.group(1)
        elif not line.strip():
            current = None
        elif current in sections and not line.startswith(";"):
            sections[current].append(line.split())
    transport = re.search(r";; SERVER: .*\((UDP|TCP)\)", output)
    size = re.search(r"MSG SIZE\s+rcvd: (\d+)", output)
    return DigResult(
        output, status.group(1) if status else "", set(flags.group(1).split()) if flags else set(),
        sections["ANSWER"], sections["AUTHORITY"], sections["ADDITIONAL"],
        transport.group(1) if transport else "", int(size.group(1)) if size else 0,
    )
