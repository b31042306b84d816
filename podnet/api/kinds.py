"""The kinds podnet serves: where each lives in the API, how it is named, its schema and its table.

One table shared by the API server (routes, discovery, storage keys, structural validation, OpenAPI,
server-side Tables), the client (paths) and the CLI (short names like `svc`, `netpol`; `podnet get`).
A kind's schema is Kubernetes' own OpenAPI definition of it (`definition`, vendored in
podnet/api/openapi/definitions.json); its columns are its `printer`; a kind without a printer gets
kube-apiserver's default table. Adding a kind is adding one entry here.
"""

from dataclasses import dataclass, field

from podnet.api import printers
from podnet.api.printers import Printer


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    has_status: bool = True
    printer: Printer | None = None
    categories: tuple[str, ...] = ()
    # A kind a CustomResourceDefinition defines: what the server needs of its definition (its schema,
    # singular name, scale paths), from apiserver/customresources; None for the built-in kinds.
    custom: object | None = field(default=None, compare=False)

    @property
    def built_in(self) -> str:
        """The kind's name if it is a built-in kind, else "": what per-kind rules of the server go by, so that a
        custom kind of the same name (Knative's `Service`) gets none of the built-in kind's."""
        return self.kind if self.custom is None else ""

    @property
    def list_kind(self) -> str:
        return getattr(self.custom, "list_kind", None) or f"{self.kind}List"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_version_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def definition(self) -> str:
        """The name of the kind's OpenAPI definition, as Kubernetes names it (`io.k8s.api.apps.v1.Deployment`)."""
        if self.custom is not None:  # as kube-apiserver names a custom resource's: `com.example.stable.v1.CronTab`
            return ".".join([*reversed(self.group.split(".")), self.version, self.kind])
        if self.group in _DEFINITION_PREFIXES:
            return f"{_DEFINITION_PREFIXES[self.group]}.{self.version}.{self.kind}"
        package = self.group.split(".", 1)[0] if self.group else "core"
        return f"io.k8s.api.{package}.{self.version}.{self.kind}"

    @property
    def singular(self) -> str:
        return getattr(self.custom, "singular", None) or self.kind.lower()

    @property
    def storage_resource(self) -> str:
        """The resource name in storage keys, as kube-apiserver uses it (`/registry/services/...`); a custom
        resource's is under its group, as another group may have a resource of the same name."""
        if self.custom is not None:
            return f"{self.group}/{self.plural}"
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
_STORAGE_NAMES = {"services": "services/specs", "endpoints": "services/endpoints", "leases": "leases",
                  "ingresses": "ingress"}
# Groups whose definitions are not under io.k8s.api (the API extensions server's own).
_DEFINITION_PREFIXES = {"apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions"}

KINDS: tuple[Kind, ...] = (
    Kind("Namespace", "", "v1", "namespaces", False, ("ns",), printer=printers.NAMESPACE),
    Kind("Node", "", "v1", "nodes", False, ("no",), printer=printers.NODE),
    Kind("Pod", "", "v1", "pods", True, ("po",), printer=printers.POD, categories=("all",)),
    Kind("Service", "", "v1", "services", True, ("svc",), printer=printers.SERVICE, categories=("all",)),
    Kind("Endpoints", "", "v1", "endpoints", True, ("ep",), has_status=False, printer=printers.ENDPOINTS),
    Kind("Event", "", "v1", "events", True, ("ev",), has_status=False, printer=printers.EVENT),
    Kind("ConfigMap", "", "v1", "configmaps", True, ("cm",), has_status=False, printer=printers.CONFIG_MAP),
    Kind("Secret", "", "v1", "secrets", True, (), has_status=False, printer=printers.SECRET),
    Kind("ServiceAccount", "", "v1", "serviceaccounts", True, ("sa",), has_status=False,
         printer=printers.SERVICE_ACCOUNT),
    Kind("ResourceQuota", "", "v1", "resourcequotas", True, ("quota",), printer=printers.RESOURCE_QUOTA),
    Kind("LimitRange", "", "v1", "limitranges", True, ("limits",), has_status=False),
    Kind("EndpointSlice", "discovery.k8s.io", "v1", "endpointslices", True, (), has_status=False,
         printer=printers.ENDPOINT_SLICE),
    Kind("IngressClass", "networking.k8s.io", "v1", "ingressclasses", False, (), has_status=False,
         printer=printers.INGRESS_CLASS),
    Kind("Ingress", "networking.k8s.io", "v1", "ingresses", True, ("ing",), printer=printers.INGRESS),
    Kind("NetworkPolicy", "networking.k8s.io", "v1", "networkpolicies", True, ("netpol",),
         printer=printers.NETWORK_POLICY),
    Kind("Lease", "coordination.k8s.io", "v1", "leases", True, (), has_status=False, printer=printers.LEASE),
    Kind("ControllerRevision", "apps", "v1", "controllerrevisions", True, (), has_status=False,
         printer=printers.CONTROLLER_REVISION),
    Kind("DaemonSet", "apps", "v1", "daemonsets", True, ("ds",), printer=printers.DAEMON_SET, categories=("all",)),
    Kind("Deployment", "apps", "v1", "deployments", True, ("deploy",), printer=printers.DEPLOYMENT,
         categories=("all",)),
    Kind("ReplicaSet", "apps", "v1", "replicasets", True, ("rs",), printer=printers.REPLICA_SET,
         categories=("all",)),
    Kind("StatefulSet", "apps", "v1", "statefulsets", True, ("sts",), printer=printers.STATEFUL_SET,
         categories=("all",)),
    Kind("CronJob", "batch", "v1", "cronjobs", True, ("cj",), printer=printers.CRON_JOB, categories=("all",)),
    Kind("Job", "batch", "v1", "jobs", True, (), printer=printers.JOB, categories=("all",)),
    Kind("Role", "rbac.authorization.k8s.io", "v1", "roles", True, (), has_status=False, printer=printers.ROLE),
    Kind("ClusterRole", "rbac.authorization.k8s.io", "v1", "clusterroles", False, (), has_status=False,
         printer=printers.ROLE),
    Kind("RoleBinding", "rbac.authorization.k8s.io", "v1", "rolebindings", True, (), has_status=False,
         printer=printers.ROLE_BINDING),
    Kind("ClusterRoleBinding", "rbac.authorization.k8s.io", "v1", "clusterrolebindings", False, (), has_status=False,
         printer=printers.ROLE_BINDING),
    Kind("CustomResourceDefinition", "apiextensions.k8s.io", "v1", "customresourcedefinitions", False, ("crd", "crds"),
         categories=("api-extensions",)),
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
