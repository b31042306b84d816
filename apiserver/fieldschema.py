"""How field ownership sees a kind's fields: which lists are maps keyed by some fields of their items,
which lists are sets, which values are owned as a whole, and which containers every object has.

`field_schema(kind_name)` is the one lookup server-side apply uses. Its answers are Kubernetes' own
(`x-kubernetes-list-type`, `x-kubernetes-list-map-keys`, `x-kubernetes-map-type` of the OpenAPI
definitions, and the Go types' non-optional structs) for the fields podnet serves; paths are field
names joined by dots, list positions left out (`spec.template.spec.containers.ports`).

Lists and maps not named here follow Kubernetes' defaults: a list without a list type is atomic (one
value, owned and replaced whole: `command`, `args`, NetworkPolicy rules), a map is granular (each key
owned on its own: `labels`, `annotations`, any struct).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_PORT_KEYS = ("containerPort", "protocol")
_POD_SPEC_LISTS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "containers.ports": _PORT_KEYS,
    "initContainers.ports": _PORT_KEYS,
    "containers.env": ("name",),
    "initContainers.env": ("name",),
    "containers.volumeMounts": ("mountPath",),
    "initContainers.volumeMounts": ("mountPath",),
    "volumes": ("name",),
    "imagePullSecrets": ("name",),
    "containers.volumeDevices": ("devicePath",),
    "initContainers.volumeDevices": ("devicePath",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
    "schedulingGates": ("name",),
    "resourceClaims": ("name",),
}
_POD_SPEC_ATOMIC = frozenset({"affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"})
_METADATA_LISTS: dict[str, tuple[str, ...]] = {"metadata.ownerReferences": ("uid",)}
_METADATA_SETS = frozenset({"metadata.finalizers"})
# Key fields Kubernetes defaults, so that an item that leaves them out still has its key.
_KEY_DEFAULTS = {"protocol": "TCP"}


@dataclass(frozen=True, slots=True)
class FieldSchema:
    list_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sets: frozenset[str] = frozenset()
    atomic: frozenset[str] = frozenset()
    # Containers the empty object already has (Go structs that are not pointers, lists without
    # omitempty): writing into them adds their fields, not the container itself.
    present: frozenset[str] = frozenset()

    def keys_of(self, path: str) -> tuple[str, ...] | None:
        """The key fields of an associative list at `path`; None when the list is not one."""
        return self.list_keys.get(path)

    def is_set(self, path: str) -> bool:
        return path in self.sets

    def is_atomic(self, path: str) -> bool:
        return path in self.atomic

    def key_default(self, key: str) -> object:
        return _KEY_DEFAULTS.get(key)


def _pod_spec(prefix: str) -> tuple[dict[str, tuple[str, ...]], frozenset[str]]:
    """The pod spec's lists and atomic fields where a kind keeps its pod spec."""
    lists = {f"{prefix}{path}": keys for path, keys in _POD_SPEC_LISTS.items()}
    return lists, frozenset(f"{prefix}{path}" for path in _POD_SPEC_ATOMIC)


_POD_LISTS, _POD_ATOMIC = _pod_spec("spec.")
_TEMPLATE_LISTS, _TEMPLATE_ATOMIC = _pod_spec("spec.template.spec.")
_CONDITIONS = {"status.conditions": ("type",)}

_SCHEMAS: dict[str, FieldSchema] = {
    "Pod": FieldSchema(
        _METADATA_LISTS | _POD_LISTS | _CONDITIONS | {"status.podIPs": ("ip",)},
        _METADATA_SETS,
        _POD_ATOMIC,
        frozenset({"metadata", "spec", "spec.containers", "status"}),
    ),
    "Deployment": FieldSchema(
        _METADATA_LISTS | _TEMPLATE_LISTS | _CONDITIONS,
        _METADATA_SETS,
        _TEMPLATE_ATOMIC | {"spec.selector"},
        frozenset(
            {"metadata", "spec", "spec.template", "spec.template.metadata", "spec.template.spec",
             "spec.template.spec.containers", "spec.strategy", "status"}
        ),
    ),
    "ReplicaSet": FieldSchema(
        _METADATA_LISTS | _TEMPLATE_LISTS | _CONDITIONS,
        _METADATA_SETS,
        _TEMPLATE_ATOMIC | {"spec.selector"},
        frozenset({"metadata", "spec", "spec.template", "spec.template.metadata", "spec.template.spec",
                   "spec.template.spec.containers", "status"}),
    ),
    "Service": FieldSchema(
        _METADATA_LISTS | {"spec.ports": ("port", "protocol")} | _CONDITIONS,
        _METADATA_SETS | {"spec.clusterIPs", "spec.ipFamilies", "spec.externalIPs"},
        frozenset({"spec.selector"}),
        frozenset({"metadata", "spec", "status", "status.loadBalancer"}),
    ),
    "NetworkPolicy": FieldSchema(
        _METADATA_LISTS,
        _METADATA_SETS,
        frozenset({"spec.podSelector"}),
        frozenset({"metadata", "spec", "spec.podSelector"}),
    ),
    "Node": FieldSchema(
        _METADATA_LISTS | _CONDITIONS | {"status.addresses": ("type",)},
        _METADATA_SETS | {"spec.podCIDRs"},
        frozenset(),
        frozenset({"metadata", "spec", "status", "status.daemonEndpoints", "status.nodeInfo"}),
    ),
    "Namespace": FieldSchema(_METADATA_LISTS | _CONDITIONS, _METADATA_SETS, frozenset(), frozenset({"metadata", "spec", "status"})),
    "EndpointSlice": FieldSchema(
        _METADATA_LISTS, _METADATA_SETS, frozenset(), frozenset({"metadata", "endpoints"})
    ),
    "Lease": FieldSchema(_METADATA_LISTS, _METADATA_SETS, frozenset(), frozenset({"metadata", "spec"})),
}
_DEFAULT = FieldSchema(_METADATA_LISTS, _METADATA_SETS, frozenset(), frozenset({"metadata"}))


def field_schema(kind_name: str) -> FieldSchema:
    return _SCHEMAS.get(kind_name, _DEFAULT)

