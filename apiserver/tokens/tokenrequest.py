"""`TokenRequest` (authentication.k8s.io/v1), the `serviceaccounts/token` subresource, as kube-apiserver
1.31's registry answers it (pkg/registry/core/serviceaccount/storage/token.go).

`parse` reads and validates the request (the name and namespace in the body, if any, must be the URL's;
`expirationSeconds` defaults to an hour and lies between ten minutes and 2^32 seconds; audiences default
to the API server's own); `check_binding` judges the object the token is to be bound to once it has been
read (a Pod must run as the same ServiceAccount; a uid in the reference must be the object's);
`answer` is the request with its status (the token and when it expires). Errors are the API's own
Statuses, worded as kube-apiserver words them. Pure.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from podnet.apiserver import status
from podnet.apiserver.status import ApiError, Cause

from .claims import BINDABLE_KINDS

GROUP, VERSION, KIND = "authentication.k8s.io", "v1", "TokenRequest"
API_VERSION = f"{GROUP}/{VERSION}"
DEFAULT_EXPIRATION_SECONDS = 3600
MIN_EXPIRATION_SECONDS = 600
MAX_EXPIRATION_SECONDS = 1 << 32

DISCOVERY = {"name": "serviceaccounts/token", "singularName": "", "namespaced": True, "group": GROUP,
             "version": VERSION, "kind": KIND, "verbs": ["create"]}


@dataclass(frozen=True, slots=True)
class BoundRef:
    kind: str
    api_version: str
    name: str
    uid: str

    @property
    def resource(self) -> str:
        return {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}[self.kind]


@dataclass(frozen=True, slots=True)
class TokenSpec:
    audiences: tuple[str, ...]
    expiration_seconds: int
    bound: BoundRef | None


def _invalid(name: str, causes: list[Cause]) -> ApiError:
    listed = [f"{c.field}: {c.message}" for c in causes]
    summary = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    details = {"name": name, "group": GROUP, "kind": KIND, "causes": [c.to_dict() for c in causes]}
    return ApiError(status.status(422, "Invalid", f"{KIND}.{GROUP} {json.dumps(name)} is invalid: {summary}", details))


def _field_invalid(path: str, value: object, detail: str) -> Cause:
    shown = json.dumps(value) if isinstance(value, str) else value
    return Cause(path, "FieldValueInvalid", f"Invalid value: {shown}: {detail}")


def _strings(value: object, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise status.bad_request(f"{KIND} in version \"{VERSION}\" cannot be handled as a {KIND}: "
                                 f"{path}: expected a list of strings")
    return tuple(value)


def _bound_ref(value: object) -> BoundRef | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(value.get(k, ""), str)
                                               for k in ("kind", "apiVersion", "name", "uid")):
        raise status.bad_request(f"{KIND} in version \"{VERSION}\" cannot be handled as a {KIND}: "
                                 "spec.boundObjectRef: expected an object of strings")
    return BoundRef(value.get("kind", ""), value.get("apiVersion", ""), value.get("name", ""), value.get("uid", ""))


def parse(body: object, name: str, namespace: str, api_audiences: Sequence[str]) -> TokenSpec:
    """The request for a token for ServiceAccount `namespace/name` (from the URL); 400 or 422 otherwise."""
    if not isinstance(body, dict):
        raise status.bad_request(f"the body of a {KIND} must be an object")
    api_version, kind = body.get("apiVersion", API_VERSION), body.get("kind", KIND)
    if api_version != API_VERSION or kind != KIND:
        raise status.bad_request(f"the body must be a {KIND} of {API_VERSION}, not {kind} of {api_version}")
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    if metadata.get("name") and metadata["name"] != name:
        raise _invalid(name, [_field_invalid("metadata.name", metadata["name"],
                                             "must match the service account name if specified")])
    if metadata.get("namespace") and metadata["namespace"] != namespace:
        raise _invalid(name, [_field_invalid("metadata.namespace", metadata["namespace"],
                                             "must match the service account namespace if specified")])
    spec = body.get("spec") if body.get("spec") is not None else {}
    if not isinstance(spec, dict):
        raise status.bad_request(f"{KIND} in version \"{VERSION}\" cannot be handled as a {KIND}: spec: expected an object")
    expiration = spec.get("expirationSeconds", DEFAULT_EXPIRATION_SECONDS)
    if expiration is None:
        expiration = DEFAULT_EXPIRATION_SECONDS
    if isinstance(expiration, bool) or not isinstance(expiration, int):
        raise status.bad_request(f"{KIND} in version \"{VERSION}\" cannot be handled as a {KIND}: "
                                 "spec.expirationSeconds: expected an integer")
    causes = []
    if expiration < MIN_EXPIRATION_SECONDS:
        causes.append(_field_invalid("spec.expirationSeconds", expiration, "may not specify a duration less than 10 minutes"))
    if expiration > MAX_EXPIRATION_SECONDS:
        causes.append(_field_invalid("spec.expirationSeconds", expiration, "may not specify a duration larger than 2^32 seconds"))
    if causes:
        raise _invalid("", causes)
    audiences = _strings(spec.get("audiences"), "spec.audiences") or tuple(api_audiences)
    bound = _bound_ref(spec.get("boundObjectRef"))
    if bound is not None and (bound.kind not in BINDABLE_KINDS or bound.api_version.partition("/")[1]):
        group, _, version = bound.api_version.rpartition("/")
        raise status.bad_request(f"cannot bind token to object of type {group}/{version}, Kind={bound.kind}")
    return TokenSpec(audiences, expiration, bound)


def check_binding(spec: TokenSpec, account_name: str, bound: Mapping) -> None:
    """Whether the token may be bound to `bound` (the object spec.boundObjectRef names, as read)."""
    ref = spec.bound
    assert ref is not None
    if ref.kind == "Pod" and ((bound.get("spec") or {}).get("serviceAccountName") or "default") != account_name:
        raise status.bad_request(f"cannot bind token for serviceaccount {json.dumps(account_name)} to pod running "
                                 "with different serviceaccount name.")
    uid = (bound.get("metadata") or {}).get("uid", "")
    if ref.uid and ref.uid != uid:
        why = (f"the UID in the bound object reference ({ref.uid}) does not match the UID in record. "
               "The object might have been deleted and then recreated")
        message = f'Operation cannot be fulfilled on {ref.kind} "{ref.name}": {why}'
        raise ApiError(status.status(409, "Conflict", message, {"name": ref.name, "kind": ref.kind}))


def _timestamp(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def answer(spec: TokenSpec, account: Mapping, token: str, now: int) -> dict:
    """The TokenRequest as kube-apiserver returns it (201): the request, completed, with the token."""
    metadata = account.get("metadata") or {}
    bound = spec.bound
    return {
        "kind": KIND, "apiVersion": API_VERSION,
        "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace"),
                     "uid": metadata.get("uid"), "creationTimestamp": _timestamp(now)},
        "spec": {"audiences": list(spec.audiences), "expirationSeconds": spec.expiration_seconds,
                 "boundObjectRef": None if bound is None else
                 {"kind": bound.kind, "apiVersion": bound.api_version or "v1", "name": bound.name}
                 | ({"uid": bound.uid} if bound.uid else {})},
        "status": {"token": token, "expirationTimestamp": _timestamp(now + spec.expiration_seconds)},
    }
