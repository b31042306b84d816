"""A real API server process (`python -m podnet.apiserver`) on 127.0.0.1, on a free port.

`api_server` (per test): a SQLite store in tmp_path, controllers as by default, and a token file with an
admin token. `api_server_etcd`: the same over the `etcd_server` fixture. `make_api_server` is a
factory for other options: `make_api_server(store_url=None, controllers=False, extra_args=(),
tls=(cert, key))`.

Each yields an `ApiServerProcess`: `.url`, `.token` (admin), `.tokens` (every token by role name),
`.store_url`, `.kill()` (SIGKILL), `.start()` (again, same port and store), `.stop()` (SIGTERM).
`api_server_module` is one server without controllers shared by a test module.
Every process is killed at teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_START_TIMEOUT = 20.0

# token -> (user, groups); written as kube-apiserver's token CSV.
TOKENS = {
    "admin": ("admin-token", "alice", "system:masters"),
    "viewer": ("view-token", "victor", "view"),
    "editor": ("edit-token", "eddie", "edit:team-a"),
    "nobody": ("nobody-token", "nora", ""),
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ApiServerProcess:
    def __init__(
        self,
        directory: Path,
        store_url: str,
        *,
        controllers: bool,
        extra_args: Sequence[str] = (),
        tls: tuple[Path, Path] | None = None,
    ):
        self.directory = directory
        self.tls = tls
        self.store_url = store_url
        self.controllers = controllers
        self.extra_args = list(extra_args)
        self.port = _free_port()
        self.token_file = directory / "tokens.csv"
        self.token_file.write_text(
            "".join(f'{token},{user},{user}-uid,"{groups}"\n' for token, user, groups in TOKENS.values())
        )
        self.tokens = {role: token for role, (token, _, _) in TOKENS.items()}
        self.token = self.tokens["admin"]
        self.log_path = directory / f"apiserver-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context that trusts the server's own certificate (None without TLS)."""
        if self.tls is None:
            return None
        return ssl.create_default_context(cafile=str(self.tls[0]))

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the API server is already running")
        args = [
            sys.executable, "-m", "podnet.apiserver",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--store", self.store_url, "--token-file", str(self.token_file),
            *(() if self.controllers else ("--no-controllers",)),
            *(("--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])) if self.tls else ()),
            *self.extra_args,
        ]
        env = dict(os.environ, PYTHONPATH=str(REPO), PODNET_HOME=str(self.directory))
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API server exited with {self.process.returncode}: {self.log()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=1, context=self.ssl_context()) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the API server was not ready within {_START_TIMEOUT}s: {self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits until the process is gone."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: the graceful shutdown."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None


def _factory(root: Path) -> tuple[Callable[..., ApiServerProcess], list[ApiServerProcess]]:
    started: list[ApiServerProcess] = []

    def make(
        store_url: str | None = None,
        *,
        controllers: bool = False,
        extra_args: Sequence[str] = (),
        tls: tuple[Path, Path] | None = None,
    ) -> ApiServerProcess:
        directory = root / f"apiserver-{len(started)}"
        directory.mkdir()
        server = ApiServerProcess(
            directory,
            store_url or f"sqlite:///{directory / 'store.db'}",
            controllers=controllers,
            extra_args=extra_args,
            tls=tls,
        )
        started.append(server)
        server.start()
        return server

    return make, started


@pytest.fixture
def make_api_server(tmp_path: Path) -> Iterator[Callable[..., ApiServerProcess]]:
    make, started = _factory(tmp_path)
    try:
        yield make
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def api_server(make_api_server: Callable[..., ApiServerProcess]) -> ApiServerProcess:
    return make_api_server(controllers=True)


@pytest.fixture(scope="module")
def api_server_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServerProcess]:
    """One server without controllers shared by a module's tests (each test uses its own namespace)."""
    make, started = _factory(tmp_path_factory.mktemp("apiserver"))
    try:
        yield make()
    finally:
        for server in started:
            server.kill()


@pytest.fixture
def api_server_etcd(make_api_server: Callable[..., ApiServerProcess], etcd_server) -> ApiServerProcess:
    return make_api_server(etcd_server.url, controllers=True)


def kubernetes_client(server: ApiServerProcess, token: str | None = None):
    """An official kubernetes ApiClient for `server` with `token` (none: anonymous)."""
    from kubernetes import client

    config = client.Configuration()
    config.host = server.url
    if server.tls is not None:
        config.ssl_ca_cert = str(server.tls[0])
    if token is not None:
        config.api_key = {"BearerToken": token}
        config.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(config)


def sample_pod(name: str, **labels: str) -> dict:
    """A minimal valid Pod body with one named container port."""
    return {
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "web", "image": "agnhost:2.39", "ports": [{"name": "http", "containerPort": 8080}]}]},
    }
