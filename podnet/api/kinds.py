"""The kinds podnet serves: where each lives in the API and how it is named.

One table shared by the API server (routes, discovery, storage keys), the client (paths) and the CLI
(short names like `svc`, `netpol`).
"""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def storage_resource(self) -> str:
        """The resource name in storage keys, as kube-apiserver uses it (`/registry/services/...`)."""
        return _STORAGE_NAMES.get(self.plural, self.plural)

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        parts = [self.group_version_path]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        return "/".join(parts)


# kube-apiserver keeps a few resources under historical names in etcd.
_STORAGE_NAMES = {"services": "services/specs", "endpoints": "services/endpoints", "leases": "leases"}

KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "", "v1", "namespaces", False, ("ns",)),
    Kind("Node", "", "v1", "nodes", False, ("no",)),
    Kind("Pod", "", "v1", "pods", True, ("po",)),
    Kind("Service", "", "v1", "services", True, ("svc",)),
    Kind("Endpoints", "", "v1", "endpoints", True, ("ep",), has_status=False),
    Kind("Event", "", "v1", "events", True, ("ev",), has_status=False),
    Kind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True, (), has_status=False),
    Kind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", True, ("netpol",)),
    Kind("Lease", "coordination.k8s.io", "v1", "leases", True, (), has_status=False),
    Kind("Deployment", "apps", "v1", "deployments", True, ("deploy",)),
    Kind("ReplicaSet", "apps", "v1", "replicasets", True, ("rs",)),
)

_BY_NAME: dict[str, Kind] = {}
for _k in KINDS:
    for _name in (_k.kind.lower(), _k.plural, _k.singular, *_k.short_names):
        _BY_NAME[_name] = _k
    _BY_NAME[f"{_k.plural}.{_k.group}"] = _k


class UnknownKind(LookupError):
    pass


def lookup(name: str) -> Kind:
    """Finds a kind by kind name, plural, singular or short name, case-insensitively (`svc`, `Pod`)."""
    try:
        return _BY_NAME[name.lower()]
    except KeyError:
        raise UnknownKind(f'the server doesn\'t have a resource type "{name}"') from None


def for_object(obj: dict) -> Kind:
    """The kind of an object from its apiVersion and kind fields."""
    kind_name = obj.get("kind")
    if not isinstance(kind_name, str):
        raise UnknownKind("object has no kind")
    kind = lookup(kind_name)
    if kind.kind != kind_name or obj.get("apiVersion") != kind.api_version:
        raise UnknownKind(f'no kind "{kind_name}" is registered for version "{obj.get("apiVersion")}"')
    return kind


def by_path(group: str, version: str, plural: str) -> Kind | None:
    for k in KINDS:
        if k.group == group and k.version == version and k.plural == plural:
            return k
    return None
