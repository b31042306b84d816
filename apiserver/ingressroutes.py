"""Ingress routing, pure: which Service backend an HTTP request goes to, and which endpoints serve it.

The Ingresses of one controller make one table, as ingress-nginx builds its nginx configuration:
- A request's `Host` (without its port, any case) picks a server: the rules naming that host exactly, else
  the wildcard rules `*.example.com` whose suffix matches it with exactly one more label, else the rules
  without a host. Rules for one host from several Ingresses share one server; for a path two Ingresses
  both claim, the older Ingress wins.
- Within the server the path picks a location: an `Exact` path equal to the request's path wins; otherwise
  the longest matching prefix: a `Prefix` path matches element by element (`/api` matches `/api` and
  `/api/v1`, not `/apis`), an `ImplementationSpecific` one as an nginx prefix location, by its characters
  (`/api` matches `/apis` too). A trailing slash of a `Prefix` path is ignored.
- No location matches: the `defaultBackend` of an Ingress of that server, else (for the server of rules
  without a host, and for hosts no rule names) the `defaultBackend` of the oldest Ingress that has one;
  without any, nothing (the controller answers 404, as ingress-nginx's default backend does).

`endpoints` then turns a Service backend into the ready endpoints behind it, through the Service's port
and its EndpointSlices, as a controller that proxies to pods (not to the Service's ClusterIP) does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True, slots=True)
class Backend:
    namespace: str
    service: str
    port: int | str  # the Service's port, by number or by name


@dataclass(frozen=True, slots=True)
class _Location:
    path: str
    path_type: str
    backend: Backend


@dataclass(slots=True)
class _Server:
    exact: dict[str, Backend] = field(default_factory=dict)
    prefixes: dict[tuple[str, str], Backend] = field(default_factory=dict)  # (path, type) → backend
    default: Backend | None = None


@dataclass(frozen=True, slots=True)
class Table:
    servers: dict[str, _Server]  # host ("" for rules without one, "*.x" for wildcards) → its locations
    default: Backend | None  # of the oldest Ingress with a defaultBackend


def _backend(namespace: str, spec: object) -> Backend | None:
    service = (spec or {}).get("service") if isinstance(spec, dict) else None
    if not isinstance(service, dict) or not service.get("name"):
        return None  # resource backends are not served
    port = service.get("port") or {}
    number_or_name = port.get("number") or port.get("name")
    return Backend(namespace, service["name"], number_or_name) if number_or_name else None


def _age(ingress: dict) -> tuple[str, str, str]:
    meta = ingress.get("metadata") or {}
    return meta.get("creationTimestamp") or "", meta.get("namespace") or "", meta.get("name") or ""


def build(ingresses: Iterable[dict]) -> Table:
    """The routing table of these Ingresses (the ones the controller serves)."""
    servers: dict[str, _Server] = {}
    default = None
    for ingress in sorted(ingresses, key=_age):  # the oldest first: what it claims, it keeps
        namespace = (ingress.get("metadata") or {}).get("namespace") or "default"
        spec = ingress.get("spec") or {}
        own_default = _backend(namespace, spec.get("defaultBackend"))
        default = default or own_default
        for rule in spec.get("rules") or []:
            server = servers.setdefault((rule.get("host") or "").lower(), _Server())
            if server.default is None:
                server.default = own_default
            for path in (rule.get("http") or {}).get("paths") or []:
                backend = _backend(namespace, path.get("backend"))
                if backend is None:
                    continue
                text, path_type = path.get("path") or "/", path.get("pathType") or "ImplementationSpecific"
                if path_type == "Exact":
                    server.exact.setdefault(text, backend)
                else:
                    server.prefixes.setdefault((text, path_type), backend)
    return Table(servers, default)


def _prefix_length(prefix: str, path_type: str, path: str) -> int:
    """How much of `path` the location matches (-1: not at all); longer wins."""
    if path_type == "Prefix":
        trimmed = prefix.rstrip("/")
        if not trimmed or path == trimmed or path.startswith(trimmed + "/"):
            return len(trimmed) + 1  # "/" and "/x/" count as their element, ahead of a character prefix
        return -1
    return len(prefix) if path.startswith(prefix) else -1


def _server_for(table: Table, host: str) -> tuple[_Server | None, bool]:
    """The server of `host`, and whether it is a named one (not the catch-all)."""
    if host in table.servers and host:
        return table.servers[host], True
    _, dot, parent = host.partition(".")
    if dot and f"*.{parent}" in table.servers:
        return table.servers[f"*.{parent}"], True
    return table.servers.get(""), False


def route(table: Table, host: str, path: str) -> Backend | None:
    """The backend of a request for `path` (without its query) on `host` (the Host header)."""
    name = host if host.startswith("[") else host.rsplit(":", 1)[0]
    server, named = _server_for(table, name.lower().rstrip("."))
    if server is not None:
        if path in server.exact:
            return server.exact[path]
        best, chosen = -1, None
        for (prefix, path_type), backend in server.prefixes.items():
            length = _prefix_length(prefix, path_type, path)
            if length > best:
                best, chosen = length, backend
        if chosen is not None:
            return chosen
        if server.default is not None:
            return server.default
    return None if named else table.default


# --- which Ingresses are the controller's -------------------------------------------------------------


def is_default_class(ingress_class: dict) -> bool:
    annotations = (ingress_class.get("metadata") or {}).get("annotations") or {}
    return annotations.get(DEFAULT_CLASS_ANNOTATION) == "true"


def served(ingresses: Iterable[dict], classes: Iterable[dict], controller: str) -> list[dict]:
    """The Ingresses of a class whose `spec.controller` is `controller`; those without a class too when one
    of its classes is the default (created before the default class was, they were given none)."""
    mine = {c["metadata"]["name"]: c for c in classes if (c.get("spec") or {}).get("controller") == controller}
    takes_unclassed = any(is_default_class(c) for c in mine.values())
    chosen = []
    for ingress in ingresses:
        class_name = (ingress.get("spec") or {}).get("ingressClassName")
        if class_name in mine or (class_name is None and takes_unclassed):
            chosen.append(ingress)
    return chosen


# --- from a backend to endpoints ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Endpoint:
    pod: str
    namespace: str
    node: str
    address: str
    port: int


def endpoints(backend: Backend, services: dict[str, dict], slices: Iterable[dict]) -> list[Endpoint]:
    """The ready endpoints that serve `backend`: its Service port, that port's name in the EndpointSlices
    of the Service, and their ready endpoints with a pod and a node."""
    service = services.get(f"{backend.namespace}/{backend.service}")
    if service is None:
        return []
    ports = (service.get("spec") or {}).get("ports") or []
    port = next((p for p in ports if p.get("port") == backend.port or p.get("name") == backend.port), None)
    if port is None or port.get("protocol", "TCP") != "TCP":
        return []
    found = []
    for endpoint_slice in slices:
        meta = endpoint_slice.get("metadata") or {}
        if meta.get("namespace") != backend.namespace or \
                (meta.get("labels") or {}).get(SERVICE_NAME_LABEL) != backend.service:
            continue
        number = next((p.get("port") for p in endpoint_slice.get("ports") or []
                       if (p.get("name") or "") == (port.get("name") or "") and p.get("protocol", "TCP") == "TCP"), None)
        if number is None:
            continue
        for endpoint in endpoint_slice.get("endpoints") or []:
            ref = endpoint.get("targetRef") or {}
            ready = (endpoint.get("conditions") or {}).get("ready") is not False
            if ready and ref.get("kind") == "Pod" and endpoint.get("nodeName") and endpoint.get("addresses"):
                found.append(Endpoint(ref["name"], ref.get("namespace") or backend.namespace, endpoint["nodeName"],
                                      endpoint["addresses"][0], number))
    return sorted(found, key=lambda e: (e.namespace, e.pod))
