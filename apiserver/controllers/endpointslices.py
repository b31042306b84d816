"""What a Service's EndpointSlices and legacy Endpoints should contain, pure.

`desired_slices(service, pods, nodes)` and `desired_endpoints(service, pods)` follow Kubernetes'
EndpointSlice and Endpoints controllers: pods matching the selector with an IP and not finished; a pod's
conditions come from its Ready condition and its deletionTimestamp; a named targetPort is resolved per pod
from its container ports, so pods resolving a name to different numbers land in separate slices (one slice
per distinct port list, at most 100 endpoints each).

Slice names are derived from the Service name and the slice's port list, so recomputing gives the same
names and reconciling is a plain diff by name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

from podnet.api import selectors

from .scheduling import is_ready

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"
MAX_ENDPOINTS_PER_SLICE = 100


def selects_pods(service: dict) -> bool:
    """Only Services with a selector get controller-managed endpoints (the `kubernetes` Service's are
    written by the API server)."""
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def _pod_ipv4(pod: dict) -> str | None:
    status = pod.get("status") or {}
    ips = [entry.get("ip") for entry in status.get("podIPs") or [] if isinstance(entry, dict)]
    ips = ips or [status.get("podIP")]
    return next((ip for ip in ips if ip and ":" not in ip), None)


def member_pods(service: dict, pods: Iterable[dict]) -> list[dict]:
    """The pods that belong in the Service's endpoints, sorted by name."""
    meta = service.get("metadata") or {}
    selector = selectors.from_match_labels((service.get("spec") or {}).get("selector"))
    return sorted(
        (
            pod
            for pod in pods
            if (pod.get("metadata") or {}).get("namespace") == meta.get("namespace")
            and selector.matches((pod.get("metadata") or {}).get("labels"))
            and _pod_ipv4(pod)
            and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ),
        key=lambda p: p["metadata"]["name"],
    )


def resolve_target_port(service_port: dict, pod: dict) -> int | None:
    """The number a Service port reaches on this pod: targetPort as a number, or a named container port of
    the same protocol (None when the pod has no such name, and the port is left out for that pod)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isascii() and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol", "TCP")
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target and port.get("protocol", "TCP") == protocol:
                return port.get("containerPort")
    return None


def endpoint_ports(service: dict, pod: dict) -> tuple[tuple[str, str, int, str | None], ...]:
    """(name, protocol, port, appProtocol) of every Service port this pod resolves, in Service order."""
    resolved = []
    for service_port in (service.get("spec") or {}).get("ports") or []:
        number = resolve_target_port(service_port, pod)
        if number is not None:
            resolved.append((service_port.get("name") or "", service_port.get("protocol", "TCP"), number,
                             service_port.get("appProtocol")))
    return tuple(resolved)


def _conditions(service: dict, pod: dict) -> dict:
    serving = is_ready(pod)
    terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    publish_not_ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    # As in Kubernetes: a terminating pod is never "ready", unless the Service publishes not-ready ones.
    return {"ready": publish_not_ready or (serving and not terminating), "serving": serving,
            "terminating": terminating}


def _target_ref(pod: dict) -> dict:
    meta = pod["metadata"]
    ref = {"kind": "Pod", "namespace": meta.get("namespace"), "name": meta["name"]}
    if meta.get("uid"):
        ref["uid"] = meta["uid"]
    return ref


def _hostname(service: dict, pod: dict) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        return spec["hostname"]
    return None


def _endpoint(service: dict, pod: dict, nodes: Mapping[str, dict]) -> dict:
    endpoint = {"addresses": [_pod_ipv4(pod)], "conditions": _conditions(service, pod)}
    if hostname := _hostname(service, pod):
        endpoint["hostname"] = hostname
    endpoint["targetRef"] = _target_ref(pod)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        endpoint["nodeName"] = node_name
        zone = ((nodes.get(node_name) or {}).get("metadata", {}).get("labels") or {}).get(ZONE_LABEL)
        if zone:
            endpoint["zone"] = zone
    return endpoint


def _owner_reference(service: dict) -> dict:
    meta = service["metadata"]
    return {"apiVersion": "v1", "kind": "Service", "name": meta["name"], "uid": meta.get("uid", ""),
            "controller": True, "blockOwnerDeletion": True}


def _labels(service: dict) -> dict:
    labels = dict((service.get("metadata") or {}).get("labels") or {})
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


def slice_name(service_name: str, ports: tuple, index: int) -> str:
    digest = hashlib.sha256(json.dumps([ports, index]).encode()).hexdigest()[:8]
    return f"{service_name[:244]}-{digest}"


def _port_dicts(ports: tuple) -> list[dict]:
    result = []
    for name, protocol, number, app_protocol in ports:
        port = {"name": name, "protocol": protocol, "port": number}
        if app_protocol:
            port["appProtocol"] = app_protocol
        result.append(port)
    return result


def desired_slices(service: dict, pods: Iterable[dict], nodes: Mapping[str, dict]) -> list[dict]:
    """The EndpointSlices the Service should have, sorted by name. A Service that selects no pod still
    gets one empty slice, as Kubernetes keeps a placeholder."""
    meta = service["metadata"]
    groups: dict[tuple, list[dict]] = {}
    for pod in member_pods(service, pods):
        groups.setdefault(endpoint_ports(service, pod), []).append(_endpoint(service, pod, nodes))
    if not groups:
        groups[()] = []
    labels = {**_labels(service), SERVICE_NAME_LABEL: meta["name"], MANAGED_BY_LABEL: MANAGED_BY}
    slices = []
    for ports, endpoints in groups.items():
        endpoints.sort(key=lambda e: (e["targetRef"]["name"]))
        chunks = [endpoints[i:i + MAX_ENDPOINTS_PER_SLICE] for i in range(0, len(endpoints),
                                                                           MAX_ENDPOINTS_PER_SLICE)] or [[]]
        for index, chunk in enumerate(chunks):
            slices.append({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name(meta["name"], ports, index),
                    "namespace": meta["namespace"],
                    "labels": dict(labels),
                    "ownerReferences": [_owner_reference(service)],
                },
                "addressType": "IPv4",
                "endpoints": chunk,
                "ports": _port_dicts(ports),
            })
    return sorted(slices, key=lambda s: s["metadata"]["name"])


def desired_endpoints(service: dict, pods: Iterable[dict]) -> dict:
    """The legacy Endpoints object: one subset per distinct port list, ready pods in `addresses`, the rest
    in `notReadyAddresses`; terminating pods are left out unless the Service publishes not-ready ones."""
    meta = service["metadata"]
    publish_not_ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    subsets: dict[tuple, dict[str, list[dict]]] = {}
    for pod in member_pods(service, pods):
        if (pod.get("metadata") or {}).get("deletionTimestamp") and not publish_not_ready:
            continue
        ports = endpoint_ports(service, pod)
        if not ports:
            continue
        address = {"ip": _pod_ipv4(pod)}
        if hostname := _hostname(service, pod):
            address["hostname"] = hostname
        if node_name := (pod.get("spec") or {}).get("nodeName"):
            address["nodeName"] = node_name
        address["targetRef"] = _target_ref(pod)
        bucket = "addresses" if publish_not_ready or is_ready(pod) else "notReadyAddresses"
        subsets.setdefault(ports, {"addresses": [], "notReadyAddresses": []})[bucket].append(address)
    rendered = []
    for ports, buckets in sorted(subsets.items(), key=lambda item: json.dumps(item[0])):
        subset = {k: sorted(v, key=lambda a: a["ip"]) for k, v in buckets.items() if v}
        subset["ports"] = [
            {k: v for k, v in p.items() if v} for p in _port_dicts(ports)
        ]
        rendered.append(subset)
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": _labels(service)},
        "subsets": rendered,
    }


# The fields a controller owns in an object it writes: equal ones need no write.
def slice_differs(current: dict, desired: dict) -> bool:
    return any(current.get(k) != desired.get(k) for k in ("addressType", "endpoints", "ports")) or any(
        (current.get("metadata") or {}).get(k) != desired["metadata"].get(k) for k in ("labels", "ownerReferences")
    )


def endpoints_differ(current: dict, desired: dict) -> bool:
    return (current.get("subsets") or []) != desired["subsets"] or (
        (current.get("metadata") or {}).get("labels") or {}) != desired["metadata"]["labels"]
