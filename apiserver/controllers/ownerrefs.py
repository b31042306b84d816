"""Controller references, pure: who controls an object, and which objects a controller claims by its
selector.

As Kubernetes' ControllerRefManager: an object has at most one owner reference with `controller: true`.
A controller owns what carries its reference and still matches its selector; it adopts orphans (no
controller reference) that match, unless it or the orphan is being deleted; it releases what it owns but no
longer matches, unless it is being deleted itself. Another controller's objects are never touched.

What a deleted controller leaves behind is the garbage collector's (collector.py), not the controllers'.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

from podnet.api.selectors import NOTHING, Selector, SelectorError, from_label_selector


def selector_of(owner: dict) -> Selector:
    """A controller's `spec.selector`; a broken one selects nothing (validation keeps them out of the API)."""
    try:
        return from_label_selector((owner.get("spec") or {}).get("selector"))
    except SelectorError:
        return NOTHING


def controller_ref(obj: dict) -> dict | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def new_controller_ref(owner: dict) -> dict:
    """The reference a controller puts on what it makes or adopts (metav1.NewControllerRef)."""
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"].get("uid", ""), "controller": True, "blockOwnerDeletion": True}


def is_controlled_by(obj: dict, owner_uid: str | None) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == owner_uid


def _deleting(obj: dict) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def _with_refs(obj: dict, refs: list[dict]) -> dict:
    changed = copy.deepcopy(obj)
    if refs:
        changed["metadata"]["ownerReferences"] = refs
    else:
        changed["metadata"].pop("ownerReferences", None)
    return changed


def adopted(obj: dict, owner: dict) -> dict:
    return _with_refs(obj, [*((obj.get("metadata") or {}).get("ownerReferences") or []), new_controller_ref(owner)])


def released(obj: dict, owner_uid: str | None) -> dict:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return _with_refs(obj, [ref for ref in refs if ref.get("uid") != owner_uid])


@dataclass(frozen=True, slots=True)
class Claim:
    owned: tuple[dict, ...]  # what the owner controls once the adoptions land (adopted ones as adopted)
    adopt: tuple[dict, ...]  # orphans, with the owner's controller reference added
    release: tuple[dict, ...]  # the owner's objects that its selector no longer picks, with the reference removed


def claim(owner: dict, selector: Selector, candidates: Iterable[dict]) -> Claim:
    meta = owner["metadata"]
    uid, namespace, owner_deleting = meta.get("uid"), meta.get("namespace"), _deleting(owner)
    owned: list[dict] = []
    adopt: list[dict] = []
    release: list[dict] = []
    for obj in candidates:
        obj_meta = obj.get("metadata") or {}
        if obj_meta.get("namespace") != namespace:
            continue
        matches = selector.matches(obj_meta.get("labels"))
        ref = controller_ref(obj)
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if matches:
                owned.append(obj)
            elif not owner_deleting:
                release.append(released(obj, uid))
        elif matches and not owner_deleting and not _deleting(obj):
            taken = adopted(obj, owner)
            adopt.append(taken)
            owned.append(taken)
    return Claim(tuple(owned), tuple(adopt), tuple(release))

