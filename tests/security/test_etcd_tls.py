"""etcd answers only the API server (issue 23, item 1).

`podnet up --store etcd` runs etcd as kubeadm does: TLS for clients and peers, `--client-cert-auth` with etcd's
own CA, and the API server connecting with a client certificate from it. Against a real cluster so started:
etcdctl without a client certificate — over TLS, over plain HTTP, or with a certificate from the cluster CA
(which signs users' certificates) — reads nothing; with the API server's certificate it reads what the API
wrote; and the API works end to end over that store.
"""

from __future__ import annotations

import datetime
import os
import subprocess

import aiohttp
from support.etcd import etcd_program
from support.local_cluster import eventually, pod_on

from podnet import pki
from podnet.cluster import credentials, etcd_credentials, topology

PREFIX = "127.0.160"


def etcdctl(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([etcd_program("etcdctl", "etcd-client"), f"--endpoints={endpoint}", "--dial-timeout=2s", "--command-timeout=3s",
                           *args], capture_output=True, text=True, timeout=30, env={**os.environ, "ETCDCTL_API": "3"})


async def test_etcd_refuses_every_client_without_the_api_servers_certificate(local_cluster, tmp_path):
    etcd_program()
    etcd_program("etcdctl", "etcd-client")
    cluster = await local_cluster(PREFIX, nodes=1, store="etcd")
    home, host = cluster.home, cluster.topo.host("etcd")
    endpoint = f"https://{host}:{cluster.topo.etcd_port}"
    ca = str(etcd_credentials.ca_file(home))
    cert, key = (str(path) for path in etcd_credentials.client_files(home))

    # The API works end to end over the store: a pod is scheduled, run and reported by its node.
    await cluster.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "marker", "namespace": "default"},
                          "data": {"written": "through the API"}})
    await cluster.create(pod_on("web", "default", "node-1"))
    await cluster.wait_running("default", "role=web", 1)

    allowed = etcdctl(endpoint, f"--cacert={ca}", f"--cert={cert}", f"--key={key}", "get", "/registry", "--prefix",
                      "--keys-only")
    assert allowed.returncode == 0, allowed.stderr
    keys = allowed.stdout.split()
    assert "/registry/configmaps/default/marker" in keys and "/registry/pods/default/web" in keys

    # etcdctl only times out (etcd ends the handshake and the client retries); etcd's log says why.
    no_certificate = etcdctl(endpoint, f"--cacert={ca}", "get", "/registry", "--prefix", "--keys-only")
    assert no_certificate.returncode != 0 and no_certificate.stdout == ""
    assert "tls: client didn't provide a certificate" in _etcd_log(cluster)

    plain = etcdctl(f"http://{host}:{cluster.topo.etcd_port}", "get", "/registry", "--prefix", "--keys-only")
    assert plain.returncode != 0 and plain.stdout == ""
    assert "tls: first record does not look like a TLS handshake" in _etcd_log(cluster)

    # A certificate the cluster CA signed (as it signs every kubectl user's) is no key to etcd.
    user_cert, user_key = tmp_path / "user.crt", tmp_path / "user.key"
    _cluster_signed(home, user_cert, user_key)
    other_ca = etcdctl(endpoint, f"--cacert={ca}", f"--cert={user_cert}", f"--key={user_key}", "get", "/registry",
                       "--prefix", "--keys-only")
    assert other_ca.returncode != 0 and other_ca.stdout == ""
    assert "x509: certificate signed by unknown authority" in _etcd_log(cluster)

    # Nor does anything get written behind the API server's back.
    forged = etcdctl(endpoint, f"--cacert={ca}", "put", "/registry/configmaps/default/marker", "forged")
    assert forged.returncode != 0
    marker = await cluster.client.get("configmaps", "marker", "default")
    assert marker["data"] == {"written": "through the API"}

    # etcd's health stays observable without credentials, and says nothing else; etcd refused no one else.
    (member,) = topology.etcd_members(cluster.topo)
    metrics_url = f"http://{cluster.topo.host('etcd')}:{member.metrics_port}"
    assert await eventually(lambda: _healthy(metrics_url), 10, "etcd /health over plain HTTP")
    assert "incompatible key usage" not in _etcd_log(cluster)


def _etcd_log(cluster) -> str:
    return cluster.state.log_path("etcd").read_text(errors="replace")


def _cluster_signed(home, cert_path, key_path) -> None:
    directory = credentials.pki_dir(home)
    ca = pki.KeyPair((directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes())
    pair = pki.make_client(ca, "kube-apiserver-etcd-client", [], datetime.datetime.now(datetime.UTC))
    cert_path.write_bytes(pair.cert_pem)
    key_path.write_bytes(pair.key_pem)


async def _healthy(url: str) -> bool:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/health") as response:
        return response.status == 200 and "true" in await response.text()
