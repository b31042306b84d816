"""The write path's per-kind rules, for built-in and custom kinds alike: defaults, validation, field
ownership, the CRD's own deletion. Pure.

Built-in kinds keep their rules in apiserver/defaults.py, validation.py and fieldschema.py, looked up by
kind name; a custom kind's come from its CRD's schema (see schema.py), and a CRD's own from
definitions.py. The handlers call these, never the per-name tables directly, so a custom kind that
shares a built-in kind's name (a `Job` of another group) is judged by its own schema.
"""

from __future__ import annotations

import copy

from podnet.apiserver import ciliumpolicies
from podnet.apiserver.customresources import definitions, schema
from podnet.apiserver.defaults import apply_defaults
from podnet.apiserver.fieldschema import FieldSchema, field_schema
from podnet.apiserver.status import Cause
from podnet.apiserver.validation import Errors, Limits, validate, validate_metadata, validate_update

from podnet.api.kinds import Kind

CRD_KIND = "CustomResourceDefinition"


def _is_crd(kind: Kind) -> bool:
    return kind.kind == CRD_KIND and kind.group == "apiextensions.k8s.io"


def custom_of(kind: Kind) -> definitions.CustomResource | None:
    return kind.custom if isinstance(kind.custom, definitions.CustomResource) else None


def default_object(kind: Kind, obj: dict) -> None:
    """Fills in the kind's defaults, in place."""
    custom = custom_of(kind)
    if custom is not None:
        defaulted = schema.default(custom.schema, obj)
        obj.clear()
        obj.update(defaulted)
    elif _is_crd(kind):
        definitions.default(obj)
    else:
        apply_defaults(kind.kind, obj)


def validate_object(kind: Kind, obj: dict, limits: Limits) -> list[Cause]:
    """The field errors of a defaulted object."""
    custom = custom_of(kind)
    if custom is not None:
        errors = Errors()
        validate_metadata(errors, "", obj, kind.namespaced)
        causes = errors.causes + schema.validate(custom.schema, obj)
        return causes or ciliumpolicies.validate(kind.group, kind.kind, obj)
    causes = validate(kind.kind, obj, limits, namespaced=kind.namespaced)
    return causes + definitions.validate(obj) if _is_crd(kind) else causes


def validate_object_update(kind: Kind, old: dict, new: dict) -> list[Cause]:
    if custom_of(kind) is not None:
        return []
    if _is_crd(kind):
        return definitions.validate_update(old, new)
    return validate_update(kind.kind, old, new)


def prune_object(kind: Kind, obj: dict) -> tuple[dict, list[str]]:
    """A custom object without the fields its schema does not specify, and those fields' paths."""
    custom = custom_of(kind)
    if custom is None:
        return obj, []
    return schema.prune(custom.schema, obj)


def field_schema_of(kind: Kind) -> FieldSchema:
    """How server-side apply sees the kind's fields (a custom kind: from its schema's list and map types)."""
    custom = custom_of(kind)
    if custom is None:
        return field_schema(kind.kind)
    keys: dict[str, tuple[str, ...]] = {}
    sets: set[str] = set()
    atomic: set[str] = set()
    _walk(custom.schema, "", keys, sets, atomic)
    return FieldSchema(keys, frozenset(sets), frozenset(atomic))


def _walk(node: dict, path: str, keys: dict[str, tuple[str, ...]], sets: set[str], atomic: set[str]) -> None:
    if node.get("x-kubernetes-map-type") == "atomic" or node.get("x-kubernetes-int-or-string"):
        atomic.add(path)
        return
    if node.get("type") == "array":
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "map":
            keys[path] = tuple(node.get("x-kubernetes-list-map-keys") or ())
        elif list_type == "set":
            sets.add(path)
        else:
            return  # atomic, as every list without a list type
        if isinstance(node.get("items"), dict):
            _walk(node["items"], path, keys, sets, atomic)
        return
    for name, sub in (node.get("properties") or {}).items():
        if isinstance(sub, dict):
            _walk(sub, f"{path}.{name}" if path else name, keys, sets, atomic)
    additional = node.get("additionalProperties")
    if isinstance(additional, dict) and path:
        _walk(additional, path, keys, sets, atomic)


def before_delete(kind: Kind, obj: dict, now: str) -> dict:
    """A CRD's first deletion keeps it, Terminating, until the cleanup finalizer has deleted its objects."""
    if not _is_crd(kind) or obj["metadata"].get("deletionTimestamp"):
        return obj
    marked = copy.deepcopy(obj)
    finalizers = marked["metadata"].setdefault("finalizers", [])
    if definitions.CLEANUP_FINALIZER not in finalizers:
        finalizers.append(definitions.CLEANUP_FINALIZER)
    marked["status"] = definitions.terminating_status(marked, now)
    return marked


def spec_changed(kind: Kind, old: dict, new: dict) -> bool:
    """Whether an update counts as a new generation: a change of spec; for a custom resource, of anything but
    metadata, and but status where the status subresource keeps it apart (the custom resource strategy)."""
    if custom_of(kind) is None:
        return old.get("spec") != new.get("spec")
    ignored = {"metadata", "status"} if kind.has_status else {"metadata"}

    def content(obj: dict) -> dict:
        return {k: v for k, v in obj.items() if k not in ignored}

    return content(old) != content(new)


def stored_form(kind: Kind, obj: dict) -> dict:
    """A custom object as stored: in its CRD's storage version (the `None` conversion: only apiVersion differs)."""
    custom = custom_of(kind)
    if custom is None:
        return obj
    stored = f"{kind.group}/{custom.storage_version}"
    return obj if obj.get("apiVersion") == stored else obj | {"apiVersion": stored}


def served_form(kind: Kind, obj: dict) -> dict:
    """A stored custom object as one of its served versions answers it (the object itself when it already is)."""
    if custom_of(kind) is None or obj.get("apiVersion") == kind.api_version:
        return obj
    return obj | {"apiVersion": kind.api_version}


def strategic_merge_refused(kind: Kind) -> bool:
    """Custom resources take no strategic merge patch (there is no Go type to say how lists merge)."""
    return custom_of(kind) is not None

