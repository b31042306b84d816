"""Self reviews: who am I (`kubectl auth whoami`), what may I do (`kubectl auth can-i`)?

`SelfSubjectAccessReview` (authorization.k8s.io/v1) answers one question (a verb on a resource, or on a
non-resource path), `SelfSubjectRulesReview` lists the rules that apply in a namespace (`kubectl auth
can-i --list`), `SelfSubjectReview` (authentication.k8s.io/v1) tells who the server takes the caller
for. All are create-only and stored nowhere; any authenticated user may ask about themself, as
Kubernetes' `system:basic-user` role allows. The answers come from auth.authorize, the rule every
request is held to, so a review never says yes to what a request would be refused.

`review(kind, body, user)` is pure; `add_routes` puts it on the API's paths and `DISCOVERY` lists the
resources for `/apis`.
"""

from __future__ import annotations

from aiohttp import web
from podnet.apiserver import status
from podnet.apiserver.auth import (
    ADMIN_GROUP,
    EDIT_GROUP_PREFIX,
    HIDDEN_FROM_VIEW,
    MASTERS_GROUP,
    READ_VERBS,
    VIEW_GROUP,
    User,
    authorize,
)
from podnet.apiserver.codec import JSON, DecodeError, decode
from podnet.apiserver.handlers import RESOURCE_KEY, USER_KEY, VERB_KEY, respond
from podnet.apiserver.status import ApiError, Cause

from podnet.api.kinds import KINDS

GROUP, VERSION = "authorization.k8s.io", "v1"
AUTHENTICATION_GROUP = "authentication.k8s.io"
API_VERSION = f"{GROUP}/{VERSION}"
ACCESS_REVIEW = "SelfSubjectAccessReview"
RULES_REVIEW = "SelfSubjectRulesReview"
SUBJECT_REVIEW = "SelfSubjectReview"
# kind -> (group, plural)
_REVIEWS = {
    ACCESS_REVIEW: (GROUP, "selfsubjectaccessreviews"),
    RULES_REVIEW: (GROUP, "selfsubjectrulesreviews"),
    SUBJECT_REVIEW: (AUTHENTICATION_GROUP, "selfsubjectreviews"),
}

# APIResource entries by (group, version), for discovery.
DISCOVERY: dict[tuple[str, str], list[dict]] = {}
for _kind, (_group, _plural) in _REVIEWS.items():
    DISCOVERY.setdefault((_group, VERSION), []).append(
        {"name": _plural, "singularName": _kind.lower(), "namespaced": False, "kind": _kind, "verbs": ["create"]}
    )

# What every authenticated user may do (Kubernetes' system:basic-user, system:discovery and
# system:public-info-viewer roles), in the words of a rules review.
_EVERYONE_RESOURCE_RULES = [
    {"verbs": ["create"], "apiGroups": [group], "resources": sorted(p for g, p in _REVIEWS.values() if g == group)}
    for group in (AUTHENTICATION_GROUP, GROUP)
]
_EVERYONE_NON_RESOURCE_RULES = [
    {"verbs": ["get"], "nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/metrics",
                                           "/readyz", "/version", "/version/"]}
]


def _namespaced(group: str, resource: str, namespace: str | None) -> bool:
    for kind in KINDS:
        if kind.group == group and kind.plural == resource:
            return kind.namespaced
    return namespace is not None  # a resource podnet does not serve: as asked


def _access(spec: dict, user: User) -> dict:
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if isinstance(resource, dict) and resource:
        verb = str(resource.get("verb") or "")
        namespace = str(resource.get("namespace") or "") or None
        group, plural = str(resource.get("group") or ""), str(resource.get("resource") or "")
        if (group, plural) in _REVIEWS.values() and verb == "create":
            return {"allowed": True, "reason": "every user may review their own access"}
        allowed = authorize(user, verb, namespace, namespaced=_namespaced(group, plural, namespace), resource=plural)
    elif isinstance(non_resource, dict) and non_resource:
        allowed = authorize(user, str(non_resource.get("verb") or ""), None, namespaced=False) or non_resource.get("verb") == "get"
    else:
        detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        message = f'{ACCESS_REVIEW}.{GROUP} "" is invalid: spec.resourceAttributes: Invalid value: "null": {detail}'
        cause = Cause("spec.resourceAttributes", "FieldValueInvalid", f'Invalid value: "null": {detail}')
        raise ApiError(status.status(422, "Invalid", message, {"group": GROUP, "kind": ACCESS_REVIEW, "causes": [cause.to_dict()]}))
    if not allowed:
        return {"allowed": False}
    return {"allowed": True, "reason": f"podnet: allowed to {', '.join(repr(g) for g in user.groups if g != 'system:authenticated')}"}


def _rules(spec: dict, user: User) -> dict:
    namespace = spec.get("namespace") or ""
    groups = set(user.groups)
    resource_rules = list(_EVERYONE_RESOURCE_RULES)
    non_resource_rules = list(_EVERYONE_NON_RESOURCE_RULES)
    if groups & {MASTERS_GROUP, ADMIN_GROUP}:
        resource_rules.insert(0, {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        non_resource_rules.insert(0, {"verbs": ["*"], "nonResourceURLs": ["*"]})
    else:
        if namespace and f"{EDIT_GROUP_PREFIX}{namespace}" in groups:
            resource_rules.insert(0, {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        if VIEW_GROUP in groups:
            readable = sorted({kind.plural for kind in KINDS} - HIDDEN_FROM_VIEW)
            resource_rules.insert(0, {"verbs": sorted(READ_VERBS), "apiGroups": ["*"], "resources": readable})
    return {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": False}


def _subject(user: User) -> dict:
    info: dict = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    return {"userInfo": info}


def review(kind_name: str, body: object, user: User) -> dict:
    """The review with its status filled in; a body that is not a review is a 400 or 422 Status."""
    group = _REVIEWS[kind_name][0]
    expected = f"{group}/{VERSION}"
    if not isinstance(body, dict):
        raise status.bad_request(f"the body of a {kind_name} must be an object")
    api_version, kind = body.setdefault("apiVersion", expected), body.setdefault("kind", kind_name)
    if api_version != expected or kind != kind_name:
        raise status.bad_request(f"the body must be a {kind_name} of {expected}, not {kind} of {api_version}")
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    answered = {"kind": kind_name, "apiVersion": expected, "metadata": {"creationTimestamp": None} | metadata}
    if kind_name == SUBJECT_REVIEW:
        return answered | {"status": _subject(user)}
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise status.bad_request("spec must be an object")
    answer = _access(spec, user) if kind_name == ACCESS_REVIEW else _rules(spec, user)
    return answered | {"spec": spec, "status": answer}


def add_routes(app: web.Application) -> None:
    for kind_name, (group, plural) in _REVIEWS.items():

        async def create(request: web.Request, kind_name: str = kind_name, plural: str = plural) -> web.Response:
            request[RESOURCE_KEY] = plural
            request[VERB_KEY] = "create"
            try:
                body = decode(await request.read(), JSON)
            except DecodeError as e:
                raise status.bad_request(str(e)) from None
            return respond(request, review(kind_name, body, request[USER_KEY]), 201)

        app.router.add_post(f"/apis/{group}/{VERSION}/{plural}", create)
