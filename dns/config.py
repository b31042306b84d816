"""How the cluster DNS process is configured."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from podnet.kubeconfig import ClientTls


def default_port() -> int:
    """53 when we may bind it (root), else 5353."""
    return 53 if os.geteuid() == 0 else 5353


def parse_upstream(text: str) -> tuple[str, int]:
    """`IP`, `IP:PORT` or `[IPv6]:PORT` to (ip, port); ValueError when it is neither."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad upstream {text!r}: expected [IPv6]:PORT")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, port_text = text.split(":")
        port = int(port_text)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"bad upstream port in {text!r}")
    return host, port


@dataclass(frozen=True, slots=True)
class DnsConfig:
    address: str = "127.0.0.1"
    port: int = 53
    # Where the records come from: an API server, or (without one) a file of manifests.
    server: str | None = None
    token: str | None = None
    tls: ClientTls | None = None  # the API server's CA (and our certificate)
    fallbacks: tuple[str, ...] = ()  # the cluster's other API servers, tried when `server` does not answer
    objects_file: Path | None = None
    upstreams: tuple[tuple[str, int], ...] = ()
    zone: str = "cluster.local"
    ttl: int = 5
    # /healthz and /metrics on `address`; None serves neither.
    metrics_port: int | None = 9153
    # Register a pod in kube-system that the kube-dns Service selects and its node agent relays here.
    register: bool = True
    replica: str | None = None  # labels this replica's pods; default <address>-<port>
    service_namespace: str = "kube-system"
    service_name: str = "kube-dns"
    cluster_ip: str = "10.96.0.10"
    forward_timeout: float = 2.0
