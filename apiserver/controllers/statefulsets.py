"""What a StatefulSet should do, pure: as kube-controller-manager's StatefulSet controller.

Its pods have stable identities: `<set>-<ordinal>` for ordinals `spec.ordinals.start` up to `replicas` more,
each with the labels `statefulset.kubernetes.io/pod-name` and `apps.kubernetes.io/pod-index`, and
`hostname` = its name, `subdomain` = `spec.serviceName`, so that a headless Service of that name gives each
pod its own DNS name (`db-0.db.ns.svc.cluster.local`). A pod that is gone is made again with the same
name; a failed one is deleted first.

`OrderedReady` (the default) creates one pod at a time in ordinal order, each once the one before it is
Running and Ready, and removes the surplus from the highest ordinal down, one at a time, while all the
others are healthy. `Parallel` creates and deletes all at once. A template change is a new revision
(the `controller-revision-hash` label, `<set>-<hash of the template>`); the RollingUpdate strategy replaces
pods from the highest ordinal down to `partition`, one at a time, each once every pod is healthy.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from datetime import datetime

from . import ownerrefs
from .deployments import template_hash
from .replicasets import Plan, is_available, replicas_of
from .scheduling import is_ready

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"


def _spec(obj: dict) -> dict:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def start_ordinal(sts: dict) -> int:
    start = (_spec(sts).get("ordinals") or {}).get("start", 0)
    return start if isinstance(start, int) else 0


def ordinal_of(sts: dict, pod: dict) -> int | None:
    """The pod's ordinal when its name is `<set>-<number>`, else None (not a member of the set)."""
    match = re.fullmatch(re.escape(sts["metadata"]["name"]) + r"-(0|[1-9][0-9]*)", pod["metadata"]["name"])
    return int(match.group(1)) if match else None


def update_revision(sts: dict) -> str:
    return f"{sts['metadata']['name']}-{template_hash(_spec(sts).get('template') or {})}"


def revision_of(pod: dict) -> str | None:
    return (pod["metadata"].get("labels") or {}).get(REVISION_LABEL)


def is_terminating(pod: dict) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def is_failed(pod: dict) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Failed", "Succeeded")


def is_healthy(pod: dict) -> bool:
    """Running and Ready, and not on its way out (isRunningAndReady, !isTerminating)."""
    return (pod.get("status") or {}).get("phase") == "Running" and is_ready(pod) and not is_terminating(pod)


def new_pod(sts: dict, ordinal: int) -> dict:
    """The pod of `ordinal`, from the template, with its identity, revision and controller reference."""
    spec = _spec(sts)
    template = copy.deepcopy(spec.get("template") or {})
    template_meta = template.get("metadata") or {}
    name = f"{sts['metadata']['name']}-{ordinal}"
    labels = {**(template_meta.get("labels") or {}), POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ordinal),
              REVISION_LABEL: update_revision(sts)}
    meta = {"name": name, "namespace": sts["metadata"]["namespace"], "labels": labels,
            "ownerReferences": [ownerrefs.new_controller_ref(sts)]}
    for field in ("annotations", "finalizers"):
        if template_meta.get(field):
            meta[field] = template_meta[field]
    pod_spec = template.get("spec") or {}
    pod_spec["hostname"] = name
    if spec.get("serviceName"):
        pod_spec["subdomain"] = spec["serviceName"]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def status(sts: dict, pods: Iterable[dict], now: datetime) -> dict:
    """The status the controller reports about the pods it owns; the current revision becomes the update
    revision once every pod is of it and ready (completeRollingUpdate)."""
    pods = list(pods)
    update = update_revision(sts)
    current = (sts.get("status") or {}).get("currentRevision") or update
    min_ready = _spec(sts).get("minReadySeconds") or 0
    alive = [p for p in pods if not is_terminating(p)]
    counts = {
        "replicas": len(pods),
        "readyReplicas": sum(1 for p in pods if is_healthy(p)),
        "availableReplicas": sum(1 for p in pods if is_healthy(p) and is_available(p, min_ready, now)),
        "currentReplicas": sum(1 for p in alive if revision_of(p) == current),
        "updatedReplicas": sum(1 for p in alive if revision_of(p) == update),
    }
    rolling = (_spec(sts).get("updateStrategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
    if rolling and counts["updatedReplicas"] == counts["replicas"] == counts["readyReplicas"]:
        current, counts["currentReplicas"] = update, counts["updatedReplicas"]
    # replicas and availableReplicas are always written (no omitempty in StatefulSetStatus), the others when set.
    always = ("replicas", "availableReplicas")
    return {"observedGeneration": sts["metadata"].get("generation") or 0,
            **{k: v for k, v in counts.items() if v or k in always},
            "currentRevision": current, "updateRevision": update,
            "collisionCount": (sts.get("status") or {}).get("collisionCount") or 0}


def plan(sts: dict, pods: Iterable[dict], now: datetime) -> Plan:
    """What to do about `sts` given the pods of its namespace (terminating ones included: a name is
    free again only once its old pod is gone)."""
    members = [p for p in pods if ordinal_of(sts, p) is not None]
    claim = ownerrefs.claim(sts, ownerrefs.selector_of(sts), members)
    owned = {ordinal_of(sts, p): p for p in claim.owned}
    result_status = status(sts, owned.values(), now)
    if sts["metadata"].get("deletionTimestamp"):
        return Plan(claim.adopt, claim.release, (), (), result_status)
    spec = _spec(sts)
    ordered = spec.get("podManagementPolicy", "OrderedReady") != "Parallel"
    start = start_ordinal(sts)
    wanted = range(start, start + replicas_of(sts))
    create: list[dict] = []
    delete: list[str] = []
    blocked = False
    for ordinal in wanted:
        pod = owned.get(ordinal)
        if pod is None:
            create.append(new_pod(sts, ordinal))
            blocked = ordered
        elif is_failed(pod) and not is_terminating(pod):
            delete.append(pod["metadata"]["name"])  # made again once it is gone
            blocked = ordered
        elif not is_healthy(pod):
            blocked = ordered
        if blocked:
            break
    if not blocked:
        condemned = sorted((o for o in owned if o not in wanted), reverse=True)
        for ordinal in condemned:
            pod = owned[ordinal]
            if not is_terminating(pod):
                delete.append(pod["metadata"]["name"])
            if ordered:
                break
        if not condemned:
            delete.extend(_rolling_update(sts, owned, wanted))
    return Plan(claim.adopt, claim.release, tuple(create), tuple(delete), result_status)


def _rolling_update(sts: dict, owned: dict[int | None, dict], wanted: range) -> list[str]:
    """The pod to replace with one of the new revision: the highest ordinal at or above the partition that
    is of an older one, once every pod is healthy (it is made again of the new revision once gone)."""
    strategy = _spec(sts).get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return []
    if not all(is_healthy(owned[o]) for o in wanted if o in owned):
        return []
    partition = (strategy.get("rollingUpdate") or {}).get("partition") or 0
    update = update_revision(sts)
    for ordinal in reversed(wanted):
        if ordinal < wanted.start + partition:
            break
        pod = owned.get(ordinal)
        if pod is not None and revision_of(pod) != update:
            return [pod["metadata"]["name"]]
    return []
