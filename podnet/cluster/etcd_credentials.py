"""etcd's certificates, issued by `podnet up --store etcd` (and `podnet compose credentials`) after the other
credentials (podnet/cluster/credentials.py), laid out as kubeadm lays them out:

| file (under `<home>/pki/`)              | what                                                                  |
|-----------------------------------------|-----------------------------------------------------------------------|
| `etcd/ca.crt`, `etcd/ca.key`            | etcd's own CA                                                         |
| `etcd/server.crt`, `.key`               | etcd's serving certificate, for its address and this machine's loopback |
| `etcd/peer.crt`, `.key`                 | for traffic between members (server and client use)                   |
| `apiserver-etcd-client.crt`, `.key`     | what the API server presents to etcd (CN kube-apiserver-etcd-client)  |

etcd runs with `--client-cert-auth` and trusts `etcd/ca.crt` alone: a client certificate from the cluster CA
(any user's, signed for kubectl) is no key to the store, and without a certificate from the etcd CA no one on
the machine — nor a pod through the host bridge — gets past the TLS handshake. Every file is its owner's
alone from its creation.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

from podnet import pki
from podnet.cluster import credentials

# kubeadm's names.
CA_NAME = "etcd-ca"
CLIENT_USER = "kube-apiserver-etcd-client"


def directory(home: Path) -> Path:
    return credentials.pki_dir(home) / "etcd"


def ca_file(home: Path) -> Path:
    return directory(home) / "ca.crt"


def server_files(home: Path) -> tuple[Path, Path]:
    return directory(home) / "server.crt", directory(home) / "server.key"


def peer_files(home: Path) -> tuple[Path, Path]:
    return directory(home) / "peer.crt", directory(home) / "peer.key"


def client_files(home: Path) -> tuple[Path, Path]:
    """The API server's client certificate and key."""
    return credentials.pki_dir(home) / "apiserver-etcd-client.crt", credentials.pki_dir(home) / "apiserver-etcd-client.key"


def issue(home: Path, addresses: Iterable[str], now: datetime.datetime) -> None:
    """A new etcd CA and the certificates it signs; `addresses`: where etcd listens (its certificates name
    them, and this machine's loopback names)."""
    names = [*addresses, *credentials.LOCAL_NAMES]
    ca = pki.make_ca(now, common_name=CA_NAME)
    etcd_dir = directory(home)
    etcd_dir.mkdir(mode=0o700, exist_ok=True)
    credentials.replace_secret(ca_file(home), ca.cert_pem)
    credentials.replace_secret(etcd_dir / "ca.key", ca.key_pem)
    for (cert, key), pair in (
        (server_files(home), pki.make_serving(ca, names, now, common_name="etcd-server", client_too=True)),
        (peer_files(home), pki.make_serving(ca, names, now, common_name="etcd-peer", client_too=True)),
        (client_files(home), pki.make_client(ca, CLIENT_USER, [], now)),
    ):
        credentials.replace_secret(cert, pair.cert_pem)
        credentials.replace_secret(key, pair.key_pem)
