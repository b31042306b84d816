"""What a Deployment's pods should be, pure.

podnet serves no ReplicaSet kind, so the Deployment owns its pods directly; they are named and labelled as
Kubernetes names them through the ReplicaSet: `<deployment>-<pod-template-hash>-<5 random characters>` with
the label `pod-template-hash`. Lost pods are replaced by new ones (new names, so new IPs). A changed
template rolls forward: pods of the new template are created, and pods of older templates are removed as
the new ones become ready (all at once first under the Recreate strategy).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .scheduling import is_ready

TEMPLATE_HASH_LABEL = "pod-template-hash"
# Kubernetes' rand.String alphabet: no vowels (no words) and no look-alike characters.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(text: str) -> str:
    return "".join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in text)


def template_hash(template: dict, collision_count: int = 0) -> str:
    """FNV-1a (32 bit) of the canonical pod template, encoded as Kubernetes encodes pod-template-hash."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count:
        data += str(collision_count).encode()
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(value))


def random_suffix(rng: random.Random) -> str:
    return "".join(rng.choice(SAFE_ALPHABET) for _ in range(5))


def _owned_by(pod: dict, uid: str) -> bool:
    return any(ref.get("uid") == uid and ref.get("controller") for ref in pod["metadata"].get("ownerReferences") or [])


def owned_pods(deployment: dict, pods: Iterable[dict]) -> list[dict]:
    meta = deployment["metadata"]
    return [p for p in pods if p["metadata"].get("namespace") == meta["namespace"] and _owned_by(p, meta.get("uid"))]


def _active(pod: dict) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get("phase") not in (
        "Succeeded", "Failed")


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def removal_order(pods: Iterable[dict]) -> list[dict]:
    """Pods to remove first come first, as Kubernetes' ActivePods ordering: unscheduled before scheduled,
    Pending before Unknown before Running, not ready before ready, newest before oldest."""
    newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp") or "", reverse=True)
    return sorted(newest_first, key=lambda p: (
        bool((p.get("spec") or {}).get("nodeName")),
        _PHASE_RANK.get((p.get("status") or {}).get("phase") or "Pending", 0),
        is_ready(p),
    ))


def new_pod(deployment: dict, hash_value: str, suffix: str) -> dict:
    meta = deployment["metadata"]
    template = copy.deepcopy((deployment.get("spec") or {}).get("template") or {})
    template_meta = template.get("metadata") or {}
    pod_meta = {
        "name": f"{meta['name']}-{hash_value}-{suffix}",
        "namespace": meta["namespace"],
        "labels": {**(template_meta.get("labels") or {}), TEMPLATE_HASH_LABEL: hash_value},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": meta["name"],
                             "uid": meta.get("uid", ""), "controller": True, "blockOwnerDeletion": True}],
    }
    if template_meta.get("annotations"):
        pod_meta["annotations"] = template_meta["annotations"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": template.get("spec") or {}}


@dataclass(frozen=True, slots=True)
class Plan:
    create: tuple[dict, ...]
    delete: tuple[str, ...]  # pod names
    status: dict


def max_unavailable(deployment: dict) -> int:
    """How many replicas may be unavailable while the Deployment still counts as Available: the rolling
    update's maxUnavailable (a number or a percentage rounded down; 25% by default), 0 for Recreate."""
    spec = deployment.get("spec") or {}
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    replicas = spec.get("replicas", 1)
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%") and value[:-1].isascii() and value[:-1].isdigit():
        return replicas * int(value[:-1]) // 100
    if isinstance(value, int):
        return min(value, replicas)
    return 0


def _condition(previous: list[dict], kind: str, status: str, reason: str, message: str, timestamp: str) -> dict:
    """A condition that keeps its times while nothing about it changes, so a resync writes nothing."""
    before = next((c for c in previous if c.get("type") == kind), None)
    condition = {"type": kind, "status": status, "reason": reason, "message": message,
                 "lastUpdateTime": timestamp, "lastTransitionTime": timestamp}
    if before is not None and before.get("status") == status:
        condition["lastTransitionTime"] = before.get("lastTransitionTime", timestamp)
        if before.get("reason") == reason and before.get("message") == message:
            condition["lastUpdateTime"] = before.get("lastUpdateTime", timestamp)
    return condition


def conditions(deployment: dict, status: dict, timestamp: str) -> list[dict]:
    """Available and Progressing, as `kubectl wait --for=condition=Available` and `rollout status` read
    them."""
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    previous = (deployment.get("status") or {}).get("conditions") or []
    name = deployment["metadata"]["name"]
    if status["availableReplicas"] >= replicas - max_unavailable(deployment):
        available = _condition(previous, "Available", "True", "MinimumReplicasAvailable",
                               "Deployment has minimum availability.", timestamp)
    else:
        available = _condition(previous, "Available", "False", "MinimumReplicasUnavailable",
                               "Deployment does not have minimum availability.", timestamp)
    if status["updatedReplicas"] == replicas == status["availableReplicas"] == status["replicas"]:
        progressing = _condition(previous, "Progressing", "True", "NewReplicaSetAvailable",
                                 f'Deployment "{name}" has successfully progressed.', timestamp)
    else:
        progressing = _condition(previous, "Progressing", "True", "ReplicaSetUpdated",
                                 f'Deployment "{name}" is progressing.', timestamp)
    return [available, progressing]


def plan(deployment: dict, pods: Iterable[dict], suffix: Callable[[], str], timestamp: str) -> Plan:
    """Pods to create, pods to delete and the status to report, given the pods the Deployment owns (or
    every pod: the unowned are ignored). `timestamp` (wall clock, RFC 3339) goes into new conditions."""
    spec = deployment.get("spec") or {}
    replicas = spec.get("replicas", 1)
    hash_value = template_hash(spec.get("template") or {})
    owned = owned_pods(deployment, pods)
    active = [p for p in owned if _active(p)]
    current = [p for p in active if p["metadata"].get("labels", {}).get(TEMPLATE_HASH_LABEL) == hash_value]
    old = [p for p in active if p not in current]
    current_ready = sum(1 for p in current if is_ready(p))

    delete: list[str] = []
    if (spec.get("strategy") or {}).get("type") == "Recreate":
        delete += [p["metadata"]["name"] for p in old]
        to_create = 0 if old else max(0, replicas - len(current))
    else:
        # Old pods stay until enough new ones serve: the ready count never drops because of a rollout.
        keep_old = max(0, replicas - current_ready)
        delete += [p["metadata"]["name"] for p in removal_order(old)[: max(0, len(old) - keep_old)]]
        to_create = max(0, replicas - len(current))
    if len(current) > replicas:
        delete += [p["metadata"]["name"] for p in removal_order(current)[: len(current) - replicas]]

    taken = {p["metadata"]["name"] for p in owned}
    create = []
    while len(create) < to_create:
        pod = new_pod(deployment, hash_value, suffix())
        if pod["metadata"]["name"] not in taken:
            taken.add(pod["metadata"]["name"])
            create.append(pod)

    ready = sum(1 for p in active if is_ready(p))
    status = {
        "observedGeneration": deployment["metadata"].get("generation", 1),
        "replicas": len(active),
        "updatedReplicas": len(current),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, replicas - ready),
    }
    status["conditions"] = conditions(deployment, status, timestamp)
    return Plan(tuple(create), tuple(delete), status)
