"""Client-side apply as kubectl does it: the `kubectl.kubernetes.io/last-applied-configuration` annotation
and a three-way strategic merge patch (k8s.io/apimachinery strategicpatch.CreateThreeWayMergePatch).

Three objects meet: `original`, what was applied last (the annotation of the live object, by podnet or by
kubectl: they share it); `modified`, the manifest now, carrying its own annotation; `current`, the live
object. The patch sets what `modified` has and `current` lacks or holds differently (so fields the server
or a controller set, such as a clusterIP, stay), and removes what `original` had and `modified` no longer
has (so a label deleted from the manifest leaves the object). Lists Kubernetes marks
`x-kubernetes-patch-strategy: merge` are patched item by item by their `x-kubernetes-patch-merge-key`
(`$patch: delete` for an item gone, `$setElementOrder` for the order), scalar sets by value
(`$deleteFromPrimitiveList`); every other list is replaced whole. The strategies come from the kind's
OpenAPI definition, Kubernetes' own.

Pure.
"""

from __future__ import annotations

import copy
import json

from podnet.api.kinds import Kind
from podnet.api.openapi import resolve

ANNOTATION = "kubectl.kubernetes.io/last-applied-configuration"
_DIRECTIVE = "$patch"


# Go's encoding/json escapes these in strings; kubectl's annotation is written by it.
_GO_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                                  "\u2029": "\\u2029"})


def recorded(obj: dict) -> str:
    """What kubectl apply records of a manifest in the annotation, byte for byte: the object without that
    annotation (and with `annotations: {}` when it has none), as Go's encoder writes it (keys sorted, no
    spaces, HTML characters escaped, a final newline)."""
    manifest = copy.deepcopy(obj)
    annotations = manifest.setdefault("metadata", {}).get("annotations") or {}
    manifest["metadata"]["annotations"] = {k: v for k, v in annotations.items() if k != ANNOTATION}
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.translate(_GO_JSON_ESCAPES) + "\n"


def annotated(obj: dict) -> dict:
    """The manifest object as it is applied: carrying the annotation that records it."""
    modified = copy.deepcopy(obj)
    metadata = modified.setdefault("metadata", {})
    metadata["annotations"] = {**(metadata.get("annotations") or {}), ANNOTATION: recorded(obj)}
    return modified


def last_applied(current: dict) -> dict:
    """What was applied last to `current`; {} when it was never applied (or the annotation is not JSON)."""
    text = ((current.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def three_way_patch(kind: Kind, original: dict, modified: dict, current: dict) -> dict:
    """The strategic merge patch that takes `current` to `modified`, deleting what `original` had."""
    return _maps(original, modified, current, {"$ref": f"#/definitions/{kind.definition}"})


def three_way_merge_patch(original: dict, modified: dict, current: dict) -> dict:
    """The JSON merge patch that takes `current` to `modified`, deleting what `original` had
    (jsonmergepatch.CreateThreeWayJSONMergePatch): kubectl's for a custom resource, whose kind has no patch
    strategies, so every list is replaced whole."""
    return _maps(original, modified, current, None)


def _property(schema: dict | None, name: str) -> dict | None:
    if schema is None:
        return None
    resolved = resolve(schema)
    properties = resolved.get("properties")
    if isinstance(properties, dict):
        return properties.get(name)
    additional = resolved.get("additionalProperties")
    return additional if isinstance(additional, dict) else None


def _items(schema: dict | None) -> dict | None:
    return resolve(schema).get("items") if schema is not None else None


def _maps(original: dict, modified: dict, current: dict, schema: dict | None) -> dict:
    patch: dict = {}
    for key, wanted in modified.items():
        field = _property(schema, key)
        have = current.get(key)
        before = original.get(key)
        if isinstance(wanted, dict) and isinstance(have, dict):
            sub = _maps(before if isinstance(before, dict) else {}, wanted, have, field)
            if sub:
                patch[key] = sub
        elif isinstance(wanted, list) and isinstance(have, list) and _merges(field):
            _lists(patch, key, before if isinstance(before, list) else [], wanted, have, field)
        elif have != wanted:
            patch[key] = copy.deepcopy(wanted)
    for key in original:
        if key not in modified:
            patch[key] = None
    return patch


def _merges(field: dict | None) -> bool:
    return field is not None and "merge" in str(field.get("x-kubernetes-patch-strategy", "")).split(",")


def _lists(patch: dict, key: str, original: list, modified: list, current: list, field: dict) -> None:
    merge_key = field.get("x-kubernetes-patch-merge-key")
    if not merge_key:  # a set of scalars
        added = [item for item in modified if item not in current]
        removed = [item for item in original if item not in modified]
        if added:
            patch[key] = added
        if removed:
            patch[f"$deleteFromPrimitiveList/{key}"] = removed
        return

    def keyed(items: list) -> dict:
        return {json.dumps(item.get(merge_key), sort_keys=True): item for item in items if isinstance(item, dict)}

    before, now = keyed(original), keyed(current)
    wanted = keyed(modified)
    changes: list = []
    for identity, item in wanted.items():
        if identity not in now:
            changes.append(copy.deepcopy(item))
            continue
        sub = _maps(before.get(identity) or {}, item, now[identity], _items(field))
        if sub:
            changes.append({merge_key: item.get(merge_key), **sub})
    for identity, item in before.items():
        if identity not in wanted:
            changes.append({merge_key: item.get(merge_key), _DIRECTIVE: "delete"})
    if changes:
        patch[key] = changes
        patch[f"$setElementOrder/{key}"] = [{merge_key: item.get(merge_key)} for item in wanted.values()]
