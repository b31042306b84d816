"""The real kubectl (on PATH) against real API servers, through kubeconfigs written for them.

`kubectl_server` (per module): an API server without controllers on 127.0.65.10, a SQLite store, and a
`default` namespace, serving HTTPS with a certificate from its own CA and taking client certificates
from it; the kubeconfig carries that CA and an admin client certificate (CN admin, O system:masters),
as the one `podnet up` writes. Its `.kubectl(*args)` runs kubectl with that kubeconfig (`.kubectl_env()`)
and returns the CompletedProcess; `.podnet(*args)` runs podnet's CLI against the same server.

`podnet_up(home, prefix, nodes)`: a cluster started by the CLI itself, `podnet up`, as a user starts one, and
stopped by `podnet down` afterwards.

`Kubectl(cluster.home)`, for a `local_cluster` or a `podnet_up` home: the kubeconfig `podnet up` wrote, or another user with a
client certificate from the cluster CA. `.run(*args, user=None, input=None)` (`user`: (name, groups)),
`.arun` (the same from a coroutine), `.popen(*args)`, `.in_terminal(shell_line)` (under `script`, on a
pseudo-terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from podnet import kubeconfig, pki
from podnet.cluster import credentials
from support.processes import REPO, end, free_tcp_port, read_log, spawn_module, wait_ready

HOST = "127.0.65.10"
PODNET = [sys.executable, "-m", "podnet"]


def podnet_environment() -> dict[str, str]:
    """This environment without the variables that would point podnet or kubectl at another cluster."""
    return {k: v for k, v in os.environ.items() if k not in ("PODNET_SERVER", "PODNET_TOKEN", "KUBECONFIG")}


@contextlib.contextmanager
def podnet_up(home: Path, prefix: str, nodes: int, extra_args: Sequence[str] = ()) -> Iterator[Path]:
    up = subprocess.run([*PODNET, "up", "--nodes", str(nodes), "--prefix", prefix, "--lb-pool", f"{prefix}.128/26",
                         "--home", str(home), *extra_args], capture_output=True, text=True, timeout=180,
                        env=podnet_environment())
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield home
    finally:
        subprocess.run([*PODNET, "down", "--home", str(home)], capture_output=True, timeout=120,
                       env=podnet_environment())


# Without kubectl the tests that drive it skip and say why, except under CI=true, where they run and fail
# (as the etcd tests do without etcd): CI must run them.
KUBECTL_MISSING = shutil.which("kubectl") is None and os.environ.get("CI") != "true"

class KubectlServer:
    def __init__(self, directory: Path, host: str = HOST, extra_args: Sequence[str] = ()):
        self.directory = directory
        self.port = free_tcp_port(host)
        self.url = f"https://{host}:{self.port}"
        now = datetime.datetime.now(datetime.UTC)
        ca = self.ca = pki.make_ca(now)  # tests issue other users' client certificates from it
        serving = pki.make_serving(ca, [host], now)
        admin = pki.make_client(ca, "admin", ["system:masters"], now)
        files = {"ca.crt": ca.cert_pem, "apiserver.crt": serving.cert_pem, "apiserver.key": serving.key_pem}
        for name, data in files.items():
            (directory / name).write_bytes(data)
            (directory / name).chmod(0o600)
        self.ca_file = directory / "ca.crt"
        self.kubeconfig = directory / "kubeconfig"
        self.kubeconfig.write_text(kubeconfig.render(self.url, ca.cert_pem, "admin", cert_pem=admin.cert_pem,
                                                     key_pem=admin.key_pem))
        self.kubeconfig.chmod(0o600)
        self.log_path = directory / "apiserver.log"
        args = ["--host", host, "--port", str(self.port), "--store", f"sqlite:///{directory / 'store.db'}",
                "--no-controllers", "--tls-cert", str(directory / "apiserver.crt"),
                "--tls-key", str(directory / "apiserver.key"), "--client-ca-file", str(self.ca_file), *extra_args]
        self.process = spawn_module("podnet.apiserver", args, self.log_path, directory)
        wait_ready(self.process, self._ready, "the API server", lambda: read_log(self.log_path))

    def _ready(self) -> bool:
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file))
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1, context=context) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def kubectl_env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=str(self.kubeconfig), HOME=str(self.directory))

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["kubectl", *args], input=input, capture_output=True, text=True, env=self.kubectl_env(),
                              timeout=60)

    def podnet(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONPATH=str(REPO), PODNET_HOME=str(self.directory))
        return subprocess.run([sys.executable, "-m", "podnet", *args, "--kubeconfig", str(self.kubeconfig)],
                              capture_output=True, text=True, env=env, timeout=60)

    def stop(self) -> None:
        end(self.process)


@contextlib.contextmanager
def running_kubectl_server(directory: Path, host: str = HOST) -> Iterator[KubectlServer]:
    """A KubectlServer with its `default` namespace, stopped afterwards."""
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is not on PATH; these tests drive the real kubectl")
    server = KubectlServer(directory, host)
    try:
        created = server.kubectl("create", "namespace", "default")
        assert created.returncode == 0, created.stderr
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kubectl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubectlServer]:
    with running_kubectl_server(tmp_path_factory.mktemp("kubectl")) as server:
        yield server


def _text(done: subprocess.CompletedProcess[bytes]) -> subprocess.CompletedProcess[str]:
    return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                       done.stderr.decode(errors="replace"))


@dataclass
class Kubectl:
    home: Path

    @property
    def admin(self) -> Path:
        return self.home / "kubeconfig"

    def kubeconfig_of(self, user: str, groups: tuple[str, ...]) -> Path:
        """A kubeconfig for the admin's server and CA with a client certificate for `user` in `groups`."""
        path = self.home / f"{user}.kubeconfig"
        if not path.exists():
            directory = credentials.pki_dir(self.home)
            ca = pki.KeyPair((directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes())
            certificate = pki.make_client(ca, user, groups, datetime.datetime.now(datetime.UTC))
            admin = kubeconfig.load(self.admin)
            path.write_text(kubeconfig.render(admin.server, admin.tls.ca_pem, user,
                                              cert_pem=certificate.cert_pem, key_pem=certificate.key_pem))
        return path

    def argv(self, *args: str, user: tuple[str, tuple[str, ...]] | None = None) -> list[str]:
        config = self.kubeconfig_of(*user) if user else self.admin
        return ["kubectl", "--kubeconfig", str(config), *args]

    def run(self, *args: str, user: tuple[str, tuple[str, ...]] | None = None, input: bytes | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return _text(subprocess.run(self.argv(*args, user=user), input=input, capture_output=True, timeout=timeout))

    async def arun(self, *args: str, **options: object) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, *args, **options)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def in_terminal(self, shell_line: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`shell_line` (naming kubectl with the admin's kubeconfig as $KUBECTL) run by `script` on a pseudo-
        terminal, as a user at a terminal runs it; what the terminal showed comes back as stdout."""
        argv = ["script", "-qec", shell_line.replace("$KUBECTL", " ".join(self.argv())), "/dev/null"]
        # The user types nothing, and does not hang up either: script's input stays open until it ends.
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            try:
                stdout, stderr = process.stdout.read(), process.stderr.read()
                process.wait(timeout)
            finally:
                process.kill()
        return _text(subprocess.CompletedProcess(argv, process.returncode, stdout, stderr))
