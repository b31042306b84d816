"""The API server's configuration: one frozen value built by the CLI (or by tests) and passed to serve()."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from podnet.apiserver.election import Timings
from podnet.apiserver.serviceaddresses import parse_cidrs

# kube-apiserver's limit on a request body (--max-request-bytes defaults to 3 MiB for etcd's sake).
MAX_BODY_BYTES = 3 * 1024 * 1024
# The issuer kubeadm gives service-account tokens: the in-cluster name of the API server.
DEFAULT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def default_store_url() -> str:
    home = Path(os.environ.get("PODNET_HOME", Path.home() / ".podnet"))
    return f"sqlite:///{home / 'apiserver.db'}"


@dataclass(frozen=True, slots=True)
class ApiServerConfig:
    host: str = "127.0.0.1"
    port: int = 6443  # 0: any free port
    store_url: str = ""  # "" means default_store_url()
    token_file: str | None = None
    # What the API server presents to the kubelet API (exec, logs), and the CA the kubelets' certificates
    # chain to, as kube-apiserver's --kubelet-client-certificate, --kubelet-client-key,
    # --kubelet-certificate-authority.
    kubelet_client_certificate: str | None = None
    kubelet_client_key: str | None = None
    kubelet_certificate_authority: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    client_ca_file: str | None = None  # CA bundle that signs client certificates (CN = user, O = groups)
    # How the API server proves itself to etcd and knows etcd, as kube-apiserver's --etcd-certfile,
    # --etcd-keyfile, --etcd-cafile: with them an etcd store is reached over TLS.
    etcd_certfile: str | None = None
    etcd_keyfile: str | None = None
    etcd_cafile: str | None = None
    # Service-account tokens, as kube-apiserver's flags of the same names (apiserver/tokens/).
    service_account_signing_key_file: str | None = None
    service_account_key_files: tuple[str, ...] = ()
    service_account_issuer: str = DEFAULT_ISSUER
    api_audiences: tuple[str, ...] = ()  # empty: the issuer
    # What the controllers publish as every namespace's kube-root-ca.crt (kube-controller-manager's
    # --root-ca-file); "" : the client CA, which is the cluster CA when podnet up made the certificates.
    root_ca_file: str | None = None
    # The audit log (apiserver/audit/): nothing is recorded without both.
    audit_policy_file: str | None = None
    audit_log_path: str | None = None
    controllers: bool = True
    # kube-controller-manager's --leader-elect and its timings: with several API servers on one store, the
    # controllers of only one of them act.
    leader_elect: bool = True
    leader_election: Timings = Timings()
    node_grace_period: float = 40.0
    eviction_timeout: float = 300.0
    orphaned_pod_quarantine: float = 40.0  # kube-controller-manager's PodGC waits this long for a node
    service_cidr: str = "10.96.0.0/12"
    cluster_cidr: str = "10.244.0.0/16"
    # kube-controller-manager's --node-cidr-mask-size: the prefix length of each Node's podCIDR.
    node_cidr_mask_size: int = 24
    # What the `kubernetes` Service's endpoints name (kube-apiserver's --advertise-address, and the port
    # clients reach it at); None: the address and port the controllers reach this server at.
    advertise_address: str | None = None
    advertise_port: int | None = None
    node_port_range: tuple[int, int] = (30000, 32767)
    # Seconds between passes of the ClusterIP/NodePort claim repair (kube-apiserver's runs every 3 minutes).
    allocation_repair_interval: float = 60.0
    # Where new Service externalIPs may be; none: every new one is refused (DenyServiceExternalIPs).
    allowed_external_ip_cidrs: tuple[str, ...] = ()
    # kube-apiserver compacts etcd every 5 minutes, to the revision it saw at the previous tick.
    compaction_interval: float = 300.0
    bookmark_interval: float = 60.0
    event_ttl: float = 3600.0  # kube-apiserver's --event-ttl
    watch_cache_events: int = 10000
    storage_timeout: float = 5.0
    max_body_bytes: int = MAX_BODY_BYTES
    # API priority and fairness (apiserver/fairness.py): seats shared by the priority levels (kube-apiserver's
    # --max-requests-inflight plus --max-mutating-requests-inflight), open watches a non-exempt user may
    # hold, how long a queued request waits for a seat before its 429, and how many watchers from before
    # the watch cache's window may hold storage watches of their own before the next gets 410 Gone.
    max_requests_inflight: int = 600
    max_watches_per_user: int = 100
    flow_queue_wait: float = 10.0
    max_store_watches: int = 64
    log_level: str = "INFO"

    @property
    def store(self) -> str:
        return self.store_url or default_store_url()

    @property
    def api_addresses(self) -> tuple[str, ...]:
        """The addresses the API server is reached at (none when it listens on every address)."""
        return () if self.host in ("", "0.0.0.0", "::") else (self.host,)

    @property
    def root_ca(self) -> str:
        """The CA in-cluster clients verify this server with (kube-root-ca.crt); "" without one."""
        return (self.root_ca_file or self.client_ca_file or "") if self.tls_cert else ""

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def validate(self) -> None:
        """Raises ValueError with a one-line reason for a configuration that cannot run."""
        ipaddress.ip_network(self.service_cidr)
        cluster = ipaddress.ip_network(self.cluster_cidr)
        if not cluster.prefixlen <= self.node_cidr_mask_size <= 30:
            raise ValueError(f"--node-cidr-mask-size {self.node_cidr_mask_size} must be between the cluster CIDR's "
                             f"prefix length ({cluster.prefixlen}) and 30")
        if self.advertise_address is not None:
            try:
                ipaddress.IPv4Address(self.advertise_address)
            except ValueError:
                raise ValueError(f"--advertise-address {self.advertise_address!r} is not an IPv4 address") from None
        if self.advertise_port is not None and not 0 < self.advertise_port < 65536:
            raise ValueError(f"--advertise-port {self.advertise_port} is out of range")
        parse_cidrs(self.allowed_external_ip_cidrs)
        low, high = self.node_port_range
        if not 0 < low <= high < 65536:
            raise ValueError(f"node port range {low}-{high} is not a range of ports")
        kubelet = (self.kubelet_client_certificate, self.kubelet_client_key, self.kubelet_certificate_authority)
        if any(kubelet) and not all(kubelet):
            raise ValueError("--kubelet-client-certificate, --kubelet-client-key and --kubelet-certificate-authority go together")
        etcd_tls = (self.etcd_certfile, self.etcd_keyfile, self.etcd_cafile)
        if any(etcd_tls) and not all(etcd_tls):
            raise ValueError("--etcd-certfile, --etcd-keyfile and --etcd-cafile go together")
        if any(etcd_tls) and not self.store.startswith("etcd://"):
            raise ValueError("--etcd-certfile, --etcd-keyfile and --etcd-cafile need an etcd:// --store")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        if self.client_ca_file and not self.tls_cert:
            raise ValueError("--client-ca-file needs --tls-cert and --tls-key (client certificates need TLS)")
        if self.max_requests_inflight < 1 or self.max_watches_per_user < 1:
            raise ValueError("--max-requests-inflight and --max-watches-per-user must be at least 1")
        if self.leader_elect:
            self.leader_election.validate()
        if not 0 <= self.port < 65536:
            raise ValueError(f"port {self.port} is out of range")


_Parsed = TypeVar("_Parsed")


def read_flag_file(path: str, flag: str, parse: Callable[[bytes], _Parsed]) -> _Parsed:
    """`parse` of the file's bytes; ValueError naming the flag and the file when it cannot be read or parsed."""
    try:
        return parse(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"{flag} {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ValueError(f"{flag} {path}: {exc}") from None
