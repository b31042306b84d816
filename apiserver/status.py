"""Status objects: how kube-apiserver reports every failure (`kind: Status`, a reason, a code).

Pure builders. `ApiError` carries a Status through the handlers; the app turns it into the response.
The reasons and messages follow k8s.io/apimachinery/pkg/api/errors so that clients that key on them
(the official Python client, kubectl, informers that relist on 410) behave as against Kubernetes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from podnet.api.kinds import Kind


@dataclass(frozen=True, slots=True)
class Cause:
    """One field error: `reason` is a FieldValue* reason, `field` a path like `spec.ports[0].port`."""

    field: str
    reason: str
    message: str

    def to_dict(self) -> dict:
        return {"reason": self.reason, "message": self.message, "field": self.field}


class ApiError(Exception):
    def __init__(self, status: dict):
        super().__init__(status.get("message", ""))
        self.status = status

    @property
    def code(self) -> int:
        return self.status["code"]


def status(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _resource(kind: Kind) -> str:
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def _details(kind: Kind, name: str | None) -> dict:
    details: dict = {"kind": kind.plural}
    if kind.group:
        details["group"] = kind.group
    if name:
        details["name"] = name
    return details


def bad_request(message: str) -> ApiError:
    return ApiError(status(400, "BadRequest", message))


def unauthorized() -> ApiError:
    return ApiError(status(401, "Unauthorized", "Unauthorized"))


def forbidden(user: str, verb: str, kind: Kind | None, namespace: str | None, path: str, *, name: str = "",
              subresource: str = "") -> ApiError:
    if kind is None:
        message = f'forbidden: User "{user}" cannot {verb.lower()} path "{path}"'
        return ApiError(status(403, "Forbidden", message))
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    resource = f"{kind.plural}/{subresource}" if subresource else kind.plural
    named = f' "{name}"' if name else ""
    message = (
        f'{_resource(kind)}{named} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{kind.group}"{where}'
    )
    return ApiError(status(403, "Forbidden", message, _details(kind, name or None)))


def admission_forbidden(kind: Kind, name: str, reason: str) -> ApiError:
    """An admission plugin's refusal (admission.NewForbidden): `<resource> "<name>" is forbidden: <reason>`."""
    named = f' "{name}"' if name else ""
    return ApiError(status(403, "Forbidden", f"{_resource(kind)}{named} is forbidden: {reason}", _details(kind, name or None)))


def namespace_terminating(kind: Kind, name: str, namespace: str) -> ApiError:
    message = (
        f'{_resource(kind)} "{name}" is forbidden: unable to create new content in namespace '
        f"{namespace} because it is being terminated"
    )
    return ApiError(status(403, "Forbidden", message, _details(kind, name)))


def not_found(kind: Kind, name: str) -> ApiError:
    return ApiError(status(404, "NotFound", f'{_resource(kind)} "{name}" not found', _details(kind, name)))


class PathNotFound(ApiError):
    """A path the server does not serve, answered as kube-apiserver answers it. Under /api and /apis (its
    REST container): a Status with empty details, whose message names nothing; client code tells a missing
    path from a missing object by the details' empty name (`kubectl debug` so finds a server without
    ephemeral containers, and without details it dereferenced nothing). Elsewhere: its mux's plain
    `404 page not found`, not a Status."""

    PAGE = "404 page not found\n"

    def __init__(self, path: str):
        super().__init__({**status(404, "NotFound", "the server could not find the requested resource"), "details": {}})
        self.plain = path.strip("/").split("/")[0] not in ("api", "apis")


def path_not_found(path: str) -> PathNotFound:
    return PathNotFound(path)


def method_not_allowed(method: str, path: str) -> ApiError:
    return ApiError(
        status(405, "MethodNotAllowed", f'the server does not allow this method on the requested resource ("{method} {path}")')
    )


def already_exists(kind: Kind, name: str) -> ApiError:
    return ApiError(status(409, "AlreadyExists", f'{_resource(kind)} "{name}" already exists', _details(kind, name)))


def conflict(kind: Kind, name: str, why: str = "") -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    message = f'Operation cannot be fulfilled on {_resource(kind)} "{name}": {why}'
    return ApiError(status(409, "Conflict", message, _details(kind, name)))


def expired(message: str) -> ApiError:
    return ApiError(status(410, "Expired", message))


def too_large(limit: int) -> ApiError:
    return entity_too_large(f"Request entity too large: limit is {limit}")


def entity_too_large(message: str) -> ApiError:
    return ApiError(status(413, "RequestEntityTooLarge", message))


def uri_too_long(limit: int) -> ApiError:
    return ApiError(status(414, "RequestURITooLong", f"the request URI is too long: limit is {limit} bytes"))


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(status(415, "UnsupportedMediaType", f'the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/strategic-merge-patch+json, application/json-patch+json, application/apply-patch+yaml, application/msgpack (got "{content_type}")'))


def invalid(kind: Kind, name: str, causes: list[Cause]) -> ApiError:
    listed = [f"{c.field}: {c.message}" if c.field else c.message for c in causes]
    summary = listed[0] if len(listed) == 1 else "[" + ", ".join(listed) + "]"
    kind_name = f"{kind.kind}.{kind.group}" if kind.group else kind.kind
    details = {"name": name, "kind": kind.kind, "causes": [c.to_dict() for c in causes]}
    if kind.group:
        details["group"] = kind.group
    # Quoted as Go's %q quotes it: a name that validation refuses may hold a newline or a quote.
    return ApiError(status(422, "Invalid", f"{kind_name} {json.dumps(name, ensure_ascii=False)} is invalid: {summary}",
                           details))


def unprocessable(message: str) -> ApiError:
    """A patch that cannot be applied to the object (a failed json-patch `test`, a missing path)."""
    return ApiError(status(422, "Invalid", message))


def too_large_resource_version(requested: int, current: int) -> ApiError:
    """A read at a revision the store has not reached: kube-apiserver's timeout, which clients retry."""
    details = {"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
               "retryAfterSeconds": 1}
    return ApiError(status(504, "Timeout", f"Timeout: Too large resource version: {requested}, current: {current}", details))


def unavailable(message: str) -> ApiError:
    return ApiError(status(503, "ServiceUnavailable", message))


def internal(message: str) -> ApiError:
    return ApiError(status(500, "InternalError", message))
