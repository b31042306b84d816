"""What a ReplicaSet should do, pure: as kube-controller-manager's ReplicaSet controller.

A ReplicaSet claims the active pods of its namespace that its selector picks (`ownerrefs.claim`), creates
pods from its template when it has fewer than `spec.replicas` (named by the API server from
`generateName: <replicaset>-`, so `<replicaset>-<5 random characters>`) and deletes the least useful when
it has more, and reports how many of its pods exist, carry all its template's labels, are ready, and have
been ready for `minReadySeconds` (available).

The least useful pod goes first (Kubernetes' ActivePodsWithRanks): unscheduled before scheduled, Pending
before Unknown before Running, not ready before ready, lower `controller.kubernetes.io/pod-deletion-cost`
first, more pods of the same workload on its node first, ready for a shorter time first, more restarts
first, newer first.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from . import ownerrefs
from .scheduling import condition, is_ready

DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
# At most this many pods are created or deleted by one pass, as kube-controller-manager's burstReplicas.
BURST_REPLICAS = 500
_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def parse_time(text: object) -> datetime | None:
    """An RFC 3339 timestamp as the API writes them (with or without fractional seconds)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_active(pod: dict) -> bool:
    """Counts toward a ReplicaSet: not being deleted, not finished (controller.IsPodActive)."""
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in (
        "Succeeded", "Failed")


def is_available(pod: dict, min_ready_seconds: int, now: datetime) -> bool:
    """Ready, and for longer than `min_ready_seconds` (podutil.IsPodAvailable)."""
    if not is_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    return since is not None and since + timedelta(seconds=min_ready_seconds) < now


def _spec(obj: dict) -> dict:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def replicas_of(obj: dict) -> int:
    """spec.replicas of a ReplicaSet or Deployment (1 when unset, as defaulting makes it)."""
    value = _spec(obj).get("replicas", 1)
    return value if isinstance(value, int) else 1


def pod_from_template(replicaset: dict) -> dict:
    """A new pod as controller.GetPodFromTemplate makes it: the template's labels, annotations,
    finalizers and spec, the ReplicaSet's controller reference, a name the API server completes."""
    template = copy.deepcopy(_spec(replicaset).get("template") or {})
    template_meta = template.get("metadata") or {}
    meta = {"generateName": f"{replicaset['metadata']['name']}-", "namespace": replicaset["metadata"]["namespace"],
            "ownerReferences": [ownerrefs.new_controller_ref(replicaset)]}
    for field in ("labels", "annotations", "finalizers"):
        if template_meta.get(field):
            meta[field] = template_meta[field]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}


def _deletion_cost(pod: dict) -> int:
    try:
        return int(((pod["metadata"].get("annotations") or {}).get(DELETION_COST_ANNOTATION)) or 0)
    except ValueError:
        return 0


def _restarts(pod: dict) -> int:
    return max((s.get("restartCount") or 0 for s in (pod.get("status") or {}).get("containerStatuses") or []),
               default=0)


def deletion_order(pods: Sequence[dict], related: Iterable[dict] = ()) -> list[dict]:
    """`pods` with the ones to delete first first. `related` are the pods of the same workload (the other
    ReplicaSets of its Deployment) that count when ranking how doubled-up a node is."""
    on_node = Counter((p.get("spec") or {}).get("nodeName") or "" for p in [*pods, *related] if is_active(p))

    def key(pod: dict) -> tuple:
        node = (pod.get("spec") or {}).get("nodeName") or ""
        ready = is_ready(pod)
        ready_since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime")) if ready else None
        created = parse_time(pod["metadata"].get("creationTimestamp"))
        return (
            bool(node),
            _PHASE_RANK.get((pod.get("status") or {}).get("phase") or "Pending", 0),
            ready,
            _deletion_cost(pod),
            -on_node[node],
            -ready_since.timestamp() if ready_since else float("-inf"),
            -_restarts(pod),
            -created.timestamp() if created else float("-inf"),
        )

    return sorted(pods, key=key)


def status(replicaset: dict, pods: Iterable[dict], now: datetime) -> dict:
    """The status the controller reports, zero counts left out as the API's omitempty fields are."""
    template_labels = ((_spec(replicaset).get("template") or {}).get("metadata") or {}).get("labels") or {}
    min_ready = _spec(replicaset).get("minReadySeconds") or 0
    pods = list(pods)
    counts = {
        "fullyLabeledReplicas": sum(1 for p in pods if template_labels.items() <= (p["metadata"].get("labels") or {}).items()),
        "readyReplicas": sum(1 for p in pods if is_ready(p)),
        "availableReplicas": sum(1 for p in pods if is_available(p, min_ready, now)),
        "observedGeneration": replicaset["metadata"].get("generation") or 0,
    }
    result = {"replicas": len(pods), **{k: v for k, v in counts.items() if v}}
    conditions = (replicaset.get("status") or {}).get("conditions")
    if conditions:
        result["conditions"] = conditions
    return result


def next_availability(replicaset: dict, pods: Iterable[dict], now: datetime) -> float | None:
    """Seconds until the next ready pod counts as available (under minReadySeconds), so that the status
    is looked at again then; None when no pod is waiting."""
    min_ready = _spec(replicaset).get("minReadySeconds") or 0
    waits = []
    for pod in pods:
        since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
        if min_ready and is_ready(pod) and since is not None and not is_available(pod, min_ready, now):
            waits.append((since + timedelta(seconds=min_ready) - now).total_seconds())
    return max(0.0, min(waits)) + 0.5 if waits else None


@dataclass(frozen=True, slots=True)
class Plan:
    adopt: tuple[dict, ...]  # pods to update with this ReplicaSet's controller reference added
    release: tuple[dict, ...]  # pods to update with it removed
    create: tuple[dict, ...]  # new pods (generateName)
    delete: tuple[str, ...]  # pod names
    status: dict


def plan(replicaset: dict, pods: Iterable[dict], now: datetime, related: Iterable[dict] = ()) -> Plan:
    """What to do about `replicaset` given the pods of the cluster (others' pods are ignored)."""
    claim = ownerrefs.claim(replicaset, ownerrefs.selector_of(replicaset), (p for p in pods if is_active(p)))
    owned = list(claim.owned)
    create: list[dict] = []
    delete: list[str] = []
    if not replicaset["metadata"].get("deletionTimestamp"):
        diff = len(owned) - replicas_of(replicaset)
        if diff < 0:
            create = [pod_from_template(replicaset) for _ in range(min(-diff, BURST_REPLICAS))]
        elif diff > 0:
            delete = [p["metadata"]["name"] for p in deletion_order(owned, related)[: min(diff, BURST_REPLICAS)]]
    return Plan(claim.adopt, claim.release, tuple(create), tuple(delete), status(replicaset, owned, now))
