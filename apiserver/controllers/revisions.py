"""ControllerRevisions of StatefulSets and DaemonSets, pure: the history `kubectl rollout history` lists and
`kubectl rollout undo` patches back, as kube-controller-manager keeps it (pkg/controller/history).

- Each pod template a set has had is one ControllerRevision `<set>-<hash of the template>` (the hash its
  pods carry in `controller-revision-hash`), controlled by the set, labelled with the template's labels and
  the hash, annotated with the set's annotations, whose `data` is the patch that puts the template back:
  `{"spec": {"template": {..., "$patch": "replace"}}}`.
- Revisions are numbered in order; a template the set returns to (a rollback) takes the next number again
  rather than a new object.
- Beyond `revisionHistoryLimit`, the oldest revisions that no pod runs and that are not the current one are
  deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from . import ownerrefs
from .statefulsets import REVISION_LABEL, revision_of

DEFAULT_HISTORY_LIMIT = 10


def data_of(owner: dict) -> dict:
    """getPatch: the owner's template, to replace the template a patch is applied to."""
    template = (owner.get("spec") or {}).get("template") or {}
    return {"spec": {"template": {**template, "$patch": "replace"}}}


def _number(revision: dict) -> int:
    value = revision.get("revision")
    return value if isinstance(value, int) else 0


@dataclass(frozen=True, slots=True)
class Plan:
    create: dict | None = None
    renumber: tuple[dict, ...] = ()  # revisions to update with their new number
    delete: tuple[str, ...] = ()


def plan(owner: dict, template_hash: str, revisions: Iterable[dict], pods: Iterable[dict],
         keep: Iterable[str] = ()) -> Plan:
    """The ControllerRevisions of `owner` (a StatefulSet or DaemonSet) whose template hashes to
    `template_hash`, given the revisions and pods of its namespace; `keep` names revisions still in use
    beyond the pods (a StatefulSet's current revision)."""
    meta = owner["metadata"]
    mine = sorted((r for r in revisions if ownerrefs.is_controlled_by(r, meta.get("uid"))), key=_number)
    name = f"{meta['name']}-{template_hash}"
    latest = _number(mine[-1]) if mine else 0
    current = next((r for r in mine if r["metadata"]["name"] == name), None)
    create, renumber = None, ()
    if current is None:
        template_labels = (((owner.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}
        metadata: dict = {"name": name, "namespace": meta["namespace"],
                          "labels": {**template_labels, REVISION_LABEL: template_hash},
                          "ownerReferences": [ownerrefs.new_controller_ref(owner)]}
        if meta.get("annotations"):
            metadata["annotations"] = dict(meta["annotations"])
        create = {"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": metadata,
                  "data": data_of(owner), "revision": latest + 1}
    elif _number(current) != latest:
        renumber = ({**current, "revision": latest + 1},)
    in_use = {name, *keep} | {r for p in pods if ownerrefs.is_controlled_by(p, meta.get("uid"))
                              for r in (revision_of(p), f"{meta['name']}-{revision_of(p)}") if r}
    limit = (owner.get("spec") or {}).get("revisionHistoryLimit", DEFAULT_HISTORY_LIMIT)
    unused = [r["metadata"]["name"] for r in mine if r["metadata"]["name"] not in in_use]
    return Plan(create, renumber, tuple(unused[:max(len(unused) - limit, 0)]))
