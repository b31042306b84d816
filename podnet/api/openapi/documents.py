"""The OpenAPI v2 document and the OpenAPI v3 per-group-version documents podnet serves.

Both are built from the same two sources as everything else: the kinds of podnet/api/kinds.py (paths,
verbs, group-version-kinds) and Kubernetes' definitions vendored beside this module (schemas). kubectl
reads them to explain fields (`kubectl explain`, v3) and to learn that the server validates fields
itself: a PATCH operation of the kind's group-version-kind with a `fieldValidation` query parameter
(k8s.io/cli-runtime's QueryParamVerifierV3), after which it sends `fieldValidation=Strict` instead of
validating on the client. Pure: dicts in, dicts out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from podnet.api.kinds import KINDS, Kind
from podnet.api.openapi import REF_PREFIX, definitions

KUBERNETES_VERSION = "v1.31.0"
V3_REF_PREFIX = "#/components/schemas/"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json")
# Custom resources take no strategic merge patch; kubectl reads this to send them merge patches.
_CUSTOM_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml")


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    where: str  # "query" or "path"
    description: str
    type: str = "string"
    required: bool = False


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    action: str  # x-kubernetes-action: list, post, deletecollection, get, put, patch, delete, watch
    operation_id: str
    kind: Kind
    response: str  # definition name of the answer
    body: str | None = None  # definition name of the request body
    parameters: tuple[Parameter, ...] = field(default=())
    consumes: tuple[str, ...] = ("*/*",)


_PRETTY = Parameter("pretty", "query", "If 'true', then the output is pretty printed.")
_DRY_RUN = Parameter(
    "dryRun", "query",
    "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run "
    "stages will be processed",
)
_FIELD_MANAGER = Parameter("fieldManager", "query", "A name associated with the actor or entity that is making these changes.")
_FIELD_VALIDATION = Parameter(
    "fieldValidation", "query",
    "How the server treats unknown or duplicate fields in the request body: Ignore drops them silently, Warn "
    "(the default) drops them and answers a warning for each, Strict fails the request naming them.",
)
_WRITE = (_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION)
_LIST = tuple(
    Parameter(name, "query", description, type_)
    for name, description, type_ in (
        ("allowWatchBookmarks", "Requests watch events with type BOOKMARK.", "boolean"),
        ("continue", "The continue token of a previous, paginated list.", "string"),
        ("fieldSelector", "A selector to restrict the list of returned objects by their fields.", "string"),
        ("labelSelector", "A selector to restrict the list of returned objects by their labels.", "string"),
        ("limit", "The maximum number of objects to return in one list call.", "integer"),
        ("resourceVersion", "Which version of the resource a list or watch starts from.", "string"),
        ("resourceVersionMatch", "How resourceVersion applies to a list call.", "string"),
        ("timeoutSeconds", "Timeout for the list or watch call.", "integer"),
        ("watch", "Watch for changes to the described resources and return them as a stream.", "boolean"),
    )
)


def _group_prefix(kind: Kind) -> str:
    group = kind.group.split(".", 1)[0] if kind.group else "core"
    return f"{group[0].upper()}{group[1:]}{kind.version[0].upper()}{kind.version[1:]}"


def group_version_key(kind: Kind) -> str:
    """The key of a kind's group-version in /openapi/v3 (`api/v1`, `apis/apps/v1`)."""
    return kind.group_version_path.lstrip("/")


def operations(kind: Kind) -> dict[str, list[Operation]]:
    """Each path of a kind with its operations, as kube-apiserver's installer lays them out."""
    prefix = _group_prefix(kind)
    scoped = f"Namespaced{kind.kind}" if kind.namespaced else kind.kind
    name = Parameter("name", "path", f"name of the {kind.kind}", required=True)
    path_params = (name,)
    if kind.namespaced:
        path_params += (Parameter("namespace", "path", "object name and auth scope, such as for teams and projects", required=True),)
    collection = kind.path("{namespace}") if kind.namespaced else kind.path()
    item = kind.path("{namespace}", "{name}") if kind.namespaced else kind.path(name="{name}")
    list_kind = f"{kind.definition}List"
    patch_types = _PATCH_TYPES if kind.custom is None else _CUSTOM_PATCH_TYPES
    paths = {
        collection: [
            Operation("get", "list", f"list{prefix}{scoped}", kind, list_kind, parameters=_LIST),
            Operation("post", "post", f"create{prefix}{scoped}", kind, kind.definition, kind.definition, _WRITE),
        ],
        item: [
            Operation("get", "get", f"read{prefix}{scoped}", kind, kind.definition),
            Operation("put", "put", f"replace{prefix}{scoped}", kind, kind.definition, kind.definition, _WRITE),
            Operation("patch", "patch", f"patch{prefix}{scoped}", kind, kind.definition, _META + "Patch",
                      (*_WRITE, Parameter("force", "query", "Force is going to \"force\" Apply requests.", "boolean")),
                      patch_types),
            Operation("delete", "delete", f"delete{prefix}{scoped}", kind, _META + "Status", _META + "DeleteOptions",
                      (_DRY_RUN,)),
        ],
    }
    if kind.kind != "Namespace":
        paths[collection].append(Operation("delete", "deletecollection", f"delete{prefix}Collection{scoped}", kind,
                                           _META + "Status", _META + "DeleteOptions", (_DRY_RUN, *_LIST)))
    if kind.namespaced:
        paths[kind.path()] = [Operation("get", "list", f"list{prefix}{kind.kind}ForAllNamespaces", kind, list_kind,
                                        parameters=_LIST)]
    if kind.has_status:
        paths[f"{item}/status"] = [
            Operation("get", "get", f"read{prefix}{scoped}Status", kind, kind.definition),
            Operation("put", "put", f"replace{prefix}{scoped}Status", kind, kind.definition, kind.definition, _WRITE),
            Operation("patch", "patch", f"patch{prefix}{scoped}Status", kind, kind.definition, _META + "Patch", _WRITE,
                      patch_types),
        ]
    return {path: [_with_path_params(op, path, path_params) for op in ops] for path, ops in paths.items()}


def _with_path_params(operation: Operation, path: str, path_params: tuple[Parameter, ...]) -> Operation:
    used = tuple(p for p in path_params if "{" + p.name + "}" in path)
    return Operation(operation.method, operation.action, operation.operation_id, operation.kind, operation.response,
                     operation.body, used + (_PRETTY,) + operation.parameters, operation.consumes)


def _gvk(kind: Kind) -> dict:
    return {"group": kind.group, "kind": kind.kind, "version": kind.version}


def _tag(kind: Kind) -> str:
    return f"{kind.group.split('.', 1)[0] if kind.group else 'core'}_{kind.version}"


def _reachable(roots: list[str]) -> list[str]:
    found: list[str] = []
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        found.append(name)
        stack: list[object] = [definitions()[name]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str):
                    pending.append(ref[len(REF_PREFIX):])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return sorted(found)


def _roots(kinds: list[Kind]) -> list[str]:
    """The definitions a group version's document holds (a custom kind brings its own schemas)."""
    return [name for kind in kinds if kind.custom is None for name in (kind.definition, f"{kind.definition}List")] + [
        _META + "Status", _META + "DeleteOptions", _META + "Patch", _META + "WatchEvent", _META + "ObjectMeta",
        _META + "ListMeta",
    ]


# --- v2 ---------------------------------------------------------------------------------------------------


def _v2_operation(op: Operation) -> dict:
    parameters: list[dict] = [
        {"name": p.name, "in": p.where, "description": p.description, "type": p.type, "uniqueItems": True}
        | ({"required": True} if p.required else {})
        for p in op.parameters
    ]
    if op.body:
        parameters.insert(0, {"name": "body", "in": "body", "required": op.method != "delete",
                              "schema": {"$ref": REF_PREFIX + op.body}})
    return {
        "description": f"{op.action} {op.kind.kind}",
        "consumes": list(op.consumes),
        "produces": ["application/json", "application/yaml"],
        "schemes": ["https"],
        "tags": [_tag(op.kind)],
        "operationId": op.operation_id,
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "schema": {"$ref": REF_PREFIX + op.response}},
                      "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": _gvk(op.kind),
    }


def to_v2_schema(schema: dict) -> dict:
    """OpenAPI v2 has no oneOf: kube-apiserver writes a type that is one of several (IntOrString,
    Quantity) as a string, an int-or-string when one of them is an integer."""
    one_of = schema.get("oneOf")
    if one_of is None:
        return schema
    written = {k: v for k, v in schema.items() if k != "oneOf"} | {"type": "string"}
    if any(choice.get("type") == "integer" for choice in one_of):
        written["format"] = "int-or-string"
    return written


def v2_paths(kinds: Iterable[Kind]) -> dict:
    """The v2 paths of some kinds, each with its operations."""
    return {path: {op.method: _v2_operation(op) for op in ops} for kind in kinds for path, ops in operations(kind).items()}


def v2_with(paths: dict, own_definitions: dict[str, dict]) -> dict:
    """The v2 document with more paths and definitions (those of custom resources)."""
    document = v2()
    return document | {"paths": document["paths"] | paths, "definitions": document["definitions"] | own_definitions}


@cache
def v2() -> dict:
    """The whole API as kube-apiserver's /openapi/v2 (JSON)."""
    paths = v2_paths(KINDS)
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "definitions": {name: to_v2_schema(definitions()[name]) for name in _reachable(_roots(list(KINDS)))},
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "name": "authorization", "in": "header",
                                                "description": "Bearer Token authentication"}},
        "security": [{"BearerToken": []}],
    }


# --- v3 ---------------------------------------------------------------------------------------------------


def to_v3_schema(schema: object) -> object:
    """A v2 schema in v3 form: `#/components/schemas/` references, and a reference with siblings (a field's
    own description) wrapped in allOf, as kube-apiserver publishes it."""
    if isinstance(schema, list):
        return [to_v3_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: to_v3_schema(value) for key, value in schema.items() if key != "$ref"}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = {"$ref": V3_REF_PREFIX + ref[len(REF_PREFIX):]}
        if not converted:
            return target
        converted["allOf"] = [target]
    return converted


def _v3_operation(op: Operation) -> dict:
    operation = {
        "tags": [_tag(op.kind)],
        "description": f"{op.action} {op.kind.kind}",
        "operationId": op.operation_id,
        "parameters": [
            {"name": p.name, "in": p.where, "description": p.description,
             "schema": {"type": p.type, "uniqueItems": True}} | ({"required": True} if p.required else {})
            for p in op.parameters
        ],
        "responses": {
            "200": {"description": "OK", "content": {
                media: {"schema": {"$ref": V3_REF_PREFIX + op.response}} for media in ("application/json", "application/yaml")
            }},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": op.action,
        "x-kubernetes-group-version-kind": _gvk(op.kind),
    }
    if op.body:
        operation["requestBody"] = {
            "content": {media: {"schema": {"$ref": V3_REF_PREFIX + op.body}} for media in op.consumes},
            "required": op.method != "delete",
        }
    return operation


@cache
def v3_documents() -> dict[str, dict]:
    """Each group-version's document, keyed as /openapi/v3 lists them (`api/v1`, `apis/apps/v1`)."""
    by_group_version: dict[str, list[Kind]] = {}
    for kind in KINDS:
        by_group_version.setdefault(group_version_key(kind), []).append(kind)
    return {key: group_version_document(kinds) for key, kinds in by_group_version.items()}


def group_version_document(kinds: list[Kind], own_schemas: dict[str, dict] | None = None) -> dict:
    """One group version's OpenAPI v3 document; `own_schemas` are the v3 schemas of custom kinds."""
    paths = {path: {op.method: _v3_operation(op) for op in ops} for kind in kinds for path, ops in operations(kind).items()}
    schemas = {name: to_v3_schema(definitions()[name]) for name in _reachable(_roots(kinds))} | (own_schemas or {})
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"BearerToken": {
            "type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}}},
    }


def encode(document: dict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@cache
def v3_encoded() -> dict[str, tuple[bytes, str]]:
    """Each group-version document's bytes and hash (what the index's `?hash=` links name)."""
    return {key: encode_with_hash(document) for key, document in v3_documents().items()}


def encode_with_hash(document: dict) -> tuple[bytes, str]:
    body = encode(document)
    return body, hashlib.sha512(body).hexdigest().upper()


def v3_index(extra: dict[str, tuple[bytes, str]] | None = None) -> dict:
    """The index of the group version documents (`extra`: those of custom resources, encoded)."""
    encoded = v3_encoded() | (extra or {})
    return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
                      for key, (_, digest) in encoded.items()}}
