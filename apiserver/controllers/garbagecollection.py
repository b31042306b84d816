"""What the garbage collector should do, pure: kube-controller-manager's garbage collector over
`metadata.ownerReferences`, given every object the collector sees.

- A dependent whose every owner is gone (no object with the owner's uid) is deleted, in the background
  (or as its own finalizers ask). An owner that is merely missing from the caches is not gone: the
  adapter confirms each absence with a live read before it acts (`Candidate.absent`).
- A dependent with a living owner keeps living; references to owners that are gone are removed from it.
- An owner deleted with propagationPolicy=Foreground carries the `foregroundDeletion` finalizer: its
  dependents are deleted (in the foreground themselves when they have dependents), and the finalizer is
  removed once no dependent that blocks its owner's deletion (blockOwnerDeletion) is left.
- An owner deleted with propagationPolicy=Orphan carries the `orphan` finalizer: every dependent loses
  its reference to it, then the finalizer is removed.

Objects are identified by uid. A reference to a kind podnet does not serve is never taken for absent.

`orphaned_pods` is the pod garbage collector's part: a pod bound to a node that no longer exists (its
kubelet will never finish it, Terminating or not) is deleted at once after a quarantine.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass

from podnet.apiserver.deletion import FOREGROUND_FINALIZER, ORPHAN_FINALIZER

from podnet.api.keys import object_key
from podnet.api.kinds import Kind, UnknownKind, for_object


@dataclass(frozen=True, slots=True)
class Ref:
    """Where an object is: enough to read, patch or delete it, and its uid for preconditions."""

    kind: Kind
    namespace: str | None
    name: str
    uid: str


@dataclass(frozen=True, slots=True)
class Delete:
    target: Ref
    policy: str  # Background | Foreground | Orphan


@dataclass(frozen=True, slots=True)
class SetOwners:
    """Replace the target's ownerReferences (None: remove them all)."""

    target: Ref
    resource_version: str
    owner_references: tuple[dict, ...] | None


@dataclass(frozen=True, slots=True)
class RemoveFinalizer:
    target: Ref
    resource_version: str
    finalizer: str
    remaining: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """An action that holds only if every owner in `absent` is really gone (checked live)."""

    action: Delete | SetOwners
    absent: tuple[Ref, ...]


@dataclass(frozen=True, slots=True)
class Decisions:
    actions: tuple[Delete | SetOwners | RemoveFinalizer, ...] = ()
    candidates: tuple[Candidate, ...] = ()


def ref_of(kind: Kind, obj: dict) -> Ref:
    meta = obj["metadata"]
    return Ref(kind, meta.get("namespace") if kind.namespaced else None, meta["name"], meta.get("uid", ""))


def owner_ref(dependent: Ref, reference: dict) -> Ref | None:
    """Where the owner named by a reference would be: in the dependent's namespace for a namespaced kind.
    None for a kind podnet does not serve (or a namespaced owner of a cluster-scoped dependent)."""
    try:
        kind = for_object({"apiVersion": reference.get("apiVersion"), "kind": reference.get("kind")})
    except UnknownKind:
        return None
    if kind.namespaced and dependent.namespace is None:
        return None
    return Ref(kind, dependent.namespace if kind.namespaced else None, str(reference.get("name") or ""),
               str(reference.get("uid") or ""))


def _deleting(obj: dict) -> bool:
    return bool(obj["metadata"].get("deletionTimestamp"))


def _finalizers(obj: dict) -> list[str]:
    return list(obj["metadata"].get("finalizers") or [])


def _own_policy(obj: dict) -> str:
    finalizers = _finalizers(obj)
    if ORPHAN_FINALIZER in finalizers:
        return "Orphan"
    if FOREGROUND_FINALIZER in finalizers:
        return "Foreground"
    return "Background"


def decide(objects: Iterable[tuple[Kind, dict]]) -> Decisions:
    by_uid: dict[str, tuple[Kind, dict]] = {}
    for kind, obj in objects:
        uid = obj["metadata"].get("uid")
        if uid:
            by_uid[uid] = (kind, obj)
    dependents: dict[str, list[tuple[Kind, dict, dict]]] = {}
    for kind, obj in by_uid.values():
        for reference in obj["metadata"].get("ownerReferences") or []:
            dependents.setdefault(str(reference.get("uid")), []).append((kind, obj, reference))

    actions: list[Delete | SetOwners | RemoveFinalizer] = []
    candidates: list[Candidate] = []
    for uid, (kind, obj) in by_uid.items():
        if _deleting(obj):
            actions += _finish_owner(kind, obj, dependents.get(uid, []))
            continue
        references = obj["metadata"].get("ownerReferences") or []
        if not references:
            continue
        target = ref_of(kind, obj)
        solid, waiting, absent = [], [], []
        for reference in references:
            owner = owner_ref(target, reference)
            found = by_uid.get(str(reference.get("uid")))
            if owner is None:
                solid.append(reference)  # unresolvable: never taken for gone
            elif found is None:
                absent.append((reference, owner))
            elif _deleting(found[1]) and FOREGROUND_FINALIZER in _finalizers(found[1]):
                waiting.append(reference)
            else:
                solid.append(reference)
        version = str(obj["metadata"].get("resourceVersion") or "")
        gone = tuple(owner for _, owner in absent)
        if solid:
            if absent:
                kept = tuple(r for r in references if all(r is not a for a, _ in absent))
                candidates.append(Candidate(SetOwners(target, version, kept), gone))
        elif waiting:
            policy = "Foreground" if dependents.get(target.uid) else "Background"
            action = Delete(target, policy)
            if absent:
                candidates.append(Candidate(action, gone))
            else:
                actions.append(action)
        else:
            candidates.append(Candidate(Delete(target, _own_policy(obj)), gone))
    return Decisions(tuple(actions), tuple(candidates))


def _finish_owner(kind: Kind, owner: dict, dependents: list[tuple[Kind, dict, dict]]) -> list:
    """An owner being deleted: orphan its dependents or delete them, then let it go."""
    finalizers = _finalizers(owner)
    target = ref_of(kind, owner)
    version = str(owner["metadata"].get("resourceVersion") or "")
    uid = target.uid

    def without(finalizer: str) -> RemoveFinalizer:
        return RemoveFinalizer(target, version, finalizer, tuple(f for f in finalizers if f != finalizer))

    if ORPHAN_FINALIZER in finalizers:
        if not dependents:
            return [without(ORPHAN_FINALIZER)]
        actions = []
        for dependent_kind, dependent, _ in dependents:
            kept = tuple(r for r in dependent["metadata"].get("ownerReferences") or [] if r.get("uid") != uid)
            actions.append(SetOwners(ref_of(dependent_kind, dependent),
                                     str(dependent["metadata"].get("resourceVersion") or ""), kept or None))
        return actions
    if FOREGROUND_FINALIZER in finalizers:
        blocking = [d for d in dependents if d[2].get("blockOwnerDeletion")]
        if not blocking:
            return [without(FOREGROUND_FINALIZER)]
        # Dependents are deleted through their own pass (an owner waiting for them is not solid); here
        # only the finalizer waits.
        return []
    return []


def orphaned_pods(pods: Iterable[dict], nodes: Container[str], missing_since: Mapping[str, float], now: float,
                  quarantine: float) -> tuple[dict[str, float], list[tuple[str, str, str, str]]]:
    """kube-controller-manager's PodGC for pods bound to a node that does not exist (deleted, or never
    registered): each is noted when first seen so (on the controller's clock `now`), and is due for a
    forced deletion once `quarantine` seconds have passed. Returns the new table of pod key → first seen,
    and the due pods as (namespace, name, uid, node)."""
    table: dict[str, float] = {}
    due = []
    for pod in pods:
        meta, node = pod["metadata"], (pod.get("spec") or {}).get("nodeName")
        if not node or node in nodes:
            continue
        key = object_key(pod)
        table[key] = missing_since.get(key, now)
        if now - table[key] >= quarantine:
            due.append((str(meta.get("namespace")), meta["name"], str(meta.get("uid") or ""), node))
    return table, sorted(due)
