"""The real kubectl against a `local_cluster`, over TLS with bearer tokens (kubectl sends credentials only
over TLS, and trusts only the CA it is given).

`kubectl_front(cluster)` starts a second API server over the cluster's etcd, on HTTPS with a self-signed
certificate for 127.0.0.1 and the test token file (`support.apiserver.TOKENS`: an admin, a view-only
user, ...), presenting the cluster's kubelet client token to the agents; it returns a `Kubectl` whose
kubeconfig names that server, its certificate and the admin's token.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from support.apiserver import ApiServerProcess


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "serving.crt", directory / "serving.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


@dataclass
class Kubectl:
    server: ApiServerProcess
    kubeconfig: Path

    def run(self, *args: str, token: str | None = None, input: bytes | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`kubectl ARGS` (as the admin, or as the user of `token`)."""
        command = [shutil.which("kubectl") or "kubectl", "--kubeconfig", str(self.kubeconfig),
                   *(("--token", token) if token else ()), *args]
        done = subprocess.run(command, input=input, capture_output=True, timeout=timeout)
        return subprocess.CompletedProcess(done.args, done.returncode, done.stdout.decode(errors="replace"),
                                           done.stderr.decode(errors="replace"))

    async def arun(self, *args: str, **options: object) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(self.run, *args, **options)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def in_terminal(self, shell_line: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """`shell_line` (naming kubectl with this kubeconfig as $KUBECTL) run by `script` on a pseudo-
        terminal, as a user at a terminal runs it; what the terminal showed comes back as stdout."""
        kubectl = f"kubectl --kubeconfig {self.kubeconfig}"
        argv = ["script", "-qec", shell_line.replace("$KUBECTL", kubectl), "/dev/null"]
        # The user types nothing, and does not hang up either: script's input stays open until it ends.
        with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
            try:
                stdout = process.stdout.read()
                stderr = process.stderr.read()
                process.wait(timeout)
            finally:
                process.kill()
        return subprocess.CompletedProcess(argv, process.returncode, stdout.decode(errors="replace"),
                                           stderr.decode(errors="replace"))


def write_kubeconfig(path: Path, server: ApiServerProcess) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": server.url, "certificate-authority": str(server.tls[0])}}],
        "users": [{"name": "admin", "user": {"token": server.token}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def kubectl_front(cluster, make_api_server: Callable[..., ApiServerProcess], directory: Path,
                  extra_args: Sequence[str] = ()) -> Kubectl:
    assert cluster.topo.store == "etcd", "a second API server shares the cluster's store: etcd"
    server = make_api_server(cluster.topo.store_url, tls=self_signed_certificate(directory),
                             extra_args=("--kubelet-token-file", str(cluster.topo.kubelet_token_file), *extra_args))
    return Kubectl(server, write_kubeconfig(directory / "kubeconfig", server))
