"""How field ownership sees a kind's fields: which lists are maps keyed by some fields of their items,
which lists are sets, which values are owned as a whole, and which containers every object has.

`field_schema(kind_name)` is the one lookup server-side apply uses. Its answers come from the kind's
OpenAPI definition (podnet/api/openapi, Kubernetes' own): `x-kubernetes-list-type` map (keyed by
`x-kubernetes-list-map-keys`) or set, and `x-kubernetes-map-type: atomic`. Paths are field names
joined by dots, list positions left out (`spec.template.spec.containers.ports`); a keyed list's items
share its path, so an atomic path that is a keyed list's means its items are owned whole.

What the definitions leave unmarked follows Kubernetes' defaults: a list without a list type is atomic
(one value, owned and replaced whole: `command`, `args`, NetworkPolicy rules), a map is granular (each
key owned on its own: `labels`, `annotations`, any struct).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from podnet.api.kinds import UnknownKind, lookup
from podnet.api.openapi import REF_PREFIX, definitions, resolve

# Key fields Kubernetes defaults, so that an item that leaves them out still has its key.
_KEY_DEFAULTS = {"protocol": "TCP"}

_POD_TEMPLATE = ("spec.template", "spec.template.metadata", "spec.template.spec", "spec.template.spec.containers")
# Containers the empty object has (Go structs that are not pointers, lists without omitempty; the
# OpenAPI definitions do not tell): writing into them adds their fields, not the container itself.
_PRESENT: dict[str, frozenset[str]] = {
    "Pod": frozenset({"spec", "spec.containers", "status"}),
    "Deployment": frozenset({"spec", "spec.strategy", "status", *_POD_TEMPLATE}),
    "ReplicaSet": frozenset({"spec", "status", *_POD_TEMPLATE}),
    "StatefulSet": frozenset({"spec", "status", *_POD_TEMPLATE}),
    "DaemonSet": frozenset({"spec", "spec.updateStrategy", "status", *_POD_TEMPLATE}),
    "Service": frozenset({"spec", "status", "status.loadBalancer"}),
    "NetworkPolicy": frozenset({"spec", "spec.podSelector"}),
    "Node": frozenset({"spec", "status", "status.daemonEndpoints", "status.nodeInfo"}),
    "Namespace": frozenset({"spec", "status"}),
    "EndpointSlice": frozenset({"endpoints"}),
    "Lease": frozenset({"spec"}),
}


@dataclass(frozen=True, slots=True)
class FieldSchema:
    list_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sets: frozenset[str] = frozenset()
    atomic: frozenset[str] = frozenset()
    present: frozenset[str] = frozenset({"metadata"})

    def keys_of(self, path: str) -> tuple[str, ...] | None:
        """The key fields of an associative list at `path`; None when the list is not one."""
        return self.list_keys.get(path)

    def is_set(self, path: str) -> bool:
        return path in self.sets

    def is_atomic(self, path: str) -> bool:
        return path in self.atomic

    def key_default(self, key: str) -> object:
        return _KEY_DEFAULTS.get(key)


def _walk(schema: dict, path: str, keys: dict[str, tuple[str, ...]], sets: set[str], atomic: set[str], seen: frozenset[str]) -> None:
    ref = schema.get("$ref")
    name = ref[len(REF_PREFIX):] if isinstance(ref, str) else None
    if name in seen:
        return
    resolved = resolve(schema)
    seen = seen | {name} if name else seen
    if "atomic" in (schema.get("x-kubernetes-map-type"), resolved.get("x-kubernetes-map-type")):
        atomic.add(path)
        return
    if resolved.get("type") == "array":
        list_type = schema.get("x-kubernetes-list-type") or resolved.get("x-kubernetes-list-type")
        if list_type == "map":
            keys[path] = tuple(schema.get("x-kubernetes-list-map-keys") or resolved.get("x-kubernetes-list-map-keys") or ())
        elif list_type == "set":
            sets.add(path)
        else:
            return  # atomic: nothing inside is owned apart from the whole
        _walk(resolved.get("items") or {}, path, keys, sets, atomic, seen)
        return
    for prop, sub in (resolved.get("properties") or {}).items():
        _walk(sub, f"{path}.{prop}" if path else prop, keys, sets, atomic, seen)


@cache
def field_schema(kind_name: str) -> FieldSchema:
    try:
        definition = lookup(kind_name).definition
    except UnknownKind:
        return FieldSchema()
    if definition not in definitions():
        return FieldSchema()
    keys: dict[str, tuple[str, ...]] = {}
    sets: set[str] = set()
    atomic: set[str] = set()
    _walk({"$ref": REF_PREFIX + definition}, "", keys, sets, atomic, frozenset())
    return FieldSchema(keys, frozenset(sets), frozenset(atomic), frozenset({"metadata"}) | _PRESENT.get(kind_name, frozenset()))
