"""kubectl-like tables for the kinds podnet serves. Pure: `now` (seconds since the epoch) is a parameter."""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from datetime import datetime


def _timestamp(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return calendar.timegm(datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S").timetuple())
    except ValueError:
        return None


def age(obj: dict, now: float) -> str:
    """kubectl's short duration: 45s, 3m12s, 5h, 2d."""
    created = _timestamp((obj.get("metadata") or {}).get("creationTimestamp"))
    if created is None:
        return "<unknown>"
    seconds = max(0, int(now - created))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    return f"{hours}h" if hours < 48 else f"{hours // 24}d"


def _condition(obj: dict, kind: str) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return c
    return {}


def _pod_row(pod: dict, now: float, wide: bool) -> list[str]:
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    phase = status.get("phase") or "Pending"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        phase = "Terminating"
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    row = [pod["metadata"]["name"], f"{ready}/{len(containers)}", phase, str(restarts), age(pod, now)]
    if wide:
        row += [status.get("podIP") or "<none>", spec.get("nodeName") or "<none>"]
    return row


def _service_ports(svc: dict) -> str:
    ports = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        text = str(p.get("port"))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(ports) or "<none>"


def _service_row(svc: dict, now: float, wide: bool) -> list[str]:
    spec = svc.get("spec") or {}
    svc_type = spec.get("type") or "ClusterIP"
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if svc_type == "ExternalName":
        external = spec.get("externalName") or "<none>"
    elif svc_type == "LoadBalancer":
        external = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress) or "<pending>"
    else:
        external = ",".join(spec.get("externalIPs") or []) or "<none>"
    row = [svc["metadata"]["name"], svc_type, spec.get("clusterIP") or "<none>", external, _service_ports(svc),
           age(svc, now)]
    if wide:
        selector = spec.get("selector") or {}
        row.append(",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>")
    return row


def _node_row(node: dict, now: float, wide: bool) -> list[str]:
    ready = _condition(node, "Ready").get("status")
    status = {"True": "Ready", "False": "NotReady"}.get(ready or "", "NotReady" if ready else "Unknown")
    if (node.get("spec") or {}).get("unschedulable"):
        status += ",SchedulingDisabled"
    info = (node.get("status") or {}).get("nodeInfo") or {}
    row = [node["metadata"]["name"], status, "<none>", age(node, now), info.get("kubeletVersion") or ""]
    if wide:
        addresses = (node.get("status") or {}).get("addresses") or []
        internal = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), "<none>")
        row += [internal, (node.get("spec") or {}).get("podCIDR") or "<none>"]
    return row


def _namespace_row(ns: dict, now: float, wide: bool) -> list[str]:
    return [ns["metadata"]["name"], (ns.get("status") or {}).get("phase") or "Active", age(ns, now)]


def _endpointslice_row(es: dict, now: float, wide: bool) -> list[str]:
    ports = ",".join(str(p.get("port")) for p in es.get("ports") or []) or "<unset>"
    addresses = [a for e in es.get("endpoints") or [] for a in e.get("addresses") or []]
    shown = ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")
    return [es["metadata"]["name"], es.get("addressType") or "IPv4", ports, shown or "<unset>", age(es, now)]


def _endpoints_row(ep: dict, now: float, wide: bool) -> list[str]:
    pairs = [f"{a['ip']}:{p.get('port')}" for s in ep.get("subsets") or [] for a in s.get("addresses") or []
             for p in s.get("ports") or [{}]]
    shown = ",".join(pairs[:3]) + (f" + {len(pairs) - 3} more..." if len(pairs) > 3 else "")
    return [ep["metadata"]["name"], shown or "<none>", age(ep, now)]


def _netpol_row(np: dict, now: float, wide: bool) -> list[str]:
    selector = ((np.get("spec") or {}).get("podSelector") or {}).get("matchLabels") or {}
    text = ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"
    return [np["metadata"]["name"], text, age(np, now)]


def _deployment_row(d: dict, now: float, wide: bool) -> list[str]:
    status = d.get("status") or {}
    replicas = (d.get("spec") or {}).get("replicas", 1)
    return [d["metadata"]["name"], f"{status.get('readyReplicas', 0)}/{replicas}",
            str(status.get("updatedReplicas", 0)), str(status.get("availableReplicas", 0)), age(d, now)]


def _replicaset_row(rs: dict, now: float, wide: bool) -> list[str]:
    status = rs.get("status") or {}
    spec = rs.get("spec") or {}
    row = [rs["metadata"]["name"], str(spec.get("replicas", 1)), str(status.get("replicas", 0)),
           str(status.get("readyReplicas", 0)), age(rs, now)]
    if wide:
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        row += [",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers),
                ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"]
    return row


def _lease_row(lease: dict, now: float, wide: bool) -> list[str]:
    return [lease["metadata"]["name"], (lease.get("spec") or {}).get("holderIdentity") or "", age(lease, now)]


def _event_row(ev: dict, now: float, wide: bool) -> list[str]:
    involved = ev.get("involvedObject") or {}
    return [age(ev, now), ev.get("type") or "", ev.get("reason") or "",
            f"{(involved.get('kind') or '').lower()}/{involved.get('name', '')}", ev.get("message") or ""]


Row = Callable[[dict, float, bool], list[str]]
TABLES: dict[str, tuple[list[str], list[str], Row]] = {
    "Pod": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["IP", "NODE"], _pod_row),
    "Service": (["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], ["SELECTOR"], _service_row),
    "Node": (["NAME", "STATUS", "ROLES", "AGE", "VERSION"], ["INTERNAL-IP", "POD-CIDR"], _node_row),
    "Namespace": (["NAME", "STATUS", "AGE"], [], _namespace_row),
    "EndpointSlice": (["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], [], _endpointslice_row),
    "Endpoints": (["NAME", "ENDPOINTS", "AGE"], [], _endpoints_row),
    "NetworkPolicy": (["NAME", "POD-SELECTOR", "AGE"], [], _netpol_row),
    "Deployment": (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], [], _deployment_row),
    "ReplicaSet": (["NAME", "DESIRED", "CURRENT", "READY", "AGE"], ["CONTAINERS", "IMAGES", "SELECTOR"],
                   _replicaset_row),
    "Lease": (["NAME", "HOLDER", "AGE"], [], _lease_row),
    "Event": (["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], [], _event_row),
}


def table_rows(kind: str, objects: Iterable[dict], now: float, *, wide: bool = False,
               with_namespace: bool = False) -> list[list[str]]:
    """Header and rows for `podnet get`; with_namespace adds kubectl -A's NAMESPACE column."""
    header, wide_header, row = TABLES[kind]
    rows = [(["NAMESPACE"] if with_namespace else []) + header + (wide_header if wide else [])]
    for obj in objects:
        prefix = [(obj.get("metadata") or {}).get("namespace", "")] if with_namespace else []
        rows.append(prefix + row(obj, now, wide))
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
