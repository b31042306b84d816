"""The OpenAPI v3 documents of custom group versions (`/openapi/v3/apis/stable.example.com/v1`), as
kube-apiserver publishes them for CRDs: each kind's schema named `com.example.stable.v1.CronTab` with
apiVersion, kind and metadata added and its group-version-kind marked (which `kubectl explain` looks for),
its List, and the same paths and operations as a built-in kind's, patches without strategic merge. Pure.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache

from podnet.apiserver.customresources.definitions import CustomResource

from podnet.api.kinds import Kind
from podnet.api.openapi import REF_PREFIX, documents

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_API_VERSION = ("APIVersion defines the versioned schema of this representation of an object. Servers should convert "
                "recognized schemas to the latest internal value, and may reject unrecognized values. More info: "
                "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources")
_KIND = ("Kind is a string value representing the REST resource this object represents. Servers may infer this from "
         "the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
         "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds")
_METADATA = ("Standard object's metadata. More info: "
             "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")


def _gvk(kind: Kind, name: str) -> list[dict]:
    return [{"group": kind.group, "kind": name, "version": kind.version}]


def kind_schemas(kind: Kind) -> dict[str, dict]:
    """The v3 schemas of a custom kind and of its List."""
    custom = kind.custom
    assert isinstance(custom, CustomResource)
    schema = copy.deepcopy(custom.schema)
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {"type": "string", "description": _API_VERSION}
    properties["kind"] = {"type": "string", "description": _KIND}
    properties["metadata"] = documents.to_v3_schema({"$ref": REF_PREFIX + _META + "ObjectMeta", "description": _METADATA})
    schema["type"] = "object"
    schema["x-kubernetes-group-version-kind"] = _gvk(kind, kind.kind)
    listed = {
        "description": f"{custom.list_kind} is a list of {kind.kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION},
            "items": {"type": "array", "description": f"List of {kind.plural}. More info: "
                      "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
                      "items": {"$ref": documents.V3_REF_PREFIX + kind.definition}},
            "kind": {"type": "string", "description": _KIND},
            "metadata": documents.to_v3_schema({"$ref": REF_PREFIX + _META + "ListMeta", "description": "Standard list metadata."}),
        },
        "x-kubernetes-group-version-kind": _gvk(kind, custom.list_kind),
    }
    return {kind.definition: schema, f"{kind.definition}List": listed}


def _v2_schema(schema: dict) -> dict:
    """A custom schema as kube-apiserver publishes it in v2: no nullable, no anyOf, oneOf, allOf or not (v2
    cannot say them), and an int-or-string without a type."""
    converted: dict = {}
    for keyword, value in schema.items():
        if keyword in ("nullable", "anyOf", "oneOf", "allOf", "not"):
            continue
        if keyword == "properties" and isinstance(value, dict):
            converted[keyword] = {name: _v2_schema(sub) if isinstance(sub, dict) else sub for name, sub in value.items()}
        elif keyword in ("items", "additionalProperties") and isinstance(value, dict):
            converted[keyword] = _v2_schema(value)
        else:
            converted[keyword] = value
    if schema.get("x-kubernetes-int-or-string"):
        converted.pop("type", None)
    return converted


def _v2_definitions(kind: Kind) -> dict[str, dict]:
    schemas = kind_schemas(kind)
    own, listed = schemas[kind.definition], schemas[f"{kind.definition}List"]
    own = _v2_schema(own)
    own["properties"]["metadata"] = {"$ref": REF_PREFIX + _META + "ObjectMeta", "description": _METADATA}
    listed = copy.deepcopy(listed)
    listed["properties"]["items"]["items"] = {"$ref": REF_PREFIX + kind.definition}
    listed["properties"]["metadata"] = {"$ref": REF_PREFIX + _META + "ListMeta", "description": "Standard list metadata."}
    return {kind.definition: own, f"{kind.definition}List": listed}


@lru_cache(maxsize=16)
def _v2_encoded(signature: str, kinds: tuple[Kind, ...]) -> bytes:
    definitions: dict[str, dict] = {}
    for kind in kinds:
        definitions |= _v2_definitions(kind)
    return documents.encode(documents.v2_with(documents.v2_paths(kinds), definitions))


def v2_encoded(kinds: tuple[Kind, ...]) -> bytes:
    """The /openapi/v2 document with the custom resources of `kinds` in it."""
    return _v2_encoded(_signature(kinds), kinds)


def _signature(kinds: tuple[Kind, ...]) -> str:
    return json.dumps([[k.kind, k.group, k.version, k.plural, k.namespaced, k.has_status, k.custom.list_kind,  # type: ignore[union-attr]
                        k.custom.schema] for k in kinds], sort_keys=True)  # type: ignore[union-attr]


@lru_cache(maxsize=256)
def _encoded(signature: str, kinds: tuple[Kind, ...]) -> tuple[bytes, str]:
    schemas: dict[str, dict] = {}
    for kind in kinds:
        schemas |= kind_schemas(kind)
    return documents.encode_with_hash(documents.group_version_document(list(kinds), schemas))


def encoded(by_group_version: dict[str, tuple[Kind, ...]]) -> dict[str, tuple[bytes, str]]:
    """Each custom group version's document, encoded, with its hash (computed again only on a change)."""
    return {key: _encoded(_signature(kinds), kinds) for key, kinds in by_group_version.items()}
