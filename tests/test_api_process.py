"""The API server as a process: TLS, graceful shutdown, the in-process controllers' loopback access."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import msgpack
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from support.apiserver import kubernetes_client
from support.local_cluster import dns_query

from podnet import kubeconfig, pki


def test_tls_serves_the_official_client_with_the_ca_verified_and_the_controllers(make_api_server):
    server = make_api_server(controllers=True)
    assert server.url.startswith("https://")
    core = client.CoreV1Api(kubernetes_client(server, server.token))
    core.create_namespace({"metadata": {"name": "secure"}})
    assert core.read_namespace("secure").metadata.name == "secure"
    # The in-process controllers trust the server's own (CA-signed) certificate on the loopback.
    assert {"default", "kube-system"} <= wait_for_namespaces(core, {"default", "kube-system"}), server.log()[-2000:]


def _with_certificate(server, pair: pki.KeyPair):
    """An official client that proves who it is by a client certificate alone."""
    api = kubernetes_client(server)
    cert, key = server.directory / f"{pair.certificate.serial_number}.crt", server.directory / f"{pair.certificate.serial_number}.key"
    cert.write_bytes(pair.cert_pem)
    key.write_bytes(pair.key_pem)
    api.configuration.cert_file, api.configuration.key_file = str(cert), str(key)
    api.rest_client = type(api.rest_client)(api.configuration)
    return client.CoreV1Api(api)


def test_a_client_certificate_names_the_user_and_its_groups(make_api_server):
    server = make_api_server()
    admin = _with_certificate(server, server.client_certificate("root", ["system:masters"]))
    assert admin.create_namespace({"metadata": {"name": "roots"}}).metadata.name == "roots"
    viewer = _with_certificate(server, server.client_certificate("victor", ["view"]))
    assert viewer.read_namespace("roots").metadata.name == "roots"
    with pytest.raises(ApiException) as denied:
        viewer.create_namespace({"metadata": {"name": "victors"}})
    assert denied.value.status == 403
    assert 'User "victor" cannot create' in json.loads(denied.value.body)["message"]


def test_a_certificate_from_another_ca_or_an_unknown_token_is_a_401_status_in_the_negotiated_encoding(make_api_server):
    server = make_api_server()
    now = datetime.datetime.now(datetime.UTC)
    stranger = pki.make_client(pki.make_ca(now), "alice", ["system:masters"], now)
    context = server.ssl_context()
    kubeconfig.load_client_certificate(context, stranger.cert_pem, stranger.key_pem)
    for accept, decode in (("application/json", json.loads), ("application/msgpack", msgpack.unpackb)):
        request = urllib.request.Request(f"{server.url}/api/v1/namespaces", headers={"Accept": accept})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10, context=context)
        assert refused.value.code == 401 and refused.value.headers["Content-Type"].startswith(accept)
        status = decode(refused.value.read())
        assert (status["kind"], status["reason"], status["message"], status["code"]) == ("Status", "Unauthorized", "Unauthorized", 401)
    request = urllib.request.Request(f"{server.url}/api/v1/namespaces", headers={"Authorization": "Bearer guessed"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10, context=server.ssl_context())
    assert refused.value.code == 401


def test_plain_http_stays_possible_without_a_certificate(make_api_server):
    server = make_api_server(tls=False)
    assert server.url.startswith("http://")
    core = client.CoreV1Api(kubernetes_client(server, server.token))
    assert core.create_namespace({"metadata": {"name": "plain"}}).metadata.name == "plain"


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


def test_a_missing_or_bad_credential_file_stops_the_server_with_one_line(tmp_path):
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    now = datetime.datetime.now(datetime.UTC)
    serving = pki.make_serving(pki.make_ca(now), ["127.0.0.1"], now)
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    tls = ["--tls-cert", str(tmp_path / "tls.crt"), "--tls-key", str(tmp_path / "tls.key")]
    for args, message in (
        ([*tls, "--client-ca-file", str(bad)], f"error: --client-ca-file {bad}: not a PEM certificate bundle"),
        (["--token-file", str(tmp_path / "none.csv")], f"error: --token-file {tmp_path / 'none.csv'}: No such file or directory"),
        (["--tls-cert", str(bad), "--tls-key", str(tmp_path / "tls.key")], f"error: --tls-cert {bad} / --tls-key"),
    ):
        run = subprocess.run([sys.executable, "-m", "podnet", "apiserver", "--port", "0", "--store",
                              f"sqlite:///{tmp_path / 'store.db'}", *args], capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and run.stderr.startswith(message) and len(run.stderr.splitlines()) == 1, run.stderr


def test_a_component_takes_the_server_a_token_file_and_a_ca_file(api_server, dns_process, tmp_path):
    token = tmp_path / "token"
    token.write_text(api_server.token + "\n")
    dns = dns_process("--server", api_server.url, "--token-file", str(token), "--ca-file", str(api_server.ca_file),
                      "--no-register")
    deadline = time.monotonic() + 15
    while dns_query("127.0.0.1", dns.port, "kubernetes.default.svc.cluster.local") != ["10.96.0.1"]:
        assert time.monotonic() < deadline, dns.log()[-2000:]
        time.sleep(0.1)
    assert api_server.token not in Path(f"/proc/{dns.process.pid}/cmdline").read_text()
