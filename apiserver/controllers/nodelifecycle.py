"""Node lifecycle decisions, pure: which nodes stopped heartbeating, which came back, which pods to mark
not ready and which to evict.

A node's heartbeat is its Lease in `kube-node-lease` (and its Ready condition's lastHeartbeatTime). As
kube-controller-manager does, the controller never compares a heartbeat timestamp with its own clock
(hosts' clocks differ): it notes *when it saw the heartbeat change*, on its own clock `now`. A node not seen
renewing for longer than the grace period gets its Ready condition set to Unknown (reason
NodeStatusUnknown) and the `node.kubernetes.io/unreachable:NoExecute` taint; its ready pods get Ready=False;
after the eviction timeout (or a pod's own tolerationSeconds for that taint) its pods are deleted.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from podnet.api.keys import object_key

from .scheduling import condition, tolerates

UNREACHABLE_TAINT_KEY = "node.kubernetes.io/unreachable"
UNKNOWN_REASON = "NodeStatusUnknown"
NODE_LEASE_NAMESPACE = "kube-node-lease"


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The last heartbeat the controller saw from a node, and when (on the controller's clock)."""

    signal: tuple[str | None, str | None]  # (lease renewTime, Ready lastHeartbeatTime)
    observed_at: float
    renewed: bool  # the signal changed since the controller first saw the node


@dataclass(frozen=True, slots=True)
class Decisions:
    mark_unreachable: tuple[str, ...] = ()  # node names
    mark_reachable: tuple[str, ...] = ()
    pods_not_ready: tuple[str, ...] = ()  # pod keys "namespace/name"
    pods_to_evict: tuple[str, ...] = ()


def _signal(node: dict, lease: dict | None) -> tuple[str | None, str | None]:
    ready = condition(node, "Ready") or {}
    return ((lease or {}).get("spec") or {}).get("renewTime"), ready.get("lastHeartbeatTime")


def observe(
    previous: Mapping[str, Heartbeat], nodes: Iterable[dict], leases: Mapping[str, dict], now: float
) -> dict[str, Heartbeat]:
    """The heartbeat table after looking at the current Nodes and Leases (keyed by node name). A node seen
    for the first time counts as just heard from, so a restarted controller gives every node a full grace
    period."""
    table = {}
    for node in nodes:
        name = node["metadata"]["name"]
        signal = _signal(node, leases.get(name))
        before = previous.get(name)
        if before is None:
            table[name] = Heartbeat(signal, now, renewed=False)
        elif before.signal != signal:
            table[name] = Heartbeat(signal, now, renewed=True)
        else:
            table[name] = before
    return table


def _has_unreachable_taint(node: dict) -> bool:
    return any(t.get("key") == UNREACHABLE_TAINT_KEY and t.get("effect") == "NoExecute"
               for t in (node.get("spec") or {}).get("taints") or [])


def _marked_unknown(node: dict) -> bool:
    ready = condition(node, "Ready") or {}
    return ready.get("status") == "Unknown" and ready.get("reason") == UNKNOWN_REASON


def eviction_delay(pod: dict, default: float) -> float | None:
    """Seconds a pod stays on an unreachable node before eviction: its own tolerationSeconds for the
    unreachable taint when it has one (None: tolerated forever), else the controller's default (which is
    what Kubernetes' DefaultTolerationSeconds admission gives every pod)."""
    taint = {"key": UNREACHABLE_TAINT_KEY, "effect": "NoExecute"}
    tolerations = [t for t in (pod.get("spec") or {}).get("tolerations") or [] if tolerates([t], taint)]
    if not tolerations:
        return default
    seconds = [t.get("tolerationSeconds") for t in tolerations]
    if any(s is None for s in seconds):
        return None
    return float(max(seconds))


def decide(
    nodes: Iterable[dict],
    heartbeats: Mapping[str, Heartbeat],
    pods: Iterable[dict],
    now: float,
    *,
    grace_period: float,
    eviction_timeout: float,
) -> Decisions:
    mark_unreachable, mark_reachable = [], []
    unreachable_since: dict[str, float] = {}
    for node in nodes:
        name = node["metadata"]["name"]
        beat = heartbeats.get(name)
        if beat is None:
            continue
        if now - beat.observed_at > grace_period:
            unreachable_since[name] = beat.observed_at + grace_period
            if not (_marked_unknown(node) and _has_unreachable_taint(node)):
                mark_unreachable.append(name)
        elif beat.renewed and (_marked_unknown(node) or _has_unreachable_taint(node)):
            mark_reachable.append(name)

    pods_not_ready, pods_to_evict = [], []
    for pod in pods:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        since = unreachable_since.get(spec.get("nodeName") or "")
        if since is None or meta.get("deletionTimestamp"):
            continue
        key = object_key(pod)
        ready = condition(pod, "Ready") or {}
        if ready.get("status") == "True":
            pods_not_ready.append(key)
        delay = eviction_delay(pod, eviction_timeout)
        if delay is not None and now - since >= delay:
            pods_to_evict.append(key)
    return Decisions(tuple(sorted(mark_unreachable)), tuple(sorted(mark_reachable)),
                     tuple(sorted(pods_not_ready)), tuple(sorted(pods_to_evict)))


# The object changes, given a wall-clock timestamp ("2026-01-02T03:04:05Z") to write into them.


def _set_condition(obj: dict, new: dict, timestamp: str) -> None:
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    for cond in conditions:
        if cond.get("type") == new["type"]:
            if cond.get("status") != new["status"]:
                cond["lastTransitionTime"] = timestamp
            cond.update(new)
            return
    conditions.append({**new, "lastTransitionTime": timestamp})


def node_spec_unreachable(node: dict, timestamp: str) -> dict:
    """The node with the unreachable NoExecute taint (spec: written with an update)."""
    updated = copy.deepcopy(node)
    taints = updated.setdefault("spec", {}).setdefault("taints", [])
    if not _has_unreachable_taint(updated):
        taints.append({"key": UNREACHABLE_TAINT_KEY, "effect": "NoExecute", "timeAdded": timestamp})
    return updated


def node_status_unknown(node: dict, timestamp: str) -> dict:
    """The node with its Ready condition Unknown (status: written with an update of the status)."""
    updated = copy.deepcopy(node)
    _set_condition(updated, {"type": "Ready", "status": "Unknown", "reason": UNKNOWN_REASON,
                             "message": "Kubelet stopped posting node status."}, timestamp)
    return updated


def node_spec_reachable(node: dict) -> dict:
    updated = copy.deepcopy(node)
    spec = updated.setdefault("spec", {})
    remaining = [t for t in spec.get("taints") or [] if t.get("key") != UNREACHABLE_TAINT_KEY]
    if remaining:
        spec["taints"] = remaining
    else:
        spec.pop("taints", None)
    return updated


def node_status_ready(node: dict, timestamp: str) -> dict:
    """Ready again. lastHeartbeatTime is left alone: it is the node's own heartbeat, not ours."""
    updated = copy.deepcopy(node)
    _set_condition(updated, {"type": "Ready", "status": "True", "reason": "KubeletReady",
                             "message": "node heartbeats resumed"}, timestamp)
    return updated


def pod_status_not_ready(pod: dict, timestamp: str) -> dict:
    updated = copy.deepcopy(pod)
    _set_condition(updated, {"type": "Ready", "status": "False", "reason": "NodeNotReady"}, timestamp)
    return updated
