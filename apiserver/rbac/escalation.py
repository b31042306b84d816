"""Escalation prevention, as kube-apiserver's RBAC storage does it (pkg/registry/rbac): a user may write a
Role or ClusterRole only with rules they hold themselves where it applies, and a binding only to a role
whose rules they hold, unless they may `escalate` roles (`bind` the role, for bindings); an aggregated
ClusterRole takes `escalate`; a binding to a role that does not exist is the role's 404. Pure:
`check(user, kind, obj, policy)` raises the Forbidden `ApiError` or returns.
"""

from __future__ import annotations

from podnet.apiserver import status
from podnet.apiserver.auth import User
from podnet.apiserver.rbac.authorizer import (
    RBAC_GROUP,
    Attributes,
    Policy,
    authorize,
    covers,
    role_rules,
    rules_for,
)
from podnet.apiserver.status import ApiError

from podnet.api.kinds import lookup

_ROLES = {"Role": "roles", "ClusterRole": "clusterroles"}
_BINDINGS = {"RoleBinding": "rolebindings", "ClusterRoleBinding": "clusterrolebindings"}


def _may(user: User, verb: str, resource: str, name: str, namespace: str, policy: Policy) -> bool:
    attributes = Attributes(verb, namespace, RBAC_GROUP, resource, name=name)
    return authorize(user, attributes, policy).allowed


def check(user: User, kind_name: str, obj: dict, policy: Policy) -> None:
    if kind_name not in _ROLES and kind_name not in _BINDINGS:
        return
    metadata = obj.get("metadata") or {}
    name, namespace = str(metadata.get("name") or ""), str(metadata.get("namespace") or "")
    if kind_name in _ROLES:
        if _may(user, "escalate", _ROLES[kind_name], name, namespace, policy):
            return
        if kind_name == "ClusterRole" and obj.get("aggregationRule"):
            # Its rules will be whatever the selected roles hold: only a user who may escalate picks them.
            message = (f'clusterroles.{RBAC_GROUP} "{name}" is forbidden: must have cluster-admin privileges to use '
                       "the aggregationRule")
            raise ApiError(status.status(403, "Forbidden", message, {"name": name, "group": RBAC_GROUP,
                                                                     "kind": "clusterroles"}))
        wanted = [r for r in obj.get("rules") or [] if isinstance(r, dict)]
    else:
        role_ref = obj.get("roleRef") or {}
        role_kind = role_ref.get("kind")
        if role_kind in _ROLES and _may(user, "bind", _ROLES[role_kind], str(role_ref.get("name") or ""),
                                       namespace if role_kind == "Role" else "", policy):
            return
        role_name = str(role_ref.get("name") or "")
        exists = (role_name in policy.cluster_roles if role_kind == "ClusterRole"
                  else (namespace, role_name) in policy.roles)
        if role_kind in _ROLES and not exists:
            # Its rules cannot be weighed: kube-apiserver answers with the role's NotFound.
            raise status.not_found(lookup(_ROLES[role_kind]), role_name)
        wanted = role_rules(policy, role_ref, namespace)
    held = rules_for(user, namespace, policy)
    missing = [rule for rule in wanted if not covers(held, rule)]
    if missing:
        raise _forbidden(user, kind_name, name, missing)


def _show_rule(rule: dict) -> str:
    # PolicyRule.CompactString, as kube-apiserver lists the rules a user lacks.
    parts = []
    for key, label in (("apiGroups", "APIGroups"), ("resources", "Resources"), ("resourceNames", "ResourceNames"),
                       ("nonResourceURLs", "NonResourceURLs"), ("verbs", "Verbs")):
        values = rule.get(key) or []
        if values:
            parts.append(f"{label}:{_go_list(values)}")
    return "{" + ", ".join(parts) + "}"


def _forbidden(user: User, kind_name: str, name: str, missing: list[dict]) -> ApiError:
    plural = _ROLES.get(kind_name) or _BINDINGS[kind_name]
    message = (f'{plural}.{RBAC_GROUP} "{name}" is forbidden: user "{user.name}" (groups={_go_list(user.groups)}) '
               f"is attempting to grant RBAC permissions not currently held:\n"
               + "\n".join(_show_rule(r) for r in missing))
    return ApiError(status.status(403, "Forbidden", message, {"name": name, "group": RBAC_GROUP, "kind": plural}))


def _go_list(values: object) -> str:
    return "[" + " ".join(f'"{v}"' for v in values) + "]"
