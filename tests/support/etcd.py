"""A real etcd server on free loopback ports with a temporary data dir.

`etcd_server` (per test) and `etcd_server_module` (per module) yield an `EtcdServer`; `etcd_cluster`, three
members as an `EtcdCluster` (`.url` naming them all, `.members`, `.leader()`). An `EtcdServer` has: `.endpoint`
("127.0.0.1:PORT"), `.url` ("etcd://127.0.0.1:PORT"), `.kill()` (SIGKILL), `.start()` (again on the same
ports and data dir). The process is always killed at teardown. Without an `etcd` binary the tests are
skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import end, free_tcp_port, read_log, spawn, wait_ready

PROGRESS_NOTIFY_INTERVAL = "500ms"


class EtcdServer:
    def __init__(self, binary: str, data_dir: Path, log_path: Path, name: str = "test") -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.name = name
        self.client_port = free_tcp_port()
        self.peer_port = free_tcp_port()
        self.initial_cluster = f"{name}={self.peer_url}"  # a cluster's members name each other here
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> None:
        """Starts etcd (again, on the same ports and data dir) and waits until it serves requests."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("etcd is already running")
        client = f"http://{self.endpoint}"
        self.process = spawn(
            [
                self.binary,
                f"--name={self.name}",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={self.peer_url}",
                f"--initial-advertise-peer-urls={self.peer_url}",
                f"--initial-cluster={self.initial_cluster}",
                "--initial-cluster-state=new",
                # Idle watches hear of progress often enough for tests to see it.
                f"--experimental-watch-progress-notify-interval={PROGRESS_NOTIFY_INTERVAL}",
                # Elections in a few hundred milliseconds rather than seconds (loopback has no latency).
                "--heartbeat-interval=50",
                "--election-timeout=500",
                "--log-level=error",
                "--logger=zap",
            ],
            self.log_path,
        )

    def wait_ready(self) -> None:
        assert self.process is not None
        wait_ready(self.process, self._healthy, "etcd", lambda: read_log(self.log_path))

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as response:
                return b'"true"' in response.read()
        except (urllib.error.URLError, OSError):
            return False

    def is_leader(self) -> bool:
        """What the member itself says (its etcd_server_is_leader gauge); False when it does not answer."""
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/metrics", timeout=1) as response:
                return b"\netcd_server_is_leader 1" in response.read()
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits until the process is gone."""
        end(self.process)
        self.process = None


class EtcdCluster:
    """Members that know each other from the start; `.url` names them all, for the API server's --store."""

    def __init__(self, members: list[EtcdServer]) -> None:
        self.members = members
        initial = ",".join(f"{m.name}={m.peer_url}" for m in members)
        for member in members:
            member.initial_cluster = initial

    @property
    def url(self) -> str:
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    def start(self) -> None:
        for member in self.members:  # each waits for the others before it is healthy
            member.launch()
        for member in self.members:
            member.wait_ready()

    def leader(self, timeout: float = 10.0) -> EtcdServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for member in self.members:
                if member.process is not None and member.is_leader():
                    return member
            time.sleep(0.05)
        raise AssertionError(f"no etcd leader within {timeout}s")

    def kill(self) -> None:
        for member in self.members:
            member.kill()


def etcd_program(name: str = "etcd", package: str = "etcd-server") -> str:
    """The path of `name` (etcd, etcdctl); without it the test skips, or fails under CI=true."""
    binary = shutil.which(name)
    if binary is None:
        reason = f"{name} is not on PATH (Debian package {package})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must run the etcd tests", pytrace=False)
        pytest.skip(reason)
    return binary


def _running(directory: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(etcd_program(), directory / "etcd-data", directory / "etcd.log")
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    yield from _running(tmp_path)


@pytest.fixture(scope="module")
def etcd_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    yield from _running(tmp_path_factory.mktemp("etcd"))


@pytest.fixture
def etcd_cluster(tmp_path: Path) -> Iterator[EtcdCluster]:
    """Three members on loopback, elections in about half a second."""
    binary = etcd_program()
    cluster = EtcdCluster([EtcdServer(binary, tmp_path / f"etcd-{i}", tmp_path / f"etcd-{i}.log", name=f"member-{i}")
                           for i in range(3)])
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.kill()
