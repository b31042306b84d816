"""How field ownership sees a kind's fields: which lists are maps keyed by some fields of their items,
which lists are sets, which values are owned as a whole, and which containers every object has.

`field_schema(kind_name)` is the one lookup server-side apply uses; its answers are Kubernetes' own
(`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type` of the OpenAPI
definitions, and the Go types' non-optional structs) for the fields podnet serves. Until podnet serves
those definitions, the keyed lists and sets are strategic merge's (patch.merge_keys), keyed by more
fields where apply's list-map keys say so. Paths are field names joined by dots, list positions left
out (`spec.template.spec.containers.ports`).

Lists and maps not named follow Kubernetes' defaults: a list without a list type is atomic (one value,
owned and replaced whole: `command`, `args`, NetworkPolicy rules), a map is granular (each key owned on
its own: `labels`, `annotations`, any struct).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from podnet.apiserver.patch import merge_keys

# Lists that apply keys by more fields than strategic merge's one merge key, by the end of their path.
_WIDER_KEYS = {
    "containers.ports": ("containerPort", "protocol"),
    "initContainers.ports": ("containerPort", "protocol"),
    "spec.ports": ("port", "protocol"),  # a Service's
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}
# Lists strategic merge merges that apply owns whole.
_ATOMIC_LISTS = frozenset({"status.containerStatuses"})
# Key fields Kubernetes defaults, so that an item that leaves them out still has its key.
_KEY_DEFAULTS = {"protocol": "TCP"}

_POD_TEMPLATE = ("spec.template", "spec.template.metadata", "spec.template.spec", "spec.template.spec.containers")
# Maps and structs owned whole (label selectors, a Service's selector), and the containers the empty
# object has (Go structs that are not pointers, lists without omitempty): writing into those adds their
# fields, not the container itself.
_ATOMIC: dict[str, frozenset[str]] = {
    "Deployment": frozenset({"spec.selector"}),
    "ReplicaSet": frozenset({"spec.selector"}),
    "Service": frozenset({"spec.selector"}),
    "NetworkPolicy": frozenset({"spec.podSelector"}),
}
_PRESENT: dict[str, frozenset[str]] = {
    "Pod": frozenset({"spec", "spec.containers", "status"}),
    "Deployment": frozenset({"spec", "spec.strategy", "status", *_POD_TEMPLATE}),
    "ReplicaSet": frozenset({"spec", "status", *_POD_TEMPLATE}),
    "Service": frozenset({"spec", "status", "status.loadBalancer"}),
    "NetworkPolicy": frozenset({"spec", "spec.podSelector"}),
    "Node": frozenset({"spec", "status", "status.daemonEndpoints", "status.nodeInfo"}),
    "Namespace": frozenset({"spec", "status"}),
    "EndpointSlice": frozenset({"endpoints"}),
    "Lease": frozenset({"spec"}),
}


@dataclass(frozen=True, slots=True)
class FieldSchema:
    list_keys: dict[str, tuple[str, ...]]
    sets: frozenset[str]
    atomic: frozenset[str]
    present: frozenset[str]

    def keys_of(self, path: str) -> tuple[str, ...] | None:
        """The key fields of an associative list at `path`; None when the list is not one."""
        return self.list_keys.get(path)

    def is_set(self, path: str) -> bool:
        return path in self.sets

    def is_atomic(self, path: str) -> bool:
        return path in self.atomic

    def key_default(self, key: str) -> object:
        return _KEY_DEFAULTS.get(key)


def _wider(path: str, key: str) -> tuple[str, ...]:
    for end, keys in _WIDER_KEYS.items():
        if path == end or path.endswith(f".{end}"):
            return keys
    return (key,)


@cache
def field_schema(kind_name: str) -> FieldSchema:
    merging = {path: key for path, key in merge_keys(kind_name).items() if path not in _ATOMIC_LISTS}
    return FieldSchema(
        list_keys={path: _wider(path, key) for path, key in merging.items() if key is not None},
        sets=frozenset(path for path, key in merging.items() if key is None),
        atomic=_ATOMIC.get(kind_name, frozenset()),
        present=frozenset({"metadata"}) | _PRESENT.get(kind_name, frozenset()),
    )
