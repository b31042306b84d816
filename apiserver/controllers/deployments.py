"""What a Deployment should do with its ReplicaSets, pure: as kube-controller-manager's Deployment
controller (pkg/controller/deployment), step for step.

A Deployment owns ReplicaSets, one per pod template it has had. The one whose template equals the
Deployment's (ignoring the `pod-template-hash` label) is the new one; it is named `<deployment>-<hash>`,
where the hash is FNV-1a (32 bit) of the template's printed form, safe-encoded as Kubernetes encodes it, and
its selector and template carry `pod-template-hash: <hash>` so that its pods are its own. Every ReplicaSet
carries a `deployment.kubernetes.io/revision` (the new one the highest) and the Deployment the revision of
its new ReplicaSet; a ReplicaSet that becomes new again (a rollback) takes the next revision and keeps its
old ones in `deployment.kubernetes.io/revision-history`.

One pass (`sync`) does what one syncDeployment does: a changed `spec.replicas` scales the ReplicaSets
(proportionally while a rollout is under way); RollingUpdate scales the new ReplicaSet up within
`replicas + maxSurge` pods, then old ones down while `replicas - maxUnavailable` stay available, unhealthy
old pods first; Recreate scales every old ReplicaSet to zero, waits for their pods to end, then scales the new
one up. A finished rollout deletes old, empty ReplicaSets beyond `revisionHistoryLimit`, lowest revisions
first. The status sums the ReplicaSets' and carries the Available and Progressing conditions with
Kubernetes' reasons and messages, which `kubectl rollout status` and `kubectl wait` read.

Pods that an older podnet let a Deployment own directly are handed to the ReplicaSet whose selector picks
them (it adopts them: same pods, same addresses) or, when none does, deleted (the ReplicaSet replaces them).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from . import ownerrefs
from .replicasets import is_active, parse_time, replicas_of

TEMPLATE_HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# Annotations of the Deployment that its ReplicaSets do not copy.
NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY,
                        DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"})
MAX_REVISION_HISTORY_CHARS = 2000
_UNLIMITED = 2**31 - 1  # progressDeadlineSeconds or revisionHistoryLimit meaning "none"
# Kubernetes' rand.String alphabet: no vowels (no words) and no look-alike characters.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def safe_encode(text: str) -> str:
    return "".join(SAFE_ALPHABET[ord(ch) % len(SAFE_ALPHABET)] for ch in text)


def template_hash(template: dict, collision_count: int | None = None) -> str:
    """controller.ComputeHash: FNV-1a (32 bit) of the printed template, then the collision count as eight
    little-endian bytes when the Deployment has one, the decimal sum safe-encoded (`7c5ddbdf54`). The printed
    form is canonical JSON (sorted keys, no spaces) of the template as stored, defaults included."""
    data = json.dumps(template, sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return safe_encode(str(value))


# --- reading a Deployment -----------------------------------------------------------------------------


def _spec(obj: dict) -> dict:
    spec = obj.get("spec")
    return spec if isinstance(spec, dict) else {}


def _status(obj: dict) -> dict:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _annotations(obj: dict) -> dict:
    return (obj.get("metadata") or {}).get("annotations") or {}


def is_rolling(deployment: dict) -> bool:
    return (_spec(deployment).get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"


def scaled_value(value: object, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: a number, or a percentage of `total` rounded up or down."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isascii() and value[:-1].isdigit():
        share = int(value[:-1]) * total
        return -(-share // 100) if round_up else share // 100
    return 0


def _fenceposts(deployment: dict) -> tuple[int, int]:
    """maxSurge (rounded up) and maxUnavailable (rounded down); never both zero."""
    rolling = (_spec(deployment).get("strategy") or {}).get("rollingUpdate") or {}
    replicas = replicas_of(deployment)
    surge = scaled_value(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = scaled_value(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    return surge, (1 if surge == 0 and unavailable == 0 else unavailable)


def max_surge(deployment: dict) -> int:
    return _fenceposts(deployment)[0] if is_rolling(deployment) else 0


def max_unavailable(deployment: dict) -> int:
    """How many replicas may be unavailable while the Deployment still counts as Available: the rolling
    update's maxUnavailable (25% rounded down by default), at most all of them; 0 for Recreate."""
    replicas = replicas_of(deployment)
    if not is_rolling(deployment) or replicas == 0:
        return 0
    return min(_fenceposts(deployment)[1], replicas)


def revision(obj: dict) -> int:
    try:
        return int(_annotations(obj).get(REVISION) or 0)
    except ValueError:
        return 0


def _int_annotation(obj: dict, key: str) -> int | None:
    try:
        return int(_annotations(obj)[key])
    except (KeyError, ValueError):
        return None


def _has_limit(value: object) -> bool:
    return isinstance(value, int) and value != _UNLIMITED


def _semantic(value: object) -> object:
    """A value with its empty parts left out: Go's semantic equality of API objects makes no difference
    between a missing field, a zero value and an empty list or map."""
    if isinstance(value, dict):
        kept = {k: _semantic(v) for k, v in value.items()}
        return {k: v for k, v in kept.items() if v not in (None, "", 0, False, [], {})}
    if isinstance(value, list):
        return [_semantic(v) for v in value]
    return value


def _without_hash(template: object) -> object:
    template = copy.deepcopy(template) if isinstance(template, dict) else {}
    ((template.get("metadata") or {}).get("labels") or {}).pop(TEMPLATE_HASH_LABEL, None)
    return _semantic(template)


def equal_ignore_hash(first: object, second: object) -> bool:
    """Two pod templates are the same but for the pod-template-hash label (deploymentutil.EqualIgnoreHash)."""
    return _without_hash(first) == _without_hash(second)


def by_creation(replicasets: Iterable[dict]) -> list[dict]:
    return sorted(replicasets, key=lambda rs: (rs["metadata"].get("creationTimestamp") or "", rs["metadata"]["name"]))


def find_new(deployment: dict, replicasets: Iterable[dict]) -> dict | None:
    """The oldest ReplicaSet whose template is the Deployment's."""
    template = _spec(deployment).get("template")
    return next((rs for rs in by_creation(replicasets) if equal_ignore_hash(_spec(rs).get("template"), template)),
                None)


def _replicas(replicasets: Iterable[dict]) -> int:
    return sum(replicas_of(rs) for rs in replicasets)


def _counted(replicasets: Iterable[dict], key: str) -> int:
    return sum(int(_status(rs).get(key) or 0) for rs in replicasets)


def _active(replicasets: Iterable[dict]) -> list[dict]:
    return [rs for rs in replicasets if replicas_of(rs) > 0]


def _condition(conditions: list[dict], kind: str) -> dict | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def _set_condition(conditions: list[dict], new: dict) -> list[dict]:
    """deploymentutil.SetDeploymentCondition: nothing changes when status and reason are the same; the
    transition time stays while the status does; the new condition goes last."""
    current = _condition(conditions, new["type"])
    if current is not None and current.get("status") == new["status"] and current.get("reason") == new["reason"]:
        return conditions
    if current is not None and current.get("status") == new["status"]:
        new = {**new, "lastTransitionTime": current.get("lastTransitionTime", new["lastTransitionTime"])}
    return [c for c in conditions if c.get("type") != new["type"]] + [new]


# --- one pass -----------------------------------------------------------------------------------------


@dataclass
class Actions:
    """The writes of one pass, in the order they are to be made."""

    adopt: list[dict] = field(default_factory=list)  # ReplicaSets with the Deployment's reference added
    release: list[dict] = field(default_factory=list)  # ReplicaSets with it removed
    release_pods: list[dict] = field(default_factory=list)  # pods it owned directly, handed to a ReplicaSet
    delete_pods: list[str] = field(default_factory=list)  # pods it owned directly that no ReplicaSet takes
    create: dict | None = None  # the new ReplicaSet
    update: list[dict] = field(default_factory=list)  # ReplicaSets scaled or given annotations
    delete: list[str] = field(default_factory=list)  # old ReplicaSets beyond revisionHistoryLimit
    annotations: dict | None = None  # the Deployment's annotations that change (its revision)
    status: dict | None = None  # the Deployment's status, when it changes


class _Pass:
    """The state of one syncDeployment: the Deployment's annotations and conditions and its ReplicaSets
    as the writes so far leave them."""

    def __init__(self, deployment: dict, replicasets: list[dict], taken_names: frozenset[str], now: datetime):
        self.deployment = deployment
        self.taken_names = taken_names  # every ReplicaSet name of the namespace, owned or not
        self.now = now
        self.stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        self.annotations = dict(_annotations(deployment))
        self.conditions = [dict(c) for c in _status(deployment).get("conditions") or [] if isinstance(c, dict)]
        self.collision_count = _status(deployment).get("collisionCount")
        self.replicasets = {rs["metadata"]["name"]: copy.deepcopy(rs) for rs in replicasets}
        self.changed: list[str] = []  # names of existing ReplicaSets written this pass
        self.created: dict | None = None
        self.name = deployment["metadata"]["name"]
        self.replicas = replicas_of(deployment)
        self.progress_deadline = _has_limit(_spec(deployment).get("progressDeadlineSeconds", 600))

    # ReplicaSets as they stand.

    def _touch(self, rs: dict) -> None:
        name = rs["metadata"]["name"]
        if rs is not self.created and name not in self.changed:
            self.changed.append(name)

    def new_and_old(self) -> tuple[dict | None, list[dict]]:
        candidates = list(self.replicasets.values())
        new = find_new(self.deployment, candidates)
        if new is None and self.created is not None:
            new = self.created
        return new, [rs for rs in candidates if rs is not new]

    def condition(self, kind: str, status: str, reason: str, message: str) -> dict:
        return {"type": kind, "status": status, "lastUpdateTime": self.stamp, "lastTransitionTime": self.stamp,
                "reason": reason, "message": message}

    def _replica_annotations_differ(self, rs: dict) -> bool:
        return (_int_annotation(rs, DESIRED_REPLICAS) != self.replicas
                or _int_annotation(rs, MAX_REPLICAS) != self.replicas + max_surge(self.deployment))

    def _set_replica_annotations(self, rs: dict) -> None:
        annotations = rs["metadata"].setdefault("annotations", {})
        annotations[DESIRED_REPLICAS] = str(self.replicas)
        annotations[MAX_REPLICAS] = str(self.replicas + max_surge(self.deployment))

    def scale(self, rs: dict, size: int) -> bool:
        """deployment controller's scaleReplicaSet: the size, and the Deployment's replica counts in the
        annotations; True when the size changed."""
        resized = replicas_of(rs) != size
        if resized or self._replica_annotations_differ(rs):
            rs["spec"]["replicas"] = size
            self._set_replica_annotations(rs)
            self._touch(rs)
        return resized

    # The new ReplicaSet and revisions.

    def _copy_annotations(self, rs: dict) -> bool:
        annotations = rs["metadata"].setdefault("annotations", {})
        changed = False
        for key, value in self.annotations.items():
            if key not in NOT_COPIED and annotations.get(key) != value:
                annotations[key] = value
                changed = True
        return changed

    def _set_revision(self, rs: dict, new_revision: int) -> bool:
        """deploymentutil.SetNewReplicaSetAnnotations' revision part."""
        annotations = rs["metadata"].setdefault("annotations", {})
        old_text = annotations.get(REVISION)
        try:
            old = int(old_text) if old_text else 0
        except ValueError:
            return False
        if old >= new_revision:
            return False
        annotations[REVISION] = str(new_revision)
        if old_text:  # it was new before: a rollback; remember what it was
            history = [h for h in annotations.get(REVISION_HISTORY, "").split(",") if h]
            history.append(old_text)
            while len(",".join(history)) > MAX_REVISION_HISTORY_CHARS and len(history) > 1:
                history.pop(0)
            annotations[REVISION_HISTORY] = ",".join(history)
        return True

    def new_replicaset(self, create: bool) -> tuple[dict | None, list[dict]]:
        """getAllReplicaSetsAndSyncRevision: the new ReplicaSet, its revision and annotations brought up to
        date, made when missing and `create`; and the old ones."""
        new, old = self.new_and_old()
        new_revision = max((revision(rs) for rs in old), default=0) + 1
        if new is not None:
            changed = self._copy_annotations(new) | self._set_revision(new, new_revision)
            min_ready = _spec(self.deployment).get("minReadySeconds") or 0
            if changed or (_spec(new).get("minReadySeconds") or 0) != min_ready:
                _set_min_ready(new, min_ready)
                self._touch(new)
            self.annotations[REVISION] = new["metadata"]["annotations"][REVISION]
            if self.progress_deadline and _condition(self.conditions, "Progressing") is None:
                self.conditions = _set_condition(self.conditions, self.condition(
                    "Progressing", "True", "FoundNewReplicaSet", f'Found new replica set "{new["metadata"]["name"]}"'))
            return new, old
        if not create:
            return None, old
        return self._create(old, new_revision), old

    def _create(self, old: list[dict], new_revision: int) -> dict | None:
        spec = _spec(self.deployment)
        meta = self.deployment["metadata"]
        template = copy.deepcopy(spec.get("template") or {})
        hash_value = template_hash(template, self.collision_count)
        name = f"{self.name}-{hash_value}"
        if name in self.taken_names:
            # A ReplicaSet of that name that is not this template's new one: a hash collision; the next
            # pass hashes with the collision count raised.
            self.collision_count = (self.collision_count or 0) + 1
            return None
        template.setdefault("metadata", {})
        template["metadata"]["labels"] = {**(template["metadata"].get("labels") or {}), TEMPLATE_HASH_LABEL: hash_value}
        selector = copy.deepcopy(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), TEMPLATE_HASH_LABEL: hash_value}
        rs = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": meta["namespace"], "labels": dict(template["metadata"]["labels"]),
                         "annotations": {}, "ownerReferences": [ownerrefs.new_controller_ref(self.deployment)]},
            "spec": {"replicas": 0, "selector": selector, "template": template},
        }
        _set_min_ready(rs, spec.get("minReadySeconds") or 0)
        rs["spec"]["replicas"] = self.new_replicas([*old, rs], rs)
        self._copy_annotations(rs)
        self._set_revision(rs, new_revision)
        self._set_replica_annotations(rs)
        self.created = rs
        self.annotations[REVISION] = str(new_revision)
        if self.progress_deadline:
            self.conditions = _set_condition(self.conditions, self.condition(
                "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{name}"'))
        return rs

    def new_replicas(self, all_rs: list[dict], new: dict) -> int:
        """deploymentutil.NewRSNewReplicas: as many as maxSurge allows on top of `replicas` (rolling), all
        of them (Recreate)."""
        if not is_rolling(self.deployment):
            return self.replicas
        current = _replicas(all_rs)
        most = self.replicas + max_surge(self.deployment)
        if current >= most:
            return replicas_of(new)
        return replicas_of(new) + max(0, min(most - current, self.replicas - replicas_of(new)))

    # Scaling (a changed spec.replicas, or a paused Deployment).

    def is_scaling_event(self) -> bool:
        new, old = self.new_replicaset(create=False)
        if new is None:
            return False
        return any(_int_annotation(rs, DESIRED_REPLICAS) not in (None, self.replicas) for rs in _active([*old, new]))

    def scale_all(self, new: dict | None, old: list[dict]) -> None:
        """The deployment controller's scale(): everything to the one active (or newest) ReplicaSet;
        else old ones to zero when the new one is saturated; else, rolling, proportionally to each
        ReplicaSet's share, leftovers to the largest."""
        active = _active([*old, *([new] if new else [])])
        if len(active) <= 1 and (new is not None or old):
            target = active[0] if active else (new or by_creation(old)[-1])
            self.scale(target, self.replicas)
            return
        if new is not None and self._saturated(new):
            for rs in _active(old):
                self.scale(rs, 0)
            return
        if not is_rolling(self.deployment):
            return
        allowed = self.replicas + max_surge(self.deployment) if self.replicas > 0 else 0
        to_add = allowed - _replicas(active)
        if to_add:  # larger first; among equals newer first to scale up, older first to scale down
            active = by_creation(active)
            if to_add > 0:
                active.reverse()
            active.sort(key=lambda rs: -replicas_of(rs))
        added = 0
        sizes = {}
        for rs in active:
            share = self._proportion(rs, to_add, added) if to_add else 0
            sizes[rs["metadata"]["name"]] = replicas_of(rs) + share
            added += share
        for i, rs in enumerate(active):
            size = sizes[rs["metadata"]["name"]]
            if i == 0 and to_add:
                size = max(0, size + to_add - added)
            self.scale(rs, size)

    def _saturated(self, new: dict) -> bool:
        return (replicas_of(new) == self.replicas and _int_annotation(new, DESIRED_REPLICAS) == self.replicas
                and int(_status(new).get("availableReplicas") or 0) == self.replicas)

    def _proportion(self, rs: dict, to_add: int, added: int) -> int:
        """deploymentutil.GetProportion."""
        if replicas_of(rs) == 0 or to_add == added:
            return 0
        if self.replicas == 0:
            fraction = -replicas_of(rs)
        else:
            before = _int_annotation(rs, MAX_REPLICAS) or int(_status(self.deployment).get("replicas") or 0)
            if not before:
                return 0
            exact = replicas_of(rs) * (self.replicas + max_surge(self.deployment)) / before
            fraction = int(exact + 0.5) - replicas_of(rs)
        allowed = to_add - added
        return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)

    # Rollouts.

    def reconcile_new(self, all_rs: list[dict], new: dict) -> bool:
        if replicas_of(new) == self.replicas:
            return False
        if replicas_of(new) > self.replicas:
            return self.scale(new, self.replicas)
        return self.scale(new, self.new_replicas(all_rs, new))

    def reconcile_old(self, all_rs: list[dict], old: list[dict], new: dict) -> bool:
        """reconcileOldReplicaSets: scale old ReplicaSets down as far as availability allows, their
        unavailable pods first."""
        if _replicas(old) == 0:
            return False
        min_available = self.replicas - max_unavailable(self.deployment)
        new_unavailable = replicas_of(new) - int(_status(new).get("availableReplicas") or 0)
        most = _replicas(all_rs) - min_available - new_unavailable
        if most <= 0:
            return False
        cleaned = 0
        for rs in by_creation(old):  # unhealthy replicas first
            if cleaned >= most:
                break
            unavailable = replicas_of(rs) - int(_status(rs).get("availableReplicas") or 0)
            if replicas_of(rs) == 0 or unavailable <= 0:
                continue
            step = min(most - cleaned, unavailable)
            self.scale(rs, replicas_of(rs) - step)
            cleaned += step
        available = _counted([*old, new], "availableReplicas")
        scaled = 0
        if available > min_available:
            budget = available - min_available
            for rs in by_creation(old):
                if scaled >= budget:
                    break
                if replicas_of(rs) == 0:
                    continue
                step = min(replicas_of(rs), budget - scaled)
                self.scale(rs, replicas_of(rs) - step)
                scaled += step
        return cleaned + scaled > 0

    def cleanup(self, old: list[dict]) -> list[str]:
        """Old, empty ReplicaSets beyond revisionHistoryLimit, lowest revision first."""
        limit = _spec(self.deployment).get("revisionHistoryLimit", 10)
        if not _has_limit(limit):
            return []
        alive = [rs for rs in old if not rs["metadata"].get("deletionTimestamp")]
        excess = len(alive) - limit
        if excess <= 0:
            return []
        doomed = []
        for rs in sorted(alive, key=lambda rs: (revision(rs), rs["metadata"].get("creationTimestamp") or ""))[:excess]:
            status = _status(rs)
            if status.get("replicas") or replicas_of(rs) or \
                    (rs["metadata"].get("generation") or 0) > (status.get("observedGeneration") or 0):
                continue
            doomed.append(rs["metadata"]["name"])
        return doomed

    # Status.

    def calculate_status(self, all_rs: list[dict], new: dict | None) -> dict:
        available = _counted(all_rs, "availableReplicas")
        counts = {
            "observedGeneration": self.deployment["metadata"].get("generation") or 0,
            "replicas": _counted(all_rs, "replicas"),
            "updatedReplicas": _counted([new] if new else [], "replicas"),
            "readyReplicas": _counted(all_rs, "readyReplicas"),
            "availableReplicas": available,
            "unavailableReplicas": max(0, _replicas(all_rs) - available),
        }
        status: dict = {k: v for k, v in counts.items() if v}
        if available >= self.replicas - max_unavailable(self.deployment):
            available_condition = self.condition("Available", "True", "MinimumReplicasAvailable",
                                                 "Deployment has minimum availability.")
        else:
            available_condition = self.condition("Available", "False", "MinimumReplicasUnavailable",
                                                  "Deployment does not have minimum availability.")
        status["conditions"] = _set_condition(self.conditions, available_condition)
        if self.collision_count is not None:
            status["collisionCount"] = self.collision_count
        return status

    def complete(self, status: dict) -> bool:
        """deploymentutil.DeploymentComplete: every replica updated and available, and the Deployment's
        generation observed."""
        return all(int(status.get(k) or 0) == self.replicas for k in ("updatedReplicas", "replicas", "availableReplicas")) \
            and int(status.get("observedGeneration") or 0) >= int(self.deployment["metadata"].get("generation") or 0)

    def _progressing(self, status: dict) -> bool:
        before = _status(self.deployment)

        def count(source: dict, key: str) -> int:
            return int(source.get(key) or 0)

        return (count(status, "updatedReplicas") > count(before, "updatedReplicas")
                or count(status, "replicas") - count(status, "updatedReplicas")
                < count(before, "replicas") - count(before, "updatedReplicas")
                or count(status, "readyReplicas") > count(before, "readyReplicas")
                or count(status, "availableReplicas") > count(before, "availableReplicas"))

    def _timed_out(self, status: dict) -> bool:
        current = _condition(status["conditions"], "Progressing")
        if current is not None and current.get("reason") == "ProgressDeadlineExceeded":
            return True
        deadline = _progress_deadline(self.deployment, status)
        return deadline is not None and deadline < self.now

    def rollout_status(self, all_rs: list[dict], new: dict | None) -> dict:
        """syncRolloutStatus: the counts, and Progressing as the rollout stands (complete, progressing, or
        past its progress deadline)."""
        status = self.calculate_status(all_rs, new)
        if not self.progress_deadline:
            status["conditions"] = [c for c in status["conditions"] if c.get("type") != "Progressing"]
            return status
        current = _condition(self.conditions, "Progressing")
        finished = (int(status.get("replicas") or 0) == int(status.get("updatedReplicas") or 0)
                    and current is not None and current.get("reason") == "NewReplicaSetAvailable")
        if finished:
            return status
        subject = f'ReplicaSet "{new["metadata"]["name"]}"' if new else f'Deployment "{self.name}"'
        if self.complete(status):
            status["conditions"] = _set_condition(status["conditions"], self.condition(
                "Progressing", "True", "NewReplicaSetAvailable", f"{subject} has successfully progressed."))
        elif self._progressing(status):
            progressing = self.condition("Progressing", "True", "ReplicaSetUpdated", f"{subject} is progressing.")
            if current is not None and current.get("status") == "True":
                progressing["lastTransitionTime"] = current.get("lastTransitionTime", self.stamp)
            status["conditions"] = [c for c in status["conditions"] if c.get("type") != "Progressing"] + [progressing]
        elif self._timed_out(status):
            status["conditions"] = _set_condition(status["conditions"], self.condition(
                "Progressing", "False", "ProgressDeadlineExceeded", f"{subject} has timed out progressing."))
        return status

    def paused_conditions(self) -> None:
        if not self.progress_deadline:
            return
        current = _condition(self.conditions, "Progressing")
        if current is not None and current.get("reason") == "ProgressDeadlineExceeded":
            return
        paused_before = current is not None and current.get("reason") == "DeploymentPaused"
        if _spec(self.deployment).get("paused") and not paused_before:
            self.conditions = _set_condition(self.conditions, self.condition(
                "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused"))
        elif not _spec(self.deployment).get("paused") and paused_before:
            self.conditions = _set_condition(self.conditions, self.condition(
                "Progressing", "Unknown", "DeploymentResumed", "Deployment is resumed"))


def _progress_deadline(deployment: dict, status: dict) -> datetime | None:
    """When a rollout under way that makes no progress runs out of time: its last progress plus
    progressDeadlineSeconds (None when there is no rollout under way or no deadline)."""
    current = _condition(status.get("conditions") or [], "Progressing")
    seconds = _spec(deployment).get("progressDeadlineSeconds", 600)
    if current is None or not _has_limit(seconds) or current.get("reason") in (
            "NewReplicaSetAvailable", "ProgressDeadlineExceeded", "DeploymentPaused"):
        return None
    since = parse_time(current.get("lastUpdateTime"))
    return since + timedelta(seconds=seconds) if since is not None else None


def stuck_check_in(deployment: dict, now: datetime) -> float | None:
    """Seconds until the Deployment's rollout passes its progress deadline, so that it is looked at then
    (requeueStuckDeployment); None when nothing is waiting for a deadline."""
    deadline = _progress_deadline(deployment, _status(deployment))
    return None if deadline is None else max(0.0, (deadline - now).total_seconds()) + 1.0


def scaling_message(replicaset: str, before: int, after: int) -> str:
    """The Deployment's ScalingReplicaSet event, as kube-controller-manager words it."""
    return f"Scaled {'up' if after > before else 'down'} replica set {replicaset} from {before} to {after}"


def _set_min_ready(rs: dict, seconds: int) -> None:
    if seconds:
        rs["spec"]["minReadySeconds"] = seconds
    else:
        rs["spec"].pop("minReadySeconds", None)


def _old_pods_running(old: list[dict], pods: list[dict]) -> bool:
    if _counted(old, "replicas") > 0:
        return True
    old_uids = {rs["metadata"].get("uid") for rs in old}
    return any((p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
               for p in pods if (ownerrefs.controller_ref(p) or {}).get("uid") in old_uids)


def sync(deployment: dict, replicasets: Iterable[dict], pods: Iterable[dict], now: datetime) -> Actions:
    """One syncDeployment of `deployment`, given the ReplicaSets and pods of the cluster (others' are
    ignored) and the wall-clock time."""
    replicasets, pods = list(replicasets), list(pods)
    actions = Actions()
    meta = deployment["metadata"]
    claim = ownerrefs.claim(deployment, ownerrefs.selector_of(deployment), replicasets)
    actions.adopt, actions.release = list(claim.adopt), list(claim.release)
    taken = frozenset(rs["metadata"]["name"] for rs in replicasets
                      if rs["metadata"].get("namespace") == meta.get("namespace"))
    state = _Pass(deployment, list(claim.owned), taken, now)
    owned_uids = {rs["metadata"].get("uid") for rs in claim.owned}
    owned_pods = [p for p in pods if (ownerrefs.controller_ref(p) or {}).get("uid") in owned_uids]

    new, old = None, []
    if meta.get("deletionTimestamp"):
        new, old = state.new_replicaset(create=False)
        status = state.calculate_status([*old, *([new] if new else [])], new)
    else:
        state.paused_conditions()
        if _spec(deployment).get("paused") or state.is_scaling_event():
            new, old = state.new_replicaset(create=False)
            state.scale_all(new, old)
            if _spec(deployment).get("paused"):
                actions.delete = state.cleanup(old)
            status = state.calculate_status([*old, *([new] if new else [])], new)
        elif not is_rolling(deployment):
            new, old, status = _recreate(state, owned_pods, actions)
        else:
            new, old, status = _rolling(state, actions)

    if new is not None:
        _hand_over_legacy_pods(deployment, [*old, new], pods, actions)
    actions.create = state.created
    actions.update = [state.replicasets[name] for name in state.changed]
    before = _annotations(deployment)
    actions.annotations = {k: v for k, v in state.annotations.items() if before.get(k) != v} or None
    if status != _status(deployment):
        actions.status = status
    return actions


def _rolling(state: _Pass, actions: Actions) -> tuple[dict | None, list[dict], dict]:
    new, old = state.new_replicaset(create=True)
    if new is None:  # a hash collision: only the raised collision count is written
        return None, old, state.calculate_status(old, None)
    all_rs = [*old, new]
    if not state.reconcile_new(all_rs, new) and not state.reconcile_old(all_rs, _active(old), new) \
            and state.complete(_status(state.deployment)):
        actions.delete = state.cleanup(old)
    return new, old, state.rollout_status(all_rs, new)


def _recreate(state: _Pass, pods: list[dict], actions: Actions) -> tuple[dict | None, list[dict], dict]:
    new, old = state.new_replicaset(create=False)
    scaled_down = False
    for rs in _active(old):
        scaled_down |= state.scale(rs, 0)
    if scaled_down or _old_pods_running(old, pods):
        return new, old, state.rollout_status([*old, *([new] if new else [])], new)
    if new is None:
        new, old = state.new_replicaset(create=True)
        if new is None:
            return None, old, state.calculate_status(old, None)
    state.scale(new, state.replicas)
    if state.complete(_status(state.deployment)):
        actions.delete = state.cleanup(old)
    return new, old, state.rollout_status([*old, new], new)


def _hand_over_legacy_pods(deployment: dict, replicasets: list[dict], pods: list[dict], actions: Actions) -> None:
    """Pods the Deployment owns directly (made by an older podnet) go to the ReplicaSet that selects them,
    else away."""
    uid = deployment["metadata"].get("uid")
    selectors = [ownerrefs.selector_of(rs) for rs in replicasets]
    for pod in pods:
        if pod["metadata"].get("namespace") != deployment["metadata"].get("namespace") \
                or not ownerrefs.is_controlled_by(pod, uid) or not is_active(pod):
            continue
        if any(s.matches(pod["metadata"].get("labels")) for s in selectors):
            actions.release_pods.append(ownerrefs.released(pod, uid))
        else:
            actions.delete_pods.append(pod["metadata"]["name"])
