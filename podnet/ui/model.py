"""The web UI's view models, pure: API objects, flow records, process states, counters, matrices and
traces in; the JSON the page draws out. No sockets, no clock (times are arguments), so every view is
tested without a cluster.

- `topology`: nodes with their address, podCIDR, readiness, agent process and tunnel packet rates; their
  pods (greyed when the pod is not Ready or its node is not); the tunnels between nodes, each with the
  packet rate each way; the control plane's processes.
- `service_map`: a namespace's workloads and Services as boxes, observed connections as edges, counted
  allowed and denied, each edge with its latest connections and the rules that decided them (Hubble UI's
  view).
- `matrix`: the policies' and the probed truth table of some pods, cell by cell, disagreements marked.
- `journey`: a traced packet's stages, each placed on the node where it happened, with the packet as the
  stage held it laid out layer by layer where it held one.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from podnet.api.keys import object_key
from podnet.nodeagent.policy import Matrix
from podnet.nodeagent.policy.flowlog import FlowRecord
from podnet.overlay.pipeline.model import dissect_stage
from podnet.overlay.wire import dissect
from podnet.rpc.agentmethods import PEER_RX, PEER_TX

EDGE_FLOWS = 12  # the latest connections an edge carries for its detail panel
TEMPLATE_HASH = "pod-template-hash"


# ---- objects --------------------------------------------------------------------------------------


def _meta(obj: Mapping) -> Mapping:
    return obj.get("metadata") or {}


def condition(obj: Mapping, kind: str) -> Mapping | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == kind), None)


def node_ready(node: Mapping) -> bool:
    ready = condition(node, "Ready")
    return bool(ready) and ready.get("status") == "True"


def pod_ready(pod: Mapping) -> bool:
    ready = condition(pod, "Ready")
    return (pod.get("status") or {}).get("phase") == "Running" and bool(ready) and ready.get("status") == "True"


def workload_of(pod: Mapping) -> str:
    """The name of what made the pod: a Deployment's (its ReplicaSet's name less the template hash), any
    other owner's, or the pod's own. "ns/name"."""
    meta = _meta(pod)
    owners = meta.get("ownerReferences") or []
    name = meta.get("name") or ""
    if owners:
        name = owners[0].get("name") or name
        template_hash = (meta.get("labels") or {}).get(TEMPLATE_HASH)
        if owners[0].get("kind") == "ReplicaSet" and template_hash:
            name = re.sub(rf"-{re.escape(template_hash)}$", "", name)
    return f"{meta.get('namespace')}/{name}"


def natural(name: str) -> tuple:
    """A sort key that puts node-2 before node-10."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def _selects(selector: Mapping | None, labels: Mapping | None) -> bool:
    return bool(selector) and all((labels or {}).get(k) == v for k, v in selector.items())


# ---- topology ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessState:
    name: str  # "apiserver", "node-2/agent", ...
    running: bool
    healthy: bool | None = None  # its health check's last answer (None: not asked yet, or not running)


def _per_second(then: Mapping[str, int], now: Mapping[str, int], names: Mapping[str, str],
                seconds: float) -> dict[str, float] | None:
    """{way: how fast the counter named for it grew}; None when one went back (a restarted agent)."""
    grown = {way: (now.get(name, 0) - then.get(name, 0)) / seconds for way, name in names.items()}
    return {way: round(value, 1) for way, value in grown.items()} if min(grown.values()) >= 0 else None


def rates(before: Mapping[str, Mapping[str, int]], after: Mapping[str, Mapping[str, int]],
          seconds: float) -> dict[str, dict]:
    """node -> tunnel packets per second sent ("tx") and received ("rx") between two reads of the agents'
    counters `seconds` apart, and the same per peer address ("peers"): each tunnel's. A node missing
    from either read, or whose counters went back (a restarted agent), has no rate."""
    found: dict[str, dict] = {}
    if seconds <= 0:
        return found
    for node, now in after.items():
        if node not in before:
            continue
        then = before[node]
        total = _per_second(then, now, {"tx": "tunnel.tx", "rx": "tunnel.rx"}, seconds)
        if total is None:
            continue
        addresses = sorted({name.removeprefix(prefix) for name in now for prefix in (PEER_TX, PEER_RX)
                            if name.startswith(prefix)})
        peers = {address: _per_second(then, now, {"tx": PEER_TX + address, "rx": PEER_RX + address}, seconds)
                 for address in addresses}
        found[node] = {**total, "peers": {address: rate for address, rate in peers.items() if rate is not None}}
    return found


def topology(nodes: Iterable[Mapping], pods: Iterable[Mapping], processes: Iterable[ProcessState],
             node_rates: Mapping[str, Mapping[str, float]], encapsulation: str = "vxlan",
             bgp: Mapping[str, Sequence[Mapping]] | None = None) -> dict:
    """`bgp`: node -> its speaker's sessions (`podnet bgp peers`), when the cluster routes by BGP."""
    processes = list(processes)
    nodes = list(nodes)
    running = {p.name: p.running for p in processes}
    by_node: dict[str, list[dict]] = defaultdict(list)
    ready_nodes = {_meta(n).get("name") for n in nodes if node_ready(n)}
    for pod in sorted(pods, key=object_key):
        spec, status = pod.get("spec") or {}, pod.get("status") or {}
        node = spec.get("nodeName")
        if not node:
            continue
        ready = pod_ready(pod)
        by_node[node].append({
            "key": object_key(pod), "ip": status.get("podIP"), "phase": status.get("phase") or "Pending",
            "ready": ready, "greyed": not ready or node not in ready_nodes, "workload": workload_of(pod),
            "hostNetwork": bool(spec.get("hostNetwork")),
        })
    def internal(node: Mapping) -> str | None:
        addresses = (node.get("status") or {}).get("addresses") or []
        return next((a.get("address") for a in addresses if a.get("type") == "InternalIP"), None)

    node_at = {internal(n): _meta(n).get("name") for n in nodes}
    sessions = {(name, node_at.get(peer.get("peer"), peer.get("peer"))): peer.get("state")
                for name, peers in (bgp or {}).items() for peer in peers}
    shown = []
    for node in sorted(nodes, key=lambda n: natural(_meta(n).get("name") or "")):
        name = _meta(node).get("name")
        ready = condition(node, "Ready") or {}
        shown.append({
            "name": name,
            "address": internal(node),
            "podCIDR": (node.get("spec") or {}).get("podCIDR"),
            "ready": node_ready(node),
            "reason": ready.get("reason") or ("NodeStatusUnknown" if not ready else ""),
            "agent": running.get(f"{name}/agent"),
            "processes": [{"name": p.name.partition("/")[2], "running": p.running, "healthy": p.healthy}
                          for p in processes if p.name.startswith(f"{name}/")],
            "rates": dict(node_rates.get(name) or {}),
            "pods": by_node.get(name, []),
            "bgp": [{"peer": node_at.get(p.get("peer"), p.get("peer")), "state": p.get("state"),
                     "prefixes": p.get("prefixes_received")} for p in (bgp or {}).get(name, [])],
        })
    names = [n["name"] for n in shown]
    address = {n["name"]: n["address"] for n in shown}

    def sent(a: str, b: str) -> float | None:
        """Packets per second node `a` sends `b` through their tunnel, as `a`'s counters tell: none counted
        for `b` is none sent; None when `a`'s counters were not read twice."""
        peers = (node_rates.get(a) or {}).get("peers")
        return None if peers is None else (peers.get(address[b]) or {}).get("tx", 0.0)

    tunnels = [{"a": a, "b": b, "encapsulation": encapsulation,
                "up": a in ready_nodes and b in ready_nodes, "rates": {"ab": sent(a, b), "ba": sent(b, a)},
                "bgp": [sessions[end] for end in ((a, b), (b, a)) if end in sessions]}
               for i, a in enumerate(names) for b in names[i + 1:]]
    control = [{"name": p.name, "running": p.running, "healthy": p.healthy} for p in processes if "/" not in p.name]
    return {"nodes": shown, "tunnels": tunnels, "control": control}


# ---- service map ------------------------------------------------------------------------------------


def connections(records: Iterable[FlowRecord]) -> list[dict]:
    """Flow records grouped into connection attempts (protocol, source and destination address and
    port), oldest first: a connection is denied when any verdict on it denied it (the egress verdict at the
    source node, the ingress verdict at the destination's, retransmissions judged again)."""
    found: dict[tuple, dict] = {}
    for record in sorted(records, key=lambda r: r.time):
        key = (record.protocol, record.src, record.src_port, record.dst, record.port)
        entry = found.setdefault(key, {
            "time": record.time, "protocol": record.protocol, "src": record.src, "srcPort": record.src_port,
            "dst": record.dst, "port": record.port, "srcPod": record.src_pod, "dstPod": record.dst_pod,
            "allowed": True, "verdicts": {},
        })
        entry["time"] = record.time
        entry["srcPod"] = entry["srcPod"] or record.src_pod
        entry["dstPod"] = entry["dstPod"] or record.dst_pod
        entry["allowed"] = entry["allowed"] and record.allowed
        entry["verdicts"][record.direction] = {
            "node": record.node, "verdict": record.verdict, "reason": record.reason, "policy": record.policy,
            "rule": record.rule}
    return list(found.values())


def service_map(namespace: str, pods: Iterable[Mapping], services: Iterable[Mapping],
                seen: Iterable[Mapping]) -> dict:
    """`namespace`'s workloads and Services, and the connections `seen` (as `connections` groups flow
    records) to or from its pods. A peer outside the namespace is a box of its own (its workload "ns/name",
    or the bare address for what is no pod)."""
    pods = list(pods)
    pod_workload = {object_key(p): workload_of(p) for p in pods}
    ip_pod = {(p.get("status") or {}).get("podIP"): object_key(p) for p in pods
              if (p.get("status") or {}).get("podIP") and not (p.get("spec") or {}).get("hostNetwork")}
    boxes: dict[str, dict] = {}
    for pod in pods:
        if _meta(pod).get("namespace") != namespace:
            continue
        box = boxes.setdefault(pod_workload[object_key(pod)], {
            "id": pod_workload[object_key(pod)], "kind": "workload", "name": pod_workload[object_key(pod)].split("/", 1)[1],
            "pods": [], "ready": 0})
        box["pods"].append(object_key(pod))
        box["ready"] += pod_ready(pod)
    for service in services:
        meta, spec = _meta(service), service.get("spec") or {}
        if meta.get("namespace") != namespace:
            continue
        selected = sorted({pod_workload[object_key(p)] for p in pods if _meta(p).get("namespace") == namespace
                           and _selects(spec.get("selector"), _meta(p).get("labels"))})
        boxes[f"service:{object_key(service)}"] = {
            "id": f"service:{object_key(service)}", "kind": "service", "name": meta.get("name"),
            "clusterIP": spec.get("clusterIP"), "selects": selected,
            "ports": [f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []]}

    def end(pod: str | None, ip: str) -> str:
        pod = pod or ip_pod.get(ip)
        return pod_workload.get(pod, pod) if pod else ip

    edges: dict[tuple[str, str], dict] = {}
    for conn in seen:
        src, dst = end(conn["srcPod"], conn["src"]), end(conn["dstPod"], conn["dst"])
        if not (src.startswith(f"{namespace}/") or dst.startswith(f"{namespace}/")):
            continue
        for peer in (src, dst):
            if peer not in boxes:
                boxes[peer] = {"id": peer, "kind": "peer", "name": peer}
        edge = edges.setdefault((src, dst), {"from": src, "to": dst, "allowed": 0, "denied": 0, "ports": {},
                                             "flows": []})
        edge["allowed" if conn["allowed"] else "denied"] += 1
        port = edge["ports"].setdefault(f"{conn['port']}/{conn['protocol']}", {"allowed": 0, "denied": 0})
        port["allowed" if conn["allowed"] else "denied"] += 1
        edge["flows"] = [*edge["flows"], conn][-EDGE_FLOWS:]
    for edge in edges.values():
        edge["verdict"] = ("denied" if not edge["allowed"] else "allowed" if not edge["denied"] else "mixed")
    order = {"workload": 0, "service": 1, "peer": 2}
    return {"namespace": namespace,
            "boxes": sorted(boxes.values(), key=lambda b: (order[b["kind"]], b["id"])),
            "edges": sorted(edges.values(), key=lambda e: (e["from"], e["to"]))}


# ---- the policy matrix ------------------------------------------------------------------------------


def matrix(static: Matrix, probed: Matrix | None, pods: Mapping[str, tuple[str, str]]) -> dict:
    """Each cell with what the policies say and, when probed, what the probe found; `disagree` where the
    two differ (a pod reaching itself loops back inside the pod, which no policy sees: such a cell is
    marked `self` and not counted as a disagreement)."""
    seen = {(c.src, c.dst, c.port, c.protocol): c.allowed for c in probed.cells} if probed else {}
    cells = []
    for cell in static.cells:
        found = seen.get((cell.src, cell.dst, cell.port, cell.protocol))
        cells.append({"from": cell.src, "to": cell.dst, "port": cell.port, "protocol": cell.protocol,
                      "policy": cell.allowed, "probed": found, "self": cell.src == cell.dst,
                      "disagree": found is not None and found != cell.allowed and cell.src != cell.dst})
    return {"pods": list(static.pods), "nodes": {p: pods[p][1] for p in static.pods if p in pods},
            "combinations": [{"port": port, "protocol": protocol} for port, protocol in static.combinations()],
            "probed": probed is not None, "cells": cells,
            "disagreements": sum(c["disagree"] for c in cells)}


# ---- a packet's journey -----------------------------------------------------------------------------


def packet_view(stage: str, packet: bytes | None) -> dict:
    """What the page shows of a stage's packet, as Wireshark's panes do: its layers with their fields,
    and its bytes in hex ({} for a stage that holds none)."""
    if packet is None:
        return {}
    return {"layers": [layer.as_dict() for layer in dissect_stage(stage, packet)],
            "hex": dissect.hex_dump(packet), "length": len(packet)}


def journey(src: str, src_node: str, destination: str, protocol: str, stages: Sequence[Mapping], *,
            split: int, far: int, far_node: str | None, answered: bool) -> dict:
    """The stages in the order they happened (as `podnet trace` prints them), each placed on its node:
    the source node's first `split` stages until the packet left, the `far` stages of the destination's
    node, then the source node's again (the reply, the result)."""

    def place(index: int) -> tuple[str | None, str]:
        if index < split:
            return src_node, "out"
        return (far_node, "far") if index < split + far else (src_node, "back")

    placed = [{"n": i + 1, "node": place(i)[0], "leg": place(i)[1], "stage": s["stage"], "detail": s["detail"],
               **packet_view(s["stage"], s.get("packet"))}
              for i, s in enumerate(stages)]
    return {"src": src, "destination": destination, "protocol": protocol,
            "nodes": [n for n in dict.fromkeys([src_node, far_node]) if n], "stages": placed, "answered": answered}
