"""A real etcd server on free loopback ports with a temporary data dir.

`etcd_server` (per test) and `etcd_server_module` (per module) yield an `EtcdServer`: `.endpoint`
("127.0.0.1:PORT"), `.url` ("etcd://127.0.0.1:PORT"), `.kill()` (SIGKILL), `.start()` (again on the same
ports and data dir). The process is always killed at teardown. Without an `etcd` binary the tests are
skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.processes import end, free_tcp_port, read_log, spawn, wait_ready

PROGRESS_NOTIFY_INTERVAL = "500ms"


class EtcdServer:
    def __init__(self, binary: str, data_dir: Path, log_path: Path) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.log_path = log_path
        self.client_port = free_tcp_port()
        self.peer_port = free_tcp_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoint}"

    def start(self) -> None:
        """Starts etcd (again, on the same ports and data dir) and waits until it serves requests."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("etcd is already running")
        client = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        self.process = spawn(
            [
                self.binary,
                "--name=test",
                f"--data-dir={self.data_dir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=test={peer}",
                "--initial-cluster-state=new",
                # Idle watches hear of progress often enough for tests to see it.
                f"--experimental-watch-progress-notify-interval={PROGRESS_NOTIFY_INTERVAL}",
                "--log-level=error",
                "--logger=zap",
            ],
            self.log_path,
        )
        wait_ready(self.process, self._healthy, "etcd", lambda: read_log(self.log_path))

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.endpoint}/health", timeout=1) as response:
                return b'"true"' in response.read()
        except (urllib.error.URLError, OSError):
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits until the process is gone."""
        end(self.process)
        self.process = None


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
