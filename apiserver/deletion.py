"""What a DELETE does to an object, pure: kube-apiserver's generic registry (store.go `Delete`,
rest/delete.go `BeforeDelete`, the pod strategy's `CheckGracefulDelete`) without the storage.

Invariants a reader must keep:
- An object leaves storage only when it has no finalizers and no grace period left. Otherwise a delete
  writes `deletionTimestamp` (and `deletionGracePeriodSeconds`) and the object lingers: until the last
  finalizer is removed by an update (`removed_by_update`), or, for a pod, until its kubelet deletes it
  again with a grace period of 0.
- Only pods delete gracefully. A pod's grace period is the request's `gracePeriodSeconds`, else its
  `spec.terminationGracePeriodSeconds`; 0 when it is bound to no node or has finished; a deletion in
  progress may only be shortened.
- `propagationPolicy` becomes finalizers for the garbage collector: Orphan → `orphan`, Foreground →
  `foregroundDeletion`, Background → neither. Without a policy the object's own finalizers decide, and
  the default is Background. Events take no part in garbage collection.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from podnet.apiserver import status
from podnet.apiserver.status import ApiError, Cause

from podnet.api.kinds import Kind

ORPHAN_FINALIZER = "orphan"
FOREGROUND_FINALIZER = "foregroundDeletion"
POLICIES = ("Foreground", "Background", "Orphan")
# Kinds whose delete answers with the deleted object rather than a Status (ReturnDeletedObject).
RETURNS_DELETED_OBJECT = frozenset({"Pod", "Service", "Namespace"})
# Kinds whose strategy answers rest.Unsupported for DefaultGarbageCollectionPolicy.
NOT_COLLECTED = frozenset({"Event"})


@dataclass(frozen=True, slots=True)
class DeleteOptions:
    propagation_policy: str | None = None
    orphan_dependents: bool | None = None
    grace_period: int | None = None
    preconditions: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = False


def _invalid(message: str, field_path: str) -> ApiError:
    details = {"group": "meta.k8s.io", "kind": "DeleteOptions",
               "causes": [{"reason": "FieldValueNotSupported", "message": message, "field": field_path}]}
    return ApiError(status.status(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: {field_path}: {message}',
                                  details))


def _integer(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise status.bad_request(f"{what}: must be an integer")
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if not (digits.isascii() and digits.isdigit()):
            raise status.bad_request(f'{what}: invalid value "{value}": must be an integer')
        return int(text)
    return value


def parse_options(body: object, query: Mapping[str, str]) -> DeleteOptions:
    """DeleteOptions from a DELETE's body, or from its query when the body has none (as kube-apiserver
    takes them: `?gracePeriodSeconds=0&propagationPolicy=Orphan&dryRun=All`)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise status.bad_request("DeleteOptions must be an object")
    source: Mapping[str, object] = body if any(
        k in body for k in ("propagationPolicy", "orphanDependents", "gracePeriodSeconds", "dryRun", "preconditions")
    ) else query
    policy = source.get("propagationPolicy")
    if policy is not None and policy not in POLICIES:
        supported = ", ".join(f'"{p}"' for p in POLICIES)
        raise _invalid(f'Unsupported value: "{policy}": supported values: {supported}, "nil"', "propagationPolicy")
    orphan = source.get("orphanDependents")
    if isinstance(orphan, str):
        orphan = {"true": True, "false": False}.get(orphan.lower(), orphan)
    if orphan is not None and not isinstance(orphan, bool):
        raise status.bad_request("orphanDependents: must be a boolean")
    if orphan is not None and policy is not None:
        raise _invalid("orphanDependents and deletionPropagation cannot be both set", "propagationPolicy")
    grace = source.get("gracePeriodSeconds")
    grace = None if grace is None else _integer(grace, "gracePeriodSeconds")
    dry_run = source.get("dryRun") or []
    if isinstance(dry_run, str):
        dry_run = [dry_run]
    if not isinstance(dry_run, list) or any(v != "All" for v in dry_run):
        raise status.bad_request(f'dryRun: Unsupported value: {dry_run!r}: supported values: "All"')
    preconditions = body.get("preconditions") or {}
    if not isinstance(preconditions, dict):
        raise status.bad_request("preconditions must be an object")
    return DeleteOptions(policy, orphan, grace, preconditions, bool(dry_run))


@dataclass(frozen=True, slots=True)
class Plan:
    """`remove`: take the object out of storage now. `write`: store `obj` (marked as deleting) and let it
    linger. `pending`: a graceful deletion is already under way and this request changes nothing."""

    action: str  # "remove" | "write" | "pending"
    obj: dict


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _orphans(finalizers: list[str], options: DeleteOptions) -> bool:
    if options.orphan_dependents is not None:
        return options.orphan_dependents
    if options.propagation_policy is not None:
        return options.propagation_policy == "Orphan"
    for finalizer in finalizers:
        if finalizer in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER):
            return finalizer == ORPHAN_FINALIZER
    return False


def _foreground(finalizers: list[str], options: DeleteOptions) -> bool:
    if options.orphan_dependents is not None:
        return False
    if options.propagation_policy is not None:
        return options.propagation_policy == "Foreground"
    return FOREGROUND_FINALIZER in finalizers


def finalizers_for(kind: Kind, finalizers: list[str], options: DeleteOptions) -> list[str]:
    """The object's finalizers once the request's propagation policy is applied."""
    if kind.kind in NOT_COLLECTED:
        return list(finalizers)
    kept = [f for f in finalizers if f not in (ORPHAN_FINALIZER, FOREGROUND_FINALIZER)]
    if _orphans(finalizers, options):
        kept.append(ORPHAN_FINALIZER)
    if _foreground(finalizers, options):
        kept.append(FOREGROUND_FINALIZER)
    return kept if set(kept) != set(finalizers) else list(finalizers)


def _pod_grace_period(pod: dict, requested: int | None) -> int:
    """The pod strategy's CheckGracefulDelete: nothing to wait for on no node or once it has finished."""
    spec = pod.get("spec") or {}
    if not spec.get("nodeName") or (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return 0
    return requested if requested is not None else spec.get("terminationGracePeriodSeconds") or 0


def plan(kind: Kind, obj: dict, options: DeleteOptions, now: datetime) -> Plan:
    """What a DELETE with these options does to `obj` at wall-clock time `now` (timezone-aware)."""
    new = copy.deepcopy(obj)
    meta = new["metadata"]
    # A negative grace period counts as 1 s, as BeforeDelete has it.
    grace = options.grace_period if options.grace_period is None or options.grace_period >= 0 else 1
    graceful, lingering_grace = False, 0
    if kind.built_in == "Pod":
        if meta.get("deletionTimestamp"):
            current = meta.get("deletionGracePeriodSeconds") or 0
            if current > 0:
                if grace is None or grace >= current:
                    return Plan("pending", obj)
                started = _parse_stamp(meta["deletionTimestamp"]) - timedelta(seconds=current)
                meta["deletionTimestamp"] = _stamp(started + timedelta(seconds=grace))
                meta["deletionGracePeriodSeconds"] = grace
                graceful, lingering_grace = True, grace
        else:
            period = _pod_grace_period(new, grace)
            meta["deletionTimestamp"] = _stamp(now + timedelta(seconds=period))
            meta["deletionGracePeriodSeconds"] = period
            if meta.get("generation"):
                meta["generation"] += 1
            graceful, lingering_grace = True, period
    finalizers = finalizers_for(kind, list(meta.get("finalizers") or []), options)
    if finalizers:
        meta["finalizers"] = finalizers
    else:
        meta.pop("finalizers", None)
    if not graceful:
        if not finalizers:
            return Plan("remove", obj)
        _mark_deleting(meta, now)
        return Plan("write", new)
    if finalizers or lingering_grace > 0:
        return Plan("write", new)
    return Plan("remove", obj)


def _mark_deleting(meta: dict, now: datetime) -> None:
    """markAsDeleting: a deletion that waits for finalizers only, with no grace period."""
    if not meta.get("deletionTimestamp") and meta.get("generation"):
        meta["generation"] += 1
    if not meta.get("deletionTimestamp") or _parse_stamp(meta["deletionTimestamp"]) > now:
        meta["deletionTimestamp"] = _stamp(now)
    meta["deletionGracePeriodSeconds"] = 0


def removed_by_update(old: dict, new: dict) -> bool:
    """An update that empties the finalizers of an object whose deletion waits for nothing else deletes
    it (store.go `shouldDeleteDuringUpdate`)."""
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    return bool(old_meta.get("deletionTimestamp")) and not new_meta.get("finalizers") and \
        old_meta.get("deletionGracePeriodSeconds") == 0


def _go_strings(values: list[str]) -> str:
    """A list of strings as Go's %#v shows it in kube-apiserver's messages."""
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def finalizer_causes(obj: dict) -> list[Cause]:
    """The collector's two finalizers contradict each other (apimachinery's ValidateFinalizers)."""
    finalizers = (obj.get("metadata") or {}).get("finalizers")
    if isinstance(finalizers, list) and ORPHAN_FINALIZER in finalizers and FOREGROUND_FINALIZER in finalizers:
        message = f"Invalid value: {_go_strings(finalizers)}: finalizer orphan and foregroundDeletion cannot be both set"
        return [Cause("metadata.finalizers", "FieldValueInvalid", message)]
    return []


def added_finalizer_causes(old: dict, new: dict) -> list[Cause]:
    """An update may not add finalizers to an object being deleted."""
    if not (old.get("metadata") or {}).get("deletionTimestamp"):
        return []
    before = set((old.get("metadata") or {}).get("finalizers") or [])
    added = [f for f in (new.get("metadata") or {}).get("finalizers") or [] if f not in before]
    if not added:
        return []
    message = ("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers "
               f"{_go_strings(added)}")
    return [Cause("metadata.finalizers", "FieldValueForbidden", message)]


def gone_answer(kind: Kind, obj: dict) -> dict:
    """What a delete answers when the object left storage: the object itself for the kinds that return
    it, else a Status Success naming it (finalizeDelete)."""
    if kind.built_in in RETURNS_DELETED_OBJECT:
        return obj
    meta = obj.get("metadata") or {}
    details = {"name": meta.get("name", ""), "group": kind.group, "kind": kind.plural, "uid": meta.get("uid", "")}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
