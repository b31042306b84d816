"""Where a pending pod goes: the scheduler's filter and score, pure.

Filter: the node is Ready, not cordoned, matches the pod's `nodeName` and `nodeSelector`, and every
NoSchedule / NoExecute taint on it is tolerated. Score: fewest pods first; ties go to the lowest node name,
so that the same cluster state always gives the same answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SCHEDULING_EFFECTS = ("NoSchedule", "NoExecute")


def condition(obj: dict, condition_type: str) -> dict | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == condition_type:
            return cond
    return None


def is_ready(obj: dict) -> bool:
    """A Node's or a Pod's Ready condition is True."""
    cond = condition(obj, "Ready")
    return cond is not None and cond.get("status") == "True"


def tolerates(tolerations: Iterable[dict], taint: dict) -> bool:
    """Kubernetes' `Toleration.ToleratesTaint`: empty effect matches every effect; operator Exists with an
    empty key matches every taint; Equal (the default) needs the same value."""
    for toleration in tolerations:
        effect = toleration.get("effect") or ""
        if effect and effect != taint.get("effect"):
            continue
        key = toleration.get("key") or ""
        operator = toleration.get("operator") or "Equal"
        if operator == "Exists":
            if not key or key == taint.get("key"):
                return True
        elif key == taint.get("key") and (toleration.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def fits(pod: dict, node: dict) -> bool:
    spec = pod.get("spec") or {}
    node_spec = node.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    tolerations = spec.get("tolerations") or []
    if not is_ready(node):
        return False
    unschedulable_taint = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}
    if node_spec.get("unschedulable") and not tolerates(tolerations, unschedulable_taint):
        return False
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    return all(
        tolerates(tolerations, taint)
        for taint in node_spec.get("taints") or []
        if taint.get("effect") in SCHEDULING_EFFECTS
    )


def choose_node(pod: dict, nodes: Iterable[dict], pods_per_node: Mapping[str, int]) -> str | None:
    """The node the pod should be bound to, or None when no node fits (the pod stays Pending)."""
    candidates = [n for n in nodes if fits(pod, n)]
    if not candidates:
        return None
    best = min(candidates, key=lambda n: (pods_per_node.get(n["metadata"]["name"], 0), n["metadata"]["name"]))
    return best["metadata"]["name"]


def needs_scheduling(pod: dict) -> bool:
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    return (
        not spec.get("nodeName")
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
        and phase not in ("Succeeded", "Failed")
        and spec.get("schedulerName", "default-scheduler") == "default-scheduler"
    )


def count_pods_per_node(pods: Iterable[dict]) -> dict[str, int]:
    """Pods that still occupy their node: bound, and not finished."""
    counts: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            counts[node] = counts.get(node, 0) + 1
    return counts
