"""What a request is, read from its method and path alone, as kube-apiserver's RequestInfoFactory reads it
(k8s.io/apiserver/pkg/endpoints/request/requestinfo.go): the verb (`get`, `list`, `watch`, `create`,
`update`, `patch`, `delete`, `deletecollection`), and for paths under /api and /apis the group, version,
namespace, resource, name and subresource. The audit log needs it before the request reaches a handler,
so that the policy decides on what was asked, whatever the answer. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# Subresources of a namespace, which name it rather than something in it.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
# Requests kube-apiserver treats as long-running: their response starts long before it ends.
_LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})


@dataclass(frozen=True, slots=True)
class RequestInfo:
    verb: str
    resource_request: bool = False
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def long_running(self) -> bool:
        return self.verb in ("watch", "proxy") or self.subresource in _LONG_RUNNING_SUBRESOURCES


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    parts = [p for p in path.strip("/").split("/") if p]
    non_resource = RequestInfo(method.lower(), path=path)
    if not parts or parts[0] not in ("api", "apis"):
        return non_resource
    if parts[0] == "api":
        if len(parts) < 3:
            return non_resource
        group, version, rest = "", parts[1], parts[2:]
    else:
        if len(parts) < 4:
            return non_resource
        group, version, rest = parts[1], parts[2], parts[3:]
    verb = _VERBS.get(method.upper(), method.lower())
    if rest[0] == "watch":
        verb, rest = "watch", rest[1:]
        if not rest:
            return non_resource
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if not name:
        if verb == "get":
            verb = "watch" if _truthy(query.get("watch")) else "list"
        elif verb == "delete":
            verb = "deletecollection"
    return RequestInfo(verb, True, path, group, version, namespace, resource, subresource, name)
