"""What kube-proxy programs on one node, pure: Services + EndpointSlices + the node's name → the service
table data `overlay/pipeline/nat.py` evaluates.

As kube-proxy does:
- ExternalName Services and headless Services (clusterIP None) get no rules; neither do Services
  without ports.
- An endpoint counts when its `conditions.ready` is true or unset; endpoints are gathered from every
  IPv4 EndpointSlice labelled with the Service's name and matched to a Service port by port name and
  protocol (named targetPorts arrive resolved, per pod, in the slices' ports).
- internalTrafficPolicy Local keeps, for traffic to the ClusterIP, only this node's endpoints;
  externalTrafficPolicy Local does the same for nodePorts and load-balancer addresses, and such a
  LoadBalancer Service carries its healthCheckNodePort.
- sessionAffinity ClientIP pins a client for sessionAffinityConfig.clientIP.timeoutSeconds (10800).

Each Service and each slice is first reduced to the part rules depend on (`service_info`,
`slice_info`): the change tracker compares these, so an update that touches nothing else is no change.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from podnet.overlay.pipeline.nat import Endpoint, ProxyTable, ServicePort

from podnet.api.keys import namespaced_key
from podnet.backends import PROXY_MODES, ProxyMode

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
DEFAULT_AFFINITY_SECONDS = 10800

# A service reduced to what rules depend on: plain tuples, so equal means "no change".
ServiceInfo = tuple
SliceInfo = tuple


def service_info(service: Mapping) -> ServiceInfo | None:
    """The rule-relevant part of a Service, or None when kube-proxy ignores it."""
    spec = service.get("spec") or {}
    service_type = spec.get("type") or "ClusterIP"
    cluster_ip = spec.get("clusterIP")
    if service_type == "ExternalName" or not cluster_ip or cluster_ip == "None" or ":" in cluster_ip:
        return None
    node_ports = service_type in ("NodePort", "LoadBalancer")
    ports = tuple(
        (
            str(p.get("name") or ""),
            str(p.get("protocol") or "TCP"),
            int(p["port"]),
            int(p.get("nodePort") or 0) if node_ports else 0,
        )
        for p in spec.get("ports") or []
        if isinstance(p, dict) and p.get("port")
    )
    if not ports:
        return None
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)
    external_ips = list(spec.get("externalIPs") or [])
    if service_type == "LoadBalancer":
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        external_ips += [i["ip"] for i in ingress if isinstance(i, dict) and i.get("ip")]
    external_local = node_ports and spec.get("externalTrafficPolicy") == "Local"
    health_check = (
        int(spec.get("healthCheckNodePort") or 0) if service_type == "LoadBalancer" and external_local else 0
    )
    return (
        cluster_ip,
        ports,
        affinity,
        spec.get("internalTrafficPolicy") == "Local",
        external_local,
        tuple(sorted(set(external_ips))),
        health_check,
    )


def slice_info(endpoint_slice: Mapping) -> SliceInfo | None:
    """(service key, ports, ready endpoints) of an EndpointSlice, or None when it serves no Service
    kube-proxy can use (another address type, no service-name label)."""
    meta = endpoint_slice.get("metadata") or {}
    service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not service or endpoint_slice.get("addressType", "IPv4") != "IPv4":
        return None
    ports = tuple(
        (str(p.get("name") or ""), str(p.get("protocol") or "TCP"), int(p["port"]))
        for p in endpoint_slice.get("ports") or []
        if isinstance(p, dict) and p.get("port")
    )
    endpoints = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is False:
            continue
        for address in endpoint.get("addresses") or []:
            endpoints.append((address, str(endpoint.get("nodeName") or "")))
    return (namespaced_key(meta.get("namespace"), service), ports, tuple(sorted(endpoints)))


def compute(
    services: Mapping[str, ServiceInfo],
    slices: Iterable[SliceInfo],
    node: str,
    mode: str = ProxyMode.IPTABLES,
    service_cidr: str = "",
) -> ProxyTable:
    """The table for `node`: one entry per Service port, in Service name order (the order of
    KUBE-SERVICES)."""
    if mode not in PROXY_MODES:
        raise ValueError(f"proxy mode {mode!r} is not one of {', '.join(PROXY_MODES)}")
    endpoints_by_port: dict[tuple[str, str, str], set[tuple[str, int, str]]] = {}
    for info in slices:
        if info is None:
            continue
        key, ports, endpoints = info
        for name, protocol, number in ports:
            bucket = endpoints_by_port.setdefault((key, name, protocol), set())
            bucket.update((ip, number, node_name) for ip, node_name in endpoints)
    entries = []
    for key in sorted(services):
        info = services[key]
        if info is None:
            continue
        cluster_ip, ports, affinity, internal_local, external_local, external_ips, health_check = info
        for name, protocol, port, node_port in ports:
            ready = tuple(Endpoint(*e) for e in sorted(endpoints_by_port.get((key, name, protocol), ())))
            local = tuple(e for e in ready if e.node == node)
            external = node_port or external_ips
            entries.append(ServicePort(
                service=key,
                port_name=name,
                protocol=protocol,
                cluster_ip=cluster_ip,
                port=port,
                node_port=node_port or 0,
                external_ips=tuple(external_ips or ()),
                endpoints=local if internal_local else ready,
                external_endpoints=(local if external_local else ready) if external else (),
                affinity_seconds=affinity or 0,
                external_local=bool(external_local) if external else False,
                health_check_node_port=health_check or 0,
            ))
    return ProxyTable(ProxyMode(mode), node, tuple(entries), service_cidr)


def health_check_counts(table: ProxyTable) -> dict[int, tuple[str, int]]:
    """healthCheckNodePort -> (its Service, how many ready endpoints it has on the table's node), for
    kube-proxy's service health server: what a cloud load balancer asks before it sends a node traffic."""
    counts: dict[int, tuple[str, int]] = {}
    for entry in table.ports:
        port = entry.health_check_node_port
        if port:
            local = {e.ip for e in entry.external_endpoints if e.node == table.node}
            previous = counts.get(port, (entry.service, 0))[1]
            counts[port] = (entry.service, max(previous, len(local)))
    return counts
