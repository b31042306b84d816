"""The kubelet API's certificates, issued by `podnet up` from the cluster CA after the other credentials
(podnet/cluster/credentials.py), as kubeadm issues them:

| file (under `<home>/pki/`)               | what                                                               |
|-------------------------------------------|--------------------------------------------------------------------|
| `kubelet.crt`, `kubelet.key`              | the agents' serving certificate, for every node address            |
| `apiserver-kubelet-client.crt`, `.key`    | what the API server presents to them (CN kube-apiserver-kubelet-client) |
| `ingress-kubelet-client.crt`, `.key`      | the ingress controller's, for port-forwarding into pods (CN system:podnet:ingress) |

The agents verify client certificates against the cluster CA (`ca.crt`), the API server verifies theirs
against it too. Every file is its owner's alone from its creation.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

from podnet import pki
from podnet.cluster import credentials

# kubeadm's name for it; the kubelet API admits it (and cluster administrators, system:masters).
CLIENT_USER = "kube-apiserver-kubelet-client"
CLIENT_GROUPS = ("system:masters",)
# The ingress controller reaches pods' ports through the kubelets, and may do nothing else there.
INGRESS_USER = "system:podnet:ingress"


def serving_files(home: Path) -> tuple[Path, Path]:
    return credentials.pki_dir(home) / "kubelet.crt", credentials.pki_dir(home) / "kubelet.key"


def client_files(home: Path) -> tuple[Path, Path]:
    directory = credentials.pki_dir(home)
    return directory / "apiserver-kubelet-client.crt", directory / "apiserver-kubelet-client.key"


def ingress_client_files(home: Path) -> tuple[Path, Path]:
    directory = credentials.pki_dir(home)
    return directory / "ingress-kubelet-client.crt", directory / "ingress-kubelet-client.key"


def issue(home: Path, node_addresses: Iterable[str], now: datetime.datetime) -> None:
    """Signs both with the CA that credentials.issue made in `home`."""
    directory = credentials.pki_dir(home)
    ca = pki.KeyPair((directory / "ca.crt").read_bytes(), (directory / "ca.key").read_bytes())
    for (cert, key), pair in (
        (serving_files(home), pki.make_serving(ca, list(node_addresses), now, common_name="kubelet")),
        (client_files(home), pki.make_client(ca, CLIENT_USER, CLIENT_GROUPS, now)),
        (ingress_client_files(home), pki.make_client(ca, INGRESS_USER, (), now)),
    ):
        credentials.replace_secret(cert, pair.cert_pem)
        credentials.replace_secret(key, pair.key_pem)
