"""RBAC objects' semantic validation, in kube-apiserver's words (pkg/apis/rbac/validation).

Each validator takes the server's `Errors` collector (apiserver/validation.py) and the object; they are
registered in validation.py's tables beside the other kinds'.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from podnet.apiserver.rbac.authorizer import RBAC_GROUP

if TYPE_CHECKING:
    from podnet.apiserver.validation import Errors


def _go_strings(values: list) -> str:
    return "[]string{" + ", ".join(json.dumps(v) for v in values) + "}"


def _validate_rules(errors: Errors, obj: dict, *, namespaced: bool) -> None:
    for i, rule in enumerate(obj.get("rules") or []):
        path = f"rules[{i}]"
        if not isinstance(rule, dict):
            continue
        if not rule.get("verbs"):
            errors.required(f"{path}.verbs", "verbs must contain at least one value")
        urls = rule.get("nonResourceURLs") or []
        if urls:
            if namespaced:
                errors.invalid(f"{path}.nonResourceURLs", _Raw(_go_strings(urls)),
                               "namespaced rules cannot apply to non-resource URLs")
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                errors.invalid(f"{path}.nonResourceURLs", _Raw(_go_strings(urls)),
                               "rules cannot apply to both regular resources and non-resource URLs")
            continue
        if not rule.get("apiGroups"):
            errors.required(f"{path}.apiGroups", "resource rules must supply at least one api group")
        if not rule.get("resources"):
            errors.required(f"{path}.resources", "resource rules must supply at least one resource")


class _Raw:
    """A value Kubernetes prints in Go syntax (`[]string{"/x"}`)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def validate_role(errors: Errors, obj: dict, limits: Any) -> None:
    _validate_rules(errors, obj, namespaced=True)


def validate_cluster_role(errors: Errors, obj: dict, limits: Any) -> None:
    _validate_rules(errors, obj, namespaced=False)


def _validate_binding(errors: Errors, obj: dict, role_kinds: tuple[str, ...], *, namespaced: bool) -> None:
    role_ref = obj.get("roleRef") if isinstance(obj.get("roleRef"), dict) else {}
    if role_ref.get("apiGroup") != RBAC_GROUP:
        errors.not_supported("roleRef.apiGroup", role_ref.get("apiGroup", ""), (RBAC_GROUP,))
    if role_ref.get("kind") not in role_kinds:
        errors.not_supported("roleRef.kind", role_ref.get("kind", ""), role_kinds)
    if not role_ref.get("name"):
        errors.required("roleRef.name")
    for i, subject in enumerate(obj.get("subjects") or []):
        path = f"subjects[{i}]"
        if not isinstance(subject, dict):
            continue
        kind = subject.get("kind")
        if not subject.get("name"):
            errors.required(f"{path}.name")
        if kind == "ServiceAccount":
            if subject.get("apiGroup"):
                errors.not_supported(f"{path}.apiGroup", subject["apiGroup"], ("",))
            if not namespaced and not subject.get("namespace"):
                errors.required(f"{path}.namespace")
        elif kind in ("User", "Group"):
            if subject.get("apiGroup") != RBAC_GROUP:
                errors.not_supported(f"{path}.apiGroup", subject.get("apiGroup", ""), (RBAC_GROUP,))
        else:
            errors.not_supported(f"{path}.kind", kind or "", ("ServiceAccount", "User", "Group"))


def validate_role_binding(errors: Errors, obj: dict, limits: Any) -> None:
    _validate_binding(errors, obj, ("Role", "ClusterRole"), namespaced=True)


def validate_cluster_role_binding(errors: Errors, obj: dict, limits: Any) -> None:
    _validate_binding(errors, obj, ("ClusterRole",), namespaced=False)


def validate_role_ref_update(errors: Errors, old: dict, new: dict) -> None:
    if old.get("roleRef") != new.get("roleRef"):
        ref = new.get("roleRef") if isinstance(new.get("roleRef"), dict) else {}
        shown = ", ".join(f"{field}:{json.dumps(str(ref.get(key) or ''))}"
                          for field, key in (("APIGroup", "apiGroup"), ("Kind", "kind"), ("Name", "name")))
        errors.invalid("roleRef", _Raw(f"rbac.RoleRef{{{shown}}}"), "cannot change roleRef")


VALIDATORS = {
    "Role": validate_role,
    "ClusterRole": validate_cluster_role,
    "RoleBinding": validate_role_binding,
    "ClusterRoleBinding": validate_cluster_role_binding,
}
UPDATE_VALIDATORS = {"RoleBinding": validate_role_ref_update, "ClusterRoleBinding": validate_role_ref_update}
