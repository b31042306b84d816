"""What a client needs to reach an API server, and the kubeconfig files that carry it.

A kubeconfig is read as kubectl reads it: the current context's cluster (`server`, `certificate-authority`
or `certificate-authority-data`, `insecure-skip-tls-verify`) and user (`token`, `tokenFile`,
`client-certificate(-data)`, `client-key(-data)`); file paths are relative to the kubeconfig's folder.
Private keys given as data never touch the disk: they reach OpenSSL through an anonymous memory file.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class KubeconfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class ClientTls:
    """The CA a server's certificate must chain to (None: the system's), and our own certificate, if any."""

    ca_pem: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    verify: bool = True

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem.decode() if self.ca_pem else None)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.cert_pem and self.key_pem:
            load_client_certificate(context, self.cert_pem, self.key_pem)
        return context


def load_client_certificate(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """OpenSSL reads a certificate chain only from a file: give it one that lives in memory alone."""
    fd = os.memfd_create("podnet-client-certificate", os.MFD_CLOEXEC)
    try:
        os.write(fd, cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        try:
            context.load_cert_chain(f"/proc/self/fd/{fd}")
        except ssl.SSLError as exc:
            raise KubeconfigError(f"client certificate and key do not load: {exc.reason or exc}") from None
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class Credentials:
    server: str
    token: str | None = None
    tls: ClientTls = field(default_factory=ClientTls)
    # The cluster's other API servers, tried when `server` does not answer (SERVERS_EXTENSION).
    fallbacks: tuple[str, ...] = ()


# A cluster entry's extension that lists every API server of a cluster with several. kubectl, which knows
# one `server` per cluster, passes over extensions it does not know (as it does minikube's `cluster_info`);
# podnet's own clients fail over along the list.
SERVERS_EXTENSION = "servers.podnet.io"


def read_token(path: str | Path) -> str:
    """A token file holds the token alone (surrounding whitespace ignored), as client-go's tokenFile."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise KubeconfigError(f"cannot read token file {path}: {exc.strerror}") from None
    if not token:
        raise KubeconfigError(f"token file {path} is empty")
    return token


def read_pem(path: str | Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KubeconfigError(f"cannot read {path}: {exc.strerror}") from None


def _data_or_file(section: dict, key: str, base: Path) -> bytes | None:
    """`key-data` (base64) wins over `key` (a path relative to the kubeconfig), as client-go has it."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise KubeconfigError(f"{key}-data is not base64") from None
    path = section.get(key)
    return read_pem(base / Path(path).expanduser()) if path else None


def load(path: str | Path) -> Credentials:
    """The credentials of the current context of the kubeconfig at `path`."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise KubeconfigError(f"no kubeconfig at {path}: start a cluster with `podnet up` or pass --server") from None
    except OSError as exc:
        raise KubeconfigError(f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise KubeconfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        contexts = {c["name"]: c["context"] for c in config.get("contexts") or []}
        context = contexts[config.get("current-context") or next(iter(contexts))]
        cluster = {c["name"]: c["cluster"] for c in config["clusters"]}[context["cluster"]]
        users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
        user = users.get(context.get("user"), {})
        server = str(cluster["server"])
        fallbacks = tuple(str(other) for other in _extension(cluster, SERVERS_EXTENSION).get("servers") or ()
                          if str(other) != server)
    except (KeyError, TypeError, StopIteration, AttributeError):
        raise KubeconfigError(f"{path}: no usable current context") from None
    base = path.parent
    try:
        token = user.get("token") or (read_token(base / user["tokenFile"]) if user.get("tokenFile") else None)
        tls = ClientTls(
            ca_pem=_data_or_file(cluster, "certificate-authority", base),
            cert_pem=_data_or_file(user, "client-certificate", base),
            key_pem=_data_or_file(user, "client-key", base),
            verify=not cluster.get("insecure-skip-tls-verify"),
        )
    except KubeconfigError as exc:
        raise KubeconfigError(f"{path}: {exc}") from None
    if bool(tls.cert_pem) != bool(tls.key_pem):
        raise KubeconfigError(f"{path}: client-certificate and client-key go together")
    return Credentials(server, token, tls, fallbacks)


def _extension(entry: dict, name: str) -> dict:
    """The named extension of a kubeconfig entry ({} if it has none)."""
    for named in entry.get("extensions") or ():
        if named.get("name") == name:
            return named.get("extension") or {}
    return {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render(server: str, ca_pem: bytes | None, user: str, *, token: str | None = None,
           cert_pem: bytes | None = None, key_pem: bytes | None = None, cluster: str = "podnet",
           fallbacks: tuple[str, ...] = ()) -> str:
    """A kubeconfig with one cluster, one user and one context, everything inline (kubeadm's admin.conf).
    `fallbacks`: the cluster's other API servers, listed with `server` in the SERVERS_EXTENSION."""
    cluster_entry: dict = {"server": server}
    if ca_pem:
        cluster_entry["certificate-authority-data"] = _b64(ca_pem)
    if fallbacks:
        cluster_entry["extensions"] = [{"name": SERVERS_EXTENSION, "extension": {"servers": [server, *fallbacks]}}]
    user_entry: dict = {}
    if cert_pem and key_pem:
        user_entry["client-certificate-data"] = _b64(cert_pem)
        user_entry["client-key-data"] = _b64(key_pem)
    if token:
        user_entry["token"] = token
    context = cluster
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": cluster_entry}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)
