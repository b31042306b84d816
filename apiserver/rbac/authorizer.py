"""The RBAC decision, as kube-apiserver's RBAC authorizer makes it (plugin/pkg/auth/authorizer/rbac).

`authorize(user, attributes, policy)` is pure: the user, what the request does (`Attributes`: a verb on a
resource, subresource and name in a namespace, or a verb on a non-resource path) and the roles and bindings
in force (`Policy`) give a `Decision`. A request is allowed when a binding whose subjects include the user
refers to a role with a rule that covers it; a RoleBinding counts only in its own namespace, a
ClusterRoleBinding everywhere. `system:masters` is the break-glass group: it is allowed before RBAC is
asked, as kube-apiserver's privileged-group authorizer does.

A compatibility rule keeps podnet's token-file groups `edit:<namespace>` meaning what their name says: the
ClusterRole `edit` in `<namespace>`, as a RoleBinding there to it would give. Such a group may name a
namespace that does not exist yet, which no stored RoleBinding can. (Not every verb on everything: that
let an editor write `services/status`, `pods/status` and EndpointSlices, and so claim other pods'
traffic, which Kubernetes' edit role does not allow.)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from podnet.apiserver.auth import MASTERS_GROUP, User

RBAC_GROUP = "rbac.authorization.k8s.io"
LEGACY_EDIT_PREFIX = "edit:"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
_EVERYTHING = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}
_EDIT_ROLE = {"kind": "ClusterRole", "name": "edit"}


@dataclass(frozen=True, slots=True)
class Attributes:
    """What a request does: a resource request when `resource` is set, else a non-resource `path`."""

    verb: str
    namespace: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""

    @property
    def resource_request(self) -> bool:
        return bool(self.resource)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(slots=True)
class Policy:
    """The roles and bindings in force, keyed as storage names them: cluster objects by name, namespaced
    ones by (namespace, name)."""

    cluster_roles: dict[str, dict] = field(default_factory=dict)
    roles: dict[tuple[str, str], dict] = field(default_factory=dict)
    cluster_role_bindings: dict[str, dict] = field(default_factory=dict)
    role_bindings: dict[tuple[str, str], dict] = field(default_factory=dict)


# --- rules ------------------------------------------------------------------------------------------


def _strings(rule: dict, key: str) -> list[str]:
    value = rule.get(key)
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _resource_matches(resources: list[str], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for candidate in resources:
        if candidate in ("*", combined):
            return True
        if subresource and candidate == f"*/{subresource}":
            return True
    return False


def _url_matches(urls: list[str], path: str) -> bool:
    return any(url == "*" or url == path or (url.endswith("*") and path.startswith(url[:-1])) for url in urls)


def rule_allows(rule: dict, attributes: Attributes) -> bool:
    verbs = _strings(rule, "verbs")
    if "*" not in verbs and attributes.verb not in verbs:
        return False
    if not attributes.resource_request:
        return _url_matches(_strings(rule, "nonResourceURLs"), attributes.path)
    groups = _strings(rule, "apiGroups")
    if "*" not in groups and attributes.api_group not in groups:
        return False
    if not _resource_matches(_strings(rule, "resources"), attributes.resource, attributes.subresource):
        return False
    names = _strings(rule, "resourceNames")
    return not names or attributes.name in names


# --- subjects and bindings ----------------------------------------------------------------------------


def service_account_user(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def subject_matches(subject: dict, user: User, binding_namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return name == user.name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        # A ServiceAccount subject of a RoleBinding without a namespace is one of the binding's namespace.
        namespace = subject.get("namespace") or binding_namespace
        return bool(namespace) and user.name == service_account_user(namespace, str(name))
    return False


def _subjects(binding: dict) -> list[dict]:
    return [s for s in binding.get("subjects") or [] if isinstance(s, dict)]


def _describe_subject(subject: dict, binding_namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("namespace") or binding_namespace}/{subject.get("name")}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def role_rules(policy: Policy, role_ref: object, namespace: str) -> list[dict]:
    """The rules of the role a binding refers to (none when it does not exist)."""
    if not isinstance(role_ref, dict):
        return []
    name = str(role_ref.get("name") or "")
    role = (policy.cluster_roles.get(name) if role_ref.get("kind") == "ClusterRole"
            else policy.roles.get((namespace, name)) if role_ref.get("kind") == "Role" else None)
    return [r for r in (role or {}).get("rules") or [] if isinstance(r, dict)]


@dataclass(frozen=True, slots=True)
class Grant:
    """Rules one binding gives a user, with the words kube-apiserver uses to say so."""

    rules: list[dict]
    source: str


def grants(user: User, namespace: str, policy: Policy) -> Iterator[Grant]:
    """Every set of rules that applies to `user` in `namespace` ("" : cluster-wide only), cluster
    bindings first, as kube-apiserver visits them."""
    for name, binding in sorted(policy.cluster_role_bindings.items()):
        yield from _binding_grants(user, policy, binding, "ClusterRoleBinding", name, "")
    if namespace:
        for (binding_namespace, name), binding in sorted(policy.role_bindings.items()):
            if binding_namespace == namespace:
                yield from _binding_grants(user, policy, binding, "RoleBinding", f"{namespace}/{name}", namespace)
        if f"{LEGACY_EDIT_PREFIX}{namespace}" in user.groups:
            yield Grant(role_rules(policy, _EDIT_ROLE, namespace),
                        f'the group "{LEGACY_EDIT_PREFIX}{namespace}" (podnet\'s token-file editors) to ClusterRole "edit"')


def _binding_grants(user: User, policy: Policy, binding: dict, kind: str, name: str, namespace: str) -> Iterator[Grant]:
    for subject in _subjects(binding):
        if subject_matches(subject, user, namespace):
            role_ref = binding.get("roleRef") or {}
            source = (f'{kind} "{name}" of {role_ref.get("kind")} "{role_ref.get("name")}" to '
                      f"{_describe_subject(subject, namespace)}")
            yield Grant(role_rules(policy, role_ref, namespace), source)
            return


def authorize(user: User, attributes: Attributes, policy: Policy) -> Decision:
    if MASTERS_GROUP in user.groups:
        return Decision(True, "")
    namespace = attributes.namespace if attributes.resource_request else ""
    for grant in grants(user, namespace, policy):
        if any(rule_allows(rule, attributes) for rule in grant.rules):
            return Decision(True, f"RBAC: allowed by {grant.source}")
    return Decision(False, "")


def rules_for(user: User, namespace: str, policy: Policy) -> list[dict]:
    """Every rule that applies to `user` in `namespace`, for a SelfSubjectRulesReview."""
    if MASTERS_GROUP in user.groups:
        return [_EVERYTHING, {"verbs": ["*"], "nonResourceURLs": ["*"]}]
    return [rule for grant in grants(user, namespace, policy) for rule in grant.rules]


def covers(held: Iterable[dict], wanted: dict) -> bool:
    """Whether the rules `held` allow everything `wanted` (one rule) does: kube-apiserver's escalation check
    (validation.Covers), by breaking `wanted` into its single verb/group/resource/name parts."""
    held = list(held)
    verbs = _strings(wanted, "verbs")
    if _strings(wanted, "nonResourceURLs"):
        return all(any(_covers_url(h, verb, url) for h in held)
                   for verb in verbs for url in _strings(wanted, "nonResourceURLs"))
    names = _strings(wanted, "resourceNames") or [""]
    return all(
        any(_covers_resource(h, verb, group, resource, name) for h in held)
        for verb in verbs for group in _strings(wanted, "apiGroups")
        for resource in _strings(wanted, "resources") for name in names
    )


def _has(rule: dict, key: str, value: str) -> bool:
    values = _strings(rule, key)
    return "*" in values or value in values


def _covers_url(held: dict, verb: str, url: str) -> bool:
    return _has(held, "verbs", verb) and _url_matches(_strings(held, "nonResourceURLs"), url)


def _covers_resource(held: dict, verb: str, group: str, resource: str, name: str) -> bool:
    if not (_has(held, "verbs", verb) and _has(held, "apiGroups", group)):
        return False
    resources = _strings(held, "resources")
    base, _, sub = resource.partition("/")
    if not ("*" in resources or resource in resources or (sub and f"*/{sub}" in resources)):
        return False
    held_names = _strings(held, "resourceNames")
    return not held_names or (bool(name) and name in held_names)
