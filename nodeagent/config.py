"""The node agent's settings (the flags of `podnet nodeagent`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from podnet.overlay.pipeline.model import FOU_PORT

from podnet.client import podnet_home
from podnet.kubeconfig import ClientTls


@dataclass(frozen=True, slots=True)
class AgentConfig:
    name: str
    address: str
    server: str
    token: str | None = None
    tls: ClientTls | None = None  # the API server's CA (and our certificate)
    fallbacks: tuple[str, ...] = ()  # the cluster's other API servers, tried when `server` does not answer
    state_dir: str | None = None  # default $PODNET_HOME/nodes/<name>
    vxlan_port: int = 4789
    fou_port: int = FOU_PORT  # the bgp backend's foo-over-UDP port, here and on every peer
    metrics_port: int | None = 0  # None: no status server; 0: any free port
    backend: str = "vxlan"  # a name in podnet.backends.ROUTING_BACKENDS
    encryption: str = "none"  # a name in podnet.backends.ENCRYPTIONS
    wireguard_port: int = 51871  # here and on every peer, as Cilium's
    cluster_cidr: str = "10.244.0.0/16"
    lease_duration: int = 40
    renew_interval: float = 5.0
    conntrack_sweep_interval: float = 5.0
    pod_mode: str = "virtual"  # pods without a podnet.io/pod-mode annotation: "virtual" or "netns"
    # netns pods' TAPs take checksum and TCP segmentation offload: super-packets cross the pipeline whole
    tap_offloads: bool = True
    kubelet_port: int = 0  # the kubelet API (exec, logs); 0: any free port
    # The kubelet API's serving certificate and the CA its clients' certificates must chain to; without
    # them there is no kubelet API.
    kubelet_cert_file: str | None = None
    kubelet_key_file: str | None = None
    kubelet_client_ca_file: str | None = None
    # Addresses or CIDRs of the cloud load balancer: only their PROXY protocol headers name the client.
    proxy_protocol_from: tuple[str, ...] = ()
    # Host ports pods may not reach through the host bridge beyond the built-in ones (hostguard.py).
    protected_ports: tuple[str, ...] = ()

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir) if self.state_dir else podnet_home() / "nodes" / self.name

    @property
    def socket_path(self) -> Path:
        return self.state_path / "agent.sock"
