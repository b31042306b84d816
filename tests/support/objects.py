"""API objects for tests, shaped as the API server stores them: one factory per kind, so a test states only
what it cares about and every test builds a Service, a Pod or an EndpointSlice the same way."""

from __future__ import annotations

from typing import Any


def ready_condition(status: str) -> dict:
    return {"type": "Ready", "status": status}


def node(name: str, ready: str | None = "True", labels: dict | None = None, taints: list | None = None,
         unschedulable: bool = False) -> dict:
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    status = {"conditions": [ready_condition(ready)]} if ready else {}
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": status}


def pod(name: str, namespace: str = "default", labels: dict | None = None, ip: str | None = None,
        node: str | None = None, ready: bool | None = None, deleting: bool = False, phase: str = "Running",
        ports: list | None = None, **spec: Any) -> dict:
    meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels or {}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    pod_spec = {"containers": [{"name": "c", "image": "agnhost", "ports": ports or []}], **spec}
    if node:
        pod_spec["nodeName"] = node
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    if ready is not None:
        status["conditions"] = [ready_condition("True" if ready else "False")]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec, "status": status}


def service(name: str, namespace: str = "default", *, ports: list, selector: dict | None = None,
            cluster_ip: str | None = None, status: dict | None = None, **spec: Any) -> dict:
    body: dict[str, Any] = {"type": "ClusterIP", "ports": ports, **spec}
    if selector is not None:
        body["selector"] = selector
    if cluster_ip is not None:
        body["clusterIP"] = cluster_ip
    obj = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}", "resourceVersion": "1"},
           "spec": body}
    if status:
        obj["status"] = status
    return obj


def endpoint_slice(service_name: str, endpoints: list[tuple[str, str, bool]], *, ports: list,
                   namespace: str = "default", name: str | None = None, address_type: str = "IPv4") -> dict:
    """`endpoints`: (ip, node name, ready) each."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name or f"{service_name}-abc", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": service_name}},
        "addressType": address_type,
        "ports": ports,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}, "nodeName": node}
                      for ip, node, ready in endpoints],
    }
