"""The API server as a process: TLS, graceful shutdown, the in-process controllers' loopback access."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client
from support.apiserver import kubernetes_client


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_serves_the_official_client_and_the_controllers(make_api_server, certificate):
    server = make_api_server(tls=certificate, controllers=True)
    assert server.url.startswith("https://")
    core = client.CoreV1Api(kubernetes_client(server, server.token))
    core.create_namespace({"metadata": {"name": "secure"}})
    assert core.read_namespace("secure").metadata.name == "secure"
    assert {"default", "kube-system"} <= wait_for_namespaces(core, {"default", "kube-system"}), server.log()[-2000:]


def wait_for_namespaces(core: client.CoreV1Api, wanted: set[str]) -> set[str]:
    deadline = time.monotonic() + 15
    names: set[str] = set()
    while time.monotonic() < deadline and not wanted <= names:
        names = {n.metadata.name for n in core.list_namespace().items}
        time.sleep(0.2)
    return names


def test_sigterm_stops_the_server_promptly_even_with_open_watches(make_api_server):
    server = make_api_server()
    core = client.CoreV1Api(kubernetes_client(server, server.token))
    response = core.list_namespace(watch=True, _preload_content=False)
    process = server.process
    assert process is not None
    started = time.monotonic()
    server.stop()
    assert process.returncode == 0
    assert time.monotonic() - started < 8
    response.release_conn()


def test_the_controllers_reach_the_api_with_the_loopback_token(make_api_server):
    server = make_api_server(controllers=True)
    core = client.CoreV1Api(kubernetes_client(server, server.token))
    assert {"default", "kube-system"} <= wait_for_namespaces(core, {"default", "kube-system"}), server.log()[-2000:]
