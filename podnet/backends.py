"""The dataplane's backends, chosen by name from one registry (flannel's `pkg/backend/manager.go`):
routing backends, kube-proxy modes and pod modes. The node agent, kube-proxy, the cluster topology and the
CLI all read these; a new backend is one entry here, not a string compared in four modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class RoutingBackend:
    """How pod traffic crosses between nodes, and where the routes to other nodes' pods come from."""

    name: str
    encapsulation: str  # the pipeline's Encapsulation value: "vxlan" or "fou"
    routes_from_nodes: bool  # each Node's podCIDR becomes a route (flannel); else only learned routes count
    runs_speaker: bool  # each node runs a BGP speaker that installs the routes it learns into the agent
    description: str


ROUTING_BACKENDS: dict[str, RoutingBackend] = {
    backend.name: backend
    for backend in (
        RoutingBackend("vxlan", "vxlan", routes_from_nodes=True, runs_speaker=False,
                       description="routes from Node podCIDRs, VXLAN"),
        RoutingBackend("bgp", "fou", routes_from_nodes=False, runs_speaker=True,
                       description="routes from the BGP speaker only, foo-over-UDP"),
    )
}
BACKENDS = tuple(ROUTING_BACKENDS)
BACKENDS_HELP = "; ".join(f"{b.name}: {b.description}" for b in ROUTING_BACKENDS.values())


def routing_backend(name: str) -> RoutingBackend:
    try:
        return ROUTING_BACKENDS[name]
    except KeyError:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {name!r}") from None


class ProxyMode(StrEnum):
    """kube-proxy's modes."""

    IPTABLES = "iptables"
    IPVS = "ipvs"


PROXY_MODES = tuple(mode.value for mode in ProxyMode)
_PROXY_MODE_DESCRIPTIONS = {ProxyMode.IPTABLES: "ordered rules walked per connection", ProxyMode.IPVS: "hash tables"}
PROXY_MODES_HELP = "; ".join(f"{mode}: {_PROXY_MODE_DESCRIPTIONS[mode]}" for mode in ProxyMode)

# Where a pod's network lives: a userspace stack inside the agent, or a real network namespace (root, Linux).
POD_MODES = ("virtual", "netns")

# How pod traffic between nodes is protected on the underlay: not at all, or inside WireGuard (Weave's
# encrypted overlay, as Cilium and Calico do it today).
ENCRYPTIONS = ("none", "wireguard")
ENCRYPTIONS_HELP = "none: the tunnel's datagrams in clear; wireguard: inside WireGuard between nodes, on UDP 51871"
