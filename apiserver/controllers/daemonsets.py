"""What a DaemonSet should do, pure: as kube-controller-manager's DaemonSet controller.

One pod of the template on every node it should run on: the node has the template's `nodeSelector`
labels and the pod tolerates the node's NoSchedule and NoExecute taints. The pod carries the tolerations
every daemon pod gets (NoExecute `not-ready` and `unreachable`, so it stays on a node that stops
answering; NoSchedule pressure and `unschedulable`), and is bound to its node at creation
(`spec.nodeName`), not through the scheduler. A node with no pod gets one; extra pods on a node go (the
newest first); pods on nodes they should not run on, on nodes that are gone, or that failed, are deleted
(a failed one is made again). A NoSchedule taint the pod does not tolerate keeps a new pod off the node
but lets a running one stay; NoExecute removes it.

A template change is a new revision (`controller-revision-hash`); the RollingUpdate strategy deletes
old-revision pods, unready ones at once, ready ones while fewer than `maxUnavailable` daemon pods are
unavailable, and each node gets a pod of the new revision once its old one is gone.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from datetime import datetime

from . import ownerrefs
from .deployments import scaled_value, template_hash
from .replicasets import Plan, is_active, is_available, parse_time
from .scheduling import SCHEDULING_EFFECTS, is_ready, tolerates
from .statefulsets import REVISION_LABEL, revision_of

TEMPLATE_GENERATION_LABEL = "pod-template-generation"
# util.AddOrUpdateDaemonPodTolerations.
DEFAULT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"}
_UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


def _spec(obj: dict) -> dict:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _template(ds: dict) -> dict:
    return _spec(ds).get("template") or {}


def update_hash(ds: dict) -> str:
    return template_hash(_template(ds))


def pod_tolerations(pod_spec: dict) -> list[dict]:
    """The template's tolerations with those every daemon pod gets added (unless already there)."""
    tolerations = list(pod_spec.get("tolerations") or [])
    added = [*DEFAULT_TOLERATIONS, *([HOST_NETWORK_TOLERATION] if pod_spec.get("hostNetwork") else [])]
    for toleration in added:
        if not any(t.get("key") == toleration["key"] and t.get("effect") == toleration["effect"] for t in tolerations):
            tolerations.append(dict(toleration))
    return tolerations


def new_pod(ds: dict, node_name: str) -> dict:
    template = copy.deepcopy(_template(ds))
    template_meta = template.get("metadata") or {}
    labels = {**(template_meta.get("labels") or {}), REVISION_LABEL: update_hash(ds),
              TEMPLATE_GENERATION_LABEL: str(ds["metadata"].get("generation") or 1)}
    meta = {"generateName": f"{ds['metadata']['name']}-", "namespace": ds["metadata"]["namespace"],
            "labels": labels, "ownerReferences": [ownerrefs.new_controller_ref(ds)]}
    for field in ("annotations", "finalizers"):
        if template_meta.get(field):
            meta[field] = template_meta[field]
    pod_spec = template.get("spec") or {}
    pod_spec["tolerations"] = pod_tolerations(pod_spec)
    pod_spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pod_spec}


def _node_taints(node: dict) -> list[dict]:
    spec = node.get("spec") or {}
    taints = [t for t in spec.get("taints") or [] if t.get("effect") in SCHEDULING_EFFECTS]
    if spec.get("unschedulable") and not any(t.get("key") == _UNSCHEDULABLE_TAINT["key"] for t in taints):
        taints.append(_UNSCHEDULABLE_TAINT)
    return taints


def should_run(ds: dict, node: dict) -> tuple[bool, bool]:
    """(whether a new daemon pod should go on the node, whether one there may stay) — NodeShouldRunDaemonPod."""
    pod_spec = _template(ds).get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False, False
    tolerations = pod_tolerations(pod_spec)
    untolerated = [t for t in _node_taints(node) if not tolerates(tolerations, t)]
    return not untolerated, not any(t.get("effect") == "NoExecute" for t in untolerated)


def placement_changed(old: dict | None, new: dict | None) -> bool:
    """Whether a node event can change where daemon pods run: the node came or went, or its labels, taints
    or cordon changed (status updates, heartbeats, do not)."""
    if old is None or new is None:
        return True
    return ((old.get("metadata") or {}).get("labels"), old.get("spec")) != (
        (new.get("metadata") or {}).get("labels"), new.get("spec"))


def _oldest_first(pods: Iterable[dict]) -> list[dict]:
    def key(pod: dict) -> tuple:
        created = parse_time(pod["metadata"].get("creationTimestamp"))
        return (created.timestamp() if created else float("inf"), pod["metadata"]["name"])
    return sorted(pods, key=key)


def status(ds: dict, nodes: Sequence[dict], by_node: dict[str, list[dict]], now: datetime) -> dict:
    """The counts per node the controller reports (updateDaemonSetStatus), omitempty ones left out when 0."""
    min_ready = _spec(ds).get("minReadySeconds") or 0
    update = update_hash(ds)
    desired = current = misscheduled = ready = available = updated = 0
    for node in nodes:
        pods = _oldest_first(by_node.get(node["metadata"]["name"], []))
        wanted, _ = should_run(ds, node)
        if wanted:
            desired += 1
            if pods:
                current += 1
                ready += is_ready(pods[0])
                available += is_available(pods[0], min_ready, now)
                updated += revision_of(pods[0]) == update
        elif pods:
            misscheduled += 1
    result = {"currentNumberScheduled": current, "desiredNumberScheduled": desired,
              "numberMisscheduled": misscheduled, "numberReady": ready}
    optional = {"numberAvailable": available, "numberUnavailable": desired - available,
                "observedGeneration": ds["metadata"].get("generation") or 0, "updatedNumberScheduled": updated}
    return {**result, **{k: v for k, v in optional.items() if v}}


def plan(ds: dict, nodes: Sequence[dict], pods: Iterable[dict], now: datetime) -> Plan:
    """What to do about `ds` given the cluster's nodes and the pods of its namespace."""
    # Failed pods are claimed too (to be deleted and made again); terminating ones are on their way out.
    claim = ownerrefs.claim(ds, ownerrefs.selector_of(ds), (p for p in pods if not p["metadata"].get("deletionTimestamp")))
    by_node: dict[str, list[dict]] = {}
    for pod in claim.owned:
        by_node.setdefault((pod.get("spec") or {}).get("nodeName") or "", []).append(pod)
    result_status = status(ds, nodes, by_node, now)
    if ds["metadata"].get("deletionTimestamp"):
        return Plan(claim.adopt, claim.release, (), (), result_status)
    create: list[dict] = []
    delete: list[str] = []
    keep: list[dict] = []  # the one pod of each node it should run on
    for node in nodes:
        name = node["metadata"]["name"]
        node_pods = _oldest_first(by_node.pop(name, []))
        failed = [p for p in node_pods if not is_active(p)]
        running = [p for p in node_pods if is_active(p)]
        wanted, may_stay = should_run(ds, node)
        delete += [p["metadata"]["name"] for p in failed]
        if wanted and not running and not failed:
            create.append(new_pod(ds, name))
        elif may_stay and running:
            keep.append(running[0])
            delete += [p["metadata"]["name"] for p in running[1:]]
        else:
            delete += [p["metadata"]["name"] for p in running]
    for orphaned in by_node.values():  # on no node, or on nodes that are gone
        delete += [p["metadata"]["name"] for p in orphaned]
    delete += _rolling_update(ds, keep, sum(1 for n in nodes if should_run(ds, n)[0]), now)
    return Plan(claim.adopt, claim.release, tuple(create), tuple(delete), result_status)


def _rolling_update(ds: dict, kept: list[dict], desired: int, now: datetime) -> list[str]:
    strategy = _spec(ds).get("updateStrategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return []
    min_ready = _spec(ds).get("minReadySeconds") or 0
    budget = scaled_value((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), desired, round_up=True)
    budget -= max(0, desired - len(kept)) + sum(1 for p in kept if not is_available(p, min_ready, now))
    update = update_hash(ds)
    old = [p for p in kept if revision_of(p) != update]
    chosen = [p for p in old if not is_available(p, min_ready, now)]
    for pod in old:
        if budget <= 0:
            break
        if is_available(pod, min_ready, now):
            chosen.append(pod)
            budget -= 1
    return [p["metadata"]["name"] for p in chosen]
