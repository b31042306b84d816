"""A real API server process (`python -m podnet.apiserver`) on 127.0.0.1, on a free port, serving HTTPS
as `podnet up` starts it: a CA of its own, a serving certificate for 127.0.0.1 and localhost, client
certificates from that CA (`--client-ca-file`) and a token file.

`api_server` (per test): a SQLite store in tmp_path, controllers as by default. `api_server_etcd`: the same
over the `etcd_server` fixture. `make_api_server` is a factory for other options:
`make_api_server(store_url=None, controllers=False, extra_args=(), tls=True, host="127.0.0.1", port=None)`;
`tls=False` serves plain HTTP; `host` and `port` place it (several servers on one port need distinct hosts).

Each yields an `ApiServerProcess`: `.url`, `.token` (admin), `.tokens` (every token by role name),
`.kubeconfig` (the server, its CA and the admin token: what components take as `--kubeconfig`),
`.ca_file`, `.client()` (a podnet ApiClient as admin), `.client_certificate(user, groups)`, `.store_url`,
`.kill()` (SIGKILL), `.start()` (again, same port and store), `.stop()` (SIGTERM).
`api_server_module` is one server without controllers shared by a test module.
Every process is killed at teardown.
"""

from __future__ import annotations

import datetime
import signal
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from podnet import kubeconfig, pki
from podnet.client import ApiClient
from support.processes import end, free_tcp_port, read_log, spawn_module, wait_ready

# token -> (user, groups); written as kube-apiserver's token CSV.
TOKENS = {
    "admin": ("admin-token", "alice", "system:masters"),
    "viewer": ("view-token", "victor", "view"),
    "editor": ("edit-token", "eddie", "edit:team-a"),
    "nobody": ("nobody-token", "nora", ""),
}


class ApiServerProcess:
    def __init__(
        self,
        directory: Path,
        store_url: str,
        *,
        controllers: bool,
        extra_args: Sequence[str] = (),
        tls: bool = True,
        host: str = "127.0.0.1",
        port: int | None = None,
    ):
        self.directory = directory
        self.host = host
        self.store_url = store_url
        self.controllers = controllers
        self.extra_args = list(extra_args)
        self.port = port or free_tcp_port()
        self.token_file = directory / "tokens.csv"
        self.token_file.write_text(
            "".join(f'{token},{user},{user}-uid,"{groups}"\n' for token, user, groups in TOKENS.values())
        )
        self.tokens = {role: token for role, (token, _, _) in TOKENS.items()}
        self.token = self.tokens["admin"]
        self.ca: pki.KeyPair | None = None
        self.ca_file = directory / "ca.crt"
        if tls:
            now = datetime.datetime.now(datetime.UTC)
            self.ca = pki.make_ca(now)
            serving = pki.make_serving(self.ca, list(dict.fromkeys([host, "127.0.0.1", "localhost"])), now)
            self.ca_file.write_bytes(self.ca.cert_pem)
            (directory / "apiserver.crt").write_bytes(serving.cert_pem)
            (directory / "apiserver.key").write_bytes(serving.key_pem)
        self.kubeconfig = directory / "admin.kubeconfig"
        self.kubeconfig.write_text(kubeconfig.render(self.url, self.ca.cert_pem if self.ca else None, "alice",
                                                     token=self.token))
        self.log_path = directory / f"apiserver-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://{self.host}:{self.port}"

    @property
    def tls(self) -> kubeconfig.ClientTls | None:
        return kubeconfig.ClientTls(ca_pem=self.ca.cert_pem) if self.ca else None

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context that trusts the server's CA (None without TLS)."""
        return self.tls.context() if self.tls else None

    def client(self, token: str | None = None, **kwargs) -> ApiClient:
        """A podnet ApiClient with `token` (default: the admin's)."""
        return ApiClient(self.url, token or self.token, tls=self.tls, **kwargs)

    def client_certificate(self, user: str, groups: Sequence[str]) -> pki.KeyPair:
        assert self.ca is not None, "client certificates need TLS"
        return pki.make_client(self.ca, user, groups, datetime.datetime.now(datetime.UTC))

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the API server is already running")
        args = [
            "--host", self.host, "--port", str(self.port),
            "--store", self.store_url, "--token-file", str(self.token_file),
            *(() if self.controllers else ("--no-controllers",)),
            *(("--tls-cert", str(self.directory / "apiserver.crt"), "--tls-key", str(self.directory / "apiserver.key"),
               "--client-ca-file", str(self.ca_file)) if self.ca else ()),
            *self.extra_args,
        ]
        self.process = spawn_module("podnet.apiserver", args, self.log_path, self.directory)
        wait_ready(self.process, self._ready, "the API server", self.log)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1, context=self.ssl_context()) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log(self) -> str:
        return read_log(self.log_path)

    def kill(self) -> None:
        """SIGKILL, as a crash would; waits until the process is gone."""
        end(self.process)
        self.process = None

    def stop(self) -> None:
        """SIGTERM: the graceful shutdown."""
        end(self.process, signal.SIGTERM)
        self.process = None


def _factory(root: Path) -> tuple[Callable[..., ApiServerProcess], list[ApiServerProcess]]:
    started: list[ApiServerProcess] = []

    def make(
        store_url: str | None = None,
        *,
        controllers: bool = False,
        extra_args: Sequence[str] = (),
        tls: bool = True,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> ApiServerProcess:
        directory = root / f"apiserver-{len(started)}"
        directory.mkdir()
        server = ApiServerProcess(
            directory,
            store_url or f"sqlite:///{directory / 'store.db'}",
            controllers=controllers,
            extra_args=extra_args,
            tls=tls,
            host=host,
            port=port,
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
    """An official kubernetes ApiClient for `server` with `token` (none: anonymous), verifying the CA."""
    from kubernetes import client

    config = client.Configuration()
    config.host = server.url
    if server.ca is not None:
        config.ssl_ca_cert = str(server.ca_file)
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
