"""Access reviews: who am I (`kubectl auth whoami`), what may I do (`kubectl auth can-i`), what may they do?

`SelfSubjectAccessReview` (authorization.k8s.io/v1) answers one question (a verb on a resource, or on a
non-resource path), `SelfSubjectRulesReview` lists the rules that apply in a namespace (`kubectl auth
can-i --list`), `SelfSubjectReview` (authentication.k8s.io/v1) tells who the server takes the caller
for; `SubjectAccessReview` asks the question for any user and groups, and takes the right to create
subjectaccessreviews (an administrator's). All are create-only and stored nowhere; the self reviews are
what `system:basic-user` lets every authenticated user create. The answers come from the RBAC authorizer
(apiserver/rbac/) on the roles and bindings every request is held to, so a review tells the truth.

`review(kind, body, user, policy)` is pure; `add_routes` puts it on the API's paths and `DISCOVERY` lists
the resources for `/apis`.
"""

from __future__ import annotations

from aiohttp import web
from podnet.apiserver import status
from podnet.apiserver.auth import User
from podnet.apiserver.codec import JSON, DecodeError, decode
from podnet.apiserver.handlers import RESOURCE_KEY, USER_KEY, VERB_KEY, Resources, respond
from podnet.apiserver.rbac.authorizer import Attributes, Policy, authorize, rules_for
from podnet.apiserver.status import ApiError, Cause

GROUP, VERSION = "authorization.k8s.io", "v1"
AUTHENTICATION_GROUP = "authentication.k8s.io"
API_VERSION = f"{GROUP}/{VERSION}"
ACCESS_REVIEW = "SelfSubjectAccessReview"
RULES_REVIEW = "SelfSubjectRulesReview"
SUBJECT_REVIEW = "SelfSubjectReview"
SUBJECT_ACCESS_REVIEW = "SubjectAccessReview"
# kind -> (group, plural)
_REVIEWS = {
    ACCESS_REVIEW: (GROUP, "selfsubjectaccessreviews"),
    RULES_REVIEW: (GROUP, "selfsubjectrulesreviews"),
    SUBJECT_REVIEW: (AUTHENTICATION_GROUP, "selfsubjectreviews"),
    SUBJECT_ACCESS_REVIEW: (GROUP, "subjectaccessreviews"),
}

# APIResource entries by (group, version), for discovery.
DISCOVERY: dict[tuple[str, str], list[dict]] = {}
for _kind, (_group, _plural) in _REVIEWS.items():
    DISCOVERY.setdefault((_group, VERSION), []).append(
        {"name": _plural, "singularName": _kind.lower(), "namespaced": False, "kind": _kind, "verbs": ["create"]}
    )


def _access(spec: dict, user: User, policy: Policy) -> dict:
    resource = spec.get("resourceAttributes")
    non_resource = spec.get("nonResourceAttributes")
    if isinstance(resource, dict) and resource:
        group, plural = str(resource.get("group") or ""), str(resource.get("resource") or "")
        attributes = Attributes(
            # The namespace as asked, even for a cluster-scoped resource (kubectl sends its context's, and
            # warns): kube-apiserver judges a review as the request it describes would be, and a Namespace's
            # own GET is asked in itself.
            str(resource.get("verb") or ""), str(resource.get("namespace") or ""),
            group, plural, str(resource.get("subresource") or ""), str(resource.get("name") or ""))
    elif isinstance(non_resource, dict) and non_resource:
        attributes = Attributes(str(non_resource.get("verb") or ""), path=str(non_resource.get("path") or ""))
    else:
        detail = "exactly one of nonResourceAttributes or resourceAttributes must be specified"
        message = f'{ACCESS_REVIEW}.{GROUP} "" is invalid: spec.resourceAttributes: Invalid value: "null": {detail}'
        cause = Cause("spec.resourceAttributes", "FieldValueInvalid", f'Invalid value: "null": {detail}')
        raise ApiError(status.status(422, "Invalid", message, {"group": GROUP, "kind": ACCESS_REVIEW, "causes": [cause.to_dict()]}))
    decision = authorize(user, attributes, policy)
    if not decision.allowed:
        return {"allowed": False}
    return {"allowed": True} | ({"reason": decision.reason} if decision.reason else {})


def _rules(spec: dict, user: User, policy: Policy) -> dict:
    resource_rules, non_resource_rules = [], []
    for rule in rules_for(user, str(spec.get("namespace") or ""), policy):
        if rule.get("nonResourceURLs"):
            non_resource_rules.append({"verbs": rule.get("verbs") or [], "nonResourceURLs": rule["nonResourceURLs"]})
        else:
            resource_rules.append({k: rule[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if k in rule})
    return {"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": False}


def _subject_of(spec: dict) -> User:
    """The user a SubjectAccessReview asks about."""
    groups = spec.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise status.bad_request("spec.groups must be a list of strings")
    return User(str(spec.get("user") or ""), str(spec.get("uid") or ""), tuple(groups))


def _subject(user: User) -> dict:
    info: dict = {"username": user.name, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    if user.extra:
        info["extra"] = {key: list(values) for key, values in user.extra}
    return {"userInfo": info}


def review(kind_name: str, body: object, user: User, policy: Policy) -> dict:
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
    if kind_name == SUBJECT_ACCESS_REVIEW:
        answer = _access(spec, _subject_of(spec), policy)
    elif kind_name == ACCESS_REVIEW:
        answer = _access(spec, user, policy)
    else:
        answer = _rules(spec, user, policy)
    return answered | {"spec": spec, "status": answer}


def add_routes(app: web.Application, resources: Resources) -> None:
    for kind_name, (group, plural) in _REVIEWS.items():

        async def create(request: web.Request, kind_name: str = kind_name, group: str = group,
                         plural: str = plural) -> web.Response:
            request[RESOURCE_KEY] = plural
            request[VERB_KEY] = "create"
            user = request[USER_KEY]
            if not resources.allowed(user, Attributes("create", "", group, plural)).allowed:
                message = (f'{plural}.{group} is forbidden: User "{user.name}" cannot create resource "{plural}" '
                           f'in API group "{group}" at the cluster scope')
                raise ApiError(status.status(403, "Forbidden", message, {"group": group, "kind": plural}))
            try:
                body = decode(await request.read(), JSON)
            except DecodeError as e:
                raise status.bad_request(str(e)) from None
            return respond(request, review(kind_name, body, user, resources.rbac.policy), 201)

        app.router.add_post(f"/apis/{group}/{VERSION}/{plural}", create)
