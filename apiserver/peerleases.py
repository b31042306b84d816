"""Which API servers are alive, and the `kubernetes` Service's endpoints that list them.

Every API server renews a Lease of its own in kube-system (`apiserver-<hash of its address>`, labelled
`apiserver.kubernetes.io/identity: kube-apiserver`, as kube-apiserver's identity leases are) and sets the
`kubernetes` Endpoints and EndpointSlice to the addresses of the leases that have not expired, as
kube-apiserver's lease endpoint reconciler does. A server that dies drops out once its lease runs out; a
server that stops gracefully removes its own lease and address at once. Like kube-apiserver, every server
must serve on the same port: the Service has one target port.

Pure: objects and decisions, times passed in.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from podnet.apiserver.controllers.endpointslices import SERVICE_NAME_LABEL
from podnet.apiserver.election import LEASE_NAMESPACE, micro_time

IDENTITY_LABEL = "apiserver.kubernetes.io/identity"
IDENTITY_VALUE = "kube-apiserver"
ADDRESS_ANNOTATION = "podnet.io/advertise-address"
LEASE_DURATION = 15  # seconds: kube-apiserver's master leases live 15 s
RENEW_INTERVAL = 5.0


@dataclass(frozen=True, slots=True, order=True)
class Peer:
    address: str
    port: int

    @property
    def text(self) -> str:
        return f"{self.address}:{self.port}"


def lease_name(peer: Peer) -> str:
    return "apiserver-" + hashlib.sha256(peer.text.encode()).hexdigest()[:16]


def identity_lease(peer: Peer, hostname: str, now: datetime.datetime) -> dict:
    stamp = micro_time(now)
    return {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": lease_name(peer), "namespace": LEASE_NAMESPACE,
                     "labels": {IDENTITY_LABEL: IDENTITY_VALUE, "kubernetes.io/hostname": hostname},
                     "annotations": {ADDRESS_ANNOTATION: peer.text}},
        "spec": {"holderIdentity": f"{hostname}_{peer.text}", "leaseDurationSeconds": LEASE_DURATION,
                 "acquireTime": stamp, "renewTime": stamp},
    }


def _parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def _peer_of(lease: dict) -> Peer | None:
    text = ((lease.get("metadata") or {}).get("annotations") or {}).get(ADDRESS_ANNOTATION) or ""
    address, _, port = text.rpartition(":")
    return Peer(address, int(port)) if address and port.isdigit() else None


def live_peers(leases: list[dict], now: datetime.datetime, port: int) -> list[Peer]:
    """The API servers whose identity lease has not run out and that serve on `port`, sorted."""
    live = set()
    for lease in leases:
        if ((lease.get("metadata") or {}).get("labels") or {}).get(IDENTITY_LABEL) != IDENTITY_VALUE:
            continue
        spec = lease.get("spec") or {}
        renewed, peer = _parse_time(spec.get("renewTime")), _peer_of(lease)
        if renewed is None or peer is None or peer.port != port:
            continue
        if renewed + datetime.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0)) > now:
            live.add(peer)
    return sorted(live)


def kubernetes_endpoints(peers: list[Peer], port: int) -> tuple[dict, dict]:
    """The `kubernetes` Service's Endpoints and EndpointSlice for these API servers."""
    addresses = [peer.address for peer in peers]
    subsets = [{"addresses": [{"ip": a} for a in addresses],
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}] if addresses else []
    endpoints = {"apiVersion": "v1", "kind": "Endpoints",
                 "metadata": {"name": "kubernetes", "namespace": "default"}, "subsets": subsets}
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {SERVICE_NAME_LABEL: "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    }
    return endpoints, endpoint_slice
