"""The default cluster roles and bindings, as kube-apiserver's bootstrap policy
(plugin/pkg/auth/authorizer/rbac/bootstrappolicy), and podnet's own.

Pure data and pure functions. `DEFAULT_CLUSTER_ROLES` and `DEFAULT_CLUSTER_ROLE_BINDINGS` carry the
`kubernetes.io/bootstrapping: rbac-defaults` label and the `rbac.authorization.kubernetes.io/autoupdate:
"true"` annotation; `reconcile(default, existing)` is what the start-up hook writes for one of them: the
default when missing, the existing object with the default's rules and subjects added when it is out of
date and still auto-updated, nothing otherwise (kube-apiserver's reconciliation: it adds, never removes).
`admin`, `edit` and `view` are aggregated (aggregation.py) from the `system:aggregate-to-*` roles.
"""

from __future__ import annotations

import copy

from podnet.apiserver.rbac.aggregation import settle
from podnet.apiserver.rbac.authorizer import RBAC_GROUP, Policy

from podnet.api.kinds import KINDS

API_VERSION = f"{RBAC_GROUP}/v1"
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
BOOTSTRAPPING = "kubernetes.io/bootstrapping"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
READ_WRITE = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]

AUTHENTICATED, UNAUTHENTICATED = "system:authenticated", "system:unauthenticated"


def rule(verbs: list[str], groups: list[str], resources: list[str], names: list[str] | None = None) -> dict:
    made = {"verbs": list(verbs), "apiGroups": list(groups), "resources": list(resources)}
    return made | ({"resourceNames": list(names)} if names else {})


def url_rule(verbs: list[str], urls: list[str]) -> dict:
    return {"verbs": list(verbs), "nonResourceURLs": list(urls)}


def _metadata(name: str, labels: dict | None = None) -> dict:
    return {"name": name, "labels": {BOOTSTRAPPING: "rbac-defaults", **(labels or {})},
            "annotations": {AUTOUPDATE: "true"}}


def cluster_role(name: str, rules: list[dict], *, labels: dict | None = None, aggregate: str = "") -> dict:
    role = {"apiVersion": API_VERSION, "kind": "ClusterRole", "metadata": _metadata(name, labels), "rules": rules}
    if aggregate:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {f"{AGGREGATE_TO}{aggregate}": "true"}}]}
    return role


def subject(kind: str, name: str, namespace: str = "") -> dict:
    if kind == "ServiceAccount":
        return {"kind": kind, "name": name, "namespace": namespace}
    return {"kind": kind, "apiGroup": RBAC_GROUP, "name": name}


def cluster_role_binding(name: str, role: str, subjects: list[dict]) -> dict:
    return {"apiVersion": API_VERSION, "kind": "ClusterRoleBinding", "metadata": _metadata(name),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects}


def _aggregate_labels(*targets: str) -> dict:
    return {f"{AGGREGATE_TO}{t}": "true" for t in targets}


# Every kind podnet serves but Secrets (reading one can be escalation: a ServiceAccount's token among them).
_READABLE_KINDS = sorted({kind.plural for kind in KINDS} - {"secrets"})

_DISCOVERY_URLS = ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz",
                   "/version", "/version/"]
_PUBLIC_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"]

_VIEW_RULES = [
    rule(READ, [""], ["configmaps", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "pods",
                      "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
                      "services/status"]),
    rule(READ, [""], ["bindings", "events", "limitranges", "namespaces/status", "pods/log", "pods/status",
                      "replicationcontrollers/status", "resourcequotas", "resourcequotas/status"]),
    rule(READ, [""], ["namespaces"]),
    rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    rule(READ, ["apps"], ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                          "deployments/status", "replicasets", "replicasets/scale", "replicasets/status",
                          "statefulsets", "statefulsets/scale", "statefulsets/status"]),
    rule(READ, ["autoscaling"], ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
    rule(READ, ["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
    rule(READ, ["extensions"], ["daemonsets", "daemonsets/status", "deployments", "deployments/scale",
                                "deployments/status", "ingresses", "ingresses/status", "networkpolicies", "replicasets",
                                "replicasets/scale", "replicasets/status", "replicationcontrollers/scale"]),
    rule(READ, ["policy"], ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    rule(READ, ["networking.k8s.io"], ["ingresses", "ingresses/status", "networkpolicies"]),
]
_EDIT_RULES = [
    rule(READ, [""], ["pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "secrets", "services/proxy"]),
    rule(["impersonate"], [""], ["serviceaccounts"]),
    rule(WRITE, [""], ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"]),
    rule(["create"], [""], ["pods/eviction"]),
    rule(WRITE, [""], ["configmaps", "events", "persistentvolumeclaims", "replicationcontrollers",
                       "replicationcontrollers/scale", "secrets", "serviceaccounts", "services", "services/proxy"]),
    rule(["create"], [""], ["serviceaccounts/token"]),
    rule(WRITE, ["apps"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
                           "replicasets/scale", "statefulsets", "statefulsets/scale"]),
    rule(WRITE, ["autoscaling"], ["horizontalpodautoscalers"]),
    rule(WRITE, ["batch"], ["cronjobs", "jobs"]),
    rule(WRITE, ["extensions"], ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "ingresses",
                                 "networkpolicies", "replicasets", "replicasets/scale", "replicationcontrollers/scale"]),
    rule(WRITE, ["policy"], ["poddisruptionbudgets"]),
    rule(WRITE, ["networking.k8s.io"], ["ingresses", "networkpolicies"]),
    rule(READ_WRITE, ["coordination.k8s.io"], ["leases"]),
]
_ADMIN_RULES = [
    rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    rule(READ_WRITE, [RBAC_GROUP], ["rolebindings", "roles"]),
]

# podnet's components, by the groups `podnet up` gives them (podnet/cluster/credentials.py): what each reads,
# writes and records events about, and nothing else.
_EVENTS = rule(["create", "update", "patch"], ["", "events.k8s.io"], ["events"])
_NODE_RULES = [
    rule(READ + ["create", "update", "patch", "delete"], [""], ["nodes"]),
    rule(["get", "update", "patch"], [""], ["nodes/status", "pods/status"]),
    rule(READ + ["delete"], [""], ["pods"]),
    rule(READ, [""], ["services", "endpoints", "namespaces"]),
    rule(READ, [""], ["configmaps", "secrets"]),  # what pods' environments and volumes take from them
    rule(["get"], [""], ["serviceaccounts"]),
    rule(["create"], [""], ["serviceaccounts/token"]),  # the pods' projected service-account tokens
    rule(["create"], [""], ["namespaces"]),  # kube-node-lease, on a server without its controllers
    rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    rule(READ, ["networking.k8s.io"], ["networkpolicies"]),
    # The agent enforces Cilium's policies too, reading them as cilium-agent's ClusterRole lets it.
    rule(READ, ["cilium.io"], ["ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies"]),
    rule(READ_WRITE, ["coordination.k8s.io"], ["leases"]),
    _EVENTS,
]
_PROXY_RULES = [
    rule(READ, [""], ["services", "endpoints", "nodes"]),
    rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    _EVENTS,
]
_BGP_RULES = [rule(READ, [""], ["nodes"]), _EVENTS]
_DNS_RULES = [
    rule(READ + ["create"], [""], ["services", "namespaces"]),  # kube-dns and kube-system when missing
    rule(READ_WRITE, [""], ["pods"]),  # each replica registers its relay pod
    rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    _EVENTS,
]
_CLOUD_LB_RULES = [
    rule(READ, [""], ["services", "nodes"]),
    rule(["get", "update", "patch"], [""], ["services/status"]),
    _EVENTS,
]

_INGRESS_RULES = [
    rule(READ, ["networking.k8s.io"], ["ingresses", "ingressclasses"]),
    rule(["create"], ["networking.k8s.io"], ["ingressclasses"]),
    rule(["get", "update", "patch"], ["networking.k8s.io"], ["ingresses/status"]),
    rule(READ, [""], ["services", "nodes"]),
    rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
    _EVENTS,
]

DEFAULT_CLUSTER_ROLES: list[dict] = [
    cluster_role("cluster-admin", [rule(["*"], ["*"], ["*"]), url_rule(["*"], ["*"])]),
    cluster_role("admin", [], aggregate="admin"),
    cluster_role("edit", [], labels=_aggregate_labels("admin"), aggregate="edit"),
    cluster_role("view", [], labels=_aggregate_labels("edit"), aggregate="view"),
    cluster_role("system:aggregate-to-admin", _ADMIN_RULES, labels=_aggregate_labels("admin")),
    cluster_role("system:aggregate-to-edit", _EDIT_RULES, labels=_aggregate_labels("admin", "edit")),
    cluster_role("system:aggregate-to-view", _VIEW_RULES, labels=_aggregate_labels("admin", "edit", "view")),
    cluster_role("system:discovery", [url_rule(["get"], _DISCOVERY_URLS)]),
    cluster_role("system:public-info-viewer", [url_rule(["get"], _PUBLIC_URLS)]),
    cluster_role("system:basic-user", [
        rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
        rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
    ]),
    # Who may read the service-account issuer's OIDC discovery documents (to verify tokens elsewhere).
    cluster_role("system:service-account-issuer-discovery", [url_rule(["get"], [
        "/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/"])]),
    cluster_role("system:monitoring", [url_rule(["get"], ["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics",
                                                          "/readyz", "/readyz/*"])]),
    # What podnet's token-file group `view` has always meant: reading every kind but Secrets (ClusterRole
    # view also leaves out nodes and the cluster-scoped rest).
    cluster_role("podnet:read-all", [rule(READ, ["*"], _READABLE_KINDS),
                                     rule(READ, ["*"], ["pods/log", "*/status", "*/scale"])]),
    cluster_role("system:podnet:node", _NODE_RULES),
    cluster_role("system:podnet:kube-proxy", _PROXY_RULES),
    cluster_role("system:podnet:bgp", _BGP_RULES),
    cluster_role("system:podnet:dns", _DNS_RULES),
    cluster_role("system:podnet:cloud-lb", _CLOUD_LB_RULES),
    cluster_role("system:podnet:ingress", _INGRESS_RULES),
]

# Groups podnet components carry in their credentials, beside their user names. (The in-process controllers
# are the API server's own loopback user, in system:masters, as kube-apiserver's loopback client is.)
NODES_GROUP = "system:nodes"
PROXIES_GROUP = "system:podnet:kube-proxies"
BGP_GROUP = "system:podnet:bgp"
DNS_GROUP = "system:podnet:dns"
CLOUD_LB_GROUP = "system:podnet:cloud-lb"
INGRESS_GROUP = "system:podnet:ingress"

DEFAULT_CLUSTER_ROLE_BINDINGS: list[dict] = [
    cluster_role_binding("cluster-admin", "cluster-admin", [subject("Group", "system:masters")]),
    cluster_role_binding("system:discovery", "system:discovery", [subject("Group", AUTHENTICATED)]),
    cluster_role_binding("system:basic-user", "system:basic-user", [subject("Group", AUTHENTICATED)]),
    cluster_role_binding("system:public-info-viewer", "system:public-info-viewer",
                         [subject("Group", AUTHENTICATED), subject("Group", UNAUTHENTICATED)]),
    cluster_role_binding("system:service-account-issuer-discovery", "system:service-account-issuer-discovery",
                         [subject("Group", "system:serviceaccounts")]),
    cluster_role_binding("system:monitoring", "system:monitoring", [subject("Group", "system:monitoring")]),
    # podnet's token-file groups from before RBAC, bound as they were meant.
    cluster_role_binding("podnet:admin", "cluster-admin", [subject("Group", "admin")]),
    cluster_role_binding("podnet:view", "podnet:read-all", [subject("Group", "view")]),
    cluster_role_binding("system:podnet:node", "system:podnet:node", [subject("Group", NODES_GROUP)]),
    cluster_role_binding("system:podnet:kube-proxy", "system:podnet:kube-proxy", [subject("Group", PROXIES_GROUP)]),
    cluster_role_binding("system:podnet:bgp", "system:podnet:bgp", [subject("Group", BGP_GROUP)]),
    cluster_role_binding("system:podnet:dns", "system:podnet:dns", [subject("Group", DNS_GROUP)]),
    cluster_role_binding("system:podnet:cloud-lb", "system:podnet:cloud-lb", [subject("Group", CLOUD_LB_GROUP)]),
    cluster_role_binding("system:podnet:ingress", "system:podnet:ingress", [subject("Group", INGRESS_GROUP)]),
]


def reconcile(default: dict, existing: dict | None) -> dict | None:
    """What to write for one default object: None when `existing` needs nothing."""
    if existing is None:
        return copy.deepcopy(default)
    if ((existing.get("metadata") or {}).get("annotations") or {}).get(AUTOUPDATE) == "false":
        return None
    updated = copy.deepcopy(existing)
    changed = False
    for key in ("rules", "subjects"):
        if key not in default:
            continue
        current = updated.setdefault(key, [])
        for item in default[key]:
            if item not in current:
                current.append(copy.deepcopy(item))
                changed = True
    if "aggregationRule" in default and updated.get("aggregationRule") != default["aggregationRule"]:
        updated["aggregationRule"] = copy.deepcopy(default["aggregationRule"])
        changed = True
    return updated if changed else None


def settled_cluster_roles() -> dict[str, dict]:
    """The default cluster roles by name, the aggregated ones filled as the aggregation controller would."""
    return settle({role["metadata"]["name"]: role for role in DEFAULT_CLUSTER_ROLES})


def default_policy() -> Policy:
    """The policy of a cluster with nothing but the defaults."""
    bindings = {binding["metadata"]["name"]: binding for binding in DEFAULT_CLUSTER_ROLE_BINDINGS}
    return Policy(cluster_roles=settled_cluster_roles(), cluster_role_bindings=bindings)
